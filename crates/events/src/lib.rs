//! Alerts: one JSON object per line, with the field names of KubeArmor's alerts, so
//! pipelines that parse those parse moat's.
//!
//! Today's source is the kernel audit log: Landlock (ABI 7) records every access it
//! denies, and moat reads the records from the audit netlink multicast group, keeps those
//! of its own sandbox (by the Landlock domain its init created), and writes an alert per
//! denial. Loss is never silent: records the kernel or the socket dropped are counted in
//! a `SystemEvent` alert.
#![forbid(unsafe_code)]

pub mod alert;
pub mod audit;
pub mod fanotify;
pub mod landlock;
pub mod process;
pub mod reader;

pub use alert::{Alert, AlertContext, AlertWriter, RuleMatch};
pub use landlock::{spawn_reader, ReaderHandle, ReaderReport};
