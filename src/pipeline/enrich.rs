//! Enrichment: the Kubernetes context of a message, resolved once and shared.
//!
//! The index answers with a [`KubeContext`] that is kept in an `Arc`: the same pods and
//! policies repeat across drops, so resolved contexts are cached per (rule, flow) for one index
//! generation, and every event of that flow shares one copy.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use crate::attribute::index::Index;
use crate::attribute::{Attribution, Direction, Flow, KubeContext, PolicyRef, PolicySource};
use crate::decode::Packet;

/// Entries kept before the cache starts over (bounds memory under a flood of distinct flows).
const CACHE_MAX: usize = 65536;

#[derive(Default)]
struct Cache {
    generation: u64,
    entries: rustc_hash::FxHashMap<u64, Entry>,
    /// Merged contexts by the addresses of the two contexts merged. The entry holds both, so
    /// neither address can be reused while it exists.
    merged: rustc_hash::FxHashMap<(usize, usize), Merged>,
}

struct Merged {
    _inputs: (Arc<KubeContext>, Arc<KubeContext>),
    result: Arc<KubeContext>,
}

struct Entry {
    source: PolicySource,
    key: Box<[u8]>,
    flow: Flow,
    context: Option<Arc<KubeContext>>,
}

/// What attribution reads of a message: the addresses, the protocol and destination port that
/// policy rules match on, and the destination before DNAT from the conntrack entry the kernel
/// attached (when it did; a malformed entry is ignored: the endpoints still name the Service).
pub fn flow_of_message(packet: &Packet, conntrack: Option<&[u8]>) -> Flow {
    let orig_dst = conntrack
        .and_then(|ct| crate::source::conntrack::original_tuple(ct).ok().flatten())
        .map(|t| std::net::SocketAddr::new(t.dst, t.dst_port.unwrap_or(0)));
    Flow {
        orig_dst,
        ..flow_of(packet)
    }
}

/// What attribution reads of a packet: the addresses, and the protocol and destination port
/// that policy rules match on.
pub fn flow_of(packet: &Packet) -> Flow {
    let (src, dst) = packet.addrs().unzip();
    Flow {
        src,
        dst,
        protocol: packet.protocol(),
        // A later fragment carries no transport header: its port is unknown.
        dst_port: packet.ports().map(|(_, d)| d),
        ..Flow::default()
    }
}

/// Resolves messages against the index, when the daemon watches the API.
#[derive(Default)]
pub struct Enricher {
    index: Option<Arc<RwLock<Index>>>,
    cache: Cache,
}

impl Enricher {
    pub fn new(index: Option<Arc<RwLock<Index>>>) -> Self {
        Enricher {
            index,
            cache: Cache::default(),
        }
    }

    /// Whether messages are resolved at all (the daemon watches the API).
    pub fn attributes(&self) -> bool {
        self.index.is_some()
    }

    /// The context of one message; `None` without an index or when it knows nothing.
    pub fn resolve(
        &mut self,
        attribution: &Attribution<'_>,
        flow: Flow,
    ) -> Option<Arc<KubeContext>> {
        let index = self.index.as_ref()?;
        // A poisoned lock only means a watcher panicked mid-update; the index is still the
        // best knowledge there is.
        let index = index.read().unwrap_or_else(|p| p.into_inner());
        let cache = &mut self.cache;
        if cache.generation != index.generation() || cache.entries.len() >= CACHE_MAX {
            cache.generation = index.generation();
            cache.entries.clear();
            cache.merged.clear();
        }
        let key = attribution.policy_key().unwrap_or_default();
        let mut h = rustc_hash::FxHasher::default();
        (attribution.source as u8, key, &flow).hash(&mut h);
        let hash = h.finish();
        if let Some(e) = cache.entries.get(&hash) {
            if e.source == attribution.source && *e.key == *key && e.flow == flow {
                return e.context.clone();
            }
        }
        let context = index.resolve_flow(attribution, &flow).map(Arc::new);
        cache.entries.insert(
            hash,
            Entry {
                source: attribution.source,
                key: key.into(),
                flow,
                context: context.clone(),
            },
        );
        context
    }

    /// The context of a packet that several messages logged: the first message's context, plus
    /// the policies the other `DROP by policy` messages name, and a direction where only a
    /// later message decided it. Shares the first context when nothing is added.
    pub fn merge<'p>(
        &mut self,
        first: Option<Arc<KubeContext>>,
        flow: Flow,
        mut prefixes: impl Iterator<Item = &'p [u8]>,
    ) -> Option<Arc<KubeContext>> {
        let first_prefix = prefixes.next().unwrap_or_default();
        let mut merged = first;
        for prefix in prefixes {
            let other = Attribution::from_prefix(Some(prefix));
            let resolved = self.resolve(&other, flow);
            let direction: Option<Direction> = resolved.as_deref().and_then(|c| c.direction);
            let known = merged.as_deref();
            let adds_policy = adds_policy(known, &other, resolved.as_deref());
            let adds_direction = direction.is_some() && known.is_none_or(|k| k.direction.is_none());
            if !adds_policy && !adds_direction {
                continue;
            }
            // The same pairs of contexts repeat across packets: merge each pair once.
            let key = match (&merged, &resolved) {
                (Some(m), Some(r)) => Some((
                    (Arc::as_ptr(m) as usize, Arc::as_ptr(r) as usize),
                    (m.clone(), r.clone()),
                )),
                _ => None,
            };
            if let Some(hit) = key.as_ref().and_then(|(k, _)| self.cache.merged.get(k)) {
                merged = Some(hit.result.clone());
                continue;
            }
            // Without a context of its own, the first message still named its policy.
            let ctx = Arc::make_mut(merged.get_or_insert_with(|| {
                let first = Attribution::from_prefix(Some(first_prefix));
                Arc::new(KubeContext {
                    policies: named_policies(&first, None),
                    ..KubeContext::default()
                })
            }));
            for p in named_policies(&other, resolved.as_deref()) {
                if !ctx.policies.contains(&p) {
                    ctx.policies.push(p);
                }
            }
            if ctx.direction.is_none() {
                ctx.direction = direction;
            }
            if let (Some((k, inputs)), Some(result)) = (key, &merged) {
                if self.cache.merged.len() >= CACHE_MAX {
                    self.cache.merged.clear();
                }
                self.cache.merged.insert(
                    k,
                    Merged {
                        _inputs: inputs,
                        result: result.clone(),
                    },
                );
            }
        }
        merged
    }
}

/// Whether a message names a policy the context does not list yet (checked without allocating:
/// most merged events add nothing).
fn adds_policy(
    known: Option<&KubeContext>,
    a: &Attribution<'_>,
    resolved: Option<&KubeContext>,
) -> bool {
    let listed = |p: &PolicyRef| known.is_some_and(|k| k.policies.contains(p));
    match (a.source, resolved) {
        (PolicySource::PolicyRule, Some(c)) if !c.policies.is_empty() => {
            c.policies.iter().any(|p| !listed(p))
        }
        (PolicySource::PolicyRule, _) => !known.is_some_and(|k| {
            k.policies
                .iter()
                .any(|p| p.namespace.as_bytes() == a.namespace && p.name.as_bytes() == a.name)
        }),
        _ => false,
    }
}

/// The policies a message names: those its context resolved, or the prefix's own spelling.
fn named_policies(a: &Attribution<'_>, resolved: Option<&KubeContext>) -> Vec<PolicyRef> {
    match (a.source, resolved) {
        (PolicySource::PolicyRule, Some(c)) if !c.policies.is_empty() => c.policies.clone(),
        (PolicySource::PolicyRule, _) => vec![PolicyRef {
            namespace: String::from_utf8_lossy(a.namespace).into_owned(),
            name: String::from_utf8_lossy(a.name).into_owned(),
        }],
        _ => Vec::new(),
    }
}

/// Attributes one event with `index` (no cache: for tools that decode events themselves, such as
/// `nflog-tail` replaying a capture with a cluster snapshot).
pub fn attribute(index: &Index, ev: &mut crate::event::Event<'_>) {
    ev.context = index
        .resolve_flow(
            &ev.attribution,
            &flow_of_message(&ev.packet, ev.msg.conntrack),
        )
        .map(Arc::new);
}

/// The pod whose firewall chain an empty-prefix message came from, as `(namespace, pod)`: the
/// destination for ingress, the source for egress; when the direction is open, the only known
/// pod of the two.
pub fn protected_pod(ctx: &KubeContext) -> Option<(&str, &str)> {
    let pod = match (ctx.direction, &ctx.src, &ctx.dest) {
        (Some(Direction::Ingress), _, Some(d)) => d,
        (Some(Direction::Egress), Some(s), _) => s,
        (None, Some(s), None) => s,
        (None, None, Some(d)) => d,
        _ => return None,
    };
    Some((&pod.namespace, &pod.pod))
}
