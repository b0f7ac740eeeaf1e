//! Accounting: every NFLOG message is counted as received, malformed or lost before anything
//! else looks at it.
//!
//! The kernel numbers the messages of each group (`NFULA_SEQ`, switched on by the source); a gap
//! is a loss the socket could not report, an overrun (`ENOBUFS`) is one it did, and the next
//! message's number measures it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::source::nflog::{NflogMsg, ParseError};
use crate::stats::Stats;

/// How often a malformed message is reported in the log at most (all are counted).
const MALFORMED_REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct Accounting {
    stats: Arc<Stats>,
    /// Next expected NFLOG sequence number per group.
    next_seq: Vec<(u16, u32)>,
    /// Whether the groups were bound by us (so sequence numbers start at 0).
    fresh_instances: bool,
    last_malformed_report: Option<Instant>,
    /// An overrun happened and no message has arrived since, so its size is not known yet.
    overrun_pending: bool,
}

impl Accounting {
    pub fn new(stats: Arc<Stats>, fresh_instances: bool) -> Self {
        Accounting {
            stats,
            next_seq: Vec::new(),
            fresh_instances,
            last_malformed_report: None,
            overrun_pending: false,
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A message parsed: counts it and checks its sequence number.
    pub fn received(&mut self, msg: &NflogMsg<'_>) {
        self.stats.received.fetch_add(1, Relaxed);
        self.overrun_pending = false;
        if let Some(seq) = msg.seq {
            self.check_seq(msg.group, seq);
        }
    }

    pub fn malformed(&mut self, e: ParseError) {
        let n = self.stats.malformed.fetch_add(1, Relaxed) + 1;
        if self
            .last_malformed_report
            .is_none_or(|t| t.elapsed() > MALFORMED_REPORT_EVERY)
        {
            self.last_malformed_report = Some(Instant::now());
            tracing::warn!(reason = e.kind(), error = %e, malformed_total = n, "skipping a malformed NFLOG message");
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
}
