//! The on-disk record of a live sandbox: which moat process owns it, so `moat gc` can tell
//! a running sandbox from the remains of one whose moat was killed.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Written to `<sandbox dir>/record.json` before anything else of the sandbox exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id.
    pub id: String,
    /// The moat process that runs it.
    pub owner_pid: i32,
    /// That process's start time (clock ticks since boot), to survive pid reuse.
    pub owner_start_ticks: u64,
    /// The id range slot, once leased.
    pub id_slot: Option<u32>,
    /// Whether the slot belongs to a named identity (kept after the sandbox).
    pub id_slot_persistent: bool,
    /// The sandbox's address, when it has a network of its own (its host-side interfaces
    /// and rules are named after it).
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
}

impl SandboxRecord {
    /// A record owned by the calling process.
    pub fn for_current_process(id: &str) -> Self {
        let pid = std::process::id();
        Self {
            id: id.to_string(),
            owner_pid: i32::try_from(pid).unwrap_or(-1),
            owner_start_ticks: crate::process::start_ticks(pid).unwrap_or(0),
            id_slot: None,
            id_slot_persistent: false,
            address: None,
        }
    }

    /// Whether the owning moat process still runs.
    pub fn owner_alive(&self) -> bool {
        u32::try_from(self.owner_pid)
            .is_ok_and(|pid| crate::process::is_alive(pid, self.owner_start_ticks))
    }

    /// Saves the record in `dir`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::status::replace_file(&dir.join("record.json"), &text)
    }

    /// Loads the record of `dir`, if any.
    pub fn load(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&fs::read(dir.join("record.json")).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_record_is_alive_and_a_stale_one_is_not() {
        let record = SandboxRecord::for_current_process("x");
        assert!(record.owner_alive());
        let stale = SandboxRecord {
            owner_start_ticks: record.owner_start_ticks + 1,
            ..record
        };
        assert!(!stale.owner_alive());
    }
}
