//! Outputs: rendered lines waiting for their sinks, addressed by sink id.
//!
//! Two kinds of output take different units: per-message outputs (syslogemu, and syslog carrying
//! syslogemu text) take one line per NFLOG message, as ulogd2 writes them; structured outputs
//! (JSON, syslog carrying JSON, `nflog-tail` clients) take one event per dropped packet.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::event::{Event, Timestamp};
use crate::limit::Suppressed;
use crate::render::syslog::{MsgFormat, SyslogFormat};
use crate::render::{Format, Renderer};
use crate::sink::Chunk;
use crate::source::nflog::NflogMsg;

/// Names one output; the pipeline keeps the sink that writes it under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkId(pub usize);

/// What one sink receives.
#[derive(Debug, Clone)]
pub enum OutputKind {
    /// Text lines in one of the line formats.
    Lines(Format),
    /// One syslog message per line.
    Syslog(Box<SyslogFormat>),
}

impl OutputKind {
    /// One line per NFLOG message (syslogemu, and syslog carrying syslogemu text).
    fn per_message(&self) -> bool {
        match self {
            OutputKind::Lines(f) => *f == Format::Syslogemu,
            OutputKind::Syslog(s) => s.msg == MsgFormat::Syslogemu,
        }
    }
}

struct Buffer {
    id: SinkId,
    kind: OutputKind,
    chunk: Chunk,
}

impl Buffer {
    fn render(&mut self, renderer: &mut Renderer, ev: &Event<'_>) {
        match &self.kind {
            OutputKind::Lines(f) => renderer.render(*f, ev, &mut self.chunk.data),
            OutputKind::Syslog(s) => renderer.render_syslog(s, ev, &mut self.chunk.data),
        }
        self.chunk.lines += 1;
        self.chunk.times.push(
            ev.time
                .sec
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(ev.time.usec)),
        );
    }
}

/// Records for `nflog-tail` clients, rendered while one is connected, or always when the tail
/// socket keeps a history (`tail.ring`) for `nflog-tail --last N`.
struct Tail {
    clients: Arc<AtomicUsize>,
    history: bool,
    chunk: Chunk,
    /// The syslogemu lines of the current record, and where each one is.
    scratch: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Tail {
    fn active(&self) -> bool {
        self.history || self.clients.load(Relaxed) > 0
    }
}

#[derive(Default)]
pub struct Outputs {
    renderer: Option<Renderer>,
    outputs: Vec<Buffer>,
    tail: Option<Tail>,
    /// Kubernetes Events on drops (opt-in).
    events: Option<crate::sink::events::Aggregator>,
}

impl Outputs {
    pub fn new(renderer: Renderer) -> Self {
        Outputs {
            renderer: Some(renderer),
            outputs: Vec::new(),
            tail: None,
            events: None,
        }
    }

    fn renderer(&mut self) -> &mut Renderer {
        self.renderer.get_or_insert_with(|| Renderer::new("", ""))
    }

    /// Adds an output; its lines come out of [`Outputs::take_chunks`] under the returned id.
    pub fn add(&mut self, kind: OutputKind) -> SinkId {
        let id = SinkId(self.outputs.len());
        self.outputs.push(Buffer {
            id,
            kind,
            chunk: Chunk::default(),
        });
        id
    }

    /// Also renders records for `nflog-tail`: while `clients` is non-zero, or always with
    /// `history` (the socket's ring must hold the most recent events when a client asks).
    pub fn set_tail(&mut self, clients: Arc<AtomicUsize>, history: bool) {
        self.tail = Some(Tail {
            clients,
            history,
            chunk: Chunk::default(),
            scratch: Vec::new(),
            spans: Vec::new(),
        });
    }

    /// Also notes events for Kubernetes Events on the pods they protect.
    pub fn set_events(&mut self, events: crate::sink::events::Aggregator) {
        self.events = Some(events);
    }

    pub fn events_pending(&self) -> bool {
        self.events.as_ref().is_some_and(|e| e.has_pending())
    }

    /// Hands the Kubernetes Events that are due to their publisher.
    pub fn flush_events(&mut self, now: std::time::Instant) {
        if let Some(e) = &mut self.events {
            e.flush(now);
        }
    }

    fn tail_active(&self) -> bool {
        self.tail.as_ref().is_some_and(Tail::active)
    }

    /// Whether any output takes events (JSON sinks, tail clients) right now.
    pub fn wants_events(&self) -> bool {
        self.outputs.iter().any(|o| !o.kind.per_message())
            || self.tail_active()
            || self.events.is_some()
    }

    /// One NFLOG message to every per-message output.
    pub fn message(&mut self, ev: &Event<'_>) {
        let renderer = self.renderer.get_or_insert_with(|| Renderer::new("", ""));
        for o in self.outputs.iter_mut().filter(|o| o.kind.per_message()) {
            o.render(renderer, ev);
        }
    }

    /// One event (a packet) to every structured output and the tail clients. `bodies` are the
    /// netlink bodies of the packet's written messages, the event's own first: tail records
    /// carry each one's syslogemu line and bytes (for pcap files).
    pub fn event<'b>(
        &mut self,
        ev: &Event<'_>,
        bodies: impl Iterator<Item = &'b [u8]> + Clone,
        received: Timestamp,
    ) {
        let renderer = self.renderer.get_or_insert_with(|| Renderer::new("", ""));
        for o in self.outputs.iter_mut().filter(|o| !o.kind.per_message()) {
            o.render(renderer, ev);
        }
        if let Some(t) = self.tail.as_mut().filter(|t| t.active()) {
            render_tail(renderer, ev, bodies, received, t);
        }
        if let Some(e) = &mut self.events {
            e.note(ev, std::time::Instant::now());
        }
    }

    /// A suppression summary to every output that takes records (JSON and syslog).
    pub fn summary(&mut self, s: &Suppressed, interval: Duration, now: Timestamp) {
        let renderer = self.renderer.get_or_insert_with(|| Renderer::new("", ""));
        for o in self.outputs.iter_mut() {
            match &o.kind {
                OutputKind::Syslog(fmt) => {
                    let text = format!(
                        "{} messages suppressed for {} in {} s",
                        s.count,
                        s.describe(),
                        interval.as_secs()
                    );
                    renderer.render_syslog_text(
                        fmt,
                        now,
                        "suppressed",
                        text.as_bytes(),
                        &mut o.chunk.data,
                    );
                }
                OutputKind::Lines(Format::Json) => {
                    let mut ts = Vec::with_capacity(40);
                    renderer.push_rfc3339(now, &mut ts);
                    crate::render::json::render_suppressed(&ts, s, interval, &mut o.chunk.data);
                }
                OutputKind::Lines(Format::Syslogemu) => continue,
            }
            o.chunk.lines += 1;
        }
    }

    /// Takes the rendered lines, by sink.
    pub fn take_chunks(&mut self) -> impl Iterator<Item = (SinkId, Chunk)> + '_ {
        self.outputs
            .iter_mut()
            .filter(|o| o.chunk.lines > 0)
            .map(|o| (o.id, std::mem::take(&mut o.chunk)))
    }

    /// Takes the records rendered for `nflog-tail`.
    pub fn take_tail(&mut self) -> Option<Chunk> {
        let t = self.tail.as_mut()?;
        (t.chunk.lines > 0).then(|| std::mem::take(&mut t.chunk))
    }

    /// Drops the rendered lines but keeps the buffers' capacity (benchmarks).
    pub fn discard(&mut self) {
        for o in &mut self.outputs {
            o.chunk.data.clear();
            o.chunk.times.clear();
            o.chunk.lines = 0;
        }
        if let Some(t) = &mut self.tail {
            t.chunk.data.clear();
            t.chunk.lines = 0;
        }
        let _ = self.renderer();
    }
}

/// A tail record: the JSON event plus, for each written message of the packet, its syslogemu
/// line and raw NFLOG message, so `nflog-tail` can print either format and write pcap files.
fn render_tail<'b>(
    renderer: &mut Renderer,
    ev: &Event<'_>,
    bodies: impl Iterator<Item = &'b [u8]> + Clone,
    received: Timestamp,
    t: &mut Tail,
) {
    t.scratch.clear();
    t.spans.clear();
    for (i, body) in bodies.clone().enumerate() {
        let start = t.scratch.len();
        if i == 0 {
            renderer.render(Format::Syslogemu, ev, &mut t.scratch);
        } else if let Ok(msg) = NflogMsg::parse(body) {
            // Another message of the same traversal: same interfaces, its own prefix and time.
            let other = Event {
                time: crate::pipeline::event_time(&msg, received),
                attribution: crate::attribute::Attribution::from_prefix(msg.prefix),
                msg,
                context: None,
                ..ev.clone()
            };
            renderer.render(Format::Syslogemu, &other, &mut t.scratch);
        }
        let end =
            t.scratch.len() - usize::from(t.scratch.ends_with(b"\n") && t.scratch.len() > start);
        t.spans.push((start, end));
    }
    let scratch = &t.scratch;
    let lines = t.spans.iter().map(|&(a, b)| &scratch[a..b]);
    renderer.render_tail_record(ev, lines.zip(bodies), &mut t.chunk.data);
    t.chunk.lines += 1;
}
