//! ulogd2 2.0.8 LOGEMU lines, byte for byte: the format of `printpkt_print()` in
//! [util/printpkt.c](https://git.netfilter.org/ulogd2/tree/util/printpkt.c?h=ulogd-2.0.8)
//! (`<time> <host> <prefix> IN= OUT= MAC= SRC= DST= LEN= …`, each key followed by a space, the
//! time from the packet's timestamp when the kernel sent one). The comments below name the
//! quirks that look like mistakes but are kept on purpose, because this file is a drop-in for
//! `/var/log/ulog/syslogemu.log` and the tools that parse it.
//!
//! Deliberate differences from ulogd2, all documented in the README:
//! * control bytes in prefixes and interface names are escaped as `\xHH` (ulogd2 copies them
//!   verbatim, so a prefix could forge a line);
//! * ARP addresses in bridge-family messages are the real ones (ulogd2 2.0.8 prints pointer
//!   bits).

use crate::decode::{Icmp, Network, Transport};
use crate::event::Event;

use super::time::LocalClock;
use super::{push_escaped, push_hex, push_hex2, push_ipv4, push_ipv6, push_u64};

/// Either family, formatted as `inet_ntop` does.
trait PushIp {
    fn push_to(self, out: &mut Vec<u8>);
}

impl PushIp for std::net::Ipv4Addr {
    fn push_to(self, out: &mut Vec<u8>) {
        push_ipv4(out, self)
    }
}

impl PushIp for std::net::Ipv6Addr {
    fn push_to(self, out: &mut Vec<u8>) {
        push_ipv6(out, self)
    }
}

fn push_ip(out: &mut Vec<u8>, a: impl PushIp) {
    a.push_to(out)
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

/// One LOGEMU line: `Mmm dd hh:mm:ss HOST ` then [`render_body`].
pub fn render(ev: &Event<'_>, hostname: &[u8], clock: &mut LocalClock, out: &mut Vec<u8>) {
    clock.push_ctime(ev.time, out);
    out.push(b' ');
    out.extend_from_slice(hostname);
    out.push(b' ');
    render_body(ev, out);
}

/// The line after its timestamp and hostname: from the prefix to `MARK=0x… \n`. This is the
/// text ulogd2's SYSLOG output hands to `syslog(3)`, so the syslog sink sends it as the message.
pub fn render_body(ev: &Event<'_>, out: &mut Vec<u8>) {
    if let Some(prefix) = ev.msg.prefix {
        // Always "<prefix> ": an empty prefix gives two spaces after the hostname.
        push_escaped(out, prefix);
        out.push(b' ');
    }
    out.extend_from_slice(b"IN=");
    push_escaped(out, ev.indev.as_bytes());
    out.extend_from_slice(b" OUT=");
    push_escaped(out, ev.outdev.as_bytes());
    out.extend_from_slice(b" MAC=");
    match ev.msg.mac_header() {
        Some(mac) => {
            for (i, b) in mac.iter().enumerate() {
                push_hex2(out, *b, false);
                out.push(if i + 1 == mac.len() { b' ' } else { b':' });
            }
        }
        None => out.push(b' '),
    }
    match ev.packet.network {
        Network::Ipv4(h) => ipv4(ev, h, out),
        Network::Ipv6(h) => ipv6(ev, h, out),
        Network::Arp(a) => arp(a, out),
        Network::OtherEthertype(proto) => {
            out.extend_from_slice(b"PROTO=");
            push_u64(out, proto as u64);
            out.push(b' ');
        }
        Network::None => {}
    }
    if let Some(uid) = ev.msg.uid {
        out.extend_from_slice(b"UID=");
        push_u64(out, uid as u64);
        out.push(b' ');
    }
    if let Some(gid) = ev.msg.gid {
        out.extend_from_slice(b"GID=");
        push_u64(out, gid as u64);
        out.push(b' ');
    }
    // Always printed: ulogd2's NFLOG plugin stores 0 when the kernel sends no mark.
    out.extend_from_slice(b"MARK=0x");
    push_hex(out, ev.msg.mark.unwrap_or(0));
    out.extend_from_slice(b" \n");
}

fn ipv4(ev: &Event<'_>, h: Option<crate::decode::Ipv4Info>, out: &mut Vec<u8>) {
    let Some(h) = h else {
        // A copy too short for the header leaves every key invalid, which prints as zeroes.
        out.extend_from_slice(b"LEN=0 TOS=00 PREC=0x00 TTL=0 ID=0 PROTO=0 ");
        return;
    };
    out.extend_from_slice(b"SRC=");
    push_ip(out, h.src);
    out.extend_from_slice(b" DST=");
    push_ip(out, h.dst);
    out.extend_from_slice(b" LEN=");
    push_u64(out, h.tot_len as u64);
    // TOS without "0x", PREC with it; ECT(1) (bit 0) is masked away by IPTOS_TOS_MASK.
    out.extend_from_slice(b" TOS=");
    push_hex2(out, h.tos & 0x1e, true);
    out.extend_from_slice(b" PREC=0x");
    push_hex2(out, h.tos & 0xe0, true);
    out.extend_from_slice(b" TTL=");
    push_u64(out, h.ttl as u64);
    out.extend_from_slice(b" ID=");
    push_u64(out, h.id as u64);
    out.push(b' ');
    // "CE" is the reserved bit 0x8000, not ECN.
    if h.frag_off & 0x8000 != 0 {
        out.extend_from_slice(b"CE ");
    }
    if h.frag_off & 0x4000 != 0 {
        out.extend_from_slice(b"DF ");
    }
    if h.frag_off & 0x2000 != 0 {
        out.extend_from_slice(b"MF ");
    }
    if h.frag_off & 0x1fff != 0 {
        out.extend_from_slice(b"FRAG:");
        push_u64(out, (h.frag_off & 0x1fff) as u64);
        out.push(b' ');
    }
    match h.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_ESP | IPPROTO_AH => {
            proto(h.protocol, h.protocol, &ev.packet.transport, out)
        }
        IPPROTO_ICMP => icmp(&ev.packet.transport, out),
        other => {
            out.extend_from_slice(b"PROTO=");
            push_u64(out, other as u64);
            out.push(b' ');
        }
    }
}

/// `printpkt_proto`. `ip_protocol` is ulogd2's `ip.protocol` key, which decides ESP vs AH.
fn proto(protocol: u8, ip_protocol: u8, t: &Transport, out: &mut Vec<u8>) {
    match protocol {
        IPPROTO_TCP => {
            out.extend_from_slice(b"PROTO=TCP ");
            let Transport::Tcp(tcp) = t else {
                // No trailing space: the next token is glued to it, as in ulogd2.
                out.extend_from_slice(b"INCOMPLETE");
                return;
            };
            out.extend_from_slice(b"SPT=");
            push_u64(out, tcp.sport as u64);
            out.extend_from_slice(b" DPT=");
            push_u64(out, tcp.dport as u64);
            out.extend_from_slice(b" SEQ=");
            push_u64(out, tcp.seq as u64);
            out.extend_from_slice(b" ACK=");
            push_u64(out, tcp.ack as u64);
            out.extend_from_slice(b" WINDOW=");
            push_u64(out, tcp.window as u64);
            out.push(b' ');
            use crate::decode::TcpFlags as F;
            for (flag, name) in [
                (F::URG, &b"URG "[..]),
                (F::ACK, b"ACK "),
                (F::PSH, b"PSH "),
                (F::RST, b"RST "),
                (F::SYN, b"SYN "),
                (F::FIN, b"FIN "),
            ] {
                if tcp.flags.has(flag) {
                    out.extend_from_slice(name);
                }
            }
            out.extend_from_slice(b"URGP=");
            let urgp = if tcp.flags.has(F::URG) { tcp.urgent } else { 0 };
            push_u64(out, urgp as u64);
            out.push(b' ');
        }
        IPPROTO_UDP => {
            out.extend_from_slice(b"PROTO=UDP ");
            let Transport::Udp { sport, dport, len } = *t else {
                out.extend_from_slice(b"INCOMPLETE");
                return;
            };
            out.extend_from_slice(b"SPT=");
            push_u64(out, sport as u64);
            out.extend_from_slice(b" DPT=");
            push_u64(out, dport as u64);
            out.extend_from_slice(b" LEN=");
            push_u64(out, len as u64);
            out.push(b' ');
        }
        IPPROTO_SCTP => {
            out.extend_from_slice(b"PROTO=SCTP ");
            let Transport::Sctp { sport, dport } = *t else {
                out.extend_from_slice(b"INCOMPLETE");
                return;
            };
            out.extend_from_slice(b"SPT=");
            push_u64(out, sport as u64);
            out.extend_from_slice(b" DPT=");
            push_u64(out, dport as u64);
            out.push(b' ');
        }
        _ => {
            // ESP/AH: the SPI is never decoded by ulogd2 2.0.8, so always INCOMPLETE.
            out.extend_from_slice(if ip_protocol == IPPROTO_ESP {
                b"PROTO=ESP INCOMPLETE"
            } else {
                b"PROTO=AH INCOMPLETE"
            });
        }
    }
}

/// IPv4 ICMP: the extras are chosen by the *code* (ulogd2 bug, printpkt.c), and filled by BASE
/// only for the matching *types*, so most combinations print zeroes.
fn icmp(t: &Transport, out: &mut Vec<u8>) {
    out.extend_from_slice(b"PROTO=ICMP ");
    let Transport::Icmp(Icmp { kind, code, rest }) = *t else {
        out.extend_from_slice(b"INCOMPLETE");
        return;
    };
    out.extend_from_slice(b"TYPE=");
    push_u64(out, kind as u64);
    out.extend_from_slice(b" CODE=");
    push_u64(out, code as u64);
    out.push(b' ');
    let echo = matches!(kind, 0 | 8);
    let gateway = if matches!(kind, 5 | 12) { rest } else { 0 };
    match code {
        0 | 8 => {
            let (id, seq) = if echo {
                (rest >> 16, rest & 0xffff)
            } else {
                (0, 0)
            };
            out.extend_from_slice(b"ID=");
            push_u64(out, id as u64);
            out.extend_from_slice(b" SEQ=");
            push_u64(out, seq as u64);
            out.push(b' ');
        }
        12 => {
            out.extend_from_slice(b"PARAMETER=");
            push_u64(out, (gateway >> 24) as u64);
            out.push(b' ');
        }
        5 => {
            // Stored in host byte order by ulogd2 2.0.8, so inet_ntop prints it byte-reversed.
            out.extend_from_slice(b"GATEWAY=");
            push_ipv4(out, std::net::Ipv4Addr::from(gateway.swap_bytes()));
            out.push(b' ');
        }
        // Code 3 would print MTU only if the code were also 4: never.
        _ => {}
    }
}

fn ipv6(ev: &Event<'_>, h: Option<crate::decode::Ipv6Info>, out: &mut Vec<u8>) {
    let Some(h) = h else {
        // Every field is skipped when invalid, except the final switch on `ip6.nexthdr`,
        // whose default branch prints the (zeroed) value.
        out.extend_from_slice(b"PROTO=0 ");
        return;
    };
    out.extend_from_slice(b"SRC=");
    push_ip(out, h.src);
    out.extend_from_slice(b" DST=");
    push_ip(out, h.dst);
    out.extend_from_slice(b" LEN=");
    push_u64(out, h.payload_len as u64 + 40);
    out.extend_from_slice(b" TC=");
    push_u64(out, h.traffic_class as u64);
    out.extend_from_slice(b" HOPLIMIT=");
    push_u64(out, h.hop_limit as u64);
    out.extend_from_slice(b" FLOWLBL=");
    push_u64(out, h.flow_label as u64);
    out.push(b' ');
    if let Some((off, id)) = h.frag {
        // Spaces after the colons and a byte offset, unlike the IPv4 token.
        out.extend_from_slice(b"FRAG: ");
        push_u64(out, off as u64);
        out.extend_from_slice(b" ID: ");
        for shift in [24, 16, 8, 0] {
            push_hex2(out, (id >> shift) as u8, false);
        }
        out.push(b' ');
    }
    // An extension header cut off by the copy leaves `ip6.nexthdr` invalid, which reads as 0.
    let next = h.nexthdr.unwrap_or(0);
    match next {
        // ulogd2 does not decode SCTP over IPv6, so it is always INCOMPLETE there; and its
        // `ip.protocol` is never set for ESP over IPv6, which therefore prints as "AH".
        IPPROTO_SCTP => proto(next, next, &Transport::None, out),
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ESP | IPPROTO_AH => {
            let ip_protocol = h.upper_protocol.unwrap_or(0);
            proto(next, ip_protocol, &ev.packet.transport, out)
        }
        IPPROTO_ICMPV6 => {
            out.extend_from_slice(b"PROTO=ICMPv6 ");
            let Transport::Icmpv6(Icmp { kind, code, rest }) = ev.packet.transport else {
                out.extend_from_slice(b"INCOMPLETE");
                return;
            };
            out.extend_from_slice(b"TYPE=");
            push_u64(out, kind as u64);
            out.extend_from_slice(b" CODE=");
            push_u64(out, code as u64);
            out.push(b' ');
            if matches!(kind, 128 | 129) {
                out.extend_from_slice(b"ID=");
                push_u64(out, (rest >> 16) as u64);
                out.extend_from_slice(b" SEQ=");
                push_u64(out, (rest & 0xffff) as u64);
                out.push(b' ');
            }
        }
        other => {
            out.extend_from_slice(b"PROTO=");
            push_u64(out, other as u64);
            out.push(b' ');
        }
    }
}

fn arp(a: Option<crate::decode::ArpInfo>, out: &mut Vec<u8>) {
    if let Some(a) = a {
        out.extend_from_slice(b"SRC=");
        push_ipv4(out, a.sender_ip);
        out.extend_from_slice(b" DST=");
        push_ipv4(out, a.target_ip);
        out.push(b' ');
    }
    out.extend_from_slice(b"PROTO=ARP ");
    let Some(a) = a else {
        return;
    };
    match a.op {
        1 => out.extend_from_slice(b"REQUEST "),
        2 => out.extend_from_slice(b"REPLY "),
        10 => out.extend_from_slice(b"NAK "),
        code => {
            out.extend_from_slice(b"CODE=");
            push_u64(out, code as u64);
            out.push(b' ');
        }
    }
    if a.op == 2 {
        out.extend_from_slice(b"REPLY_MAC=");
        for (i, b) in a.sender_mac.iter().enumerate() {
            push_hex2(out, *b, false);
            out.push(if i == 5 { b' ' } else { b':' });
        }
    }
}
