//! NFLOG pcap files (linktype 239, `DLT_NFLOG`), as `tcpdump -i nflog:100 -w F` writes them.
//!
//! A record holds the NFLOG message without its netlink header: `nfgenmsg` (family, version,
//! group in network order) and the attributes. The attribute headers (length, type) are in the
//! byte order of the host that captured, which the file's magic number tells; values are in
//! network order. The [`Reader`] swaps the headers to this host's order so that
//! [`NflogMsg::parse`] reads them; the [`Writer`] writes this host's order and says so in its
//! magic. libpcap does the same (`swap_nflog_header` in [pcap-common.c]).
//!
//! A record may not be longer than the file's snapshot length (the header's `snaplen`): such a
//! file is malformed, and the reader says which record breaks the rule. A snapshot length of 0
//! means "not given", as libpcap reads it.
//!
//! [pcap-common.c]: https://github.com/the-tcpdump-group/libpcap/blob/master/pcap-common.c
//!
//! Reader and writer are written here rather than with `pcap-file`, to name the record and byte
//! offset of every problem, to stream files of any size, and to flush per record when live.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::record::Record;
use super::Error;
use crate::attribute::Attribution;
use crate::event::{Event, IfName, Timestamp};
use crate::source::nflog::{align4, NflogMsg};

pub const LINKTYPE_NFLOG: u32 = 239;
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// Larger records are refused rather than allocated: NFLOG messages are at most 64 KiB + headers.
const MAX_RECORD: u32 = 1 << 20;
/// The snapshot length tcpdump uses; a whole NFLOG message always fits.
const SNAPLEN: u32 = 262_144;

/// One pcap record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    pub time: Timestamp,
    /// The NFLOG message body with attribute headers in this host's byte order.
    pub data: Vec<u8>,
}

/// Reads NFLOG records from a pcap stream.
pub struct Reader<R: Read> {
    r: R,
    path: String,
    /// The file was written on a host of the other byte order.
    swapped: bool,
    nanos: bool,
    /// The header's snapshot length: no record may be longer (0: not given).
    snaplen: u32,
    record: u64,
    offset: u64,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let f = File::open(path).map_err(|e| Error::File {
            path: name.clone(),
            what: format!("cannot open: {e}"),
        })?;
        Reader::new(BufReader::with_capacity(256 * 1024, f), name)
    }
}

impl<R: Read> Reader<R> {
    /// Reads and checks the file header.
    pub fn new(mut r: R, path: String) -> Result<Self, Error> {
        let mut hdr = [0u8; 24];
        let got = read_full(&mut r, &mut hdr).map_err(|e| file_error(&path, e))?;
        if got < hdr.len() {
            return Err(Error::File {
                path,
                what: format!("truncated pcap header ({got} of 24 bytes)"),
            });
        }
        let magic_le = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let magic_be = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let (little, nanos) = match (magic_le, magic_be) {
            (MAGIC_US, _) => (true, false),
            (MAGIC_NS, _) => (true, true),
            (_, MAGIC_US) => (false, false),
            (_, MAGIC_NS) => (false, true),
            _ => {
                return Err(Error::File {
                    path,
                    what: format!("not a pcap file (magic {magic_be:08x}; pcapng is not supported: convert with `editcap -F pcap`)"),
                })
            }
        };
        let mut reader = Reader {
            r,
            path,
            swapped: little != cfg!(target_endian = "little"),
            nanos,
            snaplen: 0,
            record: 0,
            offset: 24,
        };
        // The upper bits of the link-type field hold FCS information.
        let linktype = reader.u32_at(&hdr, 20) & 0x0fff_ffff;
        if linktype != LINKTYPE_NFLOG {
            return Err(Error::File {
                path: reader.path,
                what: format!("link type {linktype}, not NFLOG ({LINKTYPE_NFLOG}): capture with `tcpdump -i nflog:100 -w FILE`"),
            });
        }
        reader.snaplen = reader.u32_at(&hdr, 16);
        Ok(reader)
    }

    /// A u32 in the file's byte order.
    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.swapped {
            u32::from_ne_bytes(v).swap_bytes()
        } else {
            u32::from_ne_bytes(v)
        }
    }

    fn record_error(&self, what: String) -> Error {
        Error::Record {
            path: self.path.clone(),
            record: self.record,
            offset: self.offset,
            what,
        }
    }

    /// The next record; `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<PcapRecord>, Error> {
        let mut hdr = [0u8; 16];
        self.record += 1;
        let got = read_full(&mut self.r, &mut hdr).map_err(|e| file_error(&self.path, e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < hdr.len() {
            return Err(self.record_error(format!(
                "truncated record header ({got} of 16 bytes): the file ends mid-record"
            )));
        }
        let (sec, frac) = (self.u32_at(&hdr, 0), self.u32_at(&hdr, 4));
        let (incl, orig) = (self.u32_at(&hdr, 8), self.u32_at(&hdr, 12));
        if incl > MAX_RECORD {
            return Err(self.record_error(format!(
                "record length {incl} is implausible for NFLOG (original length {orig})"
            )));
        }
        if self.snaplen != 0 && incl > self.snaplen {
            return Err(self.record_error(format!(
                "record length {incl} exceeds the file's snapshot length {} (the pcap header's snaplen): the file is malformed",
                self.snaplen
            )));
        }
        let mut data = vec![0u8; incl as usize];
        let got = read_full(&mut self.r, &mut data).map_err(|e| file_error(&self.path, e))?;
        if got < data.len() {
            return Err(self.record_error(format!(
                "truncated record: the file ends after {got} of {incl} bytes"
            )));
        }
        if self.swapped {
            swap_tlv_headers(&mut data, true);
        }
        let usec = if self.nanos { frac / 1000 } else { frac };
        let rec = PcapRecord {
            time: Timestamp {
                sec: sec as i64,
                usec: usec.min(999_999),
            },
            data,
        };
        self.offset += 16 + incl as u64;
        Ok(Some(rec))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn record_number(&self) -> u64 {
        self.record
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

fn file_error(path: &str, e: io::Error) -> Error {
    Error::File {
        path: path.to_string(),
        what: format!("read error: {e}"),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Swaps the (length, type) header of every attribute after the 4-byte `nfgenmsg`, from the
/// other byte order to this host's (`to_native`) or back. Stops at a length that cannot be
/// right; the parser then reports the bad attribute.
pub fn swap_tlv_headers(data: &mut [u8], to_native: bool) {
    let mut at = 4;
    while at + 4 <= data.len() {
        let before = u16::from_ne_bytes([data[at], data[at + 1]]) as usize;
        data.swap(at, at + 1);
        data.swap(at + 2, at + 3);
        let after = u16::from_ne_bytes([data[at], data[at + 1]]) as usize;
        let len = if to_native { after } else { before };
        if len < 4 {
            return;
        }
        at += align4(len);
    }
}

/// A pcap carries interface indexes, not names; `if3` is what can be known.
pub fn if_label(index: u32) -> IfName {
    crate::attribute::ifname::IfNames::labels_only().name(index)
}

/// An event as the daemon's `Processor` builds it, without Kubernetes context. The time is the
/// kernel's when it sent a non-zero one (as ulogd2), otherwise `fallback`.
pub fn event<'a>(
    msg: NflogMsg<'a>,
    fallback: Timestamp,
    indev: IfName,
    outdev: IfName,
) -> Event<'a> {
    let time = crate::pipeline::event_time(&msg, fallback);
    Event {
        msg,
        packet: crate::decode::decode(msg.family, msg.hw_protocol, msg.payload),
        time,
        indev,
        outdev,
        attribution: Attribution::from_prefix(msg.prefix),
        context: None,
        count: 1,
    }
}

/// Writes NFLOG records in this host's byte order (the magic number tells readers which).
pub struct Writer {
    w: BufWriter<File>,
    path: String,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let f = File::create(path).map_err(|err| Error::Write {
            path: name.clone(),
            err,
        })?;
        let mut w = Writer {
            w: BufWriter::new(f),
            path: name,
        };
        let mut hdr = Vec::with_capacity(24);
        for v in [
            MAGIC_US.to_ne_bytes(),
            [0; 4],
            [0; 4],
            [0; 4],
            SNAPLEN.to_ne_bytes(),
            LINKTYPE_NFLOG.to_ne_bytes(),
        ] {
            hdr.extend_from_slice(&v);
        }
        // Version 2.4, in the slot after the magic.
        hdr[4..6].copy_from_slice(&2u16.to_ne_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_ne_bytes());
        w.put(&hdr)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.w.write_all(bytes).map_err(|err| Error::Write {
            path: self.path.clone(),
            err,
        })
    }

    /// Writes every NFLOG message of a record, one pcap record each (as `tcpdump -i nflog`
    /// captures a packet several rules logged); returns how many. 0: the record carries no NFLOG
    /// bytes (syslogemu or the daemon's JSON file).
    pub fn write(&mut self, r: &Record) -> Result<usize, Error> {
        let mut n = 0;
        for data in r.nflog_messages() {
            let time = record_time(data, &r.timestamp);
            let len = (data.len() as u32).to_ne_bytes();
            let mut hdr = [0u8; 16];
            hdr[0..4].copy_from_slice(&(time.as_secs() as u32).to_ne_bytes());
            hdr[4..8].copy_from_slice(&time.subsec_micros().to_ne_bytes());
            hdr[8..12].copy_from_slice(&len);
            hdr[12..16].copy_from_slice(&len);
            self.put(&hdr)?;
            self.put(data)?;
            n += 1;
        }
        // Flushed per packet: a live capture stopped with Ctrl-C keeps every whole record.
        self.w.flush().map_err(|err| Error::Write {
            path: self.path.clone(),
            err,
        })?;
        Ok(n)
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A message's time for the pcap header: from its NFLOG timestamp, else the record's RFC 3339
/// time, else now.
fn record_time(data: &[u8], timestamp: &str) -> std::time::Duration {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    };
    match NflogMsg::parse(data).ok().and_then(|m| m.timestamp) {
        Some((sec, usec)) if sec != 0 => {
            std::time::Duration::new(sec, (usec.min(999_999) * 1000) as u32)
        }
        _ => parse_rfc3339(timestamp).unwrap_or_else(now),
    }
}

/// `2026-11-27T20:59:32.686935+01:00` → time since the epoch.
fn parse_rfc3339(s: &str) -> Option<std::time::Duration> {
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let usec = num(20, 26).unwrap_or(0);
    let tz = s.get(26..)?;
    let sign = if tz.starts_with('-') { -1 } else { 1 };
    let off = sign
        * (tz.get(1..3)?.parse::<i64>().ok()? * 3600 + tz.get(4..6)?.parse::<i64>().ok()? * 60);
    let days = days_from_civil(y, mo, d);
    let t = days * 86400 + h * 3600 + mi * 60 + sec - off;
    (t >= 0).then(|| std::time::Duration::new(t as u64, (usec * 1000) as u32))
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::nflog::build::Packet;
    use crate::tail::{Item, Source};

    /// An NFLOG body as the kernel lays it out (build::Packet), without the netlink header.
    fn body(prefix: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let payload = [
            0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x9c, 0x40, 0,
            53, 0, 8, 0, 0,
        ];
        Packet {
            prefix,
            outdev: 1,
            payload: &payload,
            ..Default::default()
        }
        .encode(&mut buf);
        buf[16..].to_vec()
    }

    /// A pcap file in the given byte order, with `bodies` in that host's attribute order.
    fn file(little: bool, bodies: &[Vec<u8>]) -> Vec<u8> {
        let w32 = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(MAGIC_US));
        f.extend_from_slice(&if little { [2, 0, 4, 0] } else { [0, 2, 0, 4] });
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(SNAPLEN));
        f.extend_from_slice(&w32(LINKTYPE_NFLOG));
        for b in bodies {
            let mut b = b.clone();
            if little != cfg!(target_endian = "little") {
                swap_tlv_headers(&mut b, false);
            }
            for v in [1_800_000_000, 5, b.len() as u32, b.len() as u32] {
                f.extend_from_slice(&w32(v));
            }
            f.extend_from_slice(&b);
        }
        f
    }

    fn replay(bytes: Vec<u8>) -> Result<Vec<Record>, Error> {
        let reader = Reader::new(io::Cursor::new(bytes), "t.pcap".into())?;
        let mut src = super::super::replay::PcapSource::new(reader, "h", None);
        let mut out = Vec::new();
        while let Some(item) = src.next_item()? {
            if let Item::Event(r) = item {
                out.push(*r);
            }
        }
        Ok(out)
    }

    #[test]
    fn both_byte_orders() {
        for little in [true, false] {
            let recs = replay(file(
                little,
                &[body(b"DROP by policy default/x"), body(b"")],
            ))
            .unwrap();
            // One packet, logged by its policy's rule and its pod chain: one event, as the
            // daemon makes it.
            assert_eq!(recs.len(), 1);
            assert_eq!(recs[0].prefix, "DROP by policy default/x");
            assert_eq!(recs[0].dest_port, Some(53));
            assert_eq!(recs[0].outdev, "if1");
            let line = recs[0].syslogemu.as_deref().unwrap();
            assert!(
                line.contains(
                    " h DROP by policy default/x IN= OUT=if1 MAC= SRC=10.0.0.1 DST=10.0.0.2 "
                ),
                "{line}"
            );
            // Always stored in this host's order, ready for the writer.
            assert_eq!(
                recs[0].nflog.as_deref(),
                Some(&body(b"DROP by policy default/x")[..])
            );
            assert_eq!(recs[0].further.len(), 1);
            assert_eq!(recs[0].further[0].nflog, body(b""));
        }
    }

    #[test]
    fn malformed_files_say_where() {
        let e = replay(b"hello".to_vec()).unwrap_err().to_string();
        assert_eq!(e, "t.pcap: truncated pcap header (5 of 24 bytes)");
        let e = replay(vec![0x11; 40]).unwrap_err().to_string();
        assert!(e.starts_with("t.pcap: not a pcap file"), "{e}");
        let mut eth = file(true, &[]);
        eth[20] = 1;
        assert!(replay(eth)
            .unwrap_err()
            .to_string()
            .contains("link type 1, not NFLOG"));
        let good = file(true, &[body(b"a"), body(b"b")]);
        let e = replay(good[..good.len() - 7].to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.pcap: record 2 (byte offset "), "{e}");
        assert!(e.contains("truncated record: the file ends after"), "{e}");
        let e = replay(good[..24 + 16 + body(b"a").len() + 5].to_vec())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("record 2") && e.contains("truncated record header (5 of 16"),
            "{e}"
        );
        let mut bad = good.clone();
        bad[24 + 16 + 4] = 0xff; // the first attribute's length
        bad[24 + 16 + 5] = 0xff;
        let e = replay(bad).unwrap_err().to_string();
        assert!(
            e.contains("record 1 (byte offset 24): not a valid NFLOG message"),
            "{e}"
        );
    }

    #[test]
    fn writer_round_trips() {
        let path =
            std::env::temp_dir().join(format!("nflog-tail-writer-{}.pcap", std::process::id()));
        let mut w = Writer::create(&path).unwrap();
        // Different packets (one payload byte apart): two events.
        let mut other = body(b"two");
        *other.last_mut().unwrap() ^= 1;
        let recs = replay(file(true, &[body(b"one"), other])).unwrap();
        assert_eq!(recs.len(), 2);
        for r in &recs {
            assert_eq!(w.write(r).unwrap(), 1);
        }
        assert_eq!(w.write(&Record::default()).unwrap(), 0);
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let back = replay(bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].prefix, "two");
        assert_eq!(back[1].nflog, recs[1].nflog);
    }

    #[test]
    fn records_longer_than_the_snaplen_are_refused() {
        let mut f = file(true, &[body(b"fits"), body(b"does not fit")]);
        let snaplen = body(b"fits").len() as u32;
        f[16..20].copy_from_slice(&snaplen.to_le_bytes());
        let e = replay(f.clone()).unwrap_err().to_string();
        let second = 24 + 16 + snaplen;
        assert!(
            e.starts_with(&format!(
                "t.pcap: record 2 (byte offset {second}): record length "
            )),
            "{e}"
        );
        assert!(
            e.contains(&format!("exceeds the file's snapshot length {snaplen}")),
            "{e}"
        );
        // 0: not given. (Both messages are of one packet: one event.)
        f[16..20].copy_from_slice(&[0; 4]);
        let recs = replay(f).unwrap();
        assert_eq!((recs.len(), recs[0].further.len()), (1, 1));
    }

    #[test]
    fn writer_writes_every_message_of_a_packet() {
        let path = std::env::temp_dir().join(format!(
            "nflog-tail-writer-messages-{}.pcap",
            std::process::id()
        ));
        let mut w = Writer::create(&path).unwrap();
        let mut rec = replay(file(true, &[body(b"DROP by policy a/b")]))
            .unwrap()
            .remove(0);
        rec.further.push(super::super::record::Message {
            syslogemu: String::new(),
            nflog: body(b""),
        });
        assert_eq!(w.write(&rec).unwrap(), 2);
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // Read back, the two messages are one packet's again.
        let back = replay(bytes).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].prefix, "DROP by policy a/b");
        assert_eq!(
            back[0].nflog.as_deref(),
            Some(&body(b"DROP by policy a/b")[..])
        );
        assert_eq!(back[0].further[0].nflog, body(b""));
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(
            parse_rfc3339("1970-01-01T01:00:01.000002+01:00"),
            Some(std::time::Duration::new(1, 2000))
        );
        assert_eq!(
            parse_rfc3339("2026-11-27T20:59:32.686935+00:00").map(|d| d.as_secs()),
            Some(1_795_813_172)
        );
        assert_eq!(parse_rfc3339("junk"), None);
    }
}
