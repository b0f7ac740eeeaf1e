//! Unit tests of the index, fed with objects shaped like the API server's (built from JSON).

use std::time::Duration;

use serde_json::json;

use super::*;

fn policy(
    ns: &str,
    name: &str,
    spec: serde_json::Value,
    annotations: serde_json::Value,
) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name, "namespace": ns,
            "uid": uid_for(ns, name),
            "resourceVersion": "1234",
            "annotations": annotations,
        },
        "spec": spec,
    }))
    .unwrap()
}

fn uid_for(ns: &str, name: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ns, name).hash(&mut h);
    let x = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        x >> 32,
        x & 0xffff,
        x & 0xfff,
        (x >> 12) & 0xfff,
        x >> 16
    )
}

fn deny_all_ingress(ns: &str, name: &str, selector: serde_json::Value) -> NetworkPolicy {
    policy(
        ns,
        name,
        json!({"podSelector": selector, "policyTypes": ["Ingress"]}),
        json!({}),
    )
}

fn pod(
    ns: &str,
    name: &str,
    ips: &[&str],
    labels: serde_json::Value,
    owner: Option<(&str, &str)>,
) -> Pod {
    let owners: Vec<_> = owner
        .map(|(kind, oname)| json!({"apiVersion": "apps/v1", "kind": kind, "name": oname, "uid": "0b7c1f9e-2a51-4a43-9f0a-3c1f4f6bb001", "controller": true, "blockOwnerDeletion": true}))
        .into_iter()
        .collect();
    let pod_ips: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid_for(ns, name), "resourceVersion": "99",
            "labels": labels, "ownerReferences": owners,
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ips.first(), "podIPs": pod_ips},
    }))
    .unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn names(ctx: &KubeContext) -> Vec<String> {
    ctx.policies
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn prefix(s: &str) -> Attribution<'_> {
    Attribution::from_prefix(Some(s.as_bytes()))
}

#[test]
fn safe_join_matches_kube_router() {
    assert_eq!(safe_join("default", "deny-db"), "default/deny-db");
    // len(ns)+len(name) = 47: still whole.
    let name40 = "n".repeat(40);
    assert_eq!(safe_join("default", &name40), format!("default/{name40}"));
    // 48: the name is cut to 47-len(ns).
    let name41 = format!("{name40}x");
    assert_eq!(safe_join("default", &name41), format!("default/{name40}"));
    // Long namespace, short name: the namespace is cut.
    let ns30 = "s".repeat(30);
    assert_eq!(safe_join(&ns30, "deny-db"), format!("{ns30}/deny-db"));
    let ns45 = "s".repeat(45);
    assert_eq!(
        safe_join(&ns45, "deny-db"),
        format!("{}/deny-db", "s".repeat(40))
    );
    // Both long: 23 + 23.
    let (a, b) = ("a".repeat(30), "b".repeat(30));
    assert_eq!(
        safe_join(&a, &b),
        format!("{}/{}", "a".repeat(23), "b".repeat(23))
    );
    for (ns, name) in [
        (&a, &b),
        (&ns45, &name41),
        (&"x".to_string(), &"y".repeat(200)),
    ] {
        assert!(b"DROP by policy ".len() + safe_join(ns, name).len() <= 63);
    }
}

#[test]
fn exact_policy_name_resolves_with_direction() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress(
        "shop",
        "deny-db",
        json!({"matchLabels": {"app": "db"}}),
    ));
    idx.apply_pod(&pod(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        Some(("StatefulSet", "db")),
    ));
    add_bare_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web");

    let ctx = idx
        .resolve(
            &prefix("DROP by policy shop/deny-db"),
            ip("10.42.0.8"),
            ip("10.42.0.7"),
        )
        .unwrap();
    assert!(ctx.resolved);
    assert_eq!(names(&ctx), ["shop/deny-db"]);
    assert_eq!(ctx.direction, Some(Direction::Ingress));
    let dest = ctx.dest.as_deref().unwrap();
    assert_eq!(
        (dest.pod.as_str(), dest.namespace.as_str()),
        ("db-0", "shop")
    );
    assert_eq!(
        (dest.workload_kind.as_deref(), dest.workload.as_deref()),
        (Some("StatefulSet"), Some("db"))
    );
    assert_eq!(dest.node.as_deref(), Some("node-a"));
    let src = ctx.src.as_deref().unwrap();
    assert_eq!(
        (src.workload_kind.as_deref(), src.workload.as_deref()),
        (Some("Pod"), Some("web-1"))
    );

    // The same prefix from an address nobody owns: resolved, no pods, no direction.
    let ctx = idx
        .resolve(
            &prefix("DROP by policy shop/deny-db"),
            ip("192.0.2.1"),
            ip("192.0.2.2"),
        )
        .unwrap();
    assert!(ctx.resolved && ctx.src.is_none() && ctx.dest.is_none() && ctx.direction.is_none());
}

#[test]
fn egress_direction_when_the_source_is_selected() {
    let mut idx = Index::new();
    idx.apply_policy(&policy(
        "shop",
        "no-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        json!({}),
    ));
    add_bare_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web");
    let ctx = idx
        .resolve(
            &prefix("DROP by policy shop/no-egress"),
            ip("10.42.0.8"),
            ip("1.1.1.1"),
        )
        .unwrap();
    assert_eq!(ctx.direction, Some(Direction::Egress));
    assert!(ctx.src.is_some() && ctx.dest.is_none());
}

#[test]
fn truncated_long_name_resolves() {
    let mut idx = Index::new();
    let long = "allow-only-the-frontend-and-the-metrics-scraper-to-reach-the-database";
    idx.apply_policy(&deny_all_ingress("shop", long, json!({})));
    idx.apply_policy(&deny_all_ingress("shop", "other", json!({})));
    let written = format!("DROP by policy {}", safe_join("shop", long));
    assert_eq!(written.len(), 63);
    let ctx = idx.resolve(&prefix(&written), None, None).unwrap();
    assert!(ctx.resolved);
    assert_eq!(names(&ctx), [format!("shop/{long}")]);
}

#[test]
fn ambiguous_truncation_lists_candidates() {
    let mut idx = Index::new();
    let base = "allow-only-the-frontend-and-the-metrics-scraper-";
    let (a, b) = (format!("{base}to-db"), format!("{base}to-cache"));
    idx.apply_policy(&deny_all_ingress("shop", &a, json!({})));
    idx.apply_policy(&deny_all_ingress("shop", &b, json!({})));
    assert_eq!(safe_join("shop", &a), safe_join("shop", &b));
    let ctx = idx
        .resolve(
            &prefix(&format!("DROP by policy {}", safe_join("shop", &a))),
            None,
            None,
        )
        .unwrap();
    assert!(!ctx.resolved);
    assert_eq!(names(&ctx), [format!("shop/{b}"), format!("shop/{a}")]);
}

#[test]
fn unknown_policy_is_unresolved_without_candidates() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress("shop", "deny-db", json!({})));
    let ctx = idx
        .resolve(&prefix("DROP by policy shop/gone"), None, None)
        .unwrap();
    assert!(!ctx.resolved);
    assert!(ctx.policies.is_empty());
    // A prefix of a policy name is not a match unless safeJoin would have produced it.
    assert!(idx
        .resolve(&prefix("DROP by policy shop/deny"), None, None)
        .unwrap()
        .policies
        .is_empty());
}

#[test]
fn empty_prefix_lists_the_selecting_policies() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress("shop", "default-deny", json!({})));
    idx.apply_policy(&deny_all_ingress(
        "shop",
        "db-from-api",
        json!({"matchLabels": {"app": "db"}}),
    ));
    idx.apply_policy(&deny_all_ingress(
        "shop",
        "web-only",
        json!({"matchLabels": {"app": "web"}}),
    ));
    idx.apply_policy(&deny_all_ingress("other", "default-deny", json!({})));
    // Egress-only: does not cover an ingress drop.
    idx.apply_policy(&policy(
        "shop",
        "egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        json!({}),
    ));
    add_bare_pod(&mut idx, "shop", "db-0", "10.42.0.7", "db");

    let ctx = idx
        .resolve(&prefix(""), ip("10.42.1.1"), ip("10.42.0.7"))
        .unwrap();
    assert_eq!(ctx.direction, Some(Direction::Ingress));
    assert!(!ctx.resolved);
    assert_eq!(names(&ctx), ["shop/db-from-api", "shop/default-deny"]);
}

#[test]
fn empty_prefix_with_one_candidate_is_resolved() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress(
        "shop",
        "db-from-api",
        json!({"matchLabels": {"app": "db"}}),
    ));
    // No policyTypes and egress rules: Ingress and Egress (the API default).
    idx.apply_policy(&policy("shop", "web-egress", json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"to": [{"podSelector": {}}]}]}), json!({})));
    add_bare_pod(&mut idx, "shop", "db-0", "10.42.0.7", "db");
    idx.apply_pod(&pod(
        "shop",
        "web-1",
        &["10.42.0.8", "fd00:42::8"],
        json!({"app": "web"}),
        None,
    ));

    let ctx = idx
        .resolve(&prefix(""), ip("10.42.1.1"), ip("10.42.0.7"))
        .unwrap();
    assert!(ctx.resolved);
    assert_eq!(names(&ctx), ["shop/db-from-api"]);

    // From web (egress-selected) to an outside address, over IPv6.
    let ctx = idx
        .resolve(&prefix(""), ip("fd00:42::8"), ip("2001:db8::1"))
        .unwrap();
    assert_eq!(
        (ctx.direction, ctx.resolved),
        (Some(Direction::Egress), true)
    );
    assert_eq!(names(&ctx), ["shop/web-egress"]);

    // web → db: both pods have chains with policies, but web's egress rules allow every pod
    // of shop, so only db's ingress chain (which allows nothing) can have rejected it.
    let ctx = idx
        .resolve(&prefix(""), ip("10.42.0.8"), ip("10.42.0.7"))
        .unwrap();
    assert_eq!(
        (ctx.direction, ctx.resolved),
        (Some(Direction::Ingress), true)
    );
    assert_eq!(names(&ctx), ["shop/db-from-api"]);

    // Once web's egress allows nothing to db either, both chains could have dropped it.
    idx.apply_policy(&policy("shop", "web-egress", json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "dns"}}}]}]}), json!({})));
    let ctx = idx
        .resolve(&prefix(""), ip("10.42.0.8"), ip("10.42.0.7"))
        .unwrap();
    assert_eq!(ctx.direction, None);
    assert_eq!(names(&ctx), ["shop/db-from-api", "shop/web-egress"]);
    assert!(!ctx.resolved);
}

#[test]
fn empty_prefix_without_known_pods_gives_nothing() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress("shop", "default-deny", json!({})));
    assert_eq!(
        idx.resolve(&prefix(""), ip("10.0.0.1"), ip("10.0.0.2")),
        None
    );
    assert_eq!(idx.resolve(&prefix(""), None, None), None);
}

#[test]
fn policy_types_default_to_ingress() {
    let mut idx = Index::new();
    // Neither policyTypes nor egress: Ingress only.
    idx.apply_policy(&policy(
        "shop",
        "plain",
        json!({"podSelector": {}}),
        json!({}),
    ));
    idx.apply_pod(&pod("shop", "web-1", &["10.42.0.8"], json!({}), None));
    let ctx = idx
        .resolve(&prefix(""), ip("10.42.0.8"), ip("1.1.1.1"))
        .unwrap();
    assert!(ctx.policies.is_empty(), "no egress candidates");
    let ctx = idx
        .resolve(&prefix(""), ip("1.1.1.1"), ip("10.42.0.8"))
        .unwrap();
    assert_eq!(names(&ctx), ["shop/plain"]);
}

#[test]
fn custom_prefix_fills_pods_only() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress("shop", "default-deny", json!({})));
    idx.apply_pod(&pod("shop", "web-1", &["10.42.0.8"], json!({}), None));
    let ctx = idx
        .resolve(&prefix("REF-OUT4"), ip("10.42.0.8"), ip("1.1.1.1"))
        .unwrap();
    assert!(ctx.policies.is_empty() && !ctx.resolved && ctx.direction.is_none());
    assert_eq!(ctx.src.as_deref().map(|p| p.pod.as_str()), Some("web-1"));
    assert_eq!(idx.resolve(&prefix("REF-OUT4"), ip("1.1.1.1"), None), None);
}

#[test]
fn host_network_and_finished_pods_are_not_indexed() {
    let mut idx = Index::new();
    let mut host = pod(
        "kube-system",
        "svclb-traefik",
        &["192.168.1.10"],
        json!({}),
        Some(("DaemonSet", "svclb-traefik")),
    );
    if let Some(spec) = host.spec.as_mut() {
        spec.host_network = Some(true);
    }
    idx.apply_pod(&host);
    assert_eq!(idx.pod_by_ip("192.168.1.10".parse().unwrap()), None);
    assert_eq!(idx.counts().pods, 0);

    let mut done = pod(
        "batch",
        "job-1-abcde",
        &["10.42.0.9"],
        json!({}),
        Some(("Job", "job-1")),
    );
    idx.apply_pod(&done);
    assert!(idx.pod_by_ip("10.42.0.9".parse().unwrap()).is_some());
    if let Some(status) = done.status.as_mut() {
        status.phase = Some("Succeeded".into());
    }
    idx.apply_pod(&done);
    assert_eq!(idx.pod_by_ip("10.42.0.9".parse().unwrap()), None);
    let c = idx.counts();
    assert_eq!((c.pods, c.pod_ips), (0, 0));
}

#[test]
fn reused_ip_survives_the_old_pods_late_delete() {
    let mut idx = Index::new();
    let old = pod("shop", "web-old", &["10.42.0.8"], json!({}), None);
    idx.apply_pod(&old);
    idx.apply_pod(&pod("shop", "web-new", &["10.42.0.8"], json!({}), None));
    idx.delete_pod(&old);
    assert_eq!(
        idx.pod_by_ip("10.42.0.8".parse().unwrap())
            .map(|p| p.pod.clone())
            .as_deref(),
        Some("web-new")
    );
}

#[test]
fn workloads_from_owners() {
    let hash = json!({"app": "web", "pod-template-hash": "7d4b9c8f6"});
    let cases = [
        (
            pod(
                "s",
                "web-7d4b9c8f6-x2x9z",
                &["10.0.0.1"],
                hash.clone(),
                Some(("ReplicaSet", "web-7d4b9c8f6")),
            ),
            "Deployment",
            "web",
        ),
        (
            pod(
                "s",
                "rs-abc",
                &["10.0.0.2"],
                json!({}),
                Some(("ReplicaSet", "bare-rs")),
            ),
            "ReplicaSet",
            "bare-rs",
        ),
        (
            pod(
                "s",
                "db-0",
                &["10.0.0.3"],
                json!({}),
                Some(("StatefulSet", "db")),
            ),
            "StatefulSet",
            "db",
        ),
        (
            pod(
                "s",
                "agent-x",
                &["10.0.0.4"],
                json!({}),
                Some(("DaemonSet", "agent")),
            ),
            "DaemonSet",
            "agent",
        ),
        (
            pod(
                "s",
                "backup-29158560-k2",
                &["10.0.0.5"],
                json!({}),
                Some(("Job", "backup-29158560")),
            ),
            "CronJob",
            "backup",
        ),
        (
            pod(
                "s",
                "migrate-1-k2",
                &["10.0.0.6"],
                json!({}),
                Some(("Job", "migrate-1")),
            ),
            "Job",
            "migrate-1",
        ),
        (
            pod("s", "lonely", &["10.0.0.7"], json!({}), None),
            "Pod",
            "lonely",
        ),
    ];
    let mut idx = Index::new();
    for (p, kind, name) in &cases {
        idx.apply_pod(p);
        let ip = p
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        let meta = idx.pod_by_ip(ip).unwrap();
        assert_eq!(
            (meta.workload_kind.as_deref(), meta.workload.as_deref()),
            (Some(*kind), Some(*name)),
            "{meta:?}"
        );
    }
}

#[test]
fn annotations_set_limits_and_report_changes() {
    let mut idx = Index::new();
    let annotated = |limit: &str, burst: &str| {
        policy(
            "shop",
            "deny-db",
            json!({"podSelector": {}}),
            json!({ limit::ANNOTATION_LIMIT: limit, limit::ANNOTATION_BURST: burst }),
        )
    };
    let want = Limit {
        count: 5,
        per: Duration::from_secs(1),
        burst: 20,
    };
    let u = idx.apply_policy(&annotated("5/second", "20"));
    assert_eq!(
        u,
        PolicyUpdate {
            limits: vec![("shop/deny-db".into(), Some(want))],
            invalid: vec![]
        }
    );
    assert_eq!(idx.policy_limit("shop/deny-db"), Some(want));
    assert_eq!(
        idx.limits().collect::<Vec<_>>(),
        [("shop/deny-db".to_string(), want)]
    );

    // Same object again (a relist, a status-only update): nothing to report.
    assert_eq!(
        idx.apply_policy(&annotated("5/second", "20")),
        PolicyUpdate::default()
    );

    // A bad value: kube-router's defaults, one warning, listed for status.
    let u = idx.apply_policy(&annotated("5/sec", "20"));
    assert_eq!(
        u.limits,
        [("shop/deny-db".to_string(), Some(Limit::DEFAULT))]
    );
    assert_eq!(u.invalid.len(), 1);
    assert_eq!(
        (u.invalid[0].annotation, u.invalid[0].value.as_str()),
        (limit::ANNOTATION_LIMIT, "5/sec")
    );
    assert_eq!(idx.invalid_annotations(), u.invalid);
    // The same bad value again warns no more.
    assert_eq!(
        idx.apply_policy(&annotated("5/sec", "20")),
        PolicyUpdate::default()
    );
    // Another bad value does.
    let u = idx.apply_policy(&annotated("5/second", "lots"));
    assert_eq!(
        (u.invalid[0].annotation, u.invalid[0].value.as_str()),
        (limit::ANNOTATION_BURST, "lots")
    );
    assert!(u.limits.is_empty(), "still the defaults");

    // Deleting gives the key back to the configured default.
    let u = idx.delete_policy(&annotated("5/second", "lots"));
    assert_eq!(u.limits, [("shop/deny-db".to_string(), None)]);
    assert!(idx.invalid_annotations().is_empty());
    assert_eq!(idx.policy_limit("shop/deny-db"), None);
}

#[test]
fn policy_without_annotations_has_no_limit() {
    let mut idx = Index::new();
    assert_eq!(
        idx.apply_policy(&deny_all_ingress("shop", "deny-db", json!({}))),
        PolicyUpdate::default()
    );
    assert_eq!(idx.policy_limit("shop/deny-db"), None);
    assert_eq!(
        idx.delete_policy(&deny_all_ingress("shop", "deny-db", json!({}))),
        PolicyUpdate::default()
    );
}

#[test]
fn relist_sweeps_what_was_not_listed() {
    let mut idx = Index::new();
    let keep = deny_all_ingress("shop", "keep", json!({}));
    let gone = policy(
        "shop",
        "gone",
        json!({"podSelector": {}}),
        json!({ limit::ANNOTATION_LIMIT: "1/s" }),
    );
    idx.policy_event(&Event::Init);
    idx.policy_event(&Event::InitApply(keep.clone()));
    assert_eq!(
        idx.policy_event(&Event::InitApply(gone.clone()))
            .limits
            .len(),
        1
    );
    idx.policy_event(&Event::InitDone);
    let p1 = pod("shop", "a", &["10.0.0.1"], json!({"app": "a"}), None);
    let p2 = pod("shop", "b", &["10.0.0.2"], json!({"app": "b"}), None);
    for ev in [
        Event::Init,
        Event::InitApply(p1.clone()),
        Event::InitApply(p2),
        Event::InitDone,
    ] {
        idx.pod_event(&ev);
    }
    assert_eq!((idx.counts().policies, idx.counts().pods), (2, 2));

    // A relist (after 410 Gone) that no longer has `gone` nor pod b.
    idx.policy_event(&Event::Init);
    idx.policy_event(&Event::InitApply(keep));
    let u = idx.policy_event(&Event::InitDone);
    assert_eq!(u.limits, [("shop/gone".to_string(), None)]);
    for ev in [Event::Init, Event::InitApply(p1), Event::InitDone] {
        idx.pod_event(&ev);
    }
    let c = idx.counts();
    assert_eq!((c.policies, c.pods, c.pod_ips), (1, 1, 1));
    assert!(idx.pod_by_ip("10.0.0.2".parse().unwrap()).is_none());
    // The label value only pod b used is no longer interned, nor its label set.
    assert!(!idx.strings.0.contains("b"));
    assert_eq!(idx.counts().interned_label_sets, 1);
}

#[test]
fn namespaces_keep_labels() {
    let mut idx = Index::new();
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "uid": "6f1d3c1e-0d52-4bb4-8d0e-5b5e2f7f0a11", "labels": {"kubernetes.io/metadata.name": "shop", "team": "a"}}
    }))
    .unwrap();
    idx.namespace_event(&Event::Apply(ns.clone()));
    assert_eq!(
        idx.namespace_labels("shop").and_then(|l| l.get("team")),
        Some("a")
    );
    idx.namespace_event(&Event::Delete(ns));
    assert_eq!(idx.namespace_labels("shop"), None);
}

#[test]
fn invalid_selector_selects_nothing() {
    let mut idx = Index::new();
    idx.apply_policy(&deny_all_ingress(
        "shop",
        "bad",
        json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
    ));
    idx.apply_pod(&pod(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"a": "2"}),
        None,
    ));
    let ctx = idx.resolve(&prefix(""), None, ip("10.42.0.8")).unwrap();
    assert!(ctx.policies.is_empty());
}

#[test]
fn replicas_share_one_label_set() {
    let mut idx = Index::new();
    let labels = json!({"app": "web", "pod-template-hash": "7d4b9c8f6"});
    for i in 0..10 {
        let name = format!("web-7d4b9c8f6-{i}");
        idx.apply_pod(&pod(
            "shop",
            &name,
            &[&format!("10.42.0.{i}")],
            labels.clone(),
            Some(("ReplicaSet", "web-7d4b9c8f6")),
        ));
    }
    let c = idx.counts();
    assert_eq!((c.pods, c.interned_label_sets), (10, 1));
    // Seven strings: two keys, two values, and the pods' namespace, workload kind and node (their
    // workload, web, is the app label's value).
    assert_eq!(c.interned_strings, 7);
}

// ---- Narrowing by evidence and rule evaluation ---------------------------------------------

/// A pod on `node` with named container ports `[(name, protocol, port)]`.
fn pod_on(
    ns: &str,
    name: &str,
    ips: &[&str],
    labels: serde_json::Value,
    node: &str,
    ports: &[(&str, &str, u16)],
) -> Pod {
    let mut p = pod(ns, name, ips, labels, None);
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, proto, port)| json!({"name": n, "protocol": proto, "containerPort": port}))
        .collect();
    let spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "busybox", "ports": ports}]});
    p.spec = Some(serde_json::from_value(spec).unwrap());
    p
}

/// A pod without an owner, labelled `app: APP`, with one address, on node-a.
fn add_bare_pod(idx: &mut Index, ns: &str, name: &str, ip: &str, app: &str) {
    idx.apply_pod(&pod(ns, name, &[ip], json!({"app": app}), None));
}

/// A pod labelled `app: APP` with one address, on `node`, with no named ports.
fn add_app_pod(idx: &mut Index, ns: &str, name: &str, ip: &str, app: &str, node: &str) {
    idx.apply_pod(&pod_on(ns, name, &[ip], json!({"app": app}), node, &[]));
}

fn namespace(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": uid_for("", name), "labels": labels}
    }))
    .unwrap()
}

fn tcp(src: &str, dst: &str, port: u16) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        protocol: Some(rules::TCP),
        dst_port: Some(port),
        ..Flow::default()
    }
}

const V1: &str = "deny-ingress-to-postgres-except-from-the-api-v1";
const V2: &str = "deny-ingress-to-postgres-except-from-the-api-v2";

/// Two policies whose prefixes collide; only v1 selects a pod (postgres).
fn colliding_index() -> Index {
    let mut idx = Index::new();
    for (name, app) in [(V1, "postgres"), (V2, "postgres-v2")] {
        idx.apply_policy(&policy(
            "shop",
            name,
            json!({"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}]}),
            json!({}),
        ));
    }
    add_app_pod(
        &mut idx,
        "shop",
        "postgres-0",
        "10.42.0.7",
        "postgres",
        "node-a",
    );
    add_app_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web", "node-a");
    idx
}

#[test]
fn drop_by_policy_keeps_only_policies_that_protect_a_pod_of_the_packet() {
    let idx = colliding_index();
    let key = safe_join("shop", V1);
    assert_eq!(key, "shop/deny-ingress-to-postgres-except-from-the-ap");
    assert_eq!(key, safe_join("shop", V2));
    let written = format!("DROP by policy {key}");

    let ctx = idx
        .resolve_flow(&prefix(&written), &tcp("10.42.0.8", "10.42.0.7", 5432))
        .unwrap();
    assert_eq!(names(&ctx), [format!("shop/{V1}")]);
    assert_eq!(
        (ctx.direction, ctx.resolved),
        (Some(Direction::Ingress), true)
    );
    // The thin wrapper without ports narrows the same way: selection needs no port.
    let ctx = idx
        .resolve(&prefix(&written), ip("10.42.0.8"), ip("10.42.0.7"))
        .unwrap();
    assert_eq!(names(&ctx), [format!("shop/{V1}")]);

    // No pod known: no evidence, both stay as unresolved candidates.
    let ctx = idx
        .resolve_flow(&prefix(&written), &tcp("192.0.2.1", "192.0.2.2", 5432))
        .unwrap();
    assert_eq!(names(&ctx), [format!("shop/{V1}"), format!("shop/{V2}")]);
    assert!(!ctx.resolved && ctx.direction.is_none());

    // Known pods, but neither protected (postgres is the source, web the destination): the
    // evidence rules out both, which cannot be, so both stay.
    let ctx = idx
        .resolve_flow(&prefix(&written), &tcp("10.42.0.7", "10.42.0.8", 5432))
        .unwrap();
    assert_eq!(ctx.policies.len(), 2);
    assert!(!ctx.resolved && ctx.direction.is_none());
}

#[test]
fn drop_by_policy_both_sides_protected_rules_pick_the_direction() {
    let mut idx = Index::new();
    let base = "allow-only-the-frontend-and-the-metrics-scraper-";
    let (ing, egr) = (format!("{base}in"), format!("{base}out"));
    assert_eq!(safe_join("shop", &ing), safe_join("shop", &egr));
    // Ingress to db: only from api, port 5432.
    idx.apply_policy(&policy("shop", &ing, json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}]}), json!({})));
    // Egress from web: only to db, port 5432.
    idx.apply_policy(&policy("shop", &egr, json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]}]}), json!({})));
    add_app_pod(&mut idx, "shop", "db-0", "10.42.0.7", "db", "node-a");
    add_app_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web", "node-a");
    let written = format!("DROP by policy {}", safe_join("shop", &ing));

    // web → db:5432: web's egress allows it, db's ingress does not (web is not api).
    let ctx = idx
        .resolve_flow(&prefix(&written), &tcp("10.42.0.8", "10.42.0.7", 5432))
        .unwrap();
    assert_eq!(names(&ctx), [format!("shop/{ing}")]);
    assert_eq!(
        (ctx.direction, ctx.resolved),
        (Some(Direction::Ingress), true)
    );
    // web → db:80: neither allows it: both stay, direction unknown.
    let ctx = idx
        .resolve_flow(&prefix(&written), &tcp("10.42.0.8", "10.42.0.7", 80))
        .unwrap();
    assert_eq!(names(&ctx), [format!("shop/{ing}"), format!("shop/{egr}")]);
    assert_eq!((ctx.direction, ctx.resolved), (None, false));
    // Port unknown: the egress rule might have allowed it or not: both stay.
    let ctx = idx
        .resolve(&prefix(&written), ip("10.42.0.8"), ip("10.42.0.7"))
        .unwrap();
    assert_eq!(ctx.policies.len(), 2);
    assert_eq!(ctx.direction, None);
}

#[test]
fn drop_by_policy_of_a_two_way_policy_gets_its_direction_from_the_rules() {
    let mut idx = Index::new();
    // Selects every pod of shop both ways; ingress from web only, no egress at all.
    idx.apply_policy(&policy(
        "shop",
        "lockdown",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        json!({}),
    ));
    add_app_pod(&mut idx, "shop", "db-0", "10.42.0.7", "db", "node-a");
    add_app_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web", "node-a");
    let p = prefix("DROP by policy shop/lockdown");
    // web → db: db's ingress allows web; web's egress allows nothing.
    let ctx = idx
        .resolve_flow(&p, &tcp("10.42.0.8", "10.42.0.7", 5432))
        .unwrap();
    assert_eq!(
        (ctx.direction, ctx.resolved),
        (Some(Direction::Egress), true)
    );
    // db → web: both directions deny.
    let ctx = idx
        .resolve_flow(&p, &tcp("10.42.0.7", "10.42.0.8", 80))
        .unwrap();
    assert_eq!((ctx.direction, ctx.resolved), (None, true));
    assert_eq!(names(&ctx), ["shop/lockdown"]);
}

#[test]
fn pod_chain_named_ports_decide_the_direction() {
    let mut idx = Index::new();
    // db admits anyone on its named port `metrics`; web may only reach TCP 5432.
    idx.apply_policy(&policy(
        "shop",
        "db-metrics",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "metrics"}]}]}),
        json!({}),
    ));
    idx.apply_policy(&policy(
        "shop",
        "web-out",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "TCP", "port": 5432}]}]}),
        json!({}),
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        "node-a",
        &[("metrics", "TCP", 9187), ("pg", "TCP", 5432)],
    ));
    add_app_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web", "node-a");
    let p = prefix("");

    // web → db:9187 (metrics): db's ingress allows, web's egress does not.
    let ctx = idx
        .resolve_flow(&p, &tcp("10.42.0.8", "10.42.0.7", 9187))
        .unwrap();
    assert_eq!(names(&ctx), ["shop/web-out"]);
    assert_eq!(
        (ctx.direction, ctx.resolved),
        (Some(Direction::Egress), true)
    );
    // web → db:5432: web's egress allows, db's ingress does not (5432 is `pg`, not `metrics`).
    let ctx = idx
        .resolve_flow(&p, &tcp("10.42.0.8", "10.42.0.7", 5432))
        .unwrap();
    assert_eq!(names(&ctx), ["shop/db-metrics"]);
    assert_eq!(ctx.direction, Some(Direction::Ingress));
    // web → db:22: both deny.
    let ctx = idx
        .resolve_flow(&p, &tcp("10.42.0.8", "10.42.0.7", 22))
        .unwrap();
    assert_eq!(names(&ctx), ["shop/db-metrics", "shop/web-out"]);
    assert_eq!((ctx.direction, ctx.resolved), (None, false));
    // Same over UDP: `metrics` is a TCP port, and web may only send TCP.
    let udp = Flow {
        protocol: Some(rules::UDP),
        ..tcp("10.42.0.8", "10.42.0.7", 9187)
    };
    assert_eq!(idx.resolve_flow(&p, &udp).unwrap().direction, None);
    // Protocol and port unknown: the evidence is missing, both stay.
    let ctx = idx.resolve(&p, ip("10.42.0.8"), ip("10.42.0.7")).unwrap();
    assert_eq!((ctx.direction, ctx.policies.len()), (None, 2));
}

#[test]
fn pod_chain_namespace_selectors_use_namespace_labels() {
    let mut idx = Index::new();
    // db (in shop) admits pods of namespaces labelled team=a; the frontend may only reach
    // 192.0.2.0/24.
    idx.apply_policy(&policy(
        "shop",
        "db-from-team-a",
        json!({"podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
        json!({}),
    ));
    idx.apply_policy(&policy(
        "front",
        "front-out",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}),
        json!({}),
    ));
    add_app_pod(&mut idx, "shop", "db-0", "10.42.0.7", "db", "node-a");
    add_app_pod(&mut idx, "front", "ui-1", "10.42.0.9", "ui", "node-a");
    let p = prefix("");
    let flow = tcp("10.42.0.9", "10.42.0.7", 5432);

    // Namespace `front` not known yet: db's ingress may or may not allow it.
    let ctx = idx.resolve_flow(&p, &flow).unwrap();
    assert_eq!((ctx.direction, ctx.policies.len()), (None, 2));
    // Labelled team=a: db admits it, so the frontend's egress rejected it.
    idx.apply_namespace(&namespace("front", json!({"team": "a"})));
    let ctx = idx.resolve_flow(&p, &flow).unwrap();
    assert_eq!(names(&ctx), ["front/front-out"]);
    assert_eq!(ctx.direction, Some(Direction::Egress));
    // Relabelled team=b: now both reject it.
    idx.apply_namespace(&namespace("front", json!({"team": "b"})));
    let ctx = idx.resolve_flow(&p, &flow).unwrap();
    assert_eq!((ctx.direction, ctx.policies.len()), (None, 2));
    // Deleted: unknown again.
    idx.delete_namespace(&namespace("front", json!({})));
    assert_eq!(idx.namespace_labels("front"), None);
}

#[test]
fn pod_chain_ipv6_ip_block_except() {
    let mut idx = Index::new();
    idx.apply_policy(&policy("shop", "db-from-pods", json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:42::/64", "except": ["fd00:42::8/128"]}}]}]}), json!({})));
    idx.apply_policy(&policy(
        "shop",
        "web-anywhere",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
        "egress": [{}]}),
        json!({}),
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "db-0",
        &["10.42.0.7", "fd00:42::7"],
        json!({"app": "db"}),
        "node-a",
        &[],
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "web-1",
        &["10.42.0.8", "fd00:42::8"],
        json!({"app": "web"}),
        "node-a",
        &[],
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "web-2",
        &["10.42.0.10", "fd00:42::a"],
        json!({"app": "web"}),
        "node-a",
        &[],
    ));
    let p = prefix("");
    // web-1 is excepted: db's ingress rejected it.
    let ctx = idx
        .resolve_flow(&p, &tcp("fd00:42::8", "fd00:42::7", 80))
        .unwrap();
    assert_eq!(names(&ctx), ["shop/db-from-pods"]);
    assert_eq!(ctx.direction, Some(Direction::Ingress));
    // web-2 is in the block: db admits it, and so does web's egress: the rules contradict the
    // drop (a stale index?), so both chains stay candidates.
    let ctx = idx
        .resolve_flow(&p, &tcp("fd00:42::a", "fd00:42::7", 80))
        .unwrap();
    assert_eq!((ctx.direction, ctx.policies.len()), (None, 2));
    // Over IPv4 the block does not match at all: db's ingress rejected it.
    let ctx = idx
        .resolve_flow(&p, &tcp("10.42.0.10", "10.42.0.7", 80))
        .unwrap();
    assert_eq!(ctx.direction, Some(Direction::Ingress));
}

#[test]
fn only_pods_of_this_node_have_chains_here() {
    let mut idx = Index::new();
    idx.set_local_node(Some("node-a"));
    idx.apply_policy(&deny_all_ingress(
        "shop",
        "db-deny",
        json!({"matchLabels": {"app": "db"}}),
    ));
    idx.apply_policy(&policy(
        "shop",
        "web-deny",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}),
        json!({}),
    ));
    add_app_pod(&mut idx, "shop", "db-0", "10.42.0.7", "db", "node-a");
    // web runs on another node: its egress chain is there, not here.
    add_app_pod(&mut idx, "shop", "web-1", "10.42.1.8", "web", "node-b");
    let ctx = idx
        .resolve_flow(&prefix(""), &tcp("10.42.1.8", "10.42.0.7", 5432))
        .unwrap();
    assert_eq!(names(&ctx), ["shop/db-deny"]);
    assert_eq!(ctx.direction, Some(Direction::Ingress));
    // The pods are still reported.
    assert_eq!(ctx.src.as_deref().map(|p| p.pod.as_str()), Some("web-1"));
    // A `DROP by policy` naming the remote pod's policy keeps it (the name is evidence), but
    // without a protected pod here there is no direction.
    let ctx = idx
        .resolve_flow(
            &prefix("DROP by policy shop/web-deny"),
            &tcp("10.42.1.8", "10.42.0.7", 5432),
        )
        .unwrap();
    assert_eq!(names(&ctx), ["shop/web-deny"]);
    assert_eq!(ctx.direction, None);
}

#[test]
fn named_ports_are_interned_and_swept() {
    let mut idx = Index::new();
    let p = pod_on(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({}),
        "node-a",
        &[("pg", "TCP", 5432), ("", "TCP", 1), ("bad", "ICMP", 2)],
    );
    idx.apply_pod(&p);
    let entry = idx.by_ip.get(&"10.42.0.7".parse().unwrap()).unwrap();
    assert_eq!(
        entry
            .ports
            .iter()
            .map(|n| (&*n.name, n.protocol, n.port))
            .collect::<Vec<_>>(),
        [("pg", rules::TCP, 5432)]
    );
    idx.delete_pod(&p);
    idx.strings.gc();
    assert!(!idx.strings.0.contains("pg"));
}

// ---- Services, EndpointSlices, Nodes ------------------------------------------------------------

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::attribute::ServiceHit;

/// A Service as the API server returns it; `ports` as in `spec.ports`.
fn service(ns: &str, name: &str, cluster_ips: &[&str], ports: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": uid_for(ns, &format!("svc/{name}")), "resourceVersion": "7"},
        "spec": {
            "clusterIP": cluster_ips.first().copied().unwrap_or("None"),
            "clusterIPs": if cluster_ips.is_empty() { json!(["None"]) } else { json!(cluster_ips) },
            "type": "ClusterIP", "selector": {"app": name}, "ports": ports,
        },
    }))
    .unwrap()
}

/// An EndpointSlice of a Service: `(address, ready)` endpoints, `ports` as in the object.
fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    endpoints: &[(&str, bool)],
    ports: serde_json::Value,
) -> EndpointSlice {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready, "serving": ready, "terminating": false}, "nodeName": "node-a"}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "uid": uid_for(ns, &format!("eps/{name}")), "resourceVersion": "8",
                     "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": if endpoints.first().is_some_and(|(a, _)| a.contains(':')) { "IPv6" } else { "IPv4" },
        "endpoints": eps,
        "ports": ports,
    }))
    .unwrap()
}

fn node(name: &str, addresses: &[&str], pod_cidrs: &[&str]) -> Node {
    let addrs: Vec<_> = addresses
        .iter()
        .map(|a| json!({"type": "InternalIP", "address": a}))
        .chain([json!({"type": "Hostname", "address": name})])
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": uid_for("", &format!("node/{name}")), "resourceVersion": "9",
                     "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": pod_cidrs.first(), "podCIDRs": pod_cidrs, "providerID": format!("k3s://{name}")},
        "status": {"addresses": addrs, "conditions": [{"type": "Ready", "status": "True"}],
                   "images": [{"names": ["docker.io/rancher/mirrored-pause:3.6"], "sizeBytes": 301463}]},
    }))
    .unwrap()
}

fn with_orig(flow: Flow, orig: &str) -> Flow {
    Flow {
        orig_dst: Some(orig.parse().unwrap()),
        ..flow
    }
}

/// `ns/name:port_name/port via`, for compact assertions.
fn hits(v: &[ServiceHit]) -> Vec<String> {
    v.iter()
        .map(|h| {
            let mut s = format!("{}/{}", h.namespace, h.name);
            if let Some(n) = &h.port_name {
                s += &format!(":{n}");
            }
            if let Some(p) = h.port {
                s += &format!("/{p}");
            }
            if let Some(p) = h.node_port {
                s += &format!(" node-port {p}");
            }
            s + " " + h.via.as_str()
        })
        .collect()
}

fn services_of(idx: &Index, flow: &Flow) -> Vec<String> {
    hits(&idx.dest_services(flow))
}

/// shop/db (ClusterIP 10.43.0.10 and fd00:43::10, port pg 5432 → 15432, NodePort 30432) and
/// shop/db-headless (no ClusterIP, pg 15432), both backed by db-0 (10.42.0.7 and fd00:42::7,
/// ready) and db-1 (10.42.0.9, not ready yet); a web pod, and node-a.
fn service_index() -> Index {
    let mut idx = Index::new();
    idx.apply_pod(&pod(
        "shop",
        "db-0",
        &["10.42.0.7", "fd00:42::7"],
        json!({"app": "db"}),
        None,
    ));
    add_bare_pod(&mut idx, "shop", "web-1", "10.42.0.8", "web");
    idx.apply_service(&service(
        "shop",
        "db",
        &["10.43.0.10", "fd00:43::10"],
        json!([{"name": "pg", "protocol": "TCP", "port": 5432, "targetPort": 15432, "nodePort": 30432},
               {"name": "metrics", "protocol": "TCP", "port": 9187, "targetPort": "metrics"}]),
    ));
    idx.apply_service(&service(
        "shop",
        "db-headless",
        &[],
        json!([{"name": "pg", "protocol": "TCP", "port": 15432, "targetPort": 15432}]),
    ));
    let ports = json!([{"name": "pg", "protocol": "TCP", "port": 15432}, {"name": "metrics", "protocol": "TCP", "port": 9187}]);
    idx.apply_endpoint_slice(&slice(
        "shop",
        "db-v4",
        "db",
        &[("10.42.0.7", true), ("10.42.0.9", false)],
        ports.clone(),
    ));
    idx.apply_endpoint_slice(&slice(
        "shop",
        "db-v6",
        "db",
        &[("fd00:42::7", true)],
        ports,
    ));
    idx.apply_endpoint_slice(&slice(
        "shop",
        "db-headless-x1",
        "db-headless",
        &[("10.42.0.7", true), ("10.42.0.9", false)],
        json!([{"name": "pg", "protocol": "TCP", "port": 15432}]),
    ));
    idx.apply_node(&node(
        "node-a",
        &["192.168.1.10", "2001:db8:1::10"],
        &["10.42.0.0/24", "fd00:42::/64"],
    ));
    idx
}

#[test]
fn services_by_endpoints_with_port_and_protocol() {
    let idx = service_index();
    let flow = tcp("10.42.0.8", "10.42.0.7", 15432);
    assert_eq!(
        services_of(&idx, &flow),
        [
            "shop/db:pg/5432 endpoints",
            "shop/db-headless:pg/15432 endpoints"
        ]
    );
    // The other port names the other Service port; a port no slice has names nothing.
    assert_eq!(
        services_of(&idx, &tcp("10.42.0.8", "10.42.0.7", 9187)),
        ["shop/db:metrics/9187 endpoints"]
    );
    assert!(services_of(&idx, &tcp("10.42.0.8", "10.42.0.7", 80)).is_empty());
    let udp = Flow {
        protocol: Some(rules::UDP),
        ..flow
    };
    assert!(services_of(&idx, &udp).is_empty(), "TCP ports only");
    // Without a port (a later fragment) there is no evidence.
    let fragment = Flow {
        dst_port: None,
        ..flow
    };
    assert!(services_of(&idx, &fragment).is_empty());
    // An endpoint that is not ready yet counts; so does IPv6.
    assert_eq!(
        services_of(&idx, &tcp("10.42.0.8", "10.42.0.9", 15432)).len(),
        2
    );
    assert_eq!(
        services_of(&idx, &tcp("fd00:42::8", "fd00:42::7", 15432)),
        ["shop/db:pg/5432 endpoints"]
    );
    // The context carries them, next to the pods.
    let ctx = idx.resolve_flow(&prefix(""), &flow).unwrap();
    assert_eq!(ctx.dest.as_deref().map(|p| p.pod.as_str()), Some("db-0"));
    assert_eq!(hits(&ctx.dest_services).len(), 2);
    assert_eq!((ctx.src_node.clone(), ctx.dest_node.clone()), (None, None));
}

#[test]
fn services_by_untranslated_cluster_ip() {
    let idx = service_index();
    let flow = tcp("10.42.0.8", "10.43.0.10", 5432);
    assert_eq!(services_of(&idx, &flow), ["shop/db:pg/5432 untranslated"]);
    assert_eq!(
        services_of(&idx, &tcp("fd00:42::8", "fd00:43::10", 9187)),
        ["shop/db:metrics/9187 untranslated"]
    );
    // A port the Service does not have: still its ClusterIP.
    assert_eq!(
        services_of(&idx, &tcp("10.42.0.8", "10.43.0.10", 22)),
        ["shop/db untranslated"]
    );
    // No pod is known at that address, but the pod chain's message still gets a context.
    let ctx = idx.resolve_flow(&prefix(""), &flow).unwrap();
    assert!(ctx.dest.is_none());
    assert_eq!(hits(&ctx.dest_services), ["shop/db:pg/5432 untranslated"]);
    // So does a custom prefix, which is attributed to no policy.
    let ctx = idx.resolve_flow(&prefix("REF-OUT4"), &flow).unwrap();
    assert!(ctx.policies.is_empty());
    assert_eq!(ctx.dest_services.len(), 1);
    // A conntrack entry without translation says the same.
    assert_eq!(
        services_of(&idx, &with_orig(flow, "10.43.0.10:5432")),
        ["shop/db:pg/5432 untranslated"]
    );
}

#[test]
fn services_by_original_destination() {
    let idx = service_index();
    let flow = tcp("10.42.0.8", "10.42.0.7", 15432);
    // The ClusterIP and port the client used: exactly that Service, not the headless one.
    assert_eq!(
        services_of(&idx, &with_orig(flow, "10.43.0.10:5432")),
        ["shop/db:pg/5432 cluster-ip"]
    );
    assert_eq!(
        services_of(
            &idx,
            &with_orig(tcp("fd00:42::8", "fd00:42::7", 15432), "[fd00:43::10]:5432")
        ),
        ["shop/db:pg/5432 cluster-ip"]
    );
    // A NodePort, on the node's address or any other.
    for orig in ["192.168.1.10:30432", "203.0.113.9:30432", "127.0.0.1:30432"] {
        assert_eq!(
            services_of(&idx, &with_orig(flow, orig)),
            ["shop/db:pg/5432 node-port 30432 node-port"],
            "{orig}"
        );
    }
    // The same NodePort number for UDP is another Service's (none here).
    let udp = Flow {
        protocol: Some(rules::UDP),
        ..flow
    };
    assert!(services_of(&idx, &with_orig(udp, "192.168.1.10:30432")).is_empty());
    // No translation at all: the client addressed the pod itself, no Service is named.
    assert!(services_of(&idx, &with_orig(flow, "10.42.0.7:15432")).is_empty());
    // Translated from an address the index does not know (a load-balancer IP): inferred.
    assert_eq!(
        services_of(&idx, &with_orig(flow, "198.51.100.20:443")).len(),
        2
    );
}

#[test]
fn nodes_by_address_and_pod_network() {
    let mut idx = service_index();
    for (addr, want) in [
        ("192.168.1.10", Some("node-a")),
        ("2001:db8:1::10", Some("node-a")),
        // flannel.1 and cni0 on node-a's pod CIDRs.
        ("10.42.0.0", Some("node-a")),
        ("10.42.0.1", Some("node-a")),
        ("fd00:42::", Some("node-a")),
        ("fd00:42::1", Some("node-a")),
        ("10.42.0.2", None),
        ("192.168.1.11", None),
    ] {
        assert_eq!(
            idx.node_by_ip(addr.parse().unwrap()).as_deref(),
            want,
            "{addr}"
        );
    }
    // The kubelet's probe from cni0 to db-0: the source is the node.
    let ctx = idx
        .resolve_flow(&prefix(""), &tcp("10.42.0.1", "10.42.0.7", 15432))
        .unwrap();
    assert_eq!(ctx.src_node.as_deref(), Some("node-a"));
    assert!(ctx.src.is_none() && ctx.dest_node.is_none());
    // A hostNetwork destination, no pod known at either end: still a context.
    let ctx = idx
        .resolve_flow(&prefix(""), &tcp("203.0.113.7", "192.168.1.10", 10250))
        .unwrap();
    assert_eq!(ctx.dest_node.as_deref(), Some("node-a"));
    assert!(ctx.src_node.is_none() && ctx.dest_services.is_empty());
    // Nothing known: no context, as before.
    assert!(idx
        .resolve_flow(&prefix(""), &tcp("203.0.113.7", "198.51.100.1", 443))
        .is_none());
    // A pod's address is the pod's, not the node's.
    idx.apply_pod(&pod("shop", "odd", &["10.42.0.1"], json!({}), None));
    let ctx = idx
        .resolve_flow(&prefix(""), &tcp("10.42.0.1", "10.42.0.7", 15432))
        .unwrap();
    assert_eq!(ctx.src.as_deref().map(|p| p.pod.as_str()), Some("odd"));
    assert!(ctx.src_node.is_none());

    // A status update that leaves the addresses alone does not disturb the index (caches).
    let generation = idx.generation();
    let mut n = node(
        "node-a",
        &["192.168.1.10", "2001:db8:1::10"],
        &["10.42.0.0/24", "fd00:42::/64"],
    );
    n.metadata.resource_version = Some("10".into());
    idx.node_event(&Event::Apply(n));
    assert_eq!(idx.generation(), generation);
    // A new address replaces the old ones.
    idx.node_event(&Event::Apply(node("node-a", &["192.168.1.20"], &[])));
    assert!(idx.generation() > generation);
    assert_eq!(
        idx.node_by_ip("192.168.1.20".parse().unwrap()).as_deref(),
        Some("node-a")
    );
    assert!(idx.node_by_ip("192.168.1.10".parse().unwrap()).is_none());
    assert!(idx.node_by_ip("10.42.0.0".parse().unwrap()).is_none());
}

#[test]
fn deletes_and_relists_remove_services_slices_and_nodes() {
    let mut idx = service_index();
    let flow = tcp("10.42.0.8", "10.42.0.7", 15432);
    let counts = idx.counts();
    assert_eq!(
        (
            counts.services,
            counts.endpoint_slices,
            counts.endpoint_addresses,
            counts.nodes
        ),
        (2, 3, 5, 1)
    );

    // The Service goes, its slice stays a moment: still named, without the Service port.
    idx.service_event(&Event::Delete(service(
        "shop",
        "db",
        &["10.43.0.10"],
        json!([]),
    )));
    assert_eq!(
        services_of(&idx, &flow),
        [
            "shop/db:pg endpoints",
            "shop/db-headless:pg/15432 endpoints"
        ]
    );
    assert!(services_of(&idx, &tcp("10.42.0.8", "10.43.0.10", 5432)).is_empty());
    assert!(
        services_of(&idx, &with_orig(flow, "192.168.1.10:30432")).len() == 2,
        "inferred"
    );
    idx.endpoint_slice_event(&Event::Delete(slice("shop", "db-v4", "db", &[], json!([]))));
    // The address is also in the headless Service's slice: it stays, alone.
    assert_eq!(
        services_of(&idx, &flow),
        ["shop/db-headless:pg/15432 endpoints"]
    );

    // A slice that loses its Service label or its addresses is dropped.
    idx.apply_endpoint_slice(&slice(
        "shop",
        "db-headless-x1",
        "db-headless",
        &[],
        json!([]),
    ));
    assert!(services_of(&idx, &flow).is_empty());
    assert_eq!(idx.counts().endpoint_addresses, 1, "only db-v6 is left");

    // Relists: what is not listed again is swept, what is listed stays.
    idx.service_event(&Event::Init);
    idx.service_event(&Event::InitApply(service(
        "shop",
        "cache",
        &["10.43.0.20"],
        json!([{"name": "redis", "protocol": "TCP", "port": 6379}]),
    )));
    assert_eq!(idx.counts().services, 2, "answers during the relist");
    idx.service_event(&Event::InitDone);
    assert_eq!(idx.counts().services, 1);
    assert_eq!(
        services_of(&idx, &tcp("10.42.0.8", "10.43.0.20", 6379)),
        ["shop/cache:redis/6379 untranslated"]
    );
    idx.endpoint_slice_event(&Event::Init);
    idx.endpoint_slice_event(&Event::InitApply(slice(
        "shop",
        "cache-1",
        "cache",
        &[("10.42.0.30", true)],
        json!([{"name": "redis", "protocol": "TCP", "port": 6379}]),
    )));
    idx.endpoint_slice_event(&Event::InitDone);
    assert_eq!(idx.counts().endpoint_slices, 1);
    assert!(services_of(&idx, &tcp("fd00:42::8", "fd00:42::7", 15432)).is_empty());
    assert_eq!(
        services_of(&idx, &tcp("10.42.0.8", "10.42.0.30", 6379)),
        ["shop/cache:redis/6379 endpoints"]
    );
    idx.node_event(&Event::Init);
    idx.node_event(&Event::InitDone);
    assert!(idx.node_by_ip("192.168.1.10".parse().unwrap()).is_none());
    idx.apply_node(&node("node-b", &["192.168.1.11"], &[]));
    idx.node_event(&Event::Delete(node("node-b", &[], &[])));
    assert_eq!(idx.counts().nodes, 0);

    // Everything gone: the interned strings go too (node-a's name stays: its pods hold it).
    idx.service_event(&Event::Init);
    idx.service_event(&Event::InitDone);
    idx.endpoint_slice_event(&Event::Init);
    idx.endpoint_slice_event(&Event::InitDone);
    for s in ["db-headless", "cache", "redis", "pg"] {
        assert!(!idx.strings.0.contains(s), "{s} still interned");
    }
}

#[test]
fn slices_sharing_an_address_hand_it_over() {
    let mut idx = Index::new();
    let ports = json!([{"name": "http", "protocol": "TCP", "port": 8080}]);
    for svc in ["a", "b", "c"] {
        idx.apply_endpoint_slice(&slice(
            "web",
            &format!("{svc}-1"),
            svc,
            &[("10.42.0.5", true)],
            ports.clone(),
        ));
    }
    let flow = tcp("10.42.0.8", "10.42.0.5", 8080);
    assert_eq!(
        services_of(&idx, &flow),
        [
            "web/a:http endpoints",
            "web/b:http endpoints",
            "web/c:http endpoints"
        ]
    );
    // Whichever slice held the address first, removing any keeps the others.
    for (gone, left) in [
        ("a", vec!["web/b:http endpoints", "web/c:http endpoints"]),
        ("c", vec!["web/b:http endpoints"]),
        ("b", vec![]),
    ] {
        idx.delete_endpoint_slice(&slice("web", &format!("{gone}-1"), gone, &[], json!([])));
        assert_eq!(services_of(&idx, &flow), left, "after {gone}");
    }
    assert_eq!(idx.counts().endpoint_addresses, 0);
    assert!(idx.peers.more_endpoints_is_empty());
}

/// The JSON the renderer writes for what the index resolved.
fn json_of(ctx: Option<KubeContext>, src: [u8; 4], dst: [u8; 4], dport: u16) -> serde_json::Value {
    use crate::decode::build::{ipv4, tcp as tcp_segment};
    use crate::event::{IfName, Timestamp};
    use crate::source::nflog::{build::Packet, NflogMsg};
    let payload = ipv4(
        6,
        1,
        0x4000,
        0,
        src,
        dst,
        &tcp_segment(40000, dport, 7, 0, 0x02, 64240, 0),
    );
    let mut buf = Vec::new();
    Packet {
        prefix: b"",
        payload: &payload,
        ..Default::default()
    }
    .encode(&mut buf);
    let msg = NflogMsg::parse(&buf[16..]).unwrap();
    let ev = crate::event::Event {
        packet: crate::decode::decode(msg.family, msg.hw_protocol, msg.payload),
        time: Timestamp {
            sec: 1_794_042_303,
            usec: 42,
        },
        indev: IfName::default(),
        outdev: IfName::new(b"lo"),
        attribution: Attribution::from_prefix(msg.prefix),
        msg,
        context: ctx.map(Arc::new),
        count: 1,
    };
    let mut out = Vec::new();
    crate::render::json::render(
        &ev,
        b"h",
        b"node-a",
        &mut crate::render::time::LocalClock::new(),
        &mut out,
    );
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn json_names_nodes_services_and_address_classes() {
    let idx = service_index();
    let resolve = |flow: &Flow| idx.resolve_flow(&prefix(""), flow);

    // A kubelet probe (node → pod) to a Service's endpoint, through the ClusterIP.
    let flow = with_orig(tcp("10.42.0.1", "10.42.0.7", 15432), "10.43.0.10:5432");
    let v = json_of(resolve(&flow), [10, 42, 0, 1], [10, 42, 0, 7], 15432);
    assert_eq!(v["src"], json!({"node": "node-a"}), "{v}");
    assert_eq!(
        v["dest"],
        json!({"pod": "db-0", "namespace": "shop", "workload_kind": "Pod", "workload": "db-0", "node": "node-a",
               "services": [{"namespace": "shop", "name": "db", "port_name": "pg", "port": 5432, "via": "cluster-ip"}]}),
        "{v}"
    );
    assert_eq!(
        (&v["src_class"], &v["dest_class"]),
        (&json!("private"), &json!("private"))
    );

    // From the internet to a NodePort on the node.
    let flow = with_orig(tcp("203.0.113.7", "10.42.0.7", 15432), "192.168.1.10:30432");
    let v = json_of(resolve(&flow), [203, 0, 113, 7], [10, 42, 0, 7], 15432);
    assert!(v.get("src").is_none(), "{v}");
    assert_eq!(v["src_class"], "documentation");
    assert_eq!(
        v["dest"]["services"],
        json!([{"namespace": "shop", "name": "db", "port_name": "pg", "port": 5432, "node_port": 30432, "via": "node-port"}])
    );

    // An untranslated ClusterIP: no pod, the Service alone; a node destination alone.
    let v = json_of(
        resolve(&tcp("8.8.8.8", "10.43.0.10", 5432)),
        [8, 8, 8, 8],
        [10, 43, 0, 10],
        5432,
    );
    assert_eq!(
        v["dest"],
        json!({"services": [{"namespace": "shop", "name": "db", "port_name": "pg", "port": 5432, "via": "untranslated"}]})
    );
    assert_eq!(v["src_class"], "public");
    let v = json_of(
        resolve(&tcp("100.64.0.9", "192.168.1.10", 10250)),
        [100, 64, 0, 9],
        [192, 168, 1, 10],
        10250,
    );
    assert_eq!(v["dest"], json!({"node": "node-a"}));
    assert_eq!(v["src_class"], "cgnat");

    // Without a context (standalone): no src/dest, the classes still.
    let v = json_of(None, [10, 42, 0, 8], [1, 1, 1, 1], 443);
    assert!(v.get("src").is_none() && v.get("dest").is_none(), "{v}");
    assert_eq!(
        (&v["src_class"], &v["dest_class"]),
        (&json!("private"), &json!("public"))
    );
    // The order of the keys: the classes between the pods and `count`.
    let flow = tcp("10.42.0.8", "10.42.0.7", 15432);
    let text = serde_json::to_string(&json_of(
        resolve(&flow),
        [10, 42, 0, 8],
        [10, 42, 0, 7],
        15432,
    ))
    .unwrap();
    assert!(text.contains("\"count\":1"), "{text}");
}
