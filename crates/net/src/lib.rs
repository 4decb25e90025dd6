//! The network wall: everything on the host side of a sandbox's network namespace.
//!
//! For `isolated` and `egress` sandboxes: an address from a pool ([`pool`]), a veth pair
//! whose sandbox end is created inside the sandbox's namespace ([`link`]), nftables rules
//! in one table owned by moat plus a copy inside the sandbox ([`nft`]), and bandwidth
//! limits ([`tc`]). Everything is keyed by
//! the sandbox's address, so what a killed moat left can be found and removed again.
#![forbid(unsafe_code)]

pub mod link;
pub mod netns;
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

/// First step, before the sandbox exists: what the sandbox's init configures inside.
/// Nothing is created yet.
pub fn prepare(plan: &NetworkPlan, lease: &AddressLease) -> Inside {
    debug_assert!(plan.mode != NetMode::None);
    Inside {
        interface: "eth0",
        address: lease.sandbox,
        prefix: lease.prefix,
        gateway: lease.host,
    }
}

/// Second step, once the sandbox's init exists (pid `sandbox_init`) and before the
/// workload starts: the host's rules for the leased address, the veth pair with its
/// inside end created in the sandbox's network namespace, the sandbox's own copy of its
/// rules (see [`nft::install_inside`]), and the bandwidth limit on both ends. The caller
/// tears down on error.
///
/// The three set-up steps touch different objects and nothing can use the network
/// before the workload starts, so they run side by side: the network's share of the
/// start-up is that of the slowest step, not their sum.
pub fn attach(
    plan: &NetworkPlan,
    lease: &AddressLease,
    sandbox_init: u32,
    inside: &Inside,
) -> Result<(), NetError> {
    let names = Names::for_address(lease.sandbox);
    let netns = format!("/proc/{sandbox_init}/ns/net");
    netns::ensure_foreign(&netns)?;
    std::thread::scope(|scope| {
        let host_rules = scope.spawn(|| nft::install(plan, lease, &names));
        let inside_rules = scope.spawn(|| nft::install_inside(plan, &netns));
        let veth = link::create_veth(&names, lease, sandbox_init, inside.interface);
        let joined = |result: std::thread::Result<Result<(), NetError>>| {
            result.unwrap_or_else(|_| Err(NetError::Nft("the nft worker panicked".into())))
        };
        let (host_rules, inside_rules) = (joined(host_rules.join()), joined(inside_rules.join()));
        veth.and(host_rules).and(inside_rules)
    })?;
    if let Some(rate) = plan.bandwidth_bits_per_second {
        std::thread::scope(|scope| {
            let outward = scope.spawn(|| tc::limit(Some(&netns), inside.interface, rate));
            let inward = tc::limit(None, &names.host, rate);
            let outward = outward
                .join()
                .unwrap_or_else(|_| Err(NetError::Tc("the tc worker panicked".into())));
            inward.and(outward)
        })?;
    }
    Ok(())
}

/// Removes the host side of the sandbox at `address`; returns what could not be removed.
///
/// Removing rules is the slow part of a sandbox's exit: the kernel frees them after an
/// RCU grace period, and `nft` waits for it when it closes its netlink socket (about
/// 10 ms here). The caller can run this beside its own clean-up.
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
