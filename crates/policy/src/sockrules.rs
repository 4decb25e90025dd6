//! Network rules compiled into the tables moat's cgroup-BPF socket programs read
//! (crates/bpf/src/bpf/socket.bpf.c).
//!
//! Destination rules become a longest-prefix-match trie per address family whose values
//! are runs of port segments. A run covers every rule whose network covers the trie key,
//! not only the key's own rules, so one lookup of the destination finds all the rules
//! that can apply to it: any rule network containing the address contains the longest
//! matching one, since prefixes of one address nest. The run cuts the port space 0-65535
//! into segments where the same rules apply (ports no rule covers are left out), each
//! with the merged verdict per protocol
//! (tcp, udp, other), so the program finds a destination's verdict by a binary search of
//! the run: a Block wins over an Allow of a narrower network, and the cost of a connect
//! does not grow with the number of rules.
//! Protocol rules become one verdict per protocol class.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use serde::Serialize;

use crate::enforce::{AddressRule, ListMode, NetworkRules, RuleLabel};
use crate::kubearmor::Action;

/// Entry and verdict bits, as the program reads them.
pub const ACTION_ALLOW: u8 = 1;
/// Allowed and reported.
pub const ACTION_AUDIT: u8 = 2;
/// Denied and reported.
pub const ACTION_BLOCK: u8 = 4;

/// The protocol classes, in the program's order.
pub const PROTOCOL_CLASSES: [&str; 5] = ["tcp", "udp", "icmp", "icmpv6", "raw"];

/// The protocol kinds a segment has a verdict for, in the program's order.
pub const SEGMENT_PROTOCOLS: [u8; 3] = [6, 17, 0];

/// A trie key and the run of segments it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix<const N: usize> {
    /// Network address bytes (network order).
    pub addr: [u8; N],
    /// Prefix length in bits.
    pub len: u8,
    /// Index of the run's first segment.
    pub first: u32,
    /// Segments in the run.
    pub count: u32,
}

/// One port range of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Entry {
    /// Lowest port.
    pub port_lo: u16,
    /// Highest port.
    pub port_hi: u16,
    /// IP protocol number, 0 for any.
    pub protocol: u8,
    /// ACTION_* bit.
    pub action: u8,
    /// Index into [`SocketTables::rules`].
    pub rule: u32,
}

/// What the rules covering a segment say for one protocol kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Verdict {
    /// ACTION_* bits of every rule that applies.
    pub action: u8,
    /// The Block rule an alert names (the first, by rule order).
    pub block_rule: u32,
    /// The Audit rule an alert names (the first, by rule order).
    pub audit_rule: u32,
}

/// Ports `port_lo..=port_hi` of a run, where the same rules apply throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Segment {
    /// Lowest port.
    pub port_lo: u16,
    /// Highest port.
    pub port_hi: u16,
    /// By [`SEGMENT_PROTOCOLS`].
    pub verdicts: [Verdict; 3],
}

/// Verdict of one protocol class: ACTION_* bits, and the rule an alert names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProtocolVerdict {
    /// ACTION_* bits of every rule naming the class.
    pub action: u8,
    /// The Block rule if any, else the Audit rule, else the Allow rule.
    pub rule: u32,
}

/// What alerts say about a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// Who wrote it.
    pub label: RuleLabel,
    /// Allow, Audit or Block.
    pub action: Action,
    /// The rule in `--egress` syntax, e.g. `169.254.0.0/16:80/tcp`, or the protocol.
    pub text: String,
}

/// Everything the socket programs are loaded with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketTables {
    /// IPv4 trie.
    pub v4: Vec<Prefix<4>>,
    /// IPv6 trie.
    pub v6: Vec<Prefix<16>>,
    /// Runs of segments, each in port order, disjoint.
    pub segments: Vec<Segment>,
    /// By [`PROTOCOL_CLASSES`].
    pub protocols: [ProtocolVerdict; 5],
    /// Connections only to allowed destinations.
    pub address_allow_list: bool,
    /// Sockets only of allowed protocols.
    pub protocol_allow_list: bool,
    /// What the allow lists do not name is let through with an alert, not denied.
    pub posture_audit: bool,
    /// Rules by index.
    pub rules: Vec<RuleInfo>,
}

fn action_bit(action: Action) -> u8 {
    match action {
        Action::Allow => ACTION_ALLOW,
        Action::Audit => ACTION_AUDIT,
        Action::Block => ACTION_BLOCK,
    }
}

fn protocol_number(protocol: Option<&str>) -> u8 {
    match protocol {
        Some("tcp") => 6,
        Some("udp") => 17,
        _ => 0,
    }
}

/// A destination rule in `--egress` syntax: `CIDR[:PORTS][/PROTOCOL]`.
pub fn describe(rule: &AddressRule) -> String {
    let mut text = rule.net.to_string();
    if !rule.ports.is_empty() {
        let ports: Vec<String> = rule
            .ports
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        text.push(':');
        text.push_str(&ports.join(","));
    }
    if let Some(protocol) = &rule.protocol {
        text.push('/');
        text.push_str(protocol);
    }
    text
}

/// Compiles `rules` for the programs.
pub fn compile(rules: &NetworkRules) -> SocketTables {
    let mut tables = SocketTables {
        address_allow_list: rules.address_mode() == ListMode::AllowList,
        protocol_allow_list: rules.protocol_mode() == ListMode::AllowList,
        posture_audit: rules.posture == crate::profile::Posture::Audit,
        ..SocketTables::default()
    };

    // Per class, the first rule of each action: an alert names the Block rule if any,
    // else the Audit rule.
    let mut first: [[Option<u32>; 3]; 5] = [[None; 3]; 5];
    for rule in &rules.protocols {
        let index = tables.rules.len() as u32;
        tables.rules.push(RuleInfo {
            label: rule.label.clone(),
            action: rule.action,
            text: rule.protocol.clone(),
        });
        for (class, name) in PROTOCOL_CLASSES.iter().enumerate() {
            // icmp names both ICMP versions, as ping does.
            let names = rule.protocol == *name
                || rule.protocol == "all"
                || (rule.protocol == "icmp" && *name == "icmpv6");
            if names {
                tables.protocols[class].action |= action_bit(rule.action);
                let slot = match rule.action {
                    Action::Block => 0,
                    Action::Audit => 1,
                    Action::Allow => 2,
                };
                first[class][slot].get_or_insert(index);
            }
        }
    }
    for (verdict, first) in tables.protocols.iter_mut().zip(first) {
        verdict.rule = first.into_iter().flatten().next().unwrap_or(0);
    }

    // Entries of every rule, grouped by network.
    let mut by_net: HashMap<IpNet, Vec<Entry>> = HashMap::new();
    let mut order: Vec<IpNet> = Vec::new();
    for rule in &rules.addresses {
        let index = tables.rules.len() as u32;
        tables.rules.push(RuleInfo {
            label: rule.label.clone(),
            action: rule.action,
            text: describe(rule),
        });
        let ranges = if rule.ports.is_empty() {
            vec![(0, u16::MAX)]
        } else {
            rule.ports.clone()
        };
        let entries = by_net.entry(rule.net).or_insert_with(|| {
            order.push(rule.net);
            Vec::new()
        });
        for (port_lo, port_hi) in ranges {
            entries.push(Entry {
                port_lo,
                port_hi,
                protocol: protocol_number(rule.protocol.as_deref()),
                action: action_bit(rule.action),
                rule: index,
            });
        }
    }

    // Each network's run: its own entries and those of every network covering it, cut
    // into segments.
    for net in &order {
        let mut run = Vec::new();
        for len in 0..=net.prefix_len() {
            let Ok(cover) = IpNet::new(net.addr(), len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(entries) = by_net.get(&cover) {
                run.extend_from_slice(entries);
            }
        }
        let first = tables.segments.len() as u32;
        tables.segments.extend(segments_of(&run));
        let count = tables.segments.len() as u32 - first;
        match net {
            IpNet::V4(v4) => tables.v4.push(Prefix {
                addr: v4.network().octets(),
                len: v4.prefix_len(),
                first,
                count,
            }),
            IpNet::V6(v6) => tables.v6.push(Prefix {
                addr: v6.network().octets(),
                len: v6.prefix_len(),
                first,
                count,
            }),
        }
    }
    tables
}

/// The port space cut where the entries start and end, with each piece's verdicts;
/// neighbours with the same verdicts are one segment, and pieces no rule covers are left
/// out. A sweep over the boundaries keeps
/// the entries that apply, so this is O(n log n) in the entries.
fn segments_of(run: &[Entry]) -> Vec<Segment> {
    use std::collections::BTreeSet;
    // Entries starting at a port, and entries whose last port is just before it.
    let mut starts: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut ends: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (index, entry) in run.iter().enumerate() {
        starts
            .entry(u32::from(entry.port_lo))
            .or_default()
            .push(index);
        ends.entry(u32::from(entry.port_hi) + 1)
            .or_default()
            .push(index);
    }
    let mut boundaries: BTreeSet<u32> = starts.keys().chain(ends.keys()).copied().collect();
    boundaries.insert(0);
    boundaries.retain(|&b| b <= u32::from(u16::MAX));
    // The applying entries per protocol kind and action bit, ordered by rule.
    let mut active: [[BTreeSet<(u32, usize)>; 3]; 3] = Default::default();
    let slot = |action: u8| match action {
        ACTION_ALLOW => 0,
        ACTION_AUDIT => 1,
        _ => 2,
    };
    let boundaries: Vec<u32> = boundaries.into_iter().collect();
    let mut segments: Vec<Segment> = Vec::new();
    for (i, &start) in boundaries.iter().enumerate() {
        for &index in ends.get(&start).into_iter().flatten() {
            let entry = &run[index];
            for (kind, protocol) in SEGMENT_PROTOCOLS.iter().enumerate() {
                if entry.protocol == 0 || entry.protocol == *protocol {
                    active[kind][slot(entry.action)].remove(&(entry.rule, index));
                }
            }
        }
        for &index in starts.get(&start).into_iter().flatten() {
            let entry = &run[index];
            for (kind, protocol) in SEGMENT_PROTOCOLS.iter().enumerate() {
                if entry.protocol == 0 || entry.protocol == *protocol {
                    active[kind][slot(entry.action)].insert((entry.rule, index));
                }
            }
        }
        let end = boundaries
            .get(i + 1)
            .map_or(u32::from(u16::MAX), |next| next - 1);
        let mut verdicts = [Verdict::default(); 3];
        for (kind, verdict) in verdicts.iter_mut().enumerate() {
            for (bit, set) in [ACTION_ALLOW, ACTION_AUDIT, ACTION_BLOCK]
                .into_iter()
                .zip(&active[kind])
            {
                if let Some(&(rule, _)) = set.first() {
                    verdict.action |= bit;
                    match bit {
                        ACTION_BLOCK => verdict.block_rule = rule,
                        ACTION_AUDIT => verdict.audit_rule = rule,
                        _ => {}
                    }
                }
            }
        }
        let (lo, hi) = (start as u16, end as u16);
        if verdicts.iter().all(|v| v.action == 0) {
            // No rule here: a port no segment holds has no rule, which keeps runs short.
            continue;
        }
        match segments.last_mut() {
            Some(last) if last.verdicts == verdicts && u32::from(last.port_hi) + 1 == start => {
                last.port_hi = hi;
            }
            _ => segments.push(Segment {
                port_lo: lo,
                port_hi: hi,
                verdicts,
            }),
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::ProtocolRule;

    fn address(
        net: &str,
        ports: &[(u16, u16)],
        protocol: Option<&str>,
        action: Action,
    ) -> AddressRule {
        AddressRule {
            net: net.parse().unwrap(),
            ports: ports.to_vec(),
            protocol: protocol.map(str::to_string),
            action,
            label: RuleLabel {
                policy: format!("p-{net}"),
                ..RuleLabel::default()
            },
        }
    }

    /// What the program decides for `addr`:`port` over `protocol`: the ACTION_* bits of
    /// the matching entries, found the way the program finds them.
    fn verdict(tables: &SocketTables, addr: &str, port: u16, protocol: u8) -> u8 {
        let addr: std::net::IpAddr = addr.parse().unwrap();
        let run = match addr {
            std::net::IpAddr::V4(a) => tables
                .v4
                .iter()
                .filter(|p| {
                    IpNet::new(std::net::Ipv4Addr::from(p.addr).into(), p.len)
                        .unwrap()
                        .contains(&std::net::IpAddr::V4(a))
                })
                .max_by_key(|p| p.len)
                .map(|p| (p.first, p.count)),
            std::net::IpAddr::V6(a) => tables
                .v6
                .iter()
                .filter(|p| {
                    IpNet::new(std::net::Ipv6Addr::from(p.addr).into(), p.len)
                        .unwrap()
                        .contains(&std::net::IpAddr::V6(a))
                })
                .max_by_key(|p| p.len)
                .map(|p| (p.first, p.count)),
        };
        let Some((first, count)) = run else { return 0 };
        let run = &tables.segments[first as usize..(first + count) as usize];
        let Some(segment) = run.iter().find(|s| (s.port_lo..=s.port_hi).contains(&port)) else {
            return 0;
        };
        let kind = SEGMENT_PROTOCOLS
            .iter()
            .position(|&p| p == protocol)
            .unwrap_or(2);
        segment.verdicts[kind].action
    }

    #[test]
    fn a_block_of_a_wide_network_wins_over_an_allow_inside_it() {
        let rules = NetworkRules {
            addresses: vec![
                address("10.0.0.0/8", &[], None, Action::Block),
                address("10.1.2.3/32", &[(443, 443)], Some("tcp"), Action::Allow),
            ],
            ..NetworkRules::default()
        };
        let tables = compile(&rules);
        assert!(tables.address_allow_list);
        assert_eq!(
            verdict(&tables, "10.1.2.3", 443, 6),
            ACTION_ALLOW | ACTION_BLOCK
        );
        assert_eq!(verdict(&tables, "10.9.9.9", 443, 6), ACTION_BLOCK);
        assert_eq!(
            verdict(&tables, "192.0.2.1", 443, 6),
            0,
            "no rule: the posture decides"
        );
    }

    #[test]
    fn ports_and_protocols_narrow_a_rule() {
        let rules = NetworkRules {
            addresses: vec![address(
                "192.0.2.0/24",
                &[(22, 22), (8000, 8100)],
                Some("tcp"),
                Action::Block,
            )],
            ..NetworkRules::default()
        };
        let tables = compile(&rules);
        assert!(!tables.address_allow_list);
        assert_eq!(verdict(&tables, "192.0.2.9", 22, 6), ACTION_BLOCK);
        assert_eq!(verdict(&tables, "192.0.2.9", 8050, 6), ACTION_BLOCK);
        assert_eq!(verdict(&tables, "192.0.2.9", 8101, 6), 0);
        assert_eq!(verdict(&tables, "192.0.2.9", 22, 17), 0, "udp is not named");
        assert_eq!(tables.rules[0].text, "192.0.2.0/24:22,8000-8100/tcp");
    }

    #[test]
    fn ipv6_rules_have_their_own_trie() {
        let rules = NetworkRules {
            addresses: vec![
                address("2001:db8::/32", &[], None, Action::Audit),
                address("2001:db8:1::/48", &[(80, 80)], None, Action::Block),
            ],
            ..NetworkRules::default()
        };
        let tables = compile(&rules);
        assert_eq!(tables.v6.len(), 2);
        assert!(tables.v4.is_empty());
        assert_eq!(
            verdict(&tables, "2001:db8:1::5", 80, 6),
            ACTION_AUDIT | ACTION_BLOCK
        );
        assert_eq!(verdict(&tables, "2001:db8:2::5", 80, 6), ACTION_AUDIT);
    }

    #[test]
    fn ten_thousand_rules_compile_to_one_run_each() {
        let rules = NetworkRules {
            addresses: (0..10_000u32)
                .map(|i| {
                    let [_, a, b, c] = i.to_be_bytes();
                    address(
                        &format!("10.{a}.{b}.{c}/32"),
                        &[(443, 443)],
                        None,
                        Action::Block,
                    )
                })
                .chain([address("10.0.0.0/8", &[], Some("udp"), Action::Audit)])
                .collect(),
            ..NetworkRules::default()
        };
        let tables = compile(&rules);
        assert_eq!(tables.v4.len(), 10_001);
        // Each /32's run: below 443, 443, above 443 (the /8's udp Audit around the /32's
        // Block); the /8's own run is one segment.
        assert_eq!(tables.segments.len(), 10_000 * 3 + 1);
        let lone = compile(&NetworkRules {
            addresses: vec![address("10.0.0.1/32", &[(443, 443)], None, Action::Block)],
            ..NetworkRules::default()
        });
        assert_eq!(
            lone.segments.len(),
            1,
            "ports no rule covers take no segment"
        );
        assert_eq!(verdict(&tables, "10.0.39.15", 443, 6), ACTION_BLOCK);
        assert_eq!(verdict(&tables, "10.0.39.15", 53, 17), ACTION_AUDIT);
    }

    #[test]
    fn protocol_rules_become_class_verdicts() {
        let rule = |protocol: &str, action| ProtocolRule {
            protocol: protocol.into(),
            action,
            label: RuleLabel::default(),
        };
        let rules = NetworkRules {
            protocols: vec![
                rule("tcp", Action::Allow),
                rule("icmp", Action::Audit),
                rule("udp", Action::Block),
            ],
            ..NetworkRules::default()
        };
        let tables = compile(&rules);
        assert!(tables.protocol_allow_list);
        assert!(!tables.address_allow_list);
        assert_eq!(
            tables.protocols[0],
            ProtocolVerdict {
                action: ACTION_ALLOW,
                rule: 0
            }
        );
        assert_eq!(
            tables.protocols[1],
            ProtocolVerdict {
                action: ACTION_BLOCK,
                rule: 2
            }
        );
        assert_eq!(tables.protocols[2].action, ACTION_AUDIT);
        assert_eq!(
            tables.protocols[3].action, ACTION_AUDIT,
            "icmp covers icmpv6"
        );
        assert_eq!(tables.protocols[4].action, 0);
    }

    /// Segments give what a scan of every rule would: random rule sets, every port of
    /// interest, three protocols.
    #[test]
    fn segments_agree_with_a_scan_of_the_rules() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for _ in 0..200 {
            let mut entries = Vec::new();
            for rule in 0..next(12) as u32 {
                let lo = (next(65) * 1000) as u16;
                let hi = lo.saturating_add(next(3000) as u16);
                entries.push(Entry {
                    port_lo: lo,
                    port_hi: hi,
                    protocol: [0, 6, 17][next(3) as usize],
                    action: [ACTION_ALLOW, ACTION_AUDIT, ACTION_BLOCK][next(3) as usize],
                    rule,
                });
            }
            let segments = segments_of(&entries);
            for pair in segments.windows(2) {
                assert!(pair[0].port_hi < pair[1].port_lo, "sorted and disjoint");
            }
            assert!(segments
                .iter()
                .all(|s| s.port_lo <= s.port_hi && s.verdicts.iter().any(|v| v.action != 0)));
            let mut ports: Vec<u16> = entries
                .iter()
                .flat_map(|e| {
                    [
                        e.port_lo,
                        e.port_hi,
                        e.port_lo.saturating_sub(1),
                        e.port_hi.saturating_add(1),
                    ]
                })
                .collect();
            ports.extend([0, 1, u16::MAX]);
            for port in ports {
                for (kind, protocol) in SEGMENT_PROTOCOLS.iter().enumerate() {
                    let applying: Vec<&Entry> = entries
                        .iter()
                        .filter(|e| {
                            (e.protocol == 0 || e.protocol == *protocol)
                                && (e.port_lo..=e.port_hi).contains(&port)
                        })
                        .collect();
                    let expected = applying.iter().fold(0, |bits, e| bits | e.action);
                    let first = |bit| {
                        applying
                            .iter()
                            .filter(|e| e.action == bit)
                            .map(|e| e.rule)
                            .min()
                    };
                    let verdict = segments
                        .iter()
                        .find(|s| (s.port_lo..=s.port_hi).contains(&port))
                        .map_or(Verdict::default(), |s| s.verdicts[kind]);
                    assert_eq!(verdict.action, expected, "port {port} protocol {protocol}");
                    if let Some(rule) = first(ACTION_BLOCK) {
                        assert_eq!(verdict.block_rule, rule);
                    }
                    if let Some(rule) = first(ACTION_AUDIT) {
                        assert_eq!(verdict.audit_rule, rule);
                    }
                }
            }
        }
    }
}
