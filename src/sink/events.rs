//! Kubernetes Events on drops (opt-in): `kubectl describe pod db-0` shows that a NetworkPolicy
//! dropped its traffic, as Cilium's drop events do.
//!
//! The pipeline [notes](Aggregator::note) every written event whose protected pod is known (the
//! destination for ingress, the source for egress); notes are aggregated per (pod, policy, peer)
//! with a count, and an aggregate is published at most once per `interval` and, per pod, at most
//! `per_pod_per_minute` times a minute: the API server sees a few Events a minute per pod
//! whatever the flood. Publishing goes through kube-rs's event recorder (`events.k8s.io/v1`,
//! which also folds repeats of one Event into a series), on its own task, so a slow or absent
//! API server never slows the pipeline; what cannot be handed over is counted, never silent.
//!
//! The recorder folds by what it keys an Event on (type, action, reason, reporter, the regarding
//! object), not by the note, and an Event's note cannot change once created (the API server
//! rejects the update). So each (pod, policy, peer, port) triple gets its own recorder: its first
//! aggregate is created as an Event whose note names the policy, the peer, the port and the
//! packet count; every later aggregate of the same triple patches that Event's `series` (`count`
//! the aggregates so far, `lastObservedTime`), as long as the recorder keeps it (six minutes),
//! instead of folding another policy's or peer's drops into an Event that names the first one.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::attribute::Direction;
use crate::event::Event;
use crate::stats::Stats;

/// The reason every drop Event carries.
pub const REASON: &str = "PolicyDrop";

/// Aggregates waiting at most (distinct pod, policy, peer triples); beyond it new triples are
/// counted as dropped notes until the next hand-over.
const MAX_PENDING: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    pod: String,
    /// `namespace/name`, or empty when the policy is not known.
    policy: String,
    /// Egress (the pod's own packets) or ingress.
    egress: bool,
    /// The other side: a pod's `namespace/name`, or an address.
    peer: String,
    /// `5432/TCP`, or empty.
    port: String,
}

#[derive(Debug, Clone)]
struct Pending {
    count: u64,
    since: Instant,
}

/// One Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub namespace: String,
    pub pod: String,
    pub reason: &'static str,
    pub message: String,
    /// What the Event is a series of: the (pod, policy, peer, port) triple, as text. Notes with
    /// the same series update one Event.
    pub series: String,
}

/// The pipeline's side: aggregates notes, hands due ones to the publisher.
pub struct Aggregator {
    interval: Duration,
    per_pod_per_minute: u32,
    pending: HashMap<Key, Pending>,
    /// When each key was last handed over.
    last: HashMap<Key, Instant>,
    /// Per pod: hand-overs in the current minute.
    per_pod: HashMap<(String, String), (Instant, u32)>,
    tx: mpsc::Sender<Note>,
    stats: Arc<Stats>,
}

impl Aggregator {
    pub fn new(
        interval: Duration,
        per_pod_per_minute: u32,
        tx: mpsc::Sender<Note>,
        stats: Arc<Stats>,
    ) -> Self {
        Aggregator {
            interval,
            per_pod_per_minute: per_pod_per_minute.max(1),
            pending: HashMap::new(),
            last: HashMap::new(),
            per_pod: HashMap::new(),
            tx,
            stats,
        }
    }

    /// Whether aggregates wait to be handed over.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Notes one written event (a packet). Events without a protected pod are not noted.
    pub fn note(&mut self, ev: &Event<'_>, now: Instant) {
        let Some(key) = key_of(ev) else {
            return;
        };
        if let Some(p) = self.pending.get_mut(&key) {
            p.count += 1;
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.kube_events_dropped.fetch_add(1, Relaxed);
            return;
        }
        self.pending.insert(
            key,
            Pending {
                count: 1,
                since: now,
            },
        );
    }

    /// Hands every aggregate that is due to the publisher: its key's last Event is at least
    /// `interval` old, and its pod has not used up its Events for this minute.
    pub fn flush(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .pending
            .keys()
            .filter(|k| {
                self.last
                    .get(*k)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= self.interval)
            })
            .cloned()
            .collect();
        for key in due {
            let pod = (key.namespace.clone(), key.pod.clone());
            let slot = self.per_pod.entry(pod).or_insert((now, 0));
            if now.saturating_duration_since(slot.0) >= Duration::from_secs(60) {
                *slot = (now, 0);
            }
            if slot.1 >= self.per_pod_per_minute {
                continue;
            }
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            slot.1 += 1;
            let note = Note {
                namespace: key.namespace.clone(),
                pod: key.pod.clone(),
                reason: REASON,
                message: message(&key, &p, now),
                series: series(&key),
            };
            if self.tx.try_send(note).is_err() {
                self.stats.kube_events_dropped.fetch_add(p.count, Relaxed);
            }
            self.last.insert(key, now);
        }
        // Forget keys that have been quiet for a while, so the tables stay small.
        let stale = self.interval.max(Duration::from_secs(60)) * 10;
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) < stale);
        self.per_pod
            .retain(|_, (t, _)| now.saturating_duration_since(*t) < Duration::from_secs(120));
    }
}

fn key_of(ev: &Event<'_>) -> Option<Key> {
    let ctx = ev.context.as_deref()?;
    let (protected, peer) = match ctx.direction? {
        Direction::Ingress => (ctx.dest.as_deref()?, ctx.src.as_deref()),
        Direction::Egress => (ctx.src.as_deref()?, ctx.dest.as_deref()),
    };
    let (src_ip, dst_ip) = ev.packet.addrs().unzip();
    let peer_ip = match ctx.direction? {
        Direction::Ingress => src_ip,
        Direction::Egress => dst_ip,
    };
    let peer = match (peer, peer_ip) {
        (Some(p), _) => format!("pod {}/{}", p.namespace, p.pod),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "an unknown peer".to_string(),
    };
    let policy = ev
        .reported_policy()
        .map(|r| {
            format!(
                "{}/{}",
                String::from_utf8_lossy(r.namespace),
                r.name.map(String::from_utf8_lossy).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let port = match (ev.packet.ports(), ev.packet.protocol()) {
        (Some((_, d)), Some(p)) => format!(
            "{d}/{}",
            crate::decode::protocol_name(p)
                .unwrap_or("?")
                .to_ascii_uppercase()
        ),
        _ => String::new(),
    };
    Some(Key {
        namespace: protected.namespace.to_string(),
        pod: protected.pod.clone(),
        policy,
        egress: ctx.direction == Some(Direction::Egress),
        peer,
        port,
    })
}

/// The identity of a key's Event series.
fn series(key: &Key) -> String {
    let dir = if key.egress { "egress" } else { "ingress" };
    format!(
        "{}/{} {} {dir} {} {}",
        key.namespace, key.pod, key.policy, key.peer, key.port
    )
}

fn message(key: &Key, p: &Pending, now: Instant) -> String {
    let secs = now.saturating_duration_since(p.since).as_secs().max(1);
    let what = if p.count == 1 {
        "1 packet".to_string()
    } else {
        format!("{} packets", p.count)
    };
    let (from_to, dir) = if key.egress {
        ("to", "egress")
    } else {
        ("from", "ingress")
    };
    let port = if key.port.is_empty() {
        String::new()
    } else {
        format!(" on port {}", key.port)
    };
    let policy = if key.policy.is_empty() {
        "a NetworkPolicy".to_string()
    } else {
        format!("NetworkPolicy {}", key.policy)
    };
    format!(
        "{what} {from_to} {}{port} dropped by {policy} ({dir}) in the last {secs} s",
        key.peer
    )
}

/// How long kube-rs's recorder keeps an Event to patch its series (its `CACHE_TTL`): a
/// recorder unused for longer would create a new Event anyway, so it is dropped.
const RECORDER_TTL: Duration = Duration::from_secs(6 * 60);

/// One recorder per series (see the module documentation), dropped after [`RECORDER_TTL`]
/// unused.
struct Recorders {
    client: kube::Client,
    reporter: Reporter,
    by_series: HashMap<String, (Recorder, Instant)>,
}

impl Recorders {
    fn get(&mut self, series: &str, now: Instant) -> Recorder {
        self.by_series
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < RECORDER_TTL);
        let (recorder, used) = self.by_series.entry(series.to_string()).or_insert_with(|| {
            (
                Recorder::new(self.client.clone(), self.reporter.clone()),
                now,
            )
        });
        *used = now;
        recorder.clone()
    }
}

/// Publishes notes through kube-rs's recorder until the channel closes.
pub async fn publish(
    client: kube::Client,
    node: String,
    mut rx: mpsc::Receiver<Note>,
    stats: Arc<Stats>,
) {
    let reporter = Reporter {
        controller: "netpol-nflogd".into(),
        instance: Some(node),
    };
    let mut recorders = Recorders {
        client,
        reporter,
        by_series: HashMap::new(),
    };
    let mut last_error: Option<Instant> = None;
    while let Some(note) = rx.recv().await {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(note.namespace.clone()),
            name: Some(note.pod.clone()),
            ..Default::default()
        };
        let ev = K8sEvent {
            type_: EventType::Warning,
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: "Drop".into(),
            secondary: None,
        };
        let recorder = recorders.get(&note.series, Instant::now());
        match recorder.publish(&ev, &reference).await {
            Ok(()) => {
                stats.kube_events_published.fetch_add(1, Relaxed);
            }
            Err(e) => {
                stats.kube_events_failed.fetch_add(1, Relaxed);
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_error = Some(Instant::now());
                    tracing::warn!(error = %e, pod = %format!("{}/{}", note.namespace, note.pod), "cannot publish a drop Event (is the events RBAC component applied?)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{KubeContext, PodMeta, PolicyRef};
    use crate::decode::build::{ipv4, udp};
    use crate::source::nflog::{build::Packet, NflogMsg, NLMSG_HDRLEN};

    fn pod(ns: &str, name: &str) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            pod: name.into(),
            namespace: ns.into(),
            workload_kind: None,
            workload: None,
            node: None,
        })
    }

    fn event_of(msg: NflogMsg<'_>) -> Event<'_> {
        crate::tail::pcap::event(
            msg,
            Default::default(),
            Default::default(),
            Default::default(),
        )
    }

    /// Notes `n` drops from `src` (10.42.0.<src>) to db-0 on port 5432.
    fn note_drops(agg: &mut Aggregator, src: u8, n: usize, now: Instant) {
        let payload = ipv4(
            17,
            1,
            0,
            0,
            [10, 42, 0, src],
            [10, 42, 0, 20],
            &udp(4000, 5432, b""),
        );
        let mut buf = Vec::new();
        Packet {
            prefix: b"DROP by policy shop/deny-db",
            payload: &payload,
            ..Default::default()
        }
        .encode(&mut buf);
        let msg = NflogMsg::parse(&buf[NLMSG_HDRLEN..]).unwrap();
        let ctx = KubeContext {
            policies: vec![PolicyRef {
                namespace: "shop".into(),
                name: "deny-db".into(),
            }],
            resolved: true,
            direction: Some(Direction::Ingress),
            src: (src == 10).then(|| pod("shop", "web-0")),
            dest: Some(pod("shop", "db-0")),
            ..Default::default()
        };
        let ev = Event {
            context: Some(Arc::new(ctx)),
            ..event_of(msg)
        };
        for _ in 0..n {
            agg.note(&ev, now);
        }
    }

    #[test]
    fn drops_are_aggregated_and_rate_limited_per_pod() {
        let (tx, mut rx) = mpsc::channel(64);
        let stats = Stats::new();
        let mut agg = Aggregator::new(Duration::from_secs(60), 2, tx, stats.clone());
        let t0 = Instant::now();
        note_drops(&mut agg, 10, 500, t0);
        agg.flush(t0 + Duration::from_secs(1));
        let n = rx.try_recv().unwrap();
        assert_eq!(
            (n.namespace.as_str(), n.pod.as_str(), n.reason),
            ("shop", "db-0", REASON)
        );
        assert_eq!(
            n.message,
            "500 packets from pod shop/web-0 on port 5432/UDP dropped by NetworkPolicy shop/deny-db (ingress) in the last 1 s"
        );
        assert!(rx.try_recv().is_err(), "one Event for 500 drops");

        // More drops of the same triple wait for the interval; other peers are their own.
        note_drops(&mut agg, 10, 3, t0 + Duration::from_secs(2));
        for peer in 11..15 {
            note_drops(&mut agg, peer, 1, t0 + Duration::from_secs(2));
        }
        agg.flush(t0 + Duration::from_secs(3));
        let mut got = Vec::new();
        while let Ok(n) = rx.try_recv() {
            got.push(n.message);
        }
        assert_eq!(
            got.len(),
            1,
            "2 per pod and minute, one used already: {got:?}"
        );
        assert!(got[0].contains("1 packet from 10.42.0."), "{got:?}");
        // A minute on, the pod may have two more: the web-0 aggregate (due again) and a peer.
        agg.flush(t0 + Duration::from_secs(62));
        let mut later = Vec::new();
        while let Ok(n) = rx.try_recv() {
            later.push(n.message);
        }
        assert_eq!(later.len(), 2, "{later:?}");
        assert_eq!(stats.kube_events_dropped.load(Relaxed), 0);
    }

    /// Each (pod, policy, peer, port) triple is its own Event series: kube-rs's recorder would
    /// otherwise fold every drop Event of a pod into the first one (it keys on the regarding
    /// object, reason and action, not on the note).
    #[test]
    fn each_triple_is_its_own_series() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut agg = Aggregator::new(Duration::from_secs(1), 60, tx, Stats::new());
        let t0 = Instant::now();
        note_drops(&mut agg, 10, 2, t0);
        note_drops(&mut agg, 11, 1, t0);
        agg.flush(t0 + Duration::from_secs(1));
        note_drops(&mut agg, 10, 5, t0 + Duration::from_secs(2));
        agg.flush(t0 + Duration::from_secs(3));
        let notes: Vec<Note> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(notes.len(), 3, "{notes:?}");
        let web = &notes
            .iter()
            .find(|n| n.message.starts_with("2 packets"))
            .unwrap();
        let other = &notes
            .iter()
            .find(|n| n.message.contains("10.42.0.11"))
            .unwrap();
        let again = &notes
            .iter()
            .find(|n| n.message.starts_with("5 packets"))
            .unwrap();
        assert_eq!(web.series, again.series);
        assert_ne!(web.series, other.series);
        assert_eq!(
            web.series,
            "shop/db-0 shop/deny-db ingress pod shop/web-0 5432/UDP"
        );
    }

    #[test]
    fn drops_without_a_protected_pod_are_not_noted() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut agg = Aggregator::new(Duration::from_secs(1), 4, tx, Stats::new());
        let payload = ipv4(17, 1, 0, 0, [10, 42, 0, 1], [10, 42, 0, 2], &udp(1, 2, b""));
        let mut buf = Vec::new();
        Packet {
            payload: &payload,
            ..Default::default()
        }
        .encode(&mut buf);
        let msg = NflogMsg::parse(&buf[NLMSG_HDRLEN..]).unwrap();
        let ev = event_of(msg);
        agg.note(&ev, Instant::now());
        agg.flush(Instant::now() + Duration::from_secs(5));
        assert!(rx.try_recv().is_err());
    }
}
