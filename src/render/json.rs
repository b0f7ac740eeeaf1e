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

use super::push_u64;
use super::time::LocalClock;

/// Builds a JSON object field by field.
struct Obj<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Obj<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn num(&mut self, k: &str, v: u64) {
        let out = self.key(k);
        push_u64(out, v);
    }

    fn str(&mut self, k: &str, v: &[u8]) {
        let out = self.key(k);
        push_json_str(out, v);
    }

    fn ip(&mut self, k: &str, v: std::net::IpAddr) {
        let out = self.key(k);
        out.push(b'"');
        match v {
            std::net::IpAddr::V4(a) => super::push_ipv4(out, a),
            std::net::IpAddr::V6(a) => super::push_ipv6(out, a),
        }
        out.push(b'"');
    }

    fn raw(&mut self, k: &str, v: &[u8]) {
        self.key(k).extend_from_slice(v);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD, control characters `\u00XX`.
pub fn push_json_str(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    // Nearly every value is plain printable ASCII: copy it in one go.
    if v.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(v);
        out.push(b'"');
        return;
    }
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.extend_from_slice(b"\\u00");
                    super::push_hex2(out, c as u8, false);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
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

fn render_with(
    ev: &Event<'_>,
    hostname: &[u8],
    node_name: &[u8],
    clock: &mut LocalClock,
    out: &mut Vec<u8>,
    extra: impl FnOnce(&mut Obj<'_>),
) {
    let mut o = Obj::new(out);
    let ts = o.key("timestamp");
    ts.push(b'"');
    clock.push_rfc3339(ev.time, ts);
    ts.push(b'"');
    o.str("hostname", hostname);
    o.str("node_name", node_name);
    o.str("action", b"drop");
    o.num("oob.group", ev.msg.group as u64);
    o.str("oob.prefix", ev.msg.prefix.unwrap_or_default());
    o.num("oob.hook", ev.msg.hook as u64);
    o.num("oob.family", ev.msg.family as u64);
    o.num("oob.protocol", ev.msg.hw_protocol as u64);
    o.str("oob.in", ev.indev.as_bytes());
    o.str("oob.out", ev.outdev.as_bytes());
    o.num("oob.mark", ev.msg.mark.unwrap_or(0) as u64);
    if let Some(uid) = ev.msg.uid {
        o.num("oob.uid", uid as u64);
    }
    if let Some(gid) = ev.msg.gid {
        o.num("oob.gid", gid as u64);
    }
    if let Some(seq) = ev.msg.seq {
        o.num("oob.seq.local", seq as u64);
    }
    o.num("raw.pktlen", ev.msg.payload.len() as u64);
    if let Some(mac) = ev.msg.mac_header() {
        let out = o.key("mac.str");
        out.push(b'"');
        for (i, b) in mac.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            super::push_hex2(out, *b, false);
        }
        out.push(b'"');
    }
    network(ev, &mut o);
    policy(ev, &mut o);
    extra(&mut o);
    o.end();
    out.push(b'\n');
}

fn network(ev: &Event<'_>, o: &mut Obj<'_>) {
    let p = &ev.packet;
    match p.network {
        Network::Ipv4(Some(h)) => {
            o.ip("src_ip", h.src.into());
            o.ip("dest_ip", h.dst.into());
            o.num("ip.protocol", h.protocol as u64);
            o.num("ip.tos", h.tos as u64);
            o.num("ip.ttl", h.ttl as u64);
            o.num("ip.totlen", h.tot_len as u64);
            o.num("ip.ihl", h.ihl as u64);
            o.num("ip.id", h.id as u64);
            o.num("ip.fragoff", h.frag_off as u64);
        }
        Network::Ipv6(Some(h)) => {
            o.ip("src_ip", h.src.into());
            o.ip("dest_ip", h.dst.into());
            if let Some(next) = h.nexthdr {
                o.num("ip.protocol", next as u64);
                o.num("ip6.nexthdr", next as u64);
            }
            o.num("ip6.payloadlen", h.payload_len as u64);
            o.num("ip6.priority", h.traffic_class as u64);
            o.num("ip6.flowlabel", h.flow_label as u64);
            o.num("ip6.hoplimit", h.hop_limit as u64);
            if let Some((off, id)) = h.frag {
                o.num("ip6.fragoff", off as u64);
                o.num("ip6.fragid", id as u64);
            }
        }
        Network::Arp(Some(a)) => {
            o.ip("arp.saddr.str", a.sender_ip.into());
            o.ip("arp.daddr.str", a.target_ip.into());
            o.num("arp.operation", a.op as u64);
        }
        _ => {}
    }
    if let Some(n) = p.protocol() {
        match protocol_name(n) {
            Some(name) => o.str("protocol", name.as_bytes()),
            None => {
                let out = o.key("protocol");
                out.push(b'"');
                push_u64(out, n as u64);
                out.push(b'"');
            }
        }
    }
    if let Some((sport, dport)) = p.ports() {
        o.num("src_port", sport as u64);
        o.num("dest_port", dport as u64);
    }
    if p.is_later_fragment() {
        return;
    }
    match p.transport {
        Transport::Tcp(t) => {
            o.num("tcp.seq", t.seq as u64);
            o.num("tcp.ackseq", t.ack as u64);
            o.num("tcp.window", t.window as u64);
            let out = o.key("tcp.flags");
            out.push(b'"');
            let start = out.len();
            use crate::decode::TcpFlags as F;
            for (flag, name) in [
                (F::CWR, "CWR"),
                (F::ECE, "ECE"),
                (F::URG, "URG"),
                (F::ACK, "ACK"),
                (F::PSH, "PSH"),
                (F::RST, "RST"),
                (F::SYN, "SYN"),
                (F::FIN, "FIN"),
            ] {
                if t.flags.has(flag) {
                    if out.len() > start {
                        out.push(b' ');
                    }
                    out.extend_from_slice(name.as_bytes());
                }
            }
            out.push(b'"');
            if t.flags.has(F::URG) {
                o.num("tcp.urgp", t.urgent as u64);
            }
        }
        Transport::Udp { len, .. } => o.num("udp.len", len as u64),
        Transport::Icmp(i) => {
            o.num("icmp.type", i.kind as u64);
            o.num("icmp.code", i.code as u64);
            if matches!(i.kind, 0 | 8) {
                o.num("icmp.echoid", i.echo_id() as u64);
                o.num("icmp.echoseq", i.echo_seq() as u64);
            }
            if i.kind == 3 && i.code == 4 {
                o.num("icmp.fragmtu", (i.rest & 0xffff) as u64);
            }
        }
        Transport::Icmpv6(i) => {
            o.num("icmpv6.type", i.kind as u64);
            o.num("icmpv6.code", i.code as u64);
            if matches!(i.kind, 128 | 129) {
                o.num("icmpv6.echoid", i.echo_id() as u64);
                o.num("icmpv6.echoseq", i.echo_seq() as u64);
            }
        }
        Transport::Incomplete => o.raw("incomplete", b"true"),
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
