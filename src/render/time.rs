//! Local-time formatting with a per-second cache: `localtime_r` honours `TZ` and
//! `/etc/localtime` exactly as ulogd2's `ctime()` does, and runs once per second, not per line.

use crate::event::Timestamp;

pub struct LocalClock {
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
        // SAFETY: tzset only reads TZ and the zone files.
        unsafe { tzset() };
        LocalClock {
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
        let t = sec as libc::time_t;
        // SAFETY: tm is plain data; localtime_r fills it and is thread-safe.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&t, &mut tm) };
        let two = |v: i32| -> [u8; 2] { [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8] };
        let month = MONTHS[tm.tm_mon.clamp(0, 11) as usize];
        let day = if tm.tm_mday < 10 {
            [b' ', b'0' + tm.tm_mday as u8]
        } else {
            two(tm.tm_mday)
        };
        let (h, m, s) = (two(tm.tm_hour), two(tm.tm_min), two(tm.tm_sec));
        self.ctime = [
            month[0], month[1], month[2], b' ', day[0], day[1], b' ', h[0], h[1], b':', m[0], m[1],
            b':', s[0], s[1],
        ];
        // i64: a hostile NFLA_TIMESTAMP can put tm_year near i32::MAX.
        let year = (tm.tm_year as i64 + 1900).clamp(0, 9999) as i32;
        let (mo, d) = (two(tm.tm_mon + 1), two(tm.tm_mday));
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
        let off = tm.tm_gmtoff;
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

    /// RFC 3339 with microseconds and the local offset: `2026-11-27T20:59:32.686935+00:00`.
    pub fn push_rfc3339(&mut self, t: Timestamp, out: &mut Vec<u8>) {
        self.update(t.sec);
        out.extend_from_slice(&self.iso);
        out.push(b'.');
        let us = t.usec.min(999_999);
        let mut digits = [b'0'; 6];
        let mut v = us;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&digits);
        out.extend_from_slice(&self.offset);
    }
}

extern "C" {
    fn tzset();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        // The test binary may run with any TZ; force UTC for this process's conversions.
        std::env::set_var("TZ", "UTC");
        let mut c = LocalClock::new();
        let mut out = Vec::new();
        // 2026-11-07 09:05:03 UTC
        let t = Timestamp {
            sec: 1_794_042_303,
            usec: 42,
        };
        c.push_ctime(t, &mut out);
        out.push(b'|');
        c.push_rfc3339(t, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Nov  7 09:05:03|2026-11-07T09:05:03.000042+00:00"
        );
    }
}
