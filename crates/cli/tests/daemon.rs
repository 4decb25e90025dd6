//! `moat daemon` end to end: the real daemon on a socket of its own, real sandboxes, real
//! signals. Each test runs the daemon inside a throwaway network namespace, so the
//! sandboxes' links and rules never touch the machine's own network.
#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{counted, leftovers, require, require_root};
use serde_json::Value;

/// A server that answers every connection with a line and ends cleanly on SIGTERM.
const SERVER: &str = r#"
import os, signal, socket, sys
def bye(*_):
    print("got SIGTERM, shutting down", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8888)); s.listen(16)
print("listening as uid", os.getuid(), "token", os.environ.get("TOKEN"), flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hello from the sandbox\n"); c.close()
"#;

struct Lab {
    netns: String,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    daemon_options: Vec<String>,
}

impl Lab {
    fn new(tag: &str) -> Option<Lab> {
        if !require_root() {
            return None;
        }
        let tools = ["ip", "nsenter", "python3"].iter().all(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !require(
            tools,
            "ip, nsenter and python3 are needed (apt-get install iproute2 util-linux python3)",
        ) {
            return None;
        }
        let netns = format!("moat-td-{tag}-{}", std::process::id());
        let made = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(made.success(), "ip netns add {netns}");
        let lab = Lab {
            netns,
            dir: tempfile::Builder::new()
                .prefix("moat-daemon-test-")
                .tempdir()
                .unwrap(),
            daemon: None,
            daemon_options: Vec::new(),
        };
        lab.in_netns("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        Some(lab)
    }

    fn in_netns(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        command
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("moat.sock")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start_daemon(&mut self) {
        let child = self
            .in_netns(env!("CARGO_BIN_EXE_moat"))
            .arg("daemon")
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state())
            .args(&self.daemon_options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not start serving");
    }

    /// Ends the daemon with `signal` and waits for it.
    fn stop_daemon(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = child.wait();
        }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        request(&self.socket(), method, path, body)
    }

    fn json(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.request(method, path, body);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, value)
    }

    /// Polls a sandbox until `done` holds for it.
    fn wait_for(&self, key: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, record) = self.json("GET", &format!("/v1/sandboxes/{key}"), "");
            assert_eq!(status, 200, "{record}");
            if done(&record) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "{key} never became {what}: {record}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects from the lab's namespace (where the host ends live) to address:8888.
    fn fetch(&self, address: &str) -> String {
        let script = format!(
            "import socket; s = socket.create_connection(('{address}', 8888), timeout=3); print(s.recv(100).decode().strip())"
        );
        let output = self
            .in_netns("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        if output.status.success() {
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        } else {
            format!("failed: {}", String::from_utf8_lossy(&output.stderr).trim())
        }
    }

    fn links(&self) -> String {
        let output = self.in_netns("ip").args(["-o", "link"]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_daemon(nix::sys::signal::Signal::SIGKILL);
        // Stop whatever the test left running, then collect it.
        if let Ok(entries) = std::fs::read_dir(self.state().join("sandboxes")) {
            for entry in entries.flatten() {
                let status =
                    std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                if let Ok(status) = serde_json::from_str::<Value>(&status) {
                    if status["state"] == "running" {
                        if let Some(pid) = status["pid"].as_i64() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = self
            .in_netns(env!("CARGO_BIN_EXE_moat"))
            .args(["gc", "--quiet"])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// One HTTP/1.1 request over the unix socket; returns the status and the body.
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // One write: a server that answers from the headers alone (405) and closes must not
    // meet a body still on its way. Should it close first anyway, its answer is read.
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: moat\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match stream.write_all(text.as_bytes()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => {
            other.unwrap();
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn server_request(name: &str) -> String {
    serde_json::json!({
        "name": name,
        "command": ["/usr/bin/python3", "-c", SERVER],
        "env": {"TOKEN": "s3cret-token"},
        "network": {"mode": "isolated", "publish": [8888]},
        "labels": {"hub.jupyter.org/username": "alice"},
    })
    .to_string()
}

#[test]
fn bad_requests_get_a_reason_and_create_nothing() {
    let Some(mut lab) = Lab::new("bad") else {
        return;
    };
    lab.start_daemon();
    let cases = [
        ("{not json", "request body"),
        (
            r#"{"command":["true"],"memory":"1G"}"#,
            "unknown field `memory`",
        ),
        (r#"{"command":[]}"#, "command"),
        (
            r#"{"command":["true"],"limits":{"memory":"lots"}}"#,
            "is not a size",
        ),
        (
            r#"{"command":["true"],"network":{"mode":"everywhere"}}"#,
            "everywhere",
        ),
        (
            r#"{"command":["true"],"network":{"mode":"egress","egress":["169.254.169.254/32"]}}"#,
            "169.254",
        ),
        (
            r#"{"command":["true"],"profile":"no-such-profile"}"#,
            "no-such-profile",
        ),
        (r#"{"command":["true"],"name":"../etc"}"#, "name"),
    ];
    for (body, reason) in cases {
        let (status, answer) = lab.json("POST", "/v1/sandboxes", body);
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{body}: expected {reason:?} in {error:?}"
        );
    }
    // A home that holds the daemon's own state or socket is refused.
    for home in [lab.dir.path().to_path_buf(), lab.state().join("sandboxes")] {
        let body = serde_json::json!({"command": ["true"], "home": home}).to_string();
        let (status, answer) = lab.json("POST", "/v1/sandboxes", &body);
        assert_eq!(status, 400, "{}: {answer}", home.display());
        assert!(
            answer["error"].as_str().unwrap().contains("overlaps"),
            "{answer}"
        );
    }
    let (status, list) = lab.json("GET", "/v1/sandboxes", "");
    assert_eq!(
        (status, list["sandboxes"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let left = std::fs::read_dir(lab.state().join("sandboxes"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "no sandbox directory is left by a refused request");
    assert_eq!(lab.json("GET", "/v1/sandboxes/nope", "").0, 404);
    assert_eq!(lab.json("POST", "/v1/sandboxes/nope/stop", "").0, 404);
    assert_eq!(lab.json("GET", "/v1/nothing-here", "").0, 404);
    let (status, answer) = lab.json("POST", "/v1/sandboxes/nope/stop", r#"{"grace_seconds":-1}"#);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(lab.json("GET", "/v1/sandboxes?color=red", "").0, 400);
}

#[test]
fn a_server_runs_keeps_running_across_daemon_restarts_and_stops_cleanly() {
    let Some(mut lab) = Lab::new("life") else {
        return;
    };
    lab.start_daemon();
    let (status, created) = lab.json("POST", "/v1/sandboxes", &server_request("jupyter-alice"));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let running = lab.wait_for("jupyter-alice", "running", |r| r["state"] == "running");
    let address = running["address"].as_str().unwrap().to_string();
    assert_eq!(
        lab.fetch(&address),
        "hello from the sandbox",
        "published port"
    );

    // The secret reached the workload, and nothing of the daemon's shows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    while !log.contains("listening") && Instant::now() < deadline {
        log = lab.request("GET", "/v1/sandboxes/jupyter-alice/logs", "").1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log.contains("token s3cret-token"), "{log}");
    assert!(
        !log.contains("listening as uid 0 "),
        "not root inside: {log}"
    );
    let files = lab.state().join("sandboxes").join(&id);
    assert!(
        !files.join("env").exists(),
        "the env file goes once the sandbox runs"
    );
    for file in ["record.json", "status"] {
        let text = std::fs::read_to_string(files.join(file)).unwrap();
        assert!(!text.contains("s3cret"), "{file} holds the secret");
    }
    let supervisor = running["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{supervisor}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("s3cret"),
        "command line holds the secret"
    );

    // One running sandbox per name.
    let (status, conflict) = lab.json("POST", "/v1/sandboxes", &server_request("jupyter-alice"));
    assert_eq!(status, 409, "{conflict}");

    // The daemon stops (SIGTERM) and crashes (SIGKILL): the server keeps answering, and
    // the next daemon re-attaches.
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        lab.stop_daemon(signal);
        assert_eq!(
            lab.fetch(&address),
            "hello from the sandbox",
            "after daemon {signal}"
        );
        lab.start_daemon();
        let (_, record) = lab.json("GET", &format!("/v1/sandboxes/{id}"), "");
        assert_eq!(
            record["state"], "running",
            "re-attached after {signal}: {record}"
        );
    }

    let (status, stopped) = lab.json(
        "POST",
        "/v1/sandboxes/jupyter-alice/stop",
        r#"{"grace_seconds":10}"#,
    );
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "exited", "{stopped}");
    assert_eq!(
        stopped["exit_code"], 0,
        "the server ended cleanly on SIGTERM: {stopped}"
    );
    let log = lab
        .request("GET", "/v1/sandboxes/jupyter-alice/logs?tail=3", "")
        .1;
    assert!(log.contains("got SIGTERM"), "{log}");
    assert!(
        lab.fetch(&address).starts_with("failed"),
        "the server is gone"
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
    assert!(!lab.links().contains("moat-"), "{}", lab.links());

    let events = std::fs::read_to_string(lab.state().join("events.jsonl")).unwrap();
    for operation in ["create", "start", "stop", "exit"] {
        assert!(
            events.contains(&format!("\"Operation\":\"{operation}\"")),
            "{operation} missing from {events}"
        );
    }
    // The same events, streamed: `moat events --all` replays and then follows.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["events", "--all", "--socket"])
        .arg(lab.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut streamed = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("\"Operation\":\"exit\""))
    {
        let mut line = String::new();
        use std::io::BufRead;
        if streamed.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push(line);
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("\"Operation\":\"start\"") && l.contains("jupyter-alice")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("\"Operation\":\"exit\"")),
        "{seen:?}"
    );

    let (_, metrics) = lab.request("GET", "/metrics", "");
    assert!(
        metrics.contains("moat_sandboxes{state=\"exited\"} 1"),
        "{metrics}"
    );

    assert_eq!(
        lab.json("DELETE", &format!("/v1/sandboxes/{id}"), "").0,
        200
    );
    assert!(!files.exists(), "a forgotten sandbox's files go");
    assert_eq!(lab.json("GET", &format!("/v1/sandboxes/{id}"), "").0, 404);
}

#[test]
fn stop_escalates_to_sigkill_and_a_killed_supervisor_is_cleaned_up() {
    let Some(mut lab) = Lab::new("kill") else {
        return;
    };
    lab.start_daemon();
    let stubborn = serde_json::json!({
        "name": "stubborn",
        "command": ["/bin/sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"],
        "network": {"mode": "isolated"},
    });
    let (status, created) = lab.json("POST", "/v1/sandboxes", &stubborn.to_string());
    assert_eq!(status, 201, "{created}");
    let stubborn_id = created["id"].as_str().unwrap().to_string();
    lab.wait_for("stubborn", "running", |r| r["state"] == "running");
    // The DELETE of a running sandbox is refused.
    assert_eq!(lab.json("DELETE", "/v1/sandboxes/stubborn", "").0, 409);
    let asked = Instant::now();
    let (status, stopped) = lab.json(
        "POST",
        "/v1/sandboxes/stubborn/stop",
        r#"{"grace_seconds":1}"#,
    );
    let took = asked.elapsed();
    assert_eq!(status, 200, "{stopped}");
    assert!(took >= Duration::from_secs(1), "the grace period was given");
    // The SIGKILL goes to the sandbox's init right after the grace period, not after the
    // daemon's last-resort wait (15 s) for a supervisor that does not end.
    assert!(
        took < Duration::from_secs(6),
        "stopped {took:?} after the request"
    );
    assert_eq!(stopped["error"], Value::Null, "{stopped}");
    assert_eq!(
        stopped["exit_code"], 137,
        "SIGKILL after the grace period: {stopped}"
    );
    assert_eq!(leftovers(&stubborn_id), Vec::<String>::new());

    let (status, created) = lab.json("POST", "/v1/sandboxes", &server_request("victim"));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let running = lab.wait_for("victim", "running", |r| r["state"] == "running");
    let supervisor = running["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let ended = lab.wait_for("victim", "ended", |r| r["state"] != "running");
    assert!(
        ended["error"]
            .as_str()
            .unwrap_or_default()
            .contains("killed"),
        "{ended}"
    );
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "gc removed what the kill left"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.links().contains("moat-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!lab.links().contains("moat-"), "{}", lab.links());
}

#[test]
fn races_and_hostile_requests_change_nothing_they_should_not() {
    let Some(mut lab) = Lab::new("hostile") else {
        return;
    };
    // Homes apart from the daemon's socket and state, which they may not share.
    let home_scratch = common::Scratch::new();
    let homes = home_scratch.join("homes");
    let policies = lab.dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    lab.daemon_options = vec![
        "--home-root".into(),
        homes.display().to_string(),
        "--policy-dir".into(),
        policies.display().to_string(),
    ];
    lab.start_daemon();

    // Only what the administrator allows: profiles, policy files, home roots.
    let profile_file = lab.dir.path().join("open.toml");
    std::fs::write(&profile_file, "name = \"open\"\n").unwrap();
    let refused = [
        serde_json::json!({"command": ["true"], "profile": profile_file}),
        serde_json::json!({"command": ["true"], "policies": ["/etc/shadow"]}),
        serde_json::json!({"command": ["true"], "policies": [policies.join("../open.toml")]}),
        serde_json::json!({"command": ["true"], "home": "/srv/elsewhere/alice"}),
    ];
    for body in refused {
        let (status, answer) = lab.json("POST", "/v1/sandboxes", &body.to_string());
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("moat daemon --"),
            "{answer}"
        );
        assert!(
            !answer.to_string().contains("root:"),
            "nothing of the file is echoed: {answer}"
        );
    }
    // Control: a home under the root is accepted.
    let body = serde_json::json!({"command": ["true"], "home": homes.join("alice")});
    let (status, answer) = lab.json("POST", "/v1/sandboxes", &body.to_string());
    assert_eq!(status, 201, "control: {answer}");
    lab.wait_for(answer["id"].as_str().unwrap(), "ended", |r| {
        r["state"] == "exited"
    });

    // A stop that arrives while the sandbox is still being created.
    let socket = lab.socket();
    let body = server_request("early");
    let creator = std::thread::spawn(move || request(&socket, "POST", "/v1/sandboxes", &body));
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = loop {
        let (status, answer) =
            lab.json("POST", "/v1/sandboxes/early/stop", r#"{"grace_seconds":5}"#);
        if status != 404 || Instant::now() > deadline {
            break (status, answer);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let (created, _) = creator.join().unwrap();
    assert_eq!(created, 201);
    assert_eq!(stopped.0, 200, "{}", stopped.1);
    assert!(
        matches!(stopped.1["state"].as_str(), Some("exited" | "failed")),
        "a stop during the start ends the sandbox: {}",
        stopped.1
    );
    let id = stopped.1["id"].as_str().unwrap().to_string();
    assert!(
        !lab.state().join("sandboxes").join(&id).join("env").exists(),
        "the env file went"
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());

    // A malformed env is refused without its value echoed.
    let (status, answer) = lab.json(
        "POST",
        "/v1/sandboxes",
        r#"{"command":["true"],"env":"TOKEN=s3cret"}"#,
    );
    assert_eq!(status, 400);
    assert!(!answer.to_string().contains("s3cret"), "{answer}");
    let (status, answer) = lab.json("PUT", "/v1/sandboxes", "{}");
    assert_eq!(status, 405, "{answer}");

    // A workload that prints without end: the log is cut back, and reading it stays cheap.
    let flood = serde_json::json!({
        "name": "flood",
        "command": ["/usr/bin/python3", "-c",
            "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(72 * 1024): sys.stdout.write(line)\nprint('the end', flush=True)"],
    });
    let (status, created) = lab.json("POST", "/v1/sandboxes", &flood.to_string());
    assert_eq!(status, 201, "{created}");
    let ended = lab.wait_for("flood", "ended", |r| r["state"] == "exited");
    assert_eq!(ended["exit_code"], 0, "{ended}");
    let log = lab
        .state()
        .join("sandboxes")
        .join(ended["id"].as_str().unwrap())
        .join("log");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 64 << 20, "the log was capped: {size} bytes");
    let tail = lab.request("GET", "/v1/sandboxes/flood/logs?tail=1", "").1;
    assert_eq!(tail.trim(), "the end", "{tail}");
    let whole = lab.request("GET", "/v1/sandboxes/flood/logs", "").1;
    assert!(
        whole.len() <= 8 << 20,
        "an answer holds at most 8 MiB: {}",
        whole.len()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("were dropped"), "the cut is announced");
}

/// The daemon runs in its own network namespace here, as it may in production: a
/// sandbox's policy alerts must still arrive (the kernel's audit lives in the initial
/// namespace only), reach the event stream and the metrics, and not hold up the exit.
#[test]
fn policy_alerts_reach_the_event_stream_from_a_namespaced_daemon() {
    let Some(mut lab) = Lab::new("alerts") else {
        return;
    };
    let policies = lab.dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let policy = policies.join("no-os-release.yaml");
    std::fs::write(
        &policy,
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: no-os-release\nspec:\n  selector:\n    matchLabels: {}\n  action: Block\n  file:\n    matchPaths:\n      - path: /usr/lib/os-release\n",
    )
    .unwrap();
    // The administrator's alert limit reaches every sandbox: a burst of 3.
    lab.daemon_options = vec![
        "--policy-dir".into(),
        policies.display().to_string(),
        "--alert-burst".into(),
        "3".into(),
    ];
    lab.start_daemon();
    let mut ids = Vec::new();
    let read_once = "cat /usr/lib/os-release";
    let read_50_times = "for i in $(seq 50); do cat /usr/lib/os-release 2>/dev/null; done; exit 1";
    for (name, policies, script) in [
        ("blocked", vec![policy.clone()], read_once),
        ("control", vec![], read_once),
        ("flood", vec![policy.clone()], read_50_times),
    ] {
        let body = serde_json::json!({
            "name": name,
            "command": ["sh", "-c", script],
            "policies": policies,
        });
        let (status, created) = lab.json("POST", "/v1/sandboxes", &body.to_string());
        assert_eq!(status, 201, "{created}");
        let asked = Instant::now();
        let ended = lab.wait_for(name, "ended", |r| r["state"] == "exited");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{name} took {:?}: the alert reader waited for a drain that cannot come",
            asked.elapsed()
        );
        ids.push((
            name,
            ended["id"].as_str().unwrap().to_string(),
            ended["exit_code"].clone(),
        ));
    }
    assert_eq!(ids[0].2, 1, "the policy blocked the read");
    assert_eq!(ids[1].2, 0, "control: without it, the read works");
    let deadline = Instant::now() + Duration::from_secs(5);
    let alert = loop {
        let events = std::fs::read_to_string(lab.state().join("events.jsonl")).unwrap();
        let found = events
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["PolicyName"] == "no-os-release");
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let alert = alert.expect("the Block alert reached the daemon's event stream");
    assert_eq!(alert["ContainerID"], ids[0].1.as_str(), "{alert}");
    assert_eq!(alert["Action"], "Block", "{alert}");
    assert_eq!(alert["Resource"], "/usr/lib/os-release", "{alert}");
    // The flood's 50 denials: 3 alerts (its burst) and the rest counted, in the stream
    // and in the metrics.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (written, held_back) = loop {
        let events = std::fs::read_to_string(lab.state().join("events.jsonl")).unwrap();
        let of_flood: Vec<Value> = events
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["ContainerID"] == ids[2].1.as_str())
            .collect();
        let written = of_flood
            .iter()
            .filter(|e| e["Type"] == "MatchedPolicy")
            .count() as u64;
        let held_back = counted(&of_flood, "held_back");
        if written + held_back >= 50 || Instant::now() > deadline {
            break (written, held_back);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        written < 10,
        "{written} alerts written: the burst of 3 was not applied"
    );
    assert_eq!(written + held_back, 50);
    let (_, metrics) = lab.request("GET", "/metrics", "");
    assert!(
        metrics.contains("moat_alerts_total{action=\"Block\"} 51"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("moat_alerts_held_back_total {held_back}")),
        "{metrics}"
    );
}
