//! Syslog messages: an [`Event`] → one RFC 3164 or RFC 5424 message, ending in `\n`.
//!
//! The message text (MSG) is what the other renderers write, so a drop reads the same in every
//! sink: the syslogemu line from its prefix on (the text ulogd2's SYSLOG output passes to
//! `syslog(3)`), or the JSON object. Both escape control bytes, so MSG never holds a newline and
//! the trailing `\n` can delimit messages in a chunk; the transports take it off or keep it as
//! their framing requires (`crate::sink::syslog`).
//!
//! RFC 5424 messages also carry the Kubernetes attribution as structured data, so a collector
//! can filter on it without parsing MSG:
//!
//! ```text
//! <164>1 2026-11-07T09:05:03.000042+00:00 node-1 netpol-nflogd 4242 drop [netpol@32473 policy_namespace="default" policy_name="deny-db" proto="tcp" src_ip="10.42.0.10" dest_ip="10.42.1.20" src_class="private" dest_class="private" src_port="40000" dest_port="5432" count="1"] DROP by policy default/deny-db IN= OUT=eth0 …
//! ```
//!
//! The parameters are the JSON record's fields under flat names, present when the JSON has them:
//! `policy_namespace`, `policy_name`, `direction`; per side (`src_`, `dest_`) `pod`,
//! `namespace`, `workload_kind`, `workload` and `node` (the pod's node, or the node whose own
//! address it is: JSON's `src.node`); `dest_services` (the Services the client aimed at,
//! `namespace/name` separated by commas: JSON's `dest.services`); `proto`, the addresses, their
//! classes (`src_class`, `dest_class`: `public`, `private`, …), the ports; and `count`, the
//! NFLOG messages the event stands for (JSON's `count`; 1 in the one-message-per-line form).
//!
//! 32473 is the private enterprise number RFC 5612 reserves for documentation and examples:
//! the project has no number of its own, and an SD-ID with `@` must name one.
//!
//! Like the other renderers this appends to a caller-owned buffer and does not allocate once
//! the buffer has grown.

use std::sync::OnceLock;

use serde::Deserialize;

use crate::attribute::addr::AddrClass;
use crate::attribute::{Direction, PodMeta};
use crate::decode::protocol_name;
use crate::event::{Event, Timestamp};

use super::time::LocalClock;
use super::{json, push_escaped, push_ipv4, push_ipv6, push_u64, syslogemu, Renderer};

/// The SD-ID of the structured-data element (RFC 5424 §7.2.2 form `name@<enterprise number>`).
pub const SD_ID: &str = "netpol@32473";

/// The MSGID of a dropped-packet message (RFC 5424 §6.2.7).
pub const MSGID: &str = "drop";

/// Message layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc {
    /// `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG` (BSD syslog, RFC 3164 §4.1).
    Rfc3164,
    /// What `syslog(3)` writes to `/dev/log`: RFC 3164 without HOST. rsyslog's imuxsock and
    /// journald parse local messages this way by default; a HOST field would be read as the tag.
    Rfc3164Local,
    /// `<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID [SD] MSG` (RFC 5424 §6).
    Rfc5424,
}

/// What MSG holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MsgFormat {
    /// The syslogemu line after its timestamp and hostname.
    #[default]
    Syslogemu,
    /// The JSON record of the `json` format.
    Json,
}

/// How to build each message. The text fields are sanitized when written (see [`render`]), so
/// any string is safe here; the configuration rejects the ones that would be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogFormat {
    pub rfc: Rfc,
    /// 0-23 (`local0` is 16); larger values are clamped.
    pub facility: u8,
    /// 0-7 (`warning` is 4); larger values are clamped.
    pub severity: u8,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub app_name: String,
    /// HOSTNAME; empty writes the NILVALUE `-` (RFC 5424) and is not used by `Rfc3164Local`.
    pub hostname: String,
    /// The Kubernetes node name, for the `node_name` field of JSON messages.
    pub node_name: String,
    pub msg: MsgFormat,
}

/// Facility names as syslog.conf and rsyslog spell them, with their codes (RFC 5424 §6.2.1).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Severity names with their codes (RFC 5424 §6.2.1); `err`/`error` and `warn`/`warning` are
/// both accepted, as rsyslog does.
pub const SEVERITIES: &[(&str, u8)] = &[
    ("emerg", 0),
    ("alert", 1),
    ("crit", 2),
    ("err", 3),
    ("error", 3),
    ("warning", 4),
    ("warn", 4),
    ("notice", 5),
    ("info", 6),
    ("debug", 7),
];

/// The code of a facility name (case-insensitive), or of a number 0-23.
pub fn facility_code(name: &str) -> Option<u8> {
    code(FACILITIES, name, 23)
}

/// The code of a severity name (case-insensitive), or of a number 0-7.
pub fn severity_code(name: &str) -> Option<u8> {
    code(SEVERITIES, name, 7)
}

fn code(table: &[(&str, u8)], name: &str, max: u8) -> Option<u8> {
    if let Ok(n) = name.parse::<u8>() {
        return (n <= max).then_some(n);
    }
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| c)
}

/// RFC 5424 header field limits (§6): HOSTNAME, APP-NAME.
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
/// RFC 3164 §4.1.3 limits the TAG to 32 characters; rsyslog reads longer ones, others cut.
const TAG_MAX: usize = 32;
const MSGID_MAX: usize = 32;

impl Renderer {
    /// Renders one syslog message with the renderer's clock (the pipeline's entry point).
    pub fn render_syslog(&mut self, fmt: &SyslogFormat, ev: &Event<'_>, out: &mut Vec<u8>) {
        render(fmt, ev, &mut self.clock, out);
    }

    /// [`render_text`] with the renderer's clock.
    pub fn render_syslog_text(
        &mut self,
        fmt: &SyslogFormat,
        time: Timestamp,
        msgid: &str,
        text: &[u8],
        out: &mut Vec<u8>,
    ) {
        render_text(fmt, time, msgid, text, &mut self.clock, out);
    }
}

/// Appends one syslog message for `ev`, ending in `\n`.
pub fn render(fmt: &SyslogFormat, ev: &Event<'_>, clock: &mut LocalClock, out: &mut Vec<u8>) {
    push_header(fmt, ev.time, MSGID, Some(ev), clock, out);
    match fmt.msg {
        MsgFormat::Syslogemu => syslogemu::render_body(ev, out),
        MsgFormat::Json => json::render(
            ev,
            fmt.hostname.as_bytes(),
            fmt.node_name.as_bytes(),
            clock,
            out,
        ),
    }
    // Both bodies end in exactly one '\n', which is kept as the message delimiter.
    debug_assert_eq!(out.last(), Some(&b'\n'));
}

/// Appends one message that is not a packet (the rate limiter's suppression summary, a
/// notice): the same header with `msgid` (at most 32 printable characters), no structured
/// data, and `text` as MSG with control bytes escaped, so it stays one line.
pub fn render_text(
    fmt: &SyslogFormat,
    time: Timestamp,
    msgid: &str,
    text: &[u8],
    clock: &mut LocalClock,
    out: &mut Vec<u8>,
) {
    push_header(fmt, time, msgid, None, clock, out);
    push_escaped(out, text);
    out.push(b'\n');
}

/// Everything before MSG. RFC 5424 messages carry `ev`'s structured data, or `-` without one.
fn push_header(
    fmt: &SyslogFormat,
    time: Timestamp,
    msgid: &str,
    ev: Option<&Event<'_>>,
    clock: &mut LocalClock,
    out: &mut Vec<u8>,
) {
    out.push(b'<');
    push_u64(out, pri(fmt) as u64);
    out.push(b'>');
    match fmt.rfc {
        Rfc::Rfc3164 | Rfc::Rfc3164Local => {
            clock.push_ctime(time, out);
            out.push(b' ');
            if fmt.rfc == Rfc::Rfc3164 {
                push_header_field(out, fmt.hostname.as_bytes(), HOSTNAME_MAX, b"");
                out.push(b' ');
            }
            // `TAG[PID]: ` as syslog(3) with LOG_PID writes it; rsyslog splits it into
            // %app-name% and %procid%.
            push_header_field(out, fmt.app_name.as_bytes(), TAG_MAX, b":[]");
            out.push(b'[');
            push_u64(out, pid() as u64);
            out.extend_from_slice(b"]: ");
        }
        Rfc::Rfc5424 => {
            out.extend_from_slice(b"1 ");
            clock.push_rfc3339(time, out);
            out.push(b' ');
            push_header_field(out, fmt.hostname.as_bytes(), HOSTNAME_MAX, b"");
            out.push(b' ');
            push_header_field(out, fmt.app_name.as_bytes(), APP_NAME_MAX, b"");
            out.push(b' ');
            push_u64(out, pid() as u64);
            out.push(b' ');
            push_header_field(out, msgid.as_bytes(), MSGID_MAX, b"");
            out.push(b' ');
            match ev {
                Some(ev) => push_structured_data(ev, out),
                None => out.push(b'-'),
            }
            out.push(b' ');
        }
    }
}

fn pri(fmt: &SyslogFormat) -> u8 {
    fmt.facility.min(23) * 8 + fmt.severity.min(7)
}

/// The daemon's PID, read once: `getpid()` is a system call on current glibc, and the daemon
/// does not fork.
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// A header field: printable US-ASCII only (RFC 5424 §6: `PRINTUSASCII`, no space), anything
/// else and the bytes in `extra` become `_`; cut at `max`; empty becomes the NILVALUE `-`.
fn push_header_field(out: &mut Vec<u8>, v: &[u8], max: usize, extra: &[u8]) {
    if v.is_empty() {
        out.push(b'-');
        return;
    }
    for &b in v.iter().take(max) {
        out.push(if (33..=126).contains(&b) && !extra.contains(&b) {
            b
        } else {
            b'_'
        });
    }
}

/// `[netpol@32473 key="value" …]` with the fields that are known, or `-` when none is.
fn push_structured_data(ev: &Event<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(b'[');
    out.extend_from_slice(SD_ID.as_bytes());
    let empty_len = out.len();
    let ctx = ev.context.as_deref();

    if let Some(r) = ev.reported_policy() {
        param(out, "policy_namespace", r.namespace);
        if let Some(name) = r.name {
            param(out, "policy_name", name);
        }
    }
    if let Some(c) = ctx {
        match c.direction {
            Some(Direction::Ingress) => param(out, "direction", b"ingress"),
            Some(Direction::Egress) => param(out, "direction", b"egress"),
            None => {}
        }
        side(out, Side::SRC, c.src.as_deref(), c.src_node.as_deref());
        side(out, Side::DEST, c.dest.as_deref(), c.dest_node.as_deref());
        if !c.dest_services.is_empty() {
            param_open(out, "dest_services");
            for (i, s) in c.dest_services.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_param_value(out, s.namespace.as_bytes());
                out.push(b'/');
                push_param_value(out, s.name.as_bytes());
            }
            out.push(b'"');
        }
    }
    let p = &ev.packet;
    if let Some(n) = p.protocol() {
        match protocol_name(n) {
            Some(name) => param(out, "proto", name.as_bytes()),
            None => {
                param_open(out, "proto");
                push_u64(out, n as u64);
                out.push(b'"');
            }
        }
    }
    if let Some((src, dst)) = p.addrs() {
        for (key, ip) in [("src_ip", src), ("dest_ip", dst)] {
            param_open(out, key);
            match ip {
                std::net::IpAddr::V4(a) => push_ipv4(out, a),
                std::net::IpAddr::V6(a) => push_ipv6(out, a),
            }
            out.push(b'"');
        }
        param(out, "src_class", AddrClass::of(src).as_str().as_bytes());
        param(out, "dest_class", AddrClass::of(dst).as_str().as_bytes());
    }
    if let Some((sport, dport)) = p.ports() {
        for (key, port) in [("src_port", sport), ("dest_port", dport)] {
            param_open(out, key);
            push_u64(out, port as u64);
            out.push(b'"');
        }
    }
    if out.len() == empty_len {
        // Nothing known of the packet: a count alone says nothing either.
        out.truncate(start);
        out.push(b'-');
    } else {
        param_open(out, "count");
        push_u64(out, u64::from(ev.count.max(1)));
        out.extend_from_slice(b"\"]");
    }
}

/// The parameter names of one side of the packet.
struct Side {
    pod: &'static str,
    namespace: &'static str,
    workload_kind: &'static str,
    workload: &'static str,
    node: &'static str,
}

impl Side {
    const SRC: Side = Side {
        pod: "src_pod",
        namespace: "src_namespace",
        workload_kind: "src_workload_kind",
        workload: "src_workload",
        node: "src_node",
    };
    const DEST: Side = Side {
        pod: "dest_pod",
        namespace: "dest_namespace",
        workload_kind: "dest_workload_kind",
        workload: "dest_workload",
        node: "dest_node",
    };
}

/// A pod (with its workload and node), else the node whose own address it is, as the JSON's
/// `src`/`dest` objects have them.
fn side(out: &mut Vec<u8>, keys: Side, pod: Option<&PodMeta>, node: Option<&str>) {
    if let Some(p) = pod {
        param(out, keys.pod, p.pod.as_bytes());
        param(out, keys.namespace, p.namespace.as_bytes());
        if let Some(kind) = &p.workload_kind {
            param(out, keys.workload_kind, kind.as_bytes());
        }
        if let Some(w) = &p.workload {
            param(out, keys.workload, w.as_bytes());
        }
        if let Some(n) = &p.node {
            param(out, keys.node, n.as_bytes());
        }
    } else if let Some(n) = node {
        param(out, keys.node, n.as_bytes());
    }
}

fn param_open(out: &mut Vec<u8>, key: &str) {
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"=\"");
}

fn param(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    param_open(out, key);
    push_param_value(out, value);
    out.push(b'"');
}

/// A PARAM-VALUE: `"`, `\` and `]` get a backslash (RFC 5424 §6.3.3); control bytes become
/// `\xHH` as everywhere else, so a value never ends the message.
fn push_param_value(out: &mut Vec<u8>, v: &[u8]) {
    let mut rest = v;
    while let Some(i) = rest.iter().position(|b| matches!(b, b'"' | b'\\' | b']')) {
        push_escaped(out, &rest[..i]);
        out.push(b'\\');
        out.push(rest[i]);
        rest = &rest[i + 1..];
    }
    push_escaped(out, rest);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::attribute::{KubeContext, PodMeta, PolicyRef};
    use crate::decode::build::{ipv4, tcp};
    use crate::event::{IfName, Timestamp};
    use crate::source::nflog::{build::Packet, NflogMsg};

    /// A TCP SYN from 10.42.0.10:40000 to 10.42.1.20:5432, logged on OUTPUT of `lo`.
    fn nflog(prefix: &[u8]) -> Vec<u8> {
        let payload = ipv4(
            6,
            1,
            0x4000,
            0,
            [10, 42, 0, 10],
            [10, 42, 1, 20],
            &tcp(40000, 5432, 7, 0, 0x02, 64240, 0),
        );
        let mut buf = Vec::new();
        Packet {
            prefix,
            payload: &payload,
            ..Default::default()
        }
        .encode(&mut buf);
        buf
    }

    fn event<'a>(buf: &'a [u8], ctx: Option<KubeContext>) -> Event<'a> {
        // The netlink header (16 bytes) precedes the NFLOG body.
        let msg = NflogMsg::parse(&buf[16..]).unwrap();
        // 2026-11-07 09:05:03.000042 UTC
        let time = Timestamp {
            sec: 1_794_042_303,
            usec: 42,
        };
        Event {
            context: ctx.map(Arc::new),
            ..crate::tail::pcap::event(msg, time, IfName::default(), IfName::new(b"lo"))
        }
    }

    fn fmt(rfc: Rfc, msg: MsgFormat) -> SyslogFormat {
        SyslogFormat {
            rfc,
            facility: 16,
            severity: 4,
            app_name: "netpol-nflogd".into(),
            hostname: "node-1".into(),
            node_name: "node-1".into(),
            msg,
        }
    }

    fn render_str(f: &SyslogFormat, ev: &Event<'_>) -> String {
        std::env::set_var("TZ", "UTC");
        let mut out = Vec::new();
        render(f, ev, &mut LocalClock::new(), &mut out);
        String::from_utf8(out).unwrap()
    }

    const BODY: &str = "DROP by policy default/deny-db IN= OUT=lo MAC= SRC=10.42.0.10 DST=10.42.1.20 LEN=40 TOS=00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=40000 DPT=5432 SEQ=7 ACK=0 WINDOW=64240 SYN URGP=0 MARK=0x0 \n";

    #[test]
    fn rfc3164_forms() {
        let buf = nflog(b"DROP by policy default/deny-db");
        let ev = event(&buf, None);
        let pid = std::process::id();
        assert_eq!(
            render_str(&fmt(Rfc::Rfc3164, MsgFormat::Syslogemu), &ev),
            format!("<132>Nov  7 09:05:03 node-1 netpol-nflogd[{pid}]: {BODY}")
        );
        assert_eq!(
            render_str(&fmt(Rfc::Rfc3164Local, MsgFormat::Syslogemu), &ev),
            format!("<132>Nov  7 09:05:03 netpol-nflogd[{pid}]: {BODY}")
        );
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let buf = nflog(b"DROP by policy default/deny-db");
        let ev = event(&buf, None);
        let pid = std::process::id();
        assert_eq!(
            render_str(&fmt(Rfc::Rfc5424, MsgFormat::Syslogemu), &ev),
            format!(
                "<132>1 2026-11-07T09:05:03.000042+00:00 node-1 netpol-nflogd {pid} drop \
                 [netpol@32473 policy_namespace=\"default\" policy_name=\"deny-db\" proto=\"tcp\" \
                 src_ip=\"10.42.0.10\" dest_ip=\"10.42.1.20\" src_class=\"private\" dest_class=\"private\" \
                 src_port=\"40000\" dest_port=\"5432\" count=\"1\"] {BODY}"
            )
        );
    }

    #[test]
    fn kubernetes_context_and_escaping() {
        let buf = nflog(b"");
        let pod = |pod: &str, ns: &str| {
            Some(Arc::new(PodMeta {
                pod: pod.into(),
                namespace: ns.into(),
                workload_kind: None,
                workload: None,
                node: None,
            }))
        };
        let ctx = KubeContext {
            policies: vec![PolicyRef {
                namespace: "shop".into(),
                name: "a\"b\\c]d\ne".into(),
            }],
            resolved: true,
            direction: Some(Direction::Ingress),
            src: pod("web-1", "shop"),
            dest: pod("db-0", "data"),
            ..KubeContext::default()
        };
        let ev = event(&buf, Some(ctx));
        let s = render_str(&fmt(Rfc::Rfc5424, MsgFormat::Syslogemu), &ev);
        assert!(
            s.contains(
                "[netpol@32473 policy_namespace=\"shop\" policy_name=\"a\\\"b\\\\c\\]d\\x0ae\" direction=\"ingress\" \
                 src_pod=\"web-1\" src_namespace=\"shop\" dest_pod=\"db-0\" dest_namespace=\"data\" proto=\"tcp\" "
            ),
            "{s}"
        );
        // An empty prefix (pod chain) leaves syslogemu's separator: MSG starts with a space.
        assert!(s.contains("]  IN= OUT=lo "), "{s}");
        assert_eq!(s.matches('\n').count(), 1);
    }

    /// The SD parameters of a message, in order (values unescaped as RFC 5424 §6.3.3 says).
    fn sd_params(msg: &str) -> Vec<(String, String)> {
        let start = msg.find(&format!("[{SD_ID}")).expect("structured data") + SD_ID.len() + 1;
        let mut params = Vec::new();
        let mut rest = &msg[start..];
        while let Some(r) = rest.strip_prefix(' ') {
            let (key, r) = r.split_once("=\"").unwrap();
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next().unwrap() {
                    (_, '\\') => value.push(chars.next().unwrap().1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            params.push((key.to_string(), value));
            rest = &r[end + 1..];
        }
        assert!(rest.starts_with("] "), "{rest}");
        params
    }

    #[test]
    fn services_nodes_classes_and_count_as_the_json_has_them() {
        use crate::attribute::{ServiceHit, ServiceVia};
        let buf = nflog(b"DROP by policy shop/deny-db");
        let mut ctx = KubeContext {
            // The source is a node's own address (a kubelet probe), not a pod.
            src_node: Some("node-2".into()),
            direction: Some(Direction::Ingress),
            dest: Some(Arc::new(PodMeta {
                pod: "db-0".into(),
                namespace: "shop".into(),
                workload_kind: Some("StatefulSet".into()),
                workload: Some("db".into()),
                node: Some("node-1".into()),
            })),
            dest_services: vec![
                ServiceHit {
                    namespace: "shop".into(),
                    name: "db".into(),
                    port_name: Some("pg".into()),
                    port: Some(5432),
                    node_port: None,
                    via: ServiceVia::Endpoints,
                },
                ServiceHit {
                    namespace: "shop".into(),
                    name: "db\"ro]".into(),
                    port_name: None,
                    port: None,
                    node_port: None,
                    via: ServiceVia::Endpoints,
                },
            ],
            ..KubeContext::default()
        };
        ctx.resolved = true;
        ctx.policies.push(PolicyRef {
            namespace: "shop".into(),
            name: "deny-db".into(),
        });
        let mut ev = event(&buf, Some(ctx));
        ev.count = 3;
        let f = fmt(Rfc::Rfc5424, MsgFormat::Json);
        let s = render_str(&f, &ev);
        let params = sd_params(&s);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "policy_namespace",
                "policy_name",
                "direction",
                "src_node",
                "dest_pod",
                "dest_namespace",
                "dest_workload_kind",
                "dest_workload",
                "dest_node",
                "dest_services",
                "proto",
                "src_ip",
                "dest_ip",
                "src_class",
                "dest_class",
                "src_port",
                "dest_port",
                "count"
            ],
            "{s}"
        );
        // Every value is the JSON record's (MSG here), under a flat name.
        let json: serde_json::Value =
            serde_json::from_str(&s[s.find("] {").unwrap() + 2..]).unwrap();
        assert_eq!(get("src_node"), json["src"]["node"].as_str());
        assert_eq!(json["src"].get("pod"), None, "{json}");
        for k in ["pod", "namespace", "workload_kind", "workload", "node"] {
            assert_eq!(get(&format!("dest_{k}")), json["dest"][k].as_str(), "{k}");
        }
        let services: Vec<String> = json["dest"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["namespace"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(get("dest_services"), Some(&*services.join(",")));
        assert_eq!(get("dest_services"), Some("shop/db,shop/db\"ro]"));
        for k in ["src_class", "dest_class"] {
            assert_eq!(get(k), json[k].as_str(), "{k}");
        }
        assert_eq!(get("count"), Some("3"));
        assert_eq!(json["count"], 3);

        // Addresses the index does not know: their classes only.
        let buf = nflog(b"");
        let mut ev = event(&buf, None);
        ev.packet.network = match ev.packet.network {
            crate::decode::Network::Ipv4(Some(mut h)) => {
                h.src = [203, 0, 113, 9].into();
                h.dst = [127, 0, 0, 1].into();
                crate::decode::Network::Ipv4(Some(h))
            }
            other => panic!("{other:?}"),
        };
        let params = sd_params(&render_str(&f, &ev));
        assert!(
            params.contains(&("src_class".into(), "documentation".into())),
            "{params:?}"
        );
        assert!(
            params.contains(&("dest_class".into(), "loopback".into())),
            "{params:?}"
        );
        assert!(params
            .iter()
            .all(|(k, _)| !k.ends_with("_node") && !k.ends_with("_pod")));
    }

    #[test]
    fn json_message_and_nil_values() {
        let buf = nflog(b"custom");
        let mut ev = event(&buf, None);
        ev.packet.network = crate::decode::Network::None;
        ev.packet.transport = crate::decode::Transport::None;
        let mut f = fmt(Rfc::Rfc5424, MsgFormat::Json);
        f.hostname = String::new();
        f.app_name = "bad name:x".into();
        let s = render_str(&f, &ev);
        let pid = std::process::id();
        let head = format!(
            "<132>1 2026-11-07T09:05:03.000042+00:00 - bad_name:x {pid} drop - {{\"timestamp\":"
        );
        assert!(s.starts_with(&head), "{s}");
        assert!(s.ends_with("}\n"), "{s}");
        let json: serde_json::Value = serde_json::from_str(&s[s.find('{').unwrap()..]).unwrap();
        assert_eq!(json["oob.prefix"], "custom");

        // RFC 3164 tags cannot hold ':' or '['; facility and severity are clamped.
        f.rfc = Rfc::Rfc3164;
        f.facility = 200;
        f.severity = 9;
        let s = render_str(&f, &ev);
        assert!(s.starts_with("<191>Nov  7 09:05:03 - bad_name_x["), "{s}");
    }

    #[test]
    fn text_records() {
        std::env::set_var("TZ", "UTC");
        let f = fmt(Rfc::Rfc5424, MsgFormat::Json);
        let mut out = Vec::new();
        let t = Timestamp {
            sec: 1_794_042_303,
            usec: 42,
        };
        render_text(
            &f,
            t,
            "suppressed",
            b"{\"a\":1}\nx",
            &mut LocalClock::new(),
            &mut out,
        );
        let pid = std::process::id();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("<132>1 2026-11-07T09:05:03.000042+00:00 node-1 netpol-nflogd {pid} suppressed - {{\"a\":1}}\\x0ax\n")
        );
    }

    #[test]
    fn facility_and_severity_names() {
        assert_eq!(facility_code("local0"), Some(16));
        assert_eq!(facility_code("LOCAL7"), Some(23));
        assert_eq!(facility_code("kern"), Some(0));
        assert_eq!(facility_code("3"), Some(3));
        assert_eq!(facility_code("24"), None);
        assert_eq!(facility_code("local8"), None);
        assert_eq!(severity_code("warning"), Some(4));
        assert_eq!(severity_code("warn"), Some(4));
        assert_eq!(severity_code("err"), Some(3));
        assert_eq!(severity_code("8"), None);
    }

    #[test]
    fn reuses_the_buffer() {
        let buf = nflog(b"DROP by policy default/deny-db");
        let ev = event(&buf, None);
        let f = fmt(Rfc::Rfc5424, MsgFormat::Syslogemu);
        let mut clock = LocalClock::new();
        let mut out = Vec::with_capacity(4096);
        render(&f, &ev, &mut clock, &mut out);
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        for _ in 0..100 {
            out.clear();
            render(&f, &ev, &mut clock, &mut out);
        }
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
    }
}
