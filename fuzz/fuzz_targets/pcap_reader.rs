//! `pcap_reader`: see [`netpol_nflog_fuzz::checks::pcap_reader`] for what it feeds and asserts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netpol_nflog_fuzz::checks::pcap_reader(data));
