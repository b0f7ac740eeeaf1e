//! Prometheus/OpenMetrics metrics, `/healthz` and `/readyz`, on one small HTTP listener.
//!
//! The counters live in [`Stats`] (atomics the stages update); this module only reads them on
//! a scrape. Label values come from closed sets (sink names, reasons) or from policies, whose
//! number is capped ([`MAX_POLICY_SERIES`]) so a flood of distinct prefixes cannot blow up the
//! series count. No label ever holds an IP address.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::stats::Stats;

/// Policies beyond this many share the label value `"(other)"`.
pub const MAX_POLICY_SERIES: usize = 5000;

/// Health as `/healthz` and `/readyz` report it.
#[derive(Debug, Default)]
pub struct Health {
    /// The NFLOG groups are bound and the reader is running.
    pub bound: AtomicBool,
}

/// Extra state reported by other parts (the Kubernetes watchers).
pub trait StatusSource: Send + Sync + std::fmt::Debug {
    /// `(resource, synced, connected, objects, restarts)` per watched resource.
    fn watch_states(&self) -> Vec<(String, bool, bool, u64, u64)>;
    /// Policies whose annotations are invalid: `(policy, problem)`.
    fn invalid_annotations(&self) -> Vec<(String, String)>;
}

#[derive(Debug)]
struct DaemonCollector {
    stats: Arc<Stats>,
    status: Option<Arc<dyn StatusSource>>,
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
            for (res, synced, ..) in &states {
                ConstGauge::new(*synced as i64)
                    .encode(fam.encode_family(&[("resource", res.as_str())])?)?;
            }
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_watch_connected",
                "1 while the watch of a resource is connected.",
                None,
                MetricType::Gauge,
            )?;
            for (res, _, connected, ..) in &states {
                ConstGauge::new(*connected as i64)
                    .encode(fam.encode_family(&[("resource", res.as_str())])?)?;
            }
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_objects",
                "Objects known per watched resource.",
                None,
                MetricType::Gauge,
            )?;
            for (res, _, _, n, _) in &states {
                ConstGauge::new(*n as i64)
                    .encode(fam.encode_family(&[("resource", res.as_str())])?)?;
            }
            let mut fam = e.encode_descriptor(
                "netpol_nflog_kube_watch_restarts",
                "Watch restarts (errors, relists) per resource.",
                None,
                MetricType::Counter,
            )?;
            for (res, _, _, _, r) in &states {
                ConstCounter::new(*r).encode(fam.encode_family(&[("resource", res.as_str())])?)?;
            }
            let m = e.encode_descriptor(
                "netpol_nflog_invalid_annotations",
                "NetworkPolicies whose nflog limit annotations are invalid (defaults used).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(status.invalid_annotations().len() as i64).encode(m)?;
        }
        Ok(())
    }
}

/// Renders the metrics text (OpenMetrics).
pub fn encode(stats: &Arc<Stats>, status: Option<Arc<dyn StatusSource>>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DaemonCollector {
        stats: stats.clone(),
        status,
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
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let stats = stats.clone();
        let health = health.clone();
        let status = status.clone();
        tokio::spawn(async move {
            // Read the whole request head: answering and closing while the client is still
            // sending headers would reset the connection under it.
            let Some(head) = read_head(&mut conn).await else {
                return;
            };
            let req = String::from_utf8_lossy(&head);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = respond(path, &stats, &health, status);
            let head = format!("HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Reads up to the blank line that ends an HTTP request head (8 KiB and 5 s at most).
async fn read_head(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > 8192 {
            return None;
        }
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return (!head.is_empty()).then_some(head),
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

fn respond(
    path: &str,
    stats: &Arc<Stats>,
    health: &Health,
    status: Option<Arc<dyn StatusSource>>,
) -> (&'static str, &'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            encode(stats, status),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => {
            let mut body = String::new();
            let bound = health.bound.load(Relaxed);
            let _ = writeln!(body, "nflog: {}", if bound { "bound" } else { "not bound" });
            if let Some(st) = &status {
                for (res, synced, connected, n, _) in st.watch_states() {
                    let state = match (synced, connected) {
                        (true, true) => "synced",
                        (true, false) => "disconnected (serving last known state)",
                        (false, _) => "waiting for the initial list",
                    };
                    let _ = writeln!(body, "kubernetes {res}: {state}, {n} objects");
                }
            } else {
                let _ = writeln!(
                    body,
                    "kubernetes: off (standalone: policies from NFLOG prefixes)"
                );
            }
            // Logging works without the API (standalone attribution), so readiness depends on
            // the NFLOG socket only; the body tells the Kubernetes state.
            (
                if bound {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "text/plain",
                body,
            )
        }
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}
