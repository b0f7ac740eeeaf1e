//! Packet decoding: the bytes of an NFLOG payload → the header fields ulogd2's BASE plugin
//! extracts, and a little more.
//!
//! Pure functions over `&[u8]`, no allocation. The result keeps ulogd2's notion of which fields
//! are valid (a truncated copy leaves fields absent rather than zero), because the syslogemu
//! renderer must reproduce its output exactly; the JSON renderer and the attribution stage use
//! the same values but read [`Packet::ports`], which knows that a non-first fragment carries
//! no ports.

pub mod build;
mod ip;
mod transport;

pub use ip::{ArpInfo, Ipv4Info, Ipv6Info};
pub use transport::{Icmp, Icmpv6, Tcp, TcpFlags, Transport};

use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const NFPROTO_BRIDGE: u8 = 7;
pub const NFPROTO_ARP: u8 = 3;

/// The network layer of a decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The family is one ulogd2 prints nothing for (e.g. the `arp` family).
    None,
    /// IPv4; `None` inside when the copy is too short for the header (ulogd2: all invalid).
    Ipv4(Option<Ipv4Info>),
    /// IPv6; `None` inside when the copy is shorter than the fixed header.
    Ipv6(Option<Ipv6Info>),
    /// ARP seen by a bridge-family rule.
    Arp(Option<ArpInfo>),
    /// Another ethertype seen by a bridge-family rule.
    OtherEthertype(u16),
}

/// A decoded packet: network and transport headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub network: Network,
    pub transport: Transport,
}

/// Decodes a payload given the NFLOG family and the packet header's ethertype.
pub fn decode(family: u8, hw_protocol: u16, payload: &[u8]) -> Packet {
    let network = match family {
        NFPROTO_IPV4 => Network::Ipv4(None),
        NFPROTO_IPV6 => Network::Ipv6(None),
        NFPROTO_BRIDGE => match hw_protocol {
            ETH_P_IP => Network::Ipv4(None),
            ETH_P_IPV6 => Network::Ipv6(None),
            ETH_P_ARP => Network::Arp(ip::arp(payload)),
            other => Network::OtherEthertype(other),
        },
        _ => Network::None,
    };
    match network {
        Network::Ipv4(_) => match ip::ipv4(payload) {
            Some((info, l4)) => Packet {
                network: Network::Ipv4(Some(info)),
                transport: transport::decode(info.protocol, l4),
            },
            None => Packet {
                network,
                transport: Transport::None,
            },
        },
        Network::Ipv6(_) => match ip::ipv6(payload) {
            Some((info, l4)) => Packet {
                network: Network::Ipv6(Some(info)),
                transport: match (info.upper_protocol, l4) {
                    (Some(proto), Some(l4)) => transport::decode(proto, l4),
                    _ => Transport::None,
                },
            },
            None => Packet {
                network,
                transport: Transport::None,
            },
        },
        other => Packet {
            network: other,
            transport: Transport::None,
        },
    }
}

impl Packet {
    /// Source and destination addresses, when the header was complete.
    pub fn addrs(&self) -> Option<(IpAddr, IpAddr)> {
        match self.network {
            Network::Ipv4(Some(h)) => Some((h.src.into(), h.dst.into())),
            Network::Ipv6(Some(h)) => Some((h.src.into(), h.dst.into())),
            _ => None,
        }
    }

    /// The upper-layer protocol number, as the packet really carries it (ESP over IPv6 included).
    pub fn protocol(&self) -> Option<u8> {
        match self.network {
            Network::Ipv4(Some(h)) => Some(h.protocol),
            Network::Ipv6(Some(h)) => h.nexthdr,
            _ => None,
        }
    }

    /// Whether this is a fragment other than the first: its transport bytes are payload, not a
    /// header (ulogd2's `printpkt.c` decodes them as if they had one anyway).
    pub fn is_later_fragment(&self) -> bool {
        match self.network {
            Network::Ipv4(Some(h)) => h.frag_off & 0x1fff != 0,
            Network::Ipv6(Some(h)) => h.frag.is_some_and(|(off, _)| off != 0),
            _ => false,
        }
    }

    /// Transport ports, only where they really are ports (not for later fragments).
    pub fn ports(&self) -> Option<(u16, u16)> {
        if self.is_later_fragment() {
            return None;
        }
        self.transport.ports()
    }
}

/// Lower-case protocol name for structured output and filters.
pub fn protocol_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        1 => "icmp",
        2 => "igmp",
        6 => "tcp",
        17 => "udp",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

/// Reads a big-endian u16 at `at`; callers check the length first.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests;
