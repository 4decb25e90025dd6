//! Compiles a [`SeccompProfile`] into a BPF program with libseccomp (binary-tree
//! optimisation), ahead of the sandbox start so a bad filter fails before anything exists.
//! The program is installed in the workload by [`install`], the last step before exec.

use std::io::{Read, Seek, SeekFrom};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use moat_policy::{ArgCondition, CompareOp, SeccompProfile};
use thiserror::Error;

use crate::sys::{self, SockFilter};

/// A filter that could not be built or installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// libseccomp refused a rule.
    #[error("libseccomp refused {what}")]
    Rule {
        /// Which rule.
        what: String,
        /// Why.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// A syscall name neither libseccomp nor moat's table knows.
    #[error("unknown syscall {0:?} in the filter")]
    UnknownSyscall(String),
    /// Exporting the program failed.
    #[error("cannot export the compiled filter")]
    Export(#[source] std::io::Error),
    /// The kernel refused the program.
    #[error("the kernel refused the seccomp filter")]
    Install(#[source] std::io::Error),
}

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    program: Vec<SockFilter>,
    /// Names libseccomp did not know and moat resolved from its own x86_64 table.
    pub resolved_by_number: Vec<String>,
    /// Install with SECCOMP_FILTER_FLAG_LOG: every refusal goes to the kernel audit log,
    /// where the alert reader finds it (with --alerts).
    pub log: bool,
}

impl CompiledFilter {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Whether the program is empty (never, for a compiled profile).
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

/// Syscalls newer than the libseccomp in Debian 12 (2.5.4) knows, by x86_64 number.
const NEWER_SYSCALLS_X86_64: &[(&str, i32)] = &[
    ("cachestat", 451),
    ("fchmodat2", 452),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("mseal", 462),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
];

fn resolve(name: &str, by_number: &mut Vec<String>) -> Result<ScmpSyscall, SeccompError> {
    if let Ok(syscall) = ScmpSyscall::from_name(name) {
        return Ok(syscall);
    }
    if cfg!(target_arch = "x86_64") {
        if let Some((_, nr)) = NEWER_SYSCALLS_X86_64.iter().find(|(n, _)| *n == name) {
            by_number.push(name.to_string());
            return Ok(ScmpSyscall::from_raw_syscall(*nr));
        }
    }
    Err(SeccompError::UnknownSyscall(name.to_string()))
}

fn comparisons(conditions: &[ArgCondition]) -> Vec<ScmpArgCompare> {
    conditions
        .iter()
        .map(|c| {
            let op = match c.op {
                CompareOp::Eq => ScmpCompareOp::Equal,
                CompareOp::Ne => ScmpCompareOp::NotEqual,
                CompareOp::Lt => ScmpCompareOp::Less,
                CompareOp::Le => ScmpCompareOp::LessOrEqual,
                CompareOp::Gt => ScmpCompareOp::Greater,
                CompareOp::Ge => ScmpCompareOp::GreaterEqual,
                CompareOp::MaskedEq => ScmpCompareOp::MaskedEqual(c.mask),
            };
            ScmpArgCompare::new(u32::from(c.arg), op, c.value)
        })
        .collect()
}

/// Builds the BPF program for `profile` on the native architecture.
pub fn compile(profile: &SeccompProfile) -> Result<CompiledFilter, SeccompError> {
    let rule_err = |what: String| move |source| SeccompError::Rule { what, source };
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(profile.default_errno.raw()))
        .map_err(rule_err("the default action".into()))?;
    // Foreign-architecture syscalls (int 0x80, x32) are a classic filter bypass: kill them.
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(rule_err("the bad-architecture action".into()))?;
    ctx.add_arch(ScmpArch::Native)
        .map_err(rule_err("the native architecture".into()))?;
    ctx.set_ctl_optimize(2)
        .map_err(rule_err("binary-tree optimisation".into()))?;
    let mut by_number = Vec::new();
    for name in &profile.allow {
        let syscall = resolve(name, &mut by_number)?;
        ctx.add_rule(ScmpAction::Allow, syscall)
            .map_err(rule_err(format!("allow {name}")))?;
    }
    for rule in &profile.conditional {
        let syscall = resolve(&rule.syscall, &mut by_number)?;
        ctx.add_rule_conditional(ScmpAction::Allow, syscall, &comparisons(&rule.when))
            .map_err(rule_err(format!("conditional allow of {}", rule.syscall)))?;
    }
    for rule in &profile.allow_except {
        let syscall = resolve(&rule.syscall, &mut by_number)?;
        for (mask, value) in rule.allowed_blocks() {
            let compare =
                ScmpArgCompare::new(u32::from(rule.arg), ScmpCompareOp::MaskedEqual(mask), value);
            ctx.add_rule_conditional(ScmpAction::Allow, syscall, &[compare])
                .map_err(rule_err(format!(
                    "allow of {} except {:x?}",
                    rule.syscall, rule.values
                )))?;
        }
    }
    for rule in &profile.errno {
        for name in &rule.syscalls {
            let syscall = resolve(name, &mut by_number)?;
            let action = ScmpAction::Errno(rule.errno.raw());
            let added = if rule.when.is_empty() {
                ctx.add_rule(action, syscall)
            } else {
                ctx.add_rule_conditional(action, syscall, &comparisons(&rule.when))
            };
            added.map_err(rule_err(format!("errno rule for {name}")))?;
        }
    }
    let program = export(&ctx)?;
    Ok(CompiledFilter {
        program,
        resolved_by_number: by_number,
        log: false,
    })
}

fn export(ctx: &ScmpFilterContext) -> Result<Vec<SockFilter>, SeccompError> {
    let mut file = tempfile_in_memory().map_err(SeccompError::Export)?;
    ctx.export_bpf(&file).map_err(|source| SeccompError::Rule {
        what: "export".into(),
        source,
    })?;
    file.seek(SeekFrom::Start(0))
        .map_err(SeccompError::Export)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(SeccompError::Export)?;
    let size = std::mem::size_of::<SockFilter>();
    if bytes.is_empty() || bytes.len() % size != 0 {
        return Err(SeccompError::Export(std::io::Error::other(format!(
            "exported program has {} bytes, not a multiple of {size}",
            bytes.len()
        ))));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| SockFilter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn tempfile_in_memory() -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(
        c"moat-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    Ok(std::fs::File::from(fd))
}

/// Installs the filter on the calling thread. Must be the last wall before exec: after it,
/// only the allowed syscalls remain.
pub fn install(filter: &CompiledFilter) -> Result<(), SeccompError> {
    sys::seccomp_set_filter(&filter.program, filter.log).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_to_a_program() {
        let profile = SeccompProfile::builtin("default").unwrap();
        let filter = compile(&profile).unwrap();
        assert!(filter.len() > 100, "{} instructions", filter.len());
    }
}
