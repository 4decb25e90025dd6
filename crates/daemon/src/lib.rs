//! `moat daemon`: owns the sandboxes of one machine and serves the API of docs/api.md on
//! a unix socket.
//!
//! The daemon never calls the container plumbing itself: each sandbox runs under its own
//! `moat run` ([`supervisor`]), so sandboxes outlive a daemon restart and a crash of one
//! start cannot take the daemon down.

pub mod api;
pub mod events;
pub mod metrics;
pub mod request;
pub mod store;
pub mod supervisor;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use supervisor::Daemon;

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API socket.
    pub socket: PathBuf,
    /// The state directory (records, logs, events).
    pub state_dir: PathBuf,
    /// A group allowed to use the socket (mode 0660); root only when None.
    pub group: Option<String>,
    /// How long ended sandboxes are kept.
    pub keep_ended: Duration,
    /// The moat binary that runs sandboxes.
    pub moat: PathBuf,
    /// What requests may ask for.
    pub admission: Admission,
}

/// What the daemon's clients may ask for beyond the request's own checks: whoever can
/// open the socket starts code as root's guest, so the choices that widen a sandbox or
/// touch the host are the administrator's.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Profiles a request may name (names of built-in profiles or files).
    pub profiles: Vec<String>,
    /// Directories policy files must be in (moat run reads them as root).
    pub policy_dirs: Vec<PathBuf>,
    /// Directories homes must be in; any home moat run accepts when empty.
    pub home_roots: Vec<PathBuf>,
    /// `moat run` options every sandbox gets before the request's own (the alert rate
    /// limit): the administrator's, not the client's.
    pub run_options: Vec<String>,
}

/// The daemon could not start or serve.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// Another daemon holds the state directory.
    #[error("another moat daemon is running with state directory {0}")]
    Busy(PathBuf),
    /// A path could not be used.
    #[error("{what} {path}")]
    Path {
        /// What the path is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The group does not exist.
    #[error("group {0:?} does not exist")]
    NoGroup(String),
}

/// Runs the daemon until SIGTERM or SIGINT. Sandboxes keep running after it returns.
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let path_error = |what: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| DaemonError::Path { what, path, source }
    };
    let store = store::Store::open(&config.state_dir).map_err(path_error(
        "cannot create the state directory",
        &config.state_dir,
    ))?;
    let lock_path = config.state_dir.join("daemon.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(path_error("cannot open", &lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| DaemonError::Busy(config.state_dir.clone()))?;
    let group = match &config.group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| DaemonError::NoGroup(name.clone()))?,
        ),
        None => None,
    };
    let events_path = config.state_dir.join("events.jsonl");
    let events = events::Events::open(&events_path)
        .map_err(path_error("cannot open the event log", &events_path))?;
    let daemon = Daemon::new(
        store,
        events,
        config.moat.clone(),
        config.socket.clone(),
        config.admission.clone(),
    );
    let adopted = daemon.recover().await;
    tracing::info!("re-attached to {adopted} running sandbox(es)");

    if let Some(parent) = config.socket.parent() {
        std::fs::create_dir_all(parent).map_err(path_error("cannot create", parent))?;
    }
    // The lock is ours, so a socket file left there is a dead daemon's.
    match std::fs::remove_file(&config.socket) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(path_error("cannot replace the socket", &config.socket)(err))
        }
        _ => {}
    }
    // Nobody else may connect in the moment between bind and chmod.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let listener = tokio::net::UnixListener::bind(&config.socket);
    nix::sys::stat::umask(umask);
    let listener = listener.map_err(path_error("cannot listen on", &config.socket))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(mode))
        .map_err(path_error("cannot set the mode of", &config.socket))?;
    if let Some(group) = &group {
        nix::unistd::chown(&config.socket, None, Some(group.gid)).map_err(|errno| {
            path_error("cannot give the socket to its group:", &config.socket)(errno.into())
        })?;
    }

    let expiring = Arc::clone(&daemon);
    let keep = config.keep_ended;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            expiring.expire(keep);
        }
    });

    eprintln!(
        "moat daemon: serving on {} (state in {}; {adopted} sandbox(es) re-attached)",
        config.socket.display(),
        config.state_dir.display()
    );
    let app = api::router(Arc::clone(&daemon));
    let shutdown = async move {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
        daemon.begin_shutdown();
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(&config.socket);
    served.map_err(path_error("serving on", &config.socket))?;
    eprintln!("moat daemon: stopped; sandboxes keep running and are re-attached at the next start");
    Ok(())
}
