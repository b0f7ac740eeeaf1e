//! Attribution: which NetworkPolicy dropped a packet, and which pods it was between.
//!
//! In: the NFLOG prefix and what the decoded packet tells (a [`Flow`]). Out: an [`Attribution`]
//! that borrows the prefix, plus (when the daemon watches the Kubernetes API) a [`KubeContext`]
//! from [`index::Index::resolve_flow`].
//!
//! # What kube-router (K3s fork) logs to NFLOG group 100
//!
//! - Every pod on the node gets a `KUBE-POD-FW-…` chain per IP family
//!   (`syncPodFirewallChains`, `setupPodNetpolRules` in [pod.go]). It jumps to the chain of
//!   each policy that selects the pod: a policy of type Ingress with `-d <pod IP>`, of type
//!   Egress with `-s <pod IP>`, one of both types with no address match. A pod without an
//!   ingress (egress) policy goes through `KUBE-NWPLCY-DEFAULT` for that direction, which
//!   accepts. At the end of the pod chain, a packet not marked `0x10000` (allowed) is logged by
//!   an NFLOG rule with an **empty prefix** (`--limit 10/minute --limit-burst 10`) and
//!   rejected. So an empty prefix means the pod chain of the source (egress) or of the
//!   destination (ingress) rejected it: every policy selecting that pod for that direction
//!   failed to allow it.
//! - Each policy's `KUBE-NWPLCY-…` chain marks the packets its rules allow with `0x10000`
//!   (`appendRuleToPolicyChain` in [policy.go]) and logs the unmarked ones with
//!   `NFLOG --nflog-prefix "DROP by policy <safeJoin(namespace, name)>"` ([utils.go]
//!   truncates `namespace/name` to fit the 64-byte prefix, so two policies can share a
//!   prefix), rate-limited by the policy's `kube-router.io/netpol-nflog-limit` annotations. So
//!   `DROP by policy` means: that policy selects a pod of the packet (the destination for
//!   Ingress, the source for Egress) and did not allow the packet.
//!
//! Without a cluster the prefix alone is used.
//!
//! # How a message is attributed ([`index::Index::resolve_flow`])
//!
//! - `DROP by policy`: the candidates are the policies whose `safeJoin` is the prefix's key and
//!   that select the destination pod for Ingress or the source pod for Egress, on this node.
//!   When no key match selects a pod of the packet, every key match stays a candidate.
//! - The direction is the side those candidates protect; when they protect both, the side
//!   where some candidate's rules do not allow the packet, if only one side is such (the
//!   candidates are then that side's); otherwise the direction is unknown.
//! - Empty prefix: a side whose pod has no policy for its direction (the destination's
//!   Ingress, the source's Egress, on this node) is ruled out. When both sides have some, a side
//!   whose policies' rules allow the packet ([`rules`]) is ruled out too. One side left decides
//!   the direction, and its policies are the candidates (all of them failed to allow it); with
//!   both left (both deny, or the evidence is missing) or none (the rules contradict the drop),
//!   the direction is unknown and the candidates are the union.
//! - `resolved` means exactly one candidate remains.
//!
//! # Beyond the pods
//!
//! The context also names what else an address is ([`index`]'s `peers` module has the rules):
//! the node whose own address it is when it is no pod's ([`KubeContext::src_node`],
//! [`KubeContext::dest_node`]: kubelet probes, hostNetwork pods), and the Services the client
//! aimed at ([`KubeContext::dest_services`], [`ServiceHit`]): from conntrack's original
//! destination when the daemon has it (ClusterIP or NodePort), from the packet itself when it
//! still goes to a ClusterIP, else inferred from the EndpointSlices holding the destination.
//! [`addr::AddrClass`] classifies any address (public, private, …) without the API.
//!
//! # Limits
//!
//! - At the commit linked, the `DROP by policy` rule follows *each* accept rule of the policy
//!   chain, so a packet that a later rule of the same policy allows can be logged too, and a
//!   policy without rules (deny-all) never writes `DROP by policy`; only the pod chain logs.
//! - A policy of both types is entered in both directions; kube-router's ingress rules can then
//!   accept a pod's own outgoing packet to another selected pod. The rules are evaluated as the
//!   NetworkPolicy API defines them, not with this leak.
//! - Rules are weighed only when both ends are known pods; an unknown peer (a pod on another
//!   node when only this node's pods are watched) leaves the evidence missing.
//!
//! [pod.go]: https://github.com/k3s-io/kube-router/blob/569ffdf38857b6123009d47b15e4b9a5295b7c84/pkg/controllers/netpol/pod.go
//! [policy.go]: https://github.com/k3s-io/kube-router/blob/a6292236c3fdbe726bf4e9c9ff8dccef62169650/pkg/controllers/netpol/policy.go
//! [utils.go]: https://github.com/k3s-io/kube-router/blob/5f0697bb4c891f1b1218361f9ceb68dac1724253/pkg/controllers/netpol/utils.go

pub mod addr;
pub mod ifname;
pub mod index;
pub mod kube;
pub mod rules;
pub mod selector;
pub mod snapshot;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

/// The prefix kube-router (K3s fork) puts on per-policy NFLOG rules.
pub const POLICY_PREFIX: &[u8] = b"DROP by policy ";

/// What kind of rule logged the message, judged from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    /// `DROP by policy ns/name`: the per-policy rule of the K3s fork.
    PolicyRule,
    /// Empty prefix: kube-router's per-pod chain rule (the only kind upstream sends).
    PodChain,
    /// Any other prefix: a rule someone wrote by hand. Kept verbatim, not attributed.
    Custom,
}

impl PolicySource {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::PolicyRule => "policy-rule",
            PolicySource::PodChain => "pod-chain",
            PolicySource::Custom => "custom",
        }
    }
}

/// The policy named by the prefix (possibly truncated by kube-router's safeJoin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution<'a> {
    pub source: PolicySource,
    /// Namespace as the prefix spells it; empty unless `source` is `PolicyRule`.
    pub namespace: &'a [u8],
    /// Name as the prefix spells it; empty unless `source` is `PolicyRule`.
    pub name: &'a [u8],
    /// `namespace/name`, empty unless `source` is `PolicyRule`.
    key: &'a [u8],
}

impl<'a> Attribution<'a> {
    /// Reads a prefix. A missing prefix is treated as empty (the kernel always sends one).
    pub fn from_prefix(prefix: Option<&'a [u8]>) -> Self {
        let prefix = prefix.unwrap_or_default();
        let none = Attribution {
            source: PolicySource::Custom,
            namespace: &[],
            name: &[],
            key: &[],
        };
        if prefix.is_empty() {
            return Attribution {
                source: PolicySource::PodChain,
                ..none
            };
        }
        let Some(rest) = prefix.strip_prefix(POLICY_PREFIX) else {
            return none;
        };
        match rest.iter().position(|&b| b == b'/') {
            Some(slash) if slash > 0 && slash + 1 < rest.len() => Attribution {
                source: PolicySource::PolicyRule,
                namespace: &rest[..slash],
                name: &rest[slash + 1..],
                key: rest,
            },
            _ => none,
        }
    }

    /// `namespace/name` as written in the prefix, the key of the per-policy rate limit.
    pub fn policy_key(&self) -> Option<&'a [u8]> {
        (self.source == PolicySource::PolicyRule).then_some(self.key)
    }
}

/// What the decoded packet tells attribution: its addresses, and for evaluating `ports` its
/// IP protocol number (6 TCP, 17 UDP, 132 SCTP, …) and destination port. `None` where the
/// packet did not say (not decoded, a fragment, a protocol without ports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub protocol: Option<u8>,
    pub dst_port: Option<u16>,
    /// The destination the client sent the packet to, from the conntrack entry NFLOG attached
    /// (its original tuple): a Service's ClusterIP:port or a NodePort before kube-proxy's DNAT.
    /// `None` when the kernel attached no entry.
    pub orig_dst: Option<SocketAddr>,
}

/// Traffic direction relative to the pod the policy protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// A name many objects share (a namespace, a workload, a node), held once: the index interns
/// it, so 100,000 pods on 5,000 nodes keep 5,000 node names, not 100,000 copies.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Self {
        Name(s)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(s.into())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

/// A pod as the attribution index knows it. The shared names are [`Name`]s; the pod's own name
/// is its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    pub pod: String,
    pub namespace: Name,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<Name>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Name>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Name>,
}

/// A NetworkPolicy by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

/// What the Kubernetes API adds to an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeContext {
    /// The policies that dropped the packet: one when resolved, several candidates otherwise.
    pub policies: Vec<PolicyRef>,
    /// Whether the prefix's policy was found among the known NetworkPolicies.
    pub resolved: bool,
    pub direction: Option<Direction>,
    pub src: Option<Arc<PodMeta>>,
    pub dest: Option<Arc<PodMeta>>,
    /// The node whose own address the source is (kubelet probes, hostNetwork pods), when it is
    /// not a known pod.
    pub src_node: Option<Arc<str>>,
    /// The node whose own address the destination is, when it is not a known pod.
    pub dest_node: Option<Arc<str>>,
    /// The Services the client aimed at (see [`ServiceHit`]); sorted, empty when none.
    pub dest_services: Vec<ServiceHit>,
}

/// How the index knows that the client aimed at a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceVia {
    /// The conntrack entry's original destination was the Service's ClusterIP and port.
    ClusterIp,
    /// The conntrack entry's original destination port was the Service's NodePort (on any
    /// address), and kube-proxy translated it.
    NodePort,
    /// The packet itself still goes to the ClusterIP: no DNAT happened before the filter.
    Untranslated,
    /// Inferred: the destination address and port are an endpoint of the Service (its
    /// EndpointSlices, ready or not). The client may also have addressed the pod directly.
    Endpoints,
}

impl ServiceVia {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceVia::ClusterIp => "cluster-ip",
            ServiceVia::NodePort => "node-port",
            ServiceVia::Untranslated => "untranslated",
            ServiceVia::Endpoints => "endpoints",
        }
    }
}

/// A Service the destination belongs to. The strings are shared with the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceHit {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The Service port's name (`None` for the single unnamed port, or when no port matched).
    pub port_name: Option<Arc<str>>,
    /// The Service port the client aimed at (before translation to the target port), when the
    /// Service object is known and one of its ports matches.
    pub port: Option<u16>,
    /// The NodePort the client aimed at, for [`ServiceVia::NodePort`].
    pub node_port: Option<u16>,
    pub via: ServiceVia,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_k3s_prefixes() {
        let a = Attribution::from_prefix(Some(b"DROP by policy default/deny-db"));
        assert_eq!(a.source, PolicySource::PolicyRule);
        assert_eq!((a.namespace, a.name), (&b"default"[..], &b"deny-db"[..]));
        assert_eq!(a.policy_key(), Some(&b"default/deny-db"[..]));
        assert_eq!(
            Attribution::from_prefix(Some(b"")).source,
            PolicySource::PodChain
        );
        assert_eq!(
            Attribution::from_prefix(None).source,
            PolicySource::PodChain
        );
        for custom in [
            &b"REF-OUT4"[..],
            b"DROP by policy ",
            b"DROP by policy x",
            b"DROP by policy /x",
            b"DROP by policy x/",
        ] {
            let a = Attribution::from_prefix(Some(custom));
            assert_eq!(a.source, PolicySource::Custom, "{custom:?}");
            assert_eq!(a.policy_key(), None);
        }
    }
}
