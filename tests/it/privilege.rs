//! Least privilege: the running daemon holds CAP_NET_ADMIN and nothing else.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing"))
        .trim()
        .to_string()
}

#[test]
fn daemon_keeps_only_cap_net_admin() {
    let ns = Netns(format!("nfpriv-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let dir = std::env::temp_dir().join(format!("nfpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("syslogemu.log");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_netpol-nflogd")])
        .args([
            "--stdout",
            "none",
            "--tail-socket",
            "",
            "--metrics-listen",
            "",
            "--syslogemu-file",
        ])
        .arg(&log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    // Wait until the daemon has bound its group (it drops capabilities before that).
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "cat",
                "/proc/net/netfilter/nfnetlink_log",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some("100"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not bind group 100"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let caps: Vec<(String, String)> = [
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ]
    .iter()
    .map(|f| (f.to_string(), status_field(pid, f)))
    .collect();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let exit = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let net_admin = format!("{:016x}", 1u64 << 12);
    let want: Vec<(String, String)> = [
        ("CapInh", "0000000000000000".to_string()),
        ("CapPrm", net_admin.clone()),
        ("CapEff", net_admin.clone()),
        ("CapBnd", net_admin),
        ("CapAmb", "0000000000000000".to_string()),
        ("NoNewPrivs", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(caps, want);
    assert!(exit.success(), "daemon exit {exit}");
}
