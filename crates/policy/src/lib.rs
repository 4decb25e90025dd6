//! Everything moat knows about a sandbox before it touches the kernel.
//!
//! Input (a profile, a [`RunRequest`] built from the command line or an API call) is parsed
//! and validated here once and compiled into a [`Plan`]: plain, printable data that the
//! `moat-sandbox` crate applies. Nothing in this crate performs a syscall, so every rule
//! about what a sandbox may do is unit-tested without root.
#![forbid(unsafe_code)]

mod compile;
pub mod enforce;
pub mod kubearmor;
mod network;
mod plan;
mod profile;
mod request;
mod seccomp;
pub mod sockrules;
mod units;

pub use compile::{compile, lexically_normal, CompileError, HostFacts};
pub use network::{
    parse_egress, parse_rate, plan_network, NetworkError, NetworkRequest, NetworkSettings,
    ALWAYS_CLOSED,
};
pub use plan::*;
pub use profile::{
    LandlockSettings, Limits, PolicySettings, Posture, Postures, Profile, ProfileError,
    ProfileSource,
};
pub use request::{RequestError, RunRequest};
pub use seccomp::{
    AllowExceptRule, ArgCondition, CompareOp, ConditionalRule, Errno, ErrnoRule, SeccompProfile,
    SeccompProfileError,
};
pub use units::{parse_cpus, parse_size, UnitError};

/// The uid and gid the workload runs as inside every sandbox.
pub const SANDBOX_UID: u32 = 1000;
/// The user name of [`SANDBOX_UID`] in the sandbox's own passwd file.
pub const SANDBOX_USER: &str = "jovyan";
/// Where the sandbox user's home directory appears inside the sandbox.
pub const SANDBOX_HOME: &str = "/home/jovyan";
/// How many ids each sandbox's user namespace maps (inside ids 0..ID_RANGE_SIZE).
pub const ID_RANGE_SIZE: u32 = 65536;
