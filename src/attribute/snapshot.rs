//! Offline cluster snapshots: the attribution index from a file instead of the API.
//!
//! In: what `kubectl get pods,networkpolicies,namespaces,services,endpointslices,nodes -A -o yaml`
//! (or `-o json`) writes: a `List` whose `items` are objects of those kinds. A single object, a
//! JSON array of objects, or several YAML documents (`---`) are read too. Out: an [`Index`] holding
//! the Pods, NetworkPolicies, Namespaces, Services, EndpointSlices and Nodes, so a capture or a
//! syslogemu file from a node can be attributed after the fact, with no API access.
//!
//! Every object is checked against its Kubernetes type: a bad one is an error naming the item,
//! the object (`Pod shop/web-0`) and the field (`spec.containers[0].ports[0].containerPort`).

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

use super::index::Index;

/// Snapshot files larger than this are refused (a 10,000-node cluster's listing is far smaller).
pub const MAX_BYTES: u64 = 512 << 20;

/// What a snapshot held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    pub pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    pub nodes: usize,
}

/// Why a snapshot could not be read; each names the file, and the object and field when known.
#[derive(Debug)]
pub enum SnapshotError {
    Read(PathBuf, std::io::Error),
    TooLarge(PathBuf, u64),
    Syntax(PathBuf, String),
    Object {
        path: PathBuf,
        /// `items[3]` or `document 2`.
        item: String,
        /// `Pod shop/web-0`.
        object: String,
        field: String,
        problem: String,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            SnapshotError::TooLarge(p, n) => write!(
                f,
                "{}: {n} bytes is more than the {MAX_BYTES} a snapshot may have",
                p.display()
            ),
            SnapshotError::Syntax(p, e) => {
                write!(
                    f,
                    "{}: neither JSON nor YAML Kubernetes objects: {e}",
                    p.display()
                )
            }
            SnapshotError::Object {
                path,
                item,
                object,
                field,
                problem,
            } => write!(
                f,
                "{}: {item} ({object}): field {field}: {problem}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Reads a snapshot into a new index. `node` is the node whose drops will be attributed (only
/// its pods have the firewall chains that logged them); `None` treats every pod as local.
pub fn load(path: &Path, node: Option<&str>) -> Result<(Index, Loaded), SnapshotError> {
    let len = std::fs::metadata(path)
        .map_err(|e| SnapshotError::Read(path.into(), e))?
        .len();
    if len > MAX_BYTES {
        return Err(SnapshotError::TooLarge(path.into(), len));
    }
    let text = std::fs::read_to_string(path).map_err(|e| SnapshotError::Read(path.into(), e))?;
    let mut index = Index::new();
    index.set_local_node(node);
    let loaded = read_into(&mut index, &text, path)?;
    Ok((index, loaded))
}

/// Parses `text` (JSON or YAML) and feeds every object to `index`.
pub fn read_into(index: &mut Index, text: &str, path: &Path) -> Result<Loaded, SnapshotError> {
    let documents = parse(text).map_err(|e| SnapshotError::Syntax(path.into(), e))?;
    let mut objects = Vec::new();
    for (d, doc) in documents.into_iter().enumerate() {
        let place = |i: Option<usize>| match i {
            Some(i) => format!("document {} items[{i}]", d + 1),
            None => format!("document {}", d + 1),
        };
        match doc {
            Value::Null => {}
            Value::Array(items) => objects.extend(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (place(Some(i)), v)),
            ),
            Value::Object(ref o) if o.get("items").is_some_and(Value::is_array) => {
                let Value::Object(mut o) = doc else {
                    continue;
                };
                let Some(Value::Array(items)) = o.remove("items") else {
                    continue;
                };
                objects.extend(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (place(Some(i)), v)),
                )
            }
            other => objects.push((place(None), other)),
        }
    }
    // Namespaces first: policies' namespace selectors read their labels.
    objects.sort_by_key(|(_, v)| v.get("kind").and_then(Value::as_str) != Some("Namespace"));
    let mut loaded = Loaded::default();
    for (item, value) in objects {
        apply(index, &mut loaded, &item, value, path)?;
    }
    Ok(loaded)
}

fn parse(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| e.to_string());
    }
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| e.to_string())
}

fn apply(
    index: &mut Index,
    loaded: &mut Loaded,
    item: &str,
    value: Value,
    path: &Path,
) -> Result<(), SnapshotError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let meta = |v: &Value, key: &str| {
        v.pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let object = match meta(&value, "namespace").as_str() {
        "" => format!("{kind} {}", meta(&value, "name")),
        ns => format!("{kind} {ns}/{}", meta(&value, "name")),
    };
    let error = |field: String, problem: String| SnapshotError::Object {
        path: path.into(),
        item: item.to_string(),
        object: object.clone(),
        field,
        problem,
    };
    match kind.as_str() {
        "Pod" => {
            index.apply_pod(&typed::<Pod>(value).map_err(|(f, p)| error(f, p))?);
            loaded.pods += 1;
        }
        "NetworkPolicy" => {
            index.apply_policy(&typed::<NetworkPolicy>(value).map_err(|(f, p)| error(f, p))?);
            loaded.policies += 1;
        }
        "Namespace" => {
            index.apply_namespace(&typed::<Namespace>(value).map_err(|(f, p)| error(f, p))?);
            loaded.namespaces += 1;
        }
        "Service" => {
            index.apply_service(&typed::<Service>(value).map_err(|(f, p)| error(f, p))?);
            loaded.services += 1;
        }
        "EndpointSlice" => {
            index.apply_endpoint_slice(
                &typed::<EndpointSlice>(value).map_err(|(f, p)| error(f, p))?,
            );
            loaded.endpoint_slices += 1;
        }
        "Node" => {
            index.apply_node(&typed::<Node>(value).map_err(|(f, p)| error(f, p))?);
            loaded.nodes += 1;
        }
        "" => {
            return Err(error(
                "kind".into(),
                "missing: not a Kubernetes object".into(),
            ))
        }
        other => {
            return Err(error(
                "kind".into(),
                format!(
                    "{other:?} is not one of Pod, NetworkPolicy, Namespace, Service, \
                     EndpointSlice, Node"
                ),
            ))
        }
    }
    Ok(())
}

/// Deserializes one object, naming the field on error.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        (field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{Attribution, Flow};

    const YAML: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-db, namespace: shop, uid: 6f1c1b0e-0b7a-4a8e-9c44-0c6f5a1d2e01}
  spec:
    podSelector: {matchLabels: {app: db}}
    policyTypes: [Ingress]
- apiVersion: v1
  kind: Pod
  metadata: {name: db-0, namespace: shop, uid: 6f1c1b0e-0b7a-4a8e-9c44-0c6f5a1d2e02, labels: {app: db}}
  spec: {nodeName: node-1, containers: [{name: db, image: postgres}]}
  status: {phase: Running, podIP: 10.42.0.20, podIPs: [{ip: 10.42.0.20}]}
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop, uid: 6f1c1b0e-0b7a-4a8e-9c44-0c6f5a1d2e03}
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: shop}
  spec: {clusterIP: 10.43.0.10, clusterIPs: [10.43.0.10], ports: [{name: pg, port: 5432, targetPort: 15432, protocol: TCP}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: db-x7k2p, namespace: shop, labels: {kubernetes.io/service-name: db}}
  addressType: IPv4
  endpoints: [{addresses: [10.42.0.20], conditions: {ready: true}, nodeName: node-1}]
  ports: [{name: pg, port: 15432, protocol: TCP}]
- apiVersion: v1
  kind: Node
  metadata: {name: node-1}
  spec: {podCIDR: 10.42.0.0/24, podCIDRs: [10.42.0.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.1.10}, {type: Hostname, address: node-1}]}
"#;

    fn load_text(text: &str) -> Result<(Index, Loaded), SnapshotError> {
        let mut index = Index::new();
        let loaded = read_into(&mut index, text, Path::new("cluster.yaml"))?;
        Ok((index, loaded))
    }

    fn error_of(text: &str) -> String {
        match load_text(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn kubectl_yaml_list_attributes_a_drop() {
        let (index, loaded) = load_text(YAML).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                pods: 1,
                policies: 1,
                namespaces: 1,
                services: 1,
                endpoint_slices: 1,
                nodes: 1,
            }
        );
        let flow = Flow {
            src: "10.42.0.10".parse().ok(),
            dst: "10.42.0.20".parse().ok(),
            protocol: Some(6),
            dst_port: Some(5432),
            ..Flow::default()
        };
        let ctx = index
            .resolve_flow(
                &Attribution::from_prefix(Some(b"DROP by policy shop/deny-db")),
                &flow,
            )
            .unwrap();
        assert!(ctx.resolved);
        assert_eq!(ctx.dest.unwrap().pod, "db-0");
        assert!(
            ctx.dest_services.is_empty(),
            "port 5432 is not the endpoint's"
        );

        // The kubelet's probe from the node's bridge address, to the Service's target port.
        let flow = Flow {
            src: "10.42.0.1".parse().ok(),
            dst_port: Some(15432),
            ..flow
        };
        let ctx = index
            .resolve_flow(&Attribution::from_prefix(Some(b"")), &flow)
            .unwrap();
        assert_eq!(ctx.src_node.as_deref(), Some("node-1"));
        let svc = &ctx.dest_services[..];
        assert_eq!(svc.len(), 1, "{svc:?}");
        assert_eq!((&*svc[0].namespace, &*svc[0].name), ("shop", "db"));
        assert_eq!(
            (svc[0].port_name.as_deref(), svc[0].port),
            (Some("pg"), Some(5432))
        );
        assert_eq!(
            index.node_by_ip("192.168.1.10".parse().unwrap()).as_deref(),
            Some("node-1")
        );
    }

    #[test]
    fn json_list_and_yaml_documents_read_the_same() {
        let yaml: Value = serde_saphyr::from_str(YAML).unwrap();
        let (_, from_json) = load_text(&yaml.to_string()).unwrap();
        let (_, from_yaml) = load_text(YAML).unwrap();
        assert_eq!(from_json, from_yaml);
        let docs = format!("---\n{YAML}---\nkind: Namespace\nmetadata: {{name: other}}\n");
        let (_, two) = load_text(&docs).unwrap();
        assert_eq!(two.namespaces, 2);
    }

    #[test]
    fn a_bad_object_names_the_item_object_and_field() {
        let bad = YAML.replace(
            "podIP: 10.42.0.20, podIPs: [{ip: 10.42.0.20}]",
            "podIPs: [{ip: [1]}]",
        );
        let err = error_of(&bad);
        assert!(err.contains("items[1]"), "{err}");
        assert!(err.contains("Pod shop/db-0"), "{err}");
        assert!(err.contains("status.podIPs[0].ip"), "{err}");
        let err = error_of("kind: Deployment\nmetadata: {name: web}\n");
        assert!(
            err.contains("Deployment web") && err.contains("kind"),
            "{err}"
        );
        let err = error_of("items: [unclosed\n");
        assert!(
            err.contains("cluster.yaml") && err.contains("line 1"),
            "{err}"
        );
        let err = error_of("- 1\n- 2\n");
        assert!(err.contains("not a Kubernetes object"), "{err}");
    }
}
