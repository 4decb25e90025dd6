//! Alerts: one JSON object per line, with the field names of KubeArmor's alerts, so
//! pipelines that parse those parse moat's.
//!
//! Sources:
//! - the kernel audit log ([`landlock`]): Landlock (ABI 7) records every access it denies
//!   and seccomp every syscall it refuses (the filter is installed with the log flag);
//!   moat reads the records from the audit netlink multicast group and keeps those of its
//!   own sandbox (by the Landlock domain its init created, and by the sandbox's host uids);
//! - fanotify ([`fanotify`]): opens and executions that Audit rules name;
//! - the socket programs' ring buffer, read by moat-bpf, which writes through this crate.
//!
//! Loss is never silent: whatever a source dropped is counted in a `SystemEvent` alert,
//! and so is whatever the rate limit ([`limit`]) held back.
#![forbid(unsafe_code)]

pub mod alert;
pub mod audit;
pub mod fanotify;
pub mod landlock;
pub mod limit;
pub mod mountinfo;
pub mod process;
pub mod reader;

pub use alert::{Alert, AlertContext, AlertWriter, RuleMatch};
pub use landlock::{spawn_reader, ReaderHandle, ReaderReport};
pub use limit::AlertLimit;
