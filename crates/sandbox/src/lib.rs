//! Applies a [`moat_policy::Plan`]: the only moat crate that touches the kernel.
//!
//! Container plumbing (namespaces, mounts, pivot_root, cgroup limits, id maps) is
//! libcontainer's; moat adds a unique host id range per sandbox ([`idmap`]), the prepared
//! root ([`rootfs`]), and its own walls inside the sandbox in a fixed order
//! ([`executor`]): capabilities, Landlock, seccomp, and a tiny init.

pub mod cgroup;
pub mod doctor;
pub mod executor;
pub mod gc;
pub mod idmap;
pub mod init;
pub mod landlock;
pub mod oom;
pub mod paths;
pub mod privileges;
pub mod process;
pub mod record;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod status;
mod sys;

pub use run::{run, run_with, AfterStart, RunOptions, RunReport, SandboxError};

/// Makes the calling process safe to create sandboxes from: no descriptor it inherited
/// (beyond stdin, stdout and stderr) and no socket-activation variable may reach a
/// sandbox. libcontainer keeps descriptors 3..3+LISTEN_FDS open across exec when
/// LISTEN_FDS is set, and copies LISTEN_* into the workload's environment: a moat started
/// from a socket-activated unit or a spawner's environment would hand them to the sandbox.
/// Call first thing in `main`, while the process is single-threaded.
pub fn scrub_inherited_state() -> std::io::Result<()> {
    for variable in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(variable);
    }
    sys::cloexec_from(3)
}

/// Memory and CPU count of this host, for range checks when compiling a plan.
pub fn host_facts() -> moat_policy::HostFacts {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(1 << 30, |kib| kib * 1024);
    let cpus =
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
    moat_policy::HostFacts { memory_bytes, cpus }
}
