//! Prometheus/OpenMetrics metrics, `/healthz` and `/readyz`, on one small HTTP/1.1 listener
//! (hyper).
//!
//! The counters live in [`Stats`] (atomics the stages update); this module only reads them on
//! a scrape. Label values come from closed sets (sink names, reasons) or from policies, whose
//! number is capped ([`MAX_POLICY_SERIES`]) so a flood of distinct prefixes cannot blow up the
//! series count. No label ever holds an IP address.
//!
//! # Endpoints
//!
//! Whatever the method (`HEAD` gets the headers without the body), and ignoring any query:
//! `/metrics` (OpenMetrics text), `/healthz` (`ok`), `/readyz` (200 once the NFLOG group is bound,
//! else 503; the body tells the NFLOG and Kubernetes state), anything else 404 `not found`.
//! HTTP/1.1 keep-alive is honoured; a client that sends `Connection: close` gets one answer.
//!
//! # Hostile clients
//!
//! The DaemonSet listens on `0.0.0.0:9109` with `hostNetwork`, so anything that reaches the node
//! can connect, and the kubelet's probes (2 s timeout) must keep getting answers while it does.
//! The daemon runs with a memory limit (128 Mi) and, on some nodes, 1024 file descriptors. The
//! listener therefore bounds every resource a client can hold:
//!
//! * **Connections**: at most [`MAX_CONNECTIONS`] (256) open at once, fewer if the descriptor
//!   limit is low (a quarter of `RLIMIT_NOFILE`, so 256 with 1024 descriptors: the NFLOG socket,
//!   the output files, the API connections and the tail clients keep the rest). A tokio
//!   semaphore holds one permit per connection. At the limit, the longest idle eighth of the
//!   connections (waiting for a request head that has not arrived, or between keep-alive
//!   requests) is closed to make room (`netpol_nflog_http_connections_evicted`); only when no
//!   open connection is idle, every one answering a request or holding one not read yet, is the
//!   new connection closed at once (`netpol_nflog_http_connections_rejected`). Closing the
//!   newcomer alone would let a client that holds 256 idle connections keep every probe out;
//!   evicting the longest idle ones means a probe, which sends its request as soon as it
//!   connects, gets in. Closed connections are reset (zero linger), so a flood leaves no
//!   `TIME_WAIT` state behind, and the listening socket's backlog is raised to
//!   [`LISTEN_BACKLOG`] (1024) so that a burst waits in the kernel instead of having SYNs
//!   dropped (each drop costs the client a 1 s retransmission, half a probe's timeout).
//! * **Time**: a request head must arrive complete within [`HEADER_TIMEOUT`] (5 s) of the
//!   connection opening or of the previous answer, which is also the keep-alive idle timeout
//!   (a slowloris client sending a byte a second is cut after 5 s; Prometheus and the kubelet
//!   send their whole head at once). Once the head is in, the answer must be written out
//!   within [`REQUEST_TIMEOUT`] (10 s, the longest scrape timeout one would configure here), so a
//!   client that does not read its answer is dropped too.
//! * **Memory**: a request head is at most [`MAX_HEAD_BYTES`] (8 KiB, 64 headers; more gets
//!   431) and a connection's read buffer at most [`MAX_BUF_BYTES`], so 256 idle connections cost
//!   a few MB; request bodies are never read. At most [`MAX_SCRAPES_IN_FLIGHT`] `/metrics` answers
//!   (up to about a megabyte each with [`MAX_POLICY_SERIES`] policies) are in flight at once;
//!   another scrape waits for one to be written out, or gets 503 at its request timeout. After a
//!   burst of connections the heap is trimmed (`malloc_trim`) once they have gone, so the
//!   resident size comes back down instead of staying at its peak.
//! * **Accept errors** (`EMFILE` when the process runs out of descriptors, `ENFILE`, `ENOMEM`)
//!   are counted (`netpol_nflog_http_accept_errors`) and answered by a back-off from 10 ms up to
//!   1 s, so they neither spin a CPU nor end the listener.
//!
//! With these limits 2000 idle connections, re-opened as fast as they are closed, leave the
//! daemon answering every `/healthz` probe, and 15 000 connections leave its resident size
//! within a few MB of where it started (see `tests/it/metrics.rs`). The limits are constants:
//! nothing on a node needs more than a handful of connections to this port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::stats::Stats;

/// Policies beyond this many share the label value `"(other)"`.
pub const MAX_POLICY_SERIES: usize = 5000;

/// Connections open at once, at most (lowered to a quarter of `RLIMIT_NOFILE` when that is
/// smaller). See the module documentation.
pub const MAX_CONNECTIONS: usize = 256;

/// Time for a complete request head, from the connection opening or the end of the previous
/// answer (so also the keep-alive idle timeout).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Time from a complete request head to the last byte of its answer written.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head (request line and headers) accepted; more gets 431.
pub const MAX_HEAD_BYTES: usize = 8192;

/// Most headers in a request head.
pub const MAX_HEADERS: usize = 64;

/// Largest read or write buffer of one connection (hyper's minimum).
pub const MAX_BUF_BYTES: usize = 8192;

/// `/metrics` answers being written at once, at most.
pub const MAX_SCRAPES_IN_FLIGHT: usize = 4;

/// Back-off after an accept error: first and longest pause.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a new connection waits for an evicted one to let go of its slot.
const EVICT_WAIT: Duration = Duration::from_millis(100);

/// At the limit, the longest idle eighth of the connections is closed at once.
const EVICT_BATCH_DIVISOR: usize = 8;

/// Backlog of the listening socket: a burst of connections waits in the kernel's accept queue
/// rather than having its SYNs dropped (a dropped SYN costs the client a 1 s retransmission,
/// half a probe's timeout).
pub const LISTEN_BACKLOG: i32 = 1024;

/// The heap is trimmed when the open connections fall to `TRIM_LOW` after having reached
/// `TRIM_HIGH`, at most once a second.
const TRIM_HIGH: u64 = 64;
const TRIM_LOW: u64 = 4;

/// Health as `/healthz` and `/readyz` report it.
#[derive(Debug, Default)]
pub struct Health {
    /// The NFLOG groups are bound and the reader is running.
    pub bound: AtomicBool,
}

/// The state of one watched Kubernetes resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// Resource name, e.g. `networkpolicies`.
    pub resource: String,
    /// The initial list is done.
    pub synced: bool,
    /// The watch is connected now.
    pub connected: bool,
    /// Objects known.
    pub objects: u64,
    /// Watch restarts (errors, relists).
    pub restarts: u64,
}

/// Extra state reported by other parts (the Kubernetes watchers).
pub trait StatusSource: Send + Sync + std::fmt::Debug {
    /// One entry per watched resource.
    fn watch_states(&self) -> Vec<WatchStatus>;
    /// Policies whose annotations are invalid: `(policy, problem)`.
    fn invalid_annotations(&self) -> Vec<(String, String)>;
}

/// Counters of the listener itself.
#[derive(Debug, Default)]
struct HttpStats {
    open: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    timeouts: AtomicU64,
    accept_errors: AtomicU64,
}

#[derive(Debug)]
struct DaemonCollector {
    stats: Arc<Stats>,
    status: Option<Arc<dyn StatusSource>>,
    http: Option<Arc<HttpStats>>,
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

impl Collector for DaemonCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        counter(
            &mut e,
            "netpol_nflog_messages_received",
            "NFLOG messages received and parsed.",
            s.received.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_messages_malformed",
            "NFLOG messages that could not be parsed (skipped).",
            s.malformed.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_messages_lost",
            "NFLOG messages lost before reaching the daemon (sequence gaps after socket overruns).",
            s.lost_seq_gap.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_socket_overruns",
            "ENOBUFS overruns of the NFLOG socket.",
            s.overruns.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_messages_suppressed",
            "Messages suppressed by a rate limit (all policies).",
            s.suppressed.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_messages_suppressed_node_cap",
            "Of the suppressed messages, those their rule's limit allowed and the node-wide cap (limits.node_limit) held back.",
            s.suppressed_node_cap.load(Relaxed),
        )?;
        for (name, help, v) in [
            ("netpol_nflog_kube_events_published", "Kubernetes Events on drops the API server accepted (events.enabled).", &s.kube_events_published),
            ("netpol_nflog_kube_events_failed", "Kubernetes Events on drops the API server refused or that could not reach it.", &s.kube_events_failed),
            ("netpol_nflog_kube_events_dropped", "Drops not aggregated into a Kubernetes Event (too many distinct pod, policy and peer triples, or the publisher behind).", &s.kube_events_dropped),
        ] {
            counter(&mut e, name, help, v.load(Relaxed))?;
        }
        counter(
            &mut e,
            "netpol_nflog_messages_correlated",
            "Written messages merged into the event of an earlier message of the same packet.",
            s.correlated.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_tail_events_sent",
            "Events sent to nflog-tail clients.",
            s.tail_sent.load(Relaxed),
        )?;
        counter(
            &mut e,
            "netpol_nflog_tail_events_dropped",
            "Events slow nflog-tail clients missed.",
            s.tail_dropped.load(Relaxed),
        )?;
        let sinks = s.sinks.lock().map(|v| v.clone()).unwrap_or_default();
        for (name, help, get) in [
            ("netpol_nflog_sink_lines_written", "Lines written, per sink.", 0),
            ("netpol_nflog_sink_lines_failed", "Lines that could not be written (disk full, closed pipe, receiver away), per sink.", 1),
            ("netpol_nflog_sink_errors", "Write or connection errors, per sink.", 2),
        ] {
            let mut fam = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for sink in &sinks {
                let v = match get {
                    0 => sink.written.load(Relaxed),
                    1 => sink.failed.load(Relaxed),
                    _ => sink.errors.load(Relaxed),
                };
                let labels = [("sink", sink.name.as_str())];
                ConstCounter::new(v).encode(fam.encode_family(&labels)?)?;
            }
        }
        {
            let mut fam = e.encode_descriptor(
                "netpol_nflog_write_latency",
                "From a line's event time (the kernel's packet timestamp, or reception for OUTPUT) to the end of its write, per file or stdout sink.",
                Some(&prometheus_client::registry::Unit::Seconds),
                MetricType::Histogram,
            )?;
            for sink in sinks.iter().filter(|s| s.latency_observed()) {
                let labels = [("sink", sink.name.as_str())];
                sink.latency.encode(fam.encode_family(&labels)?)?;
            }
        }
        let policies = s.policies.lock().map(|p| p.clone()).unwrap_or_default();
        {
            let mut fam = e.encode_descriptor(
                "netpol_nflog_policy_events",
                "Events written, per policy, namespace, direction and kind of rule.",
                None,
                MetricType::Counter,
            )?;
            for (k, c) in &policies {
                let labels = [
                    ("namespace", k.namespace.as_str()),
                    ("policy", k.policy.as_str()),
                    ("direction", k.direction),
                    ("source", k.source),
                ];
                ConstCounter::new(c.events).encode(fam.encode_family(&labels)?)?;
            }
        }
        {
            let mut fam = e.encode_descriptor(
                "netpol_nflog_policy_suppressed",
                "Messages suppressed by the rate limit, per policy.",
                None,
                MetricType::Counter,
            )?;
            for (k, c) in policies.iter().filter(|(_, c)| c.suppressed > 0) {
                let labels = [
                    ("namespace", k.namespace.as_str()),
                    ("policy", k.policy.as_str()),
                    ("direction", k.direction),
                    ("source", k.source),
                ];
                ConstCounter::new(c.suppressed).encode(fam.encode_family(&labels)?)?;
            }
        }
        if let Some(status) = &self.status {
            let states = status.watch_states();
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_watch_synced",
                "1 when the initial list of a watched resource is done.",
                None,
                MetricType::Gauge,
            )?;
            for w in &states {
                ConstGauge::new(w.synced as i64)
                    .encode(fam.encode_family(&[("resource", w.resource.as_str())])?)?;
            }
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_watch_connected",
                "1 while the watch of a resource is connected.",
                None,
                MetricType::Gauge,
            )?;
            for w in &states {
                ConstGauge::new(w.connected as i64)
                    .encode(fam.encode_family(&[("resource", w.resource.as_str())])?)?;
            }
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_objects",
                "Objects known per watched resource.",
                None,
                MetricType::Gauge,
            )?;
            for w in &states {
                ConstGauge::new(w.objects as i64)
                    .encode(fam.encode_family(&[("resource", w.resource.as_str())])?)?;
            }
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_watch_restarts",
                "Watch restarts (errors, relists) per resource.",
                None,
                MetricType::Counter,
            )?;
            for w in &states {
                ConstCounter::new(w.restarts)
                    .encode(fam.encode_family(&[("resource", w.resource.as_str())])?)?;
            }
            let m = e.encode_descriptor(
                "netpol_nflog_invalid_annotations",
                "NetworkPolicies whose nflog limit annotations are invalid (defaults used).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(status.invalid_annotations().len() as i64).encode(m)?;
        }
        if let Some(h) = &self.http {
            gauge(
                &mut e,
                "netpol_nflog_http_connections",
                "Connections open to this metrics/health listener.",
                h.open.load(Relaxed),
            )?;
            counter(
                &mut e,
                "netpol_nflog_http_connections_accepted",
                "Connections accepted by the metrics/health listener.",
                h.accepted.load(Relaxed),
            )?;
            counter(
                &mut e,
                "netpol_nflog_http_connections_rejected",
                "Connections closed at once because the connection limit was reached and every open connection was answering a request.",
                h.rejected.load(Relaxed),
            )?;
            counter(
                &mut e,
                "netpol_nflog_http_connections_evicted",
                "Idle connections closed at the connection limit to make room for a new one (the longest idle first).",
                h.evicted.load(Relaxed),
            )?;
            counter(
                &mut e,
                "netpol_nflog_http_timeouts",
                "Connections closed by the request-head or request timeout.",
                h.timeouts.load(Relaxed),
            )?;
            counter(
                &mut e,
                "netpol_nflog_http_accept_errors",
                "Errors accepting connections (e.g. EMFILE); the listener backs off and goes on.",
                h.accept_errors.load(Relaxed),
            )?;
        }
        Ok(())
    }
}

/// Renders the metrics text (OpenMetrics).
pub fn encode(stats: &Arc<Stats>, status: Option<Arc<dyn StatusSource>>) -> String {
    encode_with(stats, status, None)
}

fn encode_with(
    stats: &Arc<Stats>,
    status: Option<Arc<dyn StatusSource>>,
    http: Option<Arc<HttpStats>>,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DaemonCollector {
        stats: stats.clone(),
        status,
        http,
    }));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the runtime stops.
pub async fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    health: Arc<Health>,
    status: Option<Arc<dyn StatusSource>>,
) {
    let limit = connection_limit();
    // SAFETY: listen(2) again on the socket the listener owns only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "metrics listener: backlog unchanged");
    }
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true);
    let server = Arc::new(Server {
        stats,
        health,
        status,
        http: Arc::default(),
        http1,
        limit,
        conns: Mutex::default(),
        scrapes: Arc::new(Semaphore::new(MAX_SCRAPES_IN_FLIGHT)),
        epoch: Instant::now(),
        peak: AtomicU64::new(0),
        last_trim_ms: AtomicU64::new(0),
    });
    tracing::debug!(limit, "metrics listener: connection limit");
    let slots = Arc::new(Semaphore::new(limit));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut next_id = 0u64;
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                sock
            }
            Err(e) => {
                server.http.accept_errors.fetch_add(1, Relaxed);
                if is_per_connection_error(&e) {
                    continue;
                }
                // Out of descriptors or memory: nothing accepts until something closes, so
                // wait instead of spinning, longer each time.
                if backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!(error = %e, "metrics listener: accept failed; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => server.make_room(&slots).await,
        };
        let Some(permit) = permit else {
            server.http.rejected.fetch_add(1, Relaxed);
            let _ = sock.set_zero_linger();
            drop(sock);
            continue;
        };
        next_id += 1;
        server.spawn_connection(next_id, sock, permit);
    }
}

/// [`MAX_CONNECTIONS`], or a quarter of the descriptor limit when that is lower (at least 8).
fn connection_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return MAX_CONNECTIONS;
    }
    let quarter = usize::try_from(lim.rlim_cur / 4).unwrap_or(usize::MAX);
    MAX_CONNECTIONS.min(quarter).max(8)
}

/// Accept errors that concern one connection only (it went away before we took it): the next
/// accept may well succeed at once.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO | libc::EPERM | libc::ENOPROTOOPT | libc::EHOSTUNREACH | libc::ENETUNREACH
        )
    )
}

#[derive(Debug)]
struct Server {
    stats: Arc<Stats>,
    health: Arc<Health>,
    status: Option<Arc<dyn StatusSource>>,
    http: Arc<HttpStats>,
    http1: http1::Builder,
    limit: usize,
    /// The open connections, for eviction.
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    scrapes: Arc<Semaphore>,
    epoch: Instant,
    /// Most connections open since the last heap trim.
    peak: AtomicU64,
    last_trim_ms: AtomicU64,
}

/// What the accept loop and the connection's own parts share about one connection.
#[derive(Debug)]
struct ConnState {
    /// When it last became idle (opened, or finished writing an answer), in ms since the epoch.
    idle_since_ms: AtomicU64,
    /// A request head is in and its answer is not written out yet.
    busy: AtomicBool,
    /// The answer's body is handed to hyper; the next completed flush ends the request.
    queued: AtomicBool,
    /// Deadline of the current request, ms since the epoch (0: none).
    deadline_ms: AtomicU64,
    /// The socket, for [`request_waiting`].
    fd: std::os::fd::RawFd,
    /// Chosen for eviction (not to be chosen twice).
    evicting: AtomicBool,
    evict: Notify,
    /// The `/metrics` slot of the current answer, given back once it is written.
    scrape: Mutex<Option<OwnedSemaphorePermit>>,
}

impl ConnState {
    fn finish_request(&self, now_ms: u64) {
        self.busy.store(false, Relaxed);
        self.deadline_ms.store(0, Relaxed);
        self.idle_since_ms.store(now_ms, Relaxed);
        if let Ok(mut s) = self.scrape.lock() {
            s.take();
        }
    }
}

impl Server {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// At the limit: evicts the longest idle connection and waits for its slot. `None` when no
    /// connection is idle (or the slot did not come free in time).
    async fn make_room(&self, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        let mut idle: Vec<(u64, Arc<ConnState>)> = {
            let conns = self.conns.lock().ok()?;
            conns
                .values()
                .filter(|c| {
                    !c.busy.load(Relaxed) && !c.evicting.load(Relaxed) && !request_waiting(c.fd)
                })
                .map(|c| (c.idle_since_ms.load(Relaxed), c.clone()))
                .collect()
        };
        if idle.is_empty() {
            return None;
        }
        // A batch, so that the next connections of a burst find a free slot at once.
        let batch = (self.limit / EVICT_BATCH_DIVISOR).clamp(1, idle.len());
        if batch < idle.len() {
            idle.select_nth_unstable_by_key(batch - 1, |(t, _)| *t);
        }
        for (_, victim) in idle.iter().take(batch) {
            victim.evicting.store(true, Relaxed);
            victim.evict.notify_one();
        }
        tokio::time::timeout(EVICT_WAIT, slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    fn spawn_connection(self: &Arc<Self>, id: u64, sock: TcpStream, permit: OwnedSemaphorePermit) {
        let fd = sock.as_raw_fd();
        let st = Arc::new(ConnState {
            idle_since_ms: AtomicU64::new(self.now_ms()),
            busy: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(0),
            fd,
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
            scrape: Mutex::new(None),
        });
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(id, st.clone());
        }
        let open = self.http.open.fetch_add(1, Relaxed) + 1;
        self.http.accepted.fetch_add(1, Relaxed);
        self.peak.fetch_max(open, Relaxed);
        let server = self.clone();
        tokio::spawn(async move {
            let _guard = ConnGuard {
                server: server.clone(),
                id,
                _permit: permit,
            };
            let io = Guarded {
                io: TokioIo::new(sock),
                st: st.clone(),
                epoch: server.epoch,
                timer: None,
            };
            let svc_server = server.clone();
            let svc_st = st.clone();
            let svc = hyper::service::service_fn(move |req| {
                svc_server.clone().answer(req, svc_st.clone())
            });
            let conn = server.http1.serve_connection(io, svc);
            tokio::pin!(conn);
            let evicted = loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            if e.is_timeout() || is_timed_out(&e) {
                                server.http.timeouts.fetch_add(1, Relaxed);
                            }
                        }
                        break false;
                    }
                    _ = st.evict.notified() => {
                        // A request may have come in since it was chosen: let it finish.
                        if !st.busy.load(Relaxed) {
                            break true;
                        }
                        st.evicting.store(false, Relaxed);
                    }
                }
            };
            // Out of the registry before the descriptor is closed (and reused).
            if let Ok(mut conns) = server.conns.lock() {
                conns.remove(&id);
            }
            if evicted {
                server.http.evicted.fetch_add(1, Relaxed);
                // Reset rather than close: no TIME_WAIT left behind by a flood.
                set_zero_linger(fd);
            }
            // The connection (and its socket) goes here, then the guard and its permit.
        });
    }

    async fn answer(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        st: Arc<ConnState>,
    ) -> Result<Response<Reply>, Infallible> {
        let now = self.now_ms();
        st.busy.store(true, Relaxed);
        st.queued.store(false, Relaxed);
        let deadline_ms = now.saturating_add(REQUEST_TIMEOUT.as_millis() as u64);
        st.deadline_ms.store(deadline_ms, Relaxed);
        let path = req.uri().path();
        let (code, ctype, body) = if path == "/metrics" {
            let deadline = self.epoch + Duration::from_millis(deadline_ms);
            match tokio::time::timeout_at(deadline, self.scrapes.clone().acquire_owned()).await {
                Ok(Ok(permit)) => {
                    if let Ok(mut s) = st.scrape.lock() {
                        *s = Some(permit);
                    }
                    (
                        StatusCode::OK,
                        OPENMETRICS,
                        encode_with(&self.stats, self.status.clone(), Some(self.http.clone())),
                    )
                }
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "too many scrapes in flight\n".to_string(),
                ),
            }
        } else {
            respond(path, &self.health, self.status.as_deref())
        };
        let mut resp = Response::new(Reply {
            data: Some(Bytes::from(body)),
            st,
        });
        *resp.status_mut() = code;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        Ok(resp)
    }
}

/// Ends a connection's bookkeeping, however its task ends.
struct ConnGuard {
    server: Arc<Server>,
    id: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let s = &self.server;
        if let Ok(mut conns) = s.conns.lock() {
            conns.remove(&self.id);
            if conns.is_empty() {
                conns.shrink_to(64);
            }
        }
        let open = s.http.open.fetch_sub(1, Relaxed) - 1;
        if open <= TRIM_LOW && s.peak.load(Relaxed) >= TRIM_HIGH {
            let now = s.now_ms();
            let last = s.last_trim_ms.load(Relaxed);
            if now.saturating_sub(last) >= 1000
                && s.last_trim_ms
                    .compare_exchange(last, now, Relaxed, Relaxed)
                    .is_ok()
            {
                s.peak.store(open, Relaxed);
                trim_heap();
            }
        }
    }
}

/// Bytes wait in the kernel for a connection whose task has not read them yet: a request has
/// arrived (what a probe looks like right after connecting), so it is not idle.
fn request_waiting(fd: std::os::fd::RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int. The descriptor is a socket of a registered connection
    // (should it have been closed and reused meanwhile, the answer only affects the choice).
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    r == 0 && n > 0
}

/// `SO_LINGER` 0 on a socket about to be closed, which then sends a reset and keeps no state.
fn set_zero_linger(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a socket descriptor the caller still owns, with a value of the
    // size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Gives freed heap memory back to the system (glibc keeps it otherwise): after a connection
/// flood, and once the Kubernetes watches have loaded their initial lists.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn is_timed_out(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// An answer's body: one chunk. Dropped by hyper once the chunk is queued for writing, which
/// marks the request for completion at the next finished flush.
struct Reply {
    data: Option<Bytes>,
    st: Arc<ConnState>,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.st.queued.store(true, Relaxed);
    }
}

/// The connection's socket, with the request timeout on writing the answer and the end of a
/// request noted when its answer is flushed.
struct Guarded {
    io: TokioIo<TcpStream>,
    st: Arc<ConnState>,
    epoch: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    /// A write is pending: fails it once the request's deadline has passed.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let ms = self.st.deadline_ms.load(Relaxed);
        if ms == 0 {
            return Poll::Pending;
        }
        let when = self.epoch + Duration::from_millis(ms);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(when)));
        if timer.deadline() != when {
            timer.as_mut().reset(when);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "answer not taken within the request timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Read for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.pending(cx),
            r => r,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.pending(cx),
            r => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                if this.st.queued.swap(false, Relaxed) {
                    let now = u64::try_from(this.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                    this.st.finish_request(now);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.pending(cx),
            r => r,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain";

/// The answer to any path but `/metrics`: `(status, content type, body)`.
fn respond(
    path: &str,
    health: &Health,
    status: Option<&dyn StatusSource>,
) -> (StatusCode, &'static str, String) {
    match path {
        "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => {
            let mut body = String::new();
            let bound = health.bound.load(Relaxed);
            let _ = writeln!(body, "nflog: {}", if bound { "bound" } else { "not bound" });
            if let Some(st) = status {
                for w in st.watch_states() {
                    let state = match (w.synced, w.connected) {
                        (true, true) => "synced",
                        (true, false) => "disconnected (serving last known state)",
                        (false, _) => "waiting for the initial list",
                    };
                    let _ = writeln!(
                        body,
                        "kubernetes {}: {state}, {} objects",
                        w.resource, w.objects
                    );
                }
            } else {
                let _ = writeln!(
                    body,
                    "kubernetes: off (standalone: policies from NFLOG prefixes)"
                );
            }
            // Logging works without the API (standalone attribution), so readiness depends on
            // the NFLOG socket only; the body tells the Kubernetes state.
            let code = if bound {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, TEXT, body)
        }
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}
