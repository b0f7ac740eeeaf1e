//! Unit tests of the rule evaluator, with rules written as the API server returns them.

use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (Arc::from(*k), Arc::from(*v))))
}

fn ingress(v: serde_json::Value) -> Rules {
    let rules: Vec<NetworkPolicyIngressRule> = serde_json::from_value(v).unwrap();
    Rules::from_ingress(Some(&rules))
}

fn egress(v: serde_json::Value) -> Rules {
    let rules: Vec<NetworkPolicyEgressRule> = serde_json::from_value(v).unwrap();
    Rules::from_egress(Some(&rules))
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// A TCP packet from an address nobody owns, to `port`.
fn from_addr(addr: &str, port: u16) -> Query<'static> {
    Query {
        peer_ip: ip(addr),
        peer: Peer::NotAPod,
        protocol: Some(TCP),
        dst_port: Some(port),
        dst_named_ports: Some(&[]),
    }
}

fn pod<'a>(ns: &'a str, l: &'a Labels, ns_labels: Option<&'a Labels>) -> Peer<'a> {
    Peer::Pod(PodInfo {
        namespace: ns,
        labels: l,
        namespace_labels: ns_labels,
    })
}

use Verdict::{Allow, Deny, Unknown};

#[test]
fn absent_or_empty_rule_lists_allow_nothing() {
    let q = from_addr("10.0.0.1", 80);
    assert_eq!(Rules::from_ingress(None).allows("ns", &q), Deny);
    assert_eq!(Rules::from_egress(Some(&[])).allows("ns", &q), Deny);
    assert!(Rules::default().is_empty());
}

#[test]
fn empty_rule_allows_everything() {
    // `ingress: [{}]`: all peers, all ports.
    let r = ingress(json!([{}]));
    assert_eq!(r.allows("ns", &from_addr("203.0.113.9", 5432)), Allow);
    let unknown = Query {
        peer_ip: None,
        peer: Peer::Unknown,
        protocol: None,
        dst_port: None,
        dst_named_ports: None,
    };
    assert_eq!(r.allows("ns", &unknown), Allow, "nothing needs to be known");
    // Present-but-empty lists are the same.
    assert_eq!(
        egress(json!([{"to": [], "ports": []}])).allows("ns", &unknown),
        Allow
    );
}

#[test]
fn pod_selector_alone_means_the_policy_namespace() {
    let r = ingress(json!([{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]));
    let api = labels(&[("app", "api")]);
    let web = labels(&[("app", "web")]);
    let q = |peer| Query {
        peer,
        ..from_addr("10.42.0.5", 5432)
    };
    assert_eq!(r.allows("shop", &q(pod("shop", &api, None))), Allow);
    assert_eq!(r.allows("shop", &q(pod("shop", &web, None))), Deny);
    assert_eq!(
        r.allows("shop", &q(pod("other", &api, None))),
        Deny,
        "same labels, other namespace"
    );
    assert_eq!(r.allows("shop", &q(Peer::NotAPod)), Deny);
    assert_eq!(
        r.allows("shop", &q(Peer::Unknown)),
        Unknown,
        "maybe a pod on another node"
    );
    // `podSelector: {}`: every pod of the namespace.
    let all = ingress(json!([{"from": [{"podSelector": {}}]}]));
    assert_eq!(all.allows("shop", &q(pod("shop", &web, None))), Allow);
    assert_eq!(all.allows("shop", &q(pod("other", &web, None))), Deny);
}

#[test]
fn namespace_selectors_read_namespace_labels() {
    let prod = labels(&[("env", "prod"), ("kubernetes.io/metadata.name", "billing")]);
    let dev = labels(&[("env", "dev")]);
    let api = labels(&[("app", "api")]);
    let web = labels(&[("app", "web")]);
    let q = |peer| Query {
        peer,
        ..from_addr("10.42.1.5", 443)
    };

    // namespaceSelector alone: every pod of the matching namespaces.
    let r = ingress(json!([{"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]));
    assert_eq!(
        r.allows("shop", &q(pod("billing", &web, Some(&prod)))),
        Allow
    );
    assert_eq!(r.allows("shop", &q(pod("lab", &web, Some(&dev)))), Deny);
    assert_eq!(
        r.allows("shop", &q(pod("billing", &web, None))),
        Unknown,
        "namespace labels not known yet"
    );

    // Both in one peer: the selected pods of the selected namespaces.
    let r = ingress(json!([{"from": [{
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
        "podSelector": {"matchLabels": {"app": "api"}}
    }]}]));
    assert_eq!(
        r.allows("shop", &q(pod("billing", &api, Some(&prod)))),
        Allow
    );
    assert_eq!(
        r.allows("shop", &q(pod("billing", &web, Some(&prod)))),
        Deny
    );
    assert_eq!(r.allows("shop", &q(pod("lab", &api, Some(&dev)))), Deny);
    assert_eq!(
        r.allows("shop", &q(pod("billing", &web, None))),
        Deny,
        "the pod selector fails whatever the namespace"
    );

    // `namespaceSelector: {}`: all namespaces, known or not.
    let r = ingress(
        json!([{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "api"}}}]}]),
    );
    assert_eq!(r.allows("shop", &q(pod("anywhere", &api, None))), Allow);
    assert_eq!(r.allows("shop", &q(pod("anywhere", &web, None))), Deny);

    // Two peers in one rule are ORed.
    let r = ingress(json!([{"from": [
        {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
        {"podSelector": {"matchLabels": {"app": "web"}}}
    ]}]));
    assert_eq!(r.allows("shop", &q(pod("shop", &web, Some(&dev)))), Allow);
    assert_eq!(
        r.allows("shop", &q(pod("billing", &api, Some(&prod)))),
        Allow
    );
    assert_eq!(r.allows("shop", &q(pod("lab", &api, Some(&dev)))), Deny);
}

#[test]
fn ip_block_with_except() {
    let r = egress(
        json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16", "10.9.9.9/32"]}}]}]),
    );
    assert_eq!(r.allows("ns", &from_addr("10.1.2.3", 80)), Allow);
    assert_eq!(r.allows("ns", &from_addr("10.42.7.7", 80)), Deny);
    assert_eq!(r.allows("ns", &from_addr("10.9.9.9", 80)), Deny);
    assert_eq!(r.allows("ns", &from_addr("10.9.9.10", 80)), Allow);
    assert_eq!(r.allows("ns", &from_addr("11.0.0.1", 80)), Deny);
    assert_eq!(
        r.allows("ns", &from_addr("::ffff:10.1.2.3", 80)),
        Deny,
        "families do not mix"
    );
    // An ipBlock matches a pod's address too (kube-router matches addresses, not pods).
    let l = Labels::default();
    let q = Query {
        peer: pod("ns", &l, None),
        ..from_addr("10.1.2.3", 80)
    };
    assert_eq!(r.allows("ns", &q), Allow);
    // Unknown address: unknown.
    let q = Query {
        peer_ip: None,
        ..from_addr("10.1.2.3", 80)
    };
    assert_eq!(r.allows("ns", &q), Unknown);
    // 0.0.0.0/0 is everything IPv4.
    let r = egress(json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]));
    assert_eq!(r.allows("ns", &from_addr("255.255.255.255", 1)), Allow);
    assert_eq!(r.allows("ns", &from_addr("2001:db8::1", 1)), Deny);
}

#[test]
fn ipv6_blocks() {
    let r = ingress(
        json!([{"from": [{"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:bad::/48"]}}], "ports": [{"port": 443}]}]),
    );
    assert_eq!(r.allows("ns", &from_addr("2001:db8:1::5", 443)), Allow);
    assert_eq!(r.allows("ns", &from_addr("2001:db8:bad::5", 443)), Deny);
    assert_eq!(r.allows("ns", &from_addr("2001:db9::5", 443)), Deny);
    assert_eq!(r.allows("ns", &from_addr("2001:db8:1::5", 80)), Deny);
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 443)), Deny);
    let all6 = ingress(json!([{"from": [{"ipBlock": {"cidr": "::/0"}}]}]));
    assert_eq!(all6.allows("ns", &from_addr("fd00:42::8", 1)), Allow);
}

#[test]
fn cidr_parsing() {
    assert_eq!(
        Cidr::parse("10.1.2.3/8"),
        Cidr::parse("10.0.0.0/8"),
        "host bits are ignored"
    );
    assert!(Cidr::parse("10.0.0.0/8")
        .unwrap()
        .contains("10.255.0.1".parse().unwrap()));
    assert!(Cidr::parse("10.0.0.1/32")
        .unwrap()
        .contains("10.0.0.1".parse().unwrap()));
    assert!(!Cidr::parse("10.0.0.1/32")
        .unwrap()
        .contains("10.0.0.2".parse().unwrap()));
    assert!(Cidr::parse("fd00::1/128")
        .unwrap()
        .contains("fd00::1".parse().unwrap()));
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "x/8",
        "::/129",
        "10.0.0.0/+8",
    ] {
        assert_eq!(Cidr::parse(bad), None, "{bad}");
    }
    // A bad cidr or except matches nothing.
    let r = ingress(json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/99"}}]}]));
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 80)), Deny);
    let r = ingress(json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["nope"]}}]}]));
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 80)), Deny);
}

#[test]
fn numeric_ports_and_protocols() {
    let r = ingress(json!([{"ports": [{"port": 5432}, {"protocol": "UDP", "port": 53}]}]));
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 5432)), Allow);
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 5433)), Deny);
    assert_eq!(
        r.allows("ns", &from_addr("10.0.0.1", 53)),
        Deny,
        "53 is UDP only"
    );
    let udp = |port| Query {
        protocol: Some(UDP),
        ..from_addr("10.0.0.1", port)
    };
    assert_eq!(r.allows("ns", &udp(53)), Allow);
    assert_eq!(
        r.allows("ns", &udp(5432)),
        Deny,
        "5432 is TCP only (the default)"
    );
    let icmp = Query {
        protocol: Some(1),
        dst_port: None,
        ..from_addr("10.0.0.1", 0)
    };
    assert_eq!(r.allows("ns", &icmp), Deny);
    // Unknown protocol or port: unknown, unless the known part already fails.
    let q = Query {
        protocol: None,
        ..from_addr("10.0.0.1", 5432)
    };
    assert_eq!(r.allows("ns", &q), Unknown);
    let q = Query {
        dst_port: None,
        ..from_addr("10.0.0.1", 0)
    };
    assert_eq!(r.allows("ns", &q), Unknown);
    let q = Query {
        protocol: Some(SCTP),
        dst_port: None,
        ..from_addr("10.0.0.1", 0)
    };
    assert_eq!(r.allows("ns", &q), Deny);

    // A protocol without a port: every port of that protocol.
    let r = egress(json!([{"ports": [{"protocol": "SCTP"}]}]));
    let sctp = Query {
        protocol: Some(SCTP),
        ..from_addr("10.0.0.1", 9)
    };
    assert_eq!(r.allows("ns", &sctp), Allow);
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 9)), Deny);
    // An unknown protocol name (the API rejects it) matches nothing.
    let r = egress(json!([{"ports": [{"protocol": "tcp", "port": 80}]}]));
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 80)), Deny);
    assert_eq!(protocol_number("ICMP"), None);
}

#[test]
fn end_port_ranges() {
    let r = egress(json!([{"ports": [{"port": 32000, "endPort": 32768}]}]));
    for (port, want) in [
        (31999, Deny),
        (32000, Allow),
        (32500, Allow),
        (32768, Allow),
        (32769, Deny),
    ] {
        assert_eq!(r.allows("ns", &from_addr("10.0.0.1", port)), want, "{port}");
    }
    // An endPort below the port is ignored (as kube-router does): the single port.
    let r = egress(json!([{"ports": [{"port": 8080, "endPort": 80}]}]));
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 8080)), Allow);
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 8000)), Deny);
    // Out-of-range port numbers match nothing.
    let r = egress(json!([{"ports": [{"port": 70000}, {"port": 0}]}]));
    assert_eq!(r.allows("ns", &from_addr("10.0.0.1", 4464)), Deny);
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let r = ingress(json!([{"ports": [{"port": "metrics"}, {"protocol": "UDP", "port": "dns"}]}]));
    let ports = [
        NamedPort {
            name: "metrics".into(),
            protocol: TCP,
            port: 9090,
        },
        NamedPort {
            name: "dns".into(),
            protocol: UDP,
            port: 5353,
        },
        NamedPort {
            name: "dns-tcp".into(),
            protocol: TCP,
            port: 5353,
        },
    ];
    let q = |protocol, port| Query {
        protocol: Some(protocol),
        dst_named_ports: Some(&ports[..]),
        ..from_addr("10.0.0.1", port)
    };
    assert_eq!(r.allows("ns", &q(TCP, 9090)), Allow);
    assert_eq!(r.allows("ns", &q(TCP, 9091)), Deny);
    assert_eq!(r.allows("ns", &q(UDP, 9090)), Deny, "metrics is TCP");
    assert_eq!(r.allows("ns", &q(UDP, 5353)), Allow);
    assert_eq!(
        r.allows("ns", &q(TCP, 5353)),
        Deny,
        "the rule names dns over UDP"
    );
    // A destination without that name: no match.
    let none = Query {
        dst_named_ports: Some(&[]),
        ..q(TCP, 9090)
    };
    assert_eq!(r.allows("ns", &none), Deny);
    // A destination pod the index does not know: unknown.
    let unknown = Query {
        dst_named_ports: None,
        ..q(TCP, 9090)
    };
    assert_eq!(r.allows("ns", &unknown), Unknown);
    // Known name, port not decoded: unknown.
    let no_port = Query {
        dst_port: None,
        ..q(TCP, 0)
    };
    assert_eq!(r.allows("ns", &no_port), Unknown);
}

#[test]
fn peers_and_ports_must_both_match_rules_are_ored() {
    let api = labels(&[("app", "api")]);
    let r = ingress(json!([
        {"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]},
        {"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}], "ports": [{"port": 22}]}
    ]));
    let q = |peer, addr, port| Query {
        peer,
        ..from_addr(addr, port)
    };
    assert_eq!(
        r.allows("shop", &q(pod("shop", &api, None), "10.42.0.5", 5432)),
        Allow
    );
    assert_eq!(
        r.allows("shop", &q(pod("shop", &api, None), "10.42.0.5", 22)),
        Deny
    );
    assert_eq!(
        r.allows("shop", &q(Peer::NotAPod, "192.168.1.1", 22)),
        Allow
    );
    assert_eq!(
        r.allows("shop", &q(Peer::NotAPod, "192.168.1.1", 5432)),
        Deny
    );
    // A peer that may or may not match, on a port the rule allows: unknown; on a port no rule
    // allows: denied whoever the peer is.
    assert_eq!(
        r.allows("shop", &q(Peer::Unknown, "10.42.9.9", 5432)),
        Unknown
    );
    assert_eq!(r.allows("shop", &q(Peer::Unknown, "10.42.9.9", 80)), Deny);
}

#[test]
fn odd_peers_match_nothing_or_follow_kube_router() {
    let l = labels(&[("app", "api")]);
    let q = Query {
        peer: pod("shop", &l, None),
        ..from_addr("10.42.0.5", 80)
    };
    // A peer with nothing set.
    assert_eq!(ingress(json!([{"from": [{}]}])).allows("shop", &q), Deny);
    // An invalid selector.
    let bad = json!([{"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}]}]);
    assert_eq!(ingress(bad).allows("shop", &q), Deny);
    let bad_ns = json!([{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}]);
    assert_eq!(ingress(bad_ns).allows("shop", &q), Deny);
    // Selectors and an ipBlock in one peer (the API rejects it): kube-router uses the selectors.
    let both = json!([{"from": [{"podSelector": {}, "ipBlock": {"cidr": "192.0.2.0/24"}}]}]);
    assert_eq!(ingress(both.clone()).allows("shop", &q), Allow);
    assert_eq!(
        ingress(both).allows("shop", &from_addr("192.0.2.1", 80)),
        Deny
    );
}

#[test]
fn verdict_logic() {
    assert_eq!(Verdict::any([]), Deny);
    assert_eq!(Verdict::any([Deny, Unknown]), Unknown);
    assert_eq!(Verdict::any([Unknown, Allow, Deny]), Allow);
    assert_eq!(Allow.and(Unknown), Unknown);
    assert_eq!(Unknown.and(Deny), Deny);
}
