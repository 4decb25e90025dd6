//! `/proc/PID/mountinfo`: the mounts a process sees, by id and mount point.

use std::path::PathBuf;

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount id (what `/proc/PID/fdinfo/FD` calls `mnt_id`).
    pub id: u64,
    /// Where it is mounted, relative to the process's root, escapes undone.
    pub point: PathBuf,
}

/// The mounts of a mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let point = fields.nth(3)?;
            Some(Mount {
                id,
                point: PathBuf::from(unescape(point)),
            })
        })
        .collect()
}

/// Reads and parses `/proc/PID/mountinfo` (or any mountinfo file).
pub fn read(path: &str) -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

/// A mountinfo path field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/tail\\04"), "/tail\\04");
        assert_eq!(unescape("/é\\"), "/é\\");
    }

    #[test]
    fn lines_give_id_and_mount_point() {
        let text =
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw\nbroken\n";
        assert_eq!(
            parse(text),
            [Mount {
                id: 36,
                point: PathBuf::from("/mnt two")
            }]
        );
    }
}
