//! Rendering: an [`Event`] → one line of text appended to a buffer.
//!
//! Two formats: `syslogemu` (ulogd2 2.0.8's LOGEMU, byte for byte) and `json` (ulogd2's JSON
//! names plus Kubernetes context). Renderers append to a caller-owned `Vec<u8>` so the hot path
//! reuses one buffer and never allocates once it has grown.

pub mod json;
pub mod syslog;
pub mod syslogemu;
pub mod time;

use std::mem::MaybeUninit;

use serde::Deserialize;

use crate::event::Event;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// ulogd2-compatible syslogemu lines.
    Syslogemu,
    /// One JSON object per line.
    Json,
}

/// Renders events; holds what every line shares (hostname, node name, time cache).
pub struct Renderer {
    hostname: Vec<u8>,
    /// `"hostname":…,"node_name":…` for JSON.
    json_names: Vec<u8>,
    clock: time::LocalClock,
    /// JSON text of recent Kubernetes contexts.
    contexts: json::ContextCache,
}

impl Renderer {
    /// `hostname` is printed as ulogd2 does (cut at the first dot by the caller's choice);
    /// `node_name` is the Kubernetes node, for JSON.
    pub fn new(hostname: &str, node_name: &str) -> Self {
        Renderer {
            hostname: hostname.as_bytes().to_vec(),
            json_names: json::names_text(hostname.as_bytes(), node_name.as_bytes()),
            clock: time::LocalClock::new(),
            contexts: json::ContextCache::default(),
        }
    }

    /// Appends an RFC 3339 local timestamp (for records that are not events).
    pub fn push_rfc3339(&mut self, t: crate::event::Timestamp, out: &mut Vec<u8>) {
        self.clock.push_rfc3339(t, out);
    }

    /// A record for `nflog-tail` clients (see [`json::render_tail_record`]): `messages` yields
    /// each written message's syslogemu line and NFLOG body.
    pub fn render_tail_record<'l, 'b>(
        &mut self,
        ev: &Event<'_>,
        messages: impl Iterator<Item = (&'l [u8], &'b [u8])>,
        out: &mut Vec<u8>,
    ) {
        json::render_tail_record(
            ev,
            &self.json_names,
            &mut self.clock,
            &mut self.contexts,
            messages,
            out,
        );
    }

    pub fn render(&mut self, format: Format, ev: &Event<'_>, out: &mut Vec<u8>) {
        match format {
            Format::Syslogemu => syslogemu::render(ev, &self.hostname, &mut self.clock, out),
            Format::Json => json::render_cached(
                ev,
                &self.json_names,
                &mut self.clock,
                &mut self.contexts,
                out,
            ),
        }
    }
}

/// ulogd2's hostname: `gethostname()`, cut at the first `.`. glibc's `gethostname()` is the
/// node name `uname(2)` returns, which cannot fail.
pub fn short_hostname() -> String {
    let uname = rustix::system::uname();
    let name = String::from_utf8_lossy(uname.nodename().to_bytes()).into_owned();
    name.split('.').next().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------------
// Writing. The renderers write most of a line through a [`Cursor`]: [`with_cursor`] makes room
// for the most the writer can need once, every field is then a store into that room (digits
// from tables, constant keys as fixed-size copies, no capacity check or `memcpy` call per
// field), and what was not written is cut off again. The `Vec` helpers below are the same
// writers for callers that append one field.
// ---------------------------------------------------------------------------------------------

/// Bytes of slack every cursor region keeps beyond what its writer states: the table writers
/// store a few bytes more than they keep (three digits for a `u8`, a whole group of digits).
const SLACK: usize = 16;

/// A write position in the spare capacity of a line buffer (see [`with_cursor`]). Writes past
/// the region's end panic (slice bounds), so a wrong bound is a bug found by tests, never a
/// write out of bounds.
pub(crate) struct Cursor<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    /// Every byte before `pos` has been written: the methods below advance it only over bytes
    /// they wrote, and [`Cursor::back`] only retreats.
    pos: usize,
}

/// Appends what `f` writes through a [`Cursor`] to `out`; `f` writes at most `max` bytes.
#[inline(always)]
pub(crate) fn with_cursor<R>(
    out: &mut Vec<u8>,
    max: usize,
    f: impl FnOnce(&mut Cursor<'_>) -> R,
) -> R {
    out.reserve(max + SLACK);
    let start = out.len();
    let mut c = Cursor {
        buf: &mut out.spare_capacity_mut()[..max + SLACK],
        pos: 0,
    };
    let r = f(&mut c);
    let n = c.pos;
    // SAFETY: `n` is within the spare capacity (the cursor's slice), and the cursor's first `n`
    // bytes are initialized (its invariant).
    unsafe { out.set_len(start + n) };
    r
}

/// Copies `s` into `d` (of the same length).
#[inline(always)]
fn put(d: &mut [MaybeUninit<u8>], s: &[u8]) {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8` and every `u8` is a valid one; the view
    // is only read. (`<[MaybeUninit<u8>]>::write_copy_of_slice` is newer than the MSRV.)
    let s = unsafe { &*(s as *const [u8] as *const [MaybeUninit<u8>]) };
    // A copy of known length: a few moves when the length is a constant.
    d.copy_from_slice(s);
}

/// Two decimal digits for 0..100.
pub(crate) static DEC2: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// 0..=255 in decimal, left-aligned in the first three bytes, and its length in the fourth.
static DEC3: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i < 10 {
            [b'0' + i as u8, 0, 0, 1]
        } else if i < 100 {
            [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8, 0, 2]
        } else {
            [
                b'0' + (i / 100) as u8,
                b'0' + (i / 10 % 10) as u8,
                b'0' + (i % 10) as u8,
                3,
            ]
        };
        i += 1;
    }
    t
};

/// A byte as two hex digits, lower and upper case.
static HEX2: [[[u8; 2]; 256]; 2] = {
    let mut t = [[[0u8; 2]; 256]; 2];
    let mut i = 0;
    while i < 256 {
        t[0][i] = [HEX[i >> 4], HEX[i & 15]];
        t[1][i] = [HEX_UPPER[i >> 4], HEX_UPPER[i & 15]];
        i += 1;
    }
    t
};

/// Decimal digits of `v`.
#[inline(always)]
fn dec_len(v: u32) -> usize {
    const POW10: [u32; 10] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
        1_000_000_000,
    ];
    // log10 from log2 (t <= 9), then one correction; `| 1` makes 0 one digit.
    let t = (((32 - (v | 1).leading_zeros()) * 1233) >> 12) as usize;
    t + 1 - ((v | 1) < POW10[t]) as usize
}

/// A byte of an escaped text: a control byte (0x00-0x1f, 0x7f).
#[inline(always)]
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` is below `n` (n <= 0x80; exact, see "Bit Twiddling Hacks").
#[inline(always)]
fn any_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS != 0
}

/// Whether any byte of `x` equals `b`.
#[inline(always)]
fn any_eq(x: u64, b: u8) -> bool {
    any_below(x ^ (ONES * b as u64), 1)
}

/// Whether `word` flags any word of `bytes`, read eight bytes at a time (the last word
/// overlapping, a short slice padded with `A`, which no test flags).
#[inline(always)]
fn any_word(bytes: &[u8], word: impl Fn(u64) -> bool) -> bool {
    let n = bytes.len();
    let load = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([b'A'; 8]));
    if n >= 8 {
        let mut chunks = bytes.chunks_exact(8);
        if chunks.any(|c| word(load(c))) {
            return true;
        }
        return n % 8 != 0 && word(load(&bytes[n - 8..]));
    }
    // Two overlapping halves, or up to three bytes padded with `A`.
    let x = if n >= 4 {
        let half = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([b'A'; 4])) as u64;
        half(&bytes[..4]) | half(&bytes[n - 4..]) << 32
    } else {
        let at = |i: usize| bytes.get(i).copied().unwrap_or(b'A') as u64;
        at(0) | at(1) << 8 | at(2) << 16 | u64::from_le_bytes(*b"AAAAAAAA") & !0xff_ffff
    };
    word(x)
}

/// Whether `bytes` holds a control byte.
#[inline]
pub(crate) fn has_control(bytes: &[u8]) -> bool {
    any_word(bytes, |x| any_below(x, 0x20) || any_eq(x, 0x7f))
}

/// Whether `bytes` is printable ASCII without `"` and `\`, i.e. a JSON string as it is.
#[inline]
pub(crate) fn json_plain(bytes: &[u8]) -> bool {
    !any_word(bytes, |x| {
        // Bytes >= 0x7f: the high bit, or 0x7f + 1 carrying into it (a carry out of 0xff only
        // reaches bytes above one that is already caught).
        (x | x.wrapping_add(ONES)) & HIGHS != 0
            || any_below(x, 0x20)
            || any_eq(x, b'"')
            || any_eq(x, b'\\')
    })
}

impl Cursor<'_> {
    /// Bytes written so far.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    /// Takes back the last `n` bytes written.
    #[inline(always)]
    pub(crate) fn back(&mut self, n: usize) {
        self.pos -= n;
    }

    #[inline(always)]
    pub(crate) fn byte(&mut self, b: u8) {
        self.buf[self.pos].write(b);
        self.pos += 1;
    }

    /// Constant or short bytes: with a constant length this is a few stores.
    #[inline(always)]
    pub(crate) fn bytes(&mut self, s: &[u8]) {
        put(&mut self.buf[self.pos..self.pos + s.len()], s);
        self.pos += s.len();
    }

    /// Writes `N` bytes and keeps the first `keep` of them.
    #[inline(always)]
    fn fixed<const N: usize>(&mut self, s: [u8; N], keep: usize) {
        put(&mut self.buf[self.pos..self.pos + N], &s);
        // `min`: the invariant holds whatever the caller passes.
        self.pos += keep.min(N);
    }

    /// Bytes of any length, short ones with overlapping fixed-size copies instead of a call.
    #[inline]
    pub(crate) fn var(&mut self, s: &[u8]) {
        let n = s.len();
        let d = &mut self.buf[self.pos..self.pos + n];
        if (8..=16).contains(&n) {
            put(&mut d[..8], &s[..8]);
            put(&mut d[n - 8..], &s[n - 8..]);
        } else if (17..=32).contains(&n) {
            put(&mut d[..16], &s[..16]);
            put(&mut d[n - 16..], &s[n - 16..]);
        } else if (4..8).contains(&n) {
            put(&mut d[..4], &s[..4]);
            put(&mut d[n - 4..], &s[n - 4..]);
        } else {
            // Under four bytes, or long enough for a call to pay.
            put(d, s);
        }
        self.pos += n;
    }

    /// `%u`.
    #[inline]
    pub(crate) fn dec(&mut self, v: u32) {
        let n = dec_len(v);
        let mut d = [0u8; 10];
        let (mut v, mut i) = (v as usize, n);
        while v >= 100 {
            let r = v % 100;
            v /= 100;
            i -= 2;
            d[i..i + 2].copy_from_slice(&DEC2[r]);
        }
        if v >= 10 {
            d[..2].copy_from_slice(&DEC2[v]);
        } else {
            d[0] = b'0' + v as u8;
        }
        self.fixed(d, n);
    }

    /// `%u` of a byte: one table entry (three bytes stored, its length kept).
    #[inline(always)]
    pub(crate) fn dec8(&mut self, v: u8) {
        let [a, b, c, n] = DEC3[v as usize];
        self.fixed([a, b, c], n as usize);
    }

    #[inline]
    pub(crate) fn dec64(&mut self, v: u64) {
        match u32::try_from(v) {
            Ok(v) => self.dec(v),
            Err(_) => self.bytes(itoa::Buffer::new().format(v).as_bytes()),
        }
    }

    /// `%x`.
    #[inline]
    pub(crate) fn hex(&mut self, v: u32) {
        let n = (32 - (v | 1).leading_zeros()).div_ceil(4) as usize;
        let [a, b, c, d] = v.to_be_bytes().map(|b| HEX2[0][b as usize]);
        let digits = u64::from_be_bytes([a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1]]);
        // The last `n` digits, moved to the front.
        self.fixed((digits << (64 - 8 * n)).to_be_bytes(), n);
    }

    /// `%x` of a 16-bit group.
    #[inline(always)]
    fn hex16(&mut self, v: u16) {
        let n = (16 - (v | 1).leading_zeros()).div_ceil(4) as usize;
        let [a, b] = v.to_be_bytes().map(|b| HEX2[0][b as usize]);
        let digits = u32::from_be_bytes([a[0], a[1], b[0], b[1]]);
        self.fixed((digits << (32 - 8 * n)).to_be_bytes(), n);
    }

    /// `%02x` / `%02X`.
    #[inline(always)]
    pub(crate) fn hex2(&mut self, v: u8, upper: bool) {
        self.bytes(&HEX2[upper as usize][v as usize]);
    }

    /// Dotted quad: per octet, its three table digits and a dot in one 4-byte store, then the
    /// dot again right after the digits kept (half the instructions of gathering the text in
    /// a `u128` first, callgrind).
    #[inline]
    pub(crate) fn ipv4(&mut self, a: std::net::Ipv4Addr) {
        // 3 × 4 + 4 bytes at most are stored: one bounds check for all of them.
        let d = &mut self.buf[self.pos..self.pos + 16];
        let mut n = 0;
        for o in a.octets() {
            let [d0, d1, d2, len] = DEC3[o as usize];
            let len = len as usize;
            put(&mut d[n..n + 4], &[d0, d1, d2, b'.']);
            d[n + len].write(b'.');
            n += len + 1;
        }
        // Without the last dot.
        self.pos += n - 1;
    }

    /// IPv6 exactly as glibc's `inet_ntop` writes it (see [`push_ipv6`]).
    pub(crate) fn ipv6(&mut self, a: std::net::Ipv6Addr) {
        let w = a.segments();
        let zeros = w
            .iter()
            .enumerate()
            .fold(0u8, |m, (i, g)| m | (((*g == 0) as u8) << i));
        let run = ZERO_RUN[zeros as usize];
        // No run: all eight groups before it.
        let (best, len) = match run {
            0 => (8, 0),
            r => ((r >> 4) as usize, (r & 15) as usize),
        };
        for (i, g) in w[..best].iter().enumerate() {
            if i > 0 {
                self.byte(b':');
            }
            self.hex16(*g);
        }
        if len == 0 {
            return;
        }
        self.bytes(b"::");
        if best == 0 && (len == 6 || (len == 5 && w[5] == 0xffff)) {
            if len == 5 {
                self.bytes(b"ffff:");
            }
            let o = a.octets();
            self.ipv4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            return;
        }
        for (i, g) in w[best + len..].iter().enumerate() {
            if i > 0 {
                self.byte(b':');
            }
            self.hex16(*g);
        }
    }

    /// The names of the set TCP flags among `names`, each followed by a space (at most 32
    /// bytes). Each name is written always and kept only when its flag is set: no branch per
    /// flag.
    #[inline(always)]
    pub(crate) fn tcp_flags(&mut self, flags: crate::decode::TcpFlags, names: &[(u8, [u8; 4])]) {
        for (flag, name) in names {
            self.bytes(name);
            self.back(4 * !flags.has(*flag) as usize);
        }
    }

    /// [`push_escaped`]; writes at most `4 * bytes.len()`.
    #[inline]
    pub(crate) fn escaped(&mut self, bytes: &[u8]) {
        if !has_control(bytes) {
            return self.var(bytes);
        }
        for &b in bytes {
            if is_control(b) {
                self.bytes(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            } else {
                self.byte(b);
            }
        }
    }
}

/// TCP flag names in the order ulogd2 prints them (syslogemu leaves out the first two).
pub(crate) const TCP_FLAGS: [(u8, [u8; 4]); 8] = {
    use crate::decode::TcpFlags as F;
    [
        (F::CWR, *b"CWR "),
        (F::ECE, *b"ECE "),
        (F::URG, *b"URG "),
        (F::ACK, *b"ACK "),
        (F::PSH, *b"PSH "),
        (F::RST, *b"RST "),
        (F::SYN, *b"SYN "),
        (F::FIN, *b"FIN "),
    ]
};

/// For each set of zero groups of an IPv6 address (bit i: group i is 0), the first longest run
/// of two or more as `start << 4 | len`, or 0 for none.
static ZERO_RUN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut m = 0;
    while m < 256 {
        let (mut best, mut best_len, mut i) = (0, 0, 0);
        while i < 8 {
            if m & (1 << i) != 0 {
                let start = i;
                while i < 8 && m & (1 << i) != 0 {
                    i += 1;
                }
                if i - start > best_len {
                    (best, best_len) = (start, i - start);
                }
            } else {
                i += 1;
            }
        }
        if best_len >= 2 {
            t[m] = (best << 4 | best_len) as u8;
        }
        m += 1;
    }
    t
};

/// Appends bytes from outside (prefixes, interface names) to a text line so that they can never
/// end the line or drive a terminal: control bytes (0x00-0x1f, 0x7f) become `\xHH`. Everything
/// else, including UTF-8, is kept verbatim so ordinary prefixes stay identical to ulogd2's.
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    if !has_control(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    with_cursor(out, 4 * bytes.len(), |c| c.escaped(bytes));
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    with_cursor(out, 20, |c| c.dec64(v));
}

/// Two lower-case hex digits.
pub fn push_hex2_pub(out: &mut Vec<u8>, v: u8) {
    push_hex2(out, v, false)
}

/// Two hex digits (`%02x` or `%02X`).
pub(crate) fn push_hex2(out: &mut Vec<u8>, v: u8, upper: bool) {
    out.extend_from_slice(&HEX2[upper as usize][v as usize]);
}

/// Dotted-quad IPv4, as `inet_ntop` writes it.
pub fn push_ipv4(out: &mut Vec<u8>, a: std::net::Ipv4Addr) {
    with_cursor(out, IPV4_MAX, |c| c.ipv4(a));
}

/// The longest dotted quad.
pub(crate) const IPV4_MAX: usize = 15;
/// The longest `inet_ntop` IPv6 text (`ffff:…:ffff:255.255.255.255`).
pub(crate) const IPV6_MAX: usize = 45;

/// IPv6 exactly as glibc's `inet_ntop` writes it (ulogd2 uses it): the first longest run of
/// two or more zero groups becomes `::`, and `::a.b.c.d` / `::ffff:a.b.c.d` keep the embedded
/// IPv4 address in dotted form. (Rust's `Display` differs for the `::a.b.c.d` form.)
pub fn push_ipv6(out: &mut Vec<u8>, a: std::net::Ipv6Addr) {
    with_cursor(out, IPV6_MAX, |c| c.ipv6(a));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_glibc_inet_ntop() {
        let six = |s: &str| {
            let mut out = Vec::new();
            push_ipv6(&mut out, s.parse().unwrap());
            String::from_utf8(out).unwrap()
        };
        for (input, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("fd00:10:244::10", "fd00:10:244::10"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"),
            ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),
            ("fe80::", "fe80::"),
            ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
            ("::10.1.2.3", "::10.1.2.3"),
            ("::0.0.0.2", "::2"),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
        ] {
            assert_eq!(six(input), want, "{input}");
        }
        let mut out = Vec::new();
        push_ipv4(&mut out, "10.244.0.255".parse().unwrap());
        assert_eq!(out, b"10.244.0.255");
    }

    #[test]
    fn hex_and_escape() {
        let mut out = Vec::new();
        let hex = |out: &mut Vec<u8>, v| with_cursor(out, 8, |c| c.hex(v));
        hex(&mut out, 0);
        out.push(b' ');
        hex(&mut out, 0x2a);
        out.push(b' ');
        hex(&mut out, 0xdeadbeef);
        out.push(b' ');
        push_hex2(&mut out, 0x1e, true);
        out.push(b' ');
        push_escaped(&mut out, b"a\nb\x1b[31m\x7f\\");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 2a deadbeef 1E a\\x0ab\\x1b[31m\\x7f\\"
        );
    }
}
