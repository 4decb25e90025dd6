//! The kernel audit netlink interface: status, enabling, and the read-log multicast group.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_STATUS_ENABLED: u32 = 0x0001;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x0010;
const AUDIT_NLGRP_READLOG: u32 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

/// The kernel's audit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStatus {
    /// 0 off, 1 on, 2 locked.
    pub enabled: u32,
    /// Records the kernel dropped so far.
    pub lost: u32,
    /// Records the kernel may queue.
    pub backlog_limit: u32,
    /// Records queued now, not yet sent.
    pub backlog: u32,
    /// Process id of the registered audit daemon (0: none).
    pub daemon_pid: u32,
}

fn message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
    bytes.extend_from_slice(&length.to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&1u32.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn word(bytes: &[u8], index: usize) -> u32 {
    bytes
        .get(index * 4..index * 4 + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// An audit netlink socket. The kernel's audit lives in the initial network namespace
/// only: a socket made in another one (moat run from a daemon in its own namespace, say)
/// never hears a record. So when moat is elsewhere, the socket is made on a short-lived
/// thread that joined the initial namespace (that of pid 1); it stays there for good.
fn audit_socket() -> io::Result<OwnedFd> {
    let make = || -> io::Result<OwnedFd> {
        Ok(socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkAudit,
        )?)
    };
    let identity = |path: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
    };
    // Pid 1 may be unreadable even for root (a non-dumpable init); kthreadd, like every
    // kernel thread, lives in the initial namespaces too.
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    let initial = ["/proc/1/ns/net", "/proc/2/ns/net"]
        .into_iter()
        .filter(|path| *path == "/proc/1/ns/net" || kthreadd)
        .find_map(|path| identity(path).ok().map(|id| (path, id)));
    let Some((initial, initial_id)) = initial else {
        return make();
    };
    if initial_id == identity("/proc/thread-self/ns/net")? {
        return make();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let namespace = std::fs::File::open(initial)?;
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
                make()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the audit socket thread panicked")))
    })
}

fn control_socket() -> io::Result<OwnedFd> {
    let fd = audit_socket()?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(2, 0),
    )?;
    Ok(fd)
}

/// Reads the audit status.
pub fn status() -> io::Result<AuditStatus> {
    let fd = control_socket()?;
    send(
        fd.as_raw_fd(),
        &message(AUDIT_GET, NLM_F_REQUEST, &[]),
        MsgFlags::empty(),
    )?;
    let mut buffer = vec![0u8; 8192];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
        if n < NLMSG_HDRLEN {
            continue;
        }
        let kind = u16::from_ne_bytes([buffer[4], buffer[5]]);
        if kind == AUDIT_GET {
            let payload = &buffer[NLMSG_HDRLEN..n];
            return Ok(AuditStatus {
                enabled: word(payload, 1),
                backlog_limit: word(payload, 5),
                lost: word(payload, 6),
                backlog: word(payload, 7),
                daemon_pid: word(payload, 3),
            });
        }
        if kind == NLMSG_ERROR {
            let code = i32::from_ne_bytes(
                buffer[NLMSG_HDRLEN..NLMSG_HDRLEN + 4]
                    .try_into()
                    .unwrap_or([0; 4]),
            );
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        }
    }
}

/// Turns auditing on (it stays on) and raises the kernel's backlog to at least
/// `backlog_limit` records, so bursts of denials are queued rather than dropped.
pub fn enable(backlog_limit: u32) -> io::Result<()> {
    let fd = control_socket()?;
    let mut payload = vec![0u8; 40];
    payload[0..4]
        .copy_from_slice(&(AUDIT_STATUS_ENABLED | AUDIT_STATUS_BACKLOG_LIMIT).to_ne_bytes());
    payload[4..8].copy_from_slice(&1u32.to_ne_bytes());
    payload[20..24].copy_from_slice(&backlog_limit.to_ne_bytes());
    send(
        fd.as_raw_fd(),
        &message(AUDIT_SET, NLM_F_REQUEST | NLM_F_ACK, &payload),
        MsgFlags::empty(),
    )?;
    let mut buffer = vec![0u8; 8192];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
        if n >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([buffer[4], buffer[5]]) == NLMSG_ERROR {
            let code = i32::from_ne_bytes(
                buffer[NLMSG_HDRLEN..NLMSG_HDRLEN + 4]
                    .try_into()
                    .unwrap_or([0; 4]),
            );
            return if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            };
        }
    }
}

/// Writes a user message into the audit stream (AUDIT_USER): it comes out after every
/// record queued before it, which makes it a marker for "everything so far was sent".
pub fn write_marker(text: &str) -> io::Result<()> {
    const AUDIT_USER: u16 = 1005;
    let fd = control_socket()?;
    let mut payload = text.as_bytes().to_vec();
    payload.push(0);
    send(
        fd.as_raw_fd(),
        &message(AUDIT_USER, NLM_F_REQUEST | NLM_F_ACK, &payload),
        MsgFlags::empty(),
    )?;
    Ok(())
}

/// A socket subscribed to the read-log multicast group: every audit record, as the kernel
/// sends it to auditd, without taking auditd's place.
pub fn subscribe() -> io::Result<OwnedFd> {
    let fd = audit_socket()?;
    // A large buffer so a burst of denials waits for the reader instead of being dropped.
    let _ = setsockopt(&fd, sockopt::RcvBufForce, &(512 << 20));
    bind(
        fd.as_raw_fd(),
        &NetlinkAddr::new(0, 1 << (AUDIT_NLGRP_READLOG - 1)),
    )?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        // Wakes the reader at least this often: alerts are flushed and stop requests seen.
        &nix::sys::time::TimeVal::new(0, 100_000),
    )?;
    Ok(fd)
}

/// One audit record: type and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record type (1423 Landlock access, 1424 Landlock domain, 1300 syscall, 1320 end).
    pub kind: u16,
    /// `audit(SECONDS.MILLIS:SERIAL): key=value ...`.
    pub text: String,
}

/// Splits a datagram into records.
pub fn records(datagram: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + NLMSG_HDRLEN <= datagram.len() {
        let length = word(&datagram[offset..], 0) as usize;
        let kind = u16::from_ne_bytes([datagram[offset + 4], datagram[offset + 5]]);
        if length < NLMSG_HDRLEN || offset + length > datagram.len() {
            // The kernel sends each audit record as one message whose length may not
            // cover the text; take the rest of the datagram.
            let text = String::from_utf8_lossy(&datagram[offset + NLMSG_HDRLEN..]);
            out.push(Record {
                kind,
                text: text.trim_end_matches('\0').to_string(),
            });
            break;
        }
        let text = String::from_utf8_lossy(&datagram[offset + NLMSG_HDRLEN..offset + length]);
        out.push(Record {
            kind,
            text: text.trim_end_matches('\0').to_string(),
        });
        offset += (length + 3) & !3;
    }
    out
}
