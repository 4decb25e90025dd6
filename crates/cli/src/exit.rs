//! moat's exit statuses, so callers can tell the workload's own result from moat's.
//!
//! | status | meaning |
//! |---|---|
//! | 0..=124 | the workload's own exit status |
//! | 125 | moat could not set the sandbox up (bad input, a wall unavailable, ...) |
//! | 126 | the command exists in the sandbox but cannot be executed |
//! | 127 | the command does not exist in the sandbox |
//! | 128+N | the workload died of signal N (137 = SIGKILL, also after an out-of-memory kill) |

/// moat itself failed: bad input or a wall that could not be set up. Nothing ran.
pub const SETUP_FAILED: i32 = 125;

/// Prints a set-up failure and returns its status.
pub fn setup_failed(what: &str, message: &str) -> i32 {
    if what.is_empty() {
        eprintln!("moat: {message}");
    } else {
        eprintln!("moat: {what}: {message}");
    }
    SETUP_FAILED
}

/// Prints a line on stdout; a reader that went away (`moat ... | head`) is not an error.
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
