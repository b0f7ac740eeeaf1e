//! Sinks: where rendered lines go. Each sink runs on its own thread, owns its I/O and its
//! failures, and receives whole chunks of lines so writes are large.
//!
//! A chunk carries its line count, so a failed write is accounted in lines: nothing is lost
//! without being counted. The channel into a sink is bounded: a sink that cannot keep up slows
//! the reader, which lets the kernel socket overrun, which the sequence numbers then account for.

pub mod events;
pub mod file;
pub mod syslog;
pub mod tail;

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::stats::SinkStats;

/// Rendered lines and how many there are.
#[derive(Debug, Default)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub lines: u64,
    /// Each line's event time (the kernel's timestamp, or when the message was received), in
    /// microseconds since the epoch: the sink measures how late the line was written.
    pub times: Vec<i64>,
}

/// A write that failed after `complete` bytes, all whole lines, reached their destination.
#[derive(Debug)]
pub struct WriteError {
    pub err: io::Error,
    pub complete: usize,
}

impl WriteError {
    pub fn new(err: io::Error) -> Self {
        WriteError { err, complete: 0 }
    }
}

/// Writes `data` with as many `write` calls as it takes; on failure, returns how many bytes got
/// through (a cut line included).
pub fn write_counting(w: &mut impl Write, data: &[u8]) -> Result<(), (io::Error, usize)> {
    let mut done = 0;
    while done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, done)),
        }
    }
    Ok(())
}

/// The length of the whole lines at the start of `data[..written]`.
pub fn whole_lines(data: &[u8], written: usize) -> usize {
    data[..written.min(data.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

/// The I/O side of a sink.
pub trait Output: Send {
    /// Writes whole lines. On failure, reports how many bytes of whole lines were written; an
    /// output that can (a file) removes the cut line it may have left behind.
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), WriteError>;
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
    reopen: Arc<AtomicU64>,
) -> SinkHandle {
    let (tx, mut rx) = mpsc::channel::<Chunk>(64);
    let st = stats.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sink {}", stats.name))
        .spawn(move || {
            let mut dead = false;
            let mut last_report = Instant::now() - Duration::from_secs(60);
            // SIGHUP bumps a shared generation; each sink reopens once per bump it sees.
            let mut generation = reopen.load(Relaxed);
            while let Some(chunk) = rx.blocking_recv() {
                let now = reopen.load(Relaxed);
                if now != generation {
                    generation = now;
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
                        st.observe_latency(&chunk.times);
                    }
                    Err(WriteError { err: e, complete }) => {
                        let ok = chunk.data[..complete]
                            .iter()
                            .filter(|&&b| b == b'\n')
                            .count() as u64;
                        st.written.fetch_add(ok, Relaxed);
                        st.failed.fetch_add(chunk.lines.saturating_sub(ok), Relaxed);
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
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), WriteError> {
        // Straight to fd 1, bypassing std's line buffer, so a failure says exactly how much of
        // the chunk the pipe took.
        let mut out = io::stdout().lock();
        out.flush().map_err(WriteError::new)?;
        let mut raw = RawStdout;
        write_counting(&mut raw, data).map_err(|(err, n)| WriteError {
            err,
            complete: whole_lines(data, n),
        })
    }

    fn is_permanent(&self, err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::BrokenPipe
    }
}

/// File descriptor 1, written with write(2) directly.
struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(io::stdout(), buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    /// Accepts `cap` bytes, then fails like a full disk.
    struct Full {
        cap: usize,
        got: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.cap - self.got.len()).min(7);
            if n == 0 {
                return Err(Errno::NOSPC.into());
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_count_whole_lines() {
        let data = b"line one\nline two\nline three\n";
        let mut w = Full {
            cap: 15,
            got: Vec::new(),
        };
        let (err, n) = write_counting(&mut w, data).unwrap_err();
        assert_eq!(Errno::from_io_error(&err), Some(Errno::NOSPC));
        assert_eq!(n, 15);
        assert_eq!(whole_lines(data, n), 9, "only \"line one\\n\" is whole");
        let mut ok = Full {
            cap: 100,
            got: Vec::new(),
        };
        write_counting(&mut ok, data).unwrap();
        assert_eq!(ok.got, data);
    }
}
