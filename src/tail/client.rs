//! The daemon's tail socket: connect, ask for the last N events, read JSON lines forever.
//!
//! Protocol (served by `netpol-nflogd --tail-socket`): the client sends one line
//! `{"last": N}`; the daemon answers with up to N recent events, then live ones, one JSON object
//! per line, and control records (`{"type":"lost",…}`, `{"type":"suppressed",…}`).
//!
//! When the daemon is away (not started yet, restarting) the client says so once and retries
//! with a growing delay, so `nflog-tail` can be left running across daemon restarts.

use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::input::{read_line_capped, skip_line, LineRead, MAX_JSON_LINE};
use super::record::Item;
use super::{Error, Source};

/// The daemon's default socket.
pub const DEFAULT_SOCKET: &str = "/run/netpol-nflog/tail.sock";
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);

pub struct Client {
    path: PathBuf,
    last: usize,
    reconnect: bool,
    conn: Option<BufReader<UnixStream>>,
    delay: Duration,
    /// Whether "not reachable" was said and "connected" is owed.
    announced: bool,
    connected_once: bool,
    notices: VecDeque<Item>,
    line: Vec<u8>,
    /// How many records were skipped as malformed (said once).
    skipped: u64,
}

impl Client {
    pub fn new(path: PathBuf, last: usize, reconnect: bool) -> Self {
        Client {
            path,
            last,
            reconnect,
            conn: None,
            delay: FIRST_DELAY,
            announced: false,
            connected_once: false,
            notices: VecDeque::new(),
            line: Vec::new(),
            skipped: 0,
        }
    }

    /// One line on why the socket cannot be used, and what to do.
    pub fn explain(&self, e: &io::Error) -> String {
        let p = self.path.display();
        match e.kind() {
            io::ErrorKind::NotFound => format!(
                "no daemon socket at {p}: is netpol-nflogd running (with --tail-socket {p})? On a node without the daemon use --direct"
            ),
            io::ErrorKind::PermissionDenied => format!("permission denied on {p}: the tail socket is root-only (mode 0600); run nflog-tail as root"),
            io::ErrorKind::ConnectionRefused => format!("nothing listens on {p} (a stale socket): is netpol-nflogd running?"),
            _ => format!("cannot connect to {p}: {e}"),
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let mut stream = UnixStream::connect(&self.path)?;
        // After a reconnect, the ring holds events already shown (or from before a restart).
        let last = if self.connected_once { 0 } else { self.last };
        stream.write_all(format!("{{\"last\":{last}}}\n").as_bytes())?;
        self.conn = Some(BufReader::with_capacity(256 * 1024, stream));
        Ok(())
    }

    /// Connects, retrying with back-off when reconnecting is allowed.
    fn ensure_connected(&mut self) -> Result<(), Error> {
        while self.conn.is_none() {
            match self.connect() {
                Ok(()) => {
                    if self.announced {
                        self.notices.push_back(Item::Notice(format!(
                            "connected to {}",
                            self.path.display()
                        )));
                    }
                    self.announced = false;
                    self.connected_once = true;
                    self.delay = FIRST_DELAY;
                }
                Err(e) if !self.reconnect => return Err(Error::Connect(self.explain(&e))),
                Err(e) => {
                    if !self.announced {
                        self.announced = true;
                        let text = format!(
                            "{}; retrying until it answers (Ctrl-C to stop)",
                            self.explain(&e)
                        );
                        // Said on stderr now: in line mode nothing else would show it before the wait.
                        self.notices.push_back(Item::Notice(text));
                        return Ok(());
                    }
                    std::thread::sleep(self.delay);
                    self.delay = (self.delay * 2).min(MAX_DELAY);
                }
            }
        }
        Ok(())
    }

    /// Counts a record that cannot be read; the first one is said.
    fn skip(&mut self, why: String) {
        self.skipped += 1;
        if self.skipped == 1 {
            self.notices.push_back(Item::Notice(format!(
                "skipping a malformed record from the daemon: {why}"
            )));
        }
    }

    fn lost_connection(&mut self, why: String) -> Result<(), Error> {
        self.conn = None;
        if !self.reconnect {
            return Err(Error::Connect(why));
        }
        self.announced = true;
        self.notices.push_back(Item::Notice(format!(
            "{why}; reconnecting (events until then are not shown)"
        )));
        Ok(())
    }
}

impl Source for Client {
    fn next_item(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some(n) = self.notices.pop_front() {
                return Ok(Some(n));
            }
            self.ensure_connected()?;
            if !self.notices.is_empty() {
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match read_line_capped(conn, &mut self.line, MAX_JSON_LINE) {
                Ok(LineRead::Eof) => {
                    self.lost_connection("the daemon closed the connection (restarting?)".into())?
                }
                Ok(LineRead::TooLong) => {
                    // Skipped without keeping it: memory stays bounded whatever the peer sends.
                    let skipped = skip_line(conn);
                    self.skip(format!("a record longer than {MAX_JSON_LINE} bytes"));
                    if let Err(e) = skipped {
                        self.lost_connection(format!("lost the connection to the daemon: {e}"))?
                    }
                }
                Ok(LineRead::Line) => {
                    let text = String::from_utf8_lossy(&self.line);
                    match Item::from_json_line(text.trim_end()) {
                        Ok(item) => return Ok(Some(item)),
                        Err(e) => self.skip(e),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost_connection(format!("lost the connection to the daemon: {e}"))?
                }
            }
        }
    }
}
