/*
 * probe: end-to-end latency of an NFLOG logger, from sending a packet to its
 * line appearing in the logger's output file.  Used by benches/latency.sh.
 *
 *   probe FILE DEST_IP PORT COUNT INTERVAL_MS JITTER_MS SPORT_BASE TAIL_WAIT_MS OUT_TSV
 *
 * One process does both halves, on one clock (CLOCK_MONOTONIC):
 *
 *  - sender: packet i (0-based) is due at start + i * INTERVAL_MS, plus a
 *    uniform pseudo-random offset in [-JITTER_MS, +JITTER_MS] (fixed seed, so
 *    both tools see the same schedule; the jitter keeps the schedule from
 *    locking onto the kernel's flush timer).  Each packet is a UDP datagram
 *    from its own socket bound to source port SPORT_BASE + i, so that its line
 *    (SPT=...) identifies it; the payload carries the sequence number and the
 *    send time (CLOCK_REALTIME, microseconds), e.g. "seq=17 t_us=1764...".
 *    The send time is taken immediately before sendto().
 *
 *  - watcher: FILE (which must exist; the logger creates it) is followed from
 *    its size at start with inotify (IN_MODIFY), so a write(2) by the logger
 *    wakes the probe at once.  The arrival time of a line is the time the
 *    probe woke up for the write that completed it.  Lines are matched to
 *    packets by SPT= (and DPT=PORT).
 *
 * After the last packet the probe waits until every line has arrived or
 * TAIL_WAIT_MS have passed.  It writes one row per packet to OUT_TSV:
 *
 *   seq  sport  send_realtime_us  latency_us   (latency -1 = no line seen)
 *
 * and a summary on stdout (one line, key=value, milliseconds):
 *
 *   sent=N seen=M missing=K dup=D foreign=F p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. mean_ms=.. min_ms=..
 *
 * Percentiles are nearest-rank over the packets whose line was seen.
 * Exit status: 0 ok, 1 usage, 2 runtime error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../ipv4_dest.h"

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
	/* xorshift64*: deterministic, the same schedule for every run */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* --- state ------------------------------------------------------------------ */
static long count, sport_base, port;
static int64_t *send_mono, *send_real, *lat;
static long seen, dups, foreign;

static char linebuf[1 << 16];
static size_t linelen;

static void on_line(const char *l, size_t n, int64_t now)
{
	char tmp[4096];
	if (n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	memcpy(tmp, l, n);
	tmp[n] = 0;
	const char *s = strstr(tmp, " SPT=");
	const char *d = strstr(tmp, " DPT=");
	if (!s || !d || strtol(d + 5, NULL, 10) != port) {
		foreign++;
		return;
	}
	long sp = strtol(s + 5, NULL, 10);
	long i = sp - sport_base;
	if (i < 0 || i >= count || send_mono[i] == 0) {
		foreign++;
		return;
	}
	if (lat[i] >= 0) {
		dups++;
		return;
	}
	lat[i] = now - send_mono[i];
	seen++;
}

/* Reads what was appended to the file since the last call; complete lines are
 * stamped with `now` (the time the probe woke up for this write). */
static int drain(int fd, int64_t now)
{
	char buf[1 << 16];
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("probe: read");
			return -1;
		}
		if (r == 0)
			return 0;
		for (ssize_t k = 0; k < r; k++) {
			if (buf[k] == '\n') {
				on_line(linebuf, linelen, now);
				linelen = 0;
			} else if (linelen < sizeof(linebuf)) {
				linebuf[linelen++] = buf[k];
			}
		}
	}
}

static int send_one(long i, const struct sockaddr_in *dst)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0) {
		perror("probe: socket");
		return -1;
	}
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in src;
	memset(&src, 0, sizeof(src));
	src.sin_family = AF_INET;
	src.sin_port = htons((uint16_t)(sport_base + i));
	src.sin_addr = dst->sin_addr;
	if (bind(s, (struct sockaddr *)&src, sizeof(src)) < 0) {
		fprintf(stderr, "probe: bind source port %ld: %s\n", sport_base + i, strerror(errno));
		close(s);
		return -1;
	}
	char payload[64];
	send_real[i] = real_us();
	int n = snprintf(payload, sizeof(payload), "seq=%ld t_us=%lld", i, (long long)send_real[i]);
	send_mono[i] = mono_us();
	ssize_t r = sendto(s, payload, (size_t)n, 0, (const struct sockaddr *)dst, sizeof(*dst));
	/* EPERM: dropped on OUTPUT after NFLOG saw it; that is a send too. */
	if (r < 0 && errno != EPERM) {
		fprintf(stderr, "probe: sendto: %s\n", strerror(errno));
		close(s);
		return -1;
	}
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 10) {
		fprintf(stderr,
			"usage: %s FILE DEST_IP PORT COUNT INTERVAL_MS JITTER_MS SPORT_BASE TAIL_WAIT_MS OUT_TSV\n",
			argv[0]);
		return 1;
	}
	const char *file = argv[1];
	port = strtol(argv[3], NULL, 10);
	count = strtol(argv[4], NULL, 10);
	double interval_ms = strtod(argv[5], NULL);
	double jitter_ms = strtod(argv[6], NULL);
	sport_base = strtol(argv[7], NULL, 10);
	double tail_wait_ms = strtod(argv[8], NULL);
	const char *out = argv[9];
	if (port <= 0 || port > 65535 || count <= 0 || interval_ms <= 0 || jitter_ms < 0 ||
	    jitter_ms * 2 >= interval_ms || sport_base <= 0 || sport_base + count > 65536) {
		fprintf(stderr, "probe: bad argument\n");
		return 1;
	}
	struct sockaddr_in dst;
	if (ipv4_dest(&dst, argv[2], port, "probe") < 0)
		return 1;
	send_mono = calloc((size_t)count, sizeof(int64_t));
	send_real = calloc((size_t)count, sizeof(int64_t));
	lat = malloc((size_t)count * sizeof(int64_t));
	if (!send_mono || !send_real || !lat)
		return 2;
	for (long i = 0; i < count; i++)
		lat[i] = -1;

	/* Wake up precisely: the default 50 us timer slack would blur the numbers. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "probe: open %s: %s\n", file, strerror(errno));
		return 2;
	}
	if (lseek(fd, 0, SEEK_END) < 0) {
		perror("probe: lseek");
		return 2;
	}
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0 || inotify_add_watch(in, file, IN_MODIFY) < 0) {
		perror("probe: inotify");
		return 2;
	}

	int64_t start = mono_us() + 100000; /* first packet 100 ms from now */
	int64_t *due = malloc((size_t)count * sizeof(int64_t));
	if (!due)
		return 2;
	for (long i = 0; i < count; i++) {
		double j = jitter_ms > 0 ? ((double)(next_rand() >> 11) / (double)(1ULL << 53) * 2 - 1) * jitter_ms : 0;
		due[i] = start + (int64_t)((double)i * interval_ms * 1000 + j * 1000);
	}

	long next = 0;
	int64_t deadline = -1;
	for (;;) {
		int64_t now = mono_us();
		if (next < count && now >= due[next]) {
			if (send_one(next, &dst) < 0)
				return 2;
			next++;
			if (next == count)
				deadline = mono_us() + (int64_t)(tail_wait_ms * 1000);
			continue;
		}
		if (next == count && (seen == count || now >= deadline))
			break;
		int64_t until = next < count ? due[next] : deadline;
		int64_t wait_us = until - now;
		if (wait_us < 0)
			wait_us = 0;
		/* ppoll: microsecond timeout (poll's milliseconds would blur the schedule) */
		struct timespec ts = { (time_t)(wait_us / 1000000), (long)(wait_us % 1000000) * 1000 };
		struct pollfd p = { .fd = in, .events = POLLIN };
		if (ppoll(&p, 1, &ts, NULL) < 0) {
			if (errno == EINTR)
				continue;
			perror("probe: ppoll");
			return 2;
		}
		if (p.revents & POLLIN) {
			int64_t woke = mono_us();
			char ev[4096];
			while (read(in, ev, sizeof(ev)) > 0)
				;
			if (drain(fd, woke) < 0)
				return 2;
		}
	}
	/* a last look (a write whose event we have not consumed yet) */
	drain(fd, mono_us());

	FILE *o = fopen(out, "w");
	if (!o) {
		fprintf(stderr, "probe: %s: %s\n", out, strerror(errno));
		return 2;
	}
	fprintf(o, "seq\tsport\tsend_realtime_us\tlatency_us\n");
	int64_t *v = malloc((size_t)count * sizeof(int64_t));
	long m = 0;
	double sum = 0;
	for (long i = 0; i < count; i++) {
		fprintf(o, "%ld\t%ld\t%lld\t%lld\n", i, sport_base + i, (long long)send_real[i], (long long)lat[i]);
		if (lat[i] >= 0) {
			v[m++] = lat[i];
			sum += (double)lat[i];
		}
	}
	fclose(o);
	printf("sent=%ld seen=%ld missing=%ld dup=%ld foreign=%ld", count, m, count - m, dups, foreign);
	if (m > 0) {
		qsort(v, (size_t)m, sizeof(int64_t), cmp_i64);
#define PCT(q) (v[(long)((q) * (double)m + 0.999999) - 1 < 0 ? 0 : (long)((q) * (double)m + 0.999999) - 1] / 1000.0)
		printf(" p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f mean_ms=%.1f min_ms=%.1f", PCT(0.50), PCT(0.90),
		       PCT(0.99), v[m - 1] / 1000.0, sum / (double)m / 1000.0, v[0] / 1000.0);
	}
	printf("\n");
	return 0;
}
