//! Memory of the attribution index at scale: 100,000 pods, 10,000 NetworkPolicies, 20,000
//! Services with 40,000 EndpointSlices and 5,000 Nodes fed through the same event functions the
//! watchers use, then the process's resident memory (`VmRSS` from /proc/self/status). Fails
//! (exit 1) above the budget of 100 MiB.
//!
//! Run: `cargo bench --bench kube_memory` (harness = false). Objects are shaped like a K3s
//! cluster's: 1,000 namespaces of 10 Deployments × 10 dual-stack pods, each pod with four labels
//! and a ReplicaSet owner; 10 policies per namespace, half of them with limit annotations; two
//! dual-stack Services per Deployment (the Deployment's own, two named ports, every tenth a
//! NodePort; and a `-internal` one with a gRPC port), each with an IPv4 and an IPv6
//! EndpointSlice holding the Deployment's 10 pods (400,000 endpoint addresses); 5,000 nodes with
//! two addresses and a pod CIDR per family. Every object is built, fed and dropped one at a time, as
//! the watcher does with each event. RSS is shown after the pods and policies alone, then with
//! everything.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::Event;
use netpol_nflog::attribute::index::Index;
use netpol_nflog::attribute::{Attribution, Flow};
use serde_json::json;

const PODS: usize = 100_000;
const POLICIES: usize = 10_000;
const NAMESPACES: usize = 1_000;
/// Deployments: 10 per namespace, 10 pods each.
const DEPLOYMENTS: usize = 10_000;
/// Two per Deployment: Service `i` and `i + DEPLOYMENTS` select Deployment `i % DEPLOYMENTS`.
const SERVICES: usize = 2 * DEPLOYMENTS;
const NODES: usize = 5_000;
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
    let pods_and_policies = status_kib("VmRSS");
    index.service_event(&Event::Init);
    for i in 0..SERVICES {
        index.service_event(&Event::InitApply(service(i)));
    }
    index.service_event(&Event::InitDone);
    index.endpoint_slice_event(&Event::Init);
    for i in 0..SERVICES {
        for v6 in [false, true] {
            index.endpoint_slice_event(&Event::InitApply(endpoint_slice(i, v6)));
        }
    }
    index.endpoint_slice_event(&Event::InitDone);
    index.node_event(&Event::Init);
    for i in 0..NODES {
        index.node_event(&Event::InitApply(node(i)));
    }
    index.node_event(&Event::InitDone);
    let elapsed = t0.elapsed();

    // Use the index so nothing is optimised away, and show it answers.
    let ctx = index.resolve(
        &Attribution::from_prefix(Some(b"")),
        None,
        Some(ip(PODS - 1)),
    );
    // And the Service of a pod, by its endpoints.
    let flow = Flow {
        src: Some(ip(0)),
        dst: Some(ip(PODS - 1)),
        protocol: Some(6),
        dst_port: Some(8080),
        ..Flow::default()
    };
    let services = index.dest_services(&flow);
    // And the second Service of the same pods, on its own port.
    let internal = index.dest_services(&Flow {
        dst_port: Some(9000),
        ..flow
    });
    let counts = index.counts();
    // The daemon gives freed heap back once its watches have synced (as here, after loading).
    netpol_nflog::metrics::trim_heap();
    let rss = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("loaded {counts:?} in {elapsed:.2?}");
    println!(
        "candidates for the last pod: {}",
        ctx.map_or(0, |c| c.policies.len())
    );
    println!("services of the last pod: {services:?}");
    assert_eq!(
        services.len(),
        1,
        "the last pod is behind one Service on 8080"
    );
    println!("services of the last pod on 9000: {internal:?}");
    assert_eq!(internal.len(), 1, "and behind the -internal one on 9000");
    println!(
        "VmRSS {:.1} MiB (before loading {:.1} MiB, index ~{:.1} MiB; pods and policies alone {:.1} MiB), VmHWM {:.1} MiB, budget {BUDGET_MIB} MiB",
        mib(rss),
        mib(before),
        mib(rss.saturating_sub(before)),
        mib(pods_and_policies),
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

fn v6_ip(i: usize) -> String {
    format!("fd00:10::{:x}:{:x}", i >> 16, i & 0xffff)
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
                   "podIPs": [{"ip": ip(i).to_string()}, {"ip": v6_ip(i)}]}
    }))
    .unwrap_or_default()
}

/// Deployment `i`: `(namespace, name)`; its pods are `i + k × DEPLOYMENTS` (see [`pod`]).
fn deployment(i: usize) -> (String, String) {
    (
        format!("team-{:04}", i % NAMESPACES),
        format!("service-{}", (i / NAMESPACES) % 10),
    )
}

/// Service `i`: `(namespace, Service name, Deployment name)`. The first `DEPLOYMENTS` are the
/// Deployments' own; the others are a second, `-internal` Service of the same pods.
fn service_name(i: usize) -> (String, String, String) {
    let (ns, deploy) = deployment(i % DEPLOYMENTS);
    let name = if i < DEPLOYMENTS {
        deploy.clone()
    } else {
        format!("{deploy}-internal")
    };
    (ns, name, deploy)
}

fn service(i: usize) -> Service {
    let (ns, name, deploy) = service_name(i);
    let mut ports = if i < DEPLOYMENTS {
        vec![
            json!({"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}),
            json!({"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": "metrics"}),
        ]
    } else {
        vec![json!({"name": "grpc", "protocol": "TCP", "port": 9000, "targetPort": 9000})]
    };
    if i % 10 == 0 {
        ports[0]["nodePort"] = json!(30000 + i / 10);
    }
    let v4 = format!("10.43.{}.{}", i >> 8, i & 0xff);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": uid(4, i), "resourceVersion": "1",
                     "labels": {"app": deploy, "team": ns}},
        "spec": {"type": if i % 10 == 0 { "NodePort" } else { "ClusterIP" },
                 "clusterIP": v4, "clusterIPs": [v4, format!("fd00:43::{:x}", i)],
                 "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
                 "selector": {"app": deploy}, "ports": ports}
    }))
    .unwrap_or_default()
}

fn endpoint_slice(i: usize, v6: bool) -> EndpointSlice {
    let (ns, name, deploy) = service_name(i);
    let endpoints: Vec<_> = (0..PODS / DEPLOYMENTS)
        .map(|k| {
            let p = i % DEPLOYMENTS + k * DEPLOYMENTS;
            let addr = if v6 { v6_ip(p) } else { ip(p).to_string() };
            json!({"addresses": [addr], "conditions": {"ready": true, "serving": true, "terminating": false},
                   "nodeName": format!("node-{:03}", p % 100),
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{deploy}-{:05x}", p), "uid": uid(2, p)}})
        })
        .collect();
    let ports = if i < DEPLOYMENTS {
        json!([{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "metrics", "protocol": "TCP", "port": 9090}])
    } else {
        json!([{"name": "grpc", "protocol": "TCP", "port": 9000}])
    };
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-{}{:05x}", if v6 { "6" } else { "4" }, i), "namespace": ns,
                     "uid": uid(if v6 { 6 } else { 5 }, i), "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": ports
    }))
    .unwrap_or_default()
}

fn node(i: usize) -> Node {
    let name = format!("node-{:03}", i);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": uid(7, i), "resourceVersion": "1", "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": format!("10.{}.{}.0/24", 64 + (i >> 8), i & 0xff),
                 "podCIDRs": [format!("10.{}.{}.0/24", 64 + (i >> 8), i & 0xff), format!("fd00:42:{:x}::/64", i)]},
        "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", i >> 8, i & 0xff)},
                                 {"type": "InternalIP", "address": format!("fd00:ff::{:x}", i)},
                                 {"type": "Hostname", "address": name}]}
    }))
    .unwrap_or_default()
}
