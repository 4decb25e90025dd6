//! Bandwidth limits with tc: a token bucket on each end of the veth pair, the host end for
//! what flows into the sandbox, the sandbox's `eth0` for what flows out (shaping, not
//! policing, so TCP runs at the rate instead of collapsing on drops). The sandbox has no
//! capability to change either. moat runs `tc` (no well-kept Rust crate covers tbf) and
//! checks its result; the qdiscs disappear with the links.

use std::process::Command;

use crate::NetError;

fn tc(netns: Option<&str>, arguments: &[String]) -> Result<(), NetError> {
    let output = crate::netns::run_in(netns, || {
        Command::new("tc")
            .args(arguments)
            .output()
            .map_err(|source| NetError::Tool {
                tool: "tc",
                hint: "apt-get install iproute2",
                source,
            })
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

/// Limits what `interface` sends to `bits_per_second`; `netns` is the path of the network
/// namespace it lives in (`/proc/PID/ns/net`), or None for the current one.
pub fn limit(netns: Option<&str>, interface: &str, bits_per_second: u64) -> Result<(), NetError> {
    // A bucket of about 20 ms of traffic (at least a few full-size packets) keeps TCP
    // close to the rate without letting bursts exceed it by much.
    let burst = (bits_per_second / 8 / 50).max(16 * 1514).to_string();
    let rate = format!("{bits_per_second}bit");
    let arguments: Vec<String> = [
        "qdisc", "replace", "dev", interface, "root", "tbf", "rate", &rate, "burst", &burst,
        "latency", "50ms",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    tc(netns, &arguments)
}
