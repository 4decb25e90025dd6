//! Each wall moat applies itself, alone, for real: the test re-executes this test binary
//! into a child that applies one layer to itself and then tries the same actions as a
//! control child that applies nothing. End to end, the mounts already stop most of what
//! Landlock stops; here Landlock has to stop it by itself.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use moat_policy::{LandlockPlan, SeccompProfile};
use serde_json::{json, Map, Value};

const CHILD_ENV: &str = "MOAT_LAYER_CHILD";

fn errno_name(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(err) => nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0))
            .to_string()
            .split(':')
            .next()
            .unwrap_or("?")
            .to_string(),
    }
}

fn syscall_result(rc: libc::c_long) -> String {
    if rc >= 0 {
        "ok".into()
    } else {
        errno_name(Err(std::io::Error::last_os_error()))
    }
}

/// The actions every child tries, after applying its layer (or none).
fn actions(allowed: &str, denied: &str) -> Map<String, Value> {
    let mut r = Map::new();
    let write = |dir: &str| errno_name(std::fs::write(format!("{dir}/file"), b"x"));
    r.insert("write_allowed".into(), json!(write(allowed)));
    r.insert("write_denied".into(), json!(write(denied)));
    r.insert(
        "read_etc".into(),
        json!(errno_name(std::fs::read("/etc/hostname").map(drop))),
    );
    r.insert(
        "exec_true".into(),
        json!(errno_name(Command::new("/usr/bin/true").status().map(drop))),
    );
    r.insert(
        "io_uring_setup".into(),
        json!(syscall_result(unsafe_syscall(
            libc::SYS_io_uring_setup,
            1,
            0
        ))),
    );
    r.insert(
        "clone3".into(),
        json!(syscall_result(unsafe_syscall(libc::SYS_clone3, 0, 0))),
    );
    r.insert(
        "socket_packet".into(),
        json!(syscall_result(unsafe_syscall(libc::SYS_socket, 17, 3))),
    );
    r.insert(
        "getpid".into(),
        json!(syscall_result(unsafe_syscall(libc::SYS_getpid, 0, 0))),
    );
    let target = format!("{allowed}/owned");
    let _ = std::fs::write(&target, b"");
    r.insert(
        "chown_other".into(),
        json!(errno_name(std::os::unix::fs::chown(
            &target,
            Some(1),
            Some(1)
        ))),
    );
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .unwrap_or("?")
        .to_string();
    r.insert("cap_eff".into(), json!(cap_eff));
    r
}

#[allow(unsafe_code)]
fn unsafe_syscall(nr: libc::c_long, a: libc::c_long, b: libc::c_long) -> libc::c_long {
    // SAFETY: the arguments are integers or null pointers, which the kernel validates.
    unsafe { libc::syscall(nr, a, b, 0 as libc::c_long) }
}

/// Not a test of its own: the entry point of the children (does nothing otherwise).
#[test]
fn layer_child_entry_point() {
    let Ok(layer) = std::env::var(CHILD_ENV) else {
        return;
    };
    let allowed = std::env::var("MOAT_LAYER_ALLOWED").unwrap();
    let denied = std::env::var("MOAT_LAYER_DENIED").unwrap();
    let applied = match layer.as_str() {
        "none" => Ok(()),
        "landlock" => {
            let plan = LandlockPlan {
                min_abi: 1,
                read_exec: vec!["/usr".into(), "/bin".into(), "/lib".into(), "/lib64".into()],
                read_only: vec![],
                list_only: vec![],
                read_write: vec![allowed.clone()],
                devices: vec!["/dev/null".into()],
                scope_signals: true,
                scope_abstract_unix_sockets: true,
                writable_exec: true,
                deny: vec![],
                exec_allow_only: None,
                file_allow_only: None,
            };
            moat_sandbox::landlock::restrict_self(&plan).map_err(|e| e.to_string())
        }
        "seccomp" => {
            nix::sys::prctl::set_no_new_privs().unwrap();
            let filter =
                moat_sandbox::seccomp::compile(&SeccompProfile::builtin("default").unwrap())
                    .unwrap();
            moat_sandbox::seccomp::install(&filter).map_err(|e| e.to_string())
        }
        "capabilities" => moat_sandbox::privileges::drop_all(true).map_err(|e| e.to_string()),
        other => Err(format!("unknown layer {other}")),
    };
    let mut results = match applied {
        Ok(()) => actions(&allowed, &denied),
        Err(err) => Map::from_iter([("error".to_string(), json!(err))]),
    };
    results.insert("layer".into(), json!(layer));
    println!("LAYER {}", Value::Object(results));
}

fn run_layer(layer: &str) -> Map<String, Value> {
    let base = tempfile::Builder::new()
        .prefix("moat-layer-")
        .tempdir_in("/tmp")
        .unwrap();
    let (allowed, denied) = (base.path().join("allowed"), base.path().join("denied"));
    for dir in [&allowed, &denied] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "layer_child_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, layer)
        .env("MOAT_LAYER_ALLOWED", &allowed)
        .env("MOAT_LAYER_DENIED", &denied)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("LAYER ").map(|(_, json)| json))
        .unwrap_or_else(|| {
            panic!(
                "no result from the {layer} child: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let Value::Object(map) = serde_json::from_str(line).unwrap() else {
        panic!("{line}")
    };
    assert!(!map.contains_key("error"), "{layer}: {}", map["error"]);
    map
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert_ne!(
            std::env::var("MOAT_REQUIRE").as_deref(),
            Ok("all"),
            "MOAT_REQUIRE=all but the layer tests need root"
        );
        eprintln!("skipped: the layer tests need root");
    }
    root
}

#[test]
fn landlock_alone_confines_writes_reads_and_keeps_exec_of_system_binaries() {
    if !is_root() {
        return;
    }
    let control = run_layer("none");
    assert_eq!(
        (
            control["write_denied"].as_str(),
            control["read_etc"].as_str()
        ),
        (Some("ok"), Some("ok")),
        "control: root may write and read anywhere"
    );
    let confined = run_layer("landlock");
    assert_eq!(confined["write_allowed"], "ok");
    assert_eq!(
        confined["write_denied"], "EACCES",
        "outside its rules, even root cannot write"
    );
    assert_eq!(confined["read_etc"], "EACCES");
    assert_eq!(
        confined["exec_true"], "ok",
        "read+exec on /usr keeps system binaries usable"
    );
}

#[test]
fn seccomp_alone_denies_with_errno_and_keeps_ordinary_calls() {
    if !is_root() {
        return;
    }
    let control = run_layer("none");
    assert_ne!(control["io_uring_setup"], "EPERM");
    assert_ne!(control["clone3"], "ENOSYS");
    assert_eq!(control["socket_packet"], "ok");
    let filtered = run_layer("seccomp");
    assert_eq!(filtered["io_uring_setup"], "EPERM");
    assert_eq!(
        filtered["clone3"], "ENOSYS",
        "libc must be able to fall back to clone"
    );
    assert_eq!(filtered["socket_packet"], "EPERM");
    assert_eq!(filtered["getpid"], "ok");
    assert_eq!(
        filtered["exec_true"], "ok",
        "fork+exec still works (clone without namespace flags)"
    );
}

#[test]
fn dropping_capabilities_alone_takes_root_powers_away() {
    if !is_root() {
        return;
    }
    let control = run_layer("none");
    assert_eq!(
        control["chown_other"], "ok",
        "control: root can give files away"
    );
    assert_ne!(control["cap_eff"], "0000000000000000");
    let dropped = run_layer("capabilities");
    assert_eq!(dropped["cap_eff"], "0000000000000000");
    assert_eq!(
        dropped["chown_other"], "EPERM",
        "uid 0 without capabilities is powerless"
    );
}
