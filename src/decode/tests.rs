//! Decoder tests: valid headers, ulogd2's validity rules, and malformed input.

use super::build::*;
use super::*;

const A: [u8; 4] = [10, 244, 0, 10];
const B: [u8; 4] = [10, 244, 0, 20];
const A6: [u8; 16] = [
    0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const B6: [u8; 16] = [
    0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20,
];

#[test]
fn ipv4_tcp() {
    let p = ipv4(
        6,
        1001,
        0x4000,
        0,
        A,
        B,
        &tcp(40000, 80, 1_000_000, 0, 0x02, 64240, 0),
    );
    let d = decode(NFPROTO_IPV4, ETH_P_IP, &p);
    let Network::Ipv4(Some(h)) = d.network else {
        panic!("{d:?}")
    };
    assert_eq!(
        (h.id, h.frag_off, h.tot_len, h.protocol),
        (1001, 0x4000, 40, 6)
    );
    assert_eq!(d.ports(), Some((40000, 80)));
    let Transport::Tcp(t) = d.transport else {
        panic!()
    };
    assert!(t.flags.has(TcpFlags::SYN) && !t.flags.has(TcpFlags::ACK));
}

#[test]
fn ipv4_too_short_for_header_is_all_invalid() {
    let p = ipv4(17, 1, 0, 0, A, B, &udp(1, 2, b"x"));
    // ulogd2: a copy of ihl*4 bytes or fewer has no valid field at all.
    for n in [0, 10, 19, 20] {
        assert_eq!(
            decode(NFPROTO_IPV4, ETH_P_IP, &p[..n]).network,
            Network::Ipv4(None),
            "{n}"
        );
    }
    let d = decode(NFPROTO_IPV4, ETH_P_IP, &p[..24]);
    assert!(matches!(d.network, Network::Ipv4(Some(_))));
    assert_eq!(d.transport, Transport::Incomplete);
}

#[test]
fn later_ipv4_fragment_has_no_ports_but_ulogd_view_keeps_bytes() {
    let p = ipv4(17, 7, 0x2002, 0, A, B, b"ABCDEFGH");
    let d = decode(NFPROTO_IPV4, ETH_P_IP, &p);
    assert!(d.is_later_fragment());
    assert_eq!(d.ports(), None);
    // What ulogd2 prints: the payload parsed as a UDP header.
    assert_eq!(
        d.transport,
        Transport::Udp {
            sport: 0x4142,
            dport: 0x4344,
            len: 0x4546
        }
    );
}

#[test]
fn ipv4_options_are_skipped() {
    let p = with_ipv4_options(ipv4(17, 9, 0, 0, A, B, &udp(5, 6, b"")), &[0x94, 4, 0, 0]);
    let d = decode(NFPROTO_IPV4, ETH_P_IP, &p);
    assert_eq!(d.ports(), Some((5, 6)));
}

#[test]
fn ipv6_extension_headers() {
    // hop-by-hop (8 bytes) → routing (8) → destination options (8) → UDP
    let mut rest = vec![43, 0, 1, 4, 0, 0, 0, 0];
    rest.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
    rest.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    rest.extend_from_slice(&udp(1000, 2000, b"hi"));
    let p = ipv6(0, 0xb8, 0x12345, A6, B6, &rest);
    let d = decode(NFPROTO_IPV6, ETH_P_IPV6, &p);
    let Network::Ipv6(Some(h)) = d.network else {
        panic!()
    };
    assert_eq!(
        (h.traffic_class, h.flow_label, h.nexthdr),
        (0xb8, 0x12345, Some(17))
    );
    assert_eq!(d.ports(), Some((1000, 2000)));
}

#[test]
fn ipv6_fragments() {
    let mut first = vec![17, 0, 0, 1, 0xab, 0xcd, 0xef, 0x01];
    first.extend_from_slice(&udp(1, 2, b"data"));
    let d = decode(NFPROTO_IPV6, ETH_P_IPV6, &ipv6(44, 0, 0, A6, B6, &first));
    let Network::Ipv6(Some(h)) = d.network else {
        panic!()
    };
    assert_eq!(h.frag, Some((0, 0xabcdef01)));
    assert_eq!(d.ports(), Some((1, 2)));
    let later = [17, 0, 0, 16, 0xab, 0xcd, 0xef, 0x01, 1, 2, 3, 4, 5, 6, 7, 8];
    let d = decode(NFPROTO_IPV6, ETH_P_IPV6, &ipv6(44, 0, 0, A6, B6, &later));
    let Network::Ipv6(Some(h)) = d.network else {
        panic!()
    };
    assert_eq!(
        (h.frag, h.nexthdr, h.upper_protocol),
        (Some((16, 0xabcdef01)), Some(17), None)
    );
    assert_eq!(d.transport, Transport::None);
    assert_eq!(d.ports(), None);
}

#[test]
fn ipv6_truncated_extension_header_leaves_nexthdr_invalid() {
    let rest = [43, 2, 0, 0, 0, 0, 0, 0]; // claims 24 bytes, has 8
    let d = decode(NFPROTO_IPV6, ETH_P_IPV6, &ipv6(0, 0, 0, A6, B6, &rest));
    let Network::Ipv6(Some(h)) = d.network else {
        panic!()
    };
    assert_eq!(h.nexthdr, None);
}

#[test]
fn ipv6_esp_stops_decoding() {
    let rest = [0u8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let d = decode(NFPROTO_IPV6, ETH_P_IPV6, &ipv6(50, 0, 0, A6, B6, &rest));
    let Network::Ipv6(Some(h)) = d.network else {
        panic!()
    };
    assert_eq!((h.nexthdr, h.upper_protocol), (Some(50), None));
    assert_eq!(d.protocol(), Some(50));
}

#[test]
fn bridge_arp_and_unknown_family() {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 2]);
    let d = decode(NFPROTO_BRIDGE, ETH_P_ARP, &arp);
    let Network::Arp(Some(a)) = d.network else {
        panic!()
    };
    assert_eq!(
        (a.op, a.sender_ip.octets(), a.target_ip.octets()),
        (2, [10, 0, 0, 1], [10, 0, 0, 2])
    );
    assert_eq!(
        decode(NFPROTO_BRIDGE, 0x88cc, &[1, 2]).network,
        Network::OtherEthertype(0x88cc)
    );
    assert_eq!(decode(NFPROTO_ARP, ETH_P_ARP, &arp).network, Network::None);
}

#[test]
fn short_transport_headers_are_incomplete() {
    for (proto, need) in [(6u8, 20usize), (17, 8), (132, 12), (1, 8)] {
        let l4 = vec![0u8; need];
        for n in 1..need {
            let p = ipv4(proto, 1, 0, 0, A, B, &l4[..n]);
            assert_eq!(
                decode(NFPROTO_IPV4, ETH_P_IP, &p).transport,
                Transport::Incomplete,
                "{proto} {n}"
            );
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(family in proptest::sample::select(vec![2u8, 3, 7, 10, 0]),
                                      proto in proptest::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 1]),
                                      bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let d = decode(family, proto, &bytes);
        let _ = (d.ports(), d.addrs(), d.protocol(), d.is_later_fragment());
    }
}
