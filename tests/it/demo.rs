//! `netpol-nflogd demo`: what a newcomer sees after `bash .ci/demo`, and that it leaves nothing
//! behind, also when interrupted.
//!
//! The demo names everything it makes after its PID (`nfdemo-<pid>-…` network namespaces, the
//! scratch directory `$TMPDIR/nfdemo-<pid>`, whose paths the daemon's and nflog-tail's command
//! lines carry), so what is left is found by that tag.
//!
//! Needs root, `ip`, `iptables`, `ipset` and bridge netfilter, as the demo does.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn demo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netpol-nflogd"));
    c.arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn wait_up_to(child: &mut Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Network namespaces, processes and files the demo with this PID left behind.
fn leftovers(pid: u32) -> Vec<String> {
    let tag = format!("nfdemo-{pid}");
    let mut left = Vec::new();
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.starts_with(&format!("{tag}-")) {
            left.push(format!("netns {line}"));
        }
    }
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&tag) {
            left.push(format!(
                "process {}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    let dir = std::env::temp_dir().join(&tag);
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

#[test]
fn demo_shows_policies_pods_suppression_and_tail_then_cleans_up() {
    let start = Instant::now();
    let mut child = demo().spawn().expect("start the demo");
    let pid = child.id();
    let mut out = String::new();
    let mut err = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    stdout.read_to_string(&mut out).unwrap();
    let status = wait_up_to(&mut child, Duration::from_secs(60));
    err.push_str(&errs.join().unwrap());
    let elapsed = start.elapsed();
    let ctx = format!("stdout:\n{out}\nstderr:\n{err}");
    assert!(status.success(), "demo exit {status}\n{ctx}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");

    let lines: Vec<&str> = out.lines().collect();
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));

    // Each: what must be shown, as strings that must all be on one line of the output.
    let shown: [(&str, &[&str]); 7] = [
        // syslogemu: ulogd2's lines, the truncated prefix and the pod chain's empty one.
        (
            "syslogemu line with the truncated prefix",
            &[
                " DROP by policy payments-production/restrict-ingress-to-ledger-s IN=cni0 OUT=cni0 ",
                "DPT=9090",
            ],
        ),
        (
            "empty-prefix line",
            &["  IN=cni0 OUT=cni0 ", "SRC=10.42.0.21 DST=10.42.0.20"],
        ),
        // JSON: the truncated name resolved to the one policy, with pods, workloads, direction.
        (
            "JSON record of the truncated name",
            &[
                r#""oob.prefix":"DROP by policy payments-production/restrict-ingress-to-ledger-s""#,
                r#""name":"restrict-ingress-to-ledger-service-from-gateways""#,
                r#""resolved":true"#,
                r#""direction":"ingress""#,
                r#""pod":"gateway-5b8f6c7d94-m2x4q""#,
                r#""pod":"ledger-6d4c9b8f75-q4z8n""#,
                r#""workload":"ledger","workload_kind":"Deployment""#,
            ],
        ),
        (
            "egress drop",
            &[r#""name":"web-egress""#, r#""resolved":true"#, r#""direction":"egress""#],
        ),
        (
            "default deny, from the pod chain",
            &[
                r#""policy_source":"pod-chain""#,
                r#""name":"default-deny""#,
                r#""resolved":true"#,
                r#""direction":"ingress""#,
            ],
        ),
        (
            "ClusterIP drop reaches db-0",
            &[
                r#""name":"allow-web-to-db""#,
                r#""pod":"db-0""#,
                r#""workload":"db","workload_kind":"StatefulSet""#,
            ],
        ),
        // The annotated policy's suppression summary.
        (
            "suppression summary",
            &[
                r#""type":"suppressed""#,
                r#""policy":"shop/allow-web-to-db""#,
                r#""suppressed":2"#,
            ],
        ),
    ];
    for (what, needles) in shown {
        assert!(has(needles), "{what}\n{ctx}");
    }
    assert!(
        !has(&[r#""resolved":false"#]),
        "every policy resolved\n{ctx}"
    );
    assert!(
        !has(&[r#""direction":null"#]),
        "every direction known\n{ctx}"
    );

    // nflog-tail's compact view, after its heading.
    let tail_at = out
        .find("== nflog-tail")
        .unwrap_or_else(|| panic!("nflog-tail section\n{ctx}"));
    let tail = &out[tail_at..];
    let tail_has = |needles: &[&str]| tail.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        tail_has(&["shop/web-egress 10.42.0.10:", "TCP SYN egress"])
            && tail_has(&["shop/allow-web-to-db ", "(shop/db-0)", "TCP SYN ingress"]),
        "nflog-tail's compact lines\n{ctx}"
    );

    // The next steps, and the time.
    for cmd in [
        "kubectl apply -k deploy/",
        "nflog-tail",
        "fluent-bit -c parsers/fluent-bit.conf",
    ] {
        assert!(
            out[out.find("== Next").expect("next steps")..].contains(cmd),
            "next step {cmd}\n{ctx}"
        );
    }
    assert!(out.contains("(demo finished in "), "elapsed time\n{ctx}");

    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind\n{ctx}");
}

/// Interrupted while its daemon runs (SIGINT, as Ctrl-C) or while it builds the node (SIGTERM):
/// it stops its children by PID, deletes its namespaces and scratch directory, and exits 128+N.
#[test]
fn demo_interrupted_cleans_up() {
    for (signal, after, code) in [
        (libc::SIGINT, "watches synced", 130),
        (libc::SIGTERM, "building a K3s-shaped node", 143),
    ] {
        let mut child = demo().spawn().expect("start the demo");
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(after) {
                break;
            }
        }
        assert!(seen.contains(after), "demo never said {after:?}:\n{seen}");
        if signal == libc::SIGINT {
            let left = leftovers(pid);
            assert!(
                left.iter().any(|l| l.starts_with("process"))
                    && left.iter().any(|l| l.starts_with("netns")),
                "the daemon and the namespaces exist before the signal: {left:?}"
            );
        }
        // SAFETY: kill(2) on our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
        let rest =
            std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        let status = wait_up_to(&mut child, Duration::from_secs(20));
        let rest = rest.join().unwrap();
        assert_eq!(
            status.code(),
            Some(code),
            "exit after signal {signal}\n{seen}{rest}"
        );
        assert!(
            rest.contains("removing everything the demo created"),
            "{rest}"
        );
        assert_eq!(
            leftovers(pid),
            Vec::<String>::new(),
            "left behind after signal {signal}\n{seen}{rest}"
        );
    }
}
