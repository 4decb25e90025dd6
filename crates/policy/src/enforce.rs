//! From checked KubeArmor policies to what the sandbox enforces: which policies select
//! this sandbox, and per resource type whether it is in block-list or allow-list mode and
//! which rules apply.
//!
//! Semantics (docs/policy.md): Block denies what it names. Any Allow rule switches its
//! resource type (file, process, network) to allow-list mode, and what is not allowed
//! falls to the default posture, which is **block** in moat (upstream's default, audit,
//! surprises users). Network Audit rules produce alerts (cgroup-BPF); file and process
//! Audit rules are accepted, their alerts are not produced yet, and moat says so.

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;

use crate::kubearmor::{
    parse_cidr, Action, Diagnostic, Labels, Level, LoadedPolicy, PolicyKind, Selector,
};

/// Whether a resource type is governed by block rules or by an allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListMode {
    /// Everything the profile allows, minus the Block rules.
    #[default]
    BlockList,
    /// Only what Allow rules name; the rest falls to the default posture (block).
    AllowList,
}

/// A path a rule names, as written (symlinks are resolved inside the sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathRule {
    /// The path (directories end in `/`).
    pub path: String,
    /// A directory rule.
    pub directory: bool,
    /// With subdirectories.
    pub recursive: bool,
    /// Reading stays allowed.
    pub read_only: bool,
    /// The policy that wrote it.
    pub policy: String,
    /// Severity for alerts (rule, else section, else spec).
    pub severity: Option<i64>,
    /// Tags for alerts.
    pub tags: Vec<String>,
    /// Message for alerts.
    pub message: Option<String>,
}

/// Rules of one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathRules {
    /// Block or allow list.
    pub mode: ListMode,
    /// Denied paths.
    pub block: Vec<PathRule>,
    /// Allowed paths (allow-list mode).
    pub allow: Vec<PathRule>,
}

/// What the sandbox enforces from its policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyPlan {
    /// Policies that select this sandbox.
    pub applied: Vec<String>,
    /// Policies that select nothing here, with why.
    pub unmatched: Vec<String>,
    /// File access.
    pub file: PathRules,
    /// Execution.
    pub process: PathRules,
    /// Socket rules: protocols and destinations (cgroup-BPF).
    pub network: NetworkRules,
    /// File Audit rules: opens are let through and reported (fanotify).
    pub file_audit: Vec<PathRule>,
    /// Process Audit rules: executions are let through and reported (fanotify).
    pub process_audit: Vec<PathRule>,
    /// Audit rules that produce no alert (matchPatterns: no mark can name a pattern).
    pub audit_rules: usize,
    /// Capability rules: satisfied by the profile (no capabilities at all).
    pub capability_rules: usize,
}

/// Who wrote a rule and what its alerts carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleLabel {
    /// The policy that wrote it.
    pub policy: String,
    /// Severity (rule, else section, else spec).
    pub severity: Option<i64>,
    /// Tags.
    pub tags: Vec<String>,
    /// Message.
    pub message: Option<String>,
}

/// A protocol rule: sockets of `protocol` (tcp, udp, icmp, icmpv6, raw or all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolRule {
    /// Lower case.
    pub protocol: String,
    /// Allow, Audit or Block.
    pub action: Action,
    /// For alerts.
    pub label: RuleLabel,
}

/// A destination rule: connections and datagrams to `net` on `ports` over `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressRule {
    /// The network.
    pub net: ipnet::IpNet,
    /// Inclusive port ranges; empty means every port.
    pub ports: Vec<(u16, u16)>,
    /// `tcp` or `udp`; `None` for both.
    pub protocol: Option<String>,
    /// Allow, Audit or Block.
    pub action: Action,
    /// For alerts.
    pub label: RuleLabel,
}

/// Network rules of the policies that select a sandbox. Protocols and destinations are
/// separate resource kinds: an Allow among the protocol rules puts sockets in allow-list
/// mode, an Allow among the destination rules puts connections in allow-list mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkRules {
    /// Protocol rules, in policy order.
    pub protocols: Vec<ProtocolRule>,
    /// Destination rules, in policy order.
    pub addresses: Vec<AddressRule>,
    /// What allow lists do not name meets (the profile's `policy.default_posture.network`).
    pub posture: crate::profile::Posture,
}

impl NetworkRules {
    /// No rule at all: nothing to attach.
    pub fn is_empty(&self) -> bool {
        self.protocols.is_empty() && self.addresses.is_empty()
    }

    /// Sockets: only allowed protocols may be created.
    pub fn protocol_mode(&self) -> ListMode {
        mode_of(self.protocols.iter().map(|r| r.action))
    }

    /// Connections: only allowed destinations may be reached.
    pub fn address_mode(&self) -> ListMode {
        mode_of(self.addresses.iter().map(|r| r.action))
    }
}

fn mode_of(mut actions: impl Iterator<Item = Action>) -> ListMode {
    if actions.any(|a| a == Action::Allow) {
        ListMode::AllowList
    } else {
        ListMode::BlockList
    }
}

/// Policies that cannot be applied.
#[derive(Debug, Error)]
pub enum EnforceError {
    /// A policy has errors.
    #[error("{} error(s) in the policies:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// Whether `selector` selects a sandbox with `labels`.
pub fn selects(selector: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().all(|e| {
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| e.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// Severity, tags and message of a rule: the innermost level that sets each wins.
fn alert_labels(levels: [&Labels; 3]) -> (Option<i64>, Vec<String>, Option<String>) {
    (
        levels.iter().find_map(|l| l.severity),
        levels
            .iter()
            .find(|l| !l.tags.is_empty())
            .map(|l| l.tags.clone())
            .unwrap_or_default(),
        levels.iter().find_map(|l| l.message.clone()),
    )
}

fn action_of(levels: [&Labels; 3]) -> Action {
    match levels
        .iter()
        .find_map(|l| l.action.as_deref())
        .unwrap_or("Block")
    {
        "Allow" | "allow" => Action::Allow,
        "Audit" | "audit" => Action::Audit,
        _ => Action::Block,
    }
}

/// Resolves the policies for a sandbox with `labels`. `diagnostics` are those of
/// [`crate::kubearmor::check_text`]: any error refuses the run.
pub fn plan_policies(
    policies: &[LoadedPolicy],
    diagnostics: &[Diagnostic],
    labels: &BTreeMap<String, String>,
) -> Result<PolicyPlan, EnforceError> {
    let errors: Vec<Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .cloned()
        .collect();
    if !errors.is_empty() {
        return Err(EnforceError::Invalid(errors));
    }
    let mut plan = PolicyPlan::default();
    for loaded in policies {
        let policy = &loaded.policy;
        let name = policy.metadata.name.clone();
        let where_ = format!("{}:{}", loaded.file.display(), loaded.line);
        if policy.kind == PolicyKind::KubeArmorHostPolicy {
            plan.unmatched.push(format!(
                "{name} ({where_}): a host policy applies to the host, not to sandboxes"
            ));
            continue;
        }
        let selector = policy.spec.selector.clone().unwrap_or_default();
        if !selects(&selector, labels) {
            plan.unmatched.push(format!(
                "{name} ({where_}): its selector matches no label of this sandbox ({})",
                if labels.is_empty() {
                    "the run has no --label".to_string()
                } else {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            continue;
        }
        plan.applied.push(name.clone());
        let spec = &policy.spec;
        for (section, rules, audit) in [
            (&spec.file, &mut plan.file, &mut plan.file_audit),
            (&spec.process, &mut plan.process, &mut plan.process_audit),
        ] {
            let Some(section) = section else { continue };
            let mut add = |action: Action, rule: PathRule| match action {
                Action::Block => rules.block.push(rule),
                Action::Allow => {
                    rules.mode = ListMode::AllowList;
                    rules.allow.push(rule);
                }
                Action::Audit => audit.push(rule),
            };
            for rule in &section.match_paths {
                let Some(path) = rule
                    .path
                    .clone()
                    .or_else(|| rule.execname.as_ref().map(|e| format!("/usr/bin/{e}")))
                else {
                    continue;
                };
                let levels = [&rule.labels, &section.labels, &spec.labels];
                let (severity, tags, message) = alert_labels(levels);
                add(
                    action_of(levels),
                    PathRule {
                        path,
                        directory: false,
                        recursive: false,
                        read_only: rule.read_only,
                        policy: name.clone(),
                        severity,
                        tags,
                        message,
                    },
                );
            }
            for rule in &section.match_directories {
                let levels = [&rule.labels, &section.labels, &spec.labels];
                let (severity, tags, message) = alert_labels(levels);
                add(
                    action_of(levels),
                    PathRule {
                        path: rule.dir.clone(),
                        directory: true,
                        recursive: rule.recursive,
                        read_only: rule.read_only,
                        policy: name.clone(),
                        severity,
                        tags,
                        message,
                    },
                );
            }
            plan.audit_rules += section.match_patterns.len();
        }
        if let Some(section) = &spec.network {
            let label = |levels: [&Labels; 3]| {
                let (severity, tags, message) = alert_labels(levels);
                RuleLabel {
                    policy: name.clone(),
                    severity,
                    tags,
                    message,
                }
            };
            for rule in &section.match_protocols {
                let levels = [&rule.labels, &section.labels, &spec.labels];
                plan.network.protocols.push(ProtocolRule {
                    protocol: rule.protocol.to_ascii_lowercase(),
                    action: action_of(levels),
                    label: label(levels),
                });
            }
            for rule in &section.match_addresses {
                let levels = [&rule.labels, &section.labels, &spec.labels];
                // Checked already: a policy with a bad cidr or port never gets here.
                let Ok(net) = parse_cidr(&rule.cidr) else {
                    continue;
                };
                plan.network.addresses.push(AddressRule {
                    net,
                    ports: rule.ports.iter().filter_map(|p| p.range().ok()).collect(),
                    protocol: rule.protocol.as_ref().map(|p| p.to_ascii_lowercase()),
                    action: action_of(levels),
                    label: label(levels),
                });
            }
        }
        if let Some(section) = &spec.capabilities {
            plan.capability_rules += section.match_capabilities.len();
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::kubearmor::check_text;

    const POLICY: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: no-apt
spec:
  selector:
    matchLabels:
      hub.jupyter.org/username: alice
  action: Block
  process:
    matchPaths:
      - path: /usr/bin/apt
  file:
    matchDirectories:
      - dir: /etc/ssl/
        recursive: true
        readOnly: true
        action: Allow
  network:
    matchProtocols:
      - protocol: udp
  capabilities:
    matchCapabilities:
      - capability: net_raw
";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_matching_policy_becomes_rules_and_switches_allow_list_mode() {
        let (policies, diagnostics) = check_text(Path::new("p.yaml"), POLICY);
        let plan = plan_policies(
            &policies,
            &diagnostics,
            &labels(&[("hub.jupyter.org/username", "alice")]),
        )
        .unwrap();
        assert_eq!(plan.applied, ["no-apt"]);
        assert_eq!(plan.process.mode, ListMode::BlockList);
        assert_eq!(plan.process.block[0].path, "/usr/bin/apt");
        assert_eq!(
            plan.file.mode,
            ListMode::AllowList,
            "an Allow rule switches the type to allow-list mode"
        );
        assert!(plan.file.allow[0].read_only);
        assert_eq!(plan.network.protocols[0].protocol, "udp");
        assert_eq!(plan.network.protocols[0].action, Action::Block);
        assert_eq!(plan.network.protocol_mode(), ListMode::BlockList);
        assert_eq!(plan.capability_rules, 1);
    }

    #[test]
    fn a_policy_that_selects_nothing_is_reported() {
        let (policies, diagnostics) = check_text(Path::new("p.yaml"), POLICY);
        let plan = plan_policies(
            &policies,
            &diagnostics,
            &labels(&[("hub.jupyter.org/username", "bob")]),
        )
        .unwrap();
        assert!(plan.applied.is_empty());
        assert!(
            plan.unmatched[0].contains("no-apt (p.yaml:1)"),
            "{:?}",
            plan.unmatched
        );
    }

    #[test]
    fn policies_with_errors_refuse_the_run() {
        let (policies, diagnostics) = check_text(
            Path::new("p.yaml"),
            &POLICY.replace("/usr/bin/apt", "usr/bin/apt"),
        );
        assert!(matches!(
            plan_policies(&policies, &diagnostics, &BTreeMap::new()),
            Err(EnforceError::Invalid(_))
        ));
    }

    #[test]
    fn expressions_select() {
        let selector: Selector = serde_yaml_ng::from_str("matchExpressions:\n  - {key: team, operator: In, values: [a, b]}\n  - {key: banned, operator: DoesNotExist}\n").unwrap();
        assert!(selects(&selector, &labels(&[("team", "a")])));
        assert!(!selects(&selector, &labels(&[("team", "c")])));
        assert!(!selects(
            &selector,
            &labels(&[("team", "a"), ("banned", "1")])
        ));
    }
}
