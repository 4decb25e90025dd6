//! The socket programs on the real kernel: a process in a cgroup with the programs
//! attached tries connections, datagrams and sockets the rules name, and the same
//! actions succeed from a cgroup without them (the control).
#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use moat_bpf::SocketFilter;
use moat_events::{AlertContext, AlertWriter};
use moat_policy::enforce::{AddressRule, NetworkRules, ProtocolRule, RuleLabel};
use moat_policy::kubearmor::Action;
use moat_policy::sockrules;

/// The cgroup v2 mount: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// Skips with a reason, unless the run must not skip (CI sets MOAT_REQUIRE=all).
fn skip(why: &str) {
    assert_ne!(
        std::env::var("MOAT_REQUIRE").as_deref(),
        Ok("all"),
        "MOAT_REQUIRE=all but {why}"
    );
    eprintln!("skipped: {why}");
}

/// A throwaway cgroup, removed on drop (its processes have exited by then).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Option<Cgroup> {
        if !nix::unistd::geteuid().is_root() {
            skip("the socket program tests need root to make cgroups and load BPF programs");
            return None;
        }
        let Some(root) = cgroup2_root() else {
            skip("there is no cgroup v2 mount for cgroup-BPF programs");
            return None;
        };
        let path = root.join(format!("moat-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("make the test cgroup");
        Some(Cgroup(path))
    }

    /// Runs a shell script inside the cgroup; its exit status and stderr.
    fn run(&self, script: &str) -> (i32, String) {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && {script}",
                self.0.display()
            ))
            .output()
            .expect("run bash");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn label(policy: &str) -> RuleLabel {
    RuleLabel {
        policy: policy.into(),
        severity: Some(7),
        tags: vec!["net".into()],
        message: Some(format!("{policy} matched")),
    }
}

fn address(net: &str, port: u16, action: Action, policy: &str) -> AddressRule {
    AddressRule {
        net: net.parse().unwrap(),
        ports: vec![(port, port)],
        protocol: Some("tcp".into()),
        action,
        label: label(policy),
    }
}

fn alerts(path: &Path) -> Vec<BTreeMap<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an alert is one JSON object"))
        .collect()
}

/// The programs with `tables`, attached to `cgroup`, and a reader writing their alerts to
/// a file of their own (kept until the directory is dropped).
fn enforce(
    tables: &sockrules::SocketTables,
    cgroup: &Cgroup,
) -> (moat_bpf::alerts::AlertsHandle, tempfile::TempDir, PathBuf) {
    let filter = SocketFilter::load(tables, true).expect("load the programs");
    filter.attach(&cgroup.0, None).expect("attach");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.jsonl");
    let context = AlertContext {
        id: "test".into(),
        ..AlertContext::default()
    };
    let reader =
        moat_bpf::alerts::spawn(filter, tables, context, AlertWriter::open(&file).unwrap())
            .unwrap();
    (reader, dir, file)
}

fn connect(port: u16) -> String {
    format!("exec 3<>/dev/tcp/127.0.0.1/{port}")
}

#[test]
fn destination_rules_block_audit_and_report() {
    let (Some(ruled), Some(control)) = (Cgroup::new("ruled"), Cgroup::new("control")) else {
        return;
    };
    let blocked = TcpListener::bind("127.0.0.1:0").unwrap();
    let audited = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let rules = NetworkRules {
        addresses: vec![
            address("127.0.0.0/8", port(&blocked), Action::Block, "no-blocked"),
            address(
                "127.0.0.1/32",
                port(&audited),
                Action::Audit,
                "watch-audited",
            ),
            AddressRule {
                protocol: Some("udp".into()),
                ..address("127.0.0.1/32", udp_port, Action::Block, "no-udp")
            },
        ],
        ..NetworkRules::default()
    };
    let tables = sockrules::compile(&rules);
    let (reader, _dir, file) = enforce(&tables, &ruled);

    let (status, stderr) = ruled.run(&connect(port(&blocked)));
    assert_ne!(status, 0, "the blocked port must refuse");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert_eq!(
        control.run(&connect(port(&blocked))).0,
        0,
        "control: it answers without the programs"
    );
    assert_eq!(
        ruled.run(&connect(port(&audited))).0,
        0,
        "Audit lets it through"
    );
    assert_eq!(ruled.run(&connect(port(&other))).0, 0, "no rule names it");
    // An IPv4-mapped IPv6 address reaches the same IPv4 host: the IPv4 rules apply.
    let mapped = ruled.run(&format!(
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.connect((\"::ffff:127.0.0.1\", {}))'",
        port(&blocked)
    ));
    assert_ne!(
        mapped.0, 0,
        "an IPv4-mapped address must not bypass the rule"
    );
    assert!(mapped.1.contains("PermissionError"), "{}", mapped.1);
    // The unspecified address is the local host: it meets the loopback rules.
    for (family, address) in [("AF_INET", "0.0.0.0"), ("AF_INET6", "::ffff:0.0.0.0")] {
        let ran = ruled.run(&format!(
            "python3 -c 'import socket; s=socket.socket(socket.{family}); s.connect((\"{address}\", {}))'",
            port(&blocked)
        ));
        assert!(ran.1.contains("PermissionError"), "{address}: {}", ran.1);
    }
    // Datagrams sent with an address go through sendmsg.
    let send = format!(
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"127.0.0.1\", {udp_port}))'"
    );
    let sent = ruled.run(&send);
    assert!(sent.1.contains("PermissionError"), "{}", sent.1);
    assert_eq!(
        control.run(&send).0,
        0,
        "control: the datagram goes out without the programs"
    );

    let report = reader.finish();
    assert_eq!(report.error, None);
    assert_eq!(report.lost, 0);
    let alerts = alerts(&file);
    assert_eq!(alerts.len(), 6, "five blocks and one audit: {alerts:#?}");
    let blocked_alert = &alerts[0];
    assert_eq!(blocked_alert["PolicyName"], "no-blocked");
    assert_eq!(blocked_alert["Action"], "Block");
    assert_eq!(blocked_alert["Result"], "Permission denied");
    assert_eq!(blocked_alert["Operation"], "Network");
    assert_eq!(blocked_alert["Severity"], "7");
    assert_eq!(blocked_alert["Tags"], "net");
    assert_eq!(blocked_alert["Message"], "no-blocked matched");
    assert_eq!(blocked_alert["Enforcer"], "cgroup-BPF");
    assert_eq!(
        blocked_alert["Resource"],
        format!("remoteip=127.0.0.1 port={} protocol=TCP", port(&blocked))
    );
    assert!(blocked_alert["ProcessName"]
        .as_str()
        .unwrap()
        .contains("bash"));
    assert_eq!(alerts[1]["PolicyName"], "watch-audited");
    assert_eq!(alerts[1]["Action"], "Audit");
    assert_eq!(alerts[1]["Result"], "Passed");
    assert_eq!(alerts[2]["PolicyName"], "no-blocked");
    assert!(alerts[2]["ProcessName"]
        .as_str()
        .unwrap()
        .contains("python3"));
    assert_eq!(
        alerts[3]["Resource"],
        format!("remoteip=127.0.0.1 port={} protocol=TCP", port(&blocked)),
        "0.0.0.0 is checked, and used, as loopback"
    );
    assert_eq!(alerts[5]["PolicyName"], "no-udp");
    assert_eq!(
        alerts[5]["Data"],
        format!("syscall=SYS_SENDMSG rule=127.0.0.1/32:{udp_port}/udp")
    );
}

#[test]
fn allow_lists_fall_to_the_default_posture_and_protocols_are_ruled() {
    let (Some(ruled), Some(control)) = (Cgroup::new("allow"), Cgroup::new("allow-control")) else {
        return;
    };
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let rules = NetworkRules {
        addresses: vec![address(
            "127.0.0.1/32",
            port(&allowed),
            Action::Allow,
            "only-one",
        )],
        protocols: vec![
            ProtocolRule {
                protocol: "udp".into(),
                action: Action::Block,
                label: label("no-udp"),
            },
            ProtocolRule {
                protocol: "tcp".into(),
                action: Action::Audit,
                label: label("watch-tcp"),
            },
        ],
        ..NetworkRules::default()
    };
    let tables = sockrules::compile(&rules);
    let (reader, _dir, file) = enforce(&tables, &ruled);

    assert_eq!(ruled.run(&connect(port(&allowed))).0, 0);
    assert_ne!(
        ruled.run(&connect(port(&other))).0,
        0,
        "not allowed: posture block"
    );
    assert_eq!(control.run(&connect(port(&other))).0, 0, "control");
    let udp = "python3 -c 'import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nexcept OSError as e:\n raise SystemExit(e.errno)'";
    assert_eq!(
        ruled.run(udp).0,
        libc::EPERM,
        "the udp Block refuses the socket"
    );
    assert_eq!(control.run(udp).0, 0, "control");
    let report = reader.finish();
    assert_eq!(report.error, None);
    // Every TCP socket is audited (bash's two connects), and let through.
    let (audited, alerts): (Vec<_>, Vec<_>) = alerts(&file)
        .into_iter()
        .partition(|a| a["PolicyName"] == "watch-tcp");
    assert_eq!(audited.len(), 2, "{audited:#?}");
    assert!(audited.iter().all(|a| a["Action"] == "Audit"
        && a["Result"] == "Passed"
        && a["Resource"] == "domain=AF_INET type=SOCK_STREAM protocol=6"));
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[0]["PolicyName"], "DefaultPosture");
    assert_eq!(alerts[0]["Message"], "denied by the default posture");
    assert_eq!(alerts[0]["Data"], "syscall=SYS_CONNECT");
    assert_eq!(alerts[1]["PolicyName"], "no-udp");
    assert_eq!(
        alerts[1]["Resource"],
        "domain=AF_INET type=SOCK_DGRAM protocol=17"
    );
    assert_eq!(alerts[1]["Data"], "syscall=SYS_SOCKET rule=udp");
}

/// IPv6 destinations have ranges of their own, after IPv4's in the table: a /128 inside
/// a ::/0 rule, and an IPv4 rule on the same port number that must not apply to IPv6.
#[test]
fn ipv6_destinations_meet_their_own_rules() {
    let (Some(ruled), Some(control)) = (Cgroup::new("v6"), Cgroup::new("v6-control")) else {
        return;
    };
    let listen = || TcpListener::bind("[::1]:0").expect("listen on ::1");
    let (blocked, audited, other) = (listen(), listen(), listen());
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    // Enough IPv4 ranges that a search of the wrong part of the table would miss.
    let v4 = (1..=8).map(|host| address(&format!("10.0.0.{host}/32"), 1, Action::Block, "v4"));
    let rules = NetworkRules {
        addresses: v4
            .chain([
                address("127.0.0.0/8", port(&other), Action::Block, "v4-only"),
                address("::/0", port(&audited), Action::Audit, "watch-v6"),
                address("::1/128", port(&blocked), Action::Block, "no-v6-blocked"),
            ])
            .collect(),
        ..NetworkRules::default()
    };
    let tables = sockrules::compile(&rules);
    assert_eq!((tables.v4.len(), tables.v6.len()), (9, 3));
    let (reader, _dir, file) = enforce(&tables, &ruled);
    let connect6 = |address: &str, port: u16| {
        format!(
            "python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.connect((\"{address}\", {port}))'"
        )
    };

    let refused = ruled.run(&connect6("::1", port(&blocked)));
    assert!(refused.1.contains("PermissionError"), "{}", refused.1);
    assert_eq!(
        control.run(&connect6("::1", port(&blocked))).0,
        0,
        "control: it answers without the programs"
    );
    let unspecified = ruled.run(&connect6("::", port(&blocked)));
    assert!(
        unspecified.1.contains("PermissionError"),
        ":: is ::1: {}",
        unspecified.1
    );
    assert_eq!(ruled.run(&connect6("::1", port(&audited))).0, 0, "Audit");
    assert_eq!(
        ruled.run(&connect6("::1", port(&other))).0,
        0,
        "an IPv4 rule does not apply to IPv6"
    );

    let report = reader.finish();
    assert_eq!(report.error, None);
    let alerts = alerts(&file);
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["PolicyName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["no-v6-blocked", "no-v6-blocked", "watch-v6"]);
    assert_eq!(
        alerts[0]["Resource"],
        format!("remoteip=::1 port={} protocol=TCP", port(&blocked))
    );
}

/// Only the programs whose hooks the rules can decide anything at are loaded, and a
/// policy whose destination rules are all for TCP leaves datagrams alone.
#[test]
fn programs_load_only_where_rules_can_decide() {
    use moat_bpf::Hooks;
    let tcp_only = NetworkRules {
        addresses: vec![address("127.0.0.1/32", 9, Action::Block, "tcp-only")],
        ..NetworkRules::default()
    };
    let any_protocol = NetworkRules {
        addresses: vec![AddressRule {
            protocol: None,
            ..address("127.0.0.1/32", 9, Action::Block, "any")
        }],
        ..NetworkRules::default()
    };
    let protocols_only = NetworkRules {
        protocols: vec![ProtocolRule {
            protocol: "udp".into(),
            action: Action::Block,
            label: label("no-udp"),
        }],
        ..NetworkRules::default()
    };
    let hooks = |rules: &NetworkRules| Hooks::of(&sockrules::compile(rules));
    assert_eq!(
        hooks(&tcp_only),
        Hooks {
            connect: true,
            sendmsg: false,
            sock_create: false
        }
    );
    assert_eq!(
        hooks(&any_protocol),
        Hooks {
            connect: true,
            sendmsg: true,
            sock_create: false
        }
    );
    assert_eq!(
        hooks(&protocols_only),
        Hooks {
            connect: false,
            sendmsg: false,
            sock_create: true
        }
    );

    // On the kernel: the TCP rule holds, and a datagram to the same port goes out.
    let (Some(ruled), Some(control)) = (Cgroup::new("tcp-only"), Cgroup::new("tcp-control")) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_port, udp_port) = (
        listener.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let rules = NetworkRules {
        addresses: vec![
            address("127.0.0.1/32", tcp_port, Action::Block, "tcp-only"),
            address("127.0.0.1/32", udp_port, Action::Block, "tcp-only-too"),
        ],
        ..NetworkRules::default()
    };
    let tables = sockrules::compile(&rules);
    assert!(!Hooks::of(&tables).sendmsg);
    let (reader, _dir, file) = enforce(&tables, &ruled);
    let refused = ruled.run(&connect(tcp_port));
    assert!(
        refused.1.contains("Operation not permitted"),
        "{}",
        refused.1
    );
    assert_eq!(control.run(&connect(tcp_port)).0, 0, "control");
    let send = format!(
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"127.0.0.1\", {udp_port}))'"
    );
    assert_eq!(ruled.run(&send).0, 0, "a TCP rule does not stop a datagram");
    let report = reader.finish();
    assert_eq!(report.error, None);
    assert_eq!(alerts(&file).len(), 1, "the refused connect only");
}
