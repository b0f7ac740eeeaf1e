//! Attribution: which NetworkPolicy dropped a packet, and which pods it was between.
//!
//! In: the NFLOG prefix and the decoded addresses. Out: an [`Attribution`] that borrows the
//! prefix, plus (when the daemon watches the Kubernetes API) a [`KubeContext`].
//!
//! Without a cluster the prefix alone is used: kube-router in K3s writes
//! `DROP by policy <namespace>/<name>` on per-policy rules and no prefix on the pod-chain rule
//! (see `kube-router-nflog.md`).

pub mod ifname;
pub mod index;
pub mod kube;
pub mod rules;
pub mod selector;

use std::net::IpAddr;
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
}

/// Traffic direction relative to the pod the policy protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// A pod as the attribution index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    pub pod: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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
    /// How many NFLOG messages of the same packet were correlated into this event.
    pub count: u32,
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
