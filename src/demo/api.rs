//! A minimal Kubernetes API for the daemon's real kube-rs watchers: HTTP/1.1 on 127.0.0.1 in the
//! node namespace, answering the collections the daemon watches (NetworkPolicies,
//! Namespaces, Pods, Services, EndpointSlices, Nodes).
//!
//! `GET <collection>` answers a `…List` of the scenario's objects. `GET <collection>?watch=true`
//! answers `200` with a chunked body that never sends an event: nothing changes in the demo, so
//! kube-rs keeps what it listed. Every other path is a `404` Status.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::scenario;

pub const PORT: u16 = 6443;

struct Collections {
    /// `(path, list kind, apiVersion, items)`.
    all: Vec<(&'static str, &'static str, &'static str, Vec<Value>)>,
}

/// Binds in the node namespace and serves on a background thread until the process exits.
pub fn start(node_ns: &str) -> Result<()> {
    let listener = super::node::within(node_ns, || Ok(TcpListener::bind(("127.0.0.1", PORT))?))?;
    let collections = Arc::new(Collections {
        all: vec![
            (
                "/api/v1/namespaces",
                "NamespaceList",
                "v1",
                scenario::namespaces(),
            ),
            ("/api/v1/pods", "PodList", "v1", scenario::pods()),
            (
                "/apis/networking.k8s.io/v1/networkpolicies",
                "NetworkPolicyList",
                "networking.k8s.io/v1",
                scenario::policies(),
            ),
            (
                "/api/v1/services",
                "ServiceList",
                "v1",
                scenario::services(),
            ),
            (
                "/apis/discovery.k8s.io/v1/endpointslices",
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                scenario::endpoint_slices(),
            ),
            ("/api/v1/nodes", "NodeList", "v1", scenario::nodes()),
        ],
    });
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let c = collections.clone();
            std::thread::spawn(move || {
                let _ = serve(sock, &c);
            });
        }
    });
    Ok(())
}

fn serve(mut sock: TcpStream, c: &Collections) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split(' ').nth(1).unwrap_or("/").to_string();
    // The rest of the head (no request kube-rs sends here has a body).
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let Some((_, kind, api_version, items)) = c.all.iter().find(|(p, ..)| *p == path) else {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string();
        return respond(&mut sock, "404 Not Found", &body);
    };
    if query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
    {
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        sock.flush()?;
        // No events to send; hold the watch open (kube-rs ends it after its own timeout).
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let body = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": items}).to_string();
    respond(&mut sock, "200 OK", &body)
}

fn respond(sock: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        sock,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    sock.flush()
}

/// A kubeconfig for the demo's API (no credentials).
pub fn kubeconfig() -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    server: http://127.0.0.1:{PORT}\n\
         contexts:\n- name: demo\n  context:\n    cluster: demo\n    user: demo\n\
         current-context: demo\nusers:\n- name: demo\n  user: {{}}\n"
    )
}
