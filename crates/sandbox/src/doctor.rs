//! `moat doctor`: which walls this host can provide, probed, never assumed.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::cgroup::CgroupFacts;
use crate::sys;

/// One wall's availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum Availability {
    /// Works here.
    Ok,
    /// Required and absent: sandboxes will refuse to start.
    Missing(String),
    /// Absent, but no profile requires it.
    OptionalMissing(String),
}

/// A wall and what the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Wall name.
    pub wall: &'static str,
    /// Availability.
    #[serde(flatten)]
    pub availability: Availability,
    /// Details for humans (versions, modes).
    pub detail: String,
}

fn check(wall: &'static str, availability: Availability, detail: impl Into<String>) -> Check {
    Check {
        wall,
        availability,
        detail: detail.into(),
    }
}

/// Probes every wall; `min_landlock_abi` is what the default profile requires.
pub fn probe(min_landlock_abi: u8) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(if nix::unistd::geteuid().is_root() {
        check("root", Availability::Ok, "running as root")
    } else {
        check(
            "root",
            Availability::Missing(
                "moat needs root to create sandboxes (rootless mode is not supported yet)".into(),
            ),
            "",
        )
    });

    let max_userns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    checks.push(match max_userns {
        Some(0) => check(
            "user-namespace",
            Availability::Missing(
                "user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=15000)".into(),
            ),
            "",
        ),
        None if !Path::new("/proc/self/ns/user").exists() => check(
            "user-namespace",
            Availability::Missing("the kernel has no user namespaces (CONFIG_USER_NS)".into()),
            "",
        ),
        _ => check(
            "user-namespace",
            Availability::Ok,
            format!(
                "each sandbox maps 65536 ids from 2^30 up; max_user_namespaces={}",
                max_userns.unwrap_or(0)
            ),
        ),
    });

    let missing_ns: Vec<&str> = ["pid", "mnt", "net", "ipc", "uts", "cgroup"]
        .into_iter()
        .filter(|ns| !Path::new("/proc/self/ns").join(ns).exists())
        .collect();
    checks.push(if missing_ns.is_empty() {
        check(
            "namespaces",
            Availability::Ok,
            "pid, mount, network, ipc, uts, cgroup",
        )
    } else {
        check(
            "namespaces",
            Availability::Missing(format!(
                "the kernel lacks {} namespaces",
                missing_ns.join(", ")
            )),
            "",
        )
    });

    let seccomp_mode = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Seccomp:"));
    let library = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "unknown".into());
    let compiled = moat_policy::SeccompProfile::builtin("default")
        .map_err(|e| e.to_string())
        .and_then(|p| crate::seccomp::compile(&p).map_err(|e| e.to_string()));
    checks.push(match (seccomp_mode, compiled) {
        (false, _) => check(
            "seccomp",
            Availability::Missing(
                "the kernel has no seccomp filter mode (CONFIG_SECCOMP_FILTER)".into(),
            ),
            "",
        ),
        (true, Err(err)) => check(
            "seccomp",
            Availability::Missing(err),
            format!("libseccomp {library}"),
        ),
        (true, Ok(filter)) => check(
            "seccomp",
            Availability::Ok,
            format!(
                "libseccomp {library}; default filter: {} BPF instructions",
                filter.len()
            ),
        ),
    });

    checks.push(match sys::landlock_abi() {
        Ok(abi) if abi >= u32::from(min_landlock_abi) => check(
            "landlock",
            Availability::Ok,
            format!(
                "ABI {abi}{}",
                if abi >= 6 {
                    " (files, exec, signal and abstract-socket scoping)"
                } else {
                    " (files, exec)"
                }
            ),
        ),
        Ok(abi) => check(
            "landlock",
            Availability::Missing(format!(
                "ABI {abi} is below the {min_landlock_abi} the default profile requires"
            )),
            "",
        ),
        Err(err) => check(
            "landlock",
            Availability::Missing(format!(
                "not available ({err}); boot with lsm=...,landlock or use a kernel >= 5.13"
            )),
            "",
        ),
    });

    checks.push(check(
        "capabilities",
        Availability::Ok,
        "all sets emptied, securebits locked, no_new_privs",
    ));

    match CgroupFacts::probe() {
        Ok(facts) => {
            checks.push(check(
                "cgroups",
                Availability::Ok,
                format!(
                    "{}; memory{}, cpu, pids",
                    if facts.unified {
                        "v2"
                    } else {
                        "v1 (legacy or hybrid)"
                    },
                    if facts.memory_swap { "+swap" } else { "" }
                ),
            ));
            checks.push(if facts.io_weight {
                check("io-weight", Availability::Ok, "relative block I/O weight")
            } else {
                check(
                    "io-weight",
                    Availability::OptionalMissing(
                        "no blkio.weight/io controller (the block scheduler has no weights); I/O is not shared fairly".into(),
                    ),
                    "",
                )
            });
        }
        Err(err) => checks.push(check(
            "cgroups",
            Availability::Missing(crate::executor::error_chain(&err)),
            "",
        )),
    }

    checks.push(network_check());
    checks.push(match moat_events::audit::status() {
        Ok(status) => check(
            "alerts",
            Availability::Ok,
            format!(
                "kernel audit {} (moat run --alerts turns it on){}",
                if status.enabled == 0 { "off" } else { "on" },
                if status.daemon_pid == 0 {
                    "; no audit daemon"
                } else {
                    "; alongside the audit daemon"
                }
            ),
        ),
        Err(err) => check(
            "alerts",
            Availability::OptionalMissing(format!(
                "the kernel audit interface is not available ({err}): --alerts cannot work"
            )),
            "",
        ),
    });

    checks.push(socket_rules_check());

    let lsms = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    checks.push(check(
        "bpf-lsm",
        Availability::OptionalMissing(if lsms.split(',').any(|l| l.trim() == "bpf") {
            "listed as active, but no moat enforcer uses it yet".into()
        } else {
            "bpf is not in the active LSM list (or securityfs is not mounted)".into()
        }),
        "",
    ));
    checks
}

/// Network policy rules: the cgroup-BPF socket programs load, and there is a cgroup v2
/// to attach them to. Optional: only policies with network rules need them.
fn socket_rules_check() -> Check {
    let v2 = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Some("/sys/fs/cgroup")
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        Some("/sys/fs/cgroup/unified (hybrid)")
    } else {
        None
    };
    match (moat_bpf::probe(), v2) {
        (Ok(()), Some(v2)) => check(
            "network-policy",
            Availability::Ok,
            format!("cgroup-BPF socket programs load; attached under {v2}"),
        ),
        (Err(err), _) => check(
            "network-policy",
            Availability::OptionalMissing(format!(
                "{}: policies with network rules cannot run",
                crate::executor::error_chain(&err)
            )),
            "",
        ),
        (Ok(()), None) => check(
            "network-policy",
            Availability::OptionalMissing(
                "no cgroup v2 mount to attach socket programs to: policies with network rules cannot run".into(),
            ),
            "",
        ),
    }
}

/// The tools and kernel pieces `--net isolated` and `egress` need. Optional: the default
/// profile's network is loopback only.
fn network_check() -> Check {
    let tool = |name: &str| {
        std::process::Command::new(name)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut missing = Vec::new();
    if !tool("nft") {
        missing.push("nft (apt-get install nftables)");
    }
    if !tool("tc") {
        missing.push("tc (apt-get install iproute2)");
    }
    if !Path::new("/proc/sys/net/ipv4/ip_forward").exists() {
        missing.push("IPv4 forwarding (for egress)");
    }
    if missing.is_empty() {
        check(
            "network",
            Availability::Ok,
            "netns, veth, nftables, tc: --net none, isolated and egress",
        )
    } else {
        check(
            "network",
            Availability::OptionalMissing(format!(
                "--net isolated and egress need {}; --net none works",
                missing.join(", ")
            )),
            "",
        )
    }
}
