//! Alerts for Audit rules: files a sandbox opens and programs it executes that an Audit
//! rule names. Landlock reports only what it denies, so what is let through is watched
//! with fanotify: inode marks on the named files and directories, placed from outside
//! through the sandbox's own root (`/proc/INIT/root`) before the workload starts.
//!
//! Marks are on inodes, which the host shares with the sandbox (system files are bind
//! mounts), so host processes opening the same files cause events too. Each event's file
//! descriptor tells the mount it was opened through; only events through the sandbox's
//! own mounts (its mount namespace, no mount syscalls inside) become alerts. So a
//! process's exit before its event is read costs nothing but its pid.
//!
//! Limits: the kernel merges identical events queued back to back (same process, same
//! file), so a tight loop of opens may give fewer alerts than opens; a full queue
//! (16,384 events) drops events, counted in a `SystemEvent` alert; directories created
//! during the run under a recursive rule are not watched.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use crate::alert::{Alert, AlertContext, AlertWriter, RuleMatch};
use crate::process::ProcessCache;

/// Directories one sandbox may have watched under recursive rules.
const MAX_WATCHED_DIRECTORIES: usize = 65_536;
/// Symbolic links followed while resolving one path, as the kernel allows.
const MAX_LINKS: usize = 40;

/// An Audit rule to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditWatch {
    /// The path in the sandbox (directories end in `/`).
    pub path: String,
    /// A directory rule.
    pub directory: bool,
    /// With subdirectories.
    pub recursive: bool,
    /// Executions (process rules) rather than opens (file rules).
    pub exec: bool,
    /// What the alert says.
    pub rule: RuleMatch,
}

/// What the watcher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Alerts handled: written, or counted by the rate limit.
    pub alerts: u64,
    /// Times the kernel's event queue overflowed (an unknown number of events each).
    pub overflows: u64,
    /// Rule paths that do not exist in the sandbox, so nothing can open them.
    pub missing: Vec<String>,
    /// Why the watcher stopped early, if it did.
    pub error: Option<String>,
}

impl crate::reader::Report for AuditReport {
    fn panicked() -> Self {
        AuditReport {
            error: Some("the audit watcher panicked".into()),
            ..AuditReport::default()
        }
    }
}

/// A running watcher. Finish it once the sandbox's processes are gone: events are queued
/// by the open or exec itself, so none arrives later.
pub type AuditHandle = crate::reader::ReaderThread<AuditReport>;

/// A watched path: where it resolved to in the sandbox.
#[derive(Debug, Clone)]
struct Watched {
    resolved: String,
    /// Device and inode of a watched file: a file rule matches its inode, whatever path
    /// it was opened by (a hard link, a name it was renamed to, a deleted file).
    inode: Option<(u64, u64)>,
    watch: AuditWatch,
}

/// What the reader needs to tell the sandbox's events from others'.
struct Sandbox {
    /// Its mounts: an event counts only if its file was opened through one of them.
    mounts: HashSet<u64>,
    /// Its pid namespace: a process still alive must be in it (the host can reach the
    /// sandbox's mounts through /proc/PID/root).
    pid_namespace: Option<(u64, u64)>,
}

/// Marks what `watches` name in the sandbox whose init is `init_pid` (created, not
/// started), and starts a thread writing an alert for every open or exec of them through
/// the sandbox's mounts.
pub fn spawn_audit(
    context: AlertContext,
    writer: AlertWriter,
    init_pid: i32,
    watches: Vec<AuditWatch>,
) -> io::Result<AuditHandle> {
    let group = Fanotify::init(
        InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
        EventFFlags::from_bits_truncate(
            (OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_LARGEFILE).bits() as u32,
        ),
    )
    .map_err(|e| io::Error::other(format!("fanotify (Linux 5.1+, CAP_SYS_ADMIN): {e}")))?;
    let root = PathBuf::from(format!("/proc/{init_pid}/root"));
    let mounts = crate::mountinfo::read(&format!("/proc/{init_pid}/mountinfo"))?;
    // The sandbox's mount points, as paths under `root`.
    let mount_points: HashSet<PathBuf> = mounts
        .iter()
        .map(|mount| root.join(mount.point.strip_prefix("/").unwrap_or(&mount.point)))
        .collect();
    let mut report = AuditReport::default();
    let mut watched = Vec::new();
    let mut directories = 0usize;
    for watch in watches {
        let Some(resolved) = resolve_in_root(&root, watch.path.trim_end_matches('/')) else {
            report.missing.push(watch.path.clone());
            continue;
        };
        let mask = if watch.exec {
            MaskFlags::FAN_OPEN_EXEC
        } else {
            MaskFlags::FAN_OPEN
        };
        let host = root.join(resolved.trim_start_matches('/'));
        let mark = |path: &Path, mask: MaskFlags| {
            group
                .mark(
                    MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_DONT_FOLLOW,
                    mask,
                    None,
                    Some(path),
                )
                .map_err(|e| io::Error::other(format!("cannot watch {}: {e}", watch.path)))
        };
        let mut inode = None;
        if watch.directory {
            let mut pending = vec![host.clone()];
            while let Some(dir) = pending.pop() {
                directories += 1;
                if directories > MAX_WATCHED_DIRECTORIES {
                    return Err(io::Error::other(format!(
                        "Audit rules name more than {MAX_WATCHED_DIRECTORIES} directories (under {}); name fewer or narrower directories",
                        watch.path
                    )));
                }
                mark(&dir, mask | MaskFlags::FAN_EVENT_ON_CHILD)?;
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    if is_dir && watch.recursive {
                        pending.push(entry.path());
                    } else if !is_dir && mount_points.contains(&entry.path()) {
                        // A file mounted here (moat binds files into the sandbox's /etc)
                        // is another filesystem's inode: the directory's mark does not
                        // see it, so it gets a mark of its own.
                        mark(&entry.path(), mask)?;
                    }
                }
            }
        } else {
            mark(&host, mask)?;
            inode = std::fs::metadata(&host).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
        }
        watched.push(Watched {
            resolved,
            inode,
            watch,
        });
    }
    let sandbox = Sandbox {
        mounts: mounts.iter().map(|mount| mount.id).collect(),
        pid_namespace: crate::process::namespace_of(&format!("/proc/{init_pid}/ns/pid")),
    };
    // Held until the last event is read: an event's file names its path through its
    // mount, and once the sandbox's mount namespace is gone its mounts are detached and
    // a path reads as relative to the mount (`/notes` for `/home/jovyan/notes`).
    let mount_namespace = std::fs::File::open(format!("/proc/{init_pid}/ns/mnt"))?;
    AuditHandle::spawn("moat-audit", move |stop| {
        let report = read(&group, &watched, &sandbox, &context, writer, report, stop);
        drop(mount_namespace);
        report
    })
}

fn read(
    group: &Fanotify,
    watched: &[Watched],
    sandbox: &Sandbox,
    context: &AlertContext,
    mut writer: AlertWriter,
    mut report: AuditReport,
    stop: &AtomicBool,
) -> AuditReport {
    let mut processes = ProcessCache::default();
    loop {
        // Once asked to stop, one last read empties the queue: the sandbox is gone.
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping {
            let mut fds = [PollFd::new(group.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => {
                    report.error = Some(format!("waiting for file events: {err}"));
                    break;
                }
            }
        }
        loop {
            let events = match group.read_events() {
                Ok(events) if !events.is_empty() => events,
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    report.error = Some(format!("reading file events: {err}"));
                    return finish(report, writer, context);
                }
            };
            for event in events {
                if event.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                    report.overflows += 1;
                    continue;
                }
                let Some(fd) = event.fd() else { continue };
                let raw = fd.as_raw_fd();
                if !mount_of(raw).is_some_and(|id| sandbox.mounts.contains(&id)) {
                    // Through a mount of the host's, or of another sandbox.
                    continue;
                }
                let pid = event.pid();
                let acting_namespace = crate::process::namespace_of(&format!("/proc/{pid}/ns/pid"));
                if acting_namespace.is_some() && acting_namespace != sandbox.pid_namespace {
                    // A process outside, through /proc/PID/root.
                    continue;
                }
                let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{raw}")) else {
                    continue;
                };
                let path = path.to_string_lossy().into_owned();
                let inode = nix::sys::stat::fstat(raw)
                    .ok()
                    .map(|st| (st.st_dev, st.st_ino));
                let exec = event.mask().contains(MaskFlags::FAN_OPEN_EXEC);
                let Some(watch) = matching(watched, &path, inode, exec) else {
                    continue;
                };
                let process = processes.get(i64::from(pid), "").clone();
                let parent = processes.get(process.ppid, "").exe.clone();
                if exec {
                    // The process runs another program from now on.
                    processes.forget(i64::from(pid));
                }
                let alert = audit_alert(context, watch, &path, event.pid(), (&process, &parent));
                match writer.write(&alert) {
                    Ok(()) => report.alerts += 1,
                    Err(err) => report.error = Some(format!("cannot write alerts: {err}")),
                }
            }
        }
        // The queue is empty (the poll waits at most 100 ms): nothing is gained by buffering.
        if let Err(err) = writer.idle() {
            report.error = Some(format!("cannot write alerts: {err}"));
        }
        if stopping {
            break;
        }
    }
    finish(report, writer, context)
}

fn finish(mut report: AuditReport, mut writer: AlertWriter, context: &AlertContext) -> AuditReport {
    if report.overflows > 0 {
        let _ = writer.write(&Alert::missing(
            context,
            "File",
            format!(
                "Audit alerts may be missing: the kernel's file event queue overflowed {} time(s)",
                report.overflows
            ),
            format!("queue_overflows={}", report.overflows),
        ));
    }
    if let Err(err) = writer.flush() {
        report.error = Some(format!("cannot write alerts: {err}"));
    }
    report
}

/// The watch an event on the file at `path` (with `inode`) belongs to: the most specific
/// one of its kind. A file rule matches by inode, so no other name of the file escapes it.
fn matching<'a>(
    watched: &'a [Watched],
    path: &str,
    inode: Option<(u64, u64)>,
    exec: bool,
) -> Option<&'a AuditWatch> {
    watched
        .iter()
        // A file rule's mark reports opens; an exec is an open too.
        .filter(|w| !w.watch.exec || exec)
        .filter(|w| {
            if !w.watch.directory {
                return inode.is_some() && w.inode == inode || path == w.resolved;
            }
            let dir = format!("{}/", w.resolved.trim_end_matches('/'));
            match path.strip_prefix(&dir) {
                Some(rest) => w.watch.recursive || !rest.contains('/'),
                None => false,
            }
        })
        // An exec also opens the file: a file rule matches it too, a process rule wins.
        .max_by_key(|w| (w.watch.exec == exec, w.resolved.len()))
        .map(|w| &w.watch)
}

fn audit_alert(
    context: &AlertContext,
    watch: &AuditWatch,
    path: &str,
    host_pid: i32,
    (process, parent): (&crate::process::Process, &str),
) -> Alert {
    let rule = &watch.rule;
    Alert {
        host_pid: i64::from(host_pid),
        ppid: process.ppid,
        pid: process.pid,
        uid: if process.host_uid < 0 {
            -1
        } else {
            process.host_uid - i64::from(context.host_id_base)
        },
        // The event comes as the program is opened for execution, before the process
        // switches to it: the process is that program from then on.
        process_name: if watch.exec {
            path.to_string()
        } else {
            process.exe.clone()
        },
        parent_process_name: parent.to_string(),
        policy_name: rule.policy.clone(),
        severity: rule.severity.unwrap_or(1).to_string(),
        tags: rule.tags.join(","),
        message: rule
            .message
            .clone()
            .unwrap_or_else(|| "audited by policy".into()),
        kind: "MatchedPolicy".into(),
        source: process.exe.clone(),
        operation: if watch.exec { "Process" } else { "File" }.into(),
        resource: path.to_string(),
        data: format!(
            "event={} rule={}",
            if watch.exec { "open_exec" } else { "open" },
            watch.path
        ),
        enforcer: "fanotify".into(),
        action: "Audit".into(),
        result: "Passed".into(),
        ..Alert::about(context)
    }
}

/// The mount id an open file descriptor of this process was opened through.
fn mount_of(fd: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `path` (absolute, in the sandbox) with every symbolic link resolved as the sandbox
/// sees it: absolute targets are relative to `root`, and `..` never leaves it. `None`
/// when a component does not exist.
fn resolve_in_root(root: &Path, path: &str) -> Option<String> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(resolved.join("/")).join(&component);
        let metadata = std::fs::symlink_metadata(&candidate).ok()?;
        if metadata.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(&candidate).ok()?;
            let target = target.to_string_lossy();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        } else {
            resolved.push(component);
        }
    }
    Some(format!("/{}", resolved.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let root = tempfile_root();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/tool"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/tool", r.join("usr/bin/alias")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("usr/escape")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/bin/tool").as_deref(),
            Some("/usr/bin/tool")
        );
        assert_eq!(
            resolve_in_root(r, "/usr/bin/alias").as_deref(),
            Some("/usr/bin/tool")
        );
        // `..` stops at the root, as chroot does: the host's /etc is not reached.
        assert_eq!(resolve_in_root(r, "/usr/escape"), None);
        assert_eq!(resolve_in_root(r, "/missing"), None);
    }

    #[test]
    fn events_match_the_most_specific_watch() {
        let watch = |path: &str, directory, recursive, exec| Watched {
            resolved: path.trim_end_matches('/').to_string(),
            inode: None,
            watch: AuditWatch {
                path: path.into(),
                directory,
                recursive,
                exec,
                rule: RuleMatch {
                    policy: path.into(),
                    ..RuleMatch::default()
                },
            },
        };
        let watched = [
            watch("/etc/", true, false, false),
            watch("/usr/", true, true, false),
            watch("/usr/bin/", true, false, true),
        ];
        let policy =
            |path: &str, exec| matching(&watched, path, None, exec).map(|w| w.rule.policy.clone());
        assert_eq!(policy("/etc/passwd", false).as_deref(), Some("/etc/"));
        assert_eq!(policy("/etc/ssl/x", false), None, "not recursive");
        assert_eq!(policy("/usr/lib/a/b", false).as_deref(), Some("/usr/"));
        assert_eq!(policy("/usr/bin/curl", true).as_deref(), Some("/usr/bin/"));
        assert_eq!(policy("/usr/bin/curl", false).as_deref(), Some("/usr/"));
        assert_eq!(
            policy("/usr/lib/ld.so", true).as_deref(),
            Some("/usr/"),
            "an exec is an open of the file"
        );
        assert_eq!(policy("/opt/x", true), None);
    }

    /// A scratch directory for the resolver test.
    fn tempfile_root() -> TempDir {
        TempDir::new()
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "moat-resolve-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
