//! Landlock: the filesystem wall that holds even if a mount is misconfigured. Applied in
//! the sandbox's init after the mounts are final and before the seccomp filter (which
//! forbids the landlock syscalls to the workload).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use moat_policy::{Keep, LandlockPlan};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
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
    /// A Block rule cannot be applied as written.
    #[error("the Block rule on {path} cannot be applied: {reason}")]
    Rule {
        /// The rule's path, as written.
        path: String,
        /// Why.
        reason: String,
    },
    /// Carving the rules ran out of descriptors or memory.
    #[error("cannot carve the Landlock rules at {what}")]
    Carve {
        /// The path or name being opened.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(rights.all)?;
    let scopes = scopes(plan, abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create()?;
    // Each grant becomes a rule as soon as it is found: carving makes tens of thousands
    // for large Block lists, and holding a descriptor for each would exhaust the limit.
    grant_all(plan, &rights, &mut |target, access| {
        if access.is_empty() {
            return Ok(());
        }
        let fd = match target.open() {
            Ok(fd) => fd,
            Err(err) if out_of_resources(&err) => return Err(target.failed(err)),
            // A path that vanished since it was listed grants nothing: skip it.
            Err(_) => return Ok(()),
        };
        (&mut created).add_rule(PathBeneath::new(fd, access))?;
        Ok(())
    })?;
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
    /// A policy's rule, whose blocked directory's files carving looks for under other
    /// names; not moat's own "no exec in writable places", which holds by mount flags too.
    from_policy: bool,
}

/// Files of one blocked directory whose other names carving looks for; beyond, a hard
/// link or bind mount of one outside the directory is not known (docs/policy.md).
const MAX_BLOCKED_FILES: usize = 65_536;

/// Device and inode of the files (not directories, not symlinks) in `dir`, and in its
/// subdirectories with `recursive`, up to [`MAX_BLOCKED_FILES`].
fn blocked_files(dir: &Path, recursive: bool, files: &mut Vec<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if files.len() >= MAX_BLOCKED_FILES {
                return;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if recursive {
                    pending.push(entry.path());
                }
            } else if !meta.file_type().is_symlink() {
                files.push((meta.dev(), meta.ino()));
            }
        }
    }
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
    /// Device and inode of every directory a rule reaches into or blocks, by path: a
    /// second name of one (a bind mount) met while carving is carved as the directory
    /// itself, since a grant on it would be a grant on that directory's inode.
    directories: HashMap<(u64, u64), PathBuf>,
}

impl DenyIndex {
    /// Stats the directories rules reach into or block, for [`DenyIndex::directory_named`].
    ///
    /// Also learns the files inside blocked directories (up to [`MAX_BLOCKED_FILES`] per
    /// rule), so that another name of one met while carving (a hard link left in a home,
    /// a file bind-mounted out of the directory) is denied as the file itself: a grant on
    /// it would be a grant on the blocked file's inode.
    fn learn_other_names(&mut self, denies: &[Deny]) {
        let blocked = denies.iter().filter(|d| d.directory).map(|d| &d.path);
        for path in self.above.iter().chain(blocked) {
            if let Ok(stat) = rustix::fs::lstat(path) {
                if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                    self.directories
                        .insert((stat.st_dev, stat.st_ino), path.clone());
                }
            }
        }
        for deny in denies.iter().filter(|d| d.directory && d.from_policy) {
            let mut files = Vec::new();
            blocked_files(&deny.path, deny.recursive, &mut files);
            for inode in files {
                self.inodes.entry(inode).or_default().push(deny.keep);
            }
        }
    }

    /// The path of the directory a rule reaches into or blocks that `entry` is, if any.
    fn directory_named(&self, entry: &Entry) -> Option<&Path> {
        if !entry.is_dir {
            return None;
        }
        self.directories.get(&entry.inode).map(PathBuf::as_path)
    }

    fn new(denies: &[Deny]) -> DenyIndex {
        let mut index = DenyIndex {
            files: HashMap::new(),
            recursive: HashMap::new(),
            direct_files_of: HashMap::new(),
            inodes: HashMap::new(),
            above: HashSet::new(),
            directories: HashMap::new(),
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

    /// What every rule covering `path` leaves of `access`. With [`Ancestors::Applied`],
    /// the recursive rules of the path's ancestors already shaped `access` and only the
    /// path's own are looked up: carving asks this of every entry it lists.
    fn restrict(
        &self,
        path: &Path,
        entry: &Entry,
        access: BitFlags<AccessFs>,
        r: &Rights,
        ancestors: Ancestors,
    ) -> BitFlags<AccessFs> {
        let mut keeps: Vec<Keep> = Vec::new();
        let covering: &mut dyn Iterator<Item = &Path> = match ancestors {
            Ancestors::All => &mut path.ancestors(),
            Ancestors::Applied => &mut std::iter::once(path),
        };
        for ancestor in covering {
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

/// What a grant is on: a path, or an entry of a directory being carved, which opens
/// relative to the directory (one name to look up, where the path would walk them all).
#[derive(Clone, Copy)]
enum Target<'a> {
    Path(&'a Path),
    /// A name listed in the open directory (not a symlink when listed).
    At(BorrowedFd<'a>, &'a CStr),
}

impl Target<'_> {
    /// A descriptor for the rule: O_PATH, so nothing is read or run by opening it.
    fn open(&self) -> std::io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        Ok(match self {
            Target::Path(path) => rustix::fs::open(*path, flags, Mode::empty())?,
            Target::At(dir, name) => {
                rustix::fs::openat(dir, *name, flags | OFlags::NOFOLLOW, Mode::empty())?
            }
        })
    }

    /// The directory itself, open for listing (not following a symlink put in its
    /// place since it was seen).
    fn open_directory(&self) -> std::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        Ok(match self {
            Target::Path(path) => rustix::fs::open(*path, flags, Mode::empty())?,
            Target::At(dir, name) => rustix::fs::openat(dir, *name, flags, Mode::empty())?,
        })
    }

    /// The error for running out of descriptors or memory while opening this.
    fn failed(&self, source: std::io::Error) -> LandlockError {
        let what = match self {
            Target::Path(path) => path.display().to_string(),
            Target::At(_, name) => name.to_string_lossy().into_owned(),
        };
        LandlockError::Carve { what, source }
    }
}

/// Whether a failed open or listing means the process ran out of something, which must
/// fail the start rather than quietly grant less than the plan says.
fn out_of_resources(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// Where grants go, as they are found.
type Sink<'a> = dyn FnMut(Target<'_>, BitFlags<AccessFs>) -> Result<(), LandlockError> + 'a;

/// Passes every grant of the plan to `sink`, with the Block rules carved out.
fn grant_all(plan: &LandlockPlan, r: &Rights, sink: &mut Sink<'_>) -> Result<(), LandlockError> {
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
    let mut denies: Vec<Deny> = Vec::with_capacity(plan.deny.len());
    for deny in &plan.deny {
        let written = &deny.target.path;
        // Symlinks resolve here, inside the sandbox: /bin/apt is /usr/bin/apt.
        let Some((path, meta)) = resolver.resolve(written.trim_end_matches('/')) else {
            return Err(LandlockError::Rule {
                path: written.clone(),
                reason: "it does not resolve (a relative path, or more than 40 symlinks)".into(),
            });
        };
        if !deny.target.directory && meta.as_ref().is_some_and(std::fs::Metadata::is_dir) {
            // It would deny nothing inside: a rule that cannot be applied is an error.
            return Err(LandlockError::Rule {
                path: written.clone(),
                reason: "matchPaths names files, and this is a directory: use matchDirectories"
                    .into(),
            });
        }
        let inode = meta.filter(|m| !m.is_dir()).map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        });
        denies.push(Deny {
            path,
            directory: deny.target.directory,
            recursive: deny.target.recursive,
            keep: deny.keep,
            inode,
            from_policy: true,
        });
    }
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
                    from_policy: false,
                });
            }
        }
    }
    let mut index = DenyIndex::new(&denies);
    index.learn_other_names(&denies);
    let carver = Carver {
        denies: index,
        listing: Listing::default(),
        rights: r,
        listing_now: std::cell::RefCell::new(HashSet::new()),
    };
    for (path, access) in grants {
        let Ok(root) = std::fs::canonicalize(&path) else {
            continue;
        };
        carver.carve(&root, access, sink)?;
    }
    for device in &plan.devices {
        let path = PathBuf::from(device);
        let Some(entry) = Entry::of(&path) else {
            continue;
        };
        let access = if entry.is_dir {
            r.file | AccessFs::ReadDir
        } else {
            r.file
        };
        // A Block rule on a device holds too (/dev/zero is a file like any other), and
        // one inside a device directory (/dev/pts) carves it. A device that is a symlink
        // (/dev/ptmx -> pts/ptmx in a container's /dev) gets nothing of its own: its
        // target has an entry, and a grant through the link would land on the target
        // whatever rule names it.
        carver.carve_entry(
            &path,
            Target::Path(&path),
            entry,
            access,
            Ancestors::All,
            sink,
        )?;
    }
    Ok(())
}

/// Resolves rule paths, remembering resolved directories: thousands of rules on files
/// of a few directories resolve each directory once, not once per file.
#[derive(Default)]
struct Resolver {
    directories: HashMap<PathBuf, ResolvedDirectory>,
}

/// A rule's directory, resolved.
#[derive(Clone)]
struct ResolvedDirectory {
    /// See [`resolve`].
    path: Option<PathBuf>,
    /// It does not exist, so neither does anything in it: no name in it needs a stat
    /// (10,000 rules on missing paths each cost a failed lookup otherwise).
    missing: bool,
}

impl Resolver {
    /// `path` resolved (see [`resolve`]), with its metadata when it exists.
    fn resolve(&mut self, path: &str) -> Option<(PathBuf, Option<std::fs::Metadata>)> {
        let as_path = Path::new(path);
        if let (Some(parent), Some(name)) = (as_path.parent(), as_path.file_name()) {
            let directory = self
                .directories
                .entry(parent.to_path_buf())
                .or_insert_with(|| match std::fs::canonicalize(parent) {
                    Ok(real) => ResolvedDirectory {
                        path: Some(real),
                        missing: false,
                    },
                    Err(err) => ResolvedDirectory {
                        path: parent.to_str().and_then(resolve),
                        missing: err.kind() == std::io::ErrorKind::NotFound,
                    },
                })
                .clone();
            if let Some(parent) = directory.path {
                let candidate = parent.join(name);
                if directory.missing {
                    return Some((candidate, None));
                }
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

/// A path with its symlinks resolved, like `realpath -m`: a symlink is followed even when
/// what it points to does not exist (yet), and names that do not exist are kept as
/// written (`..` after one removes it), so the rule holds for what the path will name
/// once it exists: the directories on the way are carved, and nothing new can appear
/// where it points. A dangling symlink in a rule's path (one a workload could point at a
/// place it can create) is followed to its target. None for a relative path or more
/// than 40 symlinks (a loop).
fn resolve(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if let Ok(real) = std::fs::canonicalize(path) {
        return Some(real);
    }
    if !path.is_absolute() {
        return None;
    }
    let mut resolved = PathBuf::from("/");
    // Components still to walk, the next one last.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    let push = |pending: &mut Vec<std::ffi::OsString>, path: &Path| {
        let start = pending.len();
        pending.extend(path.iter().map(ToOwned::to_owned));
        pending[start..].reverse();
    };
    push(&mut pending, path);
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match component.to_str() {
            Some("/") => resolved = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                resolved.pop();
            }
            _ => {
                let candidate = resolved.join(&component);
                match std::fs::symlink_metadata(&candidate) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        links += 1;
                        if links > 40 {
                            return None;
                        }
                        // Relative to the directory holding the link, where `resolved`
                        // stands; an absolute target starts again at the root.
                        push(&mut pending, &std::fs::read_link(&candidate).ok()?);
                    }
                    _ => resolved = candidate,
                }
            }
        }
    }
    Some(resolved)
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

    /// The entry `name` of the open directory `dir`, by a stat of it (not following a
    /// symlink).
    fn at(dir: BorrowedFd<'_>, name: &CStr) -> Option<Entry> {
        let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        Some(Entry {
            is_dir: kind == FileType::Directory,
            is_symlink: kind == FileType::Symlink,
            inode: (stat.st_dev, stat.st_ino),
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
    fn trusts_listing_of(dir: BorrowedFd<'_>) -> bool {
        // ext4, XFS, btrfs, tmpfs (statfs(2) f_type).
        const TRUSTED: [i64; 4] = [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994];
        rustix::fs::fstatfs(dir).is_ok_and(|fs| TRUSTED.contains(&{ fs.f_type }))
    }
}

/// Carving: the plan's grants with the Block rules' paths cut out.
struct Carver<'r> {
    denies: DenyIndex,
    listing: Listing,
    rights: &'r Rights,
    /// The directories being listed, from the grant root down: one met again inside
    /// itself (through a bind mount) is not carved a second time.
    listing_now: std::cell::RefCell<HashSet<(u64, u64)>>,
}

impl Carver<'_> {
    /// Grants `access` on `path`, except what the denies take away: a covered path gets
    /// only what its rule keeps; a directory holding a denied path is listed and its
    /// entries are granted one by one (files created there later get nothing: they are
    /// not listed yet).
    fn carve(
        &self,
        path: &Path,
        access: BitFlags<AccessFs>,
        sink: &mut Sink<'_>,
    ) -> Result<(), LandlockError> {
        match Entry::of(path) {
            Some(entry) => self.carve_entry(
                path,
                Target::Path(path),
                entry,
                access,
                Ancestors::All,
                sink,
            ),
            None => Ok(()),
        }
    }

    /// `ancestors`: whether the rules on the path's ancestors are still to be applied to
    /// `access` (at the top), or were, by the carving of its directory.
    fn carve_entry(
        &self,
        path: &Path,
        target: Target<'_>,
        entry: Entry,
        access: BitFlags<AccessFs>,
        ancestors: Ancestors,
        sink: &mut Sink<'_>,
    ) -> Result<(), LandlockError> {
        // A symlink needs no rule (access is checked on its target), and a rule on it
        // would land on the target: /usr/bin/X11 -> . would grant all of /usr/bin back.
        if entry.is_symlink {
            return Ok(());
        }
        // Another name of a directory a rule reaches into is carved as that directory,
        // under every rule of its own path; a directory inside itself gets nothing.
        let known = self.denies.directory_named(&entry).map(Path::to_path_buf);
        let (path, ancestors) = match &known {
            Some(original) if original != path => (original.as_path(), Ancestors::All),
            _ => (path, ancestors),
        };
        if entry.is_dir && self.listing_now.borrow().contains(&entry.inode) {
            return Ok(());
        }
        let r = self.rights;
        // Every rule covering the path takes its share; one lying deeper still gets its
        // turn (a recursive "no exec in /tmp" must not hide a Block of /tmp/secret).
        let access = self.denies.restrict(path, &entry, access, r, ancestors);
        if !(entry.is_dir && self.denies.below(path)) {
            return sink(target, r.fit(entry.is_dir, access));
        }
        // A directory that cannot be opened is not listed: nothing in it is granted.
        // One descriptor per level: the listing's own is used for the entries too.
        let mut listing = match target
            .open_directory()
            .and_then(|dir| rustix::fs::Dir::new(dir).map_err(std::io::Error::from))
        {
            Ok(listing) => listing,
            Err(err) if out_of_resources(&err) => return Err(target.failed(err)),
            Err(_) => return sink(target, access & AccessFs::ReadDir),
        };
        sink(target, access & AccessFs::ReadDir)?;
        self.listing_now.borrow_mut().insert(entry.inode);
        let carved = self.carve_listing(path, target, entry, access, &mut listing, sink);
        self.listing_now.borrow_mut().remove(&entry.inode);
        carved
    }

    /// Carves the entries of the directory `listing` (at `path`, with `access`).
    fn carve_listing(
        &self,
        path: &Path,
        target: Target<'_>,
        entry: Entry,
        access: BitFlags<AccessFs>,
        listing: &mut rustix::fs::Dir,
        sink: &mut Sink<'_>,
    ) -> Result<(), LandlockError> {
        // The identity of each entry decides whether it is a hard link of a blocked
        // file, so where the listing may not tell it exactly, every entry is stat'd.
        let trusted = listing
            .fd()
            .is_ok_and(|dir| Listing::trusts_listing_of(dir));
        loop {
            let child = match listing.read() {
                None => break,
                Some(Ok(child)) => child,
                Some(Err(err)) if out_of_resources(&err.into()) => {
                    return Err(target.failed(err.into()))
                }
                // An entry that cannot be read is not granted.
                Some(Err(_)) => break,
            };
            let Ok(dir) = listing.fd() else { break };
            let name = child.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let child_path = path.join(OsStr::from_bytes(name.to_bytes()));
            let kind = child.file_type();
            let listed = if trusted
                && kind != FileType::Unknown
                && kind != FileType::Directory
                && !self.listing.may_be_mount_point(&child_path)
            {
                Some(Entry {
                    is_dir: false,
                    is_symlink: kind == FileType::Symlink,
                    inode: (entry.inode.0, child.ino()),
                })
            } else {
                Entry::at(dir, name)
            };
            if let Some(listed) = listed {
                let target = Target::At(dir, name);
                self.carve_entry(
                    &child_path,
                    target,
                    listed,
                    access,
                    Ancestors::Applied,
                    sink,
                )?;
            }
        }
        Ok(())
    }
}

/// Which of a path's ancestors' recursive rules [`DenyIndex::restrict`] applies.
#[derive(Debug, Clone, Copy)]
enum Ancestors {
    /// All of them (a path met first).
    All,
    /// None: carving applied them to the access its directory passed down.
    Applied,
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
