//! `moat events`: print the daemon's event stream (lifecycle events and policy alerts of
//! every sandbox) as JSON lines, as it happens.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;

use crate::exit::setup_failed;

/// Options of `moat events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The daemon's socket.
    #[arg(long, default_value = "/run/moat/moat.sock", value_name = "PATH")]
    socket: PathBuf,
    /// Print the events already recorded first, then follow.
    #[arg(long)]
    all: bool,
}

/// Runs `moat events`; returns moat's exit status.
pub fn run(args: EventsArgs) -> i32 {
    let mut stream = match UnixStream::connect(&args.socket) {
        Ok(stream) => stream,
        Err(err) => {
            return setup_failed(
                "events",
                &format!(
                    "cannot connect to the daemon at {}: {err} (is `moat daemon` running?)",
                    args.socket.display()
                ),
            )
        }
    };
    let path = if args.all {
        "/v1/events?since=0"
    } else {
        "/v1/events"
    };
    // HTTP/1.0: the server ends the body by closing, so no chunked decoding is needed.
    if let Err(err) = write!(stream, "GET {path} HTTP/1.0\r\nHost: moat\r\n\r\n") {
        return setup_failed("events", &format!("cannot send the request: {err}"));
    }
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).is_err() || !status_line.contains(" 200 ") {
        return setup_failed(
            "events",
            &format!("the daemon answered {:?}", status_line.trim()),
        );
    }
    let mut line = String::new();
    // Skip the headers.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return 0,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
            Err(err) => return setup_failed("events", &format!("reading the answer: {err}")),
        }
    }
    let stdout = std::io::stdout();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return 0,
            Ok(_) => {
                let mut out = stdout.lock();
                // A reader that went away (`moat events | head`) ends us quietly.
                if out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return 0;
                }
            }
            Err(err) => return setup_failed("events", &format!("reading events: {err}")),
        }
    }
}
