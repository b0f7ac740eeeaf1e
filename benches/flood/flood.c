/*
 * flood: a fast UDP sender for the netpol-nflog benchmarks and overload tests.
 *
 *   flood DEST_IP PORT COUNT RATE [BATCH [SENDERS]]
 *
 * Sends COUNT small UDP datagrams to DEST_IP:PORT with sendmmsg(2), in batches
 * of BATCH (default 256), from SENDERS processes (default 1), each with its own
 * socket and an equal share of COUNT and RATE.  RATE is the target rate in
 * packets/s; 0 means flat out.  Pacing is done per batch against
 * CLOCK_MONOTONIC: before each batch the sender sleeps (clock_nanosleep,
 * absolute) until the time at which that batch is due, so the long-run rate is
 * exact and short bursts are at most one batch.
 *
 * Packets that the kernel refuses (e.g. EPERM because an iptables rule drops
 * them on OUTPUT, or ENOBUFS) still count as "sent": for a locally generated
 * packet, NFLOG has already seen it by the time DROP returns EPERM.  The
 * counts of such errors are printed separately.
 *
 * Where the rule drops decides what a batch costs: a DROP on OUTPUT fails the
 * send with EPERM, which ends the sendmmsg call, so every call sends exactly
 * one packet (one system call per packet, about 200k packets/s on one core).
 * A DROP on INPUT (the datagram to 127.0.0.1 loops back first) returns no
 * error, so one call sends the whole batch; several senders share the cores.
 *
 * Output (stdout, one line, key=value):
 *   sent=N elapsed_s=T rate_pps=R eperm=E other_err=O senders=S
 *
 * Exit status: 0 on success, 1 on usage error, 2 on unexpected errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../ipv4_dest.h"

#define MAX_BATCH 1024

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* What one sender did. */
struct counts {
	unsigned long long sent, eperm, other_err;
	int failed;
};

/* Sends COUNT packets at RATE (0 = flat out) through a socket connected to SA. */
static void send_all(const struct sockaddr_in *sa, unsigned long long count, double rate,
		     long batch, struct counts *c)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		c->failed = 1;
		return;
	}
	/* connect() so that sendmmsg needs no per-message address. */
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("connect");
		c->failed = 1;
		return;
	}

	static char payload[16] = "netpol-flood-00";
	static struct iovec iov[MAX_BATCH];
	static struct mmsghdr msgs[MAX_BATCH];
	for (long i = 0; i < batch; i++) {
		iov[i].iov_base = payload;
		iov[i].iov_len = sizeof(payload);
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	/* Sleep precisely: the default 50 us timer slack would distort pacing. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	unsigned long long sent = 0;
	double start = now_s();
	while (sent < count) {
		/* One batch: due at start + (index of its first packet) / rate. */
		if (rate > 0)
			sleep_until(start + (double)sent / rate);
		unsigned long long left = count - sent;
		unsigned long long end = sent + (left < (unsigned long long)batch ? left : (unsigned long long)batch);
		while (sent < end) {
			int r = sendmmsg(fd, msgs, (unsigned int)(end - sent), 0);
			if (r > 0) {
				sent += (unsigned long long)r;
				continue;
			}
			/*
			 * sendmmsg fails only when the *first* message of the call
			 * fails; later failures just end the call early.  A DROP on
			 * OUTPUT gives EPERM: that packet has been through the
			 * ruleset (and NFLOG), so it counts as sent, and the next
			 * call continues with the following one.  (So with a DROP
			 * rule every call sends exactly one packet.)
			 */
			if (errno == EPERM) {
				c->eperm++;
				sent++;
			} else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED || errno == EINTR) {
				/* Not handed to the ruleset (or an ICMP error echo): retry. */
				if (++c->other_err > 100000000ULL) {
					fprintf(stderr, "flood: too many errors: %s\n", strerror(errno));
					c->failed = 1;
					break;
				}
			} else {
				fprintf(stderr, "flood: sendmmsg: %s\n", strerror(errno));
				c->failed = 1;
				break;
			}
		}
		if (c->failed)
			break;
	}
	c->sent = sent;
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 7) {
		fprintf(stderr, "usage: %s DEST_IP PORT COUNT RATE_PPS(0=flat out) [BATCH [SENDERS]]\n", argv[0]);
		return 1;
	}
	const char *dst = argv[1];
	long port = strtol(argv[2], NULL, 10);
	unsigned long long count = strtoull(argv[3], NULL, 10);
	double rate = strtod(argv[4], NULL);
	long batch = argc >= 6 ? strtol(argv[5], NULL, 10) : 256;
	long senders = argc == 7 ? strtol(argv[6], NULL, 10) : 1;
	if (port <= 0 || port > 65535 || rate < 0 || batch <= 0 || batch > MAX_BATCH ||
	    senders <= 0 || senders > 64) {
		fprintf(stderr, "flood: bad argument\n");
		return 1;
	}

	struct sockaddr_in sa;
	if (ipv4_dest(&sa, dst, port, "flood") < 0)
		return 1;

	/* One result per sender, shared with the children. */
	struct counts *c = mmap(NULL, sizeof(*c) * (size_t)senders, PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	memset(c, 0, sizeof(*c) * (size_t)senders);
	double start = now_s();
	if (senders == 1) {
		send_all(&sa, count, rate, batch, &c[0]);
	} else {
		for (long i = 0; i < senders; i++) {
			/* An equal share; the first senders take the remainder. */
			unsigned long long share = count / (unsigned long long)senders +
						   ((unsigned long long)i < count % (unsigned long long)senders);
			pid_t pid = fork();
			if (pid < 0) {
				perror("fork");
				c[i].failed = 1;
				break;
			}
			if (pid == 0) {
				send_all(&sa, share, rate / (double)senders, batch, &c[i]);
				_exit(0);
			}
		}
		while (wait(NULL) > 0)
			;
	}
	double elapsed = now_s() - start;
	unsigned long long sent = 0, eperm = 0, other_err = 0;
	int failed = 0;
	for (long i = 0; i < senders; i++) {
		sent += c[i].sent;
		eperm += c[i].eperm;
		other_err += c[i].other_err;
		failed |= c[i].failed;
	}
	printf("sent=%llu elapsed_s=%.3f rate_pps=%.0f eperm=%llu other_err=%llu senders=%ld\n",
	       sent, elapsed, elapsed > 0 ? (double)sent / elapsed : 0.0, eperm, other_err, senders);
	return failed ? 2 : 0;
}
