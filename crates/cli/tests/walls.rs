//! One test per wall of the `untrusted` profile: each tries to get through from inside a
//! real sandbox and asserts the expected error, beside a control showing the same action
//! succeeds without that wall (on the host, or in a place the wall does not cover).

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;

use common::*;

fn uid_map_base(text: &str) -> u64 {
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().expect("uid_map number"))
        .collect();
    assert_eq!(fields.len(), 3, "one mapping expected: {text:?}");
    assert_eq!(fields[0], 0, "{text:?}");
    assert_eq!(fields[2], 65536, "{text:?}");
    fields[1]
}

#[test]
fn identity_is_an_unprivileged_range_of_its_own() {
    if !require_root() {
        return;
    }
    let host_map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert!(
        host_map.split_whitespace().nth(1) == Some("0"),
        "control: the host maps uid 0: {host_map}"
    );

    let first = sh(&[], "id -u; id -g; id -un; cat /proc/self/uid_map");
    assert_eq!(first.status, 0, "{}", first.stderr);
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(&lines[..3], ["1000", "1000", "jovyan"]);
    let base = uid_map_base(lines[3]);
    assert!(
        base >= 1 << 30,
        "host ids start above every distribution range: {base}"
    );

    // Two sandboxes alive at the same time hold different ranges.
    let slow = moat()
        .args(["run", "--", "sh", "-c", "cat /proc/self/uid_map; sleep 3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let second = sh(&[], "cat /proc/self/uid_map");
    let slow_out = slow.wait_with_output().unwrap();
    let slow_base = uid_map_base(String::from_utf8_lossy(&slow_out.stdout).trim());
    assert_ne!(
        uid_map_base(second.stdout.trim()),
        slow_base,
        "concurrent sandboxes share a range"
    );
}

#[test]
fn named_identity_keeps_its_range_and_owns_its_home() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("alice");
    let identity = test_id("alice");
    let home_arg = home.to_str().unwrap();
    let first = sh(
        &["--identity", &identity, "--home", home_arg],
        "echo data > $HOME/notes; cat /proc/self/uid_map",
    );
    assert_eq!(first.status, 0, "{}", first.stderr);
    let base = uid_map_base(first.stdout.trim());
    let meta = std::fs::metadata(home.join("notes")).unwrap();
    assert_eq!(
        u64::from(meta.uid()),
        base + 1000,
        "files are owned by the mapped uid on the host"
    );
    assert_eq!(
        u64::from(std::fs::metadata(&home).unwrap().uid()),
        base + 1000
    );

    let again = sh(
        &["--identity", &identity, "--home", home_arg],
        "cat $HOME/notes; cat /proc/self/uid_map",
    );
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(again.stdout.starts_with("data\n"), "{}", again.stdout);
    assert_eq!(
        uid_map_base(again.stdout.lines().nth(1).unwrap()),
        base,
        "same identity, same range"
    );

    // Control: an anonymous run gets another range.
    let anonymous = sh(&[], "cat /proc/self/uid_map");
    assert_ne!(uid_map_base(anonymous.stdout.trim()), base);
}

#[test]
fn pid_namespace_hides_host_processes() {
    if !require_root() {
        return;
    }
    let inside = sh(&[], "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'");
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    let lines: Vec<&str> = inside.stdout.lines().collect();
    assert_eq!(lines[0], "moat-init", "a tiny init of moat's is pid 1");
    let visible: usize = lines[1].parse().unwrap();
    assert!(
        visible <= 6,
        "only the sandbox's processes are visible, saw {visible}"
    );
    let host = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count();
    assert!(
        host > visible,
        "control: the host has more processes ({host})"
    );
}

#[test]
fn host_name_and_network_are_the_sandbox_own() {
    if !require_root() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Control: the host's loopback service answers from the host.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let script = format!(
        "import socket\nprint(socket.gethostname())\nprint(open('/proc/net/dev').read().count(':'))\n\
         s = socket.socket()\ntry:\n    s.connect(('127.0.0.1', {port})); print('reached')\n\
         except OSError as e:\n    print(type(e).__name__)\n"
    );
    let inside = run(&["--id", &test_id("net")], &["python3", "-c", &script]);
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    let lines: Vec<&str> = inside.stdout.lines().collect();
    assert!(lines[0].starts_with("moat-"), "{}", lines[0]);
    assert_ne!(
        lines[0],
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    assert_eq!(lines[1], "1", "only loopback exists inside");
    assert_eq!(
        lines[2], "ConnectionRefusedError",
        "the host's loopback is not the sandbox's"
    );
}

#[test]
fn system_is_read_only_home_and_tmp_are_writable() {
    if !require_root() {
        return;
    }
    let inside = sh(
        &[],
        "for p in /usr/x /etc/x /x /bin/x /sys/fs/cgroup/memory/x; do touch $p 2>&1 | sed 's/.*: //'; done; \
         touch $HOME/x && echo home-ok; touch /tmp/x && echo tmp-ok; touch /dev/shm/x && echo shm-ok",
    );
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    let lines: Vec<&str> = inside.stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        ["Read-only file system"; 5],
        "{}",
        inside.stdout
    );
    assert_eq!(
        &lines[5..],
        ["home-ok", "tmp-ok", "shm-ok"],
        "control: writable places work"
    );
}

#[test]
fn host_data_is_not_in_the_sandbox() {
    if !require_root() {
        return;
    }
    let marker = tempfile::Builder::new()
        .prefix("moat-host-marker-")
        .tempfile_in("/tmp")
        .unwrap();
    let marker_name = marker
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Control: these exist on the host.
    for path in ["/etc/shadow", "/root", "/var/lib", "/etc/passwd"] {
        assert!(
            std::path::Path::new(path).exists(),
            "control: {path} exists on the host"
        );
    }
    let inside = sh(
        &[],
        &format!(
            "for p in /etc/shadow /etc/gshadow /etc/sudoers /etc/ssh /root /var/lib /srv /run /mnt /tmp/{marker_name}; do \
             test -e $p && echo present $p; done; ls /home; grep -c . /etc/passwd"
        ),
    );
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    assert!(!inside.stdout.contains("present"), "{}", inside.stdout);
    let lines: Vec<&str> = inside.stdout.lines().collect();
    assert_eq!(
        lines,
        ["jovyan", "3"],
        "only moat's own passwd (root, nobody, jovyan)"
    );
}

#[test]
fn proc_and_mountinfo_do_not_leak_the_host() {
    if !require_root() {
        return;
    }
    for path in ["/proc/kallsyms", "/proc/interrupts", "/proc/iomem"] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(!text.is_empty(), "control: {path} has content on the host");
    }
    let inside = sh(
        &[],
        "for f in kallsyms kcore keys timer_list sched_debug interrupts slabinfo vmallocinfo modules \
         iomem cmdline; do test -e /proc/$f && printf '%s %s\\n' $f $(cat /proc/$f 2>/dev/null | wc -c); done; \
         echo 1 > /proc/sysrq-trigger && echo sysrq-writable; \
         echo x > /proc/sys/kernel/hostname && echo sysctl-writable; \
         find /proc/irq /proc/bus -mindepth 1 | wc -l; \
         awk '{print $4}' /proc/self/mountinfo | grep -c -e /run/moat -e /var/lib -e '^/home' -e '^/root' -e '^/tmp'",
    );
    let lines: Vec<&str> = inside.stdout.lines().collect();
    for line in &lines[..lines.len() - 2] {
        assert!(
            line.ends_with(" 0"),
            "masked /proc file has content: {line}"
        );
    }
    assert!(!inside.stdout.contains("writable"), "{}", inside.stdout);
    assert_eq!(
        lines[lines.len() - 2],
        "0",
        "/proc/irq and /proc/bus are empty: {}",
        inside.stdout
    );
    assert_eq!(
        lines[lines.len() - 1],
        "0",
        "mountinfo names no host data path"
    );
}

#[test]
fn dev_holds_only_the_minimal_set() {
    if !require_root() {
        return;
    }
    assert!(
        std::path::Path::new("/dev/kvm").exists() || std::path::Path::new("/dev/vda").exists(),
        "control: the host has devices the sandbox must not"
    );
    let inside = sh(&[], "ls -A /dev");
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    let allowed = [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
        "stdout", "stderr", "console", "core", "mqueue",
    ];
    for entry in inside.stdout.split_whitespace() {
        assert!(allowed.contains(&entry), "unexpected device /dev/{entry}");
    }
}

#[test]
fn tmp_is_private_and_size_capped() {
    if !require_root() {
        return;
    }
    let inside = sh(
        &["--tmp-size", "4M"],
        "dd if=/dev/zero of=/tmp/small bs=1M count=2 2>/dev/null && echo small-ok; \
         dd if=/dev/zero of=/tmp/big bs=1M count=8 2>&1 | grep -o 'No space left on device'",
    );
    assert_eq!(
        inside.stdout.lines().collect::<Vec<_>>(),
        ["small-ok", "No space left on device"],
        "{}",
        inside.stderr
    );
}

#[test]
fn tmp_inodes_are_capped_like_its_size() {
    if !require_root() {
        return;
    }
    // 4M of /tmp holds 1024 inodes: empty files (no pages) cannot exhaust the host's.
    let fill = "i=0; while [ $i -lt 1500 ]; do true > /tmp/f$i 2>/dev/null || break; i=$((i+1)); done; echo $i";
    let capped = sh(&["--tmp-size", "4M"], fill);
    let created: u32 = capped.stdout.trim().parse().unwrap();
    assert!(
        (900..1100).contains(&created),
        "{created} files fit in 4M of /tmp"
    );
    // Control: with room for them, all 1500 are created.
    assert_eq!(sh(&["--tmp-size", "8M"], fill).stdout.trim(), "1500");
}

#[test]
fn syscall_filter_denies_with_errors_not_kills() {
    if !require_root() {
        return;
    }
    // Control: on the host every one of these calls reaches the kernel.
    let host = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SYSCALL_BATTERY])
        .output()
        .unwrap();
    assert!(
        host.status.success(),
        "{}",
        String::from_utf8_lossy(&host.stderr)
    );
    let host = parse_battery(&String::from_utf8_lossy(&host.stdout));
    let inside = run(&[], &["python3", "-c", SYSCALL_BATTERY]);
    assert_eq!(
        inside.status, 0,
        "denials must be errors the program survives: {}",
        inside.stderr
    );
    let inside = parse_battery(&inside.stdout);
    for (name, expected) in MUST_DENY {
        assert_eq!(inside[*name], *expected, "{name} inside the sandbox");
        assert_ne!(host[*name], *expected, "control: {name} on the host");
    }
    for name in [
        "allowed_tcgets",
        "allowed_socket_tcp",
        "allowed_socket_unix",
        "allowed_socket_udp6",
        "allowed_socket_tcp_explicit",
        "allowed_socket_netlink_route",
        "allowed_thread",
    ] {
        assert_eq!(inside[name], "ok", "{name} must keep working");
    }
}

#[test]
fn no_capabilities_no_new_privileges_locked_securebits() {
    if !require_root() {
        return;
    }
    let host_status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        host_status.contains("CapEff:\t000001ffffffffff")
            || !host_status.contains("CapEff:\t0000000000000000"),
        "control: the test itself runs with capabilities"
    );
    let script = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n\
        print(open('/proc/self/status').read())\nprint('securebits', hex(libc.prctl(27, 0, 0, 0, 0)))\n\
        try:\n    os.setuid(0); print('setuid worked')\nexcept PermissionError:\n    print('setuid denied')\n";
    let inside = run(&[], &["python3", "-c", script]);
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            inside.stdout.contains(&format!("{set}:\t0000000000000000")),
            "{set} not empty:\n{}",
            inside.stdout
        );
    }
    assert!(inside.stdout.contains("NoNewPrivs:\t1"));
    assert!(inside.stdout.contains("Seccomp:\t2"));
    assert!(
        inside.stdout.contains("securebits 0xef"),
        "{}",
        inside.stdout
    );
    assert!(inside.stdout.contains("setuid denied"));
    let limits = sh(&[], "ulimit -c; ulimit -n");
    assert_eq!(limits.stdout.lines().collect::<Vec<_>>(), ["0", "4096"]);
}

#[test]
fn every_mount_is_nosuid() {
    if !require_root() {
        return;
    }
    let inside = run(&[], &["cat", "/proc/self/mountinfo"]);
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    for line in inside.stdout.lines() {
        let options = line.split_whitespace().nth(5).unwrap_or("");
        let is_device_bind = line.contains(" devtmpfs ");
        // /proc entries hidden by an empty read-only tmpfs hold no file at all.
        let is_empty_mask =
            line.contains(" /proc/") && options.starts_with("ro") && line.contains(" - tmpfs ");
        assert!(
            is_device_bind || is_empty_mask || options.contains("nosuid"),
            "mount without nosuid: {line}"
        );
    }
    // Control: the host has setuid binaries these mounts neutralise.
    let su = std::fs::metadata("/usr/bin/su")
        .or_else(|_| std::fs::metadata("/usr/bin/passwd"))
        .unwrap();
    assert_ne!(
        su.mode() & 0o4000,
        0,
        "control: a setuid binary exists on the host"
    );
}

#[test]
fn cgroup_limits_are_set_and_visible_inside() {
    if !require_root() {
        return;
    }
    let inside = sh(
        &["--memory", "300M", "--cpus", "0.5", "--pids", "77"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || \
         cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max",
    );
    assert_eq!(inside.status, 0, "{}", inside.stderr);
    let text = inside.stdout.split_whitespace().collect::<Vec<_>>();
    assert!(text == ["314572800", "77", "50000", "100000"], "{text:?}");
}

#[test]
fn pids_limit_stops_fork_bombs() {
    if !require_root() {
        return;
    }
    let script = "import os, time\nok = 0\npids = []\nfor _ in range(40):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(5); os._exit(0)\n    pids.append(pid)\nprint(len(pids))\nfor p in pids:\n    os.kill(p, 9)\n";
    let limited = run(&["--pids", "16"], &["python3", "-c", script]);
    let forked: usize = limited.stdout.trim().parse().unwrap_or(999);
    assert!(
        forked < 16,
        "the pids limit must stop forks: {forked} forked"
    );
    let control = run(&["--pids", "64"], &["python3", "-c", script]);
    assert_eq!(
        control.stdout.trim(),
        "40",
        "control: with room, all forks work: {}",
        control.stderr
    );
}

#[test]
fn memory_limit_kills_and_moat_says_why() {
    if !require_root() {
        return;
    }
    let hog = "x = bytearray(256 << 20); x[::4096] = b'a' * len(x[::4096]); print('survived')";
    let scratch = Scratch::new();
    let alerts = scratch.join("oom.jsonl");
    let limited = run(
        &["--memory", "64M", "--alerts", alerts.to_str().unwrap()],
        &["python3", "-c", hog],
    );
    assert_eq!(limited.status, 137, "{}", limited.stderr);
    assert!(
        limited.stderr.contains("ran out of memory"),
        "{}",
        limited.stderr
    );
    let oom: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|a: &serde_json::Value| a["Result"] == "Killed")
        .collect();
    assert_eq!(oom.len(), 1, "one out-of-memory alert: {oom:#?}");
    assert_eq!(oom[0]["Resource"], "memory.limit=64MiB");
    assert_eq!(oom[0]["Enforcer"], "cgroup");
    assert!(oom[0]["Data"].as_str().unwrap().starts_with("oom_kills="));
    let quiet = scratch.join("no-oom.jsonl");
    let control = run(
        &["--memory", "512M", "--alerts", quiet.to_str().unwrap()],
        &["python3", "-c", hog],
    );
    assert_eq!(
        control.status, 0,
        "control: enough memory: {}",
        control.stderr
    );
    assert_eq!(control.stdout.trim(), "survived");
    assert!(!std::fs::read_to_string(&quiet)
        .unwrap_or_default()
        .contains("\"Killed\""));
}

/// An out-of-memory kill ends the whole sandbox by default (its supervisor sees it stop);
/// `--on-oom process` leaves the rest running, as the kernel alone would.
#[test]
fn an_out_of_memory_kill_ends_the_whole_sandbox_unless_asked_otherwise() {
    if !require_root() {
        return;
    }
    let script =
        "python3 -c 'bytearray(512 << 20)'; echo 'the shell goes on'; sleep 3; echo finished";
    let whole = run(&["--memory", "64M"], &["sh", "-c", script]);
    assert_eq!(whole.status, 137, "{}", whole.stderr);
    assert!(
        !whole.stdout.contains("finished"),
        "the rest of the sandbox was ended: {}",
        whole.stdout
    );
    assert!(
        whole.stderr.contains("ran out of memory"),
        "{}",
        whole.stderr
    );
    let victim_only = run(
        &["--memory", "64M", "--on-oom", "process"],
        &["sh", "-c", script],
    );
    assert_eq!(victim_only.status, 0, "control: {}", victim_only.stderr);
    assert!(
        victim_only.stdout.contains("finished"),
        "control: {}",
        victim_only.stdout
    );
}

#[test]
fn environment_is_built_from_scratch() {
    if !require_root() {
        return;
    }
    let output = moat()
        .env("MOAT_TEST_SECRET", "hunter2")
        .env("TERM", "xterm-256color")
        .args(["run", "--env", "FOO=bar", "--", "env"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut keys: Vec<&str> = stdout.lines().filter_map(|l| l.split('=').next()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["FOO", "HOME", "HOSTNAME", "LANG", "LOGNAME", "PATH", "TERM", "USER"],
        "{stdout}"
    );
    assert!(stdout.contains("TERM=xterm-256color"));
    assert!(!stdout.contains("hunter2"));
    // Control: the variable was really in moat's environment.
    let control = std::process::Command::new("env")
        .env("MOAT_TEST_SECRET", "hunter2")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&control.stdout).contains("hunter2"));
}

#[test]
fn a_required_landlock_abi_the_host_lacks_stops_the_run() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let profile = scratch.join("future.toml");
    let builtin = include_str!("../../../policies/profiles/untrusted.toml");
    let mut file = std::fs::File::create(&profile).unwrap();
    write!(
        file,
        "{}",
        builtin
            .replace("min_abi = 1", "min_abi = 99")
            .replace("name = \"untrusted\"", "name = \"future\"")
    )
    .unwrap();
    let id = test_id("landlock");
    let refused = run(
        &["--id", &id, "--profile", profile.to_str().unwrap()],
        &["touch", "/tmp/ran"],
    );
    assert_eq!(refused.status, 125);
    assert!(
        refused.stderr.contains("landlock") && refused.stderr.contains("ABI 99"),
        "{}",
        refused.stderr
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
    // Control: the same profile with the host's ABI runs.
    write!(
        std::fs::File::create(&profile).unwrap(),
        "{}",
        builtin.replace("name = \"untrusted\"", "name = \"today\"")
    )
    .unwrap();
    assert_eq!(
        run(&["--profile", profile.to_str().unwrap()], &["true"]).status,
        0
    );
}

#[test]
fn a_missing_home_is_created_traversable_above_and_closed_itself() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("homes/deeper/alice");
    let ran = sh(
        &["--home", home.to_str().unwrap()],
        "touch $HOME/ok && stat -c %a $HOME",
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "700");
    assert!(home.join("ok").exists());
    for parent in [scratch.join("homes"), scratch.join("homes/deeper")] {
        let mode = std::fs::metadata(&parent).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "{} must stay traversable", parent.display());
    }
}

#[test]
fn inherited_descriptors_and_socket_activation_do_not_reach_the_sandbox() {
    if !require_root() {
        return;
    }
    // A moat started by a socket-activated unit inherits LISTEN_FDS and descriptors.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let script = format!(
        "exec 5<{}; LISTEN_FDS=3 LISTEN_PID=$$ exec {} run -- sh -c 'ls /proc/self/fd | tr \"\\n\" \" \"; echo; env | grep -c LISTEN_; cat <&5'",
        secret.path().display(),
        env!("CARGO_BIN_EXE_moat")
    );
    let output = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0 1 2 3",
        "only stdio (and ls's own directory fd): {stdout}"
    );
    assert_eq!(lines[1], "0", "no LISTEN_ variable inside: {stdout}");
    assert!(
        !stdout.contains("host secret"),
        "the inherited descriptor leaked: {stdout}"
    );
    // Control: the same descriptor is readable outside the sandbox.
    let control = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("exec 5<{}; cat <&5", secret.path().display()),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&control.stdout), "host secret");
}

#[test]
fn the_workload_environment_is_not_readable_by_other_host_users() {
    if !require_root() {
        return;
    }
    let id = test_id("envsecret");
    let token = format!("token-{id}");
    let child = moat()
        .args([
            "run",
            "--id",
            &id,
            "--env",
            &format!("JUPYTERHUB_API_TOKEN={token}"),
        ])
        .args(["--", "sleep", "3"])
        .spawn()
        .unwrap();
    let state = format!("/run/moat/sandboxes/{id}/bundle/config.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::path::Path::new(&state).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let as_nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "grep",
            "-rs",
            &token,
            "/run/moat",
        ])
        .output()
        .unwrap();
    // Control: root finds the token where moat keeps it.
    let as_root = std::process::Command::new("grep")
        .args(["-rls", &token, "/run/moat"])
        .output()
        .unwrap();
    let mut child = child;
    child.wait().unwrap();
    assert!(
        String::from_utf8_lossy(&as_root.stdout).contains("config.json"),
        "control: the token is in the bundle"
    );
    assert!(
        as_nobody.stdout.is_empty(),
        "another host user read the token: {}",
        String::from_utf8_lossy(&as_nobody.stdout)
    );
}

#[test]
fn a_home_without_identity_keeps_its_owner_across_runs() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    let arg = home.to_str().unwrap();
    let first = sh(
        &["--home", arg],
        "mkdir -p $HOME/nb && echo 1 > $HOME/nb/f && cat /proc/self/uid_map",
    );
    assert_eq!(first.status, 0, "{}", first.stderr);
    let second = sh(
        &["--home", arg],
        "echo 2 >> $HOME/nb/f && cat $HOME/nb/f && cat /proc/self/uid_map",
    );
    assert_eq!(
        second.status, 0,
        "the second run can write what the first created: {}",
        second.stderr
    );
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert_eq!(&lines[..2], ["1", "2"]);
    assert_eq!(
        uid_map_base(lines[2]),
        uid_map_base(first.stdout.trim()),
        "same home, same range"
    );
    // Control: a run without a home gets a range of its own.
    assert_ne!(
        uid_map_base(sh(&[], "cat /proc/self/uid_map").stdout.trim()),
        uid_map_base(lines[2])
    );
}
