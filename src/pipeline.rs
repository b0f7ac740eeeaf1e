//! The only place that knows the order of the stages:
//! source → decode → attribute → limit → render → sinks.
//!
//! [`Processor`] is the synchronous heart: it takes the bytes of one `recv()` and appends
//! rendered lines to one buffer per sink, without allocating per message. [`run`] wraps it in
//! the daemon's event loop: the socket, signals, sink threads, and the drain at shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::attribute::ifname::IfNames;
use crate::attribute::Attribution;
use crate::config::{Config, SinkKind};
use crate::decode;
use crate::event::{Event, Timestamp};
use crate::limit::{Limiter, NO_POLICY};
use crate::render::{json::push_json_str, Format, Renderer};
use crate::sink::{self, file::FileOutput, Chunk, SinkHandle};
use crate::source::nflog::{Messages, Netlink, NflogMsg};
use crate::source::socket::{NflogSocket, Recv, Tuning};
use crate::stats::{SinkStats, Stats};

/// Lines waiting for one sink.
struct Pending {
    format: Format,
    chunk: Chunk,
}

/// Per-message work, from received bytes to rendered lines.
pub struct Processor {
    renderer: Renderer,
    ifnames: IfNames,
    limiter: Limiter,
    pending: Vec<Pending>,
    stats: Arc<Stats>,
    /// Next expected NFLOG sequence number per group.
    next_seq: HashMap<u16, u32>,
    /// Whether the groups were bound by us (so sequence numbers start at 0).
    fresh_instances: bool,
    last_malformed_report: Option<Instant>,
}

impl Processor {
    pub fn new(renderer: Renderer, limiter: Limiter, formats: &[Format], stats: Arc<Stats>, fresh_instances: bool) -> Self {
        Processor {
            renderer,
            ifnames: IfNames::new(),
            limiter,
            pending: formats
                .iter()
                .map(|&format| Pending {
                    format,
                    chunk: Chunk::default(),
                })
                .collect(),
            stats,
            next_seq: HashMap::new(),
            fresh_instances,
            last_malformed_report: None,
        }
    }

    /// Handles one receive buffer; returns the sequence numbers of the ACKs/errors it held.
    pub fn handle_batch(&mut self, buf: &[u8], received: Timestamp, acks: &mut Vec<u32>) {
        self.ifnames.set_now(Instant::now());
        for m in Messages::new(buf) {
            match m {
                Ok(Netlink::Packet(body)) => self.handle_packet(body, received),
                Ok(Netlink::Error { seq, .. }) => acks.push(seq),
                Ok(Netlink::Other(_)) => {}
                Err(e) => self.malformed(e),
            }
        }
    }

    fn malformed(&mut self, e: crate::source::nflog::ParseError) {
        let n = self.stats.malformed.fetch_add(1, Relaxed) + 1;
        if self.last_malformed_report.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
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
        if let Some(seq) = msg.seq {
            self.check_seq(msg.group, seq);
        }
        let attribution = Attribution::from_prefix(msg.prefix);
        if !self.limiter.allow(attribution.policy_key().unwrap_or(NO_POLICY)) {
            self.stats.suppressed.fetch_add(1, Relaxed);
            return;
        }
        let packet = decode::decode(msg.family, msg.hw_protocol, msg.payload);
        // ulogd2 uses the kernel's timestamp when it sent a non-zero one, else receive time.
        let time = match msg.timestamp {
            Some((sec, usec)) if sec != 0 => Timestamp {
                sec: sec as i64,
                usec: usec as u32,
            },
            _ => received,
        };
        let ev = Event {
            indev: self.ifnames.name(msg.indev),
            outdev: self.ifnames.name(msg.outdev),
            msg,
            packet,
            time,
            attribution,
            context: None,
        };
        for p in &mut self.pending {
            self.renderer.render(p.format, &ev, &mut p.chunk.data);
            p.chunk.lines += 1;
        }
    }

    fn check_seq(&mut self, group: u16, seq: u32) {
        let expected = match self.next_seq.get(&group) {
            Some(&e) => Some(e),
            None if self.fresh_instances => Some(0),
            None => None,
        };
        if let Some(expected) = expected {
            let gap = seq.wrapping_sub(expected);
            // A "gap" of more than half the space is a reordering or restart, not a loss.
            if gap != 0 && gap < u32::MAX / 2 {
                self.stats.lost_seq_gap.fetch_add(gap as u64, Relaxed);
                tracing::warn!(group, lost = gap, "NFLOG messages lost before reaching the daemon (socket overrun)");
            }
        }
        self.next_seq.insert(group, seq.wrapping_add(1));
    }

    /// Suppression summaries since the last call: logged, and written as JSON records.
    pub fn emit_summaries(&mut self, interval: Duration, now: Timestamp) {
        for s in self.limiter.take_summaries() {
            tracing::info!(policy = %s.policy, suppressed = s.count, interval_s = interval.as_secs(), "messages suppressed by rate limit");
            for p in self.pending.iter_mut().filter(|p| p.format == Format::Json) {
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

/// Options that only the command line sets.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Write the final counters here as JSON at exit.
    pub stats_file: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM or SIGINT; returns the final counters.
pub async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<Arc<Stats>> {
    let stats = Stats::new();
    let hostname = if cfg.output.hostname.is_empty() {
        crate::render::short_hostname()
    } else {
        cfg.output.hostname.clone()
    };
    let node_name = if !cfg.output.node_name.is_empty() {
        cfg.output.node_name.clone()
    } else {
        std::env::var("NODE_NAME").unwrap_or_else(|_| hostname.clone())
    };
    let reopen = Arc::new(AtomicBool::new(false));
    let mut sinks: Vec<SinkHandle> = Vec::new();
    for s in &cfg.sinks {
        let (name, output): (String, Box<dyn sink::Output>) = match s.kind {
            SinkKind::File => {
                let path = s.path.clone().unwrap_or_default();
                let out = FileOutput::open(path.clone()).with_context(|| format!("cannot open {}", path.display()))?;
                (format!("file:{}", path.display()), Box::new(out))
            }
            SinkKind::Stdout => ("stdout".to_string(), Box::new(sink::Stdout)),
        };
        let st = SinkStats::new(&name);
        stats.add_sink(st.clone());
        sinks.push(sink::spawn(output, st, reopen.clone()));
    }
    let formats: Vec<Format> = cfg.sinks.iter().map(|s| s.format).collect();
    let (policy_default, unattributed) = cfg.limits();
    let limiter = Limiter::new(cfg.limits.enabled, policy_default, unattributed);
    let mut proc = Processor::new(Renderer::new(&hostname, &node_name), limiter, &formats, stats.clone(), true);

    let src = &cfg.source;
    let tuning = Tuning {
        copy_range: src.copy_range,
        nlbufsiz: src.kernel_buffer,
        qthreshold: src.queue_threshold,
        timeout_cs: src.flush_timeout_ms.div_ceil(10),
        rcvbuf: src.socket_receive_buffer,
    };
    let mut socket = NflogSocket::open(&src.groups, &tuning)?;
    for g in &src.groups {
        tracing::info!(group = g, rcvbuf = socket.rcvbuf_granted, "bound NFLOG group {g}");
    }
    let pending = socket.take_pending();
    let mut acks = Vec::new();
    for batch in pending {
        proc.handle_batch(&batch, Timestamp::now(), &mut acks);
    }
    // SAFETY: NflogSocket owns its descriptor (OwnedFd), never closes or replaces it while it
    // exists, and the AsyncFd owns the NflogSocket, so the fd stays valid while registered.
    let mut fd = unsafe { AsyncFd::register(socket) }.context("cannot register the NFLOG socket with tokio")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let interval = Duration::from_secs(cfg.limits.summary_interval_s.max(1));
    let mut summary = tokio::time::interval(interval);
    summary.tick().await;
    let mut buf = vec![0u8; 256 * 1024];

    loop {
        tokio::select! {
            ready = fd.readable() => {
                let mut guard = ready?;
                read_all(guard.get_inner(), &mut buf, &mut proc, &stats, &mut acks);
                guard.clear_ready();
                flush(&mut proc, &sinks).await;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening files");
                reopen.store(true, Relaxed);
            }
            _ = summary.tick() => {
                proc.emit_summaries(interval, Timestamp::now());
                flush(&mut proc, &sinks).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    tracing::info!("shutting down: draining what the kernel still holds");
    drain(&mut fd, &src.groups, &mut buf, &mut proc, &stats).await;
    proc.emit_summaries(interval, Timestamp::now());
    flush(&mut proc, &sinks).await;
    for s in sinks {
        drop(s.tx);
        let _ = s.thread.join();
    }
    let totals = stats.to_json();
    tracing::info!(counters = %totals, "final counters");
    if let Some(path) = &opts.stats_file {
        std::fs::write(path, format!("{totals}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(stats)
}

/// Reads until the socket is empty, processing each batch.
fn read_all(sock: &NflogSocket, buf: &mut [u8], proc: &mut Processor, stats: &Stats, acks: &mut Vec<u32>) {
    loop {
        match sock.recv(buf) {
            Recv::Data(n) => proc.handle_batch(&buf[..n], Timestamp::now(), acks),
            Recv::Truncated(n) => {
                stats.truncated_batches.fetch_add(1, Relaxed);
                proc.handle_batch(&buf[..n], Timestamp::now(), acks);
            }
            Recv::Overrun => {
                // The loss itself shows up as a sequence gap in the next message.
                stats.overruns.fetch_add(1, Relaxed);
            }
            Recv::WouldBlock => return,
        }
    }
}

/// Hands every sink its lines. Waits when a sink is behind (bounded channel).
async fn flush(proc: &mut Processor, sinks: &[SinkHandle]) {
    let chunks: Vec<(usize, Chunk)> = proc.take_chunks().collect();
    for (i, chunk) in chunks {
        let lines = chunk.lines;
        if sinks[i].tx.send(chunk).await.is_err() {
            sinks[i].stats.failed.fetch_add(lines, Relaxed);
        }
    }
}

/// Unbinds every group (the kernel flushes its queue before acknowledging) and reads until all
/// the acknowledgements arrived, or 3 s passed.
async fn drain(fd: &mut AsyncFd<NflogSocket>, groups: &[u16], buf: &mut [u8], proc: &mut Processor, stats: &Stats) {
    let mut waiting: Vec<u32> = Vec::new();
    for &g in groups {
        match fd.get_mut().send_unbind(g) {
            Ok(seq) => waiting.push(seq),
            Err(e) => tracing::warn!(group = g, error = %e, "cannot unbind"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut acks = Vec::new();
    while !waiting.is_empty() {
        let ready = tokio::time::timeout_at(deadline, fd.readable()).await;
        let Ok(Ok(mut guard)) = ready else {
            tracing::warn!("the kernel did not acknowledge every unbind in time");
            break;
        };
        read_all(guard.get_inner(), buf, proc, stats, &mut acks);
        guard.clear_ready();
        waiting.retain(|s| !acks.contains(s));
    }
}
