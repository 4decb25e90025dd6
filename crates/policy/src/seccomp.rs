//! Syscall filters as data: `policies/seccomp/*.toml`, parsed and checked here, compiled
//! into a BPF program by `moat-sandbox` with libseccomp.

use serde::{Deserialize, Serialize};
use thiserror::Error;

const BUILTIN: &[(&str, &str)] = &[(
    "default",
    include_str!("../../../policies/seccomp/default.toml"),
)];

/// A syscall filter: deny by default, allow-list plus conditional rules and explicit errors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompProfile {
    /// Name of the filter (filled in from the built-in table, not the file).
    #[serde(default)]
    pub name: String,
    /// The errno every syscall not allowed returns (`EPERM`).
    pub default_errno: Errno,
    /// Syscalls allowed whatever their arguments.
    pub allow: Vec<String>,
    /// Syscalls allowed only when their arguments match.
    #[serde(default)]
    pub conditional: Vec<ConditionalRule>,
    /// Syscalls allowed unless a 32-bit argument has one of a few values.
    #[serde(default)]
    pub allow_except: Vec<AllowExceptRule>,
    /// Syscalls that fail with a specific errno (optionally only for some arguments);
    /// they take precedence over the allow rules.
    #[serde(default)]
    pub errno: Vec<ErrnoRule>,
}

/// A syscall allowed when all conditions hold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionalRule {
    /// Syscall name.
    pub syscall: String,
    /// Why the rule exists.
    pub why: String,
    /// All must hold.
    pub when: Vec<ArgCondition>,
}

/// A syscall allowed unless a 32-bit argument is one of `values`. libseccomp compares
/// 64-bit values and accepts one comparison per argument and rule, so this is compiled
/// into masked-equality rules over aligned blocks of the allowed values, each of which
/// also requires the argument's upper 32 bits to be zero.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowExceptRule {
    /// Syscall name.
    pub syscall: String,
    /// Argument index, 0..=5.
    pub arg: u8,
    /// Values (below 2^32) for which the syscall is denied.
    pub values: Vec<u64>,
    /// Why these values are denied.
    pub why: String,
}

impl AllowExceptRule {
    /// The allowed values as `(mask, value)` blocks: an argument `x` is allowed when
    /// `x & mask == value` for one block. Together the blocks cover exactly
    /// `[0, 2^32)` minus `values`.
    pub fn allowed_blocks(&self) -> Vec<(u64, u64)> {
        let mut denied: Vec<u64> = self
            .values
            .iter()
            .copied()
            .filter(|v| *v < 1 << 32)
            .collect();
        denied.sort_unstable();
        denied.dedup();
        let mut blocks = Vec::new();
        let mut start = 0u64;
        for end in denied.into_iter().chain([1u64 << 32]) {
            let mut low = start;
            while low < end {
                let mut size = if low == 0 {
                    1u64 << 32
                } else {
                    1u64 << low.trailing_zeros().min(32)
                };
                while low + size > end {
                    size >>= 1;
                }
                blocks.push((!(size - 1), low));
                low += size;
            }
            start = end + 1;
        }
        blocks
    }
}

/// Syscalls that fail with a given errno.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrnoRule {
    /// Syscall names.
    pub syscalls: Vec<String>,
    /// The error returned.
    pub errno: Errno,
    /// Why.
    pub why: String,
    /// When empty, always.
    #[serde(default)]
    pub when: Vec<ArgCondition>,
}

/// A comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCondition {
    /// Argument index, 0..=5.
    pub arg: u8,
    /// Comparison.
    pub op: CompareOp,
    /// The value compared with.
    pub value: u64,
    /// For `masked_eq`: the mask applied to the argument first.
    #[serde(default)]
    pub mask: u64,
}

/// Comparison operators libseccomp offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// `arg == value`
    Eq,
    /// `arg != value` (beware of 32-bit arguments; prefer an errno rule with masked_eq)
    Ne,
    /// `arg < value`
    Lt,
    /// `arg <= value`
    Le,
    /// `arg > value`
    Gt,
    /// `arg >= value`
    Ge,
    /// `(arg & mask) == value`
    MaskedEq,
}

/// The errnos a filter may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Errno {
    /// Operation not permitted.
    EPERM,
    /// Function not implemented (lets libc fall back to an older call).
    ENOSYS,
    /// Permission denied.
    EACCES,
}

impl Errno {
    /// The numeric value.
    pub fn raw(self) -> i32 {
        match self {
            Errno::EPERM => 1,
            Errno::EACCES => 13,
            Errno::ENOSYS => 38,
        }
    }
}

/// A filter that could not be loaded.
#[derive(Debug, Error)]
pub enum SeccompProfileError {
    /// No built-in filter of that name.
    #[error("unknown seccomp filter {0:?} (built in: default)")]
    Unknown(String),
    /// The filter text does not parse.
    #[error("seccomp filter {name}: {message}")]
    Syntax {
        /// Filter name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The filter is inconsistent.
    #[error("seccomp filter {name}: {message}")]
    Invalid {
        /// Filter name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl SeccompProfile {
    /// Loads a built-in filter by name.
    pub fn builtin(name: &str) -> Result<SeccompProfile, SeccompProfileError> {
        let (name, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| SeccompProfileError::Unknown(name.to_string()))?;
        let mut profile: SeccompProfile =
            toml::from_str(text).map_err(|err| SeccompProfileError::Syntax {
                name: name.to_string(),
                message: err.to_string(),
            })?;
        profile.name = name.to_string();
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), SeccompProfileError> {
        let invalid = |message: String| SeccompProfileError::Invalid {
            name: self.name.clone(),
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.allow {
            if !seen.insert(name.as_str()) {
                return Err(invalid(format!("{name} is allowed twice")));
            }
        }
        for rule in &self.allow_except {
            if seen.contains(rule.syscall.as_str()) {
                return Err(invalid(format!(
                    "{} is allowed unconditionally and with exceptions: the exceptions would be dead",
                    rule.syscall
                )));
            }
            if rule.arg > 5 || rule.values.iter().any(|v| *v >= 1 << 32) {
                return Err(invalid(format!(
                    "allow_except for {}: argument index must be 0..=5 and values below 2^32",
                    rule.syscall
                )));
            }
        }
        for rule in &self.conditional {
            if seen.contains(rule.syscall.as_str()) {
                return Err(invalid(format!(
                    "{} is both allowed unconditionally and conditionally: the condition would be dead",
                    rule.syscall
                )));
            }
            if rule.when.is_empty() {
                return Err(invalid(format!(
                    "conditional rule for {} has no condition",
                    rule.syscall
                )));
            }
        }
        let conditions = self
            .conditional
            .iter()
            .flat_map(|r| &r.when)
            .chain(self.errno.iter().flat_map(|r| &r.when));
        for condition in conditions {
            if condition.arg > 5 {
                return Err(invalid(format!("argument index {} > 5", condition.arg)));
            }
            if condition.op == CompareOp::MaskedEq && condition.value & !condition.mask != 0 {
                return Err(invalid(format!(
                    "masked_eq value {:#x} has bits outside mask {:#x}: it can never match",
                    condition.value, condition.mask
                )));
            }
        }
        Ok(())
    }

    /// Every syscall the filter names, allowed or not.
    pub fn named_syscalls(&self) -> impl Iterator<Item = &str> {
        self.allow
            .iter()
            .map(String::as_str)
            .chain(self.conditional.iter().map(|r| r.syscall.as_str()))
            .chain(
                self.errno
                    .iter()
                    .flat_map(|r| r.syscalls.iter().map(String::as_str)),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_parses_and_is_consistent() {
        let profile = SeccompProfile::builtin("default").unwrap();
        assert_eq!(profile.default_errno, Errno::EPERM);
        assert!(profile.allow.len() > 250, "{} allowed", profile.allow.len());
    }

    #[test]
    fn dangerous_syscalls_are_never_allowed_unconditionally() {
        let profile = SeccompProfile::builtin("default").unwrap();
        for name in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "open_by_handle_at",
            "name_to_handle_at",
            "setns",
            "swapon",
            "swapoff",
            "reboot",
            "acct",
            "quotactl",
            "kcmp",
            "clone",
            "clone3",
            "unshare",
            "socket",
            "socketpair",
            "personality",
            "syslog",
            "iopl",
            "ioperm",
            "modify_ldt",
        ] {
            assert!(
                !profile.allow.iter().any(|a| a == name),
                "{name} must not be unconditionally allowed"
            );
        }
    }

    #[test]
    fn clone3_gets_enosys_so_libc_falls_back() {
        let profile = SeccompProfile::builtin("default").unwrap();
        let rule = profile
            .errno
            .iter()
            .find(|r| r.syscalls.iter().any(|s| s == "clone3"))
            .unwrap();
        assert_eq!(rule.errno, Errno::ENOSYS);
        assert!(rule.when.is_empty());
    }

    #[test]
    fn allow_except_blocks_cover_everything_but_the_denied_values() {
        let rule = AllowExceptRule {
            syscall: "ioctl".into(),
            arg: 1,
            values: vec![0x5412, 0x541C],
            why: String::new(),
        };
        let blocks = rule.allowed_blocks();
        let allowed = |x: u64| blocks.iter().any(|(mask, value)| x & mask == *value);
        for x in [
            0,
            1,
            0x5401,
            0x5411,
            0x5413,
            0x541B,
            0x541D,
            0x8004_5430,
            0xFFFF_FFFF,
        ] {
            assert!(allowed(x), "{x:#x} should be allowed");
        }
        for x in [
            0x5412,
            0x541C,
            0x1_0000_5412,
            0x1_0000_0000,
            0xFFFF_FFFF_FFFF_FFFF,
        ] {
            assert!(!allowed(x), "{x:#x} should be denied");
        }
        // Blocks are disjoint, so their sizes add up to exactly 2^32 - 2.
        let total: u64 = blocks.iter().map(|(mask, _)| (!mask) + 1).sum();
        assert_eq!(total, (1 << 32) - 2);
        assert!(blocks.len() < 80, "{} blocks", blocks.len());
    }

    #[test]
    fn unknown_filter_is_an_error() {
        assert!(SeccompProfile::builtin("lax").is_err());
    }
}
