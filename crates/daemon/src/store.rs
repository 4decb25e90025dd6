//! The daemon's records on disk, one directory per sandbox under `STATE/sandboxes/ID`:
//!
//! | file | what |
//! |---|---|
//! | `record.json` | what the API shows (no env values), rewritten whole on each change |
//! | `log` | the workload's stdout and stderr, and `moat run`'s own lines |
//! | `status` | `moat run --status-file`: how the run is going, even with no daemon |
//! | `env` | `moat run --env-file`, 0600, removed once the sandbox has started |
//! | `alerts.jsonl` | `moat run --alerts` |
//!
//! A daemon that starts again reads the records back and so knows every sandbox it
//! started, running or not.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::RunFiles;

/// Where a sandbox is (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// moat builds the sandbox.
    Starting,
    /// The workload runs.
    Running,
    /// SIGTERM sent; waiting for the end.
    Stopping,
    /// The workload ended.
    Exited,
    /// The sandbox could not start.
    Failed,
}

impl State {
    /// Whether the sandbox's supervisor may still be alive.
    pub fn is_live(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }

    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
        }
    }
}

/// One sandbox, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The sandbox id.
    pub id: String,
    /// The caller's handle.
    pub name: Option<String>,
    /// Where it is.
    pub state: State,
    /// Its address.
    pub address: Option<Ipv4Addr>,
    /// The host end of its link.
    pub host_address: Option<Ipv4Addr>,
    /// Published ports.
    pub ports: Vec<u16>,
    /// The pid of its `moat run`.
    pub pid: Option<u32>,
    /// That process's start time (clock ticks after boot), to tell it from a reused pid.
    pub pid_start: Option<u64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// When it was asked for (RFC 3339).
    pub created: String,
    /// When the workload started.
    pub started: Option<String>,
    /// When it ended.
    pub finished: Option<String>,
    /// The workload's exit status.
    pub exit_code: Option<i32>,
    /// Whether the kernel killed a process of it for lack of memory.
    pub oom_killed: bool,
    /// Why it failed.
    pub error: Option<String>,
}

impl Record {
    /// A sandbox just asked for: `starting`, nothing known yet but what the caller gave.
    pub fn new(
        id: String,
        name: Option<String>,
        ports: Vec<u16>,
        labels: BTreeMap<String, String>,
    ) -> Record {
        Record {
            id,
            name,
            state: State::Starting,
            address: None,
            host_address: None,
            ports,
            pid: None,
            pid_start: None,
            labels,
            created: now(),
            started: None,
            finished: None,
            exit_code: None,
            oom_killed: false,
            error: None,
        }
    }
}

/// Now, as the API writes times.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The daemon's state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (and creates, 0700) the state directory.
    pub fn open(root: &Path) -> io::Result<Store> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("sandboxes"))?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of sandbox `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    /// The files `moat run` writes for sandbox `id`.
    pub fn run_files(&self, id: &str) -> RunFiles {
        let dir = self.dir(id);
        RunFiles {
            status: dir.join("status"),
            env: dir.join("env"),
            alerts: dir.join("alerts.jsonl"),
        }
    }

    /// The log of sandbox `id`.
    pub fn log(&self, id: &str) -> PathBuf {
        self.dir(id).join("log")
    }

    /// Makes the directory of a new sandbox and writes its env file (0600).
    pub fn create(&self, record: &Record, env: &str) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(self.dir(&record.id))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.run_files(&record.id).env)?;
        file.write_all(env.as_bytes())?;
        self.save(record)
    }

    /// Rewrites a record whole (a temporary file renamed over it).
    pub fn save(&self, record: &Record) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        moat_sandbox::status::replace_file(&self.dir(&record.id).join("record.json"), &text)
    }

    /// Every record on disk; unreadable ones are reported and skipped.
    pub fn load_all(&self) -> (Vec<Record>, Vec<String>) {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.root.join("sandboxes")) else {
            return (records, problems);
        };
        for entry in entries.flatten() {
            let path = entry.path().join("record.json");
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_slice(&text).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(err) => problems.push(format!("{}: {err}", path.display())),
            }
        }
        (records, problems)
    }

    /// Removes the env file, which holds the workload's secrets; `moat run` has read it.
    pub fn forget_env(&self, id: &str) {
        let _ = std::fs::remove_file(self.run_files(id).env);
    }

    /// Removes everything of sandbox `id`.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir(id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_the_env_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = Record::new("abc".into(), Some("n".into()), vec![8888], BTreeMap::new());
        store.create(&record, "TOKEN=x\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.run_files("abc").env)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(store.create(&record, "").is_err(), "an id is created once");
        let (records, problems) = store.load_all();
        assert_eq!((records, problems), (vec![record], vec![]));
        store.forget_env("abc");
        assert!(!store.run_files("abc").env.exists());
        store.remove("abc").unwrap();
        store.remove("abc").unwrap();
        assert!(store.load_all().0.is_empty());
    }
}
