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
    idx.apply_pod(&pod(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"app": "web"}),
        None,
    ));

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
    idx.apply_pod(&pod(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"app": "web"}),
        None,
    ));
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
    idx.apply_pod(&pod(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        None,
    ));

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
    idx.apply_pod(&pod(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        None,
    ));
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
    // Four strings: two keys, two values.
    assert_eq!(c.interned_strings, 4);
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
    idx.apply_pod(&pod_on(
        "shop",
        "postgres-0",
        &["10.42.0.7"],
        json!({"app": "postgres"}),
        "node-a",
        &[],
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"app": "web"}),
        "node-a",
        &[],
    ));
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
    idx.apply_pod(&pod_on(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        "node-a",
        &[],
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"app": "web"}),
        "node-a",
        &[],
    ));
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
    idx.apply_pod(&pod_on(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        "node-a",
        &[],
    ));
    idx.apply_pod(&pod_on(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"app": "web"}),
        "node-a",
        &[],
    ));
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
    idx.apply_pod(&pod_on(
        "shop",
        "web-1",
        &["10.42.0.8"],
        json!({"app": "web"}),
        "node-a",
        &[],
    ));
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
    idx.apply_pod(&pod_on(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        "node-a",
        &[],
    ));
    idx.apply_pod(&pod_on(
        "front",
        "ui-1",
        &["10.42.0.9"],
        json!({"app": "ui"}),
        "node-a",
        &[],
    ));
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
    idx.apply_pod(&pod_on(
        "shop",
        "db-0",
        &["10.42.0.7"],
        json!({"app": "db"}),
        "node-a",
        &[],
    ));
    // web runs on another node: its egress chain is there, not here.
    idx.apply_pod(&pod_on(
        "shop",
        "web-1",
        &["10.42.1.8"],
        json!({"app": "web"}),
        "node-b",
        &[],
    ));
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
