//! Interface index → name, cached.
//!
//! NFLOG carries interface indexes; ulogd2 resolves them with its own rtnetlink cache. Here a
//! miss asks the kernel (`SIOCGIFNAME`, what `if_indextoname` does, in the daemon's network
//! namespace) and the answer is kept; entries expire so a renamed or re-created interface is
//! picked up. An index the kernel does not know (the interface is already gone) resolves to the
//! empty name, never to the previous packet's name as ulogd2's static buffer does.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::event::IfName;

const TTL: Duration = Duration::from_secs(30);

pub struct IfNames {
    cache: rustc_hash::FxHashMap<u32, (IfName, Instant)>,
    /// The time of the current batch: one clock read per batch, not two per message.
    now: Instant,
    /// The socket the `SIOCGIFNAME` ioctl goes through (any socket will do; glibc opens one
    /// per call), opened at the first lookup and kept.
    sock: Option<OwnedFd>,
    /// Name every index `if<N>` instead of asking the kernel: for messages captured on another
    /// machine (a pcap), whose indexes mean nothing here.
    labels_only: bool,
    /// The last two names found in this batch, checked before the cache: a batch sees few
    /// interfaces, and the cache lookup (a hash and a clock comparison, about 100 instructions)
    /// is then made once per batch, not once per message. Cleared by [`IfNames::set_now`].
    recent: [(u32, IfName); 2],
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
            sock: None,
            labels_only: false,
            recent: Default::default(),
        }
    }

    /// Names that only say the index (`if3`): a capture's interfaces are another machine's.
    pub fn labels_only() -> Self {
        IfNames {
            labels_only: true,
            ..Self::new()
        }
    }

    /// Sets the time against which cache entries expire (call once per batch).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.recent = Default::default();
    }

    /// The name of `index`; index 0 (no interface) is the empty name.
    pub fn name(&mut self, index: u32) -> IfName {
        if index == 0 {
            return IfName::default();
        }
        if self.labels_only {
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(index).as_bytes();
            // "if" and at most 10 digits: within IFNAMSIZ.
            let mut label = [0u8; 12];
            label[..2].copy_from_slice(b"if");
            label[2..2 + digits.len()].copy_from_slice(digits);
            return IfName::new(&label[..2 + digits.len()]);
        }
        if let Some(&(_, name)) = self.recent.iter().find(|(i, _)| *i == index) {
            return name;
        }
        if let Some((name, at)) = self.cache.get(&index) {
            if self.now.saturating_duration_since(*at) < TTL {
                let name = *name;
                self.remember(index, name);
                return name;
            }
        }
        match self.lookup(index) {
            Ok(name) => {
                self.cache.insert(index, (name, self.now));
                self.remember(index, name);
                name
            }
            // Not cached: the next message asks again.
            Err(_) => IfName::default(),
        }
    }

    /// Keeps a found name for the rest of the batch (an empty name, which may be a failed
    /// lookup, is asked again).
    fn remember(&mut self, index: u32, name: IfName) {
        if !name.as_bytes().is_empty() {
            self.recent = [(index, name), self.recent[0]];
        }
    }

    /// Asks the kernel. `ENODEV` (no such index, e.g. the interface is gone) is the empty
    /// name, as `if_indextoname` failing was; so is a name that is not UTF-8, which rustix
    /// refuses (`EILSEQ`; Linux allows any bytes but `/`, `:` and white space in a name, and
    /// no CNI plugin makes such names). Any other error (no socket could be opened) is
    /// returned so the answer is not cached.
    fn lookup(&mut self, index: u32) -> Result<IfName, Errno> {
        let sock = match &self.sock {
            Some(sock) => sock,
            None => self.sock.insert(rustix::net::socket_with(
                AddressFamily::INET,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC,
                None,
            )?),
        };
        match rustix::net::netdevice::index_to_name_inlined(sock, index) {
            Ok(name) => Ok(IfName::new(name.as_bytes())),
            Err(Errno::NODEV | Errno::NXIO | Errno::ILSEQ) => Ok(IfName::default()),
            Err(e) => Err(e),
        }
    }
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

    #[test]
    fn labels_only_never_asks_the_kernel() {
        let mut names = IfNames::labels_only();
        assert_eq!(names.name(1).as_bytes(), b"if1");
        assert_eq!(names.name(0).as_bytes(), b"");
        assert_eq!(names.name(u32::MAX).as_bytes(), b"if4294967295");
    }
}
