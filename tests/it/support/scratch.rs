//! A scratch directory, and the network namespaces a test makes, removed on drop.

use std::cell::RefCell;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::sandbox::add_netns;

/// A scratch directory `$TMPDIR/netpol-nflog-<tag>-<pid>` and the network namespaces made
/// through it; both removed on drop, except the directory when the test failed (its path is
/// printed then).
pub(crate) struct Scratch {
    pub dir: PathBuf,
    tag: String,
    netns: RefCell<Vec<String>>,
}

impl Scratch {
    /// Creates the directory, emptying a leftover of the same name first.
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("netpol-nflog-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch {
            dir,
            tag: tag.into(),
            netns: Default::default(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the namespace `nfc-<tag>-<role>-<pid>`, deleted with the scratch directory.
    pub fn netns(&self, role: &str) -> String {
        self.netns_named(format!("nfc-{}-{role}-{}", self.tag, std::process::id()))
    }

    /// Creates the namespace `name` (deleting a leftover first), deleted on drop.
    pub fn netns_named(&self, name: String) -> String {
        add_netns(&name);
        self.netns.borrow_mut().push(name.clone());
        name
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for name in self.netns.borrow().iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        if std::thread::panicking() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
