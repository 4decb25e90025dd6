//! moat's cgroup-BPF socket programs: a sandbox's network policy rules (protocols, and
//! destinations by CIDR, port and protocol) enforced at `socket()`, `connect()` and
//! `sendmsg()`, with an event for every decision a rule names.
//!
//! The programs (`src/bpf/socket.bpf.c`, built by clang) are loaded once per sandbox with
//! the tables moat-policy compiles ([`moat_policy::sockrules`]) and attached to the
//! sandbox's cgroup v2 directory with the classic attach call, so they stay attached for
//! as long as the cgroup exists, whatever happens to moat's own process. Events are read
//! from a ring buffer by [`alerts::spawn`].

mod attach;
mod mapped;

pub mod alerts;

use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder};
use moat_policy::sockrules::{AddressRange, SocketTables};
use thiserror::Error;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket.bpf.o"));

/// The socket programs could not be loaded or attached.
#[derive(Debug, Error)]
pub enum BpfError {
    /// The kernel refused to load the programs or their maps.
    #[error("cannot load the cgroup-BPF socket programs: {0}")]
    Load(String),
    /// Filling a table failed.
    #[error("cannot fill the {map} table of the socket programs: {message}")]
    Fill {
        /// The map.
        map: &'static str,
        /// Why.
        message: String,
    },
    /// Attaching to the cgroup failed.
    #[error("cannot attach the socket programs to {path}: {source}")]
    Attach {
        /// The cgroup directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The loaded programs and their tables.
pub struct SocketFilter {
    object: Object,
    report: bool,
    modes: Modes,
}

/// The `settings` the tables imply.
#[derive(Debug, Clone, Copy)]
struct Modes {
    address_allow_list: bool,
    protocol_allow_list: bool,
    posture_audit: bool,
    v4_ranges: u32,
    v6_ranges: u32,
}

fn map_error(map: &'static str) -> impl Fn(libbpf_rs::Error) -> BpfError {
    move |err| BpfError::Fill {
        map,
        message: err.to_string(),
    }
}

impl SocketFilter {
    /// Loads the programs with `tables`. With `report`, every decision a rule names (and
    /// every default-posture denial) goes to the ring buffer for [`alerts::spawn`].
    ///
    /// Only the programs whose hooks the rules can decide anything at are loaded: the
    /// verifier takes about 1.7 ms per address program, and a policy of protocol rules
    /// alone needs none of the four.
    pub fn load(tables: &SocketTables, report: bool) -> Result<SocketFilter, BpfError> {
        SocketFilter::load_programs(tables, report, Hooks::of(tables))
    }

    fn load_programs(
        tables: &SocketTables,
        report: bool,
        hooks: Hooks,
    ) -> Result<SocketFilter, BpfError> {
        let load = |err: libbpf_rs::Error| BpfError::Load(err.to_string());
        let too_many = || BpfError::Load("too many rules for one table".into());
        let v4_ranges = u32::try_from(tables.v4.len()).map_err(|_| too_many())?;
        let v6_ranges = u32::try_from(tables.v6.len()).map_err(|_| too_many())?;
        let mut open = ObjectBuilder::default().open_memory(OBJECT).map_err(load)?;
        for mut map in open.maps_mut() {
            // Maps cannot be empty: one unused slot when a table is.
            let entries = match map.name().to_str() {
                Some("ranges") => tables.v4.len() + tables.v6.len(),
                Some("segments") => tables.segments.len(),
                _ => continue,
            };
            let entries = u32::try_from(entries.max(1)).map_err(|_| too_many())?;
            map.set_max_entries(entries).map_err(load)?;
        }
        for mut program in open.progs_mut() {
            let wanted = match program.name().to_str() {
                Some("moat_connect4" | "moat_connect6") => hooks.connect,
                Some("moat_sendmsg4" | "moat_sendmsg6") => hooks.sendmsg,
                Some("moat_sock_create") => hooks.sock_create,
                _ => true,
            };
            program.set_autoload(wanted);
        }
        let object = open.load().map_err(load)?;
        let filter = SocketFilter {
            object,
            report,
            modes: Modes {
                address_allow_list: tables.address_allow_list,
                protocol_allow_list: tables.protocol_allow_list,
                posture_audit: tables.posture_audit,
                v4_ranges,
                v6_ranges,
            },
        };
        filter.fill(tables)?;
        Ok(filter)
    }

    /// Writes `values` (elements laid end to end) into the mmapable array map `name`.
    fn fill_array(&self, name: &'static str, values: &[u8]) -> Result<(), BpfError> {
        let map = self.map(name)?;
        let (value_size, max_entries) = (map.value_size() as usize, map.max_entries() as usize);
        mapped::fill(map.as_fd(), value_size, max_entries, values).map_err(|err| BpfError::Fill {
            map: name,
            message: err.to_string(),
        })
    }

    fn map(&self, name: &'static str) -> Result<libbpf_rs::Map<'_>, BpfError> {
        self.object
            .maps()
            .find(|m| m.name().to_str() == Some(name))
            .ok_or_else(|| BpfError::Load(format!("the programs have no {name} map")))
    }

    fn fill(&self, tables: &SocketTables) -> Result<(), BpfError> {
        self.fill_array("ranges", &range_rows(tables.v4.iter().chain(&tables.v6)))?;
        let mut values = Vec::with_capacity(tables.segments.len() * 40);
        for segment in &tables.segments {
            // `struct segment` of socket.bpf.c.
            values.extend_from_slice(&segment.port_lo.to_ne_bytes());
            values.extend_from_slice(&segment.port_hi.to_ne_bytes());
            for verdict in &segment.verdicts {
                values.extend_from_slice(&[verdict.action, 0, 0, 0]);
                values.extend_from_slice(&verdict.block_rule.to_ne_bytes());
                values.extend_from_slice(&verdict.audit_rule.to_ne_bytes());
            }
        }
        self.fill_array("segments", &values)?;
        let protocols = self.map("protocols")?;
        for (class, verdict) in tables.protocols.iter().enumerate() {
            let mut value = Vec::with_capacity(8);
            value.extend_from_slice(&u32::from(verdict.action).to_ne_bytes());
            value.extend_from_slice(&verdict.rule.to_ne_bytes());
            protocols
                .update(&(class as u32).to_ne_bytes(), &value, MapFlags::ANY)
                .map_err(map_error("protocols"))?;
        }
        self.settings(None)
    }

    /// `sandbox_init`: the init's pid as moat sees it; its pid namespace is the
    /// sandbox's, where the init itself is pid 1.
    fn settings(&self, sandbox_init: Option<u32>) -> Result<(), BpfError> {
        let (exempt, (dev, ino)) = match sandbox_init {
            Some(pid) => (
                1,
                pid_namespace(pid).map_err(|e| BpfError::Fill {
                    map: "settings",
                    message: format!("cannot identify the sandbox's pid namespace: {e}"),
                })?,
            ),
            None => (0, (0, 0)),
        };
        // `struct settings` of socket.bpf.c, in order.
        let flags = [
            u32::from(self.modes.address_allow_list),
            u32::from(self.modes.protocol_allow_list),
            u32::from(self.report),
            exempt,
            u32::from(self.modes.posture_audit),
            self.modes.v4_ranges,
            self.modes.v6_ranges,
            0,
        ];
        let settings: Vec<u8> = flags
            .iter()
            .flat_map(|f| f.to_ne_bytes())
            .chain(dev.to_ne_bytes())
            .chain(ino.to_ne_bytes())
            .collect();
        self.map("settings")?
            .update(&0u32.to_ne_bytes(), &settings, MapFlags::ANY)
            .map_err(map_error("settings"))
    }

    /// Attaches every loaded program to the cgroup v2 directory `cgroup`, where they stay until
    /// the cgroup is removed. Processes moved into the cgroup afterwards are covered.
    ///
    /// `sandbox_init` (its pid as moat sees it), if given, is the sandbox's init: events
    /// carry pids in its pid namespace, and it may create sockets of any protocol, since
    /// it sets up the interfaces with inet ioctl sockets before the workload exists.
    pub fn attach(&self, cgroup: &Path, sandbox_init: Option<u32>) -> Result<(), BpfError> {
        self.settings(sandbox_init)?;
        let attach_err = |source| BpfError::Attach {
            path: cgroup.display().to_string(),
            source,
        };
        let directory = std::fs::File::open(cgroup).map_err(attach_err)?;
        for program in self.object.progs().filter(|p| p.autoload()) {
            attach::to_cgroup(&program, &directory).map_err(attach_err)?;
        }
        Ok(())
    }
}

/// The pid namespace of process `pid`: its device as the kernel encodes it inside
/// (major << 20 | minor, which is what the programs' helper compares), and its inode.
fn pid_namespace(pid: u32) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(format!("/proc/{pid}/ns/pid"))?;
    let dev = ns.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Ok(((u64::from(major) << 20) | u64::from(minor), ns.ino()))
}

/// The elements (`struct range`: first and last address as two 64-bit halves each, then
/// the run) of the ranges table, laid end to end.
fn range_rows<'a>(ranges: impl Iterator<Item = &'a AddressRange>) -> Vec<u8> {
    let mut values = Vec::new();
    for range in ranges {
        for address in [range.lo, range.hi] {
            values.extend_from_slice(&((address >> 64) as u64).to_ne_bytes());
            values.extend_from_slice(&(address as u64).to_ne_bytes());
        }
        values.extend_from_slice(&range.run.first.to_ne_bytes());
        values.extend_from_slice(&range.run.count.to_ne_bytes());
    }
    values
}

/// Whether this kernel loads the socket programs (for `moat doctor`): loads every one of
/// them with empty tables, attaches nothing.
pub fn probe() -> Result<(), BpfError> {
    SocketFilter::load_programs(&SocketTables::default(), false, Hooks::ALL).map(drop)
}

/// The hooks whose programs are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hooks {
    /// `connect4`, `connect6`.
    pub connect: bool,
    /// `sendmsg4`, `sendmsg6`: datagrams sent with an address.
    pub sendmsg: bool,
    /// `sock_create`.
    pub sock_create: bool,
}

impl Hooks {
    const ALL: Hooks = Hooks {
        connect: true,
        sendmsg: true,
        sock_create: true,
    };

    /// Where `tables` can decide something. Connections, when any destination has a rule
    /// or destinations are allow-listed; datagrams, when one of those rules is not for
    /// TCP alone (a segment has a verdict for UDP or other protocols) or destinations are
    /// allow-listed; sockets, when a protocol has a rule or protocols are allow-listed.
    pub fn of(tables: &SocketTables) -> Hooks {
        let destinations = !tables.v4.is_empty() || !tables.v6.is_empty();
        let datagrams = tables
            .segments
            .iter()
            .any(|segment| segment.verdicts[1..].iter().any(|v| v.action != 0));
        Hooks {
            connect: destinations || tables.address_allow_list,
            sendmsg: datagrams || tables.address_allow_list,
            sock_create: tables.protocols.iter().any(|v| v.action != 0)
                || tables.protocol_allow_list,
        }
    }
}
