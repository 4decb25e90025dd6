//! The OCI runtime configuration (config.json) libcontainer executes, derived from a plan.
//!
//! Written as the JSON document itself, so it reads like the config.json an operator knows
//! from runc. moat's own walls (Landlock, the seccomp filter, securebits, the tiny init)
//! are not in it: they are applied by [`crate::executor`] inside the sandbox.

use std::path::Path;

use moat_policy::{HomePlan, Plan};
use serde_json::{json, Value};

use crate::cgroup::CgroupFacts;
use crate::idmap::IdLease;
use crate::paths::cgroup_path;
use crate::rootfs::PreparedRoot;

/// Capabilities the init keeps until moat's executor runs: CAP_NET_ADMIN to bring up
/// loopback (and, with a network, to give `eth0` its address and route), CAP_SETPCAP to lock securebits and empty the bounding set. The executor
/// drops both before anything of the workload runs.
const SETUP_CAPABILITIES: &[&str] = &["CAP_SETPCAP", "CAP_NET_ADMIN"];

/// Size cap of a tmpfs.
fn size_option(bytes: u64) -> String {
    format!("size={}k", bytes.div_ceil(1024))
}

/// Inode cap of a tmpfs: one inode per 4 KiB of size, so filling it with empty files
/// (which use no pages) stops about as early as filling it with data would.
fn inodes_option(bytes: u64) -> String {
    format!("nr_inodes={}", (bytes / 4096).max(1024))
}

/// Builds config.json for `plan`.
pub fn oci_config(
    plan: &Plan,
    root: &PreparedRoot,
    lease: &IdLease,
    cgroups: &CgroupFacts,
    with_interface: bool,
) -> Value {
    let fs = &plan.filesystem;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k", "nr_inodes=4096"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", size_option(fs.shm_size_bytes), inodes_option(fs.shm_size_bytes)]}),
        // /sys is an empty directory of the read-only root holding only the sandbox's own
        // cgroup, so tools see their real limits without the rest of sysfs.
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    mounts.extend(root.mounts.iter().cloned());
    mounts.push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777", size_option(fs.tmp_size_bytes), inodes_option(fs.tmp_size_bytes)]}),
    );
    mounts.push(match &fs.home {
        HomePlan::Bind { host_path } => json!({
            "destination": fs.home_path, "type": "bind", "source": host_path,
            "options": ["bind", "rw", "nosuid", "nodev"]}),
        HomePlan::Ephemeral { size_bytes } => json!({
            "destination": fs.home_path, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=700",
                        format!("uid={}", plan.process.uid), format!("gid={}", plan.process.gid),
                        size_option(*size_bytes), inodes_option(*size_bytes)]}),
    });

    if !plan.landlock.writable_exec {
        // A policy governs execution: the writable places are noexec mounts too. Landlock
        // stops execve there, but only noexec stops mapping a file executable, which is
        // how `ld.so ./copy-of-a-blocked-binary` would run it anyway.
        for mount in &mut mounts {
            let destination = mount["destination"].as_str().unwrap_or("");
            if destination == "/tmp" || destination == fs.home_path {
                if let Some(options) = mount["options"].as_array_mut() {
                    options.push(json!("noexec"));
                }
            }
        }
    }
    let id_map = json!([{"containerID": 0, "hostID": lease.host_base, "size": lease.count}]);
    let rlimits: Vec<Value> = plan
        .privileges
        .rlimits
        .iter()
        .map(|r| json!({"type": r.resource, "hard": r.limit, "soft": r.limit}))
        .collect();
    let res = &plan.resources;
    let mut memory = json!({"limit": res.memory_bytes});
    if cgroups.memory_swap {
        // OCI swap is memory+swap: equal to the limit means no swap at all.
        memory["swap"] = json!(res.memory_bytes);
    }
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": memory,
        "cpu": {"quota": res.cpu_quota_us, "period": res.cpu_period_us},
        "pids": {"limit": res.pids},
    });
    if cgroups.io_weight {
        resources["blockIO"] = json!({"weight": cgroups.scale_io_weight(res.io_weight)});
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "hostname": plan.hostname,
        "root": {"path": root.path, "readonly": true},
        "mounts": mounts,
        "process": {
            "terminal": false,
            "user": {"uid": plan.process.uid, "gid": plan.process.gid, "additionalGids": []},
            "args": plan.process.argv,
            "env": plan.process.env,
            // moat's executor changes to the plan's directory itself, to report a missing
            // one clearly; libcontainer only needs a directory that surely exists.
            "cwd": "/",
            "capabilities": {
                "bounding": SETUP_CAPABILITIES,
                "effective": SETUP_CAPABILITIES,
                "permitted": SETUP_CAPABILITIES,
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": rlimits,
            "noNewPrivileges": plan.privileges.no_new_privs,
        },
        "linux": {
            "namespaces": plan.namespaces.iter().map(|ns| json!({"type": ns})).collect::<Vec<_>>(),
            "uidMappings": id_map,
            "gidMappings": id_map,
            "cgroupsPath": cgroup_path(&plan.id),
            "resources": resources,
            "maskedPaths": fs.masked_paths,
            "readonlyPaths": readonly_paths(plan, cgroups),
            "rootfsPropagation": "private",
        },
    });
    if with_interface {
        // IPv6 is off on a sandbox with a way out: the network wall is written for IPv4,
        // and nothing may be open that the rules do not cover. (Loopback-only sandboxes
        // keep ::1, which servers bind to by default.)
        config["linux"]["sysctl"] = json!({
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
        });
    }
    config
}

/// The plan's read-only paths plus the cgroup mounts: on cgroup v1 the mount's own `ro`
/// option does not reach the per-controller mounts libcontainer makes.
fn readonly_paths(plan: &Plan, cgroups: &CgroupFacts) -> Vec<String> {
    let mut paths = plan.filesystem.readonly_paths.clone();
    if cgroups.unified {
        paths.push("/sys/fs/cgroup".into());
    } else {
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten();
        for entry in hierarchies {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "unified" && entry.file_type().is_ok_and(|t| t.is_dir()) {
                paths.push(format!("/sys/fs/cgroup/{name}"));
            }
        }
    }
    paths
}

/// Writes `config` as `bundle/config.json`, readable by root only: the environment in it
/// carries the workload's secrets (a JupyterHub API token, say).
pub fn write_bundle(bundle: &Path, config: &Value) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(bundle)?;
    let text = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(bundle.join("config.json"))?
        .write_all(&text)
}
