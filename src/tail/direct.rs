//! `--direct`: bind the NFLOG group ourselves, for nodes without the daemon.
//!
//! The same socket code as the daemon ([`NflogSocket`]), with a short flush timeout so events
//! show within 100 ms, and the daemon's own processing ([`Decoder`]: one event per packet, as the
//! daemon correlates them); interface names are resolved in this network namespace. Only one
//! process can bind a group, so this fails with
//! [`SocketError::GroupBusy`](crate::source::socket::SocketError::GroupBusy) while the daemon
//! (or ulogd2, or tcpdump) holds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::record::Item;
use super::replay::Decoder;
use super::{Error, Snapshot, Source};
use crate::attribute::ifname::IfNames;
use crate::event::Timestamp;
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
    /// Notices (overruns, malformed messages); events wait in the decoder.
    ready: VecDeque<Item>,
    decoder: Decoder,
    /// Kernel overruns not yet reported.
    overruns: u64,
}

impl Direct {
    /// Binds `group`; events are attributed with `snapshot` when there is one.
    pub fn open(group: u16, hostname: &str, snapshot: Option<Snapshot>) -> Result<Self, Error> {
        let mut sock = NflogSocket::open(&[group], &TUNING)?;
        let pending = sock.take_pending();
        let mut d = Direct {
            sock,
            buf: vec![0u8; 256 * 1024],
            ready: VecDeque::new(),
            decoder: Decoder::new(hostname, snapshot, IfNames::new()),
            overruns: 0,
        };
        for batch in pending {
            d.handle_batch(&batch);
        }
        Ok(d)
    }

    fn handle_batch(&mut self, batch: &[u8]) {
        // The processor counts malformed messages; here each is also said.
        for m in Messages::new(batch) {
            let bad = match m {
                Ok(Netlink::Packet(body)) => NflogMsg::parse(body).err().map(|e| e.to_string()),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = bad {
                self.ready.push_back(Item::Notice(format!(
                    "skipping a malformed NFLOG message: {e}"
                )));
            }
        }
        self.decoder.batch(batch, Timestamp::now());
    }

    /// Waits until the socket is readable, a second passed, or the packet being collected is
    /// due.
    fn wait(&self) -> Result<(), Error> {
        let due = self
            .decoder
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = due.map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1)));
        self.sock
            .wait_readable(timeout)
            .map_err(|e| Error::Socket(SocketError::Wait(e)))
    }
}

impl Source for Direct {
    fn next_item(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some(item) = self.ready.pop_front().or_else(|| self.decoder.next_ready()) {
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
                Recv::WouldBlock => {
                    self.decoder.expire(false);
                    if let Some(item) = self.decoder.next_ready() {
                        return Ok(Some(item));
                    }
                    self.wait()?
                }
            }
        }
    }
}
