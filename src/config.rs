//! Configuration: a TOML file (every key documented in `config/netpol-nflogd.toml`), then
//! command-line flags and environment variables on top ([`Overrides`], see the binary's
//! `--help`).
//!
//! Three steps, each with one owner: [`ConfigFile`] is the file as written (unknown keys are
//! errors); [`ConfigFile::resolve`] checks every value and turns it into the typed [`Config`],
//! reporting every problem at once, each naming its key; [`Config`]'s builders
//! ([`Config::limiter`], [`Config::socket_tuning`], …) make the runtime parts from it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limit::{self, Limit};
use crate::render::Format;
use crate::sink::syslog::SyslogSinkConfig;

/// The documented default configuration, embedded so the daemon runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/netpol-nflogd.toml");

/// The configuration file as written, before [`ConfigFile::resolve`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub source: Source,
    pub output: OutputSection,
    pub sinks: Vec<Sink>,
    pub limits: Limits,
    pub kubernetes: Kubernetes,
    pub metrics: Metrics,
    pub tail: Tail,
    pub events: Events,
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
    /// Ask for conntrack entries (original destination before DNAT).
    pub conntrack: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
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
    /// Cap on the node's messages together ("" for none).
    pub node_limit: String,
    pub node_burst: u32,
    pub summary_interval_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// "auto" (in a pod or with a kubeconfig), "on", or "off".
    pub mode: String,
    pub watch_all_pods: bool,
    /// A `kubectl get … -o yaml|json` file to attribute from instead of the API ("" for none).
    pub snapshot: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub listen: String,
}

/// Kubernetes Events on drops (opt-in).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    pub enabled: bool,
    /// Seconds between two Events for the same pod, policy and peer.
    pub interval_s: u64,
    /// Events per pod and minute at most.
    pub per_pod_per_minute: u32,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            enabled: false,
            interval_s: 60,
            per_pod_per_minute: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tail {
    pub socket: String,
    pub ring: usize,
}

impl Default for ConfigFile {
    fn default() -> Self {
        ConfigFile {
            source: Source::default(),
            output: OutputSection::default(),
            sinks: vec![
                Sink::file(Format::Syslogemu, "/var/log/ulog/syslogemu.log"),
                Sink::stdout(Format::Json),
            ],
            limits: Limits::default(),
            kubernetes: Kubernetes::default(),
            metrics: Metrics::default(),
            tail: Tail::default(),
            events: Events::default(),
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
            flush_timeout_ms: 10,
            socket_receive_buffer: 64 << 20,
            conntrack: true,
        }
    }
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            hostname: String::new(),
            node_name: String::new(),
            correlation_window_ms: 50,
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
            node_limit: "5000/second".into(),
            node_burst: 10000,
            summary_interval_s: 60,
        }
    }
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            mode: "auto".into(),
            watch_all_pods: false,
            snapshot: String::new(),
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

impl ConfigFile {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads a file, or the embedded default without one.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let Some(path) = path else {
            return ConfigFile::parse(DEFAULT_TOML, "embedded default");
        };
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        ConfigFile::parse(&text, &path.display().to_string())
    }

    /// Applies command-line and environment overrides on top of the file.
    pub fn apply(&mut self, o: &Overrides) {
        if !o.groups.is_empty() {
            self.source.groups = o.groups.clone();
        }
        if let Some(h) = &o.hostname {
            self.output.hostname = h.clone();
        }
        if let Some(n) = &o.node_name {
            self.output.node_name = n.clone();
        }
        if let Some(path) = &o.syslogemu_file {
            self.sinks
                .retain(|s| !(matches!(s, Sink::File(_)) && s.format() == Some(Format::Syslogemu)));
            if !path.as_os_str().is_empty() {
                self.sinks.push(Sink::file(Format::Syslogemu, path.clone()));
            }
        }
        if let Some(path) = &o.json_file {
            self.sinks.push(Sink::file(Format::Json, path.clone()));
        }
        if let Some(stdout) = &o.stdout {
            self.sinks.retain(|s| !matches!(s, Sink::Stdout(_)));
            self.sinks.extend(stdout.map(Sink::stdout));
        }
        if o.no_rate_limit {
            self.limits.enabled = false;
        }
        if let Some(t) = &o.tail_socket {
            self.tail.socket = t.clone();
        }
        if let Some(m) = &o.metrics_listen {
            self.metrics.listen = m.clone();
        }
        if let Some(r) = o.rcvbuf {
            self.source.socket_receive_buffer = r;
        }
        if o.kube_events {
            self.events.enabled = true;
        }
        if let Some(path) = &o.kube_snapshot {
            self.kubernetes.snapshot = path.to_string_lossy().into_owned();
        }
    }

    /// Checks every value; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    /// Checks every value and returns the typed configuration, or every problem at once.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
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
        // The kernel queues at most what fits its buffer anyway; more is a typo.
        if !(1..=QUEUE_THRESHOLD_MAX).contains(&s.queue_threshold) {
            bad(
                "source.queue_threshold",
                format!(
                    "{} is not between 1 and {QUEUE_THRESHOLD_MAX}",
                    s.queue_threshold
                ),
            );
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
        if !(4096..=RECEIVE_BUFFER_MAX).contains(&s.socket_receive_buffer) {
            bad(
                "source.socket_receive_buffer",
                format!(
                    "{} is not between 4096 and {RECEIVE_BUFFER_MAX} bytes (the kernel doubles it, and it counts against the pod's memory)",
                    s.socket_receive_buffer
                ),
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
        let node_limit = match l.node_limit.as_str() {
            "" => None,
            text => match limit::parse_rate(text, NODE_LIMIT_MAX) {
                Ok((count, per)) => Some(Limit {
                    count,
                    per,
                    burst: l.node_burst,
                }),
                Err(e) => {
                    bad(
                        "limits.node_limit",
                        format!("{e} (the node cap goes up to {NODE_LIMIT_MAX}/second)"),
                    );
                    None
                }
            },
        };
        if l.node_burst == 0 || f64::from(l.node_burst) > NODE_LIMIT_MAX {
            bad(
                "limits.node_burst",
                format!("{} is not between 1 and {NODE_LIMIT_MAX}", l.node_burst),
            );
        }
        if !(1..=86_400).contains(&l.summary_interval_s) {
            bad(
                "limits.summary_interval_s",
                format!("{} is not between 1 and 86400", l.summary_interval_s),
            );
        }
        if self.output.correlation_window_ms > 10_000 {
            bad(
                "output.correlation_window_ms",
                format!("{} is above 10000", self.output.correlation_window_ms),
            );
        }
        let mode = match self.kubernetes.mode.as_str() {
            "auto" => KubeMode::Auto,
            "on" => KubeMode::On,
            "off" => KubeMode::Off,
            other => {
                bad(
                    "kubernetes.mode",
                    format!("{other:?} is not one of auto, on, off"),
                );
                KubeMode::Off
            }
        };
        let metrics_listen = match self.metrics.listen.as_str() {
            "" => None,
            text => match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    bad(
                        "metrics.listen",
                        format!("{text:?} is not an address:port (empty disables)"),
                    );
                    None
                }
            },
        };
        if !(1..=TAIL_RING_MAX).contains(&self.tail.ring) {
            bad(
                "tail.ring",
                format!(
                    "{} is not between 1 and {TAIL_RING_MAX} records",
                    self.tail.ring
                ),
            );
        }
        if self.events.interval_s == 0 || self.events.interval_s > 86_400 {
            bad(
                "events.interval_s",
                format!("{} is not between 1 and 86400", self.events.interval_s),
            );
        }
        if !(1..=60).contains(&self.events.per_pod_per_minute) {
            bad(
                "events.per_pod_per_minute",
                format!("{} is not between 1 and 60", self.events.per_pod_per_minute),
            );
        }
        if !p.is_empty() {
            return Err(ConfigError::Invalid(p));
        }
        let limit = |text: &str, burst: u32| {
            let (count, per) =
                limit::parse_limit(text).unwrap_or((Limit::DEFAULT.count, Limit::DEFAULT.per));
            Limit { count, per, burst }
        };
        Ok(Config {
            source: self.source.clone(),
            hostname: self.output.hostname.clone(),
            node_name: self.output.node_name.clone(),
            correlation_window: Duration::from_millis(self.output.correlation_window_ms),
            sinks: self.sinks.clone(),
            limits: LimitSettings {
                enabled: l.enabled,
                policy: limit(&l.default_limit, l.default_burst),
                unattributed: limit(&l.unattributed_limit, l.unattributed_burst),
                node: node_limit,
                summary_interval: Duration::from_secs(l.summary_interval_s),
            },
            kube_mode: mode,
            watch_all_pods: self.kubernetes.watch_all_pods,
            kube_snapshot: (!self.kubernetes.snapshot.is_empty())
                .then(|| PathBuf::from(&self.kubernetes.snapshot)),
            metrics_listen,
            tail_socket: (!self.tail.socket.is_empty()).then(|| PathBuf::from(&self.tail.socket)),
            tail_ring: self.tail.ring,
            events: self.events.enabled.then(|| EventSettings {
                interval: Duration::from_secs(self.events.interval_s),
                per_pod_per_minute: self.events.per_pod_per_minute,
            }),
        })
    }
}

/// The node-wide cap's ceiling, messages per second.
pub const NODE_LIMIT_MAX: f64 = 1_000_000.0;

/// `source.queue_threshold` at most: a batch larger than the kernel's buffer is never sent whole.
pub const QUEUE_THRESHOLD_MAX: u32 = 100_000;
/// `source.socket_receive_buffer` at most (1 GiB; the kernel doubles it).
pub const RECEIVE_BUFFER_MAX: usize = 1 << 30;

/// Records kept for new `nflog-tail` clients at most (each is about 1 KiB).
pub const TAIL_RING_MAX: usize = 100_000;

/// Settings from the command line and the environment; `None` keeps the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub groups: Vec<u16>,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    /// Replaces the syslogemu file sinks; an empty path removes them.
    pub syslogemu_file: Option<PathBuf>,
    /// Adds a JSON file sink.
    pub json_file: Option<PathBuf>,
    /// Replaces the stdout sinks: `Some(None)` removes them.
    pub stdout: Option<Option<Format>>,
    pub no_rate_limit: bool,
    pub rcvbuf: Option<usize>,
    pub tail_socket: Option<String>,
    pub metrics_listen: Option<String>,
    pub kube_snapshot: Option<PathBuf>,
    /// Switches Kubernetes Events on.
    pub kube_events: bool,
}

/// Whether the daemon watches the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeMode {
    /// When in a pod or with a kubeconfig; standalone otherwise.
    Auto,
    /// Always: no cluster configuration is an error.
    On,
    Off,
}

/// The daemon's rate limits, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    pub enabled: bool,
    /// For `DROP by policy` rules without annotations.
    pub policy: Limit,
    /// For each pod chain and each other prefix.
    pub unattributed: Limit,
    /// All messages of the node together, after their own rule's limit.
    pub node: Option<Limit>,
    pub summary_interval: Duration,
}

/// Kubernetes Events on drops, when enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    pub interval: Duration,
    pub per_pod_per_minute: u32,
}

/// The checked, typed configuration ([`ConfigFile::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: Source,
    /// Empty: the short hostname, as ulogd2.
    pub hostname: String,
    /// Empty: `$NODE_NAME`, else the hostname.
    pub node_name: String,
    /// Zero: no correlation.
    pub correlation_window: Duration,
    pub sinks: Vec<Sink>,
    pub limits: LimitSettings,
    pub kube_mode: KubeMode,
    pub watch_all_pods: bool,
    /// Attribute from this `kubectl get -o yaml|json` file instead of the API.
    pub kube_snapshot: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub tail_socket: Option<PathBuf>,
    pub tail_ring: usize,
    /// Kubernetes Events on drops (opt-in).
    pub events: Option<EventSettings>,
}

impl Config {
    /// Loads the file (or the embedded default), applies the overrides and checks the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut file = ConfigFile::load(path)?;
        file.apply(overrides);
        file.resolve()
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        ConfigFile::default()
            .resolve()
            .expect("the embedded default configuration is valid (tested)")
    }

    /// The hostname for syslogemu lines and the node name for JSON records.
    pub fn names(&self) -> (String, String) {
        let hostname = if self.hostname.is_empty() {
            crate::render::short_hostname()
        } else {
            self.hostname.clone()
        };
        let node_name = if !self.node_name.is_empty() {
            self.node_name.clone()
        } else {
            std::env::var("NODE_NAME").unwrap_or_else(|_| hostname.clone())
        };
        (hostname, node_name)
    }

    /// The rate limiter the limits ask for.
    pub fn limiter(&self) -> crate::limit::Limiter {
        let l = &self.limits;
        crate::limit::Limiter::new(l.enabled, l.policy, l.unattributed).with_node_limit(l.node)
    }

    /// The NFLOG socket's settings.
    pub fn socket_tuning(&self) -> crate::source::socket::SocketTuning {
        let s = &self.source;
        crate::source::socket::SocketTuning {
            copy_range: s.copy_range,
            nlbufsiz: s.kernel_buffer,
            qthreshold: s.queue_threshold,
            timeout_cs: s.flush_timeout_ms.div_ceil(10),
            rcvbuf: s.socket_receive_buffer,
            conntrack: s.conntrack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_code_default() {
        let parsed = ConfigFile::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(parsed, ConfigFile::default());
        parsed.validate().unwrap();
        assert_eq!(Config::embedded().limits.policy, Limit::DEFAULT);
        assert_eq!(
            Config::embedded().limits.node,
            Some(Limit {
                count: 5000,
                per: Duration::from_secs(1),
                burst: 10000
            })
        );
        let err = ConfigFile::parse(
            "[limits]\nnode_limit = \"2000000/s\"\nnode_burst = 0\n",
            "t",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("limits.node_limit") && err.contains("limits.node_burst"),
            "{err}"
        );
    }

    #[test]
    fn syslog_sink_is_parsed_and_validated() {
        let c = ConfigFile::parse(
            "[[sinks]]\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:514\"\nframing = \"newline\"\n",
            "t",
        )
        .unwrap();
        assert!(
            matches!(&c.sinks[..], [Sink::Syslog(s)] if s.name() == "syslog+tcp:127.0.0.1:514")
        );
        c.validate().unwrap();
        let err = ConfigFile::parse("[[sinks]]\nkind = \"syslog\"\nfacility = \"nope\"\n", "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].facility"), "{err}");
        let err = ConfigFile::parse("[[sinks]]\nkind = \"file\"\nformat = \"json\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("path"), "{err}");
        let err = ConfigFile::parse(
            "[[sinks]]\nkind = \"stdout\"\nformat = \"json\"\npath = \"x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `path`"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ConfigFile::parse("[source]\ngroup = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `group`"), "{err}");
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let c = ConfigFile::parse(
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

    #[test]
    fn overrides_apply_in_the_configuration_layer() {
        let o = Overrides {
            groups: vec![5, 6],
            syslogemu_file: Some(PathBuf::from("/tmp/x.log")),
            stdout: Some(None),
            json_file: Some(PathBuf::from("/tmp/x.json")),
            metrics_listen: Some(String::new()),
            tail_socket: Some(String::new()),
            no_rate_limit: true,
            ..Overrides::default()
        };
        let c = Config::load(None, &o).unwrap();
        assert_eq!(c.source.groups, vec![5, 6]);
        assert_eq!(
            c.sinks,
            vec![
                Sink::file(Format::Syslogemu, "/tmp/x.log"),
                Sink::file(Format::Json, "/tmp/x.json")
            ]
        );
        assert_eq!((c.metrics_listen, c.tail_socket), (None, None));
        assert!(!c.limits.enabled);
        assert_eq!(c.kube_mode, KubeMode::Auto);
        let stdout_json = Overrides {
            syslogemu_file: Some(PathBuf::new()),
            stdout: Some(Some(Format::Json)),
            ..Overrides::default()
        };
        let c = Config::load(None, &stdout_json).unwrap();
        assert_eq!(c.sinks, vec![Sink::stdout(Format::Json)]);
    }

    #[test]
    fn every_size_has_a_stated_maximum() {
        let err = ConfigFile::parse(
            "[source]\nqueue_threshold = 4000000000\nsocket_receive_buffer = 99999999999\n[limits]\nsummary_interval_s = 999999\n",
            "t",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        for key in [
            "source.queue_threshold",
            "source.socket_receive_buffer",
            "limits.summary_interval_s",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn a_huge_tail_ring_is_refused() {
        let err = ConfigFile::parse("[tail]\nring = 100000000\n", "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tail.ring"), "{err}");
    }
}
