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
pub mod paths;
pub mod privileges;
pub mod record;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod spec;
mod sys;

pub use run::{run, RunOptions, RunReport, SandboxError};

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
