//! The network wall: modes, allowlists and limits, parsed and checked.
//!
//! `none` gives the sandbox loopback only. `isolated` adds a veth pair to the host with
//! an address from a pool; the sandbox may reach only the host endpoints a run names
//! (`--allow-host`, e.g. the JupyterHub API) and is reachable from the host only on the
//! ports it publishes. `egress` adds outbound traffic matching an allowlist. In every
//! mode some ranges stay closed whatever the allowlist says (cloud metadata, the rest of
//! link-local, loopback, RFC 1918, CGNAT, multicast); an admin profile may open some.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How much network a sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// Loopback only.
    None,
    /// A veth to the host; only named host endpoints are reachable.
    Isolated,
    /// `isolated` plus outbound traffic matching the allowlist.
    Egress,
}

impl FromStr for NetMode {
    type Err = NetworkError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(NetMode::None),
            "isolated" => Ok(NetMode::Isolated),
            "egress" => Ok(NetMode::Egress),
            _ => Err(NetworkError::Mode(text.to_string())),
        }
    }
}

/// The `[network]` section of a profile.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// The default mode (`--net` overrides it).
    pub mode: NetMode,
    /// Where sandbox addresses come from: carved into /30 subnets, the first reserved
    /// for the host (e.g. a JupyterHub API bound to its .1).
    pub pool: Ipv4Net,
    /// Egress allowlist of `egress` mode when the run gives none (`--egress` replaces it).
    #[serde(default)]
    pub egress: Vec<String>,
    /// DNS resolvers the sandbox may query in `egress` mode (`--dns` replaces them).
    #[serde(default)]
    pub resolvers: Vec<Ipv4Addr>,
    /// Always-closed ranges this profile opens. For admin profiles only.
    #[serde(default)]
    pub open: Vec<Ipv4Net>,
    /// Default bandwidth limit in each direction (`--bandwidth` overrides it).
    #[serde(default)]
    pub bandwidth: Option<String>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            mode: NetMode::None,
            pool: Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 16).unwrap_or_default(),
            egress: Vec::new(),
            resolvers: Vec::new(),
            open: Vec::new(),
            bandwidth: None,
        }
    }
}

/// Ranges closed in every mode: what a workload on a cloud or cluster node must never
/// reach (metadata credentials, the node's and cluster's private addresses).
pub const ALWAYS_CLOSED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    (
        "100.64.0.0/10",
        "carrier-grade NAT, including 100.100.100.200 metadata",
    ),
    ("127.0.0.0/8", "loopback"),
    (
        "169.254.0.0/16",
        "link-local, including 169.254.169.254 cloud metadata",
    ),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
];

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

/// One egress allowlist entry: destination, ports, protocol (None = both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    /// Destination range.
    pub net: Ipv4Net,
    /// Destination ports (None = all).
    pub ports: Option<PortRange>,
    /// Protocol (None = TCP and UDP).
    pub protocol: Option<Protocol>,
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        if let Some(ports) = self.ports {
            write!(f, ":{}", ports.first)?;
            if ports.last != ports.first {
                write!(f, "-{}", ports.last)?;
            }
        }
        match self.protocol {
            Some(Protocol::Tcp) => write!(f, "/tcp"),
            Some(Protocol::Udp) => write!(f, "/udp"),
            None => Ok(()),
        }
    }
}

/// The network part of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkPlan {
    /// The mode.
    pub mode: NetMode,
    /// Host endpoints (TCP) the sandbox may reach.
    pub allow_host: Vec<SocketAddrV4>,
    /// Outbound allowlist (egress mode), always-closed ranges excepted.
    pub egress: Vec<EgressRule>,
    /// TCP ports the host may reach in the sandbox.
    pub publish: Vec<u16>,
    /// Bandwidth limit in each direction, bits per second.
    pub bandwidth_bits_per_second: Option<u64>,
    /// The address pool.
    pub pool: Ipv4Net,
    /// Ranges closed whatever the allowlist says.
    pub always_closed: Vec<Ipv4Net>,
    /// DNS resolvers written to the sandbox's resolv.conf (and allowed in egress mode).
    pub resolvers: Vec<Ipv4Addr>,
}

/// What a run asks of the network (raw command-line text).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetworkRequest {
    /// `--net`.
    pub mode: Option<String>,
    /// `--allow-host`.
    pub allow_host: Vec<String>,
    /// `--egress`.
    pub egress: Vec<String>,
    /// `--publish`.
    pub publish: Vec<String>,
    /// `--bandwidth`.
    pub bandwidth: Option<String>,
    /// `--dns`.
    pub dns: Vec<String>,
}

/// A network request that cannot be planned.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetworkError {
    /// Unknown mode.
    #[error("--net {0:?}: expected none, isolated or egress")]
    Mode(String),
    /// An option that needs another mode.
    #[error("{flag} needs --net {needs} (this run is --net {mode})")]
    WrongMode {
        /// The option.
        flag: &'static str,
        /// The mode it needs.
        needs: &'static str,
        /// The mode in effect.
        mode: &'static str,
    },
    /// Unparsable egress entry.
    #[error("--egress {0:?}: expected CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 203.0.113.0/24:443/tcp")]
    Egress(String),
    /// Unparsable host endpoint.
    #[error("--allow-host {0:?}: expected IPV4:PORT, e.g. 10.77.0.1:8081")]
    HostEndpoint(String),
    /// Unparsable port.
    #[error("--publish {0:?}: expected a port from 1 to 65535")]
    Port(String),
    /// Unparsable resolver.
    #[error("--dns {0:?}: expected an IPv4 address")]
    Resolver(String),
    /// Unparsable rate.
    #[error("--bandwidth {0:?}: expected a rate from 8kbit to 100gbit, e.g. 10mbit (units: bit, kbit, mbit, gbit)")]
    Rate(String),
    /// An entry that lies inside a closed range.
    #[error("--egress {entry}: inside {range} ({why}), which stays closed; only an admin profile can open it (network.open)")]
    Closed {
        /// The entry.
        entry: String,
        /// The closed range.
        range: Ipv4Net,
        /// What the range is.
        why: &'static str,
    },
    /// A resolver the sandbox could never reach.
    #[error("--dns {resolver}: inside {range} ({why}), which stays closed; use a resolver on the public internet, or open the range in an admin profile")]
    ClosedResolver {
        /// The resolver.
        resolver: Ipv4Addr,
        /// The closed range.
        range: Ipv4Net,
        /// What the range is.
        why: &'static str,
    },
    /// A bad pool.
    #[error("network.pool {0}: needs room for at least two /30 subnets (a /29 or larger)")]
    Pool(Ipv4Net),
    /// Profile names a range to open that is not closed.
    #[error("network.open {0}: not one of the always-closed ranges")]
    OpenUnknown(Ipv4Net),
}

fn mode_name(mode: NetMode) -> &'static str {
    match mode {
        NetMode::None => "none",
        NetMode::Isolated => "isolated",
        NetMode::Egress => "egress",
    }
}

/// Parses `CIDR[:PORT[-PORT]][/tcp|/udp]`.
pub fn parse_egress(text: &str) -> Result<EgressRule, NetworkError> {
    let bad = || NetworkError::Egress(text.to_string());
    let (rest, protocol) = if let Some(rest) = text.strip_suffix("/tcp") {
        (rest, Some(Protocol::Tcp))
    } else if let Some(rest) = text.strip_suffix("/udp") {
        (rest, Some(Protocol::Udp))
    } else {
        (text, None)
    };
    let (net_text, ports) = match rest.split_once(':') {
        Some((net, ports)) => (net, Some(ports)),
        None => (rest, None),
    };
    let net = if net_text.contains('/') {
        Ipv4Net::from_str(net_text).map_err(|_| bad())?
    } else {
        Ipv4Net::new(Ipv4Addr::from_str(net_text).map_err(|_| bad())?, 32).map_err(|_| bad())?
    };
    if net.network() != net.addr() {
        return Err(bad());
    }
    let ports = match ports {
        None => None,
        Some(ports) => {
            let (first, last) = ports.split_once('-').unwrap_or((ports, ports));
            let first: u16 = first.parse().map_err(|_| bad())?;
            let last: u16 = last.parse().map_err(|_| bad())?;
            if first == 0 || last < first {
                return Err(bad());
            }
            Some(PortRange { first, last })
        }
    };
    Ok(EgressRule {
        net,
        ports,
        protocol,
    })
}

/// Parses a rate such as `10mbit` into bits per second.
pub fn parse_rate(text: &str) -> Result<u64, NetworkError> {
    let bad = || NetworkError::Rate(text.to_string());
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = lower.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit {
        "bit" => 1,
        "kbit" => 1_000,
        "mbit" => 1_000_000,
        "gbit" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let bits = number.checked_mul(multiplier).ok_or_else(bad)?;
    if !(8_000..=100_000_000_000).contains(&bits) {
        return Err(bad());
    }
    Ok(bits)
}

/// Resolves profile settings and the run's request into the network plan.
pub fn plan_network(
    settings: &NetworkSettings,
    request: &NetworkRequest,
) -> Result<NetworkPlan, NetworkError> {
    let mode = match &request.mode {
        Some(text) => text.parse()?,
        None => settings.mode,
    };
    let wrong = |flag, needs| NetworkError::WrongMode {
        flag,
        needs,
        mode: mode_name(mode),
    };
    if mode == NetMode::None {
        if !request.allow_host.is_empty() {
            return Err(wrong("--allow-host", "isolated or egress"));
        }
        if !request.publish.is_empty() {
            return Err(wrong("--publish", "isolated or egress"));
        }
        if request.bandwidth.is_some() {
            return Err(wrong("--bandwidth", "isolated or egress"));
        }
    }
    if mode != NetMode::Egress && !request.egress.is_empty() {
        return Err(wrong("--egress", "egress"));
    }
    if settings.pool.prefix_len() > 29 {
        return Err(NetworkError::Pool(settings.pool));
    }

    let closed_table: Vec<(Ipv4Net, &'static str)> = ALWAYS_CLOSED
        .iter()
        .filter_map(|(net, why)| Ipv4Net::from_str(net).ok().map(|n| (n, *why)))
        .collect();
    for opened in &settings.open {
        if !closed_table.iter().any(|(net, _)| net == opened) {
            return Err(NetworkError::OpenUnknown(*opened));
        }
    }
    let closed: Vec<(Ipv4Net, &'static str)> = closed_table
        .into_iter()
        .filter(|(net, _)| !settings.open.contains(net))
        .collect();

    let allow_host = request
        .allow_host
        .iter()
        .map(|text| {
            let endpoint = SocketAddrV4::from_str(text)
                .map_err(|_| NetworkError::HostEndpoint(text.clone()))?;
            if endpoint.port() == 0 {
                return Err(NetworkError::HostEndpoint(text.clone()));
            }
            Ok(endpoint)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut publish = request
        .publish
        .iter()
        .map(|text| match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(NetworkError::Port(text.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    publish.sort_unstable();
    publish.dedup();
    let resolvers = if request.dns.is_empty() {
        settings.resolvers.clone()
    } else {
        request
            .dns
            .iter()
            .map(|text| Ipv4Addr::from_str(text).map_err(|_| NetworkError::Resolver(text.clone())))
            .collect::<Result<Vec<_>, _>>()?
    };
    let bandwidth_bits_per_second = match request.bandwidth.as_ref().or(settings.bandwidth.as_ref())
    {
        Some(text) if mode != NetMode::None => Some(parse_rate(text)?),
        _ => None,
    };

    let mut egress = Vec::new();
    if mode == NetMode::Egress {
        let texts = if request.egress.is_empty() {
            &settings.egress
        } else {
            &request.egress
        };
        for text in texts {
            let rule = parse_egress(text)?;
            if let Some((range, why)) = closed.iter().find(|(net, _)| net.contains(&rule.net)) {
                return Err(NetworkError::Closed {
                    entry: text.clone(),
                    range: *range,
                    why,
                });
            }
            egress.push(rule);
        }
        for resolver in &resolvers {
            if let Some((range, why)) = closed.iter().find(|(net, _)| net.contains(resolver)) {
                return Err(NetworkError::ClosedResolver {
                    resolver: *resolver,
                    range: *range,
                    why,
                });
            }
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                egress.push(EgressRule {
                    net: Ipv4Net::new(*resolver, 32)
                        .map_err(|_| NetworkError::Resolver(resolver.to_string()))?,
                    ports: Some(PortRange {
                        first: 53,
                        last: 53,
                    }),
                    protocol: Some(protocol),
                });
            }
        }
    }
    Ok(NetworkPlan {
        mode,
        allow_host,
        egress,
        publish,
        bandwidth_bits_per_second,
        pool: settings.pool,
        always_closed: closed.into_iter().map(|(net, _)| net).collect(),
        resolvers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: &str) -> NetworkRequest {
        NetworkRequest {
            mode: Some(mode.into()),
            ..NetworkRequest::default()
        }
    }

    #[test]
    fn egress_entries_parse() {
        let rule = parse_egress("203.0.113.0/24:443/tcp").unwrap();
        assert_eq!(rule.to_string(), "203.0.113.0/24:443/tcp");
        assert_eq!(
            parse_egress("198.51.100.7").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            parse_egress("0.0.0.0/0:8000-8100/udp").unwrap().ports,
            Some(PortRange {
                first: 8000,
                last: 8100
            })
        );
        for bad in [
            "",
            "300.0.0.0/8",
            "10.0.0.1/8",
            "1.2.3.4:0",
            "1.2.3.4:9-2",
            "1.2.3.4:x",
            "1.2.3.4/tcp/udp",
            "::1",
            "1.2.3.4/33",
        ] {
            assert!(parse_egress(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_parse_in_bits() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        for bad in ["10", "10mb", "fast", "1bit", "1000gbit", "-1mbit"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn closed_ranges_cannot_be_allowed_without_the_admin_override() {
        let settings = NetworkSettings::default();
        for entry in [
            "169.254.169.254/32:80/tcp",
            "10.1.2.3",
            "192.168.0.0/24",
            "100.100.100.200",
            "127.0.0.1:22/tcp",
        ] {
            let mut r = request("egress");
            r.egress = vec![entry.into()];
            assert!(
                matches!(
                    plan_network(&settings, &r),
                    Err(NetworkError::Closed { .. })
                ),
                "{entry}"
            );
        }
        // A broad rule is fine: the closed ranges are carved out of it.
        let mut r = request("egress");
        r.egress = vec!["0.0.0.0/0:443/tcp".into()];
        let plan = plan_network(&settings, &r).unwrap();
        assert!(plan
            .always_closed
            .contains(&"169.254.0.0/16".parse().unwrap()));
        // An admin profile may open a private range.
        let admin = NetworkSettings {
            open: vec!["10.0.0.0/8".parse().unwrap()],
            ..NetworkSettings::default()
        };
        let mut r = request("egress");
        r.egress = vec!["10.1.2.3:5432/tcp".into()];
        let plan = plan_network(&admin, &r).unwrap();
        assert!(!plan.always_closed.contains(&"10.0.0.0/8".parse().unwrap()));
        assert!(matches!(
            plan_network(
                &NetworkSettings {
                    open: vec!["8.8.8.0/24".parse().unwrap()],
                    ..NetworkSettings::default()
                },
                &request("none")
            ),
            Err(NetworkError::OpenUnknown(_))
        ));
    }

    #[test]
    fn options_need_their_mode() {
        let settings = NetworkSettings::default();
        let mut r = request("none");
        r.publish = vec!["8888".into()];
        assert!(matches!(
            plan_network(&settings, &r),
            Err(NetworkError::WrongMode { .. })
        ));
        let mut r = request("isolated");
        r.egress = vec!["0.0.0.0/0:443/tcp".into()];
        assert!(matches!(
            plan_network(&settings, &r),
            Err(NetworkError::WrongMode { .. })
        ));
        assert!(matches!(
            plan_network(&settings, &request("open")),
            Err(NetworkError::Mode(_))
        ));
    }

    #[test]
    fn isolated_mode_collects_endpoints_ports_and_rate() {
        let mut r = request("isolated");
        r.allow_host = vec!["10.77.0.1:8081".into()];
        r.publish = vec!["8888".into(), "8888".into(), "22".into()];
        r.bandwidth = Some("20mbit".into());
        let plan = plan_network(&NetworkSettings::default(), &r).unwrap();
        assert_eq!(plan.allow_host, vec!["10.77.0.1:8081".parse().unwrap()]);
        assert_eq!(plan.publish, vec![22, 8888]);
        assert_eq!(plan.bandwidth_bits_per_second, Some(20_000_000));
        assert!(plan.egress.is_empty());
        for bad in ["10.77.0.1", "10.77.0.1:0", "host:80"] {
            let mut r = request("isolated");
            r.allow_host = vec![bad.into()];
            assert!(
                plan_network(&NetworkSettings::default(), &r).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolvers_in_closed_ranges_are_refused() {
        let mut r = request("egress");
        r.dns = vec!["10.0.0.2".into()];
        assert!(matches!(
            plan_network(&NetworkSettings::default(), &r),
            Err(NetworkError::ClosedResolver { .. })
        ));
    }

    #[test]
    fn egress_mode_adds_dns_to_the_resolvers() {
        let mut r = request("egress");
        r.egress = vec!["0.0.0.0/0:443/tcp".into()];
        r.dns = vec!["203.0.113.53".into()];
        let plan = plan_network(&NetworkSettings::default(), &r).unwrap();
        let rendered: Vec<String> = plan.egress.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "0.0.0.0/0:443/tcp",
                "203.0.113.53/32:53/udp",
                "203.0.113.53/32:53/tcp"
            ]
        );
    }
}
