//! `-r FILE`: an NFLOG pcap, JSON lines (the tail socket's or the daemon's JSON file) or
//! syslogemu lines (the daemon's or ulogd2's), told apart by their first bytes. `-` reads
//! standard input, so `tcpdump -i nflog:100 -w - | nflog-tail -r -` works.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::pcap::{PcapSource, Reader};
use super::record::{Item, Record};
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

/// Opens `path` and picks the reader its content needs.
pub fn open(path: &Path, hostname: &str) -> Result<Box<dyn Source>, Error> {
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
        Kind::Pcap => Box::new(PcapSource::new(Reader::new(input, name)?, hostname)),
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
        loop {
            self.buf.clear();
            self.line += 1;
            let n = self
                .input
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::File {
                    path: self.path.clone(),
                    what: format!("read error: {e}"),
                })?;
            if n == 0 {
                return Ok(None);
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
