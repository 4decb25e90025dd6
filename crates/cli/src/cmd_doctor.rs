//! `moat doctor`: one line per wall, `ok`, `missing (reason)` or `optional-missing (reason)`.

use clap::Args;
use moat_policy::Profile;
use moat_sandbox::doctor::{self, Availability};

/// Options of `moat doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as a JSON array.
    #[arg(long)]
    json: bool,
}

/// Runs `moat doctor`; non-zero when a wall the default profile requires is missing.
pub fn run(args: DoctorArgs) -> i32 {
    let min_abi = Profile::load("untrusted").map_or(1, |(p, _)| p.landlock.min_abi);
    let checks = doctor::probe(min_abi);
    if args.json {
        match serde_json::to_string_pretty(&checks) {
            Ok(json) => crate::exit::print_stdout(&json),
            Err(err) => {
                eprintln!("moat: doctor: {err}");
                return 1;
            }
        }
    } else {
        let width = checks.iter().map(|c| c.wall.len()).max().unwrap_or(0);
        for check in &checks {
            let status = match &check.availability {
                Availability::Ok => "ok".to_string(),
                Availability::Missing(reason) => format!("missing ({reason})"),
                Availability::OptionalMissing(reason) => format!("optional-missing ({reason})"),
            };
            let detail = if check.detail.is_empty() || check.availability != Availability::Ok {
                String::new()
            } else {
                format!("  {}", check.detail)
            };
            crate::exit::print_stdout(&format!("{:width$}  {status}{detail}", check.wall));
        }
    }
    let missing = checks
        .iter()
        .any(|c| matches!(c.availability, Availability::Missing(_)));
    i32::from(missing)
}
