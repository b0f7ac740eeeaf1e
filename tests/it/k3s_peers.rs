//! Services, nodes and Kubernetes Events on the K3s-shaped node (`support::k3s`): real traffic.
//!
//! The fake API serves, besides the scenario's namespaces, pods and policies, its ClusterIP
//! Service `shop/db` (10.43.0.20:5432/TCP, port `postgres`) with its EndpointSlice (db-0's
//! address and port), the local node `node-1` and another node `node-2`, whose InternalIPs the
//! "outside" namespace sends from; kube-proxy's DNAT for the Service is in the node's nat table.
//!
//! - `k3s_service_named_through_cluster_ip`: web → ClusterIP, DNATed to db-0 and dropped by
//!   `shop/db-allow-api`: the event names `shop/db` in `dest.services`, by the conntrack entry's
//!   original destination (`via: cluster-ip`) where the kernel attaches it to NFLOG messages,
//!   else by the EndpointSlice (`via: endpoints`); a port no Service has names none.
//! - `k3s_node_peers_and_address_classes`: drops from and to the other node's InternalIP (IPv4 and
//!   IPv6), and to this node's, name the node (`src.node`, `dest.node`); from and to an address
//!   of no pod and no node, that side is left out and `src_class`/`dest_class` tell private
//!   (RFC 1918, unique-local) from public.
//! - `k3s_drop_burst_posts_one_kubernetes_event`: with `--kube-events`, 100 drops of one peer to
//!   one pod through one policy are one Event (POST) with the count, a later burst patches its
//!   series (PATCH, `series.count` 2), and another peer's drops to the same pod are an Event of
//!   their own.
//!
//! Needs root, `ip`, `iptables-restore`/`ip6tables-restore`, `ipset` and bridge netfilter (the
//! rig says which kernel feature is missing).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_api::{Write, EVENTS_IN};
use crate::support::k3s::{
    namespace, pod, policy, syn, udp, End, Flow, K3sNode, Scenario, ServiceSpec, L4, NODE,
    OTHER_NODE,
};
use crate::support::metrics::scrape;
use crate::support::Wait;

const WEB: &str = "web-7c9d8b6f4d-k8p2q";
const API: &str = "api-7c9d8b6f4d-x7w2m";
const DB: &str = "db-0";
const POLICY: &str = "db-allow-api";
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 20);

/// The empty-prefix bucket raised (the pod chain logs the first 10 packets of a burst too).
const CONFIG: &str = "[kubernetes]\nmode = \"on\"\n[limits]\nunattributed_limit = \"1000/second\"\nunattributed_burst = 1000\n";

/// shop: web, api and db-0 (container port `postgres` 5432/TCP). `db-allow-api` lets api reach
/// db-0 on 5432/TCP only (kernel and daemon limits raised above the bursts sent); `web-egress`
/// lets web reach db-0 only. The Service `shop/db` sends 10.43.0.20:5432/TCP to db-0:5432.
fn scenario() -> Scenario {
    Scenario {
        namespaces: vec![namespace("shop", &[])],
        pods: vec![
            pod("shop", WEB, "web", 10),
            pod("shop", API, "api", 11),
            pod("shop", DB, "db", 12)
                .statefulset()
                .port("postgres", 5432, "TCP"),
        ],
        policies: vec![
            policy(
                "shop",
                POLICY,
                json!({"podSelector": {"matchLabels": {"app": "db"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                                    "ports": [{"protocol": "TCP", "port": 5432}]}]}),
            )
            .annotate("kube-router.io/netpol-nflog-limit", "1000/second")
            .annotate("kube-router.io/netpol-nflog-limit-burst", "1000"),
            policy(
                "shop",
                "web-egress",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
            ),
        ],
        service: Some(ServiceSpec {
            ip: CLUSTER_IP,
            port: 5432,
            protocol: "tcp",
            pod: DB.into(),
            target_port: 5432,
        }),
        zero_flow_labels: false,
    }
}

/// Sends a flow and returns the packet events it gave, checking first that the kernel's NFLOG
/// rules logged as many messages as `messages` says (the rig drops what the test says it drops).
fn send(node: &K3sNode, what: &str, flow: Flow, messages: RangeInclusive<u64>) -> Vec<Value> {
    let (events, kernel) = (node.events().len(), node.nflog_total());
    node.send(&flow);
    node.settle();
    let logged = node.nflog_total() - kernel;
    assert!(
        messages.contains(&logged),
        "rig: {what}: the kernel's NFLOG rules sent {logged} messages, expected {messages:?}; rules in {}",
        node.sb.dir.display()
    );
    node.events().split_off(events)
}

/// `n` datagrams `from` → db-0:5432/UDP, each from its own source port (distinct packets: the
/// daemon merges byte-identical datagrams that only one rule logged, see the README), sent by
/// one thread within milliseconds.
fn datagrams(from: End, first_port: u16, n: usize) -> Flow {
    Flow {
        l4: L4::UdpPorts,
        ..udp(from, End::Pod(DB), false, first_port, 5432, n)
    }
}

/// The one event of `what`, with every field the test names; the differences otherwise.
fn check(what: &str, events: &[Value], want: &[(&str, Value)], failures: &mut Vec<String>) {
    let [ev] = events else {
        failures.push(format!(
            "{what}: expected 1 event, got {}: {events:?}",
            events.len()
        ));
        return;
    };
    let bad: Vec<String> = want
        .iter()
        .filter_map(|(path, want)| {
            let got = path.split('.').fold(ev, |v, k| &v[k]);
            (got != want).then(|| format!("{path}: expected {want}, got {got}"))
        })
        .collect();
    if bad.is_empty() {
        eprintln!("ok    {what}");
    } else {
        failures.push(format!(
            "{what}:\n    {}\n    event: {ev}",
            bad.join("\n    ")
        ));
    }
}

fn fail_if(failures: Vec<String>, node: &K3sNode) {
    assert!(
        failures.is_empty(),
        "{} check(s) failed:\n{}\ndaemon stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        node.daemon().stderr_text()
    );
}

/// Whether the daemon said the kernel attaches conntrack entries to NFLOG messages (else it
/// falls back to the EndpointSlices, and says so).
fn kernel_attaches_conntrack(node: &K3sNode) -> bool {
    let err = node.daemon().stderr_text();
    let yes = err.contains("the kernel attaches conntrack entries");
    let no = err.contains("cannot attach conntrack entries");
    assert!(
        yes != no,
        "the daemon must say once whether the kernel attaches conntrack entries:\n{err}"
    );
    yes
}

/// `db-allow-api`'s drop of a packet to db-0: its rule and the pod chain's.
fn db_drop() -> Vec<(&'static str, Value)> {
    vec![
        ("policy.namespace", json!("shop")),
        ("policy.name", json!(POLICY)),
        ("policy_source", json!("policy-rule")),
        ("direction", json!("ingress")),
        ("dest.pod", json!(DB)),
        ("count", json!(2)),
    ]
}

#[test]
fn k3s_service_named_through_cluster_ip() {
    let mut node = K3sNode::build("svc", scenario());
    node.start_daemon(CONFIG);
    let ct = kernel_attaches_conntrack(&node);
    let via = if ct { "cluster-ip" } else { "endpoints" };
    let db_ip = node.pod(DB).v4().to_string();
    let service = json!([{"namespace": "shop", "name": "db", "port_name": "postgres", "port": 5432, "via": via}]);
    let mut failures = Vec::new();

    // The rig: api may reach db-0 through the ClusterIP (the DNAT happens, the policy allows it).
    let allowed = send(
        &node,
        "api → ClusterIP:5432",
        syn(End::Pod(API), End::ClusterIp, false, 5432),
        0..=0,
    );
    assert!(
        allowed.is_empty(),
        "api → ClusterIP is allowed: {allowed:?}"
    );

    // Through the ClusterIP; to the same pod and port directly (conntrack shows no translation:
    // no Service; without conntrack the endpoints still name it, as the README says); to a
    // port of db-0 that no Service has.
    let direct = if ct { Value::Null } else { service.clone() };
    use End::*;
    #[rustfmt::skip]
    let cases = [
        ("web → ClusterIP 10.43.0.20:5432/TCP, DNATed to db-0:5432", syn(Pod(WEB), ClusterIp, false, 5432), 5432, service),
        ("web → db-0:5432/TCP directly", syn(Pod(WEB), Pod(DB), false, 5432), 5432, direct),
        ("web → db-0:6379/TCP, a port no Service has", syn(Pod(WEB), Pod(DB), false, 6379), 6379, Value::Null),
    ];
    for (what, flow, port, services) in cases {
        let mut want = db_drop();
        want.extend([
            ("dest_ip", json!(db_ip)),
            ("dest_port", json!(port)),
            ("src.pod", json!(WEB)),
            ("dest.services", services),
            ("src.services", Value::Null),
        ]);
        let evs = send(&node, what, flow, 2..=2);
        check(what, &evs, &want, &mut failures);
    }
    fail_if(failures, &node);
}

#[test]
fn k3s_node_peers_and_address_classes() {
    let mut node = K3sNode::build("nodes", scenario());
    node.start_daemon(CONFIG);
    let mut failures = Vec::new();
    use End::*;
    let (node1, node2) = (json!({"node": NODE}), json!({"node": OTHER_NODE}));
    // (what, flow, the peer's side as the event has it, the peer's address class). Into db-0:
    // db-allow-api's drop; out of web: web-egress's (it lets web reach db-0 only). Each one
    // rule and the pod chain.
    #[rustfmt::skip]
    let cases = [
        ("node-2 (192.168.100.3) → db-0 UDP 5432", udp(OtherNode, Pod(DB), false, 44001, 5432, 1), &node2, "private"),
        ("node-2 (fd00:100::3) → db-0 UDP 5432", udp(OtherNode, Pod(DB), true, 44002, 5432, 1), &node2, "unique-local"),
        ("outside (192.168.100.2, no node) → db-0 TCP 5432", syn(Outside, Pod(DB), false, 5432), &Value::Null, "private"),
        ("internet (93.184.216.34) → db-0 TCP 5432", syn(Internet, Pod(DB), false, 5432), &Value::Null, "public"),
        ("internet (2a00:1450:4001::7) → db-0 UDP 5432", udp(Internet, Pod(DB), true, 44003, 5432, 1), &Value::Null, "public"),
        ("web → node-2 (192.168.100.3) UDP 10250", udp(Pod(WEB), OtherNode, false, 44011, 10250, 1), &node2, "private"),
        ("web → node-1's InternalIP (192.168.100.1, INPUT) UDP 10250", udp(Pod(WEB), Uplink, false, 44012, 10250, 1), &node1, "private"),
        ("web → internet (93.184.216.34) TCP 443", syn(Pod(WEB), Internet, false, 443), &Value::Null, "public"),
    ];
    for (what, flow, peer, class) in cases {
        let pod_class = json!(if flow.v6 { "unique-local" } else { "private" });
        let want = if flow.from == Pod(WEB) {
            vec![
                ("policy.name", json!("web-egress")),
                ("direction", json!("egress")),
                ("src.pod", json!(WEB)),
                ("dest", peer.clone()),
                ("src_class", pod_class),
                ("dest_class", json!(class)),
                ("count", json!(2)),
            ]
        } else {
            let mut want = db_drop();
            want.extend([
                ("src", peer.clone()),
                ("src_class", json!(class)),
                ("dest_class", pod_class),
            ]);
            want
        };
        let evs = send(&node, what, flow, 2..=2);
        check(what, &evs, &want, &mut failures);
    }
    fail_if(failures, &node);
}

/// Events on the fake API under `EVENTS_IN`, by method.
fn writes(node: &K3sNode, method: &str) -> Vec<Write> {
    node.api()
        .writes()
        .into_iter()
        .filter(|w| w.method == method)
        .collect()
}

#[test]
fn k3s_drop_burst_posts_one_kubernetes_event() {
    let mut node = K3sNode::build("kev", scenario());
    // Three seconds between two Events of one pod, policy and peer (4 a minute per pod at most).
    let config = format!("{CONFIG}[events]\ninterval_s = 3\nper_pod_per_minute = 4\n");
    node.start_daemon_with(&config, &["--tail-socket", "", "--kube-events"]);
    let collection = format!("{EVENTS_IN}shop/events");

    // 100 datagrams web → db-0:5432/UDP (db-allow-api allows TCP only): 100 drops, each logged
    // by the policy's rule, the first 10 by the pod chain too (its 10/minute, burst 10).
    let burst = datagrams(End::Pod(WEB), 45000, 100);
    let evs = send(&node, "100 datagrams web → db-0", burst, 110..=110);
    assert_eq!(evs.len(), 100, "one JSON event per dropped packet");
    let posted = Wait::up_to(Duration::from_secs(10)).until("the drop Event (POST)", || {
        let w = node.api().writes();
        if w.is_empty() {
            Err("no write yet".to_string())
        } else {
            Ok(w)
        }
    });
    // Nothing more while nothing new is dropped, past the interval.
    std::thread::sleep(Duration::from_secs(4));
    let all = node.api().writes();
    assert_eq!(all.len(), 1, "exactly one Event for the burst: {all:#?}");
    let post = &posted[0];
    assert_eq!(
        (post.method.as_str(), post.path.as_str(), post.status),
        ("POST", collection.as_str(), 201),
        "{post:#?}"
    );
    let ev = &post.body;
    let note = ev["note"].as_str().unwrap_or_default().to_string();
    let want_note = format!(
        "100 packets from pod shop/{WEB} on port 5432/UDP dropped by NetworkPolicy shop/{POLICY} (ingress) in the last "
    );
    assert!(
        note.starts_with(&want_note) && note.ends_with(" s"),
        "note: {note:?}\nwant: {want_note}N s"
    );
    for (field, want) in [
        ("reason", json!("PolicyDrop")),
        ("type", json!("Warning")),
        ("action", json!("Drop")),
        (
            "regarding",
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": DB}),
        ),
        ("reportingController", json!("netpol-nflogd")),
        ("reportingInstance", json!(NODE)),
        ("series", Value::Null),
    ] {
        assert_eq!(ev[field], want, "{field} of the Event: {ev:#}");
    }
    let name = ev["metadata"]["name"]
        .as_str()
        .expect("the Event's name")
        .to_string();

    // A second burst of the same peer, policy and port: the Event's series is patched (count 2),
    // after the interval, and its note stays (the API server does not let it change).
    let more = datagrams(End::Pod(WEB), 45200, 20);
    let evs = send(&node, "20 more datagrams web → db-0", more, 20..=22);
    assert_eq!(evs.len(), 20);
    let t = Instant::now();
    let patch = Wait::up_to(Duration::from_secs(10)).until("the series update (PATCH)", || {
        writes(&node, "PATCH")
            .into_iter()
            .next()
            .ok_or_else(|| format!("writes: {:?}", node.api().writes()))
    });
    eprintln!("PATCH after {:?}: {}", t.elapsed(), patch.body);
    assert_eq!(patch.path, format!("{collection}/{name}"));
    assert_eq!(
        patch.status, 200,
        "the fake API accepted the patch: {patch:#?}"
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body["series"]["count"], json!(2), "{:#}", patch.body);
    assert!(
        patch.body["series"]["lastObservedTime"].is_string(),
        "{:#}",
        patch.body
    );
    let stored = &node.api().stored_events()[&format!("shop/{name}")];
    assert_eq!(stored["series"]["count"], json!(2));
    assert_eq!(stored["note"], json!(note));

    // Another peer's drops to the same pod (api, UDP 5432): an Event of their own, not a series
    // update of web's.
    let api = datagrams(End::Pod(API), 45300, 3);
    send(&node, "3 datagrams api → db-0", api, 3..=5);
    let second = Wait::up_to(Duration::from_secs(10)).until("api's Event (POST)", || {
        let posts = writes(&node, "POST");
        if posts.len() == 2 {
            Ok(posts[1].clone())
        } else {
            Err(format!("writes: {:#?}", node.api().writes()))
        }
    });
    let note2 = second.body["note"].as_str().unwrap_or_default();
    assert!(
        note2.starts_with(&format!(
            "3 packets from pod shop/{API} on port 5432/UDP dropped by NetworkPolicy shop/{POLICY}"
        )),
        "{note2:?}"
    );
    assert_eq!(second.body["regarding"]["name"], json!(DB));
    assert_eq!(
        writes(&node, "PATCH").len(),
        1,
        "{:#?}",
        node.api().writes()
    );
    let m = scrape(&node.sb, crate::support::k3s::METRICS_PORT);
    assert_eq!(
        m.value("netpol_nflog_kube_events_published_total", &[]),
        3.0
    );
    assert_eq!(m.value("netpol_nflog_kube_events_failed_total", &[]), 0.0);
    assert_eq!(m.value("netpol_nflog_kube_events_dropped_total", &[]), 0.0);
}
