//! The few raw syscalls no crate wraps for us. Every `unsafe` block of moat-sandbox lives
//! here, each with the reason it is sound.
#![allow(unsafe_code)]

use std::io;

/// A classic BPF instruction, as the kernel's `struct sock_filter`.
pub type SockFilter = libc::sock_filter;

/// Installs a seccomp filter on the calling thread (no_new_privs must already be set).
pub fn seccomp_set_filter(program: &[SockFilter], log: bool) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the
    // instructions and keeps no pointer into our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            if log {
                libc::SECCOMP_FILTER_FLAG_LOG
            } else {
                0
            },
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The host's Landlock ABI version, or the errno that says why there is none.
pub fn landlock_abi() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the syscall only
    // returns a number; no memory is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(u32::try_from(rc).unwrap_or(0))
    }
}

/// `prctl(option, arg2, 0, 0, 0)` for the integer-only options moat uses.
pub fn prctl_int(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the options passed here (PR_SET_SECUREBITS, PR_SET_DUMPABLE, PR_SET_PDEATHSIG,
    // PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, PR_GET_*) take integers, not pointers.
    let rc = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `_exit`: leaves a forked child without running the parent's atexit handlers or
/// flushing its copies of the parent's buffers.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler that does nothing for `signal`. A pid namespace's init drops
/// signals it has no handler for, even blocked ones; with this handler they stay pending
/// for `sigwait`.
pub fn install_noop_handler(signal: nix::sys::signal::Signal) -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (it does nothing) and the process is
    // single-threaded at this point.
    unsafe { sigaction(signal, &action) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Restores the default disposition of `signal` (in a child about to exec).
pub fn default_handler(signal: nix::sys::signal::Signal) -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL involves no code of ours.
    unsafe { sigaction(signal, &action) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// A socket for interface and route ioctls in the current network namespace.
fn inet_control_socket() -> io::Result<std::os::fd::OwnedFd> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// An ifreq naming interface `name`, the rest zeroed.
fn interface_request(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    Ok(request)
}

fn sockaddr_inet(address: std::net::Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads the result as
    // sockaddr_in because its family is AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

/// Sets IFF_UP on a network interface of the current network namespace.
pub fn interface_up(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = inet_control_socket()?;
    let mut request = interface_request(name)?;
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_ifru.ifru_flags of `request`,
    // which is a valid, exclusively borrowed ifreq for the duration of the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union field was just written by the kernel as flags.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `request`.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives a network interface of the current network namespace the IPv4 address
/// `address`/`prefix` (the interface's only IPv4 address).
pub fn set_interface_address(
    name: &str,
    address: std::net::Ipv4Addr,
    prefix: u8,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if prefix > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefix longer than 32 bits",
        ));
    }
    let socket = inet_control_socket()?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    for (command, value) in [
        (libc::SIOCSIFADDR, address),
        (libc::SIOCSIFNETMASK, std::net::Ipv4Addr::from(mask)),
    ] {
        let mut request = interface_request(name)?;
        request.ifr_ifru.ifru_addr = sockaddr_inet(value);
        // SAFETY: SIOCSIFADDR and SIOCSIFNETMASK read a valid ifreq that lives for the
        // duration of the call.
        if unsafe { libc::ioctl(socket.as_raw_fd(), command, &request) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `fork()` for a process known to be single-threaded (the sandbox's init), so the child
/// may run arbitrary code, not only async-signal-safe functions.
pub fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: callers are single-threaded processes (the sandbox init, which libcontainer
    // creates with clone and which starts no threads), so no lock can be held by a thread
    // that does not exist in the child.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Writes to a descriptor known only by number (inherited across clone).
pub fn write_raw(fd: std::os::fd::RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: write(2) reads `bytes.len()` bytes from a valid slice; an invalid or closed
    // descriptor yields EBADF, not undefined behaviour.
    let rc = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Marks every descriptor from `first` up close-on-exec.
pub fn cloexec_from(first: libc::c_uint) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags of this process's descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Adds a default IPv4 route via `gateway` in the current network namespace.
pub fn add_default_route(gateway: std::net::Ipv4Addr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = inet_control_socket()?;
    // SAFETY: rtentry is plain old data; all-zero is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_inet(std::net::Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr_inet(std::net::Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr_inet(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads a valid rtentry that lives for the duration of the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT, &route) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for `pid`: it refers to that process only, even after its pid is reused.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (never to a process that reused its pid).
pub fn pidfd_send_signal(
    pidfd: std::os::fd::BorrowedFd<'_>,
    signal: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd is a live descriptor; a null siginfo and zero flags are valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
