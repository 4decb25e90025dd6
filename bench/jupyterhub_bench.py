#!/usr/bin/env python3
"""Spawn-to-ready time of JupyterLab servers: MoatSpawner against JupyterHub's own
local-process spawner, on the same machine, in the same run. Driven by bench/jupyterhub.sh,
which runs this inside a throwaway network namespace.

    jupyterhub_bench.py WORKDIR MOAT ENV_DIR RUNS CONCURRENT

For each spawner: a hub with that spawner (configurable-http-proxy as its own process),
then RUNS sequential spawns (a fresh user each, stopped before the next; the time is
from the REST call that asks for the server until the hub reports it ready, which
includes the hub's own check that the server answers), then CONCURRENT servers asked for
at once. Prints one JSON object per measurement.
"""
import http.client
import json
import os
import socket
import threading
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

HUB = "http://127.0.0.1:8000/hub/api"
LOCAL_PORT = 9999  # one server at a time in the sequential runs
# MoatSpawner's cpu_limit (BENCH_CPU_LIMIT=none: no CPU quota, like the local spawner).
CPU_LIMIT = {"none": "None"}.get(os.environ.get("BENCH_CPU_LIMIT", "1.0"), os.environ.get("BENCH_CPU_LIMIT", "1.0"))


def api(token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        HUB + path,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            text = answer.read()
            return answer.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError) as err:
        return 0, str(err)  # not listening (yet)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("moat", timeout=5)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def server_url(spawner, work, user):
    """Where the user's server listens, without asking the hub."""
    if spawner == "local":
        return f"http://127.0.0.1:{LOCAL_PORT}/user/{user}/api"
    connection = _UnixConnection(f"{work}/run/moat.sock")
    try:
        connection.request("GET", f"/v1/sandboxes?label=hub.jupyter.org%2Fusername%3D{user}")
        sandboxes = json.loads(connection.getresponse().read())["sandboxes"]
    except (OSError, ValueError, KeyError):
        return None
    finally:
        connection.close()
    for sandbox in sandboxes:
        if sandbox.get("state") == "running" and sandbox.get("address"):
            return f"http://{sandbox['address']}:8888/user/{user}/api"
    return None


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def wait_until(what, check, timeout=120.0, pause=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(pause)
    sys.exit(f"jupyterhub_bench.py: timed out waiting for {what}")


def server_ready(token, user):
    status, model = api(token, "GET", f"/users/{user}")
    if status != 200:
        return False
    server = model.get("servers", {}).get("")
    return bool(server and server.get("ready"))


def server_gone(token, user):
    status, model = api(token, "GET", f"/users/{user}")
    return status == 200 and "" not in model.get("servers", {})


def write_config(work, env_dir, spawner, token):
    common = f"""
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.hub_bind_url = "http://10.77.0.1:8081"
c.JupyterHub.db_url = "sqlite:///{work}/hub-{spawner}.sqlite"
c.JupyterHub.cookie_secret = bytes.fromhex("{secrets.token_hex(32)}")
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}}]
c.JupyterHub.concurrent_spawn_limit = 0
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.default_url = "/lab"
c.Spawner.cmd = ["{env_dir}/venv/bin/jupyterhub-singleuser"]
"""
    if spawner == "moat":
        specific = f"""
c.JupyterHub.spawner_class = "moat"
c.MoatSpawner.socket_path = "{work}/run/moat.sock"
c.MoatSpawner.home_root = "{work}/homes"
c.Spawner.mem_limit = "1G"
c.Spawner.cpu_limit = {CPU_LIMIT}
"""
    else:
        # JupyterHub's local-process spawner without system accounts: every server runs
        # as the hub's user (root here), the baseline with no sandbox at all.
        specific = f"""
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.Spawner.port = {LOCAL_PORT}
c.SimpleLocalProcessSpawner.home_dir_template = "{work}/local-homes/{{username}}"
c.Spawner.args = ["--allow-root"]
"""
    path = os.path.join(work, f"jupyterhub-{spawner}.py")
    with open(path, "w") as config:
        config.write(common + specific)
    return path


def run_hub(work, env_dir, spawner, runs, concurrent, proxy_token):
    token = secrets.token_hex(16)
    config = write_config(work, env_dir, spawner, token)
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=proxy_token)
    env["PATH"] = f"{env_dir}/venv/bin:" + env.get("PATH", "/usr/bin:/bin")
    log = open(os.path.join(work, f"hub-{spawner}.log"), "w")
    hub = subprocess.Popen(
        [f"{env_dir}/venv/bin/jupyterhub", "-f", config], cwd=work, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(f"the hub ({spawner})", lambda: api(token, "GET", "/")[0] == 200)
        samples, answering = [], []
        for i in range(runs + 1):  # the first spawn warms caches and is not counted
            user = f"{spawner}-seq-{i}"
            api(token, "POST", f"/users/{user}")
            asked = time.monotonic()
            outcome = {}
            poster = threading.Thread(
                target=lambda: outcome.update(answer=api(token, "POST", f"/users/{user}/server"))
            )
            poster.start()
            # The server's own readiness, polled every 20 ms: free of the hub's jittered
            # backoff, which decides when the hub itself notices.
            first_answer = None
            while first_answer is None and time.monotonic() - asked < 120:
                url = server_url(spawner, work, user)
                if url and answers(url):
                    first_answer = time.monotonic() - asked
                else:
                    time.sleep(0.02)
            poster.join()
            status, answer = outcome["answer"]
            if status not in (201, 202):
                sys.exit(f"spawn of {user} failed: {status} {answer}")
            wait_until(f"{user} ready", lambda: server_ready(token, user), pause=0.02)
            elapsed = time.monotonic() - asked
            if i > 0:
                samples.append(elapsed)
                if first_answer is not None:
                    answering.append(first_answer)
            api(token, "DELETE", f"/users/{user}/server")
            wait_until(f"{user} stopped", lambda: server_gone(token, user))
        print(json.dumps({
            "spawner": spawner, "measure": "sequential", "runs": runs,
            "median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "answering_median_s": statistics.median(answering) if answering else None,
            "answering_min_s": min(answering) if answering else None,
            "answering_max_s": max(answering) if answering else None,
        }), flush=True)

        users = [f"{spawner}-burst-{i}" for i in range(concurrent)]
        for user in users:
            api(token, "POST", f"/users/{user}")
        asked = time.monotonic()
        # All at once: the hub answers a start only when the server is ready (or after
        # its slow_spawn_timeout), so each request gets its own thread.
        posters = [
            threading.Thread(target=api, args=(token, "POST", f"/users/{user}/server"))
            for user in users
        ]
        for poster in posters:
            poster.start()
        ready_at = {}
        deadline = time.monotonic() + 300
        while len(ready_at) < concurrent and time.monotonic() < deadline:
            for user in users:
                if user not in ready_at and server_ready(token, user):
                    ready_at[user] = time.monotonic() - asked
            time.sleep(0.1)
        for poster in posters:
            poster.join()
        failed = [u for u in users if u not in ready_at]
        print(json.dumps({
            "spawner": spawner, "measure": "concurrent", "servers": concurrent,
            "ready": len(ready_at), "failed": len(failed),
            "all_ready_s": max(ready_at.values()) if ready_at else None,
            "median_s": statistics.median(ready_at.values()) if ready_at else None,
        }), flush=True)
        for user in users:
            api(token, "DELETE", f"/users/{user}/server")
        for user in users:
            wait_until(f"{user} stopped", lambda: server_gone(token, user), timeout=180)
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
        log.close()


def main():
    # SIGTERM ends the run as Ctrl-C does: through the finally blocks that stop the
    # hub, the proxy and the daemon.
    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    work, moat, env_dir, runs, concurrent = sys.argv[1:6]
    runs, concurrent = int(runs), int(concurrent)
    proxy_token = secrets.token_hex(16)
    os.makedirs(os.path.join(work, "homes"), mode=0o711, exist_ok=True)
    # The daemon's socket in a directory of its own: a home may not share it.
    os.makedirs(os.path.join(work, "run"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(work, "local-homes"), exist_ok=True)
    proxy_log = open(os.path.join(work, "proxy.log"), "w")
    proxy = subprocess.Popen(
        [f"{env_dir}/node/bin/configurable-http-proxy", "--ip", "127.0.0.1", "--port", "8000",
         "--api-ip", "127.0.0.1", "--api-port", "8001", "--default-target", "http://10.77.0.1:8081"],
        env=dict(os.environ, CONFIGPROXY_AUTH_TOKEN=proxy_token),
        stdout=proxy_log, stderr=subprocess.STDOUT,
    )
    daemon_log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [moat, "daemon", "--socket", f"{work}/run/moat.sock", "--state-dir", f"{work}/daemon"],
        stdout=daemon_log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until("the daemon", lambda: os.path.exists(f"{work}/run/moat.sock"))
        # Interleave the order across runs of this script by alternating who goes first.
        order = ["local", "moat"] if int(time.time()) % 2 else ["moat", "local"]
        for spawner in order:
            run_hub(work, env_dir, spawner, runs, concurrent, proxy_token)
    finally:
        for process in (daemon, proxy):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
