//! Host id ranges for sandbox user namespaces.
//!
//! Each sandbox maps its ids 0..65536 onto a host range that no host account
//! (/etc/passwd, /etc/group), no subordinate range (/etc/subuid, /etc/subgid) and no other
//! live sandbox holds, so a process that escapes its namespaces is still a nobody on the
//! host and cannot touch another tenant's files. Host id 0 is never mapped.
//!
//! Leases are files under /var/lib/moat/ids/slots, created with O_EXCL under a lock:
//! `sandbox <id>` for a run with neither identity nor home (released at exit, reclaimed by
//! `moat gc`), `identity <name>` for a named tenant and `home <path>` for a home bound
//! without an identity (both kept, so the home keeps its owner and no later sandbox is
//! handed a range that still owns someone's files).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use moat_policy::ID_RANGE_SIZE;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use thiserror::Error;

/// First host id handed to sandboxes: above every range a distribution hands out
/// (system and login users, subordinate ranges at 100000+).
pub const FIRST_HOST_ID: u32 = 1 << 30;
/// Number of slots of [`ID_RANGE_SIZE`] ids above [`FIRST_HOST_ID`] (up to 0xfffe0000,
/// leaving the top range alone: 4294967295 is the invalid id and 65534 of every range
/// is `nobody`).
pub const SLOT_COUNT: u32 = ((0xFFFE_0000u64 - FIRST_HOST_ID as u64) / ID_RANGE_SIZE as u64) as u32;

/// A reserved host id range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdLease {
    /// Slot number.
    pub slot: u32,
    /// First host id: the sandbox's id 0 maps here.
    pub host_base: u32,
    /// Ids in the range.
    pub count: u32,
    /// Kept after the sandbox ends.
    pub persistent: bool,
}

impl IdLease {
    /// The host id of sandbox id `inner`.
    pub fn host_id(&self, inner: u32) -> u32 {
        self.host_base + inner
    }
}

/// Id allocation failed.
#[derive(Debug, Error)]
pub enum IdError {
    /// Filesystem trouble in the lease directory.
    #[error("id range leases in {dir}")]
    Io {
        /// The lease directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Every slot is taken.
    #[error("no free host id range: all {0} slots are leased (run `moat gc` to reclaim ranges of dead sandboxes)")]
    Exhausted(u32),
}

/// Who a range is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOwner<'a> {
    /// One sandbox, for its lifetime.
    Sandbox(&'a str),
    /// A named tenant, for good.
    Identity(&'a str),
    /// Whoever uses this home directory, for good.
    Home(&'a Path),
}

/// Hands out and takes back [`IdLease`]s.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    dir: PathBuf,
}

impl IdAllocator {
    /// Leases kept under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn io(&self) -> impl Fn(io::Error) -> IdError + '_ {
        |source| IdError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    fn lock(&self) -> Result<Flock<File>, IdError> {
        fs::create_dir_all(self.dir.join("slots")).map_err(self.io())?;
        fs::create_dir_all(self.dir.join("identities")).map_err(self.io())?;
        fs::create_dir_all(self.dir.join("homes")).map_err(self.io())?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("lock"))
            .map_err(self.io())?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| self.io()(errno.into()))
    }

    /// Leases a range for `owner`: a fresh one for a sandbox, the same one every time for
    /// an identity or a home.
    pub fn acquire(&self, owner: LeaseOwner<'_>) -> Result<IdLease, IdError> {
        let _lock = self.lock()?;
        let (record, label) = match owner {
            LeaseOwner::Sandbox(id) => {
                let slot = self.claim(&format!("sandbox {id}\n"))?;
                return Ok(lease(slot, false));
            }
            LeaseOwner::Identity(name) => (
                self.dir.join("identities").join(name),
                format!("identity {name}"),
            ),
            LeaseOwner::Home(path) => (
                self.dir.join("homes").join(path_key(path)),
                format!("home {}", path.display()),
            ),
        };
        if let Ok(text) = fs::read_to_string(&record) {
            let mut lines = text.lines();
            let slot = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
            let recorded_owner = lines.next().unwrap_or(&label);
            if let Some(slot) = slot.filter(|s| *s < SLOT_COUNT) {
                if recorded_owner == label {
                    return Ok(lease(slot, true));
                }
            }
        }
        let slot = self.claim(&format!("{label}\n"))?;
        write_atomically(&record, format!("{slot}\n{label}\n").as_bytes()).map_err(self.io())?;
        Ok(lease(slot, true))
    }

    fn claim(&self, owner: &str) -> Result<u32, IdError> {
        let taken = HostIds::read();
        // Start at a pseudo-random slot so concurrent hosts sharing nothing still spread.
        let start = std::process::id() % SLOT_COUNT;
        for offset in 0..SLOT_COUNT {
            let slot = (start + offset) % SLOT_COUNT;
            let base = lease(slot, false).host_base;
            if taken.overlaps(base, ID_RANGE_SIZE) {
                continue;
            }
            let path = self.dir.join("slots").join(slot.to_string());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    if let Err(err) = file.write_all(owner.as_bytes()) {
                        // An ownerless slot file would be lost to the allocator for good.
                        let _ = fs::remove_file(&path);
                        return Err(self.io()(err));
                    }
                    return Ok(slot);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(self.io()(err)),
            }
        }
        Err(IdError::Exhausted(SLOT_COUNT))
    }

    /// Gives a lease back (identity leases are kept).
    pub fn release(&self, lease: &IdLease) -> Result<(), IdError> {
        if lease.persistent {
            return Ok(());
        }
        let _lock = self.lock()?;
        match fs::remove_file(self.dir.join("slots").join(lease.slot.to_string())) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(self.io()(err)),
            _ => Ok(()),
        }
    }

    /// Sandbox ids holding a non-persistent lease, with their slots.
    pub fn sandbox_leases(&self) -> Result<Vec<(u32, String)>, IdError> {
        let slots = self.dir.join("slots");
        let entries = match fs::read_dir(&slots) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(self.io()(err)),
        };
        let mut leases = Vec::new();
        for entry in entries.flatten() {
            let Some(slot) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(id) = text.trim().strip_prefix("sandbox ") {
                leases.push((slot, id.to_string()));
            }
        }
        Ok(leases)
    }

    /// Drops the lease of a dead sandbox.
    pub fn release_slot(&self, slot: u32) -> Result<(), IdError> {
        self.release(&lease(slot, false))
    }
}

fn lease(slot: u32, persistent: bool) -> IdLease {
    IdLease {
        slot,
        host_base: FIRST_HOST_ID + slot * ID_RANGE_SIZE,
        count: ID_RANGE_SIZE,
        persistent,
    }
}

/// A file name for a home path: FNV-1a of its bytes. The record also holds the path, and
/// a record for another path is never used.
fn path_key(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, path)
}

/// Ids the host already uses: accounts and subordinate ranges.
#[derive(Debug, Default)]
struct HostIds {
    ranges: Vec<(u64, u64)>,
}

impl HostIds {
    fn read() -> Self {
        let mut ranges = Vec::new();
        for file in ["/etc/passwd", "/etc/group"] {
            for line in fs::read_to_string(file).unwrap_or_default().lines() {
                if let Some(id) = line.split(':').nth(2).and_then(|f| f.parse::<u64>().ok()) {
                    ranges.push((id, 1));
                }
            }
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            for line in fs::read_to_string(file).unwrap_or_default().lines() {
                let mut fields = line.split(':').skip(1);
                if let (Some(Ok(start)), Some(Ok(count))) = (
                    fields.next().map(str::parse::<u64>),
                    fields.next().map(str::parse::<u64>),
                ) {
                    ranges.push((start, count));
                }
            }
        }
        Self { ranges }
    }

    fn overlaps(&self, base: u32, count: u32) -> bool {
        let (start, end) = (u64::from(base), u64::from(base) + u64::from(count));
        self.ranges
            .iter()
            .any(|&(s, c)| s < end && start < s.saturating_add(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_include_host_root_and_stay_in_bounds() {
        let first = lease(0, false);
        let last = lease(SLOT_COUNT - 1, false);
        assert!(first.host_base >= FIRST_HOST_ID);
        assert!(u64::from(last.host_base) + u64::from(last.count) <= 0xFFFE_0000);
    }

    #[test]
    fn concurrent_leases_are_distinct_and_identities_are_stable() {
        let dir = tempfile::tempdir().unwrap();
        let ids = IdAllocator::new(dir.path());
        let a = ids.acquire(LeaseOwner::Sandbox("a")).unwrap();
        let b = ids.acquire(LeaseOwner::Sandbox("b")).unwrap();
        assert_ne!(a.slot, b.slot);
        let alice = ids.acquire(LeaseOwner::Identity("alice")).unwrap();
        assert!(alice.persistent);
        assert_ne!(alice.slot, a.slot);
        assert_ne!(alice.slot, b.slot);
        ids.release(&alice).unwrap();
        let again = ids.acquire(LeaseOwner::Identity("alice")).unwrap();
        assert_eq!(again.slot, alice.slot, "an identity keeps its range");
        let home = ids
            .acquire(LeaseOwner::Home(Path::new("/srv/homes/bob")))
            .unwrap();
        assert!(home.persistent);
        assert_ne!(home.slot, alice.slot);
        let same_home = ids
            .acquire(LeaseOwner::Home(Path::new("/srv/homes/bob")))
            .unwrap();
        assert_eq!(same_home.slot, home.slot, "a home keeps its range");
        ids.release(&a).unwrap();
        let leases = ids.sandbox_leases().unwrap();
        assert_eq!(leases, vec![(b.slot, "b".to_string())]);
    }

    #[test]
    fn host_accounts_block_their_ranges() {
        let host = HostIds {
            ranges: vec![(FIRST_HOST_ID as u64 + 5, 1)],
        };
        assert!(host.overlaps(FIRST_HOST_ID, ID_RANGE_SIZE));
        assert!(!host.overlaps(FIRST_HOST_ID + ID_RANGE_SIZE, ID_RANGE_SIZE));
    }
}
