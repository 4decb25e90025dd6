//! Removing what dead sandboxes left: cgroups, libcontainer state, moat's sandbox
//! directory and id leases. Used at the end of every run and by `moat gc` for sandboxes
//! whose moat process was killed.

use std::fs;
use std::io;

use crate::cgroup;
use crate::executor::error_chain;
use crate::idmap::{IdAllocator, IdLease};
use crate::paths::{StateLock, StatePaths};
use crate::record::SandboxRecord;

/// What `moat gc` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Sandboxes removed.
    pub removed: Vec<String>,
    /// Sandboxes left alone because their moat still runs.
    pub live: Vec<String>,
    /// What could not be removed.
    pub warnings: Vec<String>,
}

/// Removes every sandbox whose owning moat process is gone.
pub fn collect(paths: &StatePaths) -> GcReport {
    let mut report = GcReport::default();
    let _lock = match StateLock::acquire(paths) {
        Ok(lock) => lock,
        Err(err) => {
            report
                .warnings
                .push(format!("cannot lock {}: {err}", paths.run_dir().display()));
            return report;
        }
    };
    let mut candidates = std::collections::BTreeSet::new();
    for dir in [paths.sandboxes_dir(), paths.containers_dir()] {
        if let Ok(entries) = fs::read_dir(dir) {
            candidates.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
    }
    candidates.extend(cgroup::sandbox_cgroups());
    let ids = IdAllocator::new(paths.ids_dir());
    let leases = ids.sandbox_leases().unwrap_or_default();
    candidates.extend(leases.iter().map(|(_, id)| id.clone()));
    let address_leases = moat_net::Pool::all_leases(paths.lib_dir().join("net"));
    candidates.extend(address_leases.iter().map(|(_, _, id)| id.clone()));

    for id in candidates {
        let record = SandboxRecord::load(&paths.sandbox_dir(&id));
        if record.as_ref().is_some_and(SandboxRecord::owner_alive) {
            report.live.push(id);
            continue;
        }
        let record_address = record.as_ref().and_then(|r| r.address);
        let lease = record.and_then(|r| r.id_slot.map(|slot| (slot, r.id_slot_persistent)));
        let lease = lease
            .or_else(|| {
                leases
                    .iter()
                    .find(|(_, owner)| *owner == id)
                    .map(|(slot, _)| (*slot, false))
            })
            .map(|(slot, persistent)| IdLease {
                slot,
                host_base: 0,
                count: 0,
                persistent,
            });
        // A stale record's address may have been leased again since (its sandbox ended
        // but its directory was kept): then the interfaces and rules of that name are the
        // new holder's, not this sandbox's.
        let leased_to_another = |address: &std::net::Ipv4Addr| {
            address_leases.iter().any(|(pool, slot, owner)| {
                *owner != id && pool.addresses(*slot).sandbox == *address
            })
        };
        let mut addresses: Vec<std::net::Ipv4Addr> = record_address
            .into_iter()
            .filter(|address| !leased_to_another(address))
            .collect();
        for (pool, slot, _) in address_leases.iter().filter(|(_, _, owner)| *owner == id) {
            addresses.push(pool.addresses(*slot).sandbox);
        }
        addresses.sort_unstable();
        addresses.dedup();
        for address in addresses {
            report.warnings.extend(moat_net::teardown(address));
        }
        for (pool, slot, _) in address_leases.iter().filter(|(_, _, owner)| *owner == id) {
            if let Err(err) = pool.release(*slot) {
                report.warnings.push(error_chain(&err));
            }
        }
        report.warnings.extend(remove_sandbox(paths, &id, lease));
        report.removed.push(id);
    }
    if report.live.is_empty() {
        cgroup::remove_empty_parents();
        if let Err(err) = moat_net::nft::remove_table_if_unused() {
            report.warnings.push(error_chain(&err));
        }
    }
    report
}

/// Removes one sandbox's host-side remains; returns what could not be removed.
pub fn remove_sandbox(paths: &StatePaths, id: &str, lease: Option<IdLease>) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(err) = cgroup::destroy(id) {
        warnings.push(format!("cgroup of {id}: {}", error_chain(&err)));
    }
    let sandbox_dir = paths.sandbox_dir(id);
    if !crate::rootfs::release_root(&sandbox_dir) {
        // Deleting through a mount could reach into a user's image: leave it for later.
        warnings.push(format!(
            "{} still has a mount; not removed (run `moat gc` again)",
            sandbox_dir.display()
        ));
        return warnings;
    }
    for dir in [paths.containers_dir().join(id), sandbox_dir] {
        match fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                warnings.push(format!("{}: {err}", dir.display()));
            }
            _ => {}
        }
    }
    if let Some(lease) = lease {
        if let Err(err) = IdAllocator::new(paths.ids_dir()).release(&lease) {
            warnings.push(format!("id range of {id}: {}", error_chain(&err)));
        }
    }
    warnings
}
