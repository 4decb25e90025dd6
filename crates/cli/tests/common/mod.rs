//! Helpers shared by moat's end-to-end tests: they run the real `moat` binary as root
//! against the real kernel.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The moat binary under test.
pub fn moat() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moat"));
    command.stdin(Stdio::null());
    command
}

/// Whether the run must not skip anything (CI sets MOAT_REQUIRE=all).
pub fn everything_required() -> bool {
    std::env::var("MOAT_REQUIRE").is_ok_and(|v| v == "all")
}

/// Returns true when `available`; otherwise prints why the test is skipped, or fails it
/// when MOAT_REQUIRE=all.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!everything_required(), "MOAT_REQUIRE=all but {what}");
    eprintln!("skipped: {what}");
    false
}

/// Tests create sandboxes: they need root.
pub fn require_root() -> bool {
    require(
        nix::unistd::geteuid().is_root(),
        "these tests need root (sandboxes are created for real)",
    )
}

/// A unique sandbox id for a test.
pub fn test_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let tag: String = tag
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    format!("t{}{}{n}", std::process::id(), &tag[..tag.len().min(20)])
}

/// Result of a run.
pub struct Ran {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Ran {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `moat run OPTIONS -- ARGV`.
pub fn run(options: &[&str], argv: &[&str]) -> Ran {
    moat()
        .arg("run")
        .args(options)
        .arg("--")
        .args(argv)
        .output()
        .expect("run moat")
        .into()
}

/// `moat run OPTIONS -- sh -c SCRIPT`.
pub fn sh(options: &[&str], script: &str) -> Ran {
    run(options, &["sh", "-c", script])
}

/// A scratch directory other users can traverse (the sandbox's unprivileged root must
/// reach homes created inside it). Removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("moat-test-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Everything moat keeps on the host for sandbox `id`; empty when nothing is left.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for path in [
        format!("/run/moat/sandboxes/{id}"),
        format!("/run/moat/containers/{id}"),
    ] {
        if Path::new(&path).exists() {
            found.push(path);
        }
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for hierarchy in hierarchies.flatten() {
            for candidate in [
                hierarchy.path().join("moat").join(id),
                hierarchy.path().join(id),
            ] {
                if candidate.exists() {
                    found.push(candidate.display().to_string());
                }
            }
        }
    }
    if let Ok(slots) = std::fs::read_dir("/var/lib/moat/ids/slots") {
        for slot in slots.flatten() {
            if std::fs::read_to_string(slot.path())
                .unwrap_or_default()
                .trim()
                == format!("sandbox {id}")
            {
                found.push(format!("id lease {}", slot.path().display()));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(id))
            .map(|l| format!("mount {l}")),
    );
    found.extend(processes_mentioning(id));
    found
}

fn processes_mentioning(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(id) && !cmdline.contains("cargo") {
            found.push(format!("process {pid}: {cmdline}"));
        }
    }
    found
}

/// Tries each syscall a sandbox must deny, with harmless arguments, and prints one JSON
/// object: name -> "ok" or the errno name. Run inside a sandbox and, as the control, on
/// the host as root (where every call is reachable).
pub const SYSCALL_BATTERY: &str = r#"
import ctypes, errno, json, os, pty, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    e = ctypes.get_errno()
    return "ok" if r >= 0 else errno.errorcode.get(e, str(e))
r = {}
r["io_uring_setup"] = call(425, 1, 0)
r["bpf"] = call(321, 5, 0, 0)
r["userfaultfd"] = call(323, 0)
r["perf_event_open"] = call(298, 0, 0, -1, -1, 0)
r["keyctl"] = call(250, 0, -3, 0)
r["add_key"] = call(248, 0, 0, 0, 0, 0)
r["fsopen"] = call(430, 0, 0)
r["open_tree"] = call(428, -100, 0, 0)
r["mount"] = call(165, 0, 0, 0, 0, 0)
r["umount2"] = call(166, 0, 0)
r["pivot_root"] = call(155, 0, 0)
r["chroot"] = call(161, 0)
r["ptrace"] = call(101, 0x4206, 0, 0, 0)
r["process_vm_readv"] = call(310, os.getppid(), 0, 0, 0, 0, 0)
r["open_by_handle_at"] = call(304, -100, 0, 0)
r["name_to_handle_at"] = call(303, -100, 0, 0, 0, 0)
r["setns"] = call(308, -1, 0)
r["kexec_load"] = call(246, 0, 0, 0, 0xffffffff)
r["init_module"] = call(175, 0, 0, 0)
r["swapon"] = call(167, 0, 0)
r["reboot"] = call(169, 0, 0, 0, 0)
r["acct"] = call(163, 1)
r["kcmp"] = call(312, os.getpid(), os.getpid(), 99, 0, 0)
r["syslog"] = call(103, 3, 0, 0)
r["clone3"] = call(435, 0, 0)
r["socket_packet"] = call(41, 17, 3, 0)
r["socket_raw_inet"] = call(41, 2, 3, 1)
r["socket_netlink_netfilter"] = call(41, 16, 3, 12)
r["socket_netlink_audit"] = call(41, 16, 3, 9)
r["socket_netlink_uevent"] = call(41, 16, 2, 15)
r["socket_vsock"] = call(41, 40, 1, 0)
r["socket_sctp"] = call(41, 2, 1, 132)
r["socket_mptcp"] = call(41, 2, 1, 262)
r["socket_udplite"] = call(41, 10, 2, 136)
master, slave = pty.openpty()
c = ctypes.c_char(b"x")
r["ioctl_tiocsti"] = "ok" if libc.ioctl(slave, ctypes.c_ulong(0x5412), ctypes.byref(c)) == 0 else errno.errorcode[ctypes.get_errno()]
ctypes.set_errno(0)
r["ioctl_tiocsti_high_bits"] = "ok" if libc.ioctl(slave, ctypes.c_ulong(0x100005412), ctypes.byref(c)) == 0 else errno.errorcode[ctypes.get_errno()]
r["personality_read_implies_exec"] = call(135, 0x0400000)
# Allowed controls: these must keep working.
r["allowed_tcgets"] = "ok" if os.isatty(slave) else "EBADF"
r["allowed_socket_tcp"] = call(41, 2, 1, 0)
r["allowed_socket_unix"] = call(41, 1, 1, 0)
r["allowed_socket_udp6"] = call(41, 10, 2, 17)
r["allowed_socket_tcp_explicit"] = call(41, 2, 0x80801, 6)
r["allowed_socket_netlink_route"] = call(41, 16, 0x80003, 0)
done = []
t = threading.Thread(target=lambda: done.append(1)); t.start(); t.join()
r["allowed_thread"] = "ok" if done else "failed"
# Last: on the host these move the process into new namespaces, losing its capabilities.
r["unshare_net"] = call(272, 0x40000000)
r["unshare_user"] = call(272, 0x10000000)
print(json.dumps(r))
"#;

/// Syscalls that must be denied (name in [`SYSCALL_BATTERY`] -> expected errno).
pub const MUST_DENY: &[(&str, &str)] = &[
    ("io_uring_setup", "EPERM"),
    ("bpf", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("perf_event_open", "EPERM"),
    ("keyctl", "EPERM"),
    ("add_key", "EPERM"),
    ("fsopen", "EPERM"),
    ("open_tree", "EPERM"),
    ("mount", "EPERM"),
    ("umount2", "EPERM"),
    ("pivot_root", "EPERM"),
    ("chroot", "EPERM"),
    ("ptrace", "EPERM"),
    ("process_vm_readv", "EPERM"),
    ("open_by_handle_at", "EPERM"),
    ("name_to_handle_at", "EPERM"),
    ("setns", "EPERM"),
    ("kexec_load", "EPERM"),
    ("init_module", "EPERM"),
    ("swapon", "EPERM"),
    ("reboot", "EPERM"),
    ("acct", "EPERM"),
    ("kcmp", "EPERM"),
    ("syslog", "EPERM"),
    ("unshare_user", "EPERM"),
    ("unshare_net", "EPERM"),
    ("clone3", "ENOSYS"),
    ("socket_packet", "EPERM"),
    ("socket_raw_inet", "EPERM"),
    ("socket_netlink_netfilter", "EPERM"),
    ("socket_netlink_audit", "EPERM"),
    ("socket_netlink_uevent", "EPERM"),
    ("socket_vsock", "EPERM"),
    ("socket_sctp", "EPERM"),
    ("socket_mptcp", "EPERM"),
    ("socket_udplite", "EPERM"),
    ("ioctl_tiocsti", "EPERM"),
    ("ioctl_tiocsti_high_bits", "EPERM"),
    ("personality_read_implies_exec", "EPERM"),
];

/// Parses the battery's JSON line.
pub fn parse_battery(stdout: &str) -> serde_json::Map<String, serde_json::Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {stdout:?}"));
    serde_json::from_str(line).expect("battery JSON")
}

/// A moat process a test started. If the test ends before waiting for it (a failed
/// assertion), it is stopped (SIGTERM, so it cleans up; SIGKILL after 10 s) rather than
/// left running with its sandbox.
pub struct Running(Option<std::process::Child>);

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        Running(Some(command.spawn().expect("moat starts")))
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("not yet waited for")
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        let child = self.0.as_ref().expect("not yet waited for");
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32"))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal our own child");
    }

    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child().stdout.take().expect("stdout is piped")
    }

    pub fn take_stderr(&mut self) -> std::process::ChildStderr {
        self.child().stderr.take().expect("stderr is piped")
    }

    pub fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }

    pub fn wait_with_output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A minimal image: a static busybox and its applets. None when the host has no static
/// busybox (and MOAT_REQUIRE allows skipping).
pub fn busybox_image(scratch: &Scratch) -> Option<std::path::PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let is_static = std::process::Command::new("file")
        .arg(busybox)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"));
    if !require(
        is_static,
        "a static /bin/busybox is needed to build a test image (apt-get install busybox-static)",
    ) {
        return None;
    }
    let image = scratch.join("image");
    std::fs::create_dir_all(image.join("bin")).unwrap();
    std::fs::create_dir_all(image.join("etc")).unwrap();
    std::fs::copy(busybox, image.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "cat", "touch", "ls", "hostname", "grep", "head"] {
        std::os::unix::fs::symlink("busybox", image.join("bin").join(applet)).unwrap();
    }
    Some(image)
}

/// The sum of `key=N` over the `Data` of the `SystemEvent`s in `alerts`.
pub fn counted(alerts: &[serde_json::Value], key: &str) -> u64 {
    alerts
        .iter()
        .filter(|a| a["Type"] == "SystemEvent")
        .filter_map(|a| {
            a["Data"]
                .as_str()?
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
