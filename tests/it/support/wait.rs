//! Polling with a deadline: every wait in the tests goes through here, so a timeout always
//! panics the same way, naming what was awaited and the last thing that was wrong.

use std::fmt::Display;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long to wait and how often to look.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    pub timeout: Duration,
    pub every: Duration,
}

impl Wait {
    /// Up to `timeout`, looking every 20 ms.
    pub const fn up_to(timeout: Duration) -> Wait {
        Wait {
            timeout,
            every: Duration::from_millis(20),
        }
    }

    /// Looks every `every` instead.
    pub const fn every(self, every: Duration) -> Wait {
        Wait { every, ..self }
    }

    /// Calls `check` until it returns `Ok`, and returns that value. After the timeout, panics
    /// with `what` and the last `Err` (the complaint: what is still wrong, any diagnostics).
    /// `check` may panic itself to stop early (a process that died, a value that overshot).
    pub fn until<T>(self, what: impl Display, mut check: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(v) = self.attempt(deadline, &what, &mut check) {
                return v;
            }
            sleep(self.every);
        }
    }

    /// [`Wait::until`] for async code on a current-thread runtime (the awaited work runs on it
    /// while this sleeps).
    pub async fn until_async<T>(
        self,
        what: impl Display,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(v) = self.attempt(deadline, &what, &mut check) {
                return v;
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// One look: the value, or `None` to look again; a panic once `deadline` has passed.
    fn attempt<T>(
        self,
        deadline: Instant,
        what: &impl Display,
        check: &mut impl FnMut() -> Result<T, String>,
    ) -> Option<T> {
        match check() {
            Ok(v) => Some(v),
            Err(complaint) if Instant::now() >= deadline => {
                timed_out(self.timeout, what, &complaint)
            }
            Err(_) => None,
        }
    }
}

fn timed_out(timeout: Duration, what: &impl Display, complaint: &str) -> ! {
    if complaint.is_empty() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
    panic!("timed out after {timeout:?} waiting for {what}: {complaint}");
}

/// Polls `check` every 20 ms until it returns `Some`; panics naming `what` after `timeout`.
pub(crate) fn wait_for<T>(
    what: impl Display,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    Wait::up_to(timeout).until(what, || check().ok_or_default())
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `timeout`.
pub(crate) fn wait_until(what: impl Display, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()))
}

/// [`wait_until`] on a current-thread tokio runtime (the awaited work runs while it sleeps).
pub(crate) async fn wait_until_async(
    what: impl Display,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let check = || cond().then_some(()).ok_or_default();
    Wait::up_to(timeout).until_async(what, check).await
}

/// `true` as `Ok(())`, else the complaint `why()`.
pub(crate) fn ok_if(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

trait OkOrDefault<T> {
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}
