//! NetworkPolicy rules, compiled once and evaluated against one packet.
//!
//! In: a policy's `ingress` or `egress` rule list. Out: [`Rules`], which answers "does this
//! direction of the policy allow this packet?" with a [`Verdict`] that can be `Unknown` when the
//! evidence is missing (a protocol or port that was not decoded, a peer pod the index does not
//! know). Pure: the caller hands in what it knows of the peer and of the destination pod.
//!
//! Semantics are those of the Kubernetes NetworkPolicy API
//! (<https://kubernetes.io/docs/reference/kubernetes-api/networking-resources/network-policy-v1/>):
//! - a rule list that is absent or empty allows nothing; the policy allows a packet when any of
//!   its rules does, and a rule does when a peer *and* a port match;
//! - an empty `from`/`to` matches every peer, an empty `ports` every port;
//! - a peer with `podSelector` only matches pods of the policy's namespace, `namespaceSelector`
//!   only all pods of the matching namespaces, both together the selected pods of the selected
//!   namespaces; namespace selectors read the Namespace's labels;
//! - `ipBlock` matches addresses: inside `cidr` and outside every `except`;
//! - a port's protocol defaults to TCP; a numeric port with `endPort` is the range
//!   `port..=endPort`; a named port is resolved against the destination pod's container ports
//!   (the selected pod for ingress, the peer pod for egress), so it matches only a destination
//!   that declares that name for that protocol and number.
//!
//! Where kube-router (`evalPodPeer`, `evalIPBlockPeer`, `processNetworkPolicyPorts` in
//! [policy.go](https://github.com/k3s-io/kube-router/blob/a6292236c3fdbe726bf4e9c9ff8dccef62169650/pkg/controllers/netpol/policy.go))
//! makes a choice the API leaves open, it is followed: a peer carrying selectors ignores its
//! `ipBlock`, a peer with nothing set matches nothing, an `endPort` below `port` is ignored, an
//! invalid selector or CIDR matches nothing.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector::{Labels, Selector};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

/// The IP protocol number of a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`); `None` for any
/// other spelling (the API server accepts only these three, case-sensitively).
pub fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "TCP" => Some(TCP),
        "UDP" => Some(UDP),
        "SCTP" => Some(SCTP),
        _ => None,
    }
}

/// Three-valued answer. Ordered so that "any of" is `max` and "all of" is `min` (Kleene logic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Deny,
    Unknown,
    Allow,
}

impl Verdict {
    fn from_bool(b: bool) -> Self {
        if b {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    fn and(self, other: Verdict) -> Verdict {
        self.min(other)
    }

    /// "Any of": `Allow` if one allows, else `Unknown` if one might, else `Deny` (also for none).
    pub fn any(it: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut v = Verdict::Deny;
        for x in it {
            v = v.max(x);
            if v == Verdict::Allow {
                break;
            }
        }
        v
    }
}

/// A named container port of a pod, as `ContainerPort` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: Arc<str>,
    pub protocol: u8,
    pub port: u16,
}

/// What the evaluator may know of a pod.
#[derive(Debug, Clone, Copy)]
pub struct PodInfo<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
    /// The labels of the pod's Namespace; `None` when the Namespace is not known (yet).
    pub namespace_labels: Option<&'a Labels>,
}

/// The other end of the packet, seen from the policy's pod.
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    /// A pod the index knows.
    Pod(PodInfo<'a>),
    /// An address known not to be a pod (the index watches every pod and has none there).
    NotAPod,
    /// An address that may be a pod the index does not know (one on another node).
    Unknown,
}

/// One packet, as one direction of a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The peer's address: the source for ingress rules, the destination for egress rules.
    pub peer_ip: Option<IpAddr>,
    pub peer: Peer<'a>,
    pub protocol: Option<u8>,
    pub dst_port: Option<u16>,
    /// The destination pod's named ports: `None` when the destination is a pod the index does
    /// not know, `Some(&[])` when it is known to have none (or is not a pod).
    pub dst_named_ports: Option<&'a [NamedPort]>,
}

/// An address prefix, stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `address/length`. Host bits are allowed and ignored (as `net.ParseCIDR` does).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = s.trim().split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u8 = l.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(v) => IpAddr::V4((u32::from(v) & mask32(len)).into()),
            IpAddr::V6(v) => IpAddr::V6((u128::from(v) & mask128(len)).into()),
        };
        Some(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Namespaces {
    /// The policy's own namespace (a peer with `podSelector` only).
    Same,
    Matching(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerRule {
    Pods {
        namespaces: Namespaces,
        /// `None`: every pod of those namespaces.
        pods: Option<Selector>,
    },
    Block {
        cidr: Cidr,
        except: Box<[Cidr]>,
    },
    /// Invalid (a bad selector or CIDR, or nothing set): matches nothing.
    Nothing,
}

impl PeerRule {
    fn from_k8s(peer: &NetworkPolicyPeer) -> PeerRule {
        let compile = |s| Selector::from_k8s(s).ok();
        match (&peer.namespace_selector, &peer.pod_selector, &peer.ip_block) {
            (None, None, Some(block)) => block_rule(block),
            (None, None, None) => PeerRule::Nothing,
            (ns, pods, _) => {
                let namespaces = match ns {
                    None => Namespaces::Same,
                    Some(s) => match compile(s) {
                        Some(s) => Namespaces::Matching(s),
                        None => return PeerRule::Nothing,
                    },
                };
                let pods = match pods {
                    None => None,
                    Some(s) => match compile(s) {
                        // `{}` selects every pod: no need to keep it.
                        Some(s) if s.selects_everything() => None,
                        Some(s) => Some(s),
                        None => return PeerRule::Nothing,
                    },
                };
                PeerRule::Pods { namespaces, pods }
            }
        }
    }

    fn matches(&self, policy_ns: &str, q: &Query<'_>) -> Verdict {
        match self {
            PeerRule::Nothing => Verdict::Deny,
            PeerRule::Block { cidr, except } => match q.peer_ip {
                Some(ip) => {
                    Verdict::from_bool(cidr.contains(ip) && !except.iter().any(|e| e.contains(ip)))
                }
                None => Verdict::Unknown,
            },
            PeerRule::Pods { namespaces, pods } => match q.peer {
                Peer::NotAPod => Verdict::Deny,
                Peer::Unknown => Verdict::Unknown,
                Peer::Pod(pod) => {
                    let ns = match namespaces {
                        Namespaces::Same => Verdict::from_bool(pod.namespace == policy_ns),
                        Namespaces::Matching(s) if s.selects_everything() => Verdict::Allow,
                        Namespaces::Matching(s) => match pod.namespace_labels {
                            Some(labels) => Verdict::from_bool(s.matches(labels)),
                            None => Verdict::Unknown,
                        },
                    };
                    let selected = pods.as_ref().is_none_or(|s| s.matches(pod.labels));
                    ns.and(Verdict::from_bool(selected))
                }
            },
        }
    }
}

fn block_rule(block: &IPBlock) -> PeerRule {
    let Some(cidr) = Cidr::parse(&block.cidr) else {
        return PeerRule::Nothing;
    };
    let mut except = Vec::new();
    for e in block.except.iter().flatten() {
        match Cidr::parse(e) {
            Some(c) => except.push(c),
            // An `except` that cannot be read cannot be honoured: match nothing rather than
            // more than the author meant.
            None => return PeerRule::Nothing,
        }
    }
    PeerRule::Block {
        cidr,
        except: except.into_boxed_slice(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    All,
    Range(u16, u16),
    Named(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PortRule {
    /// `None`: a protocol this code does not know, or an invalid port: matches nothing.
    protocol: Option<u8>,
    port: PortMatch,
}

impl PortRule {
    fn from_k8s(p: &NetworkPolicyPort) -> PortRule {
        let protocol = protocol_number(p.protocol.as_deref().unwrap_or("TCP"));
        let port = match &p.port {
            None => PortMatch::All,
            Some(IntOrString::Int(n)) => match u16::try_from(*n) {
                Ok(start) if start > 0 => {
                    // As kube-router: an endPort below the port is ignored.
                    let end = p
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .filter(|e| *e >= start)
                        .unwrap_or(start);
                    PortMatch::Range(start, end)
                }
                _ => {
                    return PortRule {
                        protocol: None,
                        port: PortMatch::All,
                    }
                }
            },
            Some(IntOrString::String(name)) => PortMatch::Named(name.as_str().into()),
        };
        PortRule { protocol, port }
    }

    fn matches(&self, q: &Query<'_>) -> Verdict {
        let Some(want) = self.protocol else {
            return Verdict::Deny;
        };
        let protocol = match q.protocol {
            Some(p) if p == want => Verdict::Allow,
            Some(_) => return Verdict::Deny,
            None => Verdict::Unknown,
        };
        let port = match &self.port {
            PortMatch::All => Verdict::Allow,
            PortMatch::Range(lo, hi) => match q.dst_port {
                Some(p) => Verdict::from_bool((*lo..=*hi).contains(&p)),
                None => Verdict::Unknown,
            },
            PortMatch::Named(name) => match q.dst_named_ports {
                None => Verdict::Unknown,
                Some(ports) => Verdict::any(
                    ports
                        .iter()
                        .filter(|np| *np.name == **name && np.protocol == want)
                        .map(|np| match q.dst_port {
                            Some(p) => Verdict::from_bool(p == np.port),
                            None => Verdict::Unknown,
                        }),
                ),
            },
        };
        protocol.and(port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// Empty: every peer.
    peers: Box<[PeerRule]>,
    /// Empty: every port.
    ports: Box<[PortRule]>,
}

impl Rule {
    fn new(peers: Option<&[NetworkPolicyPeer]>, ports: Option<&[NetworkPolicyPort]>) -> Rule {
        Rule {
            peers: peers
                .unwrap_or_default()
                .iter()
                .map(PeerRule::from_k8s)
                .collect(),
            ports: ports
                .unwrap_or_default()
                .iter()
                .map(PortRule::from_k8s)
                .collect(),
        }
    }

    fn matches(&self, policy_ns: &str, q: &Query<'_>) -> Verdict {
        let peers = if self.peers.is_empty() {
            Verdict::Allow
        } else {
            Verdict::any(self.peers.iter().map(|p| p.matches(policy_ns, q)))
        };
        if peers == Verdict::Deny {
            return peers;
        }
        let ports = if self.ports.is_empty() {
            Verdict::Allow
        } else {
            Verdict::any(self.ports.iter().map(|p| p.matches(q)))
        };
        peers.and(ports)
    }
}

/// One direction's rules of one policy. The default (no rules) allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Box<[Rule]>);

impl Rules {
    pub fn from_ingress(rules: Option<&[NetworkPolicyIngressRule]>) -> Rules {
        Rules(
            rules
                .unwrap_or_default()
                .iter()
                .map(|r| Rule::new(r.from.as_deref(), r.ports.as_deref()))
                .collect(),
        )
    }

    pub fn from_egress(rules: Option<&[NetworkPolicyEgressRule]>) -> Rules {
        Rules(
            rules
                .unwrap_or_default()
                .iter()
                .map(|r| Rule::new(r.to.as_deref(), r.ports.as_deref()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether these rules of a policy in `policy_ns` allow the packet.
    pub fn allows(&self, policy_ns: &str, q: &Query<'_>) -> Verdict {
        Verdict::any(self.0.iter().map(|r| r.matches(policy_ns, q)))
    }
}

#[cfg(test)]
mod tests;
