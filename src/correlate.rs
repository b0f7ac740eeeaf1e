//! Correlation: one dropped packet, several NFLOG messages, one structured event.
//!
//! On K3s a packet dropped by policies A and B arrives as `DROP by policy A`, `DROP by policy B`
//! and the pod chain's empty-prefix message, all with the same IP ID and 5-tuple. The syslogemu
//! output keeps one line per message (ulogd2 compatibility); structured outputs get one event that
//! lists every policy and counts the messages.
//!
//! Messages are held for a short window. The raw message bytes are copied into pooled buffers, so
//! holding them does not allocate once the pool has grown.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::decode::Packet;
use crate::event::Timestamp;

/// What identifies one packet across the messages it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// IPv4 identification, or the IPv6 flow label.
    pub id: u32,
    pub ports: (u16, u16),
    /// TCP sequence number or ICMP id/sequence word: tells apart packets that share an IP ID.
    pub extra: u32,
}

impl PacketKey {
    pub fn of(p: &Packet) -> Option<PacketKey> {
        let (src, dst) = p.addrs()?;
        let id = match p.network {
            crate::decode::Network::Ipv4(Some(h)) => h.id as u32,
            crate::decode::Network::Ipv6(Some(h)) => h.flow_label,
            _ => 0,
        };
        let extra = match p.transport {
            crate::decode::Transport::Tcp(t) => t.seq,
            crate::decode::Transport::Icmp(i) | crate::decode::Transport::Icmpv6(i) => i.rest,
            _ => 0,
        };
        Some(PacketKey {
            src,
            dst,
            protocol: p.protocol().unwrap_or(0),
            id,
            ports: p.ports().unwrap_or((0, 0)),
            extra,
        })
    }
}

/// A packet whose messages are being collected.
pub struct Open {
    pub key: PacketKey,
    pub received: Timestamp,
    /// The first message's netlink body (the event is rendered from it).
    pub body: Vec<u8>,
    /// The prefixes of every message, NUL-separated (a prefix cannot hold a NUL).
    pub prefixes: Vec<u8>,
    pub count: u32,
}

impl Open {
    /// The prefixes of all correlated messages, in arrival order.
    pub fn prefixes(&self) -> impl Iterator<Item = &[u8]> {
        self.prefixes.split(|&b| b == 0).take(self.count as usize)
    }
}

pub struct Correlator {
    window: Duration,
    open: HashMap<PacketKey, usize>,
    slots: Vec<Option<Open>>,
    order: VecDeque<(usize, Instant)>,
    free: Vec<usize>,
    pool: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Correlator {
    pub fn new(window: Duration) -> Self {
        Correlator {
            window,
            open: HashMap::new(),
            slots: Vec::new(),
            order: VecDeque::new(),
            free: Vec::new(),
            pool: Vec::new(),
        }
    }

    /// Adds a message. Returns false when it joined an open packet (nothing new to render).
    pub fn add(
        &mut self,
        key: PacketKey,
        body: &[u8],
        prefix: &[u8],
        received: Timestamp,
        now: Instant,
    ) -> bool {
        if let Some(&slot) = self.open.get(&key) {
            if let Some(open) = self.slots[slot].as_mut() {
                open.prefixes.push(0);
                open.prefixes.extend_from_slice(prefix);
                open.count += 1;
                return false;
            }
        }
        let (mut b, mut p) = self.pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(body);
        p.clear();
        p.extend_from_slice(prefix);
        let open = Open {
            key,
            received,
            body: b,
            prefixes: p,
            count: 1,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(open);
                s
            }
            None => {
                self.slots.push(Some(open));
                self.slots.len() - 1
            }
        };
        self.open.insert(key, slot);
        self.order.push_back((slot, now));
        true
    }

    /// Calls `f` for every packet whose window has passed (all of them with `force`), oldest
    /// first, then recycles its buffers.
    pub fn expire(&mut self, now: Instant, force: bool, mut f: impl FnMut(&Open)) {
        while let Some(&(slot, opened)) = self.order.front() {
            if !force && now.saturating_duration_since(opened) < self.window {
                break;
            }
            self.order.pop_front();
            self.release(slot, &mut f);
        }
    }

    /// Hands a packet out and recycles its slot and buffers.
    fn release(&mut self, slot: usize, f: &mut impl FnMut(&Open)) {
        if let Some(open) = self.slots[slot].take() {
            f(&open);
            self.open.remove(&open.key);
            self.pool.push((open.body, open.prefixes));
            self.free.push(slot);
        }
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Hands out the oldest packets until at most `max` are held: under a flood of distinct
    /// packets the table stays bounded, and those events are just written early.
    pub fn shrink_to(&mut self, max: usize, mut f: impl FnMut(&Open)) {
        while self.order.len() > max {
            let Some((slot, _)) = self.order.pop_front() else {
                break;
            };
            self.release(slot, &mut f);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> PacketKey {
        PacketKey {
            src: "10.42.0.10".parse().unwrap(),
            dst: "10.42.0.20".parse().unwrap(),
            protocol: 6,
            id,
            ports: (40000, 5432),
            extra: 7,
        }
    }

    #[test]
    fn messages_of_one_packet_become_one_event() {
        let mut c = Correlator::new(Duration::from_millis(200));
        let t0 = Instant::now();
        let ts = Timestamp::default();
        assert!(c.add(key(1), b"body1", b"DROP by policy default/a", ts, t0));
        assert!(!c.add(key(1), b"body1", b"DROP by policy default/b", ts, t0));
        assert!(!c.add(key(1), b"body1", b"", ts, t0));
        assert!(c.add(key(2), b"body2", b"", ts, t0));
        let mut seen = Vec::new();
        c.expire(t0 + Duration::from_millis(100), false, |o| {
            seen.push(o.count)
        });
        assert!(seen.is_empty(), "window not over yet");
        c.expire(t0 + Duration::from_millis(250), false, |o| {
            seen.push(o.count);
            if o.count == 3 {
                let p: Vec<&[u8]> = o.prefixes().collect();
                assert_eq!(
                    p,
                    vec![
                        &b"DROP by policy default/a"[..],
                        b"DROP by policy default/b",
                        b""
                    ]
                );
                assert_eq!(o.body, b"body1");
            }
        });
        assert_eq!(seen, vec![3, 1]);
        assert!(c.is_empty());
        // The same packet identity later is a new packet.
        assert!(c.add(key(1), b"x", b"", ts, t0 + Duration::from_secs(1)));
        for id in 10..20 {
            c.add(key(id), b"b", b"", ts, t0);
        }
        let mut early = 0;
        c.shrink_to(4, |_| early += 1);
        assert_eq!((early, c.len()), (7, 4));
    }
}
