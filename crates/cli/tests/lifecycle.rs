//! The `moat run` contract: exit statuses, signal forwarding, stdio, and that every way
//! a sandbox can end (including SIGKILL of moat itself, then `moat gc`) leaves nothing.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Waits until sandbox `id` has started its workload (its state directory exists and the
/// workload has written `marker`), so a signal sent now reaches it.
fn wait_started(id: &str, marker: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::path::Path::new(&format!("/run/moat/sandboxes/{id}")).exists() && marker.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("sandbox {id} did not start");
}

#[test]
fn exit_statuses_follow_the_contract() {
    if !require_root() {
        return;
    }
    assert_eq!(sh(&[], "exit 3").status, 3);
    assert_eq!(run(&[], &["true"]).status, 0);
    let missing = run(&[], &["no-such-command"]);
    assert_eq!(missing.status, 127);
    assert!(
        missing
            .stderr
            .contains("no-such-command: command not found in the sandbox"),
        "{}",
        missing.stderr
    );
    let not_executable = run(&[], &["/etc/hostname"]);
    assert_eq!(not_executable.status, 126, "{}", not_executable.stderr);
    assert_eq!(sh(&[], "kill -USR1 $$").status, 128 + 10);
    assert_eq!(sh(&[], "kill -KILL $$").status, 128 + 9);
}

#[test]
fn signals_to_moat_reach_the_workload_and_it_shuts_down_cleanly() {
    if !require_root() {
        return;
    }
    for (signal, expected) in [
        (Signal::SIGTERM, 15),
        (Signal::SIGINT, 2),
        (Signal::SIGHUP, 1),
    ] {
        let scratch = Scratch::new();
        let home = scratch.join("home");
        let id = test_id("signal");
        let script = "trap 'echo caught $SIG; exit $CODE' TERM INT HUP; touch $HOME/started; \
                      while :; do sleep 0.05; done";
        let child = Running::spawn(
            moat()
                .args(["run", "--id", &id, "--home", home.to_str().unwrap()])
                .args([
                    "--env",
                    &format!("SIG={signal}"),
                    "--env",
                    &format!("CODE={}", 100 + expected),
                ])
                .args(["--", "sh", "-c", script])
                .stdout(Stdio::piped()),
        );
        wait_started(&id, &home.join("started"));
        child.signal(signal);
        let output = child.wait_with_output();
        assert_eq!(output.status.code(), Some(100 + expected), "{signal}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("caught {signal}")
        );
        assert_eq!(leftovers(&id), Vec::<String>::new(), "after {signal}");
    }
}

#[test]
fn sigkill_of_moat_takes_the_sandbox_down_and_gc_removes_the_rest() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    let id = test_id("sigkill");
    let child = Running::spawn(
        moat()
            .args(["run", "--id", &id, "--home", home.to_str().unwrap()])
            .args(["--", "sh", "-c", "touch $HOME/started; exec sleep 300"]),
    );
    wait_started(&id, &home.join("started"));
    let sandbox_processes = |id: &str| {
        let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/moat/{id}/cgroup.procs"))
            .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/moat/{id}/cgroup.procs")))
            .unwrap_or_default();
        procs.lines().count()
    };
    assert!(
        sandbox_processes(&id) >= 2,
        "control: init and workload run"
    );
    child.signal(Signal::SIGKILL);
    child.wait();
    // The init has a parent-death signal: the whole sandbox dies with moat.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox_processes(&id) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sandbox_processes(&id),
        0,
        "no process of the sandbox outlives moat"
    );
    assert!(
        !leftovers(&id).is_empty(),
        "control: SIGKILL leaves state for gc"
    );

    let gc = moat().arg("gc").output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(String::from_utf8_lossy(&gc.stdout).contains(&format!("removed sandbox {id}")));
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn normal_exit_and_a_killed_workload_leave_nothing() {
    if !require_root() {
        return;
    }
    for script in ["exit 0", "kill -KILL $$", "sleep 1 & sleep 1 & exit 4"] {
        let id = test_id("leave");
        let ran = sh(&["--id", &id], script);
        assert!(ran.stderr.is_empty(), "{script}: {}", ran.stderr);
        assert_eq!(leftovers(&id), Vec::<String>::new(), "{script}");
    }
}

#[test]
fn stdio_passes_through_pipes() {
    if !require_root() {
        return;
    }
    let mut child = moat()
        .args(["run", "--", "sh", "-c", "tr a-z A-Z; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from the pipe\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "HELLO FROM THE PIPE\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
}

#[test]
fn a_terminal_passes_through() {
    if !require_root() {
        return;
    }
    // `script` gives moat a pseudo-terminal as stdin/stdout.
    let moat = env!("CARGO_BIN_EXE_moat");
    let output = std::process::Command::new("script")
        .args([
            "-qec",
            &format!(
                "{moat} run -- python3 -c 'import os; print(\"tty\", os.isatty(0), os.isatty(1))'"
            ),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output();
    let Ok(output) = output else {
        assert!(require(false, "`script` (bsdutils) is not installed"));
        return;
    };
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("tty True True"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn dry_run_prints_the_plan_and_creates_nothing() {
    let id = test_id("dry");
    let output = moat()
        .args([
            "run",
            "--dry-run",
            "--id",
            &id,
            "--memory",
            "1G",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["id"], id);
    assert_eq!(plan["resources"]["memory_bytes"], 1u64 << 30);
    assert_eq!(plan["process"]["argv"][0], "true");
    assert_eq!(plan["profile"]["name"], "untrusted");
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn output_into_a_closed_pipe_is_not_a_crash() {
    let mut child = moat()
        .args(["run", "--dry-run", "--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn help_version_and_doctor_work() {
    for args in [
        &["--version"][..],
        &["help"],
        &["run", "--help"],
        &["doctor", "--help"],
        &["gc", "--help"],
    ] {
        let output = moat().args(args).output().unwrap();
        assert!(output.status.success(), "moat {args:?}");
        assert!(!output.stdout.is_empty(), "moat {args:?} prints something");
    }
    if !require_root() {
        return;
    }
    let doctor = moat().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.status.success(),
        "every required wall is available here:\n{text}"
    );
    for wall in [
        "user-namespace",
        "seccomp",
        "landlock",
        "cgroups",
        "namespaces",
        "capabilities",
        "network",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(wall) && l.contains(" ok")),
            "{wall}:\n{text}"
        );
    }
    let json = moat().args(["doctor", "--json"]).output().unwrap();
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(checks
        .iter()
        .any(|c| c["wall"] == "bpf-lsm" && c["status"] == "optional-missing"));
}
