//! The network wall: everything on the host side of a sandbox's network namespace.
//!
//! For `isolated` and `egress` sandboxes: an address from a pool ([`pool`]), a veth pair
//! whose sandbox end libcontainer moves into the sandbox ([`link`]), nftables rules in
//! one table owned by moat ([`nft`]), and bandwidth limits ([`tc`]). Everything is keyed by
//! the sandbox's address, so what a killed moat left can be found and removed again.
#![forbid(unsafe_code)]

pub mod link;
pub mod nft;
pub mod pool;
pub mod tc;

use std::net::Ipv4Addr;

use moat_policy::{NetMode, NetworkPlan};
use thiserror::Error;

pub use pool::{AddressLease, Pool};

/// Network plumbing failed.
#[derive(Debug, Error)]
pub enum NetError {
    /// The address pool.
    #[error("address pool {pool}")]
    Pool {
        /// The pool.
        pool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every address of the pool is leased.
    #[error(
        "address pool {0} is exhausted (run `moat gc` to reclaim addresses of dead sandboxes)"
    )]
    PoolExhausted(String),
    /// A netlink request failed.
    #[error("{action}: {message}")]
    Netlink {
        /// What was being done.
        action: String,
        /// The kernel's answer.
        message: String,
    },
    /// nft refused the ruleset.
    #[error("nftables refused the ruleset: {0}")]
    Nft(String),
    /// tc refused a limit.
    #[error("tc refused the bandwidth limit: {0}")]
    Tc(String),
    /// A tool moat runs is missing.
    #[error("cannot run {tool} ({hint})")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// How to get it.
        hint: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Interface names of a sandbox, derived from its address so `moat gc` can find them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The host end of the veth pair (and the key of its nftables chains).
    pub host: String,
    /// The sandbox end while it is still on the host (renamed `eth0` inside).
    pub peer: String,
    /// A short key for chain names.
    pub key: String,
}

impl Names {
    /// Names for the sandbox at `address`.
    pub fn for_address(address: Ipv4Addr) -> Names {
        let key = format!("{:08x}", u32::from(address));
        Names {
            host: format!("moat-{key}"),
            peer: format!("moatp{key}"),
            key,
        }
    }
}

/// The sandbox's side, for its init: what to configure inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inside {
    /// The interface inside.
    pub interface: &'static str,
    /// The sandbox's address.
    pub address: Ipv4Addr,
    /// Its default gateway (the host end).
    pub gateway: Ipv4Addr,
}

/// Sets up the host side for `plan` with the leased addresses: veth pair, rules, limits.
/// On error, removes what it made.
pub fn setup(plan: &NetworkPlan, lease: &AddressLease) -> Result<Inside, NetError> {
    debug_assert!(plan.mode != NetMode::None);
    let names = Names::for_address(lease.sandbox);
    link::create_veth(&names, lease)?;
    let installed =
        nft::install(plan, lease, &names).and_then(|()| match plan.bandwidth_bits_per_second {
            Some(rate) => tc::limit(None, &names.host, rate),
            None => Ok(()),
        });
    if let Err(err) = installed {
        teardown(lease.sandbox);
        return Err(err);
    }
    Ok(Inside {
        interface: "eth0",
        address: lease.sandbox,
        gateway: lease.host,
    })
}

/// Sets up the sandbox's side: its own copy of the rules (see [`nft::install_inside`]) and
/// the limit on what it sends. Call once the interface is in the sandbox's network
/// namespace (`netns`: `/proc/PID/ns/net` of its init) and before the workload starts.
pub fn limit_inside(plan: &NetworkPlan, netns: &str, inside: &Inside) -> Result<(), NetError> {
    nft::install_inside(plan, netns)?;
    match plan.bandwidth_bits_per_second {
        Some(rate) => tc::limit(Some(netns), inside.interface, rate),
        None => Ok(()),
    }
}

/// Removes the host side of the sandbox at `address`; returns what could not be removed.
pub fn teardown(address: Ipv4Addr) -> Vec<String> {
    let names = Names::for_address(address);
    let mut warnings = Vec::new();
    if let Err(err) = nft::remove(&names) {
        warnings.push(err.to_string());
    }
    if let Err(err) = link::delete(&[&names.host, &names.peer]) {
        warnings.push(err.to_string());
    }
    warnings
}
