//! Profile + request -> [`Plan`]: every default resolved, every range checked.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::plan::*;
use crate::profile::{Profile, ProfileSource};
use crate::request::{RequestError, RunRequest};
use crate::seccomp::{SeccompProfile, SeccompProfileError};
use crate::units::{parse_cpus, parse_size, UnitError};
use crate::{SANDBOX_HOME, SANDBOX_UID, SANDBOX_USER};

/// What compile needs to know about the host (read by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// Total memory.
    pub memory_bytes: u64,
    /// Online CPUs.
    pub cpus: u32,
}

/// A request that cannot become a plan.
#[derive(Debug, Error)]
pub enum CompileError {
    /// The request itself is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A quantity did not parse.
    #[error("{flag}")]
    Unit {
        /// Which option.
        flag: &'static str,
        /// Why.
        #[source]
        source: UnitError,
    },
    /// A quantity is out of range.
    #[error("{flag} {value}: out of range ({range})")]
    OutOfRange {
        /// Which option.
        flag: &'static str,
        /// The value as written.
        value: String,
        /// The allowed range, for humans.
        range: String,
    },
    /// A home directory that would expose or clobber the host.
    #[error("--home {0}: refusing a system directory as a home (use a directory of its own, e.g. /srv/homes/NAME)")]
    SystemHome(PathBuf),
    /// An image path that is the host's own system.
    #[error("--rootfs {0}: refusing a system directory as an image (use an unpacked image, e.g. under /var/lib/moat-images)")]
    SystemImage(PathBuf),
    /// The policies cannot be applied.
    #[error(transparent)]
    Policy(#[from] crate::enforce::EnforceError),
    /// The network request is malformed or not allowed.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The profile names a seccomp filter that does not exist.
    #[error(transparent)]
    Seccomp(#[from] SeccompProfileError),
}

/// Whether a (lexically normal) path is, or is inside, the host's own system: never a
/// home or an image.
fn is_system_path(normal: &Path) -> bool {
    FORBIDDEN_HOMES.iter().any(|f| normal == Path::new(f))
        || FORBIDDEN_HOME_TREES
            .iter()
            .any(|tree| normal.starts_with(tree))
}

/// Directories a home or image must never be (or be inside of, for the pseudo filesystems).
const FORBIDDEN_HOMES: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    "/var/lib",
    "/var/lib/moat",
    "/root",
    "/home",
    "/tmp",
    "/srv",
    "/opt",
];
/// Trees a home must not be inside of.
const FORBIDDEN_HOME_TREES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/etc",
    "/usr",
    "/var/lib/moat",
    "/run/moat",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
];

/// System directories mirrored in host-system mode.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// /etc entries a workload legitimately needs. Never: shadow, gshadow, sudoers, ssh keys,
/// machine-id, the host's passwd/group/hosts/hostname (moat writes its own).
const ETC_ALLOWLIST: &[&str] = &[
    "/etc/alternatives",
    "/etc/bash.bashrc",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/debian_version",
    "/etc/environment",
    "/etc/fonts",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/inputrc",
    "/etc/issue",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/locale.gen",
    "/etc/localtime",
    "/etc/login.defs",
    "/etc/lsb-release",
    "/etc/magic",
    "/etc/mime.types",
    "/etc/nanorc",
    "/etc/netconfig",
    "/etc/networks",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/pip.conf",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/protocols",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/R",
    "/etc/rpc",
    "/etc/services",
    "/etc/skel",
    "/etc/ssl",
    "/etc/terminfo",
    "/etc/timezone",
    "/etc/ucf.conf",
    "/etc/vim",
    "/etc/wgetrc",
    "/etc/xattr.conf",
    "/etc/gitconfig",
    "/etc/matplotlibrc",
    "/etc/jupyter",
];

/// /proc entries hidden because they leak host data or open kernel attack surface.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/buddyinfo",
    "/proc/bus",
    "/proc/config.gz",
    "/proc/driver",
    "/proc/dynamic_debug",
    "/proc/fs",
    "/proc/interrupts",
    "/proc/iomem",
    "/proc/ioports",
    "/proc/irq",
    "/proc/kallsyms",
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/kmsg",
    "/proc/kpagecgroup",
    "/proc/kpagecount",
    "/proc/kpageflags",
    "/proc/latency_stats",
    "/proc/modules",
    "/proc/mtrr",
    "/proc/pagetypeinfo",
    "/proc/partitions",
    "/proc/diskstats",
    "/proc/sched_debug",
    "/proc/schedstat",
    "/proc/scsi",
    "/proc/slabinfo",
    "/proc/softirqs",
    "/proc/swaps",
    "/proc/sysrq-trigger",
    "/proc/sysvipc",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/tty",
    "/proc/vmallocinfo",
    "/proc/vmstat",
    "/proc/zoneinfo",
    "/proc/cmdline",
    "/proc/consoles",
    "/proc/devices",
    "/proc/misc",
    "/proc/locks",
    "/proc/crypto",
    "/proc/mdstat",
    "/proc/execdomains",
    "/proc/filesystems",
];

/// /proc entries left readable but not writable.
const READONLY_PATHS: &[&str] = &["/proc/sys"];

/// Device nodes of the minimal /dev (pts, ptmx and shm come from their own mounts).
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

const MIB: u64 = 1 << 20;
const CPU_PERIOD_US: u64 = 100_000;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Compiles a profile and a request into a plan. Pure: reads nothing, changes nothing.
pub fn compile(
    profile: &Profile,
    source: &ProfileSource,
    request: &RunRequest,
    host: &HostFacts,
) -> Result<Plan, CompileError> {
    request.validate()?;
    let resources = resources(profile, request, host)?;
    let nproc_backstop = u64::try_from(resources.pids).unwrap_or(u64::MAX);
    let filesystem = filesystem(profile, request, host)?;
    let seccomp = SeccompProfile::builtin(&profile.seccomp.filter)?;
    let network = crate::network::plan_network(&profile.network, &request.network)?;
    let mut policy = crate::enforce::plan_policies(
        &request.policies,
        &request.policy_findings,
        &request.labels,
    )?;
    policy.network.posture = profile.policy.default_posture.network;
    let landlock = landlock(profile, &filesystem);
    let mut filesystem_with_masks = filesystem;
    let landlock = apply_path_policies(landlock, &policy, &mut filesystem_with_masks);
    let hostname = request
        .identity
        .as_deref()
        .map(|name| name.replace('_', "-"))
        .unwrap_or_else(|| format!("moat-{}", &request.id[..request.id.len().min(12)]));
    let cwd = request
        .workdir
        .clone()
        .unwrap_or_else(|| SANDBOX_HOME.to_string());
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOME={SANDBOX_HOME}"),
        format!("USER={SANDBOX_USER}"),
        format!("LOGNAME={SANDBOX_USER}"),
        "LANG=C.UTF-8".to_string(),
        format!("TERM={}", request.term.as_deref().unwrap_or("xterm")),
        format!("HOSTNAME={hostname}"),
    ];
    for (key, value) in &request.env {
        env.retain(|entry| !entry.starts_with(&format!("{key}=")));
        env.push(format!("{key}={value}"));
    }
    Ok(Plan {
        id: request.id.clone(),
        profile: ProfileRef {
            name: profile.name.clone(),
            source: source.clone(),
        },
        hostname,
        identity: request.identity.clone(),
        labels: request.labels.clone(),
        namespaces: vec!["user", "pid", "mount", "ipc", "uts", "cgroup", "network"],
        process: ProcessPlan {
            argv: request.argv.clone(),
            env,
            cwd,
            uid: SANDBOX_UID,
            gid: SANDBOX_UID,
            user: SANDBOX_USER.to_string(),
        },
        filesystem: filesystem_with_masks,
        resources,
        privileges: PrivilegePlan {
            capabilities: Vec::new(),
            no_new_privs: true,
            lock_securebits: true,
            rlimits: vec![
                RlimitPlan {
                    resource: "RLIMIT_CORE",
                    limit: 0,
                },
                RlimitPlan {
                    resource: "RLIMIT_NOFILE",
                    limit: profile.limits.nofile,
                },
                // A backstop behind the pids controller: RLIMIT_NPROC counts per host uid,
                // and the sandbox's host uids are its own.
                RlimitPlan {
                    resource: "RLIMIT_NPROC",
                    limit: nproc_backstop,
                },
            ],
        },
        landlock,
        seccomp,
        network,
        policy,
    })
}

/// Adds the policies' file and process rules to the Landlock plan.
///
/// A file Block is carved out of Landlock's grants (EACCES). Landlock's rights are
/// inherited downward, so in a writable place the directories on the way to a blocked path
/// are granted entry by entry and take no new entries; a readOnly rule there is a
/// read-only bind mount instead, which keeps the place around it writable.
fn apply_path_policies(
    mut landlock: LandlockPlan,
    policy: &crate::enforce::PolicyPlan,
    filesystem: &mut FilesystemPlan,
) -> LandlockPlan {
    use crate::enforce::{ListMode, PathRule};
    let to_path = |rule: &PathRule| LandlockPath {
        path: rule.path.clone(),
        directory: rule.directory,
        recursive: rule.recursive,
        read_only: rule.read_only,
    };
    for rule in &policy.file.block {
        let path = rule.path.trim_end_matches('/').to_string();
        let writable = landlock
            .read_write
            .iter()
            .any(|place| Path::new(&path).starts_with(place));
        if rule.read_only && writable {
            // A read-only bind keeps the place around it writable.
            filesystem.readonly_paths.push(path);
            continue;
        }
        let keep = if rule.read_only {
            Keep::Read
        } else {
            Keep::Nothing
        };
        landlock.deny.push(LandlockDeny {
            target: to_path(rule),
            keep,
        });
    }
    for rule in &policy.process.block {
        landlock.deny.push(LandlockDeny {
            target: to_path(rule),
            // Reading it would let the dynamic loader (ld.so FILE) or an interpreter run it.
            keep: Keep::Nothing,
        });
    }
    if policy.process.mode == ListMode::AllowList {
        landlock.exec_allow_only = Some(policy.process.allow.iter().map(to_path).collect());
    }
    if policy.file.mode == ListMode::AllowList {
        landlock.file_allow_only = Some(policy.file.allow.iter().map(to_path).collect());
    }
    if !policy.process.block.is_empty() || policy.process.mode == ListMode::AllowList {
        landlock.writable_exec = false;
    }
    landlock
}

fn resources(
    profile: &Profile,
    request: &RunRequest,
    host: &HostFacts,
) -> Result<ResourcePlan, CompileError> {
    let memory_text = request.memory.as_deref().unwrap_or(&profile.limits.memory);
    let memory_bytes = parse_size(memory_text).map_err(|source| CompileError::Unit {
        flag: "--memory",
        source,
    })?;
    let memory_bytes = if request.memory.is_none() {
        memory_bytes.min(host.memory_bytes)
    } else {
        memory_bytes
    };
    if !(8 * MIB..=host.memory_bytes).contains(&memory_bytes) {
        return Err(CompileError::OutOfRange {
            flag: "--memory",
            value: memory_text.to_string(),
            range: format!("8M to the host's {}M", host.memory_bytes / MIB),
        });
    }

    let cpus = match &request.cpus {
        Some(text) => {
            let cpus = parse_cpus(text).map_err(|source| CompileError::Unit {
                flag: "--cpus",
                source,
            })?;
            if !(0.01..=f64::from(host.cpus)).contains(&cpus) {
                return Err(CompileError::OutOfRange {
                    flag: "--cpus",
                    value: text.clone(),
                    range: format!("0.01 to the host's {} CPUs", host.cpus),
                });
            }
            cpus
        }
        None => profile.limits.cpus.clamp(0.01, f64::from(host.cpus)),
    };

    let pids = match &request.pids {
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| CompileError::OutOfRange {
                flag: "--pids",
                value: text.clone(),
                range: "a whole number from 8 to 4194304".into(),
            })?,
        None => i64::try_from(profile.limits.pids).unwrap_or(i64::MAX),
    };
    if !(8..=4_194_304).contains(&pids) {
        return Err(CompileError::OutOfRange {
            flag: "--pids",
            value: pids.to_string(),
            range: "8 to 4194304".into(),
        });
    }
    let on_oom = match &request.on_oom {
        Some(text) => {
            text.parse::<crate::profile::OnOom>()
                .map_err(|()| CompileError::OutOfRange {
                    flag: "--on-oom",
                    value: text.clone(),
                    range: "sandbox or process".into(),
                })?
        }
        None => profile.limits.on_oom,
    };
    Ok(ResourcePlan {
        memory_bytes,
        cpus,
        cpu_period_us: CPU_PERIOD_US,
        cpu_quota_us: (cpus * CPU_PERIOD_US as f64).round() as i64,
        pids,
        io_weight: profile.limits.io_weight,
        end_on_oom: on_oom == crate::profile::OnOom::Sandbox,
    })
}

fn filesystem(
    profile: &Profile,
    request: &RunRequest,
    host: &HostFacts,
) -> Result<FilesystemPlan, CompileError> {
    let size = |flag: &'static str, text: &str| -> Result<u64, CompileError> {
        let bytes = parse_size(text).map_err(|source| CompileError::Unit { flag, source })?;
        if !(MIB..=host.memory_bytes).contains(&bytes) {
            return Err(CompileError::OutOfRange {
                flag,
                value: text.to_string(),
                range: format!("1M to the host's {}M", host.memory_bytes / MIB),
            });
        }
        Ok(bytes)
    };
    let tmp_size_bytes = size(
        "--tmp-size",
        request
            .tmp_size
            .as_deref()
            .unwrap_or(&profile.limits.tmp_size),
    )?;
    let shm_size_bytes = size("limits.shm_size", &profile.limits.shm_size)?;
    let home = match &request.home {
        Some(path) => {
            let normal = lexically_normal(path);
            if is_system_path(&normal) {
                return Err(CompileError::SystemHome(path.clone()));
            }
            HomePlan::Bind { host_path: normal }
        }
        None => HomePlan::Ephemeral {
            size_bytes: size(
                "limits.ephemeral_home_size",
                &profile.limits.ephemeral_home_size,
            )?,
        },
    };
    let root = match &request.rootfs {
        Some(path) => {
            let normal = lexically_normal(path);
            if is_system_path(&normal) {
                return Err(CompileError::SystemImage(path.clone()));
            }
            RootPlan::Image { host_path: normal }
        }
        None => RootPlan::HostSystem {
            system_dirs: SYSTEM_DIRS.iter().map(|s| s.to_string()).collect(),
            etc_allowlist: ETC_ALLOWLIST.iter().map(|s| s.to_string()).collect(),
        },
    };
    Ok(FilesystemPlan {
        root,
        home,
        home_path: SANDBOX_HOME.to_string(),
        tmp_size_bytes,
        shm_size_bytes,
        masked_paths: MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
        readonly_paths: READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        devices: DEVICES.iter().map(|s| s.to_string()).collect(),
    })
}

fn landlock(profile: &Profile, filesystem: &FilesystemPlan) -> LandlockPlan {
    let read_exec = match &filesystem.root {
        // The root holds only what moat put there, but listing it keeps the rule set
        // exact: nothing outside these trees is even readable.
        RootPlan::HostSystem { system_dirs, .. } => system_dirs.clone(),
        RootPlan::Image { .. } => vec!["/".to_string()],
    };
    LandlockPlan {
        min_abi: profile.landlock.min_abi,
        read_exec,
        read_only: vec!["/etc".into(), "/sys".into()],
        list_only: vec!["/".into(), "/dev".into()],
        read_write: vec![
            filesystem.home_path.clone(),
            "/tmp".into(),
            "/dev/shm".into(),
            "/proc".into(),
        ],
        devices: filesystem
            .devices
            .iter()
            .cloned()
            .chain(["/dev/pts".to_string(), "/dev/ptmx".to_string()])
            .collect(),
        scope_signals: true,
        scope_abstract_unix_sockets: true,
        writable_exec: true,
        deny: Vec::new(),
        exec_allow_only: None,
        file_allow_only: None,
    }
}

/// Resolves `.` and `..` of an absolute path without touching the filesystem (symlinks
/// are checked at apply time, where the path is opened).
pub fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostFacts = HostFacts {
        memory_bytes: 24 << 30,
        cpus: 2,
    };

    fn plan_for(request: RunRequest) -> Result<Plan, CompileError> {
        let (profile, source) = Profile::load("untrusted").unwrap();
        compile(&profile, &source, &request, &HOST)
    }

    fn request() -> RunRequest {
        RunRequest {
            id: "0123456789abcdef".into(),
            argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
            ..RunRequest::default()
        }
    }

    #[test]
    fn defaults_come_from_the_profile() {
        let plan = plan_for(request()).unwrap();
        assert_eq!(plan.resources.memory_bytes, 2 << 30);
        assert_eq!(plan.resources.cpu_quota_us, 100_000);
        assert_eq!(plan.resources.pids, 512);
        assert_eq!(plan.hostname, "moat-0123456789ab");
        assert_eq!(plan.process.uid, 1000);
        assert_eq!(plan.process.cwd, "/home/jovyan");
        assert!(plan.privileges.capabilities.is_empty());
        assert!(matches!(plan.filesystem.home, HomePlan::Ephemeral { .. }));
        assert!(matches!(plan.filesystem.root, RootPlan::HostSystem { .. }));
    }

    #[test]
    fn command_line_overrides_limits() {
        let mut r = request();
        r.memory = Some("1G".into());
        r.cpus = Some("0.5".into());
        r.pids = Some("256".into());
        r.tmp_size = Some("64M".into());
        let plan = plan_for(r).unwrap();
        assert_eq!(plan.resources.memory_bytes, 1 << 30);
        assert_eq!(plan.resources.cpu_quota_us, 50_000);
        assert_eq!(plan.resources.pids, 256);
        assert_eq!(plan.filesystem.tmp_size_bytes, 64 << 20);
    }

    #[test]
    fn limits_out_of_range_are_errors() {
        for (field, value) in [
            ("memory", "1K"),
            ("memory", "100T"),
            ("memory", "lots"),
            ("cpus", "0"),
            ("cpus", "64"),
            ("cpus", "x"),
            ("pids", "1"),
            ("pids", "-5"),
            ("pids", "99999999999"),
            ("tmp", "1"),
        ] {
            let mut r = request();
            let v = Some(value.to_string());
            match field {
                "memory" => r.memory = v,
                "cpus" => r.cpus = v,
                "pids" => r.pids = v,
                _ => r.tmp_size = v,
            }
            assert!(plan_for(r).is_err(), "{field}={value} should be rejected");
        }
    }

    #[test]
    fn system_directories_are_refused_as_homes() {
        for home in [
            "/",
            "/etc",
            "/usr",
            "/proc/self",
            "/sys",
            "/dev",
            "/boot",
            "/var/lib/moat",
            "/var/lib/moat/x",
            "/etc/../etc",
            "/home",
        ] {
            let mut r = request();
            r.home = Some(home.into());
            assert!(
                matches!(plan_for(r), Err(CompileError::SystemHome(_))),
                "{home} must be refused"
            );
        }
        let mut r = request();
        r.home = Some("/srv/homes/alice".into());
        let plan = plan_for(r).unwrap();
        assert_eq!(
            plan.filesystem.home,
            HomePlan::Bind {
                host_path: "/srv/homes/alice".into()
            }
        );
    }

    #[test]
    fn system_directories_are_refused_as_images() {
        for image in ["/", "/usr", "/etc/..", "/proc/1/root", "/var/lib/moat/x"] {
            let mut r = request();
            r.rootfs = Some(image.into());
            assert!(
                matches!(plan_for(r), Err(CompileError::SystemImage(_))),
                "{image} must be refused"
            );
        }
    }

    #[test]
    fn environment_is_built_from_scratch() {
        let mut r = request();
        r.env = vec![
            ("FOO".into(), "bar".into()),
            ("LANG".into(), "de_DE.UTF-8".into()),
        ];
        let plan = plan_for(r).unwrap();
        let env = &plan.process.env;
        assert!(env.contains(&"FOO=bar".to_string()));
        assert!(env.contains(&"LANG=de_DE.UTF-8".to_string()));
        assert!(!env.contains(&"LANG=C.UTF-8".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    }

    #[test]
    fn identity_names_the_host() {
        let mut r = request();
        r.identity = Some("alice_1".into());
        assert_eq!(plan_for(r).unwrap().hostname, "alice-1");
    }

    #[test]
    fn secrets_are_not_in_the_etc_allowlist() {
        for secret in [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/sudoers",
            "/etc/ssh",
            "/etc/passwd",
        ] {
            assert!(!ETC_ALLOWLIST.contains(&secret), "{secret}");
        }
    }
}
