//! Filling an array map through a shared mapping of its memory (`BPF_F_MMAPABLE`): one
//! copy for the whole table, where an update per element costs a trip through the
//! kernel each (about 0.2 µs; 4 ms for a policy of 10,000 networks).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Copies `values` (elements laid end to end, each `value_size` bytes) into the
/// mmapable array map `map` of `max_entries` elements, from index 0.
pub fn fill(
    map: BorrowedFd<'_>,
    value_size: usize,
    max_entries: usize,
    values: &[u8],
) -> io::Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    if value_size == 0 || !values.len().is_multiple_of(value_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "values are not whole elements",
        ));
    }
    let count = values.len() / value_size;
    if count > max_entries {
        // The kernel checks a mapping's length by whole pages only: a few elements too
        // many would be written past the table, and lost, without an error.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{count} elements for a table of {max_entries}"),
        ));
    }
    // The kernel lays elements out at a stride of the value size rounded up to 8.
    let stride = value_size.next_multiple_of(8);
    let length = stride * count;
    // SAFETY: a new shared mapping of `length` bytes, within the map's memory (at most
    // `max_entries` elements, checked above). Nothing else refers to the mapping.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `base` is a writable mapping of `length` bytes, which no Rust reference
    // aliases, and it lives until the munmap below.
    let table = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), length) };
    for (slot, value) in table
        .chunks_exact_mut(stride)
        .zip(values.chunks_exact(value_size))
    {
        slot[..value_size].copy_from_slice(value);
    }
    // SAFETY: the mapping made above, with its length; `table` is not used after this.
    if unsafe { libc::munmap(base, length) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is a failed test
    use super::*;
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    use std::os::fd::AsFd;

    #[test]
    fn a_table_takes_what_fits_and_refuses_more() {
        if !nix::unistd::geteuid().is_root() {
            assert_ne!(
                std::env::var("MOAT_REQUIRE").as_deref(),
                Ok("all"),
                "MOAT_REQUIRE=all but BPF maps need root"
            );
            eprintln!("skipped: BPF maps need root");
            return;
        }
        let options = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: libbpf_sys::BPF_F_MMAPABLE,
            ..Default::default()
        };
        // Two 12-byte elements (a stride of 16), in less than a page.
        let map = MapHandle::create(MapType::Array, Some("moat_test"), 4, 12, 2, &options).unwrap();
        let values: Vec<u8> = (1..=24).collect();
        fill(map.as_fd(), 12, 2, &values).unwrap();
        for (index, expected) in values.chunks(12).enumerate() {
            let key = (index as u32).to_ne_bytes();
            let got = map.lookup(&key, MapFlags::ANY).unwrap().unwrap();
            assert_eq!(got, expected, "element {index}");
        }
        let error = fill(map.as_fd(), 12, 2, &[0; 36]).unwrap_err();
        assert!(
            error.to_string().contains("3 elements for a table of 2"),
            "{error}"
        );
    }
}
