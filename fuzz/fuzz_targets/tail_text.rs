//! `tail_text`: see [`netpol_nflog_fuzz::checks::tail_text`] for what it feeds and asserts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netpol_nflog_fuzz::checks::tail_text(data));
