//! `nflog-tail` on the real kernel and in a real terminal.
//!
//! * pcap interoperability: `tcpdump -i nflog:100 -w` captures the conformance traffic; replayed
//!   with `nflog-tail -r F -o syslogemu` it gives ulogd2's lines for the same traffic, except the
//!   timestamp column and the interface names (a pcap carries indexes: `IN=if3` where ulogd2
//!   wrote `IN=a0`; the test maps each name to its index). `-w` writes a pcap that tshark reads
//!   with prefixes and addresses intact.
//! * filters on real traffic: `--direct` in a namespace with K3s-shaped rules, then every filter
//!   (and some combinations) over what it recorded.
//! * the interactive view in tmux while traffic flows: events, top-table counts, pause, filter,
//!   quit restoring the terminal.
//! * the interactive view ended by SIGTERM or SIGINT: the terminal is restored (normal screen,
//!   cursor shown) and the exit status is the signal's; a replayed file says `REPLAY`/`END`.
//! * the daemon socket (a fake server speaking the tail protocol): `--last`, control records,
//!   reconnecting, `--no-reconnect`.
//! * the real daemon: a packet two rules log gives the daemon two syslogemu lines; `nflog-tail
//!   -o syslogemu` prints the same two and `-w` writes two pcap records.
//! * malformed input: a clear error naming file and record, exit code 1, no panic; endless
//!   input (`/dev/zero`) ends quickly with an error.
//!
//! Needs root, iproute2, iptables, tcpdump, tshark, tmux, ulogd2 and python3-scapy (the
//! conformance traffic).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::metrics::{Daemon, Sandbox};
use crate::support::Wait;

use super::conformance::{
    diff, in_netns, nflog_row, read_lossy, run, run_stdin, split_lines, ulogd_conf, wait_bound,
    wait_queue_empty, wait_unbound, Proc, Scratch, Topology, EXPECTED_LINES, EXPECTED_SENT,
    HOSTNAME,
};

const TAIL: &str = env!("CARGO_BIN_EXE_nflog-tail");

fn tail(args: &[&str]) -> Output {
    Command::new(TAIL)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run nflog-tail")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "nflog-tail failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name → index` of the interfaces in `ns`.
fn ifindexes(ns: &str) -> HashMap<String, u32> {
    run(Command::new("ip").args(["-n", ns, "-o", "link", "show"]))
        .lines()
        .filter_map(|l| {
            let mut f = l.split(": ");
            let idx = f.next()?.trim().parse().ok()?;
            let name = f.next()?.split('@').next()?.to_string();
            Some((name, idx))
        })
        .collect()
}

/// ulogd2's line with `IN=name`/`OUT=name` turned into the `IN=ifN` a pcap replay can print.
fn with_indexes(line: &str, idx: &HashMap<String, u32>) -> String {
    line.split(' ')
        .map(|tok| {
            for key in ["IN=", "OUT="] {
                if let Some(name) = tok.strip_prefix(key) {
                    if let Some(i) = idx.get(name) {
                        return format!("{key}if{i}");
                    }
                }
            }
            tok.to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn tail_pcap_replay_matches_ulogd2_and_tshark_reads_our_pcap() {
    let scratch = Scratch::new("tail-pcap");
    let topo = Topology::new(&scratch);
    topo.install_rules();

    // The oracle, as in conformance.rs.
    let ulogd_out = scratch.path("ulogd.syslogemu");
    let conf = scratch.path("ulogd.conf");
    fs::write(&conf, ulogd_conf(&ulogd_out, &scratch.path("ulogd.log"))).expect("write ulogd.conf");
    let mut ulogd = Proc::spawn(
        "ulogd",
        in_netns(&topo.router).args([
            "unshare",
            "--uts",
            "sh",
            "-c",
            &format!("hostname {HOSTNAME} && exec ulogd -c {}", conf.display()),
        ]),
        &scratch.path("ulogd.stderr"),
    );
    wait_bound(&topo.router, &mut ulogd);
    assert_eq!(topo.send_traffic(), EXPECTED_SENT);
    sleep(Duration::from_millis(1500));
    wait_queue_empty(&topo.router);
    sleep(Duration::from_millis(300));
    let _ = ulogd.terminate(Duration::from_secs(5));
    wait_unbound(&topo.router);

    // The same traffic through tcpdump's NFLOG capture.
    let capture = scratch.path("capture.pcap");
    let mut tcpdump = Proc::spawn(
        "tcpdump",
        in_netns(&topo.router)
            .args(["tcpdump", "-U", "-i", "nflog:100", "-w"])
            .arg(&capture),
        &scratch.path("tcpdump.stderr"),
    );
    wait_bound(&topo.router, &mut tcpdump);
    assert_eq!(topo.send_traffic(), EXPECTED_SENT);
    sleep(Duration::from_millis(1500));
    wait_queue_empty(&topo.router);
    sleep(Duration::from_millis(300));
    let _ = tcpdump.terminate(Duration::from_secs(5));

    let replay = tail(&[
        "-r",
        capture.to_str().unwrap(),
        "-o",
        "syslogemu",
        "--hostname",
        HOSTNAME,
    ]);
    let ours = split_lines(stdout_of(&replay).as_bytes(), "nflog-tail -r");
    let reference = split_lines(&fs::read(&ulogd_out).expect("read ulogd output"), "ulogd2");
    assert_eq!(
        reference.len(),
        EXPECTED_LINES,
        "the ulogd2 reference run is broken"
    );
    let idx = ifindexes(&topo.router);
    let reference: Vec<String> = reference
        .iter()
        .map(|l| with_indexes(&l[16..], &idx))
        .collect();
    let ours: Vec<String> = ours.iter().map(|l| l[16..].to_string()).collect();
    assert!(
        reference == ours,
        "replayed pcap differs from ulogd2 ('-' ulogd2 with IN=/OUT= as indexes, '+' nflog-tail):\n{}\nkept in {}",
        diff(&reference, &ours),
        scratch.dir.display()
    );

    // -w: what we write, tshark reads as it reads tcpdump's own capture.
    let ours_pcap = scratch.path("ours.pcap");
    let w = tail(&[
        "-r",
        capture.to_str().unwrap(),
        "-w",
        ours_pcap.to_str().unwrap(),
    ]);
    stdout_of(&w);
    assert!(String::from_utf8_lossy(&w.stderr).contains(&format!("wrote {EXPECTED_LINES} packets")));
    let fields = |f: &Path| {
        run(Command::new("tshark").arg("-r").arg(f).args([
            "-T",
            "fields",
            "-e",
            "nflog.prefix",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.dst",
        ]))
    };
    let (theirs, written) = (fields(&capture), fields(&ours_pcap));
    assert_eq!(written.lines().count(), EXPECTED_LINES);
    assert_eq!(
        theirs, written,
        "tshark reads our pcap differently from tcpdump's"
    );
    assert!(
        written.contains("DROP by policy default/deny-all\t10.77.1.1\t10.77.1.2"),
        "{written}"
    );
    assert!(written.contains("spaced prefix: \t"), "{written}");
    assert!(
        written.contains("DROP by policy default/deny-all\t\t\tfd00:77:1::1\tfd00:77:1::2"),
        "{written}"
    );
    // And the written file replays to the same lines.
    let again = stdout_of(&tail(&[
        "-r",
        ours_pcap.to_str().unwrap(),
        "-o",
        "syslogemu",
        "--hostname",
        HOSTNAME,
    ]));
    assert_eq!(again, stdout_of(&replay));
}

/// A namespace with K3s-shaped NFLOG rules on OUTPUT (lo only), removed with `scratch`.
fn rules_namespace(scratch: &Scratch) -> String {
    let ns = scratch.netns("t");
    run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
    let log = "-j NFLOG --nflog-group 100";
    let v4 = format!(
        "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n\
         -A OUTPUT -p udp --dport 53 {log} --nflog-prefix \"DROP by policy kube-system/allow-dns\"\n\
         -A OUTPUT -p tcp --syn --dport 5432 {log} --nflog-prefix \"DROP by policy db/deny-db\"\n\
         -A OUTPUT -p icmp --icmp-type echo-request {log}\n\
         COMMIT\n"
    );
    let v6 = format!(
        "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n\
         -A OUTPUT -p udp --dport 53 {log} --nflog-prefix \"DROP by policy kube-system/allow-dns\"\n\
         -A OUTPUT -p tcp --syn --dport 5432 {log} --nflog-prefix \"DROP by policy db/deny-db\"\n\
         -A OUTPUT -p ipv6-icmp --icmpv6-type echo-request {log} --nflog-prefix \"custom prefix\"\n\
         COMMIT\n"
    );
    run_stdin(in_netns(&ns).arg("iptables-restore"), &v4);
    run_stdin(in_netns(&ns).arg("ip6tables-restore"), &v6);
    ns
}

/// Events per round: UDP/53 ×3 + TCP/5432 ×2 + ICMP echo over IPv4, UDP/53 + TCP/5432 + ICMPv6
/// echo over IPv6.
const ROUND: usize = 9;

fn send_round(ns: &str) {
    let script = "import socket\n\
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        for _ in range(3): u.sendto(b'q', ('127.0.0.1', 53))\n\
        u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
        u6.sendto(b'q', ('::1', 53))\n\
        for fam, addr, n in ((socket.AF_INET, '127.0.0.1', 2), (socket.AF_INET6, '::1', 1)):\n\
        \x20   for _ in range(n):\n\
        \x20       t = socket.socket(fam, socket.SOCK_STREAM)\n\
        \x20       try: t.connect((addr, 5432))\n\
        \x20       except OSError: pass\n\
        \x20       t.close()\n\
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n\
        r.sendto(bytes([8, 0, 0xf7, 0xfe, 0, 1, 0, 0]), ('127.0.0.1', 0))\n\
        r6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
        r6.sendto(bytes([128, 0, 0, 0, 0, 1, 0, 1]), ('::1', 0))\n";
    run(in_netns(ns).args(["/usr/bin/python3", "-c", script]));
}

/// Starts `nflog-tail --direct ARGS` in `ns` and waits until it holds the group.
fn direct(scratch: &Scratch, ns: &str, name: &str, args: &[&str]) -> (Child, std::path::PathBuf) {
    let out = scratch.path(name);
    let file = fs::File::create(&out).expect("create output");
    let err = scratch.path(&format!("{name}.stderr"));
    let child = in_netns(ns)
        .arg(TAIL)
        .arg("--direct")
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn nflog-tail --direct");
    let mut proc_ = Child(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nflog_row(ns).is_none() {
        let exited = proc_.exited();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "nflog-tail --direct did not bind (exit: {exited:?}): {}",
            read_lossy(&err)
        );
        sleep(Duration::from_millis(20));
    }
    (proc_, out)
}

/// A process of ours, killed (by PID) on drop.
struct Child(std::process::Child);

impl Child {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nflog-tail ARGS` running, its output in the sandbox's `NAME` and `NAME.stderr`.
fn follow_socket(sb: &Sandbox, name: &str, args: &[&str]) -> Child {
    let file = |n: &str| fs::File::create(sb.path(n)).expect("output file");
    let child = Command::new(TAIL)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file(name))
        .stderr(file(&format!("{name}.stderr")))
        .spawn()
        .expect("spawn nflog-tail");
    Child(child)
}

fn lines(text: &str) -> usize {
    text.lines().count()
}

#[test]
fn tail_filters_on_real_traffic() {
    let scratch = Scratch::new("tail-filters");
    let ns = rules_namespace(&scratch);

    // Everything --direct sees, as JSON; filtered below.
    let pcap = scratch.path("events.pcap");
    let (recorder, events) = direct(
        &scratch,
        &ns,
        "events.json",
        &["-o", "json", "-w", pcap.to_str().unwrap()],
    );
    send_round(&ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&read_lossy(&events)) < ROUND {
        assert!(
            Instant::now() < deadline,
            "direct mode saw too few events:\n{}",
            read_lossy(&events)
        );
        sleep(Duration::from_millis(50));
    }
    drop(recorder);
    wait_unbound(&ns);

    // A second binder is refused with a clear reason.
    let (_holder, _) = direct(&scratch, &ns, "holder.txt", &[]);
    let busy = Command::new("ip")
        .args(["netns", "exec", &ns, TAIL, "--direct"])
        .output()
        .expect("run");
    assert_eq!(busy.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains("NFLOG group 100 is already bound by another process"),
        "{stderr}"
    );
    drop(_holder);
    wait_unbound(&ns);

    // --direct with filters and --count exits by itself.
    let (mut counted, counted_out) = direct(
        &scratch,
        &ns,
        "counted.txt",
        &["--port", "5432", "--ip", "::1", "-c", "1"],
    );
    send_round(&ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "--count 1 did not stop nflog-tail"
        );
        sleep(Duration::from_millis(50));
    }
    let counted_text = read_lossy(&counted_out);
    assert_eq!(lines(&counted_text), 1, "{counted_text}");
    assert!(
        counted_text.contains("db/deny-db [::1]:")
            && counted_text.contains(" [loopback] → [::1]:5432 [loopback] TCP SYN"),
        "{counted_text}"
    );

    let recorded = read_lossy(&events);
    assert_eq!(lines(&recorded), ROUND, "{recorded}");
    for line in recorded.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("direct -o json writes JSON");
        assert_eq!(v["oob.out"], "lo", "{line}");
    }

    // Filters over the pcap --direct wrote (the JSON above has no syslogemu line to replay).
    let events = pcap.to_str().unwrap();
    let count = |filters: &[&str]| {
        let mut args = vec!["-r", events];
        args.extend_from_slice(filters);
        lines(&stdout_of(&tail(&args)))
    };
    for (filters, want) in [
        (&["--port", "5432"][..], 3),
        (&["--port", "53", "--port", "5432"], 7),
        (&["--protocol", "udp"], 4),
        (&["--protocol", "icmp"], 2),
        (&["--protocol", "icmpv6"], 1),
        (&["--policy", "db/deny-db"], 3),
        (&["--policy", "allow-dns"], 4),
        (&["--namespace", "db"], 3),
        (&["--namespace", "kube-system", "--ip", "::1"], 1),
        (&["--ip", "127.0.0.1"], 6),
        (&["--from-ip", "::1"], 3),
        (&["--to-ip", "127.0.0.0/8"], 6),
        (&["--prefix", "DROP by"], 7),
        (&["--prefix", "custom"], 1),
        (
            &["--protocol", "tcp", "--to-ip", "::1", "--port", "5432"],
            1,
        ),
        // Direction and pods come from the daemon's Kubernetes context; raw NFLOG has neither.
        (&["--direction", "egress"], 0),
        (&["--pod", "web"], 0),
    ] {
        assert_eq!(
            count(filters),
            want,
            "nflog-tail -r events.json {}",
            filters.join(" ")
        );
    }

    // The same through syslogemu lines.
    let syslog = scratch.path("events.syslogemu");
    fs::write(
        &syslog,
        stdout_of(&tail(&["-r", events, "-o", "syslogemu"])),
    )
    .expect("write syslogemu");
    let syslog = syslog.to_str().unwrap();
    assert_eq!(
        lines(&stdout_of(&tail(&[
            "-r", syslog, "--port", "5432", "--ip", "::1"
        ]))),
        1
    );
    assert_eq!(
        lines(&stdout_of(&tail(&["-r", syslog, "--policy", "allow-dns"]))),
        4
    );
    assert_eq!(lines(&stdout_of(&tail(&["-r", syslog, "--last", "2"]))), 2);
}

/// A tmux server of our own (`-L`), so nothing else's sessions are touched.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        run(self.cmd().args(["capture-pane", "-p", "-t", "tail"]))
    }

    fn keys(&self, keys: &[&str]) {
        run(self.cmd().args(["send-keys", "-t", "tail"]).args(keys));
    }

    /// Waits until the screen shows `text`.
    fn wait_for(&self, text: &str) -> String {
        self.wait_until(text, |s| s.contains(text))
    }

    /// Waits until `ok(screen)`; `what` names it in the failure.
    fn wait_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

/// The `col`-th word of the top-table row whose first word starts with `key`.
fn count_of<'s>(screen: &'s str, key: &str, col: usize) -> Option<&'s str> {
    let line = screen.lines().find(|l| l.contains(&format!("│{key}")))?;
    line.split(['│', ' ']).filter(|w| !w.is_empty()).nth(col)
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

#[test]
fn tail_interactive_in_a_real_terminal() {
    let scratch = Scratch::new("tail-tui");
    let ns = rules_namespace(&scratch);
    let tmux = Tmux {
        socket: format!("nflog-tail-test-{}", std::process::id()),
    };
    let shell = format!("ip netns exec {ns} {TAIL} -i --direct; echo EXIT=$?; sleep 600");
    run(tmux
        .cmd()
        .args(["new-session", "-d", "-s", "tail", "-x", "200", "-y", "50"])
        .arg(shell));
    let deadline = Instant::now() + Duration::from_secs(10);
    while nflog_row(&ns).is_none() {
        assert!(
            Instant::now() < deadline,
            "nflog-tail -i did not bind:\n{}",
            tmux.screen()
        );
        sleep(Duration::from_millis(50));
    }
    tmux.wait_for("direct: NFLOG group 100");

    // A frame can be captured half drawn: wait until every part of it agrees.
    send_round(&ns);
    tmux.wait_until("9 events with their top-policy counts", |s| {
        s.contains("9 events  LIVE")
            && s.contains("db/deny-db 127.0.0.1:")
            && count_of(s, "kube-system/allow-dns", 1) == Some("4")
            && count_of(s, "db/deny-db", 1) == Some("3")
            && count_of(s, "(pod", 2) == Some("1")
    });

    // Pause: new events are held, not shown, until resume.
    tmux.keys(&["p"]);
    tmux.wait_for("PAUSED (0 new)");
    send_round(&ns);
    tmux.wait_until("9 held events", |s| s.contains("9 events  PAUSED (9 new)"));
    tmux.keys(&["Space"]);
    tmux.wait_for("18 events  LIVE");

    // Filter: the list and the table follow it.
    tmux.keys(&["/"]);
    tmux.wait_for("filter: ");
    tmux.keys(&["port=5432 ns=db", "Enter"]);
    tmux.wait_until("the filtered view", |s| {
        s.contains("6 events  LIVE  filter: ns=db port=5432")
            && !s.contains("allow-dns")
            && count_of(s, "db/deny-db", 1) == Some("6")
    });
    tmux.keys(&["Tab"]);
    tmux.wait_until("the sources table", |s| {
        s.contains("Top sources") && count_of(s, "127.0.0.1", 1) == Some("4")
    });
    tmux.keys(&["c"]);
    tmux.wait_for("0 events");

    // Quit: the shell's screen is back, not the alternate one.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("EXIT=0");
    assert!(
        !screen.contains("nflog-tail"),
        "the view is still on screen:\n{screen}"
    );
    let alt = run(tmux
        .cmd()
        .args(["display-message", "-p", "-t", "tail", "#{alternate_on}"]));
    assert_eq!(
        alt.trim(),
        "0",
        "the terminal is still on the alternate screen"
    );
}

/// A fake daemon: accepts connections, records the request line, sends `records`.
fn fake_daemon(path: &Path, records: Vec<String>) -> std::thread::JoinHandle<String> {
    let listener = UnixListener::bind(path).expect("bind fake tail socket");
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request = String::new();
        reader.read_line(&mut request).expect("read request");
        let mut stream = stream;
        for r in records {
            if stream.write_all(format!("{r}\n").as_bytes()).is_err() {
                break;
            }
        }
        // Hold the connection so the client keeps following until it has its count.
        sleep(Duration::from_secs(2));
        request
    })
}

fn event_json(port: u16, prefix: &str) -> String {
    let body = format!(
        r#""timestamp":"2026-11-27T20:59:32.000001+00:00","hostname":"n","node_name":"n","action":"drop","oob.group":100,"oob.prefix":"{prefix}","oob.in":"","oob.out":"eth0","src_ip":"10.42.0.5","dest_ip":"10.42.1.7","protocol":"tcp","src_port":40000,"dest_port":{port},"tcp.flags":"SYN","policy_source":"policy-rule","policy":{{"namespace":"db","name":"deny-db","resolved":true,"candidates":[{{"namespace":"db","name":"deny-db"}}]}},"direction":"ingress","src":{{"pod":"web-1","namespace":"default"}},"dest":{{"pod":"pg-0","namespace":"db"}},"count":1"#
    );
    format!(
        r#"{{{body},"syslogemu":"Nov 27 20:59:32 n {prefix} IN= OUT=eth0 MAC= SRC=10.42.0.5 DST=10.42.1.7 ","nflog":"02000064"}}"#
    )
}

#[test]
fn tail_daemon_socket_protocol() {
    let scratch = Scratch::new("tail-socket");
    let sock = scratch.path("tail.sock");
    let server = fake_daemon(
        &sock,
        vec![
            event_json(53, "DROP by policy db/deny-db"),
            r#"{"type":"lost","count":5}"#.into(),
            event_json(5432, "DROP by policy db/deny-db"),
            r#"{"timestamp":"x","type":"suppressed","policy":"db/deny-db","suppressed":7,"interval_s":60}"#.into(),
            event_json(5432, "DROP by policy db/deny-db\\u001b[31m"),
        ],
    );
    let out = tail(&[
        "-S",
        sock.to_str().unwrap(),
        "--no-reconnect",
        "--last",
        "5",
        "--port",
        "5432",
        "--pod",
        "db/pg",
        "--direction",
        "ingress",
        "-c",
        "2",
    ]);
    let text = stdout_of(&out);
    assert_eq!(server.join().expect("fake daemon"), "{\"last\":5}\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the daemon dropped 5 events for this client"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rate limit: 7 events of db/deny-db suppressed in the last 60 s"),
        "{stderr}"
    );
    assert_eq!(
        text,
        "20:59:32.000 db/deny-db 10.42.0.5:40000 (default/web-1) → 10.42.1.7:5432 (db/pg-0) TCP SYN ingress\n\
         20:59:32.000 db/deny-db 10.42.0.5:40000 (default/web-1) → 10.42.1.7:5432 (db/pg-0) TCP SYN ingress\n"
    );

    // -o json is the daemon's object without the two tail fields; -w writes the nflog bytes.
    fs::remove_file(&sock).expect("remove socket");
    let server = fake_daemon(&sock, vec![event_json(5432, "p")]);
    let pcap = scratch.path("from-daemon.pcap");
    let out = tail(&[
        "-S",
        sock.to_str().unwrap(),
        "-o",
        "json",
        "-w",
        pcap.to_str().unwrap(),
        "-c",
        "1",
    ]);
    let text = stdout_of(&out);
    server.join().expect("fake daemon");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
    assert_eq!(v["dest_port"], 5432);
    assert!(
        v.get("syslogemu").is_none() && v.get("nflog").is_none(),
        "{text}"
    );
    let bytes = fs::read(&pcap).expect("pcap written");
    assert_eq!(&bytes[bytes.len() - 4..], &[2, 0, 0, 100]);
}

#[test]
fn tail_daemon_away() {
    let scratch = Scratch::new("tail-away");
    let sock = scratch.path("tail.sock");
    let out = tail(&["-S", sock.to_str().unwrap(), "--no-reconnect"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no daemon socket at") && stderr.contains("--direct"),
        "{stderr}"
    );

    // Without --no-reconnect it says so once, waits, and reads once the daemon is there.
    let child = Command::new(TAIL)
        .args(["-S", sock.to_str().unwrap(), "-c", "1", "-o", "syslogemu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    sleep(Duration::from_millis(1500));
    let server = fake_daemon(&sock, vec![event_json(80, "late")]);
    let out = child.wait_with_output().expect("wait");
    server.join().expect("fake daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("no daemon socket at").count(), 1, "{stderr}");
    assert!(
        stderr.contains("retrying") && stderr.contains("connected to"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Nov 27 20:59:32 n late IN= OUT=eth0 MAC= SRC=10.42.0.5 DST=10.42.1.7 \n"
    );
}

fn pcap_header() -> Vec<u8> {
    let mut h = Vec::new();
    for v in [
        0xa1b2_c3d4u32.to_le_bytes(),
        [2, 0, 4, 0],
        [0; 4],
        [0; 4],
        262_144u32.to_le_bytes(),
        239u32.to_le_bytes(),
    ] {
        h.extend_from_slice(&v);
    }
    h
}

fn record(data: &[u8], claimed: u32) -> Vec<u8> {
    let mut r = Vec::new();
    for v in [1u32, 0, claimed, claimed] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(data);
    r
}

#[test]
fn tail_malformed_input_is_a_clear_error() {
    let scratch = Scratch::new("tail-malformed");
    let mut ethernet = pcap_header();
    ethernet[20] = 1;
    let mut truncated = pcap_header();
    truncated.extend(record(&[2, 0, 0, 100, 8, 0, 1, 0, 8, 0, 3, 0], 12));
    truncated.extend(record(&[2, 0, 0, 100], 40));
    let mut bad_tlv = pcap_header();
    bad_tlv.extend(record(&[2, 0, 0, 100, 0xff, 0x7f, 1, 0, 8, 0], 10));
    let mut snaplen = pcap_header();
    snaplen[16..20].copy_from_slice(&8u32.to_le_bytes());
    snaplen.extend(record(&[2, 0, 0, 100, 8, 0, 1, 0, 8, 0, 3, 0], 12));
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("snaplen.pcap", snaplen, "snaplen.pcap: record 1 (byte offset 24): record length 12 exceeds the file's snapshot length 8"),
        ("empty.pcap", vec![], "empty.pcap: empty file"),
        ("short.pcap", pcap_header()[..10].to_vec(), "short.pcap: truncated pcap header (10 of 24 bytes)"),
        ("eth.pcap", ethernet, "eth.pcap: link type 1, not NFLOG (239)"),
        ("trunc.pcap", truncated, "trunc.pcap: record 2 (byte offset 52): truncated record: the file ends after 4 of 40 bytes"),
        ("tlv.pcap", bad_tlv, "tlv.pcap: record 1 (byte offset 24): not a valid NFLOG message"),
        ("garbage.json", b"{\"timestamp\":\"x\"}\n{\"oob.prefix\": 5\n".to_vec(), "garbage.json: line 2: not a JSON record"),
        ("noise.log", b"\x00\x01binary noise\n".to_vec(), "noise.log: line 1: not a syslogemu line"),
    ];
    for (name, bytes, want) in cases {
        let path = scratch.path(name);
        fs::write(&path, bytes).expect("write fixture");
        let out = tail(&["-r", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(want),
            "{name}: expected {want:?} in {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    // Endless input without a newline: an error after the line cap, not all of memory.
    let started = Instant::now();
    let zero = tail(&["-r", "/dev/zero"]);
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/dev/zero: line 1: longer than 1048576 bytes without a newline"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "-r /dev/zero took {:?}",
        started.elapsed()
    );
    let missing = tail(&["-r", scratch.path("missing.pcap").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    for bad in [
        &["--port", "x"][..],
        &["--protocol", "tcpp"],
        &["--ip", "10.0.0.0/33"],
        &["--direct", "-r", "x"],
    ] {
        let out = tail(bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `-i` ended by a signal: the terminal is back to normal (normal screen, cursor shown), the exit
/// status is the signal's, and a replayed file said `REPLAY`, then `END`.
#[test]
fn tail_interactive_restores_the_terminal_on_signals() {
    let scratch = Scratch::new("tail-tui-signals");
    let log = scratch.path("events.syslogemu");
    fs::write(
        &log,
        "Nov 27 20:59:32 h DROP by policy db/deny-db IN= OUT=lo MAC= SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=40000 DPT=5432 SEQ=1 ACK=0 WINDOW=1024 SYN URGP=0 MARK=0x0 \n",
    )
    .expect("write events");
    for (signal, name, code) in [(libc::SIGTERM, "TERM", 143), (libc::SIGINT, "INT", 130)] {
        let tmux = Tmux {
            socket: format!("nflog-tail-sig-{name}-{}", std::process::id()),
        };
        let pid_file = scratch.path(&format!("{name}.pid"));
        // The inner shell writes its PID and becomes nflog-tail: the PID is nflog-tail's.
        let shell = format!(
            "sh -c 'echo $$ > {}; exec {TAIL} -i -r {}'; echo EXIT=$?; read line; echo got-$line; sleep 600",
            pid_file.display(),
            log.display()
        );
        run(tmux
            .cmd()
            .args(["new-session", "-d", "-s", "tail", "-x", "160", "-y", "40"])
            .arg(shell));
        tmux.wait_until("the replayed file at its end", |s| {
            s.contains("1 events  END") && s.contains("end of input")
        });
        let flag = |f: &str| {
            run(tmux.cmd().args(["display-message", "-p", "-t", "tail", f]))
                .trim()
                .to_string()
        };
        assert_eq!(
            flag("#{alternate_on}"),
            "1",
            "the view is not on the alternate screen"
        );
        assert_eq!(flag("#{cursor_flag}"), "0", "the view shows the cursor");
        let pid: libc::pid_t = read_lossy(&pid_file).trim().parse().expect("pid");
        // SAFETY: kill(2) on the PID of the nflog-tail this test started in its own tmux.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let screen = tmux.wait_for("EXIT=");
        assert!(
            screen.contains(&format!("EXIT={code}")),
            "SIG{name}: want exit status {code}:\n{screen}"
        );
        assert!(
            !screen.contains("nflog-tail"),
            "SIG{name}: the view is still on screen:\n{screen}"
        );
        assert_eq!(
            flag("#{alternate_on}"),
            "0",
            "SIG{name}: the terminal is still on the alternate screen"
        );
        assert_eq!(
            flag("#{cursor_flag}"),
            "1",
            "SIG{name}: the cursor is still hidden"
        );
        // Raw mode is off: Enter ends a line for the shell's `read` (in raw mode it is a bare CR).
        tmux.keys(&["cooked", "Enter"]);
        tmux.wait_for("got-cooked");
    }
}

/// The daemon in `sb` writing syslogemu (hostname `tailhost`) and serving a tail socket, no rate
/// limit, no metrics: `(daemon, syslogemu file, socket)`.
fn daemon_with_tail_socket(sb: &Sandbox) -> (Daemon, std::path::PathBuf, std::path::PathBuf) {
    let log = sb.path("syslogemu.log");
    let sock = sb.path("tail.sock");
    let d = Daemon::start(
        sb,
        "daemon",
        &[
            "--no-rate-limit",
            "--hostname",
            "tailhost",
            "--stdout",
            "none",
            "--metrics-listen",
            "",
            "--syslogemu-file",
            log.to_str().unwrap(),
            "--tail-socket",
            sock.to_str().unwrap(),
        ],
        &[],
    );
    (d, log, sock)
}

/// The real daemon logs one packet under two rules: two lines in its syslogemu file, one tail
/// record carrying both messages. `nflog-tail -o syslogemu` prints the file's two lines and `-w`
/// writes two pcap records, as `tcpdump -i nflog:100` would.
#[test]
fn tail_prints_and_writes_every_message_of_a_packet() {
    let sb = Sandbox::new("tail-msgs");
    let m = ["-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", "9998"];
    let nflog = ["-j", "NFLOG", "--nflog-group", "100"];
    // A policy chain's rule, then the pod chain's (empty prefix), then the drop.
    sb.iptables(
        &[
            &m[..],
            &nflog,
            &["--nflog-prefix", "DROP by policy default/deny-udp"],
        ]
        .concat(),
    );
    sb.iptables(&[&m[..], &nflog].concat());
    sb.iptables(&[&m[..], &["-j", "DROP"]].concat());
    let (mut d, log, sock) = daemon_with_tail_socket(&sb);
    // Clients connected before the packet: they get it live, not from the ring.
    let pcap = sb.path("out.pcap");
    let sock_arg = sock.to_str().unwrap();
    let follow = |name: &str, args: &[&str]| {
        let out = sb.path(name);
        let args = [&["-S", sock_arg, "--no-reconnect", "-c", "1"][..], args].concat();
        (follow_socket(&sb, name, &args), out)
    };
    let (mut lines_tail, lines_out) = follow(
        "syslogemu.out",
        &["-o", "syslogemu", "-w", pcap.to_str().unwrap()],
    );
    let (mut json_tail, json_out) = follow("json.out", &["-o", "json"]);
    sleep(Duration::from_millis(1000));
    sb.send_udp(
        "127.0.0.1".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        9998,
        1,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut statuses = (None, None);
    while statuses.0.is_none() || statuses.1.is_none() {
        assert!(
            Instant::now() < deadline,
            "nflog-tail -c 1 did not get the event ({statuses:?}); the daemon's file:\n{}\nstderr:\n{}",
            read_lossy(&log),
            d.stderr_text()
        );
        sleep(Duration::from_millis(50));
        statuses = (
            statuses.0.or_else(|| lines_tail.exited()),
            statuses.1.or_else(|| json_tail.exited()),
        );
    }
    let stderr = read_lossy(&sb.path("syslogemu.out.stderr"));
    assert!(
        statuses.0.unwrap().success() && statuses.1.unwrap().success(),
        "{statuses:?}: {stderr}"
    );
    let file = read_lossy(&log);
    assert_eq!(lines(&file), 2, "the daemon's file:\n{file}");
    assert_eq!(
        read_lossy(&lines_out),
        file,
        "nflog-tail -o syslogemu differs from the daemon's file"
    );
    assert!(stderr.contains("wrote 2 packets"), "{stderr}");

    // Two pcap records, each one message: replayed, the same prefixes in the same order.
    let bytes = fs::read(&pcap).expect("read pcap");
    let mut at = 24;
    let mut records = 0;
    while at + 16 <= bytes.len() {
        let len = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + len;
        records += 1;
    }
    assert_eq!((records, at), (2, bytes.len()), "pcap records");
    let replayed = stdout_of(&tail(&[
        "-r",
        pcap.to_str().unwrap(),
        "-o",
        "syslogemu",
        "--hostname",
        "tailhost",
    ]));
    let prefixes = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l[16..l.find(" IN=").unwrap()].to_string())
            .collect()
    };
    assert_eq!(prefixes(&replayed), prefixes(&file), "{replayed}");
    assert_eq!(
        prefixes(&file),
        ["tailhost DROP by policy default/deny-udp", "tailhost "]
    );

    // -o json: still the daemon's schema, one object for the packet.
    let json = read_lossy(&json_out);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert!(
        v.get("messages").is_none() && v.get("syslogemu").is_none() && v.get("nflog").is_none(),
        "{json}"
    );
    assert_eq!(v["count"], 2, "{json}");
    let status = d.terminate();
    assert!(status.success(), "daemon: {status}\n{}", d.stderr_text());
}

/// A cluster snapshot for [`tail_filters_services_nodes_and_classes_from_the_daemon`]: pods
/// `web-0` (10.42.0.10) and `db-0` (10.42.0.20) on node-1, the Service `shop/db` whose
/// EndpointSlice holds db-0 on UDP 5432 (`pg`), and node-2 at 192.168.77.2.
const PEERS_SNAPSHOT: &str = r#"apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b01}
- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy,
   metadata: {name: deny-db, namespace: shop, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b02},
   spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}}
- {apiVersion: v1, kind: Pod,
   metadata: {name: web-0, namespace: shop, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b03, labels: {app: web}},
   spec: {nodeName: node-1, containers: [{name: web, image: nginx}]},
   status: {phase: Running, podIP: 10.42.0.10, podIPs: [{ip: 10.42.0.10}]}}
- {apiVersion: v1, kind: Pod,
   metadata: {name: db-0, namespace: shop, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b04, labels: {app: db}},
   spec: {nodeName: node-1, containers: [{name: db, image: postgres}]},
   status: {phase: Running, podIP: 10.42.0.20, podIPs: [{ip: 10.42.0.20}]}}
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: shop, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b05}
  spec:
    type: ClusterIP
    clusterIP: 10.43.0.10
    clusterIPs: [10.43.0.10]
    selector: {app: db}
    ports: [{name: pg, protocol: UDP, port: 5432, targetPort: 5432}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: db-x7k2p
    namespace: shop
    uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b06
    labels: {kubernetes.io/service-name: db}
  addressType: IPv4
  endpoints:
  - addresses: [10.42.0.20]
    conditions: {ready: true}
    nodeName: node-1
    targetRef: {kind: Pod, namespace: shop, name: db-0}
  ports: [{name: pg, protocol: UDP, port: 5432}]
- apiVersion: v1
  kind: Node
  metadata: {name: node-1, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b07}
  status: {addresses: [{type: InternalIP, address: 192.168.77.1}, {type: Hostname, address: node-1}]}
- apiVersion: v1
  kind: Node
  metadata: {name: node-2, uid: 5e1f0a52-59b4-4a4e-8f0c-1d2e3f4a5b08}
  status: {addresses: [{type: InternalIP, address: 192.168.77.2}, {type: Hostname, address: node-2}]}
"#;

/// The real daemon's tail records name Services, node peers and address classes (attributed
/// from a cluster snapshot); `--service`, `--node` and the class filters pick them, and the
/// compact view shows them: a node peer as `(node NAME)`, not as a pod without a name.
#[test]
fn tail_filters_services_nodes_and_classes_from_the_daemon() {
    let sb = Sandbox::new("tail-peers");
    for a in ["10.42.0.10", "10.42.0.20", "192.168.77.2", "9.9.9.9"] {
        sb.add_address(&format!("{a}/32"));
    }
    sb.udp_log_and_drop(5432, "DROP by policy shop/deny-db");
    let snapshot = sb.path("cluster.yaml");
    fs::write(&snapshot, PEERS_SNAPSHOT).expect("write snapshot");
    let sock = sb.path("tail.sock");
    let sock_arg = sock.to_str().unwrap();
    let mut d = Daemon::cmd(&sb)
        .file("--kube-snapshot", &snapshot)
        .file("--tail-socket", &sock)
        .syslogemu(&sb.path("syslogemu.log"))
        .env("NODE_NAME", "node-1")
        .quiet()
        .start();
    // Records are rendered only while a client is connected: one follows all four events.
    let all = sb.path("all.out");
    let mut follower = follow_socket(
        &sb,
        "all.out",
        &["-S", sock_arg, "--no-reconnect", "-c", "4"],
    );
    sleep(Duration::from_millis(1000));
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    for (src, dst) in [
        ("10.42.0.10", "10.42.0.20"),   // pod → pod behind the Service
        ("192.168.77.2", "10.42.0.20"), // node-2's own address → the same
        ("9.9.9.9", "10.42.0.20"),      // the internet → the same
        ("9.9.9.9", "10.42.0.10"),      // the internet → a pod behind no Service
    ] {
        sb.send_udp(ip(src), ip(dst), 5432, 1);
        // One event each, in this order.
        sleep(Duration::from_millis(100));
    }
    Wait::up_to(Duration::from_secs(10)).until("nflog-tail -c 4 to get four events", || {
        follower.exited().map(drop).ok_or_else(|| {
            let (got, stderr) = (read_lossy(&all), d.stderr_text());
            format!("it printed:\n{got}\ndaemon stderr:\n{stderr}")
        })
    });
    let everything = read_lossy(&all);
    let shown: Vec<&str> = everything.lines().collect();
    assert_eq!(shown.len(), 4, "{everything}");
    let has = |line: &str, parts: &[&str]| parts.iter().all(|p| line.contains(p));
    assert!(
        has(
            shown[0],
            &["(shop/web-0) → 10.42.0.20:5432 (shop/db-0) svc shop/db:pg"]
        ),
        "{everything}"
    );
    assert!(
        has(
            shown[1],
            &[
                "192.168.77.2:",
                " (node node-2) → ",
                "(shop/db-0) svc shop/db:pg"
            ]
        ),
        "{everything}"
    );
    assert!(
        has(shown[2], &["9.9.9.9:", " [public] → ", " svc shop/db:pg"]),
        "{everything}"
    );
    assert!(
        has(
            shown[3],
            &["9.9.9.9:", " [public] → 10.42.0.10:5432 (shop/web-0) UDP"]
        ) && !shown[3].contains("svc"),
        "{everything}"
    );

    // Each filter over the daemon's ring (--last), flags and the filter line's words alike:
    // which of the four events it keeps. nflog-tail follows after the ring, so it is stopped.
    let filtered = |args: &[&str]| -> Vec<usize> {
        let out = Command::new("timeout")
            .args(["2", TAIL, "-S", sock_arg, "--no-reconnect", "--last", "10"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run nflog-tail");
        assert_eq!(
            out.status.code(),
            Some(124),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                shown
                    .iter()
                    .position(|s| *s == l)
                    .unwrap_or_else(|| panic!("{args:?}: {l:?} is none of\n{everything}"))
            })
            .collect()
    };
    for (args, want) in [
        (&["--service", "shop/db"][..], &[0, 1, 2][..]),
        (&["--svc", "db", "--from-class", "public"], &[2]),
        (&["--service", "other/db"], &[]),
        (&["--node", "node-2"], &[1]),
        // The pods are on node-1.
        (&["--node", "node-1"], &[0, 1, 2, 3]),
        (&["--from-class", "public"], &[2, 3]),
        (&["--from-class", "node"], &[1]),
        (&["--from-class", "pod"], &[0]),
        (&["--class", "public", "--class", "node"], &[1, 2, 3]),
        (&["--to-class", "service"], &[0, 1, 2]),
        (&["--to-class", "public"], &[]),
        (&["--pod", "web", "--from-class", "private"], &[0]),
    ] {
        assert_eq!(filtered(args), want, "{args:?}\n{everything}");
    }
    let status = d.terminate();
    assert!(status.success(), "daemon: {status}\n{}", d.stderr_text());
}

/// `nflog-tail --last N` right after drops that happened while no client was connected: the
/// daemon keeps its ring filled, so the N most recent events are there.
#[test]
fn tail_last_shows_events_from_before_any_client() {
    let sb = Sandbox::new("tail-last");
    sb.udp_log_and_drop(9997, "DROP by policy default/deny-udp");
    let (_daemon, log, sock) = daemon_with_tail_socket(&sb);
    let lo = "127.0.0.1".parse().unwrap();
    sb.send_udp(lo, lo, 9997, 3);
    crate::support::wait::wait_until("the daemon to log 3 drops", Duration::from_secs(10), || {
        lines(&read_lossy(&log)) >= 3
    });
    // The last packet's event is written when the correlation window (50 ms) has passed.
    sleep(Duration::from_millis(500));
    // Bounded: without the ring's history nflog-tail would wait for live events forever.
    let out = Command::new("timeout")
        .args(["10", TAIL, "-S", sock.to_str().unwrap(), "--no-reconnect"])
        .args(["--last", "2", "-c", "2", "-o", "json"])
        .output()
        .expect("run nflog-tail");
    let seqs: Vec<u64> = stdout_of(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON record");
            v["oob.seq.local"].as_u64().expect("a sequence number")
        })
        .collect();
    // The last two of the three messages (sequence numbers 0, 1, 2).
    assert_eq!(seqs, [1, 2], "{}", stdout_of(&out));
}
