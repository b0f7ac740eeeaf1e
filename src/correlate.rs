//! Correlation: the NFLOG messages one dropped packet produced, as one structured event.
//!
//! On K3s, kube-router's pod firewall chain (`KUBE-POD-FW-…`) jumps to the chain of every policy
//! that selects the pod; a policy chain that does not allow the packet logs it with
//! `DROP by policy <ns>/<name>`, and the pod chain itself then logs it with an empty prefix just
//! before its `REJECT` ([pod.go], [policy.go]). K3s releases from v1.27.7 write the policy's
//! `NFLOG` rule after *each* of its accept rules (`appendRuleToPolicyChain`; k3s-io/k3s#9032),
//! so one policy can log the same packet several times in a row. All of that happens in one
//! traversal of one hook by one packet, so the kernel queues those messages one after the other,
//! and the pod chain's empty-prefix message is the last one.
//!
//! Only such a run is merged: a message joins the packet being collected when it was logged at
//! the same hook, on the same interfaces, with the same packet bytes, within [`SAME_TRAVERSAL`]
//! of it by the kernel's clock (when the kernel stamped both), and its prefix is either new for
//! that packet or the same as the message just before it. Anything else starts a new event: an
//! identical packet sent again (IPv4 ID 0 on DF datagrams, one IPv6 flow label per flow,
//! identical payloads) shows itself by a prefix coming round again, by the empty prefix that
//! ended the previous packet, or by the kernel's timestamps. The price: when messages of two
//! CPUs interleave in the queue, one packet may give two events; and when a policy that logs
//! once per packet drops two identical packets back to back, and the kernel's limit kept back
//! the pod chain's message of the first, they give one event with `count: 2`.
//!
//! The kernel's timestamp is the packet's receive time when the packet has one, and the time of
//! logging otherwise (`skb_tstamp_cond` in `__build_packet_message`,
//! net/netfilter/nfnetlink_log.c), so the messages of one traversal may differ by microseconds:
//! equality would be the wrong test, a bound is not.
//!
//! The packet being collected is handed out when a message does not join it, when the
//! empty-prefix message (the pod chain's, always the last) has joined it, when the window has
//! passed since its first message (its other messages would have arrived by then), or at
//! shutdown. Its decoded headers and Kubernetes context are kept from the first message, so
//! nothing is decoded or resolved twice; the message bytes are copied into a reused buffer.
//!
//! [pod.go]: https://github.com/k3s-io/kube-router/blob/master/pkg/controllers/netpol/pod.go
//! [policy.go]: https://github.com/k3s-io/kube-router/blob/master/pkg/controllers/netpol/policy.go

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attribute::KubeContext;
use crate::decode::Packet;
use crate::event::{IfName, Timestamp};
use crate::source::nflog::NflogMsg;

/// The kernel logs one traversal's messages within one run of the network stack: far less
/// than this apart.
pub const SAME_TRAVERSAL: Duration = Duration::from_millis(1);

/// A kernel timestamp in microseconds.
fn micros((sec, usec): (u64, u64)) -> u128 {
    u128::from(sec) * 1_000_000 + u128::from(usec)
}

/// What the messages of one traversal share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Traversal {
    group: u16,
    family: u8,
    hook: u8,
    indev: u32,
    outdev: u32,
    physindev: u32,
    physoutdev: u32,
}

impl Traversal {
    fn of(msg: &NflogMsg<'_>) -> Self {
        Traversal {
            group: msg.group,
            family: msg.family,
            hook: msg.hook,
            indev: msg.indev,
            outdev: msg.outdev,
            physindev: msg.physindev,
            physoutdev: msg.physoutdev,
        }
    }
}

/// What the first message of a packet gave, kept so the event is not decoded or resolved again.
#[derive(Debug, Clone)]
pub struct First {
    pub packet: Packet,
    pub time: Timestamp,
    pub indev: IfName,
    pub outdev: IfName,
    pub received: Timestamp,
    pub context: Option<Arc<KubeContext>>,
}

/// A packet whose messages are being collected.
pub struct Open {
    /// The first message's netlink body (the event is rendered from it).
    pub body: Vec<u8>,
    /// The bodies of the other written messages, each after its length (`u32`, native order).
    more: Vec<u8>,
    payload: Range<usize>,
    traversal: Traversal,
    /// The kernel's timestamp of the latest message.
    timestamp: Option<(u64, u64)>,
    /// Where the latest message's prefix starts in `prefixes`.
    last_prefix: usize,
    /// The prefixes of every message, NUL-separated (a prefix cannot hold a NUL), written or not.
    prefixes: Vec<u8>,
    /// Messages seen for this packet, written or suppressed.
    seen: u32,
    /// Messages written (not suppressed): the event's `count`.
    pub count: u32,
    pub first: First,
    opened: Instant,
}

impl Open {
    /// The prefixes of all messages of this packet, in arrival order.
    pub fn prefixes(&self) -> impl Iterator<Item = &[u8]> {
        self.prefixes.split(|&b| b == 0).take(self.seen as usize)
    }

    /// The netlink bodies of the written messages, the first one first.
    pub fn bodies(&self) -> Bodies<'_> {
        Bodies {
            first: Some(&self.body),
            more: &self.more,
        }
    }

    /// The first message, parsed again from its copy (a header walk: it parsed before).
    pub fn message(&self) -> Option<NflogMsg<'_>> {
        NflogMsg::parse(&self.body).ok()
    }

    fn same_packet(&self, msg: &NflogMsg<'_>) -> bool {
        let prefix = msg.prefix.unwrap_or_default();
        let close_in_time = match (self.timestamp, msg.timestamp) {
            (Some(a), Some(b)) => micros(a).abs_diff(micros(b)) <= SAME_TRAVERSAL.as_micros(),
            _ => true,
        };
        let repeats_last = self.prefixes.get(self.last_prefix..) == Some(prefix);
        self.traversal == Traversal::of(msg)
            && close_in_time
            && !self.complete()
            && self.body.get(self.payload.clone()) == Some(msg.payload)
            && (repeats_last || !self.prefixes().any(|p| p == prefix))
    }

    /// The pod chain's message comes last in a traversal: nothing more can join.
    fn complete(&self) -> bool {
        self.prefixes().any(|p| p.is_empty())
    }
}

/// The written messages' bodies of an [`Open`] packet.
#[derive(Clone)]
pub struct Bodies<'a> {
    first: Option<&'a [u8]>,
    more: &'a [u8],
}

impl<'a> Iterator for Bodies<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let (len, rest) = self.more.split_first_chunk::<4>()?;
        let len = (u32::from_ne_bytes(*len) as usize).min(rest.len());
        let (body, rest) = rest.split_at(len);
        self.more = rest;
        Some(body)
    }
}

/// What [`Correlator::add`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// It opened a new packet (the previous one, if any, was handed out first).
    Opened,
    /// It joined the packet being collected.
    Joined,
    /// A suppressed message that did not join: the previous packet, if any, was handed out.
    Skipped,
}

/// Collects consecutive messages of one packet. See the module documentation.
pub struct Correlator {
    window: Duration,
    open: Option<Open>,
    /// Buffers of the last packet handed out, reused for the next one.
    spare: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl Correlator {
    pub fn new(window: Duration) -> Self {
        Correlator {
            window,
            open: None,
            spare: None,
        }
    }

    /// Adds a message whose body is `body` (`msg` parsed from it). `first` is what the event
    /// needs if this message opens a packet; `written` is false for a suppressed message, which
    /// is remembered (a later message with its prefix is another packet) but not counted.
    /// Packets that are complete are handed to `emit`.
    pub fn add(
        &mut self,
        body: &[u8],
        msg: &NflogMsg<'_>,
        written: bool,
        first: impl FnOnce() -> First,
        now: Instant,
        emit: &mut impl FnMut(&Open),
    ) -> Added {
        let prefix = msg.prefix.unwrap_or_default();
        let joined = match self.open.as_mut() {
            Some(open) if open.same_packet(msg) => {
                open.prefixes.push(0);
                open.last_prefix = open.prefixes.len();
                open.prefixes.extend_from_slice(prefix);
                open.timestamp = msg.timestamp.or(open.timestamp);
                if written {
                    open.more
                        .extend_from_slice(&(body.len() as u32).to_ne_bytes());
                    open.more.extend_from_slice(body);
                }
                open.seen += 1;
                open.count += u32::from(written);
                true
            }
            _ => false,
        };
        let added = if joined {
            Added::Joined
        } else {
            self.flush(emit);
            if !written {
                return Added::Skipped;
            }
            self.open = Some(self.start(body, msg, first(), now));
            Added::Opened
        };
        if self.open.as_ref().is_some_and(Open::complete) {
            self.flush(emit);
        }
        added
    }

    fn start(&mut self, body: &[u8], msg: &NflogMsg<'_>, first: First, now: Instant) -> Open {
        let (mut b, mut p, mut more) = self.spare.take().unwrap_or_default();
        b.clear();
        b.extend_from_slice(body);
        more.clear();
        p.clear();
        p.extend_from_slice(msg.prefix.unwrap_or_default());
        // The payload is a sub-slice of the body: keep its place in the copy.
        let start = (msg.payload.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let payload = if start <= body.len() && start + msg.payload.len() <= body.len() {
            start..start + msg.payload.len()
        } else {
            0..0
        };
        Open {
            body: b,
            more,
            payload,
            traversal: Traversal::of(msg),
            timestamp: msg.timestamp,
            last_prefix: 0,
            prefixes: p,
            seen: 1,
            count: 1,
            first,
            opened: now,
        }
    }

    /// Hands out the packet being collected, if any.
    pub fn flush(&mut self, emit: &mut impl FnMut(&Open)) {
        if let Some(open) = self.open.take() {
            emit(&open);
            self.spare = Some((open.body, open.prefixes, open.more));
        }
    }

    /// Hands out the packet being collected once the window has passed since its first message.
    pub fn expire(&mut self, now: Instant, emit: &mut impl FnMut(&Open)) {
        let due = self
            .open
            .as_ref()
            .is_some_and(|o| now.saturating_duration_since(o.opened) >= self.window);
        if due {
            self.flush(emit);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }

    /// When the packet being collected is due (see [`Correlator::expire`]), if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|o| o.opened + self.window)
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::build::{ipv4, udp};
    use crate::source::nflog::build::Packet as Msg;

    fn body(prefix: &[u8], payload: &[u8], timestamp: Option<(u64, u64)>) -> Vec<u8> {
        let mut out = Vec::new();
        Msg {
            prefix,
            payload,
            timestamp,
            ..Default::default()
        }
        .encode(&mut out);
        // The encoder writes a whole netlink message; the correlator sees its body.
        out[crate::source::nflog::NLMSG_HDRLEN..].to_vec()
    }

    fn first() -> First {
        First {
            packet: crate::decode::decode(2, 0x0800, &[]),
            time: Timestamp::default(),
            indev: IfName::default(),
            outdev: IfName::default(),
            received: Timestamp::default(),
            context: None,
        }
    }

    /// Feeds messages; returns the count of every event handed out, in order.
    fn run(c: &mut Correlator, messages: &[(Vec<u8>, bool)]) -> Vec<u32> {
        let mut counts = Vec::new();
        let t0 = Instant::now();
        for (b, written) in messages {
            let msg = NflogMsg::parse(b).unwrap();
            c.add(b, &msg, *written, first, t0, &mut |o| counts.push(o.count));
        }
        counts
    }

    const DATAGRAM: fn() -> Vec<u8> = || {
        // IPv4 ID 0, DF: what the kernel sends for a DF datagram of an unconnected socket.
        ipv4(
            17,
            0,
            0x4000,
            0,
            [10, 42, 0, 10],
            [10, 42, 0, 20],
            &udp(5000, 53, b"q"),
        )
    };

    #[test]
    fn identical_datagrams_are_separate_packets() {
        let d = DATAGRAM();
        let mut c = Correlator::new(Duration::from_secs(60));
        let mut msgs = Vec::new();
        for _ in 0..10 {
            msgs.push((body(b"DROP by policy shop/deny", &d, None), true));
            msgs.push((body(b"", &d, None), true));
        }
        assert_eq!(run(&mut c, &msgs), vec![2; 10]);
        assert!(c.is_empty(), "the empty prefix completes a packet");
    }

    #[test]
    fn a_prefix_coming_round_again_starts_a_new_packet() {
        // Two identical packets, each dropped by two policies; the pod chain's message of the
        // first was kept back by the kernel's limit.
        let d = DATAGRAM();
        let mut c = Correlator::new(Duration::from_secs(60));
        let msgs = vec![
            (body(b"DROP by policy shop/a", &d, None), true),
            (body(b"DROP by policy shop/b", &d, None), true),
            (body(b"DROP by policy shop/a", &d, None), true),
            (body(b"DROP by policy shop/b", &d, None), true),
            (body(b"", &d, None), true),
        ];
        assert_eq!(run(&mut c, &msgs), vec![2, 3]);
    }

    #[test]
    fn one_policy_logging_after_each_accept_rule_is_one_packet() {
        // K3s from v1.27.7 logs after every accept rule of a policy chain: a packet that passes
        // three of them unmatched is logged three times by that policy, then by the pod chain.
        let d = DATAGRAM();
        let mut c = Correlator::new(Duration::from_secs(60));
        let mut msgs = Vec::new();
        for _ in 0..2 {
            for _ in 0..3 {
                msgs.push((body(b"DROP by policy shop/a", &d, None), true));
            }
            msgs.push((body(b"", &d, None), true));
        }
        assert_eq!(run(&mut c, &msgs), vec![4, 4]);
    }

    #[test]
    fn kernel_timestamps_far_apart_are_different_packets() {
        let d = DATAGRAM();
        let mut c = Correlator::new(Duration::from_secs(60));
        let msgs = vec![
            // Logged microseconds apart: one traversal (the kernel stamps each message when the
            // packet carries no receive time).
            (body(b"DROP by policy shop/a", &d, Some((100, 1))), true),
            (body(b"", &d, Some((100, 9))), true),
            // The same bytes later: another packet; 5 ms on, yet another, even with the pod
            // chain's message missing in between.
            (body(b"DROP by policy shop/a", &d, Some((100, 20))), true),
            (body(b"DROP by policy shop/a", &d, Some((100, 5020))), true),
        ];
        let mut counts = run(&mut c, &msgs);
        c.flush(&mut |o| counts.push(o.count));
        assert_eq!(counts, vec![2, 1, 1]);
    }

    #[test]
    fn messages_of_one_packet_merge_until_the_pod_chain() {
        let d = DATAGRAM();
        let other = ipv4(
            17,
            0,
            0x4000,
            0,
            [10, 42, 0, 11],
            [10, 42, 0, 20],
            &udp(5000, 53, b"q"),
        );
        let mut c = Correlator::new(Duration::from_secs(60));
        let msgs = vec![
            (body(b"DROP by policy shop/a", &d, None), true),
            (body(b"DROP by policy shop/b", &d, None), true),
            (body(b"", &d, None), true),
            (body(b"DROP by policy shop/a", &other, None), true),
            (body(b"DROP by policy shop/a", &d, None), true),
        ];
        let mut counts = run(&mut c, &msgs);
        c.flush(&mut |o| counts.push(o.count));
        assert_eq!(counts, vec![3, 1, 1]);
    }

    #[test]
    fn suppressed_messages_separate_but_do_not_count() {
        let d = DATAGRAM();
        let mut c = Correlator::new(Duration::from_secs(60));
        let msgs = vec![
            (body(b"DROP by policy shop/a", &d, None), true),
            // The same packet's pod-chain message, suppressed by the daemon's limit.
            (body(b"", &d, None), false),
            // The next identical packet: its policy message suppressed, its pod-chain one not.
            (body(b"DROP by policy shop/a", &d, None), false),
            (body(b"", &d, None), true),
        ];
        assert_eq!(run(&mut c, &msgs), vec![1, 1]);
    }

    #[test]
    fn the_window_hands_out_a_lone_message() {
        let d = DATAGRAM();
        let mut c = Correlator::new(Duration::from_millis(50));
        let b = body(b"DROP by policy shop/a", &d, None);
        let msg = NflogMsg::parse(&b).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        c.add(&b, &msg, true, first, t0, &mut |o| out.push(o.count));
        c.expire(t0 + Duration::from_millis(10), &mut |o| out.push(o.count));
        assert!(out.is_empty());
        c.expire(t0 + Duration::from_millis(60), &mut |o| {
            out.push(o.count);
            assert_eq!(o.message().unwrap().payload, &d[..]);
        });
        assert_eq!(out, vec![1]);
    }
}
