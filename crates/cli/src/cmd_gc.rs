//! `moat gc`: remove cgroups, state and id leases of sandboxes whose moat process died.

use clap::Args;
use moat_sandbox::gc;
use moat_sandbox::paths::StatePaths;

/// Options of `moat gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print nothing when there is nothing to remove.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `moat gc`; non-zero when something could not be removed.
pub fn run(args: GcArgs) -> i32 {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("moat: gc must run as root");
        return 1;
    }
    let report = gc::collect(&StatePaths::default());
    for id in &report.removed {
        crate::exit::print_stdout(&format!("removed sandbox {id}"));
    }
    if report.removed.is_empty() && !args.quiet {
        crate::exit::print_stdout(&format!(
            "nothing to remove ({} live sandbox(es))",
            report.live.len()
        ));
    }
    for warning in &report.warnings {
        eprintln!("moat: gc: {warning}");
    }
    i32::from(!report.warnings.is_empty())
}
