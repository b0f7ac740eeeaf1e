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

/// Records for `nflog-tail` clients, rendered only while one is connected.
struct TailPending {
    clients: Arc<std::sync::atomic::AtomicUsize>,
    chunk: Chunk,
    scratch: Vec<u8>,
}

/// Events per policy key, by kind of rule and direction (published as metrics).
type PolicyCounts = HashMap<Box<[u8]>, [u64; 9]>;

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
    tail: Option<TailPending>,
    policy_counts: PolicyCounts,
    /// The Kubernetes index, when the daemon watches the API.
    kube: Option<Arc<std::sync::RwLock<crate::attribute::index::Index>>>,
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
            tail: None,
            policy_counts: HashMap::new(),
            kube: None,
        }
    }

    /// Attributes events with the Kubernetes index (policies, pods, workloads).
    pub fn with_kube(mut self, index: Arc<std::sync::RwLock<crate::attribute::index::Index>>) -> Self {
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
        let context = self.kube.as_ref().and_then(|index| {
            let (src, dst) = packet.addrs().unzip();
            // A poisoned lock only means a watcher panicked mid-update; the index is still
            // the best knowledge there is.
            let index = index.read().unwrap_or_else(|p| p.into_inner());
            index.resolve(&attribution, src, dst).map(Arc::new)
        });
        let ev = Event {
            indev: self.ifnames.name(msg.indev),
            outdev: self.ifnames.name(msg.outdev),
            msg,
            packet,
            time,
            attribution,
            context,
        };
        for p in &mut self.pending {
            self.renderer.render(p.format, &ev, &mut p.chunk.data);
            p.chunk.lines += 1;
        }
        self.count_policy(&ev);
        if let Some(t) = &mut self.tail {
            if t.clients.load(Relaxed) > 0 {
                render_tail(&mut self.renderer, &ev, body, t);
            }
        }
    }

    fn count_policy(&mut self, ev: &Event<'_>) {
        let key = match ev.attribution.source {
            crate::attribute::PolicySource::PolicyRule => ev.attribution.policy_key().unwrap_or_default(),
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
                table.insert(k, Counts { events, suppressed: sup });
            }
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
    let tail = match cfg.tail.socket.as_str() {
        "" => None,
        path => {
            let t = crate::sink::tail::spawn(std::path::Path::new(path), cfg.tail.ring, stats.clone())
                .with_context(|| format!("cannot create the tail socket {path} (set tail.socket = \"\" to disable it)"))?;
            proc = proc.with_tail(t.clients.clone());
            Some(t)
        }
    };
    let mut kube = start_kube(&cfg, &node_name).await?;
    let status: Option<Arc<dyn crate::metrics::StatusSource>> = kube.as_ref().map(|k| {
        Arc::new(KubeStatus {
            state: k.state.clone(),
            index: k.index.clone(),
        }) as Arc<dyn crate::metrics::StatusSource>
    });
    if let Some(k) = &kube {
        proc = proc.with_kube(k.index.clone());
    }
    let health = Arc::new(crate::metrics::Health::default());
    if !cfg.metrics.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.metrics.listen)
            .await
            .with_context(|| format!("cannot listen on {} for metrics (metrics.listen)", cfg.metrics.listen))?;
        tokio::spawn(crate::metrics::serve(listener, stats.clone(), health.clone(), status.clone()));
    }

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
    health.bound.store(true, Relaxed);
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
    let mut last_publish = Instant::now();

    loop {
        tokio::select! {
            ready = fd.readable() => {
                let mut guard = ready?;
                read_all(guard.get_inner(), &mut buf, &mut proc, &stats, &mut acks);
                guard.clear_ready();
                flush(&mut proc, &sinks, tail.as_ref()).await;
                if last_publish.elapsed() >= Duration::from_secs(1) {
                    last_publish = Instant::now();
                    proc.publish_metrics();
                }
            }
            Some((key, limit)) = next_limit(&mut kube) => {
                tracing::info!(policy = %key, limit = ?limit, "rate limit changed");
                proc.limiter_mut().set_limit(key.as_bytes(), limit);
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening files");
                reopen.store(true, Relaxed);
            }
            _ = summary.tick() => {
                proc.emit_summaries(interval, Timestamp::now());
                flush(&mut proc, &sinks, tail.as_ref()).await;
                proc.publish_metrics();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    tracing::info!("shutting down: draining what the kernel still holds");
    drain(&mut fd, &src.groups, &mut buf, &mut proc, &stats).await;
    health.bound.store(false, Relaxed);
    proc.emit_summaries(interval, Timestamp::now());
    flush(&mut proc, &sinks, tail.as_ref()).await;
    proc.publish_metrics();
    drop(tail);
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

/// Starts the Kubernetes watchers unless configured off or no cluster is reachable.
async fn start_kube(cfg: &Config, node_name: &str) -> anyhow::Result<Option<crate::attribute::kube::KubeHandle>> {
    let mode = cfg.kubernetes.mode.as_str();
    if mode == "off" {
        tracing::info!("Kubernetes attribution off: policy names come from NFLOG prefixes");
        return Ok(None);
    }
    let client = match crate::attribute::kube::client_from_env().await {
        Ok(Some(c)) => c,
        Ok(None) if mode == "auto" => {
            tracing::info!("no Kubernetes API configured (not in a pod, no KUBECONFIG): standalone mode");
            return Ok(None);
        }
        Ok(None) => anyhow::bail!("kubernetes.mode = \"on\" but no in-cluster configuration or KUBECONFIG was found"),
        Err(e) if mode == "auto" => {
            tracing::warn!(error = %e, "cannot configure the Kubernetes client: standalone mode");
            return Ok(None);
        }
        Err(e) => return Err(e.context("kubernetes.mode = \"on\"")),
    };
    let node = (!node_name.is_empty()).then(|| node_name.to_string());
    tracing::info!(node = ?node, all_pods = cfg.kubernetes.watch_all_pods, "watching NetworkPolicies, Pods and Namespaces");
    Ok(Some(crate::attribute::kube::start(client, node, cfg.kubernetes.watch_all_pods).await))
}

/// The next limit change from the watchers; pending forever without them.
async fn next_limit(kube: &mut Option<crate::attribute::kube::KubeHandle>) -> Option<(String, Option<crate::limit::Limit>)> {
    match kube {
        Some(k) => k.limit_updates.recv().await,
        None => std::future::pending().await,
    }
}

/// Watch state and annotation problems, for `/readyz` and metrics.
struct KubeStatus {
    state: Arc<crate::attribute::kube::WatchState>,
    index: Arc<std::sync::RwLock<crate::attribute::index::Index>>,
}

impl std::fmt::Debug for KubeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStatus").finish_non_exhaustive()
    }
}

impl crate::metrics::StatusSource for KubeStatus {
    fn watch_states(&self) -> Vec<(String, bool, bool, u64, u64)> {
        self.state
            .resources()
            .iter()
            .map(|(name, r)| (name.to_string(), r.synced(), r.connected(), r.objects(), r.restarts()))
            .collect()
    }

    fn invalid_annotations(&self) -> Vec<(String, String)> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .invalid_annotations()
            .into_iter()
            .map(|a| (format!("{}/{}", a.policy.namespace, a.policy.name), format!("{}={:?}: {}", a.annotation, a.value, a.error)))
            .collect()
    }
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

/// Hands every sink its lines. Waits when a sink is behind (bounded channel); the tail hub
/// never makes it wait (it drops for slow clients instead).
async fn flush(proc: &mut Processor, sinks: &[SinkHandle], tail: Option<&crate::sink::tail::TailHandle>) {
    let chunks: Vec<(usize, Chunk)> = proc.take_chunks().collect();
    for (i, chunk) in chunks {
        let lines = chunk.lines;
        if sinks[i].tx.send(chunk).await.is_err() {
            sinks[i].stats.failed.fetch_add(lines, Relaxed);
        }
    }
    if let (Some(t), Some(chunk)) = (tail, proc.take_tail()) {
        let _ = t.tx.try_send(chunk);
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
