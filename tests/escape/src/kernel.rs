//! Kernel attack surface: syscalls, socket families and ioctls that container escapes and
//! kernel exploits have used, and that a sandbox for untrusted code should filter.
//!
//! Every check is non-destructive. Calls that would change host state if they were
//! allowed are made with arguments the kernel rejects *after* its permission checks
//! (bad magic numbers, nonexistent paths, invalid flags), so that a reply other than
//! EPERM/EACCES/ENOSYS proves the call is reachable ("reachable" convention, see
//! [`crate::sys::reachable`]). Namespace and process-state changes only affect the
//! disposable forked process each check runs in.

use std::ffi::CStr;
use std::path::Path;

use libc::{c_int, c_long, c_ulong, c_void};

use crate::report::{Check, Outcome};
use crate::sys::{
    self, cstring, describe_exit, errno, errno_name, reachable, succeeds, sysret, sysret_int, Exit,
};

const CLASS: &str = "kernel";

/// All kernel checks, in output order.
pub fn checks() -> Vec<Check> {
    let c = |id: &'static str, name: &'static str, run: fn() -> Outcome| {
        Check::new(id, CLASS, name, run)
    };
    vec![
        c("kernel.io_uring", "io_uring_setup", io_uring),
        c("kernel.bpf_prog_load", "bpf(BPF_PROG_LOAD)", bpf_prog_load),
        c(
            "kernel.bpf_map_create",
            "bpf(BPF_MAP_CREATE)",
            bpf_map_create,
        ),
        c("kernel.userfaultfd", "userfaultfd", userfaultfd),
        c("kernel.perf_event_open", "perf_event_open", perf_event_open),
        c("kernel.add_key", "add_key", add_key),
        c("kernel.keyctl", "keyctl(KEYCTL_GET_KEYRING_ID)", keyctl),
        c(
            "kernel.unshare_user",
            "unshare(CLONE_NEWUSER)",
            unshare_user,
        ),
        c("kernel.unshare_ns", "unshare(CLONE_NEWNS)", unshare_ns),
        c("kernel.unshare_net", "unshare(CLONE_NEWNET)", unshare_net),
        c(
            "kernel.unshare_user_mount",
            "unshare(CLONE_NEWUSER|CLONE_NEWNS) + mount tmpfs",
            unshare_user_mount,
        ),
        c(
            "kernel.clone_newuser",
            "clone(CLONE_NEWUSER) raw",
            clone_newuser,
        ),
        c("kernel.clone3", "clone3(CLONE_NEWUSER)", clone3),
        c("kernel.mount", "mount(tmpfs)", mount_tmpfs),
        c("kernel.fsopen", "fsopen(tmpfs)", fsopen),
        c("kernel.open_tree", "open_tree(OPEN_TREE_CLONE)", open_tree),
        c("kernel.move_mount", "move_mount", move_mount),
        c("kernel.pivot_root", "pivot_root", pivot_root),
        c("kernel.chroot", "chroot", chroot),
        c(
            "kernel.ptrace_traceme",
            "ptrace(PTRACE_TRACEME)",
            ptrace_traceme,
        ),
        c(
            "kernel.ptrace_attach",
            "ptrace(PTRACE_ATTACH) child",
            ptrace_attach,
        ),
        c(
            "kernel.process_vm_readv",
            "process_vm_readv child",
            process_vm_readv,
        ),
        c(
            "kernel.open_by_handle_at",
            "open_by_handle_at",
            open_by_handle_at,
        ),
        c(
            "kernel.name_to_handle_at",
            "name_to_handle_at",
            name_to_handle_at,
        ),
        c("kernel.setns", "setns(/proc/self/ns/*)", setns),
        c("kernel.kexec_load", "kexec_load", kexec_load),
        c("kernel.init_module", "init_module", init_module),
        c("kernel.finit_module", "finit_module", finit_module),
        c("kernel.af_packet", "socket(AF_PACKET)", af_packet),
        c("kernel.sock_raw", "socket(AF_INET, SOCK_RAW)", sock_raw),
        c(
            "kernel.netlink_route_write",
            "rtnetlink change (RTM_NEWLINK)",
            netlink_route_write,
        ),
        c(
            "kernel.af_netlink_other",
            "socket(AF_NETLINK) other than NETLINK_ROUTE",
            af_netlink_other,
        ),
        c("kernel.af_vsock", "socket(AF_VSOCK)", af_vsock),
        c("kernel.af_alg", "socket(AF_ALG)", af_alg),
        c("kernel.tiocsti", "ioctl(TIOCSTI) on a pty", tiocsti),
        c(
            "kernel.personality",
            "personality(READ_IMPLIES_EXEC)",
            personality,
        ),
        c("kernel.swapon", "swapon", swapon),
        c("kernel.reboot", "reboot", reboot),
        c("kernel.acct", "acct", acct),
        c("kernel.quotactl", "quotactl", quotactl),
        c("kernel.kcmp", "kcmp", kcmp),
        c("kernel.syslog", "syslog(SYSLOG_ACTION_READ_ALL)", syslog),
        c("kernel.mknod", "mknod(char device)", mknod),
        c("kernel.ioperm", "ioperm", ioperm),
        c("kernel.modify_ldt", "modify_ldt", modify_ldt),
        c(
            "kernel.settimeofday",
            "settimeofday(NULL, NULL)",
            settimeofday,
        ),
        c("kernel.fanotify_init", "fanotify_init", fanotify_init),
        c(
            "kernel.sethostname",
            "sethostname(current name)",
            sethostname,
        ),
    ]
}

fn io_uring() -> Outcome {
    // struct io_uring_params is 120 bytes.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) = 120 bytes,
    // which is exactly the size of `params`.
    let r = sysret(unsafe {
        libc::syscall(libc::SYS_io_uring_setup, 1 as c_long, params.as_mut_ptr())
    });
    sys::close_ok(r);
    reachable("io_uring_setup", r)
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD, padded to 128 bytes.
#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    rest: [u64; 10],
}

fn bpf_prog_load() -> Outcome {
    // BPF_PROG_TYPE_SOCKET_FILTER: "r0 = 0; exit".
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = BpfProgLoadAttr {
        prog_type: 1,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: attr is an initialised bpf_attr prefix of the size passed; the kernel only
    // reads it and the instruction and license buffers, which outlive the call.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5 as c_long, // BPF_PROG_LOAD
            &attr as *const BpfProgLoadAttr,
            std::mem::size_of::<BpfProgLoadAttr>() as c_ulong,
        )
    });
    sys::close_ok(r);
    reachable("bpf(BPF_PROG_LOAD socket filter)", r)
}

fn bpf_map_create() -> Outcome {
    // map_type = BPF_MAP_TYPE_ARRAY, key_size 4, value_size 4, max_entries 1.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[2, 4, 4, 1]);
    // SAFETY: attr is a 128-byte, initialised bpf_attr; the kernel only reads it.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0 as c_long, // BPF_MAP_CREATE
            attr.as_ptr(),
            std::mem::size_of_val(&attr) as c_ulong,
        )
    });
    sys::close_ok(r);
    reachable("bpf(BPF_MAP_CREATE array)", r)
}

fn userfaultfd() -> Outcome {
    // SAFETY: userfaultfd takes only flags.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            c_long::from(libc::O_CLOEXEC | libc::O_NONBLOCK),
        )
    });
    sys::close_ok(r);
    reachable("userfaultfd", r)
}

fn perf_event_open() -> Outcome {
    // struct perf_event_attr (PERF_ATTR_SIZE_VER0 = 64 bytes used, rest zero).
    let mut attr = [0u64; 16];
    attr[0] = 1 | (64u64 << 32); // type = PERF_TYPE_SOFTWARE, size = 64
    attr[1] = 1; // config = PERF_COUNT_SW_TASK_CLOCK
    attr[5] = 1 | (1 << 5) | (1 << 6); // disabled, exclude_kernel, exclude_hv
                                       // SAFETY: attr is a zero-padded perf_event_attr the kernel only reads.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as c_long,  // this process
            -1 as c_long, // any CPU
            -1 as c_long, // no group
            8 as c_long,  // PERF_FLAG_FD_CLOEXEC
        )
    });
    sys::close_ok(r);
    reachable("perf_event_open(software task clock, self)", r)
}

const KEY_SPEC_PROCESS_KEYRING: c_long = -2;
const KEY_SPEC_SESSION_KEYRING: c_long = -3;

fn add_key() -> Outcome {
    let payload = b"x";
    // SAFETY: type and description are NUL-terminated, the payload pointer/length pair
    // describes `payload`; the key goes to this disposable process's own keyring.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"moat-escape-probe".as_ptr(),
            payload.as_ptr(),
            payload.len() as c_long,
            KEY_SPEC_PROCESS_KEYRING,
        )
    });
    if let Ok(key) = r {
        // SAFETY: KEYCTL_INVALIDATE (21) on the key we just made; integers only.
        unsafe { libc::syscall(libc::SYS_keyctl, 21 as c_long, key) };
    }
    reachable("add_key(user, process keyring)", r)
}

fn keyctl() -> Outcome {
    // SAFETY: KEYCTL_GET_KEYRING_ID (0) with integer arguments only, create = 0.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            0 as c_long,
            KEY_SPEC_SESSION_KEYRING,
            0 as c_long,
        )
    });
    reachable("keyctl(KEYCTL_GET_KEYRING_ID, session)", r)
}

fn unshare_flags(what: &str, flags: c_int) -> Outcome {
    // SAFETY: unshare takes flags only and changes just this disposable check process.
    let r = sysret_int(unsafe { libc::unshare(flags) });
    succeeds(what, r)
}

fn unshare_user() -> Outcome {
    unshare_flags("unshare(CLONE_NEWUSER)", libc::CLONE_NEWUSER)
}

fn unshare_ns() -> Outcome {
    unshare_flags("unshare(CLONE_NEWNS)", libc::CLONE_NEWNS)
}

fn unshare_net() -> Outcome {
    unshare_flags("unshare(CLONE_NEWNET)", libc::CLONE_NEWNET)
}

/// Mounts tmpfs at `target` and unmounts it again at once.
fn mount_and_unmount(target: &str) -> Result<c_long, i32> {
    let t = cstring(target);
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: source, target and type are NUL-terminated strings; data is NULL.
    let r = sysret_int(unsafe {
        libc::mount(
            c"none".as_ptr(),
            t.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            std::ptr::null(),
        )
    });
    if r.is_ok() {
        // SAFETY: unmounting the tmpfs we just mounted; t is NUL-terminated.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
    r
}

fn unshare_user_mount() -> Outcome {
    // SAFETY: plain id getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: unshare takes flags only and changes just this disposable check process.
    let r = sysret_int(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) });
    if let Err(e) = r {
        return Outcome::contained(format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS): {}",
            errno_name(e)
        ));
    }
    // Map ourselves to root of the new namespace (errors are judged by the mount below).
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    let _ = std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"));
    let _ = std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"));
    // The new mount namespace is owned by a less privileged user namespace, so its
    // mounts are slaves: nothing mounted here propagates out.
    let target = if Path::new("/tmp").is_dir() {
        "/tmp"
    } else {
        "/"
    };
    match mount_and_unmount(target) {
        Ok(_) => Outcome::exposed(format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS) succeeded and mount(tmpfs, {target}) inside it \
             succeeded: full capabilities over a new user namespace"
        )),
        Err(e) => Outcome::contained(format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS) succeeded but mount(tmpfs, {target}): {}",
            errno_name(e)
        )),
    }
}

fn clone_newuser() -> Outcome {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as c_ulong;
    // SAFETY: raw clone without CLONE_VM and with a NULL stack behaves like fork: the
    // child gets a copy of the address space and only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
        )
    };
    if r == 0 {
        // SAFETY: child side: leave immediately without touching shared state.
        unsafe { libc::_exit(0) };
    }
    let r = sysret(r);
    if let Ok(pid) = r {
        let _ = sys::wait_for(pid as libc::pid_t, std::time::Duration::from_secs(2));
        return Outcome::exposed(format!(
            "clone(CLONE_NEWUSER) created child {pid} in a new user namespace"
        ));
    }
    succeeds("clone(CLONE_NEWUSER)", r)
}

/// struct clone_args, CLONE_ARGS_SIZE_VER0 (64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

fn clone3() -> Outcome {
    let args = CloneArgs {
        flags: libc::CLONE_NEWUSER as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: args is an initialised clone_args of the size passed; without CLONE_VM and
    // without a stack the child is a fork-like copy that only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>() as c_ulong,
        )
    };
    if r == 0 {
        // SAFETY: child side: leave immediately without touching shared state.
        unsafe { libc::_exit(0) };
    }
    match sysret(r) {
        Ok(pid) => {
            let _ = sys::wait_for(pid as libc::pid_t, std::time::Duration::from_secs(2));
            Outcome::exposed(format!(
                "clone3(CLONE_NEWUSER) created child {pid} in a new user namespace"
            ))
        }
        // Only a new namespace counts; ENOSYS (or any refusal) is fine.
        Err(e) => Outcome::contained(format!("clone3(CLONE_NEWUSER): {}", errno_name(e))),
    }
}

fn mount_tmpfs() -> Outcome {
    match sys::temp_dir("moat-probe-mnt") {
        Some(dir) => {
            let r = mount_and_unmount(&dir);
            let _ = std::fs::remove_dir(&dir);
            reachable(&format!("mount(tmpfs, {dir})"), r)
        }
        None => {
            // Nowhere writable: mount over an existing directory instead. It is
            // unmounted immediately if the mount succeeds.
            let target = ["/tmp", "/dev/shm", "/mnt", "/"]
                .into_iter()
                .find(|d| Path::new(d).is_dir())
                .unwrap_or("/");
            reachable(
                &format!("mount(tmpfs, {target})"),
                mount_and_unmount(target),
            )
        }
    }
}

fn fsopen() -> Outcome {
    // SAFETY: fsname is NUL-terminated; FSOPEN_CLOEXEC = 1.
    let r = sysret(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 1 as c_long) });
    sys::close_ok(r);
    reachable("fsopen(tmpfs)", r)
}

fn open_tree() -> Outcome {
    // OPEN_TREE_CLONE = 1, OPEN_TREE_CLOEXEC = O_CLOEXEC. The detached copy is released
    // when the descriptor is closed.
    let flags = 1 | libc::O_CLOEXEC as c_long;
    // SAFETY: path is NUL-terminated; no memory is written.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            c_long::from(libc::AT_FDCWD),
            c"/".as_ptr(),
            flags,
        )
    });
    sys::close_ok(r);
    reachable("open_tree(/, OPEN_TREE_CLONE)", r)
}

fn move_mount() -> Outcome {
    // Bad descriptors and empty paths: rejected after the permission check, so nothing
    // can move.
    // SAFETY: paths are NUL-terminated empty strings.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            -1 as c_long,
            c"".as_ptr(),
            -1 as c_long,
            c"".as_ptr(),
            0 as c_long,
        )
    });
    reachable("move_mount(-1, \"\", -1, \"\")", r)
}

fn pivot_root() -> Outcome {
    // SAFETY: both paths are NUL-terminated and do not exist.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_pivot_root,
            c"/nonexistent-moat-probe-new".as_ptr(),
            c"/nonexistent-moat-probe-old".as_ptr(),
        )
    });
    reachable("pivot_root(nonexistent paths)", r)
}

fn chroot() -> Outcome {
    // SAFETY: path is NUL-terminated; chroot("/") only affects this disposable process.
    let r = sysret_int(unsafe { libc::chroot(c"/".as_ptr()) });
    reachable("chroot(/)", r)
}

fn ptrace_traceme() -> Outcome {
    let child = sys::fork_run(|| {
        // SAFETY: PTRACE_TRACEME takes no pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_ptrace,
                libc::PTRACE_TRACEME as c_long,
                0 as c_long,
                0 as c_long,
                0 as c_long,
            )
        };
        if r == 0 {
            0
        } else {
            errno().clamp(1, 124)
        }
    });
    let pid = match child {
        Ok(p) => p,
        Err(e) => return Outcome::contained(format!("fork: {}", errno_name(e))),
    };
    match sys::wait_for(pid, std::time::Duration::from_secs(3)) {
        Exit::Code(0) => Outcome::exposed("ptrace(PTRACE_TRACEME): succeeded in a child"),
        Exit::Code(e) => reachable("ptrace(PTRACE_TRACEME)", Err(e)),
        other => Outcome::contained(format!(
            "ptrace(PTRACE_TRACEME): child {}",
            describe_exit(other)
        )),
    }
}

fn ptrace_attach() -> Outcome {
    let pid = match sys::fork_run(sys::park) {
        Ok(p) => p,
        Err(e) => return Outcome::contained(format!("fork: {}", errno_name(e))),
    };
    // SAFETY: PTRACE_ATTACH takes the pid only.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            libc::PTRACE_ATTACH as c_long,
            c_long::from(pid),
            0 as c_long,
            0 as c_long,
        )
    });
    // SIGKILL works on a traced child; kill_and_reap skips the stop notification.
    sys::kill_and_reap(pid);
    reachable("ptrace(PTRACE_ATTACH) on a forked child", r)
}

fn process_vm_readv() -> Outcome {
    let marker: u64 = std::hint::black_box(0x6d6f_6174_7072_6f62);
    let pid = match sys::fork_run(sys::park) {
        Ok(p) => p,
        Err(e) => return Outcome::contained(format!("fork: {}", errno_name(e))),
    };
    let mut buf: u64 = 0;
    let local = libc::iovec {
        iov_base: (&mut buf as *mut u64).cast::<c_void>(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: (&marker as *const u64).cast_mut().cast::<c_void>(),
        iov_len: 8,
    };
    // SAFETY: `local` describes the 8 writable bytes of `buf`; `remote` is an address in
    // the child (a fork of us), which the kernel reads on our behalf.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            c_long::from(pid),
            &local as *const libc::iovec,
            1 as c_long,
            &remote as *const libc::iovec,
            1 as c_long,
            0 as c_long,
        )
    });
    sys::kill_and_reap(pid);
    match r {
        Ok(n) => Outcome::exposed(format!(
            "process_vm_readv read {n} bytes from a child (marker {})",
            if buf == marker { "matched" } else { "differs" }
        )),
        Err(e) => reachable("process_vm_readv on a forked child", Err(e)),
    }
}

/// struct file_handle with room for 128 bytes of handle.
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

fn open_by_handle_at() -> Outcome {
    // SAFETY: path is NUL-terminated.
    let root = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root < 0 {
        return Outcome::contained(format!("open(/): {}", errno_name(errno())));
    }
    // The "Shocker" handle: FILEID_INO32_GEN for inode 2 (an ext4 root), generation 0.
    let mut h = FileHandle {
        handle_bytes: 8,
        handle_type: 1,
        f_handle: [0; 128],
    };
    h.f_handle[0] = 2;
    // SAFETY: h is a valid file_handle whose handle_bytes fits its buffer.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            c_long::from(root),
            &mut h as *mut FileHandle,
            c_long::from(libc::O_RDONLY | libc::O_CLOEXEC),
        )
    });
    sys::close_ok(r);
    sys::close_fd(c_long::from(root));
    match r {
        Ok(_) => Outcome::exposed(
            "open_by_handle_at opened inode 2 of the root filesystem by handle (Shocker)",
        ),
        Err(e) => reachable("open_by_handle_at(inode 2)", Err(e)),
    }
}

fn name_to_handle_at() -> Outcome {
    let mut h = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: c_int = 0;
    // SAFETY: h has room for handle_bytes bytes; mount_id is a valid out-pointer.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            c_long::from(libc::AT_FDCWD),
            c"/".as_ptr(),
            &mut h as *mut FileHandle,
            &mut mount_id as *mut c_int,
            0 as c_long,
        )
    });
    match r {
        Ok(_) => Outcome::exposed(format!(
            "name_to_handle_at(/) returned a type {} handle of {} bytes on mount {mount_id}",
            h.handle_type, h.handle_bytes
        )),
        Err(e) => reachable("name_to_handle_at(/)", Err(e)),
    }
}

fn setns() -> Outcome {
    let entries = match std::fs::read_dir("/proc/self/ns") {
        Ok(e) => e,
        Err(e) => {
            return Outcome::not_present(&format!("/proc/self/ns ({})", sys::io_err_name(&e)))
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut parts = Vec::new();
    let mut exposed = false;
    for name in names {
        let path = cstring(&format!("/proc/self/ns/{name}"));
        // SAFETY: path is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            parts.push(format!("{name}: open {}", errno_name(errno())));
            continue;
        }
        // SAFETY: fd is a namespace descriptor we own; joining our own namespace only
        // affects this disposable process.
        let r = sysret_int(unsafe { libc::setns(fd, 0) });
        sys::close_fd(c_long::from(fd));
        match r {
            Ok(_) => {
                exposed = true;
                parts.push(format!("{name}: ok"));
            }
            Err(e) => {
                if !sys::is_denied(e) {
                    exposed = true;
                }
                parts.push(format!("{name}: {}", errno_name(e)));
            }
        }
    }
    let detail = format!("setns on own namespaces: {}", parts.join(", "));
    if exposed {
        Outcome::exposed(detail + " (succeeded or reachable)")
    } else {
        Outcome::contained(detail)
    }
}

fn kexec_load() -> Outcome {
    // Too many segments and an undefined flag bit: EINVAL once past the CAP_SYS_BOOT check,
    // so nothing can be loaded.
    // SAFETY: segments is NULL and is never read because the arguments are rejected first.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as c_long,
            1000 as c_long,
            std::ptr::null::<c_void>(),
            0x8000 as c_long,
        )
    });
    reachable("kexec_load(invalid flags)", r)
}

fn init_module() -> Outcome {
    // A NULL, zero-length image: rejected (ENOEXEC/EINVAL/EFAULT) after the capability check.
    // SAFETY: the image pointer is NULL with length 0; params is NUL-terminated.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<c_void>(),
            0 as c_long,
            c"".as_ptr(),
        )
    });
    reachable("init_module(NULL, 0)", r)
}

fn finit_module() -> Outcome {
    // SAFETY: fd -1 and an empty NUL-terminated params string; rejected with EBADF if reached.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            -1 as c_long,
            c"".as_ptr(),
            0 as c_long,
        )
    });
    reachable("finit_module(-1)", r)
}

fn socket_check(what: &str, domain: c_int, ty: c_int, proto: c_int) -> Outcome {
    // SAFETY: socket takes integers only.
    let r = sysret_int(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) });
    sys::close_ok(r);
    succeeds(what, r)
}

fn af_packet() -> Outcome {
    // protocol = htons(ETH_P_ALL)
    socket_check(
        "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
        libc::AF_PACKET,
        libc::SOCK_RAW,
        c_int::from((libc::ETH_P_ALL as u16).to_be()),
    )
}

fn sock_raw() -> Outcome {
    socket_check(
        "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMP,
    )
}

/// Reading the sandbox's own interfaces over NETLINK_ROUTE is allowed (getifaddrs needs
/// it: ZeroMQ, so every Jupyter kernel, resolves addresses with it); changing anything
/// must not be. The request names an interface index that does not exist, so a kernel
/// that let it past the CAP_NET_ADMIN check answers ENODEV and nothing changes.
fn netlink_route_write() -> Outcome {
    const WHAT: &str = "RTM_NEWLINK over NETLINK_ROUTE";
    // SAFETY: socket takes integers only.
    let fd = match sysret_int(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    }) {
        Ok(fd) => fd as c_int,
        Err(e) => return Outcome::contained(format!("socket(NETLINK_ROUTE): {}", errno_name(e))),
    };
    let mut request = Vec::with_capacity(32);
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    request.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len: header + ifinfomsg
    request.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // seq
    request.extend_from_slice(&0u32.to_ne_bytes()); // pid
    request.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, padding
    request.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    request.extend_from_slice(&i32::MAX.to_ne_bytes()); // ifi_index: no such interface
    request.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    request.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
                                                    // SAFETY: the buffer is valid for its length; fd is ours.
    let sent = unsafe { libc::send(fd, request.as_ptr().cast(), request.len(), 0) };
    let mut answer = [0u8; 512];
    // SAFETY: the buffer is valid for its length; fd is ours.
    let got = if sent < 0 {
        sent
    } else {
        unsafe { libc::recv(fd, answer.as_mut_ptr().cast(), answer.len(), 0) }
    };
    let send_errno = errno();
    sys::close_fd(c_long::from(fd));
    if got < 0 {
        return Outcome::contained(format!("{WHAT}: {}", errno_name(send_errno)));
    }
    // nlmsgerr: the 16-byte header, then the error as a negative errno (0 = done).
    let error = answer
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EIO);
    reachable(WHAT, if error == 0 { Ok(0) } else { Err(-error) })
}

/// Netlink families with nothing for a notebook: netfilter (nftables), audit, kernel
/// uevents, socket diagnostics, generic netlink and IPsec.
fn af_netlink_other() -> Outcome {
    let families = [
        ("NETLINK_SOCK_DIAG", libc::NETLINK_SOCK_DIAG),
        ("NETLINK_XFRM", libc::NETLINK_XFRM),
        ("NETLINK_AUDIT", libc::NETLINK_AUDIT),
        ("NETLINK_NETFILTER", libc::NETLINK_NETFILTER),
        ("NETLINK_KOBJECT_UEVENT", libc::NETLINK_KOBJECT_UEVENT),
        ("NETLINK_GENERIC", libc::NETLINK_GENERIC),
    ];
    let mut details = Vec::new();
    for (name, protocol) in families {
        let outcome = socket_check(name, libc::AF_NETLINK, libc::SOCK_RAW, protocol);
        if outcome.exposed {
            return outcome;
        }
        details.push(outcome.detail);
    }
    Outcome::contained(details.join("; "))
}

fn af_vsock() -> Outcome {
    socket_check(
        "socket(AF_VSOCK, SOCK_STREAM)",
        libc::AF_VSOCK,
        libc::SOCK_STREAM,
        0,
    )
}

fn af_alg() -> Outcome {
    socket_check(
        "socket(AF_ALG, SOCK_SEQPACKET)",
        libc::AF_ALG,
        libc::SOCK_SEQPACKET,
        0,
    )
}

fn tiocsti() -> Outcome {
    if !Path::new("/dev/ptmx").exists() {
        return Outcome::not_present("/dev/ptmx");
    }
    // New session, so the pty slave becomes our controlling terminal (the TIOCSTI
    // attack injects into the controlling terminal). Only this disposable process.
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    // SAFETY: path is NUL-terminated.
    let master = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Outcome::contained(format!("open(/dev/ptmx): {}", errno_name(errno())));
    }
    let unlock: c_int = 0;
    let mut n: c_int = -1;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an int; both point at locals.
    let got = unsafe {
        libc::ioctl(master, libc::TIOCSPTLCK, &unlock as *const c_int);
        libc::ioctl(master, libc::TIOCGPTN, &mut n as *mut c_int)
    };
    let mut target = master;
    let mut target_name = "/dev/ptmx (master)".to_string();
    let mut slave = -1;
    if got == 0 && n >= 0 {
        let path = format!("/dev/pts/{n}");
        let p = cstring(&path);
        // SAFETY: path is NUL-terminated.
        slave = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if slave >= 0 {
            target = slave;
            target_name = path;
        }
    }
    let ch: libc::c_char = b'#' as libc::c_char;
    // SAFETY: TIOCSTI reads one char from the pointer, which points at a local. The
    // character lands in the input queue of our own, private pty.
    let r = sysret_int(unsafe { libc::ioctl(target, libc::TIOCSTI, &ch as *const libc::c_char) });
    sys::close_fd(c_long::from(slave));
    sys::close_fd(c_long::from(master));
    // TIOCSTI: only success counts (EIO means legacy_tiocsti is off).
    succeeds(&format!("ioctl(TIOCSTI) on {target_name}"), r)
}

fn personality() -> Outcome {
    // READ_IMPLIES_EXEC = 0x0400000. The kernel itself never fails personality(); only a
    // filter can. Affects only this disposable process.
    // SAFETY: integer argument only.
    let r = sysret(unsafe { libc::syscall(libc::SYS_personality, 0x0040_0000 as c_ulong) });
    succeeds("personality(READ_IMPLIES_EXEC)", r)
}

fn swapon() -> Outcome {
    // SAFETY: path is NUL-terminated and does not exist.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_swapon,
            c"/nonexistent-moat-probe".as_ptr(),
            0 as c_long,
        )
    });
    reachable("swapon(/nonexistent-moat-probe)", r)
}

fn reboot() -> Outcome {
    // magic1 = 0 is invalid: EINVAL once past the CAP_SYS_BOOT check, so the command
    // (LINUX_REBOOT_CMD_CAD_OFF) is never executed.
    // SAFETY: integer arguments; arg is NULL.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_reboot,
            0 as c_long,
            0 as c_long,
            0 as c_long,
            std::ptr::null::<c_void>(),
        )
    });
    reachable("reboot(bad magic, CAD_OFF)", r)
}

fn acct() -> Outcome {
    // SAFETY: path is NUL-terminated and cannot be created.
    let r =
        sysret(unsafe { libc::syscall(libc::SYS_acct, c"/nonexistent-moat-probe/acct".as_ptr()) });
    reachable("acct(/nonexistent-moat-probe/acct)", r)
}

fn quotactl() -> Outcome {
    // Unknown subcommand 0x7f on USRQUOTA with no device: ENODEV/EINVAL if reached.
    let cmd = 0x7f << 8;
    // SAFETY: special and addr are NULL; integer arguments otherwise.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_quotactl,
            cmd as c_long,
            std::ptr::null::<libc::c_char>(),
            0 as c_long,
            std::ptr::null::<c_void>(),
        )
    });
    reachable("quotactl(bogus command)", r)
}

fn kcmp() -> Outcome {
    // SAFETY: plain getter.
    let pid = c_long::from(unsafe { libc::getpid() });
    // SAFETY: KCMP_VM (1) with integer arguments only.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            1 as c_long,
            0 as c_long,
            0 as c_long,
        )
    });
    reachable("kcmp(self, self, KCMP_VM)", r)
}

fn syslog() -> Outcome {
    let mut buf = vec![0u8; 4096];
    // SAFETY: SYSLOG_ACTION_READ_ALL (3) writes at most len bytes into buf.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_syslog,
            3 as c_long,
            buf.as_mut_ptr(),
            buf.len() as c_long,
        )
    });
    reachable("syslog(SYSLOG_ACTION_READ_ALL)", r)
}

fn mknod() -> Outcome {
    let Some(dir) = sys::temp_dir("moat-probe-mknod") else {
        return Outcome::not_present("a writable temporary directory");
    };
    let path = format!("{dir}/null");
    let p = cstring(&path);
    // Device 1:3 is /dev/null, so even a usable node is harmless.
    // SAFETY: path is NUL-terminated.
    let r =
        sysret_int(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) });
    let mut opened = String::new();
    if r.is_ok() {
        // SAFETY: path is NUL-terminated.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        opened = if fd >= 0 {
            sys::close_fd(c_long::from(fd));
            "; the node can be opened (mount allows devices)".to_string()
        } else {
            format!("; opening it: {}", errno_name(errno()))
        };
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    match r {
        Ok(_) => Outcome::exposed(format!("mknod(char 1:3) in {dir} succeeded{opened}")),
        Err(e) => Outcome::contained(format!("mknod(char 1:3): {}", errno_name(e))),
    }
}

#[cfg(target_arch = "x86_64")]
fn ioperm() -> Outcome {
    // Port 0x80 (POST diagnostics); permission is dropped again and no port is touched.
    // SAFETY: integer arguments only.
    let r = sysret(unsafe {
        libc::syscall(libc::SYS_ioperm, 0x80 as c_long, 1 as c_long, 1 as c_long)
    });
    if r.is_ok() {
        // SAFETY: integer arguments only.
        unsafe { libc::syscall(libc::SYS_ioperm, 0x80 as c_long, 1 as c_long, 0 as c_long) };
    }
    reachable("ioperm(0x80, 1, 1)", r)
}

#[cfg(not(target_arch = "x86_64"))]
fn ioperm() -> Outcome {
    Outcome::not_present("ioperm (x86_64 only)")
}

#[cfg(target_arch = "x86_64")]
fn modify_ldt() -> Outcome {
    let mut buf = [0u8; 16];
    // SAFETY: func 0 (read) writes at most 16 bytes into buf.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_modify_ldt,
            0 as c_long,
            buf.as_mut_ptr(),
            buf.len() as c_long,
        )
    });
    reachable("modify_ldt(read)", r)
}

#[cfg(not(target_arch = "x86_64"))]
fn modify_ldt() -> Outcome {
    Outcome::not_present("modify_ldt (x86_64 only)")
}

fn settimeofday() -> Outcome {
    // With both arguments NULL the kernel performs only the CAP_SYS_TIME check and
    // changes nothing.
    // SAFETY: both pointers are NULL.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            std::ptr::null::<c_void>(),
            std::ptr::null::<c_void>(),
        )
    });
    reachable("settimeofday(NULL, NULL)", r)
}

fn fanotify_init() -> Outcome {
    // FAN_CLASS_NOTIF | FAN_CLOEXEC, event fd O_RDONLY.
    // SAFETY: integer arguments only.
    let r = sysret(unsafe {
        libc::syscall(
            libc::SYS_fanotify_init,
            1 as c_long,
            c_long::from(libc::O_RDONLY),
        )
    });
    sys::close_ok(r);
    reachable("fanotify_init(FAN_CLASS_NOTIF)", r)
}

fn sethostname() -> Outcome {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Outcome::contained(format!("gethostname: {}", errno_name(errno())));
    }
    let name = CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_bytes())
        .unwrap_or(&[]);
    // Setting the name it already has: a permission test that changes nothing.
    // SAFETY: name points into buf with the given length.
    let r = sysret_int(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) });
    reachable(
        &format!("sethostname({:?})", String::from_utf8_lossy(name)),
        r,
    )
}
