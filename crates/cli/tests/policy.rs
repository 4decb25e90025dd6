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
