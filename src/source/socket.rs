//! The NFLOG netlink socket: bind groups, configure the kernel side, receive batches.
//!
//! System calls through `rustix`: it checks every result, allocates nothing per message, and
//! hides neither `ENOBUFS` (an overrun) nor the full length `MSG_TRUNC` reports, both of which
//! this daemon must see to account for every message.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{netlink, sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use thiserror::Error;

use super::nflog::{self, Messages, Netlink, NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG};

const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULA_CFG_FLAGS: u16 = 6;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_UNBIND: u8 = 2;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULNL_CFG_F_SEQ: u16 = 1;
/// `include/uapi/linux/netfilter/nfnetlink_log.h` (2 is `NFULNL_CFG_F_SEQ_GLOBAL`).
const NFULNL_CFG_F_CONNTRACK: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const AF_UNSPEC: u8 = 0;

/// Kernel-side settings of one NFLOG instance (see `nfnetlink_log.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketTuning {
    /// Bytes of each packet copied to us (`NFULA_CFG_MODE`); the kernel caps it at 65531.
    pub copy_range: u32,
    /// Size of the kernel's batch buffer per instance (`NFULA_CFG_NLBUFSIZ`).
    pub nlbufsiz: u32,
    /// Messages the kernel queues before sending a batch (`NFULA_CFG_QTHRESH`).
    pub qthreshold: u32,
    /// Longest a message waits in the kernel, in 1/100 s (`NFULA_CFG_TIMEOUT`).
    pub timeout_cs: u32,
    /// Socket receive buffer, set with `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN).
    pub rcvbuf: usize,
    /// Ask the kernel to attach each packet's conntrack entry (`NFULNL_CFG_F_CONNTRACK`), which
    /// holds the original destination before kube-proxy's DNAT.
    pub conntrack: bool,
}

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("cannot open the NFLOG netlink socket (is this process root or does it have CAP_NET_ADMIN?)")]
    Open(#[source] io::Error),
    #[error("cannot set the NFLOG socket's receive buffer")]
    ReceiveBuffer(#[source] io::Error),
    #[error("NFLOG group {group} is already bound by another process in this network namespace (ulogd2, tcpdump -i nflog:{group}, another netpol-nflogd?); only one process can read a group")]
    GroupBusy { group: u16 },
    #[error("not allowed to bind NFLOG group {group}: run as root (or with CAP_NET_ADMIN)")]
    NotPermitted { group: u16 },
    #[error("the kernel refused to {what} for NFLOG group {group}")]
    Config {
        group: u16,
        what: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("no answer from the kernel while configuring NFLOG group {group}")]
    NoAnswer { group: u16 },
    #[error("cannot wait for NFLOG messages: {0}")]
    Wait(io::Error),
}

/// An `AF_NETLINK`/`NETLINK_NETFILTER` socket bound to one or more NFLOG groups.
pub struct NflogSocket {
    fd: OwnedFd,
    seq: u32,
    /// Batches that carried packet messages and arrived while we waited for an ACK.
    pending: Vec<Vec<u8>>,
    /// The receive buffer size the kernel actually granted (it doubles what is asked).
    pub rcvbuf_granted: usize,
    /// Whether the kernel attaches conntrack entries: asked for, and every group accepted it.
    pub conntrack: bool,
}

impl AsRawFd for NflogSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for NflogSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether some socket in this network namespace has bound `group`
/// (`/proc/net/netfilter/nfnetlink_log` lists one instance per line, the group first).
pub fn group_is_bound(group: u16) -> bool {
    std::fs::read_to_string("/proc/net/netfilter/nfnetlink_log").is_ok_and(|t| {
        t.lines().any(|l| {
            l.split_whitespace()
                .next()
                .and_then(|g| g.parse::<u16>().ok())
                == Some(group)
        })
    })
}

/// What one `recv()` produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// `n` bytes are in the buffer (a batch of netlink messages).
    Data(usize),
    /// The batch was larger than the buffer and its tail was cut off.
    Truncated(usize),
    /// Nothing is waiting.
    WouldBlock,
    /// The socket overran (`ENOBUFS`): the kernel dropped messages it could not queue.
    Overrun,
}

impl NflogSocket {
    /// Opens the socket and binds every group with the given tuning.
    pub fn open(groups: &[u16], tuning: &SocketTuning) -> Result<Self, SocketError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(netlink::NETFILTER),
        )
        .map_err(|e| SocketError::Open(e.into()))?;
        // Port ID 0: the kernel assigns one. No multicast groups: NFLOG sends unicast.
        rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))
            .map_err(|e| SocketError::Open(e.into()))?;
        let mut sock = NflogSocket {
            fd,
            seq: 0,
            pending: Vec::new(),
            rcvbuf_granted: 0,
            conntrack: tuning.conntrack,
        };
        sock.rcvbuf_granted = sock
            .set_rcvbuf(tuning.rcvbuf)
            .map_err(|e| SocketError::ReceiveBuffer(e.into()))?;
        for &group in groups {
            sock.configure(group, tuning)?;
        }
        Ok(sock)
    }

    /// Asks for a receive buffer with `SO_RCVBUFFORCE` (beyond `rmem_max`; needs
    /// CAP_NET_ADMIN), falling back to `SO_RCVBUF` (capped at `rmem_max`); returns what the
    /// kernel granted.
    fn set_rcvbuf(&self, bytes: usize) -> Result<usize, Errno> {
        let bytes = bytes.min(i32::MAX as usize);
        if sockopt::set_socket_recv_buffer_size_force(&self.fd, bytes).is_err() {
            sockopt::set_socket_recv_buffer_size(&self.fd, bytes)?;
        }
        sockopt::socket_recv_buffer_size(&self.fd)
    }

    fn configure(&mut self, group: u16, t: &SocketTuning) -> Result<(), SocketError> {
        self.bind_group(group)?;
        let mut mode = t.copy_range.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        let steps: [(&'static str, u16, Vec<u8>); 4] = [
            ("set the copy mode", NFULA_CFG_MODE, mode),
            (
                "set the buffer size",
                NFULA_CFG_NLBUFSIZ,
                t.nlbufsiz.to_be_bytes().to_vec(),
            ),
            (
                "set the queue threshold",
                NFULA_CFG_QTHRESH,
                t.qthreshold.to_be_bytes().to_vec(),
            ),
            (
                "set the flush timeout",
                NFULA_CFG_TIMEOUT,
                t.timeout_cs.to_be_bytes().to_vec(),
            ),
        ];
        for (what, attr, data) in steps {
            self.request(group, attr, &data)
                .map_err(|err| config_error(group, what, err))?;
        }
        self.set_flags(group)
    }

    /// Switches sequence numbers on, and conntrack entries when asked and available. The
    /// kernel answers `EOPNOTSUPP` when it has no netlink glue for conntrack
    /// (`nfnl_ct_hook` unset: `CONFIG_NETFILTER_NETLINK_GLUE_CT` off, or `nf_conntrack_netlink`
    /// not loaded), and `EAGAIN` once when asking made it load the module
    /// (`nfulnl_recv_config()`, net/netfilter/nfnetlink_log.c); then the daemon goes on without.
    fn set_flags(&mut self, group: u16) -> Result<(), SocketError> {
        for _ in 0..2 {
            if !self.conntrack {
                break;
            }
            let flags = NFULNL_CFG_F_SEQ | NFULNL_CFG_F_CONNTRACK;
            let err = match self.request(group, NFULA_CFG_FLAGS, &flags.to_be_bytes()) {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            match Errno::from_io_error(&err) {
                Some(Errno::AGAIN) => continue,
                Some(Errno::OPNOTSUPP) => self.conntrack = false,
                _ => {
                    return Err(config_error(
                        group,
                        "enable sequence numbers and conntrack",
                        err,
                    ))
                }
            }
        }
        self.conntrack = false;
        self.request(group, NFULA_CFG_FLAGS, &NFULNL_CFG_F_SEQ.to_be_bytes())
            .map_err(|err| config_error(group, "enable sequence numbers", err))
    }

    /// Binds one group: the one place that tells "another socket holds the group" from "this
    /// process may not bind it". `nfulnl_recv_config()` answers EPERM (older kernels EBUSY)
    /// when another socket owns the group (`inst->peer_portid != portid`), the same errno as a
    /// missing CAP_NET_ADMIN, so `/proc/net/netfilter/nfnetlink_log` tells the two apart.
    fn bind_group(&mut self, group: u16) -> Result<(), SocketError> {
        let err = match self.request(group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]) {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        Err(match Errno::from_io_error(&err) {
            Some(Errno::BUSY) => SocketError::GroupBusy { group },
            Some(Errno::PERM) if group_is_bound(group) => SocketError::GroupBusy { group },
            Some(Errno::PERM) => SocketError::NotPermitted { group },
            _ => config_error(group, "bind the group", err),
        })
    }

    /// Asks the kernel to unbind a group and returns the request's sequence number. The kernel
    /// flushes what it still holds for the group before it acknowledges, so once the ACK with
    /// this number shows up in the stream, every message of the group has been received.
    pub fn send_unbind(&mut self, group: u16) -> io::Result<u32> {
        self.send_request(group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_UNBIND])
    }

    /// Batches with packet messages that arrived while configuring; the reader handles them
    /// first so nothing received during set-up is dropped.
    pub fn take_pending(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.pending)
    }

    /// Sends one config message and waits for its ACK.
    fn request(&mut self, group: u16, attr: u16, data: &[u8]) -> io::Result<()> {
        let seq = self.send_request(group, attr, data)?;
        self.wait_ack(seq)
    }

    fn send_request(&mut self, group: u16, attr: u16, data: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = vec![0u8; nflog::NLMSG_HDRLEN];
        msg.extend_from_slice(&[AF_UNSPEC, 0]);
        msg.extend_from_slice(&group.to_be_bytes());
        nflog::build::attr(&mut msg, attr, data);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
        msg[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        // A netlink datagram goes whole or not at all.
        let sent = rustix::net::send(&self.fd, &msg, SendFlags::empty())?;
        if sent != msg.len() {
            return Err(io::Error::other(format!(
                "the kernel took {sent} of {} bytes of a config message",
                msg.len()
            )));
        }
        Ok(seq)
    }

    /// Reads until the ACK for `seq` arrives, keeping any packet batches seen meanwhile.
    fn wait_ack(&mut self, seq: u32) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no ACK"));
            }
            self.wait_readable(left)?;
            match self.recv(&mut buf) {
                Recv::Data(n) | Recv::Truncated(n) => {
                    let batch = &buf[..n];
                    if Messages::new(batch).any(|m| matches!(m, Ok(Netlink::Packet(_)))) {
                        self.pending.push(batch.to_vec());
                    }
                    for m in Messages::new(batch).flatten() {
                        if let Netlink::Error { errno, seq: s } = m {
                            if s == seq {
                                return if errno == 0 {
                                    Ok(())
                                } else {
                                    Err(io::Error::from_raw_os_error(-errno))
                                };
                            }
                        }
                    }
                }
                Recv::WouldBlock | Recv::Overrun => {}
            }
        }
    }

    /// Waits until a batch is waiting or `timeout` passed; a signal ends the wait early.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<()> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        // A timeout too large for a timespec waits without one.
        let timeout = Timespec::try_from(timeout).ok();
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// One non-blocking `recv()` into `buf`. Besides `EAGAIN` and `ENOBUFS`, `recv(2)` on a
    /// bound netlink socket with a valid buffer has no error to give (`EINTR` cannot happen
    /// with `MSG_DONTWAIT`); anything else would count as "nothing waiting".
    pub fn recv(&self, buf: &mut [u8]) -> Recv {
        // MSG_TRUNC: the second value is the batch's full length, even when it did not fit.
        match rustix::net::recv(&self.fd, &mut *buf, RecvFlags::TRUNC | RecvFlags::DONTWAIT) {
            Ok((n, full)) if full > n => Recv::Truncated(n),
            Ok((n, _)) => Recv::Data(n),
            Err(Errno::NOBUFS) => Recv::Overrun,
            Err(_) => Recv::WouldBlock,
        }
    }
}

/// A config step failed: no answer within the deadline, or the kernel's error.
fn config_error(group: u16, what: &'static str, err: io::Error) -> SocketError {
    if err.kind() == io::ErrorKind::TimedOut {
        SocketError::NoAnswer { group }
    } else {
        SocketError::Config { group, what, err }
    }
}
