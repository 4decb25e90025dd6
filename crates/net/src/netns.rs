//! Running a tool inside a sandbox's network namespace without a helper process.
//!
//! A child inherits the namespaces of the thread that creates it, so a short-lived
//! thread joins the namespace and spawns the tool from there. That saves the extra
//! program (`nsenter`) and its start-up on every sandbox start; moat's other threads
//! never leave the namespace they are in.

use std::fs::File;

use nix::sched::{setns, CloneFlags};

use crate::NetError;

/// Fails unless `netns` is a network namespace other than the caller's: rules and links
/// meant for a sandbox must never land on the host (a sandbox that died and whose pid
/// was reused by a host process, say).
pub fn ensure_foreign(netns: &str) -> Result<(), NetError> {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &str| {
        std::fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| NetError::Netlink {
                action: format!("inspect network namespace {path}"),
                message: e.to_string(),
            })
    };
    if identity(netns)? == identity("/proc/thread-self/ns/net")? {
        return Err(NetError::Netlink {
            action: format!("join network namespace {netns}"),
            message: "it is moat's own namespace, not the sandbox's".into(),
        });
    }
    Ok(())
}

/// Runs `work` on a thread that has joined the network namespace at `netns`
/// (`/proc/PID/ns/net`), or on the calling thread when `netns` is None.
pub fn run_in<T: Send>(
    netns: Option<&str>,
    work: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    let Some(path) = netns else {
        return work();
    };
    let failed = |message: String| NetError::Netlink {
        action: format!("join network namespace {path}"),
        message,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let namespace = File::open(path).map_err(|e| failed(e.to_string()))?;
                setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|e| failed(e.to_string()))?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(failed("the worker thread panicked".into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn namespace_of_thread() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| m.ino())
            .unwrap()
    }

    #[test]
    fn the_work_runs_in_the_named_namespace_and_the_caller_stays_put() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: joining a network namespace needs root");
            return;
        }
        // A throwaway namespace, held open by a child that sleeps in it.
        let mut holder = Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .unwrap();
        let path = format!("/proc/{}/ns/net", holder.id());
        let mut target = namespace_of_thread();
        for _ in 0..400 {
            target = std::fs::metadata(&path).map(|m| m.ino()).unwrap();
            if target != namespace_of_thread() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_ne!(target, namespace_of_thread(), "unshare made a namespace");
        let before = namespace_of_thread();
        let seen = run_in(Some(&path), || Ok(namespace_of_thread())).unwrap();
        let from_child = run_in(Some(&path), || {
            let output = Command::new("readlink")
                .arg("/proc/self/ns/net")
                .output()
                .unwrap();
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        })
        .unwrap();
        let foreign = ensure_foreign(&path);
        let _ = holder.kill();
        let _ = holder.wait();
        assert_eq!(seen, target, "the work ran in the sandbox's namespace");
        assert_eq!(
            from_child,
            format!("net:[{target}]"),
            "and so did its child"
        );
        assert_eq!(namespace_of_thread(), before, "the caller did not move");
        assert!(foreign.is_ok(), "a sandbox's namespace is accepted");
        assert!(
            ensure_foreign("/proc/self/ns/net").is_err(),
            "moat's own namespace is refused"
        );
        let missing = run_in(Some("/proc/0/ns/net"), || Ok(()));
        assert!(
            matches!(missing, Err(NetError::Netlink { .. })),
            "a namespace that does not exist is an error"
        );
    }
}
