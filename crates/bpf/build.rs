//! Compiles the BPF programs with clang (`-target bpf`); the object is embedded in the
//! crate. Needs clang (`apt install clang`, which scripts/deps does).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/bpf/socket.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("socket.bpf.o");
    // libbpf's own headers (bpf_helpers.h), from the libbpf-sys build.
    let libbpf = std::env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers");
    // The kernel's uapi headers: <linux/bpf.h>, and <asm/types.h> of the build machine.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{libbpf}"))
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|err| {
            panic!("cannot run {clang} to build the BPF programs ({err}); install clang (scripts/deps)")
        });
    assert!(status.success(), "{clang} failed to build {source}");
}
