//! Where moat keeps state on the host.
//!
//! Runtime state (one directory per live sandbox, libcontainer's container state) is under
//! /run/moat, which a reboot clears; id assignments that must outlive reboots (named
//! identities keep their range, so their homes keep their owner) are under /var/lib/moat.

use std::path::{Path, PathBuf};

/// The host directories moat owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    run_dir: PathBuf,
    lib_dir: PathBuf,
}

impl Default for StatePaths {
    fn default() -> Self {
        Self::new("/run/moat", "/var/lib/moat")
    }
}

impl StatePaths {
    /// State rooted elsewhere (tests).
    pub fn new(run_dir: impl Into<PathBuf>, lib_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            lib_dir: lib_dir.into(),
        }
    }

    /// Runtime state root.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Persistent state root.
    pub fn lib_dir(&self) -> &Path {
        &self.lib_dir
    }

    /// All live sandboxes' directories.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.run_dir.join("sandboxes")
    }

    /// One sandbox's directory: its record, generated files, root and OCI bundle.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes_dir().join(id)
    }

    /// libcontainer's state root.
    pub fn containers_dir(&self) -> PathBuf {
        self.run_dir.join("containers")
    }

    /// Id range leases and identity assignments.
    pub fn ids_dir(&self) -> PathBuf {
        self.lib_dir.join("ids")
    }
}

/// An exclusive lock on moat's runtime state: sandbox creation holds it until the
/// sandbox's ownership record exists, and `moat gc` holds it while it decides what is
/// dead, so gc never mistakes a sandbox being born for the remains of one.
pub struct StateLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl StateLock {
    /// Waits for and takes the lock.
    pub fn acquire(paths: &StatePaths) -> std::io::Result<StateLock> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(paths.run_dir())?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(paths.run_dir().join("lock"))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        Ok(StateLock { _lock: lock })
    }
}

/// The cgroup path (relative to each hierarchy's root) of a sandbox.
pub fn cgroup_path(id: &str) -> PathBuf {
    PathBuf::from(format!("/moat/{id}"))
}
