//! The synchronous heart of the pipeline: one `recv()` buffer in, rendered lines out, one
//! buffer per sink.
//!
//! Each message goes through the stages in order: accounting (received, sequence gaps) →
//! decode → attribute (prefix, Kubernetes context) → limit (per rule, as kube-router keys its
//! kernel limits) → outputs (one line per message) and correlation (one event per packet).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::accounting::Accounting;
use super::enrich::{protected_pod, Enricher};
use super::outputs::{OutputKind, Outputs, SinkId};
use super::policy_counts::PolicyCounter;
use crate::attribute::ifname::IfNames;
use crate::attribute::index::Index;
use crate::attribute::Attribution;
use crate::correlate::{Added, Correlator, First, Open};
use crate::decode;
use crate::event::{Event, Timestamp};
use crate::limit::{self, Limiter};
use crate::render::syslog::SyslogFormat;
use crate::render::{Format, Renderer};
use crate::sink::Chunk;
use crate::source::nflog::{Messages, Netlink, NflogMsg};
use crate::stats::Stats;

/// Per-message work, from received bytes to rendered lines.
pub struct Processor {
    accounting: Accounting,
    ifnames: IfNames,
    enricher: Enricher,
    limiter: Limiter,
    /// The current message's limit key (reused: no allocation per message).
    limit_key: Vec<u8>,
    correlator: Option<Correlator>,
    outputs: Outputs,
    counts: PolicyCounter,
    batch_started: Instant,
}

impl Processor {
    /// A processor writing `formats` (sink ids 0, 1, … in that order).
    pub fn new(
        renderer: Renderer,
        limiter: Limiter,
        formats: &[Format],
        stats: Arc<Stats>,
        fresh_instances: bool,
    ) -> Self {
        let mut outputs = Outputs::new(renderer);
        for &f in formats {
            outputs.add(OutputKind::Lines(f));
        }
        Processor {
            accounting: Accounting::new(stats, fresh_instances),
            ifnames: IfNames::new(),
            enricher: Enricher::default(),
            limiter,
            limit_key: Vec::new(),
            correlator: None,
            outputs,
            counts: PolicyCounter::default(),
            batch_started: Instant::now(),
        }
    }

    /// Correlates the messages of one packet into one structured event (window > 0).
    pub fn with_correlation(mut self, window: Duration) -> Self {
        self.correlator = (!window.is_zero()).then(|| Correlator::new(window));
        self
    }

    /// Attributes events with the Kubernetes index (policies, pods, workloads).
    pub fn with_kube(mut self, index: Arc<RwLock<Index>>) -> Self {
        self.enricher = Enricher::new(Some(index));
        self
    }

    /// Names interfaces with `names` ([`IfNames::labels_only`] for a capture from another
    /// machine) instead of asking this machine's kernel.
    pub fn with_ifnames(mut self, names: IfNames) -> Self {
        self.ifnames = names;
        self
    }

    /// Also renders records for `nflog-tail`: while `clients` is non-zero, or always with
    /// `history` (the tail socket keeps a ring for `nflog-tail --last N`).
    pub fn with_tail(mut self, clients: Arc<AtomicUsize>, history: bool) -> Self {
        self.outputs.set_tail(clients, history);
        self
    }

    /// Also posts Kubernetes Events on the pods that drops protect (see `sink::events`).
    pub fn with_events(mut self, events: crate::sink::events::Aggregator) -> Self {
        self.outputs.set_events(events);
        self
    }

    /// Whether Kubernetes Events wait to be handed over.
    pub fn events_pending(&self) -> bool {
        self.outputs.events_pending()
    }

    /// Hands the Kubernetes Events that are due to their publisher (call about once a second).
    pub fn flush_events(&mut self) {
        self.outputs.flush_events(Instant::now());
    }

    /// Adds an output; its lines come out of [`Processor::take_chunks`] under the returned id.
    pub fn add_output(&mut self, kind: OutputKind) -> SinkId {
        self.outputs.add(kind)
    }

    /// Adds a syslog sink's output.
    pub fn add_syslog_output(&mut self, fmt: SyslogFormat) -> SinkId {
        self.outputs.add(OutputKind::Syslog(Box::new(fmt)))
    }

    /// Records a socket overrun: the next message's sequence number tells how much was lost.
    pub fn overrun(&mut self) {
        self.accounting.overrun();
    }

    /// At shutdown: reports an overrun no message measured.
    pub fn finish(&mut self) {
        self.accounting.finish();
    }

    /// Handles one receive buffer; returns the sequence numbers of the ACKs/errors it held.
    pub fn handle_batch(&mut self, buf: &[u8], received: Timestamp, acks: &mut Vec<u32>) {
        self.batch_started = Instant::now();
        self.ifnames.set_now(self.batch_started);
        for m in Messages::new(buf) {
            match m {
                Ok(Netlink::Packet(body)) => self.packet(body, received),
                Ok(Netlink::Error { seq, .. }) => acks.push(seq),
                Ok(Netlink::Other(_)) => {}
                Err(e) => self.accounting.malformed(e),
            }
        }
        self.expire(false);
    }

    /// One NFLOG packet message through every stage.
    pub fn handle_packet(&mut self, body: &[u8], received: Timestamp) {
        self.ifnames.set_now(Instant::now());
        self.packet(body, received);
    }

    fn packet(&mut self, body: &[u8], received: Timestamp) {
        let msg = match NflogMsg::parse(body) {
            Ok(m) => m,
            Err(e) => return self.accounting.malformed(e),
        };
        self.accounting.received(&msg);
        let attribution = Attribution::from_prefix(msg.prefix);
        let packet = decode::decode(msg.family, msg.hw_protocol, msg.payload);
        // Only attribution reads the flow (about 70 instructions per message to build).
        let flow = if self.enricher.attributes() {
            super::enrich::flow_of_message(&packet, msg.conntrack)
        } else {
            Default::default()
        };
        // Only a pod chain's limit key needs the context (which pod's chain); other messages
        // are resolved after the limiter, so a suppressed one costs no lookup.
        let pod_chain = attribution.source == crate::attribute::PolicySource::PodChain;
        let mut context = if pod_chain {
            self.enricher.resolve(&attribution, flow)
        } else {
            None
        };
        limit::key_into(
            &mut self.limit_key,
            &attribution,
            msg.prefix.unwrap_or_default(),
            context.as_deref().and_then(protected_pod),
            packet.addrs(),
        );
        let written = self.limiter.allow(&self.limit_key);
        if !written {
            self.accounting.stats().suppressed.fetch_add(1, Relaxed);
        }
        let correlating = self.correlator.is_some() && self.outputs.wants_events();
        if !written && !correlating {
            return;
        }
        if !pod_chain {
            context = self.enricher.resolve(&attribution, flow);
        }
        let ev = Event {
            indev: self.ifnames.name(msg.indev),
            outdev: self.ifnames.name(msg.outdev),
            time: event_time(&msg, received),
            msg,
            packet,
            attribution,
            context,
            count: 1,
        };
        if written {
            self.outputs.message(&ev);
            self.counts.count(&ev);
        }
        if !correlating {
            if self.outputs.wants_events() {
                self.outputs.event(&ev, std::iter::once(body), received);
            }
            return;
        }
        let (Some(correlator), outputs, enricher) =
            (&mut self.correlator, &mut self.outputs, &mut self.enricher)
        else {
            return;
        };
        let first = || First {
            packet: ev.packet,
            time: ev.time,
            indev: ev.indev,
            outdev: ev.outdev,
            received,
            context: ev.context.clone(),
        };
        let added = correlator.add(
            body,
            &ev.msg,
            written,
            first,
            self.batch_started,
            &mut |open| emit(outputs, enricher, open),
        );
        if added == Added::Joined && written {
            self.accounting.stats().correlated.fetch_add(1, Relaxed);
        }
    }

    /// Renders the event of a packet whose messages have all arrived, or whose window has
    /// passed (any, with `force`, at shutdown).
    pub fn expire(&mut self, force: bool) {
        let (Some(correlator), outputs, enricher) =
            (&mut self.correlator, &mut self.outputs, &mut self.enricher)
        else {
            return;
        };
        let mut emit = |open: &Open| emit(outputs, enricher, open);
        if force {
            correlator.flush(&mut emit);
        } else {
            correlator.expire(Instant::now(), &mut emit);
        }
    }

    /// When the packet the correlator holds is due, if it holds one.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.correlator.as_ref()?.deadline()
    }

    /// Suppression summaries since the last call: logged, and written as records.
    pub fn emit_summaries(&mut self, interval: Duration, now: Timestamp) {
        for s in self.limiter.take_summaries() {
            tracing::info!(limit_key = %s.key, suppressed = s.count, interval_s = interval.as_secs(), "messages suppressed by rate limit");
            self.outputs.summary(&s, interval, now);
        }
    }

    /// Copies the per-policy counts into the shared stats for the metrics endpoint.
    pub fn publish_metrics(&self) {
        let stats = self.accounting.stats();
        self.counts.publish(stats, &self.limiter.totals());
        stats
            .suppressed_node_cap
            .store(self.limiter.node_suppressed(), Relaxed);
    }

    /// Takes the records rendered for `nflog-tail`.
    pub fn take_tail(&mut self) -> Option<Chunk> {
        self.outputs.take_tail()
    }

    /// Takes the rendered lines, by sink.
    pub fn take_chunks(&mut self) -> impl Iterator<Item = (SinkId, Chunk)> + '_ {
        self.outputs.take_chunks()
    }

    /// Drops the rendered lines but keeps the buffers' capacity (benchmarks).
    pub fn discard_pending(&mut self) {
        self.outputs.discard();
    }

    pub fn limiter_mut(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

/// The event of one packet, from the messages the correlator collected.
fn emit(outputs: &mut Outputs, enricher: &mut Enricher, open: &Open) {
    // It parsed when it arrived; the copy parses the same.
    let Some(msg) = open.message() else {
        return;
    };
    let first = &open.first;
    let flow = super::enrich::flow_of_message(&first.packet, msg.conntrack);
    let context = enricher.merge(first.context.clone(), flow, open.prefixes());
    let ev = Event {
        attribution: Attribution::from_prefix(msg.prefix),
        msg,
        packet: first.packet,
        time: first.time,
        indev: first.indev,
        outdev: first.outdev,
        context,
        count: open.count,
    };
    outputs.event(&ev, open.bodies(), first.received);
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

#[cfg(test)]
mod tests;
