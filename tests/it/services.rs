//! Services, EndpointSlices and Nodes through the real kube-rs watchers against the fake API
//! server (`fake_api`): what it serves shows up in resolution (the Service a client aimed at,
//! the node behind an address), and what it deletes, with an event or through a relist, goes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netpol_nflog::attribute::kube::{start, KubeHandle};
use netpol_nflog::attribute::{Attribution, Flow, KubeContext, ServiceVia};

use crate::fake_api::{self, FakeApi, ENDPOINT_SLICES, NAMESPACES, NODES, PODS, SERVICES};

const NODE: &str = "node-a";
const DB: &str = "10.42.0.7";
const WEB: &str = "10.42.0.8";
const DB_CLUSTER_IP: &str = "10.43.0.10";
const NODE_IP: &str = "192.168.1.10";

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let (start, timeout) = (Instant::now(), Duration::from_secs(5));
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP packet `src → dst:port`, and where conntrack says the client sent it.
fn flow(src: &str, dst: &str, port: u16, orig: Option<&str>) -> Flow {
    Flow {
        src: Some(ip(src)),
        dst: Some(ip(dst)),
        protocol: Some(6),
        dst_port: Some(port),
        orig_dst: orig.map(|o| o.parse().unwrap()),
    }
}

/// What the pod chain's message (empty prefix) of that packet resolves to.
fn resolve(h: &KubeHandle, f: &Flow) -> Option<KubeContext> {
    h.index
        .read()
        .unwrap()
        .resolve_flow(&Attribution::from_prefix(Some(b"")), f)
}

/// The Services named for a packet, as `ns/name:port_name/port via`.
fn services(h: &KubeHandle, f: &Flow) -> Vec<String> {
    resolve(h, f)
        .map(|c| c.dest_services)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            format!(
                "{}/{}:{}/{} {}",
                s.namespace,
                s.name,
                s.port_name.as_deref().unwrap_or("-"),
                s.port.map_or("-".into(), |p| p.to_string()),
                s.via.as_str()
            )
        })
        .collect()
}

fn node_of(h: &KubeHandle, addr: &str) -> Option<String> {
    h.index
        .read()
        .unwrap()
        .node_by_ip(ip(addr))
        .map(|n| n.to_string())
}

/// db (a Deployment pod behind Service shop/db: pg 5432 → 15432, NodePort 30432), web, node-a.
fn populate(api: &FakeApi) {
    api.apply(NAMESPACES, fake_api::namespace("shop"));
    api.apply(
        PODS,
        fake_api::pod("shop", "db-7c9d8b6f4d-x2x9z", "db", NODE, &[DB]),
    );
    api.apply(
        PODS,
        fake_api::pod("shop", "web-7c9d8b6f4d-k8p2q", "web", NODE, &[WEB]),
    );
    api.apply(
        SERVICES,
        fake_api::service(
            "shop",
            "db",
            DB_CLUSTER_IP,
            &[("pg", 5432, 15432, Some(30432))],
        ),
    );
    api.apply(
        ENDPOINT_SLICES,
        fake_api::endpoint_slice(
            "shop",
            "db-h5x2k",
            "db",
            &[(DB, "db-7c9d8b6f4d-x2x9z", true)],
            &[("pg", 15432)],
        ),
    );
    api.apply(NODES, fake_api::node(NODE, NODE_IP, "10.42.0.0/24"));
}

async fn synced_handle(api: &FakeApi) -> KubeHandle {
    let h = start(client(&api.url()), Some(NODE.into()), false).await;
    let state = h.state.clone();
    wait_for("initial sync", || state.synced()).await;
    h
}

#[tokio::test]
async fn served_objects_name_services_and_nodes() {
    let api = FakeApi::start().await;
    populate(&api);
    let h = synced_handle(&api).await;

    let objects = |name: &str| {
        h.state
            .resources()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.objects())
    };
    assert_eq!(
        (
            objects("services"),
            objects("endpointslices"),
            objects("nodes")
        ),
        (Some(1), Some(1), Some(1))
    );
    let requests = api.requests();
    for path in [SERVICES, ENDPOINT_SLICES, NODES] {
        assert!(
            requests.iter().any(|r| r.starts_with(path)),
            "{path} listed: {requests:?}"
        );
    }

    // Through the ClusterIP (conntrack's original destination): exactly that Service.
    let via_cluster_ip = flow(WEB, DB, 15432, Some("10.43.0.10:5432"));
    let ctx = resolve(&h, &via_cluster_ip).expect("a context");
    assert_eq!(
        ctx.dest.as_deref().map(|p| p.pod.as_str()),
        Some("db-7c9d8b6f4d-x2x9z")
    );
    assert_eq!(ctx.dest_services.len(), 1);
    assert_eq!(ctx.dest_services[0].via, ServiceVia::ClusterIp);
    assert_eq!(
        services(&h, &via_cluster_ip),
        ["shop/db:pg/5432 cluster-ip"]
    );
    // Through the NodePort; by the endpoints when conntrack said nothing; untranslated.
    assert_eq!(
        services(&h, &flow(WEB, DB, 15432, Some("192.168.1.10:30432"))),
        ["shop/db:pg/5432 node-port"]
    );
    assert_eq!(
        services(&h, &flow(WEB, DB, 15432, None)),
        ["shop/db:pg/5432 endpoints"]
    );
    assert_eq!(
        services(&h, &flow(WEB, DB_CLUSTER_IP, 5432, None)),
        ["shop/db:pg/5432 untranslated"]
    );
    // The node by its InternalIP and by its bridge address on the pod network (kubelet probes).
    assert_eq!(node_of(&h, NODE_IP).as_deref(), Some(NODE));
    let probe = resolve(&h, &flow("10.42.0.1", DB, 15432, None)).expect("a context");
    assert_eq!(probe.src_node.as_deref(), Some(NODE));
    assert!(probe.src.is_none());
    h.stop();
}

#[tokio::test]
async fn events_add_and_delete_services_slices_and_nodes() {
    let api = FakeApi::start().await;
    populate(&api);
    let h = synced_handle(&api).await;

    // Added after the initial list: a second Service on the same pod, and a second node.
    api.apply(
        SERVICES,
        fake_api::service("shop", "db-ro", "10.43.0.11", &[("pg", 5433, 15432, None)]),
    );
    api.apply(
        ENDPOINT_SLICES,
        fake_api::endpoint_slice(
            "shop",
            "db-ro-9f3kd",
            "db-ro",
            &[(DB, "db-7c9d8b6f4d-x2x9z", false)],
            &[("pg", 15432)],
        ),
    );
    api.apply(
        NODES,
        fake_api::node("node-b", "192.168.1.11", "10.42.1.0/24"),
    );
    let direct = flow(WEB, DB, 15432, None);
    wait_for("the second Service", || services(&h, &direct).len() == 2).await;
    assert_eq!(
        services(&h, &direct),
        ["shop/db:pg/5432 endpoints", "shop/db-ro:pg/5433 endpoints"]
    );
    wait_for("node-b", || node_of(&h, "10.42.1.1").is_some()).await;

    // Deleted: each goes with its event.
    api.delete(
        ENDPOINT_SLICES,
        fake_api::endpoint_slice("shop", "db-h5x2k", "db", &[], &[]),
    );
    wait_for("db's slice deleted", || services(&h, &direct).len() == 1).await;
    assert_eq!(services(&h, &direct), ["shop/db-ro:pg/5433 endpoints"]);
    api.delete(
        SERVICES,
        fake_api::service("shop", "db", DB_CLUSTER_IP, &[]),
    );
    let untranslated = flow(WEB, DB_CLUSTER_IP, 5432, None);
    wait_for("db deleted", || services(&h, &untranslated).is_empty()).await;
    // Without the Service, conntrack's ClusterIP means nothing; the endpoints are the guess.
    assert_eq!(
        services(&h, &flow(WEB, DB, 15432, Some("10.43.0.10:5432"))),
        ["shop/db-ro:pg/5433 endpoints"]
    );
    api.delete(
        NODES,
        fake_api::node("node-b", "192.168.1.11", "10.42.1.0/24"),
    );
    wait_for("node-b deleted", || node_of(&h, "192.168.1.11").is_none()).await;
    assert_eq!(node_of(&h, NODE_IP).as_deref(), Some(NODE));

    // Missed deletes are swept by the relist after 410 Gone.
    api.delete_silently(
        ENDPOINT_SLICES,
        fake_api::endpoint_slice("shop", "db-ro-9f3kd", "db-ro", &[], &[]),
    );
    api.delete_silently(NODES, fake_api::node(NODE, NODE_IP, "10.42.0.0/24"));
    api.delete_silently(
        SERVICES,
        fake_api::service("shop", "db-ro", "10.43.0.11", &[]),
    );
    for path in [ENDPOINT_SLICES, NODES, SERVICES] {
        api.gone(path);
    }
    wait_for("the relists", || {
        services(&h, &direct).is_empty()
            && node_of(&h, NODE_IP).is_none()
            && services(&h, &flow(WEB, "10.43.0.11", 5433, None)).is_empty()
    })
    .await;
    assert!(h.state.endpoint_slices.relists() >= 1 && h.state.nodes.relists() >= 1);
    assert_eq!(h.state.services.objects(), 0);
    assert!(h.state.synced());
    // The pods are untouched: the probe from the old bridge address is now unknown.
    let ctx = resolve(&h, &flow("10.42.0.1", DB, 15432, None)).expect("db is known");
    assert!(ctx.src_node.is_none() && ctx.dest.is_some());
    h.stop();
}
