//! Processor tests: the stages in order on built messages, sequence accounting, correlation.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::super::Processor;
use crate::decode::build::{ipv4, tcp, udp};
use crate::event::Timestamp;
use crate::limit::{Limit, Limiter};
use crate::render::{Format, Renderer};
use crate::source::nflog::build::Packet;
use crate::stats::Stats;

const A: [u8; 4] = [10, 42, 0, 10];
const B: [u8; 4] = [10, 42, 0, 20];

fn processor(formats: &[Format], limits: bool) -> (Processor, std::sync::Arc<Stats>) {
    let stats = Stats::new();
    let limiter = Limiter::new(limits, Limit::DEFAULT, Limit::DEFAULT);
    let p = Processor::new(
        Renderer::new("node", "node"),
        limiter,
        formats,
        stats.clone(),
        true,
    );
    (p, stats)
}

fn message(out: &mut Vec<u8>, prefix: &[u8], seq: u32, payload: &[u8]) {
    Packet {
        prefix,
        seq: Some(seq),
        payload,
        ..Default::default()
    }
    .encode(out);
}

fn lines(p: &mut Processor) -> Vec<String> {
    p.take_chunks()
        .flat_map(|(_, c)| {
            String::from_utf8(c.data)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn sequence_gaps_are_counted_as_lost() {
    let (mut p, stats) = processor(&[Format::Syslogemu], false);
    let pkt = ipv4(17, 1, 0, 0, A, B, &udp(1, 2, b""));
    let mut buf = Vec::new();
    for seq in [0, 1, 5, 6, 10] {
        message(&mut buf, b"x", seq, &pkt);
    }
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    assert_eq!(stats.received.load(Relaxed), 5);
    assert_eq!(
        stats.lost_seq_gap.load(Relaxed),
        6,
        "2,3,4 and 7,8,9 missing"
    );
    assert_eq!(lines(&mut p).len(), 5);
}

#[test]
fn malformed_messages_are_counted_and_skipped() {
    let (mut p, stats) = processor(&[Format::Syslogemu], false);
    let pkt = ipv4(17, 1, 0, 0, A, B, &udp(1, 2, b""));
    let mut buf = Vec::new();
    message(&mut buf, b"ok", 0, &pkt);
    let mut bad = Vec::new();
    message(&mut bad, b"bad", 1, &pkt);
    // Break the first attribute's length inside the second message.
    bad[20..22].copy_from_slice(&0xfff0u16.to_ne_bytes());
    buf.extend_from_slice(&bad);
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    assert_eq!(stats.malformed.load(Relaxed), 1);
    assert_eq!(stats.received.load(Relaxed), 1);
}

#[test]
fn rate_limit_suppresses_per_policy_and_counts() {
    let (mut p, stats) = processor(&[Format::Syslogemu], true);
    let pkt = ipv4(17, 1, 0, 0, A, B, &udp(1, 2, b""));
    let mut buf = Vec::new();
    for seq in 0..15 {
        message(&mut buf, b"DROP by policy default/a", seq, &pkt);
    }
    for seq in 15..20 {
        message(&mut buf, b"DROP by policy default/b", seq, &pkt);
    }
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    assert_eq!(lines(&mut p).len(), 15, "burst 10 for a, all 5 of b");
    assert_eq!(stats.suppressed.load(Relaxed), 5);
}

#[test]
fn one_json_event_per_packet_one_syslogemu_line_per_message() {
    let (p, _) = processor(&[Format::Syslogemu, Format::Json], false);
    let mut p = p.with_correlation(Duration::from_secs(60));
    let syn = ipv4(
        6,
        77,
        0x4000,
        0,
        A,
        B,
        &tcp(40000, 5432, 9, 0, 0x02, 1024, 0),
    );
    let other = ipv4(
        6,
        78,
        0x4000,
        0,
        A,
        B,
        &tcp(40001, 5432, 19, 0, 0x02, 1024, 0),
    );
    let mut buf = Vec::new();
    message(&mut buf, b"DROP by policy default/deny-db", 0, &syn);
    message(&mut buf, b"DROP by policy default/deny-all", 1, &syn);
    message(&mut buf, b"", 2, &syn);
    message(&mut buf, b"", 3, &other);
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    // The pod chain's empty-prefix message is the last of a traversal: both events are
    // complete without waiting for the window.
    let all: Vec<String> = lines(&mut p);
    let (json, syslogemu): (Vec<_>, Vec<_>) = all.iter().partition(|l| l.starts_with('{'));
    assert_eq!(syslogemu.len(), 4, "one line per message: {all:?}");
    let events: Vec<serde_json::Value> = json
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["count"], 3);
    assert_eq!(events[0]["ip.id"], 77);
    let names: Vec<&str> = events[0]["policy"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["deny-db", "deny-all"]);
    assert_eq!(events[1]["count"], 1);
    assert_eq!(events[1]["policy_source"], "pod-chain");
}

#[test]
fn per_message_syslog_gets_kubernetes_fields_even_when_json_waits() {
    let (p, _) = processor(&[Format::Json], false);
    let mut p = p
        .with_correlation(Duration::from_secs(60))
        .with_kube(pod_index(&[
            ("web-0", "10.42.0.10"),
            ("db-0", "10.42.0.20"),
        ]));
    p.add_syslog_output(crate::render::syslog::SyslogFormat {
        rfc: crate::render::syslog::Rfc::Rfc5424,
        facility: 16,
        severity: 4,
        app_name: "netpol-nflogd".into(),
        hostname: "node".into(),
        node_name: "node".into(),
        msg: crate::render::syslog::MsgFormat::Syslogemu,
    });
    let mut buf = Vec::new();
    let syn = ipv4(
        6,
        5,
        0x4000,
        0,
        A,
        B,
        &tcp(40000, 5432, 9, 0, 0x02, 1024, 0),
    );
    message(&mut buf, b"DROP by policy shop/deny-db", 0, &syn);
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    let out = lines(&mut p);
    assert_eq!(out.len(), 1, "JSON waits, syslog is written: {out:?}");
    assert!(
        out[0].contains("src_pod=\"web-0\"") && out[0].contains("dest_pod=\"db-0\""),
        "{}",
        out[0]
    );
}

fn pod_index(
    pods: &[(&str, &str)],
) -> std::sync::Arc<std::sync::RwLock<crate::attribute::index::Index>> {
    use k8s_openapi::api::core::v1::Pod;
    let mut index = crate::attribute::index::Index::new();
    for (name, ip) in pods {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": name},
            "spec": {"nodeName": "node", "containers": []},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        }))
        .unwrap();
        index.apply_pod(&pod);
    }
    std::sync::Arc::new(std::sync::RwLock::new(index))
}

/// kube-router puts one empty-prefix NFLOG rule, with its own limit, at the end of each pod's
/// chain: a flood of drops to one pod must not silence another pod's.
#[test]
fn pod_chain_messages_are_limited_per_pod() {
    const OUTSIDE: [u8; 4] = [192, 168, 100, 2];
    for kube in [false, true] {
        let (p, stats) = processor(&[Format::Syslogemu], true);
        let mut p = if kube {
            p.with_kube(pod_index(&[("a", "10.42.0.10"), ("b", "10.42.0.20")]))
        } else {
            p
        };
        let mut buf = Vec::new();
        for seq in 0..60 {
            let pkt = ipv4(
                17,
                seq as u16,
                0,
                0,
                OUTSIDE,
                A,
                &udp(1000 + seq as u16, 53, b""),
            );
            message(&mut buf, b"", seq, &pkt);
        }
        let to_b = ipv4(17, 1, 0, 0, OUTSIDE, B, &udp(999, 53, b""));
        message(&mut buf, b"", 60, &to_b);
        p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
        let out = lines(&mut p);
        assert_eq!(
            out.len(),
            11,
            "kube {kube}: burst 10 for a, then b: {out:?}"
        );
        assert!(out[10].contains("DST=10.42.0.20"), "{}", out[10]);
        assert_eq!(stats.suppressed.load(Relaxed), 50);
        p.emit_summaries(Duration::from_secs(60), Timestamp::default());
        let want = if kube {
            "pod-chain:shop/a IPv4"
        } else {
            "pod-chain:192.168.100.2 > 10.42.0.10"
        };
        let keys: Vec<String> = p
            .limiter_mut()
            .totals()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![want.to_string()]);
    }
}

/// Byte-identical datagrams (IPv4 ID 0 with DF, one flow label for an IPv6 flow) are distinct
/// packets: one event each, with the count of the messages that really were merged.
#[test]
fn identical_packets_are_separate_events() {
    use crate::decode::build::ipv6;
    let v4 = ipv4(17, 0, 0x4000, 0, A, B, &udp(40000, 53, b"same"));
    let mut v6_src = [0u8; 16];
    v6_src[..2].copy_from_slice(&[0xfd, 0x42]);
    let mut v6_dst = v6_src;
    v6_src[15] = 10;
    v6_dst[15] = 20;
    let v6 = ipv6(17, 0, 0x12345, v6_src, v6_dst, &udp(40000, 53, b"same"));
    for (family, pkt) in [(libc::AF_INET as u8, v4), (libc::AF_INET6 as u8, v6)] {
        let (p, stats) = processor(&[Format::Syslogemu, Format::Json], false);
        let mut p = p.with_correlation(Duration::from_secs(60));
        let mut buf = Vec::new();
        let mut seq = 0;
        for _ in 0..10 {
            for prefix in [&b"DROP by policy shop/deny"[..], b""] {
                Packet {
                    family,
                    hw_protocol: if family == libc::AF_INET as u8 {
                        0x0800
                    } else {
                        0x86dd
                    },
                    prefix,
                    seq: Some(seq),
                    payload: &pkt,
                    ..Default::default()
                }
                .encode(&mut buf);
                seq += 1;
            }
        }
        p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
        p.expire(true);
        let out = lines(&mut p);
        let events: Vec<serde_json::Value> = out
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            out.len() - events.len(),
            20,
            "syslogemu: one line per message"
        );
        assert_eq!(events.len(), 10, "family {family}: one event per packet");
        assert!(events.iter().all(|e| e["count"] == 2), "{events:?}");
        assert_eq!(stats.correlated.load(Relaxed), 10);
    }
}

/// A tail record carries every written message of its packet: `nflog-tail -o syslogemu` and
/// `-w` then write what the daemon's syslogemu file holds, one line or record per message.
#[test]
fn tail_records_carry_every_message_of_the_packet() {
    let (p, _) = processor(&[Format::Syslogemu], false);
    let clients = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let mut p = p
        .with_correlation(Duration::from_secs(60))
        .with_tail(clients, false);
    let pkt = ipv4(17, 0, 0x4000, 0, A, B, &udp(40000, 53, b"q"));
    let mut buf = Vec::new();
    message(&mut buf, b"DROP by policy shop/deny", 0, &pkt);
    message(&mut buf, b"DROP by policy shop/deny", 1, &pkt);
    message(&mut buf, b"", 2, &pkt);
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    let file = lines(&mut p);
    let tail = p.take_tail().expect("a tail record");
    let records: Vec<serde_json::Value> = String::from_utf8(tail.data)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1);
    let messages = records[0]["messages"].as_array().unwrap();
    let tail_lines: Vec<&str> = messages
        .iter()
        .map(|m| m["syslogemu"].as_str().unwrap())
        .collect();
    let file_lines: Vec<&str> = file.iter().map(|l| l.trim_end_matches('\n')).collect();
    assert_eq!(tail_lines, file_lines);
    assert_eq!(records[0]["count"], 3);
    assert_eq!(records[0]["syslogemu"], messages[0]["syslogemu"]);
    assert_eq!(records[0]["nflog"], messages[0]["nflog"]);
    assert_ne!(
        messages[1]["nflog"], messages[2]["nflog"],
        "each message's own bytes"
    );
}

/// The node-wide cap holds back what each rule's own limit would let through, and says so.
#[test]
fn the_node_cap_is_counted_per_rule_and_in_total() {
    let stats = Stats::new();
    let wide = Limit {
        count: 1000,
        per: Duration::from_secs(1),
        burst: 1000,
    };
    let node = Limit {
        count: 1,
        per: Duration::from_secs(3600),
        burst: 25,
    };
    let limiter = Limiter::new(true, wide, wide).with_node_limit(Some(node));
    let mut p = Processor::new(
        Renderer::new("node", "node"),
        limiter,
        &[Format::Syslogemu],
        stats.clone(),
        true,
    );
    let mut buf = Vec::new();
    for seq in 0..40u32 {
        let pkt = ipv4(17, seq as u16, 0, 0, A, B, &udp(1000 + seq as u16, 53, b""));
        let prefix: &[u8] = if seq % 2 == 0 {
            b"DROP by policy shop/a"
        } else {
            b""
        };
        message(&mut buf, prefix, seq, &pkt);
    }
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    assert_eq!(lines(&mut p).len(), 25);
    p.publish_metrics();
    assert_eq!(stats.suppressed.load(Relaxed), 15);
    assert_eq!(stats.suppressed_node_cap.load(Relaxed), 15);
    let totals: u64 = p.limiter_mut().totals().iter().map(|(_, n)| n).sum();
    assert_eq!(
        totals, 15,
        "each suppressed message is counted under its rule"
    );
}

/// The conntrack entry's original destination (the ClusterIP before kube-proxy's DNAT) names
/// the exact Service the client aimed at.
#[test]
fn conntrack_names_the_service_the_client_aimed_at() {
    use crate::source::conntrack::{build::entry, Tuple};
    let index = pod_index(&[("web-0", "10.42.0.10"), ("db-0", "10.42.0.20")]);
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "shop", "uid": "svc-db"},
        "spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                 "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432}]}
    }))
    .unwrap();
    index.write().unwrap().apply_service(&svc);
    let (p, _) = processor(&[Format::Json], false);
    let mut p = p.with_kube(index);
    let syn = ipv4(
        6,
        5,
        0x4000,
        0,
        A,
        B,
        &tcp(40000, 5432, 9, 0, 0x02, 1024, 0),
    );
    let ct = entry(&Tuple {
        src: "10.42.0.10".parse().unwrap(),
        dst: "10.43.0.10".parse().unwrap(),
        protocol: 6,
        src_port: Some(40000),
        dst_port: Some(5432),
    });
    let mut buf = Vec::new();
    Packet {
        prefix: b"DROP by policy shop/deny-db",
        seq: Some(0),
        payload: &syn,
        conntrack: Some(&ct),
        ..Default::default()
    }
    .encode(&mut buf);
    p.handle_batch(&buf, Timestamp::default(), &mut Vec::new());
    let out = lines(&mut p);
    let ev: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    let services = &ev["dest"]["services"];
    assert_eq!(services[0]["name"], "db", "{ev}");
    assert_eq!(services[0]["via"], "cluster-ip", "{ev}");
    assert_eq!(services.as_array().map(Vec::len), Some(1), "{ev}");
}
