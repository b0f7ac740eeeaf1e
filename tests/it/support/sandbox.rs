//! Network namespaces: creating them, running commands and threads inside them, NFLOG state,
//! and [`Sandbox`], one namespace with a scratch directory.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::ops::Deref;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use super::process::{run, run_stdin, Proc};
use super::scratch::Scratch;
use super::wait::Wait;

/// NFLOG group every test logs to.
pub(crate) const GROUP: u16 = 100;

/// kube-router's per-policy log matches (before `-j NFLOG`): its comment and its limit.
pub(crate) const POLICY_LOG_MATCHES: [&str; 10] = [
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
];

/// `ip netns add NAME`, deleting a leftover of the same name (a crashed run's) first.
pub(crate) fn add_netns(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
    run(Command::new("ip").args(["netns", "add", name]));
}

/// `ip netns exec NS …`: add the program and its arguments.
pub(crate) fn in_netns(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    cmd
}

/// `ip -n NS -batch -` with `commands`.
pub(crate) fn ip_batch(ns: &str, commands: &str) {
    run_stdin(Command::new("ip").args(["-n", ns, "-batch", "-"]), commands);
}

/// `setns(CLONE_NEWNET)` for the calling thread only.
pub(crate) fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a namespace file we hold open; it affects the calling thread only,
    // a thread the caller created for the purpose.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Spawns a thread that enters the namespace `ns` and runs `f` there (sockets it creates live
/// there).
pub(crate) fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter_netns(&path);
        f()
    })
}

/// The group-100 row of `/proc/net/netfilter/nfnetlink_log` in `ns`:
/// `group portid qlen copy_mode copy_range flush_timeout use`.
pub(crate) fn nflog_row(ns: &str) -> Option<Vec<u64>> {
    let text = run(in_netns(ns).args(["cat", "/proc/net/netfilter/nfnetlink_log"]));
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect::<Vec<u64>>()
        })
        .find(|row| row.first() == Some(&u64::from(GROUP)))
}

/// Waits (polling `/proc`, which works for any reader) until `proc_` has bound group 100 in
/// `ns`; panics, quoting its stderr, if it exits first or `timeout` passes.
pub(crate) fn wait_nflog_bound(ns: &str, proc_: &mut Proc, timeout: Duration) {
    let what = format!("{} to bind NFLOG group {GROUP}", proc_.name);
    Wait::up_to(timeout).until(what, || {
        if nflog_row(ns).is_some() {
            return Ok(());
        }
        if let Some(st) = proc_.exited() {
            panic!(
                "{} exited ({st}) before binding; stderr:\n{}",
                proc_.name,
                proc_.stderr_text()
            );
        }
        Err(format!("stderr:\n{}", proc_.stderr_text()))
    });
}

pub(crate) fn wait_nflog_unbound(ns: &str) {
    Wait::up_to(Duration::from_secs(5)).until(format_args!("NFLOG group {GROUP} unbound"), || {
        nflog_row(ns).map_or(Ok(()), |row| Err(format!("{row:?}")))
    });
}

pub(crate) fn wait_nflog_queue_empty(ns: &str) {
    Wait::up_to(Duration::from_secs(5)).until("the NFLOG queue flushed", || match nflog_row(ns) {
        Some(row) if row.get(2).copied().unwrap_or(0) > 0 => Err(format!("{row:?}")),
        _ => Ok(()),
    });
}

/// A scratch directory and one network namespace `npt-<tag>-<pid>` (`lo` up); both removed on
/// drop, except the directory when the test failed. Derefs to its [`Scratch`].
pub(crate) struct Sandbox {
    pub ns: String,
    scratch: Scratch,
}

impl Deref for Sandbox {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.scratch
    }
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let scratch = Scratch::new(tag);
        let ns = scratch.netns_named(format!("npt-{tag}-{}", std::process::id()));
        run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        Sandbox { ns, scratch }
    }

    /// `ip netns exec NS PROGRAM`
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = in_netns(&self.ns);
        c.arg(program);
        c
    }

    /// Runs one `iptables` command in the namespace.
    pub fn iptables(&self, args: &[&str]) {
        run(self.exec("iptables").args(args));
    }

    /// The rule pair kube-router writes: `MATCH… LOG_MATCHES… -j NFLOG --nflog-group 100
    /// [--nflog-prefix PREFIX]`, then `MATCH… -j VERDICT…`.
    pub fn nflog_rule_pair(
        &self,
        m: &[&str],
        log_matches: &[&str],
        prefix: Option<&str>,
        verdict: &[&str],
    ) {
        let group = GROUP.to_string();
        let mut log = [m, log_matches, &["-j", "NFLOG", "--nflog-group", &group]].concat();
        if let Some(p) = prefix {
            log.extend(["--nflog-prefix", p]);
        }
        self.iptables(&log);
        self.iptables(&[m, &["-j"], verdict].concat());
    }

    /// `-A OUTPUT -o lo -p udp --dport PORT -j NFLOG --nflog-group 100 --nflog-prefix PREFIX`,
    /// then the same match `-j DROP`.
    pub fn udp_log_and_drop(&self, port: u16, prefix: &str) {
        let port = port.to_string();
        let m = ["-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", &port];
        self.nflog_rule_pair(&m, &[], Some(prefix), &["DROP"]);
    }

    /// Packet counter of the first rule of `chain` whose line contains `needle`.
    pub fn rule_counter(&self, chain: &str, needle: &str) -> u64 {
        let out = run(self.exec("iptables").args(["-L", chain, "-v", "-x", "-n"]));
        out.lines()
            .filter(|l| l.contains(needle))
            .find_map(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no rule with {needle:?} in {chain}:\n{out}"))
    }

    /// Runs `f` on a new thread that has entered the namespace (sockets it creates live there).
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        spawn_in(&self.ns, f)
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

/// `GET path` with `Connection: close`: `(status code, body)`. Retries a transport error twice
/// (seen once: EPIPE writing the request right after the daemon bound).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
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
    split_response(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// `(status code, body)` of an HTTP/1.1 response.
pub(crate) fn split_response(text: &str) -> Result<(u16, String), String> {
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
