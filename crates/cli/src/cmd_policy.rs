//! `moat policy check`: validate KubeArmor-format policies, each finding as
//! `file:line:column: error|warning: message`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use moat_policy::kubearmor::{check_text, Diagnostic, Level};

use crate::exit::print_stdout;

/// `moat policy` verbs.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: every error and warning with its file, line and column.
    /// Exits 1 when any policy has an error (warnings alone do not fail).
    Check(CheckArgs),
}

/// Options of `moat policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the findings as a JSON array.
    #[arg(long)]
    json: bool,
    /// Policy files (YAML, one or more documents each).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs a `moat policy` verb; returns the exit status.
pub fn run(command: PolicyCommand) -> i32 {
    match command {
        PolicyCommand::Check(args) => check(&args),
    }
}

fn check(args: &CheckArgs) -> i32 {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut policies = 0usize;
    for file in &args.files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (loaded, found) = check_text(file, &text);
                policies += loaded.len();
                diagnostics.extend(found);
            }
            Err(err) => diagnostics.push(Diagnostic {
                file: file.clone(),
                line: 1,
                column: 1,
                level: Level::Error,
                message: format!("cannot read: {err}"),
            }),
        }
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if args.json {
        match serde_json::to_string_pretty(&diagnostics) {
            Ok(json) => print_stdout(&json),
            Err(err) => {
                eprintln!("moat: policy check: {err}");
                return 1;
            }
        }
    } else {
        for diagnostic in &diagnostics {
            print_stdout(&diagnostic.to_string());
        }
        print_stdout(&format!(
            "{policies} polic{} checked: {errors} error{}, {warnings} warning{}",
            if policies == 1 { "y" } else { "ies" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ));
    }
    i32::from(errors > 0)
}
