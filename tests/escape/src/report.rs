//! Shared result types: a [`Check`] (one technique the probe tries), the [`Outcome`] a
//! check returns, and the [`Finding`] printed as one JSON object per line.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `detail` printed; longer details are cut so one line stays readable.
const MAX_DETAIL: usize = 2000;

/// What a check decided: whether the sandbox let the technique through, and why.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `true` when the technique worked (a weakness of the sandbox).
    pub exposed: bool,
    /// Human-readable evidence: errno names, paths, counts.
    pub detail: String,
}

impl Outcome {
    /// The technique worked.
    pub fn exposed(detail: impl Into<String>) -> Self {
        Self {
            exposed: true,
            detail: detail.into(),
        }
    }

    /// The technique was stopped (or could not be attempted).
    pub fn contained(detail: impl Into<String>) -> Self {
        Self {
            exposed: false,
            detail: detail.into(),
        }
    }

    /// The premise of the check is missing (device, file, socket path...).
    pub fn not_present(what: &str) -> Self {
        Self::contained(format!("not present: {what}"))
    }
}

/// One technique: a stable id, its class, a short name and the function that tries it.
#[derive(Clone, Copy)]
pub struct Check {
    /// Stable identifier, `class.technique` (`--only` matches prefixes of it).
    pub id: &'static str,
    /// One of kernel, privilege, info, reach, resources.
    pub class: &'static str,
    /// Short name of what is tried (syscall, file, socket...).
    pub name: &'static str,
    /// Wall-clock bound for the check's process; it is killed after this.
    pub timeout: Duration,
    /// The check itself. Runs in a forked, disposable process.
    pub run: fn() -> Outcome,
}

impl Check {
    /// A check with the default 5 s bound.
    pub const fn new(
        id: &'static str,
        class: &'static str,
        name: &'static str,
        run: fn() -> Outcome,
    ) -> Self {
        Self {
            id,
            class,
            name,
            timeout: Duration::from_secs(5),
            run,
        }
    }

    /// Same check with a different wall-clock bound.
    pub const fn with_timeout(mut self, secs: u64) -> Self {
        self.timeout = Duration::from_secs(secs);
        self
    }
}

/// One output line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// Check id.
    pub id: String,
    /// Check class.
    pub class: String,
    /// Check name.
    pub name: String,
    /// Whether the sandbox let the technique through.
    pub exposed: bool,
    /// Evidence.
    pub detail: String,
}

impl Finding {
    /// The finding of `check` with `outcome`.
    pub fn new(check: &Check, outcome: Outcome) -> Self {
        let mut detail = outcome.detail;
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push_str("...");
        }
        Self {
            id: check.id.to_string(),
            class: check.class.to_string(),
            name: check.name.to_string(),
            exposed: outcome.exposed,
            detail,
        }
    }
}
