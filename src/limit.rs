//! Per-policy rate limits, applied in the daemon.
//!
//! In: the limit key of a message ([`key_into`]: the rule that logged it). Out: write it or
//! suppress it; suppressed messages are counted per key and reported in summaries, never
//! dropped silently.
//!
//! The keys follow the rules kube-router programs ([pod.go], [policy.go]), each of which has its
//! own kernel `limit` bucket per IP family: the `DROP by policy` rule of each policy chain (keyed
//! `namespace/name` as the prefix spells it, so an annotation's limit applies to it), the
//! empty-prefix rule at the end of **each pod's** firewall chain (keyed by that pod and family,
//! so a flood of drops to one pod never silences another pod's), and any other prefix (a rule
//! someone wrote by hand, keyed by its prefix).
//!
//! [pod.go]: https://github.com/k3s-io/kube-router/blob/master/pkg/controllers/netpol/pod.go
//! [policy.go]: https://github.com/k3s-io/kube-router/blob/master/pkg/controllers/netpol/policy.go
//!
//! The limits come from kube-router's annotations `kube-router.io/netpol-nflog-limit` and
//! `-limit-burst`, parsed with kube-router's own grammar ([`parse_annotations`]), or from the
//! configured defaults. Buckets are governor GCRA limiters, generic over the clock so tests move
//! time by hand.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use thiserror::Error;

pub const ANNOTATION_LIMIT: &str = "kube-router.io/netpol-nflog-limit";
pub const ANNOTATION_BURST: &str = "kube-router.io/netpol-nflog-limit-burst";

/// A rate: `count` messages per `per`, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Limit {
    /// kube-router's default for both kinds of rule: 10/minute, burst 10.
    pub const DEFAULT: Limit = Limit {
        count: 10,
        per: Duration::from_secs(60),
        burst: 10,
    };

    fn quota(&self) -> Quota {
        let period = self.per / self.count.max(1);
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitError {
    #[error("limit {0:?} is not an integer with an optional /second|minute|hour|day|s|m|h|d")]
    Syntax(String),
    #[error("burst {0:?} is not an integer")]
    BurstSyntax(String),
    #[error("limit {0:?} is outside what iptables accepts (1 to 10000 per second)")]
    Range(String),
    #[error("burst {0:?} is outside what iptables accepts (1 to 10000)")]
    BurstRange(String),
}

/// Parses `N[/unit]` as kube-router does (`areNFlogParamsCorrect`): Go `strconv.Atoi`, units
/// exactly `second minute hour day s m h d` (case-sensitive), a bare number is per second.
/// Then rejects what iptables' `limit` match would: 0, negatives, more than 10000/s.
pub fn parse_limit(s: &str) -> Result<(u32, Duration), LimitError> {
    parse_rate(s, 10000.0)
}

/// [`parse_limit`]'s grammar with another ceiling (messages per second).
pub fn parse_rate(s: &str, max_per_second: f64) -> Result<(u32, Duration), LimitError> {
    let err = || LimitError::Syntax(s.to_string());
    let (num, unit) = match s.split_once('/') {
        Some((n, u)) => (n, Some(u)),
        None => (s, None),
    };
    let n = go_atoi(num).ok_or_else(err)?;
    let per = match unit {
        None | Some("second") | Some("s") => Duration::from_secs(1),
        Some("minute") | Some("m") => Duration::from_secs(60),
        Some("hour") | Some("h") => Duration::from_secs(3600),
        Some("day") | Some("d") => Duration::from_secs(86400),
        Some(_) => return Err(err()),
    };
    if n <= 0 || n > i64::from(u32::MAX) || (n as f64) / per.as_secs_f64() > max_per_second {
        return Err(LimitError::Range(s.to_string()));
    }
    Ok((n as u32, per))
}

/// Parses a burst the same way: an integer, 1 to 10000.
pub fn parse_burst(s: &str) -> Result<u32, LimitError> {
    let n = go_atoi(s).ok_or_else(|| LimitError::BurstSyntax(s.to_string()))?;
    if !(1..=10000).contains(&n) {
        return Err(LimitError::BurstRange(s.to_string()));
    }
    Ok(n as u32)
}

/// Go's `strconv.Atoi`: optional sign, ASCII digits, no spaces, fits in 64 bits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// The limit a NetworkPolicy's annotations ask for. As in kube-router, a bad value in either
/// annotation makes *both* fall back to the defaults; the error says which value was bad.
pub fn parse_annotations(limit: Option<&str>, burst: Option<&str>) -> (Limit, Option<LimitError>) {
    let parsed = (|| {
        let (count, per) = match limit {
            Some(l) => parse_limit(l)?,
            None => (Limit::DEFAULT.count, Limit::DEFAULT.per),
        };
        let burst = match burst {
            Some(b) => parse_burst(b)?,
            None => Limit::DEFAULT.burst,
        };
        Ok(Limit { count, per, burst })
    })();
    match parsed {
        Ok(limit) => (limit, None),
        Err(e) => (Limit::DEFAULT, Some(e)),
    }
}

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Entry<C: Clock> {
    limit: Limit,
    bucket: Bucket<C>,
    /// Suppressed since the last summary.
    suppressed: u64,
    suppressed_total: u64,
}

/// One suppression summary: `count` messages of the bucket `key` were suppressed since the
/// last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub key: String,
    pub count: u64,
}

impl Suppressed {
    /// The kind of rule the key stands for.
    pub fn source(&self) -> crate::attribute::PolicySource {
        source_of(self.key.as_bytes())
    }

    /// The NetworkPolicy (`namespace/name`, as the prefix spells it) for `DROP by policy` keys.
    pub fn policy(&self) -> Option<&str> {
        (self.source() == crate::attribute::PolicySource::PolicyRule).then_some(&*self.key)
    }

    /// The key in words, for logs and syslog.
    pub fn describe(&self) -> String {
        let k = &self.key;
        if let Some(rest) = k.strip_prefix("pod-chain:") {
            format!("the pod chain of {rest}")
        } else if let Some(rest) = k.strip_prefix("custom:") {
            format!("prefix {rest:?}")
        } else if k.is_empty() || k.as_bytes() == OVERFLOW_KEY {
            "messages without a policy".to_string()
        } else {
            k.clone()
        }
    }
}

/// The kind of rule a limit key stands for.
pub fn source_of(key: &[u8]) -> crate::attribute::PolicySource {
    use crate::attribute::PolicySource;
    if key.starts_with(POD_CHAIN_KEY) {
        PolicySource::PodChain
    } else if key.starts_with(CUSTOM_KEY) || key == NO_POLICY || key == OVERFLOW_KEY {
        PolicySource::Custom
    } else {
        PolicySource::PolicyRule
    }
}

/// A key that names no rule (messages whose rule cannot be told); limited by the default for
/// messages without a policy.
pub const NO_POLICY: &[u8] = b"";

/// Keys of empty-prefix messages (kube-router's pod chains) start with this.
pub const POD_CHAIN_KEY: &[u8] = b"pod-chain:";
/// Keys of messages with a prefix that is not kube-router's start with this.
pub const CUSTOM_KEY: &[u8] = b"custom:";
/// Where new keys go once [`MAX_BUCKETS`] exist: keys of pod chains whose pod is unknown hold
/// packet addresses, which a remote sender chooses, so the table must stay bounded.
pub const OVERFLOW_KEY: &[u8] = b"(other)";
/// Buckets kept at most (about 200 bytes each).
pub const MAX_BUCKETS: usize = 65536;

/// Writes the limit key of one message into `out` (cleared first). `protected` is the pod whose
/// chain rejected an empty-prefix message (`namespace`, `pod`), when attribution decided it; for
/// an undecided one the key holds both addresses, so it never shares a bucket with other pods.
/// Namespaces are DNS labels without `:`, so the tagged keys cannot collide with policy keys.
pub fn key_into(
    out: &mut Vec<u8>,
    attribution: &crate::attribute::Attribution<'_>,
    prefix: &[u8],
    protected: Option<(&str, &str)>,
    addrs: Option<(std::net::IpAddr, std::net::IpAddr)>,
) {
    use crate::attribute::PolicySource;
    use std::net::IpAddr;
    out.clear();
    match attribution.source {
        PolicySource::PolicyRule => {
            out.extend_from_slice(attribution.policy_key().unwrap_or_default())
        }
        PolicySource::Custom => {
            out.extend_from_slice(CUSTOM_KEY);
            out.extend_from_slice(prefix);
        }
        PolicySource::PodChain => {
            // Written with the renderers' address writers, not `write!`: the formatting
            // machinery cost about 2,000 instructions per pod-chain message (callgrind).
            out.extend_from_slice(POD_CHAIN_KEY);
            match (protected, addrs) {
                (Some((ns, pod)), _) => {
                    out.extend_from_slice(ns.as_bytes());
                    out.push(b'/');
                    out.extend_from_slice(pod.as_bytes());
                    out.extend_from_slice(match addrs {
                        Some((IpAddr::V6(_), _)) => b" IPv6",
                        _ => b" IPv4",
                    });
                }
                (None, Some((src, dst))) => {
                    push_ip(out, src);
                    out.extend_from_slice(b" > ");
                    push_ip(out, dst);
                }
                (None, None) => {}
            }
        }
    }
}

/// An address as `inet_ntop` writes it (the same text as `Display`, but for the rare
/// IPv4-compatible IPv6 form).
fn push_ip(out: &mut Vec<u8>, a: std::net::IpAddr) {
    match a {
        std::net::IpAddr::V4(a) => crate::render::push_ipv4(out, a),
        std::net::IpAddr::V6(a) => crate::render::push_ipv6(out, a),
    }
}

/// Rate limits by policy key.
pub struct Limiter<C: Clock = DefaultClock> {
    clock: C,
    enabled: bool,
    default_policy: Limit,
    default_unattributed: Limit,
    /// Limits set from the API, by policy key; absent keys use `default_policy`.
    // Keys are policy names from the API: a fast hash is fine.
    configured: rustc_hash::FxHashMap<Box<[u8]>, Limit>,
    /// Pod-chain keys of unknown pods hold addresses a remote sender picks: SipHash with a
    /// random key keeps them from being chosen to collide.
    buckets: std::collections::HashMap<Box<[u8]>, Entry<C>>,
    /// The node-wide cap, on top of the per-rule buckets.
    node: Option<Bucket<C>>,
    /// Messages a rule's bucket allowed and the node-wide cap suppressed.
    node_suppressed: u64,
}

impl Limiter<DefaultClock> {
    pub fn new(enabled: bool, default_policy: Limit, default_unattributed: Limit) -> Self {
        Self::with_clock(
            enabled,
            default_policy,
            default_unattributed,
            DefaultClock::default(),
        )
    }
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn with_clock(
        enabled: bool,
        default_policy: Limit,
        default_unattributed: Limit,
        clock: C,
    ) -> Self {
        Limiter {
            clock,
            enabled,
            default_policy,
            default_unattributed,
            configured: Default::default(),
            buckets: Default::default(),
            node: None,
            node_suppressed: 0,
        }
    }

    /// Caps all messages of the node at `limit`, after their rule's own bucket; a message the
    /// cap suppresses is counted under its rule's key like any other.
    pub fn with_node_limit(mut self, limit: Option<Limit>) -> Self {
        self.node = limit.map(|l| RateLimiter::direct_with_clock(l.quota(), self.clock.clone()));
        self
    }

    /// Messages the node-wide cap suppressed since start.
    pub fn node_suppressed(&self) -> u64 {
        self.node_suppressed
    }

    /// Sets (or with `None`, clears) the limit of a policy. A changed limit starts a fresh bucket.
    pub fn set_limit(&mut self, key: &[u8], limit: Option<Limit>) {
        match limit {
            Some(l) => {
                self.configured.insert(key.into(), l);
            }
            None => {
                self.configured.remove(key);
            }
        }
        let want = self.limit_for(key);
        if let Some(e) = self.buckets.get_mut(key) {
            if e.limit != want {
                e.limit = want;
                e.bucket = RateLimiter::direct_with_clock(want.quota(), self.clock.clone());
            }
        }
    }

    fn limit_for(&self, key: &[u8]) -> Limit {
        if key == NO_POLICY
            || key == OVERFLOW_KEY
            || key.starts_with(POD_CHAIN_KEY)
            || key.starts_with(CUSTOM_KEY)
        {
            return self.default_unattributed;
        }
        self.configured
            .get(key)
            .copied()
            .unwrap_or(self.default_policy)
    }

    /// Whether a message of this policy may be written. Does not allocate once the policy has
    /// been seen.
    pub fn allow(&mut self, key: &[u8]) -> bool {
        if !self.enabled {
            return true;
        }
        let key = if self.buckets.contains_key(key) || self.buckets.len() < MAX_BUCKETS {
            key
        } else {
            OVERFLOW_KEY
        };
        if !self.buckets.contains_key(key) {
            let limit = self.limit_for(key);
            let bucket = RateLimiter::direct_with_clock(limit.quota(), self.clock.clone());
            self.buckets.insert(
                key.into(),
                Entry {
                    limit,
                    bucket,
                    suppressed: 0,
                    suppressed_total: 0,
                },
            );
        }
        let Some(e) = self.buckets.get_mut(key) else {
            return true;
        };
        let node_allows = || self.node.as_ref().is_none_or(|n| n.check().is_ok());
        if e.bucket.check().is_ok() {
            if node_allows() {
                return true;
            }
            self.node_suppressed += 1;
        }
        e.suppressed += 1;
        e.suppressed_total += 1;
        false
    }

    /// Takes the suppression counts since the last call (for the periodic summary).
    pub fn take_summaries(&mut self) -> Vec<Suppressed> {
        let mut out: Vec<_> = self
            .buckets
            .iter_mut()
            .filter(|(_, e)| e.suppressed > 0)
            .map(|(k, e)| {
                let count = std::mem::take(&mut e.suppressed);
                Suppressed {
                    key: String::from_utf8_lossy(k).into_owned(),
                    count,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Total suppressed per policy since start.
    pub fn totals(&self) -> Vec<(String, u64)> {
        self.buckets
            .iter()
            .filter(|(_, e)| e.suppressed_total > 0)
            .map(|(k, e)| (String::from_utf8_lossy(k).into_owned(), e.suppressed_total))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn kube_router_grammar() {
        let ok = |s: &str| parse_limit(s).unwrap();
        assert_eq!(ok("10/minute"), (10, Duration::from_secs(60)));
        assert_eq!(ok("10/m"), (10, Duration::from_secs(60)));
        assert_eq!(ok("5"), (5, Duration::from_secs(1)));
        assert_eq!(ok("+5/s"), (5, Duration::from_secs(1)));
        assert_eq!(ok("3/hour"), (3, Duration::from_secs(3600)));
        assert_eq!(ok("1/d"), (1, Duration::from_secs(86400)));
        assert_eq!(ok("10000/second"), (10000, Duration::from_secs(1)));
        for bad in [
            "10/min",
            "10/sec",
            "10/Minute",
            "ten",
            "",
            "10/",
            " 10",
            "10 ",
            "1.5/s",
            "/s",
            "10/m/s",
        ] {
            assert!(
                matches!(parse_limit(bad), Err(LimitError::Syntax(_))),
                "{bad:?}"
            );
        }
        for range in ["0", "-1/m", "10001", "10001/s", "0/h"] {
            assert!(
                matches!(parse_limit(range), Err(LimitError::Range(_))),
                "{range:?}"
            );
        }
        assert_eq!(parse_burst("10"), Ok(10));
        assert!(matches!(parse_burst("0"), Err(LimitError::BurstRange(_))));
        assert!(matches!(
            parse_burst("10001"),
            Err(LimitError::BurstRange(_))
        ));
        assert!(matches!(parse_burst("x"), Err(LimitError::BurstSyntax(_))));
    }

    #[test]
    fn any_bad_annotation_resets_both() {
        let (l, e) = parse_annotations(Some("100/second"), Some("50"));
        assert_eq!((l.count, l.burst, e), (100, 50, None));
        let (l, e) = parse_annotations(Some("100/second"), Some("zero"));
        assert_eq!(l, Limit::DEFAULT);
        assert!(e.is_some());
        let (l, e) = parse_annotations(Some("100/sec"), Some("50"));
        assert_eq!(l, Limit::DEFAULT);
        assert!(e.is_some());
        assert_eq!(parse_annotations(None, None), (Limit::DEFAULT, None));
    }

    #[test]
    fn buckets_follow_the_clock_and_count_suppression() {
        let clock = FakeRelativeClock::default();
        let mut lim = Limiter::with_clock(true, Limit::DEFAULT, Limit::DEFAULT, clock.clone());
        let key = b"default/deny-db";
        let allowed = (0..25).filter(|_| lim.allow(key)).count();
        assert_eq!(allowed, 10, "burst of 10");
        clock.advance(Duration::from_secs(6));
        assert!(lim.allow(key), "one token per 6 s at 10/minute");
        assert!(!lim.allow(key));
        assert_eq!(
            lim.take_summaries(),
            vec![Suppressed {
                key: "default/deny-db".into(),
                count: 16
            }]
        );
        assert!(lim.take_summaries().is_empty());
        // A new annotation applies at once.
        lim.set_limit(
            key,
            Some(Limit {
                count: 1000,
                per: Duration::from_secs(1),
                burst: 100,
            }),
        );
        assert_eq!((0..100).filter(|_| lim.allow(key)).count(), 100);
    }

    #[test]
    fn the_node_cap_applies_across_rules_and_counts_per_rule() {
        let clock = FakeRelativeClock::default();
        let per_rule = Limit {
            count: 100,
            per: Duration::from_secs(1),
            burst: 100,
        };
        let node = Limit {
            count: 10,
            per: Duration::from_secs(1),
            burst: 15,
        };
        let mut lim = Limiter::with_clock(true, per_rule, per_rule, clock.clone())
            .with_node_limit(Some(node));
        let a = (0..10).filter(|_| lim.allow(b"shop/a")).count();
        let b = (0..10)
            .filter(|_| lim.allow(b"pod-chain:shop/db-0 IPv4"))
            .count();
        assert_eq!((a, b), (10, 5), "15 for the whole node");
        assert_eq!(lim.node_suppressed(), 5);
        assert_eq!(
            lim.take_summaries(),
            vec![Suppressed {
                key: "pod-chain:shop/db-0 IPv4".into(),
                count: 5
            }]
        );
        clock.advance(Duration::from_millis(100));
        assert!(lim.allow(b"shop/a"), "one more per 100 ms");
        assert!(!lim.allow(b"shop/a"));
        assert!(matches!(parse_rate("20000/s", 1e6), Ok((20000, _))));
        assert!(matches!(
            parse_rate("20000/s", 1e4),
            Err(LimitError::Range(_))
        ));
        assert!(matches!(
            parse_rate("99999999999/s", 1e12),
            Err(LimitError::Range(_))
        ));
    }

    #[test]
    fn disabled_allows_everything() {
        let mut lim = Limiter::new(false, Limit::DEFAULT, Limit::DEFAULT);
        assert!((0..1000).all(|_| lim.allow(NO_POLICY)));
    }
}
