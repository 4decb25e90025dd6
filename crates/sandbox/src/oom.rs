//! Ending the whole sandbox when the kernel kills one of its processes for lack of memory
//! (the profile's `on_oom = "sandbox"`).
//!
//! cgroup v2 can do this itself (`memory.oom.group`), v1 cannot; so a thread watches
//! the sandbox's OOM-kill counter and, when it moves, kills the sandbox's init, which
//! takes every process of its pid namespace with it. The init is addressed by a pidfd, so
//! a pid reused after the init was reaped is never signalled.

use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::cgroup::CgroupFacts;
use crate::sys;

/// How often the counter is read.
const INTERVAL_MS: u16 = 100;

/// The watching thread; it ends by itself once the init has exited.
pub struct OomWatch {
    handle: JoinHandle<bool>,
}

impl OomWatch {
    /// Starts watching sandbox `id`, whose init is `init`.
    pub fn start(cgroups: CgroupFacts, id: String, init: libc::pid_t) -> std::io::Result<OomWatch> {
        let pidfd = sys::pidfd_open(init)?;
        let handle = std::thread::Builder::new()
            .name("moat-oom".into())
            .spawn(move || watch(cgroups, &id, pidfd))?;
        Ok(OomWatch { handle })
    }

    /// Waits for the thread (the init has exited); true when it ended the sandbox.
    pub fn finish(self) -> bool {
        self.handle.join().unwrap_or(false)
    }
}

fn watch(cgroups: CgroupFacts, id: &str, pidfd: OwnedFd) -> bool {
    let before = cgroups.oom_kills(id);
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(INTERVAL_MS)) {
            // The pidfd is readable once the init has exited.
            Ok(n) if n > 0 => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
        if cgroups.oom_kills(id) > before {
            return sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL).is_ok();
        }
    }
}
