//! The classic cgroup attach (`BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI`). Unlike a BPF
//! link, which detaches when its last file descriptor closes, this attachment belongs to
//! the cgroup: a sandbox stays covered even if moat's process is killed first.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::Program;

/// Attaches `program` at its own attach point to the cgroup open as `cgroup`.
pub fn to_cgroup(program: &Program<'_>, cgroup: &File) -> io::Result<()> {
    let attach_type = program.attach_type() as libbpf_sys::bpf_attach_type;
    // SAFETY: plain integers in; the program and cgroup descriptors are borrowed and stay
    // open for the duration of the call.
    let result = unsafe {
        libbpf_sys::bpf_prog_attach(
            program.as_fd().as_raw_fd(),
            cgroup.as_raw_fd(),
            attach_type,
            libbpf_sys::BPF_F_ALLOW_MULTI,
        )
    };
    if result < 0 {
        return Err(io::Error::from_raw_os_error(-result));
    }
    Ok(())
}
