//! Small, panic-free helpers over libc shared by the check modules: errno names, the
//! verdict conventions ("reachable" and "succeeds"), forking with time bounds, reading
//! the head of a file, and cgroup limit discovery.

use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libc::{c_int, c_long};

use crate::report::Outcome;

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Symbolic name of an errno value (`EPERM`), or `errno N` for unusual ones.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOMSG => "ENOMSG",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EUSERS => "EUSERS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ESTALE => "ESTALE",
        libc::EDQUOT => "EDQUOT",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::ENOPKG => "ENOPKG",
        libc::EMEDIUMTYPE => "EMEDIUMTYPE",
        _ => "",
    };
    if name.is_empty() {
        format!("errno {e}")
    } else {
        name.to_string()
    }
}

/// errno name of an I/O error, or its text when it carries no errno.
pub fn io_err_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_name(n),
        None => e.to_string(),
    }
}

/// Raw `syscall()` return converted to `Ok(value)` or `Err(errno)`.
pub fn sysret(ret: c_long) -> Result<c_long, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Like [`sysret`] for libc wrappers returning `int`.
pub fn sysret_int(ret: c_int) -> Result<c_long, i32> {
    sysret(c_long::from(ret))
}

/// Errors that mean "the sandbox refused": a seccomp filter or LSM (EPERM/EACCES) or an
/// unimplemented/filtered syscall (ENOSYS).
pub fn is_denied(e: i32) -> bool {
    matches!(e, libc::EPERM | libc::EACCES | libc::ENOSYS)
}

/// The "reachable" convention for syscalls a sandbox must filter: success, or any error
/// other than EPERM/EACCES/ENOSYS (the kernel got far enough to validate arguments),
/// counts as exposed.
pub fn reachable(what: &str, r: Result<c_long, i32>) -> Outcome {
    match r {
        Ok(v) => Outcome::exposed(format!("{what}: succeeded (returned {v})")),
        Err(e) if is_denied(e) => Outcome::contained(format!("{what}: {}", errno_name(e))),
        Err(e) => Outcome::exposed(format!(
            "{what}: {} (reachable: the call was not filtered)",
            errno_name(e)
        )),
    }
}

/// The "succeeds" convention: only success counts as exposed.
pub fn succeeds(what: &str, r: Result<c_long, i32>) -> Outcome {
    match r {
        Ok(v) => Outcome::exposed(format!("{what}: succeeded (returned {v})")),
        Err(e) => Outcome::contained(format!("{what}: {}", errno_name(e))),
    }
}

/// Closes `fd` if non-negative.
pub fn close_fd(fd: c_long) {
    if let Ok(fd) = c_int::try_from(fd) {
        if fd >= 0 {
            // SAFETY: closing a descriptor this process owns; no memory is involved.
            unsafe { libc::close(fd) };
        }
    }
}

/// Closes the descriptor in `r` if the call returned one.
pub fn close_ok(r: Result<c_long, i32>) {
    if let Ok(fd) = r {
        close_fd(fd);
    }
}

/// A C string; interior NULs (never present in our literals) yield an empty string.
pub fn cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Up to `max` bytes from the start of `path`.
pub fn read_head(path: &str, max: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    file.take(max as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// The first line of `data`, lossily decoded and cut to `max` characters.
pub fn first_line(data: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(data);
    let line = text.lines().next().unwrap_or("");
    cut(line, max)
}

/// `s` cut to at most `max` characters.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push_str("...");
        out
    }
}

/// Forks; the child runs `f` and exits with its return value as the exit status.
/// Only for the disposable check processes, which are single-threaded when they fork.
pub fn fork_run(f: impl FnOnce() -> i32) -> Result<libc::pid_t, i32> {
    // SAFETY: the check process is single-threaded, so the child may run ordinary code;
    // it never returns from this function (it leaves through _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(125);
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // flushing buffers inherited from the parent.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Body of a helper child that just waits to be killed: it dies with its parent
/// (PR_SET_PDEATHSIG) and after 120 s at most (alarm), so it can never outlive the probe.
pub fn park() -> i32 {
    // SAFETY: prctl, alarm and pause take no pointers and only affect this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        libc::alarm(120);
        loop {
            libc::pause();
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Still running at the deadline (it has been killed and reaped).
    TimedOut,
    /// waitpid failed (not our child).
    Lost,
}

/// Waits up to `timeout` for `pid` to end; kills and reaps it at the deadline.
pub fn wait_for(pid: libc::pid_t, timeout: Duration) -> Exit {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status: c_int = 0;
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Exit::Code(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Exit::Signal(libc::WTERMSIG(status));
            }
            // Stopped (traced): keep waiting.
        } else if r < 0 && errno() != libc::EINTR {
            return Exit::Lost;
        }
        if Instant::now() >= deadline {
            kill_and_reap(pid);
            return Exit::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs `pid` and waits until it is gone.
pub fn kill_and_reap(pid: libc::pid_t) {
    if pid <= 0 {
        return;
    }
    // SAFETY: signalling our own child by pid; no memory involved.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    loop {
        let mut status: c_int = 0;
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return;
        }
    }
}

/// Symbolic name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "",
    };
    if name.is_empty() {
        format!("signal {sig}")
    } else {
        name.to_string()
    }
}

/// Describes a child's end for details.
pub fn describe_exit(e: Exit) -> String {
    match e {
        Exit::Code(c) => format!("exited with {c}"),
        Exit::Signal(libc::SIGSYS) => "killed by SIGSYS (seccomp kill action)".to_string(),
        Exit::Signal(s) => format!("killed by {}", signal_name(s)),
        Exit::TimedOut => "timed out (killed)".to_string(),
        Exit::Lost => "lost (waitpid failed)".to_string(),
    }
}

/// Creates a fresh private directory in the first writable temp location.
pub fn temp_dir(prefix: &str) -> Option<String> {
    for base in ["/tmp", "/dev/shm", "/var/tmp", "/run"] {
        let template = cstring(&format!("{base}/{prefix}-XXXXXX"));
        let mut bytes = template.into_bytes_with_nul();
        // SAFETY: bytes is a writable NUL-terminated template ending in XXXXXX, as
        // mkdtemp requires; it rewrites the Xs in place.
        let r = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if !r.is_null() {
            bytes.pop();
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// Candidate cgroup files for a limit of the current cgroup and its ancestors, v1 and v2.
/// Only existing files are returned, nearest cgroup first.
pub fn cgroup_files(v1_controller: &str, v1_file: &str, v2_file: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut push = |p: PathBuf| {
        if p.is_file() && !out.contains(&p) {
            out.push(p);
        }
    };
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let (bases, file): (Vec<String>, &str) = if controllers.is_empty() {
            (
                vec![
                    "/sys/fs/cgroup".to_string(),
                    "/sys/fs/cgroup/unified".to_string(),
                ],
                v2_file,
            )
        } else if controllers.split(',').any(|c| c == v1_controller) {
            (
                vec![
                    format!("/sys/fs/cgroup/{controllers}"),
                    format!("/sys/fs/cgroup/{v1_controller}"),
                ],
                v1_file,
            )
        } else {
            continue;
        };
        for base in &bases {
            let rel = path.trim_start_matches('/');
            let mut dir = Path::new(base).join(rel);
            loop {
                push(dir.join(file));
                if dir.as_path() == Path::new(base) || !dir.pop() {
                    break;
                }
            }
            push(Path::new(base).join(file));
        }
    }
    out
}

/// `(file, value)` of the first finite limit among `files`, judged by `finite`.
pub fn first_finite_limit(
    files: &[PathBuf],
    finite: impl Fn(&str) -> bool,
) -> Option<(String, String)> {
    files.iter().find_map(|f| {
        let v = std::fs::read_to_string(f).ok()?;
        let v = v.trim().to_string();
        finite(&v).then(|| (f.display().to_string(), v))
    })
}

/// Value of a `Key:   value` line of /proc/self/status.
pub fn status_field(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}
