//! `moat run`: compile the request into a plan, then run it (or print it with --dry-run).

use std::path::PathBuf;

use clap::Args;
use moat_policy::{compile, Profile, RunRequest};
use moat_sandbox::paths::StatePaths;
use moat_sandbox::{rootfs, RunOptions, SandboxError};

use crate::exit::setup_failed;
use crate::policy_cache::{Pending, PolicyCache};

/// Options of `moat run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: the command's own; 125 when moat could not set the sandbox up; \
126 when the command cannot be executed; 127 when it does not exist in the sandbox; \
128+N when it died of signal N."
)]
pub struct RunArgs {
    /// Profile name (built in: untrusted) or path of a profile file.
    #[arg(long, default_value = "untrusted", value_name = "NAME|FILE")]
    profile: String,
    /// An unpacked image (OCI image root or debootstrap tree) to use as the root, read-only.
    /// Without it, the host's /usr, /bin, /lib* and an allowlist of /etc are shown read-only.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Host directory bound read-write as the sandbox user's home ($HOME inside);
    /// created if missing and given to the sandbox user's host uid.
    /// Without it, the home is an empty size-capped tmpfs.
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// A named tenant: keeps the same host id range across runs, so its home keeps its owner.
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// Working directory inside the sandbox (default: the home).
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Set an environment variable inside (repeatable). Nothing of moat's own
    /// environment is passed except TERM.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables for inside from FILE: KEY=VALUE lines, `#` comments
    /// and blank lines skipped. Unlike --env, the values do not appear in moat's command
    /// line (which every local user can read), so pass secrets this way.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Memory limit, swap included (e.g. 512M, 2G).
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// CPU time limit in CPUs (e.g. 0.5, 2).
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<String>,
    /// Size cap of the private /tmp.
    #[arg(long, value_name = "SIZE")]
    tmp_size: Option<String>,
    /// What an out-of-memory kill does: `sandbox` ends the whole sandbox (the profile's
    /// default), `process` kills only the process the kernel picked.
    #[arg(long, value_name = "sandbox|process")]
    on_oom: Option<String>,
    /// Network: none (loopback only), isolated (a veth to the host; only --allow-host
    /// endpoints reachable) or egress (isolated plus the --egress allowlist).
    #[arg(long = "net", value_name = "MODE")]
    net: Option<String>,
    /// A host endpoint the sandbox may reach over TCP (repeatable), e.g. the JupyterHub
    /// API at 10.77.0.1:8081.
    #[arg(long, value_name = "IP:PORT")]
    allow_host: Vec<String>,
    /// Outbound traffic to allow in egress mode (repeatable); replaces the profile's list.
    /// Cloud metadata, link-local, loopback, private and CGNAT ranges stay closed.
    #[arg(long, value_name = "CIDR[:PORT[-PORT]][/tcp|udp]")]
    egress: Vec<String>,
    /// A TCP port of the sandbox the host may connect to (repeatable).
    #[arg(long, value_name = "PORT")]
    publish: Vec<String>,
    /// Bandwidth limit in each direction, e.g. 10mbit.
    #[arg(long, value_name = "RATE")]
    bandwidth: Option<String>,
    /// DNS resolver for egress mode (repeatable); replaces the profile's.
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// A KubeArmor-format policy file to enforce (repeatable); policies whose selector
    /// matches the run's labels apply. Check them with `moat policy check`.
    #[arg(long = "policy", value_name = "FILE")]
    policies: Vec<PathBuf>,
    /// Append alerts (one JSON object per line, KubeArmor's field names) to FILE: file and
    /// exec accesses Landlock denies, syscalls the filter refuses, network rules' Block,
    /// Audit and default-posture decisions, file and process Audit rules' matches, and
    /// out-of-memory kills (docs/policy.md). Turns kernel auditing on if it is off.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// Alerts a second each family of alerts (one policy's file Blocks, the default
    /// posture's network Audits, ...) may write once its burst is spent; what is held
    /// back is counted in an `AlertThreshold` event, and the first alert of each resource
    /// is always written (docs/policy.md). 0 writes every alert.
    #[arg(long, value_name = "N", default_value_t = moat_events::AlertLimit::DEFAULT.per_second)]
    alert_rate: u32,
    /// Alerts each family may write at once before `--alert-rate` applies.
    #[arg(long, value_name = "N", default_value_t = moat_events::AlertLimit::DEFAULT.burst)]
    alert_burst: u32,
    /// A label of the sandbox, for policy selectors (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Sandbox id (1 to 64 of a-z, 0-9); random when not given.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Keep FILE up to date with the run's state as JSON (for supervisors such as
    /// `moat daemon`): `running` with the sandbox's address once the workload has
    /// started, then `exited` with its status, or `failed` with moat's error.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,
    /// Print the compiled plan as JSON and start nothing.
    #[arg(long)]
    dry_run: bool,
    /// The command to run and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Parses an --env-file: KEY=VALUE lines; blank lines and `#` comments are skipped. The
/// error names the line, never its value (it may be a secret).
fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--env-file {}: cannot read: {err}", path.display()))?;
    let mut env = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                env.push((key.trim().to_string(), value.to_string()));
            }
            _ => {
                return Err(format!(
                    "--env-file {} line {}: expected KEY=VALUE",
                    path.display(),
                    number + 1
                ))
            }
        }
    }
    Ok(env)
}

impl RunArgs {
    /// The request, with the `--policy` files read (through `cache`), and their parses
    /// the cache does not have yet.
    fn request(&self, cache: &PolicyCache) -> Result<(RunRequest, Vec<Pending>), String> {
        let mut env = match &self.env_file {
            Some(path) => read_env_file(path)?,
            None => Vec::new(),
        };
        for entry in &self.env {
            let pair = entry
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--env {entry:?}: expected KEY=VALUE"))?;
            env.push(pair);
        }
        let labels = self
            .labels
            .iter()
            .map(|entry| {
                entry
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("--label {entry:?}: expected KEY=VALUE"))
            })
            .collect::<Result<_, _>>()?;
        let loaded = cache
            .load_files(&self.policies)
            .map_err(|(file, err)| format!("--policy {}: cannot read: {err}", file.display()))?;
        let request = RunRequest {
            labels,
            policies: loaded.policies,
            policy_findings: loaded.diagnostics,
            id: String::new(),
            argv: self.command.clone(),
            rootfs: self.rootfs.clone(),
            home: self.home.clone(),
            identity: self.identity.clone(),
            workdir: self.workdir.clone(),
            env,
            term: std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty() && !t.contains('\0')),
            memory: self.memory.clone(),
            cpus: self.cpus.clone(),
            pids: self.pids.clone(),
            tmp_size: self.tmp_size.clone(),
            on_oom: self.on_oom.clone(),
            network: moat_policy::NetworkRequest {
                mode: self.net.clone(),
                allow_host: self.allow_host.clone(),
                egress: self.egress.clone(),
                publish: self.publish.clone(),
                bandwidth: self.bandwidth.clone(),
                dns: self.dns.clone(),
            },
        };
        Ok((request, loaded.pending))
    }
}

/// How a run ended, for the exit status and the status file.
struct Outcome {
    status: i32,
    error: Option<String>,
    oom_kills: u64,
}

impl Outcome {
    /// A set-up failure: printed, and kept for the status file.
    fn failed(what: &str, message: &str) -> Outcome {
        let status = setup_failed(what, message);
        let error = if what.is_empty() {
            message.to_string()
        } else {
            format!("{what}: {message}")
        };
        Outcome {
            status,
            error: Some(error),
            oom_kills: 0,
        }
    }

    fn exited(status: i32, oom_kills: u64) -> Outcome {
        Outcome {
            status,
            error: None,
            oom_kills,
        }
    }
}

/// Runs `moat run`; returns moat's exit status.
pub fn run(args: RunArgs) -> i32 {
    let id = args
        .id
        .clone()
        .unwrap_or_else(moat_sandbox::process::new_sandbox_id);
    // From here on, SIGTERM and the other forwarded signals wait for the sandbox (or for
    // the end) instead of killing moat half-way through a set-up or clean-up.
    if let Err(err) = moat_sandbox::run::block_supervised_signals() {
        return setup_failed("", &format!("cannot block signals: {err}"));
    }
    if let (Some(path), false) = (&args.status_file, args.dry_run) {
        let starting = moat_sandbox::status::RunStatus {
            state: moat_sandbox::status::RunState::Starting,
            id: id.clone(),
            pid: std::process::id(),
            init_pid: None,
            address: None,
            host_address: None,
            exit_code: None,
            oom_kills: 0,
            error: None,
        };
        if let Err(err) = starting.write(path) {
            return setup_failed(
                "",
                &format!("cannot write the status file {}: {err}", path.display()),
            );
        }
    }
    let outcome = run_sandbox(&args, &id);
    if let (Some(path), false) = (&args.status_file, args.dry_run) {
        let previous = moat_sandbox::status::RunStatus::read(path);
        let status = moat_sandbox::status::RunStatus {
            state: if outcome.error.is_some() {
                moat_sandbox::status::RunState::Failed
            } else {
                moat_sandbox::status::RunState::Exited
            },
            id,
            pid: std::process::id(),
            init_pid: None,
            address: previous.as_ref().and_then(|p| p.address),
            host_address: previous.as_ref().and_then(|p| p.host_address),
            exit_code: Some(outcome.status),
            oom_kills: outcome.oom_kills,
            error: outcome.error.clone(),
        };
        if let Err(err) = status.write(path) {
            eprintln!(
                "moat: warning: cannot write the status file {}: {err}",
                path.display()
            );
        }
    }
    outcome.status
}

/// How long a sandbox runs before the policy parses it started with are cached.
const CACHE_STORE_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

fn run_sandbox(args: &RunArgs, id: &str) -> Outcome {
    let alert_limit = match moat_events::AlertLimit::from_flags(args.alert_rate, args.alert_burst) {
        Ok(limit) => limit,
        Err(message) => return Outcome::failed("", message.as_str()),
    };
    let cache = PolicyCache::under(StatePaths::default().run_dir());
    let (mut request, mut uncached) = match args.request(&cache) {
        Ok(request) => request,
        Err(message) => return Outcome::failed("", &message),
    };
    request.id = id.to_string();
    let (profile, source) = match Profile::load(&args.profile) {
        Ok(loaded) => loaded,
        Err(err) => return Outcome::failed("profile", &chain(&err)),
    };
    match cache.load_files(&profile.policy_files(&source)) {
        Ok(loaded) => {
            let (before, findings_before) = (request.policies.len(), request.policy_findings.len());
            request.policies.extend(loaded.policies);
            request.policy_findings.extend(loaded.diagnostics);
            uncached.extend(
                loaded
                    .pending
                    .into_iter()
                    .map(|p| p.shifted(before, findings_before)),
            );
        }
        Err((file, err)) => {
            return Outcome::failed(
                "profile",
                &format!("policy file {}: cannot read: {err}", file.display()),
            )
        }
    }
    let plan = match compile(&profile, &source, &request, &moat_sandbox::host_facts()) {
        Ok(plan) => plan,
        Err(err) => return Outcome::failed("", &chain(&err)),
    };
    for unmatched in &plan.policy.unmatched {
        eprintln!("moat: warning: policy {unmatched}");
    }
    if plan.policy.audit_rules > 0 {
        eprintln!(
            "moat: warning: {} matchPatterns Audit rule(s) are accepted but produce no alert",
            plan.policy.audit_rules
        );
    }
    let audited = plan.policy.file_audit.len()
        + plan.policy.process_audit.len()
        + plan
            .policy
            .network
            .addresses
            .iter()
            .filter(|r| r.action == moat_policy::kubearmor::Action::Audit)
            .count()
        + plan
            .policy
            .network
            .protocols
            .iter()
            .filter(|r| r.action == moat_policy::kubearmor::Action::Audit)
            .count();
    if audited > 0 && args.alerts.is_none() {
        eprintln!(
            "moat: warning: {audited} Audit rule(s) apply, and Audit rules only report: without --alerts they do nothing"
        );
    }
    if args.dry_run {
        if let Err(err) = rootfs::preflight(&plan) {
            return Outcome::failed("filesystem", &chain(&err));
        }
        match serde_json::to_string_pretty(&plan) {
            Ok(json) => crate::exit::print_stdout(&json),
            Err(err) => return Outcome::failed("plan", &err.to_string()),
        }
        return Outcome::exited(0, 0);
    }
    let options = RunOptions {
        announce_address: true,
        alerts: args.alerts.clone(),
        alert_limit,
        status_file: args.status_file.clone(),
        ..RunOptions::default()
    };
    // The parses the cache lacks are stored once the sandbox has started and run a
    // moment: done during the start, the work (a few ms of CPU for 10,000 rules) slowed
    // it by as much. A sandbox that is over by then leaves it to the next start.
    let store: Option<moat_sandbox::AfterStart> = (!uncached.is_empty()).then(|| {
        let (policies, findings) = (request.policies, request.policy_findings);
        Box::new(move || {
            std::thread::sleep(CACHE_STORE_DELAY);
            cache.store(&uncached, &policies, &findings);
        }) as moat_sandbox::AfterStart
    });
    match moat_sandbox::run_with(&plan, &options, store) {
        Ok(report) => {
            if let Some(alerts) = &report.alerts {
                if let Some(error) = &alerts.error {
                    eprintln!("moat: warning: alerts: {error}");
                }
                if alerts.kernel_lost > 0
                    || alerts.socket_overflows > 0
                    || alerts.events_missed > 0
                    || alerts.unattributed > 0
                {
                    eprintln!(
                        "moat: warning: alerts may be incomplete: {} record(s) dropped by the kernel, {} reader overflow(s), {} audit event(s) not received, {} refused syscall(s) not attributable (a SystemEvent alert says so)",
                        alerts.kernel_lost, alerts.socket_overflows, alerts.events_missed, alerts.unattributed
                    );
                }
            }
            if let Some(audit) = &report.audit_alerts {
                if let Some(error) = &audit.error {
                    eprintln!("moat: warning: Audit alerts: {error}");
                }
                for missing in &audit.missing {
                    eprintln!("moat: warning: Audit rule {missing}: no such path in the sandbox, so nothing was watched");
                }
                if audit.overflows > 0 {
                    eprintln!(
                        "moat: warning: Audit alerts may be incomplete: the kernel's file event queue overflowed {} time(s) (a SystemEvent alert says so)",
                        audit.overflows
                    );
                }
            }
            if let Some(alerts) = &report.socket_alerts {
                if let Some(error) = &alerts.error {
                    eprintln!("moat: warning: network alerts: {error}");
                }
                if alerts.lost > 0 {
                    eprintln!(
                        "moat: warning: network alerts may be incomplete: the ring buffer had no room for {} event(s) (a SystemEvent alert says so)",
                        alerts.lost
                    );
                }
            }
            for warning in &report.cleanup_warnings {
                eprintln!("moat: warning: clean-up: {warning}");
            }
            if report.oom_kills > 0 {
                eprintln!(
                    "moat: the sandbox ran out of memory (limit {} MiB): the kernel killed {} process{}",
                    plan.resources.memory_bytes >> 20,
                    report.oom_kills,
                    if report.oom_kills == 1 { "" } else { "es" }
                );
            }
            Outcome::exited(report.status, report.oom_kills)
        }
        Err(err) => report_error(&err),
    }
}

fn report_error(err: &SandboxError) -> Outcome {
    match err {
        SandboxError::Wall { wall, message } => Outcome::failed(wall, message),
        SandboxError::NotRoot | SandboxError::Exists(_) | SandboxError::Container(_) => {
            Outcome::failed("", &err.to_string())
        }
        other => {
            // The variant's own message is the wall's name; its cause says what happened.
            let wall = other.to_string();
            let cause = std::error::Error::source(other)
                .map(chain)
                .unwrap_or_default();
            Outcome::failed(&wall, &cause)
        }
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    moat_sandbox::executor::error_chain(err)
}
