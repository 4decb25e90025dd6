//! Resource limits, probed by trying to exhaust them in a bounded, self-cleaning way:
//! processes (fork bomb), memory, disk space, inodes, and CPU quota.
//!
//! Every probe stops as soon as its verdict is known (e.g. memory stops just past
//! 16 GiB), is bounded in time, and removes what it created. They are meant for the inside
//! of a sandbox with limits: the runner only starts them when
//! `MOAT_PROBE_ALLOW_RESOURCES=1` is set.

use std::ffi::CString;
use std::time::{Duration, Instant};

use libc::{c_int, c_long};

use crate::report::{Check, Outcome};
use crate::sys::{self, cstring, describe_exit, errno, errno_name, Exit};

const CLASS: &str = "resources";

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// All resource checks, in output order. The fork bomb goes last: on gVisor's ptrace
/// platform it takes the whole sandbox down (the sentry panics when the host pids limit
/// stops it from creating stub processes), and nothing after it would run.
pub fn checks() -> Vec<Check> {
    let c = |id: &'static str, name: &'static str, run: fn() -> Outcome| {
        Check::new(id, CLASS, name, run)
    };
    vec![
        c("resources.cpu", "CPU quota", cpu).with_timeout(6),
        c("resources.disk", "fill /tmp", disk).with_timeout(30),
        c("resources.inodes", "create 2M files in /tmp", inodes).with_timeout(45),
        c("resources.memory", "allocate and touch memory", memory).with_timeout(25),
        c("resources.fork_bomb", "fork until failure", fork_bomb).with_timeout(25),
    ]
}

/// `(file, value)` of the nearest finite limit, and the files looked at.
fn limit(
    v1_ctrl: &str,
    v1: &str,
    v2: &str,
    finite: fn(&str) -> bool,
) -> (Option<(String, String)>, usize) {
    let files = sys::cgroup_files(v1_ctrl, v1, v2);
    (sys::first_finite_limit(&files, finite), files.len())
}

fn finite_max(v: &str) -> bool {
    !v.is_empty() && v != "max" && !v.starts_with("max ")
}

fn finite_v1_bytes(v: &str) -> bool {
    // v1 "unlimited" is PAGE_COUNTER_MAX rounded, ~2^63.
    match v.parse::<u64>() {
        Ok(n) => n < (1 << 62),
        Err(_) => finite_max(v),
    }
}

fn describe_limit(what: &str, l: &(Option<(String, String)>, usize)) -> String {
    match l {
        (Some((f, v)), _) => format!("{what} limit {f}={v}"),
        (None, 0) => format!("no {what} limit file visible"),
        (None, n) => format!("{what} unlimited in {n} cgroup files"),
    }
}

fn cpu() -> Outcome {
    let quota = limit("cpu", "cpu.cfs_quota_us", "cpu.max", |v| {
        let first = v.split_whitespace().next().unwrap_or("");
        !first.is_empty() && first != "max" && first != "-1"
    });
    let wall = Instant::now();
    let cpu0 = process_cpu_time();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let start = Instant::now();
                let mut x: u64 = 0;
                while start.elapsed() < Duration::from_secs(1) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let ratio = (process_cpu_time() - cpu0) / wall.elapsed().as_secs_f64().max(0.001);
    let detail = format!(
        "{}; 2 spinning threads got {ratio:.2} CPUs",
        describe_limit("cpu", &quota)
    );
    match quota {
        (Some(_), _) => Outcome::contained(detail),
        // No cgroup files at all: judge by what the spin got.
        (None, 0) if ratio < 1.5 => Outcome::contained(detail),
        _ => Outcome::exposed(detail),
    }
}

fn process_cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn fork_bomb() -> Outcome {
    const MAX: usize = 100_000;
    const EXPOSED_ABOVE: usize = 20_000;
    const BOUND: Duration = Duration::from_secs(10);
    let pids_limit = limit("pids", "pids.max", "pids.max", finite_max);
    let start = Instant::now();
    let mut pids: Vec<libc::pid_t> = Vec::with_capacity(MAX);
    let mut stop = format!("reached {MAX}");
    while pids.len() < MAX {
        if start.elapsed() > BOUND {
            stop = format!("time bound {}s", BOUND.as_secs());
            break;
        }
        match sys::fork_run(sys::park) {
            Ok(p) => pids.push(p),
            Err(e) => {
                stop = format!("fork: {}", errno_name(e));
                break;
            }
        }
    }
    let n = pids.len();
    for &p in &pids {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    for &p in &pids {
        let mut st: c_int = 0;
        // SAFETY: st is a valid out-pointer; p is our child.
        unsafe { libc::waitpid(p, &mut st, 0) };
    }
    let detail = format!(
        "{n} processes forked before stopping ({stop}) in {:.1}s; {}",
        start.elapsed().as_secs_f64(),
        describe_limit("pids", &pids_limit)
    );
    if n > EXPOSED_ABOVE {
        Outcome::exposed(detail)
    } else if stop.starts_with("time bound") {
        Outcome::contained(format!("{detail} (time-bounded: inconclusive)"))
    } else {
        Outcome::contained(detail)
    }
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn memory() -> Outcome {
    const CHUNK: usize = 64 << 20;
    const MAX: u64 = 64 * GIB;
    const EXPOSED_ABOVE: u64 = 16 * GIB;
    const BOUND: Duration = Duration::from_secs(15);
    let mem_limit = limit(
        "memory",
        "memory.limit_in_bytes",
        "memory.max",
        finite_v1_bytes,
    );
    // Never push the machine itself into OOM: stop 2 GiB short of what it has free. A
    // small MemAvailable (under 4 GiB) is left to the OOM killer instead: it usually
    // reflects the sandbox's own limit (gVisor, lxcfs) rather than the machine's.
    let safety = match mem_available() {
        Some(a) if a >= 4 * GIB => a - 2 * GIB,
        _ => MAX,
    };
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Outcome::contained(format!("probe error: pipe2: {}", errno_name(errno())));
    }
    let (rd, wr) = (fds[0], fds[1]);
    let child = sys::fork_run(|| {
        sys::close_fd(c_long::from(rd));
        // Be the OOM killer's first choice, not the probe.
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
        let mut total: u64 = 0;
        loop {
            if total > EXPOSED_ABOVE || total >= MAX {
                return 0;
            }
            if total + CHUNK as u64 > safety {
                return 3;
            }
            // SAFETY: anonymous private mapping; no file or existing memory involved.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    CHUNK,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return 2;
            }
            let base = p.cast::<u8>();
            for off in (0..CHUNK).step_by(4096) {
                // SAFETY: off < CHUNK, inside the mapping just created.
                unsafe { base.add(off).write_volatile(1) };
            }
            total += CHUNK as u64;
            let bytes = total.to_ne_bytes();
            // SAFETY: writes 8 bytes from a local array to our pipe.
            unsafe { libc::write(wr, bytes.as_ptr().cast(), bytes.len()) };
        }
    });
    sys::close_fd(c_long::from(wr));
    let pid = match child {
        Ok(p) => p,
        Err(e) => {
            sys::close_fd(c_long::from(rd));
            return Outcome::contained(format!("fork: {}", errno_name(e)));
        }
    };
    let start = Instant::now();
    let mut reached: u64 = 0;
    let mut timed_out = false;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let left = BOUND.saturating_sub(start.elapsed());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut pfd = libc::pollfd {
            fd: rd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as c_int) };
        if r <= 0 {
            continue;
        }
        let mut buf = [0u8; 512];
        // SAFETY: reads at most buf.len() bytes into buf.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        pending.extend_from_slice(&buf[..usize::try_from(n).unwrap_or(0)]);
        while pending.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&pending[..8]);
            reached = u64::from_ne_bytes(b);
            pending.drain(..8);
        }
    }
    sys::close_fd(c_long::from(rd));
    let exit = if timed_out {
        sys::kill_and_reap(pid);
        Exit::TimedOut
    } else {
        sys::wait_for(pid, Duration::from_secs(5))
    };
    let gib = reached as f64 / GIB as f64;
    let detail = format!(
        "child touched {gib:.2} GiB, then {} in {:.1}s; {}",
        match exit {
            Exit::Code(0) => "stopped (verdict reached)".to_string(),
            Exit::Code(2) => "mmap failed".to_string(),
            Exit::Code(3) => "stopped at the host safety margin".to_string(),
            other => describe_exit(other),
        },
        start.elapsed().as_secs_f64(),
        describe_limit("memory", &mem_limit)
    );
    // Stopped at the safety margin without hitting a limit: exposed unless a finite
    // limit is visible (then the margin merely came first).
    if reached > EXPOSED_ABOVE || (exit == Exit::Code(3) && mem_limit.0.is_none()) {
        Outcome::exposed(detail)
    } else if exit == Exit::TimedOut {
        Outcome::contained(format!("{detail} (time-bounded: inconclusive)"))
    } else {
        Outcome::contained(detail)
    }
}

fn free_bytes(path: &CString) -> Option<u64> {
    // SAFETY: statvfs is plain data; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and st a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

fn disk() -> Outcome {
    const PATH: &str = "/tmp/probe-fill";
    const EXPOSED_ABOVE: u64 = 8 * GIB;
    const MAX: u64 = 32 * GIB;
    const BOUND: Duration = Duration::from_secs(12);
    // Never fill a filesystem to the brim: stop with 512 MiB left.
    const RESERVE: u64 = 512 * MIB;
    if !std::path::Path::new("/tmp").is_dir() {
        return Outcome::not_present("/tmp");
    }
    let p = cstring(PATH);
    let dir = cstring("/tmp");
    // SAFETY: path is NUL-terminated.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Outcome::contained(format!("create {PATH}: {}", errno_name(errno())));
    }
    let block = vec![0xa5u8; MIB as usize];
    let start = Instant::now();
    let mut written: u64 = 0;
    let mut stop = String::new();
    while written < MAX {
        if written > EXPOSED_ABOVE {
            stop = "verdict reached".to_string();
            break;
        }
        if start.elapsed() > BOUND {
            stop = format!("time bound {}s", BOUND.as_secs());
            break;
        }
        if written.is_multiple_of(256 * MIB) && free_bytes(&dir).is_some_and(|f| f < RESERVE) {
            stop = "filesystem nearly full (512 MiB safety reserve)".to_string();
            break;
        }
        // SAFETY: writes from `block`, which holds block.len() bytes.
        let n = unsafe { libc::write(fd, block.as_ptr().cast(), block.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            stop = format!("write: {}", errno_name(e));
            break;
        }
        if n == 0 {
            stop = "write returned 0".to_string();
            break;
        }
        written += n as u64;
    }
    sys::close_fd(c_long::from(fd));
    // SAFETY: path is NUL-terminated.
    unsafe { libc::unlink(p.as_ptr()) };
    let detail = format!(
        "wrote {:.2} GiB to {PATH} in {:.1}s, stopped: {stop} (file removed)",
        written as f64 / GIB as f64,
        start.elapsed().as_secs_f64()
    );
    if written > EXPOSED_ABOVE {
        Outcome::exposed(detail)
    } else if stop.starts_with("time bound") {
        Outcome::contained(format!("{detail} (time-bounded: inconclusive)"))
    } else {
        Outcome::contained(detail)
    }
}

fn inodes() -> Outcome {
    const DIR: &str = "/tmp/probe-inodes";
    const MAX: u64 = 2_000_000;
    const BOUND: Duration = Duration::from_secs(12);
    if !std::path::Path::new("/tmp").is_dir() {
        return Outcome::not_present("/tmp");
    }
    let d = cstring(DIR);
    // SAFETY: path is NUL-terminated.
    if unsafe { libc::mkdir(d.as_ptr(), 0o700) } != 0 && errno() != libc::EEXIST {
        return Outcome::contained(format!("mkdir {DIR}: {}", errno_name(errno())));
    }
    // SAFETY: path is NUL-terminated.
    let dfd = unsafe {
        libc::open(
            d.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Outcome::contained(format!("open {DIR}: {}", errno_name(errno())));
    }
    let start = Instant::now();
    let mut created: u64 = 0;
    let mut stop = format!("all {MAX} created");
    while created < MAX {
        if created.is_multiple_of(1024) && start.elapsed() > BOUND {
            stop = format!("time bound {}s", BOUND.as_secs());
            break;
        }
        let name = cstring(&created.to_string());
        // SAFETY: name is NUL-terminated and relative to our directory descriptor;
        // S_IFREG needs no privilege.
        let r = unsafe { libc::mknodat(dfd, name.as_ptr(), libc::S_IFREG | 0o600, 0) };
        if r != 0 {
            stop = format!("mknod: {}", errno_name(errno()));
            break;
        }
        created += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for i in 0..created {
        let name = cstring(&i.to_string());
        // SAFETY: name is NUL-terminated and relative to our directory descriptor.
        unsafe { libc::unlinkat(dfd, name.as_ptr(), 0) };
    }
    sys::close_fd(c_long::from(dfd));
    // SAFETY: path is NUL-terminated.
    unsafe { libc::rmdir(d.as_ptr()) };
    let detail = format!(
        "created {created} files in {elapsed:.1}s, stopped: {stop}; removed in {:.1}s",
        start.elapsed().as_secs_f64() - elapsed
    );
    if created >= MAX {
        Outcome::exposed(detail)
    } else if stop.starts_with("time bound") {
        Outcome::contained(format!("{detail} (time-bounded: inconclusive)"))
    } else {
        Outcome::contained(detail)
    }
}
