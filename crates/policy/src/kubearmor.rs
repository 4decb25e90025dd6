//! KubeArmor-format runtime policies (security.kubearmor.com/v1): parsed, checked, and
//! reported with file, line and column, so that a policy that cannot be applied is an
//! error its author sees, never a silent no-op.
//!
//! Accepted: `KubeArmorPolicy`, `KubeArmorClusterPolicy`, `KubeArmorHostPolicy`, with
//! `process`, `file`, `network` (matchProtocols, and moat's extension matchAddresses:
//! CIDR, ports, protocol) and `capabilities` sections, matchPaths and matchDirectories
//! (recursive, readOnly), Allow/Audit/Block, severity, tags and message
//! at spec, section and rule level. Unlike upstream there is no 200-character path limit
//! and no limit on the number of rules. Rules moat cannot enforce (`fromSource`,
//! `matchPatterns`, `ownerOnly`) are errors for Allow and Block and warnings for Audit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The policy kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum PolicyKind {
    /// Namespaced, selects workloads by labels.
    KubeArmorPolicy,
    /// Cluster-wide.
    KubeArmorClusterPolicy,
    /// For the host itself.
    KubeArmorHostPolicy,
}

/// Allow, Audit or Block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Allow-list entry: switches the resource type to allow-list mode.
    Allow,
    /// Allowed but reported.
    Audit,
    /// Denied and reported.
    Block,
}

/// A whole policy document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// Must be `security.kubearmor.com/v1`.
    pub api_version: String,
    /// The kind.
    pub kind: PolicyKind,
    /// Name and namespace.
    pub metadata: Metadata,
    /// The rules.
    pub spec: PolicySpec,
}

/// Kubernetes object metadata (only what moat uses; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Policy name (`PolicyName` in alerts).
    pub name: String,
    /// Namespace (namespaced kinds).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Which workloads a policy selects.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Labels that must all match.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<LabelExpression>,
}

/// A set-based label requirement.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelExpression {
    /// The label key.
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    /// Values for In and NotIn.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Severity, tags, message and action: at spec, section and rule level (the innermost
/// one that is set wins).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Labels {
    /// 1..=10.
    #[serde(default)]
    pub severity: Option<i64>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The alert message.
    #[serde(default)]
    pub message: Option<String>,
    /// Allow, Audit or Block (empty means Block).
    #[serde(default)]
    pub action: Option<String>,
}

/// The body of a policy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Workload selector (KubeArmorPolicy, KubeArmorClusterPolicy).
    #[serde(default)]
    pub selector: Option<Selector>,
    /// Node selector (KubeArmorHostPolicy).
    #[serde(default)]
    pub node_selector: Option<Selector>,
    /// Process (exec) rules.
    #[serde(default)]
    pub process: Option<PathSection>,
    /// File rules.
    #[serde(default)]
    pub file: Option<PathSection>,
    /// Network protocol rules.
    #[serde(default)]
    pub network: Option<NetworkSection>,
    /// Capability rules.
    #[serde(default)]
    pub capabilities: Option<CapabilitySection>,
    /// Syscall rules (upstream: audit only).
    #[serde(default)]
    pub syscalls: Option<serde_yaml_ng::Value>,
    /// Defaults for the rules.
    #[serde(flatten)]
    pub labels: Labels,
}

/// `process` or `file`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathSection {
    /// Exact files.
    #[serde(default)]
    pub match_paths: Vec<MatchPath>,
    /// Directories.
    #[serde(default)]
    pub match_directories: Vec<MatchDirectory>,
    /// Glob patterns.
    #[serde(default)]
    pub match_patterns: Vec<MatchPattern>,
    /// Defaults for the section's rules.
    #[serde(flatten)]
    pub labels: Labels,
}

/// One file (or, for process, a file or an executable name).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchPath {
    /// Absolute path.
    #[serde(default)]
    pub path: Option<String>,
    /// Executable name (process only).
    #[serde(default)]
    pub execname: Option<String>,
    /// Reading allowed, anything else blocked (file only).
    #[serde(default)]
    pub read_only: bool,
    /// Only the file's owner may access it.
    #[serde(default)]
    pub owner_only: bool,
    /// The rule applies only when the acting process is one of these.
    #[serde(default)]
    pub from_source: Vec<Source>,
    /// Rule-level labels.
    #[serde(flatten)]
    pub labels: Labels,
}

/// A directory, possibly recursive.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchDirectory {
    /// Absolute, ending in `/`.
    pub dir: String,
    /// Subdirectories too.
    #[serde(default)]
    pub recursive: bool,
    /// Reading allowed, anything else blocked (file only).
    #[serde(default)]
    pub read_only: bool,
    /// Only the owner may access.
    #[serde(default)]
    pub owner_only: bool,
    /// The rule applies only when the acting process is one of these.
    #[serde(default)]
    pub from_source: Vec<Source>,
    /// Rule-level labels.
    #[serde(flatten)]
    pub labels: Labels,
}

/// A glob pattern.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchPattern {
    /// The pattern.
    pub pattern: String,
    /// Reading allowed, anything else blocked.
    #[serde(default)]
    pub read_only: bool,
    /// Only the owner may access.
    #[serde(default)]
    pub owner_only: bool,
    /// Rule-level labels.
    #[serde(flatten)]
    pub labels: Labels,
}

/// An acting process.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// A binary.
    #[serde(default)]
    pub path: Option<String>,
    /// A directory of binaries.
    #[serde(default)]
    pub dir: Option<String>,
    /// With subdirectories.
    #[serde(default)]
    pub recursive: bool,
}

/// `network`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSection {
    /// Protocols.
    #[serde(default)]
    pub match_protocols: Vec<MatchProtocol>,
    /// Destinations by CIDR, port and protocol (moat's extension; upstream has
    /// protocol rules only).
    #[serde(default)]
    pub match_addresses: Vec<MatchAddress>,
    /// Defaults for the section's rules.
    #[serde(flatten)]
    pub labels: Labels,
}

/// A protocol rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchProtocol {
    /// tcp, udp, icmp, icmpv6, raw, sctp...
    pub protocol: String,
    /// The rule applies only when the acting process is one of these.
    #[serde(default)]
    pub from_source: Vec<Source>,
    /// Rule-level labels.
    #[serde(flatten)]
    pub labels: Labels,
}

/// A destination rule (moat's extension): connections and datagrams to `cidr`, on
/// `ports` (all when empty), over `protocol` (tcp or udp; both when absent).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchAddress {
    /// An IPv4 or IPv6 network, e.g. `169.254.169.254/32` or `2001:db8::/32`.
    pub cidr: String,
    /// Ports and ranges: `443`, `"8000-8100"`.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The rule applies only when the acting process is one of these.
    #[serde(default)]
    pub from_source: Vec<Source>,
    /// Rule-level labels.
    #[serde(flatten)]
    pub labels: Labels,
}

/// A port or a range, as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// `443`.
    Number(i64),
    /// `"443"` or `"8000-8100"`.
    Text(String),
}

impl PortSpec {
    /// The inclusive range it names, or why it names none.
    pub fn range(&self) -> Result<(u16, u16), String> {
        let port = |text: &str| -> Result<u16, String> {
            match text.trim().parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                _ => Err(format!("port {text:?}: expected 1 to 65535")),
            }
        };
        match self {
            PortSpec::Number(n) => port(&n.to_string()).map(|p| (p, p)),
            PortSpec::Text(text) => match text.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!(
                            "port range {text:?}: the first port is above the last"
                        ));
                    }
                    Ok((lo, hi))
                }
                None => port(text).map(|p| (p, p)),
            },
        }
    }

    /// As written, for finding it in the source.
    pub fn text(&self) -> String {
        match self {
            PortSpec::Number(n) => n.to_string(),
            PortSpec::Text(text) => text.clone(),
        }
    }
}

/// `cidr` of a destination rule, or why it is not one. Host bits must be zero, so that
/// `10.0.0.1/8` (a typo for a /32, or for 10.0.0.0/8) is not silently widened.
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    let net: ipnet::IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(addr) => ipnet::IpNet::from(addr),
            Err(_) => {
                return Err(format!(
                    "cidr {text:?}: expected an address or a network such as 192.0.2.0/24 or 2001:db8::/32"
                ))
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "cidr {text:?} has host bits set: write {} for the network, or {}/{} for the one address",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    // IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) are IPv4 traffic and meet the IPv4
    // rules, so a mapped network is the IPv4 network it maps.
    if let ipnet::IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .map_err(|e| format!("cidr {text:?}: {e}"));
        }
    }
    Ok(net)
}

/// `capabilities`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilitySection {
    /// Capabilities.
    #[serde(default)]
    pub match_capabilities: Vec<MatchCapability>,
    /// Defaults for the section's rules.
    #[serde(flatten)]
    pub labels: Labels,
}

/// A capability rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchCapability {
    /// Lower case, without `cap_`.
    pub capability: String,
    /// The rule applies only when the acting process is one of these.
    #[serde(default)]
    pub from_source: Vec<Source>,
    /// Rule-level labels.
    #[serde(flatten)]
    pub labels: Labels,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The policy cannot be applied as written.
    Error,
    /// It applies, but not everything it says is enforced.
    Warning,
}

/// One finding, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Error or warning.
    pub level: Level,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {level}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A parsed policy and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedPolicy {
    /// The file.
    pub file: PathBuf,
    /// First line of its document in the file.
    pub line: usize,
    /// The policy.
    pub policy: PolicyDocument,
}

/// The documents of a YAML stream with the line each starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = vec![(1, String::new())];
    for (index, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            documents.push((index + 2, String::new()));
            continue;
        }
        if let Some((_, body)) = documents.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    documents
        .into_iter()
        .filter(|(_, body)| {
            body.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Where `needle` first appears in a document, as (line, column) of the file.
fn locate(body: &str, first_line: usize, needle: &str) -> (usize, usize) {
    for (index, line) in body.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(column) = line.find(needle) {
            return (first_line + index, column + 1);
        }
    }
    (first_line, 1)
}

/// Reads, parses and checks every policy of `files`; the first file that cannot be read
/// is an error.
pub fn load_files(
    files: &[PathBuf],
) -> Result<(Vec<LoadedPolicy>, Vec<Diagnostic>), (PathBuf, std::io::Error)> {
    let mut policies = Vec::new();
    let mut findings = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|err| (file.clone(), err))?;
        let (loaded, found) = check_text(file, &text);
        policies.extend(loaded);
        findings.extend(found);
    }
    Ok((policies, findings))
}

/// Parses and checks every policy in `text` (one file, possibly several documents).
pub fn check_text(file: &Path, text: &str) -> (Vec<LoadedPolicy>, Vec<Diagnostic>) {
    let mut policies = Vec::new();
    let mut diagnostics = Vec::new();
    for (first_line, body) in documents(text) {
        let diagnostic = |line: usize, column: usize, level: Level, message: String| Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            level,
            message,
        };
        match serde_yaml_ng::from_str::<PolicyDocument>(&body) {
            Ok(policy) => {
                let found = Checker {
                    body: &body,
                    first_line,
                    policy: &policy,
                }
                .check();
                diagnostics.extend(found.into_iter().map(|(line, column, level, message)| {
                    diagnostic(line, column, level, message)
                }));
                policies.push(LoadedPolicy {
                    file: file.to_path_buf(),
                    line: first_line,
                    policy,
                });
            }
            Err(err) => {
                let (line, column) = err
                    .location()
                    .map_or((first_line, 1), |l| (first_line + l.line() - 1, l.column()));
                diagnostics.push(diagnostic(
                    line,
                    column,
                    Level::Error,
                    explain_parse_error(&err.to_string(), &body, line + 1 - first_line),
                ));
            }
        }
    }
    (policies, diagnostics)
}

/// serde's message, with a hint for the mistakes policy authors make most.
fn explain_parse_error(message: &str, body: &str, line_in_body: usize) -> String {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let line = body
        .lines()
        .nth(line_in_body.saturating_sub(1))
        .unwrap_or("");
    let near_from_source = line.contains("fromSource")
        || body
            .lines()
            .nth(line_in_body.saturating_sub(2))
            .is_some_and(|l| l.contains("fromSource"));
    if near_from_source && message.contains("expected a sequence") {
        return format!("{message}: fromSource is a list of sources, e.g. `fromSource: [{{path: /usr/bin/python3}}]`");
    }
    if message.contains("unknown variant") && message.contains("KubeArmor") {
        return format!("{message}: kind must be KubeArmorPolicy, KubeArmorClusterPolicy or KubeArmorHostPolicy");
    }
    message
}

const PROTOCOLS: &[&str] = &["tcp", "udp", "icmp", "icmpv6", "raw", "sctp", "all"];

const CAPABILITIES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

struct Checker<'a> {
    body: &'a str,
    first_line: usize,
    policy: &'a PolicyDocument,
}

type Found = (usize, usize, Level, String);

impl Checker<'_> {
    fn at(&self, needle: &str, level: Level, message: String) -> Found {
        let (line, column) = locate(self.body, self.first_line, needle);
        (line, column, level, message)
    }

    fn action(&self, levels: [&Labels; 3], found: &mut Vec<Found>) -> Action {
        let text = levels
            .iter()
            .find_map(|l| l.action.as_deref())
            .unwrap_or("Block");
        match text {
            "Allow" | "allow" => Action::Allow,
            "Audit" | "audit" => Action::Audit,
            "Block" | "block" | "" => Action::Block,
            other => {
                found.push(self.at(
                    &format!("action: {other}"),
                    Level::Error,
                    format!("action {other:?}: expected Allow, Audit or Block"),
                ));
                Action::Block
            }
        }
    }

    fn label_expression(&self, expression: &LabelExpression, found: &mut Vec<Found>) {
        let operator = expression.operator.as_str();
        let problem = match operator {
            "In" | "NotIn" if expression.values.is_empty() => {
                Some(format!("operator {operator} needs values"))
            }
            "Exists" | "DoesNotExist" if !expression.values.is_empty() => {
                Some(format!("operator {operator} takes no values"))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => None,
            other => Some(format!(
                "operator {other:?}: expected In, NotIn, Exists or DoesNotExist"
            )),
        };
        if let Some(problem) = problem {
            found.push(self.at(
                &format!("operator: {operator}"),
                Level::Error,
                format!("matchExpressions key {:?}: {problem}", expression.key),
            ));
        }
    }

    fn execname(&self, execname: &str, action: Action, found: &mut Vec<Found>) {
        if execname.is_empty() || execname.contains('/') || execname == "." || execname == ".." {
            found.push(self.at(
                &format!("execname: {execname}"),
                Level::Error,
                format!("execname {execname:?}: a file name, without '/'; name a path with path:"),
            ));
        } else if action != Action::Audit {
            found.push(self.at(
                &format!("execname: {execname}"),
                Level::Warning,
                format!(
                    "execname {execname:?} is enforced as /usr/bin/{execname} only; \
                     name other copies (e.g. /usr/local/bin/{execname}) with path:"
                ),
            ));
        }
    }

    fn severity(&self, labels: &Labels, found: &mut Vec<Found>) {
        if let Some(severity) = labels.severity {
            if !(1..=10).contains(&severity) {
                found.push(self.at(
                    &format!("severity: {severity}"),
                    Level::Error,
                    format!("severity {severity}: expected 1 to 10"),
                ));
            }
        }
    }

    fn path(&self, path: &str, directory: bool, found: &mut Vec<Found>) {
        let key = if directory { "dir" } else { "path" };
        if !path.starts_with('/') {
            found.push(self.at(
                path,
                Level::Error,
                format!("{key} {path:?}: must be absolute"),
            ));
        } else if directory && !path.ends_with('/') {
            found.push(self.at(
                path,
                Level::Error,
                format!(
                    "dir {path:?}: a directory ends with '/' ({path}/); for a file use matchPaths"
                ),
            ));
        } else if !directory && path.ends_with('/') {
            found.push(self.at(path, Level::Error, format!("path {path:?}: ends with '/', which names a directory; use matchDirectories with dir: {path}")));
        }
    }

    /// fromSource and matchPatterns: no mechanism here can enforce them per process.
    fn unenforceable(&self, what: &str, needle: &str, action: Action, found: &mut Vec<Found>) {
        match action {
            Action::Audit => found.push(self.at(
                needle,
                Level::Warning,
                format!("{what} cannot be enforced by moat's mechanisms; this Audit rule reports for every process"),
            )),
            Action::Allow | Action::Block => found.push(self.at(
                needle,
                Level::Error,
                format!("{what} cannot be enforced by moat's mechanisms (Landlock, seccomp, cgroup-BPF and capabilities apply to the whole sandbox): drop it, or make the rule Audit"),
            )),
        }
    }

    fn sources(&self, sources: &[Source], action: Action, found: &mut Vec<Found>) {
        for source in sources {
            match (&source.path, &source.dir) {
                (Some(path), _) if path.ends_with('/') => found.push(self.at(
                    path,
                    Level::Error,
                    format!("fromSource path {path:?} is a directory: use `dir: {path}` (with recursive: true for subdirectories)"),
                )),
                (None, None) => found.push(self.at("fromSource", Level::Error, "fromSource entry needs a path or a dir".into())),
                _ => {}
            }
        }
        if !sources.is_empty() {
            self.unenforceable("fromSource", "fromSource", action, found);
        }
    }

    fn check(&self) -> Vec<Found> {
        let mut found = Vec::new();
        let policy = self.policy;
        let spec = &policy.spec;
        if policy.api_version != "security.kubearmor.com/v1" {
            found.push(self.at(
                "apiVersion",
                Level::Error,
                format!(
                    "apiVersion {:?}: expected security.kubearmor.com/v1",
                    policy.api_version
                ),
            ));
        }
        if policy.metadata.name.trim().is_empty() {
            found.push(self.at(
                "metadata",
                Level::Error,
                "metadata.name must not be empty".into(),
            ));
        }
        match policy.kind {
            PolicyKind::KubeArmorHostPolicy if spec.node_selector.is_none() => found.push(self.at(
                "spec",
                Level::Error,
                "KubeArmorHostPolicy needs spec.nodeSelector".into(),
            )),
            PolicyKind::KubeArmorPolicy | PolicyKind::KubeArmorClusterPolicy
                if spec.selector.is_none() =>
            {
                found.push(self.at(
                    "spec",
                    Level::Error,
                    "spec.selector is missing: a policy without a selector selects nothing".into(),
                ))
            }
            _ => {}
        }
        for selector in [&spec.selector, &spec.node_selector].into_iter().flatten() {
            for expression in &selector.match_expressions {
                self.label_expression(expression, &mut found);
            }
        }
        self.severity(&spec.labels, &mut found);
        if spec.syscalls.is_some() {
            found.push(self.at("syscalls", Level::Warning, "syscalls rules are not enforced by moat (upstream audits them only); they are ignored".into()));
        }
        let mut rules = 0usize;
        for (name, section) in [("process", &spec.process), ("file", &spec.file)] {
            let Some(section) = section else { continue };
            self.severity(&section.labels, &mut found);
            for rule in &section.match_paths {
                rules += 1;
                let action = self.action([&rule.labels, &section.labels, &spec.labels], &mut found);
                self.severity(&rule.labels, &mut found);
                match (&rule.path, &rule.execname) {
                    (Some(path), None) => self.path(path, false, &mut found),
                    (None, Some(execname)) if name == "process" => {
                        self.execname(execname, action, &mut found)
                    }
                    (None, Some(execname)) => found.push(self.at(
                        execname,
                        Level::Error,
                        "execname is for process rules; file rules name a path".into(),
                    )),
                    (Some(path), Some(_)) => found.push(self.at(
                        path,
                        Level::Error,
                        "a rule names either path or execname, not both".into(),
                    )),
                    (None, None) => found.push(self.at(
                        "matchPaths",
                        Level::Error,
                        format!("{name} matchPaths entry needs a path"),
                    )),
                }
                if name == "process" && rule.read_only {
                    found.push(self.at(
                        "readOnly",
                        Level::Error,
                        "readOnly is for file rules".into(),
                    ));
                }
                if rule.owner_only {
                    self.unenforceable("ownerOnly", "ownerOnly", action, &mut found);
                }
                self.sources(&rule.from_source, action, &mut found);
            }
            for rule in &section.match_directories {
                rules += 1;
                let action = self.action([&rule.labels, &section.labels, &spec.labels], &mut found);
                self.severity(&rule.labels, &mut found);
                self.path(&rule.dir, true, &mut found);
                if name == "process" && rule.read_only {
                    found.push(self.at(
                        "readOnly",
                        Level::Error,
                        "readOnly is for file rules".into(),
                    ));
                }
                if rule.owner_only {
                    self.unenforceable("ownerOnly", "ownerOnly", action, &mut found);
                }
                self.sources(&rule.from_source, action, &mut found);
            }
            for rule in &section.match_patterns {
                rules += 1;
                let action = self.action([&rule.labels, &section.labels, &spec.labels], &mut found);
                if action == Action::Audit {
                    found.push(self.at(
                        &rule.pattern,
                        Level::Warning,
                        "matchPatterns cannot be watched by moat's mechanisms (marks name files and directories, not patterns): this Audit rule produces no alert".into(),
                    ));
                } else {
                    self.unenforceable("matchPatterns", &rule.pattern, action, &mut found);
                }
            }
        }
        if let Some(section) = &spec.network {
            for rule in &section.match_protocols {
                rules += 1;
                let action = self.action([&rule.labels, &section.labels, &spec.labels], &mut found);
                if !PROTOCOLS.contains(&rule.protocol.to_ascii_lowercase().as_str()) {
                    found.push(self.at(
                        &rule.protocol,
                        Level::Error,
                        format!(
                            "protocol {:?}: expected one of {}",
                            rule.protocol,
                            PROTOCOLS.join(", ")
                        ),
                    ));
                }
                self.sources(&rule.from_source, action, &mut found);
            }
            for rule in &section.match_addresses {
                rules += 1;
                let action = self.action([&rule.labels, &section.labels, &spec.labels], &mut found);
                self.severity(&rule.labels, &mut found);
                if let Err(message) = parse_cidr(&rule.cidr) {
                    found.push(self.at(&rule.cidr, Level::Error, message));
                }
                for port in &rule.ports {
                    if let Err(message) = port.range() {
                        found.push(self.at(&port.text(), Level::Error, message));
                    }
                }
                if let Some(protocol) = &rule.protocol {
                    if !matches!(protocol.to_ascii_lowercase().as_str(), "tcp" | "udp") {
                        found.push(self.at(
                            protocol,
                            Level::Error,
                            format!("protocol {protocol:?}: a matchAddresses rule names tcp or udp (leave it out for both; other protocols go in matchProtocols)"),
                        ));
                    }
                }
                self.sources(&rule.from_source, action, &mut found);
            }
        }
        if let Some(section) = &spec.capabilities {
            for rule in &section.match_capabilities {
                rules += 1;
                let action = self.action([&rule.labels, &section.labels, &spec.labels], &mut found);
                let name = rule.capability.as_str();
                if !CAPABILITIES.contains(&name) {
                    let stripped = name.to_ascii_lowercase();
                    let stripped = stripped.strip_prefix("cap_").unwrap_or(&stripped);
                    let hint = if CAPABILITIES.contains(&stripped) {
                        format!(" (write it {stripped})")
                    } else {
                        String::new()
                    };
                    found.push(self.at(name, Level::Error, format!("capability {name:?}: not a Linux capability name in lower case without cap_{hint}")));
                }
                self.sources(&rule.from_source, action, &mut found);
            }
        }
        if rules == 0 {
            found.push(self.at(
                "spec",
                Level::Error,
                "the policy has no rule (process, file, network or capabilities)".into(),
            ));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        check_text(Path::new("p.yaml"), text)
            .1
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const GOOD: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: block-pkg-managers
  namespace: jhub
spec:
  selector:
    matchLabels:
      component: singleuser-server
  severity: 5
  message: package manager run in a notebook
  action: Block
  process:
    matchPaths:
      - path: /usr/bin/apt
    matchDirectories:
      - dir: /usr/sbin/
        recursive: true
  file:
    matchPaths:
      - path: /etc/shadow
    matchDirectories:
      - dir: /home/jovyan/.ssh/
        recursive: true
        readOnly: true
  network:
    matchProtocols:
      - protocol: raw
  capabilities:
    matchCapabilities:
      - capability: net_raw
";

    #[test]
    fn destination_rules_are_checked() {
        let with = |rule: &str| {
            check(&GOOD.replace(
                "    matchProtocols:\n      - protocol: raw\n",
                &format!("    matchAddresses:\n{rule}"),
            ))
        };
        assert_eq!(
            with("      - cidr: 169.254.169.254/32\n        ports: [80, \"8000-8100\"]\n        protocol: tcp\n      - cidr: 2001:db8::/32\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_cidr("::ffff:127.0.0.0/104").map(|n| n.to_string()),
            Ok("127.0.0.0/8".to_string()),
            "a mapped network is the IPv4 network"
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.2.3").map(|n| n.to_string()),
            Ok("10.1.2.3/32".to_string())
        );
        for (rule, expected) in [
            (
                "      - cidr: 10.0.0.1/8\n",
                "host bits set: write 10.0.0.0/8",
            ),
            (
                "      - cidr: metadata\n",
                "expected an address or a network",
            ),
            (
                "      - cidr: 10.0.0.0/8\n        ports: [0]\n",
                "port \"0\": expected 1 to 65535",
            ),
            (
                "      - cidr: 10.0.0.0/8\n        ports: [\"90-80\"]\n",
                "the first port is above the last",
            ),
            (
                "      - cidr: 10.0.0.0/8\n        protocol: icmp\n",
                "names tcp or udp",
            ),
            (
                "      - cidr: 10.0.0.0/8\n        fromSource:\n          - path: /usr/bin/curl\n",
                "fromSource cannot be enforced",
            ),
        ] {
            let found = with(rule);
            assert!(
                found
                    .iter()
                    .any(|f| f.contains(expected) && f.contains(": error: ")),
                "{rule}: {found:?}"
            );
            // Located at the rule, not at the top of the file.
            assert!(
                found.iter().all(|f| !f.starts_with("p.yaml:1:")),
                "{rule}: {found:?}"
            );
        }
    }

    #[test]
    fn a_well_formed_policy_has_no_findings() {
        let (policies, diagnostics) = check_text(Path::new("p.yaml"), GOOD);
        assert_eq!(diagnostics, Vec::new());
        assert_eq!(policies.len(), 1);
        assert_eq!(policies[0].policy.metadata.name, "block-pkg-managers");
    }

    #[test]
    fn selector_operators_are_checked() {
        let with = |expression: &str| {
            check(&GOOD.replace(
                "    matchLabels:\n      component: singleuser-server\n",
                &format!("    matchExpressions:\n      - key: team\n{expression}"),
            ))
        };
        assert_eq!(
            with("        operator: In\n        values: [a]\n"),
            Vec::<String>::new(),
            "control"
        );
        let lower_case = with("        operator: in\n        values: [a]\n");
        assert_eq!(lower_case.len(), 1, "{lower_case:?}");
        assert!(
            lower_case[0].contains("operator \"in\": expected In, NotIn, Exists or DoesNotExist"),
            "{lower_case:?}"
        );
        let no_values = with("        operator: NotIn\n");
        assert!(
            no_values[0].contains("operator NotIn needs values"),
            "{no_values:?}"
        );
        let values = with("        operator: Exists\n        values: [a]\n");
        assert!(
            values[0].contains("operator Exists takes no values"),
            "{values:?}"
        );
    }

    #[test]
    fn execname_must_be_a_file_name_and_says_what_it_covers() {
        let with = |execname: &str| {
            check(&GOOD.replace(
                "      - path: /usr/bin/apt\n",
                &format!("      - execname: {execname}\n"),
            ))
        };
        let escaping = with("../../bin/sh");
        assert_eq!(escaping.len(), 1, "{escaping:?}");
        assert!(
            escaping[0].contains(": error: execname \"../../bin/sh\": a file name"),
            "{escaping:?}"
        );
        let plain = with("curl");
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(
            plain[0].contains(": warning: execname \"curl\" is enforced as /usr/bin/curl only"),
            "{plain:?}"
        );
    }

    #[test]
    fn several_documents_are_checked_with_their_own_lines() {
        let text = format!("{GOOD}---\n{}", GOOD.replace("/etc/shadow", "etc/shadow"));
        let found = check(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        let good_lines = GOOD.lines().count();
        let line_of_error = good_lines
            + 1
            + GOOD
                .lines()
                .position(|l| l.contains("/etc/shadow"))
                .unwrap()
            + 1;
        assert!(
            found[0].starts_with(&format!("p.yaml:{line_of_error}:")),
            "{found:?}"
        );
        assert!(found[0].contains("must be absolute"));
    }

    #[test]
    fn from_source_written_as_a_mapping_gets_a_useful_message() {
        let text = GOOD.replace(
            "      - path: /etc/shadow\n",
            "      - path: /etc/shadow\n        fromSource:\n          path: /usr/bin/cat\n",
        );
        let found = check(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(": error: spec.file.matchPaths[0].fromSource: invalid type: map, expected a sequence"), "{found:?}");
        assert!(found[0].contains("fromSource is a list"), "{found:?}");
        let line = text
            .lines()
            .position(|l| l.contains("path: /usr/bin/cat"))
            .unwrap()
            + 1;
        assert!(
            found[0].starts_with(&format!("p.yaml:{line}:"))
                || found[0].starts_with(&format!("p.yaml:{}:", line - 1)),
            "{found:?}"
        );
    }

    #[test]
    fn a_directory_as_from_source_path_is_rejected() {
        let text = GOOD.replace(
            "      - path: /etc/shadow\n",
            "      - path: /etc/shadow\n        fromSource:\n          - path: /usr/bin/\n",
        );
        let found = check(&text);
        assert!(
            found
                .iter()
                .any(|f| f.contains("fromSource path \"/usr/bin/\" is a directory")),
            "{found:?}"
        );
    }

    #[test]
    fn semantic_mistakes_are_errors_with_locations() {
        for (from, to, expected) in [
            (
                "dir: /usr/sbin/",
                "dir: /usr/sbin",
                "a directory ends with '/'",
            ),
            (
                "path: /usr/bin/apt",
                "path: /usr/bin/",
                "use matchDirectories",
            ),
            (
                "protocol: raw",
                "protocol: carrier-pigeon",
                "protocol \"carrier-pigeon\"",
            ),
            (
                "capability: net_raw",
                "capability: CAP_NET_RAW",
                "write it net_raw",
            ),
            ("severity: 5", "severity: 11", "severity 11"),
            ("action: Block", "action: Deny", "action \"Deny\""),
            (
                "apiVersion: security.kubearmor.com/v1",
                "apiVersion: v1",
                "apiVersion \"v1\"",
            ),
        ] {
            let found = check(&GOOD.replace(from, to));
            assert!(
                found
                    .iter()
                    .any(|f| f.contains(expected) && f.contains(": error: ")),
                "{to}: {found:?}"
            );
            let line = GOOD
                .replace(from, to)
                .lines()
                .position(|l| l.contains(to))
                .unwrap()
                + 1;
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with(&format!("p.yaml:{line}:"))),
                "{to} at line {line}: {found:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        assert!(
            check(&GOOD.replace("recursive: true\n  file", "recursiv: true\n  file"))
                .iter()
                .any(|f| f.contains("unknown field `recursiv`"))
        );
        assert!(
            check(&GOOD.replace("kind: KubeArmorPolicy", "kind: NetworkPolicy"))
                .iter()
                .any(|f| f.contains("kind must be"))
        );
    }

    #[test]
    fn patterns_are_refused_for_block_and_reported_for_audit() {
        let with_pattern = GOOD.replace("    matchDirectories:\n      - dir: /usr/sbin/", "    matchPatterns:\n      - pattern: /tmp/*.sh\n    matchDirectories:\n      - dir: /usr/sbin/");
        assert!(check(&with_pattern)
            .iter()
            .any(|f| f.contains("error: matchPatterns cannot be enforced")));
        let audit = with_pattern.replace("action: Block", "action: Audit");
        let found = check(&audit);
        assert!(
            found.iter().any(|f| f.contains("warning: matchPatterns")),
            "{found:?}"
        );
        assert!(!found.iter().any(|f| f.contains(": error: ")), "{found:?}");
    }

    #[test]
    fn owner_only_is_refused_where_it_would_be_silently_ignored() {
        let text = GOOD.replace(
            "      - path: /etc/shadow\n",
            "      - path: /etc/shadow\n        ownerOnly: true\n",
        );
        assert!(
            check(&text)
                .iter()
                .any(|f| f.contains("error: ownerOnly cannot be enforced")),
            "{:?}",
            check(&text)
        );
    }

    #[test]
    fn no_rule_and_no_selector_are_errors() {
        let empty = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: x\nspec:\n  severity: 1\n";
        let found = check(empty);
        assert!(found.iter().any(|f| f.contains("no rule")), "{found:?}");
        assert!(
            found.iter().any(|f| f.contains("selects nothing")),
            "{found:?}"
        );
    }

    #[test]
    fn long_paths_and_many_rules_are_fine() {
        let long = format!("/data/{}/file", "d".repeat(400));
        let mut text = GOOD.replace("/etc/shadow", &long);
        let mut extra = String::new();
        for i in 0..10_000 {
            extra.push_str(&format!("      - path: /srv/data/file{i}\n"));
        }
        text = text.replace(
            "      - path: /usr/bin/apt\n",
            &format!("      - path: /usr/bin/apt\n{extra}"),
        );
        let (policies, diagnostics) = check_text(Path::new("p.yaml"), &text);
        assert_eq!(diagnostics, Vec::new());
        assert_eq!(
            policies[0]
                .policy
                .spec
                .process
                .as_ref()
                .unwrap()
                .match_paths
                .len(),
            10_001
        );
    }
}
