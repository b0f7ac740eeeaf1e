//! Least privilege: the running daemon holds CAP_NET_ADMIN and nothing else.

use crate::support::process::proc_status;
use crate::support::{Daemon, Sandbox};

#[test]
fn daemon_keeps_only_cap_net_admin() {
    let sb = Sandbox::new("nfpriv");
    // Bound means ready: it drops capabilities before binding its group.
    let mut d = Daemon::cmd(&sb)
        .syslogemu(&sb.path("syslogemu.log"))
        .quiet()
        .start();
    let pid = d.pid();
    let caps: Vec<(String, String)> = [
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ]
    .iter()
    .map(|f| (f.to_string(), proc_status(pid, f)))
    .collect();
    let exit = d.terminate();
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
