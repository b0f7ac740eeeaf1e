//! Parse + decode + render per NFLOG message, and proof that the per-message path does not
//! allocate. Run: `cargo bench --bench pipeline`.
//!
//! The batch holds a realistic K3s mix: TCP SYNs to a policy-protected pod (prefix
//! `DROP by policy ns/name`), UDP DNS rejected by the pod chain (empty prefix), IPv6 TCP, ICMP.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::{Arc, RwLock};

use criterion::{criterion_group, Criterion, Throughput};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use netpol_nflog::attribute::index::Index;
use netpol_nflog::decode::build::{icmp, ipv4, ipv6, tcp, udp};
use netpol_nflog::event::Timestamp;
use netpol_nflog::limit::{Limit, Limiter};
use netpol_nflog::pipeline::Processor;
use netpol_nflog::render::{Format, Renderer};
use netpol_nflog::source::nflog::build::Packet;
use netpol_nflog::stats::Stats;
use serde_json::json;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MESSAGES: usize = 256;

fn batch() -> Vec<u8> {
    let a = [10, 42, 0, 10];
    let b = [10, 42, 1, 20];
    let mut a6 = [0u8; 16];
    a6[..2].copy_from_slice(&[0xfd, 0]);
    a6[15] = 0x10;
    let mut b6 = a6;
    b6[15] = 0x20;
    let mut out = Vec::new();
    for i in 0..MESSAGES {
        let id = i as u16;
        let (payload, family, proto, prefix): (Vec<u8>, u8, u16, &[u8]) = match i % 4 {
            0 => (
                ipv4(
                    6,
                    id,
                    0x4000,
                    0,
                    a,
                    b,
                    &tcp(40000 + id, 5432, 7, 0, 0x02, 64240, 0),
                ),
                2,
                0x0800,
                b"DROP by policy default/deny-db",
            ),
            1 => (
                ipv4(17, id, 0x4000, 0, a, b, &udp(53000, 53, &[0; 32])),
                2,
                0x0800,
                b"",
            ),
            2 => (
                ipv6(
                    6,
                    0,
                    0x12345,
                    a6,
                    b6,
                    &tcp(40100, 443, 9, 0, 0x02, 64800, 0),
                ),
                10,
                0x86dd,
                b"DROP by policy shop/deny-external",
            ),
            _ => (
                ipv4(1, id, 0, 0, a, b, &icmp(8, 0, 0x1234_0001)),
                2,
                0x0800,
                b"DROP by policy monitoring/deny-icmp",
            ),
        };
        push_message(&mut out, family, proto, prefix, i, &payload);
    }
    out
}

/// One NFLOG message as the kernel sends it for OUTPUT: group 100, root's uid/gid, a sequence
/// number.
fn push_message(
    out: &mut Vec<u8>,
    family: u8,
    proto: u16,
    prefix: &[u8],
    seq: usize,
    payload: &[u8],
) {
    Packet {
        family,
        hw_protocol: proto,
        prefix,
        seq: Some(seq as u32),
        outdev: 1,
        uid_gid: Some((0, 0)),
        payload,
        ..Default::default()
    }
    .encode(out);
}

/// An index with 1,000 pods (10.42.0.0/22, so the batch's addresses are pods) in 10 namespaces
/// and 100 policies, the shape of a mid-size cluster as seen from one node.
fn index() -> Arc<RwLock<Index>> {
    let mut index = Index::new();
    for i in 0..1000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a2a_0000u32 + i).to_string();
        let ns = if i == 10 {
            "default".to_string()
        } else {
            format!("team-{}", i % 10)
        };
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-5d8f7c9b4-{i:05}"), "namespace": ns, "uid": format!("uid-{i}"),
                         "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "x"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        }))
        .expect("pod json");
        index.apply_pod(&pod);
    }
    for i in 0..100u32 {
        let (ns, name) = match i {
            0 => ("default".to_string(), "deny-db".to_string()),
            1 => ("monitoring".to_string(), "deny-icmp".to_string()),
            _ => (format!("team-{}", i % 10), format!("policy-{i}")),
        };
        let np: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns, "uid": format!("np-{i}")},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}
        }))
        .expect("policy json");
        index.apply_policy(&np);
    }
    Arc::new(RwLock::new(index))
}

fn processor(formats: &[Format]) -> Processor {
    let limiter = Limiter::new(false, Limit::DEFAULT, Limit::DEFAULT);
    Processor::new(
        Renderer::new("node-1", "node-1"),
        limiter,
        formats,
        Stats::new(),
        false,
    )
}

fn bench(c: &mut Criterion) {
    let buf = batch();
    let now = Timestamp::now();
    let mut acks = Vec::new();
    let mut g = c.benchmark_group("per_message");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    for (name, formats) in [
        ("syslogemu", &[Format::Syslogemu][..]),
        ("json", &[Format::Json][..]),
        ("syslogemu+json", &[Format::Syslogemu, Format::Json][..]),
    ] {
        let mut p = processor(formats);
        g.bench_function(name, |bch| {
            bch.iter(|| {
                p.handle_batch(&buf, now, &mut acks);
                p.discard_pending();
            })
        });
    }
    // The same JSON output with Kubernetes attribution (policy lookup, pods on both sides).
    let mut attributed = processor(&[Format::Json]).with_kube(index());
    g.bench_function("json+attribution", |bch| {
        bch.iter(|| {
            attributed.handle_batch(&buf, now, &mut acks);
            attributed.discard_pending();
        })
    });
    // The daemon's default: syslogemu and JSON, correlation on, Kubernetes attribution, a tail
    // client connected; every packet logged by its policy and by the pod chain, as on K3s.
    let pairs = k3s_pairs();
    let mut full = default_processor();
    g.bench_function(
        "default: syslogemu+json+correlation+attribution+tail",
        |bch| {
            bch.iter(|| {
                full.handle_batch(&pairs, now, &mut acks);
                full.discard_pending();
            })
        },
    );
    // Suppressed messages stop before render (decode and attribution pick the bucket).
    let mut limited = Processor::new(
        Renderer::new("node-1", "node-1"),
        Limiter::new(
            true,
            Limit {
                count: 1,
                per: std::time::Duration::from_secs(3600),
                burst: 1,
            },
            Limit {
                count: 1,
                per: std::time::Duration::from_secs(3600),
                burst: 1,
            },
        ),
        &[Format::Syslogemu, Format::Json],
        Stats::new(),
        false,
    );
    g.bench_function("suppressed", |bch| {
        bch.iter(|| {
            limited.handle_batch(&buf, now, &mut acks);
            limited.discard_pending();
        })
    });
    g.finish();

    // Allocation check: after one warm-up batch (buffers grow, caches fill), the per-message
    // path must not allocate at all.
    let mut p = processor(&[Format::Syslogemu, Format::Json]);
    p.handle_batch(&buf, now, &mut acks);
    p.discard_pending();
    let before = ALLOCS.load(Relaxed);
    for _ in 0..100 {
        p.handle_batch(&buf, now, &mut acks);
        p.discard_pending();
    }
    let allocs = ALLOCS.load(Relaxed) - before;
    println!("allocations in 100 batches × {MESSAGES} messages after warm-up: {allocs}");
    assert_eq!(allocs, 0, "the per-message path allocated");

    // The same in the default configuration (correlation, attribution, a tail client).
    let mut p = default_processor();
    p.handle_batch(&pairs, now, &mut acks);
    p.discard_pending();
    let before = ALLOCS.load(Relaxed);
    for _ in 0..100 {
        p.handle_batch(&pairs, now, &mut acks);
        p.discard_pending();
    }
    let allocs = ALLOCS.load(Relaxed) - before;
    println!(
        "allocations in 100 batches × {MESSAGES} messages after warm-up, default configuration: {allocs}"
    );
    assert_eq!(
        allocs, 0,
        "the default configuration's per-message path allocated"
    );
}

/// The daemon's default processor: syslogemu and JSON, 200 ms correlation, a 1,000-pod index,
/// one tail client.
fn default_processor() -> Processor {
    processor(&[Format::Syslogemu, Format::Json])
        .with_correlation(std::time::Duration::from_millis(200))
        .with_kube(index())
        .with_tail(Arc::new(std::sync::atomic::AtomicUsize::new(1)), false)
}

/// K3s-shaped pairs: each packet logged by its policy's rule, then by the pod chain.
fn k3s_pairs() -> Vec<u8> {
    let a = [10, 42, 0, 10];
    let b = [10, 42, 1, 20];
    let mut out = Vec::new();
    for i in 0..MESSAGES / 2 {
        let id = i as u16;
        let payload = ipv4(
            6,
            id,
            0x4000,
            0,
            a,
            b,
            &tcp(40000 + id, 5432, 7, 0, 0x02, 64240, 0),
        );
        for (k, prefix) in [&b"DROP by policy default/deny-db"[..], b""]
            .iter()
            .enumerate()
        {
            push_message(&mut out, 2, 0x0800, prefix, 2 * i + k, &payload);
        }
    }
    out
}

/// Instruction counting: `PIPELINE_IR=<bench name> valgrind --tool=callgrind
/// --toggle-collect='*measured*' target/release/deps/pipeline-…` runs that configuration for
/// `PIPELINE_IR_BATCHES` batches (default 20) after a warm-up batch, outside criterion; the
/// callgrind total divided by batches × 256 is the instruction count per message.
fn ir_mode(name: &str) {
    let batches: usize = std::env::var("PIPELINE_IR_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (mut p, buf) = match name {
        "syslogemu" => (processor(&[Format::Syslogemu]), batch()),
        "json" => (processor(&[Format::Json]), batch()),
        "syslogemu+json" => (processor(&[Format::Syslogemu, Format::Json]), batch()),
        "json+attribution" => (processor(&[Format::Json]).with_kube(index()), batch()),
        "default" => (default_processor(), k3s_pairs()),
        other => panic!("PIPELINE_IR: unknown configuration {other}"),
    };
    let now = Timestamp::now();
    let mut acks = Vec::new();
    p.handle_batch(&buf, now, &mut acks);
    p.discard_pending();
    measured(&mut p, &buf, now, &mut acks, batches);
    println!("{name}: {batches} batches × {MESSAGES} messages");
}

#[inline(never)]
fn measured(p: &mut Processor, buf: &[u8], now: Timestamp, acks: &mut Vec<u32>, n: usize) {
    for _ in 0..n {
        p.handle_batch(std::hint::black_box(buf), now, acks);
        p.discard_pending();
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(name) = std::env::var("PIPELINE_IR") {
        return ir_mode(&name);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
