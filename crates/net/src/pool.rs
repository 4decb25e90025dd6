//! Sandbox addresses: a pool (default 10.77.0.0/16) carved into /30 subnets, the host end
//! at .1 and the sandbox at .2 of each. Subnet 0 is kept for the host itself (a JupyterHub
//! API bound to its .1 is reachable from every sandbox that is allowed to).
//!
//! Leases are files created with O_EXCL under a lock, holding the sandbox id, so no address
//! is handed out twice even across crashes, and `moat gc` can reclaim those of dead
//! sandboxes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

use crate::NetError;

/// One sandbox's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLease {
    /// Subnet number in the pool.
    pub slot: u32,
    /// The host end.
    pub host: Ipv4Addr,
    /// The sandbox.
    pub sandbox: Ipv4Addr,
    /// Prefix length of the subnet (30).
    pub prefix: u8,
}

/// An address pool with its lease directory.
#[derive(Debug, Clone)]
pub struct Pool {
    net: Ipv4Net,
    dir: PathBuf,
    /// Claims of single addresses, shared by every pool: two pools that overlap never hand
    /// out the same address (interface and rule names derive from it).
    addresses: PathBuf,
}

impl Pool {
    /// The pool `net`, leases kept under `state_dir` (e.g. /var/lib/moat/net).
    pub fn new(net: Ipv4Net, state_dir: impl Into<PathBuf>) -> Pool {
        let key = format!("{}_{}", net.network(), net.prefix_len());
        let state_dir = state_dir.into();
        Pool {
            net,
            dir: state_dir.join(key),
            addresses: state_dir.join("addresses"),
        }
    }

    fn io(&self) -> impl Fn(io::Error) -> NetError + '_ {
        |source| NetError::Pool {
            pool: self.net.to_string(),
            source,
        }
    }

    fn lock(&self) -> Result<Flock<File>, NetError> {
        fs::create_dir_all(self.dir.join("slots")).map_err(self.io())?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("lock"))
            .map_err(self.io())?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| self.io()(errno.into()))
    }

    /// Number of /30 subnets, the host's own included.
    pub fn slots(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.net.prefix_len()));
        u32::try_from(size / 4).unwrap_or(u32::MAX)
    }

    /// The addresses of subnet `slot`.
    pub fn addresses(&self, slot: u32) -> AddressLease {
        let base = u32::from(self.net.network()) + slot * 4;
        AddressLease {
            slot,
            host: Ipv4Addr::from(base + 1),
            sandbox: Ipv4Addr::from(base + 2),
            prefix: 30,
        }
    }

    /// Leases a subnet for `sandbox_id`.
    pub fn acquire(&self, sandbox_id: &str) -> Result<AddressLease, NetError> {
        let _lock = self.lock()?;
        for slot in 1..self.slots() {
            let path = self.dir.join("slots").join(slot.to_string());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    let lease = self.addresses(slot);
                    let claimed = file
                        .write_all(format!("sandbox {sandbox_id}\n").as_bytes())
                        .map_err(self.io())
                        .and_then(|()| self.claim_address(lease.sandbox));
                    match claimed {
                        Ok(true) => return Ok(lease),
                        Ok(false) => {}
                        Err(err) => {
                            // An ownerless slot file would be lost to the pool for good.
                            let _ = fs::remove_file(&path);
                            return Err(err);
                        }
                    }
                    // A pool overlapping this one holds the address: skip the slot.
                    let _ = fs::remove_file(&path);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(self.io()(err)),
            }
        }
        Err(NetError::PoolExhausted(self.net.to_string()))
    }

    fn claim_address(&self, address: Ipv4Addr) -> Result<bool, NetError> {
        fs::create_dir_all(&self.addresses).map_err(self.io())?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.addresses.join(address.to_string()))
        {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(self.io()(err)),
        }
    }

    /// Gives a subnet back.
    pub fn release(&self, slot: u32) -> Result<(), NetError> {
        let _lock = self.lock()?;
        let _ = fs::remove_file(
            self.addresses
                .join(self.addresses(slot).sandbox.to_string()),
        );
        match fs::remove_file(self.dir.join("slots").join(slot.to_string())) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(self.io()(err)),
            _ => Ok(()),
        }
    }

    /// Leases of every pool under `state_dir`: (pool, slot, sandbox id).
    pub fn all_leases(state_dir: impl Into<PathBuf>) -> Vec<(Pool, u32, String)> {
        let state_dir = state_dir.into();
        let mut leases = Vec::new();
        for entry in fs::read_dir(&state_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().replace('_', "/");
            let Ok(net) = name.parse::<Ipv4Net>() else {
                continue;
            };
            let pool = Pool::new(net, &state_dir);
            for slot in fs::read_dir(pool.dir.join("slots"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let Some(number) = slot.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let text = fs::read_to_string(slot.path()).unwrap_or_default();
                if let Some(id) = text.trim().strip_prefix("sandbox ") {
                    leases.push((pool.clone(), number, id.to_string()));
                }
            }
        }
        leases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_distinct_and_skip_the_hosts_own() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new("10.77.0.0/16".parse().unwrap(), dir.path());
        assert_eq!(pool.slots(), 16384);
        let a = pool.acquire("a").unwrap();
        let b = pool.acquire("b").unwrap();
        assert_eq!(
            (a.host, a.sandbox),
            ("10.77.0.5".parse().unwrap(), "10.77.0.6".parse().unwrap())
        );
        assert_eq!(b.sandbox, "10.77.0.10".parse::<Ipv4Addr>().unwrap());
        pool.release(a.slot).unwrap();
        assert_eq!(
            pool.acquire("c").unwrap().slot,
            a.slot,
            "a released subnet is reused"
        );
        let leases = Pool::all_leases(dir.path());
        let mut ids: Vec<&str> = leases.iter().map(|(_, _, id)| id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn overlapping_pools_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let wide = Pool::new("10.77.0.0/16".parse().unwrap(), dir.path());
        let narrow = Pool::new("10.77.0.0/24".parse().unwrap(), dir.path());
        let a = wide.acquire("a").unwrap();
        let b = narrow.acquire("b").unwrap();
        assert_ne!(a.sandbox, b.sandbox);
        wide.release(a.slot).unwrap();
        assert_eq!(
            narrow.acquire("c").unwrap().sandbox,
            a.sandbox,
            "released addresses are free again"
        );
    }

    #[test]
    fn an_exhausted_pool_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new("10.99.0.0/29".parse().unwrap(), dir.path());
        pool.acquire("a").unwrap();
        assert!(matches!(pool.acquire("b"), Err(NetError::PoolExhausted(_))));
    }
}
