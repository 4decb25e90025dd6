//! The alert record and where alerts go.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::limit::{AlertLimit, Limiter, Verdict};

/// One alert, with KubeArmor's field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Alert {
    /// Seconds since the epoch.
    pub timestamp: i64,
    /// RFC 3339 time.
    pub updated_time: String,
    /// Empty on a single machine.
    pub cluster_name: String,
    /// The host's name.
    pub host_name: String,
    /// Empty on a single machine.
    pub namespace_name: String,
    /// The sandbox id.
    pub pod_name: String,
    /// The sandbox's labels, `k=v,k=v`.
    pub labels: String,
    /// The sandbox id.
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// The sandbox's host name.
    pub container_name: String,
    /// Process id on the host.
    #[serde(rename = "HostPID")]
    pub host_pid: i64,
    /// Parent process id on the host.
    #[serde(rename = "PPID")]
    pub ppid: i64,
    /// Process id in the sandbox.
    #[serde(rename = "PID")]
    pub pid: i64,
    /// User id in the sandbox.
    #[serde(rename = "UID")]
    pub uid: i64,
    /// The acting program.
    pub process_name: String,
    /// Its parent's program, when known.
    pub parent_process_name: String,
    /// The policy whose rule matched, or `DefaultPosture`.
    pub policy_name: String,
    /// 1..=10 as a string, as upstream writes it.
    pub severity: String,
    /// Comma-separated tags.
    pub tags: String,
    /// The rule's message.
    pub message: String,
    /// `MatchedPolicy` or `SystemEvent`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The acting program (upstream: the source of the operation).
    pub source: String,
    /// `Process`, `File`, `Network`, `Capabilities` or `Syscall`.
    pub operation: String,
    /// What was accessed.
    pub resource: String,
    /// Details.
    pub data: String,
    /// Which mechanism decided.
    pub enforcer: String,
    /// `Block` or `Audit`.
    pub action: String,
    /// `Passed` or `Permission denied`.
    pub result: String,
}

impl Alert {
    /// An alert about the sandbox of `context`, stamped now: the fields all alerts share.
    pub fn about(context: &AlertContext) -> Alert {
        let now = chrono::Utc::now();
        Alert {
            timestamp: now.timestamp(),
            updated_time: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            host_name: context.host_name.clone(),
            pod_name: context.id.clone(),
            labels: context.labels_text(),
            container_id: context.id.clone(),
            container_name: context.hostname.clone(),
            ..Alert::default()
        }
    }

    /// The `SystemEvent` that says alerts of `operation` may be missing, and why.
    pub fn missing(
        context: &AlertContext,
        operation: &str,
        message: String,
        data: String,
    ) -> Alert {
        Alert {
            kind: "SystemEvent".into(),
            operation: operation.into(),
            message,
            data,
            enforcer: "moat".into(),
            result: "Passed".into(),
            ..Alert::about(context)
        }
    }
}

/// What the policies say about a denied path: the policy, severity, tags and message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleMatch {
    /// Policy name.
    pub policy: String,
    /// Severity.
    pub severity: Option<i64>,
    /// Tags.
    pub tags: Vec<String>,
    /// Message.
    pub message: Option<String>,
}

/// The sandbox an alert is about.
#[derive(Debug, Clone, Default)]
pub struct AlertContext {
    /// Sandbox id.
    pub id: String,
    /// The host's name (`HostName`).
    pub host_name: String,
    /// Its host name.
    pub hostname: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The host id its uid 0 maps to.
    pub host_id_base: u32,
    /// How many host ids it maps from there (its own, no other sandbox's).
    pub host_id_count: u32,
    /// Whether sandboxes of the same identity or home may hold the same ids at once.
    pub ids_shared: bool,
    /// Syscalls the profile's filter allows whatever their arguments.
    pub seccomp_allowed: Vec<String>,
    /// Syscalls the filter answers with a compatibility errno (clone3: ENOSYS, so that
    /// libc falls back to clone): not denials, so no alert.
    pub seccomp_shims: Vec<String>,
    /// What a syscall the filter refuses returns, in words (`Operation not permitted`).
    pub seccomp_result: String,
    /// Policy rules by path (as written and resolved): a denied path under one of these is
    /// attributed to it; anything else is the default posture.
    pub rules: Vec<(String, bool, RuleMatch)>,
}

impl AlertContext {
    /// The labels as alerts carry them: `k=v,k=v`.
    pub fn labels_text(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The rule covering `path`, if a policy names it.
    pub fn rule_for(&self, path: &str) -> Option<&RuleMatch> {
        self.rules
            .iter()
            .filter(|(rule, directory, _)| {
                if *directory {
                    path.starts_with(rule.as_str())
                } else {
                    path == rule
                }
            })
            .max_by_key(|(rule, _, _)| rule.len())
            .map(|(_, _, m)| m)
    }
}

/// Appends alerts to a file (created 0600), one JSON object per line. Clones share the
/// file, so every enforcer's reader can write to it; each alert is one whole line.
///
/// Lines reach the file within about [`FLUSH_AFTER`] of being written, so whoever follows
/// it (`tail -f`, the daemon's event stream) sees an alert while the sandbox still runs:
/// readers call [`AlertWriter::idle`] when they have read all there is, and
/// [`AlertWriter::tick`] whenever they wake, at least every [`FLUSH_AFTER`].
#[derive(Debug, Clone)]
pub struct AlertWriter {
    sink: Arc<Mutex<Sink>>,
}

/// How long a written alert may wait in the buffer.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Sink {
    file: BufWriter<File>,
    /// When the oldest line not yet flushed was written.
    unflushed_since: Option<Instant>,
    limiter: Option<Limiter>,
}

impl AlertWriter {
    /// Opens (or creates) `path` for appending, with no rate limit.
    pub fn open(path: &Path) -> io::Result<AlertWriter> {
        Self::open_limited(path, None)
    }

    /// Opens (or creates) `path` for appending; alerts beyond `limit` are counted instead
    /// of written (see [`crate::limit`]).
    pub fn open_limited(path: &Path, limit: Option<AlertLimit>) -> io::Result<AlertWriter> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AlertWriter {
            sink: Arc::new(Mutex::new(Sink {
                file: BufWriter::with_capacity(1 << 20, file),
                unflushed_since: None,
                limiter: limit.map(Limiter::new),
            })),
        })
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        // A writer that panicked mid-line leaves at worst a torn line; keep writing.
        self.sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes one alert, or counts it if the rate limit holds it back.
    pub fn write(&mut self, alert: &Alert) -> io::Result<()> {
        let now = Instant::now();
        let mut sink = self.sink();
        let verdict = match &mut sink.limiter {
            Some(limiter) => limiter.admit(alert, now),
            None => Verdict::Write,
        };
        if verdict == Verdict::Write {
            sink.line(alert, now)?;
        }
        sink.settle(now, Settle::Due)
    }

    /// Writes what is due: lines buffered for [`FLUSH_AFTER`], and the counts of alerts
    /// the rate limit held back for [`crate::limit::SUMMARY_INTERVAL`]. Readers call it
    /// whenever they wake.
    pub fn tick(&mut self) -> io::Result<()> {
        self.sink().settle(Instant::now(), Settle::Due)
    }

    /// Writes out every buffered line, and the counts that are due: the reader has read
    /// all there is for now, so nothing is gained by waiting.
    pub fn idle(&mut self) -> io::Result<()> {
        self.sink().settle(Instant::now(), Settle::Lines)
    }

    /// Writes out everything: what is buffered and the counts of every alert held back so
    /// far. Each reader calls it when it ends.
    pub fn flush(&mut self) -> io::Result<()> {
        self.sink().settle(Instant::now(), Settle::All)
    }
}

impl Sink {
    fn line(&mut self, alert: &Alert, now: Instant) -> io::Result<()> {
        let mut line = serde_json::to_vec(alert).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.unflushed_since.get_or_insert(now);
        Ok(())
    }

    fn settle(&mut self, now: Instant, what: Settle) -> io::Result<()> {
        let counts = match &mut self.limiter {
            Some(limiter) => limiter.due(now, what == Settle::All),
            None => Vec::new(),
        };
        for event in &counts {
            self.line(event, now)?;
        }
        let stale = self
            .unflushed_since
            .is_some_and(|since| now.saturating_duration_since(since) >= FLUSH_AFTER);
        if what != Settle::Due || stale {
            self.file.flush()?;
            self.unflushed_since = None;
        }
        Ok(())
    }
}

/// What [`Sink::settle`] writes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Lines buffered for [`FLUSH_AFTER`], and the counts due.
    Due,
    /// Every buffered line, and the counts due.
    Lines,
    /// Every buffered line, and every count.
    All,
}
