//! The demo's fixed cluster: two namespaces, four pods on one node, four NetworkPolicies, one
//! ClusterIP Service, and the flows sent between them.
//!
//! Everything else (the Kubernetes objects the demo's API serves, kube-router's rules, the
//! traffic) is derived from these tables, so the firewall and the API always agree.

use serde_json::{json, Value};

pub const NODE: &str = "demo-node-1";
pub const NODE_IP: &str = "10.42.0.1";
/// A policy name long enough for kube-router's `safeJoin` to cut it in the NFLOG prefix.
pub const LONG: &str = "restrict-ingress-to-ledger-service-from-gateways";
/// The policy whose annotations set a low limit (`2/minute`, burst 2).
pub const NOISY: (&str, &str) = ("shop", "allow-web-to-db");

pub enum Kind {
    /// A Deployment's pod: owned by ReplicaSet `<app>-<hash>`.
    Deployment(&'static str),
    /// A StatefulSet's pod `<app>-<n>`.
    StatefulSet,
}

pub struct Pod {
    pub ns: &'static str,
    pub name: &'static str,
    pub app: &'static str,
    pub ip: &'static str,
    pub kind: Kind,
}

pub const PODS: &[Pod] = &[
    Pod {
        ns: "shop",
        name: "web-7c9d8b6f4d-k8p2q",
        app: "web",
        ip: "10.42.0.10",
        kind: Kind::Deployment("7c9d8b6f4d"),
    },
    Pod {
        ns: "shop",
        name: "db-0",
        app: "db",
        ip: "10.42.0.11",
        kind: Kind::StatefulSet,
    },
    Pod {
        ns: "payments-production",
        name: "gateway-5b8f6c7d94-m2x4q",
        app: "gateway",
        ip: "10.42.0.20",
        kind: Kind::Deployment("5b8f6c7d94"),
    },
    Pod {
        ns: "payments-production",
        name: "ledger-6d4c9b8f75-q4z8n",
        app: "ledger",
        ip: "10.42.0.21",
        kind: Kind::Deployment("6d4c9b8f75"),
    },
];

pub fn pod(app: &str) -> &'static Pod {
    PODS.iter()
        .find(|p| p.app == app)
        .expect("a pod of the scenario")
}

/// One accept rule of a policy: peers with this `app` label in the policy's namespace, on
/// these TCP ports (kube-router writes one accept rule, and one NFLOG rule after it, per port).
pub struct Rule {
    pub peer_app: &'static str,
    pub tcp_ports: &'static [u16],
}

pub struct Policy {
    pub ns: &'static str,
    pub name: &'static str,
    /// `podSelector: {matchLabels: {app: …}}`; `None` selects every pod of the namespace.
    pub app: Option<&'static str>,
    pub egress: bool,
    pub rules: &'static [Rule],
    pub annotations: &'static [(&'static str, &'static str)],
}

impl Policy {
    pub fn selects(&self, p: &Pod) -> bool {
        p.ns == self.ns && self.app.is_none_or(|a| a == p.app)
    }
}

pub const POLICIES: &[Policy] = &[
    Policy {
        ns: "shop",
        name: "web-egress",
        app: Some("web"),
        egress: true,
        rules: &[Rule {
            peer_app: "db",
            tcp_ports: &[5432],
        }],
        annotations: &[],
    },
    Policy {
        ns: NOISY.0,
        name: NOISY.1,
        app: Some("db"),
        egress: false,
        rules: &[Rule {
            peer_app: "web",
            tcp_ports: &[5432, 9187],
        }],
        annotations: &[
            ("kube-router.io/netpol-nflog-limit", "2/minute"),
            ("kube-router.io/netpol-nflog-limit-burst", "2"),
        ],
    },
    // A default deny: no rules, so kube-router writes an empty chain and no NFLOG rule; the pod
    // chain's empty-prefix rule logs what it denies.
    Policy {
        ns: "payments-production",
        name: "default-deny",
        app: None,
        egress: false,
        rules: &[],
        annotations: &[],
    },
    Policy {
        ns: "payments-production",
        name: LONG,
        app: Some("ledger"),
        egress: false,
        rules: &[Rule {
            peer_app: "gateway",
            tcp_ports: &[8443],
        }],
        annotations: &[],
    },
];

/// `shop/db`: a ClusterIP in front of db-0, DNATed kube-proxy style in the node.
pub const SERVICE: (&str, &str, &str, u16) = ("shop", "db", "10.43.0.20", 5432);

/// Where a flow goes.
#[derive(Clone, Copy)]
pub enum To {
    Pod(&'static str),
    ClusterIp,
}

pub struct Flow {
    pub from: &'static str,
    pub to: To,
    pub port: u16,
    /// TCP connection attempts (each its own SYN).
    pub times: usize,
    pub allowed: bool,
    pub why: &'static str,
}

pub const FLOWS: &[Flow] = &[
    Flow {
        from: "web",
        to: To::Pod("db"),
        port: 5432,
        times: 1,
        allowed: true,
        why: "shop/web-egress and shop/allow-web-to-db allow it",
    },
    Flow {
        from: "web",
        to: To::Pod("ledger"),
        port: 8443,
        times: 1,
        allowed: false,
        why: "egress: shop/web-egress lets web reach db:5432 only",
    },
    Flow {
        from: "gateway",
        to: To::Pod("ledger"),
        port: 9090,
        times: 1,
        allowed: false,
        why: "ingress: the long-named policy allows gateways on 8443 only",
    },
    Flow {
        from: "ledger",
        to: To::Pod("gateway"),
        port: 8080,
        times: 1,
        allowed: false,
        why: "ingress: payments-production/default-deny",
    },
    Flow {
        from: "gateway",
        to: To::ClusterIp,
        port: SERVICE.3,
        times: 4,
        allowed: false,
        why: "ingress after the DNAT: shop/allow-web-to-db (annotated 2/minute, burst 2)",
    },
];

impl Flow {
    pub fn dest(&self) -> &'static str {
        match self.to {
            To::Pod(app) => pod(app).ip,
            To::ClusterIp => SERVICE.2,
        }
    }

    pub fn describe(&self) -> String {
        let to = match self.to {
            To::Pod(app) => pod(app).name.to_string(),
            To::ClusterIp => format!("ClusterIP {}/{} ({})", SERVICE.0, SERVICE.1, SERVICE.2),
        };
        format!("{} → {to}:{}/tcp", pod(self.from).name, self.port)
    }
}

// ---- The objects the demo's API serves ---------------------------------------------------------

const CREATED: &str = "2025-06-02T09:14:03Z";

/// A uid that is stable for a seed (`kind/namespace/name`), formatted like the API server's
/// (also the test API's).
pub fn uid(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
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

pub fn namespaces() -> Vec<Value> {
    ["shop", "payments-production"]
        .iter()
        .map(|ns| {
            json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": uid(&format!("ns/{ns}")), "resourceVersion": "1",
                             "creationTimestamp": CREATED, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
            })
        })
        .collect()
}

pub fn pods() -> Vec<Value> {
    PODS.iter()
        .map(|p| {
            let (owner_kind, owner, labels) = match p.kind {
                Kind::Deployment(hash) => (
                    "ReplicaSet",
                    format!("{}-{hash}", p.app),
                    json!({"app": p.app, "pod-template-hash": hash}),
                ),
                Kind::StatefulSet => (
                    "StatefulSet",
                    p.app.to_string(),
                    json!({"app": p.app, "statefulset.kubernetes.io/pod-name": p.name}),
                ),
            };
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": p.name, "namespace": p.ns, "uid": uid(&format!("pod/{}/{}", p.ns, p.name)),
                    "resourceVersion": "1", "creationTimestamp": CREATED, "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                        "uid": uid(&format!("{owner_kind}/{}/{owner}", p.ns)), "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {"nodeName": NODE, "containers": [{"name": p.app, "image": format!("registry.example/{}:1.0", p.app)}]},
                "status": {"phase": "Running", "hostIP": NODE_IP, "podIP": p.ip, "podIPs": [{"ip": p.ip}],
                           "startTime": CREATED}
            })
        })
        .collect()
}

pub fn policies() -> Vec<Value> {
    POLICIES
        .iter()
        .map(|pol| {
            let selector = match pol.app {
                Some(app) => json!({"matchLabels": {"app": app}}),
                None => json!({}),
            };
            let (dir, peers, ty) = if pol.egress { ("egress", "to", "Egress") } else { ("ingress", "from", "Ingress") };
            let rules: Vec<Value> = pol
                .rules
                .iter()
                .map(|r| {
                    let ports: Vec<Value> = r.tcp_ports.iter().map(|p| json!({"protocol": "TCP", "port": p})).collect();
                    json!({peers: [{"podSelector": {"matchLabels": {"app": r.peer_app}}}], "ports": ports})
                })
                .collect();
            let annotations: serde_json::Map<String, Value> =
                pol.annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": pol.name, "namespace": pol.ns, "uid": uid(&format!("np/{}/{}", pol.ns, pol.name)),
                             "resourceVersion": "1", "generation": 1, "creationTimestamp": CREATED,
                             "annotations": annotations},
                "spec": {"podSelector": selector, dir: rules, "policyTypes": [ty]}
            })
        })
        .collect()
}

pub fn services() -> Vec<Value> {
    let (ns, name, ip, port) = SERVICE;
    vec![json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": uid(&format!("svc/{ns}/{name}")), "resourceVersion": "1", "creationTimestamp": CREATED},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"], "selector": {"app": "db"},
                 "ports": [{"name": "postgres", "protocol": "TCP", "port": port, "targetPort": port}]}
    })]
}

pub fn endpoint_slices() -> Vec<Value> {
    let (ns, name, _, port) = SERVICE;
    let db = pod("db");
    vec![json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-x7k2p"), "namespace": ns, "uid": uid(&format!("eps/{ns}/{name}")), "resourceVersion": "1",
                     "creationTimestamp": CREATED, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [db.ip], "conditions": {"ready": true}, "nodeName": NODE,
                       "targetRef": {"kind": "Pod", "namespace": db.ns, "name": db.name}}],
        "ports": [{"name": "postgres", "protocol": "TCP", "port": port}]
    })]
}

pub fn nodes() -> Vec<Value> {
    vec![json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "uid": uid(&format!("node/{NODE}")), "resourceVersion": "1", "creationTimestamp": CREATED,
                     "labels": {"kubernetes.io/hostname": NODE}},
        "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE}]}
    })]
}
