//! The daemon on a K3s-shaped node (`support::k3s`): pods in their own namespaces on a bridge,
//! kube-router's firewall generated from the objects a fake API serves, real traffic.
//!
//! `k3s_node_table` runs one table of flows (pod→pod bridged ingress and egress drops, pod→outside,
//! outside→pod, pod→ClusterIP, node→pod, allowed flows, IPv4 and IPv6) and checks each JSON event:
//! `policy_source`, `policy`, `direction`, the pods, and `count` (the NFLOG messages of that packet;
//! kube-router writes one `DROP by policy` rule after every accept rule of a policy, plus the pod
//! chain's empty-prefix rule, so the count is checked against the kernel's NFLOG counters too).
//! Every row runs; the failures are listed together at the end.
//!
//! Three defects have their own tests: identical datagrams merged into one event
//! (`k3s_identical_datagrams_are_separate_events`), one node-wide bucket for empty-prefix messages
//! (`k3s_empty_prefix_limits_are_per_pod_chain`), and a truncated prefix shared by two policies
//! not narrowed to the one that selects the pod (`k3s_truncated_name_narrowed_to_selecting_policy`).
//! `k3s_syslogemu_matches_ulogd2_on_the_node` compares the daemon's syslogemu lines with ulogd2's
//! on the same bridged, routed and DNATed traffic.
//!
//! Needs root, `ip`, `iptables-restore`/`ip6tables-restore` (nft backend is fine), `ipset`,
//! bridge netfilter, and `ulogd` (Debian `ulogd2`) for the comparison.

use serde_json::{json, Value};

use crate::support::k3s::{
    self, drop_prefix, namespace, pod, pod_chain_name, policy, syn, udp, End, Flow, K3sNode,
    PolicySpec, Scenario, ServiceSpec,
};

const WEB: &str = "web-7c9d8b6f4d-k8p2q";
const API: &str = "api-7c9d8b6f4d-x7w2m";
const DB: &str = "db-0";
const PG: &str = "postgres-0";
const DNS: &str = "coredns-7c9d8b6f4d-q4z8n";
/// 47 characters: safeJoin("shop", …) keeps 43 of them, the same for both.
const PG_V1: &str = "deny-ingress-to-postgres-except-from-the-api-v1";
const PG_V2: &str = "deny-ingress-to-postgres-except-from-the-api-v2";

const LIMIT: &str = "kube-router.io/netpol-nflog-limit";
const BURST: &str = "kube-router.io/netpol-nflog-limit-burst";

/// Daemon configuration of the table and defect (a)/(c) tests: the empty-prefix bucket raised,
/// so that those tests do not depend on defect (b).
pub(crate) const CONFIG_WIDE_UNATTRIBUTED: &str =
    "[kubernetes]\nmode = \"on\"\n[limits]\nunattributed_limit = \"1000/second\"\nunattributed_burst = 1000\n";

/// A policy of `shop` letting the api pods reach the named port `pg` of the `app` pods.
fn pg_from_api(name: &str, app: &str) -> PolicySpec {
    policy(
        "shop",
        name,
        json!({"podSelector": {"matchLabels": {"app": app}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                            "ports": [{"protocol": "TCP", "port": "pg"}]}]}),
    )
}

pub(crate) fn shop(zero_flow_labels: bool) -> Scenario {
    Scenario {
        namespaces: vec![
            namespace("shop", &[("team", "shop")]),
            namespace("kube-system", &[]),
        ],
        pods: vec![
            pod("shop", WEB, "web", 10),
            pod("shop", API, "api", 11),
            pod("shop", DB, "db", 12).statefulset(),
            pod("shop", PG, "postgres", 13).statefulset().port("pg", 5432, "TCP"),
            pod("kube-system", DNS, "coredns", 20)
                .label("k8s-app", "kube-dns")
                .port("dns", 53, "UDP")
                .port("metrics", 9153, "TCP"),
        ],
        policies: vec![
            policy("shop", "default-deny-ingress", json!({"podSelector": {}, "policyTypes": ["Ingress"]})),
            policy(
                "shop",
                "db-allow-api",
                json!({"podSelector": {"matchLabels": {"app": "db"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                                    "ports": [{"protocol": "UDP", "port": 5432}]}]}),
            ),
            pg_from_api(PG_V1, "postgres"),
            // Selects no pod (there is no postgres-replica).
            pg_from_api(PG_V2, "postgres-replica"),
            policy(
                "shop",
                "web-egress",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "db", "postgres"]}]}}]},
                                  {"to": [{"ipBlock": {"cidr": "192.168.100.0/24", "except": ["192.168.100.2/32"]}}],
                                   "ports": [{"protocol": "TCP", "port": 443}]}]}),
            )
            .annotate(LIMIT, "100/minute")
            .annotate(BURST, "20"),
            policy(
                "kube-system",
                "dns-allow",
                json!({"podSelector": {"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]},
                       "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "api"}}}],
                                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 9150, "endPort": 9160}]},
                                   {"from": [{"ipBlock": {"cidr": "192.168.100.0/24", "except": ["192.168.100.2/32"]}}],
                                    "ports": [{"protocol": "TCP", "port": "metrics"}]}]}),
            ),
        ],
        service: Some(ServiceSpec {
            ip: "10.43.0.10".parse().unwrap(),
            port: 53,
            protocol: "udp",
            pod: DB.into(),
            target_port: 5432,
        }),
        zero_flow_labels,
    }
}

// ---- Expectations --------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) struct Expect {
    source: &'static str,
    ns: &'static str,
    /// `None`: the event's policy name is null.
    name: Option<&'static str>,
    resolved: bool,
    candidates: &'static [(&'static str, &'static str)],
    direction: Option<&'static str>,
    src: Option<&'static str>,
    dest: Option<&'static str>,
    count: u64,
}

#[allow(clippy::too_many_arguments)]
fn rule(
    ns: &'static str,
    name: &'static str,
    candidates: &'static [(&'static str, &'static str)],
    direction: &'static str,
    src: Option<&'static str>,
    dest: Option<&'static str>,
    count: u64,
) -> Expect {
    Expect {
        source: "policy-rule",
        ns,
        name: Some(name),
        resolved: true,
        candidates,
        direction: Some(direction),
        src,
        dest,
        count,
    }
}

/// The event of a drop by the pod chain's empty-prefix rule (one message), narrowed to
/// `policy` (`rule` with these arguments, count 1).
fn chain(policy: Expect) -> Expect {
    Expect {
        source: "pod-chain",
        count: 1,
        ..policy
    }
}

/// db-allow-api's drop of `src` (None: from outside) → db: 1 accept rule + the pod chain.
fn db_allow_api(src: Option<&'static str>) -> Option<Expect> {
    Some(rule(
        "shop",
        "db-allow-api",
        DB_ALLOW_API,
        "ingress",
        src,
        Some(DB),
        2,
    ))
}

/// web-egress's drop of web → `dest` (None: outside), `count` messages.
fn web_egress(dest: Option<&'static str>, count: u64) -> Option<Expect> {
    Some(rule(
        "shop",
        "web-egress",
        WEB_EGRESS,
        "egress",
        Some(WEB),
        dest,
        count,
    ))
}

/// shop's default deny of `src` → `dest`: the pod chain only.
fn deny_ingress(src: Option<&'static str>, dest: &'static str) -> Option<Expect> {
    Some(chain(rule(
        "shop",
        "default-deny-ingress",
        DENY_INGRESS,
        "ingress",
        src,
        Some(dest),
        1,
    )))
}

impl Expect {
    /// The differences between an event and this expectation.
    fn check(&self, ev: &Value) -> Vec<String> {
        let want_policy = json!({
            "namespace": self.ns,
            "name": self.name,
            "resolved": self.resolved,
            "candidates": self.candidates.iter().map(|(n, p)| json!({"namespace": n, "name": p})).collect::<Vec<_>>(),
        });
        let pod = |side: &str| {
            ev.get(side)
                .and_then(|s| s.get("pod"))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let mut bad = Vec::new();
        for (field, want, got) in [
            (
                "policy_source",
                json!(self.source),
                ev["policy_source"].clone(),
            ),
            ("policy", want_policy, ev["policy"].clone()),
            ("direction", json!(self.direction), ev["direction"].clone()),
            ("src.pod", json!(self.src), pod("src")),
            ("dest.pod", json!(self.dest), pod("dest")),
            ("count", json!(self.count), ev["count"].clone()),
        ] {
            if want != got {
                bad.push(format!("{field}: expected {want}, got {got}"));
            }
        }
        bad
    }
}

pub(crate) struct Row {
    pub what: &'static str,
    pub flow: Flow,
    /// The event of each packet (`flow.count` of them); `None`: accepted, no NFLOG message.
    pub event: Option<Expect>,
}

fn row(what: &'static str, flow: Flow, event: Option<Expect>) -> Row {
    Row { what, flow, event }
}

const DB_ALLOW_API: &[(&str, &str)] = &[("shop", "db-allow-api")];
const DENY_INGRESS: &[(&str, &str)] = &[("shop", "default-deny-ingress")];
const WEB_EGRESS: &[(&str, &str)] = &[("shop", "web-egress")];
const PG_V1_ONLY: &[(&str, &str)] = &[("shop", PG_V1)];
const DNS_ALLOW: &[(&str, &str)] = &[("kube-system", "dns-allow")];

pub(crate) fn table() -> Vec<Row> {
    use End::*;
    vec![
        row("web→db UDP 5432, bridged, ingress drop by db-allow-api (1 accept rule + pod chain)",
            udp(Pod(WEB), Pod(DB), false, 41001, 5432, 1),
            db_allow_api(Some(WEB))),
        row("web→db UDP 5432 over IPv6, bridged",
            udp(Pod(WEB), Pod(DB), true, 41002, 5432, 1),
            db_allow_api(Some(WEB))),
        row("api→db UDP 5432: allowed by db-allow-api", udp(Pod(API), Pod(DB), false, 41003, 5432, 1), None),
        row("api→db TCP SYN 5432: only UDP is allowed",
            syn(Pod(API), Pod(DB), false, 5432),
            db_allow_api(Some(API))),
        row("web→postgres TCP SYN 5432 (named port pg): truncated prefix, narrowed to the policy selecting postgres",
            syn(Pod(WEB), Pod(PG), false, 5432),
            Some(rule("shop", PG_V1, PG_V1_ONLY, "ingress", Some(WEB), Some(PG), 2))),
        row("api→postgres TCP SYN 5432: allowed by the named port", syn(Pod(API), Pod(PG), false, 5432), None),
        row("web→api UDP 8080: web's egress allows it, api's default deny drops it (pod chain only)",
            udp(Pod(WEB), Pod(API), false, 41007, 8080, 1),
            deny_ingress(Some(WEB), API)),
        row("web→outside UDP 9999, routed egress drop by web-egress (2 accept rules in IPv4)",
            udp(Pod(WEB), Outside, false, 41008, 9999, 1),
            web_egress(None, 3)),
        row("web→outside UDP 9999 over IPv6 (the ipBlock is IPv4: 1 accept rule)",
            udp(Pod(WEB), Outside, true, 41009, 9999, 1),
            web_egress(None, 2)),
        row("outside→db UDP 5432, routed ingress drop",
            udp(Outside, Pod(DB), false, 41010, 5432, 1),
            db_allow_api(None)),
        row("outside→web TCP SYN 80 over IPv6: default deny (pod chain only)",
            syn(Outside, Pod(WEB), true, 80),
            deny_ingress(None, WEB)),
        row("web→ClusterIP 10.43.0.10:53/UDP, DNATed to db-0:5432",
            udp(Pod(WEB), ClusterIp, false, 41012, 53, 1),
            db_allow_api(Some(WEB))),
        row("node→db UDP 5432: accepted by \"source is the pod's local node\"", udp(Node, Pod(DB), false, 41013, 5432, 1), None),
        row("node→web UDP 80 over IPv6: accepted likewise", udp(Node, Pod(WEB), true, 41014, 80, 1), None),
        row("web→coredns UDP 53 across namespaces, bridged egress drop by web-egress",
            udp(Pod(WEB), Pod(DNS), false, 41015, 53, 1),
            web_egress(Some(DNS), 3)),
        row("web→coredns UDP 53 over IPv6",
            udp(Pod(WEB), Pod(DNS), true, 41016, 53, 1),
            web_egress(Some(DNS), 2)),
        row("api→coredns UDP 53: allowed (namespaceSelector {} + podSelector)", udp(Pod(API), Pod(DNS), false, 41017, 53, 1), None),
        row("outside→coredns TCP SYN 9153: the excepted address of the ipBlock (3 accept rules in IPv4)",
            syn(Outside, Pod(DNS), false, 9153),
            Some(rule("kube-system", "dns-allow", DNS_ALLOW, "ingress", None, Some(DNS), 4))),
    ]
}

/// Runs rows one after the other; returns the failures (row and what differed), after checking
/// the rig itself (the kernel's NFLOG counters agree with the table's counts).
fn run_rows(node: &K3sNode, rows: &[Row]) -> Vec<String> {
    let mut failures = Vec::new();
    for r in rows {
        let before_events = node.events().len();
        let before_kernel = node.nflog_total();
        let before_lines = node.syslogemu_lines().len();
        node.send(&r.flow);
        node.settle();
        let kernel = node.nflog_total() - before_kernel;
        let events: Vec<Value> = node.events().split_off(before_events);
        let packets = r.flow.count as u64;
        let want_kernel = r.event.as_ref().map_or(0, |e| e.count * packets);
        // The rig: the firewall must have logged exactly what the table says.
        assert_eq!(
            kernel, want_kernel,
            "rig: {}: the kernel's NFLOG rules sent {kernel} messages, the table expects {want_kernel}; \
             rules in {}; the messages:\n{}",
            r.what,
            node.sb.dir.display(),
            node.syslogemu_lines()[before_lines..].join("\n")
        );
        let mut bad = Vec::new();
        match &r.event {
            None if !events.is_empty() => {
                bad.push(format!("expected no event, got {}", events.len()))
            }
            None => {}
            Some(e) => {
                if events.len() as u64 != packets {
                    bad.push(format!("expected {packets} event(s), got {}", events.len()));
                }
                for ev in &events {
                    bad.extend(e.check(ev));
                }
            }
        }
        if bad.is_empty() {
            eprintln!("ok    {}", r.what);
        } else {
            let shown: Vec<String> = events.iter().map(Value::to_string).collect();
            eprintln!("FAIL  {}: {}", r.what, bad.join("; "));
            failures.push(format!(
                "{}:\n    {}\n    events:\n      {}",
                r.what,
                bad.join("\n    "),
                shown.join("\n      ")
            ));
        }
    }
    failures
}

fn fail_if(failures: Vec<String>, node: &K3sNode) {
    if !failures.is_empty() {
        panic!(
            "{} row(s) failed:\n{}\ndaemon stderr:\n{}",
            failures.len(),
            failures.join("\n"),
            node.daemon().stderr_text()
        );
    }
}

// ---- The tests -----------------------------------------------------------------------------------

#[test]
fn k3s_node_table() {
    let mut node = K3sNode::build("tbl", shop(false));
    // The layout the rig builds, checked where it matters for the table.
    let v4 = node.firewall_text(false);
    assert_eq!(
        v4.matches(&format!(
            "--nflog-prefix \"{}\"",
            drop_prefix("shop", "web-egress")
        ))
        .count(),
        2,
        "one DROP-by-policy NFLOG rule per accept rule (IPv4: pods + ipBlock):\n{v4}"
    );
    assert!(
        v4.contains("--limit 100/minute --limit-burst 20"),
        "web-egress's annotations"
    );
    assert!(v4.contains("-p TCP --dport 9150:9160"), "endPort:\n{v4}");
    assert!(
        !v4.contains(&drop_prefix("shop", "default-deny-ingress")),
        "a rule-less policy logs nothing"
    );
    assert_eq!(
        node.firewall_text(true)
            .matches(&format!(
                "--nflog-prefix \"{}\"",
                drop_prefix("shop", "web-egress")
            ))
            .count(),
        1,
        "IPv6: the IPv4 ipBlock gives no rule"
    );
    node.start_daemon(CONFIG_WIDE_UNATTRIBUTED);
    let rows = table();
    let local_accept = |n: &K3sNode, pod_name: &str, v6: bool| {
        n.counter(
            v6,
            &[
                &pod_chain_name(
                    if pod_name == DNS {
                        "kube-system"
                    } else {
                        "shop"
                    },
                    pod_name,
                ),
                "--src-type LOCAL",
            ],
        )
    };
    let (db_local, web_local6) = (
        local_accept(&node, DB, false),
        local_accept(&node, WEB, true),
    );
    let failures = run_rows(&node, &rows);
    // node→pod really went through the pod chains' local-source ACCEPT.
    assert_eq!(
        local_accept(&node, DB, false),
        db_local + 1,
        "node→db through FW_db's LOCAL accept"
    );
    assert_eq!(
        local_accept(&node, WEB, true),
        web_local6 + 1,
        "node→web (IPv6) through FW_web's LOCAL accept"
    );
    // Every NFLOG message became one syslogemu line.
    let lines = node.syslogemu_lines();
    let sent: u64 = rows
        .iter()
        .map(|r| r.event.as_ref().map_or(0, |e| e.count) * r.flow.count as u64)
        .sum();
    assert_eq!(
        lines.len() as u64,
        sent,
        "syslogemu lines:\n{}",
        lines.join("\n")
    );
    fail_if(failures, &node);
}

/// Defect (a): byte-identical datagrams (one 5-tuple, IPv4 ID 0 with DF; IPv6 one flow label)
/// are separate packets, each logged twice (db-allow-api's rule and the pod chain's).
#[test]
fn k3s_identical_datagrams_are_separate_events() {
    let mut sc = shop(false);
    // Above the 15 messages of db-allow-api the test sends, in the kernel and in the daemon.
    sc.policies[1] = sc.policies[1]
        .clone()
        .annotate(LIMIT, "1000/second")
        .annotate(BURST, "1000");
    let mut node = K3sNode::build("same", sc);
    node.start_daemon(CONFIG_WIDE_UNATTRIBUTED);
    let e = db_allow_api(Some(WEB)).unwrap();
    let rows = [
        row(
            "10 identical UDP datagrams web→db, IPv4 ID 0 DF",
            udp(End::Pod(WEB), End::Pod(DB), false, 42000, 5432, 10),
            Some(e.clone()),
        ),
        row(
            "5 UDP datagrams of one IPv6 flow web→db",
            udp(End::Pod(WEB), End::Pod(DB), true, 42001, 5432, 5),
            Some(e),
        ),
    ];
    let failures = run_rows(&node, &rows);
    let lines = node.syslogemu_lines();
    let v4: Vec<&String> = lines.iter().filter(|l| l.contains("SPT=42000 ")).collect();
    assert_eq!(
        v4.len(),
        20,
        "20 syslogemu lines (10 packets × 2 rules):\n{}",
        lines.join("\n")
    );
    assert!(
        v4.iter().all(|l| l.contains(" ID=0 DF ")),
        "the sender must produce IP ID 0 with DF:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        v4.iter()
            .filter(|l| l.contains(&drop_prefix("shop", "db-allow-api")))
            .count(),
        10
    );
    let v6: Vec<&String> = lines.iter().filter(|l| l.contains("SPT=42001 ")).collect();
    assert_eq!(v6.len(), 10, "{}", lines.join("\n"));
    let labels: std::collections::BTreeSet<&str> = v6
        .iter()
        .filter_map(|l| l.split(' ').find(|t| t.starts_with("FLOWLBL=")))
        .collect();
    assert_eq!(
        labels.len(),
        1,
        "one flow label for the IPv6 flow: {labels:?}"
    );
    fail_if(failures, &node);
}

/// Defect (b): the pod chain's empty-prefix rule has its own kernel bucket (10/minute, burst 10)
/// per pod chain; the daemon must not silence pod B after pod A's chain used up its burst.
#[test]
fn k3s_empty_prefix_limits_are_per_pod_chain() {
    let mut node = K3sNode::build("pclim", shop(false));
    // The daemon's default limits (unattributed 10/minute, burst 10).
    node.start_daemon("[kubernetes]\nmode = \"on\"\n");
    let fw_api = pod_chain_name("shop", API);
    let fw_web = pod_chain_name("shop", WEB);
    // 60 packets to api (default deny: pod chain only), each its own 5-tuple.
    for i in 0..60 {
        node.send(&udp(End::Outside, End::Pod(API), false, 30000 + i, 7000, 1));
    }
    node.settle();
    assert_eq!(
        node.counter(false, &[&fw_api, "-j REJECT"]),
        60,
        "rig: 60 drops in api's chain"
    );
    assert_eq!(
        node.counter(false, &[&fw_api, "-j NFLOG"]),
        10,
        "rig: the kernel logged api's burst of 10"
    );
    let api_events = node
        .events()
        .into_iter()
        .filter(|e| e["dest"]["pod"] == json!(API))
        .count();
    // Then one drop to web: web's chain has its own kernel bucket, and must have the daemon's.
    node.send(&udp(End::Outside, End::Pod(WEB), false, 31000, 7000, 1));
    node.settle();
    assert_eq!(
        node.counter(false, &[&fw_web, "-j NFLOG"]),
        1,
        "rig: the kernel logged web's drop"
    );
    let web: Vec<Value> = node
        .events()
        .into_iter()
        .filter(|e| e["dest"]["pod"] == json!(WEB))
        .collect();
    let e = deny_ingress(None, WEB).unwrap();
    let mut failures = Vec::new();
    if api_events != 10 {
        failures.push(format!(
            "api: expected 10 events (its chain's burst), got {api_events}"
        ));
    }
    match web.as_slice() {
        [ev] => {
            let bad = e.check(ev);
            if !bad.is_empty() {
                failures.push(format!("web: {}\n    {ev}", bad.join("; ")));
            }
        }
        _ => failures.push(format!(
            "web: expected its empty-prefix event after api's chain used its burst, got {} events; \
             suppression summaries so far: {:?}; syslogemu lines: {}",
            web.len(),
            node.records().into_iter().filter(|r| r.get("type").is_some()).collect::<Vec<_>>(),
            node.syslogemu_lines().len()
        )),
    }
    fail_if(failures, &node);
}

/// Defect (c): `shop/deny-ingress-to-postgres-except-from-the-ap` is the prefix of two policies;
/// only v1 selects postgres-0, so a drop to postgres-0 is v1's.
#[test]
fn k3s_truncated_name_narrowed_to_selecting_policy() {
    assert_eq!(k3s::safe_join("shop", PG_V1), k3s::safe_join("shop", PG_V2));
    assert_eq!(
        k3s::safe_join("shop", PG_V1),
        "shop/deny-ingress-to-postgres-except-from-the-ap"
    );
    let mut node = K3sNode::build("trunc", shop(false));
    let v4 = node.firewall_text(false);
    assert!(
        !v4.contains(&format!("\"run through nw policy {PG_V2}\"")),
        "rig: no pod chain runs through v2 (it selects no pod)"
    );
    node.start_daemon(CONFIG_WIDE_UNATTRIBUTED);
    let e = rule("shop", PG_V1, PG_V1_ONLY, "ingress", Some(WEB), Some(PG), 2);
    let rows = [
        row(
            "web→postgres TCP SYN 5432",
            syn(End::Pod(WEB), End::Pod(PG), false, 5432),
            Some(e.clone()),
        ),
        row(
            "web→postgres TCP SYN 5432 over IPv6",
            syn(End::Pod(WEB), End::Pod(PG), true, 5432),
            Some(e),
        ),
    ];
    let failures = run_rows(&node, &rows);
    fail_if(failures, &node);
}

/// ulogd2 (the oracle) and the daemon on the same node traffic: bridged pod→pod (IPv4 and IPv6),
/// routed egress and ingress, DNATed ClusterIP. Lines compared without the timestamp.
#[test]
fn k3s_syslogemu_matches_ulogd2_on_the_node() {
    let node = K3sNode::build("ulogd", shop(true));
    use End::*;
    let flows = [
        udp(Pod(WEB), Pod(DB), false, 43001, 5432, 2),
        udp(Pod(WEB), Pod(DB), true, 43002, 5432, 1),
        udp(Pod(WEB), Outside, false, 43003, 9999, 1),
        udp(Pod(WEB), Outside, true, 43004, 9999, 1),
        udp(Outside, Pod(DB), false, 43005, 5432, 1),
        udp(Pod(WEB), ClusterIp, false, 43006, 53, 1),
        udp(Pod(WEB), Pod(API), true, 43007, 8080, 1),
    ];
    let traffic = || {
        for f in &flows {
            node.send(f);
        }
    };
    let before = node.nflog_total();
    let reference = node.run_ulogd(traffic);
    let logged = node.nflog_total() - before;
    assert_eq!(
        reference.len() as u64,
        logged,
        "ulogd2 wrote one line per NFLOG message:\n{}",
        reference.join("\n")
    );
    assert!(
        reference.iter().any(|l| l.contains(" IN=cni0 OUT=cni0 ")),
        "bridged traffic is logged with IN=cni0 OUT=cni0:\n{}",
        reference.join("\n")
    );
    eprintln!("ulogd2 wrote:\n{}", reference.join("\n"));
    let ours = node.run_daemon_plain(traffic);
    let strip = |v: &[String]| {
        v.iter()
            .map(|l| l.get(16..).unwrap_or(l).to_string())
            .collect::<Vec<_>>()
    };
    let (reference, ours) = (strip(&reference), strip(&ours));
    if reference != ours {
        panic!(
            "netpol-nflogd's syslogemu differs from ulogd2's on the node ('-' ulogd2, '+' netpol-nflogd):\n{}",
            crate::conformance::diff(&reference, &ours)
        );
    }
}
