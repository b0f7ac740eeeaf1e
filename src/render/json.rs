//! One JSON object per line: ulogd2's JSON key names where they exist (`src_ip`, `dest_ip`,
//! `src_port`, `dest_port`, `oob.prefix`, `oob.in`, …) plus the Kubernetes fields. The schema is
//! documented in the README ("JSON records").
//!
//! Written by hand rather than through serde: the per-message path must not allocate, and the
//! field order is part of what log pipelines see.

use crate::attribute::addr::AddrClass;
use crate::attribute::{Direction, PodMeta, ServiceHit};
use crate::decode::{protocol_name, Network, Transport};
use crate::event::Event;

use super::time::LocalClock;
use super::{json_plain, push_u64, with_cursor, Cursor, HEX};

/// Builds a JSON object field by field.
struct Obj<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Obj<'o> {
    #[inline]
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    #[inline]
    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        // `,"` (or `"`), the key and `":` in one write: inlined, `k` is a constant.
        let sep: &[u8] = if self.first { b"\"" } else { b",\"" };
        self.first = false;
        with_cursor(self.out, k.len() + 4, |c| {
            c.bytes(sep);
            c.var(k.as_bytes());
            c.bytes(b"\":");
        });
        self.out
    }

    #[inline]
    fn num(&mut self, k: &str, v: u64) {
        let out = self.key(k);
        push_u64(out, v);
    }

    #[inline]
    fn str(&mut self, k: &str, v: &[u8]) {
        let out = self.key(k);
        push_json_str(out, v);
    }

    #[inline]
    fn raw(&mut self, k: &str, v: &[u8]) {
        self.key(k).extend_from_slice(v);
    }

    #[inline]
    fn end(self) {
        self.out.push(b'}');
    }
}

/// Where escaped JSON text goes: a line buffer or a cursor in one.
trait Put {
    fn put(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl Put for Cursor<'_> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.var(b);
    }
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD, control characters `\u00XX`.
pub fn push_json_str(out: &mut Vec<u8>, v: &[u8]) {
    // Nearly every value is plain printable ASCII: copy it in one go.
    if json_plain(v) {
        with_cursor(out, v.len() + 2, |c| {
            c.byte(b'"');
            c.var(v);
            c.byte(b'"');
        });
        return;
    }
    json_escaped(out, v);
}

/// [`push_json_str`] for values that are not plain printable ASCII.
fn json_escaped(out: &mut impl Put, v: &[u8]) {
    out.put(b"\"");
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.put(b"\\\""),
                '\\' => out.put(b"\\\\"),
                '\n' => out.put(b"\\n"),
                '\r' => out.put(b"\\r"),
                '\t' => out.put(b"\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let [hi, lo] = [HEX[(c as usize) >> 4], HEX[(c as usize) & 15]];
                    out.put(&[b'\\', b'u', b'0', b'0', hi, lo]);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.put(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.put("\u{fffd}".as_bytes());
        }
    }
    out.put(b"\"");
}

/// A JSON string written through a cursor, checked once to bound its space.
struct JsonStr<'v> {
    v: &'v [u8],
    plain: bool,
}

impl<'v> JsonStr<'v> {
    #[inline]
    fn new(v: &'v [u8]) -> Self {
        JsonStr {
            v,
            plain: json_plain(v),
        }
    }

    /// The most it writes: quotes, and six bytes for a byte at worst (`\u00XX`).
    #[inline]
    fn max(&self) -> usize {
        if self.plain {
            self.v.len() + 2
        } else {
            6 * self.v.len() + 2
        }
    }

    #[inline]
    fn write(&self, c: &mut Cursor<'_>) {
        if self.plain {
            c.byte(b'"');
            c.var(self.v);
            c.byte(b'"');
        } else {
            json_escaped(c, self.v);
        }
    }
}

#[inline]
fn quoted_ip(c: &mut Cursor<'_>, v: std::net::IpAddr) {
    c.byte(b'"');
    match v {
        std::net::IpAddr::V4(a) => c.ipv4(a),
        std::net::IpAddr::V6(a) => c.ipv6(a),
    }
    c.byte(b'"');
}

/// `,"key":` as one constant.
macro_rules! key {
    ($k:literal) => {
        concat!(",\"", $k, "\":").as_bytes()
    };
}

pub fn render(
    ev: &Event<'_>,
    hostname: &[u8],
    node_name: &[u8],
    clock: &mut LocalClock,
    out: &mut Vec<u8>,
) {
    render_with(ev, hostname, node_name, clock, out, |_| {});
}

/// A tail record for `nflog-tail`: the event's fields, then the first message's syslogemu line
/// (without the newline) and NFLOG body in hex (`syslogemu`, `nflog`), then every written message
/// of the packet, the first included, as `messages: [{syslogemu, nflog}, …]`, so the client can
/// print either format per message, as the daemon writes syslogemu, and write pcap.
pub fn render_tail_record<'l, 'b>(
    ev: &Event<'_>,
    hostname: &[u8],
    node_name: &[u8],
    clock: &mut LocalClock,
    mut messages: impl Iterator<Item = (&'l [u8], &'b [u8])>,
    out: &mut Vec<u8>,
) {
    render_with(ev, hostname, node_name, clock, out, |o| {
        let Some((syslogemu, body)) = messages.next() else {
            return;
        };
        o.str("syslogemu", syslogemu);
        push_hex_field(o.key("nflog"), body);
        let out = o.key("messages");
        out.push(b'[');
        for (i, (syslogemu, body)) in std::iter::once((syslogemu, body))
            .chain(messages)
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"syslogemu\":");
            push_json_str(out, syslogemu);
            out.extend_from_slice(b",\"nflog\":");
            push_hex_field(out, body);
            out.push(b'}');
        }
        out.push(b']');
    });
}

fn push_hex_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for b in bytes {
        super::push_hex2(out, *b, false);
    }
    out.push(b'"');
}

/// A suppression summary record: `count` messages of one limit key were suppressed in the
/// last `interval`. `policy` is the NetworkPolicy for `DROP by policy` keys, null otherwise;
/// `limit_key` names the bucket (see `limit::key_into`).
pub fn render_suppressed(
    timestamp: &[u8],
    s: &crate::limit::Suppressed,
    interval: std::time::Duration,
    out: &mut Vec<u8>,
) {
    let mut o = Obj::new(out);
    o.str("timestamp", timestamp);
    o.str("type", b"suppressed");
    match s.policy() {
        Some(p) => o.str("policy", p.as_bytes()),
        None => o.raw("policy", b"null"),
    }
    o.str("policy_source", s.source().as_str().as_bytes());
    o.str("limit_key", s.key.as_bytes());
    o.num("suppressed", s.count);
    o.num("interval_s", interval.as_secs());
    o.end();
    out.push(b'\n');
}

/// The most [`render_with`] writes through its cursor besides the strings and the MAC header:
/// the `oob.*`/`raw.*` fields (about 370 bytes at most) and [`network`] (about 500, IPv6 with
/// a fragment header and TCP), with room to spare (`syslogemu::tests::longest_lines`).
const FIXED_MAX: usize = 1024;

fn render_with(
    ev: &Event<'_>,
    hostname: &[u8],
    node_name: &[u8],
    clock: &mut LocalClock,
    out: &mut Vec<u8>,
    extra: impl FnOnce(&mut Obj<'_>),
) {
    let strs = [
        JsonStr::new(hostname),
        JsonStr::new(node_name),
        JsonStr::new(ev.msg.prefix.unwrap_or_default()),
        JsonStr::new(ev.indev.as_bytes()),
        JsonStr::new(ev.outdev.as_bytes()),
    ];
    let [host, node, prefix, indev, outdev] = &strs;
    let mac = ev.msg.mac_header();
    let max =
        strs.iter().map(JsonStr::max).sum::<usize>() + 3 * mac.map_or(0, <[u8]>::len) + FIXED_MAX;
    with_cursor(out, max, |c| {
        c.bytes(b"{\"timestamp\":\"");
        clock.write_rfc3339(ev.time, c);
        c.bytes(b"\",\"hostname\":");
        host.write(c);
        c.bytes(key!("node_name"));
        node.write(c);
        c.bytes(b",\"action\":\"drop\",\"oob.group\":");
        c.dec(ev.msg.group as u32);
        c.bytes(key!("oob.prefix"));
        prefix.write(c);
        c.bytes(key!("oob.hook"));
        c.dec8(ev.msg.hook);
        c.bytes(key!("oob.family"));
        c.dec8(ev.msg.family);
        c.bytes(key!("oob.protocol"));
        c.dec(ev.msg.hw_protocol as u32);
        c.bytes(key!("oob.in"));
        indev.write(c);
        c.bytes(key!("oob.out"));
        outdev.write(c);
        c.bytes(key!("oob.mark"));
        c.dec(ev.msg.mark.unwrap_or(0));
        if let Some(uid) = ev.msg.uid {
            c.bytes(key!("oob.uid"));
            c.dec(uid);
        }
        if let Some(gid) = ev.msg.gid {
            c.bytes(key!("oob.gid"));
            c.dec(gid);
        }
        if let Some(seq) = ev.msg.seq {
            c.bytes(key!("oob.seq.local"));
            c.dec(seq);
        }
        c.bytes(key!("raw.pktlen"));
        c.dec64(ev.msg.payload.len() as u64);
        if let Some(mac) = mac {
            c.bytes(b",\"mac.str\":\"");
            for b in mac {
                c.hex2(*b, false);
                c.byte(b':');
            }
            // The last separator is the closing quote.
            c.back(1);
            c.byte(b'"');
        }
        network(ev, c);
    });
    // The object has fields: the rest continues it.
    let mut o = Obj { out, first: false };
    policy(ev, &mut o);
    extra(&mut o);
    o.end();
    out.push(b'\n');
}

fn network(ev: &Event<'_>, c: &mut Cursor<'_>) {
    let p = &ev.packet;
    match p.network {
        Network::Ipv4(Some(h)) => {
            c.bytes(key!("src_ip"));
            quoted_ip(c, h.src.into());
            c.bytes(key!("dest_ip"));
            quoted_ip(c, h.dst.into());
            c.bytes(key!("ip.protocol"));
            c.dec8(h.protocol);
            c.bytes(key!("ip.tos"));
            c.dec8(h.tos);
            c.bytes(key!("ip.ttl"));
            c.dec8(h.ttl);
            c.bytes(key!("ip.totlen"));
            c.dec(h.tot_len as u32);
            c.bytes(key!("ip.ihl"));
            c.dec8(h.ihl);
            c.bytes(key!("ip.id"));
            c.dec(h.id as u32);
            c.bytes(key!("ip.fragoff"));
            c.dec(h.frag_off as u32);
        }
        Network::Ipv6(Some(h)) => {
            c.bytes(key!("src_ip"));
            quoted_ip(c, h.src.into());
            c.bytes(key!("dest_ip"));
            quoted_ip(c, h.dst.into());
            if let Some(next) = h.nexthdr {
                c.bytes(key!("ip.protocol"));
                c.dec8(next);
                c.bytes(key!("ip6.nexthdr"));
                c.dec8(next);
            }
            c.bytes(key!("ip6.payloadlen"));
            c.dec(h.payload_len as u32);
            c.bytes(key!("ip6.priority"));
            c.dec8(h.traffic_class);
            c.bytes(key!("ip6.flowlabel"));
            c.dec(h.flow_label);
            c.bytes(key!("ip6.hoplimit"));
            c.dec8(h.hop_limit);
            if let Some((off, id)) = h.frag {
                c.bytes(key!("ip6.fragoff"));
                c.dec(off as u32);
                c.bytes(key!("ip6.fragid"));
                c.dec(id);
            }
        }
        Network::Arp(Some(a)) => {
            c.bytes(key!("arp.saddr.str"));
            quoted_ip(c, a.sender_ip.into());
            c.bytes(key!("arp.daddr.str"));
            quoted_ip(c, a.target_ip.into());
            c.bytes(key!("arp.operation"));
            c.dec(a.op as u32);
        }
        _ => {}
    }
    if let Some(n) = p.protocol() {
        c.bytes(b",\"protocol\":\"");
        match protocol_name(n) {
            Some(name) => c.var(name.as_bytes()),
            None => c.dec8(n),
        }
        c.byte(b'"');
    }
    if let Some((sport, dport)) = p.ports() {
        c.bytes(key!("src_port"));
        c.dec(sport as u32);
        c.bytes(key!("dest_port"));
        c.dec(dport as u32);
    }
    if p.is_later_fragment() {
        return;
    }
    match p.transport {
        Transport::Tcp(t) => {
            c.bytes(key!("tcp.seq"));
            c.dec(t.seq);
            c.bytes(key!("tcp.ackseq"));
            c.dec(t.ack);
            c.bytes(key!("tcp.window"));
            c.dec(t.window as u32);
            c.bytes(b",\"tcp.flags\":\"");
            let start = c.len();
            use crate::decode::TcpFlags as F;
            for (flag, name) in [
                (F::CWR, b"CWR "),
                (F::ECE, b"ECE "),
                (F::URG, b"URG "),
                (F::ACK, b"ACK "),
                (F::PSH, b"PSH "),
                (F::RST, b"RST "),
                (F::SYN, b"SYN "),
                (F::FIN, b"FIN "),
            ] {
                // Written always, kept only when set: no branch per flag.
                c.bytes(name);
                c.back(4 * !t.flags.has(flag) as usize);
            }
            // Names are separated by spaces: the last one's becomes the closing quote.
            c.back((c.len() > start) as usize);
            c.byte(b'"');
            if t.flags.has(F::URG) {
                c.bytes(key!("tcp.urgp"));
                c.dec(t.urgent as u32);
            }
        }
        Transport::Udp { len, .. } => {
            c.bytes(key!("udp.len"));
            c.dec(len as u32);
        }
        Transport::Icmp(i) => {
            c.bytes(key!("icmp.type"));
            c.dec8(i.kind);
            c.bytes(key!("icmp.code"));
            c.dec8(i.code);
            if matches!(i.kind, 0 | 8) {
                c.bytes(key!("icmp.echoid"));
                c.dec(i.echo_id() as u32);
                c.bytes(key!("icmp.echoseq"));
                c.dec(i.echo_seq() as u32);
            }
            if i.kind == 3 && i.code == 4 {
                c.bytes(key!("icmp.fragmtu"));
                c.dec(i.rest & 0xffff);
            }
        }
        Transport::Icmpv6(i) => {
            c.bytes(key!("icmpv6.type"));
            c.dec8(i.kind);
            c.bytes(key!("icmpv6.code"));
            c.dec8(i.code);
            if matches!(i.kind, 128 | 129) {
                c.bytes(key!("icmpv6.echoid"));
                c.dec(i.echo_id() as u32);
                c.bytes(key!("icmpv6.echoseq"));
                c.dec(i.echo_seq() as u32);
            }
        }
        Transport::Incomplete => c.bytes(b",\"incomplete\":true"),
        Transport::Sctp { .. } | Transport::None => {}
    }
}

fn policy(ev: &Event<'_>, o: &mut Obj<'_>) {
    let a = &ev.attribution;
    o.str("policy_source", a.source.as_str().as_bytes());
    let ctx = ev.context.as_deref();
    match ev.reported_policy() {
        Some(r) => {
            let out = o.key("policy");
            out.extend_from_slice(b"{\"namespace\":");
            push_json_str(out, r.namespace);
            out.extend_from_slice(b",\"name\":");
            match r.name {
                Some(name) => push_json_str(out, name),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"resolved\":");
            let resolved = ctx.is_some_and(|c| c.resolved);
            out.extend_from_slice(if resolved { b"true" } else { b"false" });
            out.extend_from_slice(b",\"candidates\":[");
            for (i, p) in ctx.iter().flat_map(|c| &c.policies).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"namespace\":");
                push_json_str(out, p.namespace.as_bytes());
                out.extend_from_slice(b",\"name\":");
                push_json_str(out, p.name.as_bytes());
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
        None => o.raw("policy", b"null"),
    }
    match ctx.and_then(|c| c.direction) {
        Some(Direction::Ingress) => o.str("direction", b"ingress"),
        Some(Direction::Egress) => o.str("direction", b"egress"),
        None => o.raw("direction", b"null"),
    }
    if let Some(c) = ctx {
        side(o, "src", c.src.as_deref(), c.src_node.as_deref(), &[]);
        side(
            o,
            "dest",
            c.dest.as_deref(),
            c.dest_node.as_deref(),
            &c.dest_services,
        );
    }
    if let Some((src, dst)) = ev.packet.addrs() {
        o.str("src_class", AddrClass::of(src).as_str().as_bytes());
        o.str("dest_class", AddrClass::of(dst).as_str().as_bytes());
    }
    o.num("count", ev.count.max(1) as u64);
}

/// One end of the packet: a pod (`{pod, namespace, workload_kind, workload, node}`), else a
/// node's own address (`{node}`), plus the Services the client aimed at (`services`, the
/// destination only); nothing when the index knows none of these.
fn side(
    o: &mut Obj<'_>,
    key: &str,
    pod: Option<&PodMeta>,
    node: Option<&str>,
    services: &[ServiceHit],
) {
    if pod.is_none() && node.is_none() && services.is_empty() {
        return;
    }
    let out = o.key(key);
    let mut p = Obj::new(out);
    if let Some(pod) = pod {
        p.str("pod", pod.pod.as_bytes());
        p.str("namespace", pod.namespace.as_bytes());
        if let Some(kind) = &pod.workload_kind {
            p.str("workload_kind", kind.as_bytes());
        }
        if let Some(w) = &pod.workload {
            p.str("workload", w.as_bytes());
        }
        if let Some(n) = &pod.node {
            p.str("node", n.as_bytes());
        }
    } else if let Some(n) = node {
        p.str("node", n.as_bytes());
    }
    if !services.is_empty() {
        let out = p.key("services");
        out.push(b'[');
        for (i, s) in services.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut so = Obj::new(out);
            so.str("namespace", s.namespace.as_bytes());
            so.str("name", s.name.as_bytes());
            if let Some(n) = &s.port_name {
                so.str("port_name", n.as_bytes());
            }
            if let Some(port) = s.port {
                so.num("port", u64::from(port));
            }
            if let Some(port) = s.node_port {
                so.num("node_port", u64::from(port));
            }
            so.str("via", s.via.as_str().as_bytes());
            so.end();
        }
        out.push(b']');
    }
    p.end();
}
