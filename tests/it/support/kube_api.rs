//! The fake Kubernetes API server inside a network namespace, and a kubeconfig pointing at it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::sandbox::spawn_in;
use crate::fake_api::FakeApi;

/// A [`FakeApi`] whose listener (and every connection) lives in a namespace: its tokio runtime
/// runs on a thread that entered the namespace before binding. Derefs to the [`FakeApi`].
pub(crate) struct NsApi {
    api: Option<FakeApi>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsApi {
    /// Serves on `127.0.0.1:port` in the namespace `ns`.
    pub fn start(ns: &str, port: u16) -> NsApi {
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = spawn_in(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let api = FakeApi::start_on(port).await;
                let _ = tx.send(api);
                let _ = stopped.await;
            });
        });
        let api = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake API server started");
        NsApi {
            api: Some(api),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl std::ops::Deref for NsApi {
    type Target = FakeApi;
    fn deref(&self) -> &FakeApi {
        self.api.as_ref().expect("running")
    }
}

impl Drop for NsApi {
    fn drop(&mut self) {
        drop(self.api.take());
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `DIR/kubeconfig` for `http://127.0.0.1:PORT` (no credentials); its path.
pub(crate) fn write_kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}
