//! End to end on the real kernel with a (fake) Kubernetes API: NFLOG messages from K3s-shaped
//! rules become JSON records naming the NetworkPolicy, the pods and their workloads, and policy
//! annotations change the daemon's rate limit while it runs.
//!
//! Everything lives in one private network namespace: the "pods" are addresses on its `lo`
//! (10.42.0.x), the rules are on OUTPUT, the daemon runs there with `KUBECONFIG` pointing at
//! `http://127.0.0.1:16443`, and the fake API server (`fake_api`) listens there too: it runs on a
//! thread that `setns`-ed into the namespace before binding (loopback is per namespace).
//!
//! Each scenario has its own UDP port, so each packet produces exactly one NFLOG message and the
//! expected records are exact:
//!
//! | port | from → to            | rule                                                         |
//! |------|----------------------|--------------------------------------------------------------|
//! | 5432 | web → db-0           | `DROP by policy shop/deny-db` (ingress)                      |
//! | 7300 | web → ledger         | `DROP by policy shop/web-egress` (egress)                    |
//! | 7400 | web → ledger         | safeJoin-truncated long name, one policy                     |
//! | 7500 | ledger → web         | safeJoin-truncated prefix shared by two policies (egress)    |
//! | 7200 | api → db-0           | empty prefix (pod chain), `-m limit 10/minute`, then REJECT  |
//! | 7000 | web → api            | `DROP by policy shop/noisy`, whose annotations change        |
//!
//! Per-policy rules carry `-m limit --limit 1000/second --limit-burst 1000` (as kube-router
//! writes them with annotations) and are followed by DROP; the pod-chain rule carries
//! kube-router's fixed `10/minute` burst 10 and is followed by REJECT.
//!
//! A second test starts the daemon while the API server is down: lines are still written
//! (standalone attribution from the prefix), `/readyz` says the watches are waiting, and once
//! the server comes up, records get pod names.
//!
//! Needs root, `ip` and `iptables`.

use std::net::{IpAddr, Ipv4Addr};
use std::thread::sleep;
use std::time::Duration;

use netpol_nflog::attribute::index::safe_join;
use netpol_nflog::limit::{ANNOTATION_BURST, ANNOTATION_LIMIT};
use serde_json::{json, Value};

use crate::fake_api::{self, FakeApi, NAMESPACES, PODS, POLICIES};
use crate::support::daemon::DaemonCmd;
use crate::support::kube_api::{write_kubeconfig, NsApi};
use crate::support::metrics::{all_synced, scrape, wait_counter, wait_readyz as readyz};
use crate::support::sandbox::POLICY_LOG_MATCHES;
use crate::support::wait::ok_if;
use crate::support::{read_lossy, Daemon, Sandbox, Wait};

const NODE: &str = "node-1";
const API_PORT: u16 = 16443;
const METRICS_PORT: u16 = 9109;

const WEB: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 10);
const DB: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 11);
const API: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 12);
const LEDGER: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 20);

const WEB_POD: &str = "web-7c9d8b6f4d-k8p2q";
const API_POD: &str = "api-7c9d8b6f4d-x7w2m";
const DB_POD: &str = "db-0";
const LEDGER_POD: &str = "ledger-7c9d8b6f4d-q4z8n";

const PAYMENTS: &str = "payments-production";
/// 19 + 48 characters: safeJoin keeps `payments-production/` + 28 characters of the name.
const LONG: &str = "restrict-ingress-to-ledger-service-from-gateways";
/// Two names that safeJoin cuts to the same 28 characters.
const AMBIGUOUS_A: &str = "deny-egress-to-external-networks-except-dns-a";
const AMBIGUOUS_B: &str = "deny-egress-to-external-networks-except-dns-b";

// ---- The cluster --------------------------------------------------------------------------------

fn statefulset_pod(ns: &str, name: &str, app: &str, node: &str, ip: &str) -> Value {
    let mut p = fake_api::pod(ns, name, app, node, &[ip]);
    let meta = &mut p["metadata"];
    meta["generateName"] = json!(format!("{app}-"));
    meta["labels"] = json!({"app": app, "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": "0"});
    meta["ownerReferences"][0]["kind"] = json!("StatefulSet");
    meta["ownerReferences"][0]["name"] = json!(app);
    meta["ownerReferences"][0]["uid"] = json!(fake_api::uid(&format!("sts/{ns}/{app}")));
    p
}

fn egress_policy(ns: &str, name: &str, selector: Value) -> Value {
    let mut p = fake_api::network_policy(ns, name, selector, json!({}));
    p["spec"] = json!({
        "podSelector": p["spec"]["podSelector"].clone(),
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}]}],
        "policyTypes": ["Egress"],
    });
    p
}

fn noisy(annotations: Value) -> Value {
    fake_api::network_policy(
        "shop",
        "noisy",
        json!({"matchLabels": {"app": "api"}}),
        annotations,
    )
}

fn populate(api: &FakeApi) {
    for ns in ["shop", PAYMENTS, "kube-system"] {
        api.apply(NAMESPACES, fake_api::namespace(ns));
    }
    api.apply(
        PODS,
        fake_api::pod("shop", WEB_POD, "web", NODE, &[&WEB.to_string()]),
    );
    api.apply(
        PODS,
        fake_api::pod("shop", API_POD, "api", NODE, &[&API.to_string()]),
    );
    api.apply(
        PODS,
        statefulset_pod("shop", DB_POD, "db", NODE, &DB.to_string()),
    );
    api.apply(
        PODS,
        fake_api::pod(PAYMENTS, LEDGER_POD, "ledger", NODE, &[&LEDGER.to_string()]),
    );
    // A pod on another node: the daemon watches its own node's pods only.
    api.apply(
        PODS,
        fake_api::pod(
            "shop",
            "web-7c9d8b6f4d-remote",
            "web",
            "node-2",
            &["10.42.1.10"],
        ),
    );

    let ledger = json!({"matchLabels": {"app": "ledger"}});
    let plain = |ns, name, selector| fake_api::network_policy(ns, name, selector, json!({}));
    api.apply(POLICIES, plain("shop", "default-deny", json!({})));
    let db = json!({"matchLabels": {"app": "db"}});
    api.apply(POLICIES, plain("shop", "deny-db", db));
    api.apply(
        POLICIES,
        egress_policy("shop", "web-egress", json!({"matchLabels": {"app": "web"}})),
    );
    api.apply(POLICIES, noisy(json!({})));
    api.apply(POLICIES, plain(PAYMENTS, LONG, ledger.clone()));
    api.apply(
        POLICIES,
        egress_policy(PAYMENTS, AMBIGUOUS_A, ledger.clone()),
    );
    api.apply(POLICIES, egress_policy(PAYMENTS, AMBIGUOUS_B, ledger));
}

// ---- Rules and traffic --------------------------------------------------------------------------

fn prefix(ns: &str, name: &str) -> String {
    format!("DROP by policy {}", safe_join(ns, name))
}

/// The match of a rule for `src → dst` UDP `port`.
fn udp_match(src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> [String; 10] {
    let (s, d, p) = (src.to_string(), dst.to_string(), port.to_string());
    [
        "-A", "OUTPUT", "-s", &s, "-d", &d, "-p", "udp", "--dport", &p,
    ]
    .map(String::from)
}

/// Every NFLOG rule kube-router writes skips packets it already logged (mark 0x10000).
const NOT_LOGGED: [&str; 5] = ["-m", "mark", "!", "--mark", "0x10000/0x10000"];

/// A K3s-shaped per-policy NFLOG rule (then DROP) for `src → dst` UDP `port`.
fn policy_rule(sb: &Sandbox, src: Ipv4Addr, dst: Ipv4Addr, port: u16, prefix: &str) {
    let m = udp_match(src, dst, port);
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    let log = [&POLICY_LOG_MATCHES[..], &NOT_LOGGED].concat();
    sb.nflog_rule_pair(&m, &log, Some(prefix), &["DROP"]);
}

/// kube-router's pod-chain rule: no prefix, 10/minute burst 10, then REJECT.
fn pod_chain_rule(sb: &Sandbox, src: Ipv4Addr, dst: Ipv4Addr, port: u16) {
    let m = udp_match(src, dst, port);
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    let comment = format!("rule to log dropped traffic POD name:{DB_POD} namespace: shop");
    let limit = ["-m", "limit", "--limit", "10/minute", "--limit-burst", "10"];
    let log = [
        &["-m", "comment", "--comment", &comment][..],
        &NOT_LOGGED,
        &limit,
    ]
    .concat();
    sb.nflog_rule_pair(
        &m,
        &log,
        None,
        &["REJECT", "--reject-with", "icmp-port-unreachable"],
    );
}

fn setup_pods(sb: &Sandbox) {
    for ip in [WEB, DB, API, LEDGER] {
        sb.add_address(&format!("{ip}/32"));
    }
}

fn send(sb: &Sandbox, src: Ipv4Addr, dst: Ipv4Addr, port: u16, count: usize) {
    sb.send_udp(IpAddr::V4(src), IpAddr::V4(dst), port, count);
}

// ---- Reading the daemon's output ----------------------------------------------------------------

/// The packet events (not summaries) to `dest_port`.
fn events_to(d: &Daemon, port: u16) -> Vec<Value> {
    d.json_records()
        .into_iter()
        .filter(|r| r.get("type").is_none() && r["dest_port"] == json!(port))
        .collect()
}

/// Waits until at least `n` events to `port` were printed, then a little longer to be sure no
/// more come; returns them.
fn wait_events(d: &Daemon, port: u16, n: usize) -> Vec<Value> {
    let wait = Wait::up_to(Duration::from_secs(10)).every(Duration::from_millis(50));
    wait.until(format_args!("{n} JSON events to port {port}"), || {
        let got = events_to(d, port).len();
        ok_if(got >= n, || {
            format!(
                "got {got}:\n{}\nstderr:\n{}",
                d.stdout_text(),
                d.stderr_text()
            )
        })
    });
    // Longer than the correlation window (200 ms) plus the kernel flush (100 ms).
    sleep(Duration::from_millis(600));
    events_to(d, port)
}

fn wait_received(sb: &Sandbox, d: &Daemon, want: f64) {
    wait_counter(
        sb,
        METRICS_PORT,
        d,
        "netpol_nflog_messages_received_total",
        want,
    );
}

/// Polls `/readyz` until `ok(body)` or `timeout`.
fn wait_readyz(
    sb: &Sandbox,
    d: &Daemon,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    readyz(sb, METRICS_PORT, d, timeout, what, ok)
}

/// Waits until the daemon logged `rate limit changed` for `key` `n` times in all.
fn wait_limit_changes(d: &Daemon, key: &str, n: usize) {
    let what = format!("the daemon to apply the annotation change of {key}");
    Wait::up_to(Duration::from_secs(5)).until(what, || {
        let text = d.stderr_text();
        let seen = text
            .lines()
            .filter(|l| l.contains("rate limit changed") && l.contains(key))
            .count();
        ok_if(seen >= n, || {
            format!("{seen} of {n} \"rate limit changed\"; stderr:\n{text}")
        })
    });
}

fn pod_json(pod: &str, ns: &str, kind: &str, workload: &str) -> Value {
    json!({"pod": pod, "namespace": ns, "workload_kind": kind, "workload": workload, "node": NODE})
}

fn policy_json(ns: &str, name: Option<&str>, resolved: bool, candidates: &[(&str, &str)]) -> Value {
    json!({
        "namespace": ns,
        "name": name,
        "resolved": resolved,
        "candidates": candidates.iter().map(|(n, p)| json!({"namespace": n, "name": p})).collect::<Vec<_>>(),
    })
}

/// Checks the Kubernetes fields of every event.
fn check_events(events: &[Value], what: &str, want: &[(&str, Value)]) {
    for ev in events {
        for (field, value) in want {
            assert_eq!(&ev[*field], value, "{what}: field {field:?} of {ev}");
        }
        assert_eq!(ev["node_name"], json!(NODE), "{what}: {ev}");
        assert_eq!(
            ev["count"],
            json!(1),
            "{what}: one message per packet: {ev}"
        );
    }
}

// ---- The tests ----------------------------------------------------------------------------------

/// The daemon against the fake API: JSON on stdout, syslogemu to `log`, metrics on.
fn daemon<'a>(sb: &'a Sandbox, log: &std::path::Path) -> DaemonCmd<'a> {
    Daemon::cmd(sb)
        .args(["--node-name", NODE, "--stdout", "json"])
        .syslogemu(log)
        .args(["--tail-socket", ""])
        .metrics(METRICS_PORT)
        .args(["--log-level", "info"])
        .env(
            "KUBECONFIG",
            write_kubeconfig(&sb.dir, API_PORT).to_str().unwrap(),
        )
}

#[test]
fn e2e_kube_attribution_and_annotation_limits() {
    let sb = Sandbox::new("e2ek");
    setup_pods(&sb);
    let long_prefix = prefix(PAYMENTS, LONG);
    let ambiguous_prefix = prefix(PAYMENTS, AMBIGUOUS_A);
    assert_eq!(
        long_prefix,
        "DROP by policy payments-production/restrict-ingress-to-ledger-s"
    );
    assert_eq!(
        ambiguous_prefix,
        prefix(PAYMENTS, AMBIGUOUS_B),
        "the two names must collide"
    );
    assert!(long_prefix.len() <= 63 && ambiguous_prefix.len() <= 63);
    policy_rule(&sb, WEB, DB, 5432, &prefix("shop", "deny-db"));
    policy_rule(&sb, WEB, LEDGER, 7300, &prefix("shop", "web-egress"));
    policy_rule(&sb, WEB, LEDGER, 7400, &long_prefix);
    policy_rule(&sb, LEDGER, WEB, 7500, &ambiguous_prefix);
    pod_chain_rule(&sb, API, DB, 7200);
    policy_rule(&sb, WEB, API, 7000, &prefix("shop", "noisy"));

    let api = NsApi::start(&sb.ns, API_PORT);
    populate(&api);
    let log = sb.path("syslogemu.log");
    let stats = sb.path("stats.json");
    let mut d = daemon(&sb, &log).stats(&stats).start();

    let body = wait_readyz(
        &sb,
        &d,
        Duration::from_secs(15),
        "every watch synced",
        all_synced,
    );
    assert!(body.contains("nflog: bound"), "/readyz: {body}");
    assert!(
        body.contains("kubernetes pods: synced, 4 objects"),
        "only node-1's 4 pods: {body}"
    );
    assert!(
        body.contains("kubernetes networkpolicies: synced, 7 objects"),
        "/readyz: {body}"
    );
    let s = scrape(&sb, METRICS_PORT);
    for res in ["networkpolicies", "pods", "namespaces"] {
        assert_eq!(
            s.get("netpol_nflog_kube_watch_synced", &[("resource", res)]),
            Some(1.0),
            "{res} synced gauge"
        );
    }
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(fake_api::PODS) && r.contains("spec.nodeName=node-1")),
        "pods must be watched with the node's field selector: {requests:?}"
    );

    // 1. Resolved, ingress: web (Deployment) → db-0 (StatefulSet).
    send(&sb, WEB, DB, 5432, 3);
    let evs = wait_events(&d, 5432, 3);
    assert_eq!(evs.len(), 3, "{evs:#?}");
    check_events(
        &evs,
        "web → db, shop/deny-db",
        &[
            ("policy_source", json!("policy-rule")),
            (
                "policy",
                policy_json("shop", Some("deny-db"), true, &[("shop", "deny-db")]),
            ),
            ("direction", json!("ingress")),
            ("src", pod_json(WEB_POD, "shop", "Deployment", "web")),
            ("dest", pod_json(DB_POD, "shop", "StatefulSet", "db")),
            ("src_ip", json!(WEB.to_string())),
            ("dest_ip", json!(DB.to_string())),
        ],
    );

    // 2. Resolved, egress, across namespaces: web → ledger by shop/web-egress.
    send(&sb, WEB, LEDGER, 7300, 2);
    let evs = wait_events(&d, 7300, 2);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    check_events(
        &evs,
        "web → ledger, shop/web-egress",
        &[
            (
                "policy",
                policy_json("shop", Some("web-egress"), true, &[("shop", "web-egress")]),
            ),
            ("direction", json!("egress")),
            ("src", pod_json(WEB_POD, "shop", "Deployment", "web")),
            (
                "dest",
                pod_json(LEDGER_POD, PAYMENTS, "Deployment", "ledger"),
            ),
        ],
    );

    // 3. A truncated prefix resolves to the full name.
    send(&sb, WEB, LEDGER, 7400, 2);
    let evs = wait_events(&d, 7400, 2);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    check_events(
        &evs,
        "truncated prefix",
        &[
            ("oob.prefix", json!(long_prefix)),
            (
                "policy",
                policy_json(PAYMENTS, Some(LONG), true, &[(PAYMENTS, LONG)]),
            ),
            ("direction", json!("ingress")),
            (
                "dest",
                pod_json(LEDGER_POD, PAYMENTS, "Deployment", "ledger"),
            ),
        ],
    );

    // 4. A truncated prefix two policies share: both candidates, not resolved, the name as the
    //    prefix spells it.
    send(&sb, LEDGER, WEB, 7500, 2);
    let evs = wait_events(&d, 7500, 2);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    let cut = &ambiguous_prefix["DROP by policy payments-production/".len()..];
    check_events(
        &evs,
        "ambiguous truncated prefix",
        &[
            (
                "policy",
                policy_json(
                    PAYMENTS,
                    Some(cut),
                    false,
                    &[(PAYMENTS, AMBIGUOUS_A), (PAYMENTS, AMBIGUOUS_B)],
                ),
            ),
            ("direction", json!("egress")),
            (
                "src",
                pod_json(LEDGER_POD, PAYMENTS, "Deployment", "ledger"),
            ),
            ("dest", pod_json(WEB_POD, "shop", "Deployment", "web")),
        ],
    );

    // 5. Empty prefix (pod chain): the candidates are the policies selecting db-0 for ingress.
    send(&sb, API, DB, 7200, 3);
    let evs = wait_events(&d, 7200, 3);
    assert_eq!(evs.len(), 3, "{evs:#?}");
    check_events(
        &evs,
        "empty prefix",
        &[
            ("policy_source", json!("pod-chain")),
            ("oob.prefix", json!("")),
            (
                "policy",
                policy_json(
                    "shop",
                    None,
                    false,
                    &[("shop", "default-deny"), ("shop", "deny-db")],
                ),
            ),
            ("direction", json!("ingress")),
            ("src", pod_json(API_POD, "shop", "Deployment", "api")),
            ("dest", pod_json(DB_POD, "shop", "StatefulSet", "db")),
        ],
    );
    let sent_so_far = 3.0 + 2.0 + 2.0 + 2.0 + 3.0;
    wait_received(&sb, &d, sent_so_far);
    assert_eq!(
        scrape(&sb, METRICS_PORT).get("netpol_nflog_messages_suppressed_total", &[]),
        Some(0.0)
    );

    // 6. The annotations of shop/noisy change through the API (MODIFIED): 1/minute burst 2.
    api.apply(
        POLICIES,
        noisy(json!({ANNOTATION_LIMIT: "1/minute", ANNOTATION_BURST: "2"})),
    );
    wait_limit_changes(&d, "shop/noisy", 1);
    send(&sb, WEB, API, 7000, 20);
    assert_eq!(
        sb.rule_counter("OUTPUT", "DROP by policy shop/noisy"),
        20,
        "the kernel logged all 20"
    );
    wait_received(&sb, &d, sent_so_far + 20.0);
    let evs = wait_events(&d, 7000, 2);
    assert_eq!(
        evs.len(),
        2,
        "1/minute burst 2: 2 of 20 written; got {evs:#?}"
    );
    check_events(
        &evs,
        "noisy",
        &[
            (
                "policy",
                policy_json("shop", Some("noisy"), true, &[("shop", "noisy")]),
            ),
            ("direction", json!("ingress")),
            ("dest", pod_json(API_POD, "shop", "Deployment", "api")),
        ],
    );
    assert_eq!(
        scrape(&sb, METRICS_PORT).get("netpol_nflog_messages_suppressed_total", &[]),
        Some(18.0),
        "the other 18 are counted as suppressed"
    );

    // 7. Then 10000/second burst 1000: the next 20 are all written.
    api.apply(
        POLICIES,
        noisy(json!({ANNOTATION_LIMIT: "10000/second", ANNOTATION_BURST: "1000"})),
    );
    wait_limit_changes(&d, "shop/noisy", 2);
    send(&sb, WEB, API, 7000, 20);
    wait_received(&sb, &d, sent_so_far + 40.0);
    let evs = wait_events(&d, 7000, 22);
    assert_eq!(
        evs.len(),
        22,
        "10000/second burst 1000: all 20 more written; got {}",
        evs.len()
    );
    assert_eq!(
        scrape(&sb, METRICS_PORT).get("netpol_nflog_messages_suppressed_total", &[]),
        Some(18.0)
    );

    // syslogemu has one line per written message, with the prefix as the kernel sent it.
    let text = read_lossy(&log);
    assert_eq!(
        text.lines().count(),
        3 + 2 + 2 + 2 + 3 + 22,
        "syslogemu lines:\n{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(&long_prefix)).count(),
        2,
        "{text}"
    );

    // At exit, the suppression summary names the policy and the 18 messages.
    d.terminate_ok();
    let summaries: Vec<Value> = d
        .json_records()
        .into_iter()
        .filter(|r| r["type"] == json!("suppressed"))
        .collect();
    let noisy_suppressed: u64 = summaries
        .iter()
        .filter(|r| r["policy"] == json!("shop/noisy"))
        .map(|r| r["suppressed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        noisy_suppressed, 18,
        "suppression summaries: {summaries:#?}"
    );
    assert_eq!(
        summaries.len(),
        summaries
            .iter()
            .filter(|r| r["policy"] == json!("shop/noisy"))
            .count(),
        "{summaries:#?}"
    );
    let stats: Value = serde_json::from_str(&read_lossy(&stats)).expect("stats file");
    assert_eq!(stats["suppressed"], json!(18), "{stats}");
    assert_eq!(stats["received"], json!(sent_so_far as u64 + 40), "{stats}");
    assert_eq!(stats["lost"], json!(0), "{stats}");
}

#[test]
fn e2e_kube_api_down_at_start() {
    let sb = Sandbox::new("e2ekdown");
    setup_pods(&sb);
    policy_rule(&sb, WEB, DB, 5432, &prefix("shop", "deny-db"));
    let log = sb.path("syslogemu.log");
    // Nothing listens on the API port yet.
    let mut d = daemon(&sb, &log).start();

    let body = wait_readyz(
        &sb,
        &d,
        Duration::from_secs(5),
        "the watches waiting",
        |b| b.contains("kubernetes networkpolicies: waiting for the initial list"),
    );
    assert!(
        body.lines().any(|l| l == "nflog: bound"),
        "ready while the API is down: {body}"
    );

    // Standalone attribution from the prefix.
    send(&sb, WEB, DB, 5432, 2);
    let evs = wait_events(&d, 5432, 2);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    for ev in &evs {
        assert_eq!(
            ev["policy"],
            policy_json("shop", Some("deny-db"), false, &[]),
            "{ev}"
        );
        assert!(
            ev.get("src").is_none() && ev.get("dest").is_none(),
            "no pods known yet: {ev}"
        );
    }
    assert_eq!(
        read_lossy(&log).lines().count(),
        2,
        "syslogemu lines while the API is down"
    );

    // The API server comes up on the port the daemon was pointed at.
    let api = NsApi::start(&sb.ns, API_PORT);
    populate(&api);
    wait_readyz(
        &sb,
        &d,
        Duration::from_secs(60),
        "every watch synced",
        all_synced,
    );
    send(&sb, WEB, DB, 5432, 2);
    let evs = wait_events(&d, 5432, 4);
    assert_eq!(evs.len(), 4, "{evs:#?}");
    check_events(
        &evs[2..],
        "after the API came up",
        &[
            (
                "policy",
                policy_json("shop", Some("deny-db"), true, &[("shop", "deny-db")]),
            ),
            ("direction", json!("ingress")),
            ("src", pod_json(WEB_POD, "shop", "Deployment", "web")),
            ("dest", pod_json(DB_POD, "shop", "StatefulSet", "db")),
        ],
    );
    assert_eq!(read_lossy(&log).lines().count(), 4);
    d.terminate_ok();
}
