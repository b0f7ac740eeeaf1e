//! Offline attribution: a capture of the K3s-shaped node's traffic plus a snapshot, replayed by
//! `nflog-tail -r`, attributes the same events as the live daemon did.
//!
//! The daemon runs on the node (`support::k3s`) with a tail socket; `nflog-tail -w` connected to
//! it writes every NFLOG message of every event to a pcap, as a user capturing on a node would.
//! The attribution table's traffic runs (bridged and routed pod traffic, IPv4 and IPv6, the
//! ClusterIP, the truncated prefix two policies share, pod-chain-only drops). The test then writes
//! the cluster's objects as `kubectl get … -A -o json` would (a `List`), and on the "laptop" runs
//! `nflog-tail -r capture.pcap --kube-snapshot cluster.json --capture-node node-1 -o json`: each
//! event must equal the daemon's own JSON event, field for field (policy, candidates, direction,
//! pods, workloads, Services, nodes, `count`, headers, time), except the interface names, which a
//! capture only knows as indexes (`if7`), mapped back with the node's own index table.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::k3s_node::{shop, table, CONFIG_WIDE_UNATTRIBUTED};
use crate::support::k3s::{K3sNode, NODE};
use crate::support::process::Proc;
use crate::support::wait::wait_for;

const TAIL: &str = env!("CARGO_BIN_EXE_nflog-tail");

/// The node namespace's interfaces by index, as a capture names them (`if7` → `veth…`).
fn if_names(ns: &str) -> HashMap<String, String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(": ");
            let index = f.next()?.trim();
            let name = f.next()?.split('@').next()?;
            Some((format!("if{index}"), name.to_string()))
        })
        .collect()
}

/// The event with interface labels (`if7`) replaced by the names they stand for, and the
/// syslogemu text (which carries them too) dropped: it is the same message, checked by the rest.
fn with_names(mut ev: Value, names: &HashMap<String, String>) -> Value {
    for key in ["oob.in", "oob.out"] {
        if let Some(label) = ev[key].as_str() {
            if let Some(name) = names.get(label) {
                ev[key] = json!(name);
            }
        }
    }
    ev
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v: &Value| v.get("type").is_none())
        .collect()
}

/// What `kubectl get pods,networkpolicies,namespaces,services,endpointslices,nodes -A -o json`
/// writes: one `List` of every object the API served the daemon.
fn snapshot(node: &K3sNode) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
           "items": node.objects.all()})
}

#[test]
fn k3s_capture_and_snapshot_attribute_as_the_daemon_did() {
    let mut node = K3sNode::build("offl", shop(false));
    let sock = node.sb.path("tail.sock");
    let sock = sock.to_str().unwrap().to_string();
    node.start_daemon_with(CONFIG_WIDE_UNATTRIBUTED, &["--tail-socket", &sock]);
    let pcap = node.sb.path("capture.pcap");
    let out = node.sb.path("tail.out");
    let mut tail = Proc::spawn(
        "nflog-tail",
        Command::new(TAIL).args(["-S", &sock, "-o", "json", "-w", pcap.to_str().unwrap()]),
        &out,
    );
    let rows = table();
    let first = rows
        .iter()
        .find(|r| r.event.is_some())
        .expect("a row that logs");
    // The client is connected once it printed an event; the daemon's events before that are
    // not in the capture (checked below: the capture is the tail of the daemon's events).
    wait_for(
        "nflog-tail to receive an event",
        Duration::from_secs(20),
        || {
            tail.alive("connecting");
            node.send(&first.flow);
            node.settle();
            (!json_lines(&std::fs::read_to_string(&out).unwrap_or_default()).is_empty())
                .then_some(())
        },
    );
    for r in &rows {
        node.send(&r.flow);
    }
    node.settle();
    // SIGTERM, not SIGINT: a shell running this in the background has SIGINT ignored, and an
    // ignored signal stays ignored in the programs it starts.
    tail.signal(libc::SIGTERM);
    let (status, _) = tail.wait_exit(Duration::from_secs(10));
    let tail_text = std::fs::read_to_string(&out).unwrap();
    // A signal ends a capture; each record was flushed as it came.
    assert!(
        status.success() || status.signal() == Some(libc::SIGTERM),
        "nflog-tail: {status}: {tail_text}"
    );

    // Live: what the client received is what the daemon wrote, from the first it saw.
    let daemon = node.events();
    let live = json_lines(&tail_text);
    assert!(
        live.len() > rows.len() / 2 && daemon.ends_with(&live),
        "the tail client's {} events are not the last of the daemon's {}:\n{}",
        live.len(),
        daemon.len(),
        tail_text
    );
    let merged = live
        .iter()
        .filter(|e| e["count"].as_u64() > Some(1))
        .count();
    assert!(
        merged > 0,
        "the traffic must include packets several rules logged"
    );

    // Offline: the capture and the snapshot, no API.
    let snap = node.sb.path("cluster.json");
    std::fs::write(&snap, snapshot(&node).to_string()).unwrap();
    let replay = Command::new(TAIL)
        .arg("-r")
        .arg(&pcap)
        .arg("--kube-snapshot")
        .arg(&snap)
        .args([
            "--capture-node",
            NODE,
            "--hostname",
            crate::support::k3s::HOSTNAME,
            "-o",
            "json",
        ])
        .output()
        .expect("run nflog-tail -r");
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "nflog-tail -r: {stderr}");
    let names = if_names(node.node_ns());
    let offline: Vec<Value> = json_lines(&String::from_utf8_lossy(&replay.stdout))
        .into_iter()
        .map(|e| with_names(e, &names))
        .collect();
    eprintln!(
        "{} live events ({merged} of several messages), {} replayed",
        live.len(),
        offline.len()
    );
    let mut diffs = Vec::new();
    for (i, (want, got)) in live.iter().zip(&offline).enumerate() {
        if want != got {
            diffs.push(format!("event {i}:\n  live:    {want}\n  offline: {got}"));
        }
    }
    assert!(
        diffs.is_empty() && live.len() == offline.len(),
        "{} live events, {} replayed; {} differ:\n{}",
        live.len(),
        offline.len(),
        diffs.len(),
        diffs.join("\n")
    );
}
