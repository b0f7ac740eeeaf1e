//! The only place that knows the order of the stages:
//! source → decode → attribute → limit → render → sinks.
//!
//! [`Processor`] is the synchronous heart: it takes the bytes of one `recv()` and appends
//! rendered lines to one buffer per sink, without allocating per message. [`run`] wraps it in
//! the daemon's event loop: the socket, signals, sink threads, and the drain at shutdown.

mod accounting;
mod enrich;
mod outputs;
mod policy_counts;
mod processor;

pub use enrich::{attribute, flow_of};
pub use outputs::{OutputKind, SinkId};
pub use processor::{event_time, Processor};

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, KubeMode, Sink};
use crate::event::Timestamp;
use crate::render::{Format, Renderer};
use crate::sink::{self, file::FileOutput, Chunk, SinkHandle};
use crate::source::socket::{NflogSocket, Recv};
use crate::stats::{SinkStats, Stats};

/// Options that only the command line sets.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Write the final counters here as JSON at exit.
    pub stats_file: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM or SIGINT; returns the final counters.
pub async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<Arc<Stats>> {
    let stats = Stats::new();
    // Signals first: a logrotate `postrotate` SIGHUP during start-up must not kill the daemon
    // (SIGHUP's default action) before its loop listens.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (hostname, node_name) = cfg.names();
    let reopen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sinks: Vec<(OutputKind, SinkHandle)> = Vec::new();
    for s in &cfg.sinks {
        let (name, output, format): (String, Box<dyn sink::Output>, Format) = match s {
            Sink::File(f) => {
                let name = format!("file:{}", f.path.display());
                let st = SinkStats::new(&name);
                stats.add_sink(st.clone());
                // Failed reopens after rotation count as sink errors.
                let out = FileOutput::open(f.path.clone())
                    .with_context(|| format!("cannot open {}", f.path.display()))?
                    .count_errors_in(st.clone());
                sinks.push((
                    OutputKind::Lines(f.format),
                    sink::spawn(Box::new(out), st, reopen.clone()),
                ));
                continue;
            }
            Sink::Stdout(o) => ("stdout".to_string(), Box::new(sink::Stdout), o.format),
            Sink::Syslog(sys) => {
                let st = SinkStats::new(&sys.name());
                stats.add_sink(st.clone());
                let handle = crate::sink::syslog::spawn(sys, st)
                    .with_context(|| format!("cannot start the syslog sink {}", sys.name()))?;
                let kind = OutputKind::Syslog(Box::new(sys.format(&hostname, &node_name)));
                sinks.push((kind, handle));
                continue;
            }
        };
        let st = SinkStats::new(&name);
        stats.add_sink(st.clone());
        sinks.push((
            OutputKind::Lines(format),
            sink::spawn(output, st, reopen.clone()),
        ));
    }
    let window = cfg.correlation_window;
    let mut proc = Processor::new(
        Renderer::new(&hostname, &node_name),
        cfg.limiter(),
        &[],
        stats.clone(),
        true,
    )
    .with_correlation(window);
    // Each sink is kept under the id of the output that feeds it.
    let sinks: std::collections::BTreeMap<SinkId, SinkHandle> = sinks
        .into_iter()
        .map(|(kind, handle)| (proc.add_output(kind), handle))
        .collect();
    let tail = match &cfg.tail_socket {
        None => None,
        Some(path) => {
            let t = crate::sink::tail::spawn(path, cfg.tail_ring, stats.clone()).with_context(
                || {
                    format!(
                        "cannot create the tail socket {} (set tail.socket = \"\" to disable it)",
                        path.display()
                    )
                },
            )?;
            // With a ring, every event is rendered for it, client or not: `nflog-tail --last N`
            // then shows what happened before it connected. The node-wide cap bounds the cost.
            proc = proc.with_tail(t.clients.clone(), cfg.tail_ring > 0);
            Some(t)
        }
    };
    let (mut kube, client) = start_kube(&cfg, &node_name).await?.unzip();
    match (cfg.events, client) {
        (None, _) => {}
        (Some(ev), Some(client)) => {
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            tokio::spawn(crate::sink::events::publish(
                client,
                node_name.clone(),
                rx,
                stats.clone(),
            ));
            proc = proc.with_events(crate::sink::events::Aggregator::new(
                ev.interval,
                ev.per_pod_per_minute,
                tx,
                stats.clone(),
            ));
            tracing::info!(
                interval_s = ev.interval.as_secs(),
                per_pod_per_minute = ev.per_pod_per_minute,
                "posting Kubernetes Events on drops"
            );
        }
        (Some(_), None) => tracing::warn!(
            "events.enabled needs the Kubernetes API (not off, not a snapshot): no Events will be posted"
        ),
    }
    let status: Option<Arc<dyn crate::metrics::StatusSource>> = kube.as_ref().map(|k| {
        Arc::new(KubeStatus {
            state: k.state.clone(),
            index: k.index.clone(),
        }) as Arc<dyn crate::metrics::StatusSource>
    });
    if let Some(k) = &kube {
        proc = proc.with_kube(k.index.clone());
    }
    if let Some(path) = &cfg.kube_snapshot {
        let node = (!node_name.is_empty()).then_some(node_name.as_str());
        let (index, loaded) = crate::attribute::snapshot::load(path, node)?;
        tracing::info!(
            snapshot = %path.display(),
            pods = loaded.pods,
            policies = loaded.policies,
            namespaces = loaded.namespaces,
            "attributing from a cluster snapshot"
        );
        for a in index.invalid_annotations() {
            tracing::warn!(namespace = %a.policy.namespace, policy = %a.policy.name, annotation = a.annotation, value = ?a.value, error = %a.error, "invalid annotation: kube-router uses the defaults");
        }
        for (key, limit) in index.limits() {
            proc.limiter_mut().set_limit(key.as_bytes(), Some(limit));
        }
        proc = proc.with_kube(Arc::new(std::sync::RwLock::new(index)));
    }
    let health = Arc::new(crate::metrics::Health::default());
    if let Some(listen) = cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for metrics (metrics.listen)"))?;
        tokio::spawn(crate::metrics::serve(
            listener,
            stats.clone(),
            health.clone(),
            status.clone(),
        ));
    }

    let src = &cfg.source;
    let mut socket = NflogSocket::open(&src.groups, &cfg.socket_tuning())?;
    for g in &src.groups {
        tracing::info!(
            group = g,
            rcvbuf = socket.rcvbuf_granted,
            "bound NFLOG group {g}"
        );
    }
    match (cfg.source.conntrack, socket.conntrack) {
        (true, true) => tracing::info!("the kernel attaches conntrack entries: Services are named from the original destination"),
        (true, false) => tracing::warn!("the kernel cannot attach conntrack entries to NFLOG messages (no netlink glue for conntrack: CONFIG_NETFILTER_NETLINK_GLUE_CT or nf_conntrack_netlink missing); Services are named from the endpoints of the destination pod"),
        _ => {}
    }
    health.bound.store(true, Relaxed);
    let pending = socket.take_pending();
    let mut acks = Vec::new();
    for batch in pending {
        proc.handle_batch(&batch, Timestamp::now(), &mut acks);
    }
    // SAFETY: NflogSocket owns its descriptor (OwnedFd), never closes or replaces it while it
    // exists, and the AsyncFd owns the NflogSocket, so the fd stays valid while registered.
    let mut fd = unsafe { AsyncFd::register(socket) }
        .context("cannot register the NFLOG socket with tokio")?;
    let interval = cfg.limits.summary_interval.max(Duration::from_secs(1));
    let mut summary = tokio::time::interval(interval);
    summary.tick().await;
    let mut buf = vec![0u8; 256 * 1024];
    // Counters are published a second after activity, not on a fixed tick: an idle daemon
    // has nothing new to publish and need not wake up.
    let mut publish_at: Option<std::time::Instant> = None;

    loop {
        // A timer only while the correlator holds a packet: an idle daemon does not wake up.
        let expiry = proc.next_expiry();
        tokio::select! {
            ready = fd.readable() => {
                let mut guard = ready?;
                read_all(guard.get_inner(), &mut buf, &mut proc, &stats, &mut acks);
                guard.clear_ready();
                flush(&mut proc, &sinks, tail.as_ref()).await;
                publish_at.get_or_insert_with(|| std::time::Instant::now() + PUBLISH_DELAY);
            }
            _ = sleep_until_some(publish_at) => {
                proc.publish_metrics();
                proc.flush_events();
                // Kubernetes Events still waiting for their interval keep the timer going.
                publish_at = proc
                    .events_pending()
                    .then(|| std::time::Instant::now() + PUBLISH_DELAY);
            }
            Some((key, limit)) = next_limit(&mut kube) => {
                tracing::info!(policy = %key, limit = ?limit, "rate limit changed");
                proc.limiter_mut().set_limit(key.as_bytes(), limit);
            }
            _ = sleep_until_some(expiry) => {
                proc.expire(false);
                flush(&mut proc, &sinks, tail.as_ref()).await;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening files");
                reopen.fetch_add(1, Relaxed);
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
    proc.finish();
    proc.expire(true);
    proc.emit_summaries(interval, Timestamp::now());
    flush(&mut proc, &sinks, tail.as_ref()).await;
    proc.publish_metrics();
    drop(tail);
    for s in sinks.into_values() {
        drop(s.tx);
        let _ = s.thread.join();
    }
    let totals = stats.to_json();
    tracing::info!(counters = %totals, "final counters");
    if let Some(path) = &opts.stats_file {
        std::fs::write(path, format!("{totals}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(stats)
}

/// How long after activity the counters are published (and Kubernetes Events handed over).
const PUBLISH_DELAY: Duration = Duration::from_secs(1);

/// Sleeps until `deadline`; forever without one.
async fn sleep_until_some(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Starts the Kubernetes watchers unless configured off or no cluster is reachable.
async fn start_kube(
    cfg: &Config,
    node_name: &str,
) -> anyhow::Result<Option<(crate::attribute::kube::KubeHandle, kube::Client)>> {
    let mode = cfg.kube_mode;
    if cfg.kube_snapshot.is_some() {
        return Ok(None);
    }
    if mode == KubeMode::Off {
        tracing::info!("Kubernetes attribution off: policy names come from NFLOG prefixes");
        return Ok(None);
    }
    let client = match crate::attribute::kube::client_from_env().await {
        Ok(Some(c)) => c,
        Ok(None) if mode == KubeMode::Auto => {
            tracing::info!(
                "no Kubernetes API configured (not in a pod, no KUBECONFIG): standalone mode"
            );
            return Ok(None);
        }
        Ok(None) => anyhow::bail!(
            "kubernetes.mode = \"on\" but no in-cluster configuration or KUBECONFIG was found"
        ),
        Err(e) if mode == KubeMode::Auto => {
            tracing::warn!(error = %e, "cannot configure the Kubernetes client: standalone mode");
            return Ok(None);
        }
        Err(e) => return Err(e.context("kubernetes.mode = \"on\"")),
    };
    let node = (!node_name.is_empty()).then(|| node_name.to_string());
    tracing::info!(node = ?node, all_pods = cfg.watch_all_pods, "watching NetworkPolicies, Pods and Namespaces");
    let handle = crate::attribute::kube::start(client.clone(), node, cfg.watch_all_pods).await;
    Ok(Some((handle, client)))
}

/// The next limit change from the watchers; pending forever without them.
async fn next_limit(
    kube: &mut Option<crate::attribute::kube::KubeHandle>,
) -> Option<(String, Option<crate::limit::Limit>)> {
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
    fn watch_states(&self) -> Vec<crate::metrics::WatchStatus> {
        self.state
            .resources()
            .iter()
            .map(|(name, r)| crate::metrics::WatchStatus {
                resource: name.to_string(),
                synced: r.synced(),
                connected: r.connected(),
                objects: r.objects(),
                restarts: r.restarts(),
            })
            .collect()
    }

    fn invalid_annotations(&self) -> Vec<(String, String)> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .invalid_annotations()
            .into_iter()
            .map(|a| {
                (
                    format!("{}/{}", a.policy.namespace, a.policy.name),
                    format!("{}={:?}: {}", a.annotation, a.value, a.error),
                )
            })
            .collect()
    }
}

/// Reads until the socket is empty, processing each batch.
fn read_all(
    sock: &NflogSocket,
    buf: &mut [u8],
    proc: &mut Processor,
    stats: &Stats,
    acks: &mut Vec<u32>,
) {
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
                proc.overrun();
            }
            Recv::WouldBlock => return,
        }
    }
}

/// Hands every sink its lines. Waits when a sink is behind (bounded channel); the tail hub
/// never makes it wait (it drops for slow clients instead).
async fn flush(
    proc: &mut Processor,
    sinks: &std::collections::BTreeMap<SinkId, SinkHandle>,
    tail: Option<&crate::sink::tail::TailHandle>,
) {
    let chunks: Vec<(SinkId, Chunk)> = proc.take_chunks().collect();
    for (id, chunk) in chunks {
        let Some(sink) = sinks.get(&id) else {
            continue;
        };
        let lines = chunk.lines;
        if sink.tx.send(chunk).await.is_err() {
            sink.stats.failed.fetch_add(lines, Relaxed);
        }
    }
    if let (Some(t), Some(chunk)) = (tail, proc.take_tail()) {
        let _ = t.tx.try_send(chunk);
    }
}

/// Unbinds every group (the kernel flushes its queue before acknowledging) and reads until all
/// the acknowledgements arrived, or 3 s passed.
async fn drain(
    fd: &mut AsyncFd<NflogSocket>,
    groups: &[u16],
    buf: &mut [u8],
    proc: &mut Processor,
    stats: &Stats,
) {
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
