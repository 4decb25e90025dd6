//! Network rules compiled into the tables moat's cgroup-BPF socket programs read
//! (crates/bpf/src/bpf/socket.bpf.c).
//!
//! Destination rules become, per address family, a sorted list of disjoint address
//! ranges, each with the run of port segments that applies there. A rule network is a
//! prefix, and prefixes nest or are disjoint, so the networks cut the address space into
//! ranges where one network is the narrowest that covers every address; the range takes
//! that network's run, which covers every rule whose network covers it, not only its own
//! rules (any rule network containing an address contains the narrowest one). The
//! program finds a destination's range by a binary search, and needs no
//! longest-prefix-match trie, whose inserts dominated the start-up of a sandbox with
//! thousands of networks. The run cuts the port space 0-65535 into segments where the
//! same rules apply (ports no rule covers are left out), each with the merged verdict per
//! protocol (tcp, udp, other), so the program finds a destination's verdict by a second
//! binary search: a Block wins over an Allow of a narrower network, and the cost of a
//! connect does not grow with the number of rules.
//! Protocol rules become one verdict per protocol class.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// Addresses `lo..=hi` (as numbers: an IPv4 address is its 32-bit value), where one run
/// of segments applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// First address.
    pub lo: u128,
    /// Last address.
    pub hi: u128,
    /// The run's segments.
    pub run: Run,
}

/// Where a run of segments is in [`SocketTables::segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Run {
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
    /// IPv4 destinations: sorted, disjoint.
    pub v4: Vec<AddressRange>,
    /// IPv6 destinations: sorted, disjoint.
    pub v6: Vec<AddressRange>,
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
    use std::fmt::Write;
    let mut text = rule.net.to_string();
    for (index, &(lo, hi)) in rule.ports.iter().enumerate() {
        text.push(if index == 0 { ':' } else { ',' });
        // Writing to a String cannot fail.
        let _ = if lo == hi {
            write!(text, "{lo}")
        } else {
            write!(text, "{lo}-{hi}")
        };
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
    let mut by_net: HashMap<IpNet, Vec<Entry>> = HashMap::with_capacity(rules.addresses.len());
    let mut order: Vec<IpNet> = Vec::with_capacity(rules.addresses.len());
    tables.rules.reserve(rules.addresses.len());
    // The prefix lengths rules use, per family: a network's covering networks can only
    // have these lengths.
    let mut lengths: [BTreeSet<u8>; 2] = Default::default();
    for rule in &rules.addresses {
        let index = tables.rules.len() as u32;
        tables.rules.push(RuleInfo {
            label: rule.label.clone(),
            action: rule.action,
            text: describe(rule),
        });
        let ranges: &[(u16, u16)] = if rule.ports.is_empty() {
            &[(0, u16::MAX)]
        } else {
            &rule.ports
        };
        let entries = by_net.entry(rule.net).or_insert_with(|| {
            order.push(rule.net);
            lengths[usize::from(rule.net.addr().is_ipv6())].insert(rule.net.prefix_len());
            Vec::new()
        });
        for &(port_lo, port_hi) in ranges {
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
    let mut networks: [Vec<Network>; 2] = Default::default();
    let mut run = Vec::new();
    for net in &order {
        run.clear();
        let family = usize::from(net.addr().is_ipv6());
        for &len in lengths[family].range(..=net.prefix_len()) {
            let Ok(cover) = IpNet::new(net.addr(), len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(entries) = by_net.get(&cover) {
                run.extend_from_slice(entries);
            }
        }
        let first = tables.segments.len() as u32;
        segments_into(&run, &mut tables.segments);
        let count = tables.segments.len() as u32 - first;
        let (lo, hi) = match net {
            IpNet::V4(v4) => (
                u128::from(u32::from(v4.network())),
                u128::from(u32::from(v4.broadcast())),
            ),
            IpNet::V6(v6) => (u128::from(v6.network()), u128::from(v6.broadcast())),
        };
        networks[family].push(Network {
            lo,
            hi,
            run: Run { first, count },
        });
    }
    let [v4, v6] = networks;
    tables.v4 = ranges_of(v4);
    tables.v6 = ranges_of(v6);
    tables
}

/// A rule network as an address range, with its run.
#[derive(Debug, Clone, Copy)]
struct Network {
    lo: u128,
    hi: u128,
    run: Run,
}

/// Cuts the address space into the ranges where one network of `networks` (distinct
/// prefixes, which nest or are disjoint) is the narrowest covering every address, each
/// with that network's run; addresses no network covers are left out. A sweep over the
/// networks in address order, wider first, keeps the networks that contain the cursor.
fn ranges_of(mut networks: Vec<Network>) -> Vec<AddressRange> {
    networks.sort_unstable_by(|a, b| a.lo.cmp(&b.lo).then(b.hi.cmp(&a.hi)));
    let mut ranges = Vec::with_capacity(networks.len());
    let mut emit = |lo: u128, hi: u128, run: Run| {
        if lo <= hi {
            ranges.push(AddressRange { lo, hi, run });
        }
    };
    // The first address not yet given a range (None: past the end of the space).
    let mut cursor: Option<u128> = Some(0);
    let mut open: Vec<Network> = Vec::new();
    for network in networks {
        while let Some(top) = open.last().copied().filter(|top| top.hi < network.lo) {
            if let Some(at) = cursor {
                emit(at, top.hi, top.run);
            }
            cursor = top.hi.checked_add(1);
            open.pop();
        }
        if let (Some(top), Some(at)) = (open.last(), cursor) {
            if network.lo > at {
                // `network` lies inside `top`: the part of `top` before it.
                emit(at, network.lo - 1, top.run);
            }
        }
        cursor = Some(network.lo);
        open.push(network);
    }
    while let Some(top) = open.pop() {
        if let Some(at) = cursor {
            emit(at, top.hi, top.run);
        }
        cursor = top.hi.checked_add(1);
    }
    ranges
}

/// [`segments_into`] a vector of their own.
#[cfg(test)]
fn segments_of(run: &[Entry]) -> Vec<Segment> {
    let mut segments = Vec::new();
    segments_into(run, &mut segments);
    segments
}

/// Appends to `segments` the port space cut where the entries of `run` start and end,
/// with each piece's verdicts; neighbours with the same verdicts are one segment, and
/// pieces no rule covers are left out. A sweep over the boundaries keeps the entries that
/// apply, so this is O(n log n) in the entries.
fn segments_into(run: &[Entry], segments: &mut Vec<Segment>) {
    if let [entry] = run {
        // The common case of a network with one rule and port range, without the sweep.
        let mut verdicts = [Verdict::default(); 3];
        for (kind, protocol) in SEGMENT_PROTOCOLS.iter().enumerate() {
            if entry.protocol == 0 || entry.protocol == *protocol {
                verdicts[kind] = verdict_of(entry.action, entry.rule);
            }
        }
        segments.push(Segment {
            port_lo: entry.port_lo,
            port_hi: entry.port_hi,
            verdicts,
        });
        return;
    }
    let start_of_run = segments.len();
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
        match segments[start_of_run..].last_mut() {
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
}

/// The verdict of one rule's action bit.
fn verdict_of(action: u8, rule: u32) -> Verdict {
    Verdict {
        action,
        block_rule: if action == ACTION_BLOCK { rule } else { 0 },
        audit_rule: if action == ACTION_AUDIT { rule } else { 0 },
    }
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

    /// The run of the range holding `addr`, found the way the program finds it.
    fn run_at(ranges: &[AddressRange], addr: u128) -> Option<Run> {
        let index = ranges.partition_point(|r| r.lo <= addr).checked_sub(1)?;
        (addr <= ranges[index].hi).then_some(ranges[index].run)
    }

    /// What the program decides for `addr`:`port` over `protocol`: the ACTION_* bits of
    /// the matching entries, found the way the program finds them.
    fn verdict(tables: &SocketTables, addr: &str, port: u16, protocol: u8) -> u8 {
        let addr: std::net::IpAddr = addr.parse().unwrap();
        let run = match addr {
            std::net::IpAddr::V4(a) => run_at(&tables.v4, u128::from(u32::from(a))),
            std::net::IpAddr::V6(a) => run_at(&tables.v6, u128::from(a)),
        };
        let Some(Run { first, count }) = run else {
            return 0;
        };
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

    /// A small xorshift generator: property tests that replay the same cases every run.
    fn generator(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        }
    }

    /// The ranges give the longest matching prefix's run: random nested and disjoint
    /// prefixes of both families (including /0 and full-length ones), probed at every
    /// network's edges and just outside them.
    #[test]
    fn ranges_find_the_longest_matching_prefix() {
        // The addresses a network of `host_bits` host bits spans, less one.
        let span = |host_bits: u8| match host_bits {
            0 => 0,
            _ => u128::MAX >> (128 - host_bits),
        };
        let mut next = generator(0x9e37_79b9_7f4a_7c15);
        for bits in [32u8, 128] {
            for _ in 0..300 {
                let mut networks: Vec<(u128, u8)> = Vec::new();
                // Addresses from a few clusters, so that prefixes nest.
                let bases: Vec<u128> = (0..3)
                    .map(|_| match bits {
                        32 => u128::from(next(1 << 32)),
                        _ => u128::from(next(u64::MAX)) << 64 | u128::from(next(u64::MAX)),
                    })
                    .collect();
                for _ in 0..next(24) {
                    let base = bases[next(3) as usize] ^ u128::from(next(256));
                    let len = match next(6) {
                        0 => 0,
                        1 => bits,
                        _ => bits - next(u64::from(bits.min(24))) as u8,
                    };
                    let lo = base & !span(bits - len);
                    if !networks.contains(&(lo, len)) {
                        networks.push((lo, len));
                    }
                }
                let input: Vec<Network> = networks
                    .iter()
                    .enumerate()
                    .map(|(i, &(lo, len))| Network {
                        lo,
                        hi: lo + span(bits - len),
                        run: Run {
                            first: i as u32,
                            count: 1,
                        },
                    })
                    .collect();
                let ranges = ranges_of(input.clone());
                for pair in ranges.windows(2) {
                    assert!(pair[0].hi < pair[1].lo, "sorted and disjoint");
                }
                for network in &input {
                    for probe in [
                        network.lo,
                        network.hi,
                        network.lo.wrapping_sub(1),
                        network.hi.wrapping_add(1),
                    ] {
                        let probe = probe & span(bits);
                        let longest = input
                            .iter()
                            .filter(|n| n.lo <= probe && probe <= n.hi)
                            .min_by_key(|n| n.hi - n.lo)
                            .map(|n| n.run);
                        assert_eq!(run_at(&ranges, probe), longest, "{bits}-bit {probe:#x}");
                    }
                }
            }
        }
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
    fn ipv6_rules_have_their_own_ranges() {
        let rules = NetworkRules {
            addresses: vec![
                address("2001:db8::/32", &[], None, Action::Audit),
                address("2001:db8:1::/48", &[(80, 80)], None, Action::Block),
            ],
            ..NetworkRules::default()
        };
        let tables = compile(&rules);
        assert_eq!(
            tables.v6.len(),
            3,
            "the /32 before, inside and after the /48"
        );
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
        let mut next = generator(0x2545_f491_4f6c_dd1d);
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
