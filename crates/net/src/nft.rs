//! nftables rules, in one table owned by moat (`inet moat`), applied atomically through
//! nft's JSON interface.
//!
//! Static base chains hook input (sandbox to host), forward (sandbox to elsewhere, and
//! replies back) and output (host to sandbox) and jump, through verdict maps keyed by the
//! sandbox's host-side interface, into chains of that sandbox alone. Adding or removing a
//! sandbox is one transaction: its chains and its map elements together, so concurrent
//! sandboxes never see or disturb each other's rules. Traffic on a `moat-*` interface no
//! map knows is dropped: a sandbox whose rules are gone has no network.

use std::io::Write;
use std::process::{Command, Stdio};

use moat_policy::{NetMode, NetworkPlan, Protocol};
use serde_json::{json, Value};

use crate::pool::AddressLease;
use crate::{Names, NetError};

const TABLE: &str = "moat";
const FAMILY: &str = "inet";
const SANDBOX_IFACES: &str = "moat-*";

fn add(object: &str, body: Value) -> Value {
    json!({"add": {object: body}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    add(
        "rule",
        json!({"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}),
    )
}

fn matches(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn field(protocol: &str, name: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": name}})
}

fn established() -> Value {
    matches(
        json!({"ct": {"key": "state"}}),
        "in",
        json!(["established", "related"]),
    )
}

fn prefix(net: &ipnet::Ipv4Net) -> Value {
    if net.prefix_len() == 32 {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

fn verdict(name: &str) -> Value {
    json!({ name: null })
}

/// The table, its sets and maps, and the base chains with their rules: created once, when
/// the table does not exist yet in this network namespace.
fn base() -> Vec<Value> {
    let table = json!({"family": FAMILY, "name": TABLE});
    let mut commands = vec![add("table", table)];
    for (map, _) in [("sandbox_in", ()), ("sandbox_fwd", ()), ("sandbox_out", ())] {
        commands.push(add(
            "map",
            json!({"family": FAMILY, "table": TABLE, "name": map, "type": "ifname", "map": "verdict"}),
        ));
    }
    commands.push(add(
        "set",
        json!({"family": FAMILY, "table": TABLE, "name": "egress_sources", "type": "ipv4_addr"}),
    ));
    // Priority -10: before the host's own filter chains, so a permissive host firewall
    // cannot open what moat closes (an accept here is not final; a drop is).
    for (chain, hook) in [
        ("input", "input"),
        ("forward", "forward"),
        ("output", "output"),
    ] {
        commands.push(add(
            "chain",
            json!({"family": FAMILY, "table": TABLE, "name": chain, "type": "filter", "hook": hook, "prio": -10, "policy": "accept"}),
        ));
    }
    commands.push(add(
        "chain",
        json!({"family": FAMILY, "table": TABLE, "name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}),
    ));
    let iif = || meta("iifname");
    let oif = || meta("oifname");
    commands.push(rule(
        "input",
        vec![json!({"vmap": {"key": iif(), "data": "@sandbox_in"}})],
    ));
    commands.push(rule(
        "input",
        vec![matches(iif(), "==", json!(SANDBOX_IFACES)), verdict("drop")],
    ));
    // Into a sandbox from elsewhere (another sandbox included): replies only. This comes
    // before the source sandbox's own chain, whose accept would otherwise end the hook.
    commands.push(rule(
        "forward",
        vec![
            matches(oif(), "==", json!(SANDBOX_IFACES)),
            established(),
            verdict("accept"),
        ],
    ));
    commands.push(rule(
        "forward",
        vec![matches(oif(), "==", json!(SANDBOX_IFACES)), verdict("drop")],
    ));
    commands.push(rule(
        "forward",
        vec![json!({"vmap": {"key": iif(), "data": "@sandbox_fwd"}})],
    ));
    commands.push(rule(
        "forward",
        vec![matches(iif(), "==", json!(SANDBOX_IFACES)), verdict("drop")],
    ));
    commands.push(rule(
        "output",
        vec![json!({"vmap": {"key": oif(), "data": "@sandbox_out"}})],
    ));
    commands.push(rule(
        "output",
        vec![matches(oif(), "==", json!(SANDBOX_IFACES)), verdict("drop")],
    ));
    commands.push(rule(
        "postrouting",
        vec![
            matches(field("ip", "saddr"), "==", json!("@egress_sources")),
            matches(oif(), "!=", json!(SANDBOX_IFACES)),
            json!({"masquerade": null}),
        ],
    ));
    commands
}

fn chain_names(names: &Names) -> [String; 3] {
    [
        format!("in-{}", names.key),
        format!("fwd-{}", names.key),
        format!("out-{}", names.key),
    ]
}

/// The transaction that adds one sandbox.
fn sandbox_commands(plan: &NetworkPlan, lease: &AddressLease, names: &Names) -> Vec<Value> {
    let [chain_in, chain_fwd, chain_out] = chain_names(names);
    let mut commands = Vec::new();
    for chain in [&chain_in, &chain_fwd, &chain_out] {
        commands.push(add(
            "chain",
            json!({"family": FAMILY, "table": TABLE, "name": chain}),
        ));
    }
    let sandbox_ip = json!(lease.sandbox.to_string());
    // Sandbox to host: only from its own address (no spoofing), replies, named endpoints.
    commands.push(rule(
        &chain_in,
        vec![
            matches(field("ip", "saddr"), "!=", sandbox_ip.clone()),
            verdict("drop"),
        ],
    ));
    commands.push(rule(&chain_in, vec![established(), verdict("accept")]));
    for endpoint in &plan.allow_host {
        commands.push(rule(
            &chain_in,
            vec![
                matches(field("ip", "daddr"), "==", json!(endpoint.ip().to_string())),
                matches(field("tcp", "dport"), "==", json!(endpoint.port())),
                verdict("accept"),
            ],
        ));
    }
    commands.push(rule(&chain_in, vec![verdict("drop")]));

    // Sandbox to elsewhere: closed ranges first, whatever the allowlist says.
    commands.push(rule(
        &chain_fwd,
        vec![
            matches(field("ip", "saddr"), "!=", sandbox_ip.clone()),
            verdict("drop"),
        ],
    ));
    commands.push(rule(&chain_fwd, vec![established(), verdict("accept")]));
    // The pool is never a destination, whatever an admin profile opens.
    commands.push(rule(
        &chain_fwd,
        vec![
            matches(field("ip", "daddr"), "==", prefix(&plan.pool)),
            verdict("drop"),
        ],
    ));
    if plan.mode == NetMode::Egress {
        let closed: Vec<Value> = plan.always_closed.iter().map(prefix).collect();
        if !closed.is_empty() {
            commands.push(rule(
                &chain_fwd,
                vec![
                    matches(field("ip", "daddr"), "==", json!({"set": closed})),
                    verdict("drop"),
                ],
            ));
        }
        for entry in &plan.egress {
            commands.extend(
                egress_accepts(entry)
                    .into_iter()
                    .map(|expr| rule(&chain_fwd, expr)),
            );
        }
    }
    commands.push(rule(&chain_fwd, vec![verdict("drop")]));

    // Host to sandbox: replies and published ports only.
    commands.push(rule(&chain_out, vec![established(), verdict("accept")]));
    if !plan.publish.is_empty() {
        let ports: Vec<Value> = plan.publish.iter().map(|p| json!(p)).collect();
        commands.push(rule(
            &chain_out,
            vec![
                matches(field("ip", "daddr"), "==", sandbox_ip.clone()),
                matches(field("tcp", "dport"), "==", json!({"set": ports})),
                verdict("accept"),
            ],
        ));
    }
    commands.push(rule(&chain_out, vec![verdict("drop")]));

    for (map, chain) in [
        ("sandbox_in", &chain_in),
        ("sandbox_fwd", &chain_fwd),
        ("sandbox_out", &chain_out),
    ] {
        commands.push(add(
            "element",
            json!({"family": FAMILY, "table": TABLE, "name": map, "elem": [[names.host, {"jump": {"target": chain}}]]}),
        ));
    }
    // Every networked sandbox is listed (an isolated one's forwarded traffic is dropped
    // before it could be masqueraded), so removal is one unconditional transaction.
    commands.push(add(
        "element",
        json!({"family": FAMILY, "table": TABLE, "name": "egress_sources", "elem": [lease.sandbox.to_string()]}),
    ));
    commands
}

/// The sandbox's own copy of its rules, in a table of its own network namespace, with
/// default-drop policies: a second wall that holds if the host's table is flushed (a
/// firewall reload) and that the sandbox, holding no CAP_NET_ADMIN, cannot change.
fn inside_commands(plan: &NetworkPlan) -> Vec<Value> {
    const INSIDE: &str = "moat_inside";
    let rule = |chain: &str, expr: Vec<Value>| {
        add(
            "rule",
            json!({"family": FAMILY, "table": INSIDE, "chain": chain, "expr": expr}),
        )
    };
    let mut commands = vec![add("table", json!({"family": FAMILY, "name": INSIDE}))];
    for (chain, hook) in [("output", "output"), ("input", "input")] {
        commands.push(add(
            "chain",
            json!({"family": FAMILY, "table": INSIDE, "name": chain, "type": "filter", "hook": hook, "prio": 0, "policy": "drop"}),
        ));
    }
    for chain in ["output", "input"] {
        let interface = if chain == "output" {
            "oifname"
        } else {
            "iifname"
        };
        commands.push(rule(
            chain,
            vec![
                matches(meta(interface), "==", json!("lo")),
                verdict("accept"),
            ],
        ));
        commands.push(rule(chain, vec![established(), verdict("accept")]));
    }
    for endpoint in &plan.allow_host {
        commands.push(rule(
            "output",
            vec![
                matches(field("ip", "daddr"), "==", json!(endpoint.ip().to_string())),
                matches(field("tcp", "dport"), "==", json!(endpoint.port())),
                verdict("accept"),
            ],
        ));
    }
    if plan.mode == NetMode::Egress {
        let closed: Vec<Value> = plan
            .always_closed
            .iter()
            .chain([&plan.pool])
            .map(prefix)
            .collect();
        commands.push(rule(
            "output",
            vec![
                matches(field("ip", "daddr"), "==", json!({"set": closed})),
                verdict("drop"),
            ],
        ));
        for entry in &plan.egress {
            commands.extend(
                egress_accepts(entry)
                    .into_iter()
                    .map(|expr| rule("output", expr)),
            );
        }
    }
    if !plan.publish.is_empty() {
        let ports: Vec<Value> = plan.publish.iter().map(|p| json!(p)).collect();
        commands.push(rule(
            "input",
            vec![
                matches(field("tcp", "dport"), "==", json!({"set": ports})),
                verdict("accept"),
            ],
        ));
    }
    commands
}

/// The accept rules of one egress entry (one per protocol).
fn egress_accepts(entry: &moat_policy::EgressRule) -> Vec<Vec<Value>> {
    let protocols: &[&str] = match entry.protocol {
        Some(Protocol::Tcp) => &["tcp"],
        Some(Protocol::Udp) => &["udp"],
        None => &["tcp", "udp"],
    };
    protocols
        .iter()
        .map(|protocol| {
            let mut expr = vec![matches(field("ip", "daddr"), "==", prefix(&entry.net))];
            match entry.ports {
                Some(ports) if ports.first == ports.last => {
                    expr.push(matches(field(protocol, "dport"), "==", json!(ports.first)))
                }
                Some(ports) => expr.push(matches(
                    field(protocol, "dport"),
                    "==",
                    json!({"range": [ports.first, ports.last]}),
                )),
                None => expr.push(matches(meta("l4proto"), "==", json!(protocol))),
            }
            expr.push(verdict("accept"));
            expr
        })
        .collect()
}

/// Installs the sandbox's own copy of its rules in its network namespace (`netns`:
/// `/proc/PID/ns/net` of its init), before the workload starts.
pub fn install_inside(plan: &NetworkPlan, netns: &str) -> Result<(), NetError> {
    nft_in(
        Some(netns),
        &["-j", "-f", "-"],
        Some(&json!({"nftables": inside_commands(plan)})),
    )
    .map(drop)
}

fn nft(arguments: &[&str], input: Option<&Value>) -> Result<String, NetError> {
    nft_in(None, arguments, input)
}

fn nft_in(
    netns: Option<&str>,
    arguments: &[&str],
    input: Option<&Value>,
) -> Result<String, NetError> {
    let tool_err = |source| NetError::Tool {
        tool: "nft",
        hint: "apt-get install nftables",
        source,
    };
    let output = crate::netns::run_in(netns, || {
        let mut command = Command::new("nft");
        command
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().map_err(tool_err)?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.to_string().as_bytes())
                .map_err(tool_err)?;
        }
        child.wait_with_output().map_err(tool_err)
    })?;
    if !output.status.success() {
        return Err(NetError::Nft(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn apply(commands: Vec<Value>) -> Result<(), NetError> {
    nft(&["-j", "-f", "-"], Some(&json!({"nftables": commands}))).map(drop)
}

fn table_exists() -> bool {
    nft(&["-j", "list", "table", FAMILY, TABLE], None).is_ok()
}

/// Installs the rules of one sandbox (and the table, the first time), atomically.
pub fn install(plan: &NetworkPlan, lease: &AddressLease, names: &Names) -> Result<(), NetError> {
    let sandbox = sandbox_commands(plan, lease, names);
    // The usual case, one nft run: the table exists. The base rules are not idempotent,
    // so they are created under a lock, and only when the table is missing.
    if apply(sandbox.clone()).is_ok() {
        return Ok(());
    }
    let _lock = base_lock()?;
    let mut commands = if table_exists() { Vec::new() } else { base() };
    commands.extend(sandbox);
    apply(commands)
}

/// Removes one sandbox's chains and set and map elements (nothing when they are gone).
pub fn remove(names: &Names) -> Result<(), NetError> {
    let chains = chain_names(names);
    let address = u32::from_str_radix(&names.key, 16)
        .map(std::net::Ipv4Addr::from)
        .map_err(|e| NetError::Nft(e.to_string()))?;
    let mut commands = Vec::new();
    for map in ["sandbox_in", "sandbox_fwd", "sandbox_out"] {
        commands.push(json!({"delete": {"element": {"family": FAMILY, "table": TABLE, "name": map, "elem": [names.host]}}}));
    }
    commands.push(json!({"delete": {"element": {"family": FAMILY, "table": TABLE, "name": "egress_sources", "elem": [address.to_string()]}}}));
    for chain in &chains {
        commands
            .push(json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}}));
        commands
            .push(json!({"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}}));
    }
    // The usual case, one nft run. If it fails, the rules may be gone already (a second
    // teardown, gc after a crash): that is only an error if a chain is still there.
    let Err(err) = apply(commands) else {
        return Ok(());
    };
    let listing = nft(&["-j", "list", "table", FAMILY, TABLE], None).unwrap_or_default();
    let present = chains.iter().any(|c| {
        listing.contains(&format!("\"name\": \"{c}\""))
            || listing.contains(&format!("\"name\":\"{c}\""))
    });
    if present {
        Err(err)
    } else {
        Ok(())
    }
}

/// Removes moat's table when no sandbox chain is left in it (`moat gc` on an idle host).
pub fn remove_table_if_unused() -> Result<(), NetError> {
    let _lock = base_lock()?;
    if !table_exists() {
        return Ok(());
    }
    let listing = nft(&["-j", "list", "table", FAMILY, TABLE], None)?;
    let in_use = ["\"name\": \"in-", "\"name\":\"in-"]
        .iter()
        .any(|marker| listing.contains(marker));
    if in_use {
        return Ok(());
    }
    apply(vec![
        json!({"delete": {"table": {"family": FAMILY, "name": TABLE}}}),
    ])
}

fn base_lock() -> Result<nix::fcntl::Flock<std::fs::File>, NetError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| NetError::Tool {
        tool: "nft",
        hint: "lock /run/moat/nft.lock",
        source,
    };
    std::fs::create_dir_all("/run/moat").map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open("/run/moat/nft.lock")
        .map_err(io)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io(errno.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_transaction_names_only_its_own_chains() {
        let request = moat_policy::NetworkRequest {
            mode: Some("egress".into()),
            allow_host: vec!["10.77.0.1:8081".into()],
            publish: vec!["8888".into()],
            ..Default::default()
        };
        let plan = moat_policy::NetworkSettings::default();
        let plan = moat_policy::plan_network(&plan, &request).unwrap();
        let lease = AddressLease {
            slot: 1,
            host: "10.77.0.5".parse().unwrap(),
            sandbox: "10.77.0.6".parse().unwrap(),
            prefix: 30,
        };
        let names = Names::for_address(lease.sandbox);
        let text = serde_json::to_string(&sandbox_commands(&plan, &lease, &names)).unwrap();
        assert!(text.contains("in-0a4d0006") && text.contains("moat-0a4d0006"));
        assert!(
            text.contains("169.254.0.0"),
            "closed ranges are in the forward chain"
        );
        assert!(
            !text.contains("\"table\":{"),
            "no table-level change in a sandbox transaction"
        );
    }
}
