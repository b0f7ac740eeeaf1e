//! Configuration: a TOML file (every key documented in `config/netpol-nflogd.toml`), then
//! command-line flags and environment variables on top (see the binary's `--help`).
//!
//! Unknown keys are errors, and validation reports every problem at once, each naming its key.

use std::path::PathBuf;

use serde::Deserialize;

use crate::limit::{self, Limit};
use crate::render::Format;
use crate::sink::syslog::SyslogSinkConfig;

/// The documented default configuration, embedded so the daemon runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/netpol-nflogd.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub source: Source,
    pub output: Output,
    pub sinks: Vec<Sink>,
    pub limits: Limits,
    pub kubernetes: Kubernetes,
    pub metrics: Metrics,
    pub tail: Tail,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    pub groups: Vec<u16>,
    pub copy_range: u32,
    pub kernel_buffer: u32,
    pub queue_threshold: u32,
    pub flush_timeout_ms: u32,
    pub socket_receive_buffer: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    pub hostname: String,
    pub node_name: String,
    pub correlation_window_ms: u64,
}

/// One output. `kind` selects the variant; unknown keys are errors in every variant.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Sink {
    File(FileSink),
    Stdout(StdoutSink),
    Syslog(SyslogSinkConfig),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    pub format: Format,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdoutSink {
    pub format: Format,
}

impl Sink {
    pub fn file(format: Format, path: impl Into<PathBuf>) -> Sink {
        Sink::File(FileSink {
            format,
            path: path.into(),
        })
    }

    pub fn stdout(format: Format) -> Sink {
        Sink::Stdout(StdoutSink { format })
    }

    /// The line format of file and stdout sinks.
    pub fn format(&self) -> Option<Format> {
        match self {
            Sink::File(f) => Some(f.format),
            Sink::Stdout(s) => Some(s.format),
            Sink::Syslog(_) => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub enabled: bool,
    pub default_limit: String,
    pub default_burst: u32,
    pub unattributed_limit: String,
    pub unattributed_burst: u32,
    pub summary_interval_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// "auto" (in a pod or with a kubeconfig), "on", or "off".
    pub mode: String,
    pub watch_all_pods: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tail {
    pub socket: String,
    pub ring: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: Source::default(),
            output: Output::default(),
            sinks: vec![
                Sink::file(Format::Syslogemu, "/var/log/ulog/syslogemu.log"),
                Sink::stdout(Format::Json),
            ],
            limits: Limits::default(),
            kubernetes: Kubernetes::default(),
            metrics: Metrics::default(),
            tail: Tail::default(),
        }
    }
}

impl Default for Source {
    fn default() -> Self {
        Source {
            groups: vec![100],
            copy_range: 65535,
            kernel_buffer: 131072,
            queue_threshold: 1024,
            flush_timeout_ms: 100,
            socket_receive_buffer: 64 << 20,
        }
    }
}

impl Default for Output {
    fn default() -> Self {
        Output {
            hostname: String::new(),
            node_name: String::new(),
            correlation_window_ms: 200,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            enabled: true,
            default_limit: "10/minute".into(),
            default_burst: 10,
            unattributed_limit: "10/minute".into(),
            unattributed_burst: 10,
            summary_interval_s: 60,
        }
    }
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            mode: "auto".into(),
            watch_all_pods: false,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "0.0.0.0:9109".into(),
        }
    }
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            socket: "/run/netpol-nflog/tail.sock".into(),
            ring: 1000,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration:\n  {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Checks every value; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let mut bad = |key: &str, problem: String| {
            p.push(Problem {
                key: key.to_string(),
                problem,
            })
        };
        let s = &self.source;
        if s.groups.is_empty() {
            bad("source.groups", "at least one NFLOG group is needed".into());
        }
        if !(1..=65535).contains(&s.copy_range) {
            bad(
                "source.copy_range",
                format!("{} is not between 1 and 65535", s.copy_range),
            );
        }
        // nfulnl_set_nlbufsiz() refuses sizes outside this range with ERANGE.
        if !(8192..=131072).contains(&s.kernel_buffer) {
            bad(
                "source.kernel_buffer",
                format!("{} is not between 8192 and 131072 bytes", s.kernel_buffer),
            );
        }
        if s.queue_threshold == 0 {
            bad("source.queue_threshold", "must be at least 1".into());
        }
        if s.flush_timeout_ms < 10 || s.flush_timeout_ms > 10_000 {
            bad(
                "source.flush_timeout_ms",
                format!(
                    "{} is not between 10 and 10000 (the kernel counts in 1/100 s)",
                    s.flush_timeout_ms
                ),
            );
        }
        if s.socket_receive_buffer < 4096 {
            bad(
                "source.socket_receive_buffer",
                format!("{} is below 4096 bytes", s.socket_receive_buffer),
            );
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            match sink {
                Sink::File(f) if f.path.as_os_str().is_empty() => {
                    bad(&format!("sinks[{i}].path"), "is empty".into())
                }
                Sink::Syslog(sys) => {
                    for (key, problem) in sys.validate() {
                        bad(&format!("sinks[{i}].{key}"), problem);
                    }
                }
                _ => {}
            }
        }
        let l = &self.limits;
        if let Err(e) = limit::parse_limit(&l.default_limit) {
            bad("limits.default_limit", e.to_string());
        }
        if let Err(e) = limit::parse_burst(&l.default_burst.to_string()) {
            bad("limits.default_burst", e.to_string());
        }
        if let Err(e) = limit::parse_limit(&l.unattributed_limit) {
            bad("limits.unattributed_limit", e.to_string());
        }
        if let Err(e) = limit::parse_burst(&l.unattributed_burst.to_string()) {
            bad("limits.unattributed_burst", e.to_string());
        }
        if l.summary_interval_s == 0 {
            bad("limits.summary_interval_s", "must be at least 1".into());
        }
        if self.output.correlation_window_ms > 10_000 {
            bad(
                "output.correlation_window_ms",
                format!("{} is above 10000", self.output.correlation_window_ms),
            );
        }
        if !matches!(self.kubernetes.mode.as_str(), "auto" | "on" | "off") {
            bad(
                "kubernetes.mode",
                format!("{:?} is not one of auto, on, off", self.kubernetes.mode),
            );
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            bad(
                "metrics.listen",
                format!(
                    "{:?} is not an address:port (empty disables)",
                    self.metrics.listen
                ),
            );
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// The per-policy default and the default for messages without a policy.
    pub fn limits(&self) -> (Limit, Limit) {
        let make = |limit: &str, burst: u32| {
            let (count, per) =
                limit::parse_limit(limit).unwrap_or((Limit::DEFAULT.count, Limit::DEFAULT.per));
            Limit { count, per, burst }
        };
        (
            make(&self.limits.default_limit, self.limits.default_burst),
            make(
                &self.limits.unattributed_limit,
                self.limits.unattributed_burst,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_code_default() {
        let parsed = Config::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn syslog_sink_is_parsed_and_validated() {
        let c = Config::parse(
            "[[sinks]]\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:514\"\nframing = \"newline\"\n",
            "t",
        )
        .unwrap();
        assert!(
            matches!(&c.sinks[..], [Sink::Syslog(s)] if s.name() == "syslog+tcp:127.0.0.1:514")
        );
        c.validate().unwrap();
        let err = Config::parse("[[sinks]]\nkind = \"syslog\"\nfacility = \"nope\"\n", "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].facility"), "{err}");
        let err = Config::parse("[[sinks]]\nkind = \"file\"\nformat = \"json\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("path"), "{err}");
        let err = Config::parse(
            "[[sinks]]\nkind = \"stdout\"\nformat = \"json\"\npath = \"x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `path`"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[source]\ngroup = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `group`"), "{err}");
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let c = Config::parse(
            "[source]\ncopy_range = 0\nkernel_buffer = 1\n[limits]\ndefault_limit = \"10/min\"\n[kubernetes]\nmode = \"maybe\"\n",
            "t",
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        for key in [
            "source.copy_range",
            "source.kernel_buffer",
            "limits.default_limit",
            "kubernetes.mode",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }
}
