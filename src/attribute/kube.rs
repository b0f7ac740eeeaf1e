//! The Kubernetes watchers that feed the attribution [`Index`].
//!
//! In: a `kube::Client`. Out: a [`KubeHandle`] with the shared index, a channel of per-policy
//! limit changes, and a [`WatchState`] for readiness and metrics.
//!
//! Six `kube::runtime::watcher` streams (NetworkPolicies, Namespaces, Services, EndpointSlices
//! and Nodes cluster-wide, Pods on this node unless asked for all) run as tasks. Services and
//! EndpointSlices are cluster-wide because a pod of this node may send to any Service, and
//! kube-proxy's translation shows only the remote endpoint. Each event is turned into the index's compact
//! form at once; the full objects are never stored, unlike a reflector's. The watcher relists
//! on `410 Gone` and resumes dropped watches itself; `default_backoff` spaces out retries when
//! the API server is unreachable. [`start`] returns before the first list: logging never
//! waits for the API, events are simply attributed once the index has filled.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::index::{Index, InvalidAnnotation, PolicyUpdate};
use crate::limit::Limit;

/// Health of one watched resource. Written by its watcher task, read by readiness and metrics.
#[derive(Debug, Default)]
pub struct ResourceState {
    synced: AtomicBool,
    connected: AtomicBool,
    objects: AtomicU64,
    events: AtomicU64,
    restarts: AtomicU64,
    relists: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ResourceState {
    /// The first full list has been loaded (stays true through later relists: the index keeps
    /// answering with what it has).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The last thing the watcher reported was an event, not an error. A watch that reconnects
    /// quietly reads as disconnected until its next event.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Objects of this kind held by the index.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Watch events received (list items included).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Errors after which the watcher retried (after a backoff).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Full relists after the first list (after `410 Gone`, or a failed resume).
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    fn on_event<K>(&self, ev: &Event<K>) {
        self.connected.store(true, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        match ev {
            Event::Init if self.synced() => {
                self.relists.fetch_add(1, Ordering::Relaxed);
            }
            Event::InitDone => self.synced.store(true, Ordering::Relaxed),
            _ => {}
        }
    }

    fn on_error(&self, e: &watcher::Error) {
        self.connected.store(false, Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }
}

/// The health of the six watchers.
#[derive(Debug, Default)]
pub struct WatchState {
    pub policies: ResourceState,
    pub pods: ResourceState,
    pub namespaces: ResourceState,
    pub services: ResourceState,
    pub endpoint_slices: ResourceState,
    pub nodes: ResourceState,
}

impl WatchState {
    /// Every resource has been listed once: attribution is complete.
    pub fn synced(&self) -> bool {
        self.resources().iter().all(|(_, r)| r.synced())
    }

    /// Each resource with a fixed name for metrics labels (the API's plural).
    pub fn resources(&self) -> [(&'static str, &ResourceState); 6] {
        [
            ("networkpolicies", &self.policies),
            ("pods", &self.pods),
            ("namespaces", &self.namespaces),
            ("services", &self.services),
            ("endpointslices", &self.endpoint_slices),
            ("nodes", &self.nodes),
        ]
    }
}

/// What [`start`] returns. Dropping it does not stop the watchers; [`KubeHandle::stop`] does.
pub struct KubeHandle {
    pub index: Arc<RwLock<Index>>,
    /// `(policy key as the prefix writes it, limit)` whenever a key's annotation limit changes;
    /// `None` when the key falls back to the configured default (deleted, annotations removed).
    pub limit_updates: mpsc::UnboundedReceiver<(String, Option<Limit>)>,
    pub state: Arc<WatchState>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeHandle {
    /// Stops the watcher tasks.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the watchers and returns at once. Pods are watched on `node_name` only (a field
/// selector), or cluster-wide with `watch_all_pods` or when the node is unknown.
pub async fn start(client: Client, node_name: Option<String>, watch_all_pods: bool) -> KubeHandle {
    let mut idx = Index::new();
    idx.set_local_node(node_name.as_deref());
    let index = Arc::new(RwLock::new(idx));
    let state = Arc::new(WatchState::default());
    let (tx, limit_updates) = mpsc::unbounded_channel();

    let pods = pod_config(node_name.as_deref(), watch_all_pods);
    let feed = |which, limits| Feed {
        index: index.clone(),
        state: state.clone(),
        which,
        limits,
    };
    let tasks = vec![
        tokio::spawn(run(
            Api::<NetworkPolicy>::all(client.clone()),
            watcher::Config::default(),
            feed(|s| &s.policies, Some(tx)),
            |idx: &mut Index, ev: &Event<NetworkPolicy>| {
                let update = idx.policy_event(ev);
                (idx.counts().policies, update)
            },
        )),
        tokio::spawn(run(
            Api::<Pod>::all(client.clone()),
            pods,
            feed(|s| &s.pods, None),
            |idx: &mut Index, ev: &Event<Pod>| {
                idx.pod_event(ev);
                (idx.counts().pods, PolicyUpdate::default())
            },
        )),
        tokio::spawn(run(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            feed(|s| &s.namespaces, None),
            |idx: &mut Index, ev: &Event<Namespace>| {
                idx.namespace_event(ev);
                (idx.counts().namespaces, PolicyUpdate::default())
            },
        )),
        tokio::spawn(run(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            feed(|s| &s.services, None),
            |idx: &mut Index, ev: &Event<Service>| {
                idx.service_event(ev);
                (idx.counts().services, PolicyUpdate::default())
            },
        )),
        tokio::spawn(run(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            feed(|s| &s.endpoint_slices, None),
            |idx: &mut Index, ev: &Event<EndpointSlice>| {
                idx.endpoint_slice_event(ev);
                (idx.counts().endpoint_slices, PolicyUpdate::default())
            },
        )),
        tokio::spawn(run(
            Api::<Node>::all(client),
            watcher::Config::default(),
            feed(|s| &s.nodes, None),
            |idx: &mut Index, ev: &Event<Node>| {
                idx.node_event(ev);
                (idx.counts().nodes, PolicyUpdate::default())
            },
        )),
    ];
    KubeHandle {
        index,
        limit_updates,
        state,
        tasks,
    }
}

/// Only this node's pods: the daemon sees the packets of its own node, and a cluster-wide pod
/// watch costs every node the memory of every pod. Bookmarks are on by default in
/// `watcher::Config`, so resuming rarely needs a relist.
fn pod_config(node_name: Option<&str>, watch_all_pods: bool) -> watcher::Config {
    match node_name {
        Some(node) if !watch_all_pods => {
            watcher::Config::default().fields(&format!("spec.nodeName={node}"))
        }
        _ => {
            if !watch_all_pods {
                tracing::warn!("node name unknown: watching the pods of the whole cluster");
            }
            watcher::Config::default()
        }
    }
}

/// Where a watcher task writes.
struct Feed {
    index: Arc<RwLock<Index>>,
    state: Arc<WatchState>,
    which: fn(&WatchState) -> &ResourceState,
    /// Where policy limit changes go (the NetworkPolicy watcher only).
    limits: Option<mpsc::UnboundedSender<(String, Option<Limit>)>>,
}

/// One watcher: events go into the index (under the write lock, briefly), errors into the state.
/// The stream never ends: the watcher retries every error after the backoff.
async fn run<K, F>(api: Api<K>, config: watcher::Config, feed: Feed, mut apply: F)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(&mut Index, &Event<K>) -> (usize, PolicyUpdate),
{
    let kind = K::kind(&()).into_owned();
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(item) = stream.next().await {
        let state = (feed.which)(&feed.state);
        match item {
            Ok(ev) => {
                let (objects, update) = {
                    // A panic while holding the lock cannot leave a half-applied event behind
                    // that matters more than losing attribution, so recover from poisoning.
                    let mut idx = feed.index.write().unwrap_or_else(|p| p.into_inner());
                    apply(&mut idx, &ev)
                };
                if let Some(tx) = &feed.limits {
                    report_policy_update(update, tx);
                }
                state.objects.store(objects as u64, Ordering::Relaxed);
                state.on_event(&ev);
                if matches!(ev, Event::InitDone) {
                    tracing::info!(kind, objects, "Kubernetes watch synced");
                    // A list leaves its pages and the index's outgrown tables freed but kept
                    // by glibc: give them back once, after each (re)list.
                    crate::metrics::trim_heap();
                }
            }
            Err(e) => {
                if state.connected() || state.restarts() == 0 {
                    tracing::warn!(kind, error = %e, "Kubernetes watch failed; retrying with backoff");
                } else {
                    tracing::debug!(kind, error = %e, "Kubernetes watch failed again");
                }
                state.on_error(&e);
            }
        }
    }
}

fn report_policy_update(update: PolicyUpdate, tx: &mpsc::UnboundedSender<(String, Option<Limit>)>) {
    for bad in &update.invalid {
        warn_invalid(bad);
    }
    for change in update.limits {
        // The receiver is gone only when the daemon is shutting down.
        let _ = tx.send(change);
    }
}

/// Once per change of a bad value (the index reports it only then), never per packet.
fn warn_invalid(bad: &InvalidAnnotation) {
    tracing::warn!(
        namespace = %bad.policy.namespace,
        policy = %bad.policy.name,
        annotation = bad.annotation,
        // Debug formatting: an annotation value can hold a newline or an escape sequence.
        value = ?bad.value,
        error = %bad.error,
        "NetworkPolicy annotation is invalid; kube-router uses its defaults (10/minute, burst 10) for both values"
    );
}

/// A client from the environment: the in-cluster service account, else `$KUBECONFIG` or
/// `~/.kube/config`. `None` when none of them exists (the daemon then runs without context).
pub async fn client_from_env() -> anyhow::Result<Option<Client>> {
    use anyhow::Context as _;
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let kubeconfig = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("HOME")
            .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists());
    if !in_cluster && !kubeconfig {
        return Ok(None);
    }
    let config = kube::Config::infer()
        .await
        .context("cannot load the Kubernetes configuration")?;
    let client = Client::try_from(config).context("cannot build the Kubernetes client")?;
    Ok(Some(client))
}
