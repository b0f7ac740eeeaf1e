//! The local event stream for `nflog-tail`: a Unix socket (root only, mode 0600) that streams
//! JSON records to any number of clients.
//!
//! Protocol: the client sends one line `{"last": N}`; the daemon answers with up to N recent
//! records from its ring, then live records, one JSON object per line. Each client has a bounded
//! queue: a slow client loses records and is told how many (`{"type":"lost","count":N}`); it
//! never slows the daemon.
//!
//! The `lost` record takes the place of the first record the client missed: it is queued as
//! soon as the queue has room again. The client's writer task, when it takes a record from a
//! queue that owes one, wakes the hub, which queues it then, so a client that stalled and
//! resumes hears of its loss at once, not with the next packet (which may come much later).

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};

use super::Chunk;
use crate::stats::Stats;

/// Records queued per client before it starts losing them.
const CLIENT_QUEUE: usize = 8192;

type Record = Arc<[u8]>;

struct Client {
    tx: mpsc::Sender<Record>,
    /// Records lost since the last `lost` record was queued.
    missed: u64,
    /// Set while `missed` > 0: the writer then wakes the hub each time it frees a slot.
    owed: Arc<AtomicBool>,
}

/// The other end of a [`Client`]: what its writer task reads.
struct Queue {
    rx: mpsc::Receiver<Record>,
    owed: Arc<AtomicBool>,
}

fn client(capacity: usize) -> (Client, Queue) {
    let (tx, rx) = mpsc::channel::<Record>(capacity);
    let owed = Arc::new(AtomicBool::new(false));
    let c = Client {
        tx,
        missed: 0,
        owed: owed.clone(),
    };
    (c, Queue { rx, owed })
}

/// Writes a client's records; when the queue owes a `lost` record, each record taken (a free
/// slot) wakes the hub to queue it.
async fn write_queue(mut q: Queue, room: Arc<Notify>, mut write: impl AsyncWrite + Unpin) {
    while let Some(rec) = q.rx.recv().await {
        if q.owed.load(SeqCst) {
            room.notify_one();
        }
        if write.write_all(&rec).await.is_err() {
            break;
        }
    }
}

/// The daemon's side: where the pipeline sends rendered records.
pub struct TailHandle {
    pub tx: mpsc::Sender<Chunk>,
    /// Connected clients; the pipeline renders tail records only when this is non-zero.
    pub clients: Arc<AtomicUsize>,
    pub path: PathBuf,
}

impl Drop for TailHandle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket and starts the hub; must run inside a tokio runtime.
pub fn spawn(path: &Path, ring: usize, stats: Arc<Stats>) -> io::Result<TailHandle> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by a previous run would make bind fail; nothing listens on it.
    if path.exists() && UnixStreamStd::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let clients = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let (join_tx, join_rx) = mpsc::channel::<(Client, usize)>(16);
    let room = Arc::new(Notify::new());
    tokio::spawn(hub(rx, join_rx, ring, clients.clone(), stats, room.clone()));
    tokio::spawn(accept(listener, join_tx, room));
    Ok(TailHandle {
        tx,
        clients,
        path: path.to_path_buf(),
    })
}

use std::os::unix::net::UnixStream as UnixStreamStd;

async fn accept(listener: UnixListener, join: mpsc::Sender<(Client, usize)>, room: Arc<Notify>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "tail socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let join = join.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            let last = read_request(read).await;
            let (c, queue) = client(CLIENT_QUEUE);
            if join.send((c, last)).await.is_err() {
                return;
            }
            write_queue(queue, room, write).await;
        });
    }
}

/// Reads `{"last": N}`; a client that says nothing within a second gets live records only.
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> usize {
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(4096);
    let got = tokio::time::timeout(Duration::from_secs(1), reader.read_line(&mut line)).await;
    if !matches!(got, Ok(Ok(n)) if n > 0) {
        return 0;
    }
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("last")?.as_u64())
        .unwrap_or(0) as usize
}

use tokio::io::AsyncReadExt as _;

async fn hub(
    mut rx: mpsc::Receiver<Chunk>,
    mut join: mpsc::Receiver<(Client, usize)>,
    ring_size: usize,
    count: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    room: Arc<Notify>,
) {
    let mut ring: VecDeque<Record> = VecDeque::with_capacity(ring_size.min(100_000));
    let mut clients: Vec<Client> = Vec::new();
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else { break };
                for line in chunk.data.split_inclusive(|&b| b == b'\n') {
                    let rec: Record = Arc::from(line);
                    if ring_size > 0 {
                        if ring.len() == ring_size {
                            ring.pop_front();
                        }
                        ring.push_back(rec.clone());
                    }
                    clients.retain_mut(|c| deliver(c, &rec, &stats));
                }
                count.store(clients.len(), Relaxed);
            }
            joined = join.recv() => {
                let Some((mut client, last)) = joined else { continue };
                let skip = ring.len().saturating_sub(last);
                for rec in ring.iter().skip(skip) {
                    // More history than the queue holds: the client hears how much it missed.
                    if client.tx.try_send(rec.clone()).is_err() {
                        missed(&mut client);
                    }
                }
                clients.push(client);
                count.store(clients.len(), Relaxed);
            }
            () = room.notified() => {
                // A writer freed a slot in a queue that owes a `lost` record.
                clients.retain_mut(|c| c.missed == 0 || send_lost(c) != Sent::Closed);
                count.store(clients.len(), Relaxed);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Yes,
    Full,
    Closed,
}

/// Counts a record the client lost.
fn missed(c: &mut Client) {
    c.missed += 1;
    c.owed.store(true, SeqCst);
}

/// Queues the `lost` record a client is owed.
fn send_lost(c: &mut Client) -> Sent {
    let note: Record =
        Arc::from(format!("{{\"type\":\"lost\",\"count\":{}}}\n", c.missed).as_bytes());
    match c.tx.try_send(note) {
        Ok(()) => {
            c.missed = 0;
            c.owed.store(false, SeqCst);
            Sent::Yes
        }
        Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
        Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
    }
}

/// Sends one record to a client; false when the client is gone.
fn deliver(c: &mut Client, rec: &Record, stats: &Stats) -> bool {
    if c.missed > 0 {
        match send_lost(c) {
            Sent::Yes => {}
            Sent::Full => {
                missed(c);
                stats.tail_dropped.fetch_add(1, Relaxed);
                return true;
            }
            Sent::Closed => return false,
        }
    }
    match c.tx.try_send(rec.clone()) {
        Ok(()) => {
            stats.tail_sent.fetch_add(1, Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            missed(c);
            stats.tail_dropped.fetch_add(1, Relaxed);
            // The writer may have freed a slot before it could see `owed`: then no wake-up
            // comes, so queue the note now.
            if c.tx.capacity() > 0 && send_lost(c) == Sent::Closed {
                return false;
            }
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A connected client, for tests and `nflog-tail`: sends the request line.
pub async fn connect(path: &Path, last: usize) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("{{\"last\":{last}}}\n").as_bytes())
        .await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A hub with one client whose reader has not read yet, and the reader's end.
    async fn stalled_client(capacity: usize) -> (mpsc::Sender<Chunk>, tokio::io::DuplexStream) {
        let (tx, rx) = mpsc::channel::<Chunk>(64);
        let (join_tx, join_rx) = mpsc::channel(16);
        let room = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(hub(rx, join_rx, 0, count.clone(), stats, room.clone()));
        let (c, queue) = client(capacity);
        // A pipe smaller than one record: the writer blocks until the reader reads.
        let (reader, writer) = tokio::io::duplex(8);
        tokio::spawn(write_queue(queue, room, writer));
        join_tx.send((c, 0)).await.unwrap();
        while count.load(Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        (tx, reader)
    }

    /// Reads lines until none came for `quiet`.
    async fn read_lines(r: &mut tokio::io::DuplexStream, quiet: Duration) -> Vec<String> {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, r.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(all)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn a_stalled_client_hears_of_its_losses_when_it_reads_again() {
        let (tx, mut reader) = stalled_client(4).await;
        let data: String = (0..10).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        tx.send(Chunk {
            data: data.into_bytes(),
            lines: 10,
            ..Default::default()
        })
        .await
        .unwrap();
        // No further event: the client reads what was queued, then the loss, at once.
        let lines = read_lines(&mut reader, Duration::from_millis(500)).await;
        let lost: Vec<&String> = lines.iter().filter(|l| l.contains("lost")).collect();
        assert_eq!(lost.len(), 1, "{lines:?}");
        let count: u64 = serde_json::from_str::<serde_json::Value>(lost[0]).unwrap()["count"]
            .as_u64()
            .unwrap();
        let records = lines.len() as u64 - 1;
        assert_eq!(records + count, 10, "{lines:?}");
        assert!(count > 0 && records >= 4, "{lines:?}");
        assert_eq!(
            lines.last(),
            Some(lost[0]),
            "the loss comes after the queued records"
        );

        // The next event follows, and nothing more is owed.
        tx.send(Chunk {
            data: b"{\"n\":10}\n".to_vec(),
            lines: 1,
            ..Default::default()
        })
        .await
        .unwrap();
        let lines = read_lines(&mut reader, Duration::from_millis(300)).await;
        assert_eq!(lines, ["{\"n\":10}"]);
    }
}
