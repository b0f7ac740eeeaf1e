//! What kind of address an IP is, for the addresses that are neither pods, nodes nor Services:
//! so a log pipeline can keep "from the internet" (`public`) apart from the cluster's and the
//! site's own ranges. Pure and allocation-free: computed per event by the renderer.
//!
//! Ranges from the IANA special-purpose registries (RFC 6890 and successors). An IPv4-mapped
//! IPv6 address (`::ffff:a.b.c.d`) and a NAT64 one (`64:ff9b::/96`) are classified by the IPv4
//! address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The class of an address. [`AddrClass::as_str`] gives the JSON spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// Globally routable: anything not below.
    Public,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// IPv6 unique local addresses, fc00::/7 (the IPv6 counterpart of `Private`).
    UniqueLocal,
    /// RFC 6598 shared address space 100.64/10 (carrier-grade NAT; some clouds' VPCs).
    Cgnat,
    /// 127/8, ::1.
    Loopback,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 0.0.0.0, ::.
    Unspecified,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// Other special-purpose ranges that are not globally reachable: 0/8, 192.0.0/24,
    /// 198.18/15 (benchmarking), 240/4, 100::/64 (discard), 2001::/23 (IETF protocol
    /// assignments, Teredo included), 2002::/16 (6to4).
    Reserved,
}

impl AddrClass {
    pub fn of(ip: IpAddr) -> AddrClass {
        match ip {
            IpAddr::V4(a) => v4(a),
            IpAddr::V6(a) => v6(a),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Private => "private",
            AddrClass::UniqueLocal => "unique-local",
            AddrClass::Cgnat => "cgnat",
            AddrClass::Loopback => "loopback",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Documentation => "documentation",
            AddrClass::Reserved => "reserved",
        }
    }
}

fn v4(a: Ipv4Addr) -> AddrClass {
    let n = u32::from(a);
    let in_net = |net: [u8; 4], len: u32| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        n & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    if n == 0 {
        AddrClass::Unspecified
    } else if n == u32::MAX {
        AddrClass::Broadcast
    } else if in_net([127, 0, 0, 0], 8) {
        AddrClass::Loopback
    } else if in_net([10, 0, 0, 0], 8)
        || in_net([172, 16, 0, 0], 12)
        || in_net([192, 168, 0, 0], 16)
    {
        AddrClass::Private
    } else if in_net([100, 64, 0, 0], 10) {
        AddrClass::Cgnat
    } else if in_net([169, 254, 0, 0], 16) {
        AddrClass::LinkLocal
    } else if in_net([224, 0, 0, 0], 4) {
        AddrClass::Multicast
    } else if in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
    {
        AddrClass::Documentation
    } else if in_net([0, 0, 0, 0], 8)
        || in_net([192, 0, 0, 0], 24)
        || in_net([198, 18, 0, 0], 15)
        || in_net([240, 0, 0, 0], 4)
    {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

fn v6(a: Ipv6Addr) -> AddrClass {
    let n = u128::from(a);
    let in_net = |net: u128, len: u32| n & (u128::MAX << (128 - len)) == net;
    if n == 0 {
        return AddrClass::Unspecified;
    }
    if n == 1 {
        return AddrClass::Loopback;
    }
    // ::ffff:0:0/96 (IPv4-mapped) and 64:ff9b::/96 (NAT64): the IPv4 address inside decides.
    if in_net(0xffff_0000_0000, 96) || in_net(0x0064_ff9b << 96, 96) {
        return v4(Ipv4Addr::from(n as u32));
    }
    if in_net(0xfc00 << 112, 7) {
        AddrClass::UniqueLocal
    } else if in_net(0xfe80 << 112, 10) {
        AddrClass::LinkLocal
    } else if in_net(0xff00 << 112, 8) {
        AddrClass::Multicast
    } else if in_net(0x2001_0db8 << 96, 32) || in_net(0x3fff << 112, 20) {
        AddrClass::Documentation
    } else if in_net(0x0100 << 112, 64)
        || in_net(0x2001 << 112, 23)
        || in_net(0x2002 << 112, 16)
        || in_net(0, 96)
    {
        // ::/96 without :: and ::1: the deprecated IPv4-compatible addresses.
        AddrClass::Reserved
    } else if in_net(0x2000 << 112, 3) {
        AddrClass::Public
    } else {
        // Outside 2000::/3 nothing is allocated for global unicast.
        AddrClass::Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> &'static str {
        AddrClass::of(s.parse().unwrap()).as_str()
    }

    #[test]
    fn ipv4_ranges_and_their_edges() {
        for (ip, want) in [
            ("8.8.8.8", "public"),
            ("1.1.1.1", "public"),
            ("10.0.0.0", "private"),
            ("10.255.255.255", "private"),
            ("11.0.0.0", "public"),
            ("172.15.255.255", "public"),
            ("172.16.0.0", "private"),
            ("172.31.255.255", "private"),
            ("172.32.0.0", "public"),
            ("192.168.1.10", "private"),
            ("192.169.0.1", "public"),
            ("100.63.255.255", "public"),
            ("100.64.0.0", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("100.128.0.0", "public"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "reserved"),
            ("192.0.0.8", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.200", "documentation"),
            ("198.18.0.1", "reserved"),
            ("198.19.255.255", "reserved"),
            ("198.20.0.0", "public"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.254", "reserved"),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        for (ip, want) in [
            ("2a00:1450:4001:80b::200e", "public"),
            ("2600::1", "public"),
            ("fd00:42::7", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "reserved"),
            ("ff02::1", "multicast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("2001:db8::1", "documentation"),
            ("3fff:0fff::1", "documentation"),
            ("3fff:1000::1", "public"),
            ("100::1", "reserved"),
            ("2001::1", "reserved"),
            ("2002:c000:0204::1", "reserved"),
            ("::ffff:10.42.0.7", "private"),
            ("::ffff:8.8.8.8", "public"),
            ("64:ff9b::808:808", "public"),
            ("64:ff9b::a00:1", "private"),
            ("::10.0.0.1", "reserved"),
            ("4000::1", "reserved"),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }
}
