//! moat's last steps inside the sandbox, run by libcontainer in place of its default
//! executor. By the time this runs, libcontainer has entered the namespaces, mounted and
//! pivoted into the root, applied the cgroup, set no_new_privs, switched to the sandbox
//! user and reduced the capabilities to the two moat still needs here.
//!
//! The order is the point of this file:
//! 1. loopback up, and for a networked sandbox its interface up with a default route via
//!    the host: the last use of CAP_NET_ADMIN;
//! 2. parent-death signal: set after the uid switch, which clears it;
//! 3. capabilities: securebits locked and every set emptied (the last use of CAP_SETPCAP);
//! 4. Landlock: needs the final mounts, and must come before seccomp, which denies the
//!    landlock syscalls;
//! 5. the working directory, as the sandbox user behind Landlock, so it is reachable
//!    exactly when the workload could reach it;
//! 6. signal set-up for the init;
//! 7. seccomp: last, so that nothing after it needs a denied syscall; installed before the
//!    fork so the init is filtered as well as the workload;
//! 8. fork: the child execs the workload, the parent becomes the sandbox's init.
//!
//! A failure writes `wall<TAB>message` to the set-up error pipe and exits; moat reports
//! it as a set-up failure (exit 125) naming the wall.

use std::os::fd::RawFd;
use std::sync::Arc;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use moat_policy::LandlockPlan;
use oci_spec::runtime::Spec;

use crate::seccomp::CompiledFilter;
use crate::{init, landlock, privileges, seccomp, sys};

/// The walls moat applies itself, carried into the sandbox's init.
#[derive(Clone)]
pub struct MoatExecutor {
    network: Option<moat_net::Inside>,
    cwd: String,
    landlock: LandlockPlan,
    seccomp: Arc<CompiledFilter>,
    lock_securebits: bool,
    die_with_parent: bool,
    error_fd: RawFd,
}

impl MoatExecutor {
    /// An executor reporting set-up failures on `error_fd` (a pipe's write end, close-on-exec).
    pub fn new(
        network: Option<moat_net::Inside>,
        cwd: String,
        landlock: LandlockPlan,
        seccomp: CompiledFilter,
        lock_securebits: bool,
        die_with_parent: bool,
        error_fd: RawFd,
    ) -> Self {
        Self {
            network,
            cwd,
            landlock,
            seccomp: Arc::new(seccomp),
            lock_securebits,
            die_with_parent,
            error_fd,
        }
    }

    fn fail(&self, wall: &str, message: String) -> ! {
        let report = format!("{wall}\t{message}");
        let _ = sys::write_raw(self.error_fd, report.as_bytes());
        sys::exit_immediately(1)
    }

    fn enter(&self, argv: &[String]) -> ! {
        if let Err(err) = sys::interface_up("lo") {
            self.fail("network", format!("cannot bring up loopback: {err}"));
        }
        if let Some(inside) = &self.network {
            let configured =
                sys::set_interface_address(inside.interface, inside.address, inside.prefix)
                    .and_then(|()| sys::interface_up(inside.interface))
                    .and_then(|()| sys::add_default_route(inside.gateway));
            if let Err(err) = configured {
                self.fail(
                    "network",
                    format!("cannot configure {}: {err}", inside.interface),
                );
            }
        }
        if self.die_with_parent {
            if let Err(err) = sys::prctl_int(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            {
                self.fail(
                    "supervision",
                    format!("cannot set the parent-death signal: {err}"),
                );
            }
        }
        if let Err(err) = privileges::drop_all(self.lock_securebits) {
            self.fail("capabilities", error_chain(&err));
        }
        if let Err(err) = landlock::restrict_self(&self.landlock) {
            self.fail("landlock", error_chain(&err));
        }
        if let Err(err) = nix::unistd::chdir(self.cwd.as_str()) {
            self.fail("workdir", format!("{}: {}", self.cwd, err.desc()));
        }
        if let Err(err) = init::prepare_signals() {
            self.fail("init", format!("cannot set up signal handling: {err}"));
        }
        if let Err(err) = seccomp::install(&self.seccomp) {
            self.fail("seccomp", error_chain(&err));
        }
        match init::run(argv) {
            Ok(never) => match never {},
            Err(err) => self.fail("init", format!("cannot start the workload: {err}")),
        }
    }
}

/// An error and its causes, `: `-separated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Executor for MoatExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let argv = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        self.enter(&argv)
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Whether the command exists is decided at exec time, inside every wall, and
        // reported as exit status 127.
        Ok(())
    }
}
