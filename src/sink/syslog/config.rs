//! The configuration of a syslog sink: one `[[sinks]]` entry with `kind = "syslog"`, its
//! defaults, and validation that names every bad key.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::render::syslog::{facility_code, severity_code, MsgFormat, Rfc, SyslogFormat};

/// How messages leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// A local datagram socket such as `/dev/log`.
    #[default]
    Unix,
    Udp,
    Tcp,
    /// TCP with TLS (RFC 5425), verified against `tls_ca_file` or the system's roots.
    Tls,
}

/// Message framing on TCP and TLS (RFC 6587); datagrams carry one message each and need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// `LEN SP MSG` (RFC 6587 §3.4.1, RFC 5425 §4.3).
    #[default]
    OctetCounting,
    /// `MSG LF` (RFC 6587 §3.4.2).
    Newline,
}

/// The message layout as configured; `Rfc3164` on a Unix socket is sent in `syslog(3)`'s
/// local form (no HOSTNAME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RfcChoice {
    Rfc3164,
    Rfc5424,
}

impl<'de> Deserialize<'de> for RfcChoice {
    /// `"3164"`, `"5424"`, or the bare numbers, which TOML users write as often.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(3164) => Ok(RfcChoice::Rfc3164),
            Raw::Num(5424) => Ok(RfcChoice::Rfc5424),
            Raw::Str(s) if s == "3164" => Ok(RfcChoice::Rfc3164),
            Raw::Str(s) if s == "5424" => Ok(RfcChoice::Rfc5424),
            Raw::Num(n) => Err(serde::de::Error::custom(format!(
                "rfc {n} is not 3164 or 5424"
            ))),
            Raw::Str(s) => Err(serde::de::Error::custom(format!(
                "rfc {s:?} is not \"3164\" or \"5424\""
            ))),
        }
    }
}

/// One `[[sinks]]` entry with `kind = "syslog"`. Every key but `kind` is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogSinkConfig {
    pub transport: SyslogTransport,
    /// A socket path for `unix` (empty: `/dev/log`); `host:port` otherwise (`[v6]:port` for
    /// IPv6 literals), resolved again at every connection.
    pub address: String,
    /// Default: 3164 for `unix` (what local syslog daemons parse by default), 5424 otherwise.
    pub rfc: Option<RfcChoice>,
    /// TCP and TLS only.
    pub framing: Framing,
    /// A name (`local0`…`local7`, `daemon`, `kern`, …) or a number 0-23.
    pub facility: String,
    /// A name (`emerg` … `debug`) or a number 0-7.
    pub severity: String,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub app_name: String,
    /// HOSTNAME in messages; empty: the daemon's (`output.hostname`, else the short host name).
    pub hostname: String,
    /// What MSG holds: `syslogemu` text or `json`.
    pub message: MsgFormat,
    /// Messages held while the receiver is away; more are dropped and counted.
    pub buffer_messages: usize,
    /// PEM file of the CA certificates that verify the server (`tls` only). Without it the
    /// system's roots are used.
    pub tls_ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry (`tls` only); default: the host of
    /// `address`.
    pub tls_server_name: Option<String>,
}

impl Default for SyslogSinkConfig {
    fn default() -> Self {
        SyslogSinkConfig {
            transport: SyslogTransport::Unix,
            address: String::new(),
            rfc: None,
            framing: Framing::OctetCounting,
            // local0: the facility sites reserve for their own applications; `kern` (where
            // iptables LOG lines land) cannot be sent by a process through /dev/log.
            facility: "local0".into(),
            // warning: the level the kernel's LOG target uses by default for these drops.
            severity: "warning".into(),
            app_name: "netpol-nflogd".into(),
            hostname: String::new(),
            message: MsgFormat::Syslogemu,
            buffer_messages: 10_000,
            tls_ca_file: None,
            tls_server_name: None,
        }
    }
}

/// The most a buffer may hold: at ~1 KiB a message, 1 GiB.
const MAX_BUFFER: usize = 1_000_000;
const DEFAULT_UNIX_PATH: &str = "/dev/log";

impl SyslogSinkConfig {
    /// Checks every key; returns `(key, problem)` pairs, keys relative to the sink entry.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad = |key: &str, problem: String| p.push((key.to_string(), problem));
        match self.transport {
            SyslogTransport::Unix => {
                if !self.address.is_empty() && !self.address.starts_with('/') {
                    bad(
                        "address",
                        format!("{:?} is not an absolute socket path", self.address),
                    );
                }
            }
            _ => {
                if let Err(e) = split_host_port(&self.address) {
                    bad("address", e);
                }
            }
        }
        if facility_code(&self.facility).is_none() {
            bad(
                "facility",
                format!(
                    "{:?} is not a facility name (kern, user, daemon, local0 … local7, …) or 0-23",
                    self.facility
                ),
            );
        }
        if severity_code(&self.severity).is_none() {
            bad(
                "severity",
                format!("{:?} is not one of emerg, alert, crit, err, warning, notice, info, debug, or 0-7", self.severity),
            );
        }
        if self.app_name.is_empty() || self.app_name.len() > 48 || !printable(&self.app_name) {
            bad(
                "app_name",
                format!(
                    "{:?} must be 1-48 printable ASCII characters without spaces",
                    self.app_name
                ),
            );
        } else if self.rfc() == RfcChoice::Rfc3164 && self.app_name.contains([':', '[', ']']) {
            bad(
                "app_name",
                format!(
                    "{:?}: an RFC 3164 tag cannot contain ':', '[' or ']'",
                    self.app_name
                ),
            );
        }
        if !self.hostname.is_empty() && (self.hostname.len() > 255 || !printable(&self.hostname)) {
            bad(
                "hostname",
                format!(
                    "{:?} must be at most 255 printable ASCII characters without spaces",
                    self.hostname
                ),
            );
        }
        if self.buffer_messages == 0 || self.buffer_messages > MAX_BUFFER {
            bad(
                "buffer_messages",
                format!("{} is not between 1 and {MAX_BUFFER}", self.buffer_messages),
            );
        }
        if self.transport != SyslogTransport::Tls {
            if self.tls_ca_file.is_some() {
                bad("tls_ca_file", "only applies to transport = \"tls\"".into());
            }
            if self.tls_server_name.is_some() {
                bad(
                    "tls_server_name",
                    "only applies to transport = \"tls\"".into(),
                );
            }
        } else {
            if let Some(name) = self.server_name() {
                if parse_server_name(&name).is_none() {
                    bad(
                        "tls_server_name",
                        format!("{name:?} is not a DNS name or IP address"),
                    );
                }
            }
            if let Some(ca) = &self.tls_ca_file {
                if let Err(e) = std::fs::metadata(ca) {
                    bad("tls_ca_file", format!("cannot read {}: {e}", ca.display()));
                }
            }
        }
        p
    }

    /// The layout in effect (see [`SyslogSinkConfig::rfc`] field).
    pub fn rfc(&self) -> RfcChoice {
        self.rfc.unwrap_or(match self.transport {
            SyslogTransport::Unix => RfcChoice::Rfc3164,
            _ => RfcChoice::Rfc5424,
        })
    }

    /// The socket path or `host:port` in effect.
    pub fn address(&self) -> &str {
        if self.transport == SyslogTransport::Unix && self.address.is_empty() {
            DEFAULT_UNIX_PATH
        } else {
            &self.address
        }
    }

    /// The sink's name in counters and logs, e.g. `syslog+tcp:logs.example:6514`.
    pub fn name(&self) -> String {
        let t = match self.transport {
            SyslogTransport::Unix => "unix",
            SyslogTransport::Udp => "udp",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Tls => "tls",
        };
        format!("syslog+{t}:{}", self.address())
    }

    /// The renderer's settings. `hostname` and `node_name` are the daemon's; the sink's own
    /// `hostname` key overrides the first. Call after [`validate`](Self::validate): unknown
    /// names fall back to the defaults here.
    pub fn format(&self, hostname: &str, node_name: &str) -> SyslogFormat {
        SyslogFormat {
            rfc: match (self.rfc(), self.transport) {
                (RfcChoice::Rfc3164, SyslogTransport::Unix) => Rfc::Rfc3164Local,
                (RfcChoice::Rfc3164, _) => Rfc::Rfc3164,
                (RfcChoice::Rfc5424, _) => Rfc::Rfc5424,
            },
            facility: facility_code(&self.facility).unwrap_or(16),
            severity: severity_code(&self.severity).unwrap_or(4),
            app_name: self.app_name.clone(),
            hostname: if self.hostname.is_empty() {
                hostname.to_string()
            } else {
                self.hostname.clone()
            },
            node_name: node_name.to_string(),
            msg: self.message,
        }
    }

    pub(super) fn server_name(&self) -> Option<String> {
        match &self.tls_server_name {
            Some(n) => Some(n.clone()),
            None => split_host_port(&self.address)
                .ok()
                .map(|(h, _)| h.to_string()),
        }
    }
}

/// Parses a TLS server name the way the connection will use it.
pub(super) fn parse_server_name(name: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(name.to_string()).ok()
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (33..=126).contains(&b))
}

/// `host:port` or `[v6]:port` → (host without brackets, port).
fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not host:port"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "{address:?}: {port:?} is not a port number 1-65535"
            ))
        }
    };
    let host = match host.strip_prefix('[') {
        Some(h) => h
            .strip_suffix(']')
            .ok_or_else(|| format!("{address:?}: unclosed '['"))?,
        None if host.contains(':') => {
            return Err(format!("{address:?}: write IPv6 addresses as [addr]:port"));
        }
        None => host,
    };
    if host.is_empty() {
        return Err(format!("{address:?} has no host"));
    }
    Ok((host, port))
}
