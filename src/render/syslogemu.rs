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
use super::{has_control, with_cursor, Cursor, TCP_FLAGS};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

/// The most the line writes after `MAC=…`: the longest network part (IPv6 with a fragment
/// header, 171 bytes), transport part (TCP with every flag, 108) and `UID= GID= MARK= \n` (47),
/// with room to spare. `tests::longest_lines` writes the longest of each.
const FIXED_MAX: usize = 400;

/// One LOGEMU line: `Mmm dd hh:mm:ss HOST ` then [`render_body`].
pub fn render(ev: &Event<'_>, hostname: &[u8], clock: &mut LocalClock, out: &mut Vec<u8>) {
    let body = Body::new(ev);
    with_cursor(out, 17 + hostname.len() + body.max, |c| {
        clock.write_ctime(ev.time, c);
        c.byte(b' ');
        c.var(hostname);
        c.byte(b' ');
        body.write(ev, c);
    });
}

/// The line after its timestamp and hostname: from the prefix to `MARK=0x… \n`. This is the
/// text ulogd2's SYSLOG output hands to `syslog(3)`, so the syslog sink sends it as the message.
pub fn render_body(ev: &Event<'_>, out: &mut Vec<u8>) {
    let body = Body::new(ev);
    with_cursor(out, body.max, |c| body.write(ev, c));
}

/// Bytes from outside written with control bytes escaped (see [`super::push_escaped`]); the
/// check is made once, to bound the space as well.
struct Escapes {
    clean: bool,
    max: usize,
}

impl Escapes {
    #[inline]
    fn new(bytes: &[u8]) -> Self {
        Self::known(bytes, has_control(bytes))
    }

    /// With the check made already (interface names carry theirs).
    #[inline]
    fn known(bytes: &[u8], control: bool) -> Self {
        let max = if control {
            4 * bytes.len()
        } else {
            bytes.len()
        };
        Escapes {
            clean: !control,
            max,
        }
    }

    #[inline]
    fn write(&self, bytes: &[u8], c: &mut Cursor<'_>) {
        if self.clean {
            c.var(bytes)
        } else {
            c.escaped(bytes)
        }
    }
}

/// The variable parts of a body and the most it can take.
struct Body {
    prefix: Escapes,
    indev: Escapes,
    outdev: Escapes,
    max: usize,
}

impl Body {
    #[inline]
    fn new(ev: &Event<'_>) -> Self {
        let prefix = Escapes::new(ev.msg.prefix.unwrap_or_default());
        let indev = Escapes::known(ev.indev.as_bytes(), ev.indev.has_control());
        let outdev = Escapes::known(ev.outdev.as_bytes(), ev.outdev.has_control());
        let mac = ev.msg.mac_header().map_or(0, <[u8]>::len);
        // "<prefix> IN=<in> OUT=<out> MAC=<mac> " and the fixed-size rest.
        let max = prefix.max + indev.max + outdev.max + 3 * mac + 16 + FIXED_MAX;
        Body {
            prefix,
            indev,
            outdev,
            max,
        }
    }

    #[inline]
    fn write(&self, ev: &Event<'_>, c: &mut Cursor<'_>) {
        if let Some(prefix) = ev.msg.prefix {
            // Always "<prefix> ": an empty prefix gives two spaces after the hostname.
            self.prefix.write(prefix, c);
            c.byte(b' ');
        }
        c.bytes(b"IN=");
        self.indev.write(ev.indev.as_bytes(), c);
        c.bytes(b" OUT=");
        self.outdev.write(ev.outdev.as_bytes(), c);
        c.bytes(b" MAC=");
        match ev.msg.mac_header() {
            Some(mac) => {
                for b in mac {
                    c.hex2(*b, false);
                    c.byte(b':');
                }
                // The last separator is a space.
                c.back(1);
                c.byte(b' ');
            }
            None => c.byte(b' '),
        }
        fixed(ev, c);
    }
}

/// Everything after `MAC=… `, at most [`FIXED_MAX`] bytes.
fn fixed(ev: &Event<'_>, c: &mut Cursor<'_>) {
    match ev.packet.network {
        Network::Ipv4(h) => ipv4(ev, h, c),
        Network::Ipv6(h) => ipv6(ev, h, c),
        Network::Arp(a) => arp(a, c),
        Network::OtherEthertype(proto) => {
            c.bytes(b"PROTO=");
            c.dec(proto as u32);
            c.byte(b' ');
        }
        Network::None => {}
    }
    if let Some(uid) = ev.msg.uid {
        c.bytes(b"UID=");
        c.dec(uid);
        c.byte(b' ');
    }
    if let Some(gid) = ev.msg.gid {
        c.bytes(b"GID=");
        c.dec(gid);
        c.byte(b' ');
    }
    // Always printed: ulogd2's NFLOG plugin stores 0 when the kernel sends no mark.
    c.bytes(b"MARK=0x");
    c.hex(ev.msg.mark.unwrap_or(0));
    c.bytes(b" \n");
}

#[inline]
fn ipv4(ev: &Event<'_>, h: Option<crate::decode::Ipv4Info>, c: &mut Cursor<'_>) {
    let Some(h) = h else {
        // A copy too short for the header leaves every key invalid, which prints as zeroes.
        c.bytes(b"LEN=0 TOS=00 PREC=0x00 TTL=0 ID=0 PROTO=0 ");
        return;
    };
    addresses(c, h.src, h.dst, Cursor::ipv4);
    length(c, h.tot_len as u32);
    // TOS without "0x", PREC with it; ECT(1) (bit 0) is masked away by IPTOS_TOS_MASK.
    c.bytes(b" TOS=");
    c.hex2(h.tos & 0x1e, true);
    c.bytes(b" PREC=0x");
    c.hex2(h.tos & 0xe0, true);
    c.bytes(b" TTL=");
    c.dec8(h.ttl);
    c.bytes(b" ID=");
    c.dec(h.id as u32);
    c.byte(b' ');
    // "CE" is the reserved bit 0x8000, not ECN.
    if h.frag_off & 0x8000 != 0 {
        c.bytes(b"CE ");
    }
    if h.frag_off & 0x4000 != 0 {
        c.bytes(b"DF ");
    }
    if h.frag_off & 0x2000 != 0 {
        c.bytes(b"MF ");
    }
    if h.frag_off & 0x1fff != 0 {
        c.bytes(b"FRAG:");
        c.dec((h.frag_off & 0x1fff) as u32);
        c.byte(b' ');
    }
    match h.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_ESP | IPPROTO_AH => {
            proto(h.protocol, h.protocol, &ev.packet.transport, c)
        }
        IPPROTO_ICMP => icmp(&ev.packet.transport, c),
        other => {
            c.bytes(b"PROTO=");
            c.dec8(other);
            c.byte(b' ');
        }
    }
}

/// `printpkt_proto`. `ip_protocol` is ulogd2's `ip.protocol` key, which decides ESP vs AH.
#[inline]
fn proto(protocol: u8, ip_protocol: u8, t: &Transport, c: &mut Cursor<'_>) {
    match protocol {
        IPPROTO_TCP => {
            c.bytes(b"PROTO=TCP ");
            let Transport::Tcp(tcp) = t else {
                // No trailing space: the next token is glued to it, as in ulogd2.
                c.bytes(b"INCOMPLETE");
                return;
            };
            c.bytes(b"SPT=");
            c.dec(tcp.sport as u32);
            c.bytes(b" DPT=");
            c.dec(tcp.dport as u32);
            c.bytes(b" SEQ=");
            c.dec(tcp.seq);
            c.bytes(b" ACK=");
            c.dec(tcp.ack);
            c.bytes(b" WINDOW=");
            c.dec(tcp.window as u32);
            c.byte(b' ');
            // ulogd2 prints neither CWR nor ECE.
            c.tcp_flags(tcp.flags, &TCP_FLAGS[2..]);
            c.bytes(b"URGP=");
            let urg = tcp.flags.has(crate::decode::TcpFlags::URG);
            let urgp = if urg { tcp.urgent } else { 0 };
            c.dec(urgp as u32);
            c.byte(b' ');
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let udp = protocol == IPPROTO_UDP;
            c.var(if udp {
                &b"PROTO=UDP "[..]
            } else {
                b"PROTO=SCTP "
            });
            let (sport, dport, len) = match *t {
                Transport::Udp { sport, dport, len } if udp => (sport, dport, Some(len)),
                Transport::Sctp { sport, dport } if !udp => (sport, dport, None),
                _ => {
                    c.bytes(b"INCOMPLETE");
                    return;
                }
            };
            c.bytes(b"SPT=");
            c.dec(sport as u32);
            c.bytes(b" DPT=");
            c.dec(dport as u32);
            if let Some(len) = len {
                c.bytes(b" LEN=");
                c.dec(len as u32);
            }
            c.byte(b' ');
        }
        _ => {
            // ESP/AH: the SPI is never decoded by ulogd2 2.0.8, so always INCOMPLETE.
            c.bytes(if ip_protocol == IPPROTO_ESP {
                b"PROTO=ESP INCOMPLETE"
            } else {
                b"PROTO=AH INCOMPLETE"
            });
        }
    }
}

/// IPv4 ICMP: the extras are chosen by the *code* (ulogd2 bug, printpkt.c), and filled by BASE
/// only for the matching *types*, so most combinations print zeroes.
fn icmp(t: &Transport, c: &mut Cursor<'_>) {
    let header = match *t {
        Transport::Icmp(i) => Some(i),
        _ => None,
    };
    let Some(Icmp { kind, code, rest }) = type_and_code(c, b"PROTO=ICMP ", header) else {
        return;
    };
    let echo = matches!(kind, 0 | 8);
    let gateway = if matches!(kind, 5 | 12) { rest } else { 0 };
    match code {
        0 | 8 => {
            let (id, seq) = if echo {
                (rest >> 16, rest & 0xffff)
            } else {
                (0, 0)
            };
            c.bytes(b"ID=");
            c.dec(id);
            c.bytes(b" SEQ=");
            c.dec(seq);
            c.byte(b' ');
        }
        12 => {
            c.bytes(b"PARAMETER=");
            c.dec8((gateway >> 24) as u8);
            c.byte(b' ');
        }
        5 => {
            // Stored in host byte order by ulogd2 2.0.8, so inet_ntop prints it byte-reversed.
            c.bytes(b"GATEWAY=");
            c.ipv4(std::net::Ipv4Addr::from(gateway.swap_bytes()));
            c.byte(b' ');
        }
        // Code 3 would print MTU only if the code were also 4: never.
        _ => {}
    }
}

/// `PROTO=<name> `, then the ICMP or ICMPv6 header's `TYPE=… CODE=… `, or `INCOMPLETE`
/// without a header (no trailing space, as in ulogd2).
#[inline(always)]
fn type_and_code(c: &mut Cursor<'_>, proto: &[u8], header: Option<Icmp>) -> Option<Icmp> {
    c.var(proto);
    let Some(i) = header else {
        c.bytes(b"INCOMPLETE");
        return None;
    };
    c.bytes(b"TYPE=");
    c.dec8(i.kind);
    c.bytes(b" CODE=");
    c.dec8(i.code);
    c.byte(b' ');
    Some(i)
}

fn ipv6(ev: &Event<'_>, h: Option<crate::decode::Ipv6Info>, c: &mut Cursor<'_>) {
    let Some(h) = h else {
        // Every field is skipped when invalid, except the final switch on `ip6.nexthdr`,
        // whose default branch prints the (zeroed) value.
        c.bytes(b"PROTO=0 ");
        return;
    };
    addresses(c, h.src, h.dst, Cursor::ipv6);
    length(c, h.payload_len as u32 + 40);
    c.bytes(b" TC=");
    c.dec8(h.traffic_class);
    c.bytes(b" HOPLIMIT=");
    c.dec8(h.hop_limit);
    c.bytes(b" FLOWLBL=");
    c.dec(h.flow_label);
    c.byte(b' ');
    if let Some((off, id)) = h.frag {
        // Spaces after the colons and a byte offset, unlike the IPv4 token.
        c.bytes(b"FRAG: ");
        c.dec(off as u32);
        c.bytes(b" ID: ");
        for shift in [24, 16, 8, 0] {
            c.hex2((id >> shift) as u8, false);
        }
        c.byte(b' ');
    }
    // An extension header cut off by the copy leaves `ip6.nexthdr` invalid, which reads as 0.
    let next = h.nexthdr.unwrap_or(0);
    match next {
        // ulogd2 does not decode SCTP over IPv6, so it is always INCOMPLETE there; and its
        // `ip.protocol` is never set for ESP over IPv6, which therefore prints as "AH".
        IPPROTO_SCTP => proto(next, next, &Transport::None, c),
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ESP | IPPROTO_AH => {
            let ip_protocol = h.upper_protocol.unwrap_or(0);
            proto(next, ip_protocol, &ev.packet.transport, c)
        }
        IPPROTO_ICMPV6 => {
            let header = match ev.packet.transport {
                Transport::Icmpv6(i) => Some(i),
                _ => None,
            };
            let Some(Icmp { kind, rest, .. }) = type_and_code(c, b"PROTO=ICMPv6 ", header) else {
                return;
            };
            if matches!(kind, 128 | 129) {
                c.bytes(b"ID=");
                c.dec(rest >> 16);
                c.bytes(b" SEQ=");
                c.dec(rest & 0xffff);
                c.byte(b' ');
            }
        }
        other => {
            c.bytes(b"PROTO=");
            c.dec8(other);
            c.byte(b' ');
        }
    }
}

/// `SRC=<src> DST=<dst>`, each address written by `write`.
#[inline(always)]
fn addresses<'c, A>(c: &mut Cursor<'c>, src: A, dst: A, write: impl Fn(&mut Cursor<'c>, A)) {
    c.bytes(b"SRC=");
    write(c, src);
    c.bytes(b" DST=");
    write(c, dst);
}

/// ` LEN=<len>`, the packet's length after its addresses.
#[inline(always)]
fn length(c: &mut Cursor<'_>, len: u32) {
    c.bytes(b" LEN=");
    c.dec(len);
}

fn arp(a: Option<crate::decode::ArpInfo>, c: &mut Cursor<'_>) {
    if let Some(a) = a {
        addresses(c, a.sender_ip, a.target_ip, Cursor::ipv4);
        c.byte(b' ');
    }
    c.bytes(b"PROTO=ARP ");
    let Some(a) = a else {
        return;
    };
    match a.op {
        1 => c.bytes(b"REQUEST "),
        2 => c.bytes(b"REPLY "),
        10 => c.bytes(b"NAK "),
        code => {
            c.bytes(b"CODE=");
            c.dec(code as u32);
            c.byte(b' ');
        }
    }
    if a.op == 2 {
        c.bytes(b"REPLY_MAC=");
        for (i, b) in a.sender_mac.iter().enumerate() {
            c.hex2(*b, false);
            c.byte(if i == 5 { b' ' } else { b':' });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Ipv6Info, Packet, Tcp, TcpFlags};
    use crate::source::nflog::{build, NflogMsg};

    /// The longest fixed part (IPv6 with a fragment header, TCP with every flag, the largest
    /// numbers) fits [`FIXED_MAX`]: the cursor would panic otherwise.
    #[test]
    fn longest_lines() {
        let mut body = Vec::new();
        let hw = [0xffu8; 64];
        build::Packet {
            family: 10,
            prefix: b"\x01\x02prefix\x7f",
            mark: Some(u32::MAX),
            uid_gid: Some((u32::MAX, u32::MAX)),
            hwheader: Some(&hw),
            payload: &[0; 40],
            ..Default::default()
        }
        .encode(&mut body);
        let msg = NflogMsg::parse(&body[16..]).expect("message");
        let long: std::net::Ipv6Addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let ev = Event {
            msg,
            packet: Packet {
                network: Network::Ipv6(Some(Ipv6Info {
                    src: long,
                    dst: "::ffff:255.255.255.255".parse().unwrap(),
                    payload_len: u16::MAX,
                    traffic_class: 255,
                    flow_label: 0xfffff,
                    hop_limit: 255,
                    frag: Some((u16::MAX, u32::MAX)),
                    nexthdr: Some(IPPROTO_TCP),
                    upper_protocol: Some(IPPROTO_TCP),
                })),
                transport: Transport::Tcp(Tcp {
                    sport: u16::MAX,
                    dport: u16::MAX,
                    seq: u32::MAX,
                    ack: u32::MAX,
                    window: u16::MAX,
                    flags: TcpFlags(0xff),
                    urgent: u16::MAX,
                    doff: 15,
                }),
            },
            time: Default::default(),
            indev: crate::event::IfName::new(&[0x1b; 16]),
            outdev: crate::event::IfName::new(b"0123456789abcdef"),
            attribution: crate::attribute::Attribution::from_prefix(None),
            context: None,
            count: 1,
        };
        let mut out = Vec::new();
        render_body(&ev, &mut out);
        let line = String::from_utf8(out).unwrap();
        let fixed = &line[line.find("SRC=").unwrap()..];
        assert!(fixed.len() <= FIXED_MAX, "{}", fixed.len());
        assert!(
            line.starts_with("\\x01\\x02prefix\\x7f IN=\\x1b\\x1b"),
            "{line}"
        );
        assert!(
            fixed.starts_with(
                "SRC=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff DST=::ffff:255.255.255.255 \
                 LEN=65575 TC=255 HOPLIMIT=255 FLOWLBL=1048575 FRAG: 65535 ID: ffffffff \
                 PROTO=TCP SPT=65535 DPT=65535 SEQ=4294967295 ACK=4294967295 WINDOW=65535 \
                 URG ACK PSH RST SYN FIN URGP=65535 UID=4294967295 GID=4294967295 \
                 MARK=0xffffffff \n"
            ),
            "{fixed}"
        );
        let mut json = Vec::new();
        crate::render::json::render(&ev, b"host", b"node", &mut LocalClock::new(), &mut json);
        assert!(json.ends_with(b"}\n"));
    }
}
