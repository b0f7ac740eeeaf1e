//! Kubernetes Events on drops: the optional kustomize component that grants them and switches
//! them on.
//!
//! The base RBAC stays read-only (tests/it/deploy.rs); the component adds exactly create/patch on
//! `events.k8s.io` Events for the daemon's service account, and the environment variable that
//! turns the feature on, patched into the DaemonSet's one container.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const DIR: &str = "deploy/components/events";

#[test]
fn events_component_grants_only_event_writes_and_switches_them_on() {
    let k = yaml(&format!("{DIR}/kustomization.yaml"));
    assert_eq!(k["kind"], "Component");
    let role = yaml(&format!("{DIR}/clusterrole.yaml"));
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}])
    );
    let binding = yaml(&format!("{DIR}/clusterrolebinding.yaml"));
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    // The binding names the service account the DaemonSet runs as, in its namespace.
    let ds = yaml("deploy/daemonset.yaml");
    let sa = yaml("deploy/serviceaccount.yaml");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": ds["metadata"]["namespace"]}])
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    // The patch appends to the env list of container 0, which must exist and be the daemon.
    let patch = &k["patches"][0];
    assert_eq!(patch["target"]["kind"], "DaemonSet");
    assert_eq!(patch["target"]["name"], ds["metadata"]["name"]);
    let ops: Value = serde_saphyr::from_str(patch["patch"].as_str().unwrap()).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                "value": {"name": "NETPOL_NFLOG_KUBE_EVENTS", "value": "true"}}])
    );
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "netpol-nflogd");
    assert!(container["env"].is_array(), "{container}");
}

#[test]
fn events_component_resources_validate_against_kubernetes_schemas() {
    let bin = std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let files = [
        format!("{DIR}/clusterrole.yaml"),
        format!("{DIR}/clusterrolebinding.yaml"),
    ];
    let out = Command::new(&bin)
        .current_dir(root())
        .args(["--strict", "-k", "1.34"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin}: {e}\ninstall it with: pip install kubernetes-validate")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
    for f in &files {
        assert!(text.contains(&format!("INFO {f} passed")), "{text}");
    }
}

/// `NETPOL_NFLOG_KUBE_EVENTS=true`, as the component sets it, is accepted; without the API the
/// daemon says Events cannot be posted instead of failing silently.
#[test]
fn events_without_the_api_are_refused_with_a_reason() {
    let sb = crate::metrics::Sandbox::new("events");
    let snap = sb.path("cluster.yaml");
    std::fs::write(&snap, "apiVersion: v1\nkind: List\nitems: []\n").unwrap();
    let log = sb.path("syslogemu.log");
    let (snap_s, log_s) = (snap.display().to_string(), log.display().to_string());
    let mut d = crate::metrics::Daemon::start(
        &sb,
        "daemon",
        &[
            "--kube-snapshot",
            &snap_s,
            "--syslogemu-file",
            &log_s,
            "--stdout",
            "none",
            "--metrics-listen",
            "",
            "--tail-socket",
            "",
        ],
        &[("NETPOL_NFLOG_KUBE_EVENTS", "true")],
    );
    let status = d.terminate();
    assert!(status.success(), "{}", d.stderr_text());
    assert!(
        d.stderr_text()
            .contains("events.enabled needs the Kubernetes API"),
        "{}",
        d.stderr_text()
    );
}
