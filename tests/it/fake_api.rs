//! A fake Kubernetes API server for the watcher tests: plain HTTP/1.1 on 127.0.0.1, speaking
//! the list/watch protocol of the real one for NetworkPolicies, Pods, Namespaces, Services,
//! EndpointSlices and Nodes.
//!
//! `GET <collection>` answers a `…List` with `metadata.resourceVersion`; with `watch=true` it
//! streams (chunked) `{"type": …, "object": …}` lines for every change after the requested
//! `resourceVersion`, then waits for more. Tests change objects with or without events, send
//! bookmarks, inject `ERROR 410 Gone`, and cut connections. `fieldSelector=spec.nodeName=…` is
//! honoured for pods. Every response but a watch closes its connection, so no keep-alive logic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";
pub const PODS: &str = "/api/v1/pods";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const SERVICES: &str = "/api/v1/services";
pub const ENDPOINT_SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const NODES: &str = "/api/v1/nodes";

struct Collection {
    kind: &'static str,
    api_version: &'static str,
    objects: BTreeMap<String, Value>,
    /// `(resourceVersion, type, object)` of every change, in order.
    events: Vec<(u64, &'static str, Value)>,
    /// Send `ERROR 410` to the current (or next) watch.
    gone: bool,
}

#[derive(Default)]
struct State {
    rv: u64,
    collections: BTreeMap<&'static str, Collection>,
    /// Bumped to cut every open watch.
    cut: u64,
    requests: Vec<String>,
}

/// The fake API server; stops when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        Self::start_on(0).await
    }

    /// Listens on a given port (0: any), e.g. one a client was already pointed at.
    pub async fn start_on(port: u16) -> FakeApi {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut st = State {
            rv: 1000,
            ..State::default()
        };
        for (path, kind, api_version) in [
            (POLICIES, "NetworkPolicy", "networking.k8s.io/v1"),
            (PODS, "Pod", "v1"),
            (NAMESPACES, "Namespace", "v1"),
            (SERVICES, "Service", "v1"),
            (ENDPOINT_SLICES, "EndpointSlice", "discovery.k8s.io/v1"),
            (NODES, "Node", "v1"),
        ] {
            st.collections.insert(
                path,
                Collection {
                    kind,
                    api_version,
                    objects: BTreeMap::new(),
                    events: Vec::new(),
                    gone: false,
                },
            );
        }
        let state = Arc::new(Mutex::new(st));
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        FakeApi { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces an object, with an `ADDED`/`MODIFIED` event.
    pub fn apply(&self, path: &'static str, obj: Value) {
        self.change(path, obj, true, false);
    }

    /// Adds or replaces an object without telling open watches (as if the event was missed).
    pub fn apply_silently(&self, path: &'static str, obj: Value) {
        self.change(path, obj, false, false);
    }

    pub fn delete(&self, path: &'static str, obj: Value) {
        self.change(path, obj, true, true);
    }

    pub fn delete_silently(&self, path: &'static str, obj: Value) {
        self.change(path, obj, false, true);
    }

    fn change(&self, path: &'static str, mut obj: Value, event: bool, delete: bool) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let c = st.collections.get_mut(path).unwrap();
        obj["kind"] = json!(c.kind);
        obj["apiVersion"] = json!(c.api_version);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&obj);
        let kind = if delete {
            c.objects.remove(&key);
            "DELETED"
        } else if c.objects.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if event {
            c.events.push((rv, kind, obj));
        }
    }

    /// A `BOOKMARK` on every watch of the collection.
    pub fn bookmark(&self, path: &'static str) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let c = st.collections.get_mut(path).unwrap();
        let obj = json!({"kind": c.kind, "apiVersion": c.api_version, "metadata": {"resourceVersion": rv.to_string()}});
        c.events.push((rv, "BOOKMARK", obj));
    }

    /// `ERROR` with Status 410 Gone on the collection's watch: the client must relist.
    pub fn gone(&self, path: &'static str) {
        self.state
            .lock()
            .unwrap()
            .collections
            .get_mut(path)
            .unwrap()
            .gone = true;
    }

    /// Cuts every open watch connection (no clean end of stream).
    pub fn cut_watches(&self) {
        self.state.lock().unwrap().cut += 1;
    }

    /// The request targets received so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(serve(sock, state.clone()));
    }
}

struct Request {
    path: String,
    query: BTreeMap<String, String>,
}

async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head.lines().next()?.split(' ').nth(1)?.to_string();
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    Some(Request {
        path: path.to_string(),
        query,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{}?{:?}", req.path, req.query));
    let known = state
        .lock()
        .unwrap()
        .collections
        .contains_key(req.path.as_str());
    if !known {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}).to_string();
        let _ = respond(&mut sock, "404 Not Found", &body).await;
        return;
    }
    if req.query.get("watch").map(String::as_str) == Some("true") {
        watch(sock, state, req).await;
    } else {
        let body = list(&state, &req);
        let _ = respond(&mut sock, "200 OK", &body).await;
    }
}

async fn respond(sock: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

fn selected(req: &Request, obj: &Value) -> bool {
    match req
        .query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
    {
        Some(node) => obj["spec"]["nodeName"].as_str() == Some(node),
        None => true,
    }
}

fn list(state: &Mutex<State>, req: &Request) -> String {
    let st = state.lock().unwrap();
    let c = &st.collections[req.path.as_str()];
    let items: Vec<Value> = c
        .objects
        .values()
        .filter(|o| selected(req, o))
        .cloned()
        .collect();
    json!({
        "kind": format!("{}List", c.kind),
        "apiVersion": c.api_version,
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    })
    .to_string()
}

/// Streams the events after the requested version, polling for new ones until cut or 410.
async fn watch(mut sock: TcpStream, state: Arc<Mutex<State>>, req: Request) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut sent: u64 = req
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cut_at_start = state.lock().unwrap().cut;
    loop {
        let (lines, gone, cut) = {
            let mut st = state.lock().unwrap();
            let cut = st.cut != cut_at_start;
            let c = st.collections.get_mut(req.path.as_str()).unwrap();
            let lines: Vec<String> = c
                .events
                .iter()
                .filter(|(rv, _, o)| *rv > sent && selected(&req, o))
                .map(|(_, t, o)| json!({"type": t, "object": o}).to_string())
                .collect();
            sent = c.events.last().map_or(sent, |(rv, _, _)| (*rv).max(sent));
            (lines, std::mem::take(&mut c.gone), cut)
        };
        if cut {
            // Abrupt: no terminating chunk, the client sees a broken body.
            return;
        }
        for line in lines {
            if write_chunk(&mut sock, &line).await.is_err() {
                return;
            }
        }
        if gone {
            let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {sent} ({})", sent + 1), "reason": "Expired", "code": 410}});
            let _ = write_chunk(&mut sock, &status.to_string()).await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write_chunk(sock: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let data = format!("{line}\n");
    sock.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    sock.flush().await
}

// ---- Objects shaped like a K3s cluster's --------------------------------------------------------

/// A uid that is stable for a name, formatted like the API server's.
pub fn uid(seed: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

fn managed_fields(manager: &str) -> Value {
    json!([{"manager": manager, "operation": "Update", "apiVersion": "v1", "time": "2025-06-02T09:14:03Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {}}}])
}

/// A NetworkPolicy as `kubectl get -o json` shows it (policyTypes filled in by the API server).
pub fn network_policy(ns: &str, name: &str, selector: Value, annotations: Value) -> Value {
    let mut ann = json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"networking.k8s.io/v1\",\"kind\":\"NetworkPolicy\"}\n"});
    if let (Some(a), Some(extra)) = (ann.as_object_mut(), annotations.as_object()) {
        a.extend(extra.clone());
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid(&format!("np/{ns}/{name}")),
            "resourceVersion": "1", "generation": 1, "creationTimestamp": "2025-06-02T09:14:03Z",
            "annotations": ann, "managedFields": managed_fields("kubectl-client-side-apply"),
        },
        "spec": {
            "podSelector": selector,
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"protocol": "TCP", "port": 5432}]}],
            "policyTypes": ["Ingress"],
        }
    })
}

/// A Deployment's pod on a node: ReplicaSet owner, pod-template-hash label, dual-stack IPs.
pub fn pod(ns: &str, name: &str, app: &str, node: &str, ips: &[&str]) -> Value {
    let hash = "7c9d8b6f4d";
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid(&format!("pod/{ns}/{name}")), "resourceVersion": "1",
            "generateName": format!("{app}-{hash}-"), "creationTimestamp": "2025-06-02T09:14:03Z",
            "labels": {"app": app, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                                 "uid": uid(&format!("rs/{ns}/{app}")), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": managed_fields("k3s"),
        },
        "spec": {
            "nodeName": node, "hostNetwork": false, "serviceAccountName": "default", "restartPolicy": "Always",
            "containers": [{"name": app, "image": "docker.io/library/nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
        },
        "status": {
            "phase": "Running", "hostIP": "192.168.1.10", "hostIPs": [{"ip": "192.168.1.10"}],
            "podIP": ips.first(), "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "qosClass": "BestEffort", "startTime": "2025-06-02T09:14:05Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-06-02T09:14:09Z"}],
        }
    })
}

/// A hostNetwork DaemonSet pod: its IP is the node's.
pub fn host_network_pod(ns: &str, name: &str, node: &str, node_ip: &str) -> Value {
    let mut p = pod(ns, name, "svclb", node, &[node_ip]);
    p["spec"]["hostNetwork"] = json!(true);
    p["metadata"]["ownerReferences"][0]["kind"] = json!("DaemonSet");
    p["metadata"]["ownerReferences"][0]["name"] = json!("svclb-traefik");
    p
}

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name, "uid": uid(&format!("ns/{name}")), "resourceVersion": "1",
            "creationTimestamp": "2025-06-02T09:10:00Z",
            "labels": {"kubernetes.io/metadata.name": name},
            "managedFields": managed_fields("kubectl-create"),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

/// A ClusterIP Service as the API server shows it: `ports` as `(name, port, targetPort,
/// nodePort)`, TCP; a nodePort makes it of type NodePort.
pub fn service(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, u16, u16, Option<u16>)],
) -> Value {
    let node_port = ports.iter().any(|p| p.3.is_some());
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid(&format!("svc/{ns}/{name}")), "resourceVersion": "1",
            "creationTimestamp": "2025-06-02T09:14:03Z", "labels": {"app": name},
            "managedFields": managed_fields("kubectl-client-side-apply"),
        },
        "spec": {
            "type": if node_port { "NodePort" } else { "ClusterIP" },
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "ipFamilies": [if cluster_ip.contains(':') { "IPv6" } else { "IPv4" }], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster", "sessionAffinity": "None", "selector": {"app": name},
            "ports": ports.iter().map(|(n, port, target, np)| {
                let mut p = json!({"name": n, "protocol": "TCP", "port": port, "targetPort": target});
                if let Some(np) = np {
                    p["nodePort"] = json!(np);
                }
                p
            }).collect::<Vec<_>>(),
        },
        "status": {"loadBalancer": {}}
    })
}

/// An EndpointSlice of a Service, as the EndpointSlice controller writes it: `endpoints` as
/// `(address, pod name, ready)`, `ports` as `(name, port)`, TCP.
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, &str, bool)],
    ports: &[(&str, u16)],
) -> Value {
    let v6 = endpoints.first().is_some_and(|e| e.0.contains(':'));
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid(&format!("eps/{ns}/{name}")), "resourceVersion": "1",
            "generateName": format!("{service}-"), "creationTimestamp": "2025-06-02T09:14:03Z",
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": uid(&format!("svc/{ns}/{service}")),
                                 "controller": true, "blockOwnerDeletion": true}],
            "managedFields": managed_fields("k3s"),
        },
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints.iter().map(|(addr, pod, ready)| json!({
            "addresses": [addr],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "nodeName": "node-a",
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": uid(&format!("pod/{ns}/{pod}"))},
        })).collect::<Vec<_>>(),
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "protocol": "TCP", "port": p})).collect::<Vec<_>>(),
    })
}

/// A K3s node: InternalIP, Hostname, a pod CIDR, and the bulky status a real one carries.
pub fn node(name: &str, internal_ip: &str, pod_cidr: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name, "uid": uid(&format!("node/{name}")), "resourceVersion": "1",
            "creationTimestamp": "2025-06-02T09:00:00Z",
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": "true"},
            "annotations": {"flannel.alpha.coreos.com/public-ip": internal_ip, "k3s.io/internal-ip": internal_ip},
            "managedFields": managed_fields("k3s"),
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": format!("k3s://{name}")},
        "status": {
            "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2025-06-02T09:14:03Z"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": [{"names": ["docker.io/rancher/mirrored-pause:3.6"], "sizeBytes": 301463}],
            "nodeInfo": {"kubeletVersion": "v1.33.1+k3s1", "containerRuntimeVersion": "containerd://2.0.5-k3s1",
                         "architecture": "amd64", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-37-amd64", "kubeProxyVersion": "v1.33.1+k3s1", "machineID": "x", "systemUUID": "x", "bootID": "x"},
        }
    })
}
