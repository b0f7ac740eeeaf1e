/* Shared by benches/flood/flood.c and benches/latency/probe.c: the UDP destination. */
#ifndef BENCHES_IPV4_DEST_H
#define BENCHES_IPV4_DEST_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* *sa = ip:port, IPv4. 0, or -1 after "PROG: bad IPv4 address IP" on stderr. */
static inline int ipv4_dest(struct sockaddr_in *sa, const char *ip, long port, const char *prog)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1) {
		fprintf(stderr, "%s: bad IPv4 address %s\n", prog, ip);
		return -1;
	}
	return 0;
}

#endif
