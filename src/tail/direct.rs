//! `--direct`: bind the NFLOG group ourselves, for nodes without the daemon.
//!
//! The same socket code as the daemon ([`NflogSocket`]), with a short flush timeout so events
//! show within 100 ms, and the daemon's decoder and renderers; interface names are resolved in
//! this network namespace. Only one process can bind a group, so this fails with
//! [`SocketError::GroupBusy`](crate::source::socket::SocketError::GroupBusy) while the daemon
//! (or ulogd2, or tcpdump) holds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::pcap::event;
use super::record::Item;
use super::{Error, Source};
use crate::attribute::ifname::IfNames;
use crate::event::Timestamp;
use crate::render::Renderer;
use crate::source::nflog::{Messages, Netlink, NflogMsg};
use crate::source::socket::{NflogSocket, Recv, SocketError, SocketTuning};

const TUNING: SocketTuning = SocketTuning {
    copy_range: 65535,
    nlbufsiz: 131_072,
    qthreshold: 64,
    timeout_cs: 10,
    rcvbuf: 8 << 20,
    conntrack: false,
};

pub struct Direct {
    sock: NflogSocket,
    buf: Vec<u8>,
    ready: VecDeque<Item>,
    renderer: Renderer,
    ifnames: IfNames,
    /// Kernel overruns not yet reported.
    overruns: u64,
    snapshot: Option<std::sync::Arc<crate::attribute::index::Index>>,
}

impl Direct {
    pub fn open(group: u16, hostname: &str) -> Result<Self, Error> {
        let mut sock = NflogSocket::open(&[group], &TUNING)?;
        let pending = sock.take_pending();
        let mut d = Direct {
            sock,
            buf: vec![0u8; 256 * 1024],
            ready: VecDeque::new(),
            renderer: Renderer::new(hostname, hostname),
            ifnames: IfNames::new(),
            overruns: 0,
            snapshot: None,
        };
        for batch in pending {
            d.handle_batch(&batch);
        }
        Ok(d)
    }

    /// Attributes the events with a cluster snapshot.
    pub fn with_snapshot(
        mut self,
        snapshot: Option<std::sync::Arc<crate::attribute::index::Index>>,
    ) -> Self {
        self.snapshot = snapshot;
        self
    }

    fn handle_batch(&mut self, batch: &[u8]) {
        self.ifnames.set_now(Instant::now());
        let received = Timestamp::now();
        for m in Messages::new(batch) {
            let body = match m {
                Ok(Netlink::Packet(body)) => body,
                Ok(_) => continue,
                Err(e) => {
                    self.ready.push_back(Item::Notice(format!(
                        "skipping a malformed NFLOG message: {e}"
                    )));
                    continue;
                }
            };
            match NflogMsg::parse(body) {
                Ok(msg) => {
                    let (indev, outdev) =
                        (self.ifnames.name(msg.indev), self.ifnames.name(msg.outdev));
                    let ev = event(msg, received, indev, outdev);
                    let rec = super::pcap::decoded_record(
                        ev,
                        self.snapshot.as_deref(),
                        &mut self.renderer,
                        body,
                    );
                    self.ready.push_back(Item::Event(Box::new(rec)));
                }
                Err(e) => self.ready.push_back(Item::Notice(format!(
                    "skipping a malformed NFLOG message: {e}"
                ))),
            }
        }
    }

    /// Waits until the socket is readable (or a second passed).
    fn wait(&self) -> Result<(), Error> {
        self.sock
            .wait_readable(Duration::from_secs(1))
            .map_err(|e| Error::Socket(SocketError::Wait(e)))
    }
}

impl Source for Direct {
    fn next_item(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(Some(item));
            }
            match self.sock.recv(&mut self.buf) {
                Recv::Data(n) | Recv::Truncated(n) => {
                    let buf = std::mem::take(&mut self.buf);
                    self.handle_batch(&buf[..n]);
                    self.buf = buf;
                }
                Recv::Overrun => {
                    self.overruns += 1;
                    if self.overruns == 1 || self.overruns.is_power_of_two() {
                        self.ready.push_back(Item::Notice(format!(
                            "the kernel dropped NFLOG messages: the socket overran ({} times)",
                            self.overruns
                        )));
                    }
                }
                Recv::WouldBlock => self.wait()?,
            }
        }
    }
}
