//! Telling a host process from another that later got its pid: a pid is only trusted
//! together with the process's start time (field 22 of `/proc/PID/stat`).

/// The start time of process `pid`, in clock ticks after boot; None if it does not exist.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start_ticks` and has not exited
/// (a zombie waiting to be reaped counts as gone).
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 2..].split_whitespace();
    let state = fields.next();
    let started = fields.nth(18).and_then(|f| f.parse::<u64>().ok());
    state != Some("Z") && started == Some(start_ticks)
}

/// A new random sandbox id: 16 hex digits.
pub fn new_sandbox_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut hex, b| {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_told_from_a_reused_pid() {
        let me = std::process::id();
        let start = start_ticks(me).unwrap();
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1), "another start time");
        assert!(!is_alive(u32::MAX - 1, start), "no such process");
        assert_eq!(start_ticks(u32::MAX - 1), None);
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_ticks(pid).unwrap();
        // Not reaped yet: wait until it has exited, then look.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_alive(pid, start) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            start_ticks(pid).is_some(),
            "control: the zombie is still in /proc"
        );
        assert!(!is_alive(pid, start), "an exited, unreaped child is gone");
        drop(child);
    }

    #[test]
    fn ids_are_sixteen_hex_digits_and_differ() {
        let (a, b) = (new_sandbox_id(), new_sandbox_id());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
