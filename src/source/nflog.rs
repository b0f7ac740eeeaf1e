//! Zero-copy parsing of NFLOG netlink messages (`NFULNL_MSG_PACKET`).
//!
//! In: the bytes of one `recv()` on an `NETLINK_NETFILTER` socket, which hold any number of
//! netlink messages. Out: [`NflogMsg`] views that borrow from those bytes, or a [`ParseError`]
//! whose [`ParseError::kind`] is counted. Nothing here allocates: the daemon's per-packet path
//! starts in this file.
//!
//! Attribute numbers and layouts follow `include/uapi/linux/netfilter/nfnetlink_log.h`; the
//! constant names are the kernel's, so they can be grepped in both places.

use thiserror::Error;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NFNL_SUBSYS_ULOG: u16 = 4;
pub const NFULNL_MSG_PACKET: u16 = 0;
pub const NFULNL_MSG_CONFIG: u16 = 1;

pub const NFULA_PACKET_HDR: u16 = 1;
pub const NFULA_MARK: u16 = 2;
pub const NFULA_TIMESTAMP: u16 = 3;
pub const NFULA_IFINDEX_INDEV: u16 = 4;
pub const NFULA_IFINDEX_OUTDEV: u16 = 5;
pub const NFULA_IFINDEX_PHYSINDEV: u16 = 6;
pub const NFULA_IFINDEX_PHYSOUTDEV: u16 = 7;
pub const NFULA_HWADDR: u16 = 8;
pub const NFULA_PAYLOAD: u16 = 9;
pub const NFULA_PREFIX: u16 = 10;
pub const NFULA_UID: u16 = 11;
pub const NFULA_SEQ: u16 = 12;
pub const NFULA_SEQ_GLOBAL: u16 = 13;
pub const NFULA_GID: u16 = 14;
pub const NFULA_HWTYPE: u16 = 15;
pub const NFULA_HWHEADER: u16 = 16;
pub const NFULA_HWLEN: u16 = 17;

/// Why a message could not be parsed. Each is counted by [`ParseError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("netlink header truncated ({0} bytes left)")]
    TruncatedHeader(usize),
    #[error("netlink length {len} lies (only {available} bytes available)")]
    LengthLies { len: usize, available: usize },
    #[error("nfgenmsg header missing")]
    MissingNfgen,
    #[error("attribute {0} has a bad length")]
    BadAttribute(u16),
    #[error("NFULA_PACKET_HDR missing")]
    MissingPacketHeader,
}

impl ParseError {
    /// A fixed label for metrics and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::TruncatedHeader(_) => "truncated_header",
            ParseError::LengthLies { .. } => "length_lies",
            ParseError::MissingNfgen => "missing_nfgen",
            ParseError::BadAttribute(_) => "bad_attribute",
            ParseError::MissingPacketHeader => "missing_packet_header",
        }
    }
}

/// One netlink message in a receive buffer, as the iterator found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netlink<'a> {
    /// An NFLOG packet message, not yet parsed.
    Packet(&'a [u8]),
    /// `NLMSG_ERROR`: the error code (0 is an ACK) and the sequence number it answers.
    Error { errno: i32, seq: u32 },
    /// Anything else (`NLMSG_DONE`, `NLMSG_NOOP`, other subsystems): ignored.
    Other(u16),
}

/// Iterates over the netlink messages of one `recv()` buffer.
///
/// A message whose length field lies ends the iteration with an error: the rest of the buffer
/// cannot be trusted to be aligned on message boundaries.
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Messages { buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Netlink<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < NLMSG_HDRLEN {
            let left = self.buf.len();
            self.buf = &[];
            return Some(Err(ParseError::TruncatedHeader(left)));
        }
        let len = u32::from_ne_bytes(self.buf[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes([self.buf[4], self.buf[5]]);
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            let available = self.buf.len();
            self.buf = &[];
            return Some(Err(ParseError::LengthLies { len, available }));
        }
        let msg = &self.buf[..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        let body = &msg[NLMSG_HDRLEN..];
        Some(Ok(match kind {
            k if k == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET => Netlink::Packet(body),
            NLMSG_ERROR if body.len() >= 4 + NLMSG_HDRLEN => Netlink::Error {
                errno: i32::from_ne_bytes([body[0], body[1], body[2], body[3]]),
                // The echoed request header follows the error code; its seq is at offset 8.
                seq: u32::from_ne_bytes([body[12], body[13], body[14], body[15]]),
            },
            other => Netlink::Other(other),
        }))
    }
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One NFLOG packet message: every attribute ulogd2's NFLOG input plugin reads.
///
/// Absent attributes are `None` (or 0 for interface indexes, as the kernel means "none").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NflogMsg<'a> {
    /// `nfgen_family`: 2 (IPv4), 10 (IPv6), 7 (bridge), 3 (ARP).
    pub family: u8,
    /// `res_id`: the NFLOG group this message was logged to.
    pub group: u16,
    /// `NFULA_PACKET_HDR.hw_protocol`, the ethertype.
    pub hw_protocol: u16,
    /// `NFULA_PACKET_HDR.hook`: 0 PREROUTING, 1 INPUT, 2 FORWARD, 3 OUTPUT, 4 POSTROUTING.
    pub hook: u8,
    /// The rule's prefix without its trailing NUL. The kernel always sends it (empty if unset).
    pub prefix: Option<&'a [u8]>,
    pub mark: Option<u32>,
    /// `(seconds, microseconds)`. The kernel sends it for PREROUTING, INPUT and FORWARD
    /// (`hooknum <= NF_INET_FORWARD` in `__build_packet_message`, net/netfilter/nfnetlink_log.c):
    /// the packet's receive time, or the time of logging when the packet has none.
    pub timestamp: Option<(u64, u64)>,
    pub indev: u32,
    pub outdev: u32,
    pub physindev: u32,
    pub physoutdev: u32,
    /// `NFULA_HWADDR`: the source link-layer address.
    pub hwaddr: Option<&'a [u8]>,
    pub hwtype: Option<u16>,
    /// `NFULA_HWHEADER`: the whole link-layer header, `hwlen` bytes of it meaningful.
    pub hwheader: Option<&'a [u8]>,
    pub hwlen: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub seq: Option<u32>,
    pub seq_global: Option<u32>,
    /// The packet from its network header, as many bytes as the copy range and rule allowed.
    pub payload: &'a [u8],
    /// `NFULA_CT`: the packet's conntrack entry, when the daemon asked for it and the kernel can
    /// attach it (see [`super::conntrack`]).
    pub conntrack: Option<&'a [u8]>,
}

impl<'a> NflogMsg<'a> {
    /// Parses the body of an `NFULNL_MSG_PACKET` message (after the netlink header).
    // Inlined into the pipeline: returned through `Result`, the large struct was copied once
    // more (about 60 instructions per message, callgrind).
    #[inline(always)]
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        if body.len() < 4 {
            return Err(ParseError::MissingNfgen);
        }
        let mut msg = NflogMsg {
            family: body[0],
            group: u16::from_be_bytes([body[2], body[3]]),
            ..Default::default()
        };
        let mut have_hdr = false;
        for attr in Attributes::new(&body[4..]) {
            let (kind, data) = attr?;
            match kind {
                NFULA_PACKET_HDR => {
                    let d = at_least(data, 4, kind)?;
                    msg.hw_protocol = u16::from_be_bytes([d[0], d[1]]);
                    msg.hook = d[2];
                    have_hdr = true;
                }
                NFULA_MARK => msg.mark = Some(be32(data, kind)?),
                NFULA_TIMESTAMP => {
                    let d = at_least(data, 16, kind)?;
                    msg.timestamp = Some((be64(&d[0..8]), be64(&d[8..16])));
                }
                NFULA_IFINDEX_INDEV => msg.indev = be32(data, kind)?,
                NFULA_IFINDEX_OUTDEV => msg.outdev = be32(data, kind)?,
                NFULA_IFINDEX_PHYSINDEV => msg.physindev = be32(data, kind)?,
                NFULA_IFINDEX_PHYSOUTDEV => msg.physoutdev = be32(data, kind)?,
                NFULA_HWADDR => {
                    let d = at_least(data, 4, kind)?;
                    let n = (u16::from_be_bytes([d[0], d[1]]) as usize).min(d.len() - 4);
                    msg.hwaddr = Some(&d[4..4 + n]);
                }
                NFULA_PAYLOAD => msg.payload = data,
                NFULA_PREFIX => msg.prefix = Some(until_nul(data)),
                NFULA_UID => msg.uid = Some(be32(data, kind)?),
                NFULA_GID => msg.gid = Some(be32(data, kind)?),
                NFULA_SEQ => msg.seq = Some(be32(data, kind)?),
                NFULA_SEQ_GLOBAL => msg.seq_global = Some(be32(data, kind)?),
                NFULA_HWTYPE => msg.hwtype = Some(be16(data, kind)?),
                NFULA_HWHEADER => msg.hwheader = Some(data),
                NFULA_HWLEN => msg.hwlen = Some(be16(data, kind)?),
                super::conntrack::NFULA_CT => msg.conntrack = Some(data),
                // Conntrack info, VLAN, L2 header and future attributes: carried past.
                _ => {}
            }
        }
        if !have_hdr {
            return Err(ParseError::MissingPacketHeader);
        }
        Ok(msg)
    }

    /// The link-layer header ulogd prints as `MAC=`: `hwlen` bytes of `NFULA_HWHEADER`.
    pub fn mac_header(&self) -> Option<&'a [u8]> {
        let header = self.hwheader?;
        let len = (self.hwlen? as usize).min(header.len());
        (len > 0).then(|| &header[..len])
    }
}

/// Iterates over netlink attributes (`struct nlattr`), 4-byte aligned.
pub struct Attributes<'a> {
    buf: &'a [u8],
}

impl<'a> Attributes<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Attributes { buf }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < 4 {
            // Trailing bytes shorter than an attribute header are alignment padding.
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        // NLA_F_NESTED and NLA_F_NET_BYTEORDER live in the top bits of the type.
        let kind = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & 0x3fff;
        if len < 4 || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(ParseError::BadAttribute(kind)));
        }
        let data = &self.buf[4..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some(Ok((kind, data)))
    }
}

/// `data` up to its first NUL, eight bytes at a time (a byte loop cost about 100 instructions
/// per message, `memchr` 80, callgrind).
#[inline]
fn until_nul(data: &[u8]) -> &[u8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut words = data.chunks_exact(8);
    for (i, w) in (&mut words).enumerate() {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        // The lowest flagged byte is the first zero byte (borrows only run upwards).
        let zero = x.wrapping_sub(ONES) & !x & (ONES << 7);
        if zero != 0 {
            return &data[..8 * i + (zero.trailing_zeros() / 8) as usize];
        }
    }
    let rest = words.remainder();
    let end = data.len() - rest.len();
    &data[..end + rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
}

/// The attribute data when it holds at least `n` bytes (the kernel may append padding).
fn at_least(data: &[u8], n: usize, kind: u16) -> Result<&[u8], ParseError> {
    if data.len() < n {
        Err(ParseError::BadAttribute(kind))
    } else {
        Ok(data)
    }
}

fn be16(data: &[u8], kind: u16) -> Result<u16, ParseError> {
    let d = at_least(data, 2, kind)?;
    Ok(u16::from_be_bytes([d[0], d[1]]))
}

fn be32(data: &[u8], kind: u16) -> Result<u32, ParseError> {
    let d = at_least(data, 4, kind)?;
    Ok(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

fn be64(d: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// Test and bench support: builds NFLOG messages the way the kernel lays them out.
pub mod build {
    use super::*;

    /// Appends one attribute (header, data, padding) to `out`.
    pub fn attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
    }

    /// A complete netlink message carrying an NFLOG packet, as `recv()` returns it.
    #[derive(Debug, Clone)]
    pub struct Packet<'a> {
        pub family: u8,
        pub group: u16,
        pub hw_protocol: u16,
        pub hook: u8,
        pub prefix: &'a [u8],
        pub mark: Option<u32>,
        pub indev: u32,
        pub outdev: u32,
        pub uid_gid: Option<(u32, u32)>,
        pub seq: Option<u32>,
        pub hwheader: Option<&'a [u8]>,
        pub timestamp: Option<(u64, u64)>,
        pub payload: &'a [u8],
        /// An `NFULA_CT` payload (see `conntrack::build::entry`).
        pub conntrack: Option<&'a [u8]>,
    }

    impl Default for Packet<'_> {
        fn default() -> Self {
            Packet {
                family: libc::AF_INET as u8,
                group: 100,
                hw_protocol: 0x0800,
                hook: 3,
                prefix: b"",
                mark: None,
                indev: 0,
                outdev: 1,
                uid_gid: None,
                seq: None,
                hwheader: None,
                timestamp: None,
                payload: &[],
                conntrack: None,
            }
        }
    }

    impl Packet<'_> {
        pub fn encode(&self, out: &mut Vec<u8>) {
            let start = out.len();
            out.extend_from_slice(&[0; NLMSG_HDRLEN]);
            out.extend_from_slice(&[self.family, 0]);
            out.extend_from_slice(&self.group.to_be_bytes());
            let mut hdr = self.hw_protocol.to_be_bytes().to_vec();
            hdr.extend_from_slice(&[self.hook, 0]);
            attr(out, NFULA_PACKET_HDR, &hdr);
            if let Some(mark) = self.mark {
                attr(out, NFULA_MARK, &mark.to_be_bytes());
            }
            if let Some((sec, usec)) = self.timestamp {
                let mut ts = sec.to_be_bytes().to_vec();
                ts.extend_from_slice(&usec.to_be_bytes());
                attr(out, NFULA_TIMESTAMP, &ts);
            }
            if self.indev != 0 {
                attr(out, NFULA_IFINDEX_INDEV, &self.indev.to_be_bytes());
            }
            if self.outdev != 0 {
                attr(out, NFULA_IFINDEX_OUTDEV, &self.outdev.to_be_bytes());
            }
            if let Some(h) = self.hwheader {
                attr(out, NFULA_HWTYPE, &1u16.to_be_bytes());
                attr(out, NFULA_HWLEN, &(h.len() as u16).to_be_bytes());
                attr(out, NFULA_HWHEADER, h);
            }
            let mut prefix = self.prefix.to_vec();
            prefix.push(0);
            attr(out, NFULA_PREFIX, &prefix);
            if let Some((uid, gid)) = self.uid_gid {
                attr(out, NFULA_UID, &uid.to_be_bytes());
                attr(out, NFULA_GID, &gid.to_be_bytes());
            }
            if let Some(seq) = self.seq {
                attr(out, NFULA_SEQ, &seq.to_be_bytes());
            }
            attr(out, NFULA_PAYLOAD, self.payload);
            if let Some(ct) = self.conntrack {
                attr(out, crate::source::conntrack::NFULA_CT | (1 << 15), ct);
            }
            let len = (out.len() - start) as u32;
            out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
            let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
            out[start + 4..start + 6].copy_from_slice(&kind.to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::Packet;
    use super::*;

    fn one(buf: &[u8]) -> Result<NflogMsg<'_>, ParseError> {
        match Messages::new(buf).next().expect("one message")? {
            Netlink::Packet(body) => NflogMsg::parse(body),
            other => panic!("not a packet: {other:?}"),
        }
    }

    #[test]
    fn prefixes_end_at_the_first_nul() {
        for (data, want) in [
            (&b""[..], &b""[..]),
            (b"abc", b"abc"),
            (b"abc\0", b"abc"),
            (b"abcdefg\0", b"abcdefg"),
            (b"abcdefgh\0\0\0\0", b"abcdefgh"),
            (
                b"DROP by policy default/deny-db\0\0",
                b"DROP by policy default/deny-db",
            ),
            (b"\0abcdefghijk", b""),
            (b"ab\x01\x80\xff\0cdefghijklmnop\0", b"ab\x01\x80\xff"),
            (b"abcdefghijklmnopq", b"abcdefghijklmnopq"),
        ] {
            assert_eq!(until_nul(data), want, "{data:?}");
        }
    }

    #[test]
    fn round_trips_every_attribute() {
        let mut buf = Vec::new();
        Packet {
            prefix: b"DROP by policy default/deny-db",
            mark: Some(0x2a),
            indev: 3,
            outdev: 0,
            uid_gid: Some((1000, 1001)),
            seq: Some(7),
            hwheader: Some(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 8, 0]),
            timestamp: Some((1_800_000_000, 123_456)),
            payload: &[0x45, 0, 0, 20],
            ..Default::default()
        }
        .encode(&mut buf);
        let msg = one(&buf).unwrap();
        assert_eq!(msg.prefix, Some(&b"DROP by policy default/deny-db"[..]));
        assert_eq!(msg.mark, Some(0x2a));
        assert_eq!((msg.indev, msg.outdev), (3, 0));
        assert_eq!((msg.uid, msg.gid), (Some(1000), Some(1001)));
        assert_eq!(msg.seq, Some(7));
        assert_eq!(msg.mac_header().map(<[u8]>::len), Some(14));
        assert_eq!(msg.timestamp, Some((1_800_000_000, 123_456)));
        assert_eq!(msg.payload, &[0x45, 0, 0, 20]);
        assert_eq!((msg.group, msg.hook, msg.hw_protocol), (100, 3, 0x0800));
    }

    #[test]
    fn several_messages_in_one_buffer() {
        let mut buf = Vec::new();
        for seq in 0..3 {
            Packet {
                seq: Some(seq),
                payload: &[1, 2, 3],
                ..Default::default()
            }
            .encode(&mut buf);
        }
        let seqs: Vec<_> = Messages::new(&buf)
            .map(|m| match m.unwrap() {
                Netlink::Packet(b) => NflogMsg::parse(b).unwrap().seq.unwrap(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(seqs, vec![0, 1, 2]);
    }

    #[test]
    fn truncated_and_lying_lengths_are_errors() {
        let mut buf = Vec::new();
        Packet::default().encode(&mut buf);
        assert_eq!(
            Messages::new(&buf[..10]).next(),
            Some(Err(ParseError::TruncatedHeader(10)))
        );
        let mut lying = buf.clone();
        lying[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(
            Messages::new(&lying).next(),
            Some(Err(ParseError::LengthLies { len: 1000, .. }))
        ));
        // An attribute claiming more bytes than the message holds.
        let mut bad_attr = buf.clone();
        bad_attr[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 6].copy_from_slice(&500u16.to_ne_bytes());
        assert_eq!(
            one(&bad_attr),
            Err(ParseError::BadAttribute(NFULA_PACKET_HDR))
        );
    }

    #[test]
    fn short_fixed_size_attributes_are_errors() {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf.extend_from_slice(&[2, 0, 0, 100]);
        build::attr(&mut buf, NFULA_PACKET_HDR, &[8, 0, 3, 0]);
        build::attr(&mut buf, NFULA_MARK, &[1, 2]);
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[4..6].copy_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        assert_eq!(one(&buf), Err(ParseError::BadAttribute(NFULA_MARK)));
    }

    #[test]
    fn zero_length_payload_and_missing_header() {
        let mut buf = Vec::new();
        Packet::default().encode(&mut buf);
        assert_eq!(one(&buf).unwrap().payload, &[] as &[u8]);
        let mut no_hdr = vec![0u8; NLMSG_HDRLEN];
        no_hdr.extend_from_slice(&[2, 0, 0, 100]);
        let len = no_hdr.len() as u32;
        no_hdr[0..4].copy_from_slice(&len.to_ne_bytes());
        no_hdr[4..6].copy_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        assert_eq!(one(&no_hdr), Err(ParseError::MissingPacketHeader));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            for m in Messages::new(&bytes) {
                if let Ok(Netlink::Packet(body)) = m {
                    let _ = NflogMsg::parse(body).map(|m| m.mac_header());
                }
            }
        }
    }
}
