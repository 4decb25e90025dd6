//! Privilege: what the sandboxed process holds or could gain. Capabilities in any set,
//! no_new_privs, seccomp mode, (host) root ids, setuid/file-capability binaries that
//! would take effect, and writable cgroup v1 `release_agent` files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use libc::c_long;

use crate::report::{Check, Outcome};
use crate::sys::{self, cstring, errno_name, status_field, sysret_int};

const CLASS: &str = "privilege";

/// All privilege checks, in output order.
pub fn checks() -> Vec<Check> {
    let c = |id: &'static str, name: &'static str, run: fn() -> Outcome| {
        Check::new(id, CLASS, name, run)
    };
    vec![
        c("privilege.cap_eff", "CapEff empty", cap_eff),
        c("privilege.cap_prm", "CapPrm empty", cap_prm),
        c("privilege.cap_bnd", "CapBnd empty", cap_bnd),
        c("privilege.cap_amb", "CapAmb empty", cap_amb),
        c("privilege.cap_inh", "CapInh empty", cap_inh),
        c("privilege.no_new_privs", "NoNewPrivs = 1", no_new_privs),
        c("privilege.seccomp", "Seccomp = 2 (filter)", seccomp),
        c("privilege.uid0", "uid 0", uid0),
        c("privilege.gid0", "gid 0 / group 0", gid0),
        c("privilege.setuid0", "setuid(0)", setuid0),
        c(
            "privilege.host_root_mapping",
            "uid_map maps host root",
            host_root_mapping,
        ),
        c(
            "privilege.setuid_binaries",
            "setuid/file-cap binaries effective",
            setuid_binaries,
        ),
        c(
            "privilege.cgroup_release_agent",
            "cgroup v1 release_agent writable",
            release_agent,
        ),
    ]
}

const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Names of the capabilities set in `mask`.
fn cap_names(mask: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| match CAP_NAMES.get(b) {
            Some(n) => format!("CAP_{n}"),
            None => format!("cap{b}"),
        })
        .collect();
    if names.len() >= CAP_NAMES.len() {
        format!("all {} capabilities", names.len())
    } else {
        names.join(",")
    }
}

fn cap_set(field: &str) -> Outcome {
    let Some(v) = status_field(field) else {
        return Outcome::not_present(&format!("{field} in /proc/self/status"));
    };
    match u64::from_str_radix(&v, 16) {
        Ok(0) => Outcome::contained(format!("{field}={v}")),
        Ok(mask) => Outcome::exposed(format!("{field}={v}: {}", cap_names(mask))),
        Err(_) => Outcome::contained(format!("probe error: cannot parse {field}={v}")),
    }
}

fn cap_eff() -> Outcome {
    cap_set("CapEff")
}
fn cap_prm() -> Outcome {
    cap_set("CapPrm")
}
fn cap_bnd() -> Outcome {
    cap_set("CapBnd")
}
fn cap_amb() -> Outcome {
    cap_set("CapAmb")
}
fn cap_inh() -> Outcome {
    cap_set("CapInh")
}

fn no_new_privs() -> Outcome {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let field = status_field("NoNewPrivs").unwrap_or_else(|| "absent".to_string());
    match r {
        1 => Outcome::contained(format!("no_new_privs=1 (status NoNewPrivs: {field})")),
        0 => Outcome::exposed(format!("no_new_privs=0 (status NoNewPrivs: {field})")),
        _ => Outcome::contained(format!(
            "probe error: prctl(PR_GET_NO_NEW_PRIVS): {}",
            errno_name(sys::errno())
        )),
    }
}

fn seccomp() -> Outcome {
    match status_field("Seccomp") {
        Some(v) if v == "2" => Outcome::contained("Seccomp: 2 (filter)"),
        Some(v) => Outcome::exposed(format!("Seccomp: {v} (no filter)")),
        None => {
            // SAFETY: PR_GET_SECCOMP takes no pointers (returns the mode).
            let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
            if r == 2 {
                Outcome::contained("prctl(PR_GET_SECCOMP)=2 (filter; no Seccomp status field)")
            } else {
                Outcome::exposed(format!(
                    "prctl(PR_GET_SECCOMP)={r} (no Seccomp status field)"
                ))
            }
        }
    }
}

fn resids() -> ([libc::uid_t; 3], [libc::gid_t; 3]) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut gr, mut ge, mut gs) = (0, 0, 0);
    // SAFETY: all six are valid out-pointers to locals.
    unsafe {
        libc::getresuid(&mut r, &mut e, &mut s);
        libc::getresgid(&mut gr, &mut ge, &mut gs);
    }
    ([r, e, s], [gr, ge, gs])
}

fn uid0() -> Outcome {
    let (u, _) = resids();
    let detail = format!("ruid={} euid={} suid={}", u[0], u[1], u[2]);
    if u.contains(&0) {
        Outcome::exposed(detail)
    } else {
        Outcome::contained(detail)
    }
}

fn gid0() -> Outcome {
    let (_, g) = resids();
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: groups has room for 256 entries, the size passed.
    let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(n).unwrap_or(0));
    let detail = format!(
        "rgid={} egid={} sgid={} groups={:?}",
        g[0], g[1], g[2], groups
    );
    if g.contains(&0) || groups.contains(&0) {
        Outcome::exposed(detail)
    } else {
        Outcome::contained(detail)
    }
}

fn setuid0() -> Outcome {
    // Only this disposable process changes identity.
    // SAFETY: integer argument only.
    let r = sysret_int(unsafe { libc::setuid(0) });
    match r {
        Ok(_) => Outcome::exposed("setuid(0) succeeded"),
        Err(e) => Outcome::contained(format!("setuid(0): {}", errno_name(e))),
    }
}

fn host_root_mapping() -> Outcome {
    let text = match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(t) => t,
        Err(e) => {
            return Outcome::not_present(&format!("/proc/self/uid_map ({})", sys::io_err_name(&e)))
        }
    };
    // Each line: inside-start outside-start count (outside = parent user namespace).
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() == 3 && f[1] == 0 && f[2] > 0 {
            return Outcome::exposed(format!(
                "uid {} here is uid 0 of the parent user namespace (uid_map: {})",
                f[0],
                line.trim()
            ));
        }
    }
    Outcome::contained(format!(
        "no range maps to parent uid 0 (uid_map: {})",
        text.trim().replace('\n', "; ")
    ))
}

/// One line of /proc/self/mountinfo reduced to what we need.
struct MountEntry {
    mount_point: String,
    options: String,
}

fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 6 {
                return None;
            }
            Some(MountEntry {
                mount_point: f[4].replace("\\040", " "),
                options: f[5].to_string(),
            })
        })
        .collect()
}

/// Mount options of the mount containing `path` (last, longest matching mount point).
fn mount_options_for(mounts: &[MountEntry], path: &str) -> Option<String> {
    let mut best: Option<&MountEntry> = None;
    for m in mounts {
        let mp = m.mount_point.trim_end_matches('/');
        let inside = path == m.mount_point || mp.is_empty() || path.starts_with(&format!("{mp}/"));
        if inside && best.is_none_or(|b| m.mount_point.len() >= b.mount_point.len()) {
            best = Some(m);
        }
    }
    best.map(|m| m.options.clone())
}

fn has_file_caps(path: &Path) -> bool {
    let p = cstring(&path.to_string_lossy());
    // SAFETY: path and name are NUL-terminated; a NULL buffer of size 0 asks for the size.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

fn setuid_binaries() -> Outcome {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1;
    let mounts = mounts();
    let dirs = [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/lib",
        "/usr/libexec",
        "/usr/lib/openssh",
        "/usr/lib/dbus-1.0",
    ];
    let mut effective = Vec::new();
    let mut neutralised = Vec::new();
    let mut scanned = 0usize;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten().take(5000) {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            scanned += 1;
            let mode = meta.permissions().mode();
            let setuid_root = mode & 0o4000 != 0 && meta.uid() == 0;
            let setgid = mode & 0o2000 != 0 && mode & 0o010 != 0;
            let fcaps = has_file_caps(&path);
            if !(setuid_root || setgid || fcaps) {
                continue;
            }
            let what = format!(
                "{}{}",
                path.display(),
                if fcaps {
                    " (file caps)"
                } else if setuid_root {
                    " (setuid root)"
                } else {
                    " (setgid)"
                }
            );
            let opts = mount_options_for(&mounts, &path.to_string_lossy()).unwrap_or_default();
            let nosuid = opts.split(',').any(|o| o == "nosuid");
            if nosuid || nnp {
                neutralised.push(what);
            } else {
                effective.push(what);
            }
        }
    }
    if !effective.is_empty() {
        effective.truncate(8);
        return Outcome::exposed(format!(
            "no_new_privs={} and these are on mounts without nosuid: {}",
            u8::from(nnp),
            effective.join(", ")
        ));
    }
    if neutralised.is_empty() {
        return Outcome::contained(format!(
            "no setuid/setgid/file-capability binaries in {scanned} files scanned"
        ));
    }
    neutralised.truncate(5);
    Outcome::contained(format!(
        "found but neutralised (no_new_privs={} or nosuid): {}",
        u8::from(nnp),
        neutralised.join(", ")
    ))
}

fn release_agent() -> Outcome {
    let mut candidates = vec!["/sys/fs/cgroup/release_agent".to_string()];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            candidates.push(format!("{}/release_agent", e.path().display()));
        }
    }
    let mut seen = Vec::new();
    for c in &candidates {
        if !Path::new(c).exists() {
            continue;
        }
        let p = cstring(c);
        // Opening for write writes nothing; the descriptor is closed at once.
        // SAFETY: path is NUL-terminated.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            sys::close_fd(c_long::from(fd));
            return Outcome::exposed(format!("{c} opened for writing (release_agent escape)"));
        }
        seen.push(format!("{c}: {}", errno_name(sys::errno())));
    }
    if seen.is_empty() {
        Outcome::not_present("release_agent files")
    } else {
        Outcome::contained(seen.join(", "))
    }
}
