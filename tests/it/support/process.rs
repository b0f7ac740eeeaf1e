//! Running commands and child processes: checked output (with a time limit if need be), lossy
//! file reads, signals by PID, and [`Proc`], a child that is killed (by PID) when dropped.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait::Wait;

/// Runs `cmd` (stdin closed) to completion; panics with its output unless it succeeds; returns
/// its standard output.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    check(cmd, out)
}

/// [`run`] with `input` on standard input.
pub(crate) fn run_stdin(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    check(cmd, out)
}

/// Runs `cmd` (stdin closed) to completion within `limit`, killing it and panicking with what
/// it printed past that: its output, whatever its status.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let t_out = drain(Box::new(child.stdout.take().unwrap()));
    let t_err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&t_out.join().unwrap()),
                String::from_utf8_lossy(&t_err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// [`run`] within `limit` ([`output_within`]).
pub(crate) fn run_within(cmd: &mut Command, limit: Duration) -> String {
    let out = output_within(cmd, limit);
    check(cmd, out)
}

fn check(cmd: &Command, out: Output) -> String {
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file's text (invalid UTF-8 replaced), or `(the error)` in its place.
pub(crate) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("({e})"))
}

/// Newlines in a file (0 when it does not exist).
pub(crate) fn count_newlines(path: &Path) -> u64 {
    fs::read(path)
        .map(|d| d.iter().filter(|&&b| b == b'\n').count() as u64)
        .unwrap_or(0)
}

/// `kill(pid, sig)`, asserting it worked.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of a child this test started and has not reaped, so the PID
    // cannot have been reused.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A line of `/proc/PID/status` (`field:` stripped, trimmed).
pub(crate) fn proc_status(pid: u32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// A child process, SIGKILLed (by PID) on drop if still running. Its standard error goes to a
/// file, quoted when something about it fails.
pub(crate) struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed, stdout and stderr into the file `stderr` (`ip netns
    /// exec`, `unshare` and `sh -c 'exec …'` all exec, so the PID is the program's).
    pub fn spawn(name: &str, cmd: &mut Command, stderr: &Path) -> Proc {
        let err = fs::File::create(stderr).expect("create stderr file");
        cmd.stdout(err.try_clone().expect("dup stderr file"));
        Proc::spawn_with(name, cmd.stderr(err), stderr)
    }

    /// Starts `cmd` as configured (stdin closed unless set), its stderr already pointing at
    /// the file `stderr`.
    pub fn spawn_with(name: &str, cmd: &mut Command, stderr: &Path) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            stderr: stderr.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process running").id()
    }

    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Whether the process is gone (and with which status); a process that is gone is reaped
    /// and forgotten.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let st = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Panics (quoting stderr) if the process is gone.
    pub fn alive(&mut self, during: &str) {
        if let Some(st) = self.exited() {
            panic!(
                "{} died ({st}) {during}; stderr:\n{}",
                self.name,
                self.stderr_text()
            );
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid(), sig);
    }

    /// Waits up to `timeout` for the exit (SIGKILL and a panic after that); returns the status
    /// and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        let (child, stderr) = (self.child.as_mut().expect("process running"), &self.stderr);
        let st = Wait::up_to(timeout).until(format_args!("{} to exit", self.name), || {
            child
                .try_wait()
                .expect("try_wait")
                .ok_or_else(|| format!("still running; stderr:\n{}", read_lossy(stderr)))
        });
        self.child = None;
        (st, t0.elapsed())
    }

    /// SIGTERM, then [`Proc::wait_exit`].
    pub fn terminate_within(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// If it still runs: SIGTERM, up to `timeout` for the exit, else SIGKILL. Never panics.
    pub fn stop(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of a child we have not reaped yet, so it cannot be reused.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to `timeout`; the status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.terminate_within(timeout).0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
