//! One event stream for the machine: sandbox lifecycle events and the alerts of every
//! sandbox's policies, as JSON lines with KubeArmor's field names. Each event is
//! appended to `STATE/events.jsonl` and sent to the clients of `GET /v1/events`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;
use tokio::sync::broadcast;

/// Size at which `events.jsonl` is moved to `events.jsonl.1` and started afresh.
pub const EVENT_LOG_CAP: u64 = 64 << 20;

/// The stream.
#[derive(Debug)]
pub struct Events {
    file: Mutex<Option<std::fs::File>>,
    path: PathBuf,
    sender: broadcast::Sender<String>,
    host: String,
}

impl Events {
    /// Opens `path` for appending (created 0600).
    pub fn open(path: &Path) -> std::io::Result<Events> {
        let file = Self::append(path)?;
        let (sender, _) = broadcast::channel(4096);
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        Ok(Events {
            file: Mutex::new(Some(file)),
            path: path.to_path_buf(),
            sender,
            host,
        })
    }

    /// The file events are appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A receiver of the events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }

    /// Publishes one event (a JSON object on one line).
    pub fn publish(&self, line: String) {
        if let Ok(mut guard) = self.file.lock() {
            if let Some(file) = guard.as_mut() {
                if let Err(err) = writeln!(file, "{line}") {
                    tracing::warn!("cannot append to {}: {err}", self.path.display());
                }
                // One earlier file is kept: the log on disk stays under twice the cap.
                if file.metadata().is_ok_and(|m| m.len() > EVENT_LOG_CAP) {
                    let _ = std::fs::rename(&self.path, self.path.with_extension("jsonl.1"));
                    *guard = Self::append(&self.path).ok();
                }
            }
        }
        let _ = self.sender.send(line);
    }

    fn append(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
    }

    /// A lifecycle event of a sandbox (`Type: SandboxEvent`).
    pub fn lifecycle(
        &self,
        id: &str,
        name: Option<&str>,
        labels: &BTreeMap<String, String>,
        operation: &str,
        data: &str,
    ) {
        let now = chrono::Utc::now();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let event = json!({
            "Timestamp": now.timestamp(),
            "UpdatedTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "HostName": self.host,
            "ContainerID": id,
            "ContainerName": name.unwrap_or(id),
            "Labels": labels.join(","),
            "Type": "SandboxEvent",
            "Operation": operation,
            "Resource": name.unwrap_or(id),
            "Data": data,
        });
        self.publish(event.to_string());
    }
}

/// Follows one sandbox's alerts file: the complete lines added since the last call.
#[derive(Debug)]
pub struct AlertTail {
    path: PathBuf,
    offset_path: PathBuf,
    offset: u64,
}

impl AlertTail {
    /// Follows `path`, resuming after what an earlier daemon forwarded (kept beside it).
    pub fn new(path: PathBuf) -> AlertTail {
        let offset_path = path.with_extension("offset");
        let offset = std::fs::read_to_string(&offset_path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        AlertTail {
            path,
            offset_path,
            offset,
        }
    }

    /// The complete lines written since the last call.
    pub fn read_new(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        // At most 4 MiB per call: a sandbox flooding its alerts cannot make the daemon
        // hold the whole file; the rest comes on the next calls.
        let mut text = Vec::new();
        if file.take(4 << 20).read_to_end(&mut text).is_err() {
            return Vec::new();
        }
        let Some(end) = text.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let lines = String::from_utf8_lossy(&text[..end])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        self.offset += end as u64 + 1;
        let _ = std::fs::write(&self.offset_path, self.offset.to_string());
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_forwarded_once_even_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let mut tail = AlertTail::new(path.clone());
        assert_eq!(tail.read_new(), vec!["{\"a\":1}".to_string()]);
        assert!(tail.read_new().is_empty(), "a half-written line waits");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "2}}").unwrap();
        let mut restarted = AlertTail::new(path);
        assert_eq!(restarted.read_new(), vec!["{\"b\":2}".to_string()]);
    }

    #[test]
    fn events_reach_subscribers_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::open(&dir.path().join("events.jsonl")).unwrap();
        let mut receiver = events.subscribe();
        events.lifecycle("abc", Some("n"), &BTreeMap::new(), "create", "");
        let line = receiver.try_recv().unwrap();
        assert!(line.contains("\"Operation\":\"create\""), "{line}");
        let on_disk = std::fs::read_to_string(events.path()).unwrap();
        assert_eq!(on_disk.trim(), line);
    }
}
