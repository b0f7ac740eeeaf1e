//! What the index knows beyond pods and policies: Services, EndpointSlices and Nodes, to name
//! the Service a client aimed at and the node behind a host address.
//!
//! kube-proxy has translated a packet to a Service (DNAT to one of its endpoints) before
//! kube-router's filter sees it, so the packet shows the pod, not the ClusterIP. The Service is
//! named, in this order of evidence:
//!
//! 1. **`cluster-ip`, `node-port`**: the conntrack entry's original destination (when the daemon
//!    has it, [`Flow::orig_dst`]) differs from the packet's, and is a Service's ClusterIP (and
//!    port), or a Service's NodePort on any address: exactly that Service.
//! 2. **`untranslated`**: the packet itself goes to a ClusterIP (no DNAT happened first).
//! 3. **`endpoints`**: otherwise (no conntrack entry, or a translation to an address the index
//!    does not know, such as an external or load-balancer IP), the Services whose EndpointSlices
//!    hold the destination address with the destination port and protocol (ready or not). A
//!    pod can back several Services. When the conntrack entry shows no translation at all, the
//!    client addressed the pod directly and no Service is named.
//!
//! Only what that needs is kept: a Service's namespace, name, ClusterIPs and ports (name,
//! protocol, port, nodePort); an EndpointSlice's Service (the `kubernetes.io/service-name`
//! label), addresses and ports (name, protocol, port); a Node's name and addresses (the IPs of
//! `status.addresses`, plus the first two addresses of each `spec.podCIDRs` range, which the
//! node itself uses on its pod network: flannel's VXLAN interface takes the network address and
//! the `cni0` bridge the first host address, the source of kubelet probes to local pods; pod IPAM
//! never hands them out). A `targetPort` is not kept: the EndpointSlice's ports are the target
//! ports, resolved.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;

use super::{uid_of, Index, IpMap, Store, Uid};
use crate::attribute::rules;
use crate::attribute::{Flow, ServiceHit, ServiceVia};

/// An empty place in [`Peers::endpoints`].
const NO_SLOT: u32 = u32::MAX;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects, and their lookups by address and port.
#[derive(Default)]
pub(super) struct Peers {
    pub(super) services: Store<ServiceEntry>,
    by_cluster_ip: IpMap<Arc<ServiceEntry>>,
    /// NodePorts are unique in the cluster per protocol.
    by_node_port: HashMap<(u8, u16), Arc<ServiceEntry>>,
    by_name: HashMap<(Arc<str>, Arc<str>), Arc<ServiceEntry>>,
    pub(super) slices: Store<SliceEntry>,
    /// Every slice by its slot, the number the endpoint tables hold (4 bytes, not 8).
    slots: Vec<Option<Arc<SliceEntry>>>,
    free_slots: Vec<u32>,
    /// Endpoint address → the slots of the first two slices that hold it ([`NO_SLOT`] when only
    /// one does): a pod is commonly behind one or two Services, and two inline slots cost 4
    /// bytes more per address where a list would cost a 24-byte `Vec` and an allocation. The
    /// third and later (rare) are in `more_endpoints`.
    endpoints: IpMap<[u32; 2]>,
    more_endpoints: IpMap<Vec<u32>>,
    /// Slices' port lists, shared: most Services expose the same few ports.
    port_sets: HashSet<Arc<[SlicePort]>>,
    pub(super) nodes: Store<NodeEntry>,
    node_by_ip: IpMap<Arc<NodeEntry>>,
}

pub(super) struct ServiceEntry {
    uid: Uid,
    namespace: Arc<str>,
    name: Arc<str>,
    cluster_ips: Box<[IpAddr]>,
    ports: Box<[ServicePort]>,
}

struct ServicePort {
    /// `None` for an unnamed port (only allowed when it is the only one).
    name: Option<Arc<str>>,
    protocol: u8,
    port: u16,
    node_port: Option<u16>,
}

pub(super) struct SliceEntry {
    slot: u32,
    namespace: Arc<str>,
    service: Arc<str>,
    /// A slice holds one family (its `addressType`); two lists keep each address compact.
    v4: Box<[Ipv4Addr]>,
    v6: Box<[Ipv6Addr]>,
    ports: Arc<[SlicePort]>,
}

impl SliceEntry {
    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.v4.iter().map(|a| IpAddr::V4(*a));
        v4.chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
    }
}

#[derive(PartialEq, Eq, Hash)]
struct SlicePort {
    name: Option<Arc<str>>,
    protocol: u8,
    /// `None`: every port (the API's "all ports" for a port without a number).
    port: Option<u16>,
}

pub(super) struct NodeEntry {
    uid: Uid,
    name: Arc<str>,
    ips: Box<[IpAddr]>,
}

impl Peers {
    fn remove_service(&mut self, uid: Uid) -> bool {
        let Some((entry, _)) = self.services.items.remove(&uid) else {
            return false;
        };
        for ip in entry.cluster_ips.iter() {
            if self.by_cluster_ip.get(ip).is_some_and(|s| s.uid == uid) {
                self.by_cluster_ip.remove(ip);
            }
        }
        for p in entry.ports.iter() {
            let Some(np) = p.node_port else { continue };
            if self
                .by_node_port
                .get(&(p.protocol, np))
                .is_some_and(|s| s.uid == uid)
            {
                self.by_node_port.remove(&(p.protocol, np));
            }
        }
        let key = (entry.namespace.clone(), entry.name.clone());
        if self.by_name.get(&key).is_some_and(|s| s.uid == uid) {
            self.by_name.remove(&key);
        }
        true
    }

    fn remove_slice(&mut self, uid: Uid) -> bool {
        let Some((entry, _)) = self.slices.items.remove(&uid) else {
            return false;
        };
        let slot = entry.slot;
        for ip in entry.addresses() {
            let Some(pair) = self.endpoints.get_mut(&ip) else {
                continue;
            };
            let mut emptied = false;
            if let Some(i) = pair.iter().position(|&s| s == slot) {
                // Close the gap, and refill the second place from the overflow list.
                let next = self
                    .more_endpoints
                    .get_mut(&ip)
                    .and_then(Vec::pop)
                    .unwrap_or(NO_SLOT);
                if i == 0 {
                    pair[0] = pair[1];
                }
                pair[1] = next;
                emptied = pair[0] == NO_SLOT;
            } else if let Some(more) = self.more_endpoints.get_mut(&ip) {
                more.retain(|s| *s != slot);
            }
            if emptied {
                self.endpoints.remove(&ip);
            }
            if self.more_endpoints.get(&ip).is_some_and(Vec::is_empty) {
                self.more_endpoints.remove(&ip);
            }
        }
        self.slots[slot as usize] = None;
        self.free_slots.push(slot);
        true
    }

    /// A free slot for a new slice.
    fn slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
        })
    }

    fn port_set(&mut self, ports: Vec<SlicePort>) -> Arc<[SlicePort]> {
        if let Some(p) = self.port_sets.get(&ports[..]) {
            return p.clone();
        }
        let p: Arc<[SlicePort]> = ports.into();
        self.port_sets.insert(p.clone());
        p
    }

    /// Drops the port sets no slice holds any more (before the interner's sweep: they hold
    /// port names).
    pub(super) fn gc(&mut self) {
        self.port_sets.retain(|p| Arc::strong_count(p) > 1);
    }

    fn remove_node(&mut self, uid: Uid) -> bool {
        let Some((entry, _)) = self.nodes.items.remove(&uid) else {
            return false;
        };
        for ip in entry.ips.iter() {
            if self.node_by_ip.get(ip).is_some_and(|n| n.uid == uid) {
                self.node_by_ip.remove(ip);
            }
        }
        true
    }

    /// The slices that hold an address.
    fn slices_at(&self, ip: IpAddr) -> impl Iterator<Item = &SliceEntry> {
        self.endpoints
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(|&&slot| slot != NO_SLOT)
            .chain(self.more_endpoints.get(&ip).into_iter().flatten())
            .filter_map(|slot| self.slots.get(*slot as usize)?.as_deref())
    }

    fn endpoint_addresses(&self) -> usize {
        let inline = self
            .endpoints
            .values()
            .map(|p| 1 + usize::from(p[1] != NO_SLOT));
        inline.sum::<usize>() + self.more_endpoints.values().map(Vec::len).sum::<usize>()
    }

    #[cfg(test)]
    pub(super) fn more_endpoints_is_empty(&self) -> bool {
        self.more_endpoints.is_empty()
    }
}

impl ServiceEntry {
    fn hit(&self, port: Option<&ServicePort>, via: ServiceVia) -> ServiceHit {
        ServiceHit {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            port_name: port.and_then(|p| p.name.clone()),
            port: port.map(|p| p.port),
            node_port: match via {
                ServiceVia::NodePort => port.and_then(|p| p.node_port),
                _ => None,
            },
            via,
        }
    }

    fn port(&self, protocol: Option<u8>, port: Option<u16>) -> Option<&ServicePort> {
        let (protocol, port) = (protocol?, port?);
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.port == port)
    }
}

/// A port name as the index keeps it: the empty name (an EndpointSlice's unnamed port) is none.
fn port_name(index: &mut Index, name: Option<&str>) -> Option<Arc<str>> {
    name.filter(|n| !n.is_empty()).map(|n| index.strings.get(n))
}

fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p > 0)
}

fn sorted_ips<'a>(ips: impl Iterator<Item = &'a str>) -> Box<[IpAddr]> {
    let mut v: Vec<IpAddr> = ips.filter_map(|s| s.parse().ok()).collect();
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

/// The addresses a node uses on its pod network: the network address and the first host
/// address of each pod CIDR (see the module documentation).
fn pod_network_ips(cidr: &str) -> impl Iterator<Item = IpAddr> {
    let net = cidr
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<IpAddr>().ok()?, l.parse::<u32>().ok()?)));
    net.into_iter().flat_map(|(addr, len)| {
        let pair = match addr {
            IpAddr::V4(a) if len <= 30 => {
                let n = u32::from(a) & (u32::MAX.checked_shl(32 - len).unwrap_or(0));
                Some([n.into(), (n + 1).into()].map(|a: std::net::Ipv4Addr| IpAddr::V4(a)))
            }
            IpAddr::V6(a) if len <= 126 => {
                let n = u128::from(a) & (u128::MAX.checked_shl(128 - len).unwrap_or(0));
                Some([n.into(), (n + 1).into()].map(|a: std::net::Ipv6Addr| IpAddr::V6(a)))
            }
            _ => None,
        };
        pair.into_iter().flatten()
    })
}

impl Index {
    // ---- Services -----------------------------------------------------------------------------

    /// Feeds one watcher event for Services.
    pub fn service_event(&mut self, ev: &Event<Service>) {
        self.generation += 1;
        match ev {
            Event::Init => self.peers.services.begin_relist(),
            Event::InitApply(s) | Event::Apply(s) => self.apply_service(s),
            Event::Delete(s) => self.delete_service(s),
            Event::InitDone => {
                for uid in self.peers.services.stale() {
                    self.peers.remove_service(uid);
                }
                self.strings.gc();
            }
        }
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        self.generation += 1;
        let uid = uid_of(&svc.metadata);
        self.peers.remove_service(uid);
        let meta = &svc.metadata;
        let spec = svc.spec.as_ref();
        // `clusterIPs` holds `clusterIP` first; read both for objects with the old field only.
        // Headless Services ("None") and ExternalName ones have no address: nothing parses.
        let cluster_ips = sorted_ips(
            spec.iter()
                .flat_map(|s| s.cluster_ips.iter().flatten().chain(s.cluster_ip.iter()))
                .map(String::as_str),
        );
        let mut ports = Vec::new();
        for p in spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            let (Some(protocol), Some(port)) = (
                rules::protocol_number(p.protocol.as_deref().unwrap_or("TCP")),
                port_number(p.port),
            ) else {
                continue;
            };
            ports.push(ServicePort {
                name: port_name(self, p.name.as_deref()),
                protocol,
                port,
                node_port: p.node_port.and_then(port_number),
            });
        }
        let entry = Arc::new(ServiceEntry {
            uid,
            namespace: self
                .strings
                .get(meta.namespace.as_deref().unwrap_or_default()),
            name: self.strings.get(meta.name.as_deref().unwrap_or_default()),
            cluster_ips,
            ports: ports.into_boxed_slice(),
        });
        let peers = &mut self.peers;
        for ip in entry.cluster_ips.iter() {
            peers.by_cluster_ip.insert(*ip, entry.clone());
        }
        for p in entry.ports.iter() {
            if let Some(np) = p.node_port {
                peers.by_node_port.insert((p.protocol, np), entry.clone());
            }
        }
        peers
            .by_name
            .insert((entry.namespace.clone(), entry.name.clone()), entry.clone());
        let generation = peers.services.generation;
        peers.services.items.insert(uid, (entry, generation));
    }

    pub fn delete_service(&mut self, svc: &Service) {
        self.generation += 1;
        if self.peers.remove_service(uid_of(&svc.metadata)) {
            self.note_removal();
        }
    }

    // ---- EndpointSlices -----------------------------------------------------------------------

    /// Feeds one watcher event for EndpointSlices.
    pub fn endpoint_slice_event(&mut self, ev: &Event<EndpointSlice>) {
        self.generation += 1;
        match ev {
            Event::Init => self.peers.slices.begin_relist(),
            Event::InitApply(s) | Event::Apply(s) => self.apply_endpoint_slice(s),
            Event::Delete(s) => self.delete_endpoint_slice(s),
            Event::InitDone => {
                for uid in self.peers.slices.stale() {
                    self.peers.remove_slice(uid);
                }
                self.peers.gc();
                self.strings.gc();
            }
        }
    }

    /// Adds or replaces an EndpointSlice. A slice of no Service (no `kubernetes.io/service-name`
    /// label) or without IP addresses (an FQDN slice, an empty one) is removed instead.
    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) {
        self.generation += 1;
        let uid = uid_of(&slice.metadata);
        self.peers.remove_slice(uid);
        let meta = &slice.metadata;
        let Some(service) = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        // Ready or not: a drop to an endpoint that is not ready yet (or terminating) is still a
        // drop on the way to that Service.
        let addresses = sorted_ips(
            slice
                .endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.iter())
                .map(String::as_str),
        );
        if addresses.is_empty() {
            return;
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in addresses.iter() {
            match ip {
                IpAddr::V4(a) => v4.push(*a),
                IpAddr::V6(a) => v6.push(*a),
            }
        }
        let mut ports = Vec::new();
        for p in slice.ports.iter().flatten() {
            let Some(protocol) = rules::protocol_number(p.protocol.as_deref().unwrap_or("TCP"))
            else {
                continue;
            };
            ports.push(SlicePort {
                name: port_name(self, p.name.as_deref()),
                protocol,
                port: p.port.and_then(port_number),
            });
        }
        let namespace = self
            .strings
            .get(meta.namespace.as_deref().unwrap_or_default());
        let service = self.strings.get(service);
        let peers = &mut self.peers;
        let slot = peers.slot();
        let entry = Arc::new(SliceEntry {
            slot,
            namespace,
            service,
            v4: v4.into_boxed_slice(),
            v6: v6.into_boxed_slice(),
            ports: peers.port_set(ports),
        });
        for ip in entry.addresses() {
            match peers.endpoints.get_mut(&ip) {
                None => {
                    peers.endpoints.insert(ip, [slot, NO_SLOT]);
                }
                Some(pair) if pair[1] == NO_SLOT => pair[1] = slot,
                Some(_) => match peers.more_endpoints.get_mut(&ip) {
                    Some(more) => more.push(slot),
                    None => {
                        peers.more_endpoints.insert(ip, vec![slot]);
                    }
                },
            }
        }
        peers.slots[slot as usize] = Some(entry.clone());
        let generation = peers.slices.generation;
        peers.slices.items.insert(uid, (entry, generation));
    }

    pub fn delete_endpoint_slice(&mut self, slice: &EndpointSlice) {
        self.generation += 1;
        if self.peers.remove_slice(uid_of(&slice.metadata)) {
            self.note_removal();
        }
    }

    // ---- Nodes --------------------------------------------------------------------------------

    /// Feeds one watcher event for Nodes.
    pub fn node_event(&mut self, ev: &Event<Node>) {
        match ev {
            Event::Init => self.peers.nodes.begin_relist(),
            // Bumps the generation only when something kept changed.
            Event::InitApply(n) | Event::Apply(n) => self.apply_node(n),
            Event::Delete(n) => self.delete_node(n),
            Event::InitDone => {
                self.generation += 1;
                for uid in self.peers.nodes.stale() {
                    self.peers.remove_node(uid);
                }
                self.strings.gc();
            }
        }
    }

    /// Adds or replaces a Node. A node's status changes often (conditions, images) while its
    /// addresses rarely do: an update that changes nothing kept leaves the index as it is.
    pub fn apply_node(&mut self, node: &Node) {
        let uid = uid_of(&node.metadata);
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let listed = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.address.as_str());
        let spec = node.spec.as_ref();
        let cidrs = spec
            .iter()
            .flat_map(|s| s.pod_cidrs.iter().flatten().chain(s.pod_cidr.iter()));
        let mut ips: Vec<IpAddr> = listed.filter_map(|s| s.parse().ok()).collect();
        ips.extend(cidrs.flat_map(|c| pod_network_ips(c)));
        ips.sort_unstable();
        ips.dedup();
        let generation = self.peers.nodes.generation;
        if let Some((old, seen)) = self.peers.nodes.items.get_mut(&uid) {
            if *old.name == *name && *old.ips == *ips {
                *seen = generation;
                return;
            }
        }
        self.generation += 1;
        self.peers.remove_node(uid);
        let entry = Arc::new(NodeEntry {
            uid,
            name: self.strings.get(name),
            ips: ips.into_boxed_slice(),
        });
        for ip in entry.ips.iter() {
            self.peers.node_by_ip.insert(*ip, entry.clone());
        }
        self.peers.nodes.items.insert(uid, (entry, generation));
    }

    pub fn delete_node(&mut self, node: &Node) {
        self.generation += 1;
        if self.peers.remove_node(uid_of(&node.metadata)) {
            self.note_removal();
        }
    }

    // ---- Resolution ---------------------------------------------------------------------------

    /// The node whose own address `ip` is (not a pod's: see [`Index::pod_by_ip`]).
    pub fn node_by_ip(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.peers.node_by_ip.get(&ip).map(|n| n.name.clone())
    }

    pub(super) fn endpoint_addresses(&self) -> usize {
        self.peers.endpoint_addresses()
    }

    /// The Services the client aimed at, by the evidence described in the module
    /// documentation. Allocates only when it names one.
    pub fn dest_services(&self, flow: &Flow) -> Vec<ServiceHit> {
        let Some(dst) = flow.dst else {
            return Vec::new();
        };
        if let Some(orig) = flow.orig_dst {
            let translated = orig.ip() != dst || flow.dst_port.is_some_and(|p| p != orig.port());
            if !translated {
                // The client sent it where it goes: to a ClusterIP kube-proxy did not
                // translate, or to the pod itself.
                return self.untranslated(dst, flow).into_iter().collect();
            }
            if let Some(svc) = self.peers.by_cluster_ip.get(&orig.ip()) {
                let port = svc.port(flow.protocol, Some(orig.port()));
                return vec![svc.hit(port, ServiceVia::ClusterIp)];
            }
            if let Some(svc) = flow
                .protocol
                .and_then(|p| self.peers.by_node_port.get(&(p, orig.port())))
            {
                let port = svc.ports.iter().find(|p| {
                    Some(p.protocol) == flow.protocol && p.node_port == Some(orig.port())
                });
                return vec![svc.hit(port, ServiceVia::NodePort)];
            }
            // Translated to an address the index does not know: infer from the endpoints.
        } else if let Some(hit) = self.untranslated(dst, flow) {
            return vec![hit];
        }
        self.endpoint_services(dst, flow)
    }

    /// The Service whose ClusterIP the packet still goes to.
    fn untranslated(&self, dst: IpAddr, flow: &Flow) -> Option<ServiceHit> {
        let svc = self.peers.by_cluster_ip.get(&dst)?;
        Some(svc.hit(
            svc.port(flow.protocol, flow.dst_port),
            ServiceVia::Untranslated,
        ))
    }

    /// The Services whose endpoints hold the address with the packet's port and protocol.
    fn endpoint_services(&self, dst: IpAddr, flow: &Flow) -> Vec<ServiceHit> {
        let (Some(protocol), Some(dst_port)) = (flow.protocol, flow.dst_port) else {
            return Vec::new();
        };
        let mut hits: Vec<ServiceHit> = Vec::new();
        for slice in self.peers.slices_at(dst) {
            // A slice without ports (a headless Service without ports) admits any port.
            let name = if slice.ports.is_empty() {
                None
            } else {
                match slice
                    .ports
                    .iter()
                    .find(|p| p.protocol == protocol && p.port.is_none_or(|q| q == dst_port))
                {
                    Some(p) => p.name.clone(),
                    None => continue,
                }
            };
            let service = self
                .peers
                .by_name
                .get(&(slice.namespace.clone(), slice.service.clone()));
            // The Service port the client aimed at: the one of that name and protocol.
            let port = service.and_then(|s| {
                s.ports
                    .iter()
                    .find(|p| p.protocol == protocol && p.name == name)
                    .map(|p| p.port)
            });
            let hit = ServiceHit {
                namespace: slice.namespace.clone(),
                name: slice.service.clone(),
                port_name: name,
                port,
                node_port: None,
                via: ServiceVia::Endpoints,
            };
            if !hits.contains(&hit) {
                hits.push(hit);
            }
        }
        hits.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.port_name).cmp(&(&b.namespace, &b.name, &b.port_name))
        });
        hits
    }
}
