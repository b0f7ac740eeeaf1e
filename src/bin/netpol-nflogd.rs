//! `netpol-nflogd`: the node daemon. Parses flags, loads the configuration, runs the pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netpol_nflog::config::{Config, Overrides};
use netpol_nflog::pipeline::{self, RunOptions};
use netpol_nflog::render::Format;

/// Turns the packets Kubernetes NetworkPolicies drop (kube-router / K3s NFLOG group 100) into
/// ulogd2-compatible syslogemu lines and JSON records with Kubernetes context.
///
/// Every option can also be set in the configuration file (see config/netpol-nflogd.toml for all
/// keys) and by the environment variable shown. Precedence: flag, environment, file, default.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_help = "Signals: SIGHUP reopens the output files (logrotate); SIGTERM and SIGINT drain what the kernel still holds, flush, and exit 0.\n\nExit codes: 0 ok, 1 runtime failure (e.g. the NFLOG group is taken), 2 bad flags or configuration."
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults are used.
    #[arg(short, long, env = "NETPOL_NFLOG_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// NFLOG group to read; repeat for several (default 100, kube-router's group).
    #[arg(
        short,
        long = "group",
        env = "NETPOL_NFLOG_GROUPS",
        value_delimiter = ',',
        global = true
    )]
    groups: Vec<u16>,

    /// Hostname printed in syslogemu lines (default: short hostname, as ulogd2).
    #[arg(long, env = "NETPOL_NFLOG_HOSTNAME", global = true)]
    hostname: Option<String>,

    /// Kubernetes node name for JSON records (default: $NODE_NAME, else the hostname).
    #[arg(long, env = "NODE_NAME", global = true)]
    node_name: Option<String>,

    /// Write syslogemu lines to this file instead of the configured one; "" disables the file.
    #[arg(long, env = "NETPOL_NFLOG_SYSLOGEMU_FILE", global = true)]
    syslogemu_file: Option<std::ffi::OsString>,

    /// Also write JSON records to this file.
    #[arg(long, env = "NETPOL_NFLOG_JSON_FILE", global = true)]
    json_file: Option<PathBuf>,

    /// What to print on standard output: none, syslogemu or json (replaces the configured one).
    #[arg(long, env = "NETPOL_NFLOG_STDOUT", value_parser = ["none", "syslogemu", "json"], global = true)]
    stdout: Option<String>,

    /// Switch the daemon's rate limits off (e.g. for benchmarks); kernel limits still apply.
    #[arg(long, env = "NETPOL_NFLOG_NO_RATE_LIMIT", global = true)]
    no_rate_limit: bool,

    /// Socket receive buffer in bytes (SO_RCVBUFFORCE).
    #[arg(long, env = "NETPOL_NFLOG_RCVBUF", global = true)]
    rcvbuf: Option<usize>,

    /// Unix socket for nflog-tail ("" disables it).
    #[arg(long, env = "NETPOL_NFLOG_TAIL_SOCKET", global = true)]
    tail_socket: Option<std::ffi::OsString>,

    /// Address:port for /metrics, /healthz and /readyz ("" disables the listener).
    #[arg(long, env = "NETPOL_NFLOG_METRICS_LISTEN", global = true)]
    metrics_listen: Option<std::ffi::OsString>,

    /// Attribute from this cluster snapshot (`kubectl get pods,networkpolicies,namespaces,services,endpointslices,nodes -A -o yaml`) instead of the API.
    #[arg(long, env = "NETPOL_NFLOG_KUBE_SNAPSHOT", global = true)]
    kube_snapshot: Option<PathBuf>,

    /// Post Kubernetes Events on the pods drops protect (needs the RBAC component
    /// deploy/components/events); the same as `[events] enabled = true`.
    #[arg(long, env = "NETPOL_NFLOG_KUBE_EVENTS", global = true)]
    kube_events: bool,

    /// Write the final counters (received, written, suppressed, lost) as JSON here at exit.
    #[arg(long, global = true)]
    stats_file: Option<PathBuf>,

    /// Log level of the daemon's own messages (error, warn, info, debug, trace).
    #[arg(long, env = "NETPOL_NFLOG_LOG", default_value = "info", global = true)]
    log_level: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the daemon at work with no cluster: builds a throwaway K3s-shaped node (pods on
    /// veths behind a bridge, kube-router's chains, a ClusterIP) with a small API for the
    /// daemon's watchers, sends traffic between the pods, prints what the daemon writes, and
    /// removes everything it created. Needs root, iproute2, iptables, ipset and br_netfilter.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netpol-nflogd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Demo) = cli.command {
        return match netpol_nflog::demo::run(cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netpol-nflogd demo: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    // Before any thread or socket exists: keep CAP_NET_ADMIN, drop the rest.
    match netpol_nflog::privilege::keep_only_net_admin() {
        Ok(netpol_nflog::privilege::Outcome::Dropped) => {
            tracing::info!("capabilities: kept CAP_NET_ADMIN only")
        }
        Ok(netpol_nflog::privilege::Outcome::NotHeld) => {
            tracing::warn!("running without CAP_NET_ADMIN: binding the NFLOG group will fail")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot drop capabilities; continuing with the ones given")
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netpol-nflogd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = RunOptions {
        stats_file: cli.stats_file.clone(),
    };
    match rt.block_on(pipeline::run(cfg, opts)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpol-nflogd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, netpol_nflog::config::ConfigError> {
    let stdout = cli.stdout.as_deref().map(|f| match f {
        "syslogemu" => Some(Format::Syslogemu),
        "json" => Some(Format::Json),
        _ => None,
    });
    let overrides = Overrides {
        groups: cli.groups.clone(),
        hostname: cli.hostname.clone(),
        node_name: cli.node_name.clone(),
        syslogemu_file: cli.syslogemu_file.as_ref().map(PathBuf::from),
        json_file: cli.json_file.clone(),
        stdout,
        no_rate_limit: cli.no_rate_limit,
        rcvbuf: cli.rcvbuf,
        tail_socket: cli
            .tail_socket
            .as_ref()
            .map(|t| t.to_string_lossy().into_owned()),
        metrics_listen: cli
            .metrics_listen
            .as_ref()
            .map(|m| m.to_string_lossy().into_owned()),
        kube_snapshot: cli.kube_snapshot.clone(),
        kube_events: cli.kube_events,
    };
    Config::load(cli.config.as_deref(), &overrides)
}
