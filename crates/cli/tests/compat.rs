//! What users run must work inside `untrusted`: Python with threads, multiprocessing,
//! subprocess and sqlite3, a TCP server and client on loopback, pip installing into the
//! home from a local wheel, gcc building and running a program in the home, and an
//! image given with --rootfs.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a failed test

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

const PYTHON_WORKLOAD: &str = r#"
import multiprocessing, socket, sqlite3, subprocess, threading, os

def square(x):
    return x * x

if __name__ == "__main__":
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(i)) for i in range(8)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print("threads", len(results))
    with multiprocessing.Pool(2) as pool:
        print("multiprocessing", sum(pool.map(square, range(10))))
    print("subprocess", subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip())
    db = sqlite3.connect(os.path.expanduser("~/test.db"))
    db.execute("create table t (x)"); db.executemany("insert into t values (?)", [(i,) for i in range(5)])
    db.commit(); print("sqlite3", db.execute("select sum(x) from t").fetchone()[0])
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
    port = server.getsockname()[1]
    def serve():
        conn, _ = server.accept(); conn.sendall(conn.recv(100).upper()); conn.close()
    threading.Thread(target=serve).start()
    client = socket.create_connection(("127.0.0.1", port)); client.sendall(b"ping")
    print("tcp", client.recv(100).decode())
    server6 = socket.socket(socket.AF_INET6); server6.bind(("::1", 0)); print("ipv6-loopback ok")
"#;

#[test]
fn python_threads_processes_sqlite_and_loopback_tcp_work() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    let ran = run(
        &["--home", home.to_str().unwrap()],
        &["python3", "-c", PYTHON_WORKLOAD],
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout.lines().collect::<Vec<_>>(),
        [
            "threads 8",
            "multiprocessing 285",
            "subprocess child",
            "sqlite3 10",
            "tcp PING",
            "ipv6-loopback ok"
        ]
    );
}

/// A pure-Python wheel, built by hand (a wheel is a zip with metadata).
fn write_wheel(path: &Path) {
    let mut script = String::from("import zipfile, sys\nz = zipfile.ZipFile(sys.argv[1], 'w')\n");
    for (name, body) in [
        ("moatdemo/__init__.py", "VALUE = 42\n"),
        ("moatdemo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: moatdemo\nVersion: 1.0\n"),
        ("moatdemo-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: moat-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        ("moatdemo-1.0.dist-info/RECORD", "moatdemo/__init__.py,,\nmoatdemo-1.0.dist-info/METADATA,,\nmoatdemo-1.0.dist-info/WHEEL,,\nmoatdemo-1.0.dist-info/RECORD,,\n"),
    ] {
        script.push_str(&format!("z.writestr({name:?}, {body:?})\n"));
    }
    script.push_str("z.close()\n");
    let status = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn pip_installs_a_local_wheel_into_the_home() {
    if !require_root() {
        return;
    }
    let has_pip = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        has_pip,
        "pip for /usr/bin/python3 is not installed (apt-get install python3-pip)",
    ) {
        return;
    }
    let scratch = Scratch::new();
    let home = scratch.join("home");
    // The home is created and owned by the sandbox user at the first run.
    assert_eq!(
        run(&["--home", home.to_str().unwrap()], &["true"]).status,
        0
    );
    write_wheel(&home.join("moatdemo-1.0-py3-none-any.whl"));
    let ran = sh(
        &["--home", home.to_str().unwrap()],
        "python3 -m pip install --quiet --user --no-index --break-system-packages ./moatdemo-1.0-py3-none-any.whl \
         && python3 -c 'import moatdemo; print(moatdemo.VALUE, moatdemo.__file__)'",
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.starts_with("42 /home/jovyan/.local/lib/python3"),
        "{}",
        ran.stdout
    );
}

#[test]
fn gcc_builds_and_runs_a_program_in_the_home() {
    if !require_root() {
        return;
    }
    if !require(
        Path::new("/usr/bin/gcc").exists(),
        "gcc is not installed (apt-get install gcc)",
    ) {
        return;
    }
    let ran = sh(
        &[],
        "cd $HOME && printf '#include <stdio.h>\\nint main(void){puts(\"compiled inside\");return 0;}\\n' > hello.c \
         && gcc -O2 -o hello hello.c && ./hello",
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "compiled inside");
}

#[test]
fn an_image_rootfs_runs_read_only_with_moat_identity() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let Some(image) = busybox_image(&scratch) else {
        return;
    };
    let mut passwd = std::fs::File::create(image.join("etc/passwd")).unwrap();
    writeln!(
        passwd,
        "root:x:0:0:root:/root:/bin/sh\njovyan:x:1000:100:old:/home/jovyan:/bin/sh"
    )
    .unwrap();
    let id = test_id("image");
    let ran = run(
        &["--id", &id, "--rootfs", image.to_str().unwrap()],
        &["/bin/sh", "-c", "id -u; grep jovyan /etc/passwd; touch /bin/x 2>&1; touch $HOME/ok && echo home-ok; cat /proc/self/mountinfo | head -1"],
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(
        lines[1], "jovyan:x:1000:1000:jovyan:/home/jovyan:/bin/bash",
        "moat's user replaces the image's"
    );
    assert!(lines[2].contains("Read-only file system"), "{}", lines[2]);
    assert_eq!(lines[3], "home-ok");
    assert!(
        lines[4].contains("nosuid"),
        "the image root is nosuid: {}",
        lines[4]
    );
    // The image itself is unchanged apart from mount points.
    assert!(!image.join("bin/x").exists());
    assert!(std::fs::read_to_string(image.join("etc/passwd"))
        .unwrap()
        .contains(":old:"));
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn a_malicious_image_cannot_make_moat_read_or_write_host_files() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new();
    let Some(image) = busybox_image(&scratch) else {
        return;
    };
    // etc/passwd pointing at a host secret: moat merges the image's passwd, and must not
    // follow the link on the host.
    let secret = scratch.join("host-secret");
    std::fs::write(&secret, "root:SECRET-HASH:0:0::/root:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(&secret, image.join("etc/passwd")).unwrap();
    let ran = run(
        &["--rootfs", image.to_str().unwrap()],
        &["/bin/sh", "-c", "cat /etc/passwd"],
    );
    assert_eq!(ran.status, 125, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("/etc/passwd is a symlink"),
        "{}",
        ran.stderr
    );
    assert!(
        !ran.stdout.contains("SECRET") && !ran.stderr.contains("SECRET"),
        "the host file leaked"
    );

    // home pointing outside the image: moat must not create its mount point there.
    let outside = scratch.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::remove_file(image.join("etc/passwd")).unwrap();
    let _ = std::fs::remove_dir_all(image.join("home"));
    std::os::unix::fs::symlink(&outside, image.join("home")).unwrap();
    let id = test_id("evilimage");
    let refused = run(
        &["--id", &id, "--rootfs", image.to_str().unwrap()],
        &["/bin/true"],
    );
    assert_eq!(refused.status, 125, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("/home is a symlink"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing created through the link"
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
    // Control: the same image with a real home runs.
    std::fs::remove_file(image.join("home")).unwrap();
    assert_eq!(
        run(
            &["--rootfs", image.to_str().unwrap()],
            &["/bin/sh", "-c", "true"]
        )
        .status,
        0
    );
}
