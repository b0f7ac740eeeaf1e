//! The syslog sink: rendered syslog messages (`crate::render::syslog`, one per line) to a local
//! socket (`/dev/log`), UDP, TCP or TCP+TLS.
//!
//! In: [`Chunk`]s of complete messages, each ending in `\n`. Out: one datagram per message, or
//! a stream framed by RFC 6587 octet counting (`LEN SP MSG`, the default: it survives any byte
//! in MSG) or by newlines (what Fluent Bit's syslog input expects by default).
//!
//! A remote receiver goes away: restarts, network partitions. The sink must neither block the
//! pipeline nor lose messages silently, so it runs two threads:
//!
//! * the *receiver* drains the pipeline's channel into a bounded buffer (`buffer_messages`) and
//!   never does I/O; when the buffer is full it drops the newest messages and counts them in
//!   [`SinkStats::failed`];
//! * the *writer* connects as soon as the sink starts (so a receiver that is away, a name that
//!   does not resolve or a certificate that does not verify is a warning at start, naming the
//!   address and the error), sends from the buffer, and on an error reconnects with exponential
//!   backoff (100 ms doubling to 10 s), counting each failed attempt or lost connection in
//!   [`SinkStats::errors`]. It logs the loss and the recovery once each, not per message.
//!
//! Messages are taken out of the buffer only once the operating system accepted them, so a
//! message whose write failed is sent again on the next connection (at least once; plain TCP
//! syslog has no acknowledgements, so what the kernel had accepted for a receiver that then
//! died is lost, see `conn::Conn::peer_closed`). At shutdown the writer has a few seconds to
//! empty the buffer; what is left is counted as failed.

mod config;
mod conn;

pub use config::{Framing, RfcChoice, SyslogSinkConfig, SyslogTransport};

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Chunk, SinkHandle};
use crate::stats::SinkStats;
use config::parse_server_name;
use conn::{Conn, Target};

/// Why a syslog sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("cannot read the CA file {path}: {err}")]
    CaFile { path: PathBuf, err: io::Error },
    #[error("the CA file {0} holds no usable certificate")]
    NoCa(PathBuf),
    #[error("no system CA certificates found (set tls_ca_file)")]
    NoSystemRoots,
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Tls(rustls::Error),
}

impl SyslogError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SyslogError::CaFile { .. } => "ca_file",
            SyslogError::NoCa(_) => "no_ca",
            SyslogError::NoSystemRoots => "no_system_roots",
            SyslogError::ServerName(_) => "server_name",
            SyslogError::Tls(_) => "tls",
        }
    }
}

/// Timings, fixed in the daemon; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct SyslogTuning {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Bounds connecting, the TLS handshake and each write.
    pub io_timeout: Duration,
    /// After the pipeline closed the channel: how long the writer may still try to deliver.
    pub shutdown_grace: Duration,
}

impl Default for SyslogTuning {
    fn default() -> Self {
        SyslogTuning {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            io_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Starts the sink (the configuration must have passed [`SyslogSinkConfig::validate`]). Fails
/// only on a TLS setup it cannot use; the receiver being away is not an error.
pub fn spawn(cfg: &SyslogSinkConfig, stats: Arc<SinkStats>) -> Result<SinkHandle, SyslogError> {
    spawn_tuned(cfg, stats, SyslogTuning::default())
}

/// [`spawn`] with chosen timings.
pub fn spawn_tuned(
    cfg: &SyslogSinkConfig,
    stats: Arc<SinkStats>,
    tuning: SyslogTuning,
) -> Result<SinkHandle, SyslogError> {
    let target = target(cfg)?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
        capacity: cfg.buffer_messages.max(1) as u64,
        framing: cfg.framing,
        stats: stats.clone(),
        tuning,
    });
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let writer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("sink {} writer", stats.name))
            .spawn(move || Writer::new(shared, target).run())
            // Only fails when the process is out of threads or memory: nothing to recover.
            .expect("spawning a thread only fails when the process is out of resources")
    };
    let thread = std::thread::Builder::new()
        .name(format!("sink {}", stats.name))
        .spawn(move || receive(rx, &shared, writer))
        .expect("spawning a thread only fails when the process is out of resources");
    Ok(SinkHandle { tx, thread, stats })
}

fn target(cfg: &SyslogSinkConfig) -> Result<Target, SyslogError> {
    let address = cfg.address().to_string();
    Ok(match cfg.transport {
        SyslogTransport::Unix => Target::Unix(address.into()),
        SyslogTransport::Udp => Target::Udp(address),
        SyslogTransport::Tcp => Target::Tcp(address),
        SyslogTransport::Tls => {
            let name = cfg.server_name().unwrap_or_default();
            let server_name = parse_server_name(&name).ok_or(SyslogError::ServerName(name))?;
            Target::Tls {
                address,
                config: Arc::new(tls_config(cfg.tls_ca_file.as_deref())?),
                server_name,
            }
        }
    })
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, SyslogError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|err| SyslogError::CaFile {
                path: path.to_path_buf(),
                err,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                // A certificate rustls cannot parse is skipped; none at all is an error.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(SyslogError::NoCa(path.to_path_buf()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(SyslogError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SyslogError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// State shared by the receiver and the writer.
struct Shared {
    queue: Mutex<Queue>,
    /// Signals new messages and the end of input to the writer.
    wake: Condvar,
    capacity: u64,
    framing: Framing,
    stats: Arc<SinkStats>,
    tuning: SyslogTuning,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Pending>,
    /// Messages not yet sent, including those of the chunk the writer is working on.
    messages: u64,
    /// The pipeline closed the channel: send what is left, then stop.
    closed: bool,
    /// A full buffer was reported; cleared when the receiver comes back.
    full_reported: bool,
}

/// Rendered messages, and where the unsent ones start.
struct Pending {
    data: Vec<u8>,
    pos: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Neither thread panics while holding the lock; if one did, the counts are still
        // consistent enough to go on.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `n` messages as handed to the operating system.
    fn sent(&self, n: u64) {
        if n > 0 {
            self.lock().messages -= n;
            self.stats.written.fetch_add(n, Relaxed);
        }
    }

    /// Marks `n` messages as lost.
    fn lost(&self, n: u64) {
        if n > 0 {
            self.lock().messages -= n;
            self.stats.failed.fetch_add(n, Relaxed);
        }
    }
}

/// Messages (non-empty lines) in `data`.
fn count_messages(data: &[u8]) -> u64 {
    data.split(|&b| b == b'\n')
        .filter(|m| !m.is_empty())
        .count() as u64
}

/// The byte length of the first `n` messages of `data`, with their newlines.
fn first_messages_len(data: &[u8], n: u64) -> usize {
    if n == 0 {
        return 0;
    }
    let mut seen = 0;
    let mut in_msg = false;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            if in_msg {
                seen += 1;
                in_msg = false;
                if seen == n {
                    return i + 1;
                }
            }
        } else {
            in_msg = true;
        }
    }
    data.len()
}

/// The receiver thread: channel → buffer, never waiting on I/O.
fn receive(mut rx: mpsc::Receiver<Chunk>, shared: &Shared, writer: std::thread::JoinHandle<()>) {
    let st = &shared.stats;
    while let Some(mut chunk) = rx.blocking_recv() {
        let n = count_messages(&chunk.data);
        if n == 0 {
            continue;
        }
        let mut q = shared.lock();
        let room = shared.capacity.saturating_sub(q.messages);
        let keep = n.min(room);
        if keep < n {
            st.failed.fetch_add(n - keep, Relaxed);
            if !q.full_reported {
                q.full_reported = true;
                tracing::warn!(
                    sink = %st.name,
                    buffered = q.messages,
                    "syslog buffer full: dropping new messages (counted as failed) until the receiver is back"
                );
            }
            chunk.data.truncate(first_messages_len(&chunk.data, keep));
        }
        if keep > 0 {
            q.messages += keep;
            q.chunks.push_back(Pending {
                data: chunk.data,
                pos: 0,
            });
            shared.wake.notify_one();
        }
    }
    shared.lock().closed = true;
    shared.wake.notify_one();
    if writer.join().is_err() {
        tracing::error!(sink = %st.name, "syslog writer thread panicked");
    }
}

/// The writer thread: buffer → connection, reconnecting as needed.
struct Writer {
    shared: Arc<Shared>,
    target: Target,
    conn: Option<Conn>,
    backoff: Duration,
    /// When the current outage began (`None` while connected or before the first attempt).
    outage: Option<Outage>,
    /// Set once the channel closed: after this, a lost receiver is not waited for.
    deadline: Option<Instant>,
    /// Framed bytes for one stream write, reused.
    wbuf: Vec<u8>,
    last_oversize_report: Option<Instant>,
}

struct Outage {
    since: Instant,
    failed_before: u64,
}

/// Bytes framed per stream write: large writes, bounded re-sending after an error.
const WRITE_BATCH: usize = 64 * 1024;

impl Writer {
    fn new(shared: Arc<Shared>, target: Target) -> Self {
        Writer {
            backoff: shared.tuning.backoff_min,
            shared,
            target,
            conn: None,
            outage: None,
            deadline: None,
            wbuf: Vec::new(),
            last_oversize_report: None,
        }
    }

    fn name(&self) -> &str {
        &self.shared.stats.name
    }

    fn run(mut self) {
        // Connect at once rather than at the first message, so that an unreachable receiver,
        // a name that does not resolve or a certificate that does not verify is reported when
        // the daemon starts, not at the first dropped packet (which may come hours later).
        self.connect();
        while let Some(mut p) = self.next_chunk() {
            if self.conn.is_none() && self.past_deadline() {
                self.give_up(p);
                break;
            }
            if self.conn.is_none() && !self.connect() {
                self.requeue(p);
                self.sleep_backoff();
                continue;
            }
            // An error means the connection is unusable: reconnect and send the rest again.
            if let Err(e) = self.send(&mut p) {
                self.conn = None;
                self.connection_lost(&e);
                self.requeue(p);
                self.sleep_backoff();
            }
        }
    }

    /// Waits for a chunk; `None` once the input is closed and everything was handled.
    fn next_chunk(&mut self) -> Option<Pending> {
        let mut q = self.shared.lock();
        loop {
            if q.closed && self.deadline.is_none() {
                self.deadline = Some(Instant::now() + self.shared.tuning.shutdown_grace);
            }
            if let Some(p) = q.chunks.pop_front() {
                return Some(p);
            }
            if q.closed {
                return None;
            }
            q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn requeue(&self, p: Pending) {
        self.shared.lock().chunks.push_front(p);
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Shutdown with the receiver still away: what is left is lost, and counted.
    fn give_up(&mut self, p: Pending) {
        let mut q = self.shared.lock();
        q.chunks.push_front(p);
        let left: u64 = q
            .chunks
            .drain(..)
            .map(|p| count_messages(&p.data[p.pos..]))
            .sum();
        q.messages = 0;
        drop(q);
        self.shared.stats.failed.fetch_add(left, Relaxed);
        tracing::error!(
            sink = %self.name(),
            lost = left,
            lines_lost_so_far = self.shared.stats.failed.load(Relaxed),
            "shutting down before the syslog receiver came back; buffered messages counted as lost"
        );
    }

    fn connect(&mut self) -> bool {
        match self.target.connect(self.shared.tuning.io_timeout) {
            Ok(c) => {
                self.conn = Some(c);
                let st = &self.shared.stats;
                match self.outage.take() {
                    Some(o) => {
                        tracing::info!(
                            sink = %st.name,
                            after_s = o.since.elapsed().as_secs_f32(),
                            dropped = st.failed.load(Relaxed) - o.failed_before,
                            "syslog receiver reachable again"
                        );
                    }
                    _ => tracing::info!(sink = %st.name, "connected to the syslog receiver"),
                }
                self.shared.lock().full_reported = false;
                true
            }
            Err(e) => {
                self.shared.stats.errors.fetch_add(1, Relaxed);
                if self.outage.is_none() {
                    self.start_outage();
                    tracing::warn!(
                        sink = %self.name(),
                        address = %self.target.address(),
                        error = %e,
                        buffer_messages = self.shared.capacity,
                        "cannot connect to the syslog receiver; buffering up to buffer_messages \
                         messages and retrying (backoff up to {} s); what is still buffered at \
                         shutdown is lost and counted as failed",
                        self.shared.tuning.backoff_max.as_secs()
                    );
                } else {
                    tracing::debug!(sink = %self.name(), error = %e, "syslog reconnection failed");
                }
                false
            }
        }
    }

    fn start_outage(&mut self) {
        self.outage = Some(Outage {
            since: Instant::now(),
            failed_before: self.shared.stats.failed.load(Relaxed),
        });
    }

    fn connection_lost(&mut self, e: &io::Error) {
        self.shared.stats.errors.fetch_add(1, Relaxed);
        self.start_outage();
        tracing::warn!(
            sink = %self.name(),
            error = %e,
            buffer_messages = self.shared.capacity,
            "lost the syslog receiver; buffering and reconnecting"
        );
    }

    /// Waits the current backoff (cut short by shutdown only when past the deadline), then
    /// doubles it.
    fn sleep_backoff(&mut self) {
        let until = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.shared.tuning.backoff_max);
        let mut q = self.shared.lock();
        loop {
            let now = Instant::now();
            let until = match self.deadline {
                Some(d) => until.min(d),
                None => until,
            };
            if now >= until {
                return;
            }
            if q.closed && self.deadline.is_none() {
                self.deadline = Some(now + self.shared.tuning.shutdown_grace);
                continue;
            }
            q = match self.shared.wake.wait_timeout(q, until - now) {
                Ok((q, _)) => q,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Sends the unsent messages of `p`, advancing `p.pos` past each one the OS accepted. An
    /// error means the connection is unusable.
    fn send(&mut self, p: &mut Pending) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if conn.peer_closed() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the receiver closed the connection",
            ));
        }
        let datagram = self.target.is_datagram();
        while p.pos < p.data.len() {
            let (mut sent, mut lost) = (0u64, 0u64);
            let result = if datagram {
                send_datagrams(
                    conn,
                    p,
                    &mut sent,
                    &mut lost,
                    &mut self.last_oversize_report,
                    &self.shared.stats.name,
                )
            } else {
                send_stream(conn, p, self.shared.framing, &mut self.wbuf, &mut sent)
            };
            self.shared.sent(sent);
            self.shared.lost(lost);
            if sent > 0 {
                // The connection carried messages: the next outage starts from a short wait.
                self.backoff = self.shared.tuning.backoff_min;
            }
            result?;
        }
        Ok(())
    }
}

/// Up to 256 messages of `p` as datagrams. A message too large for a datagram is dropped and
/// counted; any other error leaves `p.pos` at the message that failed.
fn send_datagrams(
    conn: &mut Conn,
    p: &mut Pending,
    sent: &mut u64,
    lost: &mut u64,
    last_report: &mut Option<Instant>,
    name: &str,
) -> io::Result<()> {
    for _ in 0..256 {
        let rest = &p.data[p.pos..];
        if rest.is_empty() {
            break;
        }
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let next = p.pos + (end + 1).min(rest.len());
        if end == 0 {
            p.pos = next;
            continue;
        }
        // No trailer in a datagram (RFC 5426 §3.1): the datagram is the message.
        match conn.send_datagram(&rest[..end]) {
            Ok(()) => *sent += 1,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error()) => {
                *lost += 1;
                if !matches!(last_report, Some(t) if t.elapsed() <= Duration::from_secs(10)) {
                    *last_report = Some(Instant::now());
                    tracing::warn!(sink = %name, bytes = end, "syslog message too large for a datagram; dropped");
                }
            }
            Err(e) => return Err(e),
        }
        p.pos = next;
    }
    Ok(())
}

/// Frames messages of `p` into `wbuf` up to [`WRITE_BATCH`] bytes and writes them at once; on
/// an error `p.pos` stays at the first message of the batch, to be sent again.
fn send_stream(
    conn: &mut Conn,
    p: &mut Pending,
    framing: Framing,
    wbuf: &mut Vec<u8>,
    sent: &mut u64,
) -> io::Result<()> {
    wbuf.clear();
    let mut pos = p.pos;
    let mut n = 0u64;
    while pos < p.data.len() && wbuf.len() < WRITE_BATCH {
        let rest = &p.data[pos..];
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        pos += (end + 1).min(rest.len());
        if end == 0 {
            continue;
        }
        let msg = &rest[..end];
        match framing {
            Framing::OctetCounting => {
                crate::render::push_u64(wbuf, msg.len() as u64);
                wbuf.push(b' ');
                wbuf.extend_from_slice(msg);
            }
            Framing::Newline => {
                wbuf.extend_from_slice(msg);
                wbuf.push(b'\n');
            }
        }
        n += 1;
    }
    if !wbuf.is_empty() {
        conn.write_stream(wbuf)?;
    }
    p.pos = pos;
    *sent += n;
    Ok(())
}

#[cfg(test)]
mod tests;
