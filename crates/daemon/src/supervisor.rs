//! Starting, watching and stopping sandboxes.
//!
//! Each sandbox runs under its own `moat run`, a child of the daemon in a process group
//! of its own; the container plumbing never runs inside the daemon. The daemon learns
//! how the run goes from the status file `moat run` keeps, so a daemon that restarts
//! re-attaches to the sandboxes still running (by pid and process start time) and reads
//! the outcome of those that ended while it was away.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_sandbox::status::{RunState, RunStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::events::{AlertTail, Events};
use crate::metrics::Metrics;
use crate::request::CreateRequest;
use crate::store::{now, Record, State, Store};

/// A sandbox's log is emptied (with a note saying so) once it passes this size, so a
/// workload printing without end cannot fill the host's disk.
pub const LOG_CAP: u64 = 64 << 20;

/// Why a request could not be carried out; maps to an HTTP status.
#[derive(Debug)]
pub enum Refusal {
    /// 400: the request is wrong.
    Invalid(String),
    /// 404: no such sandbox.
    NotFound(String),
    /// 409: the sandbox is not in a state that allows it.
    Conflict(String),
    /// 500: the daemon failed.
    Failed(String),
}

struct Entry {
    record: Record,
    changed: watch::Sender<State>,
}

/// How the daemon waits for a sandbox's `moat run` to end.
enum Supervisor {
    /// Started by this daemon.
    Child(tokio::process::Child),
    /// Started by an earlier daemon: polled by pid and start time.
    Adopted { pid: u32, start: u64 },
}

impl Supervisor {
    async fn wait(&mut self) {
        match self {
            Supervisor::Child(child) => {
                let _ = child.wait().await;
            }
            Supervisor::Adopted { pid, start } => {
                while moat_sandbox::process::is_alive(*pid, *start) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// The daemon's state: every sandbox it knows, its files, events and counters.
pub struct Daemon {
    store: Store,
    events: Events,
    metrics: Mutex<Metrics>,
    sandboxes: Mutex<BTreeMap<String, Entry>>,
    moat: PathBuf,
    socket: PathBuf,
    admission: crate::Admission,
    shutdown: watch::Sender<bool>,
}

/// `path` resolved through symlinks as far as it exists, and free of `.`/`..`.
fn resolved(path: &std::path::Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    moat_policy::lexically_normal(&out)
}

/// What moat printed about a failure: its `moat: ` lines (warnings aside), or clap's
/// own `error:` line for a malformed option, without prefixes and help hints.
fn moat_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("moat: ") && !l.starts_with("moat: warning"))
        .map(|l| l.trim_start_matches("moat: "))
        .collect();
    if !lines.is_empty() {
        return lines.join("; ");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .or_else(|| {
            text.lines()
                .find(|l| !l.trim().is_empty() && !l.contains("--help"))
        })
        .unwrap_or("moat run failed without a message")
        .to_string()
}

impl Daemon {
    /// A daemon keeping its state in `store`, serving on `socket`, starting sandboxes with
    /// the `moat` binary.
    pub fn new(
        store: Store,
        events: Events,
        moat: PathBuf,
        socket: PathBuf,
        admission: crate::Admission,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            store,
            events,
            metrics: Mutex::new(Metrics::default()),
            sandboxes: Mutex::new(BTreeMap::new()),
            moat,
            socket,
            admission,
            shutdown: watch::channel(false).0,
        })
    }

    /// Tells long-lived responses (the event stream) to end: the daemon is stopping.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Daemon::begin_shutdown`] has been called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.shutdown.subscribe();
        async move {
            let _ = receiver.wait_for(|stopping| *stopping).await;
        }
    }

    /// The event stream.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn sandboxes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every sandbox, newest first.
    pub fn list(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .sandboxes()
            .values()
            .map(|e| e.record.clone())
            .collect();
        records.sort_by(|a, b| b.created.cmp(&a.created));
        records
    }

    /// The sandbox with this id or (live first, then newest) name.
    pub fn find(&self, key: &str) -> Result<Record, Refusal> {
        let sandboxes = self.sandboxes();
        if let Some(entry) = sandboxes.get(key) {
            return Ok(entry.record.clone());
        }
        let mut named: Vec<&Record> = sandboxes
            .values()
            .map(|e| &e.record)
            .filter(|r| r.name.as_deref() == Some(key))
            .collect();
        named.sort_by(|a, b| (b.state.is_live(), &b.created).cmp(&(a.state.is_live(), &a.created)));
        named
            .first()
            .map(|r| (*r).clone())
            .ok_or_else(|| Refusal::NotFound(format!("no sandbox {key:?}")))
    }

    /// Metrics text.
    pub fn render_metrics(&self) -> String {
        let mut by_state = BTreeMap::new();
        for entry in self.sandboxes().values() {
            *by_state.entry(entry.record.state.as_str()).or_insert(0) += 1;
        }
        self.metrics().render(&by_state)
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Record)) -> Option<Record> {
        let mut sandboxes = self.sandboxes();
        let entry = sandboxes.get_mut(id)?;
        change(&mut entry.record);
        if let Err(err) = self.store.save(&entry.record) {
            tracing::warn!("cannot save the record of {id}: {err}");
        }
        let _ = entry.changed.send(entry.record.state);
        Some(entry.record.clone())
    }

    /// Creates and starts a sandbox; returns its record (state `starting`). The work runs
    /// on a task of its own: a client that hangs up half-way cannot leave it half done.
    pub async fn create(self: &Arc<Self>, request: CreateRequest) -> Result<Record, Refusal> {
        let daemon = Arc::clone(self);
        tokio::spawn(async move { daemon.create_now(request).await })
            .await
            .unwrap_or_else(|err| Err(Refusal::Failed(format!("the create task failed: {err}"))))
    }

    async fn create_now(self: &Arc<Self>, request: CreateRequest) -> Result<Record, Refusal> {
        request.check().map_err(|e| Refusal::Invalid(e.0))?;
        self.admit(&request)?;
        self.check_home(&request)?;
        let id = moat_sandbox::process::new_sandbox_id();
        let record = Record::new(
            id.clone(),
            request.name.clone(),
            request.network.publish.clone(),
            request.labels.clone(),
        );
        // Reserve the name and id in one step, so two creates cannot both take a name.
        {
            let mut sandboxes = self.sandboxes();
            if let Some(name) = &request.name {
                let taken = sandboxes
                    .values()
                    .any(|e| e.record.name.as_ref() == Some(name) && e.record.state.is_live());
                if taken {
                    return Err(Refusal::Conflict(format!(
                        "a sandbox named {name:?} is already running"
                    )));
                }
            }
            self.store
                .create(&record, &request.env_file())
                .map_err(|e| Refusal::Failed(format!("cannot write the sandbox's state: {e}")))?;
            let (changed, _) = watch::channel(State::Starting);
            sandboxes.insert(
                id.clone(),
                Entry {
                    record: record.clone(),
                    changed,
                },
            );
        }
        let forget = |daemon: &Daemon| {
            daemon.sandboxes().remove(&id);
            let _ = daemon.store.remove(&id);
        };
        let mut arguments = self.admission.run_options.clone();
        arguments.extend(request.run_arguments(&id, &self.store.run_files(&id)));
        // Judge the request with the code that will run it, before anything is made.
        let dry_run = self
            .moat_command()
            .arg("run")
            .arg("--dry-run")
            .args(&arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await;
        match dry_run {
            Ok(output) if output.status.success() => {}
            Ok(output) if output.status.code() == Some(125) => {
                forget(self);
                return Err(Refusal::Invalid(moat_error(&output.stderr)));
            }
            Ok(output) => {
                forget(self);
                return Err(Refusal::Failed(format!(
                    "moat run --dry-run failed ({}): {}",
                    output.status,
                    moat_error(&output.stderr)
                )));
            }
            Err(err) => {
                forget(self);
                return Err(Refusal::Failed(format!(
                    "cannot run {}: {err}",
                    self.moat.display()
                )));
            }
        }
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.store.log(&id))
        };
        let (log, log_too) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(pair) => pair,
            Err(err) => {
                forget(self);
                return Err(Refusal::Failed(format!("cannot open the log: {err}")));
            }
        };
        let child = self
            .moat_command()
            .arg("run")
            .args(&arguments)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too)
            // Its own process group: a signal to the daemon's group (Ctrl-C on a
            // terminal, a service manager) does not reach the sandboxes.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                forget(self);
                return Err(Refusal::Failed(format!(
                    "cannot run {}: {err}",
                    self.moat.display()
                )));
            }
        };
        let pid = child.id().unwrap_or(0);
        let start = moat_sandbox::process::start_ticks(pid);
        let record = self
            .update(&id, |r| {
                r.pid = Some(pid);
                r.pid_start = start;
            })
            .unwrap_or(record);
        self.events.lifecycle(
            &id,
            record.name.as_deref(),
            &record.labels,
            "create",
            &format!("pid={pid}"),
        );
        let daemon = Arc::clone(self);
        tokio::spawn(async move {
            daemon
                .watch(id, Supervisor::Child(child), Instant::now())
                .await;
        });
        Ok(record)
    }

    /// What the administrator allows clients to ask for (`moat daemon --profile,
    /// --policy-dir, --home-root`).
    fn admit(&self, request: &CreateRequest) -> Result<(), Refusal> {
        let profile = request.profile.as_deref().unwrap_or("untrusted");
        if !self.admission.profiles.iter().any(|p| p == profile) {
            return Err(Refusal::Invalid(format!(
                "profile {profile:?} is not one this daemon allows (moat daemon --profile): {}",
                self.admission.profiles.join(", ")
            )));
        }
        let under = |path: &std::path::Path, roots: &[PathBuf]| {
            let path = resolved(path);
            roots.iter().any(|root| path.starts_with(resolved(root)))
        };
        for policy in &request.policies {
            if !under(std::path::Path::new(policy), &self.admission.policy_dirs) {
                return Err(Refusal::Invalid(format!(
                    "policies: {policy:?} is not in a directory this daemon takes policies from (moat daemon --policy-dir)"
                )));
            }
        }
        if let (Some(home), false) = (&request.home, self.admission.home_roots.is_empty()) {
            if !under(std::path::Path::new(home), &self.admission.home_roots) {
                return Err(Refusal::Invalid(format!(
                    "home {home:?} is not under a directory this daemon keeps homes in (moat daemon --home-root)"
                )));
            }
        }
        Ok(())
    }

    /// A home is given to the sandbox's user: it must not hold or be inside the daemon's
    /// own state or socket directory (the user could swap other sandboxes' files or the
    /// API socket itself).
    fn check_home(&self, request: &CreateRequest) -> Result<(), Refusal> {
        let Some(home) = &request.home else {
            return Ok(());
        };
        let home = resolved(std::path::Path::new(home));
        let mut ours = vec![resolved(self.store.root())];
        if let Some(dir) = self.socket.parent() {
            ours.push(resolved(dir));
        }
        for dir in ours {
            if home.starts_with(&dir) || dir.starts_with(&home) {
                return Err(Refusal::Invalid(format!(
                    "home {}: overlaps the daemon's own {} (state or socket)",
                    home.display(),
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    fn moat_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.moat);
        command.env_clear().env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        command
    }

    /// Follows one sandbox until its `moat run` has ended, then records how it ended.
    async fn watch(self: Arc<Self>, id: String, mut supervisor: Supervisor, asked: Instant) {
        let files = self.store.run_files(&id);
        let mut alerts = AlertTail::new(files.alerts.clone());
        let ended = supervisor.wait();
        tokio::pin!(ended);
        loop {
            let starting = self
                .sandboxes()
                .get(&id)
                .is_some_and(|e| e.record.started.is_none());
            let pause = Duration::from_millis(if starting { 20 } else { 250 });
            tokio::select! {
                () = &mut ended => break,
                () = tokio::time::sleep(pause) => {}
            }
            if starting {
                self.note_started(&id, &files.status, asked);
            }
            self.forward_alerts(&mut alerts);
            self.cap_log(&id);
        }
        self.note_started(&id, &files.status, asked);
        self.forward_alerts(&mut alerts);
        self.cap_log(&id);
        self.note_ended(&id).await;
    }

    /// Records the start once the status file says `running` (also while stopping: the
    /// env file with the workload's secrets goes either way).
    fn note_started(&self, id: &str, status_path: &std::path::Path, asked: Instant) {
        let Some(status) = RunStatus::read(status_path) else {
            return;
        };
        if status.state != RunState::Running {
            return;
        }
        let mut first = false;
        let record = self.update(id, |r| {
            if r.started.is_none() {
                first = true;
                r.started = Some(now());
                r.address = status.address;
                r.host_address = status.host_address;
                if r.state == State::Starting {
                    r.state = State::Running;
                }
            }
        });
        if let (true, Some(record)) = (first, record) {
            self.store.forget_env(id);
            self.metrics().started(asked.elapsed().as_secs_f64());
            let address = record
                .address
                .map(|a| format!("address={a}"))
                .unwrap_or_default();
            self.events.lifecycle(
                id,
                record.name.as_deref(),
                &record.labels,
                "start",
                &address,
            );
        }
    }

    /// Cuts a log that passed [`LOG_CAP`] back to its last MiB, after a line saying how
    /// much went (copy, then truncate: what the workload writes in between may be lost,
    /// as with logrotate's copytruncate).
    fn cap_log(&self, id: &str) {
        use std::io::{Read, Seek, SeekFrom, Write};
        const KEEP: u64 = 1 << 20;
        let path = self.store.log(id);
        let Ok(size) = std::fs::metadata(&path).map(|m| m.len()) else {
            return;
        };
        if size <= LOG_CAP {
            return;
        }
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        else {
            return;
        };
        let mut kept = Vec::new();
        let read = file
            .seek(SeekFrom::Start(size - KEEP))
            .and_then(|_| (&mut file).take(KEEP).read_to_end(&mut kept));
        if read.is_err() {
            return;
        }
        // Start the kept part at a line boundary.
        let from = kept.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        let dropped = size - (kept.len() - from) as u64;
        if file.set_len(0).is_err() {
            return;
        }
        // moat run writes with O_APPEND, so its output goes on after what is written here.
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&path) {
            let _ = writeln!(
                log,
                "moat: the log passed {} MiB; the {dropped} bytes before this line were dropped",
                LOG_CAP >> 20
            );
            let _ = log.write_all(&kept[from..]);
        }
    }

    fn forward_alerts(&self, alerts: &mut AlertTail) {
        for line in alerts.read_new() {
            let alert = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
            let field = |name: &str| alert.get(name).and_then(|v| v.as_str()).unwrap_or("");
            let action = match field("Action") {
                "" => "unknown",
                action => action,
            };
            match (field("Type"), field("Operation")) {
                ("SystemEvent", "AlertThreshold") => {
                    let held_back = held_back(field("Data"));
                    let mut metrics = self.metrics();
                    metrics.alerts(action, held_back);
                    metrics.held_back(held_back);
                }
                // What moat says of the alerts themselves (losses): not a policy decision.
                ("SystemEvent", _) => {}
                _ => self.metrics().alerts(action, 1),
            }
            self.events.publish(line);
        }
    }

    async fn note_ended(&self, id: &str) {
        let files = self.store.run_files(id);
        self.store.forget_env(id);
        let status = RunStatus::read(&files.status)
            .filter(|s| matches!(s.state, RunState::Exited | RunState::Failed));
        if status.is_none() {
            // moat run died without its last word (killed): collect what it left.
            self.collect_garbage().await;
        }
        let Some(record) = self.update(id, |r| {
            r.finished = Some(now());
            match &status {
                Some(status) => {
                    r.exit_code = status.exit_code;
                    r.oom_killed = status.oom_kills > 0;
                    r.error = status.error.clone();
                    r.state = if status.state == RunState::Failed {
                        State::Failed
                    } else {
                        State::Exited
                    };
                }
                None => {
                    r.state = if r.started.is_some() {
                        State::Exited
                    } else {
                        State::Failed
                    };
                    r.exit_code = Some(137);
                    r.error = Some(
                        "the sandbox's supervisor (moat run) was killed; moat gc cleaned up".into(),
                    );
                }
            }
        }) else {
            return;
        };
        let kills = status.as_ref().map_or(0, |s| s.oom_kills);
        {
            let mut metrics = self.metrics();
            if record.state == State::Failed {
                metrics.failed();
            }
            metrics.oom_killed(kills);
        }
        let name = record.name.as_deref();
        if kills > 0 {
            self.events.lifecycle(
                id,
                name,
                &record.labels,
                "oom",
                &format!("processes killed={kills}"),
            );
        }
        let (operation, data) = match record.state {
            State::Failed => ("fail", record.error.clone().unwrap_or_default()),
            _ => (
                "exit",
                format!("exit_code={}", record.exit_code.unwrap_or(-1)),
            ),
        };
        self.events
            .lifecycle(id, name, &record.labels, operation, &data);
    }

    /// Runs `moat gc`, which removes what dead sandboxes left behind (never a live one).
    pub async fn collect_garbage(&self) {
        let result = self
            .moat_command()
            .args(["gc", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await;
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => tracing::warn!("moat gc: {}", moat_error(&output.stderr)),
            Err(err) => tracing::warn!("cannot run moat gc: {err}"),
        }
    }

    /// Stops a sandbox: SIGTERM, `grace` to end, then SIGKILL. Returns once it is gone.
    pub async fn stop(&self, key: &str, grace: Duration) -> Result<Record, Refusal> {
        let record = self.find(key)?;
        let id = record.id.clone();
        let mut changed = match self.sandboxes().get(&id) {
            Some(entry) => entry.changed.subscribe(),
            None => return Err(Refusal::NotFound(format!("no sandbox {key:?}"))),
        };
        // Only a live sandbox becomes `stopping`, checked and changed in one locked step:
        // an exit recorded meanwhile keeps its final state.
        let (mut live, mut first) = (false, false);
        let record = self
            .update(&id, |r| {
                if r.state.is_live() {
                    live = true;
                    first = r.state != State::Stopping;
                    r.state = State::Stopping;
                }
            })
            .unwrap_or(record);
        if !live {
            return Ok(record);
        }
        if first {
            self.events.lifecycle(
                &id,
                record.name.as_deref(),
                &record.labels,
                "stop",
                &format!("grace_seconds={}", grace.as_secs()),
            );
        }
        let gone = |state: &State| !state.is_live();
        // A sandbox still being created has no supervisor yet: its create is at most a
        // dry run and a spawn away from recording one.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut record = record;
        while record.pid.is_none() && record.state.is_live() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            record = self.find(&id)?;
        }
        let supervisor = match (record.pid, record.pid_start) {
            (Some(pid), Some(start)) if moat_sandbox::process::is_alive(pid, start) => Some(pid),
            _ => None,
        };
        if let Some(pid) = supervisor {
            // moat run passes SIGTERM on to the workload (or holds it until the workload
            // runs, if it is still setting up).
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, changed.wait_for(gone))
            .await
            .is_err()
        {
            if let Some(pid) = supervisor {
                self.kill_workload(&id, pid);
            }
            if tokio::time::timeout(Duration::from_secs(15), changed.wait_for(gone))
                .await
                .is_err()
            {
                // moat run itself does not end: kill it; the watcher then runs gc.
                if let Some(pid) = supervisor {
                    if record
                        .pid_start
                        .is_some_and(|start| moat_sandbox::process::is_alive(pid, start))
                    {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), changed.wait_for(gone)).await;
            }
        }
        let record = self.find(&id)?;
        if record.state.is_live() {
            return Err(Refusal::Failed(format!(
                "sandbox {id} did not stop (its supervisor, pid {}, does not end)",
                record.pid.map_or("unknown".into(), |p| p.to_string())
            )));
        }
        Ok(record)
    }

    /// SIGKILL to the sandbox's init, which ends the workload; moat run then cleans up.
    fn kill_workload(&self, id: &str, supervisor: u32) {
        let Some(init) = RunStatus::read(&self.store.run_files(id).status).and_then(|s| s.init_pid)
        else {
            return;
        };
        // Only while the init is still moat run's child: never a reused pid.
        let parent = std::fs::read_to_string(format!("/proc/{init}/status"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .and_then(|p| p.trim().parse::<u32>().ok())
            });
        if parent == Some(supervisor) {
            let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
        }
    }

    /// Forgets an ended sandbox: its record, log and files.
    pub fn delete(&self, key: &str) -> Result<(), Refusal> {
        let record = self.find(key)?;
        if record.state.is_live() {
            return Err(Refusal::Conflict(format!(
                "sandbox {} is {}: stop it first",
                record.id,
                record.state.as_str()
            )));
        }
        self.sandboxes().remove(&record.id);
        self.store
            .remove(&record.id)
            .map_err(|e| Refusal::Failed(format!("cannot remove the sandbox's files: {e}")))
    }

    /// Forgets ended sandboxes that finished more than `keep` ago.
    pub fn expire(&self, keep: Duration) {
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let expired: Vec<String> = self
            .sandboxes()
            .values()
            .filter(|e| !e.record.state.is_live())
            .filter(|e| {
                e.record
                    .finished
                    .as_deref()
                    .and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok())
                    .is_some_and(|f| f < cutoff)
            })
            .map(|e| e.record.id.clone())
            .collect();
        for id in expired {
            let _ = self.delete(&id);
        }
    }

    /// At start: loads the records of an earlier daemon, re-attaches to the sandboxes
    /// still running and records the end of the others. Returns what was re-attached.
    pub async fn recover(self: &Arc<Self>) -> usize {
        let (records, problems) = self.store.load_all();
        for problem in problems {
            tracing::warn!("skipping an unreadable record: {problem}");
        }
        let mut adopted = 0;
        let mut ended = Vec::new();
        for mut record in records {
            if record.pid.is_none() && record.state.is_live() {
                // The daemon died between starting moat run and recording its pid; moat
                // run wrote its pid first thing.
                if let Some(status) = RunStatus::read(&self.store.run_files(&record.id).status) {
                    let cmdline =
                        std::fs::read(format!("/proc/{}/cmdline", status.pid)).unwrap_or_default();
                    let ours = String::from_utf8_lossy(&cmdline)
                        .split('\0')
                        .collect::<Vec<_>>()
                        .windows(2)
                        .any(|w| w[0] == "--id" && w[1] == record.id);
                    if ours {
                        record.pid = Some(status.pid);
                        record.pid_start = moat_sandbox::process::start_ticks(status.pid);
                    }
                }
            }
            let alive = match (record.pid, record.pid_start) {
                (Some(pid), Some(start)) => {
                    moat_sandbox::process::is_alive(pid, start).then_some((pid, start))
                }
                _ => None,
            };
            let id = record.id.clone();
            let live = record.state.is_live();
            let (changed, _) = watch::channel(record.state);
            self.sandboxes()
                .insert(id.clone(), Entry { record, changed });
            match (live, alive) {
                (true, Some((pid, start))) => {
                    adopted += 1;
                    let daemon = Arc::clone(self);
                    tokio::spawn(async move {
                        daemon
                            .watch(id, Supervisor::Adopted { pid, start }, Instant::now())
                            .await;
                    });
                }
                (true, None) => ended.push(id),
                _ => {}
            }
        }
        for id in ended {
            self.note_ended(&id).await;
        }
        self.collect_garbage().await;
        adopted
    }
}

/// The count in an `AlertThreshold` event's `Data` (`held_back=N ...`).
fn held_back(data: &str) -> u64 {
    data.split_whitespace()
        .find_map(|kv| kv.strip_prefix("held_back="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
