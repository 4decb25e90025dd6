//! The sandbox's root, prepared on the host before the container starts.
//!
//! Host-system mode builds a fresh root in the sandbox's state directory: read-only views
//! of the system directories (or the same symlinks, on merged-/usr hosts), the /etc
//! allowlist, and moat's own passwd/group/hosts. Nothing else of the host is there: no
//! /root, /home, /var, /run, /srv or /tmp. Image mode uses an unpacked image read-only and
//! only adds mount points and moat's generated /etc files on top.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use moat_policy::{HomePlan, Plan, RootPlan, SANDBOX_UID, SANDBOX_USER};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Value};
use thiserror::Error;

use crate::idmap::IdLease;

/// The root could not be prepared, or an input path is unusable.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// `--rootfs` is not an existing directory.
    #[error("--rootfs {0}: not an existing directory")]
    RootfsNotDirectory(PathBuf),
    /// The home is a symlink or has one in its path.
    #[error("--home {0}: the path is or passes through a symlink; give the real directory")]
    HomeSymlink(PathBuf),
    /// The home exists but is not a directory.
    #[error("--home {0}: exists and is not a directory")]
    HomeNotDirectory(PathBuf),
    /// An image has a symlink or file where moat needs a directory.
    #[error("--rootfs {image}: {path} is a symlink or not a directory; moat creates mount points only in real directories of an image")]
    ImageLink {
        /// The image.
        image: PathBuf,
        /// The path inside the image.
        path: String,
    },
    /// A path moat trusts during start-up could be swapped by a non-root user.
    #[error("{path}: owned by uid {owner} with mode {mode:o}: someone other than root could swap {what} for a link while the sandbox starts; keep it and the directories above it owned by root and not writable by others")]
    Untrusted {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its mode.
        mode: u32,
        /// Home or image.
        what: &'static str,
    },
    /// A path contains a symlink.
    #[error("--rootfs {0}: the path is or passes through a symlink; give the real directory")]
    ImageSymlink(PathBuf),
    /// A directory above the home or image is closed to other users.
    #[error("{path}: not searchable by other users (mode {mode:o}); the sandbox's unprivileged root must pass through it to mount {what} (chmod o+x {path})")]
    NotSearchable {
        /// The closed directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Home or image.
        what: &'static str,
    },
    /// A mount moat makes in its own mount namespace failed.
    #[error("cannot {action} {path}")]
    Mount {
        /// What was being mounted.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Filesystem trouble.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io {
        action,
        path,
        source,
    }
}

/// Checks the plan's host paths without changing anything.
pub fn preflight(plan: &Plan) -> Result<(), RootfsError> {
    if let RootPlan::Image { host_path } = &plan.filesystem.root {
        let meta = fs::symlink_metadata(host_path)
            .map_err(|_| RootfsError::RootfsNotDirectory(host_path.clone()))?;
        if meta.file_type().is_symlink() {
            return Err(RootfsError::ImageSymlink(host_path.clone()));
        }
        if !meta.is_dir() {
            return Err(RootfsError::RootfsNotDirectory(host_path.clone()));
        }
        let real = fs::canonicalize(host_path).map_err(io_err("resolve", host_path))?;
        if &real != host_path {
            return Err(RootfsError::ImageSymlink(host_path.clone()));
        }
        check_trusted(host_path, true, "the image")?;
        check_searchable(host_path, "the image")?;
    }
    if let HomePlan::Bind { host_path } = &plan.filesystem.home {
        match fs::symlink_metadata(host_path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(RootfsError::HomeSymlink(host_path.clone()))
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(RootfsError::HomeNotDirectory(host_path.clone()))
            }
            Ok(_) => {
                let real = fs::canonicalize(host_path).map_err(io_err("resolve", host_path))?;
                if &real != host_path {
                    return Err(RootfsError::HomeSymlink(host_path.clone()));
                }
            }
            // A missing home is created at start; its parent must be real.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = nearest_existing_ancestor(host_path) {
                    let real = fs::canonicalize(&parent).map_err(io_err("resolve", &parent))?;
                    if real != parent {
                        return Err(RootfsError::HomeSymlink(host_path.clone()));
                    }
                }
            }
            Err(err) => return Err(io_err("inspect", host_path)(err)),
        }
        check_trusted(host_path, false, "the home")?;
        check_searchable(host_path, "the home")?;
    }
    Ok(())
}

/// Refuses paths a non-root user could swap for a link between moat's checks and its
/// use of them: every existing directory above `path` (and `path` itself when
/// `including_self`) must be owned by root and not writable by group or others, unless
/// sticky (in /tmp, others cannot rename root's entries).
fn check_trusted(path: &Path, including_self: bool, what: &'static str) -> Result<(), RootfsError> {
    let skip = usize::from(!including_self);
    for dir in path.ancestors().skip(skip) {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            continue;
        };
        let writable_by_others = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        let is_self = dir == path;
        if meta.uid() != 0 || (writable_by_others && (is_self || !sticky)) {
            return Err(RootfsError::Untrusted {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                mode: meta.mode() & 0o7777,
                what,
            });
        }
    }
    Ok(())
}

fn nearest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
}

fn check_searchable(path: &Path, what: &'static str) -> Result<(), RootfsError> {
    for ancestor in path.ancestors().skip(1) {
        if let Ok(meta) = fs::metadata(ancestor) {
            if meta.mode() & 0o001 == 0 {
                return Err(RootfsError::NotSearchable {
                    path: ancestor.to_path_buf(),
                    mode: meta.mode() & 0o7777,
                    what,
                });
            }
        }
    }
    Ok(())
}

/// A prepared root: its host path and the mounts that build it.
#[derive(Debug, Clone)]
pub struct PreparedRoot {
    /// Host path of the root directory.
    pub path: PathBuf,
    /// OCI mounts of system directories, /etc entries and generated files.
    pub mounts: Vec<Value>,
}

/// Creates the home if needed and gives it to the sandbox user's host uid.
pub fn prepare_home(plan: &Plan, lease: &IdLease) -> Result<(), RootfsError> {
    let HomePlan::Bind { host_path } = &plan.filesystem.home else {
        return Ok(());
    };
    if let Some(parent) = host_path.parent() {
        // Parents stay traversable (the sandbox's root passes through them to mount the
        // home); checked again once they exist, so none was slipped in meanwhile.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err("create the parent of the home", parent))?;
        check_trusted(host_path, false, "the home")?;
    }
    match fs::DirBuilder::new().mode(0o700).create(host_path) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err("create home", host_path)(err))
        }
        _ => {}
    }
    // Through a descriptor opened without following links: what is chowned is what is
    // mounted, whatever the path names by then.
    let home = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(host_path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => RootfsError::HomeSymlink(host_path.clone()),
            _ => io_err("open home", host_path)(err),
        })?;
    let owner = lease.host_id(SANDBOX_UID);
    let meta = home.metadata().map_err(io_err("inspect", host_path))?;
    if meta.uid() != owner || meta.gid() != owner {
        std::os::unix::fs::fchown(&home, Some(owner), Some(owner))
            .map_err(io_err("give the home to the sandbox user", host_path))?;
    }
    if meta.mode() & 0o077 != 0 {
        home.set_permissions(fs::Permissions::from_mode(0o700))
            .map_err(io_err("close the home to other users", host_path))?;
    }
    Ok(())
}

/// Moves the calling process into a mount namespace of its own, with every mount private.
///
/// The sandbox's root and generated files are mounted there, so the host's mount table
/// never holds them and they disappear with moat even when it is killed.
pub fn isolate_mounts() -> Result<(), RootfsError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|source| {
        RootfsError::Mount {
            action: "enter a private mount namespace for",
            path: PathBuf::from("/"),
            source,
        }
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Mount {
        action: "make private",
        path: PathBuf::from("/"),
        source,
    })
}

fn mount_tmpfs(path: &Path, options: &str) -> Result<(), RootfsError> {
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(|source| RootfsError::Mount {
        action: "mount a tmpfs on",
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the root (host-system mode) or readies the image, plus generated /etc files.
/// Must run after [`isolate_mounts`].
pub fn prepare_root(
    plan: &Plan,
    sandbox_dir: &Path,
    address: Option<std::net::Ipv4Addr>,
) -> Result<PreparedRoot, RootfsError> {
    let root = sandbox_dir.join("rootfs");
    mkdir(&root, 0o755)?;
    let mut mounts = Vec::new();
    let image_etc = match &plan.filesystem.root {
        RootPlan::HostSystem {
            system_dirs,
            etc_allowlist,
        } => {
            // A tmpfs of its own: nosuid and nodev at the root too, and nothing in the
            // sandbox's mountinfo names a host path for it.
            mount_tmpfs(&root, "mode=755,size=4m")?;
            for dir in system_dirs {
                mirror(
                    Path::new(dir),
                    &root,
                    &mut mounts,
                    &["rbind", "ro", "nosuid", "nodev"],
                )?;
            }
            mkdir(&root.join("etc"), 0o755)?;
            for entry in etc_allowlist {
                mirror(
                    Path::new(entry),
                    &root,
                    &mut mounts,
                    &["rbind", "ro", "nosuid", "nodev", "noexec"],
                )?;
            }
            mkdir(&root.join("var"), 0o755)?;
            symlink("/tmp", root.join("var/tmp")).map_err(io_err("link", &root))?;
            None
        }
        RootPlan::Image { host_path } => {
            // Mount points are created in the image itself, before it is bound read-only,
            // never through a symlink: an image is untrusted input, and `home -> /root`
            // must not make moat write on the host.
            for dir in ["proc", "dev", "sys/fs/cgroup", "tmp", "etc"] {
                image_dir(host_path, dir)?;
            }
            image_dir(host_path, plan.filesystem.home_path.trim_start_matches('/'))?;
            let bind_err = |action| {
                let path = root.clone();
                move |source| RootfsError::Mount {
                    action,
                    path,
                    source,
                }
            };
            mount(
                Some(host_path.as_path()),
                &root,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(bind_err("bind the image on"))?;
            mount(
                None::<&str>,
                &root,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None::<&str>,
            )
            .map_err(bind_err("remount nosuid,nodev"))?;
            Some(host_path.join("etc"))
        }
    };
    for dir in ["proc", "dev", "sys/fs/cgroup", "tmp", "home"] {
        mkdir(&root.join(dir), 0o755)?;
    }
    mkdir(
        &root.join(plan.filesystem.home_path.trim_start_matches('/')),
        0o755,
    )?;

    let files = generated_files(plan, image_etc.as_deref(), address);
    if image_etc.is_none() {
        for (name, contents) in files {
            let path = root.join("etc").join(name);
            fs::write(&path, contents).map_err(io_err("write", &path))?;
        }
    } else {
        let generated = sandbox_dir.join("etc");
        mkdir(&generated, 0o755)?;
        mount_tmpfs(&generated, "mode=755,size=1m")?;
        for (name, contents) in files {
            let image = image_etc.as_deref().and_then(Path::parent).unwrap_or(&root);
            if !image_file(image, &format!("etc/{name}"))? {
                if matches!(name, "passwd" | "group") {
                    return Err(RootfsError::ImageLink {
                        image: image.to_path_buf(),
                        path: format!("/etc/{name}"),
                    });
                }
                // A symlink (Ubuntu links resolv.conf into /run): leave the image's own.
                continue;
            }
            let source = generated.join(name);
            fs::write(&source, contents).map_err(io_err("write", &source))?;
            mounts.push(bind(
                &source,
                &format!("/etc/{name}"),
                &["bind", "ro", "nosuid", "nodev", "noexec"],
            ));
        }
    }
    Ok(PreparedRoot { path: root, mounts })
}

/// Unmounts what [`prepare_root`] mounted in moat's namespace. Returns whether the
/// sandbox directory is now free of mounts, so that deleting it cannot reach into an image.
pub fn release_root(sandbox_dir: &Path) -> bool {
    let mut clean = true;
    for path in [sandbox_dir.join("rootfs"), sandbox_dir.join("etc")] {
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(_) => clean = false,
        }
        clean &= !is_mount_point(&path, sandbox_dir);
    }
    clean
}

fn is_mount_point(path: &Path, parent: &Path) -> bool {
    match (fs::symlink_metadata(path), fs::symlink_metadata(parent)) {
        (Ok(inner), Ok(outer)) => inner.dev() != outer.dev(),
        _ => false,
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(err) => Err(io_err("create directory", path)(err)),
    }
}

/// Reproduces a host path in the root: the same symlink, or a read-only bind of a
/// directory or file. Missing host paths are skipped.
fn mirror(
    host: &Path,
    root: &Path,
    mounts: &mut Vec<Value>,
    options: &[&str],
) -> Result<(), RootfsError> {
    let Ok(meta) = fs::symlink_metadata(host) else {
        return Ok(());
    };
    let inside = root.join(host.strip_prefix("/").unwrap_or(host));
    if let Some(parent) = inside.parent() {
        mkdir(parent, 0o755)?;
    }
    if meta.file_type().is_symlink() {
        let target = fs::read_link(host).map_err(io_err("read link", host))?;
        if fs::symlink_metadata(&inside).is_err() {
            symlink(&target, &inside).map_err(io_err("link", &inside))?;
        }
        return Ok(());
    }
    if meta.is_dir() {
        mkdir(&inside, 0o755)?;
    } else if meta.is_file() {
        if fs::symlink_metadata(&inside).is_err() {
            fs::write(&inside, b"").map_err(io_err("create mount point", &inside))?;
        }
    } else {
        return Ok(());
    }
    mounts.push(bind(host, &host.display().to_string(), options));
    Ok(())
}

fn bind(source: &Path, destination: &str, options: &[&str]) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": options,
    })
}

/// What a path inside an image is, found without following a symlink anywhere on the way.
#[derive(Debug, PartialEq, Eq)]
enum ImageEntry {
    Missing,
    Directory,
    File,
    /// A symlink (on the way or at the end), a device, a socket...
    Other,
}

fn image_entry(image: &Path, relative: &str) -> Result<ImageEntry, RootfsError> {
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = image.to_path_buf();
    for (index, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(ImageEntry::Missing),
            Err(err) => return Err(io_err("inspect", &path)(err)),
        };
        let last = index + 1 == parts.len();
        if meta.file_type().is_symlink() || (!last && !meta.is_dir()) {
            return Ok(ImageEntry::Other);
        }
        if last {
            return Ok(if meta.is_dir() {
                ImageEntry::Directory
            } else if meta.is_file() {
                ImageEntry::File
            } else {
                ImageEntry::Other
            });
        }
    }
    Ok(ImageEntry::Directory)
}

/// Makes sure `relative` is a real directory of the image, creating what is missing one
/// component at a time; a symlink or a file in the way is an error.
fn image_dir(image: &Path, relative: &str) -> Result<(), RootfsError> {
    let mut walked = String::new();
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(part);
        match image_entry(image, &walked)? {
            ImageEntry::Directory => {}
            ImageEntry::Missing => {
                let path = image.join(&walked);
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .map_err(io_err("create mount point", &path))?;
            }
            ImageEntry::File | ImageEntry::Other => {
                return Err(RootfsError::ImageLink {
                    image: image.to_path_buf(),
                    path: format!("/{walked}"),
                })
            }
        }
    }
    Ok(())
}

/// Makes sure `relative` is a regular file of the image (creating an empty one if
/// missing, in a real directory). Returns false when a symlink or special file is there.
fn image_file(image: &Path, relative: &str) -> Result<bool, RootfsError> {
    match image_entry(image, relative)? {
        ImageEntry::File => Ok(true),
        ImageEntry::Other | ImageEntry::Directory => Ok(false),
        ImageEntry::Missing => {
            let path = image.join(relative);
            if let Some(parent) = Path::new(relative).parent().and_then(Path::to_str) {
                image_dir(image, parent)?;
            }
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&path)
                .map_err(io_err("create mount point", &path))?;
            Ok(true)
        }
    }
}

/// Reads a regular file of the image's /etc, never through a symlink.
fn read_image_file(etc: &Path, name: &str) -> Option<String> {
    let image = etc.parent()?;
    if image_entry(image, &format!("etc/{name}")).ok()? != ImageEntry::File {
        return None;
    }
    let mut text = String::new();
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(etc.join(name))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// passwd, group, hostname, hosts and resolv.conf of the sandbox.
fn generated_files(
    plan: &Plan,
    image_etc: Option<&Path>,
    address: Option<std::net::Ipv4Addr>,
) -> Vec<(&'static str, String)> {
    let home = &plan.filesystem.home_path;
    let user = SANDBOX_USER;
    let uid = SANDBOX_UID;
    let keep = |file: &str| -> String {
        let Some(etc) = image_etc else {
            return String::new();
        };
        read_image_file(etc, file)
            .unwrap_or_default()
            .lines()
            .filter(|line| {
                let mut fields = line.split(':');
                let name = fields.next().unwrap_or("");
                let id = fields.nth(1).unwrap_or("");
                name != user && id != uid.to_string()
            })
            .map(|line| format!("{line}\n"))
            .collect()
    };
    let mut passwd = keep("passwd");
    if image_etc.is_none() {
        passwd.push_str("root:x:0:0:root:/root:/usr/sbin/nologin\n");
        passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    }
    passwd.push_str(&format!("{user}:x:{uid}:{uid}:{user}:{home}:/bin/bash\n"));
    let mut group = keep("group");
    if image_etc.is_none() {
        group.push_str("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n");
    }
    group.push_str(&format!("{user}:x:{uid}:\n"));
    let hostname = &plan.hostname;
    let own_address = address.map_or(String::new(), |a| format!("{a}\t{hostname}\n"));
    let resolv_conf = if plan.network.resolvers.is_empty() {
        "# this sandbox has no DNS resolver\n".to_string()
    } else {
        plan.network
            .resolvers
            .iter()
            .map(|r| format!("nameserver {r}\n"))
            .collect()
    };
    vec![
        ("passwd", passwd),
        ("group", group),
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback {hostname}\n{own_address}"),
        ),
        ("resolv.conf", resolv_conf),
    ]
}
