//! `--direct`: bind the NFLOG group ourselves, for nodes without the daemon.
//!
//! The same socket code as the daemon ([`NflogSocket`]), with a short flush timeout so events
//! show within 100 ms, and the daemon's decoder and renderers; interface names are resolved in
//! this network namespace. Only one process can bind a group, so this fails with
//! [`SocketError::GroupBusy`](crate::source::socket::SocketError::GroupBusy) while the daemon
//! (or ulogd2, or tcpdump) holds it.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::pcap::event;
use super::record::{Item, Record};
use super::{Error, Source};
use crate::attribute::ifname::IfNames;
use crate::event::Timestamp;
use crate::render::Renderer;
use crate::source::nflog::{Messages, Netlink, NflogMsg};
use crate::source::socket::{NflogSocket, Recv, SocketError, Tuning};

const TUNING: Tuning = Tuning {
    copy_range: 65535,
    nlbufsiz: 131_072,
    qthreshold: 64,
    timeout_cs: 10,
    rcvbuf: 8 << 20,
};

pub struct Direct {
    sock: NflogSocket,
    buf: Vec<u8>,
    ready: VecDeque<Item>,
    renderer: Renderer,
    ifnames: IfNames,
    /// Kernel overruns not yet reported.
    overruns: u64,
}

impl Direct {
    pub fn open(group: u16, hostname: &str) -> Result<Self, Error> {
        let mut sock = NflogSocket::open(&[group], &TUNING).map_err(explain)?;
        let pending = sock.take_pending();
        let mut d = Direct {
            sock,
            buf: vec![0u8; 256 * 1024],
            ready: VecDeque::new(),
            renderer: Renderer::new(hostname, hostname),
            ifnames: IfNames::new(),
            overruns: 0,
        };
        for batch in pending {
            d.handle_batch(&batch);
        }
        Ok(d)
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
                    let rec = Record::from_event(&ev, &mut self.renderer, body);
                    self.ready.push_back(Item::Event(Box::new(rec)));
                }
                Err(e) => self.ready.push_back(Item::Notice(format!(
                    "skipping a malformed NFLOG message: {e}"
                ))),
            }
        }
    }

    /// Waits until the socket is readable (or a second passed).
    fn wait(&self) {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
    }
}

/// The kernel answers a bind of a group another socket holds with EPERM, not EBUSY
/// (`nfnetlink_log.c`, `nfulnl_recv_config`: `inst->peer_portid != portid` → `-EPERM`), the
/// same errno as a missing CAP_NET_ADMIN. `/proc` tells the two apart.
fn explain(e: SocketError) -> Error {
    match e {
        SocketError::Config { group, ref err, .. } if err.raw_os_error() == Some(libc::EPERM) => {
            if group_bound(group) {
                Error::Socket(SocketError::GroupBusy { group })
            } else {
                Error::Connect(format!(
                    "not allowed to bind NFLOG group {group}: run as root (or with CAP_NET_ADMIN)"
                ))
            }
        }
        other => Error::Socket(other),
    }
}

/// Whether `/proc/net/netfilter/nfnetlink_log` lists the group (someone has bound it).
pub fn group_bound(group: u16) -> bool {
    std::fs::read_to_string("/proc/net/netfilter/nfnetlink_log").is_ok_and(|t| {
        t.lines().any(|l| {
            l.split_whitespace()
                .next()
                .and_then(|g| g.parse::<u16>().ok())
                == Some(group)
        })
    })
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
                Recv::WouldBlock => self.wait(),
            }
        }
    }
}
