//! Events decoded here (pcap replay, `--direct`), built exactly as the daemon builds them.
//!
//! The messages go through the daemon's own [`Processor`]: decode, attribution with the cluster
//! snapshot (when there is one), correlation of the messages one packet produced into one event
//! with a `count`, and the tail record the daemon would send a client. So `nflog-tail -r
//! capture.pcap --kube-snapshot cluster.yaml` shows the events the daemon showed live on that
//! node, not one event per NFLOG message. Nothing is rate limited: a capture holds what was
//! logged, and all of it is wanted after the fact.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::pcap::Reader;
use super::record::Item;
use super::{Error, Snapshot, Source};
use crate::attribute::ifname::IfNames;
use crate::event::Timestamp;
use crate::limit::{Limit, Limiter};
use crate::pipeline::Processor;
use crate::render::Renderer;
use crate::source::nflog::NflogMsg;
use crate::stats::Stats;

/// The daemon's default correlation window (`output.correlation_window_ms`). A capture's
/// messages of one packet are consecutive, so it only matters for live `--direct` reading.
const WINDOW: Duration = Duration::from_millis(50);

/// Turns NFLOG messages into the daemon's events.
pub struct Decoder {
    processor: Processor,
    ready: VecDeque<Item>,
}

impl Decoder {
    /// `ifnames`: this machine's names (`--direct`) or index labels (a capture). The node name
    /// is the snapshot's `--node`, else `hostname`.
    pub fn new(hostname: &str, snapshot: Option<Snapshot>, ifnames: IfNames) -> Self {
        let limiter = Limiter::new(false, Limit::DEFAULT, Limit::DEFAULT);
        let node = snapshot.as_ref().and_then(|s| s.node.as_deref());
        let renderer = Renderer::new(hostname, node.unwrap_or(hostname));
        let mut processor =
            Processor::new(renderer, limiter, &[], Arc::new(Stats::default()), true)
                .with_correlation(WINDOW)
                .with_ifnames(ifnames)
                // One client: this one, so tail records are always rendered.
                .with_tail(Arc::new(AtomicUsize::new(1)), false);
        if let Some(s) = snapshot {
            processor = processor.with_kube(s.index);
        }
        Decoder {
            processor,
            ready: VecDeque::new(),
        }
    }

    /// One message (already checked to parse); `received` is when it was received or captured.
    pub fn message(&mut self, body: &[u8], received: Timestamp) {
        self.processor.handle_packet(body, received);
        self.processor.expire(false);
        self.collect();
    }

    /// One receive buffer of netlink messages, as the daemon handles it (interface names are
    /// looked up once per buffer).
    pub fn batch(&mut self, buf: &[u8], received: Timestamp) {
        let mut acks = Vec::new();
        self.processor.handle_batch(buf, received, &mut acks);
        self.collect();
    }

    /// Hands out the packet still being collected once the window has passed (`force`: now).
    pub fn expire(&mut self, force: bool) {
        self.processor.expire(force);
        self.collect();
    }

    /// When the packet being collected is due, if one is.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.processor.next_expiry()
    }

    pub fn next_ready(&mut self) -> Option<Item> {
        self.ready.pop_front()
    }

    fn collect(&mut self) {
        let Some(chunk) = self.processor.take_tail() else {
            return;
        };
        for line in chunk.data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let item = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(Item::from_json_line)
                // The daemon's renderer wrote it: a failure here is a bug, said, not hidden.
                .unwrap_or_else(|e| Item::Notice(format!("cannot read a rendered event: {e}")));
            self.ready.push_back(item);
        }
    }
}

/// An NFLOG pcap replayed through the [`Decoder`].
pub struct PcapSource<R: Read> {
    reader: Reader<R>,
    decoder: Decoder,
    done: bool,
}

impl<R: Read> PcapSource<R> {
    pub fn new(reader: Reader<R>, hostname: &str, snapshot: Option<Snapshot>) -> Self {
        PcapSource {
            reader,
            decoder: Decoder::new(hostname, snapshot, IfNames::labels_only()),
            done: false,
        }
    }
}

impl<R: Read + Send> Source for PcapSource<R> {
    fn next_item(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some(item) = self.decoder.next_ready() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            let start = self.reader.offset();
            let Some(rec) = self.reader.next_record()? else {
                self.done = true;
                self.decoder.expire(true);
                continue;
            };
            if let Err(e) = NflogMsg::parse(&rec.data) {
                return Err(Error::Record {
                    path: self.reader.path().to_string(),
                    record: self.reader.record_number(),
                    offset: start,
                    what: format!("not a valid NFLOG message: {e}"),
                });
            }
            self.decoder.message(&rec.data, rec.time);
        }
    }
}
