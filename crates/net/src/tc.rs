//! Bandwidth limits with tc on the host end of the veth pair: a token bucket on what the
//! host sends into the sandbox, a policer on what the sandbox sends out. The sandbox has
//! no capability to change either. moat runs `tc` (no well-kept Rust crate covers tbf and
//! policers) and checks its result; the qdiscs disappear with the link.

use std::process::Command;

use crate::NetError;

fn tc(arguments: &[String]) -> Result<(), NetError> {
    let output = Command::new("tc")
        .args(arguments)
        .output()
        .map_err(|source| NetError::Tool {
            tool: "tc",
            hint: "apt-get install iproute2",
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetError::Tc(format!(
            "tc {}: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Limits traffic through `interface` to `bits_per_second` in each direction.
pub fn limit(interface: &str, bits_per_second: u64) -> Result<(), NetError> {
    // A bucket of about 20 ms of traffic (at least a few full-size packets) keeps TCP
    // close to the rate without letting bursts exceed it by much.
    let burst_bytes = (bits_per_second / 8 / 50).max(16 * 1514);
    let rate = format!("{bits_per_second}bit");
    let burst = burst_bytes.to_string();
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    tc(&args(&[
        "qdisc", "replace", "dev", interface, "root", "tbf", "rate", &rate, "burst", &burst,
        "latency", "50ms",
    ]))?;
    tc(&args(&[
        "qdisc", "replace", "dev", interface, "handle", "ffff:", "ingress",
    ]))?;
    tc(&args(&[
        "filter",
        "replace",
        "dev",
        interface,
        "parent",
        "ffff:",
        "protocol",
        "all",
        "prio",
        "1",
        "matchall",
        "action",
        "police",
        "rate",
        &rate,
        "burst",
        &burst,
        "conform-exceed",
        "drop",
    ]))
}
