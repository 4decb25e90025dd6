//! Host reachability: TCP services on loopback (a sandbox with its own network namespace
//! has nothing listening there), host control sockets (Docker, containerd, systemd, D-Bus,
//! moat itself), network interfaces and routes beyond loopback, and the cloud metadata
//! address. All connects are bounded (300 ms) and send nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::report::{Check, Outcome};
use crate::sys::io_err_name;

const CLASS: &str = "reach";

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Ports of services commonly found on hosts: ssh, http, rpcbind, docker, postgres,
/// redis, http-alt, kubelet, kubelet read-only.
const PORTS: &[u16] = &[22, 80, 111, 2375, 5432, 6379, 8080, 10250, 10255];

/// Host control sockets.
const UNIX_SOCKETS: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/crio/crio.sock",
    "/run/moat/moat.sock",
    "/run/systemd/private",
    "/run/dbus/system_bus_socket",
];

/// All reach checks, in output order.
pub fn checks() -> Vec<Check> {
    let c = |id: &'static str, name: &'static str, run: fn() -> Outcome| {
        Check::new(id, CLASS, name, run)
    };
    vec![
        c(
            "reach.localhost_tcp",
            "TCP 127.0.0.1 host service ports",
            localhost_tcp,
        ),
        c(
            "reach.localhost6_tcp",
            "TCP [::1] host service ports",
            localhost6_tcp,
        ),
        c(
            "reach.unix_sockets",
            "host control unix sockets",
            unix_sockets,
        ),
        c(
            "net.interfaces",
            "network interfaces besides lo",
            interfaces,
        ),
        c("reach.default_route", "IPv4 default route", default_route),
        c("reach.metadata", "TCP 169.254.169.254:80", metadata),
    ]
}

fn connect(addr: SocketAddr) -> Result<(), String> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map(drop)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                "timeout".to_string()
            } else {
                io_err_name(&e)
            }
        })
}

fn scan(ip: IpAddr) -> Outcome {
    let mut open = Vec::new();
    let mut closed = Vec::new();
    for &port in PORTS {
        match connect(SocketAddr::new(ip, port)) {
            Ok(()) => open.push(port.to_string()),
            Err(e) => closed.push(format!("{port}:{e}")),
        }
    }
    if open.is_empty() {
        Outcome::contained(format!("{ip}: nothing accepted ({})", closed.join(" ")))
    } else {
        Outcome::exposed(format!("{ip}: connected to ports {}", open.join(",")))
    }
}

fn localhost_tcp() -> Outcome {
    scan(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn localhost6_tcp() -> Outcome {
    scan(IpAddr::V6(Ipv6Addr::LOCALHOST))
}

fn unix_sockets() -> Outcome {
    let mut connected = Vec::new();
    let mut other = Vec::new();
    for path in UNIX_SOCKETS {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        match UnixStream::connect(path) {
            Ok(_) => connected.push(*path),
            Err(e) => other.push(format!("{path}: {}", io_err_name(&e))),
        }
    }
    if !connected.is_empty() {
        Outcome::exposed(format!("connected to {}", connected.join(" ")))
    } else if other.is_empty() {
        Outcome::contained(format!("none of {} socket paths exist", UNIX_SOCKETS.len()))
    } else {
        Outcome::contained(other.join(", "))
    }
}

/// Interfaces other than lo. Meaningful for a "no network" sandbox.
fn interfaces() -> Outcome {
    let text = match std::fs::read_to_string("/proc/net/dev") {
        Ok(t) => t,
        Err(e) => return Outcome::not_present(&format!("/proc/net/dev ({})", io_err_name(&e))),
    };
    let names: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|n| !n.is_empty())
        .collect();
    let extra: Vec<&str> = names.iter().copied().filter(|n| *n != "lo").collect();
    if extra.is_empty() {
        Outcome::contained(format!("interfaces: {}", names.join(" ")))
    } else {
        Outcome::exposed(format!("interfaces besides lo: {}", extra.join(" ")))
    }
}

fn default_route() -> Outcome {
    if !Path::new("/proc/net/route").exists() {
        return Outcome::not_present("/proc/net/route");
    }
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default = text.lines().skip(1).find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "00000000"
    });
    match default {
        Some(l) => Outcome::exposed(format!(
            "default route: {}",
            l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        )),
        None => Outcome::contained(format!(
            "no default route ({} routes)",
            text.lines().count().saturating_sub(1)
        )),
    }
}

fn metadata() -> Outcome {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);
    match connect(addr) {
        Ok(()) => Outcome::exposed("169.254.169.254:80 accepted a connection"),
        Err(e) => Outcome::contained(format!("169.254.169.254:80: {e}")),
    }
}
