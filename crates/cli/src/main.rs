//! `moat`: run untrusted code behind several independent kernel walls.
//!
//! This binary only parses input and wires the library crates together: `moat-policy`
//! compiles what the user asked for into a plan, `moat-sandbox` applies it.
#![forbid(unsafe_code)]

mod cmd_daemon;
mod cmd_doctor;
mod cmd_events;
mod cmd_gc;
mod cmd_policy;
mod cmd_run;
mod exit;
mod policy_cache;

use clap::{Parser, Subcommand};

/// Run untrusted code behind several independent kernel walls.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new sandbox, in the foreground.
    Run(Box<cmd_run::RunArgs>),
    /// Supervise this machine's sandboxes behind an API on a unix socket (docs/api.md).
    Daemon(cmd_daemon::DaemonArgs),
    /// Follow the daemon's events: sandbox lifecycle and policy alerts, as JSON lines.
    Events(cmd_events::EventsArgs),
    /// Show which walls this host can provide.
    Doctor(cmd_doctor::DoctorArgs),
    /// Remove what sandboxes of a killed moat left behind.
    Gc(cmd_gc::GcArgs),
    /// Work with KubeArmor-format runtime policies.
    #[command(subcommand)]
    Policy(cmd_policy::PolicyCommand),
}

fn main() {
    if let Err(err) = moat_sandbox::scrub_inherited_state() {
        eprintln!("moat: cannot close inherited descriptors: {err}");
        std::process::exit(exit::SETUP_FAILED);
    }
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = match err.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => exit::SETUP_FAILED,
            };
            let _ = err.print();
            std::process::exit(code);
        }
    };
    let code = match cli.command {
        Command::Run(args) => cmd_run::run(*args),
        Command::Daemon(args) => cmd_daemon::run(args),
        Command::Doctor(args) => cmd_doctor::run(args),
        Command::Events(args) => cmd_events::run(args),
        Command::Gc(args) => cmd_gc::run(args),
        Command::Policy(command) => cmd_policy::run(command),
    };
    std::process::exit(code);
}

/// Logs go to stderr. By default only errors, which libcontainer logs with the cause of a
/// failed set-up step ("failed to chdir e=ENOENT") that its returned error leaves out;
/// MOAT_LOG=debug shows every set-up step.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(false)
        .compact()
        .init();
}
