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
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const GROUP: u16 = 100;
const PORT: u16 = 9999;
const PREFIX: &str = "DROP by policy default/bench";
/// How long NFLOG may hold messages before flushing (kernel default 1 s), plus margin.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("netpol-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A network namespace with `lo` up and the NFLOG + DROP rules; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Netns {
        // A leftover from a crashed run with the same PID would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        let port = PORT.to_string();
        let group = GROUP.to_string();
        let rule = [
            "-A",
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "udp",
            "--dport",
            port.as_str(),
            "-j",
        ];
        run(ns.exec("iptables").args(rule).args([
            "NFLOG",
            "--nflog-group",
            &group,
            "--nflog-prefix",
            PREFIX,
        ]));
        run(ns.exec("iptables").args(rule).arg("DROP"));
        ns
    }

    /// `ip netns exec NAME PROGRAM`
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    fn zero_counters(&self) {
        run(self.exec("iptables").args(["-Z", "OUTPUT"]));
    }

    /// Packet counter of the NFLOG rule in OUTPUT.
    fn nflog_counter(&self) -> u64 {
        let out = run(self
            .exec("iptables")
            .args(["-L", "OUTPUT", "-v", "-x", "-n"]));
        out.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"NFLOG")).then(|| f[0].parse::<u64>().expect("counter"))
            })
            .unwrap_or_else(|| panic!("no NFLOG rule in:\n{out}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running netpol-nflogd; killed (by PID) on drop if still running.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(ns: &Netns, dir: &Path, tag: &str, extra: &[&str]) -> (Daemon, PathBuf, PathBuf) {
        let log = dir.join(format!("{tag}.syslogemu.log"));
        let stats = dir.join(format!("{tag}.stats.json"));
        let stderr = dir.join(format!("{tag}.stderr"));
        let child = ns
            .exec(env!("CARGO_BIN_EXE_netpol-nflogd"))
            .arg("--syslogemu-file")
            .arg(&log)
            .args([
                "--stdout",
                "none",
                "--no-rate-limit",
                "--group",
                &GROUP.to_string(),
            ])
            .arg("--stats-file")
            .arg(&stats)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn netpol-nflogd");
        let mut d = Daemon { child, stderr };
        d.wait_bound();
        (d, log, stats)
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_bound(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self
                .stderr_text()
                .contains(&format!("bound NFLOG group {GROUP}"))
            {
                return;
            }
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "netpol-nflogd exited ({st}) before binding; stderr:\n{}",
                    self.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "netpol-nflogd did not log \"bound NFLOG group {GROUP}\" within 15 s; stderr:\n{}",
                self.stderr_text()
            );
            sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's PID; the child is not reaped yet.
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill({sig}): {}", std::io::Error::last_os_error());
    }

    /// SIGTERM, then wait (up to 30 s) for the drain and exit.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "netpol-nflogd still running 30 s after SIGTERM; stderr:\n{}",
                self.stderr_text()
            );
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion, panicking with its output if it fails; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_flood(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flood/flood.c");
    let bin = dir.join("flood");
    run(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&src));
    bin
}

/// Sends `count` packets at `rate` pps (0 = flat out) from inside `ns`; returns packets sent.
fn flood(ns: &Netns, flood: &Path, count: u64, rate: u64) -> u64 {
    let out = run(ns.exec(flood).args([
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
#[allow(clippy::too_many_arguments)]
fn measured_run(
    ns: &Netns,
    dir: &Path,
    flood_bin: &Path,
    tag: &str,
    daemon_args: &[&str],
    count: u64,
    rate: u64,
    stopped: bool,
) -> (u64, u64, u64, Stats) {
    let (mut d, log, stats_path) = Daemon::start(ns, dir, tag, daemon_args);
    ns.zero_counters();
    if stopped {
        d.signal(libc::SIGSTOP);
    }
    let sent = flood(ns, flood_bin, count, rate);
    if stopped {
        d.signal(libc::SIGCONT);
    }
    sleep(FLUSH_WAIT);
    let status = d.terminate();
    let stderr = d.stderr_text();
    assert!(
        status.success(),
        "{tag}: netpol-nflogd exited with {status} after SIGTERM; stderr:\n{stderr}"
    );
    let counter = ns.nflog_counter();
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
    let scratch = Scratch::new("overload");
    let flood_bin = build_flood(&scratch.0);
    let ns = Netns::new(format!("netpol-ovl-{}", std::process::id()));

    // Phase 1a: tiny receive buffer, flat-out flood, daemon running. Whether the
    // socket overruns depends on the machine's speed, so only the accounting is
    // asserted here: what was lost (if anything) must be counted, exactly.
    let n1 = 200_000;
    let (sent, counter, lines, stats) = measured_run(
        &ns,
        &scratch.0,
        &flood_bin,
        "overload",
        &["--rcvbuf", "4096"],
        n1,
        0,
        false,
    );
    assert_eq!(sent, n1, "flood did not send everything");
    assert_eq!(counter, n1, "the NFLOG rule did not see every packet");
    check_accounting("overload (running)", counter, lines, &stats);

    // Phase 1b: same, but the daemon is SIGSTOPped while the flood runs, so
    // the overrun is certain (as in the ulogd ENOBUFS experiment).
    let (sent, counter, lines, stats) = measured_run(
        &ns,
        &scratch.0,
        &flood_bin,
        "overload-stopped",
        &["--rcvbuf", "4096"],
        n1,
        0,
        true,
    );
    assert_eq!(sent, n1, "flood did not send everything");
    assert_eq!(counter, n1, "the NFLOG rule did not see every packet");
    assert!(
        stats.get("lost") > 0,
        "no loss with --rcvbuf 4096 while stopped during a 200,000-packet flood: {}",
        stats.raw
    );
    check_accounting("overload (stopped)", counter, lines, &stats);

    // Phase 2: default buffer, modest rate: nothing may be lost.
    let n2 = 2_000;
    let (sent, counter, lines, stats) = measured_run(
        &ns,
        &scratch.0,
        &flood_bin,
        "modest",
        &[],
        n2,
        20_000,
        false,
    );
    assert_eq!(sent, n2);
    assert_eq!(counter, n2, "the NFLOG rule did not see every packet");
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
