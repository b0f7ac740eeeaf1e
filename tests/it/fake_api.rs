//! A fake Kubernetes API server for the watcher tests: plain HTTP/1.1 on 127.0.0.1, speaking
//! the list/watch protocol of the real one for NetworkPolicies, Pods, Namespaces, Services,
//! EndpointSlices and Nodes.
//!
//! `GET <collection>` answers a `…List` with `metadata.resourceVersion`; with `watch=true` it
//! streams (chunked) `{"type": …, "object": …}` lines for every change after the requested
//! `resourceVersion`, then waits for more. Tests change objects with or without events, send
//! bookmarks, inject `ERROR 410 Gone`, and cut connections. `fieldSelector=spec.nodeName=…` is
//! honoured for pods. Every response but a watch closes its connection, so no keep-alive logic.
//!
//! `events.k8s.io/v1` Events are written as kube-rs's event recorder writes them: `POST
//! …/namespaces/NS/events` creates one (201 with the stored object: uid, resourceVersion,
//! creationTimestamp), `PATCH …/namespaces/NS/events/NAME` with a JSON merge patch updates it
//! (200). Both are validated like the API server does what a recorder sends (the required
//! fields, `type`, `series.count` of at least 2, and on update the fields that cannot change,
//! `note` among them: 422 Invalid), and recorded ([`FakeApi::writes`]).

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
/// Where Events are written: `EVENTS_IN{namespace}/events[/{name}]`.
pub const EVENTS_IN: &str = "/apis/events.k8s.io/v1/namespaces/";

/// A write request the server received (an Event created or patched), and its answer.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: String,
    pub path: String,
    pub content_type: String,
    /// The request body (JSON; `Null` if it was not).
    pub body: Value,
    pub status: u16,
}

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
    /// Events by `namespace/name`.
    events: BTreeMap<String, Value>,
    writes: Vec<Write>,
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

    /// The writes (Events created and patched) received so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The Events as stored now, by `namespace/name`.
    pub fn stored_events(&self) -> BTreeMap<String, Value> {
        self.state.lock().unwrap().events.clone()
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
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Vec<u8>,
}

async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < end + length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        content_type: header("content-type").unwrap_or_default(),
        body: buf[end..end + length].to_vec(),
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

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (code, body)
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
    if let Some(rest) = req.path.strip_prefix(EVENTS_IN) {
        let (code, body) = write_event(&state, &req, rest);
        state.lock().unwrap().writes.push(Write {
            method: req.method.clone(),
            path: req.path.clone(),
            content_type: req.content_type.clone(),
            body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
            status: code,
        });
        let line = match code {
            200 => "200 OK",
            201 => "201 Created",
            404 => "404 Not Found",
            405 => "405 Method Not Allowed",
            409 => "409 Conflict",
            415 => "415 Unsupported Media Type",
            _ => "422 Unprocessable Entity",
        };
        let _ = respond(&mut sock, line, &body.to_string()).await;
        return;
    }
    let known = state
        .lock()
        .unwrap()
        .collections
        .contains_key(req.path.as_str());
    if !known {
        let body = status(404, "NotFound", "not served here").1.to_string();
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

/// `POST NS/events` or `PATCH NS/events/NAME` (`rest`, after [`EVENTS_IN`]): the status code and
/// the body to answer.
fn write_event(state: &Mutex<State>, req: &Request, rest: &str) -> (u16, Value) {
    let parts: Vec<&str> = rest.split('/').collect();
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return status(422, "Invalid", "the body is not JSON");
    };
    let mut st = state.lock().unwrap();
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", [ns, "events"]) => {
            let mut ev = body;
            let name = ev["metadata"]["name"].as_str().unwrap_or("").to_string();
            if ev["metadata"]["namespace"]
                .as_str()
                .is_some_and(|n| n != *ns)
            {
                return status(
                    422,
                    "BadRequest",
                    "the namespace of the body does not match",
                );
            }
            if let Err(e) = validate_event(&ev, None) {
                return status(422, "Invalid", &e);
            }
            let key = format!("{ns}/{name}");
            if name.is_empty() || st.events.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("events {name:?} already exists"),
                );
            }
            st.rv += 1;
            ev["kind"] = json!("Event");
            ev["apiVersion"] = json!("events.k8s.io/v1");
            let meta = &mut ev["metadata"];
            meta["namespace"] = json!(ns);
            meta["uid"] = json!(uid(&format!("event/{key}")));
            meta["resourceVersion"] = json!(st.rv.to_string());
            meta["creationTimestamp"] = json!("2025-06-02T09:20:00Z");
            st.events.insert(key, ev.clone());
            (201, ev)
        }
        ("PATCH", [ns, "events", name]) => {
            if req.content_type != "application/merge-patch+json" {
                return status(415, "UnsupportedMediaType", "only merge patches here");
            }
            let key = format!("{ns}/{name}");
            let Some(old) = st.events.get(&key).cloned() else {
                return status(404, "NotFound", &format!("events {name:?} not found"));
            };
            let mut ev = old.clone();
            merge_patch(&mut ev, &body);
            if let Err(e) = validate_event(&ev, Some(&old)) {
                return status(422, "Invalid", &e);
            }
            st.rv += 1;
            ev["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            st.events.insert(key, ev.clone());
            (200, ev)
        }
        _ => status(405, "MethodNotAllowed", "not an Event write"),
    }
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in p {
        if v.is_null() {
            target.as_object_mut().unwrap().remove(k);
        } else {
            merge_patch(&mut target[k], v);
        }
    }
}

/// What the API server checks of an `events.k8s.io/v1` Event a recorder writes
/// (`ValidateEventCreate`, `ValidateEventUpdate`): on update, `old` is the stored one.
fn validate_event(ev: &Value, old: Option<&Value>) -> Result<(), String> {
    for f in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if ev[f].as_str().is_none_or(str::is_empty) {
            return Err(format!("{f}: Required value"));
        }
    }
    if !matches!(ev["type"].as_str(), Some("Normal" | "Warning")) {
        return Err(format!("type: Unsupported value: {}", ev["type"]));
    }
    if ev["note"].as_str().is_some_and(|n| n.len() > 1024) {
        return Err("note: Too long: may not be more than 1024 bytes".into());
    }
    if ev["regarding"]["kind"].as_str().is_none() {
        return Err("regarding: Required value".into());
    }
    if !ev["series"].is_null() {
        if ev["series"]["count"].as_i64().is_none_or(|c| c < 2) {
            return Err("series.count: Invalid value: should be at least 2".into());
        }
        if ev["series"]["lastObservedTime"].as_str().is_none() {
            return Err("series.lastObservedTime: Required value".into());
        }
    }
    if let Some(old) = old {
        for f in [
            "regarding",
            "reason",
            "note",
            "action",
            "type",
            "eventTime",
            "related",
            "reportingController",
            "reportingInstance",
        ] {
            if ev[f] != old[f] {
                return Err(format!("{f}: Invalid value: field is immutable"));
            }
        }
    }
    Ok(())
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

/// A uid that is stable for a name, formatted like the API server's (the demo's).
pub use netpol_nflog::demo::uid;

const CREATED: &str = "2025-06-02T09:14:03Z";

fn managed_fields(manager: &str) -> Value {
    json!([{"manager": manager, "operation": "Update", "apiVersion": "v1", "time": CREATED,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {}}}])
}

/// An object's `apiVersion`, `kind` and the metadata every object has: name, namespace (unless
/// cluster-scoped), a uid stable for `uid_kind/namespace/name` (`uid_kind/name`),
/// `resourceVersion` 1, `creationTimestamp`, the `managedFields` of `manager`, then `extra`.
fn object(
    (api_version, kind, uid_kind): (&str, &str, &str),
    (ns, name): (Option<&str>, &str),
    manager: &str,
    extra: Value,
) -> Value {
    let seed = match ns {
        Some(ns) => format!("{uid_kind}/{ns}/{name}"),
        None => format!("{uid_kind}/{name}"),
    };
    let mut meta = json!({"name": name, "uid": uid(&seed), "resourceVersion": "1",
                          "creationTimestamp": CREATED, "managedFields": managed_fields(manager)});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    if let (Some(m), Some(e)) = (meta.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta})
}

/// An object with its `spec` and, unless null, `status`.
fn with(mut obj: Value, spec: Value, status: Value) -> Value {
    obj["spec"] = spec;
    if !status.is_null() {
        obj["status"] = status;
    }
    obj
}

/// A NetworkPolicy as `kubectl get -o json` shows it (policyTypes filled in by the API server).
pub fn network_policy(ns: &str, name: &str, selector: Value, annotations: Value) -> Value {
    let mut ann = json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"networking.k8s.io/v1\",\"kind\":\"NetworkPolicy\"}\n"});
    if let (Some(a), Some(extra)) = (ann.as_object_mut(), annotations.as_object()) {
        a.extend(extra.clone());
    }
    let obj = object(
        ("networking.k8s.io/v1", "NetworkPolicy", "np"),
        (Some(ns), name),
        "kubectl-client-side-apply",
        json!({"generation": 1, "annotations": ann}),
    );
    let spec = json!({
        "podSelector": selector,
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"protocol": "TCP", "port": 5432}]}],
        "policyTypes": ["Ingress"],
    });
    with(obj, spec, Value::Null)
}

/// A Deployment's pod on a node: ReplicaSet owner, pod-template-hash label, dual-stack IPs.
pub fn pod(ns: &str, name: &str, app: &str, node: &str, ips: &[&str]) -> Value {
    let hash = "7c9d8b6f4d";
    let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                       "uid": uid(&format!("rs/{ns}/{app}")), "controller": true, "blockOwnerDeletion": true});
    let obj = object(
        ("v1", "Pod", "pod"),
        (Some(ns), name),
        "k3s",
        json!({"generateName": format!("{app}-{hash}-"), "labels": {"app": app, "pod-template-hash": hash},
               "ownerReferences": [owner]}),
    );
    let spec = json!({
        "nodeName": node, "hostNetwork": false, "serviceAccountName": "default", "restartPolicy": "Always",
        "containers": [{"name": app, "image": "docker.io/library/nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
    });
    let status = json!({
        "phase": "Running", "hostIP": "192.168.1.10", "hostIPs": [{"ip": "192.168.1.10"}],
        "podIP": ips.first(), "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        "qosClass": "BestEffort", "startTime": "2025-06-02T09:14:05Z",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-06-02T09:14:09Z"}],
    });
    with(obj, spec, status)
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
    let mut obj = object(
        ("v1", "Namespace", "ns"),
        (None, name),
        "kubectl-create",
        json!({"labels": {"kubernetes.io/metadata.name": name}}),
    );
    obj["metadata"]["creationTimestamp"] = json!("2025-06-02T09:10:00Z");
    with(
        obj,
        json!({"finalizers": ["kubernetes"]}),
        json!({"phase": "Active"}),
    )
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
    let obj = object(
        ("v1", "Service", "svc"),
        (Some(ns), name),
        "kubectl-client-side-apply",
        json!({"labels": {"app": name}}),
    );
    let spec = json!({
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
    });
    with(obj, spec, json!({"loadBalancer": {}}))
}

/// An EndpointSlice of a Service, as the EndpointSlice controller writes it: `endpoints` as
/// `(address, pod name, ready)` on node `node-a`, `ports` as `(name, port)`, TCP.
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, &str, bool)],
    ports: &[(&str, u16)],
) -> Value {
    let v6 = endpoints.first().is_some_and(|e| e.0.contains(':'));
    let owner = json!({"apiVersion": "v1", "kind": "Service", "name": service, "uid": uid(&format!("svc/{ns}/{service}")),
                       "controller": true, "blockOwnerDeletion": true});
    let mut obj = object(
        ("discovery.k8s.io/v1", "EndpointSlice", "eps"),
        (Some(ns), name),
        "k3s",
        json!({"generateName": format!("{service}-"), "ownerReferences": [owner],
               "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}}),
    );
    obj["addressType"] = json!(if v6 { "IPv6" } else { "IPv4" });
    obj["endpoints"] = endpoints
        .iter()
        .map(|(addr, pod, ready)| {
            json!({
                "addresses": [addr],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": "node-a",
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": uid(&format!("pod/{ns}/{pod}"))},
            })
        })
        .collect();
    obj["ports"] = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "protocol": "TCP", "port": p}))
        .collect();
    obj
}

/// A K3s node: InternalIPs, Hostname, pod CIDRs, and the bulky status a real one carries.
pub fn node(name: &str, internal_ip: &str, pod_cidr: &str) -> Value {
    let obj = object(
        ("v1", "Node", "node"),
        (None, name),
        "k3s",
        json!({"labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": "true"},
               "annotations": {"flannel.alpha.coreos.com/public-ip": internal_ip, "k3s.io/internal-ip": internal_ip}}),
    );
    let mut obj = with(
        obj,
        json!({"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": format!("k3s://{name}")}),
        json!({
            "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": CREATED}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": [{"names": ["docker.io/rancher/mirrored-pause:3.6"], "sizeBytes": 301463}],
            "nodeInfo": {"kubeletVersion": "v1.33.1+k3s1", "containerRuntimeVersion": "containerd://2.0.5-k3s1",
                         "architecture": "amd64", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-37-amd64", "kubeProxyVersion": "v1.33.1+k3s1", "machineID": "x", "systemUUID": "x", "bootID": "x"},
        }),
    );
    obj["metadata"]["creationTimestamp"] = json!("2025-06-02T09:00:00Z");
    obj
}
