//! Least privilege: the daemon needs only `CAP_NET_ADMIN` (to bind NFLOG groups and to raise its
//! socket buffer with `SO_RCVBUFFORCE`). When started as root it drops every other capability
//! from its effective, permitted, inheritable, ambient and bounding sets and sets
//! `no_new_privs`, before it reads any packet, so a bug in a parser cannot be turned into more
//! than that.
//!
//! Every step is checked, and the result is read back from the kernel: [`Outcome::Dropped`] is
//! returned only when the process holds `CAP_NET_ADMIN` and nothing else. When a step fails the
//! remaining steps are still taken (each only takes privilege away), and the error says what
//! failed and what the process holds now.
//!
//! Capabilities are per thread: call this before any other thread exists.
//!
//! Files it writes are owned by root and created by root (uid 0 is the owner, so no
//! `CAP_DAC_OVERRIDE` is needed); a log directory owned by another user must be writable by uid 0
//! through its mode.

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};

const KEEP: Capability = Capability::CAP_NET_ADMIN;

/// What was done, for the daemon's log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Only CAP_NET_ADMIN is left.
    Dropped,
    /// The process did not hold CAP_NET_ADMIN to begin with; nothing was changed.
    NotHeld,
}

/// Dropping capabilities failed, in part or entirely.
#[derive(Debug)]
pub struct Error {
    /// Each step that failed, in order.
    pub failures: Vec<String>,
    /// What the process holds now, as read back from the kernel.
    pub holding: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; holding now: {}",
            self.failures.join("; "),
            self.holding
        )
    }
}

impl std::error::Error for Error {}

/// Keeps `CAP_NET_ADMIN` and drops everything else, for this process and anything it could exec.
pub fn keep_only_net_admin() -> Result<Outcome, Error> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| Error {
        failures: vec![format!("cannot read the permitted capability set: {e}")],
        holding: "unknown".into(),
    })?;
    if !permitted.contains(&KEEP) {
        return Ok(Outcome::NotHeld);
    }
    let mut failures = Vec::new();
    let keep: CapsHashSet = [KEEP].into_iter().collect();

    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes below. Only what
    // it holds is dropped, so a container runtime that already narrowed it (and took
    // CAP_SETPCAP away) is no failure. `thread_all_supported` asks the kernel which
    // capabilities it knows (`PR_CAPBSET_READ`).
    let mut bounding_failed: Vec<(Capability, caps::errors::CapsError)> = Vec::new();
    for cap in sorted(caps::runtime::thread_all_supported()) {
        if cap == KEEP {
            continue;
        }
        match caps::has_cap(None, CapSet::Bounding, cap) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = caps::drop(None, CapSet::Bounding, cap) {
                    bounding_failed.push((cap, e));
                }
            }
            Err(e) => bounding_failed.push((cap, e)),
        }
    }
    if let Some((cap, e)) = bounding_failed.first() {
        failures.push(format!(
            "cannot drop {} capabilities from the bounding set (needs CAP_SETPCAP; {cap}: {e})",
            bounding_failed.len()
        ));
    }
    // Inheritable before permitted (it may not exceed the old permitted set without
    // CAP_SETPCAP), effective before permitted (effective must stay within permitted).
    for (set, value) in [
        (CapSet::Inheritable, CapsHashSet::new()),
        (CapSet::Effective, keep.clone()),
        (CapSet::Permitted, keep.clone()),
    ] {
        if let Err(e) = caps::set(None, set, &value) {
            failures.push(format!("cannot set the {set:?} set: {e}"));
        }
    }
    // Ambient capabilities would survive exec; there is no exec, but clear them anyway. Kernels
    // before 4.3 have no ambient set, so nothing to clear.
    let ambient = caps::runtime::ambient_set_supported().is_ok();
    if ambient {
        if let Err(e) = caps::clear(None, CapSet::Ambient) {
            failures.push(format!("cannot clear the ambient set: {e}"));
        }
    }
    if let Err(e) = rustix::thread::set_no_new_privs(true) {
        failures.push(format!("cannot set no_new_privs: {e}"));
    }

    // Read it all back: what the kernel says, not what the calls returned, decides.
    let state = State::read(ambient);
    let none = CapsHashSet::new();
    for (name, got, want) in [
        ("effective", &state.effective, &keep),
        ("permitted", &state.permitted, &keep),
        ("inheritable", &state.inheritable, &none),
        ("ambient", &state.ambient, &none),
    ] {
        match got {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("the {name} set holds {}", names(got))),
            Err(e) => failures.push(format!("cannot read the {name} set back: {e}")),
        }
    }
    match &state.bounding {
        Ok(got) if got.is_subset(&keep) => {}
        Ok(got) => failures.push(format!("the bounding set holds {}", names(got))),
        Err(e) => failures.push(format!("cannot read the bounding set back: {e}")),
    }
    match state.no_new_privs {
        Ok(true) => {}
        Ok(false) => failures.push("no_new_privs is not set".into()),
        Err(e) => failures.push(format!("cannot read no_new_privs back: {e}")),
    }
    if failures.is_empty() {
        Ok(Outcome::Dropped)
    } else {
        Err(Error {
            failures,
            holding: state.to_string(),
        })
    }
}

/// The capability state of this thread, each part as the kernel reports it.
struct State {
    effective: Result<CapsHashSet, caps::errors::CapsError>,
    permitted: Result<CapsHashSet, caps::errors::CapsError>,
    inheritable: Result<CapsHashSet, caps::errors::CapsError>,
    ambient: Result<CapsHashSet, caps::errors::CapsError>,
    bounding: Result<CapsHashSet, caps::errors::CapsError>,
    no_new_privs: rustix::io::Result<bool>,
}

impl State {
    fn read(ambient: bool) -> Self {
        let bounding = caps::runtime::thread_all_supported()
            .into_iter()
            .filter_map(|c| match caps::has_cap(None, CapSet::Bounding, c) {
                Ok(true) => Some(Ok(c)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .collect();
        State {
            effective: caps::read(None, CapSet::Effective),
            permitted: caps::read(None, CapSet::Permitted),
            inheritable: caps::read(None, CapSet::Inheritable),
            ambient: if ambient {
                caps::read(None, CapSet::Ambient)
            } else {
                Ok(CapsHashSet::new())
            },
            bounding,
            no_new_privs: rustix::thread::no_new_privs(),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |r: &Result<CapsHashSet, caps::errors::CapsError>| match r {
            Ok(s) => names(s),
            Err(_) => "unknown".to_string(),
        };
        write!(
            f,
            "effective {}, permitted {}, inheritable {}, ambient {}, bounding {}, no_new_privs {}",
            set(&self.effective),
            set(&self.permitted),
            set(&self.inheritable),
            set(&self.ambient),
            set(&self.bounding),
            match self.no_new_privs {
                Ok(v) => v.to_string(),
                Err(_) => "unknown".to_string(),
            }
        )
    }
}

fn sorted(set: CapsHashSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = set.into_iter().collect();
    v.sort_by_key(|c| c.index());
    v
}

/// `CAP_A,CAP_B` in index order, `none`, or just the count when there are many.
fn names(set: &CapsHashSet) -> String {
    if set.is_empty() {
        return "none".into();
    }
    if set.len() > 4 {
        return format!("{} capabilities", set.len());
    }
    sorted(set.clone())
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
