//! Sources of NFLOG messages: the live netlink socket, and (for replay) pcap files.

pub mod conntrack;
pub mod nflog;
pub mod socket;
