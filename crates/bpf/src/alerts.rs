//! Alerts from the socket programs' ring buffer: one per decision a rule names, and one
//! per default-posture denial. Events the ring buffer had no room for are counted by the
//! programs and reported in a `SystemEvent` alert, so loss is never silent.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};
use moat_events::process::ProcessCache;
use moat_events::{Alert, AlertContext, AlertWriter};
use moat_policy::sockrules::{RuleInfo, SocketTables};

use crate::SocketFilter;

/// `rule` of an event decided by the default posture.
const RULE_POSTURE: u32 = u32::MAX;
const OP_SOCKET: u8 = 1;
#[cfg(test)]
const OP_CONNECT: u8 = 2;
const OP_SENDMSG: u8 = 3;
/// `struct event` of socket.bpf.c.
const EVENT_SIZE: usize = 68;

/// What the reader did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertsReport {
    /// Alerts handled: written, or counted by the rate limit.
    pub alerts: u64,
    /// Events the ring buffer had no room for.
    pub lost: u64,
    /// Why the reader stopped early, if it did.
    pub error: Option<String>,
}

impl moat_events::reader::Report for AlertsReport {
    fn panicked() -> Self {
        AlertsReport {
            error: Some("the socket alert reader panicked".into()),
            ..AlertsReport::default()
        }
    }
}

/// A running reader. Finish it once the sandbox's processes are gone: events are written
/// synchronously by the system call that caused them, so nothing arrives later.
pub type AlertsHandle = moat_events::reader::ReaderThread<AlertsReport>;

/// Starts a thread writing an alert for every event of `filter` (loaded with reporting
/// on) to `writer`.
pub fn spawn(
    filter: SocketFilter,
    tables: &SocketTables,
    context: AlertContext,
    writer: AlertWriter,
) -> io::Result<AlertsHandle> {
    let rules = tables.rules.clone();
    AlertsHandle::spawn("moat-socket-alerts", move |stop| {
        read(&filter, &rules, &context, writer, stop)
    })
}

fn read(
    filter: &SocketFilter,
    rules: &[RuleInfo],
    context: &AlertContext,
    mut writer: AlertWriter,
    stop: &AtomicBool,
) -> AlertsReport {
    let mut report = AlertsReport::default();
    let mut processes = ProcessCache::default();
    let mut written = 0u64;
    let mut write_error: Option<io::Error> = None;
    let mut ticker = writer.clone();
    let mut tick_error: Option<io::Error> = None;
    let result = (|| -> Result<(), String> {
        let events = filter.map("events").map_err(|e| e.to_string())?;
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&events, |data: &[u8]| {
                if let Some(event) = Event::parse(data) {
                    let alert = event.alert(rules, context, &mut processes);
                    match writer.write(&alert) {
                        Ok(()) => written += 1,
                        Err(err) => write_error = Some(err),
                    }
                }
                0
            })
            .map_err(|e| e.to_string())?;
        let ring = builder.build().map_err(|e| e.to_string())?;
        while !stop.load(Ordering::SeqCst) {
            ring.poll(Duration::from_millis(100))
                .map_err(|e| format!("reading the socket events: {e}"))?;
            // The poll has consumed all there was (or waited 100 ms). The callback holds
            // the writer: a clone, sharing its file, writes out.
            if let Err(err) = ticker.idle() {
                tick_error = Some(err);
            }
        }
        ring.consume()
            .map_err(|e| format!("reading the socket events: {e}"))
    })();
    report.alerts = written;
    if let Err(err) = result {
        report.error = Some(err);
    }
    if let Some(err) = write_error.or(tick_error) {
        report.error = Some(format!("cannot write alerts: {err}"));
    }
    report.lost = filter.lost();
    if report.lost > 0 {
        let message = format!(
            "alerts may be missing: the socket programs' ring buffer had no room for {} event(s)",
            report.lost
        );
        let data = format!("events_lost={}", report.lost);
        let _ = writer.write(&Alert::missing(context, "Network", message, data));
    }
    if let Err(err) = writer.flush() {
        report.error = Some(format!("cannot write alerts: {err}"));
    }
    report
}

impl SocketFilter {
    /// Events the ring buffer had no room for, over all CPUs.
    fn lost(&self) -> u64 {
        let Ok(map) = self.map("lost") else { return 0 };
        map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|per_cpu| {
                per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_ne_bytes)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// One event of the ring buffer (`struct event` of socket.bpf.c).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    host_pid: u32,
    uid: u32,
    rule: u32,
    op: u8,
    denied: bool,
    family: u8,
    socket_type: u8,
    protocol: u16,
    port: u16,
    addr: [u8; 16],
    addr_len: u8,
    sandbox_pid: u32,
    comm: String,
}

impl Event {
    fn parse(data: &[u8]) -> Option<Event> {
        if data.len() < EVENT_SIZE {
            return None;
        }
        let u32_at = |at: usize| data[at..at + 4].try_into().ok().map(u32::from_ne_bytes);
        let u16_at = |at: usize| data[at..at + 2].try_into().ok().map(u16::from_ne_bytes);
        let comm = &data[44..60];
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        Some(Event {
            // pid_tgid: the thread group (the process) is the upper half.
            host_pid: u32_at(4)?,
            uid: u32_at(8)?,
            rule: u32_at(16)?,
            op: data[20],
            denied: data[21] != 0,
            family: data[22],
            socket_type: data[23],
            protocol: u16_at(24)?,
            port: u16_at(26)?,
            addr: data[28..44].try_into().ok()?,
            addr_len: data[60],
            sandbox_pid: u32_at(64)?,
            comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        })
    }

    fn remote(&self) -> IpAddr {
        // The address is a 128-bit number; an IPv4 address is its low 32 bits.
        let number = u128::from_be_bytes(self.addr);
        if self.addr_len == 16 {
            IpAddr::V6(Ipv6Addr::from(number))
        } else {
            IpAddr::V4(Ipv4Addr::from(number as u32))
        }
    }

    fn alert(
        &self,
        rules: &[RuleInfo],
        context: &AlertContext,
        processes: &mut ProcessCache,
    ) -> Alert {
        let rule = (self.rule != RULE_POSTURE)
            .then(|| rules.get(self.rule as usize))
            .flatten();
        let process = processes.get_named(i64::from(self.host_pid), &self.comm);
        let protocol = match self.protocol {
            6 => "TCP".to_string(),
            17 => "UDP".to_string(),
            1 => "ICMP".to_string(),
            58 => "ICMPv6".to_string(),
            other => other.to_string(),
        };
        let domain = if self.family == libc::AF_INET6 as u8 {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        let (resource, syscall) = match self.op {
            OP_SOCKET => (
                format!(
                    "domain={domain} type={} protocol={}",
                    socket_type(self.socket_type),
                    self.protocol
                ),
                "SYS_SOCKET",
            ),
            op => (
                format!(
                    "remoteip={} port={} protocol={protocol}",
                    self.remote(),
                    self.port
                ),
                if op == OP_SENDMSG {
                    "SYS_SENDMSG"
                } else {
                    "SYS_CONNECT"
                },
            ),
        };
        // The programs report only denials and Audit matches.
        let action = if self.denied { "Block" } else { "Audit" };
        Alert {
            host_pid: i64::from(self.host_pid),
            ppid: process.ppid,
            pid: if self.sandbox_pid != 0 {
                i64::from(self.sandbox_pid)
            } else {
                process.pid
            },
            uid: i64::from(self.uid) - i64::from(context.host_id_base),
            process_name: process.exe.clone(),
            parent_process_name: String::new(),
            policy_name: rule.map_or_else(|| "DefaultPosture".into(), |r| r.label.policy.clone()),
            severity: rule.and_then(|r| r.label.severity).unwrap_or(1).to_string(),
            tags: rule.map(|r| r.label.tags.join(",")).unwrap_or_default(),
            message: rule
                .and_then(|r| r.label.message.clone())
                .unwrap_or_else(|| match (rule, self.denied) {
                    (None, _) => "denied by the default posture".into(),
                    (Some(_), true) => "denied by policy".into(),
                    (Some(_), false) => "audited by policy".into(),
                }),
            kind: "MatchedPolicy".into(),
            source: process.exe.clone(),
            operation: "Network".into(),
            resource,
            data: match rule {
                Some(rule) => format!("syscall={syscall} rule={}", rule.text),
                None => format!("syscall={syscall}"),
            },
            enforcer: "cgroup-BPF".into(),
            action: action.into(),
            result: if self.denied {
                "Permission denied".into()
            } else {
                "Passed".into()
            },
            ..Alert::about(context)
        }
    }
}

fn socket_type(value: u8) -> String {
    match value {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        5 => "SOCK_SEQPACKET".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_at_the_programs_offsets() {
        let mut data = vec![0u8; 64];
        data[0..8].copy_from_slice(&((4242u64 << 32) | 4243).to_ne_bytes());
        data[8..16].copy_from_slice(&((7u64 << 32) | 1_073_742_824).to_ne_bytes());
        data[16..20].copy_from_slice(&3u32.to_ne_bytes());
        data[20] = OP_CONNECT;
        data[21] = 1;
        data[22] = libc::AF_INET as u8;
        data[23] = 1;
        data[24..26].copy_from_slice(&6u16.to_ne_bytes());
        data[26..28].copy_from_slice(&8080u16.to_ne_bytes());
        data[40..44].copy_from_slice(&[192, 0, 2, 7]);
        data[44..48].copy_from_slice(b"curl");
        data[60] = 4;
        data.resize(72, 0);
        data[64..68].copy_from_slice(&2u32.to_ne_bytes());
        let event = Event::parse(&data).unwrap();
        assert_eq!(event.host_pid, 4242);
        assert_eq!(event.uid, 1_073_742_824);
        assert_eq!(event.rule, 3);
        assert!(event.denied);
        assert_eq!(event.port, 8080);
        assert_eq!(event.remote().to_string(), "192.0.2.7");
        assert_eq!(event.comm, "curl");
        assert_eq!(event.sandbox_pid, 2);
        assert!(Event::parse(&data[..40]).is_none());
        // An IPv6 destination whose last twelve bytes are zero is still IPv6.
        data[22] = libc::AF_INET6 as u8;
        data[28..44].copy_from_slice(&"2001:db8::".parse::<Ipv6Addr>().unwrap().octets());
        data[60] = 16;
        assert_eq!(
            Event::parse(&data).unwrap().remote().to_string(),
            "2001:db8::"
        );
    }
}
