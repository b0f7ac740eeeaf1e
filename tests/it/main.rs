//! The integration tests: one binary, one module per area.
mod conformance;
mod deploy;
mod e2e_kube;
mod events;
mod fake_api;
mod faults;
mod fuzz_regressions;
mod k3s_node;
mod kube;
mod metrics;
mod overload;
mod privilege;
mod services;
mod snapshot;
mod support;
mod syslog;
mod tail;
