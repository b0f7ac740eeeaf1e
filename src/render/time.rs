//! Local-time formatting with a per-second cache. The zone is the system's, found as ulogd2's
//! `ctime()` finds it: `TZ` (a zone name, a POSIX rule or a file), else `/etc/localtime`, read
//! with jiff when the clock is made; the conversion runs once per second, not per line.
//!
//! When no zone can be found (e.g. `TZ` names a zone that is not installed, or a container has
//! no `/etc/localtime` and no `TZ`), times are in UTC, as glibc does, and the daemon says so once.

use std::sync::Once;

use jiff::tz::TimeZone;

use super::{with_cursor, Cursor, DEC2};
use crate::event::Timestamp;

pub struct LocalClock {
    tz: TimeZone,
    sec: i64,
    /// `Mmm dd hh:mm:ss` (ctime()+4, 15 bytes).
    ctime: [u8; 15],
    /// `YYYY-MM-DDTHH:MM:SS`.
    iso: [u8; 19],
    /// `+HH:MM`.
    offset: [u8; 6],
}

impl Default for LocalClock {
    fn default() -> Self {
        Self::new()
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

impl LocalClock {
    pub fn new() -> Self {
        Self::with_zone(system_zone())
    }

    /// A clock in the given zone instead of the system's.
    pub fn with_zone(tz: TimeZone) -> Self {
        LocalClock {
            tz,
            sec: i64::MIN,
            ctime: [b' '; 15],
            iso: [b'0'; 19],
            offset: *b"+00:00",
        }
    }

    fn update(&mut self, sec: i64) {
        if sec == self.sec {
            return;
        }
        self.sec = sec;
        // A hostile NFLA_TIMESTAMP can be any i64: clamp it into jiff's range (years
        // -9999..=9999), within which every offset gives a valid civil time.
        let clamped = sec.clamp(
            jiff::Timestamp::MIN.as_second(),
            jiff::Timestamp::MAX.as_second(),
        );
        let ts = jiff::Timestamp::from_second(clamped).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let offset = self.tz.to_offset(ts);
        let dt = offset.to_datetime(ts);
        let two = |v: i32| -> [u8; 2] { [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8] };
        let month = MONTHS[(dt.month() as usize).clamp(1, 12) - 1];
        let mday = i32::from(dt.day());
        let day = if mday < 10 {
            [b' ', b'0' + mday as u8]
        } else {
            two(mday)
        };
        let (h, m, s) = (
            two(dt.hour().into()),
            two(dt.minute().into()),
            two(dt.second().into()),
        );
        self.ctime = [
            month[0], month[1], month[2], b' ', day[0], day[1], b' ', h[0], h[1], b':', m[0], m[1],
            b':', s[0], s[1],
        ];
        let year = i32::from(dt.year()).clamp(0, 9999);
        let (mo, d) = (two(dt.month().into()), two(mday));
        self.iso = [
            b'0' + (year / 1000) as u8,
            b'0' + (year / 100 % 10) as u8,
            b'0' + (year / 10 % 10) as u8,
            b'0' + (year % 10) as u8,
            b'-',
            mo[0],
            mo[1],
            b'-',
            d[0],
            d[1],
            b'T',
            h[0],
            h[1],
            b':',
            m[0],
            m[1],
            b':',
            s[0],
            s[1],
        ];
        let off = offset.seconds();
        let sign = if off < 0 { b'-' } else { b'+' };
        let off = off.unsigned_abs() / 60;
        let (oh, om) = (two((off / 60) as i32), two((off % 60) as i32));
        self.offset = [sign, oh[0], oh[1], b':', om[0], om[1]];
    }

    /// `Mmm dd hh:mm:ss`, as ulogd2's LOGEMU prints it.
    pub fn push_ctime(&mut self, t: Timestamp, out: &mut Vec<u8>) {
        self.update(t.sec);
        out.extend_from_slice(&self.ctime);
    }

    /// [`LocalClock::push_ctime`] through a cursor (15 bytes).
    #[inline]
    pub(crate) fn write_ctime(&mut self, t: Timestamp, c: &mut Cursor<'_>) {
        self.update(t.sec);
        c.bytes(&self.ctime);
    }

    /// RFC 3339 with microseconds and the local offset: `2026-11-27T20:59:32.686935+00:00`.
    pub fn push_rfc3339(&mut self, t: Timestamp, out: &mut Vec<u8>) {
        with_cursor(out, RFC3339_LEN, |c| self.write_rfc3339(t, c));
    }

    /// [`LocalClock::push_rfc3339`] through a cursor ([`RFC3339_LEN`] bytes).
    #[inline]
    pub(crate) fn write_rfc3339(&mut self, t: Timestamp, c: &mut Cursor<'_>) {
        self.update(t.sec);
        c.bytes(&self.iso);
        c.byte(b'.');
        let us = t.usec.min(999_999);
        let (hi, lo) = (us / 10_000, us % 10_000);
        c.bytes(&DEC2[hi as usize]);
        c.bytes(&DEC2[(lo / 100) as usize]);
        c.bytes(&DEC2[(lo % 100) as usize]);
        c.bytes(&self.offset);
    }
}

/// The length of [`LocalClock::push_rfc3339`]'s text.
pub const RFC3339_LEN: usize = 32;

/// The system's zone, or UTC with a warning (once per process) when there is none.
fn system_zone() -> TimeZone {
    match TimeZone::try_system() {
        Ok(tz) => tz,
        Err(e) => {
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                let text = format!("cannot determine the local time zone ({e}); times are in UTC");
                // The daemon logs through tracing; nflog-tail has no subscriber.
                if tracing::dispatcher::has_been_set() {
                    tracing::warn!("{text}");
                } else {
                    eprintln!("warning: {text}");
                }
            });
            TimeZone::UTC
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-07 09:05:03.000042 UTC as `ctime|rfc3339` by `c`.
    fn both_formats(mut c: LocalClock) -> String {
        let mut out = Vec::new();
        let t = Timestamp {
            sec: 1_794_042_303,
            usec: 42,
        };
        c.push_ctime(t, &mut out);
        out.push(b'|');
        c.push_rfc3339(t, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_utc() {
        // The test binary may run with any TZ; force UTC for this process's conversions.
        std::env::set_var("TZ", "UTC");
        assert_eq!(
            both_formats(LocalClock::new()),
            "Nov  7 09:05:03|2026-11-07T09:05:03.000042+00:00"
        );
    }

    #[test]
    fn formats_a_zone_with_an_offset() {
        let tz = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(
            both_formats(LocalClock::with_zone(tz)),
            "Nov  7 04:05:03|2026-11-07T04:05:03.000042-05:00"
        );
    }

    #[test]
    fn hostile_timestamps_are_clamped() {
        let mut c = LocalClock::with_zone(TimeZone::UTC);
        for (sec, want) in [
            (i64::MAX, "9999-12-"),
            (i64::MIN, "0000-01-"),
            (-1, "1969-12-31T23:59:59"),
        ] {
            let mut out = Vec::new();
            c.push_rfc3339(Timestamp { sec, usec: 0 }, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with(want), "{sec}: {text}");
            assert_eq!(text.len(), 32, "{sec}: {text}");
        }
    }
}
