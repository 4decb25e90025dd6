//! Bad input gets a clear error, exit status 125, and changes nothing on the host.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use std::os::unix::fs::symlink;

use common::*;

fn refused(options: &[&str], expected: &str) {
    let id = test_id("bad");
    let mut all = vec!["--id", id.as_str()];
    all.extend_from_slice(options);
    let ran = run(&all, &["true"]);
    assert_eq!(ran.status, 125, "{options:?}: {}", ran.stderr);
    assert!(
        ran.stderr.starts_with("moat: "),
        "{options:?}: {}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(expected),
        "{options:?}: expected {expected:?} in {:?}",
        ran.stderr
    );
    assert_eq!(
        ran.stderr.lines().count(),
        1,
        "one clear line: {}",
        ran.stderr
    );
    assert_eq!(leftovers(&id), Vec::<String>::new(), "{options:?}");
}

#[test]
fn malformed_limits_are_refused() {
    refused(&["--memory", "1K"], "--memory 1K: out of range");
    refused(&["--memory", "lots"], "--memory: \"lots\" is not a size");
    refused(&["--memory", "1000T"], "out of range");
    refused(&["--cpus", "0"], "--cpus");
    refused(&["--cpus", "1000"], "out of range");
    refused(&["--cpus", "two"], "not a CPU count");
    refused(&["--pids", "1"], "--pids 1: out of range");
    refused(&["--pids", "many"], "--pids many");
    refused(&["--tmp-size", "0"], "--tmp-size");
    refused(&["--env", "1BAD=x"], "--env");
    refused(&["--env", "NOEQUALS"], "expected KEY=VALUE");
    refused(&["--identity", "../alice"], "--identity");
    refused(&["--workdir", "relative"], "--workdir");
    refused(&["--alert-burst", "0"], "--alert-burst 0: between 1 and");
    refused(
        &["--alert-rate", "1000001"],
        "--alert-rate 1000001: at most",
    );
}

#[test]
fn malformed_network_requests_are_refused() {
    refused(
        &["--net", "open"],
        "--net \"open\": expected none, isolated or egress",
    );
    refused(
        &["--publish", "8888"],
        "--publish needs --net isolated or egress",
    );
    refused(
        &["--net", "isolated", "--egress", "0.0.0.0/0:443/tcp"],
        "--egress needs --net egress",
    );
    refused(
        &["--net", "egress", "--egress", "300.1.2.3/8"],
        "expected CIDR",
    );
    refused(
        &["--net", "egress", "--egress", "0.0.0.0/0:99999/tcp"],
        "expected CIDR",
    );
    refused(
        &["--net", "egress", "--egress", "169.254.169.254/32:80/tcp"],
        "cloud metadata",
    );
    refused(
        &["--net", "egress", "--egress", "10.0.0.5"],
        "private (RFC 1918)",
    );
    refused(
        &["--net", "egress", "--egress", "100.100.100.200"],
        "carrier-grade NAT",
    );
    refused(
        &["--net", "isolated", "--allow-host", "hub:8081"],
        "--allow-host",
    );
    refused(&["--net", "isolated", "--publish", "0"], "--publish");
    refused(&["--net", "isolated", "--bandwidth", "fast"], "--bandwidth");
    refused(&["--net", "egress", "--dns", "dns.example"], "--dns");
}

#[test]
fn unknown_or_malformed_profiles_are_refused() {
    refused(&["--profile", "trusting"], "unknown profile \"trusting\"");
    let scratch = Scratch::new();
    let bad = scratch.join("bad.toml");
    std::fs::write(&bad, "name = \"bad\"\n[limits]\nmemory = 5\n").unwrap();
    refused(
        &["--profile", bad.to_str().unwrap()],
        &format!("{}:3:10:", bad.display()),
    );
    let typo = scratch.join("typo.toml");
    let builtin = include_str!("../../../policies/profiles/untrusted.toml");
    std::fs::write(&typo, builtin.replace("pids = 512", "pid = 512")).unwrap();
    refused(
        &["--profile", typo.to_str().unwrap()],
        "unknown field `pid`",
    );
    refused(
        &["--profile", scratch.join("missing.toml").to_str().unwrap()],
        "cannot read profile file",
    );
}

#[test]
fn unusable_paths_are_refused() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let file = scratch.join("file");
    std::fs::write(&file, "x").unwrap();
    let real = scratch.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = scratch.join("link");
    symlink(&real, &link).unwrap();
    let through_link = link.join("home");

    refused(
        &["--rootfs", "/nonexistent/rootfs"],
        "not an existing directory",
    );
    refused(
        &["--rootfs", file.to_str().unwrap()],
        "not an existing directory",
    );
    refused(&["--home", file.to_str().unwrap()], "not a directory");
    refused(&["--home", link.to_str().unwrap()], "symlink");
    refused(&["--home", through_link.to_str().unwrap()], "symlink");
    assert!(
        !real.join("home").exists(),
        "nothing was created through the link"
    );
    for system in [
        "/",
        "/etc",
        "/usr",
        "/proc",
        "/sys",
        "/dev",
        "/boot",
        "/var/lib/moat",
        "/etc/../usr",
    ] {
        refused(&["--home", system], "system directory");
    }
    for system in ["/", "/usr", "/etc/.."] {
        refused(
            &["--rootfs", system],
            "refusing a system directory as an image",
        );
    }
    // Paths a tenant could swap for a link while the sandbox starts.
    let tenant_owned = scratch.join("tenant");
    std::fs::create_dir(&tenant_owned).unwrap();
    std::os::unix::fs::chown(&tenant_owned, Some(65534), Some(65534)).unwrap();
    refused(
        &["--home", tenant_owned.join("project").to_str().unwrap()],
        "someone other than root could swap the home",
    );
    let image = tenant_owned.join("image");
    std::fs::create_dir(&image).unwrap();
    refused(
        &["--rootfs", image.to_str().unwrap()],
        "someone other than root could swap the image",
    );
    let world_writable = scratch.join("open");
    std::fs::create_dir(&world_writable).unwrap();
    std::fs::set_permissions(
        &world_writable,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    refused(
        &["--home", world_writable.join("alice").to_str().unwrap()],
        "mode 777",
    );
    let linked_image = scratch.join("image-link");
    symlink(&real, &linked_image).unwrap();
    refused(&["--rootfs", linked_image.to_str().unwrap()], "symlink");
    let closed = scratch.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    refused(
        &["--home", closed.join("alice").to_str().unwrap()],
        "chmod o+x",
    );
    assert!(!closed.join("alice").exists());
    // Control: an ordinary directory anywhere else is a valid home.
    assert_eq!(
        run(&["--home", real.to_str().unwrap()], &["true"]).status,
        0
    );
}

#[test]
fn not_running_as_root_is_refused_with_a_reason() {
    if !require_root() {
        return;
    }
    let id = test_id("nonroot");
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_moat"))
        .args(["run", "--id", &id, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must run as root"));
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn usage_errors_are_refused() {
    let output = moat()
        .args(["run", "--no-such-flag", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let output = moat().args(["run"]).output().unwrap();
    assert_eq!(output.status.code(), Some(125), "a command is required");
}
