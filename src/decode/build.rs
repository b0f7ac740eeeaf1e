//! Packet builders for tests, benches and fuzz seeds: IPv4/IPv6 headers with chosen fields.

/// An IPv4 header (TTL 64, no options) followed by `l4`.
pub fn ipv4(
    proto: u8,
    id: u16,
    frag: u16,
    tos: u8,
    src: [u8; 4],
    dst: [u8; 4],
    l4: &[u8],
) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![0x45, tos];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

/// `packet` (an [`ipv4`] packet without options) with `options` inserted after its header,
/// padded to 4 bytes; the header length and total length follow.
pub fn with_ipv4_options(mut packet: Vec<u8>, options: &[u8]) -> Vec<u8> {
    let padded = options.len().div_ceil(4) * 4;
    let mut opts = options.to_vec();
    opts.resize(padded, 0);
    packet.splice(20..20, opts);
    packet[0] = 0x40 | (5 + padded / 4) as u8;
    let total = packet.len() as u16;
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet
}

/// An IPv6 header with `next` as next header, followed by `rest` (extension headers + L4).
pub fn ipv6(next: u8, tc: u8, flow: u32, src: [u8; 16], dst: [u8; 16], rest: &[u8]) -> Vec<u8> {
    let word = (6u32 << 28) | ((tc as u32) << 20) | (flow & 0xfffff);
    let mut p = word.to_be_bytes().to_vec();
    p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(rest);
    p
}

/// A TCP header with the given flags and no options.
pub fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    urg: u16,
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags]);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&urg.to_be_bytes());
    t
}

/// A UDP header plus payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ICMP (or ICMPv6) header: type, code, and the second word.
pub fn icmp(kind: u8, code: u8, rest: u32) -> Vec<u8> {
    let mut i = vec![kind, code, 0, 0];
    i.extend_from_slice(&rest.to_be_bytes());
    i
}
