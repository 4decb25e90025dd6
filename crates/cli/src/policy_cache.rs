//! Parsed policy files, kept between runs.
//!
//! Every sandbox start reads its policy files again, and the YAML parser is slow: 10,000
//! rules take it about 17 ms, a third of what such a policy adds to a start. A JupyterHub
//! starts many sandboxes with the same few files, so `moat run` keeps each file's parse
//! and check (policies and diagnostics) as JSON, which reads back about four times as
//! fast, in a root-only directory under /run/moat (cleared at boot).
//!
//! An entry is named by a hash of moat's version, the file's path and its whole text,
//! and holds the version, the path, the text's length and a second, independent hash of
//! it, which must all match: a file that changed, or a moat that was upgraded, misses
//! and is parsed again. Anything wrong with the cache (not root's, not private, an entry
//! that does not read back) is a miss, never an error, and an entry is only stored if it
//! reads back equal to the parse: the cache can make a start faster, not different.
//! Entries are written while the sandbox runs, off the start's path (a sandbox that
//! ends within milliseconds may end first, and leave that to the next start, or to
//! `moat policy check`), and at most [`MAX_ENTRIES`] are kept, least recently used first
//! out.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use moat_policy::kubearmor::{check_text, Diagnostic, LoadedPolicy};
use serde::{Deserialize, Serialize};

/// Entries kept; the least recently used go first.
pub const MAX_ENTRIES: usize = 64;

/// Changes when the entries' layout does.
const FORMAT: u32 = 1;

/// One file's parse, as stored.
#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    moat: String,
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

/// A parse to store once the sandbox has started.
#[derive(Debug, Clone)]
pub struct Pending {
    file: PathBuf,
    key: String,
    text_hash: u64,
    text_len: usize,
}

/// The policies and diagnostics of some files, and the parses not cached yet.
pub struct Loaded {
    pub policies: Vec<LoadedPolicy>,
    pub diagnostics: Vec<Diagnostic>,
    pub pending: Vec<Pending>,
}

fn hash_of(salt: &str, file: &Path, text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (salt, FORMAT, env!("CARGO_PKG_VERSION"), file, text).hash(&mut hasher);
    hasher.finish()
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
        let usable = self.usable();
        let mut loaded = Loaded {
            policies: Vec::new(),
            diagnostics: Vec::new(),
            pending: Vec::new(),
        };
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|err| (file.clone(), err))?;
            let key = format!("{:016x}", hash_of("name", file, &text));
            let text_hash = hash_of("text", file, &text);
            let pending = Pending {
                file: file.clone(),
                key,
                text_hash,
                text_len: text.len(),
            };
            let hit = if usable { self.read(&pending) } else { None };
            let (policies, diagnostics) = match hit {
                Some(entry) => (entry.policies, entry.diagnostics),
                None => {
                    if usable {
                        loaded.pending.push(pending);
                    }
                    check_text(file, &text)
                }
            };
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
            && entry.moat == env!("CARGO_PKG_VERSION")
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

    /// Stores the parses of `pending` (their policies and diagnostics are taken from
    /// `policies` and `diagnostics`, by file), then prunes the oldest entries. Failures
    /// are ignored: the next start parses again.
    pub fn store(
        &self,
        pending: &[Pending],
        policies: &[LoadedPolicy],
        diagnostics: &[Diagnostic],
    ) {
        for item in pending {
            let entry = Entry {
                format: FORMAT,
                moat: env!("CARGO_PKG_VERSION").to_string(),
                file: item.file.clone(),
                text_hash: item.text_hash,
                text_len: item.text_len,
                policies: policies
                    .iter()
                    .filter(|p| p.file == item.file)
                    .cloned()
                    .collect(),
                diagnostics: diagnostics
                    .iter()
                    .filter(|d| d.file == item.file)
                    .cloned()
                    .collect(),
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

    /// Keeps the [`MAX_ENTRIES`] most recently used entries, and removes temporary files
    /// of writes cut short (older than a minute).
    fn prune(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for listed in listing.flatten() {
            let Some(modified) = listed.metadata().ok().and_then(|m| m.modified().ok()) else {
                continue;
            };
            let name = listed.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                entries.push((modified, listed.path()));
            } else if name.ends_with(".tmp")
                && now
                    .duration_since(modified)
                    .is_ok_and(|age| age.as_secs() > 60)
            {
                let _ = std::fs::remove_file(listed.path());
            }
        }
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        entries.sort();
        for (_, path) in &entries[..entries.len() - MAX_ENTRIES] {
            let _ = std::fs::remove_file(path);
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
        let first = cache.load_files(std::slice::from_ref(&file)).unwrap();
        cache.store(&first.pending, &first.policies, &first.diagnostics);
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
        let first = cache.load_files(std::slice::from_ref(&file)).unwrap();
        cache.store(&first.pending, &first.policies, &first.diagnostics);
        let stored = cache.path_of(&first.pending[0].key);
        // An entry that no longer parses.
        std::fs::write(&stored, b"{\"format\": 1").unwrap();
        let damaged = cache.load_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(damaged.pending.len(), 1);
        assert_eq!(damaged.policies, first.policies);
        // An entry for other text under this file's name: checked, not trusted.
        let mut text = serde_json::to_value(Entry {
            format: FORMAT,
            moat: env!("CARGO_PKG_VERSION").into(),
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
