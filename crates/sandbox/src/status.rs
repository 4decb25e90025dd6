//! `moat run --status-file`: what a supervisor (the daemon) learns about a run without
//! being its parent.
//!
//! The file is rewritten whole (a temporary file renamed over it), so a reader sees one
//! complete state or the previous one: `starting` (with moat's pid) as soon as moat
//! runs, `running` once the workload has started, then
//! `exited` or `failed` when moat is done and has cleaned up. A supervisor that restarts
//! finds the outcome here even though it can no longer wait for the process.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// moat is setting the sandbox up (written first, with moat's pid).
    Starting,
    /// The workload runs.
    Running,
    /// The workload ended; `exit_code` is its status.
    Exited,
    /// moat could not start the workload; `error` says why.
    Failed,
}

/// The content of a status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    /// Where the run is.
    pub state: RunState,
    /// The sandbox's id.
    pub id: String,
    /// The pid of `moat run`, the sandbox's supervisor.
    pub pid: u32,
    /// The host pid of the sandbox's init, while it runs.
    #[serde(default)]
    pub init_pid: Option<i32>,
    /// The sandbox's address (isolated and egress networks).
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// The host end of its link.
    #[serde(default)]
    pub host_address: Option<Ipv4Addr>,
    /// The workload's exit status (128+N for signal N), once ended; 125 when moat failed.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Processes the kernel killed for lack of memory.
    #[serde(default)]
    pub oom_kills: u64,
    /// Why the run failed, in the words `moat run` prints.
    #[serde(default)]
    pub error: Option<String>,
}

impl RunStatus {
    /// Replaces the file at `path` with this status (mode 0600).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        replace_file(path, &text)
    }

    /// Reads the status at `path`; None when there is none (yet) or it is unreadable.
    pub fn read(path: &Path) -> Option<RunStatus> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Replaces the file at `path` with `content` (mode 0600), through a temporary file
/// beside it renamed over it: a reader sees the old content or the new, never a mix.
/// No fsync: what this guards against is a process dying half-way (the page cache
/// survives it); a machine that loses power loses its sandboxes too.
pub fn replace_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(".tmp");
    let temporary = path.with_file_name(temporary_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(content)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.status");
        assert_eq!(
            RunStatus::read(&path),
            None,
            "nothing before the first write"
        );
        let mut status = RunStatus {
            state: RunState::Running,
            id: "abc".into(),
            pid: 42,
            init_pid: Some(43),
            address: Some(Ipv4Addr::new(10, 77, 0, 6)),
            host_address: Some(Ipv4Addr::new(10, 77, 0, 5)),
            exit_code: None,
            oom_kills: 0,
            error: None,
        };
        status.write(&path).unwrap();
        assert_eq!(RunStatus::read(&path), Some(status.clone()));
        status.state = RunState::Exited;
        status.exit_code = Some(3);
        status.write(&path).unwrap();
        assert_eq!(RunStatus::read(&path).unwrap().exit_code, Some(3));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(RunStatus::read(&path), None, "a torn file reads as none");
    }
}
