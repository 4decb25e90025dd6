//! `moat daemon`: supervise the sandboxes of this machine behind an API on a unix socket.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::exit::setup_failed;

/// Options of `moat daemon`.
#[derive(Debug, Args)]
#[command(
    after_help = "The API is described in docs/api.md. Sandboxes keep running when \
the daemon stops; the next start re-attaches to them. Ship it with the systemd unit in \
deploy/systemd/moat.service (KillMode=process)."
)]
pub struct DaemonArgs {
    /// The API socket.
    #[arg(long, default_value = "/run/moat/moat.sock", value_name = "PATH")]
    socket: PathBuf,
    /// Where records, logs and the event log live.
    #[arg(long, default_value = "/var/lib/moat/daemon", value_name = "DIR")]
    state_dir: PathBuf,
    /// A group whose members may use the socket (mode 0660); root only without it.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Seconds an ended sandbox's record and log are kept.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    keep_ended: u64,
    /// A profile clients may ask for (repeatable; a built-in name or a file). Only
    /// `untrusted` when not given.
    #[arg(long = "profile", value_name = "NAME|FILE")]
    profiles: Vec<String>,
    /// A directory clients may name policy files in (repeatable; default
    /// /etc/moat/policies). moat reads them as root.
    #[arg(long = "policy-dir", value_name = "DIR")]
    policy_dirs: Vec<PathBuf>,
    /// A directory homes must be in (repeatable); any home moat run accepts when not given.
    #[arg(long = "home-root", value_name = "DIR")]
    home_roots: Vec<PathBuf>,
    /// Every sandbox's `moat run --alert-rate`: alerts a second per family of alerts once
    /// the burst is spent; 0 writes every alert (docs/policy.md).
    #[arg(long, value_name = "N", default_value_t = moat_events::AlertLimit::DEFAULT.per_second)]
    alert_rate: u32,
    /// Every sandbox's `moat run --alert-burst`.
    #[arg(long, value_name = "N", default_value_t = moat_events::AlertLimit::DEFAULT.burst)]
    alert_burst: u32,
}

/// Runs `moat daemon`; returns moat's exit status.
pub fn run(args: DaemonArgs) -> i32 {
    if !nix::unistd::geteuid().is_root() {
        return setup_failed("daemon", "must run as root (it creates sandboxes)");
    }
    if let Err(message) = moat_events::AlertLimit::from_flags(args.alert_rate, args.alert_burst) {
        return setup_failed("daemon", &message);
    }
    let moat = match std::env::current_exe() {
        Ok(path) => path,
        Err(err) => {
            return setup_failed("daemon", &format!("cannot find moat's own binary: {err}"))
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return setup_failed("daemon", &format!("cannot start the runtime: {err}")),
    };
    let config = moat_daemon::Config {
        socket: args.socket,
        state_dir: args.state_dir,
        group: args.group,
        keep_ended: Duration::from_secs(args.keep_ended),
        moat,
        admission: moat_daemon::Admission {
            profiles: if args.profiles.is_empty() {
                vec!["untrusted".into()]
            } else {
                args.profiles
            },
            policy_dirs: if args.policy_dirs.is_empty() {
                vec!["/etc/moat/policies".into()]
            } else {
                args.policy_dirs
            },
            home_roots: args.home_roots,
            run_options: vec![
                "--alert-rate".into(),
                args.alert_rate.to_string(),
                "--alert-burst".into(),
                args.alert_burst.to_string(),
            ],
        },
    };
    match runtime.block_on(moat_daemon::serve(config)) {
        Ok(()) => 0,
        Err(err) => setup_failed("daemon", &moat_sandbox::executor::error_chain(&err)),
    }
}
