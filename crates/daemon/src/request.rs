//! `POST /v1/sandboxes`: the request body, its checks, and the `moat run` it becomes.
//!
//! The daemon checks the shape here (types, names, characters that cannot cross a
//! command line or an env file) and leaves the meaning of each value to `moat run
//! --dry-run`, so a request is judged by exactly the code that will run it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A number or a string, for limits that accept both (`"2G"`, `2147483648`, `1.5`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON string.
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Text(t) => f.write_str(t),
        }
    }
}

/// Resource limits; each as `moat run --memory/--cpus/--pids/--tmp-size`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory, swap included.
    pub memory: Option<Scalar>,
    /// CPUs.
    pub cpus: Option<Scalar>,
    /// Processes and threads.
    pub pids: Option<Scalar>,
    /// Size of the private /tmp.
    pub tmp: Option<Scalar>,
    /// `sandbox` (an out-of-memory kill ends the sandbox) or `process`.
    pub on_oom: Option<String>,
}

/// The network; each as the `moat run` option of the same name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// none, isolated or egress.
    pub mode: Option<String>,
    /// Host endpoints the sandbox may reach.
    #[serde(default)]
    pub allow_host: Vec<String>,
    /// The egress allowlist.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Ports the host may connect to.
    #[serde(default)]
    pub publish: Vec<u16>,
    /// Bandwidth limit per direction.
    pub bandwidth: Option<String>,
    /// Resolvers for egress.
    #[serde(default)]
    pub dns: Vec<String>,
}

/// The body of `POST /v1/sandboxes` (docs/api.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A unique handle chosen by the caller.
    pub name: Option<String>,
    /// The workload and its arguments.
    pub command: Vec<String>,
    /// Environment inside; never logged or returned.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Profile name or file.
    pub profile: Option<String>,
    /// A named tenant with a stable id range.
    pub identity: Option<String>,
    /// Host directory for the home.
    pub home: Option<String>,
    /// Working directory inside.
    pub cwd: Option<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// The network.
    #[serde(default)]
    pub network: Network,
    /// Labels, for policy selectors and listing.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// KubeArmor-format policy files.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// Why a request is refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// Checks a sandbox name: 1 to 128 of a-z, A-Z, 0-9, `-`, `.`, `_`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if name.is_empty() || name.len() > 128 || !name.chars().all(allowed) {
        return Err(invalid(format!(
            "name {name:?}: expected 1 to 128 characters of a-z, A-Z, 0-9, '-', '.', '_'"
        )));
    }
    Ok(())
}

/// Text that goes into a command line or a line of a file: no NUL, no line break.
fn check_text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.contains(['\0', '\n', '\r']) {
        return Err(invalid(format!(
            "{field}: must not contain NUL or line breaks"
        )));
    }
    Ok(())
}

impl CreateRequest {
    /// Checks what `moat run` would not see or could misread.
    pub fn check(&self) -> Result<(), Invalid> {
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(invalid("command: must name a program"));
        }
        for (index, argument) in self.command.iter().enumerate() {
            if argument.contains('\0') {
                return Err(invalid(format!("command[{index}]: must not contain NUL")));
            }
        }
        for (key, value) in &self.env {
            let key_ok = !key.is_empty()
                && !key.contains('=')
                && !key.trim().is_empty()
                && key.trim() == key
                && !key.starts_with('#');
            if !key_ok {
                return Err(invalid(format!(
                    "env: {key:?} is not a variable name (no '=', no surrounding blanks)"
                )));
            }
            check_text(&format!("env.{key}"), key)?;
            // The value is a secret as often as not: the error names only the key.
            if value.contains(['\0', '\n', '\r']) {
                return Err(invalid(format!(
                    "env.{key}: the value must not contain NUL or line breaks"
                )));
            }
        }
        for (key, value) in &self.labels {
            if key.is_empty() || key.contains('=') {
                return Err(invalid(format!("labels: {key:?} is not a label key")));
            }
            check_text(&format!("labels.{key}"), value)?;
            check_text("labels", key)?;
        }
        let optional = [
            ("profile", &self.profile),
            ("identity", &self.identity),
            ("home", &self.home),
            ("cwd", &self.cwd),
            ("network.mode", &self.network.mode),
            ("network.bandwidth", &self.network.bandwidth),
            ("limits.on_oom", &self.limits.on_oom),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                check_text(field, value)?;
            }
        }
        if let Some(home) = &self.home {
            if !Path::new(home).is_absolute() {
                return Err(invalid(format!("home {home:?}: must be an absolute path")));
            }
        }
        for (field, list) in [
            ("network.allow_host", &self.network.allow_host),
            ("network.egress", &self.network.egress),
            ("network.dns", &self.network.dns),
            ("policies", &self.policies),
        ] {
            for value in list {
                check_text(field, value)?;
            }
        }
        for policy in &self.policies {
            if !Path::new(policy).is_absolute() {
                return Err(invalid(format!(
                    "policies: {policy:?} must be an absolute path"
                )));
            }
        }
        if self.network.publish.contains(&0) {
            return Err(invalid("network.publish: port 0 is not a port"));
        }
        for (field, value) in [
            ("limits.memory", &self.limits.memory),
            ("limits.cpus", &self.limits.cpus),
            ("limits.pids", &self.limits.pids),
            ("limits.tmp", &self.limits.tmp),
        ] {
            if let Some(value) = value {
                check_text(field, &value.to_string())?;
            }
        }
        Ok(())
    }

    /// The env file `moat run --env-file` reads (written 0600; deleted once read).
    pub fn env_file(&self) -> String {
        self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// The `moat run` options (after `run`), up to and including `--`, then the command.
    pub fn run_arguments(&self, id: &str, files: &RunFiles) -> Vec<String> {
        let mut args: Vec<String> = vec!["--id".into(), id.into()];
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        push("--status-file", files.status.display().to_string());
        push("--env-file", files.env.display().to_string());
        push("--alerts", files.alerts.display().to_string());
        if let Some(profile) = &self.profile {
            push("--profile", profile.clone());
        }
        if let Some(identity) = &self.identity {
            push("--identity", identity.clone());
        }
        if let Some(home) = &self.home {
            push("--home", home.clone());
        }
        if let Some(cwd) = &self.cwd {
            push("--workdir", cwd.clone());
        }
        if let Some(memory) = &self.limits.memory {
            push("--memory", memory.to_string());
        }
        if let Some(cpus) = &self.limits.cpus {
            push("--cpus", cpus.to_string());
        }
        if let Some(pids) = &self.limits.pids {
            push("--pids", pids.to_string());
        }
        if let Some(tmp) = &self.limits.tmp {
            push("--tmp-size", tmp.to_string());
        }
        if let Some(on_oom) = &self.limits.on_oom {
            push("--on-oom", on_oom.clone());
        }
        if let Some(mode) = &self.network.mode {
            push("--net", mode.clone());
        }
        for endpoint in &self.network.allow_host {
            push("--allow-host", endpoint.clone());
        }
        for entry in &self.network.egress {
            push("--egress", entry.clone());
        }
        for port in &self.network.publish {
            push("--publish", port.to_string());
        }
        if let Some(rate) = &self.network.bandwidth {
            push("--bandwidth", rate.clone());
        }
        for resolver in &self.network.dns {
            push("--dns", resolver.clone());
        }
        for (key, value) in &self.labels {
            push("--label", format!("{key}={value}"));
        }
        for policy in &self.policies {
            push("--policy", policy.clone());
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }
}

/// Where a sandbox's files live (see [`crate::store`]).
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// `moat run --status-file`.
    pub status: std::path::PathBuf,
    /// `moat run --env-file`.
    pub env: std::path::PathBuf,
    /// `moat run --alerts`.
    pub alerts: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> CreateRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_request_becomes_the_matching_moat_run_options() {
        let request = parse(
            r#"{"name":"jupyter-alice","command":["jupyterhub-singleuser","--port=8888"],
                "env":{"TOKEN":"s3cret"},"identity":"alice","home":"/var/lib/moat/homes/alice",
                "limits":{"memory":"2G","cpus":1.5,"pids":512},
                "network":{"mode":"isolated","allow_host":["10.77.0.1:8081"],"publish":[8888]},
                "labels":{"hub.jupyter.org/username":"alice"}}"#,
        );
        request.check().unwrap();
        let files = RunFiles {
            status: "/s".into(),
            env: "/e".into(),
            alerts: "/a".into(),
        };
        let args = request.run_arguments("abc", &files).join(" ");
        assert!(args.contains("--memory 2G --cpus 1.5 --pids 512"), "{args}");
        assert!(args.contains("--net isolated --allow-host 10.77.0.1:8081 --publish 8888"));
        assert!(args.contains("--label hub.jupyter.org/username=alice"));
        assert!(args.ends_with("-- jupyterhub-singleuser --port=8888"));
        assert!(
            !args.contains("s3cret"),
            "secrets stay off the command line"
        );
        assert_eq!(request.env_file(), "TOKEN=s3cret\n");
    }

    #[test]
    fn bad_fields_are_named_and_secrets_are_not_echoed() {
        let cases = [
            (r#"{"command":[]}"#, "command"),
            (r#"{"command":["x"],"name":"a b"}"#, "name"),
            (r#"{"command":["x"],"env":{"A=B":"1"}}"#, "env"),
            (r#"{"command":["x"],"home":"relative"}"#, "home"),
            (
                r#"{"command":["x"],"network":{"publish":[0]}}"#,
                "network.publish",
            ),
            (r#"{"command":["x"],"policies":["p.yaml"]}"#, "policies"),
        ];
        for (json, field) in cases {
            let err = parse(json).check().unwrap_err();
            assert!(err.0.starts_with(field), "{json}: {}", err.0);
        }
        let err = parse(r#"{"command":["x"],"env":{"TOKEN":"line1\nsecret"}}"#)
            .check()
            .unwrap_err();
        assert!(
            err.0.contains("env.TOKEN") && !err.0.contains("secret"),
            "{}",
            err.0
        );
        assert!(
            serde_json::from_str::<CreateRequest>(r#"{"command":["x"],"memory":"1G"}"#).is_err(),
            "unknown fields are refused, not ignored"
        );
    }
}
