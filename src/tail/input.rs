//! `-r FILE`: an NFLOG pcap, JSON lines (the tail socket's or the daemon's JSON file) or
//! syslogemu lines (the daemon's or ulogd2's), told apart by their first bytes. `-` reads
//! standard input, so `tcpdump -i nflog:100 -w - | nflog-tail -r -` works.
//!
//! Lines are read with a length cap ([`MAX_LINE`], [`MAX_JSON_LINE`]): a file that is not what
//! it seems (`/dev/zero`, a binary without newlines) ends with a clear error after reading the
//! cap, never with the whole file in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::pcap::Reader;
use super::record::{Item, Record};
use super::replay::PcapSource;
use super::{Error, Source};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pcap,
    JsonLines,
    Syslogemu,
}

/// Looks at the first bytes: a pcap magic, a `{`, or anything else (syslogemu).
pub fn detect(head: &[u8]) -> Kind {
    const MAGICS: [[u8; 4]; 4] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
    ];
    if head.len() >= 4 && MAGICS.iter().any(|m| head[..4] == m[..]) {
        return Kind::Pcap;
    }
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Kind::JsonLines,
        _ => Kind::Syslogemu,
    }
}

type Input = BufReader<Box<dyn Read + Send>>;

/// The longest syslogemu line read: ulogd2's lines are a few hundred bytes.
pub const MAX_LINE: usize = 1 << 20;
/// The longest JSON line read: a daemon event is about 2 KiB, but a tail socket record carries
/// the hex bytes of every NFLOG message of its packet (up to 64 KiB of packet each).
pub const MAX_JSON_LINE: usize = 16 << 20;

/// What [`read_line_capped`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// End of input, nothing read.
    Eof,
    /// A line, with its `\n` unless the input ended without one.
    Line,
    /// The line is longer than the cap: `buf` holds its start, the rest is still unread.
    TooLong,
}

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes (newline included).
pub fn read_line_capped<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (end, used) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (true, i + 1),
            None => (false, avail.len()),
        };
        let room = max - buf.len();
        if used > room {
            buf.extend_from_slice(&avail[..room]);
            r.consume(room);
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(&avail[..used]);
        r.consume(used);
        if end {
            return Ok(LineRead::Line);
        }
    }
}

/// Skips the rest of a line [`read_line_capped`] found too long, without keeping it; `false`
/// when the input ended first.
pub fn skip_line<R: BufRead + ?Sized>(r: &mut R) -> io::Result<bool> {
    // The line goes through one bounded buffer, each piece overwriting the last.
    let mut piece = Vec::new();
    loop {
        match read_line_capped(r, &mut piece, 64 * 1024)? {
            LineRead::Eof => return Ok(false),
            LineRead::Line => return Ok(piece.last() == Some(&b'\n')),
            LineRead::TooLong => {}
        }
    }
}

/// Opens `path` and picks the reader its content needs.
pub fn open(
    path: &Path,
    hostname: &str,
    snapshot: Option<super::Snapshot>,
) -> Result<Box<dyn Source>, Error> {
    let name = if path == Path::new("-") {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(|e| Error::File {
            path: name.clone(),
            what: format!("cannot open: {e}"),
        })?)
    };
    let mut input: Input = BufReader::with_capacity(256 * 1024, raw);
    let head = input.fill_buf().map_err(|e| Error::File {
        path: name.clone(),
        what: format!("read error: {e}"),
    })?;
    if head.is_empty() {
        return Err(Error::File {
            path: name,
            what: "empty file".into(),
        });
    }
    Ok(match detect(head) {
        Kind::Pcap => Box::new(PcapSource::new(
            Reader::new(input, name)?,
            hostname,
            snapshot,
        )),
        kind => Box::new(Lines {
            input,
            path: name,
            line: 0,
            kind,
            buf: Vec::new(),
        }),
    })
}

/// JSON or syslogemu lines.
pub struct Lines<R: BufRead> {
    input: R,
    path: String,
    line: u64,
    kind: Kind,
    buf: Vec<u8>,
}

impl<R: BufRead + Send> Source for Lines<R> {
    fn next_item(&mut self) -> Result<Option<Item>, Error> {
        let max = match self.kind {
            Kind::JsonLines => MAX_JSON_LINE,
            _ => MAX_LINE,
        };
        loop {
            self.line += 1;
            let got =
                read_line_capped(&mut self.input, &mut self.buf, max).map_err(|e| Error::File {
                    path: self.path.clone(),
                    what: format!("read error: {e}"),
                })?;
            match got {
                LineRead::Eof => return Ok(None),
                LineRead::Line => {}
                LineRead::TooLong => {
                    let what = match self.kind {
                        Kind::JsonLines => "JSON-lines",
                        _ => "syslogemu",
                    };
                    return Err(Error::Line {
                        path: self.path.clone(),
                        line: self.line,
                        what: format!(
                            "longer than {max} bytes without a newline: not a {what} file (or a corrupt one)"
                        ),
                    });
                }
            }
            // Non-UTF-8 bytes (a prefix with Latin-1) should not end the replay.
            let text = String::from_utf8_lossy(&self.buf);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let item = match self.kind {
                Kind::JsonLines => Item::from_json_line(text),
                _ => Record::from_syslogemu(text).map(|r| Item::Event(Box::new(r))),
            };
            return item.map(Some).map_err(|what| Error::Line {
                path: self.path.clone(),
                line: self.line,
                what,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds() {
        assert_eq!(detect(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]), Kind::Pcap);
        assert_eq!(detect(b"  {\"a\":1}"), Kind::JsonLines);
        assert_eq!(detect(b"Nov 27 20:59:32 h  IN="), Kind::Syslogemu);
    }

    fn lines(input: impl BufRead + Send, kind: Kind) -> Lines<impl BufRead + Send> {
        Lines {
            input,
            path: "f".into(),
            line: 0,
            kind,
            buf: Vec::new(),
        }
    }

    #[test]
    fn endless_lines_end_with_an_error() {
        // /dev/zero: NULs forever, no newline. The cap ends it after 1 MiB.
        let started = std::time::Instant::now();
        let mut src = lines(io::BufReader::new(io::repeat(0)), Kind::Syslogemu);
        let e = src.next_item().unwrap_err().to_string();
        assert_eq!(
            e,
            format!("f: line 1: longer than {MAX_LINE} bytes without a newline: not a syslogemu file (or a corrupt one)")
        );
        assert!(src.buf.capacity() <= 2 * MAX_LINE, "{}", src.buf.capacity());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A long line after good ones names its number; lines up to the cap are read.
        let mut text = b"{\"type\":\"lost\",\"count\":1}\n".to_vec();
        text.extend(std::iter::repeat_n(b' ', MAX_JSON_LINE + 1));
        let mut src = lines(io::Cursor::new(text), Kind::JsonLines);
        assert_eq!(src.next_item().unwrap(), Some(Item::Lost(1)));
        let e = src.next_item().unwrap_err().to_string();
        assert!(
            e.starts_with("f: line 2: longer than 16777216 bytes"),
            "{e}"
        );
    }

    #[test]
    fn capped_reads() {
        let mut r = io::BufReader::with_capacity(4, io::Cursor::new(b"abc\nabcdefgh\nxy".to_vec()));
        let mut buf = Vec::new();
        let mut read = |r: &mut io::BufReader<io::Cursor<Vec<u8>>>| {
            let what = read_line_capped(r, &mut buf, 4).unwrap();
            (what, String::from_utf8_lossy(&buf).into_owned())
        };
        assert_eq!(read(&mut r), (LineRead::Line, "abc\n".into()));
        assert_eq!(read(&mut r), (LineRead::TooLong, "abcd".into()));
        assert!(skip_line(&mut r).unwrap());
        assert_eq!(read(&mut r), (LineRead::Line, "xy".into()));
        assert_eq!(read(&mut r).0, LineRead::Eof);
        // Longer than skip_line's piece, and once without a newline at the end.
        let long = [
            vec![b'x'; 200_000],
            b"\nnext\n".to_vec(),
            vec![b'y'; 100_000],
        ]
        .concat();
        let mut r = io::BufReader::with_capacity(4096, io::Cursor::new(long));
        assert!(skip_line(&mut r).unwrap());
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 16).unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"next\n");
        assert!(!skip_line(&mut r).unwrap());
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 16).unwrap(),
            LineRead::Eof
        );
    }

    #[test]
    fn garbage_json_names_the_line() {
        let mut src = Lines {
            input: io::Cursor::new(b"{\"type\":\"lost\",\"count\":1}\n\n{nope\n".to_vec()),
            path: "x.json".into(),
            line: 0,
            kind: Kind::JsonLines,
            buf: Vec::new(),
        };
        assert_eq!(src.next_item().unwrap(), Some(Item::Lost(1)));
        let e = src.next_item().unwrap_err().to_string();
        assert!(e.starts_with("x.json: line 3: not a JSON record"), "{e}");
    }
}
