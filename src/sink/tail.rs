//! The local event stream for `nflog-tail`: a Unix socket (root only, mode 0600) that streams
//! JSON records to any number of clients.
//!
//! Protocol: the client sends one line `{"last": N}`; the daemon answers with up to N recent
//! records from its ring, then live records, one JSON object per line. Each client has a bounded
//! queue: a slow client loses records and is told how many (`{"type":"lost","count":N}`); it
//! never slows the daemon.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::Chunk;
use crate::stats::Stats;

/// Records queued per client before it starts losing them.
const CLIENT_QUEUE: usize = 8192;

type Record = Arc<[u8]>;

struct Client {
    tx: mpsc::Sender<Record>,
    missed: u64,
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
    tokio::spawn(hub(rx, join_rx, ring, clients.clone(), stats));
    tokio::spawn(accept(listener, join_tx));
    Ok(TailHandle {
        tx,
        clients,
        path: path.to_path_buf(),
    })
}

use std::os::unix::net::UnixStream as UnixStreamStd;

async fn accept(listener: UnixListener, join: mpsc::Sender<(Client, usize)>) {
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
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let last = read_request(read).await;
            let (tx, mut rx) = mpsc::channel::<Record>(CLIENT_QUEUE);
            if join.send((Client { tx, missed: 0 }, last)).await.is_err() {
                return;
            }
            while let Some(rec) = rx.recv().await {
                if write.write_all(&rec).await.is_err() {
                    break;
                }
            }
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
                let Some((client, last)) = joined else { continue };
                let skip = ring.len().saturating_sub(last);
                for rec in ring.iter().skip(skip) {
                    let _ = client.tx.try_send(rec.clone());
                }
                clients.push(client);
                count.store(clients.len(), Relaxed);
            }
        }
    }
}

/// Sends one record to a client; false when the client is gone.
fn deliver(c: &mut Client, rec: &Record, stats: &Stats) -> bool {
    if c.missed > 0 {
        let note: Record =
            Arc::from(format!("{{\"type\":\"lost\",\"count\":{}}}\n", c.missed).as_bytes());
        match c.tx.try_send(note) {
            Ok(()) => c.missed = 0,
            Err(mpsc::error::TrySendError::Full(_)) => {
                c.missed += 1;
                stats.tail_dropped.fetch_add(1, Relaxed);
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    match c.tx.try_send(rec.clone()) {
        Ok(()) => {
            stats.tail_sent.fetch_add(1, Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            c.missed += 1;
            stats.tail_dropped.fetch_add(1, Relaxed);
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
