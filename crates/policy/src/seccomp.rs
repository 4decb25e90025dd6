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
    fn unknown_filter_is_an_error() {
        assert!(SeccompProfile::builtin("lax").is_err());
    }
}
