//! Everything the demo creates is registered here before (or as) it is created, and removed by
//! [`cleanup`]: at the end of the run, on an error or panic (the [`Guard`]), and on SIGINT,
//! SIGTERM or SIGHUP (a signal thread that cleans up and exits).
//!
//! One lock covers creating and removing, so a signal cannot clean up half-way through the
//! creation of a namespace or the start of a child and leave it behind. Children are stopped by
//! the PIDs the demo started them with, and reaped under the lock, so a PID is never signalled
//! after it could have been reused.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[derive(Default)]
struct State {
    netns: Vec<String>,
    children: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static STATE: Mutex<State> = Mutex::new(State {
    netns: Vec::new(),
    children: Vec::new(),
    dirs: Vec::new(),
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a network namespace with `ip netns add`, registered for removal.
pub fn add_netns(name: &str) -> Result<()> {
    let mut st = state();
    st.netns.push(name.to_string());
    super::node::run(Command::new("ip").args(["netns", "add", name]))
}

/// A scratch directory, removed at the end.
pub fn add_dir(dir: PathBuf) -> Result<()> {
    let mut st = state();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    st.dirs.push(dir);
    Ok(())
}

/// Starts a child process, registered to be stopped by its PID.
pub fn spawn(cmd: &mut Command, what: &str) -> Result<Child> {
    let mut st = state();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    st.children.push(child.id());
    Ok(child)
}

/// Waits up to `timeout` for a child registered with [`spawn`]; `None` if it still runs.
pub fn wait(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        {
            let mut st = state();
            if let Some(status) = child.try_wait()? {
                st.children.retain(|&p| p != child.id());
                return Ok(Some(status));
            }
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to a registered child that has not been reaped.
pub fn signal(child: &Child, signal: rustix::process::Signal) {
    let st = state();
    if st.children.contains(&child.id()) {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// Stops every child still running (SIGTERM, then SIGKILL after a second), deletes every
/// namespace and directory. Idempotent. Returns what it removed, for the closing message.
pub fn cleanup() -> Vec<String> {
    let mut st = state();
    let mut done = Vec::new();
    let children = std::mem::take(&mut st.children);
    for &pid in &children {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    for &pid in &children {
        let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
            continue;
        };
        loop {
            match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG) {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    let _ =
                        rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        done.push(format!("process {pid}"));
    }
    for ns in std::mem::take(&mut st.netns).into_iter().rev() {
        let _ = Command::new("ip")
            .args(["netns", "delete", &ns])
            .stderr(std::process::Stdio::null())
            .status();
        done.push(format!("netns {ns}"));
    }
    for dir in std::mem::take(&mut st.dirs) {
        let _ = std::fs::remove_dir_all(&dir);
        done.push(dir.display().to_string());
    }
    done
}

/// Cleans up when dropped: on return, on error, on panic.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        cleanup();
    }
}

/// Starts the thread that turns SIGINT, SIGTERM and SIGHUP into a cleanup and an exit
/// (130, 143, 129: 128 + the signal, as a shell reports it).
pub fn on_signals() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("signal runtime")?;
    // Registered here, before the demo creates anything, so no signal is missed.
    let (mut int, mut term, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::spawn(move || {
        let (name, code) = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
                _ = hup.recv() => ("SIGHUP", 129),
            }
        });
        eprintln!("\ndemo: {name}: removing everything the demo created");
        let removed = cleanup();
        eprintln!(
            "demo: removed {}",
            if removed.is_empty() {
                "nothing (nothing was left)".into()
            } else {
                removed.join(", ")
            }
        );
        std::process::exit(code);
    });
    Ok(())
}
