//! The sandbox's pid 1: starts the workload, forwards signals to it, reaps orphans, and
//! exits with the workload's status (128+N when it died of signal N).
//!
//! It is moat's own code, already behind every wall (Landlock, no capabilities, the
//! seccomp filter) by the time it forks the workload, and not dumpable, so the workload
//! can neither ptrace it nor read its memory.

use std::convert::Infallible;
use std::ffi::CString;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::sys;

/// Signals forwarded from moat (and from the init's own parent) to the workload.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
];

/// Exit status for "command not found", as shells use it.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status for "found but cannot be executed".
pub const EXIT_CANNOT_EXECUTE: i32 = 126;

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(*signal);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Prepares signal handling; call before the last wall so nothing is missed.
pub fn prepare_signals() -> std::io::Result<()> {
    for signal in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        sys::install_noop_handler(*signal)?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .map_err(std::io::Error::from)
}

/// Forks the workload and supervises it; never returns.
pub fn run(argv: &[String]) -> Result<Infallible, std::io::Error> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    match sys::fork_single_threaded()? {
        ForkResult::Child => exec_workload(&args),
        ForkResult::Parent { child } => supervise(child),
    }
}

fn exec_workload(args: &[CString]) -> ! {
    for signal in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        let _ = sys::default_handler(*signal);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let err = match nix::unistd::execvp(&args[0], args) {
        Err(err) => err,
        Ok(never) => match never {},
    };
    let name = args[0].to_string_lossy();
    let (message, status) = match err {
        Errno::ENOENT => (
            format!("moat: {name}: command not found in the sandbox\n"),
            EXIT_NOT_FOUND,
        ),
        Errno::EACCES | Errno::EPERM => (
            format!("moat: {name}: permission denied in the sandbox\n"),
            EXIT_CANNOT_EXECUTE,
        ),
        other => (
            format!("moat: {name}: cannot execute: {}\n", other.desc()),
            EXIT_CANNOT_EXECUTE,
        ),
    };
    let _ = nix::unistd::write(std::io::stderr(), message.as_bytes());
    sys::exit_immediately(status)
}

fn supervise(workload: Pid) -> ! {
    let _ = sys::prctl_int(libc::PR_SET_DUMPABLE, 0);
    let _ = nix::sys::prctl::set_name(c"moat-init");
    let signals = handled_signals();
    loop {
        let Ok(signal) = signals.wait() else { continue };
        if signal != Signal::SIGCHLD {
            let _ = kill(workload, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == workload => sys::exit_immediately(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == workload => {
                    sys::exit_immediately(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
