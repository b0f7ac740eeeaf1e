//! Fuzz regressions: every committed seed and every minimised crash, through the fuzz targets'
//! own checks.
//!
//! The checks are `fuzz/src/checks.rs`, included here as they are, so a test asserts exactly
//! what libFuzzer asserted when it found the input: no panic, and the target's invariant (one
//! line per NFLOG message in every format, JSON that parses, limits within the documented
//! ranges, …). Seeds live in `fuzz/seeds/<target>/` (captured from real traffic by
//! `fuzz/capture-seeds.sh`, or hand-written); crash inputs in `fuzz/seeds/regressions/` and,
//! with their backtrace, as one test each below.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file in `fuzz/seeds/<dir>` and names the file that fails.
fn replay(dir: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("read seed");
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("{}: {msg}", file.display());
        }
    }
}

/// Decodes the hex in a regression test (whitespace ignored).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

#[test]
fn seeds_nflog_batch() {
    replay("nflog_batch", checks::nflog_batch);
}

#[test]
fn seeds_decode() {
    replay("decode", checks::decode);
}

#[test]
fn seeds_pcap_reader() {
    replay("pcap_reader", checks::pcap_reader);
}

#[test]
fn seeds_tail_text() {
    replay("tail_text", checks::tail_text);
}

#[test]
fn seeds_annotations() {
    replay("annotations", checks::annotations);
}

#[test]
fn seeds_config() {
    replay("config", checks::config);
}

/// An NFLOG message whose `NFULA_TIMESTAMP` is in the year 2147485447 (sec 67768033004482104):
/// `localtime_r` succeeds with `tm_year` = 2147483547, and `LocalClock::update`
/// (src/render/time.rs:59) computes `tm.tm_year + 1900`, which overflows `i32` (a panic with
/// overflow checks, as in debug builds and the fuzz targets). Found by reading the code while
/// fuzzing (libFuzzer cannot guess a 64-bit value in so narrow a window); the input is
/// `fuzz/seeds/regressions/nflog_batch-timestamp-year-overflow.bin`.
#[test]
fn regression_timestamp_year_overflow() {
    checks::nflog_batch(&hex("38000000 0004 0000 00000000 00000000 02000064 \
         0800 0100 08000300 \
         1400 0300 00f0c2aabe5bee38 0000000000000005 \
         0600 0a00 78000000"));
}

/// `nflog-tail -r` on a syslogemu file whose first 15 bytes hold a multi-byte character (here
/// five bytes that are not UTF-8, which `Lines` turns into U+FFFD): the default compact output
/// panics in `short_time` (src/tail/output.rs:145, `&ts[7..]` on a 15-byte timestamp), "start
/// byte index 7 is not a char boundary". Found by `tail_text` after 154 executions, minimised
/// with `-minimize_crash`; `fuzz/seeds/regressions/tail_text-short-time-char-boundary.bin`.
/// Backtrace: short_time (output.rs:145) ← Compact::of (output.rs:106) ← Printer::print
/// (output.rs:244).
#[test]
fn regression_short_time_char_boundary() {
    checks::tail_text(&hex("ffffffffff4e20494e3d"));
}

/// `nflog-tail -o json` on a terminal, reading a syslogemu file whose prefix holds U+202E
/// (RIGHT-TO-LEFT OVERRIDE): such records have no JSON of their own, and `Printer::print`
/// writes `synthetic_json(r)` (src/tail/output.rs, the `None =>` arm of `OutputFormat::Json`)
/// without `sanitize_json`, unlike the `Some` arm. serde_json escapes C0 but not DEL, C1 or
/// the bidirectional controls, so they reach the terminal. Found by `tail_text` (several
/// crash files; `-minimize_crash` drifts to the `short_time` crash, so this input is the
/// hand-cut form of them); `fuzz/seeds/regressions/tail_text-json-terminal-bidi.bin`.
#[test]
fn regression_synthetic_json_not_sanitized() {
    checks::tail_text(b"Nov 27 20:59:32 h a\xe2\x80\xaeb IN= OUT=\n");
}
