//! The integration tests: one binary, one module per area.
mod overload;
mod conformance;
mod deploy;
mod fake_api;
mod kube;
