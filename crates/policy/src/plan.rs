//! The compiled plan: everything the apply step needs, nothing it has to look up again.
//!
//! Printed by `moat run --dry-run`. Paths in `landlock`, `filesystem.masked_paths` and the
//! like are paths inside the sandbox; host paths are named `host_*`.

use std::path::PathBuf;

use serde::Serialize;

use crate::{ProfileSource, SeccompProfile};

/// A sandbox, fully decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Sandbox id.
    pub id: String,
    /// The profile it was compiled from.
    pub profile: ProfileRef,
    /// Host name inside the sandbox.
    pub hostname: String,
    /// The named tenant, if any.
    pub identity: Option<String>,
    /// Labels (what policy selectors match, and what alerts carry).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Namespaces created for the sandbox.
    pub namespaces: Vec<&'static str>,
    /// The workload process.
    pub process: ProcessPlan,
    /// Mounts and the root.
    pub filesystem: FilesystemPlan,
    /// cgroup limits.
    pub resources: ResourcePlan,
    /// Capabilities, no_new_privs, rlimits.
    pub privileges: PrivilegePlan,
    /// Landlock rules.
    pub landlock: LandlockPlan,
    /// The syscall filter.
    pub seccomp: SeccompProfile,
    /// Network.
    pub network: NetworkPlan,
    /// Runtime policies that select this sandbox, and what they enforce.
    pub policy: crate::enforce::PolicyPlan,
}

/// Which profile, from where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileRef {
    /// Profile name.
    pub name: String,
    /// Built in or a file.
    pub source: ProfileSource,
}

/// The workload process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessPlan {
    /// Command and arguments.
    pub argv: Vec<String>,
    /// The whole environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// uid inside.
    pub uid: u32,
    /// gid inside.
    pub gid: u32,
    /// User name inside.
    pub user: String,
}

/// Filesystem layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesystemPlan {
    /// What the root is.
    pub root: RootPlan,
    /// The home directory.
    pub home: HomePlan,
    /// Where the home appears inside.
    pub home_path: String,
    /// Size cap of /tmp.
    pub tmp_size_bytes: u64,
    /// Size cap of /dev/shm.
    pub shm_size_bytes: u64,
    /// Paths hidden (files read as empty, directories as empty read-only tmpfs).
    pub masked_paths: Vec<String>,
    /// Paths mounted read-only.
    pub readonly_paths: Vec<String>,
    /// Device nodes present in /dev besides pts and shm.
    pub devices: Vec<String>,
}

/// The root of the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum RootPlan {
    /// A fresh root holding read-only views of the host's system directories and an
    /// allowlist of /etc files; nothing else of the host.
    HostSystem {
        /// System directories, mirrored as they are on the host: a read-only bind of a
        /// directory, or the same symlink (merged-/usr hosts link /bin to usr/bin).
        system_dirs: Vec<String>,
        /// /etc entries bound read-only when the host has them.
        etc_allowlist: Vec<String>,
    },
    /// An unpacked image used read-only as the root.
    Image {
        /// The image directory on the host.
        host_path: PathBuf,
    },
}

/// The home directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HomePlan {
    /// A host directory bound read-write, owned by the sandbox user's mapped host uid.
    Bind {
        /// The directory on the host.
        host_path: PathBuf,
    },
    /// A size-capped tmpfs that disappears with the sandbox.
    Ephemeral {
        /// Size cap.
        size_bytes: u64,
    },
}

/// cgroup limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourcePlan {
    /// Memory limit; memory+swap is set to the same value, so no swap is used beyond it.
    pub memory_bytes: u64,
    /// CPUs of time per period.
    pub cpus: f64,
    /// CFS period.
    pub cpu_period_us: u64,
    /// CFS quota (`cpus * period`).
    pub cpu_quota_us: i64,
    /// Task limit.
    pub pids: i64,
    /// Relative block I/O weight, 1..=10000 (v2 scale).
    pub io_weight: u16,
    /// End the whole sandbox when the kernel kills one of its processes for lack of memory.
    pub end_on_oom: bool,
}

/// Privileges of the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivilegePlan {
    /// Capabilities kept in every set (empty for `untrusted`).
    pub capabilities: Vec<String>,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// Securebits set and locked so no uid change can regain capabilities.
    pub lock_securebits: bool,
    /// Resource limits, applied as soft = hard.
    pub rlimits: Vec<RlimitPlan>,
}

/// One rlimit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RlimitPlan {
    /// `RLIMIT_NOFILE` etc.
    pub resource: &'static str,
    /// Soft and hard limit.
    pub limit: u64,
}

/// Landlock rules, by access class. Paths are inside the sandbox; a path the sandbox does
/// not have is skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LandlockPlan {
    /// The host must offer at least this ABI.
    pub min_abi: u8,
    /// Read files, list directories, execute.
    pub read_exec: Vec<String>,
    /// Read only.
    pub read_only: Vec<String>,
    /// List directory entries only (the root and /dev hold only what moat put there).
    pub list_only: Vec<String>,
    /// Read, write, create, remove, execute.
    pub read_write: Vec<String>,
    /// Device files: read, write and ioctl.
    pub devices: Vec<String>,
    /// Signals only to processes of the same sandbox (ABI 6).
    pub scope_signals: bool,
    /// Abstract unix sockets only within the same sandbox (ABI 6).
    pub scope_abstract_unix_sockets: bool,
    /// Whether the writable places (home, /tmp, /dev/shm) may hold executables. Off when a
    /// policy governs execution, so a copy or hard link of a blocked binary cannot run.
    pub writable_exec: bool,
    /// Paths carved out of the grants above (policy Block rules). Directories are
    /// enumerated inside the sandbox at start, symlinks resolved there.
    pub deny: Vec<LandlockDeny>,
    /// Process allow-list mode: execution only of these.
    pub exec_allow_only: Option<Vec<LandlockPath>>,
    /// File allow-list mode: file access only to these (devices and /proc excepted).
    pub file_allow_only: Option<Vec<LandlockPath>>,
}

/// A path named by a policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockPath {
    /// The path.
    pub path: String,
    /// A directory.
    pub directory: bool,
    /// With subdirectories (directories only).
    pub recursive: bool,
    /// Reading only.
    pub read_only: bool,
}

/// A path denied by a Block rule, and what stays allowed on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockDeny {
    /// The path.
    pub target: LandlockPath,
    /// What the rule leaves.
    pub keep: Keep,
}

/// What a Block rule leaves of the access the profile grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Nothing (file Block).
    Nothing,
    /// Reading (file Block with readOnly).
    Read,
    /// Everything but execution (writable places, when the profile keeps them noexec).
    AllButExec,
}

pub use crate::network::{EgressRule, NetMode, NetworkPlan, PortRange, Protocol};
