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

/// The address classes the daemon writes as `src_class`/`dest_class`
/// ([`AddrClass::as_str`](crate::attribute::addr::AddrClass::as_str)).
pub const ADDR_CLASSES: &[&str] = &[
    "public",
    "private",
    "unique-local",
    "cgnat",
    "loopback",
    "link-local",
    "multicast",
    "broadcast",
    "unspecified",
    "documentation",
    "reserved",
];

/// Classes named by what the daemon knows of the address rather than its range: a pod's, a
/// node's own, or (destination only) one the client reached through a Service.
pub const NAMED_CLASSES: &[&str] = &["pod", "node", "service"];

/// An address class: one of [`ADDR_CLASSES`] or [`NAMED_CLASSES`], lower-cased.
pub fn parse_class(s: &str) -> Result<String, String> {
    let c = s.to_ascii_lowercase();
    if ADDR_CLASSES.contains(&c.as_str()) || NAMED_CLASSES.contains(&c.as_str()) {
        Ok(c)
    } else {
        Err(format!(
            "{s:?} is not an address class ({}, {})",
            ADDR_CLASSES.join(", "),
            NAMED_CLASSES.join(", ")
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
    /// `namespace/name` or `name` of a Service the client aimed at.
    pub services: Vec<String>,
    /// A node on either side: a node's own address, or a pod running on it.
    pub nodes: Vec<String>,
    /// Address classes ([`parse_class`]) of either side, of the source, of the destination.
    pub classes: Vec<String>,
    pub from_classes: Vec<String>,
    pub to_classes: Vec<String>,
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
    ("service", &["svc"]),
    ("node", &[]),
    ("class", &[]),
    ("from-class", &["src-class"]),
    ("to-class", &["dst-class", "dest-class"]),
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
            "service" => self.services.push(value.to_string()),
            "node" => self.nodes.push(value.to_string()),
            "class" => self.classes.push(parse_class(value)?),
            "from-class" => self.from_classes.push(parse_class(value)?),
            "to-class" => self.to_classes.push(parse_class(value)?),
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
            && any(&self.services, |s| has_service(r, s))
            && any(&self.nodes, |n| has_node(r, n))
            && any(&self.classes, |c| {
                is_class(r, End::Src, c) || is_class(r, End::Dest, c)
            })
            && any(&self.from_classes, |c| is_class(r, End::Src, c))
            && any(&self.to_classes, |c| is_class(r, End::Dest, c))
    }
}

#[derive(Clone, Copy)]
enum End {
    Src,
    Dest,
}

/// `ns/name` matches exactly; a bare `name` matches the name in any namespace.
fn has_service(r: &Record, want: &str) -> bool {
    r.services.iter().any(|s| match want.split_once('/') {
        Some((ns, name)) => s.namespace == ns && s.name == name,
        None => s.name == want,
    })
}

/// A node's own address on either side, or a pod on either side running on that node.
fn has_node(r: &Record, want: &str) -> bool {
    let pod_on = |p: &Option<super::record::Pod>| {
        p.as_ref().is_some_and(|p| p.node.as_deref() == Some(want))
    };
    r.src_node.as_deref() == Some(want)
        || r.dest_node.as_deref() == Some(want)
        || pod_on(&r.src)
        || pod_on(&r.dest)
}

/// Whether one end is of the class: `pod`, `node` and `service` by what the daemon named, the
/// others by the daemon's `src_class`/`dest_class`, or for records without them (syslogemu
/// lines, older daemons) by the address itself, as the daemon classifies it.
fn is_class(r: &Record, end: End, class: &str) -> bool {
    let (pod, node, written, ip) = match end {
        End::Src => (&r.src, &r.src_node, &r.src_class, r.src_ip),
        End::Dest => (&r.dest, &r.dest_node, &r.dest_class, r.dest_ip),
    };
    match class {
        "pod" => pod.is_some(),
        "node" => node.is_some(),
        "service" => matches!(end, End::Dest) && !r.services.is_empty(),
        _ => match written {
            Some(w) => w == class,
            None => {
                ip.is_some_and(|ip| crate::attribute::addr::AddrClass::of(ip).as_str() == class)
            }
        },
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
        words.extend(self.services.iter().map(|v| format!("service={}", q(v))));
        words.extend(self.nodes.iter().map(|v| format!("node={}", q(v))));
        words.extend(self.classes.iter().map(|v| format!("class={v}")));
        words.extend(self.from_classes.iter().map(|v| format!("from-class={v}")));
        words.extend(self.to_classes.iter().map(|v| format!("to-class={v}")));
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Pod, Policy, Service};
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
                node: Some("node-1".into()),
            }),
            dest: Some(Pod {
                pod: "pg-0".into(),
                namespace: "db".into(),
                workload: None,
                node: Some("node-2".into()),
            }),
            services: vec![Service {
                namespace: "db".into(),
                name: "postgres".into(),
                port_name: Some("pg".into()),
                port: Some(5432),
                via: Some("endpoints".into()),
                ..Service::default()
            }],
            src_class: Some("private".into()),
            dest_class: Some("private".into()),
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
    fn services_nodes_and_classes() {
        assert!(m("service=postgres") && m("service=db/postgres") && m("svc=postgres"));
        assert!(!m("service=default/postgres") && !m("service=postgres-ro"));
        // A pod's node counts on either side.
        assert!(m("node=node-1") && m("node=node-2") && !m("node=node-3"));
        assert!(m("class=private") && m("class=pod") && m("to-class=service"));
        assert!(!m("class=public") && !m("class=node") && !m("from-class=service"));
        assert!(m("from-class=pod") && m("dest-class=PRIVATE"));

        // A node's own address on one side, the internet on the other.
        let mut r = rec();
        r.src = None;
        r.src_node = Some("node-3".into());
        r.services.clear();
        r.src_ip = Some("192.168.1.13".parse().unwrap());
        let f = |line: &str| Filter::parse(line).unwrap().matches(&r);
        assert!(f("node=node-3") && f("from-class=node") && !f("to-class=node"));
        assert!(!f("from-class=pod") && f("to-class=pod") && !f("class=service"));
        assert!(!f("service=postgres") && !f("pod=web"));
        r.src_node = None;
        r.src_class = Some("public".into());
        r.src_ip = Some("203.0.113.9".parse().unwrap());
        let f = |line: &str| Filter::parse(line).unwrap().matches(&r);
        assert!(f("from-class=public") && f("class=public") && !f("to-class=public"));
        assert!(!f("node=node-3") && !f("class=node"));
    }

    #[test]
    fn classes_of_records_without_them_come_from_the_address() {
        // syslogemu lines carry no classes: the address decides, as the daemon classifies it.
        let line = "Nov 27 20:59:32 h DROP by policy default/deny-db IN=eth0 OUT= MAC= SRC=8.8.8.8 DST=10.42.1.7 LEN=60 PROTO=TCP SPT=43122 DPT=5432 SYN MARK=0x0 ";
        let r = Record::from_syslogemu(line).unwrap();
        assert_eq!(r.src_class, None);
        let f = |line: &str| Filter::parse(line).unwrap().matches(&r);
        assert!(f("from-class=public") && f("to-class=private") && !f("from-class=private"));
        assert!(!f("class=loopback") && !f("class=pod") && !f("class=service"));
    }

    #[test]
    fn every_class_the_daemon_writes_is_accepted() {
        use crate::attribute::addr::AddrClass;
        for ip in [
            "8.8.8.8",
            "10.0.0.1",
            "fd00::1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "192.0.2.1",
            "240.0.0.1",
        ] {
            let class = AddrClass::of(ip.parse().unwrap()).as_str();
            assert!(ADDR_CLASSES.contains(&class), "{ip}: {class}");
            assert_eq!(parse_class(class).as_deref(), Ok(class));
        }
        assert!(parse_class("internet")
            .unwrap_err()
            .contains("not an address class"));
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
        let f = Filter::parse(
            "ns=db port=5432 ip=10.0.0.0/8 prefix='a b' dir=ingress svc=db/pg node=n1 class=public \
             src-class=pod to-class=service",
        )
        .unwrap();
        assert_eq!(
            (f.services.len(), f.nodes.len(), f.classes.len()),
            (1, 1, 1)
        );
        assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
    }
}
