//! Host information leaks: kernel addresses and logs, host-wide /proc and /sys files,
//! writable kernel knobs (opened for writing, never written), other host processes, host
//! paths in mountinfo, readable secrets, environment, and device nodes.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use libc::c_long;

use crate::report::{Check, Outcome};
use crate::sys::{self, cstring, errno, errno_name, first_line, io_err_name, read_head};

const CLASS: &str = "info";

/// All info checks, in output order.
pub fn checks() -> Vec<Check> {
    let c = |id: &'static str, name: &'static str, run: fn() -> Outcome| {
        Check::new(id, CLASS, name, run)
    };
    vec![
        c("info.kallsyms", "/proc/kallsyms addresses", kallsyms),
        c("info.kcore", "/proc/kcore open", kcore),
        c("info.keys", "/proc/keys", keys),
        c("info.timer_list", "/proc/timer_list", timer_list),
        c("info.sched_debug", "/proc/sched_debug", sched_debug),
        c("info.interrupts", "/proc/interrupts", interrupts),
        c("info.slabinfo", "/proc/slabinfo", slabinfo),
        c("info.vmallocinfo", "/proc/vmallocinfo", vmallocinfo),
        c("info.modules", "/proc/modules", modules),
        c("info.iomem", "/proc/iomem addresses", iomem),
        c(
            "info.sysrq_trigger",
            "/proc/sysrq-trigger writable",
            sysrq_trigger,
        ),
        c(
            "info.proc_sys_writable",
            "/proc/sys/kernel/hostname writable",
            proc_sys_writable,
        ),
        c(
            "info.core_pattern",
            "/proc/sys/kernel/core_pattern writable",
            core_pattern,
        ),
        c("info.sys_firmware", "/sys/firmware readable", sys_firmware),
        c("info.sys_kernel", "/sys/kernel readable", sys_kernel),
        c("info.kmsg", "/dev/kmsg readable", kmsg),
        c("info.dmesg", "dmesg via syslog(2)", dmesg),
        c("info.host_pids", "host processes visible", host_pids),
        c("info.mountinfo", "host paths in mountinfo", mountinfo),
        c("info.shadow", "/etc/shadow readable", shadow),
        c("info.root_dir", "/root readable", root_dir),
        c("info.home_users", "other users in /home", home_users),
        c("info.env", "unexpected environment variables", env),
        c("info.dev_extra", "/dev beyond the minimal set", dev_extra),
        c("info.block_devices", "block devices in /dev", block_devices),
        c(
            "info.dev_mem",
            "/dev/mem, /dev/kmem, /dev/port open",
            dev_mem,
        ),
    ]
}

/// Exposed if `path` reads back non-empty.
fn readable_nonempty(path: &str) -> Outcome {
    match read_head(path, 64 * 1024) {
        Ok(d) if d.is_empty() => Outcome::contained(format!("{path}: readable but empty")),
        Ok(d) => Outcome::exposed(format!(
            "{path}: {} bytes readable, first line: {}",
            d.len(),
            first_line(&d, 160)
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::not_present(path),
        Err(e) => Outcome::contained(format!("{path}: {}", io_err_name(&e))),
    }
}

/// Exposed if `path` can be opened for writing (nothing is written).
fn writable(path: &str) -> Outcome {
    if !Path::new(path).exists() {
        return Outcome::not_present(path);
    }
    let p = cstring(path);
    // SAFETY: path is NUL-terminated; no O_TRUNC, and the descriptor is closed unwritten.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        sys::close_fd(c_long::from(fd));
        Outcome::exposed(format!("{path}: opened for writing"))
    } else {
        Outcome::contained(format!("{path}: {}", errno_name(errno())))
    }
}

/// Exposed if the directory `path` lists at least one entry.
fn dir_listable(path: &str) -> Outcome {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if names.is_empty() {
                Outcome::contained(format!("{path}: empty"))
            } else {
                let n = names.len();
                names.truncate(12);
                Outcome::exposed(format!("{path}: {n} entries: {}", names.join(" ")))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::not_present(path),
        Err(e) => Outcome::contained(format!("{path}: {}", io_err_name(&e))),
    }
}

/// Exposed if `path` shows a non-zero hexadecimal address in the column picked by `addr`.
fn nonzero_addresses(path: &str, addr: fn(&str) -> Option<&str>) -> Outcome {
    match read_head(path, 256 * 1024) {
        Ok(d) if d.is_empty() => Outcome::contained(format!("{path}: readable but empty")),
        Ok(d) => {
            let text = String::from_utf8_lossy(&d);
            let hit = text.lines().find(|l| {
                addr(l).is_some_and(|a| {
                    !a.is_empty()
                        && a.chars().all(|c| c.is_ascii_hexdigit())
                        && a.chars().any(|c| c != '0')
                })
            });
            match hit {
                Some(l) => Outcome::exposed(format!(
                    "{path}: real addresses visible, e.g. {}",
                    sys::cut(l.trim(), 120)
                )),
                None => Outcome::contained(format!(
                    "{path}: readable but addresses are zeroed (kptr_restrict)"
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::not_present(path),
        Err(e) => Outcome::contained(format!("{path}: {}", io_err_name(&e))),
    }
}

fn kallsyms() -> Outcome {
    nonzero_addresses("/proc/kallsyms", |l| l.split_whitespace().next())
}

fn kcore() -> Outcome {
    if !Path::new("/proc/kcore").exists() {
        return Outcome::not_present("/proc/kcore");
    }
    // SAFETY: path is NUL-terminated; the descriptor is closed without reading.
    let fd = unsafe { libc::open(c"/proc/kcore".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        // A masked /proc/kcore is /dev/null bind-mounted over it: size 0.
        let size = std::fs::metadata("/proc/kcore")
            .map(|m| m.len())
            .unwrap_or(0);
        sys::close_fd(c_long::from(fd));
        if size == 0 {
            return Outcome::contained("/proc/kcore: opens but is empty (masked)");
        }
        Outcome::exposed(format!("/proc/kcore: opened for reading (size {size})"))
    } else {
        Outcome::contained(format!("/proc/kcore: {}", errno_name(errno())))
    }
}

fn keys() -> Outcome {
    readable_nonempty("/proc/keys")
}
fn timer_list() -> Outcome {
    readable_nonempty("/proc/timer_list")
}
fn sched_debug() -> Outcome {
    readable_nonempty("/proc/sched_debug")
}
fn interrupts() -> Outcome {
    readable_nonempty("/proc/interrupts")
}
fn slabinfo() -> Outcome {
    readable_nonempty("/proc/slabinfo")
}
fn vmallocinfo() -> Outcome {
    readable_nonempty("/proc/vmallocinfo")
}
fn modules() -> Outcome {
    readable_nonempty("/proc/modules")
}

fn iomem() -> Outcome {
    // Lines look like "00000000-00000fff : Reserved"; the start address is checked.
    nonzero_addresses("/proc/iomem", |l| l.trim_start().split('-').next())
}

fn sysrq_trigger() -> Outcome {
    writable("/proc/sysrq-trigger")
}
fn proc_sys_writable() -> Outcome {
    writable("/proc/sys/kernel/hostname")
}
fn core_pattern() -> Outcome {
    writable("/proc/sys/kernel/core_pattern")
}
fn sys_firmware() -> Outcome {
    dir_listable("/sys/firmware")
}
fn sys_kernel() -> Outcome {
    dir_listable("/sys/kernel")
}

fn kmsg() -> Outcome {
    if !Path::new("/dev/kmsg").exists() {
        return Outcome::not_present("/dev/kmsg");
    }
    // SAFETY: path is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c"/dev/kmsg".as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Outcome::contained(format!("/dev/kmsg: {}", errno_name(errno())));
    }
    let mut buf = [0u8; 1024];
    // SAFETY: reads at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let err = errno();
    sys::close_fd(c_long::from(fd));
    if n > 0 {
        let n = usize::try_from(n).unwrap_or(0);
        Outcome::exposed(format!(
            "/dev/kmsg readable: {}",
            first_line(&buf[..n], 160)
        ))
    } else if n == 0 {
        Outcome::contained("/dev/kmsg opens but reads nothing")
    } else if err == libc::EAGAIN {
        Outcome::exposed("/dev/kmsg opened for reading (no record pending)")
    } else {
        Outcome::contained(format!("/dev/kmsg: read {}", errno_name(err)))
    }
}

fn dmesg() -> Outcome {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: SYSLOG_ACTION_READ_ALL writes at most len bytes into buf.
    let n = unsafe {
        libc::syscall(
            libc::SYS_syslog,
            3 as c_long,
            buf.as_mut_ptr(),
            buf.len() as c_long,
        )
    };
    match usize::try_from(n) {
        Ok(0) => Outcome::contained("syslog(READ_ALL): empty log"),
        // gVisor serves a synthetic log of its own; it says nothing about the host.
        Ok(n) if String::from_utf8_lossy(&buf[..n.min(buf.len())]).contains("Starting gVisor") => {
            Outcome::contained(format!(
                "syslog(READ_ALL) returned {n} bytes of gVisor's synthetic log (not the host's)"
            ))
        }
        Ok(n) => Outcome::exposed(format!(
            "syslog(READ_ALL) returned {n} bytes: {}",
            first_line(&buf[..n.min(buf.len())], 160)
        )),
        Err(_) => Outcome::contained(format!("syslog(READ_ALL): {}", errno_name(errno()))),
    }
}

/// Process names that only exist outside a sandbox (kernel threads, init systems, daemons).
const HOST_COMMS: &[&str] = &[
    "init",
    "systemd",
    "kthreadd",
    "sshd",
    "containerd",
    "containerd-shim",
    "dockerd",
    "kubelet",
    "cron",
    "crond",
    "systemd-journal",
    "systemd-udevd",
    "systemd-logind",
    "systemd-resolve",
    "systemd-network",
    "dbus-daemon",
    "rsyslogd",
    "agetty",
    "runc",
    "moat",
];

/// Heuristic: more than 20 processes, or any process whose comm is a typical host
/// process (kernel threads such as kworker/*, init/systemd, sshd, container daemons).
fn host_pids() -> Outcome {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Outcome::not_present("/proc");
    };
    let pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut hosty = Vec::new();
    for pid in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if HOST_COMMS.contains(&comm)
            || comm.starts_with("kworker")
            || comm.starts_with("ksoftirqd")
        {
            hosty.push(format!("{pid}:{comm}"));
        }
    }
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    let detail = format!(
        "{} processes visible, pid 1 is {:?}",
        pids.len(),
        pid1.trim()
    );
    if pids.len() > 20 || !hosty.is_empty() {
        hosty.truncate(8);
        Outcome::exposed(format!("{detail}; host-like: {}", hosty.join(" ")))
    } else {
        Outcome::contained(detail)
    }
}

/// Fragments of paths that reveal where the sandbox lives on the host.
const HOST_PATH_MARKERS: &[&str] = &[
    "/var/lib/",
    "/var/run/",
    "/run/",
    "/home/",
    "/root",
    "/srv/",
    "/mnt/",
    "/opt/",
    "/tmp/",
    "/var/tmp/",
    "/docker/",
    "/containerd/",
    "/snapshots/",
    "/overlay2/",
];

/// Looks at the fields of mountinfo that describe the *host* side of each mount: the root
/// of the mount within its filesystem (field 4), the mount source and the super options
/// (overlay lowerdir=...). The mount point itself is the sandbox's own path.
fn mountinfo() -> Outcome {
    let text = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(t) => t,
        Err(e) => {
            return Outcome::not_present(&format!("/proc/self/mountinfo ({})", io_err_name(&e)))
        }
    };
    let mut hits = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let mut host_side: Vec<&str> = Vec::new();
        if let Some(root) = fields.get(3) {
            host_side.push(root);
        }
        host_side.extend(fields.iter().skip(sep + 2).take(2));
        if host_side
            .iter()
            .any(|f| HOST_PATH_MARKERS.iter().any(|m| f.contains(m)))
        {
            hits.push(sys::cut(line, 300));
        }
    }
    if hits.is_empty() {
        Outcome::contained(format!(
            "{} mounts, none reveal host paths",
            text.lines().count()
        ))
    } else {
        let n = hits.len();
        hits.truncate(4);
        Outcome::exposed(format!(
            "{n} mounts reveal host paths: {}",
            hits.join(" | ")
        ))
    }
}

fn shadow() -> Outcome {
    readable_nonempty("/etc/shadow").map_detail(|d| {
        // Never print shadow content.
        d.split(", first line").next().unwrap_or("").to_string()
    })
}

trait MapDetail {
    fn map_detail(self, f: impl FnOnce(&str) -> String) -> Self;
}

impl MapDetail for Outcome {
    fn map_detail(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.detail = f(&self.detail);
        self
    }
}

fn root_dir() -> Outcome {
    dir_listable("/root")
}

fn home_users() -> Outcome {
    let me: Vec<String> = [
        std::env::var("USER").ok(),
        std::env::var("LOGNAME").ok(),
        std::env::var("HOME").ok().and_then(|h| {
            Path::new(&h)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    match std::fs::read_dir("/home") {
        Ok(entries) => {
            let mut others: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !me.contains(n))
                .collect();
            others.sort();
            if others.is_empty() {
                Outcome::contained("/home lists no other users")
            } else {
                Outcome::exposed(format!("/home lists other users: {}", others.join(" ")))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::not_present("/home"),
        Err(e) => Outcome::contained(format!("/home: {}", io_err_name(&e))),
    }
}

/// Environment variables a plain sandboxed process is expected to have.
const ALLOWED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "TERM", "HOSTNAME", "PWD", "SHLVL", "_",
];

fn env() -> Outcome {
    let mut extra: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| !ALLOWED_ENV.contains(&k.as_str()) && !k.starts_with("MOAT_PROBE_"))
        .collect();
    extra.sort();
    if extra.is_empty() {
        Outcome::contained("environment has only expected variables")
    } else {
        // Names only: values may be secrets.
        Outcome::exposed(format!(
            "{} unexpected variables (names only): {}",
            extra.len(),
            extra.join(" ")
        ))
    }
}

/// The device nodes a minimal sandbox /dev needs.
const MINIMAL_DEV: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
    "stdout", "stderr", "core", "mqueue", "console",
];

fn dev_extra() -> Outcome {
    let entries = match std::fs::read_dir("/dev") {
        Ok(e) => e,
        Err(e) => return Outcome::not_present(&format!("/dev ({})", io_err_name(&e))),
    };
    let mut extra: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !MINIMAL_DEV.contains(&n.as_str()))
        .collect();
    extra.sort();
    if extra.is_empty() {
        Outcome::contained("/dev holds only the minimal set")
    } else {
        let n = extra.len();
        extra.truncate(40);
        Outcome::exposed(format!("{n} extra entries in /dev: {}", extra.join(" ")))
    }
}

fn walk_block(dir: &Path, depth: usize, out: &mut Vec<String>) {
    if depth > 4 || out.len() > 50 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_block_device() {
            out.push(e.path().display().to_string());
        } else if ft.is_dir() && !ft.is_symlink() {
            walk_block(&e.path(), depth + 1, out);
        }
    }
}

fn block_devices() -> Outcome {
    if !Path::new("/dev").is_dir() {
        return Outcome::not_present("/dev");
    }
    let mut found = Vec::new();
    walk_block(Path::new("/dev"), 0, &mut found);
    found.sort();
    if found.is_empty() {
        Outcome::contained("no block devices under /dev")
    } else {
        let n = found.len();
        found.truncate(20);
        Outcome::exposed(format!("{n} block devices: {}", found.join(" ")))
    }
}

fn dev_mem() -> Outcome {
    let mut parts = Vec::new();
    let mut opened = Vec::new();
    for path in ["/dev/mem", "/dev/kmem", "/dev/port"] {
        if !Path::new(path).exists() {
            continue;
        }
        let p = cstring(path);
        // SAFETY: path is NUL-terminated; the descriptor is closed without reading.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            sys::close_fd(c_long::from(fd));
            opened.push(path);
        } else {
            parts.push(format!("{path}: {}", errno_name(errno())));
        }
    }
    if !opened.is_empty() {
        Outcome::exposed(format!("opened for reading: {}", opened.join(" ")))
    } else if parts.is_empty() {
        Outcome::not_present("/dev/mem, /dev/kmem, /dev/port")
    } else {
        Outcome::contained(parts.join(", "))
    }
}
