//! Real-kernel conformance: `netpol-nflogd` writes the same syslogemu lines as ulogd2 2.0.8.
//!
//! ulogd2 (Debian 12's `ulogd2`, the package the K3s documentation tells users to install) is the
//! oracle. In private network namespaces the test installs NFLOG rules on OUTPUT, INPUT and
//! FORWARD for IPv4 and IPv6 (prefixes as kube-router writes them, an empty prefix, a prefix with
//! spaces, `--nflog-size` truncation, a mangle MARK), then:
//!
//! 1. runs ulogd2 bound to group 100 with the LOGEMU stack, sends the packet mix of
//!    `tests/traffic/conformance.py`, waits for the kernel's 1 s NFLOG flush, stops ulogd;
//! 2. runs `netpol-nflogd --syslogemu-file …`, sends the same packet mix, sends SIGTERM (the
//!    daemon drains the kernel queue and exits 0);
//! 3. compares both files line by line, in order, without the 15-character timestamp column.
//!
//! The traffic is byte-for-byte deterministic (fixed IP IDs, sequence numbers, ports, flow
//! labels, MAC addresses; no kernel-generated replies reach a log rule), so two ulogd2 runs give
//! identical files too; any difference is the daemon's. The topology:
//!
//! ```text
//! peer: a1 10.77.1.2 fd00:77:1::2 ─veth─ a0 10.77.1.1 fd00:77:1::1 :router: b0 10.77.2.1 ─veth─ b1 10.77.2.2 :far
//! ```
//!
//! The rules, ulogd and the daemon live in `router`; `peer` and `far` drop all input in
//! raw/PREROUTING, and `router` drops what it logged on INPUT, so nothing answers.
//!
//! A second test checks what ulogd2 gets wrong: prefixes with control bytes (nft accepts a
//! newline) must be escaped as `\xHH` and never split a line.
//!
//! Needs root, `ip`, `iptables-restore`, `ip6tables-restore`, `nft`, `unshare`, `setpriv`,
//! `ulogd` (Debian `ulogd2`) and `/usr/bin/python3` with `python3-scapy`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use crate::support::daemon::DAEMON;
use crate::support::sandbox::{ip_batch, wait_nflog_bound};
// `tail` takes these from here (until it uses `support` itself).
pub(crate) use crate::support::process::run_stdin;
pub(crate) use crate::support::sandbox::{
    in_netns, nflog_row, wait_nflog_queue_empty as wait_queue_empty,
    wait_nflog_unbound as wait_unbound,
};
pub(crate) use crate::support::{read_lossy, run, Proc, Scratch};

pub(crate) const GROUP: &str = "100";
pub(crate) const HOSTNAME: &str = "ulogd-ref";
const PYTHON: &str = "/usr/bin/python3";
const TRAFFIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/traffic/conformance.py");
const ULOGD_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/ulogd";

/// Packets `conformance.py` writes (it prints `sent N`).
pub(crate) const EXPECTED_SENT: usize = 316;
/// Lines ulogd2 writes for them: every packet once, plus the extra OUTPUT rules (empty prefix,
/// spaced prefix, three truncation rules, each for IPv4 and IPv6), minus the IPv4 fragments
/// that INPUT sees reassembled (5 fragments → 2 datagrams).
pub(crate) const EXPECTED_LINES: usize = EXPECTED_SENT + 10 - 3;
/// The longest prefix kube-router writes is 63 bytes (NFLOG holds 64 with the NUL).
const LONG_PREFIX: &str = "DROP by policy kube-system/a-very-long-network-policy-name-cut-";

#[test]
fn conformance_syslogemu_matches_ulogd2() {
    assert_eq!(LONG_PREFIX.len(), 63);
    let scratch = Scratch::new("conformance");
    let topo = Topology::new(&scratch);
    topo.install_rules();

    // 1. The oracle. ulogd2 leaves the kernel defaults (flush after 1 s or 100 messages) and
    // loses whatever is still queued when it stops: wait for the flush, then for the queue.
    let ulogd_out = run_ulogd(
        &scratch.dir,
        &topo.router,
        Duration::from_millis(1500),
        || {
            assert_eq!(topo.send_traffic(), EXPECTED_SENT, "packets sent to ulogd2");
        },
    );

    // 2. The daemon, same traffic.
    let ours_out = scratch.path("netpol-nflogd.syslogemu");
    let stats = scratch.path("netpol-nflogd.stats.json");
    let daemon_stderr = scratch.path("netpol-nflogd.stderr");
    let mut daemon = Proc::spawn(
        "netpol-nflogd",
        in_netns(&topo.router)
            .arg(DAEMON)
            .args(daemon_args(&ours_out, &stats)),
        &daemon_stderr,
    );
    wait_bound(&topo.router, &mut daemon);
    assert_eq!(
        topo.send_traffic(),
        EXPECTED_SENT,
        "packets sent to netpol-nflogd"
    );
    // No waiting here on purpose: SIGTERM must drain what the kernel still holds.
    let status = daemon.terminate(Duration::from_secs(10));
    let context = format!(
        "files kept in {}\nnetpol-nflogd stderr:\n{}\nstats: {}",
        scratch.dir.display(),
        read_lossy(&daemon_stderr),
        read_lossy(&stats),
    );
    assert!(
        status.success(),
        "netpol-nflogd exited with {status}\n{context}"
    );

    // 3. Compare.
    let reference = fs::read(&ulogd_out).expect("read ulogd output");
    let ours = fs::read(&ours_out)
        .unwrap_or_else(|e| panic!("read {}: {e}\n{context}", ours_out.display()));
    let reference = split_lines(&reference, "ulogd2");
    let ours = split_lines(&ours, "netpol-nflogd");
    assert_eq!(
        reference.len(),
        EXPECTED_LINES,
        "ulogd2 wrote an unexpected number of lines; the reference run is broken, not the daemon ({})",
        scratch.dir.display()
    );
    let strip = |lines: &[String]| {
        lines
            .iter()
            .map(|l| l[16..].to_string())
            .collect::<Vec<_>>()
    };
    parser_extracts_every_field(&ours);
    let (reference, ours) = (strip(&reference), strip(&ours));
    if reference != ours {
        panic!(
            "netpol-nflogd's syslogemu output differs from ulogd2's ({} vs {} lines; timestamps \
             stripped; '-' ulogd2, '+' netpol-nflogd):\n{}\n{context}",
            reference.len(),
            ours.len(),
            diff(&reference, &ours),
        );
    }
}

/// Prefixes ulogd2 would write raw (a newline splits the line, ESC drives the terminal) must come
/// out as `\xHH`, one line per packet.
#[test]
fn conformance_hostile_prefixes_are_escaped() {
    let scratch = Scratch::new("hostile");
    let ns = scratch.netns("h");
    run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
    // nft takes any byte inside the quotes, a newline included; iptables refuses the newline
    // but takes the other control bytes.
    let nft = "table inet hostile {\n\
               \tchain out {\n\
               \t\ttype filter hook output priority 0; policy accept;\n\
               \t\tudp dport 9001 log group 100 prefix \"a\nb\"\n\
               \t\tudp dport 9002 log group 100 prefix \"esc\x1b[31mred\"\n\
               \t\tudp dport 9003 log group 100 prefix \"cr\rx\x07\x7f\"\n\
               \t}\n\
               }\n";
    let nft_file = scratch.path("hostile.nft");
    fs::write(&nft_file, nft).expect("write nft rules");
    run(in_netns(&ns).args(["nft", "-f"]).arg(&nft_file));
    run(in_netns(&ns).args([
        "iptables",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "9004",
        "-j",
        "NFLOG",
        "--nflog-group",
        GROUP,
        "--nflog-prefix",
        "ipt\x1b]0;title\x07",
    ]));

    let out = scratch.path("hostile.syslogemu");
    let stats = scratch.path("hostile.stats.json");
    let stderr = scratch.path("hostile.stderr");
    let mut daemon = Proc::spawn(
        "netpol-nflogd",
        in_netns(&ns).arg(DAEMON).args(daemon_args(&out, &stats)),
        &stderr,
    );
    wait_bound(&ns, &mut daemon);
    run(in_netns(&ns).args([
        PYTHON,
        "-c",
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for port in (9001, 9002, 9003, 9004):\n    s.sendto(b'x', ('127.0.0.1', port))\n",
    ]));
    let status = daemon.terminate(Duration::from_secs(10));
    let context = format!("netpol-nflogd stderr:\n{}", read_lossy(&stderr));
    assert!(
        status.success(),
        "netpol-nflogd exited with {status}\n{context}"
    );

    let bytes = fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}\n{context}", out.display()));
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(
        bytes.iter().filter(|&&b| b == b'\n').count(),
        4,
        "one line per packet, none split by its prefix; the file:\n{text:?}\n{context}"
    );
    let lines = split_lines(&bytes, "netpol-nflogd");
    for line in &lines {
        assert!(
            !line.bytes().any(|b| b < 0x20 || b == 0x7f),
            "raw control byte in {line:?}"
        );
    }
    for (port, prefix) in [
        (9001, r"a\x0ab"),
        (9002, r"esc\x1b[31mred"),
        (9003, r"cr\x0dx\x07\x7f"),
        (9004, r"ipt\x1b]0;title\x07"),
    ] {
        let expected = format!(" {HOSTNAME} {prefix} IN= OUT=lo MAC= SRC=127.0.0.1 DST=127.0.0.1 ");
        let dpt = format!(" DPT={port} ");
        let line = lines
            .iter()
            .find(|l| l.contains(&dpt))
            .unwrap_or_else(|| panic!("no line for port {port}:\n{text}"));
        assert_eq!(
            &line[15..15 + expected.len()],
            expected,
            "escaped prefix for port {port}"
        );
    }
}

/// The namespaces and their addresses (see the module doc); `scratch` deletes them. `far` is
/// only routed to, so it needs no field.
pub(crate) struct Topology<'a> {
    pub(crate) router: String,
    peer: String,
    _scratch: &'a Scratch,
}

impl<'a> Topology<'a> {
    pub(crate) fn new(scratch: &'a Scratch) -> Topology<'a> {
        let (router, peer, far) = (scratch.netns("r"), scratch.netns("p"), scratch.netns("f"));
        // Fixed MAC addresses: INPUT and FORWARD lines print the whole Ethernet header.
        for (dev, mac, ns, peer_dev, peer_mac, peer_ns) in [
            (
                "a0",
                "02:77:00:00:01:01",
                &router,
                "a1",
                "02:77:00:00:01:02",
                &peer,
            ),
            (
                "b0",
                "02:77:00:00:02:01",
                &router,
                "b1",
                "02:77:00:00:02:02",
                &far,
            ),
        ] {
            run(Command::new("ip").args([
                "link", "add", dev, "netns", ns, "address", mac, "type", "veth", "peer", "name",
                peer_dev, "netns", peer_ns, "address", peer_mac,
            ]));
        }
        // auto_flowlabels=0: the IPv6 UDP sockets' packets get flow label 0, not a hash.
        // send_redirects=0, static neighbours, nodad: the kernel sends nothing of its own.
        run(in_netns(&router).args([
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.auto_flowlabels=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.default.send_redirects=0",
        ]));
        ip_batch(
            &router,
            "link set lo up\n\
             addr add 10.77.1.1/24 dev a0\n\
             addr add fd00:77:1::1/64 dev a0 nodad\n\
             addr add 10.77.2.1/24 dev b0\n\
             addr add fd00:77:2::1/64 dev b0 nodad\n\
             link set a0 up\n\
             link set b0 up\n\
             neigh replace 10.77.1.2 lladdr 02:77:00:00:01:02 dev a0 nud permanent\n\
             neigh replace fd00:77:1::2 lladdr 02:77:00:00:01:02 dev a0 nud permanent\n\
             neigh replace 10.77.2.2 lladdr 02:77:00:00:02:02 dev b0 nud permanent\n\
             neigh replace fd00:77:2::2 lladdr 02:77:00:00:02:02 dev b0 nud permanent\n",
        );
        for (ns, dev, net, mac) in [(&peer, "a1", "1", "01"), (&far, "b1", "2", "02")] {
            ip_batch(
                ns,
                &format!(
                    "link set lo up\n\
                     addr add 10.77.{net}.2/24 dev {dev}\n\
                     addr add fd00:77:{net}::2/64 dev {dev} nodad\n\
                     link set {dev} up\n\
                     route add default via 10.77.{net}.1\n\
                     route add default via fd00:77:{net}::1\n\
                     neigh replace 10.77.{net}.1 lladdr 02:77:00:00:{mac}:01 dev {dev} nud permanent\n\
                     neigh replace fd00:77:{net}::1 lladdr 02:77:00:00:{mac}:01 dev {dev} nud permanent\n"
                ),
            );
            let drop_all =
                "*raw\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n-A PREROUTING -j DROP\nCOMMIT\n";
            run_stdin(in_netns(ns).arg("iptables-restore"), drop_all);
            run_stdin(in_netns(ns).arg("ip6tables-restore"), drop_all);
        }
        Topology {
            router,
            peer,
            _scratch: scratch,
        }
    }

    /// The rules of `router`. kube-router's two prefixes (per-policy `DROP by policy ns/name`,
    /// and the pod chain's empty one), plus the cases that trip writers up.
    pub(crate) fn install_rules(&self) {
        for (restore, net, icmp, trunc_size) in [
            (
                "iptables-restore",
                "10.77.0.0/16",
                "-p icmp --icmp-type 17",
                "24",
            ),
            (
                "ip6tables-restore",
                "fd00:77::/32",
                "-p ipv6-icmp --icmpv6-type 200",
                "44",
            ),
        ] {
            let log = format!("-j NFLOG --nflog-group {GROUP}");
            let rules = format!(
                "*mangle\n\
                 :PREROUTING ACCEPT\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n\
                 -A OUTPUT -d {net} -p udp --dport 7042 -j MARK --set-mark 0x2a\n\
                 COMMIT\n\
                 *filter\n\
                 :INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n\
                 -A OUTPUT -d {net} -p udp --dport 7020 {log} --nflog-prefix TRUNC20 --nflog-size 20\n\
                 -A OUTPUT -d {net} -p tcp --dport 7024 {log} --nflog-prefix TRUNC{trunc_size} --nflog-size {trunc_size}\n\
                 -A OUTPUT -d {net} {icmp} {log} --nflog-prefix TRUNC{trunc_size} --nflog-size {trunc_size}\n\
                 -A OUTPUT -d {net} -p udp --dport 6666 {log}\n\
                 -A OUTPUT -d {net} -p udp --dport 7777 {log} --nflog-prefix \"spaced prefix: \"\n\
                 -A OUTPUT -d {net} {log} --nflog-prefix \"DROP by policy default/deny-all\"\n\
                 -A INPUT -s {net} {log}\n\
                 -A INPUT -s {net} -j DROP\n\
                 -A FORWARD -s {net} {log} --nflog-prefix \"{LONG_PREFIX}\"\n\
                 COMMIT\n"
            );
            run_stdin(in_netns(&self.router).arg(restore), &rules);
        }
    }

    /// Runs the packet mix; returns the number of packets sent.
    pub(crate) fn send_traffic(&self) -> usize {
        let out = run(in_netns(&self.router).args([PYTHON, TRAFFIC, "--peer", &self.peer]));
        out.lines()
            .find_map(|l| l.strip_prefix("sent "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("conformance.py printed no `sent N`: {out}"))
    }
}

/// Runs ulogd2 (LOGEMU, hostname [`HOSTNAME`]) bound to group 100 in `ns` while `traffic`
/// runs; waits `flush`, then until the kernel queue is empty; stops it. Its files are
/// `ulogd.*` in `dir`; returns the syslogemu one.
pub(crate) fn run_ulogd(dir: &Path, ns: &str, flush: Duration, traffic: impl FnOnce()) -> PathBuf {
    let out = dir.join("ulogd.syslogemu");
    let conf = dir.join("ulogd.conf");
    fs::write(&conf, ulogd_conf(&out, &dir.join("ulogd.log"))).expect("write ulogd.conf");
    let hostname_then_ulogd = format!("hostname {HOSTNAME} && exec ulogd -c {}", conf.display());
    let mut ulogd = Proc::spawn(
        "ulogd",
        in_netns(ns).args(["unshare", "--uts", "sh", "-c", &hostname_then_ulogd]),
        &dir.join("ulogd.stderr"),
    );
    wait_bound(ns, &mut ulogd);
    traffic();
    sleep(flush);
    wait_queue_empty(ns);
    sleep(Duration::from_millis(300));
    let status = ulogd.terminate(Duration::from_secs(5));
    assert!(status.success(), "ulogd exited with {status}");
    wait_unbound(ns);
    out
}

pub(crate) fn ulogd_conf(out: &Path, log: &Path) -> String {
    let plugins = [
        "inppkt_NFLOG",
        "raw2packet_BASE",
        "filter_IFINDEX",
        "filter_IP2STR",
        "filter_PRINTPKT",
        "output_LOGEMU",
    ]
    .iter()
    .map(|p| format!("plugin=\"{ULOGD_PLUGINS}/ulogd_{p}.so\"\n"))
    .collect::<String>();
    format!(
        "[global]\nlogfile=\"{}\"\nloglevel=3\n{plugins}\
         stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU\n\
         [log1]\ngroup={GROUP}\n\
         [emu1]\nfile=\"{}\"\nsync=1\n",
        log.display(),
        out.display()
    )
}

fn daemon_args(out: &Path, stats: &Path) -> Vec<String> {
    vec![
        "--hostname".into(),
        HOSTNAME.into(),
        "--syslogemu-file".into(),
        out.display().to_string(),
        "--stdout".into(),
        "none".into(),
        "--no-rate-limit".into(),
        "--stats-file".into(),
        stats.display().to_string(),
    ]
}

/// Splits a syslogemu file into lines, checking what every line of both writers must look like:
/// a `Mmm dd hh:mm:ss ` timestamp column and a `" \n"` ending.
pub(crate) fn split_lines(bytes: &[u8], who: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{who}: last line not terminated"
    );
    text.lines()
        .map(|line| {
            assert!(
                line.ends_with(' '),
                "{who}: line without the trailing space: {line:?}"
            );
            assert!(
                is_timestamp(line),
                "{who}: line without a `Mmm dd hh:mm:ss ` timestamp: {line:?}"
            );
            line.to_string()
        })
        .collect()
}

fn is_timestamp(line: &str) -> bool {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = line.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    b.len() > 16
        && MONTHS.contains(&&line[..3])
        && b[3] == b' '
        && (b[4] == b' ' || (b'1'..=b'3').contains(&b[4]))
        && digit(5)
        && b[6] == b' '
        && digit(7)
        && digit(8)
        && b[9] == b':'
        && digit(10)
        && digit(11)
        && b[12] == b':'
        && digit(13)
        && digit(14)
        && b[15] == b' '
}

/// A line diff (longest common subsequence) with one line of context; a changed line is shown
/// with a caret under the first differing byte.
pub(crate) fn diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    // (a index, b index) of each step; None on the side that has no line.
    let mut ops: Vec<(Option<usize>, Option<usize>)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((Some(i), Some(j)));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i * w + j + 1] >= lcs[(i + 1) * w + j]) {
            ops.push((None, Some(j)));
            j += 1;
        } else {
            ops.push((Some(i), None));
            i += 1;
        }
    }
    let mut out = String::new();
    let mut shown = 0;
    let mut k = 0;
    while k < ops.len() {
        if ops[k].0.is_some() && ops[k].1.is_some() {
            k += 1;
            continue;
        }
        // A hunk: the run of changes starting at k.
        let start = k;
        while k < ops.len() && !(ops[k].0.is_some() && ops[k].1.is_some()) {
            k += 1;
        }
        let hunk = &ops[start..k];
        if start > 0 {
            if let (Some(x), _) = ops[start - 1] {
                out.push_str(&format!("  {:>4}: {}\n", x + 1, a[x]));
            }
        }
        let dels: Vec<usize> = hunk.iter().filter_map(|o| o.0).collect();
        let adds: Vec<usize> = hunk.iter().filter_map(|o| o.1).collect();
        if dels.len() == adds.len() {
            for (&x, &y) in dels.iter().zip(&adds) {
                let col = a[x]
                    .bytes()
                    .zip(b[y].bytes())
                    .take_while(|(p, q)| p == q)
                    .count();
                out.push_str(&format!(
                    "- {:>4}: {}\n+ {:>4}: {}\n",
                    x + 1,
                    a[x],
                    y + 1,
                    b[y]
                ));
                out.push_str(&format!("        {}^\n", " ".repeat(col)));
            }
        } else {
            for &x in &dels {
                out.push_str(&format!("- {:>4}: {}\n", x + 1, a[x]));
            }
            for &y in &adds {
                out.push_str(&format!("+ {:>4}: {}\n", y + 1, b[y]));
            }
        }
        if let Some((Some(x), _)) = ops.get(k) {
            out.push_str(&format!("  {:>4}: {}\n", x + 1, a[*x]));
        }
        out.push_str("  ----\n");
        shown += 1;
        if shown == 40 {
            out.push_str("  (more hunks not shown)\n");
            break;
        }
    }
    out
}

/// Waits (up to 10 s) until `proc_` (ulogd, the daemon) has bound group 100 in `ns`.
pub(crate) fn wait_bound(ns: &str, proc_: &mut Proc) {
    wait_nflog_bound(ns, proc_, Duration::from_secs(10));
}

/// The shipped Fluent Bit regex (parsers/fluent-bit-parsers.conf, Oniguruma) must parse every
/// line shape this traffic produces from the real daemon, and extract each `KEY=VALUE` token's
/// value exactly (the first occurrence: ICMP's `ID=` comes after the IP header's).
fn parser_extracts_every_field(lines: &[String]) {
    const FIELDS: [(&str, &str); 21] = [
        ("IN", "in"),
        ("OUT", "out"),
        ("MAC", "mac"),
        ("SRC", "src"),
        ("DST", "dst"),
        ("LEN", "len"),
        ("TOS", "tos"),
        ("PREC", "prec"),
        ("TTL", "ttl"),
        ("ID", "id"),
        ("TC", "tc"),
        ("HOPLIMIT", "hoplimit"),
        ("FLOWLBL", "flowlbl"),
        ("PROTO", "proto"),
        ("SPT", "spt"),
        ("DPT", "dpt"),
        ("SEQ", "seq"),
        ("WINDOW", "window"),
        ("UID", "uid"),
        ("GID", "gid"),
        ("MARK", "mark"),
    ];
    for line in lines {
        let fields = crate::deploy::extract(line).unwrap_or_else(|| {
            panic!("the Fluent Bit regex does not match a real line:\n{line:?}")
        });
        // Tokens after "IN=" (the prefix before it may hold anything); INCOMPLETE is glued to the
        // next token, so strip it before splitting.
        let body = &line[line.find(" IN=").map_or(0, |i| i + 1)..];
        let body = body.replace("INCOMPLETE", " ");
        let mut seen = std::collections::HashSet::new();
        let mut after_proto = false;
        for token in body.split(' ') {
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            // After PROTO=, ICMP's ID/SEQ/TYPE/CODE are transport fields of their own.
            let key = match (after_proto, key) {
                (true, "ID") => "icmp_id",
                (true, "TYPE") => "icmp_type",
                (true, "CODE") => "icmp_code",
                (true, "SEQ") if !fields.contains_key("seq") => "icmp_seq",
                _ => key,
            };
            after_proto |= key == "PROTO";
            if !seen.insert(key.to_string()) {
                continue;
            }
            let field = match FIELDS.iter().find(|(k, _)| *k == key) {
                Some((_, f)) => *f,
                None if key.starts_with("icmp_") => key,
                None => continue,
            };
            assert_eq!(
                fields.get(field).map(String::as_str),
                Some(value),
                "field {field} of a real line:\n{line:?}\nextracted: {fields:?}"
            );
        }
        let prefix = fields.get("prefix").map(String::as_str).unwrap_or("");
        if let Some(rest) = prefix.strip_prefix("DROP by policy ") {
            let (ns, name) = rest.split_once('/').expect("ns/name");
            assert_eq!(
                fields.get("policy_namespace").map(String::as_str),
                Some(ns),
                "{line:?}"
            );
            assert_eq!(
                fields.get("policy_name").map(String::as_str),
                Some(name),
                "{line:?}"
            );
        }
    }
}
