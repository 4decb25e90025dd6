//! The network wall with real traffic, safely: every test builds a throwaway outer
//! network namespace holding only loopback and veths it makes, with test hosts in their
//! own namespaces (a "public internet" host, a cloud metadata server, a private service)
//! and a "hub API" on the outer namespace itself. moat runs inside the outer namespace,
//! so nothing can leave the machine, and deleting it removes every link and rule.
#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const INTERNET: &str = "203.0.113.10";
const METADATA: &str = "169.254.169.254";
const PRIVATE: &str = "10.200.0.5";
const HUB: &str = "10.77.0.1";

/// Python that tries TCP connections and prints `ip:port ok|<error>` per target.
const PROBE: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(1.5)
    try:
        s.connect((host, int(port))); print(target, "ok")
    except OSError as e:
        print(target, type(e).__name__)
    finally:
        s.close()
"#;

struct Lab {
    outer: String,
    hosts: Vec<String>,
    servers: Vec<Child>,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let outer = format!("moat-t{}-{tag}", std::process::id());
        ip(&["netns", "add", &outer]);
        let mut lab = Lab {
            outer: outer.clone(),
            hosts: Vec::new(),
            servers: Vec::new(),
        };
        ip(&["-n", &outer, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &outer,
            "addr",
            "add",
            &format!("{HUB}/32"),
            "dev",
            "lo",
        ]);
        lab.in_outer(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The host's own services: the hub API (allowed when named), another port on the
        // same address (never allowed), and one on the host's loopback.
        lab.serve(None, HUB, 8081);
        lab.serve(None, HUB, 9999);
        lab.serve(None, "127.0.0.1", 8082);
        for (name, address, gateway, prefix) in [
            ("inet", INTERNET, "203.0.113.1", 24),
            ("meta", METADATA, "169.254.0.1", 16),
            ("priv", PRIVATE, "10.200.0.1", 24),
        ] {
            let host = format!("{outer}-{name}");
            ip(&["netns", "add", &host]);
            lab.hosts.push(host.clone());
            let outer_end = format!("vt-{name}");
            ip(&[
                "-n", &outer, "link", "add", &outer_end, "type", "veth", "peer", "name", "eth0",
                "netns", &host,
            ]);
            ip(&[
                "-n",
                &outer,
                "addr",
                "add",
                &format!("{gateway}/{prefix}"),
                "dev",
                &outer_end,
            ]);
            ip(&["-n", &outer, "link", "set", &outer_end, "up"]);
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{address}/{prefix}"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
            ip(&["-n", &host, "link", "set", "lo", "up"]);
            ip(&["-n", &host, "route", "add", "default", "via", gateway]);
            lab.serve(Some(&host), address, 80);
            lab.serve(Some(&host), address, 443);
            if name == "inet" {
                lab.serve_transfers(&host, address);
            }
        }
        lab.wait_listening();
        lab
    }

    fn nsenter(namespace: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{namespace}"))
            .arg("--");
        command
    }

    fn in_outer(&self, args: &[&str]) {
        let status = Lab::nsenter(&self.outer).args(args).status().unwrap();
        assert!(status.success(), "{args:?}");
    }

    fn serve(&mut self, namespace: Option<&str>, address: &str, port: u16) {
        let script = format!(
            "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{address}', {port})); s.listen(64)\nwhile True:\n    c, _ = s.accept(); c.close()\n"
        );
        let child = Lab::nsenter(namespace.unwrap_or(&self.outer))
            .args(["python3", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }

    /// A sink on port 9000 (reads to the end) and a source on 9001 (sends 3 MB).
    fn serve_transfers(&mut self, namespace: &str, address: &str) {
        let script = TRANSFER_SERVER.replace("ADDRESS", address);
        let child = Lab::nsenter(namespace)
            .args(["python3", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }

    fn wait_listening(&self) {
        let targets = [
            format!("{HUB}:8081"),
            format!("{INTERNET}:80"),
            format!("{INTERNET}:9000"),
            format!("{INTERNET}:9001"),
            format!("{METADATA}:80"),
            format!("{PRIVATE}:80"),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let results =
                self.probe_from_host(&targets.iter().map(String::as_str).collect::<Vec<_>>());
            if results.iter().all(|(_, r)| r == "ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "test hosts did not come up: {results:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connections from the host (the outer namespace): the control.
    fn probe_from_host(&self, targets: &[&str]) -> Vec<(String, String)> {
        let output = Lab::nsenter(&self.outer)
            .args(["python3", "-c", PROBE])
            .args(targets)
            .output()
            .unwrap();
        parse_probe(&String::from_utf8_lossy(&output.stdout))
    }

    /// `moat` inside the outer namespace.
    fn moat(&self) -> Command {
        let mut command = Lab::nsenter(&self.outer);
        command.arg(env!("CARGO_BIN_EXE_moat")).stdin(Stdio::null());
        command
    }

    /// Connections from inside a sandbox run with `options`.
    fn probe_from_sandbox(&self, options: &[&str], targets: &[&str]) -> Vec<(String, String)> {
        let output = self
            .moat()
            .arg("run")
            .args(options)
            .args(["--", "python3", "-c", PROBE])
            .args(targets)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_probe(&String::from_utf8_lossy(&output.stdout))
    }

    fn links(&self) -> String {
        let output = Command::new("ip")
            .args(["-n", &self.outer, "-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn rules(&self) -> String {
        let output = Lab::nsenter(&self.outer)
            .args(["nft", "list", "ruleset"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", host]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.outer])
            .status();
    }
}

fn parse_probe(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(t, r)| (t.to_string(), r.to_string()))
        })
        .collect()
}

fn result_of<'a>(results: &'a [(String, String)], target: &str) -> &'a str {
    results
        .iter()
        .find(|(t, _)| t == target)
        .map_or("missing", |(_, r)| r.as_str())
}

fn network_available() -> bool {
    let tools = ["ip", "nft", "tc", "nsenter"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    require_root()
        && require(
            tools,
            "ip, nft, tc and nsenter are needed (apt-get install iproute2 nftables util-linux)",
        )
}

#[test]
fn isolated_reaches_only_the_named_host_endpoint() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("iso");
    let hub = format!("{HUB}:8081");
    let hub_other = format!("{HUB}:9999");
    let targets = [
        hub.as_str(),
        &hub_other,
        "127.0.0.1:8082",
        "203.0.113.10:80",
        "169.254.169.254:80",
        "10.200.0.5:80",
    ];
    // Control: from the host, every one of them answers.
    for (target, result) in lab.probe_from_host(&targets) {
        assert_eq!(result, "ok", "control: {target} answers the host");
    }
    let inside = lab.probe_from_sandbox(&["--net", "isolated", "--allow-host", &hub], &targets);
    let ipv6 = lab
        .moat()
        .args([
            "run",
            "--net",
            "isolated",
            "--",
            "cat",
            "/proc/sys/net/ipv6/conf/all/disable_ipv6",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ipv6.stdout).trim(),
        "1",
        "IPv6 is off, not open"
    );
    assert_eq!(
        result_of(&inside, &hub),
        "ok",
        "the named endpoint: {inside:?}"
    );
    for target in &targets[1..] {
        assert_ne!(
            result_of(&inside, target),
            "ok",
            "{target} must be closed: {inside:?}"
        );
    }
}

#[test]
fn egress_follows_the_allowlist_and_closed_ranges_stay_closed() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("egr");
    let targets = [
        "203.0.113.10:80",
        "203.0.113.10:443",
        "169.254.169.254:80",
        "10.200.0.5:80",
        "10.77.0.1:8081",
    ];
    for (target, result) in lab.probe_from_host(&targets) {
        assert_eq!(result, "ok", "control: {target} answers the host");
    }
    let inside = lab.probe_from_sandbox(
        &["--net", "egress", "--egress", "0.0.0.0/0:80/tcp"],
        &targets,
    );
    assert_eq!(
        result_of(&inside, "203.0.113.10:80"),
        "ok",
        "allowed egress: {inside:?}"
    );
    for closed in &targets[1..] {
        assert_ne!(
            result_of(&inside, closed),
            "ok",
            "{closed} must be closed: {inside:?}"
        );
    }
}

#[test]
fn sandboxes_cannot_reach_each_other_and_the_host_reaches_only_published_ports() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("two");
    let server = "import socket, threading\n\
        def serve(port):\n    s = socket.socket(); s.bind(('0.0.0.0', port)); s.listen(8)\n    while True:\n        c, _ = s.accept(); c.close()\n\
        [threading.Thread(target=serve, args=(p,), daemon=True).start() for p in (8000, 8001)]\n\
        open('/tmp/ready', 'w').close()\nimport time; time.sleep(30)\n";
    let mut b = lab
        .moat()
        .args([
            "run",
            "--net",
            "isolated",
            "--publish",
            "8000",
            "--",
            "python3",
            "-c",
            server,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(b.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let address = line
        .split("has address ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let published = format!("{address}:8000");
    let unpublished = format!("{address}:8001");
    let deadline = Instant::now() + Duration::from_secs(10);
    while result_of(&lab.probe_from_host(&[&published]), &published) != "ok"
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let from_host = lab.probe_from_host(&[&published, &unpublished]);
    let from_a = lab.probe_from_sandbox(
        &["--net", "egress", "--egress", "0.0.0.0/0:8000/tcp"],
        &[&published],
    );
    let from_a_isolated = lab.probe_from_sandbox(&["--net", "isolated"], &[&published]);
    // Even an admin profile that opens the private ranges (the pool's among them) keeps
    // sandboxes apart.
    let scratch = Scratch::new();
    let admin = scratch.join("admin.toml");
    let builtin = include_str!("../../../policies/profiles/untrusted.toml");
    let opened = builtin.replace("\n[policy]\n", "open = [\"10.0.0.0/8\"]\n\n[policy]\n");
    assert_ne!(
        opened, builtin,
        "the profile's [network] section is no longer before [policy]"
    );
    std::fs::write(&admin, opened).unwrap();
    let from_admin = lab.probe_from_sandbox(
        &[
            "--profile",
            admin.to_str().unwrap(),
            "--net",
            "egress",
            "--egress",
            "0.0.0.0/0:8000-8001/tcp",
        ],
        &[&published, &unpublished],
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = b.wait();
    assert_eq!(
        result_of(&from_host, &published),
        "ok",
        "the host reaches a published port: {from_host:?}"
    );
    assert_ne!(
        result_of(&from_host, &unpublished),
        "ok",
        "and nothing else: {from_host:?}"
    );
    assert_ne!(
        result_of(&from_a, &published),
        "ok",
        "another sandbox is never reachable, even with egress: {from_a:?}"
    );
    assert_ne!(
        result_of(&from_a_isolated, &published),
        "ok",
        "{from_a_isolated:?}"
    );
    for target in [&published, &unpublished] {
        assert_ne!(
            result_of(&from_admin, target),
            "ok",
            "{target} with 10/8 opened: {from_admin:?}"
        );
    }
}

#[test]
fn links_rules_and_addresses_are_gone_after_exit_and_after_sigkill_plus_gc() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("gone");
    assert_eq!(
        lab.probe_from_sandbox(&["--net", "isolated"], &["10.77.0.1:8081"])
            .len(),
        1
    );
    assert!(!lab.links().contains(": moat-"), "{}", lab.links());
    assert!(!lab.rules().contains("chain in-"), "{}", lab.rules());

    let id = test_id("netkill");
    let child = Running::spawn(lab.moat().args([
        "run", "--id", &id, "--net", "isolated", "--", "sleep", "300",
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.rules().contains("chain in-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lab.rules().contains("chain in-"),
        "control: a live sandbox has rules"
    );
    child.signal(nix::sys::signal::Signal::SIGKILL);
    child.wait();
    let gc = lab.moat().arg("gc").output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(!lab.links().contains(": moat-"), "{}", lab.links());
    assert!(!lab.rules().contains("chain in-"), "{}", lab.rules());
    assert_eq!(leftovers(&id), Vec::<String>::new());
    let leases = std::fs::read_dir("/var/lib/moat/net")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|pool| {
            std::fs::read_dir(pool.path().join("slots"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|slot| {
            std::fs::read_to_string(slot.path())
                .unwrap_or_default()
                .contains(&id)
        })
        .count();
    assert_eq!(leases, 0, "the address lease is reclaimed");
}

/// A sink on port 9000 (reads to the end) and a source on 9001 (sends 3 MB).
const TRANSFER_SERVER: &str = r#"
import socket, threading
def sink(c):
    while c.recv(65536):
        pass
    c.close()
def source(c):
    c.sendall(b"x" * (3 << 20))
    c.close()
def serve(port, handler):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("ADDRESS", port))
    s.listen(8)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9000, sink), daemon=True).start()
serve(9001, source)
"#;

/// Sends 3 MB to the sink and receives 3 MB from the source; prints both rates in bit/s.
const TRANSFER: &str = r#"
import socket, time
def upload():
    s = socket.create_connection(("203.0.113.10", 9000)); start = time.monotonic()
    s.sendall(b"x" * (3 << 20)); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
    return (3 << 23) / (time.monotonic() - start)
def download():
    s = socket.create_connection(("203.0.113.10", 9001)); start = time.monotonic(); n = 0
    while True:
        data = s.recv(65536)
        if not data: break
        n += len(data)
    return n * 8 / (time.monotonic() - start)
print(int(upload()), int(download()))
"#;

#[test]
fn bandwidth_is_limited_in_both_directions() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("bw");
    let rates = |extra: &[&str]| -> (f64, f64) {
        let mut options = vec![
            "--net",
            "egress",
            "--egress",
            "203.0.113.10/32:9000-9001/tcp",
        ];
        options.extend_from_slice(extra);
        let output = lab
            .moat()
            .arg("run")
            .args(&options)
            .args(["--", "python3", "-c", TRANSFER])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let numbers: Vec<f64> = text
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(
            numbers.len(),
            2,
            "{text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (numbers[0], numbers[1])
    };
    let limit = 8_000_000.0;
    let (up, down) = rates(&["--bandwidth", "8mbit"]);
    eprintln!(
        "with --bandwidth 8mbit: upload {:.2} Mbit/s, download {:.2} Mbit/s",
        up / 1e6,
        down / 1e6
    );
    for (direction, rate) in [("upload", up), ("download", down)] {
        assert!(
            rate <= limit * 1.2 && rate >= limit * 0.8,
            "{direction} {rate:.0} bit/s is not within 20% of {limit}"
        );
    }
    // Control: without the limit the same transfer is far faster.
    let (free_up, free_down) = rates(&[]);
    assert!(
        free_up > limit * 3.0 && free_down > limit * 3.0,
        "control: {free_up} {free_down}"
    );
}

#[test]
fn an_exhausted_pool_is_a_clear_error_and_creates_nothing() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("pool");
    // A /29 holds two /30 subnets: the host's own and one sandbox.
    let scratch = Scratch::new();
    let profile = scratch.join("tiny.toml");
    let octet = std::process::id() % 250;
    let builtin = include_str!("../../../policies/profiles/untrusted.toml");
    std::fs::write(
        &profile,
        builtin.replace(
            "pool = \"10.77.0.0/16\"",
            &format!("pool = \"10.99.{octet}.0/29\""),
        ),
    )
    .unwrap();
    let profile = profile.to_str().unwrap();
    let mut first = lab
        .moat()
        .args([
            "run",
            "--profile",
            profile,
            "--net",
            "isolated",
            "--",
            "sleep",
            "5",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("has address"), "{line}");
    let id = test_id("exhausted");
    let second = lab
        .moat()
        .args([
            "run",
            "--id",
            &id,
            "--profile",
            profile,
            "--net",
            "isolated",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is exhausted"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
    // Control: once the first sandbox is gone, its address serves the next.
    let third = lab
        .moat()
        .args([
            "run",
            "--profile",
            profile,
            "--net",
            "isolated",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    // The test's own pool state goes with it.
    let _ = std::fs::remove_dir_all(format!("/var/lib/moat/net/10.99.{octet}.0_29"));
}

#[test]
fn concurrent_sandboxes_get_their_own_addresses_and_rules() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("many");
    let children: Vec<Child> = (0..6)
        .map(|_| {
            lab.moat()
                .args([
                    "run",
                    "--net",
                    "isolated",
                    "--allow-host",
                    "10.77.0.1:8081",
                    "--",
                    "python3",
                    "-c",
                    PROBE,
                    "10.77.0.1:8081",
                    "10.77.0.1:9999",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addresses = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let results = parse_probe(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(result_of(&results, "10.77.0.1:8081"), "ok", "{results:?}");
        assert_ne!(result_of(&results, "10.77.0.1:9999"), "ok", "{results:?}");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        addresses.push(
            stderr
                .split("has address ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or_default()
                .to_string(),
        );
    }
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        addresses.len(),
        "each sandbox its own address: {addresses:?}"
    );
    assert!(
        !lab.rules().contains("chain in-"),
        "all rules removed: {}",
        lab.rules()
    );
}

#[test]
fn the_sandbox_stays_confined_when_the_host_ruleset_is_flushed() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("flush");
    let scratch = Scratch::new();
    let home = scratch.join("home");
    let targets = [
        "203.0.113.10:80",
        "169.254.169.254:80",
        "10.200.0.5:80",
        "10.77.0.1:8081",
        "10.77.0.1:9999",
    ];
    // The probe waits for the test to flush the host's rules, then tries every target.
    let script = format!(
        "import os, time\nwhile not os.path.exists(os.path.expanduser('~/go')):\n    time.sleep(0.05)\n{PROBE}"
    );
    let child = Running::spawn(
        lab.moat()
            .args([
                "run",
                "--home",
                home.to_str().unwrap(),
                "--net",
                "egress",
                "--egress",
                "0.0.0.0/0:80/tcp",
            ])
            .args(["--", "python3", "-c", &script])
            .args(targets)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.rules().contains("chain in-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // What a firewall reload does: the host's table is gone.
    lab.in_outer(&["nft", "delete", "table", "inet", "moat"]);
    assert!(
        !lab.rules().contains("table inet moat"),
        "control: the host table is gone"
    );
    std::fs::write(home.join("go"), "").unwrap();
    let output = child.wait_with_output();
    let results = parse_probe(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(
        result_of(&results, "203.0.113.10:80"),
        "ok",
        "allowed egress still works: {results:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for closed in &targets[1..] {
        assert_ne!(
            result_of(&results, closed),
            "ok",
            "{closed} must stay closed on the sandbox's own rules: {results:?}"
        );
    }
}

/// A sandbox whose directory outlived it (a mount that could not be released) keeps its
/// record, address included, while the address goes back to the pool. `moat gc` must not
/// take that address's interfaces and rules from the live sandbox now holding it.
#[test]
fn gc_leaves_the_network_of_a_live_sandbox_alone_when_a_stale_record_names_its_address() {
    if !network_available() {
        return;
    }
    let lab = Lab::new("stale");
    let live_id = test_id("stalelive");
    let live = Running::spawn(lab.moat().args([
        "run", "--id", &live_id, "--net", "isolated", "--", "sleep", "60",
    ]));
    // Its link and its rules are made side by side once its namespaces exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(lab.links().contains(": moat-") && lab.rules().contains("chain in-"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lab.rules().contains("chain in-"),
        "control: the live sandbox has rules"
    );
    let links_before = lab.links();
    assert!(
        links_before.contains(": moat-"),
        "control: and a link: {links_before}"
    );

    // The stale record: another id, a dead owner, the live sandbox's address, no id range.
    let live_record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/moat/sandboxes/{live_id}/record.json")).unwrap(),
    )
    .unwrap();
    let stale_id = test_id("stalerecord");
    let stale_dir = format!("/run/moat/sandboxes/{stale_id}");
    std::fs::create_dir_all(&stale_dir).unwrap();
    let stale_record = serde_json::json!({
        "id": stale_id,
        "owner_pid": i32::MAX,
        "owner_start_ticks": 1,
        "id_slot": null,
        "id_slot_persistent": false,
        "address": live_record["address"],
    });
    std::fs::write(format!("{stale_dir}/record.json"), stale_record.to_string()).unwrap();

    let gc = lab.moat().arg("gc").output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(
        !std::path::Path::new(&stale_dir).exists(),
        "gc removed the stale sandbox: {}",
        String::from_utf8_lossy(&gc.stdout)
    );
    assert!(
        lab.rules().contains("chain in-"),
        "the live sandbox keeps its rules: {}",
        lab.rules()
    );
    assert_eq!(lab.links(), links_before, "the live sandbox keeps its link");
    drop(live);
    assert!(!lab.rules().contains("chain in-"), "{}", lab.rules());
    assert_eq!(leftovers(&live_id), Vec::<String>::new());
}
