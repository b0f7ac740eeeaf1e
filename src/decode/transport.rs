//! Transport headers: TCP, UDP, SCTP, ICMP, ICMPv6 (ulogd2 BASE's `_interp_tcp` and friends).
//!
//! Each header is decoded only when the copy holds all of its fixed part; otherwise the result is
//! [`Transport::Incomplete`], which ulogd2 prints as `INCOMPLETE`.

use super::{be16, be32};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub flags: TcpFlags,
    pub urgent: u16,
    /// Data offset in 32-bit words.
    pub doff: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    pub kind: u8,
    pub code: u8,
    /// The second word of the header (echo id/seq, gateway, MTU, pointer), raw.
    pub rest: u32,
}

impl Icmp {
    pub fn echo_id(&self) -> u16 {
        (self.rest >> 16) as u16
    }
    pub fn echo_seq(&self) -> u16 {
        self.rest as u16
    }
}

pub type Icmpv6 = Icmp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No transport header was looked at (network header missing, later fragment, ESP, or a
    /// protocol ulogd2 does not decode).
    None,
    /// The protocol has a header we decode, but the copy is too short for it.
    Incomplete,
    Tcp(Tcp),
    Udp {
        sport: u16,
        dport: u16,
        len: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    Icmp(Icmp),
    Icmpv6(Icmpv6),
}

/// Decodes the transport header of protocol `proto` from `b`.
pub(super) fn decode(proto: u8, b: &[u8]) -> Transport {
    let need = match proto {
        6 => 20,
        17 => 8,
        132 => 12,
        1 | 58 => 8,
        _ => return Transport::None,
    };
    if b.len() < need {
        return Transport::Incomplete;
    }
    match proto {
        6 => Transport::Tcp(Tcp {
            sport: be16(b, 0),
            dport: be16(b, 2),
            seq: be32(b, 4),
            ack: be32(b, 8),
            doff: b[12] >> 4,
            flags: TcpFlags(b[13]),
            window: be16(b, 14),
            urgent: be16(b, 18),
        }),
        17 => Transport::Udp {
            sport: be16(b, 0),
            dport: be16(b, 2),
            len: be16(b, 4),
        },
        132 => Transport::Sctp {
            sport: be16(b, 0),
            dport: be16(b, 2),
        },
        1 => Transport::Icmp(Icmp {
            kind: b[0],
            code: b[1],
            rest: be32(b, 4),
        }),
        _ => Transport::Icmpv6(Icmp {
            kind: b[0],
            code: b[1],
            rest: be32(b, 4),
        }),
    }
}

impl Transport {
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            Transport::Tcp(t) => Some((t.sport, t.dport)),
            Transport::Udp { sport, dport, .. } | Transport::Sctp { sport, dport } => {
                Some((sport, dport))
            }
            _ => None,
        }
    }
}
