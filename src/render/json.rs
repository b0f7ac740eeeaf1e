//! One JSON object per line: ulogd2's JSON key names where they exist (`src_ip`, `dest_ip`,
//! `src_port`, `dest_port`, `oob.prefix`, `oob.in`, …) plus the Kubernetes fields. The schema is
//! documented in the README ("JSON records").
//!
//! Written by hand rather than through serde: the per-message path must not allocate, and the
//! field order is part of what log pipelines see.

use std::sync::Arc;

use crate::attribute::addr::AddrClass;
use crate::attribute::{Direction, KubeContext, PodMeta, ServiceHit};
use crate::decode::{protocol_name, Icmp, Network, Transport};
use crate::event::Event;

use super::time::LocalClock;
use super::{json_plain, push_u64, with_cursor, Cursor, HEX, TCP_FLAGS};

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

/// The most [`json_str`] writes for `v`: quotes, and six bytes a byte at worst (`\u00XX`).
#[inline]
fn str_max(v: &[u8]) -> usize {
    6 * v.len() + 2
}

/// A JSON string through a cursor with room for [`str_max`].
#[inline]
fn json_str(c: &mut Cursor<'_>, v: &[u8]) {
    json_str_known(c, v, json_plain(v));
}

/// [`json_str`] with the check made already (interface names carry theirs).
#[inline]
fn json_str_known(c: &mut Cursor<'_>, v: &[u8], plain: bool) {
    if plain {
        c.byte(b'"');
        c.var(v);
        c.byte(b'"');
    } else {
        json_escaped(c, v);
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

/// `,"key":value` for each pair, the value written by the named cursor method.
macro_rules! fields {
    ($c:ident; $($k:literal: $write:ident($v:expr)),+ $(,)?) => {
        $(
            $c.bytes(key!($k));
            $c.$write($v);
        )+
    };
}

pub fn render(
    ev: &Event<'_>,
    hostname: &[u8],
    node_name: &[u8],
    clock: &mut LocalClock,
    out: &mut Vec<u8>,
) {
    let names = Names::Raw(hostname, node_name);
    render_with(ev, names, clock, None, out, |_| {});
}

/// [`render`] with the names from [`names_text`] and the Kubernetes context's text from
/// `contexts`.
pub(crate) fn render_cached(
    ev: &Event<'_>,
    names: &[u8],
    clock: &mut LocalClock,
    contexts: &mut ContextCache,
    out: &mut Vec<u8>,
) {
    render_with(ev, Names::Text(names), clock, Some(contexts), out, |_| {});
}

/// `"hostname":…,"node_name":…`, the same in every line: made once per renderer.
pub(crate) fn names_text(hostname: &[u8], node_name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let names = Names::Raw(hostname, node_name);
    with_cursor(&mut out, names.max(), |c| names.write(c));
    out
}

/// The names of [`names_text`], as text or to be written.
enum Names<'n> {
    Raw(&'n [u8], &'n [u8]),
    Text(&'n [u8]),
}

impl Names<'_> {
    fn max(&self) -> usize {
        match self {
            Names::Raw(host, node) => str_max(host) + str_max(node) + 32,
            Names::Text(t) => t.len(),
        }
    }

    #[inline]
    fn write(&self, c: &mut Cursor<'_>) {
        match self {
            Names::Raw(host, node) => {
                c.bytes(b"\"hostname\":");
                json_str(c, host);
                c.bytes(key!("node_name"));
                json_str(c, node);
            }
            Names::Text(t) => c.var(t),
        }
    }
}

/// A tail record for `nflog-tail`: the event's fields, then the first message's syslogemu line
/// (without the newline) and NFLOG body in hex (`syslogemu`, `nflog`), then every written message
/// of the packet, the first included, as `messages: [{syslogemu, nflog}, …]`, so the client can
/// print either format per message, as the daemon writes syslogemu, and write pcap.
pub(crate) fn render_tail_record<'l, 'b>(
    ev: &Event<'_>,
    names: &[u8],
    clock: &mut LocalClock,
    contexts: &mut ContextCache,
    mut messages: impl Iterator<Item = (&'l [u8], &'b [u8])>,
    out: &mut Vec<u8>,
) {
    render_with(ev, Names::Text(names), clock, Some(contexts), out, |o| {
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
    names: Names<'_>,
    clock: &mut LocalClock,
    contexts: Option<&mut ContextCache>,
    out: &mut Vec<u8>,
    extra: impl FnOnce(&mut Obj<'_>),
) {
    // Without a cache (one-off renderers), the context is written in place.
    let ctx = ev.context.as_ref().map(|c| match contexts {
        Some(cache) => Context::Text(cache.get(c)),
        None => Context::Direct(c),
    });
    let prefix = ev.msg.prefix.unwrap_or_default();
    let (indev, outdev) = (ev.indev.as_bytes(), ev.outdev.as_bytes());
    let mac = ev.msg.mac_header();
    let max = names.max()
        + [prefix, indev, outdev].map(str_max).iter().sum::<usize>()
        + 3 * mac.map_or(0, <[u8]>::len)
        + FIXED_MAX
        + policy_max(ev)
        + ctx.as_ref().map_or(0, Context::max);
    // The whole object but `extra` in one region: one capacity check per line, and no call or
    // capacity check per field (the Kubernetes fields cost 2,700 instructions per event through
    // `Vec` pushes, callgrind).
    with_cursor(out, max, |c| {
        c.bytes(b"{\"timestamp\":\"");
        clock.write_rfc3339(ev.time, c);
        c.bytes(b"\",");
        names.write(c);
        c.bytes(b",\"action\":\"drop\",\"oob.group\":");
        c.dec(ev.msg.group as u32);
        c.bytes(key!("oob.prefix"));
        let prefix_plain = json_plain(prefix);
        json_str_known(c, prefix, prefix_plain);
        c.bytes(key!("oob.hook"));
        c.dec8(ev.msg.hook);
        c.bytes(key!("oob.family"));
        c.dec8(ev.msg.family);
        c.bytes(key!("oob.protocol"));
        c.dec(ev.msg.hw_protocol as u32);
        c.bytes(key!("oob.in"));
        json_str_known(c, indev, ev.indev.json_plain());
        c.bytes(key!("oob.out"));
        json_str_known(c, outdev, ev.outdev.json_plain());
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
        policy(ev, ctx, prefix_plain, c);
    });
    // The object has fields: the rest continues it.
    let mut o = Obj { out, first: false };
    extra(&mut o);
    out.extend_from_slice(b"}\n");
}

/// `src_ip` and `dest_ip`.
#[inline(always)]
fn addresses(c: &mut Cursor<'_>, src: std::net::IpAddr, dst: std::net::IpAddr) {
    c.bytes(key!("src_ip"));
    quoted_ip(c, src);
    c.bytes(key!("dest_ip"));
    quoted_ip(c, dst);
}

fn network(ev: &Event<'_>, c: &mut Cursor<'_>) {
    let p = &ev.packet;
    match p.network {
        Network::Ipv4(Some(h)) => {
            addresses(c, h.src.into(), h.dst.into());
            fields!(c;
                "ip.protocol": dec8(h.protocol),
                "ip.tos": dec8(h.tos),
                "ip.ttl": dec8(h.ttl),
                "ip.totlen": dec(h.tot_len as u32),
                "ip.ihl": dec8(h.ihl),
                "ip.id": dec(h.id as u32),
                "ip.fragoff": dec(h.frag_off as u32),
            );
        }
        Network::Ipv6(Some(h)) => {
            addresses(c, h.src.into(), h.dst.into());
            if let Some(next) = h.nexthdr {
                fields!(c; "ip.protocol": dec8(next), "ip6.nexthdr": dec8(next));
            }
            fields!(c;
                "ip6.payloadlen": dec(h.payload_len as u32),
                "ip6.priority": dec8(h.traffic_class),
                "ip6.flowlabel": dec(h.flow_label),
                "ip6.hoplimit": dec8(h.hop_limit),
            );
            if let Some((off, id)) = h.frag {
                fields!(c; "ip6.fragoff": dec(off as u32), "ip6.fragid": dec(id));
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
            c.tcp_flags(t.flags, &TCP_FLAGS);
            // Names are separated by spaces: the last one's becomes the closing quote.
            c.back((c.len() > start) as usize);
            c.byte(b'"');
            if t.flags.has(crate::decode::TcpFlags::URG) {
                c.bytes(key!("tcp.urgp"));
                c.dec(t.urgent as u32);
            }
        }
        Transport::Udp { len, .. } => {
            c.bytes(key!("udp.len"));
            c.dec(len as u32);
        }
        Transport::Icmp(i) => {
            icmp(c, i, matches!(i.kind, 0 | 8), ICMP_KEYS);
            if i.kind == 3 && i.code == 4 {
                c.bytes(key!("icmp.fragmtu"));
                c.dec(i.rest & 0xffff);
            }
        }
        Transport::Icmpv6(i) => icmp(c, i, matches!(i.kind, 128 | 129), ICMPV6_KEYS),
        Transport::Incomplete => c.bytes(b",\"incomplete\":true"),
        Transport::Sctp { .. } | Transport::None => {}
    }
}

/// The keys of [`icmp`]: type, code, echo id, echo sequence.
type IcmpKeys = [&'static [u8]; 4];
const ICMP_KEYS: IcmpKeys = [
    key!("icmp.type"),
    key!("icmp.code"),
    key!("icmp.echoid"),
    key!("icmp.echoseq"),
];
const ICMPV6_KEYS: IcmpKeys = [
    key!("icmpv6.type"),
    key!("icmpv6.code"),
    key!("icmpv6.echoid"),
    key!("icmpv6.echoseq"),
];

/// ICMP or ICMPv6 type and code, and the echo fields of an echo request or reply.
#[inline]
fn icmp(c: &mut Cursor<'_>, i: Icmp, echo: bool, [kind, code, id, seq]: IcmpKeys) {
    c.var(kind);
    c.dec8(i.kind);
    c.var(code);
    c.dec8(i.code);
    if echo {
        c.var(id);
        c.dec(i.echo_id() as u32);
        c.var(seq);
        c.dec(i.echo_seq() as u32);
    }
}

/// The Kubernetes context as rendered once: `,"resolved":…,"candidates":[…]}` (the end of the
/// policy object) at `text[..split]`, then the direction and both sides at `text[split..]`.
struct ContextText<'t> {
    text: &'t [u8],
    /// The policy object's start, `{"namespace":…,"name":…`, at `text[..head]` when the
    /// context resolved the one policy the event reports (see `Event::reported_policy`).
    head: usize,
    split: usize,
}

/// A context to write: its cached text, or the context itself.
enum Context<'t> {
    Text(ContextText<'t>),
    Direct(&'t KubeContext),
}

impl Context<'_> {
    fn max(&self) -> usize {
        match self {
            Context::Text(t) => t.text.len(),
            Context::Direct(c) => context_max(c),
        }
    }
}

/// Rendered Kubernetes contexts, by context. The index hands out the same `Arc` for every
/// message of a flow, so its strings (pods, workloads, policies) are checked and copied into a
/// line as one block instead of field by field (about 2,000 instructions per event, callgrind).
/// Set-associative by the `Arc`'s address; each slot keeps its `Arc`, so the address cannot be
/// reused for another context while the slot holds it.
pub struct ContextCache {
    /// 16 sets of [`WAYS`] slots.
    slots: Vec<Slot>,
    /// Counts lookups, to find the least recently used slot of a set.
    clock: u64,
}

#[derive(Default)]
struct Slot {
    ctx: Option<Arc<KubeContext>>,
    text: Vec<u8>,
    head: usize,
    split: usize,
    /// When it was last used ([`ContextCache::clock`]).
    used: u64,
}

/// Slots of a [`ContextCache`], 16 sets of [`WAYS`]: a node's busy flows at once.
const CONTEXT_SLOTS: usize = 64;
const WAYS: usize = 4;

impl Default for ContextCache {
    fn default() -> Self {
        ContextCache {
            slots: (0..CONTEXT_SLOTS).map(|_| Slot::default()).collect(),
            clock: 0,
        }
    }
}

impl ContextCache {
    fn get(&mut self, ctx: &Arc<KubeContext>) -> ContextText<'_> {
        // Four ways per set, the least recently used replaced: contexts that share a set
        // (direct-mapped, two of a handful of busy flows did, callgrind) do not evict each other.
        let addr = Arc::as_ptr(ctx) as usize as u64;
        let set = ((addr >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize;
        let ways = &mut self.slots[WAYS * set..][..WAYS];
        self.clock += 1;
        let hit = ways
            .iter()
            .position(|s| s.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx)));
        let way = hit.unwrap_or_else(|| {
            let (oldest, _) = ways
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.used)
                .unwrap_or((0, &ways[0]));
            oldest
        });
        let slot = &mut ways[way];
        slot.used = self.clock;
        if hit.is_none() {
            slot.text.clear();
            (slot.head, slot.split) = with_cursor(&mut slot.text, context_max(ctx), |c| {
                if let ([p], true) = (&ctx.policies[..], ctx.resolved) {
                    namespace_and_name(c, &p.namespace, &p.name);
                }
                let head = c.len();
                candidates(c, ctx);
                let split = c.len();
                sides(c, ctx);
                (head, split)
            });
            slot.ctx = Some(ctx.clone());
        }
        ContextText {
            text: &slot.text,
            head: slot.head,
            split: slot.split,
        }
    }
}

/// The most [`candidates`] and [`sides`] write: their fixed parts and every string at its worst.
fn context_max(c: &KubeContext) -> usize {
    let both = |a: &[u8], b: &[u8]| 64 + str_max(a) + str_max(b);
    let opt = |s: Option<&str>| s.map_or(0, |s| 32 + str_max(s.as_bytes()));
    let pod = |p: Option<&PodMeta>| {
        p.map_or(0, |p| {
            both(p.pod.as_bytes(), p.namespace.as_bytes())
                + opt(p.workload_kind.as_deref())
                + opt(p.workload.as_deref())
                + opt(p.node.as_deref())
        })
    };
    let services = c.dest_services.iter().map(|s| {
        128 + both(s.namespace.as_bytes(), s.name.as_bytes()) + opt(s.port_name.as_deref())
    });
    let policies = c.policies.iter();
    let head = c.policies.first();
    256 + head.map_or(0, |p| both(p.namespace.as_bytes(), p.name.as_bytes()))
        + policies
            .map(|p| both(p.namespace.as_bytes(), p.name.as_bytes()))
            .sum::<usize>()
        + pod(c.src.as_deref())
        + pod(c.dest.as_deref())
        + opt(c.src_node.as_deref())
        + opt(c.dest_node.as_deref())
        + services.sum::<usize>()
}

/// The most [`policy`] writes besides the context's text: under 300 bytes and the reported
/// policy's strings.
fn policy_max(ev: &Event<'_>) -> usize {
    384 + ev.reported_policy().map_or(0, |r| {
        str_max(r.namespace) + str_max(r.name.unwrap_or_default())
    })
}

/// The policy and Kubernetes fields, at most [`policy_max`] bytes and the context's text.
fn policy(ev: &Event<'_>, ctx: Option<Context<'_>>, prefix_plain: bool, c: &mut Cursor<'_>) {
    // The names the prefix spells are parts of it: plain when it is.
    let prefix = ev.msg.prefix.unwrap_or_default().as_ptr_range();
    let string = |c: &mut Cursor<'_>, s: &[u8]| {
        let r = s.as_ptr_range();
        let part = prefix.start <= r.start && r.end <= prefix.end;
        json_str_known(c, s, (part && prefix_plain) || json_plain(s));
    };
    let a = &ev.attribution;
    c.bytes(b",\"policy_source\":\"");
    c.var(a.source.as_str().as_bytes());
    c.byte(b'"');
    match ev.reported_policy() {
        Some(r) => {
            c.bytes(b",\"policy\":");
            match &ctx {
                Some(Context::Text(t)) if t.head > 0 => c.var(&t.text[..t.head]),
                _ => {
                    c.bytes(b"{\"namespace\":");
                    string(c, r.namespace);
                    c.bytes(key!("name"));
                    match r.name {
                        Some(name) => string(c, name),
                        None => c.bytes(b"null"),
                    }
                }
            }
            match &ctx {
                Some(Context::Text(t)) => c.var(&t.text[t.head..t.split]),
                Some(Context::Direct(x)) => candidates(c, x),
                None => c.bytes(b",\"resolved\":false,\"candidates\":[]}"),
            }
        }
        None => c.bytes(b",\"policy\":null"),
    }
    match &ctx {
        Some(Context::Text(t)) => c.var(&t.text[t.split..]),
        Some(Context::Direct(x)) => sides(c, x),
        None => c.bytes(b",\"direction\":null"),
    }
    if let Some((src, dst)) = ev.packet.addrs() {
        c.bytes(b",\"src_class\":\"");
        c.var(AddrClass::of(src).as_str().as_bytes());
        c.bytes(b"\",\"dest_class\":\"");
        c.var(AddrClass::of(dst).as_str().as_bytes());
        c.byte(b'"');
    }
    c.bytes(key!("count"));
    c.dec(ev.count.max(1));
}

/// The end of the policy object: whether it was resolved, and the candidates.
fn candidates(c: &mut Cursor<'_>, ctx: &KubeContext) {
    c.bytes(if ctx.resolved {
        b",\"resolved\":true,\"candidates\":["
    } else {
        b",\"resolved\":false,\"candidates\":["
    });
    for (i, p) in ctx.policies.iter().enumerate() {
        if i > 0 {
            c.byte(b',');
        }
        namespace_and_name(c, &p.namespace, &p.name);
        c.byte(b'}');
    }
    c.bytes(b"]}");
}

/// `{"namespace":…,"name":…` of an object that may go on.
fn namespace_and_name(c: &mut Cursor<'_>, namespace: &str, name: &str) {
    c.bytes(b"{\"namespace\":");
    json_str(c, namespace.as_bytes());
    c.bytes(key!("name"));
    json_str(c, name.as_bytes());
}

/// The direction, then both ends of the packet.
fn sides(c: &mut Cursor<'_>, ctx: &KubeContext) {
    c.bytes(match ctx.direction {
        Some(Direction::Ingress) => b",\"direction\":\"ingress\"",
        Some(Direction::Egress) => b",\"direction\":\"egress\"",
        None => b",\"direction\":null",
    });
    side(
        c,
        key!("src"),
        ctx.src.as_deref(),
        ctx.src_node.as_deref(),
        &[],
    );
    side(
        c,
        key!("dest"),
        ctx.dest.as_deref(),
        ctx.dest_node.as_deref(),
        &ctx.dest_services,
    );
}

/// One end of the packet after `key` (`,"src":`): a pod (`{pod, namespace, workload_kind,
/// workload, node}`), else a node's own address (`{node}`), plus the Services the client aimed
/// at (`services`, the destination only); nothing when the index knows none of these.
fn side(
    c: &mut Cursor<'_>,
    key: &[u8],
    pod: Option<&PodMeta>,
    node: Option<&str>,
    services: &[ServiceHit],
) {
    if pod.is_none() && node.is_none() && services.is_empty() {
        return;
    }
    c.var(key);
    c.byte(b'{');
    // Keys with their leading comma, which the object's first one leaves out.
    let mut first = true;
    let mut key = |c: &mut Cursor<'_>, k: &[u8]| {
        c.var(&k[usize::from(first)..]);
        first = false;
    };
    let mut field = |c: &mut Cursor<'_>, k: &[u8], v: Option<&str>| {
        if let Some(v) = v {
            key(c, k);
            json_str(c, v.as_bytes());
        }
    };
    if let Some(pod) = pod {
        field(c, key!("pod"), Some(&pod.pod));
        field(c, key!("namespace"), Some(&pod.namespace));
        field(c, key!("workload_kind"), pod.workload_kind.as_deref());
        field(c, key!("workload"), pod.workload.as_deref());
        field(c, key!("node"), pod.node.as_deref());
    } else {
        field(c, key!("node"), node);
    }
    if !services.is_empty() {
        // `first` is false after a pod or node; with neither, "services" is the first key.
        c.var(&key!("services")[usize::from(pod.is_none() && node.is_none())..]);
        c.byte(b'[');
        for (i, s) in services.iter().enumerate() {
            if i > 0 {
                c.byte(b',');
            }
            namespace_and_name(c, &s.namespace, &s.name);
            if let Some(n) = &s.port_name {
                c.bytes(key!("port_name"));
                json_str(c, n.as_bytes());
            }
            for (k, port) in [(key!("port"), s.port), (key!("node_port"), s.node_port)] {
                if let Some(port) = port {
                    c.bytes(k);
                    c.dec(u32::from(port));
                }
            }
            c.bytes(b",\"via\":\"");
            c.var(s.via.as_str().as_bytes());
            c.bytes(b"\"}");
        }
        c.byte(b']');
    }
    c.byte(b'}');
}
