//! The NFLOG netlink socket: bind groups, configure the kernel side, receive batches.
//!
//! Written on `libc` directly: the socket is six system calls, and the crates that wrap them
//! either allocate per message or hide `ENOBUFS`/`MSG_TRUNC`, which this daemon must see to
//! account for every message.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

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

/// Kernel-side settings of one NFLOG instance (see `nfnetlink_log.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
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
}

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("cannot open the NFLOG netlink socket (is this process root or does it have CAP_NET_ADMIN?)")]
    Open(#[source] io::Error),
    #[error("NFLOG group {group} is already bound by another process in this network namespace (ulogd2, tcpdump -i nflog:{group}, another netpol-nflogd?); only one process can read a group")]
    GroupBusy { group: u16 },
    #[error("the kernel refused to {what} for NFLOG group {group}")]
    Config {
        group: u16,
        what: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("no answer from the kernel while configuring NFLOG group {group}")]
    NoAnswer { group: u16 },
}

/// An `AF_NETLINK`/`NETLINK_NETFILTER` socket bound to one or more NFLOG groups.
pub struct NflogSocket {
    fd: OwnedFd,
    seq: u32,
    /// Batches that carried packet messages and arrived while we waited for an ACK.
    pending: Vec<Vec<u8>>,
    /// The receive buffer size the kernel actually granted (it doubles what is asked).
    pub rcvbuf_granted: usize,
}

impl AsRawFd for NflogSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Whether some socket in this network namespace has bound `group`
/// (`/proc/net/netfilter/nfnetlink_log` lists one instance per line, the group first).
pub fn group_is_bound(group: u16) -> bool {
    std::fs::read_to_string("/proc/net/netfilter/nfnetlink_log")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().next() == Some(&group.to_string()))
        })
        .unwrap_or(false)
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
    pub fn open(groups: &[u16], tuning: &Tuning) -> Result<Self, SocketError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(SocketError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(SocketError::Open(io::Error::last_os_error()));
        }
        let mut sock = NflogSocket {
            fd,
            seq: 0,
            pending: Vec::new(),
            rcvbuf_granted: 0,
        };
        sock.rcvbuf_granted = sock.set_rcvbuf(tuning.rcvbuf);
        for &group in groups {
            sock.configure(group, tuning)?;
        }
        Ok(sock)
    }

    /// Asks for a receive buffer with `SO_RCVBUFFORCE` (beyond `rmem_max`), falling back to
    /// `SO_RCVBUF`; returns what the kernel granted.
    fn set_rcvbuf(&self, bytes: usize) -> usize {
        let val = bytes.min(i32::MAX as usize) as libc::c_int;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: val is a c_int that outlives the call.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &val as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if rc == 0 {
                break;
            }
        }
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as u32;
        // SAFETY: got/len are valid for writing.
        unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &mut got as *mut _ as *mut libc::c_void,
                &mut len,
            );
        }
        got.max(0) as usize
    }

    fn configure(&mut self, group: u16, t: &Tuning) -> Result<(), SocketError> {
        let mut mode = t.copy_range.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        let steps: [(&'static str, u16, Vec<u8>); 6] = [
            ("bind the group", NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND]),
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
            (
                "enable sequence numbers",
                NFULA_CFG_FLAGS,
                NFULNL_CFG_F_SEQ.to_be_bytes().to_vec(),
            ),
        ];
        for (what, attr, data) in steps {
            match self.request(group, attr, &data) {
                Ok(()) => {}
                // nfulnl_recv_config() answers EPERM (older kernels EBUSY) when another socket
                // owns the group; EPERM also means "no CAP_NET_ADMIN", so look the group up.
                Err(err)
                    if attr == NFULA_CFG_CMD
                        && (err.raw_os_error() == Some(libc::EBUSY)
                            || (err.raw_os_error() == Some(libc::EPERM)
                                && group_is_bound(group))) =>
                {
                    return Err(SocketError::GroupBusy { group });
                }
                Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                    return Err(SocketError::NoAnswer { group });
                }
                Err(err) => return Err(SocketError::Config { group, what, err }),
            }
        }
        Ok(())
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
        msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        msg.extend_from_slice(&group.to_be_bytes());
        nflog::build::attr(&mut msg, attr, data);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
        msg[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        // SAFETY: msg is a valid buffer of the given length.
        let rc = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
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
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is valid for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(5000) as i32) };
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

    /// One non-blocking `recv()` into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> Recv {
        // SAFETY: buf is valid for writing buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOBUFS) => Recv::Overrun,
                _ => Recv::WouldBlock,
            };
        }
        let n = n as usize;
        if n > buf.len() {
            Recv::Truncated(buf.len())
        } else {
            Recv::Data(n)
        }
    }
}
