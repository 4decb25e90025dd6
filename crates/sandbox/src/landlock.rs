//! Landlock: the filesystem wall that holds even if a mount is misconfigured. Applied in
//! the sandbox's init after the mounts are final and before the seccomp filter (which
//! forbids the landlock syscalls to the workload).

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use moat_policy::LandlockPlan;
use thiserror::Error;

/// Landlock could not be applied as the plan requires.
#[derive(Debug, Error)]
pub enum LandlockError {
    /// The kernel has no Landlock or has it disabled.
    #[error("the kernel offers no Landlock (enable the landlock LSM with the lsm= boot parameter, or use a kernel >= 5.13)")]
    Unavailable(#[source] std::io::Error),
    /// The host ABI is older than the profile demands.
    #[error("the profile requires Landlock ABI {required} but this kernel offers ABI {host}")]
    AbiTooOld {
        /// What the profile asks for.
        required: u8,
        /// What the kernel has.
        host: u32,
    },
    /// The ruleset could not be built or enforced.
    #[error("cannot enforce the ruleset")]
    Ruleset(#[from] landlock::RulesetError),
    /// The kernel enforced less than asked.
    #[error("the kernel enforced the ruleset only partially ({0:?})")]
    Partial(RulesetStatus),
}

/// The host's Landlock ABI, checked against what the plan requires.
pub fn check_abi(plan: &LandlockPlan) -> Result<u32, LandlockError> {
    let host = crate::sys::landlock_abi().map_err(LandlockError::Unavailable)?;
    if host < u32::from(plan.min_abi) {
        return Err(LandlockError::AbiTooOld {
            required: plan.min_abi,
            host,
        });
    }
    Ok(host)
}

/// Restricts the calling process (and every process it starts) to the plan's rules.
pub fn restrict_self(plan: &LandlockPlan) -> Result<(), LandlockError> {
    let host = check_abi(plan)?;
    let abi = ABI::from(i32::try_from(host).unwrap_or(i32::MAX));
    let all = AccessFs::from_all(abi);
    let read_exec = AccessFs::from_read(abi);
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let device = AccessFs::from_file(abi);
    let existing = |paths: &[String]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| Path::new(p).exists())
            .cloned()
            .collect()
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)?;
    let scopes = scopes(plan, abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let (device_dirs, device_files): (Vec<String>, Vec<String>) = existing(&plan.devices)
        .into_iter()
        .partition(|p| Path::new(p).is_dir());
    let status = ruleset
        .create()?
        .add_rules(path_beneath_rules(existing(&plan.read_exec), read_exec))?
        .add_rules(path_beneath_rules(existing(&plan.read_only), read_only))?
        .add_rules(path_beneath_rules(
            existing(&plan.list_only),
            AccessFs::ReadDir,
        ))?
        .add_rules(path_beneath_rules(existing(&plan.read_write), all))?
        .add_rules(path_beneath_rules(device_files, device))?
        .add_rules(path_beneath_rules(device_dirs, device | AccessFs::ReadDir))?
        .restrict_self()?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(LandlockError::Partial(status.ruleset));
    }
    Ok(())
}

fn scopes(plan: &LandlockPlan, abi: ABI) -> BitFlags<Scope> {
    let available = Scope::from_all(abi);
    let mut wanted = BitFlags::<Scope>::empty();
    if plan.scope_signals {
        wanted |= Scope::Signal;
    }
    if plan.scope_abstract_unix_sockets {
        wanted |= Scope::AbstractUnixSocket;
    }
    wanted & available
}
