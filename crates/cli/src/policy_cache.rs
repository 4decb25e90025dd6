//! Parsed policy files, kept between runs.
//!
//! Every sandbox start reads its policy files again, and the YAML parser is slow: 10,000
//! rules take it about 17 ms, a third of what such a policy adds to a start. A JupyterHub
//! starts many sandboxes with the same few files, so `moat run` keeps each file's parse
//! and check (policies and diagnostics) as JSON, which reads back about four times as
//! fast, in a root-only directory under /run/moat.
//!
//! An entry is named by a hash of the moat binary's identity (device, inode, size and
//! modification time of the running executable, so a rebuild or an upgrade counts even
//! when the version number does not change), the file's path and its whole text, and
//! holds that identity, the path, the text's length and a second, independent hash of
//! the text, which must all match: a file that changed, or a moat that was replaced,
//! misses and is parsed again. Anything wrong with the cache (not root's, not private,
//! an entry that does not read back) is a miss, never an error, and an entry is only
//! stored if it reads back equal to the parse: the cache can make a start faster, not
//! different. Entries are written while the sandbox runs, off the start's path (a
//! sandbox that ends within milliseconds may end first, and leave that to the next
//! start), and at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes are kept, least
//! recently used first out.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use moat_policy::kubearmor::{check_text, Diagnostic, LoadedPolicy};
use serde::{Deserialize, Serialize};

/// Entries kept; the least recently used go first.
pub const MAX_ENTRIES: usize = 64;

/// Bytes kept (an entry is about three times its YAML: 10,000 rules make 1.3 MB).
pub const MAX_BYTES: u64 = 64 << 20;

/// Changes when the entries' layout does.
const FORMAT: u32 = 2;

/// One file's parse, as stored.
#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    /// [`build_identity`] of the moat that stored it.
    build: String,
    file: PathBuf,
    /// Hash of the text (a second one, independent of the entry's name).
    text_hash: u64,
    text_len: usize,
    policies: Vec<LoadedPolicy>,
    diagnostics: Vec<Diagnostic>,
}

/// The cache in `dir`.
#[derive(Debug, Clone)]
pub struct PolicyCache {
    dir: PathBuf,
}

/// A parse to store once the sandbox has started, and which of the policies and
/// diagnostics loaded with it are its own (a file listed twice is in them twice).
#[derive(Debug, Clone)]
pub struct Pending {
    file: PathBuf,
    key: String,
    build: String,
    text_hash: u64,
    text_len: usize,
    policies: Range<usize>,
    diagnostics: Range<usize>,
}

impl Pending {
    /// The same parse, once `policies` policies and `diagnostics` diagnostics are put
    /// before those it was loaded with.
    pub fn shifted(mut self, policies: usize, diagnostics: usize) -> Pending {
        self.policies = self.policies.start + policies..self.policies.end + policies;
        self.diagnostics = self.diagnostics.start + diagnostics..self.diagnostics.end + diagnostics;
        self
    }
}

/// The policies and diagnostics of some files, and the parses not cached yet.
pub struct Loaded {
    pub policies: Vec<LoadedPolicy>,
    pub diagnostics: Vec<Diagnostic>,
    pub pending: Vec<Pending>,
}

fn hash_of(salt: &str, build: &str, file: &Path, text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (salt, FORMAT, build, file, text).hash(&mut hasher);
    hasher.finish()
}

/// The running moat binary: its version and the device, inode, size and modification
/// time of its executable. None if that cannot be read (then nothing is cached).
fn build_identity() -> Option<String> {
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    Some(format!(
        "{} {}:{} {} {}.{}",
        env!("CARGO_PKG_VERSION"),
        exe.dev(),
        exe.ino(),
        exe.size(),
        exe.mtime(),
        exe.mtime_nsec()
    ))
}

impl PolicyCache {
    /// The cache under moat's runtime state directory.
    pub fn under(run_dir: &Path) -> PolicyCache {
        PolicyCache {
            dir: run_dir.join("policy-cache"),
        }
    }

    /// Reads, parses and checks `files`, from the cache where it has them; the first
    /// file that cannot be read is an error.
    pub fn load_files(&self, files: &[PathBuf]) -> Result<Loaded, (PathBuf, std::io::Error)> {
        let mut loaded = Loaded {
            policies: Vec::new(),
            diagnostics: Vec::new(),
            pending: Vec::new(),
        };
        if files.is_empty() {
            // Most runs have no policy: no directory to make, nothing to stat.
            return Ok(loaded);
        }
        let build = build_identity().filter(|_| self.usable());
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|err| (file.clone(), err))?;
            let wanted = build.as_ref().map(|build| Pending {
                file: file.clone(),
                key: format!("{:016x}", hash_of("name", build, file, &text)),
                build: build.clone(),
                text_hash: hash_of("text", build, file, &text),
                text_len: text.len(),
                policies: 0..0,
                diagnostics: 0..0,
            });
            let hit = wanted.as_ref().and_then(|wanted| self.read(wanted));
            let missed = hit.is_none();
            let (policies, diagnostics) = match hit {
                Some(entry) => (entry.policies, entry.diagnostics),
                None => check_text(file, &text),
            };
            if let (Some(mut pending), true) = (wanted, missed) {
                // Once per parse: a file listed twice with the same text is stored once.
                if loaded.pending.iter().all(|p| p.key != pending.key) {
                    let (at, findings_at) = (loaded.policies.len(), loaded.diagnostics.len());
                    pending.policies = at..at + policies.len();
                    pending.diagnostics = findings_at..findings_at + diagnostics.len();
                    loaded.pending.push(pending);
                }
            }
            loaded.policies.extend(policies);
            loaded.diagnostics.extend(diagnostics);
        }
        Ok(loaded)
    }

    /// Whether the directory is there (made if not), a real directory, root's (moat's
    /// user's), and closed to everyone else.
    fn usable(&self) -> bool {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir);
        std::fs::symlink_metadata(&self.dir).is_ok_and(|meta| {
            meta.is_dir()
                && meta.uid() == nix::unistd::geteuid().as_raw()
                && meta.mode() & 0o077 == 0
        })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry for `wanted`, if one is stored and is for the same file, text and moat.
    fn read(&self, wanted: &Pending) -> Option<Entry> {
        let path = self.path_of(&wanted.key);
        let bytes = std::fs::read(&path).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        let same = entry.format == FORMAT
            && entry.build == wanted.build
            && entry.file == wanted.file
            && entry.text_hash == wanted.text_hash
            && entry.text_len == wanted.text_len;
        if !same {
            return None;
        }
        // Recently used: the last to be pruned.
        if let Ok(file) = std::fs::File::open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(entry)
    }

    /// Stores the parses of `pending` (each takes its own range of `policies` and
    /// `diagnostics`), then prunes the oldest entries. Failures are ignored: the next
    /// start parses again.
    pub fn store(
        &self,
        pending: &[Pending],
        policies: &[LoadedPolicy],
        diagnostics: &[Diagnostic],
    ) {
        for item in pending {
            let (Some(own_policies), Some(own_diagnostics)) = (
                policies.get(item.policies.clone()),
                diagnostics.get(item.diagnostics.clone()),
            ) else {
                continue;
            };
            let entry = Entry {
                format: FORMAT,
                build: item.build.clone(),
                file: item.file.clone(),
                text_hash: item.text_hash,
                text_len: item.text_len,
                policies: own_policies.to_vec(),
                diagnostics: own_diagnostics.to_vec(),
            };
            // Stored only if JSON gives back exactly this parse.
            let Ok(bytes) = serde_json::to_vec(&entry) else {
                continue;
            };
            let same = serde_json::from_slice::<Entry>(&bytes).is_ok_and(|back| {
                back.policies == entry.policies && back.diagnostics == entry.diagnostics
            });
            if same {
                let _ = self.write(&item.key, &bytes);
            }
        }
        if !pending.is_empty() {
            self.prune();
        }
    }

    /// Writes an entry under a temporary name and renames it into place, so a reader
    /// sees a whole entry or none.
    fn write(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let temporary = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(bytes)?;
            std::fs::rename(&temporary, self.path_of(key))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }

    /// Keeps the most recently used entries, at most [`MAX_ENTRIES`] and [`MAX_BYTES`],
    /// and removes temporary files of writes cut short (older than a minute).
    fn prune(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut entries: Vec<(std::time::SystemTime, PathBuf, u64)> = Vec::new();
        for listed in listing.flatten() {
            let Some(meta) = listed.metadata().ok() else {
                continue;
            };
            let Ok(modified) = meta.modified() else {
                continue;
            };
            let name = listed.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                entries.push((modified, listed.path(), meta.len()));
            } else if name.ends_with(".tmp")
                && now
                    .duration_since(modified)
                    .is_ok_and(|age| age.as_secs() > 60)
            {
                let _ = std::fs::remove_file(listed.path());
            }
        }
        // Newest first: kept while within both limits.
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let mut bytes = 0;
        for (index, (_, path, size)) in entries.iter().enumerate() {
            bytes += size;
            if index >= MAX_ENTRIES || bytes > MAX_BYTES {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\n\
        metadata: {name: p}\nspec:\n  selector: {matchLabels: {a: b}}\n  action: Block\n  \
        file:\n    matchPaths:\n      - path: /etc/shadow\n";

    fn setup() -> (tempfile::TempDir, PolicyCache, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = PolicyCache::under(dir.path());
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, POLICY).unwrap();
        (dir, cache, file)
    }

    /// Loads `file` (a miss), stores its parse, and gives the load and the entry's path.
    fn stored(cache: &PolicyCache, file: &Path) -> (Loaded, PathBuf) {
        let first = cache.load_files(&[file.to_path_buf()]).unwrap();
        cache.store(&first.pending, &first.policies, &first.diagnostics);
        let path = cache.path_of(&first.pending[0].key);
        (first, path)
    }

    fn entries(cache: &PolicyCache) -> usize {
        std::fs::read_dir(&cache.dir)
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[test]
    fn a_stored_parse_reads_back_the_same() {
        let (_dir, cache, file) = setup();
        let first = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(first.pending.len(), 1, "a miss the first time");
        cache.store(&first.pending, &first.policies, &first.diagnostics);
        assert_eq!(entries(&cache), 1);
        let again = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert!(again.pending.is_empty(), "a hit the second time");
        assert_eq!(again.policies, first.policies);
        assert_eq!(again.diagnostics, first.diagnostics);
        let meta = std::fs::metadata(&cache.dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
    }

    #[test]
    fn a_changed_file_is_parsed_again() {
        let (_dir, cache, file) = setup();
        stored(&cache, &file);
        std::fs::write(&file, POLICY.replace("/etc/shadow", "/etc/gshadow")).unwrap();
        let changed = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(changed.pending.len(), 1);
        let path = &changed.policies[0]
            .policy
            .spec
            .file
            .as_ref()
            .unwrap()
            .match_paths[0];
        assert_eq!(path.path.as_deref(), Some("/etc/gshadow"));
    }

    #[test]
    fn a_damaged_or_foreign_entry_is_a_miss() {
        let (_dir, cache, file) = setup();
        let (first, stored) = stored(&cache, &file);
        // An entry that no longer parses.
        std::fs::write(&stored, b"{\"format\": 1").unwrap();
        let damaged = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(damaged.pending.len(), 1);
        assert_eq!(damaged.policies, first.policies);
        // An entry for other text under this file's name: checked, not trusted.
        let mut text = serde_json::to_value(Entry {
            format: FORMAT,
            build: first.pending[0].build.clone(),
            file: file.clone(),
            text_hash: 1,
            text_len: POLICY.len(),
            policies: Vec::new(),
            diagnostics: Vec::new(),
        })
        .unwrap();
        std::fs::write(&stored, text.to_string()).unwrap();
        assert_eq!(
            cache
                .load_files(std::slice::from_ref(&file))
                .unwrap()
                .pending
                .len(),
            1
        );
        text["text_hash"] = first.pending[0].text_hash.into();
        std::fs::write(&stored, text.to_string()).unwrap();
        let forged = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert!(
            forged.pending.is_empty(),
            "control: the matching entry is used"
        );
        assert!(forged.policies.is_empty());
    }

    #[test]
    fn a_file_listed_twice_is_stored_once_with_its_own_parse() {
        let (dir, cache, file) = setup();
        let other = dir.path().join("other.yaml");
        std::fs::write(&other, POLICY.replace("name: p", "name: other")).unwrap();
        let files = [file.clone(), other.clone(), file.clone()];
        let first = cache.load_files(&files).unwrap();
        assert_eq!(first.policies.len(), 3);
        assert_eq!(
            first.pending.len(),
            2,
            "one parse per distinct file and text"
        );
        // As cmd_run does: more policies (a profile's) put in front of these.
        let mut policies = first.policies.clone();
        policies.insert(0, first.policies[1].clone());
        let pending: Vec<Pending> = first
            .pending
            .iter()
            .map(|p| p.clone().shifted(1, 0))
            .collect();
        cache.store(&pending, &policies, &first.diagnostics);
        for (listed, name) in [(&file, "p"), (&other, "other")] {
            let again = cache.load_files(std::slice::from_ref(listed)).unwrap();
            assert!(again.pending.is_empty(), "{name}: a hit");
            assert_eq!(again.policies.len(), 1, "{name}: its own parse, once");
            assert_eq!(again.policies[0].policy.metadata.name, name);
        }
    }

    #[test]
    fn another_build_of_moat_misses() {
        let (_dir, cache, file) = setup();
        let (_, stored) = stored(&cache, &file);
        let mut entry: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
        entry["build"] = "0.1.0 1:2 3 4.5".into();
        std::fs::write(&stored, entry.to_string()).unwrap();
        let again = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(
            again.pending.len(),
            1,
            "stored by another build: parsed again"
        );
    }

    #[test]
    fn a_run_without_policy_files_touches_nothing() {
        let (_dir, cache, _) = setup();
        let loaded = cache.load_files(&[]).unwrap();
        assert!(loaded.policies.is_empty() && loaded.pending.is_empty());
        assert!(!cache.dir.exists(), "no cache directory made");
    }

    #[test]
    fn an_open_directory_is_not_used() {
        let (_dir, cache, file) = setup();
        std::fs::create_dir_all(&cache.dir).unwrap();
        std::fs::set_permissions(
            &cache.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let loaded = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert!(
            loaded.pending.is_empty(),
            "nothing to store where others can write"
        );
        assert_eq!(loaded.policies.len(), 1);
        cache.store(&loaded.pending, &loaded.policies, &loaded.diagnostics);
        assert_eq!(entries(&cache), 0);
    }

    #[test]
    fn only_the_most_recently_used_entries_are_kept() {
        let (dir, cache, _) = setup();
        for index in 0..MAX_ENTRIES + 3 {
            let file = dir.path().join(format!("p{index}.yaml"));
            std::fs::write(&file, POLICY.replace("name: p", &format!("name: p{index}"))).unwrap();
            let loaded = cache.load_files(&[file]).unwrap();
            cache.store(&loaded.pending, &loaded.policies, &loaded.diagnostics);
        }
        assert_eq!(entries(&cache), MAX_ENTRIES);
    }
}
