//! The synchronous heart of the pipeline: one `recv()` buffer in, rendered lines out, one
//! buffer per sink, no allocation per message.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attribute::ifname::IfNames;
use crate::attribute::Attribution;
use crate::decode;
use crate::event::{Event, Timestamp};
use crate::limit::{Limiter, NO_POLICY};
use crate::render::{json::push_json_str, Format, Renderer};
use crate::sink::Chunk;
use crate::source::nflog::{Messages, Netlink, NflogMsg};
use crate::stats::Stats;

/// What a sink receives.
enum Output {
    /// Text lines in one of the line formats.
    Lines(Format),
    /// One syslog message per line.
    Syslog(Box<crate::render::syslog::SyslogFormat>),
}

/// Lines waiting for one sink.
struct Pending {
    output: Output,
    chunk: Chunk,
}

impl Pending {
    /// One line per NFLOG message (syslogemu, and syslog carrying syslogemu text): ulogd2's view.
    fn per_message(&self) -> bool {
        match &self.output {
            Output::Lines(f) => *f == Format::Syslogemu,
            Output::Syslog(s) => s.msg == crate::render::syslog::MsgFormat::Syslogemu,
        }
    }

    fn render(&mut self, renderer: &mut Renderer, ev: &Event<'_>) {
        match &self.output {
            Output::Lines(f) => renderer.render(*f, ev, &mut self.chunk.data),
            Output::Syslog(s) => renderer.render_syslog(s, ev, &mut self.chunk.data),
        }
        self.chunk.lines += 1;
    }
}

/// Records for `nflog-tail` clients, rendered only while one is connected.
struct TailPending {
    clients: Arc<std::sync::atomic::AtomicUsize>,
    chunk: Chunk,
    scratch: Vec<u8>,
}

/// Events per policy key, by kind of rule and direction (published as metrics).
// Keys come from firewall rules (root-written), so a fast non-keyed hash is safe here.
type PolicyCounts = rustc_hash::FxHashMap<Box<[u8]>, [u64; 9]>;

/// Per-message work, from received bytes to rendered lines.
pub struct Processor {
    renderer: Renderer,
    ifnames: IfNames,
    limiter: Limiter,
    pending: Vec<Pending>,
    stats: Arc<Stats>,
    /// Next expected NFLOG sequence number per group.
    next_seq: Vec<(u16, u32)>,
    /// Whether the groups were bound by us (so sequence numbers start at 0).
    fresh_instances: bool,
    last_malformed_report: Option<Instant>,
    tail: Option<TailPending>,
    policy_counts: PolicyCounts,
    /// The Kubernetes index, when the daemon watches the API.
    kube: Option<Arc<std::sync::RwLock<crate::attribute::index::Index>>>,
    correlator: Option<crate::correlate::Correlator>,
    batch_started: Instant,
    /// An overrun happened and no message has arrived since, so its size is not known yet.
    overrun_pending: bool,
    /// Resolved contexts by (policy key, addresses), valid for one index generation: the same
    /// pods and policies repeat across drops, and resolving allocates.
    resolved: ResolveCache,
}

#[derive(Default)]
struct ResolveCache {
    generation: u64,
    entries: rustc_hash::FxHashMap<u64, CacheEntry>,
}

struct CacheEntry {
    source: crate::attribute::PolicySource,
    key: Box<[u8]>,
    src: Option<std::net::IpAddr>,
    dst: Option<std::net::IpAddr>,
    context: Option<Arc<crate::attribute::KubeContext>>,
}

/// Packets held for correlation at most (about 0.2 s of a 500,000 messages/s flood).
const CORRELATION_MAX: usize = 100_000;

/// Entries kept before the cache starts over (bounds memory under a flood of distinct pairs).
const RESOLVE_CACHE_MAX: usize = 65536;

impl Processor {
    pub fn new(
        renderer: Renderer,
        limiter: Limiter,
        formats: &[Format],
        stats: Arc<Stats>,
        fresh_instances: bool,
    ) -> Self {
        Processor {
            renderer,
            ifnames: IfNames::new(),
            limiter,
            pending: formats
                .iter()
                .map(|&format| Pending {
                    output: Output::Lines(format),
                    chunk: Chunk::default(),
                })
                .collect(),
            stats,
            next_seq: Vec::new(),
            fresh_instances,
            last_malformed_report: None,
            tail: None,
            policy_counts: PolicyCounts::default(),
            kube: None,
            correlator: None,
            batch_started: Instant::now(),
            overrun_pending: false,
            resolved: ResolveCache::default(),
        }
    }

    /// Records a socket overrun: the next message's sequence number tells how much was lost.
    pub fn overrun(&mut self) {
        self.overrun_pending = true;
    }

    /// At shutdown: an overrun that no later message measured is reported as such, so a loss at
    /// the very end of a burst is never silent even though its size cannot be known.
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.overrun_pending) {
            self.stats.lost_unmeasured.fetch_add(1, Relaxed);
            tracing::warn!("the socket overran after the last message received: an unknown number of messages were lost at the end (see lost_unmeasured_overruns)");
        }
    }

    /// Correlates the messages of one packet into one structured event (window > 0).
    pub fn with_correlation(mut self, window: Duration) -> Self {
        self.correlator = (!window.is_zero()).then(|| crate::correlate::Correlator::new(window));
        self
    }

    /// Attributes events with the Kubernetes index (policies, pods, workloads).
    pub fn with_kube(
        mut self,
        index: Arc<std::sync::RwLock<crate::attribute::index::Index>>,
    ) -> Self {
        self.kube = Some(index);
        self
    }

    /// Also renders records for `nflog-tail` (while `clients` is non-zero).
    pub fn with_tail(mut self, clients: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        self.tail = Some(TailPending {
            clients,
            chunk: Chunk::default(),
            scratch: Vec::new(),
        });
        self
    }

    /// Handles one receive buffer; returns the sequence numbers of the ACKs/errors it held.
    pub fn handle_batch(&mut self, buf: &[u8], received: Timestamp, acks: &mut Vec<u32>) {
        self.batch_started = Instant::now();
        self.ifnames.set_now(self.batch_started);
        for m in Messages::new(buf) {
            match m {
                Ok(Netlink::Packet(body)) => self.handle_packet(body, received),
                Ok(Netlink::Error { seq, .. }) => acks.push(seq),
                Ok(Netlink::Other(_)) => {}
                Err(e) => self.malformed(e),
            }
        }
        self.expire(false);
    }

    fn malformed(&mut self, e: crate::source::nflog::ParseError) {
        let n = self.stats.malformed.fetch_add(1, Relaxed) + 1;
        if self
            .last_malformed_report
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.last_malformed_report = Some(Instant::now());
            tracing::warn!(reason = e.kind(), error = %e, malformed_total = n, "skipping a malformed NFLOG message");
        }
    }

    /// One NFLOG packet message through every stage.
    pub fn handle_packet(&mut self, body: &[u8], received: Timestamp) {
        let msg = match NflogMsg::parse(body) {
            Ok(m) => m,
            Err(e) => return self.malformed(e),
        };
        self.stats.received.fetch_add(1, Relaxed);
        self.overrun_pending = false;
        if let Some(seq) = msg.seq {
            self.check_seq(msg.group, seq);
        }
        let attribution = Attribution::from_prefix(msg.prefix);
        if !self
            .limiter
            .allow(attribution.policy_key().unwrap_or(NO_POLICY))
        {
            self.stats.suppressed.fetch_add(1, Relaxed);
            return;
        }
        let packet = decode::decode(msg.family, msg.hw_protocol, msg.payload);
        let time = event_time(&msg, received);
        let indev = self.ifnames.name(msg.indev);
        let outdev = self.ifnames.name(msg.outdev);
        // Structured outputs get one event per packet: hold the message for correlation.
        let wants_events = self.wants_events();
        let deferred = match (&mut self.correlator, wants_events) {
            (Some(c), true) => match crate::correlate::PacketKey::of(&packet) {
                Some(key) => {
                    c.add(
                        key,
                        body,
                        msg.prefix.unwrap_or_default(),
                        received,
                        self.batch_started,
                    );
                    true
                }
                None => false,
            },
            _ => false,
        };
        // Per-message syslog carries pod and policy fields too, so it needs the context even
        // when the structured event itself waits for correlation.
        let context = if (wants_events && !deferred) || self.has_syslog_per_message() {
            self.resolve(&attribution, &packet)
        } else {
            None
        };
        let ev = Event {
            indev,
            outdev,
            msg,
            packet,
            time,
            attribution,
            context,
        };
        for p in self
            .pending
            .iter_mut()
            .filter(|p| p.per_message() || !deferred)
        {
            p.render(&mut self.renderer, &ev);
        }
        if !deferred {
            self.count_policy(&ev);
            if let Some(t) = &mut self.tail {
                if t.clients.load(Relaxed) > 0 {
                    render_tail(&mut self.renderer, &ev, body, t);
                }
            }
        }
    }

    /// Whether a syslog output renders one message per NFLOG message (with structured data).
    fn has_syslog_per_message(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p.output, Output::Syslog(_)) && p.per_message())
    }

    /// Whether any output takes structured events (JSON sinks, tail clients).
    fn wants_events(&self) -> bool {
        self.pending.iter().any(|p| !p.per_message())
            || self
                .tail
                .as_ref()
                .is_some_and(|t| t.clients.load(Relaxed) > 0)
    }

    fn resolve(
        &mut self,
        attribution: &Attribution<'_>,
        packet: &decode::Packet,
    ) -> Option<Arc<crate::attribute::KubeContext>> {
        use std::hash::{Hash, Hasher};
        let index = self.kube.as_ref()?;
        let (src, dst) = packet.addrs().unzip();
        // A poisoned lock only means a watcher panicked mid-update; the index is still the
        // best knowledge there is.
        let index = index.read().unwrap_or_else(|p| p.into_inner());
        let cache = &mut self.resolved;
        if cache.generation != index.generation() || cache.entries.len() >= RESOLVE_CACHE_MAX {
            cache.generation = index.generation();
            cache.entries.clear();
        }
        let key = attribution.policy_key().unwrap_or_default();
        let mut h = rustc_hash::FxHasher::default();
        (attribution.source as u8, key, src, dst).hash(&mut h);
        let hash = h.finish();
        if let Some(e) = cache.entries.get(&hash) {
            if e.source == attribution.source && *e.key == *key && e.src == src && e.dst == dst {
                return e.context.clone();
            }
        }
        let context = index.resolve(attribution, src, dst).map(Arc::new);
        cache.entries.insert(
            hash,
            CacheEntry {
                source: attribution.source,
                key: key.into(),
                src,
                dst,
                context: context.clone(),
            },
        );
        context
    }

    /// Renders the structured events of packets whose correlation window has passed (all of
    /// them with `force`, at shutdown).
    pub fn expire(&mut self, force: bool) {
        let Some(mut c) = self.correlator.take() else {
            return;
        };
        if !c.is_empty() {
            let now = Instant::now();
            c.expire(now, force, |open| self.render_correlated(open));
            c.shrink_to(CORRELATION_MAX, |open| self.render_correlated(open));
        }
        self.correlator = Some(c);
    }

    fn render_correlated(&mut self, open: &crate::correlate::Open) {
        let Ok(msg) = NflogMsg::parse(&open.body) else {
            return;
        };
        let packet = decode::decode(msg.family, msg.hw_protocol, msg.payload);
        let attribution = Attribution::from_prefix(msg.prefix);
        let mut context = self.resolve(&attribution, &packet).map(|c| (*c).clone());
        if open.count > 1 {
            let ctx = context.get_or_insert_with(Default::default);
            for prefix in open.prefixes() {
                let other = Attribution::from_prefix(Some(prefix));
                if other.source != crate::attribute::PolicySource::PolicyRule {
                    continue;
                }
                let policies = match self.resolve(&other, &packet) {
                    Some(c) if !c.policies.is_empty() => c.policies.clone(),
                    _ => vec![crate::attribute::PolicyRef {
                        namespace: String::from_utf8_lossy(other.namespace).into_owned(),
                        name: String::from_utf8_lossy(other.name).into_owned(),
                    }],
                };
                for p in policies {
                    if !ctx.policies.contains(&p) {
                        ctx.policies.push(p);
                    }
                }
            }
            ctx.count = open.count;
        }
        let time = event_time(&msg, open.received);
        let ev = Event {
            indev: self.ifnames.name(msg.indev),
            outdev: self.ifnames.name(msg.outdev),
            msg,
            packet,
            time,
            attribution,
            context: context.map(Arc::new),
        };
        for p in self.pending.iter_mut().filter(|p| !p.per_message()) {
            p.render(&mut self.renderer, &ev);
        }
        for prefix in open.prefixes() {
            let a = Attribution::from_prefix(Some(prefix));
            let one = Event {
                attribution: a,
                ..ev.clone()
            };
            self.count_policy(&one);
        }
        if let Some(t) = &mut self.tail {
            if t.clients.load(Relaxed) > 0 {
                render_tail(&mut self.renderer, &ev, &open.body, t);
            }
        }
    }

    fn count_policy(&mut self, ev: &Event<'_>) {
        let key = match ev.attribution.source {
            crate::attribute::PolicySource::PolicyRule => {
                ev.attribution.policy_key().unwrap_or_default()
            }
            crate::attribute::PolicySource::PodChain => NO_POLICY,
            crate::attribute::PolicySource::Custom => ev.msg.prefix.unwrap_or_default(),
        };
        let source = ev.attribution.source as usize;
        let direction = match ev.context.as_deref().and_then(|c| c.direction) {
            None => 0,
            Some(crate::attribute::Direction::Ingress) => 1,
            Some(crate::attribute::Direction::Egress) => 2,
        };
        let slot = source * 3 + direction;
        if let Some(c) = self.policy_counts.get_mut(key) {
            c[slot] += 1;
        } else if self.policy_counts.len() < crate::metrics::MAX_POLICY_SERIES {
            let mut c = [0u64; 9];
            c[slot] = 1;
            self.policy_counts.insert(key.into(), c);
        } else if let Some(c) = self.policy_counts.get_mut(&b"(other)"[..]) {
            c[slot] += 1;
        } else {
            let mut c = [0u64; 9];
            c[slot] = 1;
            self.policy_counts.insert(Box::from(&b"(other)"[..]), c);
        }
    }

    /// Copies the per-policy counts into the shared stats for the metrics endpoint.
    pub fn publish_metrics(&self) {
        use crate::stats::{PolicyCounts as Counts, PolicyKey};
        let sources = ["policy-rule", "pod-chain", "custom"];
        let directions = ["", "ingress", "egress"];
        let suppressed: HashMap<String, u64> = self.limiter.totals().into_iter().collect();
        let Ok(mut table) = self.stats.policies.lock() else {
            return;
        };
        for (key, counts) in &self.policy_counts {
            let text = String::from_utf8_lossy(key);
            let (namespace, policy) = text.split_once('/').unwrap_or(("", &text));
            for (slot, &events) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
                let k = PolicyKey {
                    namespace: namespace.to_string(),
                    policy: policy.to_string(),
                    direction: directions[slot % 3],
                    source: sources[slot / 3],
                };
                let sup = suppressed.get(text.as_ref()).copied().unwrap_or(0);
                table.insert(
                    k,
                    Counts {
                        events,
                        suppressed: sup,
                    },
                );
            }
        }
    }

    fn check_seq(&mut self, group: u16, seq: u32) {
        let slot = self.next_seq.iter().position(|&(g, _)| g == group);
        let expected = match slot.map(|i| self.next_seq[i].1) {
            Some(e) => Some(e),
            None if self.fresh_instances => Some(0),
            None => None,
        };
        if let Some(expected) = expected {
            let gap = seq.wrapping_sub(expected);
            // A "gap" of more than half the space is a reordering or restart, not a loss.
            if gap != 0 && gap < u32::MAX / 2 {
                self.stats.lost_seq_gap.fetch_add(gap as u64, Relaxed);
                tracing::warn!(
                    group,
                    lost = gap,
                    "NFLOG messages lost before reaching the daemon (socket overrun)"
                );
            }
        }
        match slot {
            Some(i) => self.next_seq[i].1 = seq.wrapping_add(1),
            None => self.next_seq.push((group, seq.wrapping_add(1))),
        }
    }

    /// Suppression summaries since the last call: logged, and written as JSON records.
    pub fn emit_summaries(&mut self, interval: Duration, now: Timestamp) {
        for s in self.limiter.take_summaries() {
            tracing::info!(policy = %s.policy, suppressed = s.count, interval_s = interval.as_secs(), "messages suppressed by rate limit");
            for p in self.pending.iter_mut() {
                if let Output::Syslog(fmt) = &p.output {
                    let text = format!(
                        "{} messages suppressed for {} in {} s",
                        s.count,
                        if s.policy.is_empty() {
                            "messages without a policy"
                        } else {
                            &s.policy
                        },
                        interval.as_secs()
                    );
                    self.renderer.render_syslog_text(
                        fmt,
                        now,
                        "suppressed",
                        text.as_bytes(),
                        &mut p.chunk.data,
                    );
                    p.chunk.lines += 1;
                    continue;
                }
                if !matches!(p.output, Output::Lines(Format::Json)) {
                    continue;
                }
                let out = &mut p.chunk.data;
                out.extend_from_slice(b"{\"timestamp\":\"");
                self.renderer.push_rfc3339(now, out);
                out.extend_from_slice(b"\",\"type\":\"suppressed\",\"policy\":");
                if s.policy.is_empty() {
                    out.extend_from_slice(b"null");
                } else {
                    push_json_str(out, s.policy.as_bytes());
                }
                out.extend_from_slice(b",\"suppressed\":");
                crate::render::push_u64(out, s.count);
                out.extend_from_slice(b",\"interval_s\":");
                crate::render::push_u64(out, interval.as_secs());
                out.extend_from_slice(b"}\n");
                p.chunk.lines += 1;
            }
        }
    }

    /// Adds a syslog sink's output; its chunks come after those of `formats`, in call order.
    pub fn add_syslog_output(&mut self, fmt: crate::render::syslog::SyslogFormat) {
        self.pending.push(Pending {
            output: Output::Syslog(Box::new(fmt)),
            chunk: Chunk::default(),
        });
    }

    /// Takes the records rendered for `nflog-tail`.
    pub fn take_tail(&mut self) -> Option<Chunk> {
        let t = self.tail.as_mut()?;
        (t.chunk.lines > 0).then(|| std::mem::take(&mut t.chunk))
    }

    /// Takes the rendered lines, one chunk per sink (in the order of `formats`).
    pub fn take_chunks(&mut self) -> impl Iterator<Item = (usize, Chunk)> + '_ {
        self.pending
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.chunk.lines > 0)
            .map(|(i, p)| (i, std::mem::take(&mut p.chunk)))
    }

    /// Drops the rendered lines but keeps the buffers' capacity (benchmarks).
    pub fn discard_pending(&mut self) {
        for p in &mut self.pending {
            p.chunk.data.clear();
            p.chunk.lines = 0;
        }
    }

    pub fn limiter_mut(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

/// ulogd2's choice of time: the kernel's packet timestamp when it sent a non-zero one (INPUT,
/// FORWARD), otherwise when the message was received (OUTPUT, POSTROUTING).
pub fn event_time(msg: &NflogMsg<'_>, received: Timestamp) -> Timestamp {
    match msg.timestamp {
        Some((sec, usec)) if sec != 0 => Timestamp {
            sec: sec as i64,
            // Clamped: a hostile or broken message must not make the renderers print 7 digits.
            usec: usec.min(999_999) as u32,
        },
        _ => received,
    }
}

/// A tail record: the JSON event plus its syslogemu line and the raw NFLOG message (hex), so
/// `nflog-tail` can print either format and write pcap files.
fn render_tail(renderer: &mut Renderer, ev: &Event<'_>, body: &[u8], t: &mut TailPending) {
    let out = &mut t.chunk.data;
    let start = out.len();
    renderer.render(Format::Json, ev, out);
    // Reopen the object: drop "}\n" and append the extra fields.
    if out.len() < start + 2 {
        return;
    }
    out.truncate(out.len() - 2);
    t.scratch.clear();
    renderer.render(Format::Syslogemu, ev, &mut t.scratch);
    let line = t.scratch.strip_suffix(b"\n").unwrap_or(&t.scratch);
    out.extend_from_slice(b",\"syslogemu\":");
    push_json_str(out, line);
    out.extend_from_slice(b",\"nflog\":\"");
    for b in body {
        crate::render::push_hex2_pub(out, *b);
    }
    out.extend_from_slice(b"\"}\n");
    t.chunk.lines += 1;
}

#[cfg(test)]
mod tests;
