//! Rendering: an [`Event`] → one line of text appended to a buffer.
//!
//! Two formats: `syslogemu` (ulogd2 2.0.8's LOGEMU, byte for byte) and `json` (ulogd2's JSON
//! names plus Kubernetes context). Renderers append to a caller-owned `Vec<u8>` so the hot path
//! reuses one buffer and never allocates once it has grown.

pub mod json;
pub mod syslog;
pub mod syslogemu;
pub mod time;

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
    node_name: Vec<u8>,
    clock: time::LocalClock,
}

impl Renderer {
    /// `hostname` is printed as ulogd2 does (cut at the first dot by the caller's choice);
    /// `node_name` is the Kubernetes node, for JSON.
    pub fn new(hostname: &str, node_name: &str) -> Self {
        Renderer {
            hostname: hostname.as_bytes().to_vec(),
            node_name: node_name.as_bytes().to_vec(),
            clock: time::LocalClock::new(),
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
            &self.hostname,
            &self.node_name,
            &mut self.clock,
            messages,
            out,
        );
    }

    pub fn render(&mut self, format: Format, ev: &Event<'_>, out: &mut Vec<u8>) {
        match format {
            Format::Syslogemu => syslogemu::render(ev, &self.hostname, &mut self.clock, out),
            Format::Json => json::render(ev, &self.hostname, &self.node_name, &mut self.clock, out),
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

/// Appends bytes from outside (prefixes, interface names) to a text line so that they can never
/// end the line or drive a terminal: control bytes (0x00-0x1f, 0x7f) become `\xHH`. Everything
/// else, including UTF-8, is kept verbatim so ordinary prefixes stay identical to ulogd2's.
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if b < 0x20 || b == 0x7f {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// Lower-case hex without padding (`%x`).
pub(crate) fn push_hex(out: &mut Vec<u8>, v: u32) {
    if v == 0 {
        out.push(b'0');
        return;
    }
    let digits = (32 - v.leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 15) as usize]);
    }
}

/// Two lower-case hex digits.
pub fn push_hex2_pub(out: &mut Vec<u8>, v: u8) {
    push_hex2(out, v, false)
}

/// Two hex digits (`%02x` or `%02X`).
pub(crate) fn push_hex2(out: &mut Vec<u8>, v: u8, upper: bool) {
    let t = if upper { HEX_UPPER } else { HEX };
    out.push(t[(v >> 4) as usize]);
    out.push(t[(v & 15) as usize]);
}

/// Dotted-quad IPv4, as `inet_ntop` writes it.
pub fn push_ipv4(out: &mut Vec<u8>, a: std::net::Ipv4Addr) {
    for (i, o) in a.octets().iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, *o as u64);
    }
}

/// IPv6 exactly as glibc's `inet_ntop` writes it (ulogd2 uses it): the first longest run of
/// two or more zero groups becomes `::`, and `::a.b.c.d` / `::ffff:a.b.c.d` keep the embedded
/// IPv4 address in dotted form. (Rust's `Display` differs for the `::a.b.c.d` form.)
pub fn push_ipv6(out: &mut Vec<u8>, a: std::net::Ipv6Addr) {
    let w = a.segments();
    let (mut best, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                (best, best_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best = usize::MAX;
    }
    for i in 0..8 {
        if best != usize::MAX && i >= best && i < best + best_len {
            if i == best {
                out.push(b':');
            }
            continue;
        }
        if i != 0 {
            out.push(b':');
        }
        if i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = a.octets();
            push_ipv4(out, std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            return;
        }
        push_hex(out, w[i] as u32);
    }
    if best != usize::MAX && best + best_len == 8 {
        out.push(b':');
    }
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
        push_hex(&mut out, 0);
        out.push(b' ');
        push_hex(&mut out, 0x2a);
        out.push(b' ');
        push_hex(&mut out, 0xdeadbeef);
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
