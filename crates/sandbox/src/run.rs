//! Running one sandbox in the foreground: the start-up checklist, the wait, the clean-up.
//!
//! Called from the single-threaded `moat` CLI (libcontainer forks the calling process).
//! Every resource made here is recorded before it is made and removed on every exit path;
//! what a SIGKILL of moat leaves behind, `moat gc` removes.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use moat_policy::Plan;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use thiserror::Error;

use crate::cgroup::{CgroupError, CgroupFacts};
use crate::executor::{error_chain, MoatExecutor};
use crate::idmap::{IdAllocator, IdError, IdLease, LeaseOwner};
use crate::init::FORWARDED;
use crate::landlock::LandlockError;
use crate::paths::{StateLock, StatePaths};
use crate::record::SandboxRecord;
use crate::rootfs::{self, RootfsError};
use crate::seccomp::{self, SeccompError};
use crate::{gc, landlock, spec};

/// The sandbox could not be set up. Each variant names the wall or step that failed.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// moat needs root (rootless mode is not supported yet).
    #[error("moat must run as root to create sandboxes (rootless mode is not supported yet)")]
    NotRoot,
    /// The network wall could not be set up.
    #[error("network")]
    Network(#[from] moat_net::NetError),
    /// Alerts were asked for and cannot be produced.
    #[error("alerts")]
    Alerts(#[source] std::io::Error),
    /// Network policy rules cannot be enforced (their cgroup-BPF programs).
    #[error("network policy")]
    SocketRules(#[from] moat_bpf::BpfError),
    /// Network policy rules have no cgroup v2 to attach to.
    #[error("network policy: {0}")]
    SocketCgroup(String),
    /// An input path is unusable.
    #[error("filesystem")]
    Rootfs(#[from] RootfsError),
    /// Landlock cannot be enforced as the profile requires.
    #[error("landlock")]
    Landlock(#[from] LandlockError),
    /// The seccomp filter cannot be built.
    #[error("seccomp")]
    Seccomp(#[from] SeccompError),
    /// cgroups cannot enforce the limits.
    #[error("cgroups")]
    Cgroup(#[from] CgroupError),
    /// No id range.
    #[error("user namespace")]
    Ids(#[from] IdError),
    /// A sandbox with this id exists.
    #[error("a sandbox with id {0} already exists")]
    Exists(String),
    /// moat's own state could not be written.
    #[error("cannot write sandbox state in {path}")]
    State {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// libcontainer failed to create or start the container (namespaces, mounts, cgroups).
    #[error("container set-up (namespaces, mounts, cgroup limits): {0}")]
    Container(String),
    /// A wall applied inside the sandbox failed; nothing of the workload ran.
    #[error("{wall}: {message}")]
    Wall {
        /// The wall.
        wall: String,
        /// What happened.
        message: String,
    },
    /// Creating the set-up pipe, blocking signals or waiting for the sandbox failed.
    #[error("supervising the sandbox")]
    Supervise(#[source] nix::Error),
}

impl SandboxError {
    /// The error with all its causes on one line.
    pub fn describe(&self) -> String {
        error_chain(self)
    }
}

/// How a sandbox ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The status moat should exit with: the workload's, or 128+N for signal N.
    pub status: i32,
    /// Processes the kernel killed for lack of memory in the sandbox.
    pub oom_kills: u64,
    /// Problems while cleaning up (the run itself is over).
    pub cleanup_warnings: Vec<String>,
    /// What the alert reader did, when alerts were asked for.
    pub alerts: Option<moat_events::ReaderReport>,
    /// What the socket programs' alert reader did, when alerts were asked for and network
    /// policy rules apply.
    pub socket_alerts: Option<moat_bpf::alerts::AlertsReport>,
    /// What the Audit-rule watcher did, when alerts were asked for and file or process
    /// Audit rules apply.
    pub audit_alerts: Option<moat_events::fanotify::AuditReport>,
}

/// Options of a foreground run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where state lives.
    pub paths: StatePaths,
    /// Print the sandbox's address on stderr once it has one.
    pub announce_address: bool,
    /// Append alerts (JSON lines) to this file.
    pub alerts: Option<std::path::PathBuf>,
    /// The rate limit of those alerts; `None` writes every one.
    pub alert_limit: Option<moat_events::AlertLimit>,
    /// Write a `running` [`crate::status::RunStatus`] here once the workload has started.
    pub status_file: Option<std::path::PathBuf>,
}

/// Blocks the signals moat forwards to a sandbox (and SIGCHLD), and leaves them blocked
/// for the rest of the process: one that arrives while the sandbox is set up waits and is
/// forwarded once it runs; one that arrives during the clean-up cannot cut it short.
/// Returns the set, for the supervision loop to wait on.
pub fn block_supervised_signals() -> nix::Result<SigSet> {
    let mut supervised = SigSet::empty();
    for signal in FORWARDED {
        supervised.add(*signal);
    }
    supervised.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&supervised), None)?;
    Ok(supervised)
}

/// Work the sandbox does not wait for (see [`run_with`]).
pub type AfterStart = Box<dyn FnOnce() + Send>;

/// Runs `plan` in the foreground and cleans up, whatever happens.
///
/// Moves the calling process into a private mount namespace first (see
/// [`rootfs::isolate_mounts`]); call it from a process that runs one sandbox.
pub fn run(plan: &Plan, options: &RunOptions) -> Result<RunReport, SandboxError> {
    run_with(plan, options, None)
}

/// [`run`], doing `after_start` on a thread of its own once the sandbox's init exists
/// (no thread may run while libcontainer forks it), so that work the sandbox does not
/// need delays neither its start nor its end: the thread is not waited for, and is cut
/// short if the process exits first, so the work must be safe to abandon.
pub fn run_with(
    plan: &Plan,
    options: &RunOptions,
    after_start: Option<AfterStart>,
) -> Result<RunReport, SandboxError> {
    // Checks first: nothing is created for a request that cannot succeed.
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::NotRoot);
    }
    block_supervised_signals().map_err(SandboxError::Supervise)?;
    rootfs::preflight(plan)?;
    landlock::check_abi(&plan.landlock)?;
    rootfs::isolate_mounts()?;
    let cgroups = CgroupFacts::probe()?;
    let mut filter = seccomp::compile(&plan.seccomp)?;
    filter.log = options.alerts.is_some();
    // Loaded before anything exists, so a kernel that refuses them changes nothing.
    let socket_rules = if plan.policy.network.is_empty() {
        None
    } else {
        let tables = moat_policy::sockrules::compile(&plan.policy.network);
        let programs = moat_bpf::SocketFilter::load(&tables, options.alerts.is_some())?;
        Some((tables, programs))
    };

    let mut sandbox = Sandbox::create(plan, &options.paths)?;
    let result = sandbox.start_and_wait(plan, &cgroups, filter, socket_rules, options, after_start);
    let oom_kills = cgroups.oom_kills(&plan.id);
    // On every path, so that the alerts written so far reach the file. The workload
    // is gone unless set-up failed, in which case it never ran.
    let alerts = sandbox.reader.take().map(moat_events::ReaderHandle::finish);
    let socket_alerts = sandbox
        .socket_reader
        .take()
        .map(moat_bpf::alerts::AlertsHandle::finish);
    let audit_alerts = sandbox
        .audit_watcher
        .take()
        .map(moat_events::fanotify::AuditHandle::finish);
    let mut cleanup_warnings = Vec::new();
    if let Some(mut writer) = sandbox.alert_writer.take() {
        if let Err(err) = writer.flush() {
            cleanup_warnings.push(format!("cannot write alerts: {err}"));
        }
    }
    if let (Some(path), true) = (&options.alerts, oom_kills > 0) {
        // Written once the readers are done with the file, so no line interleaves.
        if let Err(err) = write_oom_alert(path, plan, &sandbox.lease, oom_kills) {
            cleanup_warnings.push(format!("cannot write the out-of-memory alert: {err}"));
        }
    }
    cleanup_warnings.extend(sandbox.destroy());
    let status = result?;
    Ok(RunReport {
        status,
        oom_kills,
        cleanup_warnings,
        alerts,
        socket_alerts,
        audit_alerts,
    })
}

/// An identity's range; else, with a home, the home's own range (so the files in it
/// keep their owner across runs); else a range for this sandbox alone.
fn lease_owner(plan: &Plan) -> LeaseOwner<'_> {
    match (&plan.identity, &plan.filesystem.home) {
        (Some(name), _) => LeaseOwner::Identity(name),
        (None, moat_policy::HomePlan::Bind { host_path }) => LeaseOwner::Home(host_path),
        (None, moat_policy::HomePlan::Ephemeral { .. }) => LeaseOwner::Sandbox(&plan.id),
    }
}

/// The alert for processes the kernel killed for lack of memory in the sandbox.
fn write_oom_alert(
    path: &std::path::Path,
    plan: &Plan,
    lease: &IdLease,
    kills: u64,
) -> std::io::Result<()> {
    let context = alert_context(plan, lease);
    let limit = plan.resources.memory_bytes >> 20;
    let alert = moat_events::Alert {
        policy_name: "DefaultPosture".into(),
        severity: "5".into(),
        message: format!(
            "the kernel killed {kills} process(es) of the sandbox for lack of memory (limit {limit} MiB){}",
            if plan.resources.end_on_oom {
                "; the sandbox was ended"
            } else {
                ""
            }
        ),
        kind: "MatchedPolicy".into(),
        operation: "Process".into(),
        resource: format!("memory.limit={limit}MiB"),
        data: format!("oom_kills={kills}"),
        enforcer: "cgroup".into(),
        action: "Block".into(),
        result: "Killed".into(),
        ..moat_events::Alert::about(&context)
    };
    let mut writer = moat_events::AlertWriter::open(path)?;
    writer.write(&alert)?;
    writer.flush()
}

/// The file and process Audit rules of the plan, as fanotify watches.
fn audit_watches(plan: &Plan) -> Vec<moat_events::fanotify::AuditWatch> {
    let watch = |rule: &moat_policy::enforce::PathRule, exec| moat_events::fanotify::AuditWatch {
        path: rule.path.clone(),
        directory: rule.directory,
        recursive: rule.recursive,
        exec,
        rule: moat_events::RuleMatch {
            policy: rule.policy.clone(),
            severity: rule.severity,
            tags: rule.tags.clone(),
            message: rule.message.clone(),
        },
    };
    plan.policy
        .file_audit
        .iter()
        .map(|r| watch(r, false))
        .chain(plan.policy.process_audit.iter().map(|r| watch(r, true)))
        .collect()
}

/// What alerts need to know about the sandbox: ids, labels, and the policy rules by path
/// (as written, and resolved on the host for system paths, which the sandbox shares).
fn alert_context(plan: &Plan, lease: &IdLease) -> moat_events::AlertContext {
    let mut rules = Vec::new();
    for rule in plan
        .policy
        .file
        .block
        .iter()
        .chain(&plan.policy.process.block)
    {
        let matched = moat_events::RuleMatch {
            policy: rule.policy.clone(),
            severity: rule.severity,
            tags: rule.tags.clone(),
            message: rule.message.clone(),
        };
        rules.push((rule.path.clone(), rule.directory, matched.clone()));
        if let Ok(resolved) = fs::canonicalize(rule.path.trim_end_matches('/')) {
            let mut resolved = resolved.to_string_lossy().into_owned();
            if rule.directory {
                resolved.push('/');
            }
            if resolved != rule.path {
                rules.push((resolved, rule.directory, matched));
            }
        }
    }
    moat_events::AlertContext {
        id: plan.id.clone(),
        host_name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: plan.hostname.clone(),
        labels: plan.labels.clone(),
        host_id_base: lease.host_base,
        host_id_count: moat_policy::ID_RANGE_SIZE,
        ids_shared: lease.persistent,
        seccomp_allowed: plan.seccomp.allow.clone(),
        seccomp_shims: plan
            .seccomp
            .errno
            .iter()
            .filter(|rule| rule.errno == moat_policy::Errno::ENOSYS && rule.when.is_empty())
            .flat_map(|rule| rule.syscalls.iter().cloned())
            .collect(),
        seccomp_result: std::io::Error::from_raw_os_error(plan.seccomp.default_errno.raw())
            .to_string()
            .split(" (os error")
            .next()
            .unwrap_or_default()
            .to_string(),
        rules,
    }
}

/// A sandbox's host-side resources, removed by [`Sandbox::destroy`].
struct Sandbox {
    paths: StatePaths,
    id: String,
    lease: IdLease,
    address: Option<(moat_net::Pool, moat_net::AddressLease)>,
    container: Option<Container>,
    reader: Option<moat_events::ReaderHandle>,
    socket_reader: Option<moat_bpf::alerts::AlertsHandle>,
    audit_watcher: Option<moat_events::fanotify::AuditHandle>,
    /// The readers' shared writer, flushed once they are all done: each reader's last
    /// flush writes what the rate limit held back so far, but one that panicked does not.
    alert_writer: Option<moat_events::AlertWriter>,
}

impl Sandbox {
    fn create(plan: &Plan, paths: &StatePaths) -> Result<Self, SandboxError> {
        let state_err = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::State { path, source }
        };
        let sandboxes = paths.sandboxes_dir();
        for dir in [
            paths.run_dir().to_path_buf(),
            sandboxes.clone(),
            paths.containers_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(state_err(&dir))?;
            // Searchable (not readable) by others: each sandbox's unprivileged root must
            // reach its own root directory and generated files through these.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                .map_err(state_err(&dir))?;
        }
        let _birth = StateLock::acquire(paths).map_err(state_err(paths.run_dir()))?;
        let dir = paths.sandbox_dir(&plan.id);
        // Searchable, not readable: the sandbox's root reaches its rootfs through it.
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SandboxError::Exists(plan.id.clone()))
            }
            other => other.map_err(state_err(&dir))?,
        }
        let mut record = SandboxRecord::for_current_process(&plan.id);
        let leased = record.save(&dir).map_err(state_err(&dir)).and_then(|()| {
            IdAllocator::new(paths.ids_dir())
                .acquire(lease_owner(plan))
                .map_err(SandboxError::from)
        });
        let lease = match leased {
            Ok(lease) => lease,
            Err(err) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        record.id_slot = Some(lease.slot);
        record.id_slot_persistent = lease.persistent;
        let sandbox = Sandbox {
            paths: paths.clone(),
            id: plan.id.clone(),
            lease,
            address: None,
            container: None,
            reader: None,
            socket_reader: None,
            audit_watcher: None,
            alert_writer: None,
        };
        // Best effort: gc also finds a dead sandbox's lease by scanning the slots.
        let _ = record.save(&dir);
        Ok(sandbox)
    }

    fn start_and_wait(
        &mut self,
        plan: &Plan,
        cgroups: &CgroupFacts,
        filter: seccomp::CompiledFilter,
        socket_rules: Option<(moat_policy::sockrules::SocketTables, moat_bpf::SocketFilter)>,
        options: &RunOptions,
        after_start: Option<AfterStart>,
    ) -> Result<i32, SandboxError> {
        let dir = self.paths.sandbox_dir(&self.id);
        let inside = self.connect(plan, options.announce_address)?;
        let lease = &self.lease;
        rootfs::prepare_home(plan, lease)?;
        let address = inside.as_ref().map(|i| i.address);
        let root = rootfs::prepare_root(plan, &dir, address)?;
        let config = spec::oci_config(plan, &root, lease, cgroups, inside.is_some());
        let bundle = dir.join("bundle");
        spec::write_bundle(&bundle, &config).map_err(|source| SandboxError::State {
            path: bundle.clone(),
            source,
        })?;

        let (error_read, error_write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SandboxError::Supervise)?;
        let executor = MoatExecutor::new(
            inside.clone(),
            plan.process.cwd.clone(),
            plan.landlock.clone(),
            filter,
            plan.privileges.lock_securebits,
            true,
            error_write.as_raw_fd(),
        );
        // Block the signals we forward before the init exists, so none is lost between
        // its creation and the wait loop (the init sets its own mask).
        let forwarded = block_supervised_signals().map_err(SandboxError::Supervise)?;

        let container_err =
            |e: libcontainer::error::LibcontainerError| SandboxError::Container(error_chain(&e));
        let mut container = ContainerBuilder::new(self.id.clone(), SyscallType::default())
            .with_executor(executor)
            .with_root_path(self.paths.containers_dir())
            .map_err(container_err)?
            .validate_id()
            .map_err(container_err)?
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(false)
            .build()
            .map_err(container_err)?;
        drop(error_write);
        if let Some(work) = after_start {
            // Not done if no thread can be made: the work is an optimisation.
            let _ = std::thread::Builder::new()
                .name("moat-after-start".into())
                .spawn(work);
        }
        let init = container
            .pid()
            .ok_or_else(|| SandboxError::Container("the sandbox init has no pid".into()))?;
        self.container = Some(container.clone());
        if let (Some(inside), Some((_, address))) = (&inside, &self.address) {
            // The sandbox's namespaces exist by now; the workload is not running yet.
            let init = u32::try_from(init.as_raw()).map_err(|_| {
                SandboxError::Container("the sandbox init has an invalid pid".into())
            })?;
            moat_net::attach(&plan.network, address, init, inside)?;
        }
        // The readers are threads: start them only now that libcontainer has forked.
        let writer = match &options.alerts {
            Some(path) => Some(
                moat_events::AlertWriter::open_limited(path, options.alert_limit)
                    .map_err(SandboxError::Alerts)?,
            ),
            None => None,
        };
        self.alert_writer.clone_from(&writer);
        // What alerts say of the sandbox, worked out once for every reader.
        let alerting = writer.map(|writer| (writer, alert_context(plan, &self.lease)));
        if let Some((tables, programs)) = socket_rules {
            // Attached before the workload starts: its first socket is already covered.
            let cgroup = crate::cgroup::socket_cgroup(cgroups, &self.id, init.as_raw())
                .map_err(SandboxError::SocketCgroup)?;
            programs.attach(&cgroup, u32::try_from(init.as_raw()).ok())?;
            if let Some((writer, context)) = &alerting {
                self.socket_reader = Some(
                    moat_bpf::alerts::spawn(programs, &tables, context.clone(), writer.clone())
                        .map_err(SandboxError::Alerts)?,
                );
            }
        }
        let watches = audit_watches(plan);
        if let (Some((writer, context)), false) = (&alerting, watches.is_empty()) {
            // Marked through the init's root before the workload exists.
            self.audit_watcher = Some(
                moat_events::fanotify::spawn_audit(
                    context.clone(),
                    writer.clone(),
                    init.as_raw(),
                    watches,
                )
                .map_err(SandboxError::Alerts)?,
            );
        }
        if let Some((writer, context)) = alerting {
            self.reader = Some(
                moat_events::spawn_reader(context, writer, init.as_raw())
                    .map_err(SandboxError::Alerts)?,
            );
        }
        container.start().map_err(container_err)?;
        if let Some(path) = &options.status_file {
            let status = crate::status::RunStatus {
                state: crate::status::RunState::Running,
                id: self.id.clone(),
                pid: std::process::id(),
                init_pid: Some(init.as_raw()),
                address: inside.as_ref().map(|i| i.address),
                host_address: inside.as_ref().map(|i| i.gateway),
                exit_code: None,
                oom_kills: 0,
                error: None,
            };
            status.write(path).map_err(|source| SandboxError::State {
                path: path.clone(),
                source,
            })?;
        }

        let oom_watch = if plan.resources.end_on_oom {
            let watch = crate::oom::OomWatch::start(*cgroups, self.id.clone(), init.as_raw())
                .map_err(|err| {
                    SandboxError::Container(format!(
                        "cannot watch for out-of-memory kills (pidfd, Linux 5.3+): {err}"
                    ))
                })?;
            Some(watch)
        } else {
            None
        };
        let status = loop {
            let signal = forwarded.wait().map_err(SandboxError::Supervise)?;
            if signal != Signal::SIGCHLD {
                let _ = kill(init, signal);
            }
            match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break code,
                Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
                Ok(_) => continue,
                Err(nix::errno::Errno::ECHILD) => break 128 + Signal::SIGKILL as i32,
                Err(err) => return Err(SandboxError::Supervise(err)),
            }
        };
        if let Some(watch) = oom_watch {
            // The init has exited, so the thread ends too.
            watch.finish();
        }
        let mut report = String::new();
        let _ = fs::File::from(error_read).read_to_string(&mut report);
        if let Some((wall, message)) = report.split_once('\t') {
            return Err(SandboxError::Wall {
                wall: wall.to_string(),
                message: message.to_string(),
            });
        }
        Ok(status)
    }

    /// Leases an address and builds the host side of the sandbox's network, recording
    /// the address first so that `moat gc` finds whatever a crash leaves.
    fn connect(
        &mut self,
        plan: &Plan,
        announce: bool,
    ) -> Result<Option<moat_net::Inside>, SandboxError> {
        if plan.network.mode == moat_policy::NetMode::None {
            return Ok(None);
        }
        let pool = moat_net::Pool::new(plan.network.pool, self.paths.lib_dir().join("net"));
        let lease = pool.acquire(&self.id)?;
        self.address = Some((pool, lease));
        let dir = self.paths.sandbox_dir(&self.id);
        if let Some(mut record) = SandboxRecord::load(&dir) {
            record.address = Some(lease.sandbox);
            record.save(&dir).map_err(|source| SandboxError::State {
                path: dir.clone(),
                source,
            })?;
        }
        if plan.network.mode == moat_policy::NetMode::Egress {
            // Egress is routed through the host.
            fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(|source| {
                SandboxError::State {
                    path: "/proc/sys/net/ipv4/ip_forward".into(),
                    source,
                }
            })?;
        }
        let inside = moat_net::prepare(&plan.network, &lease);
        if announce {
            eprintln!(
                "moat: sandbox {} has address {} (the host is {})",
                self.id, lease.sandbox, lease.host
            );
        }
        Ok(Some(inside))
    }

    /// Removes everything of the sandbox; returns what could not be removed. The
    /// network's rules go on a thread beside the rest, since the kernel makes their
    /// removal wait for an RCU grace period; the address returns to the pool last.
    fn destroy(&mut self) -> Vec<String> {
        let network = self.address.take();
        let mut warnings = Vec::new();
        // The workload goes first: its host rules must outlive it.
        if let Some(mut container) = self.container.take() {
            if let Err(err) = container.delete(true) {
                warnings.push(format!("container state: {}", error_chain(&err)));
            }
        }
        let mut warnings = std::thread::scope(|scope| {
            let network_teardown = network
                .as_ref()
                .map(|(_, lease)| scope.spawn(|| moat_net::teardown(lease.sandbox)));
            warnings.extend(gc::remove_sandbox(
                &self.paths,
                &self.id,
                Some(self.lease.clone()),
            ));
            if let Some(handle) = network_teardown {
                match handle.join() {
                    Ok(network_warnings) => warnings.extend(network_warnings),
                    Err(_) => warnings.push("network teardown panicked".into()),
                }
            }
            warnings
        });
        if let Some((pool, lease)) = network {
            if let Err(err) = pool.release(lease.slot) {
                warnings.push(error_chain(&err));
            }
        }
        warnings
    }
}
