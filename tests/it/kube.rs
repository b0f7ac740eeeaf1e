//! The Kubernetes watchers against a fake API server (`fake_api`) that speaks the real
//! list/watch protocol: initial list, events, bookmarks, `410 Gone`, cut connections, and an
//! API server that is down when the daemon starts.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netpol_nflog::attribute::kube::{start, KubeHandle};
use netpol_nflog::attribute::{Attribution, Direction, KubeContext};
use netpol_nflog::limit::{Limit, ANNOTATION_BURST, ANNOTATION_LIMIT};
use serde_json::json;

use crate::fake_api::{self, FakeApi, NAMESPACES, PODS, POLICIES};
use crate::support::wait::wait_until_async;

const NODE: &str = "node-a";

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

fn resolve(h: &KubeHandle, prefix: &str, src: &str, dst: &str) -> Option<KubeContext> {
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    let a = Attribution::from_prefix(Some(prefix.as_bytes()));
    h.index.read().unwrap().resolve(&a, ip(src), ip(dst))
}

fn pod_name(h: &KubeHandle, ip: &str) -> Option<String> {
    h.index
        .read()
        .unwrap()
        .pod_by_ip(ip.parse().unwrap())
        .map(|p| p.pod.clone())
}

async fn next_limit(h: &mut KubeHandle) -> (String, Option<Limit>) {
    next_limit_within(h, Duration::from_secs(1)).await
}

async fn next_limit_within(h: &mut KubeHandle, timeout: Duration) -> (String, Option<Limit>) {
    tokio::time::timeout(timeout, h.limit_updates.recv())
        .await
        .expect("a limit update in time")
        .expect("channel open")
}

/// A small cluster: two namespaces, a default-deny and an annotated policy, pods on two nodes.
fn populate(api: &FakeApi) {
    api.apply(NAMESPACES, fake_api::namespace("shop"));
    api.apply(NAMESPACES, fake_api::namespace("kube-system"));
    api.apply(
        POLICIES,
        fake_api::network_policy("shop", "default-deny", json!({}), json!({})),
    );
    api.apply(
        POLICIES,
        fake_api::network_policy(
            "shop",
            "db-from-api",
            json!({"matchLabels": {"app": "db"}}),
            json!({ANNOTATION_LIMIT: "5/second", ANNOTATION_BURST: "20"}),
        ),
    );
    api.apply(
        PODS,
        fake_api::pod(
            "shop",
            "db-7c9d8b6f4d-x2x9z",
            "db",
            NODE,
            &["10.42.0.7", "fd00:42::7"],
        ),
    );
    api.apply(
        PODS,
        fake_api::pod("shop", "web-7c9d8b6f4d-k8p2q", "web", NODE, &["10.42.0.8"]),
    );
    api.apply(
        PODS,
        fake_api::pod(
            "shop",
            "api-7c9d8b6f4d-remote",
            "api",
            "node-b",
            &["10.42.1.9"],
        ),
    );
    api.apply(
        PODS,
        fake_api::host_network_pod("kube-system", "svclb-traefik-abcde", NODE, "192.168.1.10"),
    );
}

/// A pod added and deleted while the watch runs.
fn cache_pod() -> serde_json::Value {
    fake_api::pod(
        "shop",
        "cache-7c9d8b6f4d-q1",
        "cache",
        NODE,
        &["10.42.0.20"],
    )
}

async fn synced_handle(api: &FakeApi) -> KubeHandle {
    let h = start(client(&api.url()), Some(NODE.into()), false).await;
    let state = h.state.clone();
    wait_until_async("initial sync", Duration::from_secs(5), || state.synced()).await;
    h
}

#[tokio::test]
async fn initial_list_populates_the_index() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut h = synced_handle(&api).await;

    assert_eq!(
        (
            h.state.policies.objects(),
            h.state.pods.objects(),
            h.state.namespaces.objects()
        ),
        (2, 2, 2)
    );
    assert!(h.state.pods.connected() && h.state.pods.last_error().is_none());
    // Only this node's pods were asked for, and the hostNetwork pod is not indexed by IP.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("spec.nodeName=node-a")),
        "{:?}",
        api.requests()
    );
    assert_eq!(pod_name(&h, "10.42.1.9"), None);
    assert_eq!(pod_name(&h, "192.168.1.10"), None);
    assert_eq!(
        pod_name(&h, "fd00:42::7").as_deref(),
        Some("db-7c9d8b6f4d-x2x9z")
    );

    let ctx = resolve(
        &h,
        "DROP by policy shop/db-from-api",
        "10.42.0.8",
        "10.42.0.7",
    )
    .unwrap();
    assert!(ctx.resolved);
    assert_eq!(ctx.direction, Some(Direction::Ingress));
    let dest = ctx.dest.unwrap();
    assert_eq!(
        (dest.workload_kind.as_deref(), dest.workload.as_deref()),
        (Some("Deployment"), Some("db"))
    );
    let ctx = resolve(&h, "", "10.42.0.8", "10.42.0.7").unwrap();
    assert_eq!(ctx.policies.len(), 2, "db is selected by both policies");

    let want = Limit {
        count: 5,
        per: Duration::from_secs(1),
        burst: 20,
    };
    assert_eq!(
        next_limit(&mut h).await,
        ("shop/db-from-api".into(), Some(want))
    );
    h.stop();
}

#[tokio::test]
async fn events_update_the_index_and_limits() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut h = synced_handle(&api).await;
    next_limit(&mut h).await;

    api.bookmark(PODS);
    api.bookmark(POLICIES);
    api.apply(PODS, cache_pod());
    wait_until_async("ADDED pod", Duration::from_secs(2), || {
        pod_name(&h, "10.42.0.20").is_some()
    })
    .await;

    // An annotation change reaches the limiter within a second.
    let np = |limit: &str| {
        fake_api::network_policy(
            "shop",
            "db-from-api",
            json!({"matchLabels": {"app": "db"}}),
            json!({ANNOTATION_LIMIT: limit}),
        )
    };
    api.apply(POLICIES, np("100/minute"));
    let want = Limit {
        count: 100,
        per: Duration::from_secs(60),
        burst: 10,
    };
    assert_eq!(
        next_limit(&mut h).await,
        ("shop/db-from-api".into(), Some(want))
    );

    // An invalid one falls back to kube-router's defaults and is listed.
    api.apply(POLICIES, np("100/min"));
    assert_eq!(
        next_limit(&mut h).await,
        ("shop/db-from-api".into(), Some(Limit::DEFAULT))
    );
    let invalid = h.index.read().unwrap().invalid_annotations();
    assert_eq!((invalid.len(), invalid[0].value.as_str()), (1, "100/min"));

    api.delete(POLICIES, np("100/min"));
    assert_eq!(next_limit(&mut h).await, ("shop/db-from-api".into(), None));
    api.delete(PODS, cache_pod());
    wait_until_async("DELETED pod", Duration::from_secs(2), || {
        pod_name(&h, "10.42.0.20").is_none()
    })
    .await;
    assert_eq!(h.state.policies.objects(), 1);
    assert_eq!(h.state.pods.restarts(), 0, "bookmarks are not errors");
    h.stop();
}

#[tokio::test]
async fn gone_410_relists_and_picks_up_missed_changes() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut h = synced_handle(&api).await;
    next_limit(&mut h).await;

    // Changes the watch never reports, then 410: only a relist can see them.
    api.delete_silently(
        POLICIES,
        fake_api::network_policy(
            "shop",
            "db-from-api",
            json!({"matchLabels": {"app": "db"}}),
            json!({}),
        ),
    );
    api.apply_silently(
        POLICIES,
        fake_api::network_policy(
            "shop",
            "allow-web",
            json!({"matchLabels": {"app": "web"}}),
            json!({}),
        ),
    );
    api.apply_silently(
        PODS,
        fake_api::pod("shop", "late-7c9d8b6f4d-z", "late", NODE, &["10.42.0.30"]),
    );
    api.gone(POLICIES);
    api.gone(PODS);

    // The watcher relists after its backoff (0.8 s, jittered).
    let update = next_limit_within(&mut h, Duration::from_secs(5)).await;
    assert_eq!(
        update,
        ("shop/db-from-api".into(), None),
        "the deleted policy's limit is withdrawn"
    );
    wait_until_async("pod relist", Duration::from_secs(5), || {
        pod_name(&h, "10.42.0.30").is_some()
    })
    .await;
    let ctx = resolve(&h, "DROP by policy shop/allow-web", "", "10.42.0.8").unwrap();
    assert!(ctx.resolved);
    assert!(
        !resolve(&h, "DROP by policy shop/db-from-api", "", "")
            .unwrap()
            .resolved
    );
    assert!(h.state.policies.relists() >= 1 && h.state.pods.relists() >= 1);
    assert!(
        h.state
            .policies
            .last_error()
            .unwrap_or_default()
            .contains("410")
            || h.state.policies.restarts() >= 1
    );
    assert!(h.state.synced());
    h.stop();
}

#[tokio::test]
async fn a_cut_connection_reconnects() {
    let api = FakeApi::start().await;
    populate(&api);
    let h = synced_handle(&api).await;
    let lists_before = api
        .requests()
        .iter()
        .filter(|r| !r.contains("watch"))
        .count();

    api.cut_watches();
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.apply(
        PODS,
        fake_api::pod(
            "shop",
            "after-cut-7c9d8b6f4d-a",
            "after",
            NODE,
            &["10.42.0.40"],
        ),
    );
    // A cut watch is an error for the watcher: it retries after the backoff (0.8 s, jittered).
    wait_until_async("event after reconnect", Duration::from_secs(5), || {
        pod_name(&h, "10.42.0.40").is_some()
    })
    .await;
    // It resumed from its resourceVersion rather than relisting.
    let lists_after = api
        .requests()
        .iter()
        .filter(|r| !r.contains("watch"))
        .count();
    assert_eq!(lists_before, lists_after, "{:?}", api.requests());
    h.stop();
}

#[tokio::test]
async fn server_down_at_start_then_up() {
    // Reserve a port, then free it: nothing listens there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let h = start(
        client(&format!("http://127.0.0.1:{port}")),
        Some(NODE.into()),
        false,
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "start() must not wait for the API"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.state.synced());
    assert!(h.state.policies.restarts() >= 1);
    assert!(!h.state.policies.connected());
    assert!(h.state.policies.last_error().is_some());
    assert!(resolve(&h, "", "10.42.0.8", "10.42.0.7").is_none());

    let api = FakeApi::start_on(port).await;
    populate(&api);
    let state = h.state.clone();
    wait_until_async("sync once the API is up", Duration::from_secs(10), || {
        state.synced()
    })
    .await;
    assert_eq!(
        pod_name(&h, "10.42.0.7").as_deref(),
        Some("db-7c9d8b6f4d-x2x9z")
    );
    assert!(h.state.policies.connected());
    h.stop();
}

#[tokio::test]
async fn watch_all_pods_sees_other_nodes() {
    let api = FakeApi::start().await;
    populate(&api);
    let h = start(client(&api.url()), Some(NODE.into()), true).await;
    let state = h.state.clone();
    wait_until_async("initial sync", Duration::from_secs(5), || state.synced()).await;
    assert_eq!(
        pod_name(&h, "10.42.1.9").as_deref(),
        Some("api-7c9d8b6f4d-remote")
    );
    assert!(!api.requests().iter().any(|r| r.contains("nodeName")));
    h.stop();
}
