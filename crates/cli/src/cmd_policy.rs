//! `moat policy check`: validate KubeArmor-format policies, each finding as
//! `file:line:column: error|warning: message`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use moat_policy::enforce::{ListMode, NetworkRules};
use moat_policy::kubearmor::{check_text, Action, Diagnostic, Level};

use crate::exit::print_stdout;

/// `moat policy` verbs.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: every error and warning with its file, line and column.
    /// Exits 1 when any policy has an error (warnings alone do not fail).
    Check(CheckArgs),
    /// Show what policies enforce in a sandbox of a profile with given labels: the mode of
    /// each resource type, each rule's mechanism, and what is not enforced.
    Explain(ExplainArgs),
}

/// Options of `moat policy explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Profile name or file.
    #[arg(long, default_value = "untrusted", value_name = "NAME|FILE")]
    profile: String,
    /// Labels of the sandbox (repeatable); without any, every policy is explained as if it
    /// selected the sandbox.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Policy files, beside those the profile carries.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Options of `moat policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the findings as a JSON array.
    #[arg(long)]
    json: bool,
    /// Policy files (YAML, one or more documents each).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs a `moat policy` verb; returns the exit status.
pub fn run(command: PolicyCommand) -> i32 {
    match command {
        PolicyCommand::Check(args) => check(&args),
        PolicyCommand::Explain(args) => explain(&args),
    }
}

fn explain(args: &ExplainArgs) -> i32 {
    use moat_policy::enforce::{plan_policies, selects, PathRules};
    let (profile, source) = match moat_policy::Profile::load(&args.profile) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("moat: profile: {err}");
            return 125;
        }
    };
    let mut files = profile.policy_files(&source);
    files.extend(args.files.iter().cloned());
    let (loaded, findings) = match moat_policy::kubearmor::load_files(&files) {
        Ok(loaded) => loaded,
        Err((file, err)) => {
            eprintln!("moat: {}: cannot read: {err}", file.display());
            return 1;
        }
    };
    let mut labels: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for entry in &args.labels {
        match entry.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_string(), v.to_string());
            }
            _ => {
                eprintln!("moat: --label {entry:?}: expected KEY=VALUE");
                return 125;
            }
        }
    }
    let selected: Vec<_> = if args.labels.is_empty() {
        // Explain every policy as if it selected the sandbox.
        loaded
            .iter()
            .cloned()
            .map(|mut p| {
                p.policy.spec.selector = Some(Default::default());
                p
            })
            .collect()
    } else {
        loaded.clone()
    };
    let plan = match plan_policies(&selected, &findings, &labels) {
        Ok(mut plan) => {
            plan.network.posture = profile.policy.default_posture.network;
            plan
        }
        Err(err) => {
            print_stdout(&format!("moat: the policies cannot be applied: {err}"));
            return 1;
        }
    };
    let mut out = Vec::new();
    let postures = profile.policy.default_posture;
    let posture = |p: moat_policy::Posture| match p {
        moat_policy::Posture::Block => "block",
        moat_policy::Posture::Audit => "audit (let through, with an alert)",
    };
    out.push(format!(
        "profile {}: default posture (what an allow list does not name): file {}, process {}, network {}",
        profile.name,
        posture(postures.file),
        posture(postures.process),
        posture(postures.network)
    ));
    for policy in &loaded {
        let selector = policy.policy.spec.selector.clone().unwrap_or_default();
        let applies = args.labels.is_empty() || selects(&selector, &labels);
        out.push(format!(
            "policy {} ({}:{}): {}",
            policy.policy.metadata.name,
            policy.file.display(),
            policy.line,
            if applies {
                "applies"
            } else {
                "selects nothing here"
            }
        ));
    }
    let describe = |name: &str,
                    rules: &PathRules,
                    block: &str,
                    allow: &str,
                    out: &mut Vec<String>| {
        match rules.mode {
            ListMode::BlockList => out.push(format!("{name}: block-list mode: everything the profile allows, minus {} Block rule(s)", rules.block.len())),
            ListMode::AllowList => out.push(format!("{name}: ALLOW-LIST mode: only the {} allowed path(s); anything else is blocked (default posture)", rules.allow.len())),
        }
        for rule in &rules.block {
            out.push(format!(
                "  Block {}{} [{}]: {block}",
                rule.path,
                if rule.read_only { " (readOnly)" } else { "" },
                rule.policy
            ));
        }
        for rule in &rules.allow {
            out.push(format!(
                "  Allow {}{} [{}]: {allow}",
                rule.path,
                if rule.read_only { " (readOnly)" } else { "" },
                rule.policy
            ));
        }
    };
    describe("process", &plan.process, "Landlock removes execute and read (so the loader cannot run it either); writable places lose execute, so copies cannot run", "Landlock grants execute here only (plus the ELF interpreter)", &mut out);
    describe(
        "file",
        &plan.file,
        "Landlock removes access (readOnly in a writable place: a read-only bind mount)",
        "Landlock grants file access here only",
        &mut out,
    );
    describe_network(&plan.network, &mut out);
    out.push(format!(
        "capabilities: {} rule(s), satisfied: the {} profile holds no capability at all",
        plan.capability_rules, profile.name
    ));
    for (rules, what) in [
        (&plan.file_audit, "opens of it"),
        (&plan.process_audit, "executions of it"),
    ] {
        for rule in rules {
            out.push(format!(
                "  Audit {}{} [{}]: let through; fanotify reports {what} through the sandbox's mounts (--alerts)",
                rule.path,
                if rule.recursive { " (recursive)" } else { "" },
                rule.policy
            ));
        }
    }
    if plan.audit_rules > 0 {
        out.push(format!(
            "audit: {} matchPatterns Audit rule(s) accepted; no mechanism here can watch a pattern, so they produce no alert",
            plan.audit_rules
        ));
    }
    for finding in findings.iter().filter(|f| f.level == Level::Warning) {
        out.push(format!("not enforced: {finding}"));
    }
    for line in out {
        print_stdout(&line);
    }
    0
}

/// The network lines of `explain`: the mode of sockets and of connections, and each rule.
fn describe_network(rules: &NetworkRules, out: &mut Vec<String>) {
    const BPF: &str = "cgroup-BPF on the sandbox's cgroup";
    let other = match rules.posture {
        moat_policy::Posture::Block => {
            "any other is refused with an alert (default posture: block)"
        }
        moat_policy::Posture::Audit => {
            "any other is let through with an alert (default posture: audit)"
        }
    };
    match rules.protocol_mode() {
        ListMode::AllowList => out.push(format!(
            "network protocols: ALLOW-LIST mode: the allowed protocols' sockets (and unix sockets); {other}, by {BPF} (sock_create)"
        )),
        ListMode::BlockList if rules.protocols.is_empty() => out.push(
            "network protocols: block-list mode: the profile's protocols (tcp, udp, icmp; raw always closed by seccomp)".into(),
        ),
        ListMode::BlockList => out.push(format!(
            "network protocols: block-list mode: the profile's protocols minus the Block rules, by {BPF} (sock_create)"
        )),
    }
    for rule in &rules.protocols {
        out.push(format!(
            "  {:?} {} [{}]{}",
            rule.action,
            rule.protocol,
            rule.label.policy,
            match rule.protocol.as_str() {
                "raw" | "all" => " (raw sockets are refused earlier, by seccomp, without an alert)",
                "sctp" => " (sctp sockets are refused earlier, by seccomp, without an alert)",
                _ => "",
            }
        ));
    }
    match rules.address_mode() {
        ListMode::AllowList => out.push(format!(
            "network destinations: ALLOW-LIST mode: connections and datagrams to the allowed destinations; {other}, by {BPF} (connect4/6, sendmsg4/6)"
        )),
        ListMode::BlockList if rules.addresses.is_empty() => out.push(
            "network destinations: what the profile's network wall allows (see docs/network.md)".into(),
        ),
        ListMode::BlockList => out.push(format!(
            "network destinations: block-list mode: what the network wall allows minus the Block rules, by {BPF} (connect4/6, sendmsg4/6; IPv4-mapped IPv6 addresses meet the IPv4 rules)"
        )),
    }
    for rule in &rules.addresses {
        out.push(format!(
            "  {:?} {} [{}]",
            rule.action,
            moat_policy::sockrules::describe(rule),
            rule.label.policy
        ));
    }
    if rules.protocols.iter().any(|r| r.action == Action::Audit)
        || rules.addresses.iter().any(|r| r.action == Action::Audit)
    {
        out.push("  Audit rules let the operation through and write an alert (--alerts)".into());
    }
}

fn check(args: &CheckArgs) -> i32 {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut policies = 0usize;
    for file in &args.files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (loaded, found) = check_text(file, &text);
                policies += loaded.len();
                diagnostics.extend(found);
            }
            Err(err) => diagnostics.push(Diagnostic {
                file: file.clone(),
                line: 1,
                column: 1,
                level: Level::Error,
                message: format!("cannot read: {err}"),
            }),
        }
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if args.json {
        match serde_json::to_string_pretty(&diagnostics) {
            Ok(json) => print_stdout(&json),
            Err(err) => {
                eprintln!("moat: policy check: {err}");
                return 1;
            }
        }
    } else {
        for diagnostic in &diagnostics {
            print_stdout(&diagnostic.to_string());
        }
        print_stdout(&format!(
            "{policies} polic{} checked: {errors} error{}, {warnings} warning{}",
            if policies == 1 { "y" } else { "ies" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ));
    }
    i32::from(errors > 0)
}
