//! Demo mode: the whole value of the daemon in under a minute, with no cluster at hand.
//!
//! Builds a throwaway K3s-shaped node ([`node`]: pods in their own network namespaces on veths
//! behind the bridge `cni0`, kube-router's chains for the [`scenario`]'s NetworkPolicies, a
//! kube-proxy-style ClusterIP), serves the scenario's Namespaces, Pods and NetworkPolicies from
//! a minimal API in the node ([`api`]) to the daemon's real kube-rs watchers, starts the real
//! daemon there as a child process, sends traffic between the pods, and prints side by side
//! what the daemon made of it ([`show`]): syslogemu lines, JSON records with policies, pods,
//! workloads and direction, a suppression summary from a policy's annotation limit, and
//! `nflog-tail`'s view of the same events. Everything it creates is removed at the end, also on
//! errors and signals ([`cleanup`]).

mod api;
mod cleanup;
mod node;
mod scenario;
mod show;

/// The uid the demo's objects carry, stable for a seed (the integration tests' API uses it too).
pub use scenario::uid;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Config;

const METRICS: &str = "127.0.0.1:9109";

pub fn run(_cfg: Config) -> Result<()> {
    let started = Instant::now();
    if !rustix::process::geteuid().is_root() {
        bail!("the demo creates network namespaces, a bridge and firewall rules: run it as root");
    }
    node::check_tools()?;
    cleanup::on_signals()?;
    let guard = cleanup::Guard;
    let result = demo(started);
    drop(guard);
    if result.is_ok() {
        eprintln!("demo: removed the namespaces, the daemon and the scratch directory it made");
        println!(
            "\n(demo finished in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    result
}

fn demo(started: Instant) -> Result<()> {
    let tag = format!("nfdemo-{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    cleanup::add_dir(dir.clone())?;

    eprintln!(
        "demo: building a K3s-shaped node: network namespaces {tag}-*, bridge cni0, {} pods on veths, \
         kube-router's chains for {} policies, a ClusterIP",
        scenario::PODS.len(),
        scenario::POLICIES.len()
    );
    let node = node::Node::build(&tag)?;
    api::start(&node.ns)?;
    let mut daemon = start_daemon(&node, &dir)?;
    wait_ready(&node, &mut daemon, &dir)?;
    eprintln!(
        "demo: netpol-nflogd runs in the node, group 100 bound, watches synced ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let _db = node.listen("db", 5432)?;
    let tail = Tail::follow(&node, &dir, &daemon)?;
    println!("== Traffic between the pods ==");
    for flow in scenario::FLOWS {
        let connected = node.send(flow)?;
        let outcome = match (flow.allowed, connected) {
            (true, true) => "connected".to_string(),
            (false, false) if flow.times > 1 => format!("refused ×{}", flow.times),
            (false, false) => "refused".to_string(),
            (true, false) => bail!(
                "{} should have connected: the node's rules are wrong",
                flow.describe()
            ),
            (false, true) => bail!(
                "{} should have been dropped: the node's rules are wrong",
                flow.describe()
            ),
        };
        println!("  {:<58} {:<10} {}", flow.describe(), outcome, flow.why);
    }

    // The summary of the annotated policy comes at the daemon's next summary tick (2 s).
    let json = dir.join("netpol.json");
    let deadline = Instant::now() + Duration::from_secs(8);
    while !std::fs::read_to_string(&json)
        .unwrap_or_default()
        .contains("\"type\":\"suppressed\"")
    {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = show::records(&json)
        .iter()
        .filter(|r| r.get("type").is_none())
        .count();
    let (tail_out, tail_err) = tail.stop(events)?;

    // SIGTERM: the daemon drains the kernel's queue, writes everything and exits 0.
    cleanup::signal(&daemon, rustix::process::Signal::TERM);
    match cleanup::wait(&mut daemon, Duration::from_secs(5))? {
        Some(s) if s.success() => {}
        Some(s) => bail!("the daemon exited with {s}:\n{}", log_tail(&dir)),
        None => bail!("the daemon did not stop within 5 s of SIGTERM"),
    }

    show::syslogemu(&dir.join("syslogemu.log"));
    show::json(&json);
    show::suppressed(&json);
    show::tail(&tail_out, &tail_err);
    show::next_steps();
    Ok(())
}

fn start_daemon(node: &node::Node, dir: &Path) -> Result<Child> {
    let config = dir.join("netpol-nflogd.toml");
    std::fs::write(&config, "[kubernetes]\nmode = \"on\"\n\n[limits]\n# Summaries every 2 s instead of 60, so the demo shows one.\nsummary_interval_s = 2\n")?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api::kubeconfig())?;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.ns])
        .arg(&exe)
        .arg("--config")
        .arg(&config)
        .arg("--syslogemu-file")
        .arg(dir.join("syslogemu.log"))
        .arg("--json-file")
        .arg(dir.join("netpol.json"))
        .args([
            "--stdout",
            "none",
            "--metrics-listen",
            METRICS,
            "--node-name",
            scenario::NODE,
            "--log-level",
            "info",
        ])
        .arg("--tail-socket")
        .arg(dir.join("tail.sock"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETPOL_NFLOG_") {
            cmd.env_remove(k);
        }
    }
    cleanup::spawn(&mut cmd, "the daemon in the node namespace")
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `/readyz` (in the node) until NFLOG group 100 is bound and every watch has synced.
fn wait_ready(node: &node::Node, daemon: &mut Child, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut body = String::new();
    while Instant::now() < deadline {
        if let Some(status) = cleanup::wait(daemon, Duration::ZERO)? {
            bail!("the daemon exited with {status}:\n{}", log_tail(dir));
        }
        body = http_get(node, "/readyz").unwrap_or_default();
        if body.contains("nflog: bound") && body.contains(": synced") && !body.contains("waiting") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the daemon was not ready within 20 s; /readyz said:\n{body}\nits log:\n{}",
        log_tail(dir)
    )
}

/// `nflog-tail --socket …`, following the daemon's tail socket while the traffic runs.
struct Tail {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Tail {
    fn follow(node: &node::Node, dir: &Path, daemon: &Child) -> Result<Tail> {
        let exe = std::env::current_exe()?;
        let tail: PathBuf = exe.with_file_name("nflog-tail");
        if !tail.exists() {
            bail!(
                "nflog-tail is not next to {} (build both: cargo build --release --bins)",
                exe.display()
            );
        }
        let color = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            "always"
        } else {
            "never"
        };
        let sock = dir.join("tail.sock");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns])
            .arg(&tail)
            .arg("--socket")
            .arg(&sock)
            .args(["--no-reconnect", "--color", color])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cleanup::spawn(&mut cmd, "nflog-tail")?;
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = read(Box::new(child.stdout.take().context("nflog-tail stdout")?));
        let err = read(Box::new(child.stderr.take().context("nflog-tail stderr")?));
        // Connected once the daemon's namespace lists a second socket on the path (the
        // accepted one, next to the listener); its request line follows at once.
        let unix = format!("/proc/{}/net/unix", daemon.id());
        let path = sock.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let table = std::fs::read_to_string(&unix).unwrap_or_default();
            if table.lines().filter(|l| l.ends_with(path.as_str())).count() >= 2 {
                std::thread::sleep(Duration::from_millis(100));
                return Ok(Tail { child, out, err });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nflog-tail did not connect to the daemon's tail socket within 5 s")
    }

    /// Stops it once it printed `events` lines (or after 3 s); its stdout and stderr.
    fn stop(mut self, events: usize) -> Result<(String, String)> {
        // Output is flushed per line; a short wait lets the last lines through the pipe.
        std::thread::sleep(Duration::from_millis(300));
        cleanup::signal(&self.child, rustix::process::Signal::INT);
        cleanup::wait(&mut self.child, Duration::from_secs(2))?;
        let out = self.out.join().unwrap_or_default();
        let err = self.err.join().unwrap_or_default();
        if out.lines().count() < events {
            eprintln!(
                "demo: nflog-tail printed {} of the {events} events",
                out.lines().count()
            );
        }
        Ok((out, err))
    }
}

/// `GET path` from the daemon's metrics listener in the node.
fn http_get(node: &node::Node, path: &str) -> Result<String> {
    node::within(&node.ns, || {
        let mut s = TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}
