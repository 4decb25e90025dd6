//! Landlock: the filesystem wall that holds even if a mount is misconfigured. Applied in
//! the sandbox's init after the mounts are final and before the seccomp filter (which
//! forbids the landlock syscalls to the workload).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use moat_policy::{Keep, LandlockPlan};
use thiserror::Error;

/// Landlock could not be applied as the plan requires.
#[derive(Debug, Error)]
pub enum LandlockError {
    /// The kernel has no Landlock or has it disabled.
    #[error("the kernel offers no Landlock (enable the landlock LSM with the lsm= boot parameter, or use a kernel >= 5.13)")]
    Unavailable(#[source] std::io::Error),
    /// The host ABI is older than the profile demands.
    #[error("the profile requires Landlock ABI {required} but this kernel offers ABI {host}")]
    AbiTooOld {
        /// What the profile asks for.
        required: u8,
        /// What the kernel has.
        host: u32,
    },
    /// The ruleset could not be built or enforced.
    #[error("cannot enforce the ruleset")]
    Ruleset(#[from] landlock::RulesetError),
    /// The kernel enforced less than asked.
    #[error("the kernel enforced the ruleset only partially ({0:?})")]
    Partial(RulesetStatus),
}

/// The host's Landlock ABI, checked against what the plan requires.
pub fn check_abi(plan: &LandlockPlan) -> Result<u32, LandlockError> {
    let host = crate::sys::landlock_abi().map_err(LandlockError::Unavailable)?;
    if host < u32::from(plan.min_abi) {
        return Err(LandlockError::AbiTooOld {
            required: plan.min_abi,
            host,
        });
    }
    Ok(host)
}

/// Restricts the calling process (and every process it starts) to the plan's rules.
pub fn restrict_self(plan: &LandlockPlan) -> Result<(), LandlockError> {
    let host = check_abi(plan)?;
    let abi = ABI::from(i32::try_from(host).unwrap_or(i32::MAX));
    let rights = Rights::new(abi);
    let rules = rules(plan, &rights);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(rights.all)?;
    let scopes = scopes(plan, abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create()?;
    for (path, access) in rules {
        // A path that vanished since it was listed grants nothing: skip it.
        let Ok(fd) = PathFd::new(&path) else { continue };
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    if host >= 7 {
        // Denials by the workload (a later exec than the domain's creator) reach the
        // kernel audit log, where moat's alert reader sees them.
        created = created.log_new_exec(true)?;
    }
    let status = created.restrict_self()?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(LandlockError::Partial(status.ruleset));
    }
    Ok(())
}

/// Access right sets for one ABI.
struct Rights {
    all: BitFlags<AccessFs>,
    file: BitFlags<AccessFs>,
    read_exec: BitFlags<AccessFs>,
    read: BitFlags<AccessFs>,
}

impl Rights {
    fn new(abi: ABI) -> Rights {
        Rights {
            all: AccessFs::from_all(abi),
            file: AccessFs::from_file(abi),
            read_exec: AccessFs::from_read(abi),
            read: AccessFs::ReadFile | AccessFs::ReadDir,
        }
    }

    fn keep(&self, keep: Keep) -> BitFlags<AccessFs> {
        match keep {
            Keep::Nothing => BitFlags::empty(),
            Keep::Read => self.read,
            Keep::AllButExec => self.all & !AccessFs::Execute,
        }
    }

    /// Only file rights on something that is not a directory.
    fn fit(&self, is_dir: bool, access: BitFlags<AccessFs>) -> BitFlags<AccessFs> {
        if is_dir {
            access
        } else {
            access & self.file
        }
    }
}

/// A Block rule with its path resolved inside the sandbox.
struct Deny {
    path: PathBuf,
    directory: bool,
    recursive: bool,
    keep: Keep,
    /// Device and inode of a blocked file, so that a hard link of it met while carving is
    /// blocked too.
    inode: Option<(u64, u64)>,
}

/// The denies, indexed by path and inode: carving asks about every entry of every
/// directory it walks, so each question must not cost a pass over all the rules (10,000
/// rules over /usr/share took half a minute that way).
struct DenyIndex {
    files: HashMap<PathBuf, Vec<Keep>>,
    recursive: HashMap<PathBuf, Vec<Keep>>,
    direct_files_of: HashMap<PathBuf, Vec<Keep>>,
    inodes: HashMap<(u64, u64), Vec<Keep>>,
    above: HashSet<PathBuf>,
}

impl DenyIndex {
    fn new(denies: &[Deny]) -> DenyIndex {
        let mut index = DenyIndex {
            files: HashMap::new(),
            recursive: HashMap::new(),
            direct_files_of: HashMap::new(),
            inodes: HashMap::new(),
            above: HashSet::new(),
        };
        for deny in denies {
            let map = match (deny.directory, deny.recursive) {
                (false, _) => &mut index.files,
                (true, true) => &mut index.recursive,
                (true, false) => &mut index.direct_files_of,
            };
            map.entry(deny.path.clone()).or_default().push(deny.keep);
            if let Some(inode) = deny.inode {
                index.inodes.entry(inode).or_default().push(deny.keep);
            }
            index
                .above
                .extend(deny.path.ancestors().skip(1).map(Path::to_path_buf));
            if deny.directory && !deny.recursive {
                index.above.insert(deny.path.clone());
            }
        }
        index
    }

    /// What every rule covering `path` leaves of `access`.
    fn restrict(
        &self,
        path: &Path,
        entry: &Entry,
        access: BitFlags<AccessFs>,
        r: &Rights,
    ) -> BitFlags<AccessFs> {
        let mut keeps: Vec<Keep> = Vec::new();
        for ancestor in path.ancestors() {
            if let Some(found) = self.recursive.get(ancestor) {
                keeps.extend(found);
            }
        }
        if !entry.is_dir {
            keeps.extend(self.files.get(path).into_iter().flatten());
            if let Some(parent) = path.parent() {
                keeps.extend(self.direct_files_of.get(parent).into_iter().flatten());
            }
            keeps.extend(self.inodes.get(&entry.inode).into_iter().flatten());
        }
        keeps
            .into_iter()
            .fold(access, |access, keep| access & r.keep(keep))
    }

    /// Whether something a rule denies lies strictly inside `dir`.
    fn below(&self, dir: &Path) -> bool {
        self.above.contains(dir)
    }
}

/// The grants of the plan, as (path, access) pairs, with the Block rules carved out.
fn rules(plan: &LandlockPlan, r: &Rights) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    let writable = if plan.writable_exec {
        r.all
    } else {
        r.all & !AccessFs::Execute
    };
    let mut grants: Vec<(String, BitFlags<AccessFs>)> = Vec::new();
    match &plan.file_allow_only {
        Some(allowed) => {
            for entry in allowed {
                let access = if entry.read_only { r.read_exec } else { r.all };
                grants.push((entry.path.clone(), access));
            }
            grants.push(("/proc".into(), writable));
        }
        None => {
            grants.extend(plan.read_exec.iter().map(|p| (p.clone(), r.read_exec)));
            grants.extend(plan.read_only.iter().map(|p| (p.clone(), r.read)));
            grants.extend(
                plan.list_only
                    .iter()
                    .map(|p| (p.clone(), BitFlags::from(AccessFs::ReadDir))),
            );
            grants.extend(plan.read_write.iter().map(|p| (p.clone(), writable)));
        }
    }
    if let Some(executables) = &plan.exec_allow_only {
        for grant in &mut grants {
            grant.1 &= !AccessFs::Execute;
        }
        for entry in executables {
            grants.push((
                entry.path.clone(),
                AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir,
            ));
        }
        // The kernel executes the ELF interpreter of every dynamic binary: allowing a
        // binary means allowing its loader too.
        for interpreter in elf_interpreters() {
            grants.push((interpreter, AccessFs::Execute | AccessFs::ReadFile));
        }
    }
    let mut resolver = Resolver::default();
    let mut denies: Vec<Deny> = plan
        .deny
        .iter()
        .filter_map(|d| {
            // Symlinks resolve here, inside the sandbox: /bin/apt is /usr/bin/apt.
            let (path, meta) = resolver.resolve(d.target.path.trim_end_matches('/'))?;
            let inode = meta.filter(|m| !m.is_dir()).map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
            Some(Deny {
                path,
                directory: d.target.directory,
                recursive: d.target.recursive,
                keep: d.keep,
                inode,
            })
        })
        .collect();
    if !plan.writable_exec {
        // A grant above a writable place (an image's "/") must not give execution there.
        for place in &plan.read_write {
            if let Ok(path) = std::fs::canonicalize(place) {
                denies.push(Deny {
                    path,
                    directory: true,
                    recursive: true,
                    keep: Keep::AllButExec,
                    inode: None,
                });
            }
        }
    }
    let index = DenyIndex::new(&denies);
    let listing = Listing::default();
    let mut out = Vec::new();
    for (path, access) in grants {
        let Ok(root) = std::fs::canonicalize(&path) else {
            continue;
        };
        carve(&root, access, &index, &listing, r, &mut out);
    }
    for device in &plan.devices {
        let path = PathBuf::from(device);
        if let Some(entry) = Entry::of(&path) {
            let access = if entry.is_dir {
                r.file | AccessFs::ReadDir
            } else {
                r.file
            };
            // A Block rule on a device holds too (/dev/zero is a file like any other).
            out.push((path.clone(), index.restrict(&path, &entry, access, r)));
        }
    }
    out.retain(|(_, access)| !access.is_empty());
    out
}

/// Resolves rule paths, remembering resolved directories: thousands of rules on files
/// of a few directories resolve each directory once, not once per file.
#[derive(Default)]
struct Resolver {
    directories: HashMap<PathBuf, Option<PathBuf>>,
}

impl Resolver {
    /// `path` resolved (see [`resolve`]), with its metadata when it exists.
    fn resolve(&mut self, path: &str) -> Option<(PathBuf, Option<std::fs::Metadata>)> {
        let as_path = Path::new(path);
        if let (Some(parent), Some(name)) = (as_path.parent(), as_path.file_name()) {
            let parent = self
                .directories
                .entry(parent.to_path_buf())
                .or_insert_with(|| parent.to_str().and_then(resolve))
                .clone();
            if let Some(parent) = parent {
                let candidate = parent.join(name);
                // A name that is no symlink is resolved by its parent; one that does not
                // exist is the rule's own path under its resolved parent.
                match std::fs::symlink_metadata(&candidate) {
                    Ok(meta) if !meta.file_type().is_symlink() => {
                        return Some((candidate, Some(meta)))
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        return Some((candidate, None))
                    }
                    _ => {}
                }
            }
        }
        let resolved = resolve(path)?;
        let meta = std::fs::metadata(&resolved).ok();
        Some((resolved, meta))
    }
}

/// A path with its symlinks resolved; for a path that does not exist (yet), its nearest
/// existing ancestor resolved and the rest appended, so the rule still holds: the
/// directories on the way are carved, and nothing new can appear where it points.
fn resolve(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if let Ok(real) = std::fs::canonicalize(path) {
        return Some(real);
    }
    let mut missing = Vec::new();
    let mut current = path;
    while let Some(parent) = current.parent() {
        missing.push(current.file_name()?);
        if let Ok(mut real) = std::fs::canonicalize(parent) {
            real.extend(missing.iter().rev());
            return Some(real);
        }
        current = parent;
    }
    None
}

/// The dynamic loaders of the sandbox's root (ld-linux*, ld-musl*).
fn elf_interpreters() -> Vec<String> {
    let mut found = Vec::new();
    for dir in [
        "/lib64",
        "/lib",
        "/usr/lib64",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ld-linux") || name.starts_with("ld-musl") {
                found.push(entry.path().to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// What carving needs to know of a path: its type and inode, taken from the directory
/// listing (`d_type`, `d_ino`) so that walking a large directory costs no stat per entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    is_dir: bool,
    is_symlink: bool,
    /// Device and inode, for hard links of blocked files.
    inode: (u64, u64),
}

impl Entry {
    fn of(path: &Path) -> Option<Entry> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(Entry {
            is_dir: meta.is_dir(),
            is_symlink: meta.file_type().is_symlink(),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// Where a directory listing can stand in for a stat of each entry.
#[derive(Default)]
struct Listing {
    /// Mount points of the sandbox, read when first needed (only carving lists
    /// directories): a listing shows the inode mounted over, not the one mounted (a file
    /// bind-mounted onto a placeholder). None if they cannot be read.
    mount_points: std::cell::OnceCell<Option<HashSet<PathBuf>>>,
}

impl Listing {
    /// Whether `path` may be a mount point: true when the mount points are unknown.
    fn may_be_mount_point(&self, path: &Path) -> bool {
        self.mount_points
            .get_or_init(|| {
                let mounts = moat_events::mountinfo::read("/proc/self/mountinfo").ok()?;
                Some(mounts.into_iter().map(|mount| mount.point).collect())
            })
            .as_ref()
            .is_none_or(|points| points.contains(path))
    }

    /// Whether `d_ino` and the directory's device are each entry's real identity on the
    /// filesystem of `dir`: true for the local filesystems a root is made of; false for
    /// overlayfs (whose lower files report their own layer's device), FUSE, network
    /// filesystems and anything else unknown, whose entries are stat'd one by one.
    fn trusts_listing_of(dir: &Path) -> bool {
        use nix::sys::statfs::{
            statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
        };
        statfs(dir).is_ok_and(|fs| {
            [
                EXT4_SUPER_MAGIC,
                XFS_SUPER_MAGIC,
                BTRFS_SUPER_MAGIC,
                TMPFS_MAGIC,
            ]
            .contains(&fs.filesystem_type())
        })
    }
}

/// Grants `access` on `path`, except what the denies take away: a covered path gets only
/// what its rule keeps; a directory holding a denied path is listed and its entries are
/// granted one by one (files created there later get nothing: they are not listed yet).
fn carve(
    path: &Path,
    access: BitFlags<AccessFs>,
    denies: &DenyIndex,
    listing: &Listing,
    r: &Rights,
    out: &mut Vec<(PathBuf, BitFlags<AccessFs>)>,
) {
    if let Some(entry) = Entry::of(path) {
        carve_entry(path, entry, access, denies, listing, r, out);
    }
}

fn carve_entry(
    path: &Path,
    entry: Entry,
    access: BitFlags<AccessFs>,
    denies: &DenyIndex,
    listing: &Listing,
    r: &Rights,
    out: &mut Vec<(PathBuf, BitFlags<AccessFs>)>,
) {
    use std::os::unix::fs::DirEntryExt;
    // A symlink needs no rule (access is checked on its target), and a rule on it would
    // land on the target: /usr/bin/X11 -> . would grant all of /usr/bin back.
    if entry.is_symlink {
        return;
    }
    // Every rule covering the path takes its share; one lying deeper still gets its turn
    // (a recursive "no exec in /tmp" must not hide a Block of /tmp/secret).
    let access = denies.restrict(path, &entry, access, r);
    if entry.is_dir && denies.below(path) {
        out.push((path.to_path_buf(), access & AccessFs::ReadDir));
        // The identity of each entry decides whether it is a hard link of a blocked
        // file, so where the listing may not tell it exactly, every entry is stat'd.
        let trusted = Listing::trusts_listing_of(path);
        for child in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let child_path = child.path();
            let listed = match child.file_type() {
                Ok(kind)
                    if trusted && !kind.is_dir() && !listing.may_be_mount_point(&child_path) =>
                {
                    Some(Entry {
                        is_dir: false,
                        is_symlink: kind.is_symlink(),
                        inode: (entry.inode.0, child.ino()),
                    })
                }
                _ => Entry::of(&child_path),
            };
            if let Some(listed) = listed {
                carve_entry(&child_path, listed, access, denies, listing, r, out);
            }
        }
        return;
    }
    out.push((path.to_path_buf(), r.fit(entry.is_dir, access)));
}

fn scopes(plan: &LandlockPlan, abi: ABI) -> BitFlags<Scope> {
    let available = Scope::from_all(abi);
    let mut wanted = BitFlags::<Scope>::empty();
    if plan.scope_signals {
        wanted |= Scope::Signal;
    }
    if plan.scope_abstract_unix_sockets {
        wanted |= Scope::AbstractUnixSocket;
    }
    wanted & available
}
