//! [`Record`]: one event as every source delivers it, owned and independent of where it came from.
//!
//! In: a JSON line of the daemon's tail socket or JSON file, a syslogemu line, or an [`Event`]
//! this process decoded itself (pcap replay, direct mode). Out: the fields filters and outputs
//! need, plus the original renderings (`json`, `syslogemu`) and the NFLOG message bytes when known
//! (for `-w`).
//!
//! One dropped packet can be logged by several rules (a policy chain, then the pod chain; K3s
//! logs after each accept rule of a policy), so the daemon writes several syslogemu lines for
//! one event. The tail socket's records carry all of them in `"messages"`; a record keeps the
//! first in `syslogemu`/`nflog` and the others in `further`, so `-o syslogemu` and `-w` write
//! what the daemon wrote, line for line.

use std::net::IpAddr;

use serde::Deserialize;

use crate::attribute::{Attribution, PolicySource};
use crate::event::Event;
use crate::render::{Format, Renderer};

/// A NetworkPolicy as a record names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    /// `None` when the daemon could not tell which of several candidates dropped the packet.
    pub name: Option<String>,
    /// `(namespace, name)` of every candidate the daemon listed.
    pub candidates: Vec<(String, String)>,
}

/// A pod on one side of the packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub pod: String,
    pub namespace: String,
    pub workload: Option<String>,
    /// The node the pod runs on, when the daemon knows it.
    pub node: Option<String>,
}

/// A Service the client aimed at (the destination's `services` in the daemon's JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub port_name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub node_port: Option<u16>,
    /// How the daemon knows (`cluster-ip`, `node-port`, `untranslated`, `endpoints`).
    #[serde(default)]
    pub via: Option<String>,
}

/// One side of the packet as the daemon's JSON has it: a pod (`pod`, `namespace`, … and the
/// pod's `node`), else a node's own address (`node` alone), plus the destination's `services`.
#[derive(Deserialize, Default)]
struct WireSide {
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    workload: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    services: Vec<Service>,
}

/// What a record knows about one side: its pod, or the node whose own address it is.
struct Side {
    pod: Option<Pod>,
    node: Option<String>,
    services: Vec<Service>,
}

impl From<Option<WireSide>> for Side {
    fn from(w: Option<WireSide>) -> Side {
        let w = w.unwrap_or_default();
        match w.pod {
            Some(pod) => Side {
                pod: Some(Pod {
                    pod,
                    namespace: w.namespace.unwrap_or_default(),
                    workload: w.workload,
                    node: w.node,
                }),
                node: None,
                services: w.services,
            },
            // `{node}` alone: the address is the node's own (kubelet probes, hostNetwork pods).
            None => Side {
                pod: None,
                node: w.node,
                services: w.services,
            },
        }
    }
}

/// One dropped packet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// As the source wrote it: RFC 3339 (JSON) or `Mmm dd hh:mm:ss` (syslogemu).
    pub timestamp: String,
    pub prefix: String,
    pub indev: String,
    pub outdev: String,
    pub src_ip: Option<IpAddr>,
    pub dest_ip: Option<IpAddr>,
    /// Lower-case name (`tcp`, `icmpv6`) or the number.
    pub protocol: Option<String>,
    pub src_port: Option<u16>,
    pub dest_port: Option<u16>,
    pub tcp_flags: Option<String>,
    /// ICMP or ICMPv6 `(type, code)`.
    pub icmp: Option<(u8, u8)>,
    pub policy: Option<Policy>,
    pub direction: Option<String>,
    pub src: Option<Pod>,
    pub dest: Option<Pod>,
    /// The node whose own address the source is, when it is not a pod.
    pub src_node: Option<String>,
    /// The node whose own address the destination is, when it is not a pod.
    pub dest_node: Option<String>,
    /// The Services the client aimed at (the destination's).
    pub services: Vec<Service>,
    /// The daemon's address classes (`public`, `private`, `loopback`, …; see
    /// [`crate::attribute::addr::AddrClass`]); `None` when the source did not say.
    pub src_class: Option<String>,
    pub dest_class: Option<String>,
    /// The daemon's JSON object, without the tail socket's two extra fields.
    pub json: Option<String>,
    /// The ulogd-compatible line, without its newline.
    pub syslogemu: Option<String>,
    /// The NFLOG message body (nfgenmsg + attributes, host byte order): a DLT_NFLOG record.
    pub nflog: Option<Vec<u8>>,
    /// The packet's other NFLOG messages, in the order the daemon wrote them (tail socket
    /// records only; empty when the packet was logged once).
    pub further: Vec<Message>,
}

/// One NFLOG message of a packet, as the daemon wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The syslogemu line, without its newline.
    pub syslogemu: String,
    /// The NFLOG message body, as [`Record::nflog`].
    pub nflog: Vec<u8>,
}

/// What a source yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Box<Record>),
    /// The daemon dropped this many events for this client (it read too slowly).
    Lost(u64),
    /// The daemon's rate limit suppressed this many events of a policy.
    Suppressed {
        policy: String,
        count: u64,
        interval_s: u64,
    },
    /// Something the user should know (reconnecting, a skipped malformed record).
    Notice(String),
}

#[derive(Deserialize)]
struct WirePolicy {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    candidates: Vec<WireRef>,
}

#[derive(Deserialize)]
struct WireRef {
    namespace: String,
    name: String,
}

/// The JSON fields `nflog-tail` reads; everything else is kept only in the raw line.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    timestamp: String,
    #[serde(rename = "oob.prefix", default)]
    prefix: String,
    #[serde(rename = "oob.in", default)]
    indev: String,
    #[serde(rename = "oob.out", default)]
    outdev: String,
    src_ip: Option<IpAddr>,
    dest_ip: Option<IpAddr>,
    protocol: Option<String>,
    src_port: Option<u16>,
    dest_port: Option<u16>,
    #[serde(rename = "tcp.flags")]
    tcp_flags: Option<String>,
    #[serde(rename = "icmp.type")]
    icmp_type: Option<u8>,
    #[serde(rename = "icmp.code")]
    icmp_code: Option<u8>,
    #[serde(rename = "icmpv6.type")]
    icmpv6_type: Option<u8>,
    #[serde(rename = "icmpv6.code")]
    icmpv6_code: Option<u8>,
    /// An object on events, a `ns/name` string on suppression summaries.
    policy: Option<serde_json::Value>,
    direction: Option<String>,
    src: Option<WireSide>,
    dest: Option<WireSide>,
    src_class: Option<String>,
    dest_class: Option<String>,
    count: Option<u64>,
    suppressed: Option<u64>,
    interval_s: Option<u64>,
    syslogemu: Option<String>,
    nflog: Option<String>,
    /// Every message of the packet, the first included (tail socket, newer daemons).
    #[serde(default)]
    messages: Vec<WireMessage>,
}

#[derive(Deserialize)]
struct WireMessage {
    syslogemu: String,
    nflog: String,
}

/// The tail socket appends these to the daemon's JSON object; `-o json` prints the object without
/// them, so its output is the daemon's JSON schema.
const EXTRA_FIELDS: &str = ",\"syslogemu\":";

impl Item {
    /// Parses one JSON line (tail socket or the daemon's JSON file).
    pub fn from_json_line(line: &str) -> Result<Item, String> {
        let wire: Wire =
            serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
        match wire.kind.as_deref() {
            None => {}
            Some("lost") => return Ok(Item::Lost(wire.count.unwrap_or(0))),
            Some("suppressed") => {
                let policy = match &wire.policy {
                    Some(serde_json::Value::String(p)) => p.clone(),
                    _ => String::new(),
                };
                return Ok(Item::Suppressed {
                    policy,
                    count: wire.suppressed.unwrap_or(0),
                    interval_s: wire.interval_s.unwrap_or(0),
                });
            }
            Some(other) => return Err(format!("unknown record type {other:?}")),
        }
        let nflog = match &wire.nflog {
            Some(hex) => Some(from_hex(hex).ok_or("the \"nflog\" field is not hex")?),
            None => None,
        };
        // The first of "messages" is the record's own syslogemu/nflog; the rest follow it.
        let further = wire
            .messages
            .iter()
            .skip(1)
            .map(|m| {
                Ok(Message {
                    syslogemu: m.syslogemu.trim_end_matches('\n').to_string(),
                    nflog: from_hex(&m.nflog)
                        .ok_or("a \"messages\" entry's \"nflog\" is not hex")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let json = strip_extras(line);
        let mut rec = Record::from_wire(wire);
        rec.json = Some(json);
        rec.nflog = nflog;
        rec.further = further;
        Ok(Item::Event(Box::new(rec)))
    }
}

/// The daemon's object without `"syslogemu"`, `"nflog"` and `"messages"` (appended in that
/// order, after every field of the daemon's schema). Inside a JSON string every `"` is escaped,
/// so `,"syslogemu":` can only be a key; the first one is the record's own (the entries of
/// `"messages"` start with `{"syslogemu":`).
fn strip_extras(line: &str) -> String {
    let line = line.trim_end();
    match line.find(EXTRA_FIELDS) {
        Some(at) => format!("{}}}", &line[..at]),
        None => line.to_string(),
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hex, as the tail socket's `nflog` field.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Record {
    fn from_wire(w: Wire) -> Record {
        let icmp = match (w.icmp_type, w.icmpv6_type) {
            (Some(t), _) => Some((t, w.icmp_code.unwrap_or(0))),
            (None, Some(t)) => Some((t, w.icmpv6_code.unwrap_or(0))),
            _ => None,
        };
        let policy = match w.policy {
            Some(v) => serde_json::from_value::<WirePolicy>(v)
                .ok()
                .map(|p| Policy {
                    namespace: p.namespace.unwrap_or_default(),
                    name: p.name,
                    candidates: p
                        .candidates
                        .into_iter()
                        .map(|c| (c.namespace, c.name))
                        .collect(),
                }),
            None => None,
        };
        let src = Side::from(w.src);
        let dest = Side::from(w.dest);
        Record {
            timestamp: w.timestamp,
            prefix: w.prefix,
            indev: w.indev,
            outdev: w.outdev,
            src_ip: w.src_ip,
            dest_ip: w.dest_ip,
            protocol: w.protocol,
            src_port: w.src_port,
            dest_port: w.dest_port,
            tcp_flags: w.tcp_flags,
            icmp,
            policy,
            direction: w.direction,
            src: src.pod,
            dest: dest.pod,
            src_node: src.node,
            dest_node: dest.node,
            services: dest.services,
            src_class: w.src_class,
            dest_class: w.dest_class,
            json: None,
            syslogemu: w.syslogemu,
            nflog: None,
            further: Vec::new(),
        }
    }

    /// The syslogemu line of every message of the packet, in the daemon's order.
    pub fn syslogemu_lines(&self) -> impl Iterator<Item = &str> {
        self.syslogemu
            .as_deref()
            .into_iter()
            .chain(self.further.iter().map(|m| m.syslogemu.as_str()))
    }

    /// The NFLOG body of every message of the packet whose bytes are known, in order.
    pub fn nflog_messages(&self) -> impl Iterator<Item = &[u8]> {
        self.nflog
            .as_deref()
            .into_iter()
            .chain(self.further.iter().map(|m| m.nflog.as_slice()))
    }

    /// A record of an event decoded here (pcap replay, direct mode), rendered by the daemon's own
    /// renderers so its JSON and syslogemu output are the daemon's.
    pub fn from_event(ev: &Event<'_>, renderer: &mut Renderer, nflog: &[u8]) -> Record {
        let mut buf = Vec::with_capacity(512);
        renderer.render(Format::Json, ev, &mut buf);
        let json = String::from_utf8_lossy(&buf).trim_end().to_string();
        buf.clear();
        renderer.render(Format::Syslogemu, ev, &mut buf);
        let syslogemu = String::from_utf8_lossy(&buf)
            .trim_end_matches('\n')
            .to_string();
        // The renderer writes valid JSON; if that ever broke, the line still prints.
        let mut rec = serde_json::from_str::<Wire>(&json)
            .map(Record::from_wire)
            .unwrap_or_default();
        rec.json = Some(json);
        rec.syslogemu = Some(syslogemu);
        rec.nflog = Some(nflog.to_vec());
        rec
    }

    /// Parses a ulogd2 LOGEMU line (`Mmm dd hh:mm:ss host prefix IN=… OUT=… MAC=… SRC=…`).
    pub fn from_syslogemu(line: &str) -> Result<Record, String> {
        let line = line.trim_end_matches(['\n', '\r']);
        let not_syslogemu = || {
            "not a syslogemu line (expected `Mmm dd hh:mm:ss host prefix IN=… OUT=…`)".to_string()
        };
        let timestamp = line.get(..15).ok_or_else(not_syslogemu)?;
        let rest = line.get(16..).ok_or_else(not_syslogemu)?;
        // Interface names hold no spaces, so the last " IN=" is the field, whatever the prefix says.
        let at = rest.rfind(" IN=").ok_or_else(not_syslogemu)?;
        let head = &rest[..at];
        let prefix = match head.find(' ') {
            Some(sp) => &head[sp + 1..],
            None => "",
        };
        let mut rec = Record {
            timestamp: timestamp.to_string(),
            prefix: prefix.to_string(),
            syslogemu: Some(line.to_string()),
            ..Record::default()
        };
        rec.read_tokens(&rest[at + 1..]);
        rec.policy = policy_of_prefix(prefix);
        Ok(rec)
    }

    fn read_tokens(&mut self, fields: &str) {
        let mut flags: Vec<&str> = Vec::new();
        let (mut icmp_type, mut icmp_code) = (None, None);
        for tok in fields.split(' ') {
            let (key, value) = tok.split_once('=').unwrap_or((tok, ""));
            match key {
                "IN" => self.indev = value.to_string(),
                "OUT" => self.outdev = value.to_string(),
                "SRC" => self.src_ip = value.parse().ok(),
                "DST" => self.dest_ip = value.parse().ok(),
                "PROTO" => self.protocol = Some(value.to_ascii_lowercase()),
                "SPT" => self.src_port = value.parse().ok(),
                "DPT" => self.dest_port = value.parse().ok(),
                "TYPE" if icmp_type.is_none() => icmp_type = value.parse().ok(),
                "CODE" if icmp_code.is_none() => icmp_code = value.parse().ok(),
                "URG" | "ACK" | "PSH" | "RST" | "SYN" | "FIN" if value.is_empty() => {
                    flags.push(key)
                }
                _ => {}
            }
        }
        if self.protocol.as_deref() == Some("tcp") {
            self.tcp_flags = Some(flags.join(" "));
        }
        if let Some(t) = icmp_type {
            self.icmp = Some((t, icmp_code.unwrap_or(0)));
        }
    }
}

/// The policy a kube-router prefix names (`DROP by policy ns/name`).
pub fn policy_of_prefix(prefix: &str) -> Option<Policy> {
    let a = Attribution::from_prefix(Some(prefix.as_bytes()));
    (a.source == PolicySource::PolicyRule).then(|| Policy {
        namespace: String::from_utf8_lossy(a.namespace).into_owned(),
        name: Some(String::from_utf8_lossy(a.name).into_owned()),
        candidates: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"timestamp":"2026-11-27T20:59:32.686935+00:00","hostname":"n1","node_name":"n1","action":"drop","oob.group":100,"oob.prefix":"DROP by policy default/deny-db","oob.hook":3,"oob.family":2,"oob.protocol":2048,"oob.in":"","oob.out":"eth0","oob.mark":0,"raw.pktlen":60,"src_ip":"10.42.0.5","dest_ip":"10.42.1.7","ip.protocol":6,"protocol":"tcp","src_port":43122,"dest_port":5432,"tcp.flags":"SYN","policy_source":"policy-rule","policy":{"namespace":"default","name":"deny-db","resolved":true,"candidates":[{"namespace":"default","name":"deny-db"}]},"direction":"egress","src":{"pod":"web-1","namespace":"default","workload_kind":"Deployment","workload":"web"},"dest":{"pod":"pg-0","namespace":"db"},"count":1,"syslogemu":"Nov 27 20:59:32 n1 DROP by policy default/deny-db IN= OUT=eth0 MAC= SRC=10.42.0.5 DST=10.42.1.7 ","nflog":"0200006408"}"#;

    #[test]
    fn reads_a_tail_socket_event() {
        let Item::Event(rec) = Item::from_json_line(EVENT).unwrap() else {
            panic!()
        };
        assert_eq!(rec.prefix, "DROP by policy default/deny-db");
        assert_eq!(rec.src_ip, Some("10.42.0.5".parse().unwrap()));
        assert_eq!((rec.src_port, rec.dest_port), (Some(43122), Some(5432)));
        assert_eq!(
            rec.policy.as_ref().unwrap().name.as_deref(),
            Some("deny-db")
        );
        assert_eq!(rec.src.as_ref().unwrap().pod, "web-1");
        assert_eq!(rec.nflog.as_deref(), Some(&[2, 0, 0, 0x64, 8][..]));
        let json = rec.json.unwrap();
        assert!(json.ends_with(r#""count":1}"#), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v.get("syslogemu").is_none() && v.get("nflog").is_none());
    }

    #[test]
    fn reads_nodes_services_and_classes() {
        // A node's own address (`{node}`) is a node, not a pod without a name; a pod keeps its
        // node; the destination's Services and both classes are read.
        let line = EVENT
            .replace(
                r#""src":{"pod":"web-1","namespace":"default","workload_kind":"Deployment","workload":"web"}"#,
                r#""src":{"node":"node-3"}"#,
            )
            .replace(
                r#""dest":{"pod":"pg-0","namespace":"db"}"#,
                r#""dest":{"pod":"pg-0","namespace":"db","node":"node-1","services":[{"namespace":"db","name":"postgres","port_name":"pg","port":5432,"node_port":30432,"via":"node-port"}]},"src_class":"private","dest_class":"private""#,
            );
        let Item::Event(rec) = Item::from_json_line(&line).unwrap() else {
            panic!()
        };
        assert_eq!(rec.src, None);
        assert_eq!(rec.src_node.as_deref(), Some("node-3"));
        assert_eq!(rec.dest_node, None);
        let dest = rec.dest.as_ref().unwrap();
        assert_eq!(
            (dest.pod.as_str(), dest.node.as_deref()),
            ("pg-0", Some("node-1"))
        );
        assert_eq!(
            rec.services,
            vec![Service {
                namespace: "db".into(),
                name: "postgres".into(),
                port_name: Some("pg".into()),
                port: Some(5432),
                node_port: Some(30432),
                via: Some("node-port".into()),
            }]
        );
        assert_eq!(
            (rec.src_class.as_deref(), rec.dest_class.as_deref()),
            (Some("private"), Some("private"))
        );
        // A Service with no pod known behind it (a ClusterIP nobody answers on).
        let line = EVENT.replace(
            r#""dest":{"pod":"pg-0","namespace":"db"}"#,
            r#""dest":{"services":[{"namespace":"db","name":"pg","via":"untranslated"}]}"#,
        );
        let Item::Event(rec) = Item::from_json_line(&line).unwrap() else {
            panic!()
        };
        assert_eq!((rec.dest.as_ref(), rec.dest_node.as_ref()), (None, None));
        assert_eq!(rec.services[0].name, "pg");
    }

    #[test]
    fn reads_every_message_of_a_packet() {
        // Without "messages" (older daemons, JSON files): the packet's one message.
        let Item::Event(one) = Item::from_json_line(EVENT).unwrap() else {
            panic!()
        };
        assert_eq!(one.syslogemu_lines().count(), 1);
        assert_eq!(
            one.nflog_messages().collect::<Vec<_>>(),
            [&[2, 0, 0, 0x64, 8][..]]
        );
        // With it: the first entry is the record's own line, the others follow in order.
        let first = r#""syslogemu":"Nov 27 20:59:32 n1 DROP by policy default/deny-db IN= OUT=eth0 ","nflog":"0200006408""#;
        let line = EVENT.replace(
            r#""nflog":"0200006408"}"#,
            &format!(
                r#""nflog":"0200006408","messages":[{{{first}}},{{"syslogemu":"Nov 27 20:59:32 n1  IN= OUT=eth0 ","nflog":"02000064"}}]}}"#
            ),
        );
        let Item::Event(rec) = Item::from_json_line(&line).unwrap() else {
            panic!()
        };
        let lines: Vec<&str> = rec.syslogemu_lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], one.syslogemu.as_deref().unwrap());
        assert_eq!(lines[1], "Nov 27 20:59:32 n1  IN= OUT=eth0 ");
        assert_eq!(
            rec.nflog_messages().collect::<Vec<_>>(),
            [&[2, 0, 0, 0x64, 8][..], &[2, 0, 0, 0x64][..]]
        );
        // -o json stays the daemon's schema.
        assert_eq!(rec.json, one.json);
        let bad = line.replace(r#""nflog":"02000064"}]"#, r#""nflog":"0z"}]"#);
        assert!(Item::from_json_line(&bad).unwrap_err().contains("not hex"));
    }

    #[test]
    fn reads_control_records() {
        assert_eq!(
            Item::from_json_line(r#"{"type":"lost","count":7}"#),
            Ok(Item::Lost(7))
        );
        assert_eq!(
            Item::from_json_line(
                r#"{"timestamp":"x","type":"suppressed","policy":"a/b","suppressed":3,"interval_s":60}"#
            ),
            Ok(Item::Suppressed {
                policy: "a/b".into(),
                count: 3,
                interval_s: 60
            })
        );
        assert!(Item::from_json_line("{\"nflog\":\"zz\"}").is_err());
        assert!(Item::from_json_line("garbage")
            .unwrap_err()
            .starts_with("not a JSON record"));
    }

    #[test]
    fn reads_syslogemu_lines() {
        let line = "Nov 27 20:59:32 ulogd-ref DROP by policy default/deny-all IN= OUT=lo MAC= SRC=10.77.1.1 DST=10.77.1.2 LEN=60 TOS=00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=40000 DPT=5432 SEQ=1 ACK=0 WINDOW=1024 SYN URGP=0 UID=0 GID=0 MARK=0x0 ";
        let rec = Record::from_syslogemu(line).unwrap();
        assert_eq!(rec.prefix, "DROP by policy default/deny-all");
        assert_eq!(rec.outdev, "lo");
        assert_eq!(rec.protocol.as_deref(), Some("tcp"));
        assert_eq!(rec.tcp_flags.as_deref(), Some("SYN"));
        assert_eq!(rec.dest_port, Some(5432));
        assert_eq!(rec.policy.unwrap().namespace, "default");
        let empty = Record::from_syslogemu("Nov  7 09:05:03 h  IN=lo OUT= MAC= SRC=::1 DST=::1 LEN=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=1 SEQ=2 MARK=0x0 ").unwrap();
        assert_eq!(empty.prefix, "");
        assert_eq!(empty.icmp, Some((128, 0)));
        let tricky =
            Record::from_syslogemu("Nov  7 09:05:03 h a IN=x b IN= OUT=lo MAC= MARK=0x0 ").unwrap();
        assert_eq!(tricky.prefix, "a IN=x b");
        assert!(Record::from_syslogemu("hello").is_err());
    }
}
