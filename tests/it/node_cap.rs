//! The node-wide cap under a flood across many policies: real kernel traffic.
//!
//! In a private network namespace, 50 K3s-style NFLOG rules `OUTPUT -o lo -p udp --dport 9999
//! -j NFLOG --nflog-group 100 --nflog-prefix "DROP by policy ns/p-<i>"` (NFLOG does not end the
//! chain: every packet is logged by all 50, as a packet through several policy chains is on K3s),
//! then a DROP. The flood sender (benches/flood/flood.c) sends through them; each rule's packet
//! counter is the ground truth of the messages the kernel produced for that policy. The daemon
//! (standalone, a config file with a small `limits.node_limit`) must account for every one:
//!
//! * per policy: rule counter = syslogemu lines of the policy + its suppressed count, the same
//!   in the suppression summaries (JSON records, summed per limit key) and in
//!   `netpol_nflog_policy_suppressed`; over all policies, plus the messages lost in the kernel
//!   (nothing is expected to be lost with the 64 MiB buffer, and that is asserted);
//! * the node cap holds: phase A (per-policy limits far above the flood, the cap alone bites)
//!   writes at least the cap's burst and at most burst + rate × the daemon's whole life (+1, the
//!   GCRA bucket starts full and admits one more per period); everything it suppressed is the
//!   cap's (`netpol_nflog_messages_suppressed_node_cap`, `suppressed_node_cap` in the stats).
//!   Phase B (both limits bite, rates so slow the buckets cannot refill during the test): each
//!   policy's rule admits exactly its burst, the cap exactly its own out of those, in packet
//!   order, so every policy writes the same number of lines and the counts are exact.
//! * a policy the cap silenced entirely (it wrote nothing) is counted like the others.
//!
//! Needs root (network namespaces, iptables), `ip`, `iptables` and `gcc`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::metrics::{wait_metrics, Scrape};
use crate::support::{run, Daemon, Sandbox};

const PORT: u16 = 9999;
const POLICIES: usize = 50;
const NAMESPACE: &str = "ns";
const METRICS_PORT: u16 = 19109;
/// Packets sent per phase: each is one message per policy.
const PACKETS: u64 = 2_000;
/// Packets per second: 100,000 messages per second into a 64 MiB buffer (about 20 MB in all).
const RATE: u64 = 2_000;
/// How long NFLOG may hold messages before flushing (the daemon asks for 10 ms), plus margin.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

fn policy(i: usize) -> String {
    format!("p-{i}")
}

fn build_flood(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flood/flood.c");
    let bin = dir.join("flood");
    run(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&src));
    bin
}

/// A sandbox with the rules, and the flood sender built in it.
fn setup(tag: &str) -> (Sandbox, PathBuf) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (a network namespace, iptables rules)"
    );
    let sb = Sandbox::new(tag);
    install_rules(&sb);
    let flood_bin = build_flood(&sb.dir);
    (sb, flood_bin)
}

/// The 50 NFLOG rules, then the DROP.
fn install_rules(sb: &Sandbox) {
    let port = PORT.to_string();
    let m = ["-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", &port];
    for i in 0..POLICIES {
        let prefix = format!("DROP by policy {NAMESPACE}/{}", policy(i));
        sb.iptables(
            &[
                &m[..],
                &[
                    "-j",
                    "NFLOG",
                    "--nflog-group",
                    "100",
                    "--nflog-prefix",
                    &prefix,
                ],
            ]
            .concat(),
        );
    }
    sb.iptables(&[&m[..], &["-j", "DROP"]].concat());
}

/// Packet counter of each policy's NFLOG rule, by policy name.
fn rule_counters(sb: &Sandbox) -> BTreeMap<String, u64> {
    let out = run(sb.exec("iptables").args(["-L", "OUTPUT", "-v", "-x", "-n"]));
    let mut counters = BTreeMap::new();
    for line in out.lines().filter(|l| l.contains("NFLOG")) {
        let name = line
            .split(&format!("\"DROP by policy {NAMESPACE}/"))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no policy prefix in {line:?}"));
        let packets = line
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet counter in {line:?}"));
        counters.insert(name.to_string(), packets);
    }
    assert_eq!(counters.len(), POLICIES, "{out}");
    counters
}

/// syslogemu lines per policy (every line must name one of them).
fn lines_per_policy(log: &Path) -> BTreeMap<String, u64> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut lines = BTreeMap::new();
    for line in text.lines() {
        let name = line
            .split(&format!(" DROP by policy {NAMESPACE}/"))
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("a syslogemu line of no policy: {line:?}"));
        *lines.entry(name.to_string()).or_default() += 1;
    }
    lines
}

/// A limit: the rate as the config file spells it, and the burst.
type Limit = (&'static str, u32);

struct Run {
    counters: BTreeMap<String, u64>,
    lines: BTreeMap<String, u64>,
    /// Suppressed per policy, from the suppression summaries.
    summaries: BTreeMap<String, u64>,
    /// Suppressed per policy, from `netpol_nflog_policy_suppressed`.
    metrics: BTreeMap<String, u64>,
    /// The last scrape, once the daemon had handled everything.
    scrape: Scrape,
    stats: serde_json::Value,
    /// The syslogemu file's `written` in the stats.
    written_file: u64,
    /// From before the daemon was started to after it exited: its limiter lived within.
    lifetime: Duration,
}

impl Run {
    fn stat(&self, key: &str) -> u64 {
        self.stats[key]
            .as_u64()
            .unwrap_or_else(|| panic!("stats have no integer {key:?}: {}", self.stats))
    }

    fn written(&self) -> u64 {
        self.lines.values().sum()
    }

    fn report(&self) -> String {
        format!(
            "counters {:?}\nlines {:?}\nsummaries {:?}\nmetrics {:?}\nstats {}\nlifetime {:?}",
            self.counters, self.lines, self.summaries, self.metrics, self.stats, self.lifetime
        )
    }

    /// Every message accounted for: per policy and in total.
    fn check_accounting(&self, what: &str) {
        let report = self.report();
        let lost = self.stat("lost");
        assert_eq!(
            lost, 0,
            "{what}: messages lost with a 64 MiB buffer\n{report}"
        );
        let sent: u64 = self.counters.values().sum();
        let suppressed = self.stat("suppressed");
        assert_eq!(
            self.written() + suppressed + lost,
            sent,
            "{what}: lines + suppressed + lost != the rules' counters\n{report}"
        );
        assert_eq!(
            self.written_file,
            self.written(),
            "{what}: the stats' written count is not the lines in the file\n{report}"
        );
        for i in 0..POLICIES {
            let p = policy(i);
            let counter = self.counters[&p];
            let lines = self.lines.get(&p).copied().unwrap_or(0);
            let summary = self.summaries.get(&p).copied().unwrap_or(0);
            let metric = self.metrics.get(&p).copied().unwrap_or(0);
            assert_eq!(
                counter, PACKETS,
                "{what}: rule of {p} did not see every packet"
            );
            assert_eq!(
                (lines + summary, lines + metric),
                (counter, counter),
                "{what}: {p}: lines {lines} + suppressed (summaries {summary}, metric {metric}) != rule counter {counter}\n{report}"
            );
        }
        assert_eq!(self.summaries.values().sum::<u64>(), suppressed, "{report}");
        assert_eq!(
            self.scrape
                .value("netpol_nflog_messages_suppressed_total", &[]),
            suppressed as f64,
            "{report}"
        );
    }
}

/// One daemon run with these limits per policy and for the node: start, flood, wait until
/// everything is handled and published, SIGTERM; what it wrote and counted.
fn measured_run(sb: &Sandbox, flood_bin: &Path, tag: &str, per_policy: Limit, node: Limit) -> Run {
    let config = format!(
        "[kubernetes]\nmode = \"off\"\n\n[limits]\nenabled = true\n\
         default_limit = \"{}\"\ndefault_burst = {}\n\
         unattributed_limit = \"{}\"\nunattributed_burst = {}\n\
         node_limit = \"{}\"\nnode_burst = {}\nsummary_interval_s = 1\n",
        per_policy.0, per_policy.1, per_policy.0, per_policy.1, node.0, node.1,
    );
    let log = sb.path(&format!("{tag}.syslogemu.log"));
    let stats_path = sb.path(&format!("{tag}.stats.json"));
    sb.iptables(&["-Z", "OUTPUT"]);
    let started = Instant::now();
    let mut d = Daemon::cmd(sb)
        .tag(tag)
        .config(&config)
        .syslogemu(&log)
        .stats(&stats_path)
        .metrics(METRICS_PORT)
        .args(["--stdout", "json"])
        .quiet()
        .start();
    let out = run(sb.exec(flood_bin).args([
        "127.0.0.1",
        &PORT.to_string(),
        &PACKETS.to_string(),
        &RATE.to_string(),
    ]));
    assert!(
        out.contains(&format!("sent={PACKETS} ")),
        "{tag}: unexpected flood output: {out}"
    );
    sleep(FLUSH_WAIT);
    let counters = rule_counters(sb);
    let total: u64 = counters.values().sum();
    // Everything received (or lost), and the per-policy counts published since the last
    // suppression: they add up to the live total only then.
    let scrape = wait_metrics(
        sb,
        METRICS_PORT,
        Duration::from_secs(20),
        "every message handled and the per-policy counts published",
        |s| {
            let received = s.value("netpol_nflog_messages_received_total", &[]);
            let lost = s.value("netpol_nflog_messages_lost_total", &[]);
            let suppressed = s.value("netpol_nflog_messages_suppressed_total", &[]);
            let per_policy: f64 = s
                .all("netpol_nflog_policy_suppressed_total")
                .iter()
                .map(|x| x.value)
                .sum();
            let mut problems = Vec::new();
            if received + lost != total as f64 {
                problems.push(format!(
                    "received {received} + lost {lost} != rule counters {total}"
                ));
            }
            if per_policy != suppressed {
                problems.push(format!(
                    "sum of netpol_nflog_policy_suppressed {per_policy} != netpol_nflog_messages_suppressed {suppressed}"
                ));
            }
            problems
        },
    );
    let status = d.terminate();
    let lifetime = started.elapsed();
    assert!(
        status.success(),
        "{tag}: netpol-nflogd exited with {status}; stderr:\n{}",
        d.stderr_text()
    );
    let mut summaries = BTreeMap::new();
    for r in d.json_records() {
        if r["type"] == "suppressed" {
            let key = r["limit_key"].as_str().unwrap_or_default();
            let name = key
                .strip_prefix(&format!("{NAMESPACE}/"))
                .unwrap_or_else(|| panic!("a summary of another key: {r}"));
            assert_eq!(r["policy"], key, "{r}");
            *summaries.entry(name.to_string()).or_default() += r["suppressed"].as_u64().unwrap();
        }
    }
    let metrics = scrape
        .all("netpol_nflog_policy_suppressed_total")
        .iter()
        .map(|s| {
            assert_eq!(
                s.labels.get("namespace").map(String::as_str),
                Some(NAMESPACE)
            );
            (s.labels["policy"].clone(), s.value as u64)
        })
        .collect();
    let stats: serde_json::Value = fs::read_to_string(&stats_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("{tag}: no stats file; stderr:\n{}", d.stderr_text()));
    let written = &stats["written"];
    let written_file = written
        .get("syslogemu-file")
        .or_else(|| written.get(format!("file:{}", log.display())))
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("{tag}: stats have no written count of the file: {stats}"));
    let r = Run {
        written_file,
        counters,
        lines: lines_per_policy(&log),
        summaries,
        metrics,
        scrape,
        stats,
        lifetime,
    };
    eprintln!("{tag}:\n{}", r.report());
    r
}

#[test]
fn node_cap_holds_under_a_flood_across_50_policies() {
    let (sb, flood_bin) = setup("nodecap");

    // Phase A: the node cap alone bites (each policy's 2,000 messages are far below its
    // burst of 10,000).
    let (rate, burst) = (200u64, 300u64);
    let a = measured_run(
        &sb,
        &flood_bin,
        "cap-alone",
        ("10000/second", 10_000),
        ("200/second", burst as u32),
    );
    a.check_accounting("cap alone");
    let report = a.report();
    let written = a.written();
    // The bucket starts full (`burst`) and admits one more per 1/rate: over the daemon's whole
    // life at most burst + rate × life, +1 for the period the life ends in.
    let bound = burst + (rate as f64 * a.lifetime.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        written <= bound,
        "{written} lines written, the node cap allows at most {bound} in {:?}\n{report}",
        a.lifetime
    );
    assert!(
        written >= burst,
        "{written} lines written: the cap's burst of {burst} was not used up\n{report}"
    );
    let suppressed = a.stat("suppressed");
    assert!(suppressed > 0, "{report}");
    assert_eq!(a.stat("suppressed_node_cap"), suppressed, "{report}");
    assert_eq!(
        a.scrape
            .value("netpol_nflog_messages_suppressed_node_cap_total", &[]),
        suppressed as f64,
        "all suppression was the node cap's\n{report}"
    );
    for i in 0..POLICIES {
        assert!(
            a.summaries.get(&policy(i)).copied().unwrap_or(0) > 0,
            "{}: nothing suppressed\n{report}",
            policy(i)
        );
    }

    // Phase B: both bite, and neither bucket can refill during the test (one message a minute
    // per policy, one an hour for the node): each policy's rule admits its first 20 messages
    // (1,000 in all, the first 20 packets), the cap the first 300 of those: packets 1-6, so
    // every policy writes exactly 6 lines.
    let b = measured_run(&sb, &flood_bin, "both", ("1/minute", 20), ("1/hour", 300));
    assert!(
        b.lifetime < Duration::from_secs(60),
        "phase B took {:?}: the per-policy buckets refilled, the exact counts below do not hold",
        b.lifetime
    );
    b.check_accounting("both limits");
    let report = b.report();
    assert_eq!(b.written(), 300, "{report}");
    for i in 0..POLICIES {
        assert_eq!(b.lines.get(&policy(i)), Some(&6), "{}\n{report}", policy(i));
    }
    let rule_admitted = 20 * POLICIES as u64;
    assert_eq!(
        b.stat("suppressed"),
        POLICIES as u64 * PACKETS - 300,
        "{report}"
    );
    assert_eq!(
        b.stat("suppressed_node_cap"),
        rule_admitted - 300,
        "the cap suppressed what the rules admitted beyond its burst\n{report}"
    );
    assert_eq!(
        b.scrape
            .value("netpol_nflog_messages_suppressed_node_cap_total", &[]),
        (rule_admitted - 300) as f64,
        "{report}"
    );
}

/// A policy whose every message the cap held back (it wrote nothing) is still counted: in its
/// suppression summaries and in `netpol_nflog_policy_suppressed`, like any other. With a cap of
/// 10 for the whole test, the first packet's messages of p-0 … p-9 are written and nothing else.
#[test]
fn node_cap_counts_policies_it_silenced_entirely() {
    let (sb, flood_bin) = setup("nodecap0");
    let r = measured_run(
        &sb,
        &flood_bin,
        "silenced",
        ("10000/second", 10_000),
        ("1/hour", 10),
    );
    let report = r.report();
    for i in 0..POLICIES {
        let want = u64::from(i < 10);
        assert_eq!(
            r.lines.get(&policy(i)).copied().unwrap_or(0),
            want,
            "{}\n{report}",
            policy(i)
        );
    }
    r.check_accounting("silenced");
    assert_eq!(
        r.stat("suppressed_node_cap"),
        r.stat("suppressed"),
        "{report}"
    );
}
