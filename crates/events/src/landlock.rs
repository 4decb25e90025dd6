//! Landlock denials of one sandbox, read from the audit log, written as alerts.
//!
//! Landlock (ABI 7) logs a denial as an event of several records sharing a serial:
//! `LANDLOCK_ACCESS` (1423: domain, blockers, path), the first time a domain is logged
//! `LANDLOCK_DOMAIN` (1424: the domain's creator, by host pid), the `SYSCALL` record (1300:
//! the acting process) and an end-of-event record (1320). A denial belongs to this sandbox
//! when its domain is one the sandbox's init created.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use crate::alert::{Alert, AlertContext, AlertWriter};
use crate::audit::{self, Record};

const LANDLOCK_ACCESS: u16 = 1423;
const LANDLOCK_DOMAIN: u16 = 1424;
const SYSCALL: u16 = 1300;
/// A seccomp filter's decision, logged because moat installs it with SECCOMP_FILTER_FLAG_LOG.
const SECCOMP: u16 = 1326;
const END_OF_EVENT: u16 = 1320;
const AUDIT_USER: u16 = 1005;
/// Records the kernel may queue while readers catch up.
const BACKLOG: u32 = 65536;

/// What the reader did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderReport {
    /// Alerts handled: written, or counted by the rate limit.
    pub alerts: u64,
    /// Times the socket overflowed (an unknown number of records lost each time).
    pub socket_overflows: u64,
    /// Records the kernel dropped during the run (all of the host's, not only ours).
    pub kernel_lost: u32,
    /// Audit events the reader never saw (gaps in the serial numbers while it ran; some
    /// may have been other processes' events).
    pub events_missed: u64,
    /// Seccomp refusals by a process that was gone before its record was read, with ids
    /// this sandbox shares with others of the same identity or home: not reported, since
    /// they may be another sandbox's.
    pub unattributed: u64,
    /// Why the reader stopped early, if it did.
    pub error: Option<String>,
}

impl crate::reader::Report for ReaderReport {
    fn panicked() -> Self {
        ReaderReport {
            error: Some("the alert reader panicked".into()),
            ..ReaderReport::default()
        }
    }
}

/// A running Landlock alert reader: [`crate::reader::ReaderThread::finish`] stops it once
/// the records already sent are read.
pub type ReaderHandle = crate::reader::ReaderThread<ReaderReport>;

/// Enables auditing if needed, subscribes to the audit log and starts a thread writing an
/// alert for every Landlock denial in the domains created by `init_pid`.
pub fn spawn_reader(
    context: AlertContext,
    writer: AlertWriter,
    init_pid: i32,
) -> io::Result<ReaderHandle> {
    let before = audit::status()?;
    if before.enabled == 0 || before.backlog_limit < BACKLOG {
        audit::enable(before.backlog_limit.max(BACKLOG))?;
    }
    let socket = audit::subscribe()?;
    let pid_namespace = crate::process::namespace_of(&format!("/proc/{init_pid}/ns/pid"));
    ReaderHandle::spawn("moat-alerts", move |stop| {
        read(
            socket,
            context,
            writer,
            (init_pid, pid_namespace),
            before.lost,
            stop,
        )
    })
}

fn read(
    socket: OwnedFd,
    context: AlertContext,
    mut writer: AlertWriter,
    (init_pid, pid_namespace): (i32, Option<(u64, u64)>),
    lost_before: u32,
    stop: &AtomicBool,
) -> ReaderReport {
    let mut report = ReaderReport::default();
    let mut events: BTreeMap<u64, Vec<Record>> = BTreeMap::new();
    let mut domains: HashSet<String> = HashSet::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut pids = PidCache::default();
    let mut serials = SerialTracker::default();
    // Once asked to stop: a marker written into the audit stream, and the time to give up
    // waiting for it. The stream is in order, so when the marker comes back every record
    // of the run has come (or is counted as missed).
    let mut marker: Option<(String, std::time::Instant)> = None;
    let own_pid = std::process::id().to_string();
    let mut evicted = 0u64;
    let mut drained = false;
    // `report.alerts` when the writer was last told to write out.
    let mut flushed_at = 0u64;
    loop {
        if drained {
            break;
        }
        // Records of other processes can keep the socket busy: written lines still go out.
        if let Err(err) = writer.tick() {
            report.error = Some(format!("cannot write alerts: {err}"));
        }
        if stop.load(Ordering::SeqCst) {
            match &marker {
                None => {
                    // A nonce nobody in a sandbox can guess, matched only in a user record
                    // from moat's own process: a sandbox cannot end the drain early.
                    let text = format!("moat-alert-reader-drained-{}", nonce());
                    if let Err(err) = audit::write_marker(&text) {
                        // Without the marker the end of the stream cannot be told apart
                        // from a lull: records still in flight may be missed.
                        report.error = Some(format!(
                            "cannot mark the end of the audit stream, so the last alerts may be missing: {err}"
                        ));
                        break;
                    }
                    marker = Some((
                        text,
                        std::time::Instant::now() + std::time::Duration::from_secs(10),
                    ));
                }
                Some((_, deadline)) if std::time::Instant::now() > *deadline => {
                    report.error = Some("the audit stream did not drain within 10 s".into());
                    break;
                }
                Some(_) => {}
            }
        }
        // After writing, look without waiting: if nothing more has come, the lines go out
        // now rather than at the socket's timeout.
        let wait = if report.alerts > flushed_at {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        match recv(socket.as_raw_fd(), &mut buffer, wait) {
            Ok(n) => {
                for record in audit::records(&buffer[..n]) {
                    if record.kind == AUDIT_USER
                        && marker.as_ref().is_some_and(|(text, _)| {
                            fields(&record.text).get("pid").map(String::as_str)
                                == Some(own_pid.as_str())
                                && record.text.contains(&format!("msg='{text}'"))
                        })
                    {
                        drained = true;
                    }
                    let Some(serial) = serial(&record.text) else {
                        continue;
                    };
                    serials.saw(serial);
                    // A seccomp record stands alone (the filter runs before the syscall
                    // is audited, so no end-of-event record follows it).
                    if record.kind == SECCOMP {
                        match seccomp_alert(&record, &context, pid_namespace, &mut pids) {
                            Refusal::Ours(alert) => match writer.write(&alert) {
                                Ok(()) => report.alerts += 1,
                                Err(err) => {
                                    report.error = Some(format!("cannot write alerts: {err}"))
                                }
                            },
                            Refusal::Unattributed => report.unattributed += 1,
                            Refusal::NotOurs => {}
                        }
                        continue;
                    }
                    let end = record.kind == END_OF_EVENT;
                    events.entry(serial).or_default().push(record);
                    if end {
                        if let Some(event) = events.remove(&serial) {
                            for alert in
                                alerts_of(&event, &context, &mut domains, init_pid, &mut pids)
                            {
                                match writer.write(&alert) {
                                    Ok(()) => report.alerts += 1,
                                    Err(err) => {
                                        report.error = Some(format!("cannot write alerts: {err}"))
                                    }
                                }
                            }
                        }
                    }
                }
                // Events that never end (their last records lost) must not pile up; each
                // one dropped is counted as missed.
                while events.len() > 4096 {
                    events.pop_first();
                    evicted += 1;
                }
            }
            Err(Errno::ENOBUFS) => report.socket_overflows += 1,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                // Nothing more has come: nothing is gained by buffering.
                if let Err(err) = writer.idle() {
                    report.error = Some(format!("cannot write alerts: {err}"));
                }
                flushed_at = report.alerts;
            }
            Err(err) => {
                report.error = Some(format!("reading the audit log: {err}"));
                break;
            }
        }
    }
    report.kernel_lost = audit::status().map_or(0, |s| s.lost.saturating_sub(lost_before));
    report.events_missed = serials.missed() + evicted;
    if report.socket_overflows > 0
        || report.kernel_lost > 0
        || report.events_missed > 0
        || report.unattributed > 0
    {
        let message = format!(
            "alerts may be missing: {} audit event(s) were not received, the kernel dropped {} record(s), moat's reader overflowed {} time(s), and {} refused syscall(s) of an exited process could not be told apart from another sandbox's of the same identity",
            report.events_missed, report.kernel_lost, report.socket_overflows, report.unattributed
        );
        let data = format!(
            "events_missed={} kernel_lost={} socket_overflows={} unattributed={}",
            report.events_missed, report.kernel_lost, report.socket_overflows, report.unattributed
        );
        let alert = Alert::missing(&context, "Syscall", message, data);
        let _ = writer.write(&alert);
    }
    if let Err(err) = writer.flush() {
        report.error = Some(format!("cannot write alerts: {err}"));
    }
    report
}

/// 128 random bits, hex.
fn nonce() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    bytes.iter().fold(String::with_capacity(32), |mut hex, b| {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Audit serial numbers seen, to count the events that never arrived.
#[derive(Default)]
struct SerialTracker {
    seen: std::collections::BTreeSet<u64>,
}

impl SerialTracker {
    fn saw(&mut self, serial: u64) {
        self.seen.insert(serial);
    }

    /// Serials between the first and last seen that never came.
    fn missed(&self) -> u64 {
        match (self.seen.first(), self.seen.last()) {
            (Some(first), Some(last)) => (last - first + 1).saturating_sub(self.seen.len() as u64),
            _ => 0,
        }
    }
}

/// Sandbox pids of host pids, looked up once per process.
#[derive(Default)]
struct PidCache {
    known: BTreeMap<i64, i64>,
}

impl PidCache {
    fn inner(&mut self, host_pid: i64) -> i64 {
        if self.known.len() > 4096 {
            self.known.clear();
        }
        *self
            .known
            .entry(host_pid)
            .or_insert_with(|| inner_pid(host_pid))
    }
}

/// The serial of `audit(SECONDS.MILLIS:SERIAL): ...`.
fn serial(text: &str) -> Option<u64> {
    let inner = text.strip_prefix("audit(")?;
    let close = inner.find(')')?;
    inner[..close].split(':').nth(1)?.parse().ok()
}

/// `(seconds, millis)` of a record.
fn time(text: &str) -> (i64, u32) {
    let inner = text.strip_prefix("audit(").unwrap_or("");
    let stamp = inner.split(':').next().unwrap_or("0");
    let (seconds, millis) = stamp.split_once('.').unwrap_or((stamp, "0"));
    (seconds.parse().unwrap_or(0), millis.parse().unwrap_or(0))
}

/// The `key=value` fields of a record; quoted values unquoted, hex-encoded ones decoded.
pub fn fields(text: &str) -> BTreeMap<String, String> {
    let body = text.split_once("): ").map_or(text, |(_, body)| body);
    let mut out = BTreeMap::new();
    let mut rest = body.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().to_string();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (
                quoted[..end].to_string(),
                quoted.get(end + 1..).unwrap_or(""),
            )
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let decoded = if ["path", "exe", "comm", "name"].contains(&key.as_str()) {
                decode_hex(raw).unwrap_or_else(|| raw.to_string())
            } else {
                raw.to_string()
            };
            (decoded, &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start();
    }
    out
}

fn decode_hex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2)
        || text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect();
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A seccomp record, judged.
enum Refusal {
    /// A refusal by this sandbox's filter, of one of its processes.
    Ours(Box<Alert>),
    /// Another sandbox's, the host's, a compatibility answer, or a record the workload's
    /// own filter made (for a syscall the profile allows).
    NotOurs,
    /// Maybe this sandbox's: its ids are shared and the process is gone.
    Unattributed,
}

/// The alert for a seccomp denial by a process of this sandbox. Its uid says which
/// sandbox: each has a host id range of its own, except sandboxes of one identity or home
/// running at once, which also need the process's pid namespace (while it lives).
/// Compatibility answers (clone3's ENOSYS, so that libc falls back to clone) are not
/// denials; a record for a syscall the profile allows comes from a filter the workload
/// installed itself, so it is not reported as the profile's.
fn seccomp_alert(
    record: &Record,
    context: &AlertContext,
    pid_namespace: Option<(u64, u64)>,
    pids: &mut PidCache,
) -> Refusal {
    let f = fields(&record.text);
    let uid = number(&f, "uid") - i64::from(context.host_id_base);
    if !(0..i64::from(context.host_id_count)).contains(&uid) {
        return Refusal::NotOurs;
    }
    let host_pid = self::number(&f, "pid");
    match crate::process::namespace_of(&format!("/proc/{host_pid}/ns/pid")) {
        Some(acting) if Some(acting) != pid_namespace => return Refusal::NotOurs,
        None if context.ids_shared => return Refusal::Unattributed,
        _ => {}
    }
    let code = f.get("code").cloned().unwrap_or_default();
    let number = number(&f, "syscall");
    let name = i32::try_from(number)
        .ok()
        .and_then(|n| libseccomp::ScmpSyscall::from(n).get_name().ok())
        .unwrap_or_else(|| number.to_string());
    if context.seccomp_shims.contains(&name) || context.seccomp_allowed.contains(&name) {
        return Refusal::NotOurs;
    }
    let exe = f.get("exe").cloned().unwrap_or_default();
    let (seconds, millis) = time(&record.text);
    let updated = chrono::DateTime::from_timestamp(seconds, millis * 1_000_000).unwrap_or_default();
    Refusal::Ours(Box::new(Alert {
        timestamp: seconds,
        updated_time: updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        host_pid,
        pid: pids.inner(host_pid),
        uid,
        process_name: exe.clone(),
        source: exe,
        policy_name: "DefaultPosture".into(),
        severity: "1".into(),
        message: "denied by the profile's syscall filter".into(),
        kind: "MatchedPolicy".into(),
        operation: "Syscall".into(),
        resource: name,
        data: format!("syscall={number} code={code}"),
        enforcer: "seccomp".into(),
        action: "Block".into(),
        result: context.seccomp_result.clone(),
        ..Alert::about(context)
    }))
}

fn number(fields: &BTreeMap<String, String>, key: &str) -> i64 {
    fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The process id inside the sandbox of a host pid, while the process exists.
/// The pid of host process `host_pid` in its own pid namespace (0 once it is gone).
pub fn inner_pid(host_pid: i64) -> i64 {
    std::fs::read_to_string(format!("/proc/{host_pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ids| ids.split_whitespace().last().and_then(|id| id.parse().ok()))
        })
        .unwrap_or(0)
}

fn alerts_of(
    event: &[Record],
    context: &AlertContext,
    domains: &mut HashSet<String>,
    init_pid: i32,
    pids: &mut PidCache,
) -> Vec<Alert> {
    for record in event.iter().filter(|r| r.kind == LANDLOCK_DOMAIN) {
        let f = fields(&record.text);
        if f.get("status").map(String::as_str) == Some("allocated")
            && number(&f, "pid") == i64::from(init_pid)
        {
            if let Some(domain) = f.get("domain") {
                domains.insert(domain.clone());
            }
        }
    }
    let syscall = event
        .iter()
        .find(|r| r.kind == SYSCALL)
        .map(|r| fields(&r.text))
        .unwrap_or_default();
    let mut alerts = Vec::new();
    for record in event.iter().filter(|r| r.kind == LANDLOCK_ACCESS) {
        let f = fields(&record.text);
        if !f.get("domain").is_some_and(|d| domains.contains(d)) {
            continue;
        }
        let (seconds, millis) = time(&record.text);
        let updated =
            chrono::DateTime::from_timestamp(seconds, millis * 1_000_000).unwrap_or_default();
        let blockers = f.get("blockers").cloned().unwrap_or_default();
        let operation = if blockers.contains("fs.execute") {
            "Process"
        } else if blockers.starts_with("scope.") {
            "Syscall"
        } else {
            "File"
        };
        let resource = f.get("path").cloned().unwrap_or_default();
        let rule = context.rule_for(&resource);
        let host_pid = number(&syscall, "pid");
        let uid = number(&syscall, "uid") - i64::from(context.host_id_base);
        let exe = syscall.get("exe").cloned().unwrap_or_default();
        alerts.push(Alert {
            cluster_name: String::new(),
            namespace_name: String::new(),
            timestamp: seconds,
            updated_time: updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            host_name: context.host_name.clone(),
            pod_name: context.id.clone(),
            labels: context.labels_text(),
            container_id: context.id.clone(),
            container_name: context.hostname.clone(),
            host_pid,
            ppid: number(&syscall, "ppid"),
            pid: pids.inner(host_pid),
            uid,
            process_name: exe.clone(),
            parent_process_name: String::new(),
            policy_name: rule.map_or_else(|| "DefaultPosture".to_string(), |r| r.policy.clone()),
            severity: rule.and_then(|r| r.severity).unwrap_or(1).to_string(),
            tags: rule.map(|r| r.tags.join(",")).unwrap_or_default(),
            message: rule.and_then(|r| r.message.clone()).unwrap_or_else(|| {
                if rule.is_some() {
                    "denied by policy".into()
                } else {
                    "denied by the default posture".into()
                }
            }),
            kind: "MatchedPolicy".into(),
            source: exe,
            operation: operation.into(),
            resource,
            data: format!(
                "syscall={} blockers={blockers} domain={}",
                syscall.get("syscall").cloned().unwrap_or_default(),
                f.get("domain").cloned().unwrap_or_default()
            ),
            enforcer: "Landlock".into(),
            action: "Block".into(),
            result: "Permission denied".into(),
        });
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_into_fields() {
        let f = fields(
            r#"audit(1795392143.292:7): domain=1b9d331b0 blockers=fs.read_file path="/usr/lib/os-release" dev="vda" ino=318713"#,
        );
        assert_eq!(f["domain"], "1b9d331b0");
        assert_eq!(f["path"], "/usr/lib/os-release");
        assert_eq!(serial("audit(1795392143.292:7): x=1"), Some(7));
        assert_eq!(time("audit(1795392143.292:7): x=1"), (1795392143, 292));
        let hex = fields("audit(1.0:1): path=2F746D702F6120622E747874 comm=\"sh\"");
        assert_eq!(hex["path"], "/tmp/a b.txt");
    }

    #[test]
    fn only_the_sandbox_domains_become_alerts() {
        let event = vec![
            Record { kind: LANDLOCK_ACCESS, text: r#"audit(10.5:7): domain=abc blockers=fs.execute path="/usr/bin/apt" dev="vda" ino=1"#.into() },
            Record { kind: LANDLOCK_DOMAIN, text: r#"audit(10.5:7): domain=abc status=allocated mode=enforcing pid=42 uid=1000 exe="/moat" comm="moat-init""#.into() },
            Record { kind: SYSCALL, text: r#"audit(10.5:7): arch=c000003e syscall=59 success=no exit=-13 ppid=43 pid=44 uid=1001000 exe="/usr/bin/dash""#.into() },
            Record { kind: END_OF_EVENT, text: "audit(10.5:7): ".into() },
        ];
        let context = AlertContext {
            id: "s1".into(),
            host_name: "host".into(),
            host_id_base: 1_000_000,
            rules: vec![(
                "/usr/bin/apt".into(),
                false,
                crate::RuleMatch {
                    policy: "no-apt".into(),
                    severity: Some(5),
                    ..Default::default()
                },
            )],
            ..AlertContext::default()
        };
        let mut domains = HashSet::new();
        let alerts = alerts_of(&event, &context, &mut domains, 42, &mut PidCache::default());
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(
            (
                alert.policy_name.as_str(),
                alert.operation.as_str(),
                alert.uid,
                alert.host_pid
            ),
            ("no-apt", "Process", 1000, 44)
        );
        assert_eq!(alert.severity, "5");
        let json = serde_json::to_value(alert).unwrap();
        for key in [
            "Timestamp",
            "UpdatedTime",
            "HostName",
            "ContainerID",
            "HostPID",
            "PID",
            "PPID",
            "UID",
            "PolicyName",
            "Type",
            "Operation",
            "Resource",
            "Enforcer",
            "Action",
            "Result",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        // Another domain (another sandbox) is not ours.
        assert!(alerts_of(
            &event,
            &context,
            &mut HashSet::new(),
            99,
            &mut PidCache::default()
        )
        .is_empty());
    }
}
