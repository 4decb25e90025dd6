//! `moat policy check` on real-world policies: good ones pass, community mistakes are
//! reported with file, line and column and a useful message.
#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use common::*;

fn check(files: &[&str]) -> Ran {
    moat()
        .args(["policy", "check"])
        .args(files)
        .output()
        .unwrap()
        .into()
}

#[test]
fn the_shipped_examples_pass() {
    let ran = check(&[concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policies/examples/jupyterhub-hardening.yaml"
    )]);
    assert_eq!(ran.status, 0, "{}", ran.stdout);
    assert!(
        ran.stdout
            .ends_with("2 policies checked: 0 errors, 0 warnings\n"),
        "{}",
        ran.stdout
    );
}

#[test]
fn community_mistakes_are_refused_with_locations() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/policies/community-mistakes.yaml"
    );
    let ran = check(&[file]);
    assert_eq!(ran.status, 1);
    let text = std::fs::read_to_string(file).unwrap();
    let mapping_line = text
        .lines()
        .position(|l| l.contains("path: /opt/conda/bin/python3"))
        .unwrap()
        + 1;
    let directory_line = text
        .lines()
        .position(|l| l.contains("- path: /opt/conda/bin/"))
        .unwrap()
        + 1;
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:{mapping_line}:"))
                && l.contains("fromSource is a list")),
        "{}",
        ran.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:{directory_line}:"))
                && l.contains("is a directory")),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("error"));
}

#[test]
fn unreadable_files_and_json_output() {
    let ran = check(&["/nonexistent/policy.yaml"]);
    assert_eq!(ran.status, 1);
    assert!(
        ran.stdout
            .starts_with("/nonexistent/policy.yaml:1:1: error: cannot read"),
        "{}",
        ran.stdout
    );
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/policies/community-mistakes.yaml"
    );
    let output = moat()
        .args(["policy", "check", "--json", file])
        .output()
        .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(findings
        .iter()
        .all(|f| f["line"].as_u64().unwrap() > 1 && f["level"] == "error"));
}

/// Makes `home` afresh, open to the sandbox's user, with `files` (path, contents) in it,
/// their directories made as needed; all writable by the sandbox's user.
fn open_home(home: &std::path::Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(home);
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (name, contents) in files {
        let path = home.join(name);
        for dir in path
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(home) && *d != home)
        {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

/// `moat run` options: a home, and a policy that selects the sandbox (`team=blue`).
fn with_policy<'a>(home: &'a str, policy: &'a str) -> [&'a str; 6] {
    ["--home", home, "--policy", policy, "--label", "team=blue"]
}

fn policy_file(scratch: &Scratch, name: &str, body: &str) -> String {
    let path = scratch.join(name);
    let text = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: {}\nspec:\n  selector:\n    matchLabels:\n      team: blue\n{body}",
        name.trim_end_matches(".yaml")
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn process_block_denies_exec_and_copies_cannot_bypass_it() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "no-apt.yaml",
        "  action: Block\n  process:\n    matchPaths:\n      - path: /usr/bin/apt\n",
    );
    let script = "apt --version >/dev/null 2>&1; echo apt=$?; head -c1 /usr/bin/apt >/dev/null 2>&1 || echo unreadable; \
                  /lib64/ld-linux-x86-64.so.2 /usr/bin/apt --version >/dev/null 2>&1; echo loader=$?; \
                  cp /usr/bin/apt /tmp/apt2 2>/dev/null; /tmp/apt2 --version >/dev/null 2>&1; echo copy=$?; \
                  cp /usr/bin/true /tmp/true2; /lib64/ld-linux-x86-64.so.2 /tmp/true2 2>/dev/null; echo copy-by-loader=$?; \
                  python3 -c 'print(\"python\")'";
    let blocked = sh(&["--policy", &policy, "--label", "team=blue"], script);
    assert_eq!(blocked.status, 0, "{}", blocked.stderr);
    assert_eq!(
        blocked.stdout.lines().collect::<Vec<_>>(),
        [
            "apt=126",
            "unreadable",
            "loader=127",
            "copy=127",
            "copy-by-loader=127",
            "python"
        ]
    );
    // Controls: without the policy, or when its selector does not match, apt runs.
    let free = sh(
        &[],
        "apt --version >/dev/null 2>&1; echo apt=$?; \
         /lib64/ld-linux-x86-64.so.2 /usr/bin/apt --version >/dev/null; echo loader=$?; \
         cp /usr/bin/apt /tmp/apt2; /tmp/apt2 --version >/dev/null; echo copy=$?; \
         cp /usr/bin/true /tmp/true2; /lib64/ld-linux-x86-64.so.2 /tmp/true2; echo copy-by-loader=$?",
    );
    assert_eq!(
        free.stdout.lines().collect::<Vec<_>>(),
        ["apt=0", "loader=0", "copy=0", "copy-by-loader=0"],
        "{}",
        free.stderr
    );
    let unmatched = sh(
        &["--policy", &policy, "--label", "team=red"],
        "apt --version >/dev/null 2>&1; echo apt=$?",
    );
    assert_eq!(unmatched.stdout.trim(), "apt=0");
    assert!(
        unmatched
            .stderr
            .contains("its selector matches no label of this sandbox (team=red)"),
        "{}",
        unmatched.stderr
    );
}

#[test]
fn file_block_follows_symlinks_and_read_only_keeps_reading() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    std::fs::create_dir_all(home.join("notes")).unwrap();
    std::fs::write(home.join("notes/a.txt"), "notes\n").unwrap();
    std::fs::set_permissions(
        home.join("notes"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let policy = policy_file(
        &scratch,
        "files.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /etc/os-release\n    matchDirectories:\n      - dir: /home/jovyan/notes/\n        recursive: true\n        readOnly: true\n",
    );
    let script = "head -c0 /etc/os-release 2>/dev/null && echo os-release-readable; cat ~/notes/a.txt; touch ~/notes/b 2>/dev/null && echo notes-writable; touch ~/other && echo home-writable";
    let home_arg = home.to_str().unwrap();
    let blocked = sh(&with_policy(home_arg, &policy), script);
    assert_eq!(
        blocked.stdout.lines().collect::<Vec<_>>(),
        ["notes", "home-writable"],
        "{}",
        blocked.stderr
    );
    let free = sh(&["--home", home_arg], script);
    assert_eq!(
        free.stdout.lines().collect::<Vec<_>>(),
        [
            "os-release-readable",
            "notes",
            "notes-writable",
            "home-writable"
        ],
        "{}",
        free.stderr
    );
}

#[test]
fn protocol_block_and_process_allow_list() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let no_udp = policy_file(
        &scratch,
        "no-udp.yaml",
        "  network:\n    matchProtocols:\n      - protocol: udp\n        action: Block\n",
    );
    let probe = "import socket\nfor kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):\n    try:\n        socket.socket(socket.AF_INET, kind); print('ok')\n    except OSError as e:\n        print(e.errno)\n";
    let blocked = run(
        &["--policy", &no_udp, "--label", "team=blue"],
        &["python3", "-c", probe],
    );
    assert_eq!(
        blocked.stdout.lines().collect::<Vec<_>>(),
        ["1", "ok"],
        "udp EPERM, tcp fine: {}",
        blocked.stderr
    );
    let free = run(&[], &["python3", "-c", probe]);
    assert_eq!(free.stdout.lines().collect::<Vec<_>>(), ["ok", "ok"]);

    let only_python = policy_file(
        &scratch,
        "only-python.yaml",
        "  action: Allow\n  process:\n    matchPaths:\n      - path: /usr/bin/python3\n      - path: /usr/bin/dash\n",
    );
    let allowed = run(
        &["--policy", &only_python, "--label", "team=blue"],
        &[
            "python3",
            "-c",
            "import subprocess\nprint(subprocess.run(['/usr/bin/true']).returncode)\n",
        ],
    );
    assert!(
        allowed.stderr.contains("PermissionError") || allowed.stdout.trim() == "126",
        "only allowed binaries run: {} {}",
        allowed.stdout,
        allowed.stderr
    );
    let control = run(
        &[],
        &[
            "python3",
            "-c",
            "import subprocess\nprint(subprocess.run(['/usr/bin/true']).returncode)\n",
        ],
    );
    assert_eq!(control.stdout.trim(), "0");
}

/// Inside a loopback-only sandbox: listeners on 7001-7003, then a TCP connection to each
/// (and one through an IPv4-mapped IPv6 address to 7001); prints `port:errno` (0: ok).
const CONNECT_PROBE: &str = "import socket
listeners = []
for port in (7001, 7002, 7003):
    l = socket.socket(); l.bind(('127.0.0.1', port)); l.listen(); listeners.append(l)
def attempt(family, address):
    s = socket.socket(family)
    try:
        s.connect(address); return 0
    except OSError as e:
        return e.errno
for port in (7001, 7002, 7003):
    print(f'{port}:{attempt(socket.AF_INET, (\"127.0.0.1\", port))}')
print(f'mapped:{attempt(socket.AF_INET6, (\"::ffff:127.0.0.1\", 7001))}')
";

/// The lines CONNECT_PROBE prints in a sandbox run with `options`, and its stderr.
fn connect_probe(options: &[&str]) -> (Vec<String>, String) {
    let ran = run(options, &["python3", "-c", CONNECT_PROBE]);
    (ran.stdout.lines().map(str::to_string).collect(), ran.stderr)
}

/// The network alerts in `path`.
fn network_alerts(path: &std::path::Path) -> Vec<serde_json::Value> {
    alerts_in(path)
        .into_iter()
        .filter(|a| a["Operation"] == "Network")
        .collect()
}

#[test]
fn destination_rules_block_audit_and_allow_with_alerts() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let rules = policy_file(
        &scratch,
        "destinations.yaml",
        "  network:\n    matchAddresses:\n      - cidr: 127.0.0.1/32\n        ports: [7001]\n        protocol: tcp\n        severity: 8\n        tags: [exfiltration]\n        message: port 7001 is closed\n        action: Block\n      - cidr: 127.0.0.0/8\n        ports: [\"7002-7002\"]\n        action: Audit\n",
    );
    let alerts = scratch.join("net.jsonl");
    let id = test_id("netpolicy");
    let (ran, ran_stderr) = connect_probe(&[
        "--id",
        &id,
        "--policy",
        &rules,
        "--label",
        "team=blue",
        "--alerts",
        alerts.to_str().unwrap(),
    ]);
    assert_eq!(
        ran,
        ["7001:1", "7002:0", "7003:0", "mapped:1"],
        "7001 and its IPv4-mapped form EPERM, 7002 audited, 7003 untouched: {}",
        ran_stderr
    );
    let (control, control_stderr) = connect_probe(&[]);
    assert_eq!(
        control,
        ["7001:0", "7002:0", "7003:0", "mapped:0"],
        "control, without the policy: {control_stderr}"
    );
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "the socket cgroup is removed"
    );

    let network = network_alerts(&alerts);
    assert_eq!(network.len(), 3, "{network:#?}");
    let block = &network[0];
    assert_eq!(block["PolicyName"], "destinations");
    assert_eq!(
        block["Resource"],
        "remoteip=127.0.0.1 port=7001 protocol=TCP"
    );
    assert_eq!(block["Severity"], "8");
    assert_eq!(block["Tags"], "exfiltration");
    assert_eq!(block["Message"], "port 7001 is closed");
    assert_eq!(block["Labels"], "team=blue");
    assert_eq!(block["ContainerID"], id.as_str());
    assert_eq!(
        (
            block["Action"].as_str(),
            block["Result"].as_str(),
            block["Enforcer"].as_str()
        ),
        (Some("Block"), Some("Permission denied"), Some("cgroup-BPF"))
    );
    assert_eq!(block["UID"], 1000);
    assert!(
        block["PID"].as_i64().unwrap() > 1,
        "the pid inside the sandbox"
    );
    assert!(block["HostPID"].as_i64().unwrap() > block["PID"].as_i64().unwrap());
    assert!(block["ProcessName"].as_str().unwrap().contains("python3"));
    let audit = &network[1];
    assert_eq!(
        audit["Resource"],
        "remoteip=127.0.0.1 port=7002 protocol=TCP"
    );
    assert_eq!(
        (audit["Action"].as_str(), audit["Result"].as_str()),
        (Some("Audit"), Some("Passed"))
    );
    assert_eq!(
        network[2]["Resource"], "remoteip=127.0.0.1 port=7001 protocol=TCP",
        "the mapped address"
    );

    // Allow-list mode: only 7002; the rest falls to the default posture, block.
    let allow = policy_file(
        &scratch,
        "only-7002.yaml",
        "  network:\n    matchAddresses:\n      - cidr: 127.0.0.1/32\n        ports: [7002]\n        action: Allow\n",
    );
    let posture = scratch.join("posture.jsonl");
    let (ran, ran_stderr) = connect_probe(&[
        "--policy",
        &allow,
        "--label",
        "team=blue",
        "--alerts",
        posture.to_str().unwrap(),
    ]);
    assert_eq!(
        ran,
        ["7001:1", "7002:0", "7003:1", "mapped:1"],
        "{}",
        ran_stderr
    );
    let denied = network_alerts(&posture);
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert!(denied
        .iter()
        .all(|a| a["PolicyName"] == "DefaultPosture" && a["Action"] == "Block"));
}

#[test]
fn a_profile_carries_policies_and_an_audit_posture_for_the_network() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    policy_file(
        &scratch,
        "only-7002.yaml",
        "  network:\n    matchAddresses:\n      - cidr: 127.0.0.1/32\n        ports: [7002]\n        action: Allow\n",
    );
    let profile = scratch.join("watching.toml");
    let text = include_str!("../../../policies/profiles/untrusted.toml")
        .replace("name = \"untrusted\"", "name = \"watching\"")
        .replace("files = []", "files = [\"only-7002.yaml\"]")
        .replace("network = \"block\" }", "network = \"audit\" }");
    assert!(
        text.contains("network = \"audit\""),
        "the profile's [policy] changed shape"
    );
    std::fs::write(&profile, text).unwrap();
    let profile = profile.to_str().unwrap();

    let explained = moat()
        .args([
            "policy",
            "explain",
            "--profile",
            profile,
            "--label",
            "team=blue",
        ])
        .output()
        .unwrap();
    let explained = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.contains("file block, process block, network audit")
            && explained.contains("only-7002 (")
            && explained.contains("let through with an alert (default posture: audit)"),
        "{explained}"
    );

    let alerts = scratch.join("audit-posture.jsonl");
    let (ran, ran_stderr) = connect_probe(&[
        "--profile",
        profile,
        "--label",
        "team=blue",
        "--alerts",
        alerts.to_str().unwrap(),
    ]);
    assert_eq!(
        ran,
        ["7001:0", "7002:0", "7003:0", "mapped:0"],
        "an audit posture lets everything through: {}",
        ran_stderr
    );
    let audited = network_alerts(&alerts);
    assert_eq!(
        audited.len(),
        3,
        "7001, 7003 and the mapped 7001: {audited:#?}"
    );
    assert!(audited.iter().all(|a| a["PolicyName"] == "DefaultPosture"
        && a["Action"] == "Audit"
        && a["Result"] == "Passed"));

    // Control: the same policy with the block posture denies them (see
    // destination_rules_block_audit_and_allow_with_alerts); a label it does not select
    // leaves the profile's policy out.
    let (_, unselected) = connect_probe(&["--profile", profile, "--label", "team=red"]);
    assert!(
        unselected.contains("only-7002"),
        "reported as unmatched: {}",
        unselected
    );
}

#[test]
fn audit_rules_let_through_and_report_opens_and_executions() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "watch.yaml",
        "  action: Audit\n  severity: 3\n  tags: [watch]\n  file:\n    matchPaths:\n      - path: /etc/os-release\n    matchDirectories:\n      - dir: /etc/ssl/\n        recursive: true\n      - dir: /home/jovyan/\n  process:\n    matchPaths:\n      - path: /bin/cat\n",
    );
    let alerts = scratch.join("audit.jsonl");
    let workload = "sleep 1; cat /etc/os-release >/dev/null && cat /etc/ssl/openssl.cnf >/dev/null && echo x > ~/notes.txt && head -c1 /etc/hostname >/dev/null && echo done && sleep 1";
    let child = moat()
        .args([
            "run",
            "--policy",
            &policy,
            "--label",
            "team=blue",
            "--alerts",
            alerts.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            workload,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The host reads the same files while the sandbox runs: the marks see those opens
    // too, and they must not become the sandbox's alerts.
    std::thread::sleep(std::time::Duration::from_millis(400));
    for _ in 0..5 {
        std::fs::read("/etc/os-release").unwrap();
        let _ = std::process::Command::new("cat")
            .arg("/etc/os-release")
            .output();
    }
    let ran = child.wait_with_output().unwrap();
    assert_eq!(
        (
            ran.status.code(),
            String::from_utf8_lossy(&ran.stdout).trim()
        ),
        (Some(0), "done"),
        "Audit lets everything through: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let found: Vec<serde_json::Value> = alerts_in(&alerts)
        .into_iter()
        .filter(|a| a["Enforcer"] == "fanotify")
        .collect();
    let resources = |operation: &str| -> Vec<String> {
        found
            .iter()
            .filter(|a| a["Operation"] == operation)
            .map(|a| a["Resource"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        resources("File")
            .iter()
            .filter(|r| r.as_str() == "/usr/lib/os-release")
            .count(),
        1,
        "one open in the sandbox, none of the host's five: {found:#?}"
    );
    assert!(
        resources("File").contains(&"/etc/ssl/openssl.cnf".to_string()),
        "{found:#?}"
    );
    assert!(
        resources("File").contains(&"/home/jovyan/notes.txt".to_string()),
        "created during the run: {found:#?}"
    );
    assert!(
        !resources("File").contains(&"/etc/hostname".to_string()),
        "no rule names it"
    );
    assert_eq!(
        resources("Process"),
        ["/usr/bin/cat", "/usr/bin/cat"],
        "two cats, symlink resolved: {found:#?}"
    );
    for alert in &found {
        assert_eq!(alert["PolicyName"], "watch");
        assert_eq!(
            (alert["Action"].as_str(), alert["Result"].as_str()),
            (Some("Audit"), Some("Passed"))
        );
        assert_eq!(alert["Severity"], "3");
        assert_eq!(alert["Tags"], "watch");
        // Who acted is read from /proc when the event is read: a process already exited
        // and reaped by then is reported as unknown (PID 0, UID -1), never as another.
        match alert["PID"].as_i64().unwrap() {
            0 => assert_eq!(alert["UID"], -1, "{alert}"),
            pid => assert!(pid > 1 && alert["UID"] == 1000, "{alert}"),
        }
    }
    assert!(
        found.iter().any(|a| a["PID"].as_i64().unwrap() > 1),
        "the home write's shell is alive when its event is read: {found:#?}"
    );

    // Control: the same workload without the policy raises none of these.
    let quiet = scratch.join("quiet-audit.jsonl");
    let control = sh(&["--alerts", quiet.to_str().unwrap()], workload);
    assert_eq!(control.stdout.trim(), "done");
    assert!(alerts_in(&quiet)
        .iter()
        .all(|a| a["Enforcer"] != "fanotify"));
}

#[test]
fn a_protocol_allow_list_starts_when_moat_runs_in_its_own_pid_namespace() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let only_tcp = policy_file(
        &scratch,
        "only-tcp.yaml",
        "  network:\n    matchProtocols:\n      - protocol: tcp\n        action: Allow\n",
    );
    let probe = "import socket\nsocket.socket()\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print('udp ok')\nexcept OSError as e:\n    print('udp', e.errno)\n";
    // The sandbox's init sets up its interfaces with a UDP socket before the workload
    // runs; it is exempt as pid 1 of the sandbox, which holds wherever moat runs.
    let moat_path = env!("CARGO_BIN_EXE_moat");
    let run = [
        "run",
        "--policy",
        &only_tcp,
        "--label",
        "team=blue",
        "--",
        "python3",
        "-c",
        probe,
    ];
    let mut in_own_pid_namespace = std::process::Command::new("unshare");
    in_own_pid_namespace
        .args(["--pid", "--fork", "--mount-proc", moat_path])
        .args(run);
    let mut plain = moat();
    plain.args(run);
    for (name, mut command) in [
        ("plain", plain),
        ("in a pid namespace", in_own_pid_namespace),
    ] {
        let output = command.output().unwrap();
        assert_eq!(
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).trim().to_string()
            ),
            (Some(0), "udp 1".to_string()),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn capability_rules_hold_because_the_sandbox_has_no_capability() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "no-raw.yaml",
        "  capabilities:\n    matchCapabilities:\n      - capability: net_raw\n        action: Block\n      - capability: sys_admin\n        action: Block\n",
    );
    let explained = moat()
        .args(["policy", "explain", "-f", &policy, "--label", "team=blue"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&explained.stdout).contains("capabilities: 2 rule(s), satisfied"),
        "{}",
        String::from_utf8_lossy(&explained.stdout)
    );
    // Every capability set of every sandbox process is empty, so no capability a rule
    // names can be used; the control is root on the host, which holds them.
    let caps = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u";
    let ran = sh(&["--policy", &policy, "--label", "team=blue"], caps);
    assert_eq!(ran.stdout.trim(), "0000000000000000", "{}", ran.stderr);
    let host = std::process::Command::new("sh")
        .args(["-c", caps])
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "0000000000000000"
    );
    let raw = run(
        &["--policy", &policy, "--label", "team=blue"],
        &[
            "python3",
            "-c",
            "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\nexcept OSError as e:\n    print(e.errno)\n",
        ],
    );
    assert_eq!(
        raw.stdout.trim(),
        "1",
        "a raw socket needs net_raw: {}",
        raw.stderr
    );
}

#[test]
fn audit_rules_follow_the_file_not_its_name_and_see_files_mounted_in_a_directory() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // The sandbox's user makes the file (hard links need its owner).
    let made = sh(&["--home", home.to_str().unwrap()], "echo s > ~/secret");
    assert_eq!(made.status, 0, "{}", made.stderr);
    let policy = policy_file(
        &scratch,
        "watch-secret.yaml",
        "  action: Audit\n  file:\n    matchPaths:\n      - path: /home/jovyan/secret\n    matchDirectories:\n      - dir: /etc/\n",
    );
    let alerts = scratch.join("names.jsonl");
    // A hard link and a rename give the file other names; nsswitch.conf is a file moat
    // mounts into the sandbox's /etc, which a mark on the directory alone does not see.
    let ran = sh(
        &[
            "--home",
            home.to_str().unwrap(),
            "--policy",
            &policy,
            "--label",
            "team=blue",
            "--alerts",
            alerts.to_str().unwrap(),
        ],
        "cd ~ && ln secret link && cat link >/dev/null && mv secret renamed && cat renamed >/dev/null && cat /etc/nsswitch.conf >/dev/null && echo done",
    );
    assert_eq!(ran.stdout.trim(), "done", "{}", ran.stderr);
    let resources: Vec<String> = alerts_in(&alerts)
        .into_iter()
        .filter(|a| a["Enforcer"] == "fanotify")
        .map(|a| a["Resource"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "/home/jovyan/link",
        "/home/jovyan/renamed",
        "/etc/nsswitch.conf",
    ] {
        assert!(
            resources.iter().any(|r| r == expected),
            "{expected}: {resources:?}"
        );
    }
}

#[test]
fn syscalls_the_filter_refuses_are_alerts() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let alerts = scratch.join("seccomp.jsonl");
    // mount(2) is refused with EPERM; threads make libc try clone3 first, which answers
    // ENOSYS by design and must not be reported.
    let probe = "import ctypes, threading\nlibc = ctypes.CDLL(None, use_errno=True)\nt = threading.Thread(target=lambda: None); t.start(); t.join()\nprint(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n";
    let ran = run(
        &["--alerts", alerts.to_str().unwrap()],
        &["python3", "-c", probe],
    );
    assert_eq!(ran.stdout.trim(), "-1 1", "{}", ran.stderr);
    let found: Vec<serde_json::Value> = alerts_in(&alerts)
        .into_iter()
        .filter(|a| a["Enforcer"] == "seccomp")
        .collect();
    assert_eq!(found.len(), 1, "mount, and not clone3: {found:#?}");
    let alert = &found[0];
    assert_eq!(alert["Resource"], "mount");
    assert_eq!(alert["Operation"], "Syscall");
    assert_eq!(alert["Result"], "Operation not permitted");
    assert_eq!(alert["UID"], 1000, "from the record itself");
    // The sandbox pid is read from /proc when the record is read: 0 if the process is
    // gone by then, never another process's.
    let pid = alert["PID"].as_i64().unwrap();
    assert!(pid == 0 || pid > 1, "{alert}");
    assert!(alert["ProcessName"].as_str().unwrap().contains("python3"));

    // Control: a run that calls nothing refused raises no such alert.
    let quiet = scratch.join("quiet-seccomp.jsonl");
    let control = run(
        &["--alerts", quiet.to_str().unwrap()],
        &["python3", "-c", "print(1)"],
    );
    assert_eq!(control.stdout.trim(), "1");
    assert!(alerts_in(&quiet).iter().all(|a| a["Enforcer"] != "seccomp"));
}

/// Unmounts a bind mount a test made, however the test ends.
struct BindMount(std::path::PathBuf);

impl BindMount {
    /// Bind-mounts `source` onto `target` (which must exist).
    fn new(source: &std::path::Path, target: &std::path::Path) -> BindMount {
        let mounted = std::process::Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(target)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount --bind {source:?} {target:?}");
        BindMount(target.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A busybox image with an empty /data directory: the image and the directory.
fn image_with_data(scratch: &Scratch) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let image = busybox_image(scratch)?;
    let data = image.join("data");
    std::fs::create_dir_all(&data).unwrap();
    Some((image, data))
}

/// Runs `read` in `image` under `policy`: no TOPSECRET, and exactly `denied` refusals.
fn assert_hidden(image: &str, policy: &str, read: &str, denied: usize, what: &str) {
    let ran = sh(
        &[
            "--rootfs",
            image,
            "--policy",
            policy,
            "--label",
            "team=blue",
        ],
        read,
    );
    assert!(
        !ran.stdout.contains("TOPSECRET"),
        "{what}: {}{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(
        ran.stdout.matches("Permission denied").count(),
        denied,
        "{what}: {}",
        ran.stdout
    );
}

/// The control: `read` in `image` without a policy shows TOPSECRET `times` times.
fn assert_readable(image: &str, read: &str, times: usize) {
    let control = sh(&["--rootfs", image], read);
    assert_eq!(
        control.stdout.matches("TOPSECRET").count(),
        times,
        "control: {}",
        control.stdout
    );
}

#[test]
fn a_blocked_file_stays_blocked_when_another_path_is_bind_mounted_onto_it() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let Some((image, data)) = image_with_data(&scratch) else {
        return;
    };
    std::fs::write(data.join("secret"), "TOPSECRET\n").unwrap();
    std::fs::write(data.join("alias"), "").unwrap();
    let _unmount = BindMount::new(&data.join("secret"), &data.join("alias"));
    let policy = policy_file(
        &scratch,
        "secret.yaml",
        "  file:\n    matchPaths:\n      - path: /data/secret\n        action: Block\n",
    );
    let image = image.to_str().unwrap();
    let read = "cat /data/secret /data/alias 2>&1; true";
    // The alias is a mount point: its listing shows the placeholder's inode, not the
    // secret's, so only a stat tells that it is the blocked file.
    assert_hidden(image, &policy, read, 2, "file alias");
    assert_readable(image, read, 2);
}

#[test]
fn a_block_on_a_device_holds() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "no-zero.yaml",
        "  file:\n    matchPaths:\n      - path: /dev/zero\n        action: Block\n",
    );
    let read = "head -c1 /dev/zero >/dev/null && echo read";
    let ran = sh(&["--policy", &policy, "--label", "team=blue"], read);
    assert_eq!(ran.stdout.trim(), "", "{}", ran.stderr);
    assert_eq!(sh(&[], read).stdout.trim(), "read", "control");
}

#[test]
fn a_workload_cannot_forge_seccomp_alerts_for_allowed_syscalls() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let alerts = scratch.join("forged.jsonl");
    // The workload installs a logging filter of its own that refuses getppid, which the
    // profile allows, and calls it; then it is refused a mount by the profile.
    let forge = "import ctypes, os\nclass F(ctypes.Structure):\n    _fields_ = [('code', ctypes.c_ushort), ('jt', ctypes.c_ubyte), ('jf', ctypes.c_ubyte), ('k', ctypes.c_uint)]\nclass P(ctypes.Structure):\n    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.POINTER(F))]\nprog = (F * 4)(F(0x20, 0, 0, 0), F(0x15, 0, 1, 110), F(0x06, 0, 0, 0x00050001), F(0x06, 0, 0, 0x7fff0000))\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(317, 1, 2, ctypes.byref(P(4, prog))))\nfor _ in range(5):\n    libc.getppid()\nlibc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\n";
    let ran = run(
        &["--alerts", alerts.to_str().unwrap()],
        &["python3", "-c", forge],
    );
    assert_eq!(
        ran.stdout.trim(),
        "0",
        "the filter was installed: {}",
        ran.stderr
    );
    let refused: Vec<String> = alerts_in(&alerts)
        .into_iter()
        .filter(|a| a["Enforcer"] == "seccomp")
        .map(|a| a["Resource"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refused, ["mount"], "the profile's refusal only");
}

#[test]
fn seccomp_alerts_stay_with_their_sandbox_when_an_identity_runs_twice() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let identity = test_id("twice");
    let quiet = scratch.join("quiet-twin.jsonl");
    let loud = scratch.join("loud-twin.jsonl");
    // Two sandboxes of one identity share its ids; only one of them is refused a mount.
    let waiting = Running::spawn(moat().args([
        "run",
        "--identity",
        &identity,
        "--alerts",
        quiet.to_str().unwrap(),
        "--",
        "sleep",
        "3",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let probe = "import ctypes, time\nlibc = ctypes.CDLL(None)\nlibc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\ntime.sleep(0.5)\n";
    let ran = run(
        &["--identity", &identity, "--alerts", loud.to_str().unwrap()],
        &["python3", "-c", probe],
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    waiting.wait();
    let mounts = |path: &std::path::Path| {
        alerts_in(path)
            .iter()
            .filter(|a| a["Enforcer"] == "seccomp" && a["Resource"] == "mount")
            .count()
    };
    assert_eq!(mounts(&loud), 1, "the refused sandbox reports it");
    assert_eq!(
        mounts(&quiet),
        0,
        "the other sandbox of the same identity does not"
    );
}

#[test]
fn ten_thousand_rules_apply_and_bad_policies_refuse_the_run() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let mut body = String::from("  action: Block\n  file:\n    matchPaths:\n");
    for i in 0..10_000 {
        body.push_str(&format!("      - path: /srv/data/file{i}\n"));
    }
    body.push_str("      - path: /etc/os-release\n");
    let many = policy_file(&scratch, "many.yaml", &body);
    let ran = sh(
        &["--policy", &many, "--label", "team=blue"],
        "head -c0 /etc/os-release 2>/dev/null || echo blocked",
    );
    assert_eq!(ran.stdout.trim(), "blocked", "{}", ran.stderr);

    let bad = policy_file(
        &scratch,
        "bad.yaml",
        "  process:\n    matchPaths:\n      - path: usr/bin/apt\n",
    );
    let id = test_id("badpolicy");
    let refused = run(
        &["--id", &id, "--policy", &bad, "--label", "team=blue"],
        &["true"],
    );
    assert_eq!(refused.status, 125);
    assert!(
        refused.stderr.contains("must be absolute") && refused.stderr.contains("bad.yaml:"),
        "{}",
        refused.stderr
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn explain_names_the_mode_and_mechanism_of_every_rule() {
    let scratch = Scratch::new();
    let allow = policy_file(
        &scratch,
        "allow.yaml",
        "  action: Allow\n  process:\n    matchPaths:\n      - path: /usr/bin/python3\n",
    );
    let output = moat()
        .args(["policy", "explain", "-f", &allow, "--label", "team=blue"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("process: ALLOW-LIST mode"), "{text}");
    assert!(
        text.contains("Allow /usr/bin/python3 [allow]: Landlock grants execute here only"),
        "{text}"
    );
    assert!(text.contains("file: block-list mode"), "{text}");
    let other = moat()
        .args(["policy", "explain", "-f", &allow, "--label", "team=red"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&other.stdout).contains("allow ("),
        "{}",
        String::from_utf8_lossy(&other.stdout)
    );
    assert!(String::from_utf8_lossy(&other.stdout).contains("selects nothing here"));
}

fn alerts_in(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn block_rules_raise_alerts_with_kubearmor_fields() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "alerting.yaml",
        "  severity: 7\n  tags: [jupyterhub]\n  message: package manager or os-release touched\n  action: Block\n  process:\n    matchPaths:\n      - path: /usr/bin/apt\n  file:\n    matchPaths:\n      - path: /etc/os-release\n",
    );
    let alerts = scratch.join("alerts.jsonl");
    let ran = sh(
        &[
            "--policy",
            &policy,
            "--label",
            "team=blue",
            "--alerts",
            alerts.to_str().unwrap(),
        ],
        "cat /etc/os-release >/dev/null 2>&1; apt --version >/dev/null 2>&1; true",
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    let found = alerts_in(&alerts);
    let file = found
        .iter()
        .find(|a| a["Operation"] == "File")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(file["PolicyName"], "alerting");
    assert_eq!(file["Resource"], "/usr/lib/os-release", "symlinks resolved");
    assert_eq!(file["Severity"], "7");
    assert_eq!(file["Tags"], "jupyterhub");
    assert_eq!(file["Message"], "package manager or os-release touched");
    assert_eq!(file["Labels"], "team=blue");
    assert_eq!(
        (
            file["Action"].as_str(),
            file["Result"].as_str(),
            file["Enforcer"].as_str()
        ),
        (Some("Block"), Some("Permission denied"), Some("Landlock"))
    );
    assert_eq!(file["UID"], 1000);
    assert!(file["HostPID"].as_i64().unwrap() > 0 && file["Type"] == "MatchedPolicy");
    let process = found
        .iter()
        .find(|a| a["Operation"] == "Process")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(process["Resource"], "/usr/bin/apt");

    // Control: the same actions without the policy raise no alert for these resources.
    let quiet = scratch.join("quiet.jsonl");
    sh(
        &["--alerts", quiet.to_str().unwrap()],
        "cat /etc/os-release >/dev/null; apt --version >/dev/null; true",
    );
    assert!(alerts_in(&quiet)
        .iter()
        .all(|a| a["Resource"] != "/usr/lib/os-release" && a["Resource"] != "/usr/bin/apt"));
}

/// A python loop of `n` opens of `path`, printing how many were refused.
fn denied_opens(path: &str, n: u32) -> String {
    format!("denied = 0\nfor _ in range({n}):\n    try:\n        open('{path}')\n    except PermissionError:\n        denied += 1\nprint(denied)\n")
}

#[test]
fn a_flood_of_denials_is_counted_to_the_last_one() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "flood.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /etc/os-release\n",
    );
    let alerts = scratch.join("flood.jsonl");
    let started = std::time::Instant::now();
    let ran = run(
        &[
            "--policy",
            &policy,
            "--label",
            "team=blue",
            "--alerts",
            alerts.to_str().unwrap(),
        ],
        &["python3", "-c", &denied_opens("/etc/os-release", 100_000)],
    );
    let seconds = started.elapsed().as_secs();
    assert_eq!(ran.stdout.trim(), "100000", "{}", ran.stderr);
    let found = alerts_in(&alerts);
    let matched = found
        .iter()
        .filter(|a| a["Type"] == "MatchedPolicy" && a["Resource"] == "/usr/lib/os-release")
        .count() as u64;
    // Whatever was not delivered must be accounted for, never silently lost: held back by
    // the rate limit, or missed on the way.
    let held_back = counted(&found, "held_back");
    let missed = counted(&found, "events_missed");
    assert!(
        matched + held_back + missed >= 100_000,
        "{matched} alerts + {held_back} held back + {missed} reported missing < 100000"
    );
    assert!(matched + held_back <= 100_000);
    // The default limit: a burst of 100, then 10 a second.
    assert!(
        matched <= 100 + 10 * (seconds + 1),
        "{matched} alerts written in {seconds} s"
    );
}

#[test]
fn the_rate_limit_holds_back_repeats_but_no_new_resource_and_can_be_turned_off() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "repeats.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /etc/os-release\n      - path: /etc/hostname\n",
    );
    // 2,000 denied opens of one file, then one of another file of the same rule family.
    let script = format!(
        "{}open_ = open\ntry:\n    open_('/etc/hostname')\nexcept PermissionError:\n    print('hostname denied')\n",
        denied_opens("/etc/os-release", 2000)
    );
    let flood = |extra: &[&str], name: &str| {
        let alerts = scratch.join(name);
        let mut options = vec![
            "--policy",
            &policy,
            "--label",
            "team=blue",
            "--alerts",
            alerts.to_str().unwrap(),
        ];
        options.extend_from_slice(extra);
        let ran = run(&options, &["python3", "-c", &script]);
        assert_eq!(ran.stdout, "2000\nhostname denied\n", "{}", ran.stderr);
        let found = alerts_in(&alerts);
        let of = |resource: &str| {
            found
                .iter()
                .filter(|a| a["Type"] == "MatchedPolicy" && a["Resource"] == resource)
                .count() as u64
        };
        (of("/usr/lib/os-release"), of("/etc/hostname"), found)
    };

    let (repeats, other, found) = flood(&["--alert-burst", "50"], "limited.jsonl");
    assert!(repeats < 2000, "{repeats} alerts: nothing was held back");
    let held_back = counted(&found, "held_back");
    assert_eq!(repeats + held_back, 2000, "{found:#?}");
    let event = found
        .iter()
        .find(|a| a["Operation"] == "AlertThreshold")
        .unwrap();
    assert_eq!(event["PolicyName"], "repeats");
    assert_eq!(event["Action"], "Block");
    assert_eq!(event["Resource"], "File");
    // The flood did not hide the first attempt on another file.
    assert_eq!(other, 1);

    // The control: with no limit every denial is written.
    let (repeats, other, found) = flood(&["--alert-rate", "0"], "unlimited.jsonl");
    assert_eq!((repeats, other), (2000, 1));
    assert_eq!(counted(&found, "held_back"), 0);
}

#[test]
fn an_alert_reaches_the_file_while_the_sandbox_still_runs() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "live.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /etc/os-release\n",
    );
    let alerts = scratch.join("live.jsonl");
    // The workload waits, after its denied open, until the test has seen the alert.
    let home = scratch.join("home");
    open_home(&home, &[]);
    let seen = home.join("seen");
    let mut child = moat()
        .args(["run", "--policy", &policy, "--label", "team=blue", "--alerts"])
        .arg(&alerts)
        .arg("--home")
        .arg(&home)
        .args([
            "--",
            "sh",
            "-c",
            "cat /etc/os-release 2>/dev/null; for i in $(seq 100); do [ -e /home/jovyan/seen ] && exit 0; sleep 0.1; done; exit 3",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    let mut found = Vec::new();
    while std::time::Instant::now() < deadline && found.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        found = alerts_in(&alerts);
    }
    std::fs::write(&seen, "").unwrap();
    let status = child.wait().unwrap();
    assert!(
        !found.is_empty(),
        "no alert in the file while the sandbox ran"
    );
    assert_eq!(found[0]["Resource"], "/usr/lib/os-release");
    // The workload was still waiting when the alert came: it ends by seeing the mark.
    assert_eq!(status.code(), Some(0));
}

#[test]
fn blocks_hold_for_hard_links_and_for_paths_created_later() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let policy = policy_file(
        &scratch,
        "later.yaml",
        "  action: Block\n  process:\n    matchPaths:\n      - path: /usr/bin/perl\n  file:\n    matchDirectories:\n      - dir: /tmp/secret/\n        recursive: true\n",
    );
    let script = "perl -e 1 2>/dev/null; echo perl=$?; /usr/bin/perl5.36.0 -e 1 2>/dev/null; echo hardlink=$?; \
                  mkdir -p /tmp/secret 2>/dev/null && echo x > /tmp/secret/x 2>/dev/null && echo created; true";
    let blocked = sh(&["--policy", &policy, "--label", "team=blue"], script);
    assert_eq!(
        blocked.stdout.lines().collect::<Vec<_>>(),
        ["perl=126", "hardlink=126"],
        "{}",
        blocked.stderr
    );
    let free = sh(&[], script);
    assert_eq!(
        free.stdout.lines().collect::<Vec<_>>(),
        ["perl=0", "hardlink=0", "created"]
    );
}

/// The cache entry (under /run/moat/policy-cache) of policy file `file`, if any.
fn cached_entry(file: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/run/moat/policy-cache")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|path| {
            std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|entry| entry["file"] == file)
        })
}

/// A policy's parse is cached once a sandbox with it has run a moment; the next start
/// reads the cache and enforces the same, and an edit to the file takes effect at once.
#[test]
fn cached_policy_parses_enforce_the_same_and_follow_edits() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let blocking = "  action: Block\n  file:\n    matchPaths:\n      - path: /etc/os-release\n";
    let policy = policy_file(&scratch, "cached.yaml", blocking);
    let script = "head -c0 /etc/os-release 2>/dev/null && echo readable || echo blocked";
    let options = ["--policy", policy.as_str(), "--label", "team=blue"];
    assert!(cached_entry(&policy).is_none());

    // Long enough for the parse to be stored (moat waits 250 ms into a run).
    let first = sh(&options, &format!("sleep 1; {script}"));
    assert_eq!(first.stdout, "blocked\n", "{}", first.stderr);
    let entry = cached_entry(&policy).expect("the parse is cached");
    let meta = std::fs::metadata(&entry).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::mode(&meta) & 0o777,
        0o600,
        "only root reads the cache"
    );

    let cached = sh(&options, script);
    assert_eq!(cached.stdout, "blocked\n", "{}", cached.stderr);
    assert!(
        std::fs::metadata(&entry).unwrap().modified().unwrap() > meta.modified().unwrap(),
        "the second start read the entry (a hit marks it used)"
    );

    // Edited: the same path, other text, misses the cache.
    std::fs::write(
        &policy,
        std::fs::read_to_string(&policy)
            .unwrap()
            .replace("os-release", "hostname"),
    )
    .unwrap();
    let edited = sh(&options, script);
    assert_eq!(edited.stdout, "readable\n", "{}", edited.stderr);
    let _ = std::fs::remove_file(entry);
}

/// A Block rule on a path that does not exist yet, in a directory that does not exist
/// either, holds: its nearest existing directory is carved, so the workload cannot create
/// it, while what exists around it stays usable (files new to a carved directory get
/// nothing: docs/policy.md).
#[test]
fn block_rules_on_paths_that_do_not_exist_yet_hold_when_created() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    let policy = policy_file(
        &scratch,
        "future.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /home/jovyan/later/inner/secret\n      - path: /home/jovyan/later/inner/other\n",
    );
    let script = "mkdir -p ~/later/inner 2>/dev/null && echo made-dir; \
        echo x > ~/later/inner/secret 2>/dev/null && echo wrote-secret; \
        echo y >> ~/notes.txt && echo wrote-notes";
    let home_arg = home.to_str().unwrap();
    let fresh_home = || open_home(&home, &[("notes.txt", "notes\n")]);
    fresh_home();
    let blocked = sh(&with_policy(home_arg, &policy), script);
    assert_eq!(
        blocked.stdout.lines().collect::<Vec<_>>(),
        ["wrote-notes"],
        "the blocked path must not come into being: {}",
        blocked.stderr
    );
    fresh_home();
    let free = sh(&["--home", home_arg], script);
    assert_eq!(
        free.stdout.lines().collect::<Vec<_>>(),
        ["made-dir", "wrote-secret", "wrote-notes"],
        "control: {}",
        free.stderr
    );
}

/// A directory bind-mounted onto another name is the same inode: a grant on the alias
/// would be a grant on the blocked directory's contents. Both for a file Block inside the
/// directory and a recursive directory Block, the alias is carved as the directory.
#[test]
fn a_blocked_directory_stays_blocked_when_it_is_bind_mounted_elsewhere() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let Some((image, data)) = image_with_data(&scratch) else {
        return;
    };
    std::fs::create_dir_all(data.join("dir1")).unwrap();
    std::fs::create_dir_all(data.join("dir2")).unwrap();
    std::fs::write(data.join("dir1/secret"), "TOPSECRET\n").unwrap();
    std::fs::write(data.join("dir1/other"), "OTHER\n").unwrap();
    let _unmount = BindMount::new(&data.join("dir1"), &data.join("dir2"));
    // And a file of the directory bind-mounted out of it.
    std::fs::write(data.join("fileout"), "").unwrap();
    let _unmount_file = BindMount::new(&data.join("dir1/secret"), &data.join("fileout"));
    let image = image.to_str().unwrap();
    let read = "cat /data/dir1/secret /data/dir2/secret /data/fileout /data/dir1/other 2>&1; true";
    // A file Block in the directory refuses the secret under its three names; a recursive
    // directory Block refuses everything in it.
    for (name, rule, denied) in [
        (
            "file-in-dir.yaml",
            "  file:\n    matchPaths:\n      - path: /data/dir1/secret\n        action: Block\n",
            3,
        ),
        (
            "dir.yaml",
            "  file:\n    matchDirectories:\n      - dir: /data/dir1/\n        recursive: true\n        action: Block\n",
            4,
        ),
    ] {
        let policy = policy_file(&scratch, name, rule);
        assert_hidden(image, &policy, read, denied, name);
    }
    assert_readable(image, read, 3);
}

/// A rule's path through a symlink that points nowhere yet (planted in a persistent home)
/// is followed to where it points, so the workload cannot create the target and read it
/// through the blocked path; and `..` after a directory that does not exist is resolved,
/// not dropped.
#[test]
fn block_rules_follow_dangling_symlinks_and_dot_dot() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    open_home(&home, &[("secret", "HOMESECRET\n")]);
    std::os::unix::fs::symlink("/tmp/real", home.join("link")).unwrap();
    let policy = policy_file(
        &scratch,
        "dangling.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /home/jovyan/link/secret\n      - path: /home/jovyan/newdir/../secret\n",
    );
    let script = "mkdir -p /tmp/real 2>/dev/null; echo LEAK > /tmp/real/secret 2>/dev/null; \
        cat ~/link/secret 2>/dev/null; cat ~/secret 2>/dev/null; echo done";
    let home_arg = home.to_str().unwrap();
    let blocked = sh(&with_policy(home_arg, &policy), script);
    assert_eq!(blocked.stdout, "done\n", "{}", blocked.stderr);
    let free = sh(&["--home", home_arg], script);
    assert_eq!(
        free.stdout, "LEAK\nHOMESECRET\ndone\n",
        "control: {}",
        free.stderr
    );
}

/// A Block rule on a device reached through a symlink (/dev/ptmx -> pts/ptmx) or inside
/// a device directory (/dev/pts) holds; without it, the same pseudo-terminal opens.
#[test]
fn block_rules_on_devices_behind_symlinks_and_in_device_directories_hold() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let script = "python3 -c 'import os; os.openpty(); print(\"opened\")' 2>&1 | tail -1";
    for (name, path) in [
        ("ptmx.yaml", "/dev/ptmx"),
        ("pts-ptmx.yaml", "/dev/pts/ptmx"),
    ] {
        let policy = policy_file(
            &scratch,
            name,
            &format!("  action: Block\n  file:\n    matchPaths:\n      - path: {path}\n"),
        );
        let blocked = sh(&["--policy", &policy, "--label", "team=blue"], script);
        assert!(
            blocked.stdout.contains("PermissionError"),
            "{path}: {}{}",
            blocked.stdout,
            blocked.stderr
        );
    }
    let free = sh(&[], script);
    assert_eq!(free.stdout, "opened\n", "control: {}", free.stderr);
}

/// A `matchPaths` Block rule that names a directory would deny nothing inside it: the
/// start fails and says so, and the same rule as `matchDirectories` applies.
#[test]
fn a_match_paths_rule_naming_a_directory_is_an_error() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let wrong = policy_file(
        &scratch,
        "wrong.yaml",
        "  action: Block\n  file:\n    matchPaths:\n      - path: /etc/ssl\n",
    );
    let ran = sh(&["--policy", &wrong, "--label", "team=blue"], "echo ran");
    assert_ne!(ran.status, 0);
    assert!(!ran.stdout.contains("ran"), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("/etc/ssl") && ran.stderr.contains("use matchDirectories"),
        "{}",
        ran.stderr
    );
    let right = policy_file(
        &scratch,
        "right.yaml",
        "  action: Block\n  file:\n    matchDirectories:\n      - dir: /etc/ssl/\n        recursive: true\n",
    );
    let ran = sh(
        &["--policy", &right, "--label", "team=blue"],
        "f=$(find /etc/ssl -type f | head -n 1); [ -n \"$f\" ] && { cat \"$f\" >/dev/null 2>&1 || echo blocked; }",
    );
    assert_eq!(ran.stdout, "blocked\n", "{}", ran.stderr);
}

/// A file of a blocked directory hard-linked outside it (left in a persistent home by an
/// earlier run) is denied under both names: a grant on the link would be a grant on the
/// blocked file's inode.
#[test]
fn a_hard_link_of_a_file_in_a_blocked_directory_is_blocked_too() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    open_home(&home, &[("secretdir/key", "KEY\n"), ("notes", "NOTES\n")]);
    std::fs::hard_link(home.join("secretdir/key"), home.join("link")).unwrap();
    let policy = policy_file(
        &scratch,
        "secretdir.yaml",
        "  action: Block\n  file:\n    matchDirectories:\n      - dir: /home/jovyan/secretdir/\n        recursive: true\n",
    );
    let script = "cat ~/secretdir/key ~/link ~/notes 2>/dev/null; true";
    let home_arg = home.to_str().unwrap();
    let blocked = sh(&with_policy(home_arg, &policy), script);
    assert_eq!(blocked.stdout, "NOTES\n", "{}", blocked.stderr);
    let free = sh(&["--home", home_arg], script);
    assert_eq!(free.stdout, "KEY\nKEY\nNOTES\n", "control: {}", free.stderr);
}
