//! The Prometheus endpoint against real NFLOG traffic.
//!
//! In a private network namespace, K3s-shaped per-policy rules
//! (`-m limit --limit 1000/second --limit-burst 1000 -j NFLOG --nflog-prefix "DROP by policy …"`
//! followed by `DROP`) log UDP packets sent over `lo`. The daemon runs standalone (`[kubernetes]
//! mode = "off"`) with its default limits (10/minute, burst 10 per policy) and the test scrapes
//! `/metrics`, parsed line by line as OpenMetrics text, checking every counter against ground
//! truth: the packets sent, the rules' iptables counters, and the lines in the syslogemu file.
//! `/healthz`, `/readyz` and an unknown path are checked too.
//!
//! Needs root, `ip` and `iptables`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::metrics::{expect, parse_openmetrics, scrape, wait_metrics};
use crate::support::process::proc_status;
use crate::support::sandbox::{split_response, POLICY_LOG_MATCHES};
use crate::support::{read_lossy, STANDALONE};
// `tail` takes these from here (until it uses `support` itself).
pub(crate) use crate::support::{Daemon, Sandbox};

// ---- The test -----------------------------------------------------------------------------------

const METRICS_PORT: u16 = 9109;
const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A K3s-shaped per-policy NFLOG rule for UDP to `port`, then the DROP.
fn policy_rule(sb: &Sandbox, port: u16, ns: &str, name: &str) {
    let port = port.to_string();
    let prefix = format!("DROP by policy {ns}/{name}");
    let m = ["-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", &port];
    sb.nflog_rule_pair(&m, &POLICY_LOG_MATCHES, Some(&prefix), &["DROP"]);
}

/// A standalone daemon writing `syslogemu.log`, metrics on `127.0.0.1:METRICS_PORT`, nothing
/// on stdout, no tail socket.
fn standalone(sb: &Sandbox) -> crate::support::daemon::DaemonCmd<'_> {
    Daemon::cmd(sb)
        .config(STANDALONE)
        .syslogemu(&sb.path("syslogemu.log"))
        .metrics(METRICS_PORT)
        .quiet()
}

#[test]
fn metrics_count_real_nflog_traffic() {
    let sb = Sandbox::new("metrics");
    policy_rule(&sb, 5432, "default", "deny-db");
    policy_rule(&sb, 8080, "default", "allow-web");
    let log = sb.path("syslogemu.log");
    let stats = sb.path("stats.json");
    let mut daemon = standalone(&sb).stats(&stats).start();

    // Before any traffic: health endpoints and zero counters.
    let (code, body) = sb.http_get(METRICS_PORT, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "/healthz");
    let (code, body) = sb.http_get(METRICS_PORT, "/readyz");
    assert_eq!(code, 200, "/readyz: {body}");
    assert!(
        body.lines().any(|l| l == "nflog: bound"),
        "/readyz body: {body:?}"
    );
    assert!(
        body.contains("kubernetes: off"),
        "/readyz body (standalone): {body:?}"
    );
    let (code, _) = sb.http_get(METRICS_PORT, "/no-such-path");
    assert_eq!(code, 404, "unknown path");
    let s = scrape(&sb, METRICS_PORT);
    assert_eq!(
        s.get("netpol_nflog_messages_received_total", &[]),
        Some(0.0),
        "received before traffic"
    );
    assert_eq!(
        s.types
            .get("netpol_nflog_messages_received")
            .map(String::as_str),
        Some("counter")
    );

    // deny-db: 25 packets, above the default 10/minute burst 10: 10 written, 15 suppressed.
    // allow-web: 3 packets, all written.
    const DENY_DB: usize = 25;
    const ALLOW_WEB: usize = 3;
    sb.send_udp(LO, LO, 5432, DENY_DB);
    sb.send_udp(LO, LO, 8080, ALLOW_WEB);
    let sent = (DENY_DB + ALLOW_WEB) as f64;
    let kernel = sb.rule_counter("OUTPUT", "DROP by policy default/deny-db")
        + sb.rule_counter("OUTPUT", "DROP by policy default/allow-web");
    assert_eq!(
        kernel as f64, sent,
        "the NFLOG rules' counters (the kernel limit must not interfere)"
    );

    // Counters are live; per-policy series are published about once a second, so they must
    // show within a few seconds even though no further traffic arrives.
    let sink = format!("file:{}", log.display());
    let got = wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(5),
        "counters after traffic",
        |s| {
            let mut p = Vec::new();
            expect(&mut p, s, "netpol_nflog_messages_received_total", &[], sent);
            expect(
                &mut p,
                s,
                "netpol_nflog_messages_suppressed_total",
                &[],
                15.0,
            );
            expect(&mut p, s, "netpol_nflog_messages_lost_total", &[], 0.0);
            expect(&mut p, s, "netpol_nflog_messages_malformed_total", &[], 0.0);
            expect(
                &mut p,
                s,
                "netpol_nflog_sink_lines_written_total",
                &[("sink", &sink)],
                13.0,
            );
            expect(
                &mut p,
                s,
                "netpol_nflog_sink_lines_failed_total",
                &[("sink", &sink)],
                0.0,
            );
            let deny = [
                ("namespace", "default"),
                ("policy", "deny-db"),
                ("source", "policy-rule"),
            ];
            let web = [
                ("namespace", "default"),
                ("policy", "allow-web"),
                ("source", "policy-rule"),
            ];
            expect(&mut p, s, "netpol_nflog_policy_events_total", &deny, 10.0);
            expect(&mut p, s, "netpol_nflog_policy_events_total", &web, 3.0);
            expect(
                &mut p,
                s,
                "netpol_nflog_policy_suppressed_total",
                &deny,
                15.0,
            );
            if s.get("netpol_nflog_policy_suppressed_total", &web)
                .is_some()
            {
                p.push(
                    "allow-web has a suppressed series although nothing of it was suppressed"
                        .into(),
                );
            }
            p
        },
    );
    // The counters against the file itself: one line per written message.
    let text = read_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as f64,
        got.get("netpol_nflog_sink_lines_written_total", &[("sink", &sink)])
            .unwrap(),
        "lines in {}:\n{text}",
        log.display()
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("DROP by policy default/deny-db"))
            .count(),
        10,
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("DROP by policy default/allow-web"))
            .count(),
        3,
        "{text}"
    );
    // Every series of a policy has one direction label value; standalone, the direction is
    // unknown (empty), and the per-policy events add up to the lines written.
    let total: f64 = got
        .all("netpol_nflog_policy_events_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 13.0, "sum of netpol_nflog_policy_events_total");
    // No Kubernetes series in standalone mode.
    assert!(
        got.all("netpol_nflog_kube_watch_synced").is_empty(),
        "kube series while kubernetes is off"
    );

    daemon.terminate_ok();
    let stats: serde_json::Value =
        serde_json::from_str(&read_lossy(&stats)).expect("stats file is JSON");
    assert_eq!(
        stats["received"],
        serde_json::json!(DENY_DB + ALLOW_WEB),
        "stats file: {stats}"
    );
    assert_eq!(
        stats["suppressed"],
        serde_json::json!(15),
        "stats file: {stats}"
    );
    assert_eq!(stats["lost"], serde_json::json!(0), "stats file: {stats}");
}

#[test]
fn metrics_parser_is_strict() {
    let ok = "# HELP a_total x.\n# TYPE a counter\na_total 3\nb{x=\"1\",y=\"q\\\"\\\\\\n\"} 2.5\n# EOF\n";
    let s = parse_openmetrics(ok).unwrap();
    assert_eq!(s.get("a_total", &[]), Some(3.0));
    assert_eq!(s.get("b", &[("y", "q\"\\\n")]), Some(2.5));
    for bad in [
        "a 1\n",
        "a{x=1} 1\n# EOF\n",
        "a{x=\"1\" 1\n# EOF\n",
        "a 1 2 3\n# EOF\n",
        "a one\n# EOF\n",
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

// ---- Hostile clients ----------------------------------------------------------------------------

/// Starts a standalone daemon in `sb` (no rules: nothing to log) with metrics on
/// `127.0.0.1:METRICS_PORT`, and checks `/healthz` once.
fn standalone_daemon(sb: &Sandbox) -> Daemon {
    let d = standalone(sb).start();
    let (code, body) = sb.http_get(METRICS_PORT, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "/healthz at start");
    d
}

/// Raises this test process's descriptor limit to at least `want` (root may raise the hard
/// limit too).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= want {
            return;
        }
        lim.rlim_max = lim.rlim_max.max(want);
        lim.rlim_cur = want;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "setrlimit(NOFILE, {want}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One request as the kubelet makes it: 2 s to connect, 2 s for the whole answer, no retry.
/// `(status code, body)` or what went wrong.
fn probe(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read after {:?}: {e}", start.elapsed()))?;
    if start.elapsed() > Duration::from_secs(2) {
        return Err(format!("answered after {:?}", start.elapsed()));
    }
    split_response(&String::from_utf8_lossy(&raw))
}

/// An idle connection (non-blocking, so [`is_closed`] can look at it).
fn idle_connection(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The server closed (or answered) it.
fn is_closed(s: &TcpStream) -> bool {
    !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// `VmRSS` or another `kB` line of `/proc/PID/status`, in kB.
fn proc_status_kb(pid: u32, key: &str) -> u64 {
    let v = proc_status(pid, key);
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} of {pid} is {v:?}, not kB"))
}

/// Waits until the daemon holds one connection: the scrape's own.
fn wait_one_connection(
    sb: &Sandbox,
    timeout: Duration,
    what: &str,
) -> crate::support::metrics::Scrape {
    wait_metrics(sb, METRICS_PORT, timeout, what, |s| {
        let mut p = Vec::new();
        expect(&mut p, s, "netpol_nflog_http_connections", &[], 1.0);
        p
    })
}

const IDLE_FLOOD: usize = 2000;

/// 2000 idle connections, each re-opened as soon as the daemon closes it, for longer than the
/// head timeout: every `/healthz` probe (2 s timeout, no retry, like the kubelet's) is answered.
#[test]
fn metrics_healthz_answers_under_idle_connection_flood() {
    raise_nofile(IDLE_FLOOD as u64 + 4096);
    let sb = Sandbox::new("mflood");
    let mut daemon = standalone_daemon(&sb);
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let (probes, opened, connect_errors) = sb.within(move || {
        let mut idle: Vec<TcpStream> = (0..IDLE_FLOOD)
            .map(|i| idle_connection(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        // The attacker: keeps 2000 connections open, re-opening each one the daemon closes.
        let attacker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut opened, mut errors) = (IDLE_FLOOD, 0usize);
                while !stop.load(Relaxed) {
                    for s in idle.iter_mut() {
                        if is_closed(s) {
                            match idle_connection(addr) {
                                Ok(new) => {
                                    *s = new;
                                    opened += 1;
                                }
                                Err(_) => errors += 1,
                            }
                        }
                    }
                    sleep(Duration::from_millis(10));
                }
                (opened, errors)
            })
        };
        // The kubelet: a probe every 250 ms for longer than the head timeout (5 s).
        let mut probes = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(7) {
            let t = Instant::now();
            probes.push((probe(addr, "/healthz"), t.elapsed()));
            sleep(Duration::from_millis(250));
        }
        stop.store(true, Relaxed);
        let (opened, errors) = attacker.join().expect("attacker thread");
        (probes, opened, errors)
    });
    let slowest = probes.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "{} probes, slowest {slowest:?}; {opened} connections opened, {connect_errors} connect errors",
        probes.len()
    );
    let failed: Vec<String> = probes
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| !matches!(r, Ok((200, b)) if b == "ok\n"))
        .map(|(i, (r, t))| format!("probe {i} after {t:?}: {r:?}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed under {IDLE_FLOOD} idle connections:\n{}",
        failed.len(),
        probes.len(),
        failed.join("\n")
    );
    assert!(probes.len() >= 10, "only {} probes", probes.len());
    assert!(
        opened > IDLE_FLOOD,
        "the daemon closed none of the idle connections ({opened} opened)"
    );

    // The attacker's connections are gone (the thread dropped them): the daemon counts what it
    // did and holds no connection but the scrape's.
    let s = wait_one_connection(&sb, Duration::from_secs(5), "after the flood");
    let accepted = s
        .get("netpol_nflog_http_connections_accepted_total", &[])
        .unwrap();
    let evicted = s
        .get("netpol_nflog_http_connections_evicted_total", &[])
        .unwrap();
    eprintln!(
        "daemon: accepted {accepted}, evicted {evicted}, rejected {:?}, timeouts {:?}",
        s.get("netpol_nflog_http_connections_rejected_total", &[]),
        s.get("netpol_nflog_http_timeouts_total", &[])
    );
    assert!(
        accepted >= IDLE_FLOOD as f64 && evicted > 0.0,
        "accepted {accepted}, evicted {evicted}"
    );
    assert_eq!(
        s.types
            .get("netpol_nflog_http_connections_rejected")
            .map(String::as_str),
        Some("counter")
    );
    daemon.terminate_ok();
}

/// A client that sends its request head one byte a second is disconnected by the head timeout
/// (5 s), unanswered; the daemon goes on answering others.
#[test]
fn metrics_slowloris_is_cut_by_header_timeout() {
    let sb = Sandbox::new("mslow");
    let _daemon = standalone_daemon(&sb);
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let (elapsed, sent, answer) = sb.within(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
            "a".repeat(40)
        );
        let start = Instant::now();
        let mut answer = Vec::new();
        let mut sent = 0;
        let mut buf = [0u8; 512];
        'bytes: for b in head.bytes() {
            if s.write_all(&[b]).is_err() {
                break;
            }
            sent += 1;
            // Wait a second for the daemon's reaction before the next byte.
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break 'bytes,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(_) => break 'bytes,
                }
            }
        }
        (start.elapsed(), sent, answer)
    });
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("slowloris cut after {elapsed:?}, {sent} bytes sent, answer {answer:?}");
    assert!(
        sent < 40,
        "the whole slow head went through ({sent} bytes, {elapsed:?})"
    );
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(9),
        "cut after {elapsed:?} (head timeout 5 s)"
    );
    assert!(!answer.contains(" 200 "), "answered: {answer:?}");
    let (code, body) = sb.http_get(METRICS_PORT, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "/healthz after");
    let s = scrape(&sb, METRICS_PORT);
    assert!(
        s.get("netpol_nflog_http_timeouts_total", &[]).unwrap() >= 1.0,
        "timeouts not counted"
    );
}

/// 15 000 connections (some with half a request head) leave the daemon's resident size close
/// to where it started once they are closed.
#[test]
fn metrics_memory_returns_after_connection_flood() {
    const CONNECTIONS: usize = 15_000;
    const BOUND_KB: u64 = 40 * 1024;
    raise_nofile(CONNECTIONS as u64 + 4096);
    let sb = Sandbox::new("mrss");
    let daemon = standalone_daemon(&sb);
    let pid = daemon.pid();
    let _ = scrape(&sb, METRICS_PORT);
    let before = proc_status_kb(pid, "VmRSS");
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let held = sb.within(move || {
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                continue;
            };
            if i % 4 == 0 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ");
                let _ = s.write_all(&[b'p'; 4000]);
            }
            conns.push(s);
        }
        let held = conns.len();
        // Some complete scrapes on top, read slowly.
        let scrapes: Vec<TcpStream> = (0..32)
            .filter_map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .ok()?;
                Some(s)
            })
            .collect();
        sleep(Duration::from_millis(200));
        drop(scrapes);
        drop(conns);
        held
    });
    let peak = proc_status_kb(pid, "VmHWM");
    assert!(held > CONNECTIONS / 2, "only {held} connections opened");
    wait_one_connection(&sb, Duration::from_secs(10), "connections closed");
    let deadline = Instant::now() + Duration::from_secs(3);
    let after = loop {
        let rss = proc_status_kb(pid, "VmRSS");
        if rss < BOUND_KB || Instant::now() > deadline {
            break rss;
        }
        sleep(Duration::from_millis(100));
    };
    eprintln!("VmRSS before {before} kB, peak {peak} kB, after {after} kB ({held} connections)");
    assert!(
        after < BOUND_KB,
        "VmRSS {after} kB after the flood (before {before} kB, peak {peak} kB)"
    );
}

/// Keep-alive (two answers on one connection), `HEAD` (headers only), any method and query, and
/// the cap on the request head (431).
#[test]
fn metrics_http_keep_alive_head_and_head_size_cap() {
    let sb = Sandbox::new("mhttp");
    let _daemon = standalone_daemon(&sb);
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let exchange = move |req: Vec<u8>| -> String {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&req).expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        String::from_utf8_lossy(&raw).into_owned()
    };
    let [pipelined, head, post, big] = sb.within(move || {
        [
            exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /no-such-path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
            exchange(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
            exchange(b"POST /healthz?x=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
            exchange(
                [
                    &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "[..],
                    &[b'a'; 9000],
                    b"\r\nConnection: close\r\n\r\n",
                ]
                .concat(),
            ),
        ]
    });
    assert!(
        pipelined.starts_with("HTTP/1.1 200 OK\r\n")
            && pipelined.contains("\r\n\r\nok\nHTTP/1.1 404 Not Found\r\n")
            && pipelined.ends_with("\r\n\r\nnot found\n"),
        "two requests on one connection: {pipelined:?}"
    );
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n")
            && head.contains("content-length: 3\r\n")
            && head.ends_with("\r\n\r\n"),
        "HEAD: {head:?}"
    );
    assert!(
        post.contains(" 200 OK\r\n") && post.ends_with("\r\n\r\nok\n"),
        "POST with a query: {post:?}"
    );
    assert!(
        big.starts_with("HTTP/1.1 431 "),
        "a 9 KB request head: {big:?}"
    );
}
