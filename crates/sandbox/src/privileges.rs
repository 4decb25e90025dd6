//! Dropping every capability for good: securebits locked, bounding set emptied, then all
//! other sets cleared. Runs inside the sandbox, in its own user namespace, while the init
//! still holds CAP_SETPCAP (needed for the first two steps).

use caps::{CapSet, Capability};
use thiserror::Error;

use crate::sys;

/// SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
/// SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED (with KEEP_CAPS off) |
/// SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: uid 0 in the sandbox
/// gains nothing by exec, a uid change cannot keep or regain capabilities, and no
/// ambient capability can be raised; locked so the workload cannot undo it.
pub const LOCKED_SECUREBITS: libc::c_ulong = 0b1110_1111;

/// A privilege could not be dropped.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// prctl(PR_SET_SECUREBITS) failed.
    #[error("cannot lock securebits")]
    Securebits(#[source] std::io::Error),
    /// A capability set could not be changed.
    #[error("cannot clear the {set} capability set: {message}")]
    Clear {
        /// Which set.
        set: &'static str,
        /// Why.
        message: String,
    },
    /// A set is still non-empty after clearing.
    #[error("the {0} capability set is not empty after dropping")]
    StillHeld(&'static str),
}

/// Drops every capability from every set, locking securebits first when asked.
pub fn drop_all(lock_securebits: bool) -> Result<(), PrivilegeError> {
    if lock_securebits {
        sys::prctl_int(libc::PR_SET_SECUREBITS, LOCKED_SECUREBITS)
            .map_err(PrivilegeError::Securebits)?;
    }
    let clear_err = |set: &'static str| {
        move |e: caps::errors::CapsError| PrivilegeError::Clear {
            set,
            message: e.to_string(),
        }
    };
    for capability in caps::all() {
        drop_bounding(capability).map_err(clear_err("bounding"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(clear_err("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(clear_err("inheritable"))?;
    caps::clear(None, CapSet::Effective).map_err(clear_err("effective"))?;
    caps::clear(None, CapSet::Permitted).map_err(clear_err("permitted"))?;
    for (set, name) in [
        (CapSet::Bounding, "bounding"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
    ] {
        if !caps::read(None, set).map_err(clear_err(name))?.is_empty() {
            return Err(PrivilegeError::StillHeld(name));
        }
    }
    Ok(())
}

fn drop_bounding(capability: Capability) -> Result<(), caps::errors::CapsError> {
    // Capabilities newer than the kernel report EINVAL: they cannot be held anyway.
    match caps::has_cap(None, CapSet::Bounding, capability) {
        Ok(true) => caps::drop(None, CapSet::Bounding, capability),
        _ => Ok(()),
    }
}
