//! Sandbox profiles: named sets of walls and default limits, written in TOML.
//!
//! Built-in profiles live in `policies/profiles/` and are compiled into the binary; an admin
//! can pass the path of their own file instead. Unknown keys are errors, so a typo never
//! silently weakens a sandbox.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Built-in profiles: name and TOML text.
const BUILTIN: &[(&str, &str)] = &[(
    "untrusted",
    include_str!("../../../policies/profiles/untrusted.toml"),
)];

/// A parsed, not yet validated, profile.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name, shown in plans and `moat doctor`.
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Default resource limits; command-line options override them.
    pub limits: Limits,
    /// Filesystem restriction with Landlock.
    pub landlock: LandlockSettings,
    /// The syscall filter.
    pub seccomp: SeccompSettings,
    /// The network wall (loopback only when absent).
    #[serde(default)]
    pub network: crate::network::NetworkSettings,
    /// Runtime policies every sandbox of the profile is checked against.
    #[serde(default)]
    pub policy: PolicySettings,
}

/// `[policy]`: KubeArmor-format policies the profile carries, and what an allow list
/// does not name meets.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Policy files, applied like `--policy` (their selectors still choose sandboxes);
    /// relative paths are relative to the profile's own directory.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The default posture per resource type.
    #[serde(default)]
    pub default_posture: Postures,
}

/// The default posture of each resource type in allow-list mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Postures {
    /// File access.
    #[serde(default)]
    pub file: Posture,
    /// Execution.
    #[serde(default)]
    pub process: Posture,
    /// Network protocols and destinations.
    #[serde(default)]
    pub network: Posture,
}

/// What an allow list does not name meets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Posture {
    /// Denied, with an alert.
    #[default]
    Block,
    /// Let through, with an alert.
    Audit,
}

impl Profile {
    /// The profile's policy files, relative ones resolved against the profile's directory.
    pub fn policy_files(&self, source: &ProfileSource) -> Vec<PathBuf> {
        let base = match source {
            ProfileSource::File(path) => path.parent().map(Path::to_path_buf),
            ProfileSource::Builtin(_) => None,
        };
        self.policy
            .files
            .iter()
            .map(|file| match &base {
                Some(base) if file.is_relative() => base.join(file),
                _ => file.clone(),
            })
            .collect()
    }
}

/// Resource limits as written in a profile (sizes as text such as `2G`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory limit including swap.
    pub memory: String,
    /// CPU quota in CPUs (`1.5` = one and a half CPUs of time per period).
    pub cpus: f64,
    /// Maximum number of tasks (processes and threads) in the sandbox.
    pub pids: u64,
    /// Size cap of the private /tmp.
    pub tmp_size: String,
    /// Size cap of /dev/shm.
    pub shm_size: String,
    /// Size cap of the home directory when no `--home` is given (an ephemeral tmpfs).
    pub ephemeral_home_size: String,
    /// Relative I/O weight (cgroup v2 io.weight 1..10000; v1 blkio.weight is scaled).
    pub io_weight: u16,
    /// RLIMIT_NOFILE (soft and hard).
    pub nofile: u64,
    /// What an out-of-memory kill does: end the whole sandbox (the default, as cgroup
    /// v2's memory.oom.group does for a container) or only the process the kernel picked.
    #[serde(default)]
    pub on_oom: OnOom,
}

/// What happens when the kernel kills a process of the sandbox for lack of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOom {
    /// The whole sandbox ends (its supervisor, e.g. a hub, sees it stop).
    #[default]
    Sandbox,
    /// Only the process the kernel chose dies; the rest runs on.
    Process,
}

impl std::str::FromStr for OnOom {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sandbox" => Ok(OnOom::Sandbox),
            "process" => Ok(OnOom::Process),
            _ => Err(()),
        }
    }
}

/// Landlock settings of a profile.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockSettings {
    /// The lowest Landlock ABI the profile accepts; a host below it refuses to run the
    /// sandbox (fail closed) instead of silently enforcing less.
    pub min_abi: u8,
}

/// Seccomp settings of a profile.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompSettings {
    /// Name of a built-in syscall filter (see `policies/seccomp/`).
    pub filter: String,
}

/// Where a profile came from, for error messages and the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileSource {
    /// Compiled into moat.
    Builtin(String),
    /// Read from a file.
    File(PathBuf),
}

/// A profile that could not be loaded.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The name is neither built in nor a file path.
    #[error(
        "unknown profile {name:?} (built-in profiles: {known}; pass a path to use a profile file)"
    )]
    Unknown {
        /// The name given.
        name: String,
        /// Comma-separated built-in names.
        known: String,
    },
    /// The profile file could not be read.
    #[error("cannot read profile file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not valid TOML or does not match the schema.
    #[error("{origin}:{line}:{column}: {message}")]
    Syntax {
        /// File path or `builtin:NAME`.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("{origin}: {message}")]
    Invalid {
        /// File path or `builtin:NAME`.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl Profile {
    /// Loads a profile by built-in name or, when `name_or_path` looks like a path
    /// (contains `/` or ends in `.toml`), from that file.
    pub fn load(name_or_path: &str) -> Result<(Profile, ProfileSource), ProfileError> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            let path = Path::new(name_or_path);
            let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let profile = Self::parse(&text, &path.display().to_string())?;
            return Ok((profile, ProfileSource::File(path.to_path_buf())));
        }
        let (name, text) = BUILTIN
            .iter()
            .find(|(name, _)| *name == name_or_path)
            .ok_or_else(|| ProfileError::Unknown {
                name: name_or_path.to_string(),
                known: Self::builtin_names().join(", "),
            })?;
        let profile = Self::parse(text, &format!("builtin:{name}"))?;
        Ok((profile, ProfileSource::Builtin(name.to_string())))
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// Parses and validates profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|err| {
            let (line, column) = err
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ProfileError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                message: err.message().to_string(),
            }
        })?;
        profile.validate(origin)?;
        Ok(profile)
    }

    fn validate(&self, origin: &str) -> Result<(), ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if self.name.is_empty() {
            return Err(invalid("name must not be empty".into()));
        }
        for (key, text) in [
            ("limits.memory", &self.limits.memory),
            ("limits.tmp_size", &self.limits.tmp_size),
            ("limits.shm_size", &self.limits.shm_size),
            (
                "limits.ephemeral_home_size",
                &self.limits.ephemeral_home_size,
            ),
        ] {
            crate::units::parse_size(text).map_err(|err| invalid(format!("{key}: {err}")))?;
        }
        // A profile's CPUs are capped at the host's when compiled; below that they must
        // mean something.
        if !(self.limits.cpus.is_finite() && self.limits.cpus >= 0.01) {
            return Err(invalid(format!(
                "limits.cpus: {} is not a number of CPUs (0.01 or more)",
                self.limits.cpus
            )));
        }
        if !(8..=4_194_304).contains(&self.limits.pids) {
            return Err(invalid(format!(
                "limits.pids: {} is outside 8..=4194304",
                self.limits.pids
            )));
        }
        if !(1..=10000).contains(&self.limits.io_weight) {
            return Err(invalid(format!(
                "limits.io_weight: {} is outside 1..=10000",
                self.limits.io_weight
            )));
        }
        if !(64..=1 << 20).contains(&self.limits.nofile) {
            return Err(invalid(format!(
                "limits.nofile: {} is outside 64..=1048576",
                self.limits.nofile
            )));
        }
        if self.landlock.min_abi == 0 {
            return Err(invalid(
                "landlock.min_abi must be at least 1: Landlock is a required wall".into(),
            ));
        }
        for (key, posture) in [
            ("file", self.policy.default_posture.file),
            ("process", self.policy.default_posture.process),
        ] {
            if posture == Posture::Audit {
                return Err(invalid(format!(
                    "policy.default_posture.{key} = \"audit\": moat enforces {key} allow lists with Landlock, which can deny but not report what it lets through, so an audit posture would silently allow everything; use \"block\" (network may be \"audit\")"
                )));
            }
        }
        if let Some(builtin) = self.policy.files.iter().find(|f| f.as_os_str().is_empty()) {
            return Err(invalid(format!(
                "policy.files: an empty path ({builtin:?})"
            )));
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        for name in Profile::builtin_names() {
            let (profile, source) = Profile::load(name).expect(name);
            assert_eq!(profile.name, name);
            assert_eq!(source, ProfileSource::Builtin(name.to_string()));
        }
    }

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let err = Profile::load("trusting").unwrap_err().to_string();
        assert!(err.contains("unknown profile \"trusting\""), "{err}");
        assert!(err.contains("untrusted"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = "name = \"x\"\n[limits]\nmemory = 12\n";
        let err = Profile::parse(text, "p.toml").unwrap_err().to_string();
        assert!(err.starts_with("p.toml:3:10:"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let (builtin, _) = Profile::load("untrusted").unwrap();
        let mut text = toml::to_string(&builtin).unwrap();
        text.push_str("\n[filesystem]\nmode = \"open\"\n");
        let err = Profile::parse(&text, "p.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `filesystem`"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let (builtin, _) = Profile::load("untrusted").unwrap();
        let mut bad = builtin.clone();
        bad.limits.memory = "lots".into();
        let err = Profile::parse(&toml::to_string(&bad).unwrap(), "p.toml").unwrap_err();
        assert!(err.to_string().contains("limits.memory"), "{err}");
        let mut bad = builtin.clone();
        bad.landlock.min_abi = 0;
        let err = Profile::parse(&toml::to_string(&bad).unwrap(), "p.toml").unwrap_err();
        assert!(err.to_string().contains("landlock.min_abi"), "{err}");
        for cpus in [f64::NAN, -3.0, 0.0] {
            let mut bad = builtin.clone();
            bad.limits.cpus = cpus;
            let err = Profile::parse(&toml::to_string(&bad).unwrap(), "p.toml").unwrap_err();
            assert!(err.to_string().contains("limits.cpus"), "{cpus}: {err}");
        }
        let mut bad = builtin.clone();
        bad.limits.pids = 2;
        let err = Profile::parse(&toml::to_string(&bad).unwrap(), "p.toml").unwrap_err();
        assert!(err.to_string().contains("limits.pids: 2"), "{err}");
        // Control: the builtin values themselves pass.
        assert!(Profile::parse(&toml::to_string(&builtin).unwrap(), "p.toml").is_ok());
    }

    #[test]
    fn postures_and_policy_files() {
        let (builtin, _) = Profile::load("untrusted").unwrap();
        assert_eq!(builtin.policy.default_posture, Postures::default());
        assert_eq!(builtin.policy.default_posture.network, Posture::Block);
        let mut audit = builtin.clone();
        audit.policy.default_posture.network = Posture::Audit;
        audit.policy.files = vec!["base.yaml".into(), "/etc/moat/policies/x.yaml".into()];
        let parsed = Profile::parse(&toml::to_string(&audit).unwrap(), "p.toml").unwrap();
        assert_eq!(parsed.policy.default_posture.network, Posture::Audit);
        assert_eq!(
            parsed.policy_files(&ProfileSource::File("/etc/moat/profiles/hub.toml".into())),
            [
                PathBuf::from("/etc/moat/profiles/base.yaml"),
                PathBuf::from("/etc/moat/policies/x.yaml")
            ]
        );
        for key in ["file", "process"] {
            let mut bad = builtin.clone();
            if key == "file" {
                bad.policy.default_posture.file = Posture::Audit;
            } else {
                bad.policy.default_posture.process = Posture::Audit;
            }
            let err = Profile::parse(&toml::to_string(&bad).unwrap(), "p.toml").unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("policy.default_posture.{key} = \"audit\"")),
                "{err}"
            );
        }
        let err = Profile::parse(
            &toml::to_string(&builtin)
                .unwrap()
                .replace("network = \"block\"", "network = \"allow\""),
            "p.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant `allow`"), "{err}");
    }
}
