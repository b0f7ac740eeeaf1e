//! The daemon under test: [`Daemon::cmd`] builds its command line, [`DaemonCmd::start`] runs it
//! in a [`Sandbox`]'s namespace and waits until it has bound NFLOG group 100.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use super::process::{read_lossy, Proc};
use super::sandbox::{wait_nflog_bound, Sandbox};

pub(crate) const DAEMON: &str = env!("CARGO_BIN_EXE_netpol-nflogd");

/// `[kubernetes] mode = "off"`: standalone.
pub(crate) const STANDALONE: &str = "[kubernetes]\nmode = \"off\"\n";

/// A command line for netpol-nflogd in a sandbox; see [`Daemon::cmd`].
pub(crate) struct DaemonCmd<'a> {
    sb: &'a Sandbox,
    tag: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    quiet: bool,
    stdout: Option<Stdio>,
}

impl DaemonCmd<'_> {
    /// Names its files `TAG.stdout`, `TAG.stderr`, `TAG.toml` (default `daemon`).
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_string();
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<A: Into<OsString>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `FLAG PATH`
    pub fn file(self, flag: &str, path: &Path) -> Self {
        self.arg(flag).arg(path)
    }

    /// `--syslogemu-file PATH`
    pub fn syslogemu(self, path: &Path) -> Self {
        self.file("--syslogemu-file", path)
    }

    /// `--stats-file PATH`
    pub fn stats(self, path: &Path) -> Self {
        self.file("--stats-file", path)
    }

    /// `--metrics-listen 127.0.0.1:PORT`
    pub fn metrics(self, port: u16) -> Self {
        self.arg("--metrics-listen")
            .arg(format!("127.0.0.1:{port}"))
    }

    /// Writes `toml` to `TAG.toml` in the sandbox and passes `--config` with it.
    pub fn config(self, toml: &str) -> Self {
        let path = self.sb.path(&format!("{}.toml", self.tag));
        fs::write(&path, toml).expect("write daemon config");
        self.file("--config", &path)
    }

    /// `--stdout none`, `--tail-socket ''` and `--metrics-listen ''`, each unless the command
    /// line gives it (looked at when started).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Self {
        self.env.push((k.into(), v.as_ref().into()));
        self
    }

    /// Its standard output goes there instead of `TAG.stdout`.
    pub fn stdout(mut self, to: Stdio) -> Self {
        self.stdout = Some(to);
        self
    }

    /// Starts it without waiting for anything. The environment holds none of the test's
    /// Kubernetes or daemon variables, and `HOME` is the scratch directory (no
    /// `~/.kube/config`).
    pub fn spawn(self) -> Daemon {
        let DaemonCmd {
            sb,
            tag,
            mut args,
            env,
            quiet,
            stdout,
        } = self;
        if quiet {
            for flag in ["--stdout", "--tail-socket", "--metrics-listen"] {
                if !args.iter().any(|a| a == flag) {
                    let value = if flag == "--stdout" { "none" } else { "" };
                    args.extend([flag.into(), value.into()]);
                }
            }
        }
        let stdout_path = sb.path(&format!("{tag}.stdout"));
        let stderr = sb.path(&format!("{tag}.stderr"));
        let mut cmd = sb.exec(DAEMON);
        cmd.args(&args);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("NETPOL_NFLOG_")
                || k.starts_with("KUBERNETES_")
                || k == "KUBECONFIG"
                || k == "NODE_NAME"
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", &sb.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let stdout =
            stdout.unwrap_or_else(|| fs::File::create(&stdout_path).expect("stdout file").into());
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(fs::File::create(&stderr).expect("stderr file"));
        Daemon {
            proc_: Proc::spawn_with("netpol-nflogd", &mut cmd, &stderr),
            stdout: stdout_path,
            ns: sb.ns.clone(),
        }
    }

    /// Starts it and waits (up to 20 s) until NFLOG group 100 is bound in the namespace.
    pub fn start(self) -> Daemon {
        let mut d = self.spawn();
        wait_nflog_bound(&d.ns.clone(), &mut d.proc_, Duration::from_secs(20));
        d
    }
}

/// A running netpol-nflogd in a namespace; SIGKILLed (by PID) on drop if still running.
pub(crate) struct Daemon {
    pub proc_: Proc,
    pub stdout: PathBuf,
    ns: String,
}

impl Daemon {
    /// A command line: add flags, then [`DaemonCmd::start`] or [`DaemonCmd::spawn`].
    pub fn cmd(sb: &Sandbox) -> DaemonCmd<'_> {
        DaemonCmd {
            sb,
            tag: "daemon".into(),
            args: Vec::new(),
            env: Vec::new(),
            quiet: false,
            stdout: None,
        }
    }

    /// `Daemon::cmd(sb).tag(tag).args(args)` with `env`, started (the older call, still used
    /// by `tail`).
    #[allow(dead_code)]
    pub fn start(sb: &Sandbox, tag: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let cmd = Daemon::cmd(sb).tag(tag).args(args);
        env.iter().fold(cmd, |c, (k, v)| c.env(k, v)).start()
    }

    pub fn pid(&self) -> u32 {
        self.proc_.pid()
    }

    /// Whether it is gone (and with which status).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc_.exited()
    }

    /// Panics (quoting stderr) if it is gone.
    pub fn alive(&mut self, during: &str) {
        self.proc_.alive(during)
    }

    pub fn signal(&self, sig: libc::c_int) {
        self.proc_.signal(sig)
    }

    pub fn stderr_text(&self) -> String {
        self.proc_.stderr_text()
    }

    pub fn stdout_text(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Every line it printed on stdout, as JSON (panics on a line that is not JSON).
    pub fn json_records(&self) -> Vec<serde_json::Value> {
        self.stdout_text()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// SIGTERM, then waits up to 30 s for the drain and exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.proc_.terminate(Duration::from_secs(30))
    }

    /// SIGTERM, then waits at most `bound` for the exit; the status and how long it took.
    pub fn terminate_within(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        self.proc_.terminate_within(bound)
    }

    /// [`Daemon::terminate`], asserting a successful exit.
    pub fn terminate_ok(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "netpol-nflogd exited with {status}; stderr:\n{}",
            self.stderr_text()
        );
    }
}
