//! Appending to a file, reopened on SIGHUP so logrotate's rename-and-signal works; with
//! copytruncate, `O_APPEND` makes writes land at the new end of the truncated file. A rotation
//! that does not signal this daemon (a `postrotate` written for ulogd2) is noticed too: every
//! [`REOPEN_RETRY`] while lines arrive, the sink checks that the path still names the file it
//! has open, and reopens when another file took its place.
//!
//! A reopen can fail. The usual reason is the rotation itself: a `create MODE OWNER GROUP`
//! line naming another owner (Debian's ulogd2 package rotates `/var/log/ulog/*.log` with
//! `create 640 ulog adm`) makes a file this process cannot open. netpol-nflogd runs as uid 0
//! but keeps no capability except `CAP_NET_ADMIN`, and without `CAP_DAC_OVERRIDE` root is
//! subject to file permission checks like any other user (capabilities(7),
//! <https://man7.org/linux/man-pages/man7/capabilities.7.html>). So when the reopen fails the
//! sink keeps the file it has open (the rotated one, still in place under its new name with
//! logrotate's default `rename` and `delaycompress`) and writes on to it, tries the reopen
//! again every [`REOPEN_RETRY`] while lines arrive and at every SIGHUP, and logs the failure
//! once, with the file's owner and mode and the fix, and the recovery once. Each failed attempt
//! counts as a sink error when [`FileOutput::count_errors_in`] was given the sink's counters.
//! Should the rotated file be deleted meanwhile (compressed by the next rotation), lines
//! written to it would vanish: they are counted as failed instead.
//!
//! A file that cannot be opened at start is an error naming the same facts (who owns the file
//! or the directory that blocks the way, with which mode) and the fix.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{whole_lines, write_counting, Output, WriteError};
use crate::stats::SinkStats;

/// How often a failed reopen is tried again while lines arrive (and at every SIGHUP).
pub const REOPEN_RETRY: Duration = Duration::from_secs(5);

pub struct FileOutput {
    path: PathBuf,
    file: Option<File>,
    /// Set while the path cannot be reopened: lines go on to the file still open.
    stuck: Option<Stuck>,
    /// When the path was last looked at (a retry, or whether it still names the open file).
    last_check: Instant,
    retry_every: Duration,
    /// Where failed reopen attempts are counted (as errors).
    stats: Option<Arc<SinkStats>>,
}

/// A reopen that failed.
struct Stuck {
    since: Instant,
    /// Why, as logged.
    reason: String,
}

impl FileOutput {
    /// Opens (creating the directory and the file) at start, so a bad path fails early. A
    /// permission problem is explained: owner, mode, fix.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = Self::open_path(&path).map_err(|e| explain(&path, e))?;
        Ok(FileOutput {
            path,
            file: Some(file),
            stuck: None,
            last_check: Instant::now(),
            retry_every: REOPEN_RETRY,
            stats: None,
        })
    }

    /// Counts each failed reopen attempt in `stats.errors` (the sink's
    /// `netpol_nflog_sink_errors`).
    pub fn count_errors_in(mut self, stats: Arc<SinkStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Tries a failed reopen again this often (default [`REOPEN_RETRY`]).
    pub fn retry_every(mut self, every: Duration) -> Self {
        self.retry_every = every;
        self
    }

    fn open_path(path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Opens the path again. On failure with a file still open, keeps writing to that one and
    /// reports success: nothing is lost (see the module documentation).
    fn try_reopen(&mut self) -> io::Result<()> {
        let err = match Self::open_path(&self.path) {
            Ok(f) => {
                if let Some(s) = self.stuck.take() {
                    tracing::info!(
                        path = %self.path.display(),
                        after_s = s.since.elapsed().as_secs(),
                        "reopened after rotation; the lines written meanwhile are in the rotated file"
                    );
                }
                self.file = Some(f);
                return Ok(());
            }
            Err(e) => explain(&self.path, e),
        };
        if let Some(st) = &self.stats {
            st.errors.fetch_add(1, Relaxed);
        }
        let Some(file) = &self.file else {
            return Err(err);
        };
        let now = Instant::now();
        self.last_check = now;
        match &mut self.stuck {
            Some(_) => {
                tracing::debug!(path = %self.path.display(), error = %err, "still cannot reopen");
            }
            None => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %err,
                    writing_to = %current_name(file),
                    retry_s = self.retry_every.as_secs_f32(),
                    "cannot reopen after rotation: writing on to the file already open (the \
                     rotated one), trying again every retry_s seconds and at every SIGHUP"
                );
                self.stuck = Some(Stuck {
                    since: now,
                    reason: err.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether the path exists but names another file than the one open: a rotation that did
    /// not signal this daemon (Debian ulogd2's `postrotate` signals ulogd2). A missing path is
    /// left alone: logrotate may be between its rename and its `create`, which would fail if
    /// this process created the file first.
    fn replaced(&self) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(p), Ok(f)) => (p.dev(), p.ino()) != (f.dev(), f.ino()),
            _ => false,
        }
    }

    /// While stuck: an error if the file still open was deleted, so that lines written to it
    /// would be lost.
    fn deleted_error(&self) -> Option<io::Error> {
        let (stuck, file) = (self.stuck.as_ref()?, self.file.as_ref()?);
        let gone = file.metadata().map(|m| m.nlink() == 0).unwrap_or(false);
        gone.then(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the rotated file the lines were going to was deleted, and {} cannot be \
                     reopened: {}",
                    self.path.display(),
                    stuck.reason
                ),
            )
        })
    }
}

impl Output for FileOutput {
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if self.last_check.elapsed() >= self.retry_every {
            self.last_check = Instant::now();
            if self.stuck.is_some() {
                self.try_reopen().map_err(WriteError::new)?;
            } else if self.replaced() {
                tracing::info!(
                    path = %self.path.display(),
                    "the path names another file now (rotated without SIGHUP?): reopening"
                );
                self.try_reopen().map_err(WriteError::new)?;
            }
        }
        if self.file.is_none() {
            self.file = Some(
                Self::open_path(&self.path).map_err(|e| WriteError::new(explain(&self.path, e)))?,
            );
        }
        if let Some(e) = self.deleted_error() {
            return Err(WriteError::new(e));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| WriteError::new(io::Error::other("file not open")))?;
        write_counting(file, data).map_err(|(err, n)| {
            // A full disk can take part of a line. Cut it off again so the next line, written
            // when space returns, does not get glued to a fragment.
            let complete = whole_lines(data, n);
            if n > complete {
                if let Ok(len) = file.metadata().map(|m| m.len()) {
                    let _ = file.set_len(len.saturating_sub((n - complete) as u64));
                }
            }
            WriteError { err, complete }
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.try_reopen()
    }
}

/// The name the open file has now (`/proc/self/fd`), e.g. `syslogemu.log.1` after a rename.
fn current_name(file: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "(unknown)".into())
}

/// `err` from opening `path`, with the reason spelled out when it is a permission problem.
fn explain(path: &Path, err: io::Error) -> io::Error {
    if err.kind() != io::ErrorKind::PermissionDenied {
        return err;
    }
    match permission_hint(path) {
        Some(hint) => io::Error::new(err.kind(), format!("{err}: {hint}")),
        None => err,
    }
}

/// Who owns what, with which mode, and what to do, for a path this process may not open for
/// appending.
fn permission_hint(path: &Path) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let who = if me == 0 {
        "root".to_string()
    } else {
        me.to_string()
    };
    let why = format!(
        "netpol-nflogd runs as uid {me} and keeps no capability but CAP_NET_ADMIN, so file \
         permissions apply to it as to any other user"
    );
    let facts = |p: &Path, m: &std::fs::Metadata| {
        format!(
            "{} is owned by uid {} gid {} with mode {:04o}",
            p.display(),
            m.uid(),
            m.gid(),
            m.permissions().mode() & 0o7777
        )
    };
    let p = path.display();
    match std::fs::metadata(path) {
        Ok(m) => Some(format!(
            "{}; {why}. Fix it on the node: `chown {who}:adm {p} && chmod 0640 {p}`, and rotate \
             it with `create 0640 {who} adm` or `copytruncate`, never `create` with another owner \
             (e.g. Debian ulogd2's `create 640 ulog adm`)",
            facts(path, &m)
        )),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // A directory on the way cannot be entered: the deepest one that can be looked at.
            let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
            ancestors.reverse();
            let dir = ancestors.into_iter().find(|d| {
                std::fs::metadata(d).is_ok()
                    && std::fs::metadata(d.join("."))
                        .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
            })?;
            let m = std::fs::metadata(dir).ok()?;
            let d = dir.display();
            Some(format!(
                "{}, so it cannot reach {p}; {why}. Fix it on the node: `chown {who}:adm {d}` \
                 (Debian's ulogd2 package makes /var/log/ulog ulog:adm 0750)",
                facts(dir, &m)
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
            let m = std::fs::metadata(dir).ok()?;
            let d = dir.display();
            Some(format!(
                "{}, so it cannot create {p} there; {why}. Fix it on the node: `chown {who}:adm \
                 {d}`, or create the file as `{who}` with mode 0640",
                facts(dir, &m)
            ))
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::{CapSet, Capability};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("netpol-file-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Runs `f` on a thread that, like the daemon, writes files without CAP_DAC_OVERRIDE,
    /// CAP_DAC_READ_SEARCH and CAP_FOWNER (capabilities are per thread: the test's other threads
    /// keep theirs). `None` when the test does not run as root with those capabilities.
    fn as_daemon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let held = caps::has_cap(None, CapSet::Effective, Capability::CAP_DAC_OVERRIDE);
        if rustix::process::geteuid().as_raw() != 0 || !matches!(held, Ok(true)) {
            eprintln!("skipped: needs root with CAP_DAC_OVERRIDE");
            return None;
        }
        let t = std::thread::spawn(move || {
            for cap in [
                Capability::CAP_DAC_OVERRIDE,
                Capability::CAP_DAC_READ_SEARCH,
                Capability::CAP_FOWNER,
            ] {
                caps::drop(None, CapSet::Effective, cap).expect("drop a capability");
            }
            f()
        });
        Some(t.join().expect("the daemon-like thread panicked"))
    }

    /// Debian's ulogd2 rotation: rename, `create 640 ulog adm` (here: nobody), signal. The
    /// reopen fails; every line must still land, in the rotated file, and none be counted
    /// failed; once the file is fixed, the retry finds it.
    #[test]
    fn reopen_failure_keeps_writing_to_the_rotated_file() {
        let dir = scratch("rotate");
        let log = dir.join("syslogemu.log");
        let old = dir.join("syslogemu.log.1");
        let ran = as_daemon({
            let (log, old) = (log.clone(), old.clone());
            move || {
                let stats = SinkStats::new("file");
                let mut out = FileOutput::open(log.clone())
                    .unwrap()
                    .count_errors_in(stats.clone())
                    .retry_every(Duration::from_millis(200));
                out.write_chunk(b"one\n").unwrap();
                std::fs::rename(&log, &old).unwrap();
                std::fs::write(&log, b"").unwrap();
                std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
                std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
                // SIGHUP: the reopen fails, but is no error for the sink: nothing is lost.
                out.reopen().expect("falls back to the rotated file");
                out.write_chunk(b"two\n").unwrap();
                out.write_chunk(b"three\n").unwrap();
                assert_eq!(stats.errors.load(Relaxed), 1);
                // The operator fixes the owner; the next retry picks the file up.
                std::os::unix::fs::chown(&log, Some(0), Some(0)).unwrap();
                std::thread::sleep(Duration::from_millis(250));
                out.write_chunk(b"four\n").unwrap();
                stats.errors.load(Relaxed)
            }
        });
        if let Some(errors) = ran {
            assert_eq!(lines(&old), ["one", "two", "three"]);
            assert_eq!(lines(&log), ["four"]);
            assert_eq!(errors, 1);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A rotation nobody signals the daemon about (a `postrotate` for ulogd2): the lines go to
    /// the rotated file until the next check, then to the new file; a path that is missing
    /// (between logrotate's rename and its create) is not created by the sink.
    #[test]
    fn rotation_without_sighup_is_noticed() {
        let dir = scratch("nosignal");
        let log = dir.join("syslogemu.log");
        let old = dir.join("syslogemu.log.1");
        let mut out = FileOutput::open(log.clone())
            .unwrap()
            .retry_every(Duration::from_millis(100));
        out.write_chunk(b"one\n").unwrap();
        std::fs::rename(&log, &old).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        out.write_chunk(b"two\n").unwrap();
        assert!(
            !log.exists(),
            "the sink must not create the file on its own"
        );
        std::fs::write(&log, b"").unwrap();
        out.write_chunk(b"three\n").unwrap();
        std::thread::sleep(Duration::from_millis(150));
        out.write_chunk(b"four\n").unwrap();
        assert_eq!(lines(&old), ["one", "two", "three"]);
        assert_eq!(lines(&log), ["four"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The rotated file deleted while the new one still cannot be opened: lines would vanish,
    /// so they are reported failed, naming both problems.
    #[test]
    fn lines_for_a_deleted_rotated_file_are_failed() {
        let dir = scratch("deleted");
        let log = dir.join("events.json");
        let ran = as_daemon({
            let log = log.clone();
            move || {
                let mut out = FileOutput::open(log.clone()).unwrap();
                std::fs::remove_file(&log).unwrap();
                std::fs::write(&log, b"").unwrap();
                std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
                std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
                out.reopen().unwrap();
                out.write_chunk(b"lost\n").unwrap_err().err.to_string()
            }
        });
        if let Some(err) = ran {
            assert!(err.contains("was deleted"), "{err}");
            assert!(err.contains("uid 65534 gid 65534 with mode 0640"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without a file open (a reopen failing for a reason that is no permission problem, here
    /// a directory in the file's place) the error goes to the caller, unchanged.
    #[test]
    fn reopen_failure_without_a_file_open_is_an_error() {
        let dir = scratch("isdir");
        let log = dir.join("syslogemu.log");
        let mut out = FileOutput::open(log.clone()).unwrap();
        out.file = None;
        std::fs::remove_file(&log).unwrap();
        std::fs::create_dir(&log).unwrap();
        assert!(out.reopen().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// At start: the file or the directory in the way, named with owner and mode, and the fix.
    #[test]
    fn start_errors_name_owner_mode_and_fix() {
        let dir = scratch("start");
        let file = dir.join("syslogemu.log");
        std::fs::write(&file, b"").unwrap();
        std::os::unix::fs::chown(&file, Some(103), Some(4)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let ulog = dir.join("ulog");
        std::fs::create_dir(&ulog).unwrap();
        std::os::unix::fs::chown(&ulog, Some(103), Some(4)).unwrap();
        std::fs::set_permissions(&ulog, std::fs::Permissions::from_mode(0o750)).unwrap();
        let inner = ulog.join("syslogemu.log");
        let ran = as_daemon({
            let (file, inner) = (file.clone(), inner.clone());
            move || {
                let a = FileOutput::open(file).err().map(|e| e.to_string());
                let b = FileOutput::open(inner).err().map(|e| e.to_string());
                (a, b)
            }
        });
        if let Some((a, b)) = ran {
            let a = a.expect("an existing file of another owner cannot be opened");
            assert!(a.starts_with("Permission denied"), "{a}");
            assert!(
                a.contains(&format!(
                    "{} is owned by uid 103 gid 4 with mode 0640",
                    file.display()
                )),
                "{a}"
            );
            assert!(a.contains("CAP_NET_ADMIN"), "{a}");
            assert!(a.contains("create 0640 root adm"), "{a}");
            assert!(a.contains("copytruncate"), "{a}");
            let b = b.expect("a directory root cannot enter");
            assert!(
                b.contains(&format!(
                    "{} is owned by uid 103 gid 4 with mode 0750, so it cannot reach {}",
                    ulog.display(),
                    inner.display()
                )),
                "{b}"
            );
            assert!(
                b.contains(&format!("chown root:adm {}", ulog.display())),
                "{b}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
