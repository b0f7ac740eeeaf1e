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
        // One lookup for a known key (two cost about 200 instructions per message).
        if let Some(c) = self.0.get_mut(key) {
            c[slot] += 1;
            return;
        }
        let key = if self.0.len() < crate::metrics::MAX_POLICY_SERIES {
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
        let series_key = |key: &[u8], direction, source: PolicySource| {
            let text = String::from_utf8_lossy(key);
            let (namespace, policy) = text.split_once('/').unwrap_or(("", &text));
            PolicyKey {
                namespace: namespace.to_string(),
                policy: policy.to_string(),
                direction,
                source: source.as_str(),
            }
        };
        for (key, counts) in &self.0 {
            for (slot, &events) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
                let (source, direction) = (SOURCES[slot / 3], slot % 3);
                // A suppressed message is limited before its direction is known: suppressions
                // go to the series without a direction, always the same one (a counter).
                let suppressed = match direction {
                    0 => by_series.remove(&(source as usize, &key[..])).unwrap_or(0),
                    _ => 0,
                };
                table.insert(
                    series_key(key, DIRECTIONS[direction], source),
                    Counts { events, suppressed },
                );
            }
        }
        // Suppressions of a rule with no written message without a direction (every message
        // suppressed, or only directed ones written): a series of their own.
        for ((source, key), suppressed) in by_series {
            if table.len() >= crate::metrics::MAX_POLICY_SERIES {
                break;
            }
            let k = series_key(key, DIRECTIONS[0], SOURCES[source]);
            table.entry(k).or_default().suppressed = suppressed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(stats: &Stats) -> Vec<(String, &'static str, u64, u64)> {
        let table = stats.policies.lock().unwrap();
        table
            .iter()
            .map(|(k, c)| {
                let name = format!("{}/{}", k.namespace, k.policy);
                (name, k.direction, c.events, c.suppressed)
            })
            .collect()
    }

    /// A policy the limits silenced entirely still has its suppressions counted; suppressions
    /// stay on the series without a direction even when directed messages were written.
    #[test]
    fn suppressed_only_policies_get_a_series() {
        let mut counter = PolicyCounter::default();
        let mut counts = [0u64; 9];
        counts[1] = 4; // policy rule, ingress
        counter.0.insert(b"shop/written"[..].into(), counts);
        let stats = Stats::default();
        let suppressed = [
            ("shop/written".to_string(), 3),
            ("shop/silenced".to_string(), 7),
        ];
        counter.publish(&stats, &suppressed);
        assert_eq!(
            series(&stats),
            [
                ("shop/silenced".to_string(), "", 0, 7),
                ("shop/written".to_string(), "", 0, 3),
                ("shop/written".to_string(), "ingress", 4, 0),
            ]
        );
    }
}
