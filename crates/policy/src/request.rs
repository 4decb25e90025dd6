//! What a caller asks for: one sandbox run, before it is checked against a profile.

use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

/// One run, as asked for on the command line (or, later, over the daemon API).
///
/// Limits are kept as the text the user wrote so errors can quote it; [`crate::compile`]
/// parses and range-checks them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunRequest {
    /// Sandbox id: `[a-z0-9]`, chosen by the caller (random for `moat run`).
    pub id: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// An unpacked image to use as the root; `None` for host-system mode.
    pub rootfs: Option<PathBuf>,
    /// A host directory bound read-write as the sandbox user's home.
    pub home: Option<PathBuf>,
    /// A named tenant with a stable id range.
    pub identity: Option<String>,
    /// Working directory inside the sandbox (default: the home).
    pub workdir: Option<String>,
    /// Extra environment, in order.
    pub env: Vec<(String, String)>,
    /// The terminal type to pass as TERM.
    pub term: Option<String>,
    /// `--memory`.
    pub memory: Option<String>,
    /// `--cpus`.
    pub cpus: Option<String>,
    /// `--pids`.
    pub pids: Option<String>,
    /// `--tmp-size`.
    pub tmp_size: Option<String>,
    /// `--on-oom`: sandbox or process.
    pub on_oom: Option<String>,
    /// `--net`, `--allow-host`, `--egress`, `--publish`, `--bandwidth`, `--dns`.
    pub network: crate::network::NetworkRequest,
    /// `--label`: what policy selectors match.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--policy` files, parsed, with their findings.
    #[serde(skip)]
    pub policies: Vec<crate::kubearmor::LoadedPolicy>,
    /// Findings of [`crate::kubearmor::check_text`] for `policies`.
    #[serde(skip)]
    pub policy_findings: Vec<crate::kubearmor::Diagnostic>,
}

/// A request that is malformed whatever the profile says.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// No command given.
    #[error("no command given: use `moat run [OPTIONS] -- COMMAND [ARGS...]`")]
    NoCommand,
    /// An argument contains a NUL byte, which exec cannot pass.
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    /// An `--env` entry is not `KEY=VALUE` with a sane key.
    #[error("--env {0:?}: expected KEY=VALUE with a KEY of letters, digits and _ not starting with a digit")]
    BadEnv(String),
    /// Identity names double as host names and file names.
    #[error("--identity {0:?}: expected 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit")]
    BadIdentity(String),
    /// The sandbox id is malformed (a bug in the caller).
    #[error("sandbox id {0:?}: expected 1 to 64 characters of a-z and 0-9")]
    BadId(String),
    /// Paths given must be absolute.
    #[error("{flag} {path:?}: must be an absolute path")]
    RelativePath {
        /// Which option.
        flag: &'static str,
        /// The path.
        path: String,
    },
}

impl RunRequest {
    /// Checks what can be checked without a profile or the host.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(RequestError::BadId(self.id.clone()));
        }
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(RequestError::NoCommand);
        }
        if let Some(arg) = self.argv.iter().find(|a| a.contains('\0')) {
            return Err(RequestError::NulInArgument(arg.clone()));
        }
        for (key, value) in &self.env {
            let key_ok = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok || value.contains('\0') {
                return Err(RequestError::BadEnv(format!("{key}={value}")));
            }
        }
        if let Some(identity) = &self.identity {
            if !valid_identity(identity) {
                return Err(RequestError::BadIdentity(identity.clone()));
            }
        }
        for (flag, path) in [("--rootfs", &self.rootfs), ("--home", &self.home)] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    return Err(RequestError::RelativePath {
                        flag,
                        path: path.display().to_string(),
                    });
                }
            }
        }
        if let Some(workdir) = &self.workdir {
            if !workdir.starts_with('/') {
                return Err(RequestError::RelativePath {
                    flag: "--workdir",
                    path: workdir.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Identity names: 1..=63 of `[a-z0-9_-]`, starting with `[a-z0-9]`.
pub fn valid_identity(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RunRequest {
        RunRequest {
            id: "abc123".into(),
            argv: vec!["true".into()],
            ..RunRequest::default()
        }
    }

    #[test]
    fn minimal_request_is_valid() {
        assert_eq!(request().validate(), Ok(()));
    }

    #[test]
    fn malformed_requests_are_rejected() {
        let mut r = request();
        r.argv.clear();
        assert_eq!(r.validate(), Err(RequestError::NoCommand));

        let mut r = request();
        r.env.push(("1X".into(), "y".into()));
        assert!(matches!(r.validate(), Err(RequestError::BadEnv(_))));

        let mut r = request();
        r.env.push(("A=B".into(), "y".into()));
        assert!(matches!(r.validate(), Err(RequestError::BadEnv(_))));

        let mut r = request();
        r.identity = Some("../alice".into());
        assert!(matches!(r.validate(), Err(RequestError::BadIdentity(_))));

        let mut r = request();
        r.home = Some("homes/alice".into());
        assert!(matches!(
            r.validate(),
            Err(RequestError::RelativePath { .. })
        ));

        let mut r = request();
        r.id = "ID/..".into();
        assert!(matches!(r.validate(), Err(RequestError::BadId(_))));
    }

    #[test]
    fn identities_are_hostname_safe() {
        assert!(valid_identity("alice"));
        assert!(valid_identity("u-42_x"));
        for bad in ["", "-a", "Alice", "a.b", "a b", &"x".repeat(64)] {
            assert!(!valid_identity(bad), "{bad:?}");
        }
    }
}
