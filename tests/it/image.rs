//! The container image, built by `deploy/build-image.sh` and run with podman the way
//! `deploy/daemonset.yaml` runs it: root with every capability dropped but `NET_ADMIN`,
//! `no-new-privileges`, a read-only root filesystem (writable only where the DaemonSet has
//! volumes: `/run` as a 1 MiB tmpfs, `/var/log/ulog` as a bind mount of a scratch directory), the
//! ConfigMap's configuration mounted read-only at `/etc/netpol-nflog`, podman's default seccomp
//! profile (what `RuntimeDefault` means for CRI-O/containerd), the DaemonSet's memory and CPU
//! limits, and, for `hostNetwork`, a test network namespace with K3s-shaped NFLOG rules.
//!
//! Checked: the image holds what the README says and no shell; the daemon starts, holds exactly
//! `CAP_NET_ADMIN` under seccomp with `no_new_privs`, binds NFLOG group 100 and answers `/healthz`
//! and `/readyz` inside the namespace; every dropped packet is a line in the bind-mounted
//! syslogemu file (as many as the NFLOG rule counted) and a JSON record on stdout; `nflog-tail`
//! works through `podman exec` on the daemon's tail socket; SIGTERM (`podman stop`) drains what
//! was just sent and exits 0 well within `terminationGracePeriodSeconds`.
//!
//! The image: the test runs `deploy/build-image.sh --tag localhost/netpol-nflog:it-PID`, which
//! runs `cargo build --release --bins` first. On CI `.ci/test` has just built the release
//! binaries, so cargo finds them fresh and the image build takes seconds; on a machine without a
//! release build the test compiles one first (minutes). The integration tests' own binaries
//! (`CARGO_BIN_EXE_…`, target/debug) are not used: the image holds what ships. The tag, the
//! container and the namespace are removed at the end, pass or fail.
//!
//! Needs root, podman with runc (`bash .ci/setup` installs them), iproute2, iptables and curl.
//! podman runs with `--runtime runc` and explicit `--ulimit`s: crun refuses hybrid cgroup
//! machines, and podman's default limits can exceed the hard limits a CI machine allows.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::process::{output_within, proc_status, run_within};
use crate::support::sandbox::{nflog_row, POLICY_LOG_MATCHES};
use crate::support::Sandbox;

/// The DaemonSet's paths and limits, each checked against deploy/daemonset.yaml below.
const CONFIG_DIR: &str = "/etc/netpol-nflog";
const CONFIG_FILE: &str = "/etc/netpol-nflog/netpol-nflogd.toml";
const LOG_DIR: &str = "/var/log/ulog";
const TAIL_SOCKET: &str = "/run/netpol-nflog/tail.sock";
const METRICS_PORT: u16 = 9109;
/// CAP_NET_ADMIN is capability 12.
const NET_ADMIN_MASK: u64 = 1 << 12;
const NODE: &str = "it-node";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn podman(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.args(args);
    c
}

/// The container and image the test created; removed on drop, pass or fail (the namespace and
/// the scratch directory are the [`Sandbox`]'s).
struct Resources {
    container: Option<String>,
    image: Option<String>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Some(c) = &self.container {
            if std::thread::panicking() {
                if let Ok(out) = podman(&["logs", c]).output() {
                    eprintln!(
                        "container {c} stdout:\n{}\nstderr:\n{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            let _ = podman(&["rm", "--force", "--time", "0", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(i) = &self.image {
            let _ = podman(&["rmi", i])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The value of `key: VALUE` on the first line of `text` that has it.
fn yaml_scalar<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in deploy/daemonset.yaml"))
}

/// The ConfigMap's `netpol-nflogd.toml` (the block scalar under `data:`), as the pod sees it.
fn configmap_toml() -> String {
    let text = fs::read_to_string(root().join("deploy/configmap.yaml")).expect("configmap.yaml");
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "netpol-nflogd.toml: |");
    assert!(
        lines.next().is_some(),
        "no netpol-nflogd.toml in deploy/configmap.yaml"
    );
    let mut toml = String::new();
    for l in lines {
        if l.trim().is_empty() {
            toml.push('\n');
        } else if let Some(rest) = l.strip_prefix("    ") {
            toml.push_str(rest);
            toml.push('\n');
        } else {
            break;
        }
    }
    assert!(
        toml.contains("[source]") && toml.contains("groups = [100]"),
        "{toml}"
    );
    toml
}

/// Sends `count` UDP datagrams 127.0.0.1 → 127.0.0.1:`port` inside the namespace, each from a
/// fresh socket (a new source port: separate packets for the daemon's correlation). The DROP
/// rule refuses them (EPERM), which is expected.
fn send_udp(sb: &Sandbox, port: u16, count: usize) {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    sb.send_udp(lo, lo, port, count);
}

/// A K3s-shaped per-policy rule (kube-router's comment, limit and NFLOG group 100) for UDP to
/// `port`, then the DROP.
fn policy_rule(sb: &Sandbox, port: u16, policy: &str) {
    let port = port.to_string();
    let prefix = format!("DROP by policy {policy}");
    let m = ["-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", &port];
    sb.nflog_rule_pair(&m, &POLICY_LOG_MATCHES, Some(&prefix), &["DROP"]);
}

/// Packets the NFLOG rule for `port` counted (the first rule for the port: the DROP follows it).
fn nflog_counter(sb: &Sandbox, port: u16) -> u64 {
    sb.rule_counter("OUTPUT", &format!("dpt:{port} "))
}

fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits up to `limit` for `f` to hold; false if it never did.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
}

fn inspect(container: &str, format: &str) -> String {
    run_within(
        &mut podman(&["inspect", "--format", format, container]),
        Duration::from_secs(30),
    )
    .trim()
    .to_string()
}

/// `GET path` on the daemon's metrics port from inside the namespace: (status code, body).
fn http_get(sb: &Sandbox, path: &str) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{METRICS_PORT}{path}");
    let out = output_within(
        sb.exec("curl")
            .args(["-sS", "-m", "2", "-w", "\n%{http_code}", &url]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

#[test]
fn image_runs_like_the_daemonset() {
    // podman: a missing one is a failure with the fix, never a skip.
    let version = Command::new("podman").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "podman is not installed ({version:?}): `bash .ci/setup` installs it (apt-get install podman runc)"
    );

    // The DaemonSet's settings this test reproduces, so a change there fails here until the test
    // follows it.
    let ds = fs::read_to_string(root().join("deploy/daemonset.yaml")).expect("daemonset.yaml");
    for needle in [
        "hostNetwork: true",
        "runAsUser: 0",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "drop: [\"ALL\"]",
        "add: [\"NET_ADMIN\"]",
        "type: RuntimeDefault",
        "- --config",
        &format!("- {CONFIG_FILE}"),
        &format!("mountPath: {CONFIG_DIR}"),
        &format!("mountPath: {LOG_DIR}"),
        "mountPath: /run",
        "medium: Memory",
        "sizeLimit: 1Mi",
        "memory: 128Mi",
        "cpu: 500m",
        &format!("containerPort: {METRICS_PORT}"),
        "path: /healthz",
        "path: /readyz",
    ] {
        assert!(
            ds.contains(needle),
            "deploy/daemonset.yaml no longer has {needle:?}"
        );
    }
    let grace: u64 = yaml_scalar(&ds, "terminationGracePeriodSeconds")
        .parse()
        .expect("terminationGracePeriodSeconds");

    let pid = std::process::id();
    // The node: a namespace (`lo` up) and the scratch directory; dropped after `res`.
    let sb = Sandbox::new("image");
    let mut res = Resources {
        container: None,
        image: None,
    };

    // ---- The image ----------------------------------------------------------------------------
    let tag = match std::env::var("NETPOL_NFLOG_TEST_IMAGE") {
        Ok(given) if !given.is_empty() => {
            eprintln!("image: testing {given} (NETPOL_NFLOG_TEST_IMAGE), not building one");
            given
        }
        _ => {
            let tag = format!("localhost/netpol-nflog:it-{pid}");
            let started = Instant::now();
            res.image = Some(tag.clone());
            let out = output_within(
                Command::new(root().join("deploy/build-image.sh"))
                    .args(["--tag", &tag])
                    .current_dir(root()),
                Duration::from_secs(3000),
            );
            assert!(
                out.status.success(),
                "deploy/build-image.sh failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                stdout.lines().last(),
                Some(tag.as_str()),
                "build-image.sh's last line must be the image reference:\n{stdout}"
            );
            eprintln!("image: built {tag} in {:.1?}", started.elapsed());
            tag
        }
    };

    let meta = inspect(
        &tag,
        "{{.Size}}|{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}",
    );
    let fields: Vec<&str> = meta.split('|').collect();
    let size: u64 = fields[0].parse().expect("image size");
    eprintln!("image: {size} bytes, {meta}");
    assert_eq!(fields[1], "0:0", "image user");
    assert_eq!(fields[2], r#"["/usr/local/bin/netpol-nflogd"]"#);
    assert_eq!(fields[3], format!(r#"["--config","{CONFIG_FILE}"]"#));
    assert!(
        size < 64 << 20,
        "image is {size} bytes, expected well under 64 MiB"
    );

    // Its files: the two binaries, the loader and libraries, and the few run-time files; no shell.
    let lister = format!("netpol-nflog-it-ls-{pid}");
    res.container = Some(lister.clone());
    run_within(
        &mut podman(&["create", "--name", &lister, &tag]),
        Duration::from_secs(60),
    );
    let tar = output_within(&mut podman(&["export", &lister]), Duration::from_secs(60));
    assert!(tar.status.success(), "podman export failed");
    let files = tar_listing(&tar.stdout);
    run_within(&mut podman(&["rm", &lister]), Duration::from_secs(60));
    res.container = None;
    for want in [
        "usr/local/bin/netpol-nflogd",
        "usr/local/bin/nflog-tail",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "usr/share/zoneinfo/Europe/Berlin",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "image lacks {want}: {files:?}"
        );
    }
    assert!(
        files.iter().any(|f| f.ends_with("/libc.so.6")),
        "image lacks libc: {files:?}"
    );
    for unwanted in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/env"] {
        assert!(
            !files.iter().any(|f| f == unwanted),
            "image holds {unwanted}"
        );
    }
    eprintln!(
        "image files (zoneinfo left out): {:?}",
        files
            .iter()
            .filter(|f| !f.starts_with("usr/share/zoneinfo/"))
            .collect::<Vec<_>>()
    );

    // ---- The node: a namespace with kube-router's NFLOG rules --------------------------------
    let t = Duration::from_secs(10);
    policy_rule(&sb, 5432, "default/deny-db");
    policy_rule(&sb, 6379, "default/deny-cache");
    policy_rule(&sb, 8080, "default/deny-api");

    // The volumes: the ConfigMap (read-only), the host's log directory (DirectoryOrCreate).
    let config_dir = sb.path("config");
    let log_dir = sb.path("ulog");
    fs::create_dir_all(&config_dir).unwrap();
    fs::create_dir_all(&log_dir).unwrap();
    fs::write(config_dir.join("netpol-nflogd.toml"), configmap_toml()).unwrap();
    let syslogemu = log_dir.join("syslogemu.log");

    // ---- The container, as the DaemonSet's pod ------------------------------------------------
    let name = format!("netpol-nflog-it-{pid}");
    res.container = Some(name.clone());
    let network = format!("ns:/run/netns/{}", sb.ns);
    let config_mount = format!("{}:{CONFIG_DIR}:ro", config_dir.display());
    let log_mount = format!("{}:{LOG_DIR}", log_dir.display());
    let node_env = format!("NODE_NAME={NODE}");
    let started = Instant::now();
    run_within(
        &mut podman(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=1024:1024",
            // securityContext
            "--user",
            "0:0",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--read-only-tmpfs=false",
            // resources.limits
            "--memory",
            "128m",
            "--cpus",
            "0.5",
            // hostNetwork (the node's namespace, here the test's)
            "--network",
            &network,
            "--hostname",
            NODE,
            "--env",
            &node_env,
            // volumes
            "--tmpfs",
            "/run:rw,size=1m,mode=0755",
            "--volume",
            &log_mount,
            "--volume",
            &config_mount,
            &tag,
            "--config",
            CONFIG_FILE,
        ]),
        Duration::from_secs(60),
    );

    // Started: running, group 100 bound in the namespace, /healthz and /readyz answer.
    let ready = wait_for(Duration::from_secs(30), || {
        if inspect(&name, "{{.State.Running}}") != "true" {
            return true; // reported below
        }
        matches!(http_get(&sb, "/readyz"), Some((200, _)))
    });
    assert_eq!(
        inspect(&name, "{{.State.Running}}"),
        "true",
        "the container exited (code {}) under the DaemonSet's settings",
        inspect(&name, "{{.State.ExitCode}}")
    );
    assert!(
        ready,
        "/readyz did not answer 200 within 30 s: {:?}",
        http_get(&sb, "/readyz")
    );
    eprintln!("image: ready in {:.1?}", started.elapsed());
    let (code, body) = http_get(&sb, "/healthz").expect("/healthz answers");
    assert_eq!((code, body.trim()), (200, "ok"), "/healthz");
    assert!(
        nflog_row(&sb.ns).is_some(),
        "NFLOG group 100 is not bound in the namespace"
    );

    // What the daemon holds: CAP_NET_ADMIN only, no_new_privs, seccomp filter mode, uid 0.
    let daemon_pid: u32 = inspect(&name, "{{.State.Pid}}").parse().expect("PID");
    let status = |key| proc_status(daemon_pid, key);
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        let v = u64::from_str_radix(&status(key), 16).unwrap();
        assert_eq!(v, NET_ADMIN_MASK, "{key} {v:#x}: CAP_NET_ADMIN only");
    }
    for key in ["CapInh", "CapAmb"] {
        let v = u64::from_str_radix(&status(key), 16).unwrap();
        assert_eq!(v, 0, "{key}");
    }
    assert_eq!(status("NoNewPrivs"), "1");
    assert_eq!(status("Seccomp"), "2", "seccomp filter mode");
    assert!(status("Uid").starts_with("0\t"));
    let logs = output_within(&mut podman(&["logs", &name]), t);
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(
        stderr.contains("capabilities: kept CAP_NET_ADMIN only"),
        "the daemon did not confirm its capabilities:\n{stderr}"
    );

    // ---- Drops become lines ---------------------------------------------------------------------
    // Within the ConfigMap's per-policy rate limit (burst 10), so every drop is written.
    const DB: usize = 6;
    send_udp(&sb, 5432, DB);
    let logged = wait_for(Duration::from_secs(10), || {
        lines_with(&read_log(&syslogemu), "DPT=5432") >= DB
    });
    let text = read_log(&syslogemu);
    assert!(logged, "{DB} drops sent, the syslogemu file has:\n{text}");
    assert_eq!(nflog_counter(&sb, 5432), DB as u64, "NFLOG rule counter");
    assert_eq!(text.lines().count(), DB, "{text}");
    for l in text.lines() {
        assert!(
            l.contains(&format!(" {NODE} DROP by policy default/deny-db "))
                && l.contains("PROTO=UDP")
                && l.contains("DST=127.0.0.1"),
            "unexpected line: {l}"
        );
    }

    // ---- nflog-tail through podman exec, on the tail socket -----------------------------------
    // Following (no --last: the live stream is what `kubectl exec … nflog-tail` is for), started
    // before the drops it must print; --port keeps the earlier ones out.
    const API: usize = 3;
    let started = Instant::now();
    let count = API.to_string();
    let mut tail_cmd = podman(&[
        "exec",
        &name,
        "nflog-tail",
        "--socket",
        TAIL_SOCKET,
        "--no-reconnect",
        "--count",
        &count,
        "--port",
        "8080",
        "--output",
        "syslogemu",
    ]);
    let tail = std::thread::spawn(move || output_within(&mut tail_cmd, Duration::from_secs(30)));
    sleep(Duration::from_secs(2));
    send_udp(&sb, 8080, API);
    let tail = tail.join().expect("nflog-tail thread");
    let tail_out = String::from_utf8_lossy(&tail.stdout).into_owned();
    assert!(
        tail.status.success(),
        "nflog-tail via podman exec failed ({}):\n{tail_out}{}",
        tail.status,
        String::from_utf8_lossy(&tail.stderr)
    );
    eprintln!(
        "image: nflog-tail via podman exec in {:.1?}",
        started.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            lines_with(&read_log(&syslogemu), "DPT=8080") >= API
        }),
        "the file lacks the port 8080 drops"
    );
    let text = read_log(&syslogemu);
    let tail_lines: Vec<&str> = tail_out.lines().collect();
    let file_lines: Vec<&str> = text.lines().filter(|l| l.contains("DPT=8080")).collect();
    assert_eq!(
        tail_lines, file_lines,
        "nflog-tail's syslogemu lines equal the file's"
    );
    assert_eq!(nflog_counter(&sb, 8080), API as u64, "NFLOG rule counter");

    // ---- SIGTERM drains and exits 0 within the grace period -----------------------------------
    // Drops sent right before the stop are still in the kernel's batch (flush_timeout_ms) or
    // the daemon's correlation window: the drain must write them.
    const CACHE: usize = 5;
    send_udp(&sb, 6379, CACHE);
    let started = Instant::now();
    run_within(
        &mut podman(&["stop", "--time", &grace.to_string(), &name]),
        Duration::from_secs(grace + 60),
    );
    let stopped = started.elapsed();
    eprintln!("image: stopped in {stopped:.1?} (grace {grace} s)");
    assert_eq!(
        inspect(&name, "{{.State.ExitCode}}"),
        "0",
        "exit code after SIGTERM (137: killed after the grace period)"
    );
    assert!(
        stopped < Duration::from_secs(grace),
        "stopping took {stopped:?}, the grace period is {grace} s"
    );
    let text = read_log(&syslogemu);
    assert_eq!(nflog_counter(&sb, 6379), CACHE as u64, "NFLOG rule counter");
    assert_eq!(
        lines_with(&text, "DROP by policy default/deny-cache ")
            + lines_with(&text, "DROP by policy default/deny-db ")
            + lines_with(&text, "DROP by policy default/deny-api "),
        DB + API + CACHE,
        "every drop, also those sent right before SIGTERM:\n{text}"
    );
    assert_eq!(text.lines().count(), DB + API + CACHE, "{text}");

    // The stdout sink (the ConfigMap's second sink): one JSON record per packet.
    let logs = output_within(&mut podman(&["logs", &name]), t);
    let json = String::from_utf8_lossy(&logs.stdout);
    let records: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mentioning = |policy: &str| {
        records
            .iter()
            .filter(|r| r.to_string().contains(policy))
            .count()
    };
    assert_eq!(mentioning("deny-db"), DB, "JSON records on stdout:\n{json}");
    assert_eq!(
        mentioning("deny-api"),
        API,
        "JSON records on stdout:\n{json}"
    );
    assert_eq!(
        mentioning("deny-cache"),
        CACHE,
        "JSON records on stdout:\n{json}"
    );

    // The syslogemu file is root's, as on the node.
    let meta = fs::metadata(&syslogemu).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    drop(res);
}

/// The member names of a tar archive (leading `./` and trailing `/` removed).
fn tar_listing(tar: &[u8]) -> Vec<String> {
    let mut child = Command::new("tar")
        .args(["-tf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    let mut stdin = child.stdin.take().unwrap();
    let data = tar.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("tar");
    writer.join().unwrap();
    assert!(out.status.success(), "tar -t failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect()
}
