//! A K3s-shaped node on the real kernel, built from one [`Scenario`]: pods in their own network
//! namespaces on a bridge, kube-router's NetworkPolicy firewall generated from the same
//! Kubernetes objects a fake API server serves, a kube-proxy-style ClusterIP DNAT, an "outside"
//! host, and helpers to send traffic, run `netpol-nflogd` (or ulogd2) in the node and read what
//! it wrote.
//!
//! ```text
//!  pod netns (eth0 10.42.0.N/24, fd42::N/64) ─veth─┐
//!  pod netns …                               ─veth─┤ cni0 10.42.0.1/24 fd42::1/64   node netns
//!                                                    uplink 192.168.100.1 fd00:100::1 ─veth─ outside netns
//!                                                                                     (192.168.100.2, fd00:100::2;
//!                                                                                      another node 192.168.100.3,
//!                                                                                      fd00:100::3; "the internet"
//!                                                                                      93.184.216.34, 2a00:1450:4001::7)
//! ```
//!
//! The API serves, besides the scenario's namespaces, pods and policies, its Service (with the
//! EndpointSlice that holds the target pod's address and port) and two Nodes: this one ([`NODE`],
//! InternalIPs the uplink's addresses, pod CIDRs 10.42.0.0/24 and fd42::/64) and
//! [`OTHER_NODE`], whose InternalIPs the outside namespace also holds ([`End::OtherNode`]).
//!
//! The node has `ip_forward` on and bridge netfilter on (`net.bridge.bridge-nf-call-iptables`
//! and `-ip6tables`, per network namespace since Linux 5.3), so pod-to-pod traffic on `cni0`
//! traverses iptables' FORWARD as kube-router expects (its `physdev --physdev-is-bridged` jumps).
//! The daemon, ulogd2 and the fake API server all run in the node namespace.
//!
//! # The firewall, as kube-router (the K3s fork) writes it
//!
//! Derived from the source, not from documentation; the files are those of the
//! `NetworkPolicyController` generation of `k3s-io/kube-router` that carries the NFLOG
//! "DROP by policy" logging:
//!
//! - [policy.go @ a6292236](https://github.com/k3s-io/kube-router/blob/a6292236c3fdbe726bf4e9c9ff8dccef62169650/pkg/controllers/netpol/policy.go)
//! - [pod.go @ 70545914](https://github.com/k3s-io/kube-router/blob/70545914453cec949ba7e0ab1f84d07f2e080073/pkg/controllers/netpol/pod.go)
//! - [network_policy_controller.go @ 09d6f45f](https://github.com/k3s-io/kube-router/blob/09d6f45f56e0945fd8e443150dd93461c9c76266/pkg/controllers/netpol/network_policy_controller.go)
//! - [utils.go @ 5f0697bb](https://github.com/k3s-io/kube-router/blob/5f0697bb4c891f1b1218361f9ceb68dac1724253/pkg/controllers/netpol/utils.go)
//!
//! Facts (function in brackets), per IP family (`iptables-restore` and `ip6tables-restore`):
//!
//! 1. `INPUT`, `FORWARD`, `OUTPUT` jump first thing to `KUBE-ROUTER-INPUT/FORWARD/OUTPUT`
//!    (comment `kube-router netpol - <uuid>`), and right after that accept packets marked
//!    `0x20000/0x20000` ("explicitly ACCEPT traffic that comply to network policies")
//!    [network_policy_controller.go: `ensureTopLevelChains`, `ensureExplicitAccept`].
//! 2. `KUBE-ROUTER-INPUT` starts with RETURNs for the service cluster IP range and LOCAL
//!    TCP/UDP node ports [`ensureTopLevelChains`, `allowTrafficToClusterIPRange`].
//! 3. `KUBE-NWPLCY-DEFAULT` marks `0x10000/0x10000` (used for a pod without ingress or
//!    without egress policies) [`ensureDefaultNetworkPolicyChain`].
//! 4. One `KUBE-POD-FW-<hash>` chain per local, actionable pod (not hostNetwork, has a pod IP,
//!    not finished; `Status.HostIP` one of the node's IPs), per family in which the pod has an
//!    address [pod.go: `syncPodFirewallChains`, `getLocalPods`; utils.go: `isNetPolActionable`].
//!    Its rules, top to bottom (built with `-I 1`, hence reversed) [`setupPodNetpolRules`]:
//!    ctstate RELATED,ESTABLISHED → ACCEPT; ctstate INVALID → DROP;
//!    `-m addrtype --src-type LOCAL -d <pod ip>` → ACCEPT ("source is the pod's local node");
//!    (IPv6 only) ICMPv6 router/neighbour solicitation/advertisement and types 141/142 with
//!    hop limit 255 → ACCEPT; `-s <ip> -j KUBE-NWPLCY-DEFAULT` if no policy covers egress;
//!    `-d <ip> -j KUBE-NWPLCY-DEFAULT` if none covers ingress; one jump per policy selecting the
//!    pod, in reverse policy order: `-d <ip>` for Ingress, `-s <ip>` for Egress, none for both.
//!    Then appended [`dropUnmarkedTrafficRules`]: the empty-prefix
//!    `-m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 -m limit --limit 10/minute
//!    --limit-burst 10` (one per pod chain and family, for both directions), `REJECT` for
//!    unmarked, `MARK --set-mark 0/0x10000`, `MARK --set-mark 0x20000/0x20000`.
//! 5. Jumps into the pod chain [`interceptPodInboundTraffic`, `interceptPodOutboundTraffic`]:
//!    `KUBE-ROUTER-FORWARD -d ip`, `KUBE-ROUTER-OUTPUT -d ip`,
//!    `KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged -d ip`; `KUBE-ROUTER-INPUT/FORWARD/
//!    OUTPUT -s ip`, `KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged -s ip`.
//! 6. One `KUBE-NWPLCY-<hash>` chain per policy and family [policy.go: `syncNetworkPolicyChains`]
//!    with hash:ip sets of the selected pods (`KUBE-DST-…` for ingress, `KUBE-SRC-…` for egress;
//!    IPv6 set names are prefixed `inet6:` and have family inet6), and per rule of the spec
//!    [`processIngressRules`, `processEgressRules`, `buildNetworkPoliciesInfo`, `evalPodPeer`,
//!    `evalIPBlockPeer`, `processNetworkPolicyPorts`, `grabNamedPortFromPod`]: peer pods in
//!    hash:ip `KUBE-SRC-…`/`KUBE-DST-…` sets, ipBlocks in hash:net sets (`except` as `nomatch`;
//!    `/0` as two halves), ports with `-p <PROTO> --dport port[:endPort]`, named ports resolved
//!    to hash:ip sets of the pods having them. Every accept rule is written by
//!    `appendRuleToPolicyChain` as three rules: `… -j MARK --set-xmark 0x10000/0x10000`,
//!    `… -m mark --mark 0x10000/0x10000 -j RETURN`, and then, **after each accept rule, not
//!    once at the end**, `-m limit --limit <L> --limit-burst <B> -m mark ! --mark
//!    0x10000/0x10000 -j NFLOG --nflog-group 100 --nflog-prefix "DROP by policy
//!    <safeJoin(ns, name)>"` with L/B from the annotations `kube-router.io/netpol-nflog-limit`
//!    and `-limit-burst` (both default `10/minute`, `10`; any invalid value: both defaults)
//!    [utils.go: `getIptablesNFlogLimit`, `safeJoin`]. A policy without rules (a default deny)
//!    has an empty chain and no NFLOG rule; a packet that passes a policy's chain unmatched is
//!    logged once per accept rule of that policy.
//!
//! Chain and set names hash like kube-router's (`sha256` + base32, here FNV-1a; the names never
//! reach NFLOG). The policies, pods and namespaces are evaluated from the JSON the fake API
//! serves, so rules and API always agree.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::daemon::STANDALONE;
use super::kube_api::{write_kubeconfig, NsApi};
use super::metrics::{all_synced, wait_counter, wait_readyz};
use super::process::run_stdin;
use super::sandbox::{in_netns, ip_batch, spawn_in};
use super::{read_lossy, run, Daemon, Sandbox};
use crate::conformance;
use crate::fake_api::{
    self, FakeApi, ENDPOINT_SLICES, NAMESPACES, NODES, PODS, POLICIES, SERVICES,
};

pub(crate) const NODE: &str = "node-1";
pub(crate) const API_PORT: u16 = 16443;
pub(crate) const METRICS_PORT: u16 = 9109;
pub(crate) const SERVICE_CIDR_V4: &str = "10.43.0.0/16";
pub(crate) const SERVICE_CIDR_V6: &str = "fd43::/112";
pub(crate) const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
pub(crate) const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd42, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const UPLINK_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
pub(crate) const UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
pub(crate) const OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
pub(crate) const OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 2);
/// Another node of the cluster: a Node object the API serves, whose InternalIPs the outside
/// namespace sends from ([`End::OtherNode`]).
pub(crate) const OTHER_NODE: &str = "node-2";
pub(crate) const OTHER_NODE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 3);
pub(crate) const OTHER_NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 3);
/// A public address of no pod and no node, held by the outside namespace ([`End::Internet`]).
pub(crate) const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
pub(crate) const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2a00, 0x1450, 0x4001, 0, 0, 0, 0, 7);
/// Hostname both ulogd2 and the daemon print in syslogemu lines.
pub(crate) const HOSTNAME: &str = conformance::HOSTNAME;
/// kube-router's sync "version" that goes into chain hashes.
const VERSION: &str = "1";

// ---- The scenario -------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub namespaces: Vec<NamespaceSpec>,
    pub pods: Vec<PodSpec>,
    pub policies: Vec<PolicySpec>,
    pub service: Option<ServiceSpec>,
    /// `net.ipv6.auto_flowlabels=0` in the pods: IPv6 packets get flow label 0, so two runs of
    /// the same traffic are byte-identical (for the ulogd2 comparison).
    pub zero_flow_labels: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct NamespaceSpec {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Workload {
    Deployment,
    StatefulSet,
}

#[derive(Clone, Debug)]
pub(crate) struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// The workload name (`app` label).
    pub app: String,
    pub labels: Vec<(String, String)>,
    /// Host part: 10.42.0.`host`, fd42::`host` (2-254).
    pub host: u8,
    /// Named container ports: (name, port, protocol).
    pub ports: Vec<(String, u16, String)>,
    pub workload: Workload,
}

#[derive(Clone, Debug)]
pub(crate) struct PolicySpec {
    pub namespace: String,
    pub name: String,
    /// `spec` as in the object (podSelector, policyTypes, ingress, egress).
    pub spec: Value,
    pub annotations: Vec<(String, String)>,
}

/// A ClusterIP Service in front of one pod. The API serves it as `<the pod's namespace>/<the
/// pod's app>` with one port, named like the pod's container port of that number and protocol
/// (else `<protocol>-<port>`); its EndpointSlice holds the pod's IPv4 address and the target port
/// under that name ([`Scenario::service_ref`]).
#[derive(Clone, Debug)]
pub(crate) struct ServiceSpec {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    pub pod: String,
    pub target_port: u16,
}

pub(crate) fn namespace(name: &str, labels: &[(&str, &str)]) -> NamespaceSpec {
    let mut l = vec![("kubernetes.io/metadata.name".to_string(), name.to_string())];
    l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    NamespaceSpec {
        name: name.into(),
        labels: l,
    }
}

pub(crate) fn pod(ns: &str, name: &str, app: &str, host: u8) -> PodSpec {
    assert!(
        (2..=254).contains(&host),
        "pod host part {host} out of 2-254"
    );
    PodSpec {
        name: name.into(),
        namespace: ns.into(),
        app: app.into(),
        labels: vec![("app".into(), app.into())],
        host,
        ports: Vec::new(),
        workload: Workload::Deployment,
    }
}

impl PodSpec {
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Self {
        self.ports.push((name.into(), port, protocol.into()));
        self
    }
    pub fn statefulset(mut self) -> Self {
        self.workload = Workload::StatefulSet;
        self
    }
    pub fn v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 42, 0, self.host)
    }
    pub fn v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd42, 0, 0, 0, 0, 0, 0, self.host as u16)
    }
    fn mac(&self) -> String {
        format!("0a:58:0a:2a:00:{:02x}", self.host)
    }
}

pub(crate) fn policy(ns: &str, name: &str, spec: Value) -> PolicySpec {
    PolicySpec {
        namespace: ns.into(),
        name: name.into(),
        spec,
        annotations: Vec::new(),
    }
}

impl PolicySpec {
    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.annotations.push((k.into(), v.into()));
        self
    }
}

// ---- The objects the API serves -----------------------------------------------------------------

/// The Kubernetes objects of a scenario, as the fake API serves them.
#[derive(Clone, Debug)]
pub(crate) struct Objects {
    pub namespaces: Vec<Value>,
    pub pods: Vec<Value>,
    pub policies: Vec<Value>,
    /// The scenario's Service, if any.
    pub services: Vec<Value>,
    pub endpoint_slices: Vec<Value>,
    /// [`NODE`] and [`OTHER_NODE`].
    pub nodes: Vec<Value>,
}

impl Objects {
    /// Every object, each collection after the other (namespaces, pods, policies, services,
    /// endpoint slices, nodes): what `kubectl get … -A` of all of them lists (for snapshots).
    #[allow(dead_code)]
    pub fn all(&self) -> Vec<Value> {
        [
            &self.namespaces,
            &self.pods,
            &self.policies,
            &self.services,
            &self.endpoint_slices,
            &self.nodes,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

/// The objects of the scenario's Service: the Service and its EndpointSlice.
fn service_objects(svc: &ServiceSpec, r: &ServiceRef, target: &PodSpec) -> [Value; 2] {
    let proto = svc.protocol.to_uppercase();
    let mut service = fake_api::service(
        &r.namespace,
        &r.name,
        &svc.ip.to_string(),
        &[(&r.port_name, svc.port, svc.target_port, None)],
    );
    service["spec"]["ports"][0]["protocol"] = json!(proto);
    service["spec"]["selector"] = json!({"app": target.app});
    let ip = target.v4().to_string();
    let mut slice = fake_api::endpoint_slice(
        &r.namespace,
        &format!("{}-x7k2p", r.name),
        &r.name,
        &[(&ip, &target.name, true)],
        &[(&r.port_name, svc.target_port)],
    );
    slice["endpoints"][0]["nodeName"] = json!(NODE);
    slice["ports"][0]["protocol"] = json!(proto);
    [service, slice]
}

/// This node and [`OTHER_NODE`], dual-stack.
fn node_objects() -> Vec<Value> {
    [
        (NODE, UPLINK_V4, UPLINK_V6, "10.42.0.0/24", "fd42::/64"),
        (
            OTHER_NODE,
            OTHER_NODE_V4,
            OTHER_NODE_V6,
            "10.42.1.0/24",
            "fd42:1::/64",
        ),
    ]
    .into_iter()
    .map(|(name, v4, v6, cidr4, cidr6)| {
        let mut n = fake_api::node(name, &v4.to_string(), cidr4);
        n["spec"]["podCIDRs"] = json!([cidr4, cidr6]);
        n["status"]["addresses"] = json!([
            {"type": "InternalIP", "address": v4.to_string()},
            {"type": "InternalIP", "address": v6.to_string()},
            {"type": "Hostname", "address": name},
        ]);
        n
    })
    .collect()
}

/// How the API names the scenario's Service (see [`ServiceSpec`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
}

impl Scenario {
    /// The namespace, name and port name of the scenario's Service.
    pub fn service_ref(&self) -> Option<ServiceRef> {
        let svc = self.service.as_ref()?;
        let target = self.pods.iter().find(|p| p.name == svc.pod)?;
        let port_name = target
            .ports
            .iter()
            .find(|(_, port, proto)| {
                *port == svc.target_port && proto.eq_ignore_ascii_case(svc.protocol)
            })
            .map_or_else(
                || format!("{}-{}", svc.protocol, svc.port),
                |(n, _, _)| n.clone(),
            );
        Some(ServiceRef {
            namespace: target.namespace.clone(),
            name: target.app.clone(),
            port_name,
        })
    }

    pub fn objects(&self) -> Objects {
        let namespaces = self
            .namespaces
            .iter()
            .map(|n| {
                let mut o = fake_api::namespace(&n.name);
                for (k, v) in &n.labels {
                    o["metadata"]["labels"][k] = json!(v);
                }
                o
            })
            .collect();
        let pods = self
            .pods
            .iter()
            .map(|p| {
                let ips = [p.v4().to_string(), p.v6().to_string()];
                let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                let mut o = fake_api::pod(&p.namespace, &p.name, &p.app, NODE, &ips);
                let meta = &mut o["metadata"];
                let mut labels = Map::new();
                for (k, v) in &p.labels {
                    labels.insert(k.clone(), json!(v));
                }
                match p.workload {
                    Workload::Deployment => {
                        labels.insert("pod-template-hash".into(), json!("7c9d8b6f4d"));
                    }
                    Workload::StatefulSet => {
                        labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(p.name));
                        meta["generateName"] = json!(format!("{}-", p.app));
                        meta["ownerReferences"][0]["kind"] = json!("StatefulSet");
                        meta["ownerReferences"][0]["name"] = json!(p.app);
                        meta["ownerReferences"][0]["uid"] =
                            json!(fake_api::uid(&format!("sts/{}/{}", p.namespace, p.app)));
                    }
                }
                meta["labels"] = Value::Object(labels);
                o["spec"]["containers"][0]["ports"] = json!(p
                    .ports
                    .iter()
                    .map(|(n, port, proto)| json!({"name": n, "containerPort": port, "protocol": proto}))
                    .collect::<Vec<_>>());
                o["status"]["hostIP"] = json!(UPLINK_V4.to_string());
                o["status"]["hostIPs"] = json!([{"ip": UPLINK_V4.to_string()}]);
                o
            })
            .collect();
        let policies = self
            .policies
            .iter()
            .map(|p| {
                let mut ann = Map::new();
                for (k, v) in &p.annotations {
                    ann.insert(k.clone(), json!(v));
                }
                let mut o = fake_api::network_policy(
                    &p.namespace,
                    &p.name,
                    p.spec["podSelector"].clone(),
                    Value::Object(ann),
                );
                o["spec"] = api_defaults(&p.spec);
                o
            })
            .collect();
        let (mut services, mut endpoint_slices) = (Vec::new(), Vec::new());
        if let (Some(svc), Some(r)) = (&self.service, self.service_ref()) {
            let target = self.pods.iter().find(|p| p.name == svc.pod).unwrap();
            let [s, e] = service_objects(svc, &r, target);
            services.push(s);
            endpoint_slices.push(e);
        }
        Objects {
            namespaces,
            pods,
            policies,
            services,
            endpoint_slices,
            nodes: node_objects(),
        }
    }
}

/// What the API server fills in: `policyTypes` (Ingress, plus Egress when there are egress
/// rules) and `protocol: TCP` on ports.
fn api_defaults(spec: &Value) -> Value {
    let mut s = spec.clone();
    if s.get("podSelector").is_none() {
        s["podSelector"] = json!({});
    }
    if s.get("policyTypes").is_none() {
        let mut t = vec!["Ingress"];
        if s.get("egress").is_some() {
            t.push("Egress");
        }
        s["policyTypes"] = json!(t);
    }
    for dir in ["ingress", "egress"] {
        if let Some(rules) = s.get_mut(dir).and_then(Value::as_array_mut) {
            for r in rules {
                if let Some(ports) = r.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if p.get("protocol").is_none() {
                            p["protocol"] = json!("TCP");
                        }
                    }
                }
            }
        }
    }
    s
}

// ---- kube-router's firewall, generated from the objects ------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    /// `api.IPFamily` as kube-router hashes it.
    fn api(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    fn of_cidr(cidr: &str) -> Family {
        if cidr.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// A stable 16-character base32 name hash (kube-router: sha256 + base32, first 16).
fn hash16(s: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |salt: u8| {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in std::iter::once(salt).chain(s.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        h
    };
    let (a, b) = (fnv(1), fnv(2));
    (0..16)
        .map(|i| {
            let v = if i < 12 {
                a >> (i * 5)
            } else {
                b >> ((i - 12) * 5)
            };
            ALPHA[(v & 31) as usize] as char
        })
        .collect()
}

/// kube-router's `safeJoin` (utils.go): the `ns/name` of the NFLOG prefix, at most 48 bytes.
pub(crate) fn safe_join(ns: &str, name: &str) -> String {
    if ns.len() + name.len() < 48 {
        format!("{ns}/{name}")
    } else if ns.len() < 24 {
        format!("{ns}/{}", &name[..47 - ns.len()])
    } else if name.len() < 24 {
        format!("{}/{name}", &ns[..47 - name.len()])
    } else {
        format!("{}/{}", &ns[..23], &name[..23])
    }
}

pub(crate) fn drop_prefix(ns: &str, name: &str) -> String {
    format!("DROP by policy {}", safe_join(ns, name))
}

/// `getIptablesNFlogLimit` + `areNFlogParamsCorrect`.
fn nflog_limit(annotations: &Value) -> (String, String) {
    let get = |k: &str, d: &str| {
        annotations
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or(d)
            .to_string()
    };
    let limit = get("kube-router.io/netpol-nflog-limit", "10/minute");
    let burst = get("kube-router.io/netpol-nflog-limit-burst", "10");
    let int = |s: &str| s.parse::<i32>().is_ok();
    let parts: Vec<&str> = limit.split('/').collect();
    let ok = match parts[..] {
        [n] => int(n) && int(&burst),
        [n, unit] => {
            ["second", "minute", "hour", "day", "s", "m", "h", "d"].contains(&unit)
                && int(n)
                && int(&burst)
        }
        _ => false,
    };
    if ok {
        (limit, burst)
    } else {
        ("10/minute".into(), "10".into())
    }
}

fn labels_of(obj: &Value) -> Map<String, Value> {
    obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// `metav1.LabelSelectorAsSelector(sel).Matches(labels)`.
fn selects(sel: &Value, labels: &Map<String, Value>) -> bool {
    let ml = sel["matchLabels"].as_object().cloned().unwrap_or_default();
    if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = strs(&e["values"]);
            let have = labels.get(key).and_then(Value::as_str);
            match e["operator"].as_str().unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                op => panic!("unknown selector operator {op:?} in {sel}"),
            }
        })
}

struct KPod<'a> {
    name: &'a str,
    ns: &'a str,
    labels: Map<String, Value>,
    ips: Vec<IpAddr>,
    obj: &'a Value,
}

impl KPod<'_> {
    fn ip(&self, fam: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == fam)
    }
}

#[derive(Default)]
struct IpSet {
    kind: &'static str,
    entries: Vec<String>,
}

/// The filter table of one family, the ipsets it uses, and the chain names (for tests).
struct Firewall<'a> {
    fam: Family,
    pods: &'a [KPod<'a>],
    namespaces: &'a [Value],
    chains: Vec<String>,
    rules: Vec<String>,
    sets: BTreeMap<String, IpSet>,
}

/// A named port's endpoints: protocol, port, pod IPs (`endPoints`).
struct NamedEp {
    protocol: String,
    port: String,
    ips: Vec<IpAddr>,
}

fn ip_set_name(base: &str, fam: Family) -> String {
    match fam {
        Family::V4 => base.to_string(),
        Family::V6 => format!("inet6:{base}"),
    }
}

impl<'a> Firewall<'a> {
    fn set(&mut self, base: &str, kind: &'static str, entries: Vec<String>) -> String {
        let name = ip_set_name(base, self.fam);
        self.sets.insert(name.clone(), IpSet { kind, entries });
        name
    }

    fn ips_of(&self, pods: &[&KPod]) -> Vec<String> {
        pods.iter()
            .filter_map(|p| p.ip(self.fam))
            .map(|ip| ip.to_string())
            .collect()
    }

    fn pods_in(&self, ns: &str, sel: &Value) -> Vec<&'a KPod<'a>> {
        self.pods
            .iter()
            .filter(|p| p.ns == ns && selects(sel, &p.labels))
            .collect()
    }

    /// `evalPodPeer`.
    fn peer_pods(&self, policy_ns: &str, peer: &Value) -> Vec<&'a KPod<'a>> {
        if let Some(nsel) = peer.get("namespaceSelector") {
            let psel = peer.get("podSelector").cloned().unwrap_or(json!({}));
            let mut out = Vec::new();
            for ns in self.namespaces {
                if selects(nsel, &labels_of(ns)) {
                    out.extend(self.pods_in(ns["metadata"]["name"].as_str().unwrap(), &psel));
                }
            }
            out
        } else if let Some(psel) = peer.get("podSelector") {
            self.pods_in(policy_ns, psel)
        } else {
            Vec::new()
        }
    }

    /// `evalIPBlockPeer`, this family only: `(cidr, nomatch)`.
    fn ip_block(&self, peer: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if peer.get("podSelector").is_some() || peer.get("namespaceSelector").is_some() {
            return out;
        }
        let Some(cidr) = peer["ipBlock"]["cidr"].as_str() else {
            return out;
        };
        if Family::of_cidr(cidr) != self.fam {
            return out;
        }
        let halves: &[&str] = match self.fam {
            Family::V4 => &["0.0.0.0/1", "128.0.0.0/1"],
            Family::V6 => &["2000::/3", "fd00::/8"],
        };
        let expand = |c: &str, nomatch: bool, out: &mut Vec<String>| {
            let suffix = if nomatch {
                " timeout 0 nomatch"
            } else {
                " timeout 0"
            };
            if c.ends_with("/0") {
                for h in halves {
                    out.push(format!("{h}{suffix}"));
                }
            } else {
                out.push(format!("{c}{suffix}"));
            }
        };
        expand(cidr, false, &mut out);
        for e in peer["ipBlock"]["except"].as_array().into_iter().flatten() {
            expand(e.as_str().unwrap(), true, &mut out);
        }
        out
    }

    /// `grabNamedPortFromPod` over `pods`: name → protocol → port → IPs.
    fn named_ports(
        pods: &[&KPod],
    ) -> BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<IpAddr>>>> {
        let mut m: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<IpAddr>>>> =
            BTreeMap::new();
        for p in pods {
            for c in p.obj["spec"]["containers"].as_array().into_iter().flatten() {
                for port in c["ports"].as_array().into_iter().flatten() {
                    let name = port["name"].as_str().unwrap_or("").to_string();
                    let proto = port["protocol"].as_str().unwrap_or("TCP").to_string();
                    let num = port["containerPort"].to_string();
                    m.entry(name)
                        .or_default()
                        .entry(proto)
                        .or_default()
                        .entry(num)
                        .or_default()
                        .extend(p.ips.iter().copied());
                }
            }
        }
        m
    }

    /// `processNetworkPolicyPorts`: numeric `(protocol, port, endport)` and named endpoints.
    fn ports(
        spec_ports: &[Value],
        named: &BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<IpAddr>>>>,
    ) -> (Vec<(String, String, String)>, Vec<NamedEp>) {
        let (mut numeric, mut eps) = (Vec::new(), Vec::new());
        for p in spec_ports {
            let proto = p["protocol"].as_str().unwrap_or("").to_string();
            match &p["port"] {
                Value::Null => numeric.push((proto, String::new(), String::new())),
                Value::Number(n) => {
                    let end = p["endPort"]
                        .as_u64()
                        .filter(|e| *e >= n.as_u64().unwrap())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    numeric.push((proto, n.to_string(), end));
                }
                Value::String(name) => {
                    if let Some(by_port) = named.get(name).and_then(|m| m.get(&proto)) {
                        for (port, ips) in by_port {
                            eps.push(NamedEp {
                                protocol: proto.clone(),
                                port: port.clone(),
                                ips: ips.clone(),
                            });
                        }
                    }
                }
                other => panic!("bad port {other}"),
            }
        }
        (numeric, eps)
    }

    /// `appendRuleToPolicyChain`: MARK, RETURN, then the policy's NFLOG rule.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        chain: &str,
        comment: &str,
        src_set: &str,
        dst_set: &str,
        proto: &str,
        port: &str,
        endport: &str,
        pol: &Value,
    ) {
        let mut args = format!("-A {chain} -m comment --comment \"{comment}\"");
        if !src_set.is_empty() {
            args += &format!(" -m set --match-set {src_set} src");
        }
        if !dst_set.is_empty() {
            args += &format!(" -m set --match-set {dst_set} dst");
        }
        if !proto.is_empty() {
            args += &format!(" -p {proto}");
        }
        if !port.is_empty() {
            if endport.is_empty() {
                args += &format!(" --dport {port}");
            } else {
                args += &format!(" --dport {port}:{endport}");
            }
        }
        self.rules
            .push(format!("{args} -j MARK --set-xmark 0x10000/0x10000"));
        self.rules
            .push(format!("{args} -m mark --mark 0x10000/0x10000 -j RETURN"));
        let (ns, name) = ns_name(pol);
        let (limit, burst) = nflog_limit(&pol["metadata"]["annotations"]);
        self.rules.push(format!(
            "-A {chain} -m comment --comment \"rule to log dropped traffic\" -m limit --limit {limit} \
             --limit-burst {burst} -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 \
             --nflog-prefix \"{}\"",
            drop_prefix(ns, name)
        ));
    }

    /// `syncNetworkPolicyChains` for one policy: its chain, sets and rules.
    fn policy_chain(&mut self, pol: &'a Value) {
        let (ns, name) = ns_name(pol);
        let chain = policy_chain_name(ns, name, self.fam);
        self.chains.push(chain.clone());
        let spec = &pol["spec"];
        let types: Vec<&str> = strs(&spec["policyTypes"]);
        let (ing, egr) = (types.contains(&"Ingress"), types.contains(&"Egress"));
        let (ing, egr) = if !ing && !egr {
            (true, false)
        } else {
            (ing, egr)
        };
        let targets = self.pods_in(ns, &spec["podSelector"]);
        if ing {
            self.direction_rules(pol, Direction::Ingress, &chain, &targets);
        }
        if egr {
            self.direction_rules(pol, Direction::Egress, &chain, &targets);
        }
    }

    /// `processIngressRules` / `processEgressRules`: the rules of one direction of a policy
    /// whose selected pods are `targets`, rule by rule: from/to peer pods, from/to everything,
    /// from/to ipBlocks; numeric ports, then named ones.
    fn direction_rules(
        &mut self,
        pol: &Value,
        dir: Direction,
        chain: &str,
        targets: &[&'a KPod<'a>],
    ) {
        let (ns, name) = ns_name(pol);
        let fam = self.fam;
        let h = |s: String| hash16(&s);
        let (own_prefix, peer_prefix) = dir.set_prefixes();
        let target_ips = self.ips_of(targets);
        let own_set = self.set(
            &format!("{own_prefix}-{}", h(format!("{ns}{name}{}", fam.api()))),
            "hash:ip",
            target_ips
                .iter()
                .map(|ip| format!("{ip} timeout 0"))
                .collect(),
        );
        let [comment_pods, comment_all, comment_block] = dir.comments(ns, name);
        let d = dir.key();
        for (idx, rule) in pol["spec"][d].as_array().into_iter().flatten().enumerate() {
            let peers: Vec<Value> = rule[dir.peers_key()]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let match_all_peers = peers.is_empty();
            let spec_ports: Vec<Value> = rule["ports"].as_array().cloned().unwrap_or_default();
            let match_all_ports = spec_ports.is_empty();
            let mut peer_pods = Vec::new();
            let mut blocks = Vec::new();
            for peer in &peers {
                peer_pods.extend(self.peer_pods(ns, peer));
                blocks.extend(self.ip_block(peer));
            }
            // Named ports resolve on the destination side: the selected pods for ingress; for
            // egress the peer pods, or every pod of the namespace when any destination goes.
            let named = match dir {
                Direction::Ingress => Self::named_ports(targets),
                Direction::Egress
                    if match_all_peers && spec_ports.iter().any(|p| p["port"].is_string()) =>
                {
                    Self::named_ports(&self.pods_in(ns, &json!({})))
                }
                Direction::Egress => Self::named_ports(&peer_pods),
            };
            let (ports, eps) = Self::ports(&spec_ports, &named);
            let set_name = |prefix: &str, mid: String, suffix: &str| {
                format!(
                    "{prefix}-{}",
                    h(format!("{ns}{name}{d}rule{idx}{mid}{}{suffix}", fam.api()))
                )
            };
            // The rules between the selected pods and one peer set ("": any peer): one per
            // numeric port, then one per named port, its endpoints in a set of kind `np_kind`
            // as the destination (`None`: the bare port, the destination as it is).
            let emit = |fw: &mut Self,
                        comment: &str,
                        peer: &str,
                        eps: &[NamedEp],
                        np_kind: Option<&'static str>| {
                let (src, dst) = dir.orient(&own_set, peer);
                for (p, port, end) in &ports {
                    fw.append(chain, comment, src, dst, p, port, end, pol);
                }
                for (i, ep) in eps.iter().enumerate() {
                    let np_set = np_kind.map(|kind| {
                        let ips = ep
                            .ips
                            .iter()
                            .filter(|ip| Family::of(ip) == fam)
                            .map(|ip| format!("{ip} timeout 0"))
                            .collect();
                        fw.set(&set_name("KUBE-DST", i.to_string(), "namedport"), kind, ips)
                    });
                    let dst = np_set.as_deref().unwrap_or(dst);
                    fw.append(chain, comment, src, dst, &ep.protocol, &ep.port, "", pol);
                }
            };
            // kube-router builds named-port sets for egress only towards peer pods: to any
            // destination it matches the bare port, to ipBlocks it ignores named ports.
            let ingress = dir == Direction::Ingress;
            if !peer_pods.is_empty() {
                let ips = self.ips_of(&peer_pods);
                let peer_set = self.set(
                    &set_name(peer_prefix, String::new(), "pod"),
                    "hash:ip",
                    ips.iter().map(|ip| format!("{ip} timeout 0")).collect(),
                );
                emit(self, &comment_pods, &peer_set, &eps, Some("hash:ip"));
                if ports.is_empty() && eps.is_empty() {
                    let (src, dst) = dir.orient(&own_set, &peer_set);
                    self.append(chain, &comment_pods, src, dst, "", "", "", pol);
                }
            }
            if match_all_peers && !match_all_ports {
                emit(self, &comment_all, "", &eps, ingress.then_some("hash:ip"));
            }
            if match_all_peers && match_all_ports {
                let (src, dst) = dir.orient(&own_set, "");
                self.append(chain, &comment_all, src, dst, "", "", "", pol);
            }
            if !blocks.is_empty() {
                let block_set = self.set(
                    &set_name(peer_prefix, String::new(), "ipblock"),
                    "hash:net",
                    blocks,
                );
                if !match_all_ports {
                    let eps: &[NamedEp] = if ingress { &eps } else { &[] };
                    emit(self, &comment_block, &block_set, eps, Some("hash:net"));
                } else {
                    let (src, dst) = dir.orient(&own_set, &block_set);
                    self.append(chain, &comment_block, src, dst, "", "", "", pol);
                }
            }
        }
    }
}

/// The direction of a policy's rules: what kube-router names and matches differently.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The key of the rules in the policy spec, and in set names.
    fn key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The key of a rule's peers.
    fn peers_key(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }

    /// The set name prefixes of the selected pods and of the peers.
    fn set_prefixes(self) -> (&'static str, &'static str) {
        match self {
            Direction::Ingress => ("KUBE-DST", "KUBE-SRC"),
            Direction::Egress => ("KUBE-SRC", "KUBE-DST"),
        }
    }

    /// `(source, destination)` of a rule between the selected pods' set and a peer set.
    fn orient<'s>(self, own: &'s str, peer: &'s str) -> (&'s str, &'s str) {
        match self {
            Direction::Ingress => (peer, own),
            Direction::Egress => (own, peer),
        }
    }

    /// kube-router's comments of the accept rules from/to peer pods, everything, ipBlocks.
    fn comments(self, ns: &str, name: &str) -> [String; 3] {
        let by = |what: &str, sep: &str| {
            format!(
                "rule to ACCEPT traffic {what} selected by policy name{sep} {name} namespace {ns}"
            )
        };
        match self {
            Direction::Ingress => [
                by("from source pods to dest pods", ""),
                by("from all sources to dest pods", ":"),
                by("from specified ipBlocks to dest pods", ":"),
            ],
            Direction::Egress => [
                by("from source pods to dest pods", ""),
                by("from source pods to all destinations", ":"),
                by("from source pods to specified ipBlocks", ":"),
            ],
        }
    }
}

/// A veth pair: `(name, namespace, MAC address unless the kernel's)` of one end, `(name,
/// namespace, MAC address)` of the other.
fn veth(a: (&str, &str, Option<&str>), b: (&str, &str, &str)) {
    let mut cmd = Command::new("ip");
    cmd.args(["link", "add", a.0, "netns", a.1]);
    if let Some(mac) = a.2 {
        cmd.args(["address", mac]);
    }
    cmd.args([
        "type", "veth", "peer", "name", b.0, "netns", b.1, "address", b.2,
    ]);
    run(&mut cmd);
}

/// A JSON array's strings (nothing for anything else).
fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// An object's `(namespace, name)`.
fn ns_name(obj: &Value) -> (&str, &str) {
    (
        obj["metadata"]["namespace"].as_str().unwrap(),
        obj["metadata"]["name"].as_str().unwrap(),
    )
}

fn policy_chain_name(ns: &str, name: &str, fam: Family) -> String {
    format!(
        "KUBE-NWPLCY-{}",
        hash16(&format!("{ns}{name}{VERSION}{}", fam.api()))
    )
}

pub(crate) fn pod_chain_name(ns: &str, name: &str) -> String {
    format!("KUBE-POD-FW-{}", hash16(&format!("{ns}{name}{VERSION}")))
}

/// The `iptables-restore` input (filter table) and the ipsets for one family.
fn filter_table(objs: &Objects, fam: Family) -> (String, BTreeMap<String, IpSet>) {
    let pods: Vec<KPod> = objs
        .pods
        .iter()
        .map(|o| KPod {
            name: o["metadata"]["name"].as_str().unwrap(),
            ns: o["metadata"]["namespace"].as_str().unwrap(),
            labels: labels_of(o),
            ips: o["status"]["podIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
                .collect(),
            obj: o,
        })
        .collect();
    let mut fw = Firewall {
        fam,
        pods: &pods,
        namespaces: &objs.namespaces,
        chains: Vec::new(),
        rules: Vec::new(),
        sets: BTreeMap::new(),
    };
    for pol in &objs.policies {
        fw.policy_chain(pol);
    }
    let policy_rules = std::mem::take(&mut fw.rules);

    // Pod chains (pod.go).
    let mut pod_rules = Vec::new();
    let mut jumps = Vec::new();
    for p in &pods {
        let Some(ip) = p.ip(fam) else { continue };
        let fw_chain = pod_chain_name(p.ns, p.name);
        fw.chains.push(fw_chain.clone());
        // setupPodNetpolRules inserts at 1: collect in insertion order, then reverse.
        let mut inserted: Vec<String> = Vec::new();
        let (mut has_ingress, mut has_egress) = (false, false);
        for pol in &objs.policies {
            let (ns, name) = ns_name(pol);
            if ns != p.ns || !selects(&pol["spec"]["podSelector"], &p.labels) {
                continue;
            }
            let types: Vec<&str> = strs(&pol["spec"]["policyTypes"]);
            let chain = policy_chain_name(ns, name, fam);
            let comment = format!("-m comment --comment \"run through nw policy {name}\"");
            let (i, e) = (types.contains(&"Ingress"), types.contains(&"Egress"));
            if i && e {
                has_ingress = true;
                has_egress = true;
                inserted.push(format!("-A {fw_chain} {comment} -j {chain}"));
            } else if e {
                has_egress = true;
                inserted.push(format!("-A {fw_chain} -s {ip} {comment} -j {chain}"));
            } else {
                has_ingress = true;
                inserted.push(format!("-A {fw_chain} -d {ip} {comment} -j {chain}"));
            }
        }
        if !has_ingress {
            inserted.push(format!(
                "-A {fw_chain} -d {ip} -m comment --comment \"run through default ingress network policy chain\" -j KUBE-NWPLCY-DEFAULT"
            ));
        }
        if !has_egress {
            inserted.push(format!(
                "-A {fw_chain} -s {ip} -m comment --comment \"run through default egress network policy chain\" -j KUBE-NWPLCY-DEFAULT"
            ));
        }
        if fam == Family::V6 {
            for (what, ty) in [
                ("IPv6 Inverse Neighbor Discovery Advertisement ", "142"),
                ("IPv6 Inverse Neighbor Discovery Solicitation ", "141"),
                ("IPv6 neighbor-advertisement", "neighbor-advertisement"),
                ("IPv6 neighbor-solicitation", "neighbor-solicitation"),
                ("IPv6 router-advertisement", "router-advertisement"),
                ("IPv6 router-solicitation", "router-solicitation"),
            ] {
                inserted.push(format!(
                    "-A {fw_chain} -m comment --comment \"rule to permit the {what}\" -p icmpv6 --icmpv6-type {ty} -m hl --hl-eq 255 -j ACCEPT"
                ));
            }
        }
        inserted.push(format!(
            "-A {fw_chain} -m comment --comment \"rule to permit the traffic traffic to pods when source is the pod's local node\" -m addrtype --src-type LOCAL -d {ip} -j ACCEPT"
        ));
        inserted.push(format!(
            "-A {fw_chain} -m comment --comment \"rule to drop invalid state for pod\" -m conntrack --ctstate INVALID -j DROP"
        ));
        inserted.push(format!(
            "-A {fw_chain} -m comment --comment \"rule for stateful firewall for pod\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        ));
        inserted.reverse();
        pod_rules.extend(inserted);

        // interceptPodInboundTraffic, interceptPodOutboundTraffic.
        let to = format!(
            "-m comment --comment \"rule to jump traffic destined to POD name:{} namespace: {} to chain {fw_chain}\"",
            p.name, p.ns
        );
        let from = format!(
            "-m comment --comment \"rule to jump traffic from POD name:{} namespace: {} to chain {fw_chain}\"",
            p.name, p.ns
        );
        jumps.push(format!("-A KUBE-ROUTER-FORWARD {to} -d {ip} -j {fw_chain}"));
        jumps.push(format!("-A KUBE-ROUTER-OUTPUT {to} -d {ip} -j {fw_chain}"));
        jumps.push(format!(
            "-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged {to} -d {ip} -j {fw_chain}"
        ));
        for c in [
            "KUBE-ROUTER-INPUT",
            "KUBE-ROUTER-FORWARD",
            "KUBE-ROUTER-OUTPUT",
        ] {
            jumps.push(format!("-A {c} {from} -s {ip} -j {fw_chain}"));
        }
        jumps.push(format!(
            "-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged {from} -s {ip} -j {fw_chain}"
        ));

        // dropUnmarkedTrafficRules, then the 0x20000 mark.
        pod_rules.push(format!(
            "-A {fw_chain} -m comment --comment \"rule to log dropped traffic POD name:{} namespace: {}\" -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10",
            p.name, p.ns
        ));
        pod_rules.push(format!(
            "-A {fw_chain} -m comment --comment \"rule to REJECT traffic destined for POD name:{} namespace: {}\" -m mark ! --mark 0x10000/0x10000 -j REJECT",
            p.name, p.ns
        ));
        pod_rules.push(format!("-A {fw_chain} -j MARK --set-mark 0/0x10000"));
        pod_rules.push(format!(
            "-A {fw_chain} -m comment --comment \"set mark to ACCEPT traffic that comply to network policies\" -j MARK --set-mark 0x20000/0x20000"
        ));
    }

    let mut t =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in [
        "KUBE-ROUTER-INPUT",
        "KUBE-ROUTER-FORWARD",
        "KUBE-ROUTER-OUTPUT",
        "KUBE-NWPLCY-DEFAULT",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(fw.chains.iter().cloned())
    {
        t += &format!(":{c} - [0:0]\n");
    }
    // ensureTopLevelChains, ensureExplicitAccept (network_policy_controller.go).
    for (builtin, custom) in [
        ("INPUT", "KUBE-ROUTER-INPUT"),
        ("FORWARD", "KUBE-ROUTER-FORWARD"),
        ("OUTPUT", "KUBE-ROUTER-OUTPUT"),
    ] {
        let uuid = hash16(&format!(
            "{builtin}-mcomment--commentkube-router netpol-j{custom}"
        ));
        t += &format!(
            "-A {builtin} -m comment --comment \"kube-router netpol - {uuid}\" -j {custom}\n"
        );
        t += &format!(
            "-A {builtin} -m comment --comment \"KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies\" -m mark --mark 0x20000/0x20000 -j ACCEPT\n"
        );
    }
    let cidr = match fam {
        Family::V4 => SERVICE_CIDR_V4,
        Family::V6 => SERVICE_CIDR_V6,
    };
    t += &format!(
        "-A KUBE-ROUTER-INPUT -m comment --comment \"allow traffic to primary/secondary cluster IP range - {}\" -d {cidr} -j RETURN\n",
        hash16(cidr)
    );
    for p in ["tcp", "udp"] {
        t += &format!(
            "-A KUBE-ROUTER-INPUT -p {p} -m comment --comment \"allow LOCAL {} traffic to node ports - {}\" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN\n",
            p.to_uppercase(),
            hash16(p)
        );
    }
    t += "-A KUBE-NWPLCY-DEFAULT -m comment --comment \"rule to mark traffic matching a network policy\" -j MARK --set-xmark 0x10000/0x10000\n";
    for r in policy_rules.iter().chain(&pod_rules).chain(&jumps) {
        t += r;
        t.push('\n');
    }
    t += "COMMIT\n";
    (t, fw.sets)
}

fn ipset_restore(sets: &BTreeMap<String, IpSet>, fam: Family) -> String {
    let family = match fam {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let mut s = String::new();
    for (name, set) in sets {
        s += &format!(
            "create {name} {} family {family} hashsize 1024 maxelem 65536 timeout 0\n",
            set.kind
        );
        for e in &set.entries {
            s += &format!("add {name} {e}\n");
        }
    }
    s
}

/// kube-proxy's shape for one ClusterIP service: nat PREROUTING and OUTPUT → KUBE-SERVICES →
/// KUBE-SVC-… → KUBE-SEP-… DNAT.
fn nat_table(svc: &ServiceSpec, target: Ipv4Addr) -> String {
    let h = hash16(&format!("{}{}", svc.ip, svc.port));
    let p = svc.protocol;
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-SVC-{h} - [0:0]\n:KUBE-SEP-{h} - [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-SERVICES -d {ip}/32 -p {p} -m comment --comment \"test/svc cluster IP\" -m {p} --dport {port} -j KUBE-SVC-{h}\n\
         -A KUBE-SVC-{h} -j KUBE-SEP-{h}\n\
         -A KUBE-SEP-{h} -p {p} -m {p} -j DNAT --to-destination {target}:{tp}\n\
         COMMIT\n",
        ip = svc.ip,
        port = svc.port,
        tp = svc.target_port,
    )
}

// ---- The node -----------------------------------------------------------------------------------

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum End {
    Pod(&'static str),
    Outside,
    /// The node itself (source address 10.42.0.1 / fd42::1 on `cni0`).
    Node,
    /// The node's InternalIP, on its uplink (192.168.100.1 / fd00:100::1).
    Uplink,
    /// The scenario's ClusterIP service (IPv4).
    ClusterIp,
    /// [`OTHER_NODE`]'s InternalIP (192.168.100.3 / fd00:100::3), sending from the outside
    /// namespace.
    OtherNode,
    /// A public address of no pod and no node (93.184.216.34 / 2a00:1450:4001::7), sending from
    /// the outside namespace.
    Internet,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum L4 {
    /// `count` datagrams from one socket bound to `sport`: one 5-tuple, DF, IP ID 0 (IPv4) /
    /// one flow label (IPv6).
    Udp,
    /// `count` datagrams, each from its own socket, bound to `sport`, `sport + 1`, …: distinct
    /// packets of one peer, sent by one thread (a burst).
    UdpPorts,
    /// One `connect()` (a SYN) per count, from an ephemeral port, abandoned after 500 ms (before
    /// the kernel's 1 s SYN retransmission, which would be a second message with another IPv6
    /// flow label).
    TcpSyn,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Flow {
    pub from: End,
    pub to: End,
    pub v6: bool,
    pub l4: L4,
    pub sport: u16,
    pub dport: u16,
    pub count: usize,
}

pub(crate) fn udp(from: End, to: End, v6: bool, sport: u16, dport: u16, count: usize) -> Flow {
    Flow {
        from,
        to,
        v6,
        l4: L4::Udp,
        sport,
        dport,
        count,
    }
}

pub(crate) fn syn(from: End, to: End, v6: bool, dport: u16) -> Flow {
    Flow {
        from,
        to,
        v6,
        l4: L4::TcpSyn,
        sport: 0,
        dport,
        count: 1,
    }
}

/// A UDP socket bound to `bind` that sends with DF set (IPv4 ID 0, like the kernel's own DF
/// datagrams; IPv6 path MTU discovery on).
fn udp_socket(bind: SocketAddr) -> UdpSocket {
    use std::os::fd::AsRawFd;
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let (level, opt, val) = if bind.is_ipv6() {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: setsockopt on a socket we own, with an int option value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt(MTU_DISCOVER): {}",
        std::io::Error::last_os_error()
    );
    sock
}

/// One `connect()` from `src` (an ephemeral port) to `dst`, abandoned after 500 ms, as
/// [`L4::TcpSyn`].
fn syn_from(src: IpAddr, dst: SocketAddr) {
    use rustix::net::{bind, connect, socket_with, AddressFamily, SocketFlags, SocketType};
    let family = if dst.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let fd = socket_with(family, SocketType::STREAM, flags, None).expect("TCP socket");
    bind(&fd, &SocketAddr::new(src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    match connect(&fd, &dst) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => panic!("connect {src} → {dst}: {e}"),
    }
    sleep(Duration::from_millis(500));
}

/// A built node. Everything it created is removed on drop: the processes it started (by PID),
/// then the pod and outside namespaces; the node namespace and scratch directory go with `sb`.
pub(crate) struct K3sNode {
    // Field order is drop order.
    pub daemon: Option<Daemon>,
    api: Option<NsApi>,
    pub sb: Sandbox,
    pub scenario: Scenario,
    pub objects: Objects,
    pub outside: String,
    pod_netns: BTreeMap<String, String>,
    /// NFLOG rule packet total (both families) when the daemon started.
    kernel_base: Cell<u64>,
}

impl Drop for K3sNode {
    fn drop(&mut self) {
        drop(self.daemon.take());
        drop(self.api.take());
    }
}

impl K3sNode {
    /// Builds the node: namespaces, bridge, veths, routes, kube-router's rules (both families),
    /// the ClusterIP DNAT, and the fake API server (in the node namespace) serving the objects.
    /// Panics naming the kernel feature when one is missing.
    pub fn build(tag: &str, scenario: Scenario) -> K3sNode {
        let pid = std::process::id();
        let sb = Sandbox::new(&format!("k3s{tag}"));
        let node = sb.ns.clone();
        let objects = scenario.objects();
        let mut me = K3sNode {
            daemon: None,
            api: None,
            sb,
            objects,
            outside: format!("k3o-{tag}-{pid}"),
            pod_netns: BTreeMap::new(),
            scenario,
            kernel_base: Cell::new(0),
        };
        // Node: the bridge first (bridge netfilter's sysctls need the bridge code), then sysctls.
        ip_batch(
            &node,
            "link add cni0 address 0a:58:0a:2a:00:01 type bridge\n\
             addr add 10.42.0.1/24 dev cni0\n\
             addr add fd42::1/64 dev cni0 nodad\n\
             link set cni0 up\n",
        );
        for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
            let path = format!("/proc/sys/net/bridge/{key}");
            let ok = in_netns(&node)
                .args(["sh", "-c", &format!("echo 1 > {path} && cat {path}")])
                .output()
                .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1")
                .unwrap_or(false);
            assert!(
                ok,
                "kernel feature missing: bridge netfilter (br_netfilter) — cannot set net.bridge.{key}=1 \
                 in the node's network namespace ({path}); pod-to-pod traffic on cni0 would bypass iptables"
            );
        }
        run(in_netns(&node).args([
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.default.send_redirects=0",
        ]));

        // Outside.
        me.sb.netns_named(me.outside.clone());
        veth(
            ("uplink", &node, Some("02:64:00:00:00:01")),
            ("eth0", &me.outside, "02:64:00:00:00:02"),
        );
        ip_batch(
            &node,
            "addr add 192.168.100.1/24 dev uplink\n\
             addr add fd00:100::1/64 dev uplink nodad\n\
             link set uplink up\n\
             neigh replace 192.168.100.2 lladdr 02:64:00:00:00:02 dev uplink nud permanent\n\
             neigh replace fd00:100::2 lladdr 02:64:00:00:00:02 dev uplink nud permanent\n\
             neigh replace 192.168.100.3 lladdr 02:64:00:00:00:02 dev uplink nud permanent\n\
             neigh replace fd00:100::3 lladdr 02:64:00:00:00:02 dev uplink nud permanent\n\
             route add 93.184.216.34/32 via 192.168.100.2\n\
             route add 2a00:1450:4001::7/128 via fd00:100::2\n",
        );
        ip_batch(
            &me.outside,
            "link set lo up\n\
             addr add 192.168.100.2/24 dev eth0\n\
             addr add fd00:100::2/64 dev eth0 nodad\n\
             addr add 192.168.100.3/32 dev eth0\n\
             addr add 93.184.216.34/32 dev eth0\n\
             addr add fd00:100::3/128 dev eth0 nodad preferred_lft 0\n\
             addr add 2a00:1450:4001::7/128 dev eth0 nodad preferred_lft 0\n\
             link set eth0 up\n\
             route add 10.42.0.0/24 via 192.168.100.1\n\
             route add 10.43.0.0/16 via 192.168.100.1\n\
             route add fd42::/64 via fd00:100::1\n\
             neigh replace 192.168.100.1 lladdr 02:64:00:00:00:01 dev eth0 nud permanent\n\
             neigh replace fd00:100::1 lladdr 02:64:00:00:00:01 dev eth0 nud permanent\n",
        );

        // Pods.
        let pods = me.scenario.pods.clone();
        let mut node_neigh = String::new();
        for p in &pods {
            let ns = format!("k3p-{tag}-{}-{pid}", p.host);
            me.sb.netns_named(ns.clone());
            let host_if = format!("veth{:02x}", p.host);
            veth((&host_if, &node, None), ("eth0", &ns, &p.mac()));
            ip_batch(
                &node,
                &format!("link set {host_if} master cni0\nlink set {host_if} up\n"),
            );
            let mut cmds = format!(
                "link set lo up\n\
                 addr add {v4}/24 dev eth0\n\
                 addr add {v6}/64 dev eth0 nodad\n\
                 link set eth0 up\n\
                 route add default via 10.42.0.1\n\
                 route add default via fd42::1\n\
                 neigh replace 10.42.0.1 lladdr 0a:58:0a:2a:00:01 dev eth0 nud permanent\n\
                 neigh replace fd42::1 lladdr 0a:58:0a:2a:00:01 dev eth0 nud permanent\n",
                v4 = p.v4(),
                v6 = p.v6()
            );
            for q in &pods {
                if q.host != p.host {
                    cmds += &format!(
                        "neigh replace {} lladdr {} dev eth0 nud permanent\nneigh replace {} lladdr {} dev eth0 nud permanent\n",
                        q.v4(),
                        q.mac(),
                        q.v6(),
                        q.mac()
                    );
                }
            }
            ip_batch(&ns, &cmds);
            if me.scenario.zero_flow_labels {
                run(in_netns(&ns).args(["sysctl", "-qw", "net.ipv6.auto_flowlabels=0"]));
            }
            node_neigh += &format!(
                "neigh replace {} lladdr {} dev cni0 nud permanent\nneigh replace {} lladdr {} dev cni0 nud permanent\n",
                p.v4(),
                p.mac(),
                p.v6(),
                p.mac()
            );
            me.pod_netns.insert(p.name.clone(), ns);
        }
        ip_batch(&node, &node_neigh);

        me.probe_features();
        me.load_firewall();
        let api = NsApi::start(&node, API_PORT);
        let o = &me.objects;
        for (path, objects) in [
            (NAMESPACES, &o.namespaces),
            (PODS, &o.pods),
            (POLICIES, &o.policies),
            (SERVICES, &o.services),
            (ENDPOINT_SLICES, &o.endpoint_slices),
            (NODES, &o.nodes),
        ] {
            for obj in objects {
                api.apply(path, obj.clone());
            }
        }
        me.api = Some(api);
        me
    }

    pub fn node_ns(&self) -> &str {
        &self.sb.ns
    }

    /// The fake API server (what it serves, the Events written to it).
    pub fn api(&self) -> &FakeApi {
        self.api.as_ref().expect("the API server runs")
    }

    /// Each match and target kube-router's rules use, tried once in a scratch chain, so a
    /// missing kernel feature is named instead of failing inside `iptables-restore`.
    fn probe_features(&self) {
        // (feature, tool, the match or target: arguments split on blanks)
        #[rustfmt::skip]
        let probes: &[(&str, &str, &str)] = &[
            ("physdev match (xt_physdev, bridge netfilter)",  "iptables",  "-m physdev --physdev-is-bridged"),
            ("ipset match (xt_set)",                          "iptables",  "-m set --match-set NFTEST-PROBE src"),
            ("addrtype match (xt_addrtype)",                  "iptables",  "-m addrtype --src-type LOCAL"),
            ("conntrack match (xt_conntrack)",                "iptables",  "-m conntrack --ctstate INVALID"),
            ("mark match (xt_mark)",                          "iptables",  "-m mark ! --mark 0x10000/0x10000"),
            ("limit match (xt_limit)",                        "iptables",  "-m limit --limit 10/minute --limit-burst 10"),
            ("comment match (xt_comment)",                    "iptables",  "-m comment --comment probe"),
            ("multiport match (xt_multiport)",                "iptables",  "-p tcp -m multiport --dports 1:2"),
            ("NFLOG target (xt_NFLOG)",                       "iptables",  "-j NFLOG --nflog-group 100"),
            ("REJECT target",                                 "iptables",  "-j REJECT"),
            ("MARK target",                                   "iptables",  "-j MARK --set-xmark 0x10000/0x10000"),
            ("IPv6 physdev match",                            "ip6tables", "-m physdev --physdev-is-bridged"),
            ("IPv6 NFLOG target",                             "ip6tables", "-j NFLOG --nflog-group 100"),
            ("IPv6 hl match (ip6t_hl)",                       "ip6tables", "-p icmpv6 --icmpv6-type 142 -m hl --hl-eq 255"),
            ("IPv6 REJECT target",                            "ip6tables", "-j REJECT"),
        ];
        let ns = self.node_ns();
        let ok = |args: &[&str]| {
            in_netns(ns)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map(|o| {
                    (
                        o.status.success(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_else(|e| (false, e.to_string()))
        };
        let (fine, err) = ok(&["ipset", "create", "NFTEST-PROBE", "hash:ip"]);
        assert!(
            fine,
            "kernel feature or tool missing: ipset (hash:ip sets; install `ipset`): {err}"
        );
        for tool in ["iptables", "ip6tables"] {
            let (fine, err) = ok(&[tool, "-N", "NFTEST-PROBE"]);
            assert!(fine, "{tool} does not work in the node namespace: {err}");
        }
        for (feature, tool, m) in probes {
            let mut args = vec![*tool, "-A", "NFTEST-PROBE"];
            args.extend(m.split_whitespace());
            let (fine, err) = ok(&args);
            assert!(
                fine,
                "kernel feature missing: {feature} ({tool} {m}): {err}"
            );
        }
        for tool in ["iptables", "ip6tables"] {
            ok(&[tool, "-F", "NFTEST-PROBE"]);
            ok(&[tool, "-X", "NFTEST-PROBE"]);
        }
        ok(&["ipset", "destroy", "NFTEST-PROBE"]);
    }

    /// The rules and sets, as text (for tests that check the layout itself).
    pub fn firewall_text(&self, v6: bool) -> String {
        let fam = if v6 { Family::V6 } else { Family::V4 };
        filter_table(&self.objects, fam).0
    }

    fn load_firewall(&self) {
        let ns = self.node_ns();
        for (fam, restore) in [
            (Family::V4, "iptables-restore"),
            (Family::V6, "ip6tables-restore"),
        ] {
            let (table, sets) = filter_table(&self.objects, fam);
            fs::write(self.sb.path(&format!("{restore}.filter")), &table).expect("write rules");
            run_stdin(
                in_netns(ns).args(["ipset", "restore"]),
                &ipset_restore(&sets, fam),
            );
            run_stdin(in_netns(ns).arg(restore), &table);
        }
        if let Some(svc) = &self.scenario.service {
            let target = self.pod(&svc.pod).v4();
            run_stdin(
                in_netns(ns).args(["iptables-restore", "--noflush"]),
                &nat_table(svc, target),
            );
        }
    }

    pub fn pod(&self, name: &str) -> &PodSpec {
        self.scenario
            .pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} in the scenario"))
    }

    pub fn addr(&self, end: End, v6: bool) -> IpAddr {
        match (end, v6) {
            (End::Pod(n), false) => self.pod(n).v4().into(),
            (End::Pod(n), true) => self.pod(n).v6().into(),
            (End::Outside, false) => OUTSIDE_V4.into(),
            (End::Outside, true) => OUTSIDE_V6.into(),
            (End::Node, false) => NODE_V4.into(),
            (End::Node, true) => NODE_V6.into(),
            (End::Uplink, false) => UPLINK_V4.into(),
            (End::Uplink, true) => UPLINK_V6.into(),
            (End::ClusterIp, false) => self.scenario.service.as_ref().expect("a service").ip.into(),
            (End::ClusterIp, true) => panic!("the scenario has no IPv6 ClusterIP"),
            (End::OtherNode, false) => OTHER_NODE_V4.into(),
            (End::OtherNode, true) => OTHER_NODE_V6.into(),
            (End::Internet, false) => INTERNET_V4.into(),
            (End::Internet, true) => INTERNET_V6.into(),
        }
    }

    fn netns_of(&self, end: End) -> String {
        match end {
            End::Pod(n) => self.pod_netns[n].clone(),
            End::Outside | End::OtherNode | End::Internet => self.outside.clone(),
            End::Node | End::Uplink => self.sb.ns.clone(),
            End::ClusterIp => panic!("a ClusterIP sends nothing"),
        }
    }

    /// Sends a flow from inside the sender's namespace (a thread that `setns`es there).
    pub fn send(&self, f: &Flow) {
        let dst = SocketAddr::new(self.addr(f.to, f.v6), f.dport);
        // The outside namespace's extra addresses and the uplink's are bound explicitly (the
        // kernel picks other ones otherwise).
        let src = match f.from {
            End::OtherNode | End::Internet | End::Uplink => self.addr(f.from, f.v6),
            _ if f.v6 => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        };
        let f = *f;
        spawn_in(&self.netns_of(f.from), move || {
            match f.l4 {
                L4::Udp => {
                    let sock = udp_socket(SocketAddr::new(src, f.sport));
                    for _ in 0..f.count {
                        // Unconnected: ICMP errors from REJECT do not fail the next send.
                        let _ = sock.send_to(b"netpol-nflog k3s node", dst);
                    }
                }
                L4::UdpPorts => {
                    for i in 0..f.count {
                        let port = f.sport + u16::try_from(i).expect("ports");
                        let sock = udp_socket(SocketAddr::new(src, port));
                        let _ = sock.send_to(b"netpol-nflog k3s node", dst);
                    }
                }
                L4::TcpSyn if src.is_unspecified() => {
                    for _ in 0..f.count {
                        let _ = TcpStream::connect_timeout(&dst, Duration::from_millis(500));
                    }
                }
                L4::TcpSyn => {
                    for _ in 0..f.count {
                        syn_from(src, dst);
                    }
                }
            }
        })
        .join()
        .expect("sender thread panicked");
    }

    // ---- Kernel counters ----

    /// `(packets, rule)` of every rule of the filter table of a family, from `iptables-save -c`.
    pub fn counters(&self, v6: bool) -> Vec<(u64, String)> {
        let tool = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        let out = run(in_netns(self.node_ns()).args([tool, "-c", "-t", "filter"]));
        out.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix('[')?;
                let (pk, rule) = rest.split_once(']')?;
                Some((pk.split(':').next()?.parse().ok()?, rule.trim().to_string()))
            })
            .collect()
    }

    /// NFLOG messages the kernel has sent so far (both families): the sum of the NFLOG rules'
    /// packet counters (a `-m limit` rule counts only what it logged).
    pub fn nflog_total(&self) -> u64 {
        [false, true]
            .iter()
            .flat_map(|v6| self.counters(*v6))
            .filter(|(_, r)| r.contains("-j NFLOG"))
            .map(|(n, _)| n)
            .sum()
    }

    /// Packets of the rules of a family that contain every needle.
    pub fn counter(&self, v6: bool, needles: &[&str]) -> u64 {
        self.counters(v6)
            .iter()
            .filter(|(_, r)| needles.iter().all(|n| r.contains(n)))
            .map(|(n, _)| n)
            .sum()
    }

    // ---- The daemon ----

    /// Starts `netpol-nflogd` in the node namespace against the fake API (JSON on stdout,
    /// syslogemu to `syslogemu.log`, metrics on 127.0.0.1:9109) with `config` as its TOML, and
    /// waits until it is bound and its watches are synced.
    pub fn start_daemon(&mut self, config: &str) -> &Daemon {
        self.start_daemon_with(config, &["--tail-socket", ""])
    }

    /// [`K3sNode::start_daemon`] with more arguments (`--tail-socket PATH`, …) instead of no tail
    /// socket.
    pub fn start_daemon_with(&mut self, config: &str, extra: &[&str]) -> &Daemon {
        let kubeconfig = write_kubeconfig(&self.sb.dir, API_PORT);
        self.kernel_base.set(self.nflog_total());
        let d = Daemon::cmd(&self.sb)
            .config(config)
            .args([
                "--node-name",
                NODE,
                "--hostname",
                HOSTNAME,
                "--stdout",
                "json",
            ])
            .syslogemu(&self.sb.path("syslogemu.log"))
            .args(extra)
            .metrics(METRICS_PORT)
            .args(["--log-level", "info"])
            .env("KUBECONFIG", kubeconfig.to_str().unwrap())
            .start();
        let timeout = Duration::from_secs(15);
        wait_readyz(
            &self.sb,
            METRICS_PORT,
            &d,
            timeout,
            "the watches synced",
            all_synced,
        );
        self.daemon = Some(d);
        self.daemon.as_ref().unwrap()
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon started")
    }

    /// Every JSON packet event (not summaries) the daemon printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r.get("type").is_none())
            .collect()
    }

    pub fn records(&self) -> Vec<Value> {
        self.daemon().json_records()
    }

    pub fn syslogemu_lines(&self) -> Vec<String> {
        read_lossy(&self.sb.path("syslogemu.log"))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the daemon has received every message the kernel's NFLOG rules sent since it
    /// started, then for the correlation window and the kernel flush to pass.
    pub fn settle(&self) {
        let want = (self.nflog_total() - self.kernel_base.get()) as f64;
        let name = "netpol_nflog_messages_received_total";
        wait_counter(&self.sb, METRICS_PORT, self.daemon(), name, want);
        sleep(Duration::from_millis(600));
    }

    // ---- ulogd2 as the oracle ----

    /// Runs ulogd2 (LOGEMU) bound to group 100 in the node namespace while `traffic` runs;
    /// returns its syslogemu lines.
    pub fn run_ulogd(&self, traffic: impl FnOnce()) -> Vec<String> {
        let flush = Duration::from_millis(500);
        let out = conformance::run_ulogd(&self.sb.dir, self.node_ns(), flush, traffic);
        read_lossy(&out).lines().map(str::to_string).collect()
    }

    /// Runs the daemon standalone (`[kubernetes] mode = "off"`, no rate limit) while `traffic`
    /// runs; SIGTERM drains; returns its syslogemu lines.
    pub fn run_daemon_plain(&self, traffic: impl FnOnce()) -> Vec<String> {
        let out = self.sb.path("plain.syslogemu");
        let mut d = Daemon::cmd(&self.sb)
            .tag("plain")
            .config(STANDALONE)
            .args(["--hostname", HOSTNAME, "--no-rate-limit"])
            .syslogemu(&out)
            .quiet()
            .start();
        traffic();
        d.terminate_ok();
        read_lossy(&out).lines().map(str::to_string).collect()
    }
}
