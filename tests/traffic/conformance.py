#!/usr/bin/python3
"""Deterministic packet mix for the ulogd2 conformance test (tests/it/conformance.rs).

Run it with Debian's /usr/bin/python3 (python3-scapy), as root, inside the namespace whose
netfilter rules log to NFLOG group 100 (the "router" namespace, called NS below):

    ip netns exec NS /usr/bin/python3 conformance.py --peer PEERNS

Topology built by the Rust test (all MAC addresses and all addresses fixed):

    PEER a1 10.77.1.2 fd00:77:1::2  <-veth->  a0 10.77.1.1 fd00:77:1::1  NS
                                              b0 10.77.2.1 fd00:77:2::1  NS  <-veth->  b1 10.77.2.2 fd00:77:2::2 FAR

Three phases, in this order:
  out  from NS to PEER: netfilter OUTPUT in NS (every fragment logged on its own);
  in   from PEER to NS: INPUT in NS (IPv4 reassembled first, IPv6 fragments one by one);
  fwd  from PEER to FAR: FORWARD in NS.

Every field the kernel would otherwise choose is fixed here (IP ID, TCP seq/ack, ports, ICMP id,
flow label), and packets are written with IP_HDRINCL raw sockets, so the second run of the same
script produces byte-identical packets. Nothing answers: PEER and FAR drop all input in
raw/PREROUTING and NS drops what it logged on INPUT, so no kernel-made packet (whose IP ID would
be random) ever reaches a log rule.

Prints one line to stdout at the end: `sent N`, the number of packets written.
"""

import argparse
import ctypes
import os
import socket
import struct
import subprocess
import sys
import time

from scapy.layers.inet import GRE, ICMP, IP, IPOption_Router_Alert, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import ESP
from scapy.layers.sctp import SCTP, SCTPChunkData, SCTPChunkInit
from scapy.packet import Raw

CLONE_NEWNET = 0x40000000

NS4 = {"a": "10.77.1.1", "b": "10.77.2.1"}
PEER4 = "10.77.1.2"
FAR4 = "10.77.2.2"
NS6 = "fd00:77:1::1"
PEER6 = "fd00:77:1::2"
FAR6 = "fd00:77:2::2"

# Ports and TCP/ICMP fields the Rust test's iptables rules refer to.
PORT_TRUNC_UDP = 7020  # --nflog-size 20: the copy holds the IPv4 header only
PORT_TRUNC_TCP = 7024  # --nflog-size 24: 4 bytes of TCP header
PORT_TRUNC_ICMP_TYPE = 17  # ICMP type 17 (address mask request), --nflog-size 24
PORT_TRUNC_ICMP6_TYPE = 200  # ICMPv6 type 200 (private experimentation), --nflog-size 24
PORT_EMPTY_PREFIX = 6666  # extra rule without --nflog-prefix on OUTPUT
PORT_SPACED_PREFIX = 7777  # extra rule with --nflog-prefix "spaced prefix: "
PORT_MANGLE_MARK = 7042  # mangle OUTPUT sets mark 0x2a

SENT = 0


def setns(path):
    """Moves this (single-threaded) process into the network namespace at `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


class Sender:
    """IP_HDRINCL raw sockets of the current namespace: the kernel sends our header bytes as
    they are (it only fills tot_len and the IPv4 header checksum), through OUTPUT."""

    def __init__(self):
        self.s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, pkt):
        global SENT
        data = bytes(pkt)
        if isinstance(pkt, IPv6):
            self.s6.sendto(data, (pkt.dst, 0))
        else:
            assert pkt.id != 0, "IP ID 0 would let the kernel choose a random one"
            self.s4.sendto(data, (pkt.dst, 0))
        SENT += 1
        # Keep the per-CPU backlog order trivially deterministic across veth.
        time.sleep(0.002)

    def close(self):
        self.s4.close()
        self.s6.close()


def ah(nh, spi, seq):
    """An AH header with a 12-byte ICV (payload length field = 24/4 - 2 = 4)."""
    return Raw(struct.pack("!BBHII", nh, 4, 0, spi, seq) + bytes(range(0xA0, 0xAC)))


# The TCP flag combinations of each family's mix: (flags, sport, dport, seq, ack, window, urgptr);
# IPv6's, without the oddities IPv4 also tries, two to a line.
TCP_FLAGS = {
    4: [
        ("S", 40000, 80, 1000000, 0, 64240, 0),
        ("SA", 80, 40001, 2000000, 1000001, 65160, 0),
        ("R", 40002, 80, 3000000, 0, 0, 0),
        ("RA", 40003, 80, 0, 3000001, 0, 0),
        ("FA", 40004, 443, 4000000, 5000000, 501, 0),
        ("PA", 40005, 443, 4000100, 5000100, 502, 0),
        ("UA", 40006, 23, 4000200, 5000200, 503, 7),
        ("UPA", 40007, 23, 4000300, 5000300, 504, 1234),
        ("", 40008, 8080, 4000400, 0, 1024, 99),  # no flags; urgptr set but URG clear
        ("A", 40009, 8080, 4000500, 5000500, 1025, 55),  # ACK only, stray urgptr
        ("FSRPAUEC", 40010, 8081, 4000600, 5000600, 1026, 4321),  # all flags incl. ECE/CWR
        ("SEC", 40011, 8082, 4000700, 0, 64240, 0),  # ECN setup SYN
        ("F", 40012, 8083, 4294967295, 4294967295, 65535, 0),  # max seq/ack
    ],
    6: [
        ("S", 40100, 443, 3000000, 0, 64800, 0), ("SA", 443, 40101, 3100000, 3000001, 64800, 0),
        ("R", 40102, 443, 3200000, 0, 0, 0), ("FA", 40103, 443, 3300000, 3400000, 500, 0),
        ("PA", 40104, 443, 3300100, 3400100, 500, 0), ("UA", 40105, 23, 3300200, 3400200, 500, 3),
        ("", 40106, 23, 3300300, 0, 500, 77), ("FSRPAUEC", 40107, 24, 3300400, 3400400, 500, 8888),
    ],
}


def numbered(make, field, base, **defaults):
    """A header maker: make(**kw) with `defaults`, and `field` = base + 1, base + 2, ... (one more
    per call), each unless given."""
    n = [0]

    def header(**kw):
        n[0] += 1
        for k, v in defaults.items():
            kw.setdefault(k, v)
        kw.setdefault(field, base + n[0])
        return make(**kw)

    return header


def tcp_flag_packets(header, rows, mss=False):
    """header() / TCP for each (flags, sport, dport, seq, ack, window, urgptr) row; with `mss`,
    SYNs carry an MSS option."""
    return [header() / TCP(sport=sport, dport=dport, seq=seq, ack=ack, window=win, flags=flags,
                           urgptr=urg, options=[("MSS", 1460)] if mss and "S" in flags else [])
            for flags, sport, dport, seq, ack, win, urg in rows]


def rule_packets(header, sport, icmp):
    """One packet per special rule: empty prefix, spaced prefix, mangle mark, truncated UDP (from
    source ports sport, sport + 1, ...), truncated TCP, truncated ICMP (`icmp`)."""
    udp = [(PORT_EMPTY_PREFIX, b"empty"), (PORT_SPACED_PREFIX, b"spaced"), (PORT_MANGLE_MARK, b"marked"),
           (PORT_TRUNC_UDP, b"truncated")]
    pkts = [header() / UDP(sport=sport + i, dport=port) / Raw(data) for i, (port, data) in enumerate(udp)]
    pkts.append(header() / TCP(sport=sport + len(udp), dport=PORT_TRUNC_TCP, seq=12, flags="S"))
    pkts.append(header() / icmp)
    return pkts


def v4_mix(src, dst, base_id, ttl=64):
    """The IPv4 packet list. IDs are base_id + n, so the three phases are distinguishable."""
    ip = numbered(lambda **kw: IP(src=src, dst=dst, **kw), "id", base_id, ttl=ttl, flags="DF")

    # TCP flag combinations.
    pkts = tcp_flag_packets(ip, TCP_FLAGS[4], mss=True)
    # UDP, with payloads of several sizes.
    pkts.append(ip() / UDP(sport=53000, dport=53) / Raw(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6))
    pkts.append(ip(flags=0) / UDP(sport=53001, dport=9999) / Raw(b"hello"))
    pkts.append(ip() / UDP(sport=0, dport=0))
    pkts.append(ip() / UDP(sport=65535, dport=65535) / Raw(b"x" * 300))
    # ICMP types/codes (the code-not-type quirk of ulogd2's printpkt).
    pkts.append(ip() / ICMP(type=8, code=0, id=0x1234, seq=1) / Raw(b"ping-payload"))
    pkts.append(ip(flags=0) / ICMP(type=0, code=0, id=0x1234, seq=1) / Raw(b"ping-payload"))
    inner = IP(src=dst, dst=src, id=4242, ttl=63) / UDP(sport=33434, dport=33435)
    inner_tcp = IP(src=dst, dst=src, id=4243, ttl=63) / TCP(sport=80, dport=40000, seq=1, flags="S")
    for t, c, extra in [
        (3, 3, {}),
        (3, 4, {"nexthopmtu": 1400}),
        (3, 1, {}),
        (3, 13, {}),
        (3, 5, {}),
        (3, 12, {}),
        (3, 0, {}),
        (11, 0, {}),
        (11, 1, {}),
        (12, 0, {"ptr": 20}),
        (5, 1, {"gw": "10.77.1.254"}),
        (5, 0, {"gw": "10.77.1.253"}),
    ]:
        pkts.append(ip(flags=0) / ICMP(type=t, code=c, **extra) / (inner if c % 2 else inner_tcp))
    pkts.append(ip() / ICMP(type=13, code=0, id=0x4321, seq=7) / Raw(b"\x00" * 12))
    pkts.append(ip() / ICMP(type=14, code=0, id=0x4321, seq=7) / Raw(b"\x00" * 12))
    pkts.append(ip() / ICMP(type=8, code=12, id=0x5555, seq=9))  # bogus code 12 on an echo
    # Other protocols.
    pkts.append(ip() / SCTP(sport=5000, dport=38412, tag=0) /
                SCTPChunkInit(init_tag=0xdeadbeef, a_rwnd=65536, n_out_streams=2, n_in_streams=2, init_tsn=1))
    pkts.append(ip() / SCTP(sport=5001, dport=38412, tag=0xdeadbeef) /
                SCTPChunkData(tsn=1, stream_id=0, stream_seq=0, proto_id=0, data=b"abcd"))
    pkts.append(ip() / ESP(spi=0x1001, seq=1) / Raw(b"\xaa" * 16))
    pkts.append(ip(proto=51) / ah(6, 0x2001, 1) / TCP(sport=40100, dport=22, seq=7, flags="S"))
    pkts.append(ip() / GRE(proto=0x0800) / IP(src="192.0.2.1", dst="192.0.2.2", id=1) / UDP(sport=1, dport=2))
    pkts.append(ip(proto=2, options=[IPOption_Router_Alert()]) /
                Raw(b"\x16\x00\xfa\x04\xe0\x00\x00\xfb"))  # IGMPv2 report, with RA like real IGMP
    pkts.append(ip(proto=136) / Raw(struct.pack("!HHHH", 5002, 5003, 8, 0) + b"lite"))  # UDP-Lite
    pkts.append(ip(proto=253) / Raw(b"experimental"))
    # Router Alert option on UDP, TOS values, the reserved ("evil") bit, DF off, low TTL.
    pkts.append(ip(options=[IPOption_Router_Alert()]) / UDP(sport=5004, dport=5005) / Raw(b"ra"))
    pkts.append(ip(tos=0xB9) / UDP(sport=5006, dport=5007))
    pkts.append(ip(tos=0xFF) / UDP(sport=5008, dport=5009))
    pkts.append(ip(tos=0x02) / TCP(sport=5010, dport=5011, seq=11, flags="S"))
    pkts.append(ip(flags="evil") / UDP(sport=5012, dport=5013))
    pkts.append(ip(flags="evil+DF") / UDP(sport=5014, dport=5015))
    pkts.append(ip(ttl=2) / UDP(sport=5016, dport=5017))
    # The prefix/mark/truncation rules.
    pkts += rule_packets(ip, 5018, ICMP(type=PORT_TRUNC_ICMP_TYPE, code=0, id=1, seq=2) / Raw(b"\x00" * 4))
    # Fragments: UDP and TCP datagrams cut in three (first / middle / last).
    udp_dgram = IP(src=src, dst=dst, id=base_id + 90, ttl=ttl) / UDP(sport=5030, dport=5031) / \
        Raw(b"ABCDEFGHIJKLMNOPQRSTUVWX")
    tcp_dgram = IP(src=src, dst=dst, id=base_id + 91, ttl=ttl) / \
        TCP(sport=5032, dport=5033, seq=13, ack=14, flags="PA") / Raw(b"abcdefghijklmnopqrstuvwx")
    frags = fragment(udp_dgram, fragsize=16) + fragment(tcp_dgram, fragsize=16)
    assert len(frags) == 5, [f.summary() for f in frags]  # UDP: 32 B -> 16+16; TCP: 44 B -> 3
    pkts.extend(frags)
    return pkts


def v6_mix(src, dst, base_flow, hlim=64):
    """The IPv6 packet list. Flow labels are base_flow + n unless fixed."""
    ip6 = numbered(lambda **kw: IPv6(src=src, dst=dst, **kw), "fl", base_flow, hlim=hlim)
    pkts = tcp_flag_packets(ip6, TCP_FLAGS[6])
    pkts.append(ip6() / UDP(sport=53100, dport=53) / Raw(b"query"))
    pkts.append(ip6(tc=0xB8, fl=0x12345) / UDP(sport=53101, dport=9999) / Raw(b"tc-and-flowlabel"))
    pkts.append(ip6(tc=0xFF, fl=0xFFFFF) / UDP(sport=53102, dport=9998))
    pkts += rule_packets(lambda: ip6(fl=0), 53103, ICMPv6EchoRequest(type=PORT_TRUNC_ICMP6_TYPE, id=3, seq=4))
    # ICMPv6.
    inner6 = IPv6(src=dst, dst=src, hlim=63) / UDP(sport=33434, dport=33435)
    pkts.append(ip6() / ICMPv6EchoRequest(id=0x1234, seq=1, data=b"ping6"))
    pkts.append(ip6() / ICMPv6EchoReply(id=0x1234, seq=1, data=b"ping6"))
    pkts.append(ip6() / ICMPv6DestUnreach(code=4) / inner6)
    pkts.append(ip6() / ICMPv6DestUnreach(code=1) / inner6)
    pkts.append(ip6() / ICMPv6PacketTooBig(mtu=1280) / inner6)
    pkts.append(ip6() / ICMPv6TimeExceeded(code=0) / inner6)
    pkts.append(ip6() / ICMPv6TimeExceeded(code=1) / inner6)
    pkts.append(ip6(hlim=255) / ICMPv6ND_NS(tgt=dst) / ICMPv6NDOptSrcLLAddr(lladdr="02:77:00:00:00:99"))
    pkts.append(ip6(hlim=255) / ICMPv6ND_NA(tgt=src, R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:77:00:00:00:98"))
    # Other next headers.
    pkts.append(ip6() / SCTP(sport=5100, dport=38412, tag=0) /
                SCTPChunkInit(init_tag=0xcafef00d, a_rwnd=65536, n_out_streams=2, n_in_streams=2, init_tsn=1))
    pkts.append(ip6() / ESP(spi=0x3001, seq=1) / Raw(b"\xbb" * 16))
    pkts.append(ip6(nh=51) / ah(6, 0x4001, 1) / TCP(sport=40200, dport=22, seq=21, flags="S"))
    pkts.append(ip6(nh=51) / ah(17, 0x4002, 2) / UDP(sport=40201, dport=53))
    pkts.append(ip6() / GRE(proto=0x86DD) / IPv6(src="2001:db8::1", dst="2001:db8::2", nh=59))
    pkts.append(ip6(nh=59))
    pkts.append(ip6(nh=59) / Raw(b"ignored trailing bytes"))
    pkts.append(ip6(nh=136) / Raw(struct.pack("!HHHH", 5102, 5103, 8, 0) + b"lite"))
    # Extension headers.
    pkts.append(ip6() / IPv6ExtHdrHopByHop() / UDP(sport=5104, dport=5105) / Raw(b"hbh"))
    pkts.append(ip6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(sport=5106, dport=5107, seq=31, flags="S"))
    pkts.append(ip6() / IPv6ExtHdrRouting(type=0, segleft=0, addresses=["fd00:77:9::9"]) / UDP(sport=5108, dport=5109))
    pkts.append(ip6() / IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(id=0x99, seq=2))
    pkts.append(ip6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(segleft=0, addresses=[]) /
                IPv6ExtHdrDestOpt() / UDP(sport=5110, dport=5111))
    # Fragments: a first and a non-first fragment of one UDP datagram, plus an atomic fragment.
    dgram = ip6(fl=0) / IPv6ExtHdrFragment(id=0xABCDEF01) / UDP(sport=5112, dport=5113) / Raw(b"F" * 64)
    frags = fragment6(dgram, 80)
    assert len(frags) >= 2, len(frags)
    pkts.extend(frags)
    pkts.append(ip6(fl=0) / IPv6ExtHdrFragment(id=0x00000102, offset=0, m=0) / TCP(sport=5114, dport=5115, seq=41, flags="S"))
    pkts.append(ip6(fl=0) / IPv6ExtHdrFragment(id=0x00000103, nh=6, offset=3, m=1) / Raw(b"G" * 24))
    return pkts


def socket_senders():
    """Packets that carry socket metadata: a non-root UID and SO_MARK.

    IPv6 uses ordinary UDP sockets (deterministic: no IP ID, and the test sets
    net.ipv6.auto_flowlabels=0). IPv4 UDP sockets would get a kernel-chosen IP ID (random per
    boot and per connect), so IPv4 uses an IP_HDRINCL raw socket instead; the UID process keeps
    CAP_NET_RAW as an ambient capability for that. Either way the skb belongs to a full socket
    with a file, so the kernel sends NFULA_UID/NFULA_GID."""
    global SENT
    nobody4 = IP(src=NS4["a"], dst=PEER4, id=1401, flags="DF") / UDP(sport=33333, dport=44444) / Raw(b"from-nobody")
    code = (
        "import socket, sys\n"
        "r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
        "r.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], 0))\n"
        "s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s6.bind((sys.argv[3], 33334)); s6.sendto(b'from-nobody6', (sys.argv[4], 44445))\n"
    )
    subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "--inh-caps=+net_raw", "--ambient-caps=+net_raw",
         "/usr/bin/python3", "-c", code, bytes(nobody4).hex(), PEER4, NS6, PEER6],
        check=True,
    )
    SENT += 2
    time.sleep(0.01)
    marked4 = IP(src=NS4["a"], dst=PEER4, id=1402, flags="DF") / UDP(sport=33335, dport=44446) / Raw(b"so-mark")
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x1234)
    r.sendto(bytes(marked4), (PEER4, 0))
    r.close()
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack("I", 0xFFFFFFFF))
    s6.bind((NS6, 33336))
    s6.sendto(b"so-mark6", (PEER6, 44447))
    s6.close()
    SENT += 2
    time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", required=True, help="name of the peer netns (under /run/netns)")
    ap.add_argument("--list", action="store_true", help="print the packets instead of sending")
    args = ap.parse_args()

    phases = [
        ("out", v4_mix(NS4["a"], PEER4, 1000) + v6_mix(NS6, PEER6, 0x10000)),
        ("in", v4_mix(PEER4, NS4["a"], 2000) + v6_mix(PEER6, NS6, 0x20000)),
        ("fwd", v4_mix(PEER4, FAR4, 3000) + v6_mix(PEER6, FAR6, 0x30000)),
    ]
    if args.list:
        for name, pkts in phases:
            for p in pkts:
                print(name, p.summary())
        return

    tx = Sender()
    for p in phases[0][1]:
        tx.send(p)
    socket_senders()
    tx.close()

    setns(os.path.join("/run/netns", args.peer))
    tx = Sender()
    for _, pkts in phases[1:]:
        for p in pkts:
            tx.send(p)
    tx.close()
    print("sent %d" % SENT)


if __name__ == "__main__":
    sys.exit(main())
