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
    assert!(
        summary["total"].as_u64().unwrap() >= 40,
        "at least 40 techniques tried: {summary}"
    );

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

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}
