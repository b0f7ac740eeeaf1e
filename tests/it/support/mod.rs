//! Test infrastructure shared by the test modules.
//!
//! - [`scratch`]: [`Scratch`], a scratch directory (kept when the test fails) and the network
//!   namespaces made through it.
//! - [`sandbox`]: [`Sandbox`], one namespace with `lo` up and a scratch directory: iptables, the
//!   kube-router rule pair, rule counters, threads and HTTP requests inside it, UDP traffic;
//!   namespace helpers (`add_netns`, `in_netns`, `ip_batch`, `enter_netns`, `spawn_in`) and
//!   NFLOG state (`nflog_row`, `wait_nflog_bound`, …).
//! - [`process`]: `run`/`run_stdin` with checked output, `read_lossy`, `count_newlines`,
//!   `signal`, `proc_status`, and [`Proc`], a child killed by PID on drop.
//! - [`daemon`]: [`Daemon`], netpol-nflogd in a sandbox, from a command-line builder
//!   ([`Daemon::cmd`]: files, metrics port, config text, environment, quiet defaults).
//! - [`metrics`]: the strict OpenMetrics parser, `scrape`, `wait_metrics`, `wait_counter`,
//!   `/readyz` polling.
//! - [`wait`]: [`wait_for`] and [`Wait`], polling with a deadline and a clear panic.
//! - [`kube_api`]: the fake API server inside a namespace, and a kubeconfig for it.
//! - [`k3s`]: a K3s-shaped node (bridge, pod namespaces, kube-router's firewall, a fake API
//!   server serving the same objects) built from one [`k3s::Scenario`].
pub(crate) mod daemon;
pub(crate) mod k3s;
pub(crate) mod kube_api;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod sandbox;
pub(crate) mod scratch;
pub(crate) mod wait;

pub(crate) use daemon::{Daemon, STANDALONE};
pub(crate) use process::{read_lossy, run, Proc};
pub(crate) use sandbox::Sandbox;
pub(crate) use scratch::Scratch;
pub(crate) use wait::{wait_for, Wait};
