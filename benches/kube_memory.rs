//! Memory of the attribution index at scale: 100,000 pods and 10,000 NetworkPolicies fed through
//! the same event functions the watchers use, then the process's resident memory
//! (`VmRSS` from /proc/self/status). Fails (exit 1) above the budget of 100 MiB.
//!
//! Run: `cargo bench --bench kube_memory` (harness = false). Objects are shaped like a K3s
//! cluster's: 1,000 namespaces of 10 Deployments × 10 dual-stack pods, each pod with four labels
//! and a ReplicaSet owner; 10 policies per namespace, half of them with limit annotations.
//! Every object is built, fed and dropped one at a time, as the watcher does with each event.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::Event;
use netpol_nflog::attribute::index::Index;
use netpol_nflog::attribute::Attribution;
use serde_json::json;

const PODS: usize = 100_000;
const POLICIES: usize = 10_000;
const NAMESPACES: usize = 1_000;
const BUDGET_MIB: f64 = 100.0;

fn main() {
    let before = status_kib("VmRSS");
    let t0 = Instant::now();
    let mut index = Index::new();
    index.policy_event(&Event::Init);
    for i in 0..POLICIES {
        index.policy_event(&Event::InitApply(policy(i)));
    }
    index.policy_event(&Event::InitDone);
    index.pod_event(&Event::Init);
    for i in 0..PODS {
        index.pod_event(&Event::InitApply(pod(i)));
    }
    index.pod_event(&Event::InitDone);
    let elapsed = t0.elapsed();

    // Use the index so nothing is optimised away, and show it answers.
    let ctx = index.resolve(
        &Attribution::from_prefix(Some(b"")),
        None,
        Some(ip(PODS - 1)),
    );
    let counts = index.counts();
    let rss = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("loaded {counts:?} in {elapsed:.2?}");
    println!(
        "candidates for the last pod: {}",
        ctx.map_or(0, |c| c.policies.len())
    );
    println!(
        "VmRSS {:.1} MiB (before loading {:.1} MiB, index ~{:.1} MiB), VmHWM {:.1} MiB, budget {BUDGET_MIB} MiB",
        mib(rss),
        mib(before),
        mib(rss.saturating_sub(before)),
        mib(hwm)
    );
    drop(index);
    if mib(rss) > BUDGET_MIB {
        eprintln!("over budget");
        std::process::exit(1);
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn uid(kind: u8, i: usize) -> String {
    format!("{:08x}-{:04x}-4{:03x}-8000-{:012x}", i, kind, i & 0xfff, i)
}

fn ip(i: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32).into()
}

fn policy(i: usize) -> NetworkPolicy {
    let ns = format!("team-{:04}", i % NAMESPACES);
    let mut annotations = json!({});
    if i % 2 == 0 {
        annotations = json!({"kube-router.io/netpol-nflog-limit": "20/minute", "kube-router.io/netpol-nflog-limit-burst": "20"});
    }
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("allow-frontend-to-service-{:05}", i), "namespace": ns, "uid": uid(1, i),
                     "resourceVersion": "1", "annotations": annotations},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("service-{}", (i / NAMESPACES) % 10)}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}]}],
            "policyTypes": ["Ingress"]
        }
    }))
    .unwrap_or_default()
}

fn pod(i: usize) -> Pod {
    let ns = format!("team-{:04}", i % NAMESPACES);
    let deploy = format!("service-{}", (i / NAMESPACES) % 10);
    let hash = format!("{:010x}", (i % (NAMESPACES * 10)) * 7919);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{deploy}-{hash}-{:05x}", i), "namespace": ns, "uid": uid(2, i), "resourceVersion": "1",
            "labels": {"app": deploy, "pod-template-hash": hash, "version": "v1.4.2", "team": ns},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deploy}-{hash}"),
                                 "uid": uid(3, i % (NAMESPACES * 10)), "controller": true}]
        },
        "spec": {"nodeName": format!("node-{:03}", i % 100), "containers": [{"name": "app", "image": "registry.local/app:1"}]},
        "status": {"phase": "Running", "podIP": ip(i).to_string(),
                   "podIPs": [{"ip": ip(i).to_string()}, {"ip": format!("fd00:10::{:x}:{:x}", i >> 16, i & 0xffff)}]}
    }))
    .unwrap_or_default()
}
