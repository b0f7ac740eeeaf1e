//! The attribution index: what the daemon knows of the cluster, kept small.
//!
//! In: watch events for NetworkPolicies, Pods and Namespaces, and for Services, EndpointSlices
//! and Nodes ([`peers`]) (fed by [`super::kube`], or by tests and benches directly). Out: [`Index::resolve_flow`], which turns an NFLOG prefix and a
//! [`Flow`] into a [`KubeContext`] (the decision rules are in the [`super`] module
//! documentation), and the per-policy limits the annotations ask for.
//!
//! Only the fields attribution reads are kept, in compact form: strings that repeat across
//! objects (namespaces, nodes, workloads, label keys and values) are interned as `Arc<str>`,
//! objects are keyed by their uid as a `u128`, and each pod's [`PodMeta`] is built once so a
//! resolved event shares it instead of copying strings. Pods that cannot be found by IP
//! (hostNetwork pods share the node's IP; finished pods have given theirs back) are not stored.
//! Each policy keeps its rules compiled ([`super::rules::Rules`], only for the directions its
//! `policyTypes` name) and each pod its named container ports, to evaluate `ports`.
//!
//! A relist (`Init` … `InitDone`) stamps every object it sees with a new generation and then
//! sweeps the others, so the index keeps answering during a relist and never holds two copies.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher::Event;

use super::rules::{self, NamedPort, Peer, PodInfo, Query, Rules, Verdict};
use super::selector::{Labels, Selector, SelectorError};
use super::{Attribution, Direction, Flow, KubeContext, Name, PodMeta, PolicyRef, PolicySource};
use crate::limit::{self, Limit, LimitError};

/// An object's uid (a UUID) as a number: 16 bytes instead of a 36-byte string.
type Uid = u128;

/// kube-router's `safeJoin(ns, name)` ([utils.go](https://github.com/k3s-io/kube-router/blob/5f0697bb4c891f1b1218361f9ceb68dac1724253/pkg/controllers/netpol/utils.go), K3s fork): the
/// `ns/name` it writes after `DROP by policy `, truncated so the whole prefix fits the 64-byte
/// NFLOG prefix. Go slices bytes; names are ASCII (DNS labels), so byte and char agree.
pub fn safe_join(ns: &str, name: &str) -> String {
    let (n, m) = (ns.as_bytes(), name.as_bytes());
    let (ns_part, name_part) = if n.len() + m.len() < 48 {
        (n, m)
    } else if n.len() < 24 {
        (n, &m[..47 - n.len()])
    } else if m.len() < 24 {
        (&n[..47 - m.len()], m)
    } else {
        (&n[..23], &m[..23])
    };
    let mut out = Vec::with_capacity(ns_part.len() + 1 + name_part.len());
    out.extend_from_slice(ns_part);
    out.push(b'/');
    out.extend_from_slice(name_part);
    String::from_utf8_lossy(&out).into_owned()
}

/// A policy annotation kube-router rejects (it then uses the defaults for both values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAnnotation {
    pub policy: PolicyRef,
    /// The annotation key holding the bad value.
    pub annotation: &'static str,
    /// The bad value, verbatim.
    pub value: String,
    pub error: LimitError,
}

/// What a policy event changed that the rest of the daemon must act on.
#[derive(Debug, Default, PartialEq)]
pub struct PolicyUpdate {
    /// `(key, limit)` for every policy key whose [`Index::policy_limit`] changed; `None` means
    /// back to the configured default (annotations removed, or the policy deleted).
    pub limits: Vec<(String, Option<Limit>)>,
    /// Annotations that became invalid (or changed to another bad value): warn once for each.
    pub invalid: Vec<InvalidAnnotation>,
}

/// How many objects of each kind the index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub policies: usize,
    pub pods: usize,
    pub pod_ips: usize,
    pub namespaces: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    /// Addresses held by the EndpointSlices (an address in two slices counts twice).
    pub endpoint_addresses: usize,
    pub nodes: usize,
    pub interned_strings: usize,
    pub interned_label_sets: usize,
}

struct PolicyEntry {
    reference: PolicyRef,
    namespace: Arc<str>,
    /// `safe_join(namespace, name)`: what the NFLOG prefix carries.
    key: Arc<str>,
    /// `None` when the selector is invalid: the policy is treated as selecting nothing.
    selector: Option<Selector>,
    ingress: bool,
    egress: bool,
    /// The `ingress` rules, kept only when the policy is of type Ingress (as kube-router does).
    ingress_rules: Rules,
    /// The `egress` rules, kept only when the policy is of type Egress.
    egress_rules: Rules,
    /// The limit its annotations ask for; `None` when it has neither annotation.
    limit: Option<Limit>,
    invalid: Option<InvalidAnnotation>,
}

impl PolicyEntry {
    fn covers(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    fn rules(&self, dir: Direction) -> &Rules {
        match dir {
            Direction::Ingress => &self.ingress_rules,
            Direction::Egress => &self.egress_rules,
        }
    }

    fn selects(&self, pod: &PodEntry) -> bool {
        *self.namespace == *pod.meta.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
    }
}

struct PodEntry {
    uid: Uid,
    meta: Arc<PodMeta>,
    labels: Labels,
    ips: Box<[IpAddr]>,
    /// The containers' named ports, for `ports` entries that name one.
    ports: Box<[NamedPort]>,
}

/// Objects of one kind by uid, each stamped with the generation of the list or event that last
/// saw it.
struct Store<T> {
    items: HashMap<Uid, (Arc<T>, u32)>,
    generation: u32,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: HashMap::new(),
            generation: 0,
        }
    }
}

impl<T> Store<T> {
    fn begin_relist(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn stale(&self) -> Vec<Uid> {
        let g = self.generation;
        self.items
            .iter()
            .filter(|(_, (_, seen))| *seen != g)
            .map(|(uid, _)| *uid)
            .collect()
    }
}

/// Strings and label sets shared between objects. Entries only the interner still holds are
/// dropped by `gc`.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>, HashSet<Labels>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    fn labels(&mut self, labels: Labels) -> Labels {
        if let Some(l) = self.1.get(&labels) {
            return l.clone();
        }
        self.1.insert(labels.clone());
        labels
    }

    fn gc(&mut self) {
        // Sets first: dropping a set releases its strings.
        self.1.retain(|l| l.holders() > 1);
        self.0.retain(|a| Arc::strong_count(a) > 1);
    }
}

/// A map by IP address, one table per family: an `IpAddr` key takes 17 bytes and pads the
/// entry, an `Ipv4Addr` 4 and an `Ipv6Addr` 16 (a third less memory for the pod and endpoint
/// addresses, the largest tables).
struct IpMap<V> {
    v4: HashMap<Ipv4Addr, V>,
    v6: HashMap<Ipv6Addr, V>,
}

impl<V> Default for IpMap<V> {
    fn default() -> Self {
        IpMap {
            v4: HashMap::new(),
            v6: HashMap::new(),
        }
    }
}

impl<V> IpMap<V> {
    fn get(&self, ip: &IpAddr) -> Option<&V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(a),
            IpAddr::V6(a) => self.v6.get(a),
        }
    }

    fn get_mut(&mut self, ip: &IpAddr) -> Option<&mut V> {
        match ip {
            IpAddr::V4(a) => self.v4.get_mut(a),
            IpAddr::V6(a) => self.v6.get_mut(a),
        }
    }

    fn insert(&mut self, ip: IpAddr, v: V) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.insert(a, v),
            IpAddr::V6(a) => self.v6.insert(a, v),
        }
    }

    fn remove(&mut self, ip: &IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.remove(a),
            IpAddr::V6(a) => self.v6.remove(a),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.v4.values().chain(self.v6.values())
    }
}

/// Removals between two interner sweeps outside relists: amortises the sweep's full scan.
const GC_EVERY: u32 = 4096;

/// The attribution index. See the module documentation.
#[derive(Default)]
pub struct Index {
    strings: Interner,
    removals_since_gc: u32,
    policies: Store<PolicyEntry>,
    /// Policy uids by prefix key; several when truncation makes two policies collide.
    by_key: HashMap<Arc<str>, Vec<Uid>>,
    by_namespace: HashMap<Arc<str>, Vec<Uid>>,
    pods: Store<PodEntry>,
    by_ip: IpMap<Arc<PodEntry>>,
    namespaces: Store<(Arc<str>, Labels)>,
    namespace_by_name: HashMap<Arc<str>, Uid>,
    /// Services, EndpointSlices and Nodes: see [`peers`].
    peers: peers::Peers,
    /// The node whose pod chains this daemon sees; `None`: every known pod counts as local.
    local_node: Option<Arc<str>>,
    /// Bumped by every change, so readers can cache what they resolved.
    generation: u64,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes with every update of the index.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn counts(&self) -> Counts {
        Counts {
            policies: self.policies.items.len(),
            pods: self.pods.items.len(),
            pod_ips: self.by_ip.len(),
            namespaces: self.namespaces.items.len(),
            services: self.peers.services.items.len(),
            endpoint_slices: self.peers.slices.items.len(),
            endpoint_addresses: self.endpoint_addresses(),
            nodes: self.peers.nodes.items.len(),
            interned_strings: self.strings.0.len(),
            interned_label_sets: self.strings.1.len(),
        }
    }

    // ---- NetworkPolicies ----------------------------------------------------------------------

    /// Feeds one watcher event for NetworkPolicies.
    pub fn policy_event(&mut self, ev: &Event<NetworkPolicy>) -> PolicyUpdate {
        self.generation += 1;
        match ev {
            Event::Init => {
                self.policies.begin_relist();
                PolicyUpdate::default()
            }
            Event::InitApply(np) | Event::Apply(np) => self.apply_policy(np),
            Event::Delete(np) => self.delete_policy(np),
            Event::InitDone => self.finish_policy_relist(),
        }
    }

    /// Adds or replaces a NetworkPolicy.
    pub fn apply_policy(&mut self, np: &NetworkPolicy) -> PolicyUpdate {
        self.generation += 1;
        let uid = uid_of(&np.metadata);
        let entry = self.policy_entry(np);
        let key = entry.key.clone();
        let before = self.policy_limit(&key);
        let old = self.remove_policy_uid(uid);
        let invalid = match (
            &entry.invalid,
            old.as_ref().and_then(|o| o.invalid.as_ref()),
        ) {
            (Some(new), Some(old))
                if new.value == old.value && new.annotation == old.annotation =>
            {
                None
            }
            (new, _) => new.clone(),
        };
        self.by_key.entry(key.clone()).or_default().push(uid);
        self.by_namespace
            .entry(entry.namespace.clone())
            .or_default()
            .push(uid);
        self.policies
            .items
            .insert(uid, (Arc::new(entry), self.policies.generation));
        let mut update = PolicyUpdate::default();
        if let Some(old) = old.filter(|o| o.key != key) {
            self.push_limit_change(&mut update, &old.key, old.limit);
        }
        self.push_limit_change(&mut update, &key, before);
        update.invalid.extend(invalid);
        update
    }

    /// Removes a NetworkPolicy (a `DELETED` event carries the last state of the object).
    pub fn delete_policy(&mut self, np: &NetworkPolicy) -> PolicyUpdate {
        self.generation += 1;
        self.delete_policy_uid(uid_of(&np.metadata))
    }

    fn delete_policy_uid(&mut self, uid: Uid) -> PolicyUpdate {
        let mut update = PolicyUpdate::default();
        let Some(entry) = self.policies.items.get(&uid).map(|(e, _)| e.clone()) else {
            return update;
        };
        let before = self.policy_limit(&entry.key);
        self.remove_policy_uid(uid);
        self.push_limit_change(&mut update, &entry.key, before);
        self.note_removal();
        update
    }

    fn finish_policy_relist(&mut self) -> PolicyUpdate {
        let mut update = PolicyUpdate::default();
        for uid in self.policies.stale() {
            let u = self.delete_policy_uid(uid);
            update.limits.extend(u.limits);
        }
        self.strings.gc();
        update
    }

    fn push_limit_change(&self, update: &mut PolicyUpdate, key: &str, before: Option<Limit>) {
        let after = self.policy_limit(key);
        if after != before {
            update.limits.push((key.to_string(), after));
        }
    }

    fn remove_policy_uid(&mut self, uid: Uid) -> Option<Arc<PolicyEntry>> {
        let (entry, _) = self.policies.items.remove(&uid)?;
        remove_from(&mut self.by_key, &entry.key, uid);
        remove_from(&mut self.by_namespace, &entry.namespace, uid);
        Some(entry)
    }

    fn policy_entry(&mut self, np: &NetworkPolicy) -> PolicyEntry {
        let meta = &np.metadata;
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let reference = PolicyRef {
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        let spec = np.spec.as_ref();
        // `podSelector` is required by the API; `{}` (and a missing one) selects every pod.
        let selector = match spec.and_then(|s| s.pod_selector.as_ref()) {
            Some(sel) => Selector::from_k8s(sel)
                .map_err(|e| warn_selector(&reference, &e))
                .ok(),
            None => Some(Selector::everything()),
        };
        let (ingress, egress) = policy_types(np);
        let ingress_rules = match spec {
            Some(s) if ingress => Rules::from_ingress(s.ingress.as_deref()),
            _ => Rules::default(),
        };
        let egress_rules = match spec {
            Some(s) if egress => Rules::from_egress(s.egress.as_deref()),
            _ => Rules::default(),
        };
        let (limit, invalid) = annotation_limit(meta, &reference);
        PolicyEntry {
            key: self.strings.get(&safe_join(ns, name)),
            namespace: self.strings.get(ns),
            reference,
            selector,
            ingress,
            egress,
            ingress_rules,
            egress_rules,
            limit,
            invalid,
        }
    }

    /// The limit the annotations of the policies behind a prefix key ask for, `None` when none
    /// of them has the annotations (the configured default then applies). When truncation makes
    /// several policies share a key, the most permissive limit wins: the daemon must not
    /// suppress what the kernel let through.
    pub fn policy_limit(&self, key: &str) -> Option<Limit> {
        self.by_key
            .get(key)?
            .iter()
            .filter_map(|uid| self.policies.items.get(uid)?.0.limit)
            .max_by(|a, b| rate(a).total_cmp(&rate(b)).then(a.burst.cmp(&b.burst)))
    }

    /// Every `(key, limit)` set by annotations, for a limiter starting from scratch.
    pub fn limits(&self) -> impl Iterator<Item = (String, Limit)> + '_ {
        self.by_key
            .keys()
            .filter_map(|k| Some((k.to_string(), self.policy_limit(k)?)))
    }

    /// The policies whose annotations kube-router rejects, sorted by namespace and name.
    pub fn invalid_annotations(&self) -> Vec<InvalidAnnotation> {
        let mut v: Vec<_> = self
            .policies
            .items
            .values()
            .filter_map(|(p, _)| p.invalid.clone())
            .collect();
        v.sort_by(|a, b| {
            (&a.policy.namespace, &a.policy.name).cmp(&(&b.policy.namespace, &b.policy.name))
        });
        v
    }

    // ---- Pods -------------------------------------------------------------------------------

    /// Feeds one watcher event for Pods.
    pub fn pod_event(&mut self, ev: &Event<Pod>) {
        self.generation += 1;
        match ev {
            Event::Init => self.pods.begin_relist(),
            Event::InitApply(p) | Event::Apply(p) => self.apply_pod(p),
            Event::Delete(p) => self.delete_pod(p),
            Event::InitDone => {
                for uid in self.pods.stale() {
                    self.remove_pod_uid(uid);
                }
                self.strings.gc();
            }
        }
    }

    /// Adds or replaces a Pod. Pods that have no IP of their own are removed instead.
    pub fn apply_pod(&mut self, pod: &Pod) {
        self.generation += 1;
        let uid = uid_of(&pod.metadata);
        let ips = own_ips(pod);
        self.remove_pod_uid(uid);
        if ips.is_empty() {
            return;
        }
        let entry = Arc::new(self.pod_entry(pod, uid, ips));
        for ip in entry.ips.iter() {
            // An IP is reused only after its pod is gone; if a stale pod still holds it (a
            // missed delete), the newer pod is the right answer.
            self.by_ip.insert(*ip, entry.clone());
        }
        self.pods.items.insert(uid, (entry, self.pods.generation));
    }

    pub fn delete_pod(&mut self, pod: &Pod) {
        self.generation += 1;
        self.remove_pod_uid(uid_of(&pod.metadata));
        self.note_removal();
    }

    fn remove_pod_uid(&mut self, uid: Uid) {
        let Some((entry, _)) = self.pods.items.remove(&uid) else {
            return;
        };
        for ip in entry.ips.iter() {
            if self.by_ip.get(ip).is_some_and(|p| p.uid == uid) {
                self.by_ip.remove(ip);
            }
        }
    }

    fn pod_entry(&mut self, pod: &Pod, uid: Uid, ips: Box<[IpAddr]>) -> PodEntry {
        let meta = &pod.metadata;
        let name = meta.name.as_deref().unwrap_or_default();
        let labels = self.labels(meta);
        let (kind, workload) = workload(
            name,
            meta.owner_references.as_deref().unwrap_or_default(),
            &labels,
        );
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let ports = self.named_ports(pod);
        let mut name_of = |s: &str| Name::from(self.strings.get(s));
        let meta = PodMeta {
            pod: name.to_string(),
            namespace: name_of(meta.namespace.as_deref().unwrap_or_default()),
            workload_kind: Some(name_of(kind)),
            workload: Some(name_of(workload)),
            node: node.map(&mut name_of),
        };
        PodEntry {
            uid,
            meta: Arc::new(meta),
            labels,
            ips,
            ports,
        }
    }

    /// The named container ports of a pod (kube-router's `grabNamedPortFromPod` reads the
    /// containers, not the init containers). Unnamed ports cannot be referred to: not kept.
    fn named_ports(&mut self, pod: &Pod) -> Box<[NamedPort]> {
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        let mut v = Vec::new();
        for p in containers.flat_map(|c| c.ports.iter().flatten()) {
            let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let protocol = rules::protocol_number(p.protocol.as_deref().unwrap_or("TCP"));
            let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0);
            if let (Some(protocol), Some(port)) = (protocol, port) {
                v.push(NamedPort {
                    name: self.strings.get(name),
                    protocol,
                    port,
                });
            }
        }
        v.into_boxed_slice()
    }

    fn labels(&mut self, meta: &ObjectMeta) -> Labels {
        let pairs: Vec<_> = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (self.strings.get(k), self.strings.get(v)))
            .collect();
        self.strings.labels(Labels::new(pairs))
    }

    // ---- Namespaces ---------------------------------------------------------------------------

    /// Feeds one watcher event for Namespaces (their labels, for `namespaceSelector`).
    pub fn namespace_event(&mut self, ev: &Event<Namespace>) {
        self.generation += 1;
        match ev {
            Event::Init => self.namespaces.begin_relist(),
            Event::InitApply(ns) | Event::Apply(ns) => self.apply_namespace(ns),
            Event::Delete(ns) => self.delete_namespace(ns),
            Event::InitDone => {
                for uid in self.namespaces.stale() {
                    self.remove_namespace_uid(uid);
                }
            }
        }
    }

    pub fn apply_namespace(&mut self, ns: &Namespace) {
        self.generation += 1;
        let name = self
            .strings
            .get(ns.metadata.name.as_deref().unwrap_or_default());
        let labels = self.labels(&ns.metadata);
        let generation = self.namespaces.generation;
        let uid = uid_of(&ns.metadata);
        self.remove_namespace_uid(uid);
        self.namespace_by_name.insert(name.clone(), uid);
        self.namespaces
            .items
            .insert(uid, (Arc::new((name, labels)), generation));
    }

    pub fn delete_namespace(&mut self, ns: &Namespace) {
        self.generation += 1;
        self.remove_namespace_uid(uid_of(&ns.metadata));
    }

    fn remove_namespace_uid(&mut self, uid: Uid) {
        let Some((entry, _)) = self.namespaces.items.remove(&uid) else {
            return;
        };
        if self.namespace_by_name.get(&entry.0) == Some(&uid) {
            self.namespace_by_name.remove(&entry.0);
        }
    }

    /// A namespace's labels, if the namespace is known.
    pub fn namespace_labels(&self, name: &str) -> Option<&Labels> {
        let uid = self.namespace_by_name.get(name)?;
        self.namespaces.items.get(uid).map(|(n, _)| &n.1)
    }

    /// The node this daemon runs on. Only the pods of that node have chains whose drops it
    /// sees, which matters when the index holds the pods of the whole cluster. `None` (the
    /// default) counts every known pod as local.
    pub fn set_local_node(&mut self, node: Option<&str>) {
        self.generation += 1;
        self.local_node = node.map(Arc::from);
    }

    fn note_removal(&mut self) {
        self.removals_since_gc += 1;
        if self.removals_since_gc >= GC_EVERY {
            self.removals_since_gc = 0;
            self.peers.gc();
            self.strings.gc();
        }
    }

    // ---- Resolution ---------------------------------------------------------------------------

    /// The pod that owns an IP, if it is known.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<Arc<PodMeta>> {
        self.by_ip.get(&ip).map(|p| p.meta.clone())
    }

    /// [`Index::resolve_flow`] without protocol and port (rules that name ports then cannot
    /// tell a direction apart).
    pub fn resolve(
        &self,
        attribution: &Attribution<'_>,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
    ) -> Option<KubeContext> {
        let flow = Flow {
            src,
            dst,
            ..Flow::default()
        };
        self.resolve_flow(attribution, &flow)
    }

    /// Attributes one NFLOG message. `None` when the index knows nothing about it (no policy
    /// named, no known pod, node or Service); a `DROP by policy` prefix always gets a context,
    /// resolved or not. Besides the pods, it names the node behind an address that is not a
    /// pod's and the Services the client aimed at (see [`peers`]).
    /// See the module documentation of [`super`] for the decision rules.
    pub fn resolve_flow(&self, attribution: &Attribution<'_>, flow: &Flow) -> Option<KubeContext> {
        let packet = Packet {
            flow,
            src: flow.src.and_then(|ip| self.by_ip.get(&ip)).map(|p| &**p),
            dst: flow.dst.and_then(|ip| self.by_ip.get(&ip)).map(|p| &**p),
        };
        let mut ctx = KubeContext {
            src: packet.src.map(|p| p.meta.clone()),
            dest: packet.dst.map(|p| p.meta.clone()),
            ..KubeContext::default()
        };
        let node = |pod: Option<&PodEntry>, ip: Option<IpAddr>| match pod {
            Some(_) => None,
            None => ip.and_then(|ip| self.node_by_ip(ip)),
        };
        ctx.src_node = node(packet.src, flow.src);
        ctx.dest_node = node(packet.dst, flow.dst);
        ctx.dest_services = self.dest_services(flow);
        let known = ctx.src.is_some() || ctx.dest.is_some();
        let peers_known =
            ctx.src_node.is_some() || ctx.dest_node.is_some() || !ctx.dest_services.is_empty();
        let (direction, found) = match attribution.source {
            PolicySource::PolicyRule => {
                let key = attribution
                    .policy_key()
                    .and_then(|k| std::str::from_utf8(k).ok());
                let found = key.map(|k| self.policies_by_key(k)).unwrap_or_default();
                self.policy_rule_candidates(found, &packet)
            }
            PolicySource::PodChain if known => self.pod_chain_candidates(&packet),
            PolicySource::PodChain | PolicySource::Custom => {
                return (known || peers_known).then_some(ctx);
            }
        };
        ctx.direction = direction;
        ctx.resolved = found.len() == 1;
        ctx.policies = refs(&found);
        Some(ctx)
    }

    /// The policies whose `safe_join` is `key`, sorted by namespace and name. An exact name is
    /// not preferred over a truncated one: kube-router would write the same prefix for both.
    fn policies_by_key(&self, key: &str) -> Vec<&PolicyEntry> {
        let mut v: Vec<&PolicyEntry> = self
            .by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|uid| Some(&*self.policies.items.get(uid)?.0))
            .collect();
        sort_policies(&mut v);
        v
    }

    /// Whether this daemon sees the drops of the pod's chain (it runs on the pod's node).
    fn has_chain_here(&self, pod: &PodEntry) -> bool {
        self.local_node
            .as_deref()
            .is_none_or(|n| pod.meta.node.as_deref() == Some(n))
    }

    /// Whether `p` protects the pod of the packet's side `dir` (the destination for ingress,
    /// the source for egress): it selects that pod, for that direction, on this node.
    fn protects(&self, p: &PolicyEntry, dir: Direction, packet: &Packet<'_>) -> bool {
        packet
            .protected(dir)
            .is_some_and(|pod| p.covers(dir) && p.selects(pod) && self.has_chain_here(pod))
    }

    /// The policies in a pod's namespace that select it and cover the direction.
    fn selecting(&self, pod: &PodEntry, dir: Direction) -> Vec<&PolicyEntry> {
        if !self.has_chain_here(pod) {
            return Vec::new();
        }
        let ns: &str = &pod.meta.namespace;
        self.by_namespace
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|uid| Some(&*self.policies.items.get(uid)?.0))
            .filter(|p| p.covers(dir) && p.selects(pod))
            .collect()
    }

    /// Whether `p`'s rules for `dir` allow the packet.
    fn verdict(&self, p: &PolicyEntry, dir: Direction, packet: &Packet<'_>) -> Verdict {
        let (peer_ip, peer_pod) = match dir {
            Direction::Ingress => (packet.flow.src, packet.src),
            Direction::Egress => (packet.flow.dst, packet.dst),
        };
        // An address the index does not know may be a pod it does not watch (on another
        // node). Rules are only weighed when both ends are known pods, so this is a safeguard.
        let peer = match peer_pod {
            Some(pod) => Peer::Pod(PodInfo {
                namespace: &pod.meta.namespace,
                labels: &pod.labels,
                namespace_labels: self.namespace_labels(&pod.meta.namespace),
            }),
            None => Peer::Unknown,
        };
        let query = Query {
            peer_ip,
            peer,
            protocol: packet.flow.protocol,
            dst_port: packet.flow.dst_port,
            dst_named_ports: packet.dst.map(|pod| &*pod.ports),
        };
        p.rules(dir).allows(&p.namespace, &query)
    }

    /// Whether the policies together (any of them) allow the packet in direction `dir`.
    fn side_verdict(
        &self,
        policies: &[&PolicyEntry],
        dir: Direction,
        packet: &Packet<'_>,
    ) -> Verdict {
        Verdict::any(policies.iter().map(|p| self.verdict(p, dir, packet)))
    }

    /// For `DROP by policy ns/name`: of the policies with that key, those that protect a pod
    /// of the packet (the destination for ingress, the source for egress). When both sides
    /// qualify, the rules decide: the side whose candidates all allow the packet is ruled out.
    /// Without evidence (no protected pod known) every key match stays a candidate.
    fn policy_rule_candidates<'a>(
        &self,
        mut found: Vec<&'a PolicyEntry>,
        packet: &Packet<'_>,
    ) -> (Option<Direction>, Vec<&'a PolicyEntry>) {
        let ingress = |p: &PolicyEntry| self.protects(p, Direction::Ingress, packet);
        let egress = |p: &PolicyEntry| self.protects(p, Direction::Egress, packet);
        let any_in = found.iter().any(|p| ingress(p));
        let any_eg = found.iter().any(|p| egress(p));
        let direction = match (any_in, any_eg) {
            (false, false) => return (None, found),
            (true, false) => Some(Direction::Ingress),
            (false, true) => Some(Direction::Egress),
            (true, true) => {
                // Could the side have dropped it: does one of its candidates not allow it?
                let could = |dir, on: &dyn Fn(&PolicyEntry) -> bool| {
                    found
                        .iter()
                        .filter(|p| on(p))
                        .any(|p| self.verdict(p, dir, packet) != Verdict::Allow)
                };
                match (
                    could(Direction::Ingress, &ingress),
                    could(Direction::Egress, &egress),
                ) {
                    (true, false) => Some(Direction::Ingress),
                    (false, true) => Some(Direction::Egress),
                    _ => None,
                }
            }
        };
        match direction {
            Some(Direction::Ingress) => found.retain(|p| ingress(p)),
            Some(Direction::Egress) => found.retain(|p| egress(p)),
            None => found.retain(|p| ingress(p) || egress(p)),
        }
        (direction, found)
    }

    /// For an empty prefix (kube-router's pod chain): which side's chain dropped it, and the
    /// policies that chain enforces. Only a pod some policy selects for a direction has rules
    /// that can reject that direction, so a side without policies is ruled out. When both sides
    /// have some, the rules decide: a side whose policies allow the packet is ruled out. When
    /// both sides deny it (or the evidence is missing), the direction is unknown and the
    /// candidates are the union.
    fn pod_chain_candidates(&self, packet: &Packet<'_>) -> (Option<Direction>, Vec<&PolicyEntry>) {
        let ingress = packet
            .dst
            .map(|p| self.selecting(p, Direction::Ingress))
            .unwrap_or_default();
        let egress = packet
            .src
            .map(|p| self.selecting(p, Direction::Egress))
            .unwrap_or_default();
        let mut found = match (ingress.is_empty(), egress.is_empty()) {
            (false, true) => return (Some(Direction::Ingress), sorted(ingress)),
            (true, false) => return (Some(Direction::Egress), sorted(egress)),
            (true, true) => return (fallback_direction(packet.src, packet.dst), Vec::new()),
            (false, false) => {
                let allows =
                    |v: &[&PolicyEntry], dir| self.side_verdict(v, dir, packet) == Verdict::Allow;
                match (
                    allows(&ingress, Direction::Ingress),
                    allows(&egress, Direction::Egress),
                ) {
                    (false, true) => return (Some(Direction::Ingress), sorted(ingress)),
                    (true, false) => return (Some(Direction::Egress), sorted(egress)),
                    _ => ingress,
                }
            }
        };
        for p in egress {
            if !found.iter().any(|f| std::ptr::eq(*f, p)) {
                found.push(p);
            }
        }
        (None, sorted(found))
    }
}

/// The packet being attributed, with the pods the index knows at either end.
struct Packet<'a> {
    flow: &'a Flow,
    src: Option<&'a PodEntry>,
    dst: Option<&'a PodEntry>,
}

impl Packet<'_> {
    /// The pod a policy of direction `dir` protects: the destination for ingress, the source
    /// for egress.
    fn protected(&self, dir: Direction) -> Option<&PodEntry> {
        match dir {
            Direction::Ingress => self.dst,
            Direction::Egress => self.src,
        }
    }
}

/// With no candidates either way, the side that is a known pod is the protected one (the
/// destination first: its ingress chain is the usual case).
fn fallback_direction(src: Option<&PodEntry>, dst: Option<&PodEntry>) -> Option<Direction> {
    match (src, dst) {
        (_, Some(_)) => Some(Direction::Ingress),
        (Some(_), None) => Some(Direction::Egress),
        (None, None) => None,
    }
}

fn sorted(mut v: Vec<&PolicyEntry>) -> Vec<&PolicyEntry> {
    sort_policies(&mut v);
    v
}

fn sort_policies(v: &mut [&PolicyEntry]) {
    v.sort_by(|a, b| {
        (&a.reference.namespace, &a.reference.name)
            .cmp(&(&b.reference.namespace, &b.reference.name))
    });
}

fn refs(v: &[&PolicyEntry]) -> Vec<PolicyRef> {
    v.iter().map(|p| p.reference.clone()).collect()
}

fn remove_from(map: &mut HashMap<Arc<str>, Vec<Uid>>, key: &str, uid: Uid) {
    if let Some(v) = map.get_mut(key) {
        v.retain(|u| *u != uid);
        if v.is_empty() {
            map.remove(key);
        }
    }
}

/// Messages per second, to compare limits with different periods.
fn rate(l: &Limit) -> f64 {
    f64::from(l.count) / l.per.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The uid as a number. Objects without a parseable uid (hand-written ones) get a hash of
/// namespace and name instead: what matters is that one object always maps to one key.
fn uid_of(meta: &ObjectMeta) -> Uid {
    if let Some(uid) = meta.uid.as_deref().and_then(parse_uuid) {
        return uid;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (meta.namespace.as_deref(), meta.name.as_deref()).hash(&mut h);
    (1u128 << 127) | u128::from(h.finish())
}

fn parse_uuid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

/// The API server fills `policyTypes` in, but objects written before that (and test objects)
/// may lack it: then Ingress is implied, plus Egress when there are egress rules
/// (`SetDefaults_NetworkPolicySpec`, k8s `pkg/apis/networking/v1/defaults.go`).
fn policy_types(np: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = np.spec.as_ref() else {
        return (true, false);
    };
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// The limit the annotations ask for (`None` without annotations), and what was wrong with
/// them. As in kube-router, a bad value makes both fall back to the defaults.
fn annotation_limit(
    meta: &ObjectMeta,
    policy: &PolicyRef,
) -> (Option<Limit>, Option<InvalidAnnotation>) {
    let get = |k: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .map(String::as_str)
    };
    let (l, b) = (get(limit::ANNOTATION_LIMIT), get(limit::ANNOTATION_BURST));
    if l.is_none() && b.is_none() {
        return (None, None);
    }
    let (limit, error) = limit::parse_annotations(l, b);
    let invalid = error.map(|error| {
        let (annotation, value) = match error {
            LimitError::Syntax(_) | LimitError::Range(_) => (limit::ANNOTATION_LIMIT, l),
            LimitError::BurstSyntax(_) | LimitError::BurstRange(_) => (limit::ANNOTATION_BURST, b),
        };
        InvalidAnnotation {
            policy: policy.clone(),
            annotation,
            value: value.unwrap_or_default().to_string(),
            error,
        }
    });
    (Some(limit), invalid)
}

fn warn_selector(policy: &PolicyRef, e: &SelectorError) {
    tracing::warn!(
        namespace = %policy.namespace,
        policy = %policy.name,
        error = %e,
        "NetworkPolicy has an invalid podSelector; it is treated as selecting no pod"
    );
}

/// The IPs a pod owns: none for hostNetwork pods (they share the node's address) and for pods
/// that have finished (their IP may already belong to another pod).
fn own_ips(pod: &Pod) -> Box<[IpAddr]> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let status = pod.status.as_ref();
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if host_network || finished {
        return Box::default();
    }
    let Some(status) = status else {
        return Box::default();
    };
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    // `podIP` is `podIPs[0]`; read it too for objects that only carry the old field.
    let mut ips: Vec<IpAddr> = listed
        .chain(status.pod_ip.as_deref())
        .filter_map(|s| s.parse().ok())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips.into_boxed_slice()
}

/// CronJob Jobs are named `<cronjob>-<minutes since the epoch>` (`getJobName` in the CronJob
/// controller): 8 digits since 1989 and until 2160. Fewer digits is a hand-named Job.
const CRONJOB_SUFFIX_MIN_DIGITS: usize = 8;

/// The workload a pod belongs to, from its controlling owner.
fn workload<'a>(pod: &'a str, owners: &'a [OwnerReference], labels: &Labels) -> (&'a str, &'a str) {
    let Some(owner) = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
    else {
        return ("Pod", pod);
    };
    let name = owner.name.as_str();
    match owner.kind.as_str() {
        // A Deployment's ReplicaSet is `<deployment>-<pod-template-hash>`.
        "ReplicaSet" => match name.rsplit_once('-') {
            Some((base, hash))
                if !base.is_empty() && labels.get("pod-template-hash") == Some(hash) =>
            {
                ("Deployment", base)
            }
            _ => ("ReplicaSet", name),
        },
        "Job" => match name.rsplit_once('-') {
            Some((base, n))
                if !base.is_empty()
                    && n.len() >= CRONJOB_SUFFIX_MIN_DIGITS
                    && n.bytes().all(|b| b.is_ascii_digit()) =>
            {
                ("CronJob", base)
            }
            _ => ("Job", name),
        },
        kind => (kind, name),
    }
}

mod peers;
#[cfg(test)]
mod tests;
