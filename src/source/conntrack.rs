//! The conntrack entry the kernel attaches to an NFLOG message (`NFULA_CT`), when asked
//! (`NFULNL_CFG_F_CONNTRACK`) and able (the netlink glue for conntrack).
//!
//! It is ctnetlink's encoding of the entry (`ctnetlink_glue_build`, net/netfilter/
//! nf_conntrack_netlink.c): nested attributes, numbers in network byte order. The daemon reads
//! only the original tuple (`CTA_TUPLE_ORIG`): for a packet kube-proxy DNATed to a pod, its
//! destination is the ClusterIP or NodePort the client aimed at, which names the Service exactly.
//! Attribute numbers are those of include/uapi/linux/netfilter/nfnetlink_conntrack.h.
//!
//! Nothing here trusts the kernel's lengths: a malformed entry is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::nflog::{Attributes, ParseError};

pub const NFULA_CT: u16 = 18;
pub const NFULA_CT_INFO: u16 = 19;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// A connection's original direction, as conntrack saw its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// Ports for TCP, UDP, SCTP, DCCP, UDP-Lite; absent for ICMP and others.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// The original tuple of an `NFULA_CT` attribute's payload; `None` when it has none.
pub fn original_tuple(ct: &[u8]) -> Result<Option<Tuple>, ParseError> {
    for attr in Attributes::new(ct) {
        let (kind, data) = attr?;
        if kind == CTA_TUPLE_ORIG {
            return tuple(data).map(Some);
        }
    }
    Ok(None)
}

fn tuple(data: &[u8]) -> Result<Tuple, ParseError> {
    let mut addrs: (Option<IpAddr>, Option<IpAddr>) = (None, None);
    let mut protocol = None;
    let mut ports = (None, None);
    for attr in Attributes::new(data) {
        let (kind, data) = attr?;
        match kind {
            CTA_TUPLE_IP => {
                for attr in Attributes::new(data) {
                    let (kind, data) = attr?;
                    match kind {
                        CTA_IP_V4_SRC => addrs.0 = Some(v4(data, kind)?),
                        CTA_IP_V4_DST => addrs.1 = Some(v4(data, kind)?),
                        CTA_IP_V6_SRC => addrs.0 = Some(v6(data, kind)?),
                        CTA_IP_V6_DST => addrs.1 = Some(v6(data, kind)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for attr in Attributes::new(data) {
                    let (kind, data) = attr?;
                    match kind {
                        CTA_PROTO_NUM => protocol = Some(*data.first().ok_or(bad(kind))?),
                        CTA_PROTO_SRC_PORT => ports.0 = Some(be16(data, kind)?),
                        CTA_PROTO_DST_PORT => ports.1 = Some(be16(data, kind)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (addrs, protocol) {
        ((Some(src), Some(dst)), Some(protocol)) if src.is_ipv4() == dst.is_ipv4() => Ok(Tuple {
            src,
            dst,
            protocol,
            src_port: ports.0,
            dst_port: ports.1,
        }),
        _ => Err(bad(CTA_TUPLE_ORIG)),
    }
}

fn bad(kind: u16) -> ParseError {
    ParseError::BadAttribute(kind)
}

fn v4(d: &[u8], kind: u16) -> Result<IpAddr, ParseError> {
    let b: [u8; 4] = d
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(bad(kind))?;
    Ok(Ipv4Addr::from(b).into())
}

fn v6(d: &[u8], kind: u16) -> Result<IpAddr, ParseError> {
    let b: [u8; 16] = d
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or(bad(kind))?;
    Ok(Ipv6Addr::from(b).into())
}

fn be16(d: &[u8], kind: u16) -> Result<u16, ParseError> {
    let b: [u8; 2] = d
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .ok_or(bad(kind))?;
    Ok(u16::from_be_bytes(b))
}

/// Builds `NFULA_CT` payloads as the kernel does, for tests and fuzz seeds.
pub mod build {
    use super::*;
    use crate::source::nflog::build::attr;

    /// `NLA_F_NESTED`, which the kernel sets on every nested attribute.
    const NESTED: u16 = 1 << 15;

    /// A conntrack entry whose original tuple is `t` (and whose reply tuple is its mirror, as
    /// the kernel always sends both).
    pub fn entry(t: &Tuple) -> Vec<u8> {
        let mut out = Vec::new();
        let mirror = Tuple {
            src: t.dst,
            dst: t.src,
            src_port: t.dst_port,
            dst_port: t.src_port,
            ..*t
        };
        for (kind, t) in [(CTA_TUPLE_ORIG, t), (2, &mirror)] {
            attr(&mut out, kind | NESTED, &tuple_attrs(t));
        }
        // CTA_STATUS, CTA_TIMEOUT: present in real entries, skipped by the reader.
        attr(&mut out, 3, &0x188u32.to_be_bytes());
        attr(&mut out, 7, &120u32.to_be_bytes());
        out
    }

    fn tuple_attrs(t: &Tuple) -> Vec<u8> {
        let mut ip = Vec::new();
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
                attr(&mut ip, CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                let six = |a: IpAddr| match a {
                    IpAddr::V6(a) => a.octets(),
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                };
                attr(&mut ip, CTA_IP_V6_SRC, &six(s));
                attr(&mut ip, CTA_IP_V6_DST, &six(d));
            }
        }
        let mut proto = Vec::new();
        attr(&mut proto, CTA_PROTO_NUM, &[t.protocol]);
        if let (Some(s), Some(d)) = (t.src_port, t.dst_port) {
            attr(&mut proto, CTA_PROTO_SRC_PORT, &s.to_be_bytes());
            attr(&mut proto, CTA_PROTO_DST_PORT, &d.to_be_bytes());
        }
        let mut out = Vec::new();
        attr(&mut out, CTA_TUPLE_IP | NESTED, &ip);
        attr(&mut out, CTA_TUPLE_PROTO | NESTED, &proto);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Tuple {
        Tuple {
            src: "10.42.0.10".parse().unwrap(),
            dst: "10.43.0.10".parse().unwrap(),
            protocol: 17,
            src_port: Some(40000),
            dst_port: Some(53),
        }
    }

    #[test]
    fn reads_the_original_tuple_of_a_dnated_connection() {
        assert_eq!(original_tuple(&build::entry(&svc())), Ok(Some(svc())));
        let v6 = Tuple {
            src: "fd42::10".parse().unwrap(),
            dst: "fd43::a".parse().unwrap(),
            protocol: 58,
            src_port: None,
            dst_port: None,
        };
        assert_eq!(original_tuple(&build::entry(&v6)), Ok(Some(v6)));
        assert_eq!(original_tuple(&[]), Ok(None));
    }

    #[test]
    fn malformed_entries_are_errors() {
        let good = build::entry(&svc());
        // Every truncation either still parses a tuple (a cut after the original tuple) or is
        // an error; none panics.
        for n in 0..good.len() {
            let _ = original_tuple(&good[..n]);
        }
        // An address of the wrong length.
        let mut ip = Vec::new();
        crate::source::nflog::build::attr(&mut ip, CTA_IP_V4_SRC, &[10, 42, 0]);
        let mut t = Vec::new();
        crate::source::nflog::build::attr(&mut t, CTA_TUPLE_IP, &ip);
        let mut ct = Vec::new();
        crate::source::nflog::build::attr(&mut ct, CTA_TUPLE_ORIG, &t);
        assert!(original_tuple(&ct).is_err());
        // A tuple without its protocol.
        let mut t = Vec::new();
        crate::source::nflog::build::attr(&mut t, CTA_TUPLE_IP, &[]);
        let mut ct = Vec::new();
        crate::source::nflog::build::attr(&mut ct, CTA_TUPLE_ORIG, &t);
        assert_eq!(
            original_tuple(&ct),
            Err(ParseError::BadAttribute(CTA_TUPLE_ORIG))
        );
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;
    use crate::source::nflog::{build::Packet, NflogMsg, NLMSG_HDRLEN};

    /// The attribute as the kernel places it after the payload, with `NLA_F_NESTED` set.
    #[test]
    fn a_message_carries_its_entry() {
        let t = Tuple {
            src: "10.42.0.10".parse().unwrap(),
            dst: "10.43.0.10".parse().unwrap(),
            protocol: 6,
            src_port: Some(41000),
            dst_port: Some(443),
        };
        let ct = build::entry(&t);
        let mut buf = Vec::new();
        Packet {
            payload: &[0x45, 0, 0, 20],
            conntrack: Some(&ct),
            ..Default::default()
        }
        .encode(&mut buf);
        let msg = NflogMsg::parse(&buf[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(original_tuple(msg.conntrack.unwrap()), Ok(Some(t)));
    }
}
