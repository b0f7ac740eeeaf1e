//! Demo mode: the daemon at work where no cluster and no NFLOG rules exist.
//!
//! Creates a throwaway network namespace with K3s-shaped NFLOG rules (a per-policy rule with
//! the `DROP by policy ns/name` prefix, the pod chain's empty-prefix rule, IPv4 and IPv6), runs
//! the real daemon in it, sends traffic through the rules from a thread that joined the
//! namespace, prints what the daemon wrote, and removes everything it created.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Config;

const RULES_V4: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -d 10.42.0.20/32 -p tcp --dport 5432 -m comment --comment \"rule to log dropped traffic\" -j NFLOG --nflog-group 100 --nflog-prefix \"DROP by policy default/deny-db\"
-A OUTPUT -d 10.42.0.20/32 -p tcp --dport 5432 -j REJECT --reject-with tcp-reset
-A OUTPUT -d 10.42.0.30/32 -p udp --dport 53 -m comment --comment \"rule to log dropped traffic POD name:web-0 namespace: shop\" -j NFLOG --nflog-group 100
-A OUTPUT -d 10.42.0.30/32 -p udp --dport 53 -j REJECT
-A OUTPUT -d 10.42.0.40/32 -p icmp -j NFLOG --nflog-group 100 --nflog-prefix \"DROP by policy monitoring/deny-icmp\"
-A OUTPUT -d 10.42.0.40/32 -p icmp -j DROP
COMMIT
";

const RULES_V6: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -d fd00:10:42::20/128 -p tcp --dport 443 -j NFLOG --nflog-group 100 --nflog-prefix \"DROP by policy shop/deny-external-v6\"
-A OUTPUT -d fd00:10:42::20/128 -p tcp --dport 443 -j REJECT --reject-with tcp-reset
COMMIT
";

/// Removes the namespace and stops the daemon when dropped, also on error.
struct Namespace {
    name: String,
    child: Option<Child>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn sh(args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {} (is it installed?)", args[0]))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed with {status}", args.join(" "));
    }
    Ok(())
}

pub fn run(_cfg: Config) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the demo creates a network namespace and firewall rules: run it as root");
    }
    let name = format!("nflog-demo-{}", std::process::id());
    sh(&["ip", "netns", "add", &name], None)?;
    let mut ns = Namespace {
        name: name.clone(),
        child: None,
    };
    eprintln!("demo: created network namespace {name} with K3s-shaped NFLOG rules on group 100");
    sh(&["ip", "-n", &name, "link", "set", "lo", "up"], None)?;
    for addr in [
        "10.42.0.10/32",
        "10.42.0.20/32",
        "10.42.0.30/32",
        "10.42.0.40/32",
    ] {
        sh(&["ip", "-n", &name, "addr", "add", addr, "dev", "lo"], None)?;
    }
    for addr in ["fd00:10:42::10/128", "fd00:10:42::20/128"] {
        sh(
            &["ip", "-n", &name, "addr", "add", addr, "dev", "lo", "nodad"],
            None,
        )?;
    }
    sh(
        &["ip", "netns", "exec", &name, "iptables-restore"],
        Some(RULES_V4),
    )?;
    sh(
        &["ip", "netns", "exec", &name, "ip6tables-restore"],
        Some(RULES_V6),
    )?;

    let json = std::env::temp_dir().join(format!("{name}.json"));
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let exe = exe.to_string_lossy();
    let json_arg = json.to_string_lossy();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &name,
            &exe,
            "--config",
            "/dev/null",
            "--syslogemu-file",
            "",
            "--stdout",
            "syslogemu",
        ])
        .args([
            "--json-file",
            &json_arg,
            "--log-level",
            "warn",
            "--tail-socket",
            "",
            "--metrics-listen",
            "",
        ])
        .env_remove("NETPOL_NFLOG_CONFIG")
        .spawn()
        .context("cannot start the daemon in the namespace")?;
    ns.child = Some(child);
    wait_bound(&name, Duration::from_secs(5))?;
    eprintln!("demo: netpol-nflogd is reading group 100; sending traffic through the rules\n");
    eprintln!("--- syslogemu lines (what /var/log/ulog/syslogemu.log receives) ---");

    let netns = File::open(format!("/var/run/netns/{name}"))?;
    std::thread::spawn(move || send_traffic(&netns))
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;

    // The daemon drains the kernel's queue on SIGTERM, so nothing sent is left behind.
    std::thread::sleep(Duration::from_millis(300));
    if let Some(mut child) = ns.child.take() {
        // The child has not been waited for, so its PID is still its own.
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("cannot stop the daemon")?;
        let status = child.wait()?;
        if !status.success() {
            bail!("the daemon exited with {status}");
        }
    }
    let records = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    println!("\n--- JSON records (what the DaemonSet prints for Fluent Bit) ---");
    print!("{records}");
    eprintln!("\ndemo: removing namespace {name}");
    drop(ns);
    Ok(())
}

/// Waits until some process in the namespace has bound NFLOG group 100.
fn wait_bound(ns: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "cat",
                "/proc/net/netfilter/nfnetlink_log",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text
            .lines()
            .any(|l| l.split_whitespace().next() == Some("100"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the daemon did not bind NFLOG group 100 within {timeout:?}")
}

/// Runs on a thread that joins the namespace, so its sockets live there.
fn send_traffic(netns: &File) -> Result<()> {
    // setns(2) moves this thread only.
    rustix::thread::move_into_link_name_space(
        netns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .context("setns")?;
    let t = Duration::from_millis(300);
    // Three connection attempts to a database the policy default/deny-db protects.
    for _ in 0..3 {
        let _ = TcpStream::connect_timeout(&"10.42.0.20:5432".parse::<SocketAddr>()?, t);
    }
    // DNS to a pod whose pod chain rejects it (no prefix, as upstream kube-router logs).
    let udp = UdpSocket::bind("10.42.0.10:0")?;
    // Rejected on OUTPUT, so send_to itself fails with EPERM: expected.
    let _ = udp.send_to(
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
        "10.42.0.30:53",
    );
    // A ping to a pod behind monitoring/deny-icmp, from a raw socket.
    ping("10.42.0.10", "10.42.0.40")?;
    // IPv6 HTTPS behind shop/deny-external-v6.
    let _ = TcpStream::connect_timeout(&"[fd00:10:42::20]:443".parse::<SocketAddr>()?, t);
    Ok(())
}

fn ping(src: &str, dst: &str) -> Result<()> {
    use rustix::net::{ipproto, AddressFamily, SendFlags, SocketAddrV4, SocketType};
    use std::net::Ipv4Addr;
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP))
        .context("raw socket")?;
    let mut pkt = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'd', b'e', b'm', b'o'];
    let sum = checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    let local = SocketAddrV4::new(src.parse::<Ipv4Addr>()?, 0);
    let addr = SocketAddrV4::new(dst.parse::<Ipv4Addr>()?, 0);
    rustix::net::bind(&fd, &local).with_context(|| format!("bind {src}"))?;
    // The policy rejects the ping on OUTPUT, so sendto itself fails with EPERM: expected, the
    // kernel logged the packet before it refused it.
    match rustix::net::sendto(&fd, &pkt, SendFlags::empty(), &addr) {
        Ok(_) | Err(rustix::io::Errno::PERM) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("ping {dst}")),
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
