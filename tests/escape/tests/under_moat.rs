//! The escape battery inside a real `untrusted` sandbox: no technique may get through.
//!
//! The probe is built as part of this package; `moat` is its sibling in the same target
//! directory (`cargo test --workspace` builds both).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

fn moat_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moat-escape-probe")).with_file_name("moat")
}

fn require(available: bool, what: &str) -> bool {
    if !available {
        assert_ne!(
            std::env::var("MOAT_REQUIRE").as_deref(),
            Ok("all"),
            "MOAT_REQUIRE=all but {what}"
        );
        eprintln!("skipped: {what}");
    }
    available
}

#[test]
fn no_escape_technique_gets_through_untrusted() {
    if !require(
        nix_is_root(),
        "the escape battery needs root to create sandboxes",
    ) || !require(
        moat_binary().exists(),
        "moat is not built next to the probe (use cargo test --workspace)",
    ) {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("moat-escape-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let probe = home.join("moat-escape-probe");
    std::fs::copy(env!("CARGO_BIN_EXE_moat-escape-probe"), &probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let output = Command::new(moat_binary())
        .args([
            "run",
            "--home",
            home.to_str().unwrap(),
            "--env",
            "MOAT_PROBE_ALLOW_RESOURCES=1",
            // The memory probe is meant to be OOM-killed in its own forked child; the
            // default (an OOM kill ends the sandbox) would end the whole battery.
            "--on-oom",
            "process",
        ])
        .args(["--", "/home/jovyan/moat-escape-probe"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let findings: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = findings
        .iter()
        .find(|f| f["summary"] == true)
        .expect("the probe finished (summary line)");
    assert_eq!(
        summary["total"].as_u64(),
        Some(listed_checks()),
        "every technique of the battery was tried: {summary}"
    );
    // A check that could not run proves nothing about the wall: it must not pass as contained.
    let unrun: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| {
            f["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("probe error")
        })
        .collect();
    assert!(unrun.is_empty(), "checks that did not run:\n{unrun:#?}");

    let exposed: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["exposed"] == true)
        // A bind mount's root is its path in the host filesystem; the only bind of a host
        // data directory is the user's own home (docs/security.md, "What is not covered").
        .filter(|f| {
            let detail = f["detail"].as_str().unwrap_or("");
            !(f["id"] == "info.mountinfo"
                && detail.starts_with("1 mounts reveal host paths")
                && detail.contains(&format!("{} /home/jovyan ", home.display())))
        })
        .collect();
    assert!(exposed.is_empty(), "exposed under untrusted:\n{exposed:#?}");
}

/// The control: the same probe, outside any sandbox, as an unprivileged host user, does
/// report exposure, so "nothing exposed" above comes from the walls, not from the probe.
/// Only the local kernel and privilege checks run here (no network, no resource use).
#[test]
fn the_probe_reports_exposure_outside_a_sandbox() {
    if !require(
        nix_is_root(),
        "the control switches to an unprivileged user",
    ) {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("moat-escape-control-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = scratch.path().join("moat-escape-probe");
    std::fs::copy(env!("CARGO_BIN_EXE_moat-escape-probe"), &probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(&probe)
        .args(["--only", "kernel", "--only", "privilege"])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exposed: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|f| f["exposed"] == true)
        .filter_map(|f| f["id"].as_str().map(str::to_string))
        .collect();
    // Every plain host process runs without no_new_privs and without a seccomp filter.
    for id in ["privilege.no_new_privs", "privilege.seccomp"] {
        assert!(
            exposed.iter().any(|e| e == id),
            "{id} reported exposed on the host: {exposed:?}"
        );
    }
}

/// How many checks the probe has.
fn listed_checks() -> u64 {
    let output = Command::new(env!("CARGO_BIN_EXE_moat-escape-probe"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(output.status.success(), "moat-escape-probe --list");
    String::from_utf8_lossy(&output.stdout).lines().count() as u64
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}
