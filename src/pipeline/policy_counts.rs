//! Written messages per policy, kind of rule and direction, published as metrics.

use std::collections::HashMap;

use crate::attribute::{Direction, PolicySource};
use crate::event::Event;
use crate::stats::{PolicyCounts as Counts, PolicyKey, Stats};

const SOURCES: [PolicySource; 3] = [
    PolicySource::PolicyRule,
    PolicySource::PodChain,
    PolicySource::Custom,
];
const DIRECTIONS: [&str; 3] = ["", "ingress", "egress"];

/// The series key of pod-chain messages (they name no policy).
const POD_CHAIN_SERIES: &[u8] = b"";
/// Where messages go once [`crate::metrics::MAX_POLICY_SERIES`] keys exist.
const OTHER_SERIES: &[u8] = b"(other)";

/// Counts by series key (`namespace/name` for policy rules, the prefix for custom rules, empty
/// for pod chains), one slot per (kind of rule, direction).
// Keys come from firewall rules (root-written), so a fast non-keyed hash is safe here.
#[derive(Default)]
pub struct PolicyCounter(rustc_hash::FxHashMap<Box<[u8]>, [u64; 9]>);

impl PolicyCounter {
    /// Counts one written message.
    pub fn count(&mut self, ev: &Event<'_>) {
        let key = match ev.attribution.source {
            PolicySource::PolicyRule => ev.attribution.policy_key().unwrap_or_default(),
            PolicySource::PodChain => POD_CHAIN_SERIES,
            PolicySource::Custom => ev.msg.prefix.unwrap_or_default(),
        };
        let direction = match ev.context.as_deref().and_then(|c| c.direction) {
            None => 0,
            Some(Direction::Ingress) => 1,
            Some(Direction::Egress) => 2,
        };
        let slot = ev.attribution.source as usize * 3 + direction;
        let key = if self.0.contains_key(key) || self.0.len() < crate::metrics::MAX_POLICY_SERIES {
            key
        } else {
            OTHER_SERIES
        };
        match self.0.get_mut(key) {
            Some(c) => c[slot] += 1,
            None => {
                let mut c = [0u64; 9];
                c[slot] = 1;
                self.0.insert(key.into(), c);
            }
        }
    }

    /// Copies the counts into the shared stats. `suppressed` is the limiter's total per limit
    /// key: a policy's series shows its own bucket, the pod-chain series the sum of every pod's
    /// bucket, a custom prefix's series its prefix's bucket.
    pub fn publish(&self, stats: &Stats, suppressed: &[(String, u64)]) {
        let mut by_series: HashMap<(usize, &[u8]), u64> = HashMap::new();
        for (key, n) in suppressed {
            let key = key.as_bytes();
            let series = match crate::limit::source_of(key) {
                PolicySource::PodChain => (PolicySource::PodChain, POD_CHAIN_SERIES),
                PolicySource::Custom => (
                    PolicySource::Custom,
                    key.strip_prefix(crate::limit::CUSTOM_KEY).unwrap_or(key),
                ),
                PolicySource::PolicyRule => (PolicySource::PolicyRule, key),
            };
            *by_series.entry((series.0 as usize, series.1)).or_default() += n;
        }
        let Ok(mut table) = stats.policies.lock() else {
            return;
        };
        for (key, counts) in &self.0 {
            let text = String::from_utf8_lossy(key);
            let (namespace, policy) = text.split_once('/').unwrap_or(("", &text));
            for (slot, &events) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
                let source = SOURCES[slot / 3];
                let k = PolicyKey {
                    namespace: namespace.to_string(),
                    policy: policy.to_string(),
                    direction: DIRECTIONS[slot % 3],
                    source: source.as_str(),
                };
                let sup = by_series
                    .get(&(source as usize, &key[..]))
                    .copied()
                    .unwrap_or(0);
                table.insert(
                    k,
                    Counts {
                        events,
                        suppressed: sup,
                    },
                );
            }
        }
    }
}
