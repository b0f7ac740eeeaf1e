//! Counters shared by the stages: every NFLOG message ends up in exactly one of written (per
//! sink), suppressed, or lost, and the counters say which.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub name: String,
    /// Lines handed to the operating system.
    pub written: AtomicU64,
    /// Lines that could not be written (disk full, closed pipe, receiver away).
    pub failed: AtomicU64,
    /// Write errors (each may cover many lines).
    pub errors: AtomicU64,
}

impl SinkStats {
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
    /// Written messages merged into the event of an earlier message of the same packet.
    pub correlated: AtomicU64,
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
            "correlated": self.correlated.load(Relaxed),
            "written": written,
            "sink_failed": failed,
        })
    }
}
