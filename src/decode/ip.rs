//! IPv4, IPv6 (with extension headers) and ARP headers, with ulogd2 BASE's validity rules
//! (`_interp_iphdr`, `_interp_ipv6hdr`, `_interp_arp` in `ulogd_raw2packet_BASE.c`).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{be16, be32};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ttl: u8,
    /// The header's `tot_len`, not the captured length.
    pub tot_len: u16,
    pub id: u16,
    /// The raw 16-bit flags + fragment offset field.
    pub frag_off: u16,
    pub protocol: u8,
    pub ihl: u8,
}

/// IPv4 header and the bytes after it, or `None` when the copy is too short.
///
/// ulogd2 treats a copy of `ihl*4` bytes or fewer as having no valid field at all, even a
/// complete header without payload, and starts the transport header at `ihl*4` whatever the
/// IHL says; both are kept so the output matches.
pub(super) fn ipv4(p: &[u8]) -> Option<(Ipv4Info, &[u8])> {
    if p.len() < 20 {
        return None;
    }
    let ihl = p[0] & 0x0f;
    let hlen = ihl as usize * 4;
    if p.len() <= hlen {
        return None;
    }
    let info = Ipv4Info {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        tos: p[1],
        ttl: p[8],
        tot_len: be16(p, 2),
        id: be16(p, 4),
        frag_off: be16(p, 6),
        protocol: p[9],
        ihl,
    };
    Some((info, &p[hlen..]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Info {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub payload_len: u16,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    /// Fragment header: offset in bytes and identification.
    pub frag: Option<(u16, u32)>,
    /// The header after the skipped extension headers (ulogd2's `ip6.nexthdr`); `None` when an
    /// extension header was cut off by the copy range.
    pub nexthdr: Option<u8>,
    /// The protocol whose header follows, when ulogd2 goes on to decode it: not for later
    /// fragments and not after ESP.
    pub upper_protocol: Option<u8>,
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_AH: u8 = 51;
const IPPROTO_NONE: u8 = 59;
const IPPROTO_DSTOPTS: u8 = 60;

/// IPv6 header, extension headers skipped, and the transport bytes when ulogd2 decodes them.
pub(super) fn ipv6(p: &[u8]) -> Option<(Ipv6Info, Option<&[u8]>)> {
    if p.len() < 40 {
        return None;
    }
    let flow = be32(p, 0);
    let mut info = Ipv6Info {
        src: Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?),
        dst: Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?),
        payload_len: be16(p, 4),
        traffic_class: ((flow & 0x0ff0_0000) >> 20) as u8,
        flow_label: flow & 0x000f_ffff,
        hop_limit: p[7],
        frag: None,
        nexthdr: None,
        upper_protocol: None,
    };
    let mut cur = p[6];
    let mut ptr = 40usize;
    let mut later_fragment = false;
    while cur != IPPROTO_NONE && is_ext_header(cur) {
        let rest = &p[ptr..];
        if rest.len() < 2 {
            return Some((info, None));
        }
        let hdrlen = match cur {
            IPPROTO_FRAGMENT => {
                if rest.len() < 8 {
                    return Some((info, None));
                }
                let offset = be16(rest, 2) & 0xfff8;
                info.frag = Some((offset, be32(rest, 4)));
                later_fragment |= offset != 0;
                8
            }
            _ if later_fragment => break,
            IPPROTO_ESP => {
                // ulogd2 stops at ESP: the rest is encrypted.
                if rest.len() < (rest[1] as usize + 2) * 4 {
                    return Some((info, None));
                }
                info.nexthdr = Some(cur);
                return Some((info, None));
            }
            IPPROTO_AH => (rest[1] as usize + 2) * 4,
            _ => (rest[1] as usize + 1) * 8,
        };
        if rest.len() < hdrlen {
            return Some((info, None));
        }
        cur = rest[0];
        ptr += hdrlen;
    }
    info.nexthdr = Some(cur);
    if later_fragment {
        return Some((info, None));
    }
    info.upper_protocol = Some(cur);
    Some((info, Some(&p[ptr..])))
}

fn is_ext_header(h: u8) -> bool {
    matches!(
        h,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_ESP
            | IPPROTO_AH
            | IPPROTO_DSTOPTS
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpInfo {
    pub hw_type: u16,
    pub proto_type: u16,
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

/// An Ethernet/IPv4 ARP packet (`struct ether_arp`, 28 bytes).
pub(super) fn arp(p: &[u8]) -> Option<ArpInfo> {
    if p.len() < 28 {
        return None;
    }
    let mac = |at: usize| -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&p[at..at + 6]);
        m
    };
    Some(ArpInfo {
        hw_type: be16(p, 0),
        proto_type: be16(p, 2),
        op: be16(p, 6),
        sender_mac: mac(8),
        sender_ip: Ipv4Addr::new(p[14], p[15], p[16], p[17]),
        target_mac: mac(18),
        target_ip: Ipv4Addr::new(p[24], p[25], p[26], p[27]),
    })
}
