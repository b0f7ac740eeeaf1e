//! What each fuzz target asserts, as plain functions over bytes.
//!
//! In: one fuzz input. Out: nothing, or a panic naming the broken invariant. The libFuzzer
//! targets in `fuzz_targets/` call these, and `tests/it/fuzz_regressions.rs` includes this same
//! file (`#[path]`) to replay the committed seeds and every minimised crash, so a regression
//! test checks exactly what the fuzzer checked. Only `netpol_nflog` and `serde_json` are used,
//! which both crates have.

use std::io::Cursor;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use netpol_nflog::config::{ConfigFile, Sink};
use netpol_nflog::decode::{self, protocol_name};
use netpol_nflog::event::{Event, Timestamp};
use netpol_nflog::limit::{parse_annotations, parse_burst, parse_limit, Limit, Limiter};
use netpol_nflog::pipeline::Processor;
use netpol_nflog::render::syslog::{MsgFormat, Rfc, SyslogFormat};
use netpol_nflog::render::{Format, Renderer};
use netpol_nflog::source::nflog::{build, Messages, Netlink, NflogMsg};
use netpol_nflog::stats::Stats;
use netpol_nflog::tail::filter::Filter;
use netpol_nflog::tail::input::detect;
use netpol_nflog::tail::output::{OutputFormat, Printer};
use netpol_nflog::tail::pcap::{event, if_label, swap_tlv_headers, Reader};
use netpol_nflog::tail::replay::PcapSource;
use netpol_nflog::tail::{Item, Record, Source};

/// The receive time the targets use when a message carries no kernel timestamp.
const RECEIVED: Timestamp = Timestamp {
    sec: 1_700_000_000,
    usec: 123_456,
};

/// Items read from one pcap at most: bounds the work per input, not a limit of the reader.
const MAX_ITEMS: usize = 4096;

/// `out` is exactly one line: one `\n`, at the end.
fn assert_one_line(out: &[u8], what: &str) {
    let newlines = out.iter().filter(|&&b| b == b'\n').count();
    assert!(
        newlines == 1 && out.last() == Some(&b'\n'),
        "{what}: {newlines} newlines in {:?}",
        String::from_utf8_lossy(out)
    );
}

/// `out` holds `lines` lines and nothing after the last one.
fn assert_lines(out: &[u8], lines: u64, what: &str) {
    let newlines = out.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(
        newlines,
        lines,
        "{what}: {newlines} newlines for {lines} lines reported in {:?}",
        String::from_utf8_lossy(out)
    );
    assert!(
        out.is_empty() || out.last() == Some(&b'\n'),
        "{what}: text after the last line"
    );
}

fn assert_json(line: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(line) {
        panic!(
            "{what}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// The processor as the daemon builds it for a file and stdout: no rate limit (so every
/// parsed message must come out), both line formats and two syslog layouts.
fn processor(correlation: Option<Duration>) -> (Processor, Arc<AtomicUsize>) {
    let limiter = Limiter::new(false, Limit::DEFAULT, Limit::DEFAULT);
    let clients = Arc::new(AtomicUsize::new(1));
    let mut p = Processor::new(
        Renderer::new("node", "node"),
        limiter,
        &[Format::Syslogemu, Format::Json],
        Stats::new(),
        true,
    )
    .with_tail(clients.clone(), false);
    if let Some(window) = correlation {
        p = p.with_correlation(window);
    }
    for (rfc, msg) in [
        (Rfc::Rfc3164Local, MsgFormat::Syslogemu),
        (Rfc::Rfc5424, MsgFormat::Json),
    ] {
        p.add_syslog_output(SyslogFormat {
            rfc,
            facility: 16,
            severity: 4,
            app_name: "netpol-nflogd".into(),
            hostname: "node".into(),
            node_name: "node".into(),
            msg,
        });
    }
    (p, clients)
}

/// `nflog_batch`: one `recv()` buffer through `Messages`, `NflogMsg::parse`, `decode` and the
/// renderers, alone and through a `Processor`. Every parsed message renders as exactly one
/// syslogemu line and one JSON line (valid JSON), and every chunk holds as many `\n` as it
/// reports lines.
pub fn nflog_batch(data: &[u8]) {
    let mut renderer = Renderer::new("node", "node");
    let mut out = Vec::new();
    let mut parsed = 0u64;
    for m in Messages::new(data) {
        let body = match m {
            Ok(Netlink::Packet(body)) => body,
            _ => continue,
        };
        let Ok(msg) = NflogMsg::parse(body) else {
            continue;
        };
        parsed += 1;
        let _ = msg.mac_header();
        let ev = event(msg, RECEIVED, if_label(msg.indev), if_label(msg.outdev));
        render_one_line_each(&mut renderer, &ev, &mut out);
    }

    // The daemon's path: the processor (its own time choice, interface names, tail records).
    let (mut p, _clients) = processor(None);
    let mut acks = Vec::new();
    p.handle_batch(data, RECEIVED, &mut acks);
    p.finish();
    for (netpol_nflog::pipeline::SinkId(i), chunk) in p.take_chunks() {
        let what = ["syslogemu", "json", "syslog 3164", "syslog 5424"][i];
        assert_lines(&chunk.data, chunk.lines, what);
        assert_eq!(chunk.lines, parsed, "{what}: one line per parsed message");
        if i == 1 {
            for line in chunk.data.split_inclusive(|&b| b == b'\n') {
                assert_json(line, what);
            }
        }
    }
    if let Some(chunk) = p.take_tail() {
        assert_lines(&chunk.data, chunk.lines, "tail");
        assert_eq!(chunk.lines, parsed, "tail: one record per parsed message");
        for line in chunk.data.split_inclusive(|&b| b == b'\n') {
            assert_json(line, "tail");
            let text = String::from_utf8_lossy(line);
            match Item::from_json_line(text.trim_end()) {
                Ok(Item::Event(_)) => {}
                other => panic!("tail record does not read back as an event: {other:?}: {text}"),
            }
        }
    }

    // With correlation, JSON is one event per packet (never more than messages), syslogemu
    // stays one line per message.
    let (mut p, _clients) = processor(Some(Duration::from_millis(100)));
    p.handle_batch(data, RECEIVED, &mut acks);
    p.expire(true);
    for (netpol_nflog::pipeline::SinkId(i), chunk) in p.take_chunks() {
        let what = [
            "corr syslogemu",
            "corr json",
            "corr syslog 3164",
            "corr syslog 5424",
        ][i];
        assert_lines(&chunk.data, chunk.lines, what);
        if i == 0 {
            assert_eq!(chunk.lines, parsed, "{what}: one line per parsed message");
        } else {
            assert!(chunk.lines <= parsed, "{what}: more events than messages");
        }
        if i == 1 {
            for line in chunk.data.split_inclusive(|&b| b == b'\n') {
                assert_json(line, what);
            }
        }
    }
}

/// `decode`: family (byte 0), ethertype (bytes 1-2, big-endian), payload (the rest). No
/// panic, and the decoded packet renders as one syslogemu line and one JSON line.
pub fn decode(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let family = data[0];
    let hw_protocol = u16::from_be_bytes([data[1], data[2]]);
    let payload = &data[3..];
    let packet = decode::decode(family, hw_protocol, payload);
    let _ = packet.addrs();
    let _ = packet.ports();
    let _ = packet.is_later_fragment();
    if let Some(p) = packet.protocol() {
        let _ = protocol_name(p);
    }
    let msg = NflogMsg {
        family,
        hw_protocol,
        group: 100,
        prefix: Some(b"DROP by policy default/deny"),
        payload,
        ..Default::default()
    };
    let ev = event(msg, RECEIVED, if_label(2), if_label(0));
    render_one_line_each(&mut Renderer::new("node", "node"), &ev, &mut Vec::new());
}

/// `ev` as syslogemu and as JSON (into `out`): one line each, the JSON valid.
fn render_one_line_each(renderer: &mut Renderer, ev: &Event, out: &mut Vec<u8>) {
    out.clear();
    renderer.render(Format::Syslogemu, ev, out);
    assert_one_line(out, "syslogemu");
    out.clear();
    renderer.render(Format::Json, ev, out);
    assert_one_line(out, "json");
    assert_json(out, "json");
}

/// A record `nflog-tail` read: whatever it prints for a terminal is one line free of control
/// characters, and its JSON (when it has some) is JSON.
fn check_record(r: &Record) {
    if let Some(json) = &r.json {
        assert!(
            !json.contains('\n'),
            "record JSON holds a newline: {json:?}"
        );
        assert_json(json.as_bytes(), "record json");
    }
    if let Some(line) = &r.syslogemu {
        assert!(
            !line.contains('\n'),
            "record syslogemu holds a newline: {line:?}"
        );
    }
    for format in [
        OutputFormat::Compact,
        OutputFormat::Syslogemu,
        OutputFormat::Json,
    ] {
        let mut out = Vec::new();
        let mut printer = Printer::new(&mut out, format, false, true);
        if printer.print(r).is_err() {
            continue;
        }
        drop(printer);
        if out.is_empty() {
            // No syslogemu line to print (a JSON record): warned once, nothing written.
            continue;
        }
        // syslogemu: one line per NFLOG message of the event (a packet several rules logged is
        // one event); the other formats: one line per event.
        let lines = match format {
            OutputFormat::Syslogemu => 1 + r.further.len() as u64,
            _ => 1,
        };
        assert_lines(&out, lines, &format!("{format:?} output"));
        let text = String::from_utf8_lossy(&out);
        let body = text[..text.len() - 1].replace('\n', " ");
        assert!(
            !body.chars().any(|c| c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "{format:?} output for a terminal holds a control character: {body:?}"
        );
    }
}

/// `pcap_reader`: `nflog-tail -r` on a pcap. No panic, no unbounded allocation, every record
/// checked by [`check_record`].
pub fn pcap_reader(data: &[u8]) {
    let _ = detect(data);
    let mut copy = data.to_vec();
    swap_tlv_headers(&mut copy, true);
    swap_tlv_headers(&mut copy, false);
    let Ok(reader) = Reader::new(Cursor::new(data), "fuzz.pcap".into()) else {
        return;
    };
    let mut src = PcapSource::new(reader, "node", None);
    for _ in 0..MAX_ITEMS {
        match src.next_item() {
            Ok(Some(Item::Event(r))) => check_record(&r),
            Ok(Some(_)) => {}
            Ok(None) => break,
            // A bad NFLOG message is one record: the next may be fine. Anything else ends it.
            Err(e) if e.kind() == "record" => continue,
            Err(_) => break,
        }
    }
}

/// `tail_text`: `nflog-tail -r` on syslogemu or JSON lines, and `--filter` expressions. Each
/// line is read both ways (as `Lines` does after `detect`: lossy UTF-8, line end trimmed), each
/// line is also tried as a filter, and every record read is matched and printed.
pub fn tail_text(data: &[u8]) {
    let _ = detect(data);
    let text = String::from_utf8_lossy(data);
    let mut filter = Filter::default();
    for line in text.split_inclusive('\n') {
        let line = line.trim_end_matches(['\n', '\r']);
        if let Ok(f) = Filter::parse(line) {
            let _ = f.to_string();
            let _ = f.is_empty();
            filter = f;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(r) = Record::from_syslogemu(line) {
            let _ = filter.matches(&r);
            check_record(&r);
        }
        if let Ok(Item::Event(r)) = Item::from_json_line(line) {
            let _ = filter.matches(&r);
            check_record(&r);
        }
    }
}

/// A limit within what the documentation promises: 1 to 10000 per second, per second, minute,
/// hour or day, burst 1 to 10000.
fn assert_limit_in_range(count: u32, per: Duration, what: &str) {
    let units = [1, 60, 3600, 86400].map(Duration::from_secs);
    assert!(units.contains(&per), "{what}: period {per:?}");
    assert!(count >= 1, "{what}: count {count}");
    assert!(
        count as f64 / per.as_secs_f64() <= 10000.0,
        "{what}: {count} per {per:?} is above 10000/s"
    );
}

/// `annotations`: byte 0 says which annotations are present (bit 0 limit, bit 1 burst), the
/// rest is `limit NUL burst`. A returned `Limit` is within the documented ranges, a bad value
/// yields the defaults, and a limiter built from it works.
pub fn annotations(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (l, b) = match rest.iter().position(|&c| c == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let (l, b) = (String::from_utf8_lossy(l), String::from_utf8_lossy(b));
    let limit = (flags & 1 != 0).then_some(&*l);
    let burst = (flags & 2 != 0).then_some(&*b);

    for s in [&*l, &*b] {
        if let Ok((count, per)) = parse_limit(s) {
            assert_limit_in_range(count, per, "parse_limit");
        }
        if let Ok(n) = parse_burst(s) {
            assert!((1..=10000).contains(&n), "parse_burst: {n}");
        }
    }

    let (got, err) = parse_annotations(limit, burst);
    assert_limit_in_range(got.count, got.per, "parse_annotations");
    assert!(
        (1..=10000).contains(&got.burst),
        "parse_annotations: burst {}",
        got.burst
    );
    if err.is_some() {
        assert_eq!(
            got,
            Limit::DEFAULT,
            "a bad annotation falls back to the defaults"
        );
    }
    let _ = err.map(|e| e.to_string());

    let mut limiter = Limiter::new(true, got, got);
    limiter.set_limit(b"default/p", Some(got));
    for _ in 0..3 {
        let _ = limiter.allow(b"default/p");
        let _ = limiter.allow(b"");
    }
    let _ = limiter.take_summaries();
    let _ = limiter.totals();
    limiter.set_limit(b"default/p", None);
}

/// `config`: `ConfigFile::parse` and `resolve` on arbitrary TOML. No panic; a valid config yields
/// limits within range, and each syslog sink it names renders an event as exactly one line.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match ConfigFile::parse(text, "fuzz.toml") {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let cfg = match file.resolve() {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let (policy, unattributed) = (cfg.limits.policy, cfg.limits.unattributed);
    for l in [policy, unattributed] {
        assert_limit_in_range(l.count, l.per, "config limits");
        assert!((1..=10000).contains(&l.burst), "config burst {}", l.burst);
    }
    let payload = decode::build::ipv4(
        6,
        64,
        0,
        0,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        &decode::build::tcp(40000, 5432, 1, 0, 0x02, 64240, 0),
    );
    let mut buf = Vec::new();
    build::Packet {
        prefix: b"DROP by policy default/deny",
        payload: &payload,
        ..Default::default()
    }
    .encode(&mut buf);
    let Some(Ok(Netlink::Packet(body))) = Messages::new(&buf).next() else {
        panic!("the built message does not parse");
    };
    let Ok(msg) = NflogMsg::parse(body) else {
        panic!("the built message does not parse");
    };
    let ev: Event<'_> = event(msg, RECEIVED, if_label(2), if_label(3));
    let mut renderer = Renderer::new(&cfg.hostname, &cfg.node_name);
    let mut out = Vec::new();
    for sink in &cfg.sinks {
        if let Sink::Syslog(sys) = sink {
            let _ = sys.name();
            let fmt = sys.format(&cfg.hostname, &cfg.node_name);
            out.clear();
            renderer.render_syslog(&fmt, &ev, &mut out);
            assert_one_line(&out, "syslog message");
        }
    }
    for format in [Format::Syslogemu, Format::Json] {
        out.clear();
        renderer.render(format, &ev, &mut out);
        assert_one_line(&out, "configured renderer");
    }
}
