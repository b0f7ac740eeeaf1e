//! Sinks: where rendered lines go. Each sink runs on its own thread, owns its I/O and its
//! failures, and receives whole chunks of lines so writes are large.
//!
//! A chunk carries its line count, so a failed write is accounted in lines: nothing is lost
//! without being counted. The channel into a sink is bounded: a sink that cannot keep up slows
//! the reader, which lets the kernel socket overrun, which the sequence numbers then account for.

pub mod file;
pub mod syslog;
pub mod tail;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::stats::SinkStats;

/// Rendered lines and how many there are.
#[derive(Debug, Default)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub lines: u64,
}

/// The I/O side of a sink.
pub trait Output: Send {
    fn write_chunk(&mut self, data: &[u8]) -> io::Result<()>;
    /// Called after SIGHUP (log rotation).
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A failure after which writing again is pointless (a closed pipe).
    fn is_permanent(&self, _err: &io::Error) -> bool {
        false
    }
}

/// A running sink: the sending side and its thread.
pub struct SinkHandle {
    pub tx: mpsc::Sender<Chunk>,
    pub thread: std::thread::JoinHandle<()>,
    pub stats: Arc<SinkStats>,
}

/// Starts a sink thread writing to `output`.
pub fn spawn(
    mut output: Box<dyn Output>,
    stats: Arc<SinkStats>,
    reopen: Arc<AtomicBool>,
) -> SinkHandle {
    let (tx, mut rx) = mpsc::channel::<Chunk>(64);
    let st = stats.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sink {}", stats.name))
        .spawn(move || {
            let mut dead = false;
            let mut last_report = Instant::now() - Duration::from_secs(60);
            while let Some(chunk) = rx.blocking_recv() {
                if reopen.swap(false, Relaxed) {
                    if let Err(e) = output.reopen() {
                        tracing::error!(sink = %st.name, error = %e, "cannot reopen");
                    }
                }
                if dead {
                    st.failed.fetch_add(chunk.lines, Relaxed);
                    continue;
                }
                match output.write_chunk(&chunk.data) {
                    Ok(()) => {
                        st.written.fetch_add(chunk.lines, Relaxed);
                    }
                    Err(e) => {
                        st.failed.fetch_add(chunk.lines, Relaxed);
                        st.errors.fetch_add(1, Relaxed);
                        dead = output.is_permanent(&e);
                        // One report per 10 s, with the running total, so a full disk cannot
                        // flood the daemon's own log.
                        if dead || last_report.elapsed() > Duration::from_secs(10) {
                            last_report = Instant::now();
                            tracing::error!(
                                sink = %st.name,
                                error = %e,
                                lines_lost_so_far = st.failed.load(Relaxed),
                                "write failed; lines counted as lost{}",
                                if dead { ", sink disabled" } else { ", will retry" }
                            );
                        }
                    }
                }
            }
        })
        .expect("spawning a thread only fails when the process is out of resources");
    SinkHandle { tx, thread, stats }
}

/// Standard output. A closed pipe disables it (counted), it never kills the daemon.
pub struct Stdout;

impl Output for Stdout {
    fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(data)?;
        out.flush()
    }

    fn is_permanent(&self, err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::BrokenPipe
    }
}
