//! netpol-nflog: turns the packets a Kubernetes NetworkPolicy drops into logs people can act on.
//!
//! kube-router (and K3s, which embeds it) sends every dropped packet to NFLOG group 100. This crate
//! reads that group and runs each message through a one-way pipeline:
//!
//! ```text
//! source (NFLOG socket, pcap)  →  decode (packet headers)  →  attribute (policy, pods)
//!     →  limit (a bucket per kube-router rule)  →  render: one line per message (syslogemu)
//!                                              →  correlate → one event per packet (JSON, tail)
//!     →  sinks (file, stdout, syslog, tail socket)
//! ```
//!
//! [`pipeline`] is the only module that knows the order of the stages; every other module is one
//! stage and knows nothing of the others' I/O.

pub mod attribute;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod demo;
pub mod event;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod privilege;
pub mod render;
pub mod sink;
pub mod source;
pub mod stats;
pub mod tail;
