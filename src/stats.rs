//! Counters shared by the stages: every NFLOG message ends up in exactly one of written (per
//! sink), suppressed, or lost, and the counters say which.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Upper bounds of the write-latency histogram, in seconds: from the kernel's flush timeout's
/// scale (10 ms) to ulogd2's (1 s) and beyond.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Counters of one sink.
#[derive(Debug)]
pub struct SinkStats {
    pub name: String,
    /// Lines handed to the operating system.
    pub written: AtomicU64,
    /// Lines that could not be written (disk full, closed pipe, receiver away).
    pub failed: AtomicU64,
    /// Write errors (each may cover many lines).
    pub errors: AtomicU64,
    /// From each line's event time (the kernel's packet timestamp, or reception for OUTPUT) to
    /// the end of the write that carried it.
    pub latency: prometheus_client::metrics::histogram::Histogram,
    latency_seen: std::sync::atomic::AtomicBool,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            name: String::new(),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS),
            latency_seen: Default::default(),
        }
    }
}

impl SinkStats {
    /// Records the latency of lines just written, whose event times are `times` (µs since the
    /// epoch). A clock that went backwards counts as 0.
    pub fn observe_latency(&self, times: &[i64]) {
        if times.is_empty() {
            return;
        }
        self.latency_seen.store(true, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        for &t in times {
            self.latency
                .observe(now.saturating_sub(t).max(0) as f64 / 1e6);
        }
    }

    /// Whether this sink measures latency (file and stdout sinks, once they wrote a line).
    pub fn latency_observed(&self) -> bool {
        self.latency_seen.load(Relaxed)
    }

    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(SinkStats {
            name: name.to_string(),
            ..Default::default()
        })
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// NFLOG packet messages received and parsed.
    pub received: AtomicU64,
    /// Messages that could not be parsed (counted, skipped).
    pub malformed: AtomicU64,
    /// Messages the kernel's sequence numbers show were never received.
    pub lost_seq_gap: AtomicU64,
    /// `ENOBUFS` overruns of the socket (each loses an unknown number; see `lost_seq_gap`).
    pub overruns: AtomicU64,
    /// Overruns after which no message arrived before shutdown, so no sequence gap could
    /// measure them: messages were lost, how many is unknown.
    pub lost_unmeasured: AtomicU64,
    /// Batches cut short by a too-small receive buffer.
    pub truncated_batches: AtomicU64,
    /// Messages suppressed by a rate limit.
    pub suppressed: AtomicU64,
    /// Of those, messages their rule's limit allowed and the node-wide cap held back.
    pub suppressed_node_cap: AtomicU64,
    /// Written messages merged into the event of an earlier message of the same packet.
    pub correlated: AtomicU64,
    /// Kubernetes Events on drops: accepted by the API server, refused or unreachable, and
    /// notes not aggregated (too many distinct pod/policy/peer triples, or the publisher behind).
    pub kube_events_published: AtomicU64,
    pub kube_events_failed: AtomicU64,
    pub kube_events_dropped: AtomicU64,
    /// Events handed to the tail socket's clients, and those a slow client missed.
    pub tail_sent: AtomicU64,
    pub tail_dropped: AtomicU64,
    pub sinks: Mutex<Vec<Arc<SinkStats>>>,
    /// Per-policy counts, published by the pipeline about once a second.
    pub policies: Mutex<BTreeMap<PolicyKey, PolicyCounts>>,
}

/// The labels of a per-policy series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyKey {
    pub namespace: String,
    pub policy: String,
    pub direction: &'static str,
    pub source: &'static str,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    pub events: u64,
    pub suppressed: u64,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Stats::default())
    }

    pub fn add_sink(&self, s: Arc<SinkStats>) {
        if let Ok(mut v) = self.sinks.lock() {
            v.push(s);
        }
    }

    pub fn to_json(&self) -> Value {
        let sinks = self.sinks.lock().map(|v| v.clone()).unwrap_or_default();
        let written: serde_json::Map<String, Value> = sinks
            .iter()
            .map(|s| (s.name.clone(), json!(s.written.load(Relaxed))))
            .collect();
        let failed: serde_json::Map<String, Value> = sinks
            .iter()
            .map(|s| (s.name.clone(), json!(s.failed.load(Relaxed))))
            .collect();
        json!({
            "received": self.received.load(Relaxed),
            "malformed": self.malformed.load(Relaxed),
            "lost": self.lost_seq_gap.load(Relaxed),
            "lost_seq_gap": self.lost_seq_gap.load(Relaxed),
            "overruns": self.overruns.load(Relaxed),
            "lost_unmeasured_overruns": self.lost_unmeasured.load(Relaxed),
            "truncated_batches": self.truncated_batches.load(Relaxed),
            "suppressed": self.suppressed.load(Relaxed),
            "suppressed_node_cap": self.suppressed_node_cap.load(Relaxed),
            "correlated": self.correlated.load(Relaxed),
            "written": written,
            "sink_failed": failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_latency_is_a_histogram_per_sink() {
        let stats = Stats::new();
        let file = SinkStats::new("file:/var/log/ulog/syslogemu.log");
        let syslog = SinkStats::new("syslog+udp:127.0.0.1:514");
        stats.add_sink(file.clone());
        stats.add_sink(syslog);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        // Written 3 ms, 40 ms and 2 s after their packets; one with a clock from the future.
        file.observe_latency(&[now - 3_000, now - 40_000, now - 2_000_000, now + 5_000_000]);
        let text = crate::metrics::encode(&stats, None);
        let bucket = |le: &str| {
            let key = format!(
                "netpol_nflog_write_latency_seconds_bucket{{le=\"{le}\",sink=\"file:/var/log/ulog/syslogemu.log\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(bucket("0.001"), 1, "the future one counts as 0");
        assert_eq!(bucket("0.005"), 2);
        assert_eq!(bucket("0.05"), 3);
        assert_eq!(bucket("5.0"), 4);
        assert!(
            !text
                .lines()
                .any(|l| l.contains("write_latency") && l.contains("syslog+udp")),
            "a sink that measures nothing has no histogram:\n{text}"
        );
    }
}
