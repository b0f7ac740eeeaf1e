//! Loss accounting under overload, against the real kernel.
//!
//! In a private network namespace, the K3s-style rule pair
//! `OUTPUT -o lo -p udp --dport 9999 -j NFLOG --nflog-group 100` + `-j DROP`
//! logs every packet the flood sender (benches/flood/flood.c) emits. The NFLOG
//! rule's packet counter is the ground truth of how many messages the kernel
//! produced, so for netpol-nflogd:
//!
//! * phase 1 (tiny `--rcvbuf 4096`, 200,000 packets flat out), run twice:
//!   (a) with the daemon running, (b) with the daemon SIGSTOPped during the
//!   flood so that the overrun is certain (`lost > 0` is asserted there).
//!   Every message must be accounted for exactly:
//!   `lines written + stats.lost == rule counter`, and `stats.written == lines`;
//! * phase 2 (default buffer, 2,000 packets at 20,000/s): nothing is lost and
//!   `lines == rule counter`.
//!
//! Needs root (network namespaces, iptables), `ip`, `iptables` and `gcc`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use crate::support::{run, Daemon, Sandbox};

const PORT: u16 = 9999;
const PREFIX: &str = "DROP by policy default/bench";
/// How long NFLOG may hold messages before flushing (kernel default 1 s), plus margin.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// A tiny receive buffer: the socket overruns.
const SMALL_RCVBUF: &[&str] = &["--rcvbuf", "4096"];

/// The daemon writing `TAG.syslogemu.log` and `TAG.stats.json`, started; with both paths.
fn start_daemon(sb: &Sandbox, tag: &str, extra: &[&str]) -> (Daemon, PathBuf, PathBuf) {
    let log = sb.path(&format!("{tag}.syslogemu.log"));
    let stats = sb.path(&format!("{tag}.stats.json"));
    let d = Daemon::cmd(sb)
        .tag(tag)
        .syslogemu(&log)
        // Syslogemu only, no tail ring: the message path flat out, as ulogd2's LOGEMU. (With a
        // ring the daemon also builds an event per packet and falls further behind; a loss at the
        // very end of a congestion period is then more likely, and the kernel reports ENOBUFS
        // only once per congestion period, so such a trailing loss is seen by no later message.)
        .args([
            "--stdout",
            "none",
            "--tail-socket",
            "",
            "--no-rate-limit",
            "--group",
            "100",
        ])
        .stats(&stats)
        .args(extra)
        .start();
    (d, log, stats)
}

fn build_flood(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flood/flood.c");
    let bin = dir.join("flood");
    run(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&src));
    bin
}

/// Sends `count` packets at `rate` pps (0 = flat out) from inside `sb`; returns packets sent.
fn flood(sb: &Sandbox, flood: &Path, count: u64, rate: u64) -> u64 {
    let out = run(sb.exec(flood).args([
        "127.0.0.1",
        &PORT.to_string(),
        &count.to_string(),
        &rate.to_string(),
    ]));
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix("sent="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected flood output: {out}"))
}

fn count_lines(path: &Path) -> u64 {
    let mut buf = Vec::new();
    match fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf).expect("read log");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("open {}: {e}", path.display()),
    }
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

struct Stats {
    raw: String,
    json: serde_json::Value,
    /// The syslogemu file the run wrote.
    log: PathBuf,
}

impl Stats {
    fn read(path: &Path, log: &Path, stderr: &str) -> Stats {
        let raw = fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "no stats file {} ({e}); daemon stderr:\n{stderr}",
                path.display()
            )
        });
        let json =
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("bad stats JSON ({e}): {raw}"));
        Stats {
            raw,
            json,
            log: log.to_path_buf(),
        }
    }

    fn get(&self, key: &str) -> u64 {
        self.json
            .get(key)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("stats have no integer {key:?}: {}", self.raw))
    }

    /// Lines written to the syslogemu file: `written."syslogemu-file"` (the
    /// documented key), or `written."file:<path>"` (per-sink naming).
    fn written_syslogemu(&self) -> u64 {
        let w = self.json.get("written");
        let by_path = format!("file:{}", self.log.display());
        w.and_then(|w| w.get("syslogemu-file").or_else(|| w.get(&by_path)))
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| {
                panic!(
                    "stats have neither written.\"syslogemu-file\" nor written.{by_path:?}: {}",
                    self.raw
                )
            })
    }
}

/// One daemon run: start, zero counters, flood, wait for the flush, SIGTERM.
/// With `stopped`, the daemon is SIGSTOPped for the duration of the flood and
/// SIGCONTinued right after it (before the kernel's 1 s flush timer fires for
/// the last batch, so that batch is delivered and any earlier loss shows up as
/// a sequence gap). Returns (packets sent, rule counter, lines written, stats).
fn measured_run(
    sb: &Sandbox,
    flood_bin: &Path,
    tag: &str,
    daemon_args: &[&str],
    (count, rate): (u64, u64),
    stopped: bool,
) -> (u64, u64, u64, Stats) {
    let (mut d, log, stats_path) = start_daemon(sb, tag, daemon_args);
    sb.iptables(&["-Z", "OUTPUT"]);
    if stopped {
        d.signal(libc::SIGSTOP);
    }
    let sent = flood(sb, flood_bin, count, rate);
    if stopped {
        d.signal(libc::SIGCONT);
    }
    sleep(FLUSH_WAIT);
    // One more packet once the backlog is read: its sequence number measures a loss at the very
    // end of the flood, which nothing else can (the kernel reports ENOBUFS once per congestion
    // period, and no later message would show the gap).
    flood(sb, flood_bin, 1, 0);
    sleep(FLUSH_WAIT);
    let status = d.terminate();
    let stderr = d.stderr_text();
    assert!(
        status.success(),
        "{tag}: netpol-nflogd exited with {status} after SIGTERM; stderr:\n{stderr}"
    );
    let counter = sb.rule_counter("OUTPUT", "nflog-prefix");
    let lines = count_lines(&log);
    let stats = Stats::read(&stats_path, &log, &stderr);
    eprintln!(
        "{tag}: sent={sent} counter={counter} lines={lines} stats={}",
        stats.raw.trim()
    );
    (sent, counter, lines, stats)
}

/// lines + lost == rule counter, and the stats' written count == lines.
fn check_accounting(what: &str, counter: u64, lines: u64, stats: &Stats) {
    let lost = stats.get("lost");
    assert_eq!(
        stats.written_syslogemu(),
        lines,
        "{what}: stats written.syslogemu-file differs from the lines in the file: {}",
        stats.raw
    );
    assert_eq!(
        lines + lost,
        counter,
        "{what}: lines ({lines}) + lost ({lost}) != NFLOG rule counter ({counter}); stats: {}",
        stats.raw
    );
}

#[test]
fn overload_loss_is_accounted_exactly() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (it creates a network namespace and iptables rules)"
    );
    let sb = Sandbox::new("overload");
    sb.udp_log_and_drop(PORT, PREFIX);
    let flood_bin = build_flood(&sb.dir);
    let phase =
        |tag, args, count, stopped| measured_run(&sb, &flood_bin, tag, args, count, stopped);

    // Phase 1a: tiny receive buffer, flat-out flood, daemon running. Whether the
    // socket overruns depends on the machine's speed, so only the accounting is
    // asserted here: what was lost (if anything) must be counted, exactly.
    let n1 = 200_000;
    let (sent, counter, lines, stats) = phase("overload", SMALL_RCVBUF, (n1, 0), false);
    assert_eq!(sent, n1, "flood did not send everything");
    assert_eq!(
        counter,
        n1 + 1,
        "the NFLOG rule did not see every packet (and the probe)"
    );
    check_accounting("overload (running)", counter, lines, &stats);

    // Phase 1b: same, but the daemon is SIGSTOPped while the flood runs, so
    // the overrun is certain (as in the ulogd ENOBUFS experiment).
    let (sent, counter, lines, stats) = phase("overload-stopped", SMALL_RCVBUF, (n1, 0), true);
    assert_eq!(sent, n1, "flood did not send everything");
    assert_eq!(
        counter,
        n1 + 1,
        "the NFLOG rule did not see every packet (and the probe)"
    );
    assert!(
        stats.get("lost") > 0,
        "no loss with --rcvbuf 4096 while stopped during a 200,000-packet flood: {}",
        stats.raw
    );
    check_accounting("overload (stopped)", counter, lines, &stats);

    // Phase 2: default buffer, modest rate: nothing may be lost.
    let n2 = 2_000;
    let (sent, counter, lines, stats) = phase("modest", &[], (n2, 20_000), false);
    assert_eq!(sent, n2);
    assert_eq!(
        counter,
        n2 + 1,
        "the NFLOG rule did not see every packet (and the probe)"
    );
    assert_eq!(
        stats.get("lost"),
        0,
        "loss at 20,000 packets/s with the default buffer: {}",
        stats.raw
    );
    assert_eq!(
        lines, counter,
        "lines written != NFLOG rule counter; stats: {}",
        stats.raw
    );
    assert_eq!(
        stats.written_syslogemu(),
        lines,
        "stats written.syslogemu-file != lines: {}",
        stats.raw
    );
}
