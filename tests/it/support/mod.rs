//! Test infrastructure shared by several test modules.
//!
//! - [`k3s`]: a K3s-shaped node (bridge, pod namespaces, kube-router's firewall, a fake API
//!   server serving the same objects) built from one [`k3s::Scenario`].
//!
//! The older helpers (`Sandbox`, `Daemon`, `Scrape`, `run`, …) still live in `metrics.rs` and
//! `conformance.rs`; this module uses them from there.
pub(crate) mod k3s;
