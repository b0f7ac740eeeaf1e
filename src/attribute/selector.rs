//! Kubernetes label selectors, compiled once and matched against compact label sets.
//!
//! In: a `metav1.LabelSelector` (a NetworkPolicy's `podSelector`, later its `namespaceSelector`).
//! Out: a [`Selector`] that answers "does it select these [`Labels`]?" without allocating.
//!
//! Semantics follow apimachinery's `LabelSelectorAsSelector`: `matchLabels` and every
//! `matchExpressions` requirement must all hold; an empty selector (`{}`) selects everything.
//! `NotIn` and `DoesNotExist` hold for objects that lack the key. A selector the API server would
//! reject (an unknown operator, `In` without values, `Exists` with values) compiles to an error;
//! callers treat such a policy as selecting nothing rather than guessing.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use thiserror::Error;

/// A label set, sorted by key so lookups are a binary search. The set and its strings are
/// `Arc`s so an index can share one copy between the many pods that carry the same labels
/// (every replica of a Deployment does); cloning is a reference count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// Builds a label set; on a duplicate key the last value wins, as in a JSON object.
    pub fn new(pairs: impl IntoIterator<Item = (Arc<str>, Arc<str>)>) -> Self {
        let mut v: Vec<_> = pairs.into_iter().collect();
        // Stable sort keeps insertion order among equal keys, so dedup can keep the last one.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.reverse();
        v.dedup_by(|a, b| a.0 == b.0);
        v.reverse();
        Labels(v.into())
    }

    /// How many holders share this set (for an interner deciding what to drop).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a selector cannot be compiled. The API server validates selectors, so these mean a
/// malformed object (or a newer operator this code does not know).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    #[error("unknown label selector operator {0:?}")]
    UnknownOperator(String),
    #[error("operator {op} on key {key:?} needs at least one value")]
    MissingValues { key: String, op: &'static str },
    #[error("operator {op} on key {key:?} takes no values")]
    UnexpectedValues { key: String, op: &'static str },
}

impl SelectorError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SelectorError::UnknownOperator(_) => "unknown_operator",
            SelectorError::MissingValues { .. } => "missing_values",
            SelectorError::UnexpectedValues { .. } => "unexpected_values",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(Box<[Box<str>]>),
    NotIn(Box<[Box<str>]>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: Box<str>,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::In(values) => value.is_some_and(|v| values.iter().any(|x| &**x == v)),
            Op::NotIn(values) => value.is_none_or(|v| values.iter().all(|x| &**x != v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// A compiled label selector. `matchLabels` entries become `In` requirements with one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Box<[Requirement]>,
}

impl Selector {
    /// The selector `{}`: selects every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn from_k8s(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: k.as_str().into(),
                op: Op::In(Box::new([v.as_str().into()])),
            });
        }
        for expr in sel.match_expressions.iter().flatten() {
            requirements.push(requirement(
                &expr.key,
                &expr.operator,
                expr.values.as_deref(),
            )?);
        }
        Ok(Selector {
            requirements: requirements.into_boxed_slice(),
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn selects_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn requirement(
    key: &str,
    operator: &str,
    values: Option<&[String]>,
) -> Result<Requirement, SelectorError> {
    let values = values.unwrap_or_default();
    let list = || {
        values
            .iter()
            .map(|v| v.as_str().into())
            .collect::<Box<[Box<str>]>>()
    };
    let (op, needs_values) = match operator {
        "In" => (Op::In(list()), true),
        "NotIn" => (Op::NotIn(list()), true),
        "Exists" => (Op::Exists, false),
        "DoesNotExist" => (Op::DoesNotExist, false),
        other => return Err(SelectorError::UnknownOperator(other.to_string())),
    };
    let op_name = op_name(&op);
    if needs_values && values.is_empty() {
        return Err(SelectorError::MissingValues {
            key: key.to_string(),
            op: op_name,
        });
    }
    if !needs_values && !values.is_empty() {
        return Err(SelectorError::UnexpectedValues {
            key: key.to_string(),
            op: op_name,
        });
    }
    Ok(Requirement {
        key: key.into(),
        op,
    })
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::In(_) => "In",
        Op::NotIn(_) => "NotIn",
        Op::Exists => "Exists",
        Op::DoesNotExist => "DoesNotExist",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (Arc::from(*k), Arc::from(*v))))
    }

    fn sel(json: serde_json::Value) -> Result<Selector, SelectorError> {
        let s: LabelSelector = serde_json::from_value(json).unwrap();
        Selector::from_k8s(&s)
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn labels_are_sorted_and_last_duplicate_wins() {
        let l = labels(&[("b", "2"), ("a", "1"), ("b", "3")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("c"), None);
        assert_eq!(l.len(), 2);
        assert!(Labels::default().is_empty());
    }

    #[test]
    fn empty_selector_selects_everything() {
        let s = sel(serde_json::json!({})).unwrap();
        assert!(s.selects_everything());
        assert!(s.matches(&Labels::default()));
        assert!(s.matches(&labels(&[("app", "web")])));
        // Present-but-empty lists are the same thing.
        let s = sel(serde_json::json!({"matchLabels": {}, "matchExpressions": []})).unwrap();
        assert!(s.matches(&Labels::default()));
        assert_eq!(Selector::everything(), s);
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let s = sel(serde_json::json!({"matchLabels": {"app": "db", "tier": "backend"}})).unwrap();
        assert!(s.matches(&labels(&[("app", "db"), ("tier", "backend"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "frontend")])));
        assert!(!s.matches(&Labels::default()));
    }

    #[test]
    fn in_and_not_in() {
        let s = Selector::from_k8s(&LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("env", "In", Some(&["prod", "staging"]))]),
        })
        .unwrap();
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "staging")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&Labels::default()), "In needs the key");

        let s = sel(serde_json::json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]})).unwrap();
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(
            s.matches(&Labels::default()),
            "NotIn holds when the key is absent"
        );
    }

    #[test]
    fn exists_and_does_not_exist() {
        let s =
            sel(serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}))
                .unwrap();
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(!s.matches(&labels(&[("other", "x")])));
        let s = sel(serde_json::json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": []}]})).unwrap();
        assert!(!s.matches(&labels(&[("app", "x")])));
        assert!(s.matches(&labels(&[("other", "x")])));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let s = sel(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("env", "prod")])));
    }

    #[test]
    fn invalid_selectors_are_errors() {
        let e = sel(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})).unwrap_err();
        assert_eq!(e, SelectorError::UnknownOperator("Gt".into()));
        assert_eq!(e.kind(), "unknown_operator");
        // Operators are case-sensitive in the API.
        assert!(sel(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["1"]}]})).is_err());
        let e = sel(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "operator In on key \"a\" needs at least one value"
        );
        let e = sel(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})).unwrap_err();
        assert_eq!(e.kind(), "unexpected_values");
    }
}
