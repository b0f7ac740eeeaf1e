//! The Prometheus endpoint against real NFLOG traffic.
//!
//! In a private network namespace, K3s-shaped per-policy rules
//! (`-m limit --limit 1000/second --limit-burst 1000 -j NFLOG --nflog-prefix "DROP by policy …"`
//! followed by `DROP`) log UDP packets sent over `lo`. The daemon runs standalone (`[kubernetes]
//! mode = "off"`) with its default limits (10/minute, burst 10 per policy) and the test scrapes
//! `/metrics`, parsed line by line as OpenMetrics text, checking every counter against ground
//! truth: the packets sent, the rules' iptables counters, and the lines in the syslogemu file.
//! `/healthz`, `/readyz` and an unknown path are checked too.
//!
//! The helpers here (network namespaces, threads that `setns` into them, the daemon process, the
//! metrics parser) are shared with `e2e_kube`.
//!
//! Needs root, `ip` and `iptables`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) const DAEMON: &str = env!("CARGO_BIN_EXE_netpol-nflogd");

// ---- Scratch directory and network namespace ---------------------------------------------------

/// A scratch directory and one network namespace (`lo` up); both removed on drop, except the
/// directory when the test failed.
pub(crate) struct Sandbox {
    pub dir: PathBuf,
    pub ns: String,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("netpol-nflog-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        let ns = format!("npt-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &ns]));
        let sb = Sandbox { dir, ns };
        run(Command::new("ip").args(["-n", &sb.ns, "link", "set", "lo", "up"]));
        sb
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `ip netns exec NS PROGRAM`
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs one `iptables` command in the namespace.
    pub fn iptables(&self, args: &[&str]) {
        run(self.exec("iptables").args(args));
    }

    /// Packet counter of the first rule of `chain` whose line contains `needle`.
    pub fn rule_counter(&self, chain: &str, needle: &str) -> u64 {
        let out = run(self.exec("iptables").args(["-L", chain, "-v", "-x", "-n"]));
        out.lines()
            .filter(|l| l.contains(needle))
            .find_map(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no rule with {needle:?} in {chain}:\n{out}"))
    }

    /// The group-100 row of `/proc/net/netfilter/nfnetlink_log` in the namespace.
    pub fn nflog_bound(&self) -> bool {
        let text = run(self.exec("cat").arg("/proc/net/netfilter/nfnetlink_log"));
        text.lines().any(|l| {
            l.split_whitespace()
                .next()
                .and_then(|g| g.parse::<u64>().ok())
                == Some(100)
        })
    }

    /// Runs `f` on a new thread that has entered the namespace (sockets it creates live there).
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("thread in the namespace panicked")
    }

    /// `GET path` on `127.0.0.1:port` inside the namespace: `(status code, body)`.
    pub fn http_get(&self, port: u16, path: &str) -> (u16, String) {
        let path = path.to_string();
        self.within(move || http_get(SocketAddr::from(([127, 0, 0, 1], port)), &path))
    }

    /// Sends `count` UDP datagrams `src → dst:port`, each from a fresh socket (a new source port,
    /// so no two are the same packet for the daemon's correlation). Sends that the DROP rule
    /// refuses (EPERM) are expected and ignored.
    pub fn send_udp(&self, src: IpAddr, dst: IpAddr, port: u16, count: usize) {
        self.within(move || {
            for _ in 0..count {
                let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind UDP socket");
                let _ = sock.send_to(b"netpol-nflog test", SocketAddr::new(dst, port));
            }
        })
    }

    /// Adds an address to `lo` (a "pod" living in this namespace).
    pub fn add_address(&self, cidr: &str) {
        run(Command::new("ip").args(["-n", &self.ns, "addr", "add", cidr, "dev", "lo"]));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        if std::thread::panicking() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `setns(CLONE_NEWNET)` for the calling thread only.
pub(crate) fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a namespace file we hold open; it affects the calling thread only,
    // a thread this module created for the purpose.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    // One retry budget for transport errors (seen once: EPIPE writing the request right after
    // the daemon bound); a second failure is reported.
    let mut attempt = 0;
    let raw = loop {
        attempt += 1;
        let r = (|| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            Ok(raw)
        })();
        match r {
            Ok(raw) => break raw,
            Err(e) if attempt < 3 => {
                eprintln!("GET http://{addr}{path}: {e}; retrying");
                sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("GET http://{addr}{path}: {e}"),
        }
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (code, body.to_string())
}

// ---- The daemon ---------------------------------------------------------------------------------

/// A running netpol-nflogd in a namespace; SIGKILLed (by PID) on drop if still running.
pub(crate) struct Daemon {
    pub child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    /// Starts `netpol-nflogd ARGS` in the sandbox's namespace with `env` (and without any
    /// inherited Kubernetes or daemon variables). Does not wait for anything.
    pub fn spawn(sb: &Sandbox, tag: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let stdout = sb.path(&format!("{tag}.stdout"));
        let stderr = sb.path(&format!("{tag}.stderr"));
        let mut cmd = sb.exec(DAEMON);
        cmd.args(args);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("NETPOL_NFLOG_")
                || k.starts_with("KUBERNETES_")
                || k == "KUBECONFIG"
                || k == "NODE_NAME"
            {
                cmd.env_remove(k);
            }
        }
        // No ~/.kube/config either: point HOME at the scratch directory.
        cmd.env("HOME", &sb.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn netpol-nflogd");
        Daemon {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Starts the daemon and waits until NFLOG group 100 is bound in the namespace.
    pub fn start(sb: &Sandbox, tag: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::spawn(sb, tag, args, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sb.nflog_bound() {
            if let Some(st) = d.exited() {
                panic!(
                    "netpol-nflogd exited ({st}) before binding; stderr:\n{}",
                    d.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "netpol-nflogd did not bind NFLOG group 100 within 20 s; stderr:\n{}",
                d.stderr_text()
            );
            sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr)
    }

    pub fn stdout_text(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// SIGTERM (to our child's PID), then waits up to 30 s for the drain and exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on our own, not yet reaped, child.
        let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "netpol-nflogd still running 30 s after SIGTERM; stderr:\n{}",
                    self.stderr_text()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---- OpenMetrics text ---------------------------------------------------------------------------

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` per metric family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of the one sample named `name` whose labels include all of `labels`; `None`
    /// when there is none; panics when several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "several samples match {name} {labels:?}: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    /// All samples of a name.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// Parses OpenMetrics/Prometheus text exposition format strictly: every line is a comment
/// (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or `name[{k="v",…}] value [timestamp]`.
pub(crate) fn parse_openmetrics(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if eof {
            return Err(format!("line {n}: content after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(ty)) => {
                    scrape.types.insert(name.to_string(), ty.to_string());
                }
                (Some("HELP" | "UNIT"), Some(_), _) => {}
                _ => return Err(format!("line {n}: unknown comment {line:?}")),
            }
            continue;
        }
        if line.is_empty() {
            return Err(format!("line {n}: empty line"));
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("line {n}: bad metric name in {line:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut end = None;
            loop {
                // label name
                let start = match chars.peek() {
                    Some(&(_, '}')) => {
                        end = chars.next().map(|(i, _)| i);
                        break;
                    }
                    Some(&(i, _)) => i,
                    None => break,
                };
                let mut eq = None;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(i);
                        break;
                    }
                }
                let eq = eq.ok_or_else(|| format!("line {n}: label without '=' in {line:?}"))?;
                let key = r[start..eq].to_string();
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("line {n}: bad label name {key:?}"));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(format!("line {n}: label value not quoted in {line:?}"));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            other => return Err(format!("line {n}: bad escape {other:?}")),
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(format!("line {n}: unterminated label value in {line:?}"));
                }
                if labels.insert(key.clone(), value).is_some() {
                    return Err(format!("line {n}: duplicate label {key}"));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = Some(i);
                        break;
                    }
                    other => {
                        return Err(format!(
                            "line {n}: expected ',' or '}}' after a label, got {other:?}"
                        ))
                    }
                }
            }
            let end = end.ok_or_else(|| format!("line {n}: unterminated label set in {line:?}"))?;
            rest = &r[end + 1..];
        }
        let mut fields = rest.split(' ');
        if fields.next() != Some("") {
            return Err(format!("line {n}: no space before the value in {line:?}"));
        }
        let value = fields
            .next()
            .ok_or_else(|| format!("line {n}: no value in {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {n}: bad value {v:?}"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing fields in {line:?}"));
        }
        scrape.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    if !eof {
        return Err("no # EOF at the end (OpenMetrics requires it)".into());
    }
    Ok(scrape)
}

/// Scrapes `/metrics` in the namespace and parses it (panicking on malformed text).
pub(crate) fn scrape(sb: &Sandbox, port: u16) -> Scrape {
    let (code, body) = sb.http_get(port, "/metrics");
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    parse_openmetrics(&body).unwrap_or_else(|e| panic!("malformed /metrics: {e}\n{body}"))
}

/// Polls `/metrics` until `check` returns no complaint or `timeout` passes; returns the last
/// scrape, or panics with the last complaint.
pub(crate) fn wait_metrics(
    sb: &Sandbox,
    port: u16,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Scrape) -> Vec<String>,
) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let s = scrape(sb, port);
        let problems = check(&s);
        if problems.is_empty() {
            return s;
        }
        if Instant::now() > deadline {
            let dump: Vec<String> = s
                .samples
                .iter()
                .map(|x| format!("  {}{:?} {}", x.name, x.labels, x.value))
                .collect();
            panic!(
                "{what}: still wrong after {timeout:?}:\n  {}\nlast scrape:\n{}",
                problems.join("\n  "),
                dump.join("\n")
            );
        }
        sleep(Duration::from_millis(100));
    }
}

/// Compares a sample with an expected value, for [`wait_metrics`] checks.
pub(crate) fn expect(
    problems: &mut Vec<String>,
    s: &Scrape,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) {
    let got = s.get(name, labels);
    if got != Some(want) {
        problems.push(format!("{name}{labels:?}: expected {want}, got {got:?}"));
    }
}

// ---- Small process helpers ----------------------------------------------------------------------

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
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

pub(crate) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("({e})"))
}

// ---- The test -----------------------------------------------------------------------------------

const METRICS_PORT: u16 = 9109;
const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A K3s-shaped per-policy NFLOG rule for UDP to `port`, then the DROP.
fn policy_rule(sb: &Sandbox, port: u16, ns: &str, name: &str) {
    let port = port.to_string();
    let prefix = format!("DROP by policy {ns}/{name}");
    let m = [
        "-A",
        "OUTPUT",
        "-o",
        "lo",
        "-p",
        "udp",
        "--dport",
        port.as_str(),
    ];
    sb.iptables(
        &[
            &m[..],
            &[
                "-m",
                "comment",
                "--comment",
                "rule to log dropped traffic",
                "-m",
                "limit",
                "--limit",
                "1000/second",
                "--limit-burst",
                "1000",
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
    sb.iptables(&[&m[..], &["-j", "DROP"]].concat());
}

#[test]
fn metrics_count_real_nflog_traffic() {
    let sb = Sandbox::new("metrics");
    policy_rule(&sb, 5432, "default", "deny-db");
    policy_rule(&sb, 8080, "default", "allow-web");
    let config = sb.path("daemon.toml");
    fs::write(&config, "[kubernetes]\nmode = \"off\"\n").expect("write config");
    let log = sb.path("syslogemu.log");
    let stats = sb.path("stats.json");
    let listen = format!("127.0.0.1:{METRICS_PORT}");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--syslogemu-file",
        log.to_str().unwrap(),
        "--stdout",
        "none",
        "--tail-socket",
        "",
        "--metrics-listen",
        &listen,
        "--stats-file",
        stats.to_str().unwrap(),
    ];
    let mut daemon = Daemon::start(&sb, "daemon", &args, &[]);

    // Before any traffic: health endpoints and zero counters.
    let (code, body) = sb.http_get(METRICS_PORT, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "/healthz");
    let (code, body) = sb.http_get(METRICS_PORT, "/readyz");
    assert_eq!(code, 200, "/readyz: {body}");
    assert!(
        body.lines().any(|l| l == "nflog: bound"),
        "/readyz body: {body:?}"
    );
    assert!(
        body.contains("kubernetes: off"),
        "/readyz body (standalone): {body:?}"
    );
    let (code, _) = sb.http_get(METRICS_PORT, "/no-such-path");
    assert_eq!(code, 404, "unknown path");
    let s = scrape(&sb, METRICS_PORT);
    assert_eq!(
        s.get("netpol_nflog_messages_received_total", &[]),
        Some(0.0),
        "received before traffic"
    );
    assert_eq!(
        s.types
            .get("netpol_nflog_messages_received")
            .map(String::as_str),
        Some("counter")
    );

    // deny-db: 25 packets, above the default 10/minute burst 10: 10 written, 15 suppressed.
    // allow-web: 3 packets, all written.
    const DENY_DB: usize = 25;
    const ALLOW_WEB: usize = 3;
    sb.send_udp(LO, LO, 5432, DENY_DB);
    sb.send_udp(LO, LO, 8080, ALLOW_WEB);
    let sent = (DENY_DB + ALLOW_WEB) as f64;
    let kernel = sb.rule_counter("OUTPUT", "DROP by policy default/deny-db")
        + sb.rule_counter("OUTPUT", "DROP by policy default/allow-web");
    assert_eq!(
        kernel as f64, sent,
        "the NFLOG rules' counters (the kernel limit must not interfere)"
    );

    // Counters are live; per-policy series are published about once a second, so they must
    // show within a few seconds even though no further traffic arrives.
    let sink = format!("file:{}", log.display());
    let got = wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(5),
        "counters after traffic",
        |s| {
            let mut p = Vec::new();
            expect(&mut p, s, "netpol_nflog_messages_received_total", &[], sent);
            expect(
                &mut p,
                s,
                "netpol_nflog_messages_suppressed_total",
                &[],
                15.0,
            );
            expect(&mut p, s, "netpol_nflog_messages_lost_total", &[], 0.0);
            expect(&mut p, s, "netpol_nflog_messages_malformed_total", &[], 0.0);
            expect(
                &mut p,
                s,
                "netpol_nflog_sink_lines_written_total",
                &[("sink", &sink)],
                13.0,
            );
            expect(
                &mut p,
                s,
                "netpol_nflog_sink_lines_failed_total",
                &[("sink", &sink)],
                0.0,
            );
            let deny = [
                ("namespace", "default"),
                ("policy", "deny-db"),
                ("source", "policy-rule"),
            ];
            let web = [
                ("namespace", "default"),
                ("policy", "allow-web"),
                ("source", "policy-rule"),
            ];
            expect(&mut p, s, "netpol_nflog_policy_events_total", &deny, 10.0);
            expect(&mut p, s, "netpol_nflog_policy_events_total", &web, 3.0);
            expect(
                &mut p,
                s,
                "netpol_nflog_policy_suppressed_total",
                &deny,
                15.0,
            );
            if s.get("netpol_nflog_policy_suppressed_total", &web)
                .is_some()
            {
                p.push(
                    "allow-web has a suppressed series although nothing of it was suppressed"
                        .into(),
                );
            }
            p
        },
    );
    // The counters against the file itself: one line per written message.
    let text = read_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as f64,
        got.get("netpol_nflog_sink_lines_written_total", &[("sink", &sink)])
            .unwrap(),
        "lines in {}:\n{text}",
        log.display()
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("DROP by policy default/deny-db"))
            .count(),
        10,
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("DROP by policy default/allow-web"))
            .count(),
        3,
        "{text}"
    );
    // Every series of a policy has one direction label value; standalone, the direction is
    // unknown (empty), and the per-policy events add up to the lines written.
    let total: f64 = got
        .all("netpol_nflog_policy_events_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 13.0, "sum of netpol_nflog_policy_events_total");
    // No Kubernetes series in standalone mode.
    assert!(
        got.all("netpol_nflog_kube_watch_synced").is_empty(),
        "kube series while kubernetes is off"
    );

    let status = daemon.terminate();
    assert!(
        status.success(),
        "netpol-nflogd exited with {status}; stderr:\n{}",
        daemon.stderr_text()
    );
    let stats: serde_json::Value =
        serde_json::from_str(&read_lossy(&stats)).expect("stats file is JSON");
    assert_eq!(
        stats["received"],
        serde_json::json!(DENY_DB + ALLOW_WEB),
        "stats file: {stats}"
    );
    assert_eq!(
        stats["suppressed"],
        serde_json::json!(15),
        "stats file: {stats}"
    );
    assert_eq!(stats["lost"], serde_json::json!(0), "stats file: {stats}");
}

#[test]
fn metrics_parser_is_strict() {
    let ok = "# HELP a_total x.\n# TYPE a counter\na_total 3\nb{x=\"1\",y=\"q\\\"\\\\\\n\"} 2.5\n# EOF\n";
    let s = parse_openmetrics(ok).unwrap();
    assert_eq!(s.get("a_total", &[]), Some(3.0));
    assert_eq!(s.get("b", &[("y", "q\"\\\n")]), Some(2.5));
    for bad in [
        "a 1\n",
        "a{x=1} 1\n# EOF\n",
        "a{x=\"1\" 1\n# EOF\n",
        "a 1 2 3\n# EOF\n",
        "a one\n# EOF\n",
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

// ---- Hostile clients ----------------------------------------------------------------------------

/// Starts a standalone daemon in `sb` (no rules: nothing to log) with metrics on
/// `127.0.0.1:METRICS_PORT`, and checks `/healthz` once.
fn standalone_daemon(sb: &Sandbox, tag: &str) -> Daemon {
    let config = sb.path("daemon.toml");
    fs::write(&config, "[kubernetes]\nmode = \"off\"\n").expect("write config");
    let log = sb.path("syslogemu.log");
    let listen = format!("127.0.0.1:{METRICS_PORT}");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--syslogemu-file",
        log.to_str().unwrap(),
        "--stdout",
        "none",
        "--tail-socket",
        "",
        "--metrics-listen",
        &listen,
    ];
    let d = Daemon::start(sb, tag, &args, &[]);
    let (code, body) = sb.http_get(METRICS_PORT, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "/healthz at start");
    d
}

/// Raises this test process's descriptor limit to at least `want` (root may raise the hard
/// limit too).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= want {
            return;
        }
        lim.rlim_max = lim.rlim_max.max(want);
        lim.rlim_cur = want;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "setrlimit(NOFILE, {want}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One request as the kubelet makes it: 2 s to connect, 2 s for the whole answer, no retry.
/// `(status code, body)` or what went wrong.
fn probe(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read after {:?}: {e}", start.elapsed()))?;
    if start.elapsed() > Duration::from_secs(2) {
        return Err(format!("answered after {:?}", start.elapsed()));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.to_string()))
}

/// An idle connection (non-blocking, so [`is_closed`] can look at it).
fn idle_connection(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The server closed (or answered) it.
fn is_closed(s: &TcpStream) -> bool {
    !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// `VmRSS` or another `kB` line of `/proc/PID/status`, in kB.
fn proc_status_kb(pid: u32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

const IDLE_FLOOD: usize = 2000;

/// 2000 idle connections, each re-opened as soon as the daemon closes it, for longer than the
/// head timeout: every `/healthz` probe (2 s timeout, no retry, like the kubelet's) is answered.
#[test]
fn metrics_healthz_answers_under_idle_connection_flood() {
    raise_nofile(IDLE_FLOOD as u64 + 4096);
    let sb = Sandbox::new("mflood");
    let mut daemon = standalone_daemon(&sb, "daemon");
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let (probes, opened, connect_errors) = sb.within(move || {
        let mut idle: Vec<TcpStream> = (0..IDLE_FLOOD)
            .map(|i| idle_connection(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        // The attacker: keeps 2000 connections open, re-opening each one the daemon closes.
        let attacker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut opened, mut errors) = (IDLE_FLOOD, 0usize);
                while !stop.load(Relaxed) {
                    for s in idle.iter_mut() {
                        if is_closed(s) {
                            match idle_connection(addr) {
                                Ok(new) => {
                                    *s = new;
                                    opened += 1;
                                }
                                Err(_) => errors += 1,
                            }
                        }
                    }
                    sleep(Duration::from_millis(10));
                }
                (opened, errors)
            })
        };
        // The kubelet: a probe every 250 ms for longer than the head timeout (5 s).
        let mut probes = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(7) {
            let t = Instant::now();
            probes.push((probe(addr, "/healthz"), t.elapsed()));
            sleep(Duration::from_millis(250));
        }
        stop.store(true, Relaxed);
        let (opened, errors) = attacker.join().expect("attacker thread");
        (probes, opened, errors)
    });
    let slowest = probes.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "{} probes, slowest {slowest:?}; {opened} connections opened, {connect_errors} connect errors",
        probes.len()
    );
    let failed: Vec<String> = probes
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| !matches!(r, Ok((200, b)) if b == "ok\n"))
        .map(|(i, (r, t))| format!("probe {i} after {t:?}: {r:?}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed under {IDLE_FLOOD} idle connections:\n{}",
        failed.len(),
        probes.len(),
        failed.join("\n")
    );
    assert!(probes.len() >= 10, "only {} probes", probes.len());
    assert!(
        opened > IDLE_FLOOD,
        "the daemon closed none of the idle connections ({opened} opened)"
    );

    // The attacker's connections are gone (the thread dropped them): the daemon counts what it
    // did and holds no connection but the scrape's.
    let s = wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(5),
        "after the flood",
        |s| {
            let mut p = Vec::new();
            expect(&mut p, s, "netpol_nflog_http_connections", &[], 1.0);
            p
        },
    );
    let accepted = s
        .get("netpol_nflog_http_connections_accepted_total", &[])
        .unwrap();
    let evicted = s
        .get("netpol_nflog_http_connections_evicted_total", &[])
        .unwrap();
    eprintln!(
        "daemon: accepted {accepted}, evicted {evicted}, rejected {:?}, timeouts {:?}",
        s.get("netpol_nflog_http_connections_rejected_total", &[]),
        s.get("netpol_nflog_http_timeouts_total", &[])
    );
    assert!(
        accepted >= IDLE_FLOOD as f64 && evicted > 0.0,
        "accepted {accepted}, evicted {evicted}"
    );
    assert_eq!(
        s.types
            .get("netpol_nflog_http_connections_rejected")
            .map(String::as_str),
        Some("counter")
    );
    let status = daemon.terminate();
    assert!(status.success(), "exit {status}: {}", daemon.stderr_text());
}

/// A client that sends its request head one byte a second is disconnected by the head timeout
/// (5 s), unanswered; the daemon goes on answering others.
#[test]
fn metrics_slowloris_is_cut_by_header_timeout() {
    let sb = Sandbox::new("mslow");
    let _daemon = standalone_daemon(&sb, "daemon");
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let (elapsed, sent, answer) = sb.within(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
            "a".repeat(40)
        );
        let start = Instant::now();
        let mut answer = Vec::new();
        let mut sent = 0;
        let mut buf = [0u8; 512];
        'bytes: for b in head.bytes() {
            if s.write_all(&[b]).is_err() {
                break;
            }
            sent += 1;
            // Wait a second for the daemon's reaction before the next byte.
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break 'bytes,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(_) => break 'bytes,
                }
            }
        }
        (start.elapsed(), sent, answer)
    });
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("slowloris cut after {elapsed:?}, {sent} bytes sent, answer {answer:?}");
    assert!(
        sent < 40,
        "the whole slow head went through ({sent} bytes, {elapsed:?})"
    );
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(9),
        "cut after {elapsed:?} (head timeout 5 s)"
    );
    assert!(!answer.contains(" 200 "), "answered: {answer:?}");
    let (code, body) = sb.http_get(METRICS_PORT, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "/healthz after");
    let s = scrape(&sb, METRICS_PORT);
    assert!(
        s.get("netpol_nflog_http_timeouts_total", &[]).unwrap() >= 1.0,
        "timeouts not counted"
    );
}

/// 15 000 connections (some with half a request head) leave the daemon's resident size close
/// to where it started once they are closed.
#[test]
fn metrics_memory_returns_after_connection_flood() {
    const CONNECTIONS: usize = 15_000;
    const BOUND_KB: u64 = 40 * 1024;
    raise_nofile(CONNECTIONS as u64 + 4096);
    let sb = Sandbox::new("mrss");
    let daemon = standalone_daemon(&sb, "daemon");
    let pid = daemon.child.as_ref().unwrap().id();
    let _ = scrape(&sb, METRICS_PORT);
    let before = proc_status_kb(pid, "VmRSS");
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let held = sb.within(move || {
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                continue;
            };
            if i % 4 == 0 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ");
                let _ = s.write_all(&[b'p'; 4000]);
            }
            conns.push(s);
        }
        let held = conns.len();
        // Some complete scrapes on top, read slowly.
        let scrapes: Vec<TcpStream> = (0..32)
            .filter_map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .ok()?;
                Some(s)
            })
            .collect();
        sleep(Duration::from_millis(200));
        drop(scrapes);
        drop(conns);
        held
    });
    let peak = proc_status_kb(pid, "VmHWM");
    assert!(held > CONNECTIONS / 2, "only {held} connections opened");
    wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(10),
        "connections closed",
        |s| {
            let mut p = Vec::new();
            expect(&mut p, s, "netpol_nflog_http_connections", &[], 1.0);
            p
        },
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let after = loop {
        let rss = proc_status_kb(pid, "VmRSS");
        if rss < BOUND_KB || Instant::now() > deadline {
            break rss;
        }
        sleep(Duration::from_millis(100));
    };
    eprintln!("VmRSS before {before} kB, peak {peak} kB, after {after} kB ({held} connections)");
    assert!(
        after < BOUND_KB,
        "VmRSS {after} kB after the flood (before {before} kB, peak {peak} kB)"
    );
}

/// Keep-alive (two answers on one connection), `HEAD` (headers only), any method and query, and
/// the cap on the request head (431).
#[test]
fn metrics_http_keep_alive_head_and_head_size_cap() {
    let sb = Sandbox::new("mhttp");
    let _daemon = standalone_daemon(&sb, "daemon");
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let exchange = move |req: Vec<u8>| -> String {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&req).expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        String::from_utf8_lossy(&raw).into_owned()
    };
    let [pipelined, head, post, big] = sb.within(move || {
        [
            exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /no-such-path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
            exchange(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
            exchange(b"POST /healthz?x=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
            exchange(
                [
                    &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "[..],
                    &[b'a'; 9000],
                    b"\r\nConnection: close\r\n\r\n",
                ]
                .concat(),
            ),
        ]
    });
    assert!(
        pipelined.starts_with("HTTP/1.1 200 OK\r\n")
            && pipelined.contains("\r\n\r\nok\nHTTP/1.1 404 Not Found\r\n")
            && pipelined.ends_with("\r\n\r\nnot found\n"),
        "two requests on one connection: {pipelined:?}"
    );
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n")
            && head.contains("content-length: 3\r\n")
            && head.ends_with("\r\n\r\n"),
        "HEAD: {head:?}"
    );
    assert!(
        post.contains(" 200 OK\r\n") && post.ends_with("\r\n\r\nok\n"),
        "POST with a query: {post:?}"
    );
    assert!(
        big.starts_with("HTTP/1.1 431 "),
        "a 9 KB request head: {big:?}"
    );
}
