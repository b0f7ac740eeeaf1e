//! Interface index → name, cached.
//!
//! NFLOG carries interface indexes; ulogd2 resolves them with its own rtnetlink cache. Here a
//! miss asks the kernel (`if_indextoname`, in the daemon's network namespace) and the answer is
//! kept; entries expire so a renamed or re-created interface is picked up. An index the kernel
//! does not know (the interface is already gone) resolves to the empty name, never to the
//! previous packet's name as ulogd2's static buffer does.

use std::time::{Duration, Instant};

use crate::event::IfName;

const TTL: Duration = Duration::from_secs(30);

pub struct IfNames {
    cache: rustc_hash::FxHashMap<u32, (IfName, Instant)>,
    /// The time of the current batch: one clock read per batch, not two per message.
    now: Instant,
}

impl Default for IfNames {
    fn default() -> Self {
        Self::new()
    }
}

impl IfNames {
    pub fn new() -> Self {
        IfNames {
            cache: Default::default(),
            now: Instant::now(),
        }
    }

    /// Sets the time against which cache entries expire (call once per batch).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The name of `index`; index 0 (no interface) is the empty name.
    pub fn name(&mut self, index: u32) -> IfName {
        if index == 0 {
            return IfName::default();
        }
        if let Some((name, at)) = self.cache.get(&index) {
            if self.now.saturating_duration_since(*at) < TTL {
                return *name;
            }
        }
        let name = lookup(index);
        self.cache.insert(index, (name, self.now));
        name
    }
}

fn lookup(index: u32) -> IfName {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return IfName::default();
    }
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    IfName::new(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_unknown() {
        let mut names = IfNames::new();
        assert_eq!(names.name(1).as_bytes(), b"lo");
        assert_eq!(names.name(0).as_bytes(), b"");
        assert_eq!(names.name(u32::MAX - 1).as_bytes(), b"");
    }
}
