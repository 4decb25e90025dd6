//! moat-escape-probe: runs inside a sandbox and tries known container escape and weakness
//! techniques, printing one JSON object per check and a summary line:
//!
//! ```text
//! {"id":"kernel.io_uring","class":"kernel","name":"io_uring_setup","exposed":false,"detail":"io_uring_setup: EPERM"}
//! {"summary":true,"total":97,"exposed":0}
//! ```
//!
//! `exposed: true` means the sandbox let the technique through. The exit code is 0
//! whatever was found (2 only for bad usage); the caller judges the findings.
//!
//! Each check runs in its own forked process (own process group) with a wall-clock
//! bound, so a check that hangs, crashes or is killed by a seccomp kill action cannot
//! take the probe down; its state changes (namespaces, uid, personality) die with it.
//!
//! Usage: `moat-escape-probe [--only PREFIX]... [--list]`. `--only` selects checks whose
//! id starts with PREFIX or whose class equals PREFIX (repeatable). Resource probes
//! (fork bomb, memory, disk, inodes, CPU) run only with `MOAT_PROBE_ALLOW_RESOURCES=1`.

#![allow(unsafe_code)]

mod info;
mod kernel;
mod privilege;
mod reach;
mod report;
mod resources;
mod sys;

use std::io::Write;
use std::time::{Duration, Instant};

use libc::c_int;

use report::{Check, Finding, Outcome};

/// Environment variable that must be `1` for resource probes to run.
const ALLOW_RESOURCES: &str = "MOAT_PROBE_ALLOW_RESOURCES";

fn all_checks() -> Vec<Check> {
    let mut all = kernel::checks();
    all.extend(privilege::checks());
    all.extend(info::checks());
    all.extend(reach::checks());
    all.extend(resources::checks());
    all
}

const USAGE: &str = "usage: moat-escape-probe [--only ID_PREFIX_OR_CLASS]... [--list]\n\
    Runs sandbox escape/weakness checks and prints one JSON object per line.\n\
    Resource probes need MOAT_PROBE_ALLOW_RESOURCES=1.";

fn main() {
    // Checks report their own failures; keep panic messages off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let mut only: Vec<String> = Vec::new();
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => list = true,
            "--only" => match args.next() {
                Some(p) => only.push(p),
                None => usage_error("--only needs a value"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            s if s.starts_with("--only=") => only.push(s["--only=".len()..].to_string()),
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let selected: Vec<Check> = all_checks()
        .into_iter()
        .filter(|c| {
            only.is_empty()
                || only
                    .iter()
                    .any(|p| c.id.starts_with(p.as_str()) || c.class == p)
        })
        .collect();
    if list {
        for c in &selected {
            println!("{}", c.id);
        }
        return;
    }
    let allow_resources = std::env::var(ALLOW_RESOURCES).is_ok_and(|v| v == "1");
    let mut total = 0usize;
    let mut exposed = 0usize;
    for check in &selected {
        let finding = if check.class == "resources" && !allow_resources {
            Finding::new(
                check,
                Outcome::contained(format!("skipped: resource probes need {ALLOW_RESOURCES}=1")),
            )
        } else {
            run_isolated(check)
        };
        total += 1;
        exposed += usize::from(finding.exposed);
        emit(&serde_json::to_string(&finding).unwrap_or_default());
        reap_strays();
    }
    // Written by hand to keep the documented key order.
    emit(&format!(
        "{{\"summary\":true,\"total\":{total},\"exposed\":{exposed}}}"
    ));
}

fn usage_error(msg: &str) -> ! {
    eprintln!("moat-escape-probe: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the check in this (forked) process, turning a panic into a "probe error" outcome.
fn run_guarded(check: &Check) -> Finding {
    let outcome = std::panic::catch_unwind(check.run).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Outcome::contained(format!("probe error: panic: {msg}"))
    });
    Finding::new(check, outcome)
}

/// Runs the check in a forked child with its own process group and a deadline; the child
/// sends its finding back as one JSON line over a pipe.
fn run_isolated(check: &Check) -> Finding {
    let _ = std::io::stdout().flush();
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Finding::new(
            check,
            Outcome::contained(format!(
                "probe error: pipe2 failed ({}); check not run",
                sys::errno_name(sys::errno())
            )),
        );
    }
    let (rd, wr) = (fds[0], fds[1]);
    let pid = match fork_with_retry() {
        Ok(p) => p,
        Err(e) => {
            close(rd);
            close(wr);
            // Never run in-process: checks change namespaces, ids and personality.
            return Finding::new(
                check,
                Outcome::contained(format!(
                    "probe error: fork failed ({}); check not run",
                    sys::errno_name(e)
                )),
            );
        }
    };
    if pid == 0 {
        close(rd);
        // SAFETY: own process group, so stray descendants can be killed as a group.
        unsafe { libc::setpgid(0, 0) };
        let f = run_guarded(check);
        let mut line = serde_json::to_vec(&f).unwrap_or_default();
        line.push(b'\n');
        write_all(wr, &line);
        // SAFETY: leave without running atexit handlers or flushing inherited buffers.
        unsafe { libc::_exit(0) };
    }
    close(wr);
    // Also from the parent side, so the group exists before we might signal it.
    // SAFETY: integer arguments only; failure (child already did it) is harmless.
    unsafe { libc::setpgid(pid, pid) };
    let deadline = Instant::now() + check.timeout;
    let mut buf = Vec::new();
    let got_line = read_line_until(rd, &mut buf, deadline);
    close(rd);
    // Wait (without reaping) for the child to end, so its pid, and hence its process
    // group id, cannot be reused before the group is killed.
    let ended = wait_exit_nowait(pid, deadline.max(Instant::now() + Duration::from_secs(1)));
    // SAFETY: signals our own child's process group, then the child itself.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    let mut status: c_int = 0;
    // SAFETY: status is a valid out-pointer; pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if got_line {
        let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        if let Ok(f) = serde_json::from_slice::<Finding>(&buf[..end]) {
            return f;
        }
        return Finding::new(
            check,
            Outcome::contained("probe error: unreadable result from check process"),
        );
    }
    let outcome = if !ended {
        Outcome::contained(format!(
            "probe error: timed out after {}s (killed)",
            check.timeout.as_secs()
        ))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        if sig == libc::SIGSYS {
            Outcome::contained("blocked: check process killed by SIGSYS (seccomp kill action)")
        } else {
            Outcome::contained(format!(
                "probe error: check process killed by {}",
                sys::signal_name(sig)
            ))
        }
    } else {
        Outcome::contained(format!(
            "probe error: check process exited with {} without a result",
            libc::WEXITSTATUS(status)
        ))
    };
    Finding::new(check, outcome)
}

/// fork(), retried for up to ~1 s while processes (e.g. from a pids limit) drain.
fn fork_with_retry() -> Result<libc::pid_t, i32> {
    let mut last = 0;
    for _ in 0..20 {
        // SAFETY: the probe is single-threaded here; the child runs the check and leaves
        // through _exit without returning into main.
        let pid = unsafe { libc::fork() };
        if pid >= 0 {
            return Ok(pid);
        }
        last = sys::errno();
        reap_strays();
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last)
}

fn close(fd: c_int) {
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(fd) };
}

fn write_all(fd: c_int, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writes from `data`, which holds data.len() bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if sys::errno() == libc::EINTR {
                continue;
            }
            return;
        }
        data = &data[usize::try_from(n).unwrap_or(data.len()).min(data.len())..];
    }
}

/// Reads from `fd` until a newline, EOF or `deadline`; true if a full line arrived.
fn read_line_until(fd: c_int, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    loop {
        if buf.contains(&b'\n') {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let ms = (deadline - now).as_millis().min(1000) as c_int;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r <= 0 {
            continue;
        }
        let mut chunk = [0u8; 8192];
        // SAFETY: reads at most chunk.len() bytes into chunk.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n == 0 {
            return buf.contains(&b'\n');
        }
        if n < 0 {
            if matches!(sys::errno(), libc::EINTR | libc::EAGAIN) {
                continue;
            }
            return false;
        }
        buf.extend_from_slice(&chunk[..usize::try_from(n).unwrap_or(0)]);
    }
}

/// Waits until `pid` has exited (without reaping it) or `deadline`; true if it exited.
fn wait_exit_nowait(pid: libc::pid_t, deadline: Instant) -> bool {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer; WNOWAIT leaves the child reapable.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid to read for SIGCHLD-style siginfo filled by waitid.
        if r == 0 && unsafe { info.si_pid() } == pid {
            return true;
        }
        if r != 0 && sys::errno() != libc::EINTR {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reaps orphans re-parented to us (the probe may be pid 1 of the sandbox).
fn reap_strays() {
    loop {
        let mut status: c_int = 0;
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if r <= 0 {
            return;
        }
    }
}
