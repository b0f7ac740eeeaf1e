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
