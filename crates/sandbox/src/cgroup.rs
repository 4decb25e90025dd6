//! What the host's cgroups can enforce, and reading a sandbox's cgroup after the fact.
//!
//! Limits themselves are written by libcontainer from config.json (v1 and v2); this module
//! decides which optional knobs exist here, reads out-of-memory kills so moat can say
//! "out of memory" instead of "killed", and removes cgroups of sandboxes that died with
//! moat (`moat gc`).

use std::fs;
use std::path::{Path, PathBuf};

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, CgroupSetup};
use thiserror::Error;

use crate::paths::cgroup_path;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// cgroup facts of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupFacts {
    /// v1 (legacy or hybrid) or v2.
    pub unified: bool,
    /// Swap accounting exists, so memory+swap can be limited.
    pub memory_swap: bool,
    /// A block I/O weight knob exists.
    pub io_weight: bool,
}

/// cgroups are unusable.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// No cgroup filesystem found.
    #[error("cannot determine the cgroup layout under /sys/fs/cgroup")]
    Setup(#[source] libcgroups::common::GetCgroupSetupError),
    /// A controller moat needs is not mounted or not enabled.
    #[error("the {0} cgroup controller is not available")]
    MissingController(&'static str),
    /// Removing a sandbox's cgroup failed.
    #[error("cannot remove cgroup {path}: {message}")]
    Remove {
        /// The cgroup.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl CgroupFacts {
    /// Reads the host's cgroup layout and checks the controllers moat needs.
    pub fn probe() -> Result<Self, CgroupError> {
        let setup = libcgroups::common::get_cgroup_setup().map_err(CgroupError::Setup)?;
        let root = Path::new(CGROUP_ROOT);
        match setup {
            CgroupSetup::Legacy | CgroupSetup::Hybrid => {
                for controller in ["memory", "cpu", "pids", "devices", "freezer"] {
                    if !root.join(controller).join("cgroup.procs").exists() {
                        return Err(CgroupError::MissingController(controller));
                    }
                }
                Ok(Self {
                    unified: false,
                    memory_swap: root.join("memory/memory.memsw.limit_in_bytes").exists(),
                    io_weight: root.join("blkio/blkio.weight").exists(),
                })
            }
            CgroupSetup::Unified => {
                let controllers =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                for controller in ["memory", "cpu", "pids"] {
                    if !has(controller) {
                        return Err(CgroupError::MissingController(controller));
                    }
                }
                let swap = fs::read_dir(root)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.path().join("memory.swap.max").exists());
                Ok(Self {
                    unified: true,
                    memory_swap: swap,
                    io_weight: has("io"),
                })
            }
        }
    }

    /// Converts a v2-scale weight (1..=10000, default 100) to what the spec's blockIO
    /// weight means on this host (v1: 10..=1000, default 500).
    pub fn scale_io_weight(&self, weight: u16) -> u16 {
        if self.unified {
            return weight;
        }
        // Inverse of the v1 -> v2 conversion runc and systemd use.
        let v1 = 10 + (u32::from(weight).saturating_sub(1) * 990) / 9999;
        u16::try_from(v1.clamp(10, 1000)).unwrap_or(1000)
    }

    /// The file counting OOM kills of sandbox `id`, and the line's key.
    fn oom_file(&self, id: &str) -> PathBuf {
        let relative = cgroup_path(id);
        let relative = relative.strip_prefix("/").unwrap_or(&relative);
        if self.unified {
            Path::new(CGROUP_ROOT).join(relative).join("memory.events")
        } else {
            Path::new(CGROUP_ROOT)
                .join("memory")
                .join(relative)
                .join("memory.oom_control")
        }
    }

    /// How many processes of sandbox `id` the kernel killed for lack of memory.
    pub fn oom_kills(&self, id: &str) -> u64 {
        fs::read_to_string(self.oom_file(id))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Where cgroup v2 is mounted beside v1 on hybrid hosts (no controllers: only for
/// cgroup-BPF programs and process grouping).
const HYBRID_V2_ROOT: &str = "/sys/fs/cgroup/unified";

/// The cgroup v2 directory of sandbox `id` that socket programs attach to: its own
/// cgroup on a v2 host. On a hybrid host it is a cgroup of moat's under the v2 mount,
/// created here, and `init` (not started yet, so alone) is moved into it; its children
/// follow. The sandbox cannot leave it: its /sys shows only its own v1 cgroups, read-only.
pub fn socket_cgroup(facts: &CgroupFacts, id: &str, init: i32) -> Result<PathBuf, String> {
    let relative = cgroup_path(id);
    let relative = relative.strip_prefix("/").unwrap_or(&relative);
    if facts.unified {
        return Ok(Path::new(CGROUP_ROOT).join(relative));
    }
    let root = Path::new(HYBRID_V2_ROOT);
    if !root.join("cgroup.procs").exists() {
        return Err(
            "network policy rules need cgroup v2 for their cgroup-BPF programs, and this host mounts only cgroup v1 (mount cgroup2 at /sys/fs/cgroup/unified, or boot with the unified hierarchy)"
                .into(),
        );
    }
    let path = root.join(relative);
    fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    fs::write(path.join("cgroup.procs"), init.to_string())
        .map_err(|e| format!("cannot move the sandbox into {}: {e}", path.display()))?;
    Ok(path)
}

/// Kills whatever still runs in sandbox `id`'s cgroup and removes it.
pub fn destroy(id: &str) -> Result<(), CgroupError> {
    // The processes go first, so the socket programs cover them to the end.
    let managed = destroy_managed(id);
    let hybrid = remove_hybrid_v2(id);
    managed.and(hybrid)
}

/// The hybrid host's v2 cgroup of sandbox `id` ([`socket_cgroup`]), if there is one.
/// Removing it detaches the sandbox's socket programs.
fn remove_hybrid_v2(id: &str) -> Result<(), CgroupError> {
    let relative = cgroup_path(id);
    let relative = relative.strip_prefix("/").unwrap_or(&relative);
    let path = Path::new(HYBRID_V2_ROOT).join(relative);
    if !path.exists() || Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        return Ok(());
    }
    for _ in 0..50 {
        let pids = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        if pids.trim().is_empty() {
            break;
        }
        for pid in pids.lines().filter_map(|p| p.trim().parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match fs::remove_dir(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(CgroupError::Remove {
            path,
            message: err.to_string(),
        }),
    }
}

/// Kills whatever still runs in sandbox `id`'s libcontainer-managed cgroups and removes
/// them.
fn destroy_managed(id: &str) -> Result<(), CgroupError> {
    let path = cgroup_path(id);
    let remove_err = |message: String| CgroupError::Remove {
        path: path.clone(),
        message,
    };
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: path.clone(),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| remove_err(e.to_string()))?;
    for _ in 0..50 {
        let pids = manager.get_all_pids().unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    manager.remove().map_err(|e| remove_err(e.to_string()))
}

/// Removes moat's parent cgroup in every hierarchy where it has no child left. A
/// sandbox starting at the same moment makes the removal fail harmlessly (the directory
/// is not empty) or recreates the parent.
pub fn remove_empty_parents() {
    let root = Path::new(CGROUP_ROOT);
    let mut parents = vec![root.join("moat")];
    if let Ok(hierarchies) = fs::read_dir(root) {
        parents.extend(hierarchies.flatten().map(|h| h.path().join("moat")));
    }
    for parent in parents {
        let has_children = fs::read_dir(&parent)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            })
            .unwrap_or(true);
        if !has_children {
            let _ = fs::remove_dir(&parent);
        }
    }
}

/// Sandbox ids that have a cgroup under moat's parent cgroup on this host.
pub fn sandbox_cgroups() -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    let root = Path::new(CGROUP_ROOT);
    for parent in [
        root.join("moat"),
        root.join("memory/moat"),
        root.join("pids/moat"),
        root.join("unified/moat"),
    ] {
        if let Ok(entries) = fs::read_dir(parent) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    if let Some(name) = entry.file_name().to_str() {
                        ids.insert(name.to_string());
                    }
                }
            }
        }
    }
    ids.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_weight_scales_to_v1_range() {
        let v1 = CgroupFacts {
            unified: false,
            memory_swap: true,
            io_weight: true,
        };
        assert_eq!(v1.scale_io_weight(1), 10);
        assert_eq!(v1.scale_io_weight(10000), 1000);
        assert!((10..=1000).contains(&v1.scale_io_weight(100)));
        let v2 = CgroupFacts {
            unified: true,
            ..v1
        };
        assert_eq!(v2.scale_io_weight(100), 100);
    }
}
