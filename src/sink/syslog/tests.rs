//! Unit tests of the syslog sink: configuration, and the buffer and transports against
//! receivers the test owns (a Unix datagram socket, a TCP listener). The tests against a real
//! rsyslog are in `tests/it/syslog.rs`.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::*;
use crate::render::syslog::{MsgFormat, Rfc};

fn fast() -> SyslogTuning {
    SyslogTuning {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        io_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_millis(300),
    }
}

fn chunk(from: usize, n: usize) -> Chunk {
    let mut data = Vec::new();
    for i in from..from + n {
        data.extend_from_slice(format!("<132>msg {i}\n").as_bytes());
    }
    Chunk {
        data,
        lines: n as u64,
        ..Default::default()
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("netpol-syslog-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn config_defaults_and_embedding() {
    // The daemon's `[[sinks]]` table is an enum tagged by `kind`: this is how it embeds the
    // struct and keeps unknown keys errors (serde's `flatten` would disable that check).
    #[derive(Deserialize, Debug)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    enum Sink {
        Syslog(SyslogSinkConfig),
    }
    #[derive(Deserialize, Debug)]
    struct File {
        sinks: Vec<Sink>,
    }
    let f: File = toml::from_str(
        "[[sinks]]\nkind = \"syslog\"\n\n[[sinks]]\nkind = \"syslog\"\ntransport = \"tls\"\naddress = \"logs.example:6514\"\n\
         rfc = 3164\nframing = \"newline\"\nfacility = \"local3\"\nseverity = \"notice\"\nmessage = \"json\"\n\
         buffer_messages = 5\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let Sink::Syslog(a) = &f.sinks[0];
    assert_eq!(*a, SyslogSinkConfig::default());
    assert_eq!(a.validate(), vec![]);
    assert_eq!(a.name(), "syslog+unix:/dev/log");
    assert_eq!(a.rfc(), RfcChoice::Rfc3164);
    let fmt = a.format("node-1", "node-1");
    assert_eq!(
        (fmt.rfc, fmt.facility, fmt.severity),
        (Rfc::Rfc3164Local, 16, 4)
    );
    assert_eq!(fmt.app_name, "netpol-nflogd");

    let Sink::Syslog(b) = &f.sinks[1];
    assert_eq!(
        (b.transport, b.framing, b.rfc(), b.message),
        (
            SyslogTransport::Tls,
            Framing::Newline,
            RfcChoice::Rfc3164,
            MsgFormat::Json
        )
    );
    assert_eq!(b.name(), "syslog+tls:logs.example:6514");
    let fmt = b.format("node-1", "node-1");
    assert_eq!((fmt.rfc, fmt.facility, fmt.severity), (Rfc::Rfc3164, 19, 5));
    let problems = b.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "tls_ca_file");
    assert!(
        problems[0]
            .1
            .starts_with("cannot read /nonexistent/ca.pem: "),
        "{problems:?}"
    );

    let err = toml::from_str::<File>("[[sinks]]\nkind = \"syslog\"\nport = 514\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `port`"), "{err}");
    let err = toml::from_str::<File>("[[sinks]]\nkind = \"syslog\"\nrfc = 5425\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rfc 5425 is not 3164 or 5424"), "{err}");
    let c: SyslogSinkConfig =
        toml::from_str("transport = \"udp\"\naddress = \"[::1]:514\"\nrfc = \"5424\"\n").unwrap();
    assert_eq!((c.rfc(), c.validate()), (RfcChoice::Rfc5424, vec![]));
}

/// Every problem as `key: problem`.
fn problems(c: &SyslogSinkConfig) -> Vec<String> {
    c.validate()
        .into_iter()
        .map(|(k, p)| format!("{k}: {p}"))
        .collect()
}

#[test]
fn every_problem_is_named() {
    let c: SyslogSinkConfig = toml::from_str(
        "transport = \"tcp\"\naddress = \"logs.example\"\nfacility = \"local9\"\nseverity = \"loud\"\n\
         app_name = \"a b\"\nhostname = \"x y\"\nbuffer_messages = 0\ntls_server_name = \"logs\"\n",
    )
    .unwrap();
    assert_eq!(
        problems(&c),
        [
            "address: \"logs.example\" is not host:port",
            "facility: \"local9\" is not a facility name (kern, user, daemon, local0 … local7, …) or 0-23",
            "severity: \"loud\" is not one of emerg, alert, crit, err, warning, notice, info, debug, or 0-7",
            "app_name: \"a b\" must be 1-48 printable ASCII characters without spaces",
            "hostname: \"x y\" must be at most 255 printable ASCII characters without spaces",
            "buffer_messages: 0 is not between 1 and 1000000",
            "tls_server_name: only applies to transport = \"tls\"",
        ]
    );
    for (address, want) in [
        ("h:0", "\"h:0\": \"0\" is not a port number 1-65535"),
        (":514", "\":514\" has no host"),
        (
            "::1:514",
            "\"::1:514\": write IPv6 addresses as [addr]:port",
        ),
        ("[::1:514", "\"[::1:514\": unclosed '['"),
    ] {
        let c = SyslogSinkConfig {
            transport: SyslogTransport::Udp,
            address: address.into(),
            ..Default::default()
        };
        assert_eq!(
            c.validate(),
            vec![("address".to_string(), want.to_string())]
        );
    }
    let c = SyslogSinkConfig {
        address: "dev/log".into(),
        app_name: "tag:x".into(),
        ..Default::default()
    };
    assert_eq!(
        problems(&c),
        [
            "address: \"dev/log\" is not an absolute socket path",
            "app_name: \"tag:x\": an RFC 3164 tag cannot contain ':', '[' or ']'",
        ]
    );
}

#[test]
fn splits_chunks_by_message() {
    let data = b"a\nbb\n\nccc\nd";
    assert_eq!(count_messages(data), 4);
    assert_eq!(first_messages_len(data, 0), 0);
    assert_eq!(first_messages_len(data, 1), 2);
    assert_eq!(first_messages_len(data, 2), 5);
    assert_eq!(first_messages_len(data, 3), 10);
    assert_eq!(first_messages_len(data, 4), data.len());
}

#[test]
fn unix_datagrams_buffer_while_away_and_drop_when_full() {
    let dir = scratch("unix");
    let path = dir.join("log.sock");
    let cfg = SyslogSinkConfig {
        address: path.display().to_string(),
        buffer_messages: 15,
        ..Default::default()
    };
    let stats = SinkStats::new(&cfg.name());
    let sink = spawn_tuned(&cfg, stats.clone(), fast()).unwrap();

    // Nobody listens: 15 messages are kept, 15 dropped, and sending never blocks.
    let started = Instant::now();
    for i in 0..3 {
        sink.tx.blocking_send(chunk(i * 10, 10)).unwrap();
    }
    wait_for("drops", || stats.failed.load(Relaxed) == 15);
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_for("connection errors", || stats.errors.load(Relaxed) >= 2);
    assert_eq!(stats.written.load(Relaxed), 0);

    // The receiver appears: the buffered messages arrive in order, one per datagram, without
    // the newline.
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    for i in 0..15 {
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("<132>msg {i}").as_bytes());
    }
    wait_for("written", || stats.written.load(Relaxed) == 15);
    sink.tx.blocking_send(chunk(100, 2)).unwrap();
    for i in 100..102 {
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("<132>msg {i}").as_bytes());
    }
    drop(sink.tx);
    sink.thread.join().unwrap();
    assert_eq!(
        (stats.written.load(Relaxed), stats.failed.load(Relaxed)),
        (17, 15)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shutdown_counts_what_could_not_be_sent() {
    let dir = scratch("shutdown");
    let cfg = SyslogSinkConfig {
        address: dir.join("nobody.sock").display().to_string(),
        ..Default::default()
    };
    let stats = SinkStats::new(&cfg.name());
    let sink = spawn_tuned(&cfg, stats.clone(), fast()).unwrap();
    sink.tx.blocking_send(chunk(0, 7)).unwrap();
    drop(sink.tx);
    let started = Instant::now();
    sink.thread.join().unwrap();
    // The grace period, plus at most one backoff.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (stats.written.load(Relaxed), stats.failed.load(Relaxed)),
        (0, 7)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback TCP port nobody listens on.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The receiver away from the start (nobody on the port, or a name that does not resolve): the
/// sink tries at once, before any message (so the daemon warns at start), the error names the
/// address, and what is buffered at shutdown is counted as failed.
#[test]
fn unreachable_at_start_is_tried_at_once_and_counted_at_shutdown() {
    let closed = closed_port();
    for (address, want) in [
        (closed.clone(), format!("{closed}: Connection refused")),
        (
            "nonexistent.invalid:6514".to_string(),
            "cannot resolve nonexistent.invalid:6514: ".to_string(),
        ),
    ] {
        let err = match Target::Tcp(address.clone()).connect(Duration::from_secs(2)) {
            Ok(_) => panic!("{address}: connected"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with(&want), "{address}: {err}");
        let cfg = SyslogSinkConfig {
            transport: SyslogTransport::Tcp,
            address: address.clone(),
            ..Default::default()
        };
        let stats = SinkStats::new(&cfg.name());
        let sink = spawn_tuned(&cfg, stats.clone(), fast()).unwrap();
        wait_for("a connection attempt before any message", || {
            stats.errors.load(Relaxed) >= 1
        });
        sink.tx.blocking_send(chunk(0, 4)).unwrap();
        drop(sink.tx);
        sink.thread.join().unwrap();
        assert_eq!(
            (stats.written.load(Relaxed), stats.failed.load(Relaxed)),
            (0, 4),
            "{address}"
        );
    }
}

/// A receiver that is there at start is connected to before the first message.
#[test]
fn connects_before_the_first_message() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = SyslogSinkConfig {
        transport: SyslogTransport::Tcp,
        address: listener.local_addr().unwrap().to_string(),
        ..Default::default()
    };
    let stats = SinkStats::new(&cfg.name());
    let sink = spawn_tuned(&cfg, stats.clone(), fast()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut accepted = None;
    wait_for("the sink's connection", || {
        accepted = listener.accept().ok();
        accepted.is_some()
    });
    drop(sink.tx);
    sink.thread.join().unwrap();
    assert_eq!(stats.errors.load(Relaxed), 0);
}

/// Reads everything a TCP sink sends until it closes the connection.
fn tcp_receiver() -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all
    });
    (address, h)
}

#[test]
fn tcp_framings() {
    for (framing, want) in [
        (Framing::OctetCounting, "10 <132>msg 010 <132>msg 1"),
        (Framing::Newline, "<132>msg 0\n<132>msg 1\n"),
    ] {
        let (address, rx) = tcp_receiver();
        let cfg = SyslogSinkConfig {
            transport: SyslogTransport::Tcp,
            address,
            framing,
            ..Default::default()
        };
        let stats = SinkStats::new(&cfg.name());
        let sink = spawn_tuned(&cfg, stats.clone(), fast()).unwrap();
        sink.tx.blocking_send(chunk(0, 2)).unwrap();
        drop(sink.tx);
        sink.thread.join().unwrap();
        assert_eq!(String::from_utf8(rx.join().unwrap()).unwrap(), want);
        assert_eq!(
            (
                stats.written.load(Relaxed),
                stats.failed.load(Relaxed),
                stats.errors.load(Relaxed)
            ),
            (2, 0, 0)
        );
    }
}
