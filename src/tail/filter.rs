//! Filters: which records to show. Every kind of filter narrows (AND); several values of the same
//! kind widen (OR), as `hubble observe` does: `--port 53 --port 5432 --namespace db` shows port 53
//! or 5432, in namespace db.
//!
//! The command-line flags and the interactive filter line (`port=5432 ns=default`) both go
//! through [`Filter::set`], so they accept the same words and values.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::record::Record;

/// An address or a CIDR block (`10.42.0.7`, `10.42.0.0/16`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not an IP address or CIDR block (e.g. 10.42.0.7, 10.42.0.0/16, fd00::/8)"
            )
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                Some(l.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        Ok(IpNet { addr, len })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.len == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = |bits: u32, len: u8| -> u128 {
            if len == 0 {
                0
            } else {
                (!0u128 << (bits - len as u32)) & (!0u128 >> (128 - bits))
            }
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask(32, self.len);
                (u32::from(n) as u128 & m) == (u32::from(a) as u128 & m)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask(128, self.len);
                (u128::from(n) & m) == (u128::from(a) & m)
            }
            _ => false,
        }
    }
}

/// Traffic direction relative to the pod the policy protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FilterDirection {
    Ingress,
    Egress,
}

impl FromStr for FilterDirection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ingress" | "in" => Ok(FilterDirection::Ingress),
            "egress" | "out" => Ok(FilterDirection::Egress),
            _ => Err(format!("{s:?} is not a direction (ingress or egress)")),
        }
    }
}

impl FilterDirection {
    fn as_str(self) -> &'static str {
        match self {
            FilterDirection::Ingress => "ingress",
            FilterDirection::Egress => "egress",
        }
    }
}

/// Protocol names the daemon writes (`crate::decode::protocol_name`), plus `icmpv4`.
const PROTOCOLS: &[&str] = &[
    "tcp", "udp", "icmp", "icmpv4", "icmpv6", "sctp", "igmp", "gre", "esp", "ah", "udplite",
];

/// A protocol name or number, lower-cased.
pub fn parse_protocol(s: &str) -> Result<String, String> {
    let p = s.to_ascii_lowercase();
    if PROTOCOLS.contains(&p.as_str()) || p.parse::<u8>().is_ok() {
        Ok(p)
    } else {
        Err(format!(
            "{s:?} is not a protocol ({} or a number)",
            PROTOCOLS.join(", ")
        ))
    }
}

/// Which records to show; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub policies: Vec<String>,
    pub pods: Vec<String>,
    pub ips: Vec<IpNet>,
    pub from_ips: Vec<IpNet>,
    pub to_ips: Vec<IpNet>,
    pub ports: Vec<u16>,
    pub protocols: Vec<String>,
    pub directions: Vec<FilterDirection>,
    pub prefixes: Vec<String>,
}

/// The words of the filter line, with their aliases: `(canonical, aliases)`.
pub const KEYS: &[(&str, &[&str])] = &[
    ("namespace", &["ns", "n"]),
    ("policy", &[]),
    ("pod", &[]),
    ("ip", &[]),
    ("from-ip", &["src-ip", "from", "src"]),
    ("to-ip", &["dst-ip", "dest-ip", "to", "dst"]),
    ("port", &[]),
    ("protocol", &["proto"]),
    ("direction", &["dir"]),
    ("prefix", &[]),
];

fn canonical(key: &str) -> Option<&'static str> {
    let key = key.trim_start_matches('-');
    KEYS.iter()
        .find(|(k, aliases)| *k == key || aliases.contains(&key))
        .map(|(k, _)| *k)
}

impl Filter {
    /// Adds one condition, e.g. `set("port", "5432")`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let Some(key) = canonical(key) else {
            let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "unknown filter {key:?} (known: {})",
                known.join(", ")
            ));
        };
        if value.is_empty() {
            return Err(format!("filter {key} needs a value"));
        }
        match key {
            "namespace" => self.namespaces.push(value.to_string()),
            "policy" => self.policies.push(value.to_string()),
            "pod" => self.pods.push(value.to_string()),
            "ip" => self.ips.push(value.parse()?),
            "from-ip" => self.from_ips.push(value.parse()?),
            "to-ip" => self.to_ips.push(value.parse()?),
            "port" => self.ports.push(
                value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a port number (0-65535)"))?,
            ),
            "protocol" => self.protocols.push(parse_protocol(value)?),
            "direction" => self.directions.push(value.parse()?),
            _ => self.prefixes.push(value.to_string()),
        }
        Ok(())
    }

    /// Parses a filter line: `key=value` words (or `--key value`), values may be quoted.
    /// `port=5432 ns=default prefix="DROP by"`.
    pub fn parse(line: &str) -> Result<Filter, String> {
        let words = split_words(line)?;
        let mut filter = Filter::default();
        let mut it = words.into_iter();
        while let Some(word) = it.next() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None if word.starts_with("--") => {
                    let value = it.next().ok_or_else(|| format!("{word} needs a value"))?;
                    (word, value)
                }
                None => {
                    return Err(format!(
                        "{word:?}: write filters as key=value, e.g. port=5432 ns=default"
                    ))
                }
            };
            filter.set(&key, &value)?;
        }
        Ok(filter)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether the record passes every condition.
    pub fn matches(&self, r: &Record) -> bool {
        any(&self.namespaces, |ns| in_namespace(r, ns))
            && any(&self.policies, |p| has_policy(r, p))
            && any(&self.pods, |p| has_pod(r, p))
            && any(&self.ips, |n| {
                r.src_ip.is_some_and(|a| n.contains(a)) || r.dest_ip.is_some_and(|a| n.contains(a))
            })
            && any(&self.from_ips, |n| r.src_ip.is_some_and(|a| n.contains(a)))
            && any(&self.to_ips, |n| r.dest_ip.is_some_and(|a| n.contains(a)))
            && any(&self.ports, |&p| {
                r.src_port == Some(p) || r.dest_port == Some(p)
            })
            && any(&self.protocols, |p| {
                protocol_matches(p, r.protocol.as_deref())
            })
            && any(&self.directions, |d| {
                r.direction.as_deref() == Some(d.as_str())
            })
            && any(&self.prefixes, |s| r.prefix.contains(s.as_str()))
    }
}

/// Empty: no condition. Otherwise one value must match.
fn any<T>(values: &[T], f: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(f)
}

fn in_namespace(r: &Record, ns: &str) -> bool {
    let pod_ns = |p: &Option<super::record::Pod>| p.as_ref().is_some_and(|p| p.namespace == ns);
    pod_ns(&r.src)
        || pod_ns(&r.dest)
        || r.policy
            .as_ref()
            .is_some_and(|p| p.namespace == ns || p.candidates.iter().any(|(cns, _)| cns == ns))
}

/// `ns/name` matches exactly; a bare `name` matches the name in any namespace. Candidates count
/// when the daemon could not resolve the policy to one.
fn has_policy(r: &Record, want: &str) -> bool {
    let Some(p) = &r.policy else { return false };
    let is = |ns: &str, name: &str| match want.split_once('/') {
        Some((wns, wname)) => wns == ns && wname == name,
        None => want == name,
    };
    p.name.as_deref().is_some_and(|name| is(&p.namespace, name))
        || p.candidates.iter().any(|(ns, name)| is(ns, name))
}

/// `[namespace/]name-prefix`, on either side (as `hubble observe --pod`).
fn has_pod(r: &Record, want: &str) -> bool {
    let (ns, name) = match want.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, want),
    };
    [&r.src, &r.dest]
        .into_iter()
        .flatten()
        .any(|p| ns.is_none_or(|ns| p.namespace == ns) && p.pod.starts_with(name))
}

/// `icmp` means ICMP of either IP version; `icmpv4` only IPv4's.
fn protocol_matches(want: &str, have: Option<&str>) -> bool {
    let Some(have) = have else { return false };
    match want {
        "icmp" => have == "icmp" || have == "icmpv6",
        "icmpv4" => have == "icmp",
        _ => {
            want == have
                || want
                    .parse::<u8>()
                    .ok()
                    .and_then(crate::decode::protocol_name)
                    .is_some_and(|n| n == have)
        }
    }
}

/// Splits on spaces, keeping `"quoted words"` and `'quoted words'` together.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

impl fmt::Display for Filter {
    /// The filter as a line [`Filter::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        let q = |s: &str| {
            if s.contains(char::is_whitespace) || s.is_empty() {
                format!("\"{s}\"")
            } else {
                s.to_string()
            }
        };
        words.extend(self.namespaces.iter().map(|v| format!("ns={}", q(v))));
        words.extend(self.policies.iter().map(|v| format!("policy={}", q(v))));
        words.extend(self.pods.iter().map(|v| format!("pod={}", q(v))));
        words.extend(self.ips.iter().map(|v| format!("ip={v}")));
        words.extend(self.from_ips.iter().map(|v| format!("from-ip={v}")));
        words.extend(self.to_ips.iter().map(|v| format!("to-ip={v}")));
        words.extend(self.ports.iter().map(|v| format!("port={v}")));
        words.extend(self.protocols.iter().map(|v| format!("protocol={v}")));
        words.extend(
            self.directions
                .iter()
                .map(|v| format!("direction={}", v.as_str())),
        );
        words.extend(self.prefixes.iter().map(|v| format!("prefix={}", q(v))));
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Pod, Policy};
    use super::*;

    fn rec() -> Record {
        Record {
            prefix: "DROP by policy default/deny-db".into(),
            src_ip: Some("10.42.0.5".parse().unwrap()),
            dest_ip: Some("10.42.1.7".parse().unwrap()),
            protocol: Some("tcp".into()),
            src_port: Some(43122),
            dest_port: Some(5432),
            policy: Some(Policy {
                namespace: "default".into(),
                name: Some("deny-db".into()),
                candidates: vec![],
            }),
            direction: Some("egress".into()),
            src: Some(Pod {
                pod: "web-7d9f-abcde".into(),
                namespace: "default".into(),
                workload: None,
            }),
            dest: Some(Pod {
                pod: "pg-0".into(),
                namespace: "db".into(),
                workload: None,
            }),
            ..Record::default()
        }
    }

    fn m(line: &str) -> bool {
        Filter::parse(line).unwrap().matches(&rec())
    }

    #[test]
    fn each_filter() {
        assert!(m(""));
        assert!(m("ns=db") && m("ns=default") && !m("ns=kube-system"));
        assert!(m("policy=deny-db") && m("policy=default/deny-db") && !m("policy=db/deny-db"));
        assert!(m("pod=web") && m("pod=db/pg-0") && !m("pod=default/pg-0") && !m("pod=api"));
        assert!(
            m("ip=10.42.1.7") && m("ip=10.42.0.0/16") && !m("ip=10.43.0.0/16") && !m("ip=fd00::/8")
        );
        assert!(m("from-ip=10.42.0.5") && !m("from-ip=10.42.1.7") && m("to-ip=10.42.1.0/24"));
        assert!(m("port=5432") && m("port=43122") && !m("port=53"));
        assert!(m("protocol=TCP") && m("proto=6") && !m("protocol=udp") && !m("protocol=icmp"));
        assert!(m("direction=egress") && !m("dir=ingress"));
        assert!(m("prefix=deny") && m("prefix=\"by policy\"") && !m("prefix=allow"));
    }

    #[test]
    fn combinations_and_alternatives() {
        assert!(m("port=5432 ns=db protocol=tcp"));
        assert!(!m("port=5432 ns=kube-system"));
        assert!(m("port=53 port=5432"));
        assert!(m("--port 5432 --namespace=db"));
    }

    #[test]
    fn icmp_matches_both_versions() {
        let mut r = rec();
        r.protocol = Some("icmpv6".into());
        assert!(Filter::parse("protocol=icmp").unwrap().matches(&r));
        assert!(!Filter::parse("protocol=icmpv4").unwrap().matches(&r));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            Filter::parse("port=x").unwrap_err(),
            "\"x\" is not a port number (0-65535)"
        );
        assert!(Filter::parse("colour=red")
            .unwrap_err()
            .starts_with("unknown filter \"colour\""));
        assert!(Filter::parse("5432").unwrap_err().contains("key=value"));
        assert!(Filter::parse("ip=10.0.0.0/33").is_err());
        assert!(Filter::parse("protocol=tcpp").is_err());
        assert!(Filter::parse("prefix=\"open").is_err());
    }

    #[test]
    fn display_round_trips() {
        let f = Filter::parse("ns=db port=5432 ip=10.0.0.0/8 prefix='a b' dir=ingress").unwrap();
        assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
    }
}
