//! Printing records: `compact` (one readable line), `syslogemu` (ulogd2's lines, one per NFLOG
//! message, as the daemon wrote them) and `json` (the daemon's JSON object).
//!
//! Prefixes, pod names and interface names come from outside and may hold terminal escape
//! sequences. Everything printed to a terminal goes through [`sanitize`]; compact lines are
//! sanitized always, since they are for people.

use std::borrow::Cow;
use std::io::{self, Write};

use super::record::{Item, Record};
use super::Error;

/// Output formats of line mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One readable line per event: time, policy, source → destination, protocol.
    Compact,
    /// ulogd2's syslogemu lines, as the daemon writes them to syslogemu.log (one per NFLOG
    /// message: a packet several rules logged gives several lines).
    Syslogemu,
    /// The daemon's JSON object (its JSON file's schema, without the tail socket's extra fields).
    Json,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// Whether a character could drive a terminal or reorder what is shown: C0, DEL, C1, and the
/// Unicode bidirectional overrides and isolates.
fn is_hostile(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text safe for a terminal: hostile characters become `\xHH` (below U+0100) or `\u{HHHH}`.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_hostile(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// A JSON line safe for a terminal: hostile characters inside strings become `\uHHHH`, which
/// keeps the line valid JSON with the same meaning.
pub fn sanitize_json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hostile) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if is_hostile(c) {
                    format!("\\u{:04x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// The parts of a compact line, each already sanitized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compact {
    pub time: String,
    /// `ns/name`, `ns/?` (unresolved), `(pod chain)` or the quoted custom prefix.
    pub policy: String,
    /// Address and port, then what the daemon named: `(namespace/pod)`, `(node NAME)`, the
    /// Services the client aimed at (`svc namespace/name:port-name`, the destination's) or, for
    /// an address it could not name, its class (`[public]`).
    pub src: String,
    pub dest: String,
    /// `TCP 5432 SYN`, `UDP 53`, `ICMP 8/0`.
    pub proto: String,
    pub direction: String,
}

impl Compact {
    pub fn of(r: &Record) -> Compact {
        Compact {
            time: short_time(&r.timestamp),
            policy: policy_label(r),
            src: endpoint(
                r.src_ip,
                r.src_port,
                r.src.as_ref(),
                r.src_node.as_deref(),
                &[],
                r.src_class.as_deref(),
            ),
            dest: endpoint(
                r.dest_ip,
                r.dest_port,
                r.dest.as_ref(),
                r.dest_node.as_deref(),
                &r.services,
                r.dest_class.as_deref(),
            ),
            proto: proto_label(r),
            direction: r.direction.clone().unwrap_or_default(),
        }
    }

    /// The whole line, optionally with ANSI colours.
    pub fn line(&self, color: bool) -> String {
        let paint = |code: &str, s: &str| {
            if color && !s.is_empty() {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut line = format!(
            "{} {} {} → {} {}",
            paint("2", &self.time),
            paint("1;33", &self.policy),
            paint("36", &self.src),
            paint("35", &self.dest),
            paint("32", &self.proto),
        );
        if !self.direction.is_empty() {
            line.push(' ');
            line.push_str(&paint("34", &self.direction));
        }
        line
    }
}

/// `HH:MM:SS.mmm` of an RFC 3339 time, `HH:MM:SS` of a syslogemu one.
pub fn short_time(ts: &str) -> String {
    let t = if ts.as_bytes().get(10) == Some(&b'T') {
        ts.get(11..23).unwrap_or(ts)
    } else if ts.len() == 15 {
        // `get`, not indexing: a line from a file may hold multi-byte characters here.
        ts.get(7..).unwrap_or(ts)
    } else {
        ts
    };
    sanitize(t).into_owned()
}

pub fn policy_label(r: &Record) -> String {
    match &r.policy {
        Some(p) => match &p.name {
            Some(name) => sanitize(&format!("{}/{}", p.namespace, name)).into_owned(),
            None => sanitize(&format!("{}/?", p.namespace)).into_owned(),
        },
        None if r.prefix.is_empty() => "(pod chain)".to_string(),
        None => format!("\"{}\"", sanitize(&r.prefix)),
    }
}

fn endpoint(
    ip: Option<std::net::IpAddr>,
    port: Option<u16>,
    pod: Option<&super::record::Pod>,
    node: Option<&str>,
    services: &[super::record::Service],
    class: Option<&str>,
) -> String {
    use std::fmt::Write as _;
    let mut s = match (ip, port) {
        (Some(std::net::IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".to_string(),
    };
    // Writing to a String cannot fail.
    if let Some(pod) = pod {
        let _ = write!(s, " ({}/{})", sanitize(&pod.namespace), sanitize(&pod.pod));
    } else if let Some(node) = node {
        let _ = write!(s, " (node {})", sanitize(node));
    } else if let Some(class) = class {
        let _ = write!(s, " [{}]", sanitize(class));
    }
    for (i, svc) in services.iter().enumerate() {
        s.push_str(if i == 0 { " svc " } else { "," });
        let _ = write!(s, "{}/{}", sanitize(&svc.namespace), sanitize(&svc.name));
        if let Some(p) = &svc.port_name {
            let _ = write!(s, ":{}", sanitize(p));
        }
    }
    s
}

fn proto_label(r: &Record) -> String {
    let mut s = sanitize(&r.protocol.clone().unwrap_or_else(|| "?".into())).to_uppercase();
    if let Some(flags) = r.tcp_flags.as_deref().filter(|f| !f.is_empty()) {
        s.push(' ');
        s.push_str(&sanitize(flags).replace(' ', ","));
    }
    if let Some((t, c)) = r.icmp {
        s.push_str(&format!(" {t}/{c}"));
    }
    s
}

/// The text for a control item, if it is one.
pub fn control_text(item: &Item) -> Option<String> {
    match item {
        Item::Event(_) => None,
        Item::Lost(n) => Some(format!(
            "the daemon dropped {n} events for this client (it read too slowly)"
        )),
        Item::Suppressed {
            policy,
            count,
            interval_s,
        } => Some(format!(
            "rate limit: {count} events of {} suppressed in the last {interval_s} s",
            if policy.is_empty() {
                "unattributed traffic".into()
            } else {
                sanitize(policy).into_owned()
            }
        )),
        Item::Notice(text) => Some(sanitize(text).into_owned()),
    }
}

/// Prints records in one format.
pub struct Printer<W: Write> {
    out: W,
    format: OutputFormat,
    color: bool,
    terminal: bool,
    warned: bool,
    line: String,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: OutputFormat, color: bool, terminal: bool) -> Self {
        Printer {
            out,
            format,
            color,
            terminal,
            warned: false,
            line: String::new(),
        }
    }

    pub fn print(&mut self, r: &Record) -> Result<(), Error> {
        self.line.clear();
        match self.format {
            OutputFormat::Compact => self.line.push_str(&Compact::of(r).line(self.color)),
            // One line per NFLOG message, as the daemon writes its file.
            OutputFormat::Syslogemu if r.syslogemu.is_none() => return self.warn_once("syslogemu"),
            OutputFormat::Syslogemu => {
                for (i, s) in r.syslogemu_lines().enumerate() {
                    if i > 0 {
                        self.line.push('\n');
                    }
                    if self.terminal {
                        self.line.push_str(&sanitize(s));
                    } else {
                        self.line.push_str(s);
                    }
                }
            }
            OutputFormat::Json => match &r.json {
                Some(s) if self.terminal => self.line.push_str(&sanitize_json(s)),
                Some(s) => self.line.push_str(s),
                None if self.terminal => self.line.push_str(&sanitize_json(&synthetic_json(r))),
                None => self.line.push_str(&synthetic_json(r)),
            },
        }
        self.line.push('\n');
        self.out
            .write_all(self.line.as_bytes())
            .map_err(write_error)?;
        // Live output is read as it comes: flush per line (a pipe would otherwise hold 8 KiB).
        self.out.flush().map_err(write_error)
    }

    fn warn_once(&mut self, what: &str) -> Result<(), Error> {
        if !self.warned {
            self.warned = true;
            eprintln!("nflog-tail: some records carry no {what} line (the daemon's JSON file has none): use -o compact or -o json for them");
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(write_error)
    }
}

fn write_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::BrokenPipe
    } else {
        Error::Write {
            path: "standard output".into(),
            err: e,
        }
    }
}

/// JSON for records read from syslogemu lines: the fields that line held, under the daemon's names.
fn synthetic_json(r: &Record) -> String {
    let mut v = serde_json::json!({
        "timestamp": r.timestamp,
        "oob.prefix": r.prefix,
        "oob.in": r.indev,
        "oob.out": r.outdev,
    });
    let obj = v.as_object_mut();
    if let Some(obj) = obj {
        let mut put = |k: &str, val: serde_json::Value| {
            if !val.is_null() {
                obj.insert(k.into(), val);
            }
        };
        put("src_ip", serde_json::json!(r.src_ip));
        put("dest_ip", serde_json::json!(r.dest_ip));
        put("protocol", serde_json::json!(r.protocol));
        put("src_port", serde_json::json!(r.src_port));
        put("dest_port", serde_json::json!(r.dest_port));
        put("tcp.flags", serde_json::json!(r.tcp_flags));
        if let Some(p) = &r.policy {
            put(
                "policy",
                serde_json::json!({"namespace": p.namespace, "name": p.name}),
            );
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let line = "Nov 27 20:59:32 h DROP by policy default/deny-db IN= OUT=eth0 MAC= SRC=10.42.0.5 DST=10.42.1.7 LEN=60 TOS=00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=43122 DPT=5432 SEQ=1 ACK=0 WINDOW=1024 SYN URGP=0 MARK=0x0 ";
        Record::from_syslogemu(line).unwrap()
    }

    fn printed(format: OutputFormat, color: bool, terminal: bool, r: &Record) -> String {
        let mut out = Vec::new();
        Printer::new(&mut out, format, color, terminal)
            .print(r)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn compact_lines() {
        assert_eq!(
            printed(OutputFormat::Compact, false, false, &record()),
            "20:59:32 default/deny-db 10.42.0.5:43122 → 10.42.1.7:5432 TCP SYN\n"
        );
        let coloured = printed(OutputFormat::Compact, true, true, &record());
        assert!(
            coloured.contains("\x1b[1;33mdefault/deny-db\x1b[0m"),
            "{coloured:?}"
        );
        assert_eq!(
            short_time("2026-11-27T20:59:32.686935+00:00"),
            "20:59:32.686"
        );
    }

    #[test]
    fn hostile_bytes_never_reach_a_terminal() {
        let mut r = record();
        r.prefix = "evil\x1b]0;title\x07\u{9b}31m\u{202e}".into();
        r.policy = None;
        let line = printed(OutputFormat::Compact, true, true, &r);
        assert!(
            line.contains(r"evil\x1b]0;title\x07\x9b31m\u{202e}"),
            "{line}"
        );
        assert!(!line.contains('\x07') && !line.contains('\u{9b}') && !line.contains('\u{202e}'));
        r.syslogemu = Some("x\x1b[2Jy".into());
        assert_eq!(
            printed(OutputFormat::Syslogemu, false, true, &r),
            "x\\x1b[2Jy\n"
        );
        assert_eq!(
            printed(OutputFormat::Syslogemu, false, false, &r),
            "x\x1b[2Jy\n"
        );
        r.json = Some("{\"a\":\"\u{9b}\"}".into());
        let json = printed(OutputFormat::Json, false, true, &r);
        assert_eq!(json, "{\"a\":\"\\u009b\"}\n");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["a"], "\u{9b}");
    }

    #[test]
    fn syslogemu_prints_every_message() {
        let mut r = record();
        r.further.push(super::super::record::Message {
            syslogemu: "second\x1b".into(),
            nflog: vec![2, 0, 0, 100],
        });
        let first = r.syslogemu.clone().unwrap();
        assert_eq!(
            printed(OutputFormat::Syslogemu, false, false, &r),
            format!("{first}\nsecond\x1b\n")
        );
        assert_eq!(
            printed(OutputFormat::Syslogemu, false, true, &r),
            format!("{first}\nsecond\\x1b\n")
        );
        // Compact and JSON stay one line per event.
        assert_eq!(lines_of(OutputFormat::Compact, &r), 1);
        assert_eq!(lines_of(OutputFormat::Json, &r), 1);
    }

    fn lines_of(format: OutputFormat, r: &Record) -> usize {
        printed(format, false, false, r).lines().count()
    }

    #[test]
    fn json_of_syslogemu_records() {
        let v: serde_json::Value =
            serde_json::from_str(&printed(OutputFormat::Json, false, false, &record())).unwrap();
        assert_eq!(v["dest_port"], 5432);
        assert_eq!(v["policy"]["name"], "deny-db");
    }

    #[test]
    fn compact_names_nodes_services_and_classes() {
        let json = r#"{"timestamp":"2026-11-27T20:59:32.686935+00:00","oob.prefix":"","src_ip":"192.168.1.13","dest_ip":"10.42.1.7","protocol":"tcp","src_port":43122,"dest_port":5432,"tcp.flags":"SYN","policy_source":"pod-chain","policy":null,"direction":"ingress","src":{"node":"node-3"},"dest":{"pod":"pg-0","namespace":"db","node":"node-1","services":[{"namespace":"db","name":"postgres","port_name":"pg","port":5432,"via":"endpoints"},{"namespace":"db","name":"pg-any","port":5432,"via":"endpoints"}]},"src_class":"private","dest_class":"private","count":1}"#;
        let Item::Event(r) = Item::from_json_line(json).unwrap() else {
            panic!()
        };
        // The node peer is named as a node, not shown as a pod without a name.
        assert_eq!(r.src, None);
        assert_eq!(
            printed(OutputFormat::Compact, false, false, &r),
            "20:59:32.686 (pod chain) 192.168.1.13:43122 (node node-3) → 10.42.1.7:5432 (db/pg-0) \
             svc db/postgres:pg,db/pg-any TCP SYN ingress\n"
        );
        // An address the daemon could not name shows its class; hostile names are escaped.
        let json = json
            .replace(r#""src":{"node":"node-3"},"#, "")
            .replace(r#""src_class":"private""#, r#""src_class":"public""#)
            .replace(r#""name":"postgres""#, r#""name":"evil\u001b[2J""#);
        let Item::Event(r) = Item::from_json_line(&json).unwrap() else {
            panic!()
        };
        let line = printed(OutputFormat::Compact, false, true, &r);
        assert!(
            line.contains("192.168.1.13:43122 [public] → ")
                && line.contains("svc db/evil\\x1b[2J:pg,"),
            "{line}"
        );
    }

    #[test]
    fn pod_chain_and_unresolved() {
        let mut r = record();
        r.prefix.clear();
        r.policy = None;
        assert_eq!(Compact::of(&r).policy, "(pod chain)");
        r.policy = Some(super::super::record::Policy {
            namespace: "db".into(),
            name: None,
            candidates: vec![],
        });
        assert_eq!(Compact::of(&r).policy, "db/?");
    }
}
