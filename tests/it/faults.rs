//! Fault injection against the real daemon, with real NFLOG traffic flowing throughout.
//!
//! Every test builds its own network namespace with the K3s-shaped rule pair
//! `OUTPUT -o lo -p udp --dport 9999 -j NFLOG --nflog-group 100 --nflog-prefix "DROP by policy
//! default/faults"` + `-j DROP`, and a [`Sender`] thread (inside the namespace) sends UDP
//! datagrams through it at a steady rate from one connected socket. The kernel numbers the IPv4
//! identification of a connected socket's datagrams consecutively, so the `ID=` of a syslogemu
//! line names its packet: with fewer than 65,536 packets per run, a duplicated line or a lost
//! one shows up by number. The daemon runs with `--no-rate-limit`; its final counters come from
//! `--stats-file`, its live ones from `/metrics`.
//!
//! The faults: a full disk under the syslogemu file (a small tmpfs), log rotation by rename +
//! SIGHUP and by copytruncate, a rotation that creates a file the daemon cannot write (Debian
//! ulogd2's `create 640 ulog adm`) and the shipped logrotate configuration, a file of another
//! owner at start, SIGTERM in the middle of a flood, standard output closed by its reader,
//! nflog-tail clients that vanish or stall, the NFLOG group already taken, and the syslog
//! receiver going away and coming back.
//!
//! Needs root, `ip`, `iptables`, `mount`, `head`, `tcpdump`, `logrotate` and `gzip`.
//! Everything the tests start is stopped by PID; the namespaces and mounts they create are
//! removed.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::daemon::DaemonCmd;
use crate::support::metrics::{scrape, wait_metrics};
use crate::support::process::count_newlines;
use crate::support::sandbox::{spawn_in, wait_nflog_bound};
use crate::support::wait::{ok_if, wait_for};
use crate::support::{read_lossy, run, Daemon, Proc, Sandbox, Wait};

const PORT: u16 = 9999;
const PREFIX: &str = "DROP by policy default/faults";
const HOST: &str = "faulthost";
const METRICS_PORT: u16 = 9111;
/// NFLOG holds a partial batch up to its flush timeout (1 s by default); plus margin.
const FLUSH_WAIT: Duration = Duration::from_millis(1500);

// ---- Set-up -------------------------------------------------------------------------------------

/// A sandbox (namespace + scratch dir) with the NFLOG + DROP rule pair.
fn sandbox(tag: &str) -> Sandbox {
    let sb = Sandbox::new(tag);
    sb.udp_log_and_drop(PORT, PREFIX);
    sb
}

/// The NFLOG rule's packet counter: the kernel's count of messages it produced.
fn nflog_counter(sb: &Sandbox) -> u64 {
    sb.rule_counter("OUTPUT", "nflog-prefix")
}

/// The daemon writing syslogemu lines to `log`: no rate limit, fixed hostname, no stdout,
/// tail socket or metrics unless given.
fn daemon<'a>(sb: &'a Sandbox, log: &Path) -> DaemonCmd<'a> {
    Daemon::cmd(sb)
        .args(["--no-rate-limit", "--hostname", HOST])
        .syslogemu(log)
        .quiet()
}

/// SIGTERM, then waits at most 10 s for a successful exit.
fn stop(d: &mut Daemon) {
    let (status, _) = d.terminate_within(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}",
        d.stderr_text()
    );
}

fn alive(d: &mut Daemon) {
    d.alive("during the fault");
}

// ---- Traffic ------------------------------------------------------------------------------------

/// A thread in the namespace sending UDP datagrams to 127.0.0.1:PORT from one connected socket,
/// `rate` per second (0: flat out), until stopped. Every datagram the DROP rule refuses (EPERM)
/// went through NFLOG first, so it counts as sent.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(sb: &Sandbox, rate: u64) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, se) = (stop.clone(), sent.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in(&sb.ns, move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
            sock.connect(("127.0.0.1", PORT)).expect("connect UDP");
            let _ = ready_tx.send(());
            let t0 = Instant::now();
            let mut n = 0u64;
            while !st.load(Relaxed) {
                if rate > 0 {
                    let due = t0 + Duration::from_secs_f64(n as f64 / rate as f64);
                    let now = Instant::now();
                    if due > now {
                        sleep(due - now);
                    }
                }
                // Small bursts keep the syscall rate sane at high rates.
                for _ in 0..8 {
                    match sock.send(b"netpol-nflog faults") {
                        Ok(_) => n += 1,
                        Err(e) if e.raw_os_error() == Some(libc::EPERM) => n += 1,
                        Err(_) => {}
                    }
                }
                se.store(n, Relaxed);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sender did not start");
        Sender {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops the thread (no packet leaves after this returns); returns how many were sent.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sender thread panicked");
        }
        self.sent.load(Relaxed)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- Files and lines ----------------------------------------------------------------------------

/// The syslogemu lines of a file, checked: every line complete and well formed. Returns the
/// IP IDs in file order and a list of problems (cut or garbled lines, NUL bytes, a last line
/// without its newline).
struct LogFile {
    ids: Vec<u16>,
    problems: Vec<String>,
    bytes: usize,
}

fn read_log(path: &Path) -> LogFile {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let mut out = LogFile {
        ids: Vec::new(),
        problems: Vec::new(),
        bytes: data.len(),
    };
    if let Some(i) = data.iter().position(|&b| b == 0) {
        let run = data[i..].iter().take_while(|&&b| b == 0).count();
        out.problems.push(format!(
            "{}: {run} NUL bytes at offset {i} (a sparse region)",
            path.display()
        ));
    }
    let mut offset = 0usize;
    for chunk in data.split_inclusive(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(chunk);
        match syslogemu_id(&line) {
            Some(id) => out.ids.push(id),
            None => out.problems.push(format!(
                "{}: malformed line at byte {offset} ({} bytes): {:?}",
                path.display(),
                chunk.len(),
                shorten(&line)
            )),
        }
        offset += chunk.len();
    }
    out
}

/// The IP ID of one well-formed syslogemu line of our traffic (with its newline), else None.
fn syslogemu_id(line: &str) -> Option<u16> {
    let body = line.strip_suffix('\n')?;
    // "Nov 27 22:30:39 faulthost DROP by policy …": 15-character timestamp, then the host.
    let rest = body.get(16..)?;
    let rest = rest.strip_prefix(HOST)?.strip_prefix(' ')?;
    let rest = rest.strip_prefix(PREFIX)?.strip_prefix(" IN= OUT=lo ")?;
    if body.matches(" DROP by policy").count() != 1 || !rest.trim_end().ends_with("MARK=0x0") {
        return None;
    }
    if !rest.contains(&format!(" DPT={PORT} ")) {
        return None;
    }
    rest.split(' ')
        .find_map(|f| f.strip_prefix("ID="))
        .and_then(|v| v.parse().ok())
}

fn shorten(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_string();
    }
    let head: String = s.chars().take(150).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(150)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head} … {tail}")
}

/// IDs that appear more than once.
fn duplicates(ids: &[u16]) -> Vec<u16> {
    let mut seen = HashSet::new();
    let mut dup: Vec<u16> = ids.iter().copied().filter(|i| !seen.insert(*i)).collect();
    dup.sort_unstable();
    dup.dedup();
    dup
}

/// Where consecutive IDs (in file order) are not consecutive numbers: `(index, before, after)`.
fn gaps(ids: &[u16]) -> Vec<(usize, u16, u16)> {
    ids.windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] != w[0].wrapping_add(1))
        .map(|(i, w)| (i, w[0], w[1]))
        .collect()
}

// ---- Counters -----------------------------------------------------------------------------------

struct Final {
    raw: String,
    json: serde_json::Value,
}

impl Final {
    fn read(path: &Path, d: &Daemon) -> Final {
        let raw = fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "no stats file {} ({e}); stderr:\n{}",
                path.display(),
                d.stderr_text()
            )
        });
        let json = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("bad stats ({e}): {raw}"));
        Final { raw, json }
    }

    fn get(&self, key: &str) -> u64 {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("stats have no {key}: {}", self.raw))
    }

    fn written(&self, sink: &str) -> u64 {
        self.json["written"][sink]
            .as_u64()
            .unwrap_or_else(|| panic!("stats have no written.{sink:?}: {}", self.raw))
    }

    fn failed(&self, sink: &str) -> u64 {
        self.json["sink_failed"][sink]
            .as_u64()
            .unwrap_or_else(|| panic!("stats have no sink_failed.{sink:?}: {}", self.raw))
    }
}

fn file_sink(path: &Path) -> String {
    format!("file:{}", path.display())
}

// ---- A small tmpfs ------------------------------------------------------------------------------

/// A tmpfs mounted on `dir`; unmounted on drop. Mounted before the daemon starts: `ip netns
/// exec` gives the daemon a copy of the mount table, and with `/` private a later mount would
/// not reach it (a remount changes the shared superblock, so resizing does).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).expect("mkdir mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// ---- 1. Disk full -------------------------------------------------------------------------------

/// The syslogemu file lives on a 256 KiB tmpfs, the JSON file on the normal disk. The disk
/// fills within a second; the daemon must keep running, keep writing JSON, count the lines it
/// could not write, and write again once the tmpfs is grown. At the end every line in the file
/// is whole, and lines in the file + lines counted failed == messages received.
#[test]
fn faults_disk_full() {
    let sb = sandbox("fdisk");
    let small = sb.path("small");
    let mnt = Tmpfs::mount(&small, "256k");
    let log = small.join("syslogemu.log");
    let json = sb.path("events.json");
    let stats = sb.path("stats.json");
    let mut d = daemon(&sb, &log)
        .file("--json-file", &json)
        .metrics(METRICS_PORT)
        .stats(&stats)
        .start();
    let sink = file_sink(&log);
    let mut tx = Sender::start(&sb, 5_000);

    // Full: failures counted, the daemon alive, JSON still flowing.
    let full = wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(10),
        "disk full",
        |s| {
            let f = s.value("netpol_nflog_sink_lines_failed_total", &[("sink", &sink)]);
            if f > 0.0 {
                vec![]
            } else {
                vec![format!("no failed lines yet for {sink}")]
            }
        },
    );
    let json_before = count_newlines(&json);
    let failed_before = full.value("netpol_nflog_sink_lines_failed_total", &[("sink", &sink)]);
    let size_full = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    sleep(Duration::from_millis(800));
    alive(&mut d);
    let s = scrape(&sb, METRICS_PORT);
    let failed_during = s.value("netpol_nflog_sink_lines_failed_total", &[("sink", &sink)]);
    let json_during = count_newlines(&json);
    assert!(
        failed_during > failed_before,
        "failed lines did not grow while the disk was full ({failed_before} → {failed_during})"
    );
    assert!(
        json_during > json_before + 1000,
        "the JSON file on the normal disk did not keep growing while the other disk was full \
         ({json_before} → {json_during} lines)"
    );
    assert_eq!(
        fs::metadata(&log).map(|m| m.len()).unwrap_or(0),
        size_full,
        "the file grew on a full disk?"
    );

    // Space returns: writing resumes.
    mnt.resize("8m");
    let written_at_resize = s.value("netpol_nflog_sink_lines_written_total", &[("sink", &sink)]);
    wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(10),
        "space back",
        |s| {
            let w = s.value("netpol_nflog_sink_lines_written_total", &[("sink", &sink)]);
            if w > written_at_resize + 1000.0 {
                vec![]
            } else {
                vec![format!(
                    "{sink}: written {w}, at resize {written_at_resize}"
                )]
            }
        },
    );
    assert!(
        fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > size_full,
        "the file did not grow after the tmpfs was enlarged"
    );
    sleep(Duration::from_millis(300));
    let sent = tx.stop();
    sleep(FLUSH_WAIT);
    stop(&mut d);

    let fin = Final::read(&stats, &d);
    let received = fin.get("received");
    let failed = fin.failed(&sink);
    let file = read_log(&log);
    let newlines = count_newlines(&log);
    let json_lines = count_newlines(&json);
    eprintln!(
        "disk full: sent={sent} counter={} received={received} file lines={} (newlines {newlines}) \
         failed={failed} json={json_lines} stats={}",
        nflog_counter(&sb),
        file.ids.len(),
        fin.raw.trim()
    );
    assert!(failed > 0, "no failed lines counted: {}", fin.raw);
    assert_eq!(fin.get("lost"), 0, "NFLOG loss at 5,000/s: {}", fin.raw);
    assert_eq!(
        fin.written(&file_sink(&json)),
        received,
        "the JSON sink on the normal disk: {}",
        fin.raw
    );
    assert_eq!(json_lines, received, "lines in the JSON file != received");
    dup_free(&file.ids);
    // Exact accounting of the file sink.
    let mut problems = file.problems.clone();
    if newlines + failed != received {
        problems.push(format!(
            "lines in the file ({newlines} newline-terminated, {} well formed) + failed ({failed}) \
             = {} != received ({received}): {} line(s) counted as failed are in the file",
            file.ids.len(),
            newlines + failed,
            (newlines + failed) as i64 - received as i64
        ));
    }
    if fin.written(&sink) != file.ids.len() as u64 {
        problems.push(format!(
            "written.{sink:?} = {} but the file holds {} whole lines",
            fin.written(&sink),
            file.ids.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "disk-full accounting (a write that failed midway left part of its chunk in the file):\n  {}\nstats: {}",
        problems.join("\n  "),
        fin.raw
    );
}

fn dup_free(ids: &[u16]) {
    let d = duplicates(ids);
    assert!(
        d.is_empty(),
        "{} duplicated IDs, e.g. {:?}",
        d.len(),
        &d[..d.len().min(10)]
    );
}

// ---- Rotation: set-up and checks over the generations of a file ---------------------------------

/// The rotation tests' daemon: syslogemu to `syslogemu.log`, JSON to `json`, a stats file.
fn two_file_sinks(sb: &Sandbox, json: &str) -> (PathBuf, PathBuf, PathBuf, Daemon) {
    let (log, json, stats) = (
        sb.path("syslogemu.log"),
        sb.path(json),
        sb.path("stats.json"),
    );
    let d = daemon(sb, &log)
        .file("--json-file", &json)
        .stats(&stats)
        .start();
    (log, json, stats, d)
}

/// The end of a run: the daemon still alive, the sender stopped, NFLOG's partial batch flushed,
/// the daemon stopped (exit 0). What was sent, and the final counters.
fn wind_down(d: &mut Daemon, tx: &mut Sender, stats: &Path) -> (u64, Final) {
    alive(d);
    let sent = tx.stop();
    sleep(FLUSH_WAIT);
    stop(d);
    (sent, Final::read(stats, d))
}

/// `(file name, count)` for the report.
fn named(p: &Path, n: usize) -> (String, usize) {
    (p.file_name().unwrap().to_string_lossy().into_owned(), n)
}

/// The syslogemu generations of one file, oldest first: every line well-formed, no generation
/// empty (`empty`: what that would mean), every received message in exactly one of them, the IDs
/// consecutive across them. Adds what is wrong to `problems`; the lines per file.
fn check_syslogemu_generations(
    files: &[PathBuf],
    received: u64,
    empty: &str,
    problems: &mut Vec<String>,
) -> Vec<(String, usize)> {
    let mut ids = Vec::new();
    let mut per_file = Vec::new();
    for p in files {
        let f = read_log(p);
        problems.extend(f.problems.iter().cloned());
        per_file.push(named(p, f.ids.len()));
        if f.ids.is_empty() {
            problems.push(format!("{} is empty{empty}", p.display()));
        }
        ids.extend(f.ids);
    }
    let dups = duplicates(&ids);
    if !dups.is_empty() {
        problems.push(format!(
            "syslogemu: {} IDs twice, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(5)]
        ));
    }
    if ids.len() as u64 != received {
        problems.push(format!(
            "syslogemu: lines over all generations {} != received {received} ({per_file:?})",
            ids.len()
        ));
    }
    let g = gaps(&ids);
    if !g.is_empty() {
        problems.push(format!(
            "syslogemu: IDs not consecutive across generations at {:?}",
            &g[..g.len().min(5)]
        ));
    }
    per_file
}

/// The JSON generations of one file, oldest first: no generation empty (`empty`: what that would
/// mean), every line JSON, one record per received message (one message per packet here; the IP
/// ID identifies it), none twice. Adds what is wrong to `problems`; the records per file.
fn check_json_generations(
    files: &[PathBuf],
    received: u64,
    empty: &str,
    problems: &mut Vec<String>,
) -> Vec<(String, usize)> {
    let mut json_ids = Vec::new();
    let mut json_files = Vec::new();
    for p in files {
        let text = fs::read_to_string(p).unwrap_or_default();
        let n = text.lines().count();
        json_files.push(named(p, n));
        if n == 0 {
            problems.push(format!("{} is empty{empty}", p.display()));
        }
        for l in text.lines() {
            match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => json_ids.push(v["ip.id"].as_u64().unwrap_or(u64::MAX) as u16),
                Err(e) => problems.push(format!("{}: bad JSON ({e}): {}", p.display(), shorten(l))),
            }
        }
    }
    if json_ids.len() as u64 != received || !duplicates(&json_ids).is_empty() {
        problems.push(format!(
            "JSON: {} records ({} duplicated) over {json_files:?} != received {received}",
            json_ids.len(),
            duplicates(&json_ids).len()
        ));
    }
    json_files
}

// ---- 2a. Rename + SIGHUP ------------------------------------------------------------------------

/// logrotate's default: rename the files, then SIGHUP. Two rotations while traffic flows, with
/// both a syslogemu and a JSON file sink (the JSON one, as most deployments add one). Every
/// message must be in exactly one generation of each file, and every sink must have reopened
/// (the new files exist and hold the lines after the signal).
#[test]
fn faults_rotate_rename_sighup() {
    let sb = sandbox("frot");
    let (log, json, stats, mut d) = two_file_sinks(&sb, "events.json");
    let mut tx = Sender::start(&sb, 5_000);
    let mut problems = Vec::new();
    let mut generations = Vec::new();
    for g in 1..=2 {
        sleep(Duration::from_millis(700));
        let old_log = sb.path(&format!("syslogemu.log.{g}"));
        let old_json = sb.path(&format!("events.json.{g}"));
        for (cur, old) in [(&log, &old_log), (&json, &old_json)] {
            if let Err(e) = fs::rename(cur, old) {
                // The daemon did not recreate the file after the previous SIGHUP.
                problems.push(format!(
                    "rotation {g}: cannot rename {} ({e}): not recreated after SIGHUP {}",
                    cur.display(),
                    g - 1
                ));
            }
        }
        // Lines keep landing in the renamed files until the daemon reopens.
        sleep(Duration::from_millis(100));
        d.signal(libc::SIGHUP);
        generations.push((old_log, old_json));
    }
    sleep(Duration::from_millis(700));
    let (sent, fin) = wind_down(&mut d, &mut tx, &stats);
    let received = fin.get("received");
    let counter = nflog_counter(&sb);

    // The generations in order, then the current file. IDs consecutive across them while NFLOG
    // lost nothing (asserted below).
    let logs: Vec<PathBuf> = generations
        .iter()
        .map(|g| g.0.clone())
        .chain([log])
        .collect();
    let per_file = check_syslogemu_generations(
        &logs,
        received,
        ": the syslogemu sink did not reopen after SIGHUP",
        &mut problems,
    );
    let jsons: Vec<PathBuf> = generations
        .iter()
        .map(|g| g.1.clone())
        .chain([json])
        .collect();
    let json_files = check_json_generations(
        &jsons,
        received,
        ": the JSON file sink did not reopen after SIGHUP (it kept writing to the renamed file)",
        &mut problems,
    );
    eprintln!(
        "rotate: sent={sent} counter={counter} received={received} syslogemu {per_file:?} json \
         {json_files:?} stats={}",
        fin.raw.trim()
    );
    assert_eq!(fin.get("lost"), 0, "NFLOG loss at 5,000/s: {}", fin.raw);
    assert!(
        problems.is_empty(),
        "rename + SIGHUP rotation:\n  {}\nstats: {}",
        problems.join("\n  "),
        fin.raw
    );
}

// ---- 2b. copytruncate -----------------------------------------------------------------------------

/// logrotate's copytruncate: copy the file, then truncate it in place, while the daemon
/// appends. copytruncate has an inherent race: lines appended after the copy read the end of the
/// file and before the truncate are in neither file (logrotate's manual says so). The daemon's
/// side must still be right: with `O_APPEND` its next write lands at offset 0 of the truncated
/// file (no NUL-filled hole up to the old size), no line is duplicated or cut, and whatever is
/// missing is exactly one consecutive run of IDs at the cut.
#[test]
fn faults_rotate_copytruncate() {
    let sb = sandbox("fcopy");
    let log = sb.path("syslogemu.log");
    let copy = sb.path("syslogemu.log.1");
    let stats = sb.path("stats.json");
    let mut d = daemon(&sb, &log).stats(&stats).start();
    let mut tx = Sender::start(&sb, 5_000);
    sleep(Duration::from_millis(1000));
    // As logrotate does it: read + write the copy, then truncate the original.
    let t0 = Instant::now();
    fs::copy(&log, &copy).expect("copy");
    let copy_done = t0.elapsed();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    let window = t0.elapsed();
    let copied_bytes = fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
    sleep(Duration::from_millis(1000));
    let (sent, fin) = wind_down(&mut d, &mut tx, &stats);
    let received = fin.get("received");
    let a = read_log(&copy);
    let b = read_log(&log);
    let missing = received as i64 - (a.ids.len() + b.ids.len()) as i64;
    eprintln!(
        "copytruncate: sent={sent} received={received} copy={} ({copied_bytes} bytes, {copy_done:?}) \
         after={} ({} bytes) missing in the copy→truncate window ({window:?}) = {missing}; stats={}",
        a.ids.len(),
        b.ids.len(),
        b.bytes,
        fin.raw.trim()
    );
    assert_eq!(fin.get("lost"), 0, "NFLOG loss at 5,000/s: {}", fin.raw);
    assert_eq!(fin.written(&file_sink(&log)), received, "{}", fin.raw);
    let mut problems: Vec<String> = a.problems.iter().chain(&b.problems).cloned().collect();
    assert!(
        !a.ids.is_empty() && !b.ids.is_empty(),
        "copy {} lines, after {} lines",
        a.ids.len(),
        b.ids.len()
    );
    // No hole: the file after truncation is smaller than what was copied plus what came after.
    if b.bytes as u64 >= copied_bytes + (b.ids.len() as u64) * 400 {
        problems.push(format!(
            "the truncated file has {} bytes for {} lines: written at the old offset?",
            b.bytes,
            b.ids.len()
        ));
    }
    let mut all = a.ids.clone();
    all.extend(&b.ids);
    let dups = duplicates(&all);
    if !dups.is_empty() {
        problems.push(format!(
            "{} IDs in both files, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(5)]
        ));
    }
    if missing < 0 {
        problems.push(format!("{} more lines than received", -missing));
    }
    // Within each file the IDs run consecutively; between them, exactly the missing run.
    for (name, f) in [("copy", &a), ("after", &b)] {
        let g = gaps(&f.ids);
        if !g.is_empty() {
            problems.push(format!(
                "{name}: IDs not consecutive at {:?}",
                &g[..g.len().min(5)]
            ));
        }
    }
    if let (Some(&last), Some(&first)) = (a.ids.last(), b.ids.first()) {
        let jump = first.wrapping_sub(last) as i64 - 1;
        if jump != missing {
            problems.push(format!(
                "the IDs missing between the copy (last {last}) and the truncated file (first \
                 {first}) are {jump}, but {missing} lines are missing overall"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "copytruncate:\n  {}\nstats: {}",
        problems.join("\n  "),
        fin.raw
    );
}

// ---- 3. SIGTERM mid-flood -------------------------------------------------------------------------

/// SIGTERM while messages are in flight: the daemon exits 0 within 5 s and everything the kernel
/// logged while it was bound is written or counted lost.
///
/// Phase A is exact: the sender stops and SIGTERM follows within microseconds, while NFLOG
/// still holds a partial batch (its 1 s flush timer has not fired) and the socket holds what the
/// daemon has not read: lines == stats written, written + lost == the rule's counter.
/// Phase B keeps the sender going through SIGTERM and the exit, so the kernel keeps logging
/// after the daemon unbound; the counter read just before SIGTERM bounds from below what must be
/// accounted, the counter after the exit from above.
#[test]
fn faults_sigterm_mid_flood() {
    let sb = sandbox("fterm");
    for (phase, keep_sending) in [("A", false), ("B", true)] {
        let log = sb.path(&format!("{phase}.syslogemu.log"));
        let stats = sb.path(&format!("{phase}.stats.json"));
        let mut d = daemon(&sb, &log).tag(phase).stats(&stats).start();
        sb.iptables(&["-Z", "OUTPUT"]);
        let mut tx = Sender::start(&sb, 20_000);
        sleep(Duration::from_millis(1500));
        let (status, took, below, above) = if keep_sending {
            let below = nflog_counter(&sb);
            let (st, took) = d.terminate_within(Duration::from_secs(5));
            tx.stop();
            (st, took, below, nflog_counter(&sb))
        } else {
            tx.stop();
            let (st, took) = d.terminate_within(Duration::from_secs(5));
            let c = nflog_counter(&sb);
            (st, took, c, c)
        };
        assert!(
            status.success(),
            "{phase}: exit {status} after SIGTERM; stderr:\n{}",
            d.stderr_text()
        );
        let fin = Final::read(&stats, &d);
        let lines = count_newlines(&log);
        let written = fin.written(&file_sink(&log));
        let lost = fin.get("lost");
        eprintln!(
            "sigterm {phase}: exit in {took:?}; counter {below}..{above} lines={lines} stats={}",
            fin.raw.trim()
        );
        let f = read_log(&log);
        assert!(f.problems.is_empty(), "{phase}: {:?}", f.problems);
        assert_eq!(
            lines, written,
            "{phase}: lines in the file != stats written: {}",
            fin.raw
        );
        assert_eq!(
            fin.get("lost_unmeasured_overruns"),
            0,
            "{phase}: unmeasured loss: {}",
            fin.raw
        );
        assert!(
            below <= written + lost && written + lost <= above,
            "{phase}: written ({written}) + lost ({lost}) = {} outside the NFLOG rule counter's \
             [{below}, {above}] (read before SIGTERM / after exit); stats: {}",
            written + lost,
            fin.raw
        );
        assert!(below > 10_000, "{phase}: too little traffic ({below})");
    }
}

// ---- 4. Standard output closed --------------------------------------------------------------------

/// `netpol-nflogd --stdout json | head -n 5`: after head exits, writes to stdout fail (EPIPE).
/// The daemon keeps running, keeps writing its file, counts the stdout lines it could not write,
/// and exits 0 on SIGTERM.
#[test]
fn faults_stdout_closed() {
    let sb = sandbox("fstdout");
    let log = sb.path("syslogemu.log");
    let stats = sb.path("stats.json");
    let head_out = sb.path("head.out");
    let mut head = Command::new("head")
        .args(["-n", "5"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&head_out).unwrap())
        .spawn()
        .expect("spawn head");
    let pipe = head.stdin.take().unwrap();
    let mut d = daemon(&sb, &log)
        .args(["--stdout", "json"])
        .metrics(METRICS_PORT)
        .stats(&stats)
        .stdout(Stdio::from(pipe))
        .start();
    // `d`'s command (and with it our copy of the pipe's write end) is dropped.
    let mut tx = Sender::start(&sb, 5_000);
    // head reads 5 lines and exits.
    let st = wait_for("head to exit", Duration::from_secs(10), || {
        head.try_wait().unwrap()
    });
    assert!(st.success(), "head: {st}");
    assert_eq!(read_lossy(&head_out).lines().count(), 5);
    let s = wait_metrics(
        &sb,
        METRICS_PORT,
        Duration::from_secs(10),
        "stdout failed",
        |s| {
            if s.value(
                "netpol_nflog_sink_lines_failed_total",
                &[("sink", "stdout")],
            ) > 0.0
            {
                vec![]
            } else {
                vec!["no failed stdout lines yet".into()]
            }
        },
    );
    let lines_then = count_newlines(&log);
    let failed_then = s.value(
        "netpol_nflog_sink_lines_failed_total",
        &[("sink", "stdout")],
    );
    sleep(Duration::from_millis(1000));
    assert!(
        d.exited().is_none(),
        "the daemon died after its stdout closed; stderr:\n{}",
        d.stderr_text()
    );
    let s = scrape(&sb, METRICS_PORT);
    let lines_now = count_newlines(&log);
    assert!(
        lines_now > lines_then + 2_000,
        "the file did not keep growing at ~5,000/s after stdout closed ({lines_then} → {lines_now})"
    );
    assert!(
        s.value(
            "netpol_nflog_sink_lines_failed_total",
            &[("sink", "stdout")]
        ) > failed_then,
        "failed stdout lines stopped being counted"
    );
    tx.stop();
    sleep(FLUSH_WAIT);
    let (status, _) = d.terminate_within(Duration::from_secs(10));
    let err = d.stderr_text();
    assert!(status.success(), "exit {status}; stderr:\n{err}");
    let raw = read_lossy(&stats);
    let fin: serde_json::Value = serde_json::from_str(&raw).expect("stats JSON");
    let received = fin["received"].as_u64().unwrap();
    let (w, f) = (
        fin["written"]["stdout"].as_u64().unwrap(),
        fin["sink_failed"]["stdout"].as_u64().unwrap(),
    );
    eprintln!("stdout closed: stats={}", raw.trim());
    assert!(f > 0, "{raw}");
    assert_eq!(
        w + f,
        received,
        "stdout written + failed != received: {raw}"
    );
    // head printed 5 lines, so at least those were handed to the operating system ("written"
    // means exactly that). A chunk larger than the pipe's buffer is half written when the
    // reader goes away; its lines that went through must count as written, not failed.
    assert!(
        w >= 5,
        "stdout: head printed 5 records, yet written.stdout = {w} (every line of the chunk that got EPIPE midway was counted failed, including the ones the pipe took): {raw}"
    );
    assert_eq!(
        fin["written"][file_sink(&log)].as_u64().unwrap(),
        received,
        "{raw}"
    );
    assert_eq!(count_newlines(&log), received);
    assert!(
        err.contains("sink disabled"),
        "the daemon's log does not say stdout was disabled:\n{err}"
    );
}

// ---- 5. Tail clients that vanish or stall ---------------------------------------------------------

/// Several nflog-tail clients: one reads everything, two read a little and vanish, one never
/// reads. The file keeps its full rate, the stalled client is told how much it missed, and every
/// record is accounted for: the stalled client's records + its lost counts == received.
#[test]
fn faults_tail_clients_vanish_and_stall() {
    let sb = sandbox("ftail");
    let log = sb.path("syslogemu.log");
    let stats = sb.path("stats.json");
    let sock = sb.path("tail.sock");
    let mut d = daemon(&sb, &log)
        .file("--tail-socket", &sock)
        .metrics(METRICS_PORT)
        .stats(&stats)
        .start();
    let connect = || {
        let mut s = UnixStream::connect(&sock).expect("connect tail socket");
        s.write_all(b"{\"last\":0}\n").expect("request");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    // The healthy reader, on its own thread: (records, lost counts).
    let healthy = connect();
    let healthy = std::thread::spawn(move || read_tail(healthy));
    let mut vanish: Vec<UnixStream> = (0..2).map(|_| connect()).collect();
    let stalled = connect();
    // Give the hub time to register every client before traffic starts.
    sleep(Duration::from_millis(300));
    let mut tx = Sender::start(&sb, 5_000);

    for s in &mut vanish {
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < 20_000 {
            got += s.read(&mut buf).expect("vanishing client read");
        }
    }
    // Abrupt: closed with unread data queued for them.
    drop(vanish);
    let lines0 = count_newlines(&log);
    let sent0 = tx.sent.load(Relaxed);
    sleep(Duration::from_millis(3000));
    let kept_up = (count_newlines(&log) - lines0) as f64 / (tx.sent.load(Relaxed) - sent0) as f64;
    alive(&mut d);
    let mid = scrape(&sb, METRICS_PORT);
    let dropped_mid = mid.value("netpol_nflog_tail_events_dropped_total", &[]);

    // The stalled client reads now, while traffic continues: the daemon's queue for it, then
    // a "lost" record, then live records.
    let stalled = std::thread::spawn(move || read_tail(stalled));
    sleep(Duration::from_millis(1500));
    let sent = tx.stop();
    sleep(FLUSH_WAIT);
    let end = scrape(&sb, METRICS_PORT);
    stop(&mut d);
    let (h_records, h_lost) = healthy.join().expect("healthy reader");
    let (s_records, s_lost) = stalled.join().expect("stalled reader");
    let fin = Final::read(&stats, &d);
    let received = fin.get("received");
    let dropped = end.value("netpol_nflog_tail_events_dropped_total", &[]);
    let tail_sent = end.value("netpol_nflog_tail_events_sent_total", &[]);
    eprintln!(
        "tail: sent={sent} received={received} file kept up {:.0}% during the stall; healthy \
         records={h_records} lost={h_lost:?}; stalled records={s_records} lost={s_lost:?}; \
         metrics dropped={dropped} (mid {dropped_mid}) sent={tail_sent}; stats={}",
        kept_up * 100.0,
        fin.raw.trim()
    );
    assert!(
        kept_up > 0.8,
        "while a tail client stalled, the file got only {:.0}% of the lines the sender caused",
        kept_up * 100.0
    );
    assert!(
        dropped_mid > 0.0,
        "netpol_nflog_tail_events_dropped is 0 while a client stalled"
    );
    assert!(
        !s_lost.is_empty() && s_lost.iter().all(|&n| n > 0),
        "the stalled client got no {{\"type\":\"lost\",\"count\":N>0}} record: {s_lost:?}"
    );
    assert_eq!(fin.written(&file_sink(&log)), received, "{}", fin.raw);
    assert_eq!(count_newlines(&log), received);
    assert_eq!(fin.get("lost"), 0, "{}", fin.raw);
    let s_missed: u64 = s_lost.iter().sum();
    assert_eq!(
        s_records + s_missed,
        received,
        "stalled client: records ({s_records}) + lost counts ({s_missed}) != received"
    );
    let h_missed: u64 = h_lost.iter().sum();
    assert_eq!(
        h_records + h_missed,
        received,
        "healthy client: records ({h_records}) + lost counts ({h_missed}) != received"
    );
    assert!(
        dropped >= (s_missed + h_missed) as f64,
        "metric dropped {dropped} < lost counts told to the clients ({s_missed} + {h_missed})"
    );
}

/// Reads a tail stream to EOF: (event records, lost counts).
fn read_tail(s: UnixStream) -> (u64, Vec<u64>) {
    let mut records = 0;
    let mut lost = Vec::new();
    for line in BufReader::with_capacity(1 << 16, s).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("{\"type\":\"lost\"") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("lost record JSON");
            lost.push(v["count"].as_u64().expect("count"));
        } else {
            records += 1;
        }
    }
    (records, lost)
}

// ---- 6. The NFLOG group already taken -------------------------------------------------------------

/// Another reader holds group 100 (tcpdump, then a first daemon): a second daemon exits non-zero
/// within a few seconds saying the group is already bound; the first reader is undisturbed.
#[test]
fn faults_group_already_bound() {
    let sb = sandbox("fgroup");
    let mut tx = Sender::start(&sb, 2_000);

    // tcpdump -i nflog:100
    let pcap_err = sb.path("tcpdump.stderr");
    let mut tcpdump = Proc::spawn_with(
        "tcpdump",
        sb.exec("tcpdump")
            .args(["-i", "nflog:100", "-w", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&pcap_err).unwrap()),
        &pcap_err,
    );
    wait_nflog_bound(&sb.ns, &mut tcpdump, Duration::from_secs(10));
    let mut problems = Vec::new();
    problems.extend(second_daemon_refused(&sb, "after-tcpdump"));
    assert!(
        tcpdump.exited().is_none(),
        "tcpdump died: {}",
        read_lossy(&pcap_err)
    );
    tcpdump.terminate(Duration::from_secs(10));

    // A first daemon.
    let log = sb.path("first.log");
    let stats = sb.path("first.stats");
    let mut first = daemon(&sb, &log).tag("first").stats(&stats).start();
    sleep(Duration::from_millis(300));
    let before = count_newlines(&log);
    problems.extend(second_daemon_refused(&sb, "after-daemon"));
    sleep(Duration::from_millis(500));
    alive(&mut first);
    assert!(
        count_newlines(&log) > before + 500,
        "the first daemon stopped writing while the second one tried to bind"
    );
    tx.stop();
    sleep(FLUSH_WAIT);
    let (st, _) = first.terminate_within(Duration::from_secs(10));
    assert!(st.success(), "first daemon: {st}; {}", first.stderr_text());
    let fin = Final::read(&stats, &first);
    assert_eq!(
        fin.written(&file_sink(&log)),
        fin.get("received"),
        "{}",
        fin.raw
    );
    assert_eq!(count_newlines(&log), fin.get("received"), "{}", fin.raw);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Starts a second daemon; asserts it exits non-zero within 5 s; returns a problem if its
/// message does not say the group is already bound.
fn second_daemon_refused(sb: &Sandbox, tag: &str) -> Option<String> {
    let log = sb.path(&format!("{tag}.log"));
    let t0 = Instant::now();
    let mut d = daemon(sb, &log).tag(tag).spawn();
    d.proc_.name = format!("{tag}: a second daemon while group 100 is taken");
    let (status, _) = d.proc_.wait_exit(Duration::from_secs(5));
    let err = d.stderr_text();
    eprintln!("{tag}: second daemon: {status} after {:?}", t0.elapsed());
    assert!(
        !status.success() && status.code().is_some(),
        "{tag}: second daemon exited with {status}; stderr:\n{err}"
    );
    (!err.contains("already bound"))
        .then(|| format!("{tag}: {status}, but stderr does not say \"already bound\":\n{err}"))
}

// ---- 7. The syslog receiver goes away -------------------------------------------------------------

/// A TCP syslog receiver (newline framing) in the namespace: a thread collecting the IDs of the
/// syslogemu messages it receives, until stopped (then the listener and connections close).
struct Receiver {
    stop: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<u16>>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(sb: &Sandbox, port: u16, ids: Arc<Mutex<Vec<u16>>>) -> Receiver {
        let stop = Arc::new(AtomicBool::new(false));
        let (st, ids2) = (stop.clone(), ids.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in(&sb.ns, move || {
            let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind");
            l.set_nonblocking(true).unwrap();
            let _ = ready_tx.send(());
            let mut conns: Vec<(std::net::TcpStream, Vec<u8>)> = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while !st.load(Relaxed) {
                if let Ok((c, _)) = l.accept() {
                    c.set_nonblocking(true).unwrap();
                    conns.push((c, Vec::new()));
                }
                let mut idle = true;
                conns.retain_mut(|(c, pending)| match c.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        idle = false;
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=i).collect();
                            let text = String::from_utf8_lossy(&line);
                            if let Some(id) = text
                                .split(' ')
                                .find_map(|f| f.strip_prefix("ID="))
                                .and_then(|v| v.parse().ok())
                            {
                                ids2.lock().unwrap().push(id);
                            }
                        }
                        true
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                    Err(_) => false,
                });
                if idle {
                    sleep(Duration::from_millis(2));
                }
            }
            // Going away: listener and connections closed (RST for what is unread).
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver did not start");
        Receiver {
            stop,
            ids,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("receiver thread panicked");
        }
    }

    fn count(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The syslog receiver stops for 2 s and comes back, traffic flowing all along, with a small
/// buffer (1,000 messages) so the outage overflows it. The daemon keeps running and writing its
/// file, counts the syslog messages it dropped, and delivers again after the restart: at the end
/// written + failed == received for the syslog sink, and the receiver got every message
/// written, each once, except those in flight on the connection when it went away.
#[test]
fn faults_syslog_receiver_restart() {
    let sb = sandbox("fsyslog");
    let port = 5514;
    let log = sb.path("syslogemu.log");
    let stats = sb.path("stats.json");
    let config = format!(
        "[kubernetes]\nmode = \"off\"\n\n[[sinks]]\nkind = \"syslog\"\ntransport = \"tcp\"\n\
             address = \"127.0.0.1:{port}\"\nframing = \"newline\"\nmessage = \"syslogemu\"\n\
             buffer_messages = 1000\n"
    );
    let ids = Arc::new(Mutex::new(Vec::new()));
    let mut rx = Receiver::start(&sb, port, ids.clone());
    let mut d = daemon(&sb, &log)
        .config(&config)
        .metrics(METRICS_PORT)
        .stats(&stats)
        .start();
    let sink = format!("syslog+tcp:127.0.0.1:{port}");
    let mut tx = Sender::start(&sb, 5_000);
    sleep(Duration::from_millis(1000));
    let before = rx.count();
    if before < 2_000 {
        let s = scrape(&sb, METRICS_PORT);
        panic!(
            "the syslog receiver got {before} messages in 1 s at 5,000/s; metrics: received {}, \
             {sink} written {} failed {}; file {} lines; stderr:\n{}",
            s.value("netpol_nflog_messages_received_total", &[]),
            s.value("netpol_nflog_sink_lines_written_total", &[("sink", &sink)]),
            s.value("netpol_nflog_sink_lines_failed_total", &[("sink", &sink)]),
            count_newlines(&log),
            d.stderr_text()
        );
    }
    rx.stop();
    let down_at = ids.lock().unwrap().len();
    sleep(Duration::from_millis(2000));
    alive(&mut d);
    let s = scrape(&sb, METRICS_PORT);
    let failed_down = s.value("netpol_nflog_sink_lines_failed_total", &[("sink", &sink)]);
    let mut rx = Receiver::start(&sb, port, ids.clone());
    // The sink reconnects with backoff (up to 10 s between attempts at worst; here ~2 s).
    let wait = Wait::up_to(Duration::from_secs(15)).every(Duration::from_millis(50));
    wait.until("delivery after the receiver came back", || {
        let now = ids.lock().unwrap().len();
        ok_if(now >= down_at + 2_000, || {
            format!("{down_at} before, {now} now; stderr:\n{}", d.stderr_text())
        })
    });
    let sent = tx.stop();
    sleep(FLUSH_WAIT);
    sleep(Duration::from_millis(500));
    stop(&mut d);
    sleep(Duration::from_millis(200));
    rx.stop();
    let fin = Final::read(&stats, &d);
    let received = fin.get("received");
    let (w, f) = (fin.written(&sink), fin.failed(&sink));
    let got = ids.lock().unwrap().clone();
    let dups = duplicates(&got);
    eprintln!(
        "syslog: sent={sent} received={received} written={w} failed={f} (while down: \
         {failed_down}) delivered={} (before stop {down_at}) duplicates={}; stats={}",
        got.len(),
        dups.len(),
        fin.raw.trim()
    );
    assert!(
        failed_down > 0.0,
        "no syslog messages counted failed during a 2 s outage with a 1,000-message buffer"
    );
    assert_eq!(
        w + f,
        received,
        "syslog written + failed != received: {}",
        fin.raw
    );
    assert_eq!(fin.written(&file_sink(&log)), received, "{}", fin.raw);
    assert!(
        got.len() as u64 <= w + dups.len() as u64,
        "the receiver got more than was written"
    );
    let unique = got.len() - dups.len();
    // What the kernel had accepted on the connection when the receiver closed it is lost with
    // plain TCP; that is a bounded amount (socket buffers), not a steady leak.
    assert!(
        w - (unique as u64) < 5_000,
        "written {w} but only {unique} distinct messages arrived"
    );
}

// ---- 2c. Rotation that creates a file the daemon cannot write ---------------------------------

/// The shipped logrotate configuration, for the files in `dir`, signalling `pid` only (the
/// shipped `pkill -x netpol-nflogd` would also signal the daemons of tests running alongside).
fn shipped_logrotate(dir: &Path, pid: u32) -> String {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/logrotate-netpol-nflog"
    ))
    .expect("read config/logrotate-netpol-nflog");
    for needle in ["/var/log/ulog/", "pkill -HUP -x netpol-nflogd"] {
        assert!(text.contains(needle), "no {needle:?} in the shipped config");
    }
    text.replace("/var/log/ulog/", &format!("{}/", dir.display()))
        .replace("pkill -HUP -x netpol-nflogd", &format!("kill -HUP {pid}"))
}

/// A file's bytes, decompressing `PATH.gz` in place first if only that exists.
fn gunzipped(path: &Path) -> PathBuf {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    if !path.exists() && gz.exists() {
        run(Command::new("gzip").arg("-d").arg(&gz));
    }
    path.to_path_buf()
}

/// Debian's ulogd2 package rotates /var/log/ulog/*.log with `create 640 ulog adm`: rename,
/// create the new file owned by ulog (here nobody, 65534) mode 0640, signal. The daemon keeps
/// only CAP_NET_ADMIN, so it cannot open that file. Three phases while traffic flows, with a
/// syslogemu and a JSON file sink:
///
/// 1. the Debian rotation + SIGHUP: the reopen fails, is logged once per sink with owner, mode
///    and fix, and the lines go on to the rotated file (none counted failed);
/// 2. the operator follows the message (`chown root`): the retry reopens without a signal;
/// 3. a rotation by the real logrotate with the shipped config/logrotate-netpol-nflog: the new
///    files are root:adm 0640 and get the new lines.
///
/// At the end every message is in exactly one generation of each file, in order.
#[test]
fn faults_rotate_create_foreign_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sb = sandbox("fown");
    let (log, json, stats, mut d) = two_file_sinks(&sb, "netpol-nflog.json");
    let mut tx = Sender::start(&sb, 2_000);
    let files = [&log, &json];
    let rotated = |p: &Path, n: u32| PathBuf::from(format!("{}.{n}", p.display()));

    // 1. Debian's rotation.
    sleep(Duration::from_millis(700));
    for p in files {
        fs::rename(p, rotated(p, 1)).expect("rename");
        fs::write(p, b"").expect("create");
        fs::set_permissions(p, fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).expect("chown");
    }
    d.signal(libc::SIGHUP);
    let complaint = "cannot reopen after rotation";
    Wait::up_to(Duration::from_secs(5)).until("the reopen failures logged", || {
        ok_if(d.stderr_text().matches(complaint).count() == 2, || {
            d.stderr_text()
        })
    });
    sleep(Duration::from_millis(700));
    alive(&mut d);
    let err = d.stderr_text();
    for p in files {
        assert!(
            err.contains(&format!(
                "{} is owned by uid 65534 gid 65534 with mode 0640",
                p.display()
            )),
            "the message names owner and mode of {}:\n{err}",
            p.display()
        );
    }
    for fix in ["CAP_NET_ADMIN", "create 0640 root adm", "copytruncate"] {
        assert!(err.contains(fix), "the message names {fix:?}:\n{err}");
    }
    for p in files {
        assert_eq!(fs::metadata(p).unwrap().len(), 0, "{}", p.display());
    }

    // 2. The operator's fix; no signal.
    for p in files {
        std::os::unix::fs::chown(p, Some(0), Some(4)).expect("chown");
    }
    Wait::up_to(Duration::from_secs(15)).until("the retry reopened both files", || {
        ok_if(
            files.iter().all(|p| count_newlines(p) > 0)
                && d.stderr_text().matches("reopened after rotation").count() == 2,
            || d.stderr_text(),
        )
    });
    assert_eq!(
        d.stderr_text().matches(complaint).count(),
        2,
        "logged once per sink:\n{}",
        d.stderr_text()
    );

    // 3. The shipped configuration, run by logrotate.
    let conf = sb.path("logrotate.conf");
    fs::write(&conf, shipped_logrotate(&sb.dir, d.pid())).expect("write logrotate.conf");
    let state = sb.path("logrotate.state");
    run(Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(&conf));
    for p in files {
        let m = fs::metadata(p).expect("logrotate created the file");
        assert_eq!(
            (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
            (0, 4, 0o640),
            "{}",
            p.display()
        );
    }
    Wait::up_to(Duration::from_secs(5)).until("lines in the new files", || {
        ok_if(files.iter().all(|p| count_newlines(p) > 0), || {
            d.stderr_text()
        })
    });
    sleep(Duration::from_millis(500));
    let (sent, fin) = wind_down(&mut d, &mut tx, &stats);
    let received = fin.get("received");
    assert_eq!(fin.get("lost"), 0, "NFLOG loss at 2,000/s: {}", fin.raw);
    let mut problems = Vec::new();
    for p in files {
        let failed = fin.failed(&file_sink(p));
        if failed != 0 {
            problems.push(format!("{}: {failed} lines counted failed", p.display()));
        }
        if fin.written(&file_sink(p)) != received {
            problems.push(format!(
                "{}: written {} != received {received}",
                p.display(),
                fin.written(&file_sink(p))
            ));
        }
    }
    // Oldest first: Debian's rotated file (compressed by logrotate's second rotation, as
    // delaycompress does), the file fixed by the operator, the file logrotate created.
    let generations = |p: &Path| [gunzipped(&rotated(p, 2)), rotated(p, 1), p.to_path_buf()];
    let per_file = check_syslogemu_generations(&generations(&log), received, "", &mut problems);
    let json_files = check_json_generations(&generations(&json), received, "", &mut problems);
    eprintln!(
        "foreign owner: sent={sent} received={received} syslogemu {per_file:?} json \
         {json_files:?} stats={}",
        fin.raw.trim()
    );
    assert!(
        problems.is_empty(),
        "rotation with a foreign owner:\n  {}\nstats: {}\nstderr:\n{}",
        problems.join("\n  "),
        fin.raw,
        d.stderr_text()
    );
}

/// A syslogemu file ulogd2 left behind (ulog:adm 0640, here uid 103 gid 4), or its directory
/// (ulog:adm 0750, as Debian's package makes /var/log/ulog): the daemon cannot open it without
/// CAP_DAC_OVERRIDE, and exits 1 saying who owns what, with which mode, and the fix.
#[test]
fn faults_start_with_foreign_owned_file() {
    use std::os::unix::fs::PermissionsExt;
    let sb = sandbox("fstart");
    let file = sb.path("syslogemu.log");
    fs::write(&file, b"").expect("create");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::chown(&file, Some(103), Some(4)).expect("chown");
    let ulog = sb.path("ulog");
    fs::create_dir(&ulog).expect("mkdir");
    fs::set_permissions(&ulog, fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::chown(&ulog, Some(103), Some(4)).expect("chown");
    let inner = ulog.join("syslogemu.log");
    for (tag, path, want) in [
        (
            "file",
            &file,
            vec![
                format!(
                    "{} is owned by uid 103 gid 4 with mode 0640",
                    file.display()
                ),
                format!("chown root:adm {}", file.display()),
                "create 0640 root adm".into(),
            ],
        ),
        (
            "dir",
            &inner,
            vec![
                format!(
                    "{} is owned by uid 103 gid 4 with mode 0750, so it cannot reach {}",
                    ulog.display(),
                    inner.display()
                ),
                format!("chown root:adm {}", ulog.display()),
            ],
        ),
    ] {
        let mut d = daemon(&sb, path).tag(tag).spawn();
        let (status, _) = d.proc_.wait_exit(Duration::from_secs(10));
        let err = d.stderr_text();
        assert_eq!(status.code(), Some(1), "{tag}: {status}; stderr:\n{err}");
        for w in want
            .iter()
            .map(String::as_str)
            .chain(["Permission denied", "CAP_NET_ADMIN"])
        {
            assert!(err.contains(w), "{tag}: no {w:?} in stderr:\n{err}");
        }
    }
}
