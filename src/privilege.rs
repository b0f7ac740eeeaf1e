//! Least privilege: the daemon needs only `CAP_NET_ADMIN` (to bind NFLOG groups and to raise its
//! socket buffer with `SO_RCVBUFFORCE`). When started as root it drops every other capability
//! from its effective, permitted, inheritable and bounding sets and sets `no_new_privs`, before
//! it reads any packet, so a bug in a parser cannot be turned into more than that.
//!
//! Files it writes are owned by root and created by root (uid 0 is the owner, so no
//! `CAP_DAC_OVERRIDE` is needed); a log directory owned by another user must be writable by uid 0
//! through its mode.

use std::io;

const CAP_NET_ADMIN: u32 = 12;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What was done, for the daemon's log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Only CAP_NET_ADMIN is left.
    Dropped,
    /// The process did not hold CAP_NET_ADMIN to begin with; nothing was changed.
    NotHeld,
}

/// Keeps `CAP_NET_ADMIN` and drops everything else, for this process and anything it could exec.
pub fn keep_only_net_admin() -> io::Result<Outcome> {
    let mut data = [CapData::default(); 2];
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capget with a v3 header and two data structs, as capget(2) documents.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    if data[0].permitted & (1 << CAP_NET_ADMIN) == 0 {
        return Ok(Outcome::NotHeld);
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes below.
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if cap != CAP_NET_ADMIN {
            // SAFETY: prctl with integer arguments. EPERM (no CAP_SETPCAP, e.g. in a container
            // that already dropped it) leaves the bounding set as the runtime set it.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let keep = CapData {
        effective: 1 << CAP_NET_ADMIN,
        permitted: 1 << CAP_NET_ADMIN,
        inheritable: 0,
    };
    let data = [keep, CapData::default()];
    // SAFETY: capset with a v3 header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Ambient capabilities would survive exec; there is no exec, but clear them anyway.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    Ok(Outcome::Dropped)
}
