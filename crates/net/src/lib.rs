//! The network wall: everything on the host side of a sandbox's network namespace.
//!
//! For `isolated` and `egress` sandboxes: an address from a pool ([`pool`]), a veth pair
//! whose sandbox end is created inside the sandbox's namespace ([`link`]), nftables rules
//! in one table owned by moat plus a copy inside the sandbox ([`nft`]), and bandwidth
//! limits ([`tc`]). Everything is keyed by
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
    /// The host end of the veth pair (and the key of its nftables map elements).
    pub host: String,
    /// A short key for chain names.
    pub key: String,
}

impl Names {
    /// Names for the sandbox at `address`.
    pub fn for_address(address: Ipv4Addr) -> Names {
        let key = format!("{:08x}", u32::from(address));
        Names {
            host: format!("moat-{key}"),
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
    /// The length of its network prefix.
    pub prefix: u8,
    /// Its default gateway (the host end).
    pub gateway: Ipv4Addr,
}

/// First step, before the sandbox exists: the host's rules for the leased address (they
/// match interface names, so they can precede the interface). Returns what the sandbox's
/// init configures inside. On error, removes what it made.
pub fn prepare(plan: &NetworkPlan, lease: &AddressLease) -> Result<Inside, NetError> {
    debug_assert!(plan.mode != NetMode::None);
    let names = Names::for_address(lease.sandbox);
    if let Err(err) = nft::install(plan, lease, &names) {
        teardown(lease.sandbox);
        return Err(err);
    }
    Ok(Inside {
        interface: "eth0",
        address: lease.sandbox,
        prefix: lease.prefix,
        gateway: lease.host,
    })
}

/// Second step, once the sandbox's init exists (pid `sandbox_init`) and before the
/// workload starts: the veth pair with its inside end created in the sandbox's network
/// namespace, the sandbox's own copy of its rules (see [`nft::install_inside`]), and the
/// bandwidth limit on both ends. The caller tears down on error.
pub fn attach(
    plan: &NetworkPlan,
    lease: &AddressLease,
    sandbox_init: u32,
    inside: &Inside,
) -> Result<(), NetError> {
    let names = Names::for_address(lease.sandbox);
    let netns = format!("/proc/{sandbox_init}/ns/net");
    link::create_veth(&names, lease, sandbox_init, inside.interface)?;
    nft::install_inside(plan, &netns)?;
    if let Some(rate) = plan.bandwidth_bits_per_second {
        tc::limit(None, &names.host, rate)?;
        tc::limit(Some(&netns), inside.interface, rate)?;
    }
    Ok(())
}

/// Removes the host side of the sandbox at `address`; returns what could not be removed.
pub fn teardown(address: Ipv4Addr) -> Vec<String> {
    let names = Names::for_address(address);
    let mut warnings = Vec::new();
    if let Err(err) = nft::remove(&names) {
        warnings.push(err.to_string());
    }
    if let Err(err) = link::delete(&[&names.host]) {
        warnings.push(err.to_string());
    }
    warnings
}
