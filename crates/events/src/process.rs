//! What /proc says about the process an event names, looked up once per process.

use std::collections::HashMap;

/// An acting process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Its pid in its own (the sandbox's) pid namespace; 0 once it is gone.
    pub pid: i64,
    /// Its parent's pid on the host.
    pub ppid: i64,
    /// Its real uid on the host; -1 once it is gone.
    pub host_uid: i64,
    /// Its program, or the command name the event carried once it is gone.
    pub exe: String,
}

/// Processes by host pid. Bounded: cleared when it grows past 4,096 entries, so a pid
/// reused later is looked up afresh eventually.
#[derive(Debug, Default)]
pub struct ProcessCache {
    known: HashMap<i64, (String, Process)>,
}

impl ProcessCache {
    /// The process with host pid `host_pid`; `comm` names it if it has exited.
    pub fn get(&mut self, host_pid: i64, comm: &str) -> &Process {
        if self.known.len() > 4096 {
            self.known.clear();
        }
        &self
            .known
            .entry(host_pid)
            .or_insert_with(|| (comm.to_string(), lookup(host_pid, comm)))
            .1
    }

    /// Forgets what is known of `host_pid` (it has just executed another program).
    pub fn forget(&mut self, host_pid: i64) {
        self.known.remove(&host_pid);
    }

    /// As [`ProcessCache::get`], for an event that names the process's command: a
    /// different command than last time means an exec (or a reused pid), so the entry is
    /// looked up afresh.
    pub fn get_named(&mut self, host_pid: i64, comm: &str) -> &Process {
        if self
            .known
            .get(&host_pid)
            .is_some_and(|(known, _)| known != comm)
        {
            self.known.remove(&host_pid);
        }
        self.get(host_pid, comm)
    }
}

fn lookup(host_pid: i64, comm: &str) -> Process {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
    // The last of the values of a field: for NSpid, the innermost namespace's.
    let last = |name: &str| -> i64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let first = |name: &str, missing: i64| -> i64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(missing)
    };
    // An exited process that is not reaped yet has no exe link, but still a name.
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let exe = std::fs::read_link(format!("/proc/{host_pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .ok()
        .or(name)
        .unwrap_or_else(|| comm.to_string());
    Process {
        pid: last("NSpid:"),
        ppid: first("PPid:", 0),
        host_uid: first("Uid:", -1),
        exe,
    }
}

/// Device and inode of a namespace file (`/proc/PID/ns/pid`), which identify the
/// namespace; None once the process is gone.
pub fn namespace_of(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
