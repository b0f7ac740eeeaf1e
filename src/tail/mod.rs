//! `nflog-tail`: watch what the daemon sees, without taking the NFLOG group from it.
//!
//! Only one process per network namespace can bind an NFLOG group, so while `netpol-nflogd` runs
//! nobody else can read group 100. This module is the library behind the `nflog-tail` binary: it
//! reads events from one [`Source`] — the daemon's tail socket ([`client`]), the NFLOG group itself
//! ([`direct`], for nodes without the daemon), or a file ([`input`]: an NFLOG pcap, syslogemu
//! lines or JSON lines) — turns each into a [`Record`], keeps those the [`Filter`] accepts, and
//! prints them ([`output`]), writes them to a pcap ([`pcap`]) or shows them full-screen ([`tui`]).
//!
//! Every source yields the same owned [`Record`], so filters and outputs have one code path; the
//! NFLOG bytes travel along so a live stream can be saved as a pcap that tcpdump reads.

pub mod client;
pub mod direct;
pub mod filter;
pub mod input;
pub mod output;
pub mod pcap;
pub mod record;
pub mod replay;
pub mod tui;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;

use thiserror::Error;

pub use filter::Filter;
pub use output::{ColorChoice, OutputFormat};
pub use record::{Item, Record};

/// Everything that can stop `nflog-tail`.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad flags or filter expressions (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Socket(#[from] crate::source::socket::SocketError),
    #[error("{path}: {what}")]
    File { path: String, what: String },
    #[error("{path}: record {record} (byte offset {offset}): {what}")]
    Record {
        path: String,
        record: u64,
        offset: u64,
        what: String,
    },
    #[error("{path}: line {line}: {what}")]
    Line {
        path: String,
        line: u64,
        what: String,
    },
    #[error("cannot write {path}: {err}")]
    Write { path: String, err: io::Error },
    #[error("terminal: {0}")]
    Terminal(io::Error),
    /// Standard output was closed (e.g. `| head`): not a failure.
    #[error("standard output closed")]
    BrokenPipe,
}

impl Error {
    /// A fixed name per variant, for tests and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Connect(_) => "connect",
            Error::Socket(_) => "socket",
            Error::File { .. } => "file",
            Error::Record { .. } => "record",
            Error::Line { .. } => "line",
            Error::Write { .. } => "write",
            Error::Terminal(_) => "terminal",
            Error::BrokenPipe => "broken_pipe",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The daemon's tail socket.
    Daemon { path: PathBuf, reconnect: bool },
    /// Bind the NFLOG group directly (no daemon on this node).
    Direct { group: u16 },
    /// A pcap, syslogemu or JSON-lines file (`-` is standard input).
    File(PathBuf),
}

/// What `nflog-tail` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: SourceSpec,
    pub filter: Filter,
    /// `None`: the default (compact), or nothing at all when writing a pcap.
    pub format: Option<OutputFormat>,
    pub color: ColorChoice,
    /// Print the most recent N events first (daemon: from its ring; files: the last N).
    pub last: usize,
    /// Stop after this many matching events.
    pub count: Option<u64>,
    pub write: Option<PathBuf>,
    pub interactive: bool,
    /// Hostname in syslogemu lines rendered here (pcap, direct mode).
    pub hostname: String,
    /// Attribute events decoded here (pcap, direct mode) with this cluster snapshot.
    pub snapshot: Option<Snapshot>,
}

/// The attribution index of a cluster snapshot, in the lock the daemon's pipeline reads it
/// through (nothing writes it after loading).
pub type SnapshotIndex = std::sync::Arc<std::sync::RwLock<crate::attribute::index::Index>>;

/// A cluster snapshot (`--kube-snapshot`), shared by the sources that decode events.
#[derive(Clone)]
pub struct Snapshot {
    pub index: SnapshotIndex,
    /// The node the events come from (`--node`): the JSON's `node_name`.
    pub node: Option<String>,
}

impl Snapshot {
    pub fn new(index: crate::attribute::index::Index, node: Option<String>) -> Self {
        Snapshot {
            index: std::sync::Arc::new(std::sync::RwLock::new(index)),
            node,
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        write!(f, "Snapshot({:?})", index.counts())
    }
}

/// A stream of items: events and control messages.
pub trait Source: Send {
    /// The next item; `Ok(None)` at the end of a file (live sources never end).
    fn next_item(&mut self) -> Result<Option<Item>>;
}

/// Opens the source the options name.
pub fn open_source(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(match &opts.source {
        SourceSpec::Daemon { path, reconnect } => {
            Box::new(client::Client::new(path.clone(), opts.last, *reconnect))
        }
        SourceSpec::Direct { group } => Box::new(direct::Direct::open(
            *group,
            &opts.hostname,
            opts.snapshot.clone(),
        )?),
        SourceSpec::File(path) => input::open(path, &opts.hostname, opts.snapshot.clone())?,
    })
}

/// Runs `nflog-tail` to the end of its source (or forever, for live sources).
pub fn run(opts: Options) -> Result<()> {
    let source = open_source(&opts)?;
    if opts.interactive {
        return tui::run(source, &opts);
    }
    let stdout = io::stdout();
    let format = opts.format.or(if opts.write.is_some() {
        None
    } else {
        Some(OutputFormat::Compact)
    });
    let color = opts.color.enabled(io::IsTerminal::is_terminal(&stdout));
    let printer = format.map(|f| {
        output::Printer::new(
            stdout.lock(),
            f,
            color,
            io::IsTerminal::is_terminal(&stdout),
        )
    });
    let writer = match &opts.write {
        Some(path) => Some(pcap::Writer::create(path)?),
        None => None,
    };
    let mut sink = Printer {
        printer,
        writer,
        written: 0,
        events: 0,
        without_bytes: 0,
    };
    let result = pump(source, &opts, &mut sink);
    sink.finish();
    match result {
        Err(Error::BrokenPipe) => Ok(()),
        other => other,
    }
}

/// Where matching events go in line mode.
struct Printer<W: Write> {
    printer: Option<output::Printer<W>>,
    writer: Option<pcap::Writer>,
    /// pcap records written: one per NFLOG message.
    written: u64,
    /// Events with NFLOG bytes.
    events: u64,
    without_bytes: u64,
}

impl<W: Write> Printer<W> {
    /// Writes the pcap record first: once a line is printed, its packet is on disk.
    fn event(&mut self, rec: &Record) -> Result<()> {
        if let Some(w) = &mut self.writer {
            let n = w.write(rec)?;
            if n > 0 {
                self.written += n as u64;
                self.events += 1;
            } else {
                self.without_bytes += 1;
            }
        }
        if let Some(p) = &mut self.printer {
            p.print(rec)?;
        }
        Ok(())
    }

    fn control(&mut self, item: &Item) {
        if let Some(text) = output::control_text(item) {
            if let Some(p) = &mut self.printer {
                let _ = p.flush();
            }
            eprintln!("nflog-tail: {text}");
        }
    }

    fn finish(&mut self) {
        if let Some(p) = &mut self.printer {
            let _ = p.flush();
        }
        if let Some(w) = &self.writer {
            if self.without_bytes > 0 {
                eprintln!(
                    "nflog-tail: {} events carried no NFLOG bytes (syslogemu or daemon JSON files) and are not in {}",
                    self.without_bytes,
                    w.path()
                );
            }
            if self.written == self.events {
                eprintln!("nflog-tail: wrote {} packets to {}", self.written, w.path());
            } else {
                eprintln!(
                    "nflog-tail: wrote {} packets to {} (one per NFLOG message: {} events, some logged by several rules)",
                    self.written,
                    w.path(),
                    self.events
                );
            }
        }
    }
}

fn pump<W: Write>(
    mut source: Box<dyn Source>,
    opts: &Options,
    sink: &mut Printer<W>,
) -> Result<()> {
    let is_file = matches!(opts.source, SourceSpec::File(_));
    let mut tail: VecDeque<Record> = VecDeque::new();
    let mut matched = 0u64;
    while let Some(item) = source.next_item()? {
        let rec = match item {
            Item::Event(rec) => rec,
            other => {
                sink.control(&other);
                continue;
            }
        };
        if !opts.filter.matches(&rec) {
            continue;
        }
        if is_file && opts.last > 0 {
            // Files: --last keeps the last N matching events, printed at the end.
            if tail.len() == opts.last {
                tail.pop_front();
            }
            tail.push_back(*rec);
            continue;
        }
        sink.event(&rec)?;
        matched += 1;
        if opts.count.is_some_and(|c| matched >= c) {
            return Ok(());
        }
    }
    for rec in tail.iter().take(opts.count.unwrap_or(u64::MAX) as usize) {
        sink.event(rec)?;
    }
    Ok(())
}
