//! The syslog sink against a real rsyslog (Debian's `rsyslog`; TLS also needs
//! `rsyslog-openssl`, and `openssl` makes the test's certificates).
//!
//! Each test starts its own `rsyslogd -n` with a configuration written to a scratch directory:
//! imuxsock on sockets the test owns (never `/dev/log`), imudp and imtcp on free loopback
//! ports, and one omfile action whose template writes the fields rsyslog *parsed* from each
//! message, separated by `|`:
//!
//! ```text
//! facility|severity|hostname|app-name|procid|msgid|structured-data|SD as mmpstrucdata parsed it|msg
//! ```
//!
//! So the assertions check what a receiver understood, not what the sink meant to send. Events
//! are built as the pipeline builds them (an encoded NFLOG message → `NflogMsg::parse` →
//! decode → attribution), rendered with `render::syslog::render`, and fed to the sink as chunks
//! through the library API. Every sink case marks its events with its own policy namespace.
//!
//! rsyslog is stopped by its PID (SIGTERM, then SIGKILL on drop), never by name.

use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::wait::{ok_if, wait_until};
use crate::support::{read_lossy, Daemon, Proc, Sandbox, Scratch, Wait, STANDALONE};

use netpol_nflog::attribute::{
    Attribution, Direction, KubeContext, PodMeta, PolicyRef, ServiceHit, ServiceVia,
};
use netpol_nflog::decode::build::{ipv4, tcp};
use netpol_nflog::event::{Event, IfName, Timestamp};
use netpol_nflog::render::syslog::{render, MsgFormat, SyslogFormat};
use netpol_nflog::render::time::LocalClock;
use netpol_nflog::sink::syslog::{
    spawn_tuned, Framing, RfcChoice, SyslogSinkConfig, SyslogTransport, SyslogTuning,
};
use netpol_nflog::sink::{Chunk, SinkHandle};
use netpol_nflog::source::nflog::{build::Packet, NflogMsg};
use netpol_nflog::stats::SinkStats;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
/// How long the sink and rsyslog get for what a test waits on.
const WAIT: Duration = Duration::from_secs(20);
/// How long rsyslog gets to open its inputs.
const READY: Duration = Duration::from_secs(15);
/// What rsyslog calls itself: the HOSTNAME of messages from a local socket.
const RSYSLOG_HOST: &str = "rsyslog-test";
const HOSTNAME: &str = "node-1";

/// The fields rsyslog parsed, one message per line (see the module comment).
const TEMPLATE: &str = "%syslogfacility-text%|%syslogseverity-text%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%$!rfc5424-sd%|%msg%\\n";

fn fast() -> SyslogTuning {
    SyslogTuning {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        io_timeout: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(2),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Every transport and framing, both RFCs, both message formats: each field as rsyslog read it.
#[test]
fn syslog_fields_as_rsyslog_parses_them() {
    let dir = Scratch::new("syslog-fields");
    let udp_port = free_udp_port();
    let tcp_port = free_tcp_port();
    let local = dir.path("local.sock");
    let local5424 = dir.path("local5424.sock");
    let inputs = format!(
        r#"module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{local}" RateLimit.Interval="0")
input(type="imuxsock" Socket="{local5424}" RateLimit.Interval="0" UseSpecialParser="off" ParseHostname="on")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}" RateLimit.Interval="0")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
"#,
        local = local.display(),
        local5424 = local5424.display(),
    );
    let rsyslog = Rsyslog::start(&dir, "rsyslog", &inputs, "");
    rsyslog.wait_ready(Some(udp_port), Some(tcp_port), &[&local, &local5424]);

    struct Case {
        ns: &'static str,
        transport: SyslogTransport,
        address: String,
        rfc: RfcChoice,
        framing: Framing,
        message: MsgFormat,
    }
    let case = |ns, transport, address: String, rfc, framing| Case {
        ns,
        transport,
        address,
        rfc,
        framing,
        message: MsgFormat::Syslogemu,
    };
    let udp = format!("127.0.0.1:{udp_port}");
    let tcp_addr = format!("127.0.0.1:{tcp_port}");
    let mut cases = vec![
        case(
            "unix-3164",
            SyslogTransport::Unix,
            local.display().to_string(),
            RfcChoice::Rfc3164,
            Framing::OctetCounting,
        ),
        case(
            "unix-5424",
            SyslogTransport::Unix,
            local5424.display().to_string(),
            RfcChoice::Rfc5424,
            Framing::OctetCounting,
        ),
        case(
            "udp-3164",
            SyslogTransport::Udp,
            udp.clone(),
            RfcChoice::Rfc3164,
            Framing::OctetCounting,
        ),
        case(
            "udp-5424",
            SyslogTransport::Udp,
            udp.clone(),
            RfcChoice::Rfc5424,
            Framing::OctetCounting,
        ),
        case(
            "tcp-octet-3164",
            SyslogTransport::Tcp,
            tcp_addr.clone(),
            RfcChoice::Rfc3164,
            Framing::OctetCounting,
        ),
        case(
            "tcp-octet-5424",
            SyslogTransport::Tcp,
            tcp_addr.clone(),
            RfcChoice::Rfc5424,
            Framing::OctetCounting,
        ),
        case(
            "tcp-newline-3164",
            SyslogTransport::Tcp,
            tcp_addr.clone(),
            RfcChoice::Rfc3164,
            Framing::Newline,
        ),
        case(
            "tcp-newline-5424",
            SyslogTransport::Tcp,
            tcp_addr.clone(),
            RfcChoice::Rfc5424,
            Framing::Newline,
        ),
    ];
    cases.push(Case {
        message: MsgFormat::Json,
        ..case(
            "tcp-json-5424",
            SyslogTransport::Tcp,
            tcp_addr.clone(),
            RfcChoice::Rfc5424,
            Framing::OctetCounting,
        )
    });
    cases.push(Case {
        message: MsgFormat::Json,
        ..case(
            "udp-json-3164",
            SyslogTransport::Udp,
            udp,
            RfcChoice::Rfc3164,
            Framing::OctetCounting,
        )
    });

    const PER_CASE: usize = 20;
    for c in &cases {
        let cfg = SyslogSinkConfig {
            transport: c.transport,
            address: c.address.clone(),
            rfc: Some(c.rfc),
            framing: c.framing,
            message: c.message,
            ..Default::default()
        };
        assert_eq!(cfg.validate(), vec![], "{}", c.ns);
        let fmt = cfg.format(HOSTNAME, HOSTNAME);
        let (sink, stats) = start_sink(&cfg);
        // Two chunks, so the sink splits more than one.
        for half in [0..PER_CASE / 2, PER_CASE / 2..PER_CASE] {
            sink.tx
                .blocking_send(render_chunk(&fmt, c.ns, half, false))
                .unwrap();
        }
        stop_sink(sink);
        assert_eq!(
            (
                stats.written.load(Relaxed),
                stats.failed.load(Relaxed),
                stats.errors.load(Relaxed)
            ),
            (PER_CASE as u64, 0, 0),
            "{}",
            c.ns
        );
    }

    let pid = std::process::id().to_string();
    for c in &cases {
        let lines = rsyslog.wait_lines(c.ns, PER_CASE);
        for (i, line) in lines.iter().enumerate() {
            let f: Vec<&str> = line.splitn(9, '|').collect();
            assert_eq!(f.len(), 9, "{}: {line}", c.ns);
            let (facility, severity, host, app, procid, msgid, sd, sd_parsed, msg) =
                (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
            let what = format!("{} #{i}: {line}", c.ns);
            assert_eq!((facility, severity), ("local0", "warning"), "{what}");
            let want_host = if c.ns == "unix-3164" {
                RSYSLOG_HOST
            } else {
                HOSTNAME
            };
            assert_eq!(host, want_host, "{what}");
            assert_eq!((app, procid), ("netpol-nflogd", pid.as_str()), "{what}");
            let port = 40000 + i;
            match c.rfc {
                RfcChoice::Rfc5424 => {
                    assert_eq!(msgid, "drop", "{what}");
                    assert_eq!(
                        sd,
                        format!(
                            "[netpol@32473 policy_namespace=\"{ns}\" policy_name=\"deny-db\" proto=\"tcp\" src_ip=\"10.42.0.10\" \
                             dest_ip=\"10.42.1.20\" src_class=\"private\" dest_class=\"private\" src_port=\"{port}\" \
                             dest_port=\"5432\" count=\"1\"]",
                            ns = c.ns
                        ),
                        "{what}"
                    );
                    let parsed: serde_json::Value =
                        serde_json::from_str(sd_parsed).expect("mmpstrucdata JSON");
                    assert_eq!(parsed["netpol@32473"]["policy_namespace"], c.ns, "{what}");
                    assert_eq!(
                        parsed["netpol@32473"]["src_port"],
                        port.to_string(),
                        "{what}"
                    );
                }
                RfcChoice::Rfc3164 => {
                    assert_eq!((msgid, sd, sd_parsed), ("-", "-", ""), "{what}");
                }
            }
            // rsyslog keeps the space after an RFC 3164 `TAG:` in %msg%; RFC 5424 has none.
            let msg = match c.rfc {
                RfcChoice::Rfc3164 => msg
                    .strip_prefix(' ')
                    .unwrap_or_else(|| panic!("no leading space: {what}")),
                RfcChoice::Rfc5424 => msg,
            };
            match c.message {
                // Byte for byte, the trailing space of syslogemu lines included.
                MsgFormat::Syslogemu => assert_eq!(msg, syslogemu_body(c.ns, i), "{what}"),
                MsgFormat::Json => {
                    let v: serde_json::Value = serde_json::from_str(msg).expect("JSON message");
                    assert_eq!(
                        v["oob.prefix"],
                        format!("DROP by policy {}/deny-db", c.ns),
                        "{what}"
                    );
                    assert_eq!(v["src_port"], port, "{what}");
                    assert_eq!(v["hostname"], HOSTNAME, "{what}");
                }
            }
        }
    }
}

/// Quotes, backslashes and brackets in structured data survive rsyslog's parser, and a
/// message holds no line break whatever the names hold.
#[test]
fn syslog_structured_data_escaping() {
    let dir = Scratch::new("syslog-sd");
    let tcp_port = free_tcp_port();
    let inputs = format!(
        "module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\")\n"
    );
    let rsyslog = Rsyslog::start(&dir, "rsyslog", &inputs, "");
    rsyslog.wait_ready(None, Some(tcp_port), &[]);
    let cfg = SyslogSinkConfig {
        transport: SyslogTransport::Tcp,
        address: format!("127.0.0.1:{tcp_port}"),
        ..Default::default()
    };
    let fmt = cfg.format(HOSTNAME, HOSTNAME);
    let (sink, stats) = start_sink(&cfg);
    sink.tx
        .blocking_send(render_chunk(&fmt, "sd-escape", 0..1, true))
        .unwrap();
    stop_sink(sink);
    assert_eq!(stats.written.load(Relaxed), 1);

    let line = rsyslog.wait_lines("sd-escape", 1).remove(0);
    let f: Vec<&str> = line.splitn(9, '|').collect();
    let parsed: serde_json::Value = serde_json::from_str(f[7]).expect("mmpstrucdata JSON");
    let sd = &parsed["netpol@32473"];
    assert_eq!(sd["policy_name"], "we\"ird]\\name\\x0a", "{line}");
    assert_eq!(sd["direction"], "egress", "{line}");
    assert_eq!(
        (&sd["src_pod"], &sd["src_namespace"]),
        (&"web-1".into(), &"sd-escape".into()),
        "{line}"
    );
    assert_eq!(
        (&sd["dest_pod"], &sd["dest_namespace"]),
        (&"db-0".into(), &"data".into()),
        "{line}"
    );
    // The newer fields, as the JSON has them, through the same escaping.
    assert_eq!(
        (&sd["dest_workload_kind"], &sd["dest_workload"]),
        (&"StatefulSet".into(), &"db".into()),
        "{line}"
    );
    assert_eq!(sd["dest_node"], "node-\"2]", "{line}");
    assert_eq!(sd["dest_services"], "data/db,data/db]ro\"", "{line}");
    assert_eq!(
        (&sd["src_class"], &sd["dest_class"], &sd["count"]),
        (&"private".into(), &"private".into(), &"1".into()),
        "{line}"
    );
}

/// rsyslog stops mid-stream: the sink keeps draining its channel, buffers up to its limit,
/// counts what it drops, and delivers the buffered messages once rsyslog is back on the port.
#[test]
fn syslog_survives_a_receiver_restart() {
    let dir = Scratch::new("syslog-restart");
    let tcp_port = free_tcp_port();
    let inputs = format!(
        "module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\")\n"
    );
    let mut rsyslog = Rsyslog::start(&dir, "first", &inputs, "");
    rsyslog.wait_ready(None, Some(tcp_port), &[]);
    const BUFFER: usize = 50;
    let cfg = SyslogSinkConfig {
        transport: SyslogTransport::Tcp,
        address: format!("127.0.0.1:{tcp_port}"),
        buffer_messages: BUFFER,
        ..Default::default()
    };
    let fmt = cfg.format(HOSTNAME, HOSTNAME);
    let (sink, stats) = start_sink(&cfg);

    sink.tx
        .blocking_send(render_chunk(&fmt, "restart", 0..10, false))
        .unwrap();
    assert_eq!(rsyslog.wait_lines("restart", 10).len(), 10);
    wait_until("10 written", WAIT, || stats.written.load(Relaxed) == 10);

    rsyslog.stop();
    // 150 messages while nobody listens, one chunk each, as fast as the pipeline would send
    // them: none may wait on the network.
    let started = Instant::now();
    for i in 10..160 {
        sink.tx
            .blocking_send(render_chunk(&fmt, "restart", i..i + 1, false))
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "sending took {:?}",
        started.elapsed()
    );
    wait_until("drops once the buffer is full", WAIT, || {
        stats.failed.load(Relaxed) == (150 - BUFFER) as u64
    });
    wait_until("a connection error", WAIT, || {
        stats.errors.load(Relaxed) >= 1
    });
    assert!(!sink.thread.is_finished());
    assert_eq!(stats.written.load(Relaxed), 10);

    // Same port, a new rsyslog: the 50 buffered messages (10..60) arrive, in order, once each.
    let rsyslog2 = Rsyslog::start(&dir, "second", &inputs, "");
    wait_until("buffer delivered", WAIT, || {
        stats.written.load(Relaxed) == 10 + BUFFER as u64
    });
    sink.tx
        .blocking_send(render_chunk(&fmt, "restart", 160..161, false))
        .unwrap();
    let lines = rsyslog2.wait_lines("restart", BUFFER + 1);
    let ports: Vec<usize> = lines.iter().map(|l| src_port(l)).collect();
    let want: Vec<usize> = (10..10 + BUFFER).chain([160]).map(|i| 40000 + i).collect();
    assert_eq!(ports, want);
    stop_sink(sink);
    assert_eq!(
        (stats.written.load(Relaxed), stats.failed.load(Relaxed)),
        (10 + BUFFER as u64 + 1, (150 - BUFFER) as u64)
    );
}

/// TLS to rsyslog's OpenSSL driver, with a CA the test makes: delivery, and a refused
/// handshake (wrong CA) counted as connection errors.
#[test]
fn syslog_tls() {
    let dir = Scratch::new("syslog-tls");
    make_certs(&dir);
    let tls_port = free_tcp_port();
    let global = format!(
        "global(DefaultNetstreamDriver=\"ossl\" DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
         DefaultNetstreamDriverCertFile=\"{d}/server.pem\" DefaultNetstreamDriverKeyFile=\"{d}/server.key\")\n",
        d = dir.dir.display()
    );
    let inputs = format!(
        "module(load=\"imtcp\" StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tls_port}\")\n"
    );
    let rsyslog = Rsyslog::start(&dir, "rsyslog", &inputs, &global);
    rsyslog.wait_ready(None, Some(tls_port), &[]);

    for (ns, framing, server_name) in [
        ("tls-octet", Framing::OctetCounting, Some("localhost")),
        // No server name: the host of the address, an IP address in the certificate.
        ("tls-newline", Framing::Newline, None),
    ] {
        let cfg = SyslogSinkConfig {
            transport: SyslogTransport::Tls,
            address: format!("127.0.0.1:{tls_port}"),
            framing,
            tls_ca_file: Some(dir.path("ca.pem")),
            tls_server_name: server_name.map(String::from),
            ..Default::default()
        };
        assert_eq!(cfg.validate(), vec![]);
        let fmt = cfg.format(HOSTNAME, HOSTNAME);
        let (sink, stats) = start_sink(&cfg);
        sink.tx
            .blocking_send(render_chunk(&fmt, ns, 0..5, false))
            .unwrap();
        sink.tx
            .blocking_send(render_chunk(&fmt, ns, 5..10, false))
            .unwrap();
        let lines = rsyslog.wait_lines(ns, 10);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(src_port(line), 40000 + i, "{line}");
            assert!(line.ends_with(&syslogemu_body(ns, i)), "{line}");
        }
        stop_sink(sink);
        assert_eq!(
            (
                stats.written.load(Relaxed),
                stats.failed.load(Relaxed),
                stats.errors.load(Relaxed)
            ),
            (10, 0, 0)
        );
    }

    // A CA that did not sign the server's certificate: the handshake fails every time, and
    // nothing is counted as written.
    let cfg = SyslogSinkConfig {
        transport: SyslogTransport::Tls,
        address: format!("127.0.0.1:{tls_port}"),
        tls_ca_file: Some(dir.path("other-ca.pem")),
        tls_server_name: Some("localhost".into()),
        ..Default::default()
    };
    let fmt = cfg.format(HOSTNAME, HOSTNAME);
    let (sink, stats) = start_sink(&cfg);
    sink.tx
        .blocking_send(render_chunk(&fmt, "tls-bad-ca", 0..3, false))
        .unwrap();
    wait_until("handshake errors", WAIT, || stats.errors.load(Relaxed) >= 2);
    stop_sink(sink);
    assert_eq!(
        (stats.written.load(Relaxed), stats.failed.load(Relaxed)),
        (0, 3)
    );
    assert!(rsyslog.lines("tls-bad-ca").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Events and sinks.

fn start_sink(cfg: &SyslogSinkConfig) -> (SinkHandle, Arc<SinkStats>) {
    let stats = SinkStats::new(&cfg.name());
    let sink = spawn_tuned(cfg, stats.clone(), fast()).expect("start the syslog sink");
    (sink, stats)
}

/// Closes the channel and waits for the sink to deliver and stop.
fn stop_sink(sink: SinkHandle) {
    drop(sink.tx);
    sink.thread.join().expect("sink thread");
}

/// Events `range` of a case: TCP SYNs 10.42.0.10:(40000+i) → 10.42.1.20:5432 dropped by
/// `DROP by policy <ns>/deny-db`; with `hostile`, a Kubernetes context whose policy name holds
/// the characters RFC 5424 escapes and a newline.
fn render_chunk(
    fmt: &SyslogFormat,
    ns: &str,
    range: std::ops::Range<usize>,
    hostile: bool,
) -> Chunk {
    let prefix = format!("DROP by policy {ns}/deny-db");
    let mut clock = LocalClock::new();
    let mut chunk = Chunk::default();
    for i in range {
        let payload = ipv4(
            6,
            i as u16,
            0x4000,
            0,
            [10, 42, 0, 10],
            [10, 42, 1, 20],
            &tcp(40000 + i as u16, 5432, 7, 0, 0x02, 64240, 0),
        );
        let mut buf = Vec::new();
        Packet {
            prefix: prefix.as_bytes(),
            timestamp: Some((1_794_042_303, i as u64)),
            payload: &payload,
            ..Default::default()
        }
        .encode(&mut buf);
        // The 16-byte netlink header precedes the NFLOG body.
        let msg = NflogMsg::parse(&buf[16..]).expect("parse the built message");
        let context = hostile.then(|| {
            let pod = |pod: &str, namespace: &str| {
                Some(Arc::new(PodMeta {
                    pod: pod.into(),
                    namespace: namespace.into(),
                    workload_kind: None,
                    workload: None,
                    node: None,
                }))
            };
            let service = |name: &str| ServiceHit {
                namespace: "data".into(),
                name: name.into(),
                port_name: Some("pg".into()),
                port: Some(5432),
                node_port: None,
                via: ServiceVia::Endpoints,
            };
            Arc::new(KubeContext {
                policies: vec![PolicyRef {
                    namespace: ns.into(),
                    name: "we\"ird]\\name\n".into(),
                }],
                resolved: true,
                direction: Some(Direction::Egress),
                src: pod("web-1", ns),
                dest: pod("db-0", "data").map(|p| {
                    Arc::new(PodMeta {
                        workload_kind: Some("StatefulSet".into()),
                        workload: Some("db".into()),
                        node: Some("node-\"2]".into()),
                        ..(*p).clone()
                    })
                }),
                dest_services: vec![service("db"), service("db]ro\"")],
                ..KubeContext::default()
            })
        });
        let ev = Event {
            packet: netpol_nflog::decode::decode(msg.family, msg.hw_protocol, msg.payload),
            time: Timestamp {
                sec: 1_794_042_303,
                usec: i as u32,
            },
            indev: IfName::default(),
            outdev: IfName::new(b"lo"),
            attribution: Attribution::from_prefix(msg.prefix),
            msg,
            context,
            count: 1,
        };
        render(fmt, &ev, &mut clock, &mut chunk.data);
        chunk.lines += 1;
    }
    chunk
}

/// The syslogemu text of event `i` of a case, as MSG must carry it.
fn syslogemu_body(ns: &str, i: usize) -> String {
    format!(
        "DROP by policy {ns}/deny-db IN= OUT=lo MAC= SRC=10.42.0.10 DST=10.42.1.20 LEN=40 TOS=00 PREC=0x00 TTL=64 ID={i} DF \
         PROTO=TCP SPT={} DPT=5432 SEQ=7 ACK=0 WINDOW=64240 SYN URGP=0 MARK=0x0 ",
        40000 + i
    )
}

/// `SPT=` of a syslogemu line.
fn src_port(line: &str) -> usize {
    let at = line.find(" SPT=").expect("SPT") + 5;
    line[at..]
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

// ---------------------------------------------------------------------------------------------
// rsyslog.

/// An rsyslogd of the test's own, writing parsed fields to `<name>.out`.
struct Rsyslog {
    proc_: Proc,
    out: PathBuf,
    name: String,
}

impl Rsyslog {
    fn start(dir: &Scratch, name: &str, inputs: &str, global: &str) -> Rsyslog {
        let work = dir.path(&format!("{name}.work"));
        fs::create_dir_all(&work).unwrap();
        let out = dir.path(&format!("{name}.out"));
        let conf = dir.path(&format!("{name}.conf"));
        fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" localHostname="{RSYSLOG_HOST}" maxMessageSize="64k")
{global}{inputs}
module(load="mmpstrucdata")
template(name="fields" type="string" string="{TEMPLATE}")
action(type="mmpstrucdata")
action(type="omfile" file="{out}" template="fields")
"#,
                work = work.display(),
                out = out.display(),
            ),
        )
        .unwrap();
        let proc_ = Proc::spawn(
            "rsyslogd (Debian package rsyslog)",
            Command::new(RSYSLOGD)
                .arg("-n")
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(dir.path(&format!("{name}.pid")))
                .stdin(Stdio::null()),
            &dir.path(&format!("{name}.stderr")),
        );
        Rsyslog {
            proc_,
            out,
            name: name.to_string(),
        }
    }

    /// Waits until every input accepts messages: a probe through each must reach the file.
    fn wait_ready(&self, udp: Option<u16>, tcp: Option<u16>, unix: &[&Path]) {
        let name = &self.name;
        if let Some(port) = tcp {
            wait_until(format_args!("{name}: imtcp to listen"), READY, || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        for path in unix {
            let what = format_args!("{name}: imuxsock to bind {}", path.display());
            wait_until(what, READY, || path.exists());
        }
        if let Some(port) = udp {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let probe = b"<13>Nov  7 09:05:03 probe probe: udp-ready";
            let wait = Wait::up_to(READY).every(Duration::from_millis(50));
            wait.until(format_args!("{name}: imudp to receive"), || {
                let _ = s.send_to(probe, ("127.0.0.1", port));
                ok_if(!self.lines("udp-ready").is_empty(), String::new)
            });
        }
    }

    /// The output lines containing `marker`.
    fn lines(&self, marker: &str) -> Vec<String> {
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(marker))
            .map(String::from)
            .collect()
    }

    /// Waits for exactly `n` lines containing `marker`.
    fn wait_lines(&self, marker: &str, n: usize) -> Vec<String> {
        let wait = Wait::up_to(WAIT).every(Duration::from_millis(50));
        wait.until(
            format_args!("{}: {n} lines for {marker}", self.name),
            || {
                let got = self.lines(marker).len();
                ok_if(got >= n, || {
                    format!("{got} of {n}; stderr:\n{}", self.proc_.stderr_text())
                })
            },
        );
        // A moment more, to see duplicates if any arrive.
        sleep(Duration::from_millis(200));
        let lines = self.lines(marker);
        assert_eq!(
            lines.len(),
            n,
            "{}: {marker}:\n{}",
            self.name,
            lines.join("\n")
        );
        lines
    }

    /// SIGTERM by PID, then wait for the exit (SIGKILL after 10 s).
    fn stop(&mut self) {
        self.proc_.stop(Duration::from_secs(10));
    }
}

/// A self-signed CA and a server certificate for `localhost` and 127.0.0.1 signed by it, plus a
/// second CA that signed nothing.
fn make_certs(dir: &Scratch) {
    let d = dir.dir.display();
    let script = format!(
        "set -e; cd {d}
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=critical,CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > server.ext
         for ca in ca other-ca; do
           openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $ca.key -out $ca.pem -days 2 \
             -subj /CN=netpol-test-$ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
         done
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// The daemon with a TLS sink whose receiver is away from the start.

/// netpol-nflogd with one TLS syslog sink to a receiver that is not there: nothing listens on
/// 127.0.0.1:6514 in a fresh namespace, and `nonexistent.invalid` (RFC 6761) never resolves.
/// The daemon must say so at start, before any packet, naming the address and the error; keep
/// running; and at shutdown count what it had buffered as failed (in the stats file) and log
/// it as lost. The exit status stays 0: the daemon reports losses in its counters, not its
/// exit code (as for a full disk, see `faults_disk_full`).
#[test]
fn syslog_tls_receiver_unreachable_from_start() {
    let sb = Sandbox::new("syslog-away");
    sb.udp_log_and_drop(9999, "DROP by policy default/syslog-away");
    make_certs(&sb);
    let log = sb.path("syslogemu.log");
    for (tag, address, error) in [
        (
            "refused",
            "127.0.0.1:6514",
            "127.0.0.1:6514: Connection refused",
        ),
        (
            "unresolved",
            "nonexistent.invalid:6514",
            "cannot resolve nonexistent.invalid:6514",
        ),
    ] {
        let stats = sb.path(&format!("{tag}.stats.json"));
        let config = format!(
            "{STANDALONE}\n[[sinks]]\nkind = \"syslog\"\ntransport = \"tls\"\naddress = \"{address}\"\n\
             tls_ca_file = \"{}\"\ntls_server_name = \"localhost\"\n",
            sb.path("ca.pem").display()
        );
        let mut d = Daemon::cmd(&sb)
            .tag(tag)
            .config(&config)
            .args(["--no-rate-limit"])
            .syslogemu(&log)
            .stats(&stats)
            .quiet()
            .start();
        let warning = "cannot connect to the syslog receiver";
        Wait::up_to(Duration::from_secs(10)).until(
            format_args!("{tag}: the warning at start"),
            || {
                let err = d.stderr_text();
                ok_if(err.contains(warning) && err.contains(error), || err)
            },
        );
        let err = d.stderr_text();
        assert_eq!(
            err.matches(warning).count(),
            1,
            "{tag}: warned once:\n{err}"
        );
        assert!(
            err.contains(&format!("address={address}")),
            "{tag}: the address:\n{err}"
        );
        sb.send_udp([127, 0, 0, 1].into(), [127, 0, 0, 1].into(), 9999, 5);
        Wait::up_to(Duration::from_secs(10)).until("5 lines in the file", || {
            let n = read_lossy(&log).lines().count();
            ok_if(n >= 5, || format!("{n} lines"))
        });
        d.alive("while the receiver is away");
        let (status, took) = d.terminate_within(Duration::from_secs(15));
        let err = d.stderr_text();
        assert_eq!(status.code(), Some(0), "{tag}: {status}; stderr:\n{err}");
        assert!(took < Duration::from_secs(10), "{tag}: exit took {took:?}");
        let fin: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&stats).expect("stats file"))
                .expect("stats JSON");
        let sink = format!("syslog+tls:{address}");
        assert_eq!(
            (
                fin["received"].as_u64(),
                fin["written"][&sink].as_u64(),
                fin["sink_failed"][&sink].as_u64()
            ),
            (Some(5), Some(0), Some(5)),
            "{tag}: {fin}"
        );
        assert!(
            err.contains("counted as lost") && err.contains("lost=5"),
            "{tag}: the loss logged:\n{err}"
        );
        // Lines sent on from one run to the next would be counted again.
        fs::remove_file(&log).expect("remove the file");
    }
}
