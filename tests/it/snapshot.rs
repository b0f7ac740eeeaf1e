//! `--kube-snapshot`: attribution from a `kubectl get … -o yaml` file, with no API at all.
//!
//! In a private namespace, a K3s-shaped `DROP by policy` rule whose prefix kube-router truncated
//! (two policies share it) logs UDP between two "pod" addresses on `lo`. The daemon reads a
//! snapshot in kubectl's YAML `List` shape: it must resolve the prefix to the one policy that
//! selects the destination pod, name both pods, and apply that policy's annotation limit. A bad
//! snapshot must stop the daemon with an error naming the object and the field.
//!
//! Needs root, `ip` and `iptables`.

use std::net::IpAddr;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::daemon::DaemonCmd;
use crate::support::{wait_for, Daemon, Sandbox};

const WEB: &str = "10.42.0.10";
const DB: &str = "10.42.0.20";
/// `safeJoin("shop", "deny-ingress-to-postgres-except-from-the-api-v1")`: shared with `-v2`.
const PREFIX: &str = "DROP by policy shop/deny-ingress-to-postgres-except-from-the-ap";

fn snapshot(db_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: List
metadata: {{resourceVersion: ""}}
items:
- apiVersion: v1
  kind: Namespace
  metadata: {{name: shop, uid: 0b0c8a52-59b4-4a4e-8f0c-1d2e3f4a5b01, labels: {{kubernetes.io/metadata.name: shop}}}}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata:
    name: deny-ingress-to-postgres-except-from-the-api-v1
    namespace: shop
    uid: 0b0c8a52-59b4-4a4e-8f0c-1d2e3f4a5b02
    annotations:
      kube-router.io/netpol-nflog-limit: 1/minute
      kube-router.io/netpol-nflog-limit-burst: "2"
  spec:
    podSelector: {{matchLabels: {{app: db}}}}
    policyTypes: [Ingress]
    ingress:
    - from: [{{podSelector: {{matchLabels: {{app: api}}}}}}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {{name: deny-ingress-to-postgres-except-from-the-api-v2, namespace: shop, uid: 0b0c8a52-59b4-4a4e-8f0c-1d2e3f4a5b03}}
  spec:
    podSelector: {{matchLabels: {{app: db-replica}}}}
    policyTypes: [Ingress]
- apiVersion: v1
  kind: Pod
  metadata: {{name: web-0, namespace: shop, uid: 0b0c8a52-59b4-4a4e-8f0c-1d2e3f4a5b04, labels: {{app: web}}}}
  spec: {{nodeName: node-1, containers: [{{name: web, image: nginx}}]}}
  status: {{phase: Running, podIP: {WEB}, podIPs: [{{ip: {WEB}}}]}}
- apiVersion: v1
  kind: Pod
  metadata: {{name: db-0, namespace: shop, uid: 0b0c8a52-59b4-4a4e-8f0c-1d2e3f4a5b05, labels: {{app: db}}}}
  spec: {{nodeName: node-1, containers: [{{name: db, image: postgres}}]}}
  status: {{phase: Running, podIP: {db_ip}, podIPs: [{{ip: {db_ip}}}]}}
"#
    )
}

fn setup(tag: &str) -> Sandbox {
    let sb = Sandbox::new(tag);
    sb.add_address(&format!("{WEB}/32"));
    sb.add_address(&format!("{DB}/32"));
    sb.udp_log_and_drop(5432, PREFIX);
    sb
}

/// The daemon attributing from the snapshot `file`: JSON on stdout, syslogemu to `log`.
fn daemon<'a>(sb: &'a Sandbox, file: &Path, log: &Path) -> DaemonCmd<'a> {
    Daemon::cmd(sb)
        .file("--kube-snapshot", file)
        .syslogemu(log)
        .args(["--stdout", "json"])
        .quiet()
}

#[test]
fn snapshot_attributes_truncated_prefix_and_applies_annotation_limit() {
    let sb = setup("snap");
    let file = sb.path("cluster.yaml");
    std::fs::write(&file, snapshot(DB)).unwrap();
    let log = sb.path("syslogemu.log");
    let mut d = daemon(&sb, &file, &log).env("NODE_NAME", "node-1").start();
    let (web, db): (IpAddr, IpAddr) = (WEB.parse().unwrap(), DB.parse().unwrap());
    sb.send_udp(web, db, 5432, 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.rule_counter("OUTPUT", "nflog-prefix") < 3 && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    d.terminate_ok();
    let events: Vec<Value> = d
        .stdout_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let drops: Vec<&Value> = events.iter().filter(|e| e.get("type").is_none()).collect();
    assert_eq!(
        drops.len(),
        2,
        "burst 2 from the policy's annotation: {events:?}"
    );
    for e in &drops {
        assert_eq!(
            e["policy"]["name"], "deny-ingress-to-postgres-except-from-the-api-v1",
            "{e}"
        );
        assert_eq!(e["policy"]["resolved"], true, "{e}");
        assert_eq!(e["direction"], "ingress", "{e}");
        assert_eq!(e["src"]["pod"], "web-0", "{e}");
        assert_eq!(e["dest"]["pod"], "db-0", "{e}");
    }
    let summary = events
        .iter()
        .find(|e| e["type"] == "suppressed")
        .unwrap_or_else(|| panic!("no suppression summary: {events:?}"));
    assert_eq!(summary["suppressed"], 1);
    assert_eq!(
        summary["policy"],
        "shop/deny-ingress-to-postgres-except-from-the-ap"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(d
        .stderr_text()
        .contains("attributing from a cluster snapshot"));
}

#[test]
fn bad_snapshot_names_the_object_and_field() {
    let sb = Sandbox::new("snapbad");
    let file = sb.path("cluster.yaml");
    std::fs::write(
        &file,
        snapshot("not-an-address")
            .replace("podIPs: [{ip: not-an-address}]", "podIPs: [{ip: [1, 2]}]"),
    )
    .unwrap();
    let log = sb.path("syslogemu.log");
    let mut d = daemon(&sb, &file, &log).spawn();
    let status = wait_for(
        "the daemon to stop on a bad snapshot",
        Duration::from_secs(20),
        || d.exited(),
    );
    assert!(!status.success());
    let err = d.stderr_text();
    assert!(err.contains("Pod shop/db-0"), "{err}");
    assert!(err.contains("status.podIPs[0].ip"), "{err}");
    assert!(err.contains("cluster.yaml"), "{err}");
}

/// An NFLOG pcap (LINKTYPE_NFLOG, host byte order) holding `bodies`, as `tcpdump -i nflog:100 -w`
/// writes one.
fn nflog_pcap(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes());
    out.extend_from_slice(&4u16.to_ne_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_ne_bytes());
    out.extend_from_slice(&239u32.to_ne_bytes());
    for (i, b) in bodies.iter().enumerate() {
        out.extend_from_slice(&(1_794_042_303u32 + i as u32).to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(b.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(b.len() as u32).to_ne_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Post-mortem: a capture from a node, attributed on a laptop with the snapshot alone.
#[test]
fn nflog_tail_attributes_a_capture_with_a_snapshot() {
    use netpol_nflog::decode::build::{ipv4, tcp};
    use netpol_nflog::source::nflog::{build::Packet, NLMSG_HDRLEN};
    const TAIL: &str = env!("CARGO_BIN_EXE_nflog-tail");
    let sb = Sandbox::new("snaptail");
    let payload = ipv4(
        6,
        7,
        0x4000,
        0,
        [10, 42, 0, 10],
        [10, 42, 0, 20],
        &tcp(40000, 5432, 1, 0, 0x02, 64240, 0),
    );
    let mut buf = Vec::new();
    Packet {
        prefix: PREFIX.as_bytes(),
        hook: 1,
        payload: &payload,
        ..Default::default()
    }
    .encode(&mut buf);
    let pcap = sb.path("drops.pcap");
    std::fs::write(&pcap, nflog_pcap(&[buf[NLMSG_HDRLEN..].to_vec()])).unwrap();
    let snap = sb.path("cluster.yaml");
    std::fs::write(&snap, snapshot(DB)).unwrap();
    let run = |args: &[&std::path::Path], extra: &[&str]| {
        let mut c = std::process::Command::new(TAIL);
        c.arg("-r").arg(args[0]).arg("-o").arg("json").args(extra);
        if let Some(s) = args.get(1) {
            c.arg("--kube-snapshot").arg(s);
        }
        c.output().expect("run nflog-tail")
    };
    // Without the snapshot the prefix is all there is: two policies fit it.
    let out = run(&[&pcap], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plain["policy"]["resolved"], false, "{plain}");
    // With it: the policy that selects db-0, both pods, the direction.
    let out = run(&[&pcap, &snap], &["--node", "node-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ev["policy"]["name"], "deny-ingress-to-postgres-except-from-the-api-v1",
        "{ev}"
    );
    assert_eq!(ev["policy"]["resolved"], true, "{ev}");
    assert_eq!(ev["direction"], "ingress", "{ev}");
    assert_eq!(
        (ev["src"]["pod"].as_str(), ev["dest"]["pod"].as_str()),
        (Some("web-0"), Some("db-0")),
        "{ev}"
    );
    // A bad snapshot is a usage error naming the object and field.
    std::fs::write(
        &snap,
        snapshot(DB).replace("podIPs: [{ip: 10.42.0.20}]", "podIPs: [{ip: [1]}]"),
    )
    .unwrap();
    let out = run(&[&pcap, &snap], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod shop/db-0") && err.contains("status.podIPs[0].ip"),
        "{err}"
    );
}
