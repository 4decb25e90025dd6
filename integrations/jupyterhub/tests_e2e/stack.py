"""The system under test: `moat daemon`, configurable-http-proxy and JupyterHub with
MoatSpawner, each a real process of its own, started and restarted by the tests.

Everything listens inside the throwaway network namespace that scripts/e2e creates:

    10.77.0.1:8081   the hub API (the one host endpoint sandboxes may reach)
    0.0.0.0:8000     the proxy's public side (so 127.0.0.1:8000, and 10.77.0.1:8000 as a
                     host port sandboxes must not reach)
    0.0.0.0:8001     the proxy's API (the hub uses 127.0.0.1:8001)
    WORK/moat/moat.sock   the daemon's API

The proxy is not started by the hub (``ConfigurableHTTPProxy.should_start = False``), so
its routes survive a hub restart, as in a production deployment.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import httpx

log = logging.getLogger("e2e")

HUB_IP = "10.77.0.1"
HUB_PORT = 8081
PROXY_PORT = 8000
PROXY_API_PORT = 8001
HUB_API = f"http://{HUB_IP}:{HUB_PORT}/hub/api"
PUBLIC_URL = f"http://127.0.0.1:{PROXY_PORT}"
PROXY_API = f"http://127.0.0.1:{PROXY_API_PORT}/api"

USERNAME_LABEL = "hub.jupyter.org/username"
#: Sandbox states in which the workload may still be there (docs/api.md).
LIVE_STATES = ("starting", "running", "stopping")
#: Each user's moat identity (and home directory name): fixed, so repeated runs reuse the
#: same three host id ranges instead of leasing new ones for good every run, and distinct
#: from the identities of a demo hub's `alice` and `bob` on the same machine.
IDENTITY_PREFIX = "e2e-"
MEM_LIMIT = "512M"
POLL_INTERVAL = 2

T = TypeVar("T")


class StackError(AssertionError):
    """A component of the stack did not come up or go down as it should."""


def wait_for(
    what: str,
    check: Callable[[], Optional[T]],
    timeout: float,
    interval: float = 0.2,
    describe: Optional[Callable[[], str]] = None,
) -> T:
    """Calls ``check`` until it returns something truthy; fails after ``timeout`` s with
    ``what`` (what was expected) and ``describe()`` (what was seen)."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            result = check()
            if result:
                return result
        except StackError:
            raise  # a component died: no point waiting on
        except Exception as e:  # noqa: BLE001 - reported if it never succeeds
            last_error = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            seen = describe() if describe else last_error or "nothing yet"
            raise StackError(f"expected {what} within {timeout:.0f} s; saw: {seen}")
        time.sleep(interval)


def connect(host: str, port: int, timeout: float = 3.0) -> str:
    """'connected', or what went wrong, for a TCP connection from the test process."""
    with socket.socket() as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            return "connected"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return f"{type(e).__name__}: {e}"


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """A long-running child with its output appended to a log file."""

    def __init__(self, name: str, argv: List[str], log_path: Path, **popen: Any) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.popen = popen
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== {time.strftime('%H:%M:%S')} start: {self.argv}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C of pytest does not hit it before teardown.
                start_new_session=True,
                **self.popen,
            )
        log.info("%s started (pid %s)", self.name, self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(
                f"expected {self.name} to keep running; it exited with status "
                f"{self.proc.returncode}. Last lines of {self.log_path}:\n{tail(self.log_path)}"
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> Optional[int]:
        """Sends ``sig`` to the process (by pid) and waits for it; SIGKILL after
        ``timeout``. Its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not end within %s s of %s; SIGKILL", self.name, timeout, sig)
                self.proc.kill()
                self.proc.wait(10)
        status = self.proc.returncode
        log.info("%s stopped (pid %s, status %s)", self.name, self.proc.pid, status)
        self.proc = None
        return status


class Stack:
    """The daemon, the proxy and the hub of one test session, in ``work``."""

    def __init__(self, work: Path, moat: str, jupyter: Path) -> None:
        self.work = work
        self.moat = moat
        self.venv = jupyter / "venv"
        self.chp = jupyter / "node" / "bin" / "configurable-http-proxy"
        self.logs = work / "logs"
        self.homes = work / "homes"
        # The daemon's socket and state, apart from the homes (moat refuses a home that
        # overlaps the daemon's own directories).
        self.moat_dir = work / "moat"
        self.socket = self.moat_dir / "moat.sock"
        self.state_dir = self.moat_dir / "state"
        self.hub_dir = work / "hub"
        self.admin_token = secrets.token_hex(32)
        self.proxy_token = secrets.token_hex(32)
        for directory in (self.logs, self.hub_dir, self.moat_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        # The homes' parent: root's, 0755 (MoatSpawner's home_root); sandbox users only
        # need to traverse work (0711, made so by scripts/e2e).
        self.homes.mkdir(exist_ok=True)
        self.homes.chmod(0o755)
        self.daemon = Process(
            "moat daemon",
            [moat, "daemon", "--socket", str(self.socket), "--state-dir", str(self.state_dir)],
            self.logs / "daemon.log",
        )
        self.proxy = Process(
            "configurable-http-proxy",
            [
                str(self.chp),
                "--ip", "0.0.0.0",
                "--port", str(PROXY_PORT),
                "--api-ip", "0.0.0.0",
                "--api-port", str(PROXY_API_PORT),
                "--default-target", f"http://{HUB_IP}:{HUB_PORT}",
                "--error-target", f"http://{HUB_IP}:{HUB_PORT}/hub/error",
                "--log-level", "info",
            ],
            self.logs / "proxy.log",
            env={**self._base_env(), "CONFIGPROXY_AUTH_TOKEN": self.proxy_token},
        )
        self.config = self.hub_dir / "jupyterhub_config.py"
        self.hub = Process(
            "jupyterhub",
            [str(self.venv / "bin" / "jupyterhub"), "-f", str(self.config)],
            self.logs / "hub.log",
            cwd=str(self.hub_dir),
            env={**self._base_env(), "CONFIGPROXY_AUTH_TOKEN": self.proxy_token},
        )
        self.hub_api = self._hub_client()
        self.moat_api = self._moat_client()

    def _hub_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=HUB_API,
            headers={"Authorization": f"token {self.admin_token}"},
            timeout=30,
        )

    def _moat_client(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://moat",
            timeout=30,
        )

    def _base_env(self) -> Dict[str, str]:
        system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        path = f"{self.venv / 'bin'}:{self.chp.parent}:{system}"
        return {"PATH": path, "HOME": str(self.hub_dir), "LANG": "C.UTF-8"}

    # -- configuration ---------------------------------------------------------------

    def write_config(self) -> None:
        singleuser = self.venv / "bin" / "jupyterhub-singleuser"
        config = f"""\
# Written by integrations/jupyterhub/tests_e2e (stack.py).
c = get_config()  # noqa

c.JupyterHub.bind_url = "{PUBLIC_URL}"
c.JupyterHub.hub_bind_url = "http://{HUB_IP}:{HUB_PORT}"
c.JupyterHub.db_url = "sqlite:///{self.hub_dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{self.hub_dir}/jupyterhub_cookie_secret"
c.JupyterHub.log_level = "DEBUG"

# The proxy is its own process (routes survive a hub restart); servers outlive the hub.
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "{PROXY_API.rsplit('/api', 1)[0]}"
c.ConfigurableHTTPProxy.auth_token = "{self.proxy_token}"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
c.JupyterHub.last_activity_interval = 5

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True

c.JupyterHub.services = [{{"name": "e2e", "api_token": "{self.admin_token}"}}]
c.JupyterHub.load_roles = [
    {{
        "name": "e2e",
        "description": "the end-to-end tests",
        "scopes": [
            "admin:users", "admin:servers", "access:servers", "list:users",
            "read:users", "read:servers", "read:hub",
        ],
        "services": ["e2e"],
    }}
]

c.JupyterHub.spawner_class = "moat"
c.MoatSpawner.socket_path = "{self.socket}"
c.MoatSpawner.home_root = "{self.homes}"
c.MoatSpawner.identity_template = "{IDENTITY_PREFIX}{{username}}"
c.MoatSpawner.stop_grace_seconds = 10
c.Spawner.cmd = ["{singleuser}"]
c.Spawner.mem_limit = "{MEM_LIMIT}"
c.Spawner.cpu_limit = 1.0
c.Spawner.poll_interval = {POLL_INTERVAL}
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
"""
        self.config.write_text(config)
        self.config.chmod(0o600)

    # -- the daemon --------------------------------------------------------------------

    def start_daemon(self) -> None:
        # No connection of a previous daemon's is reused.
        self.moat_api.close()
        self.moat_api = self._moat_client()
        self.daemon.start()
        wait_for(
            f"moat daemon to answer GET /v1/health on {self.socket}",
            lambda: self.daemon.check_alive() or self.moat_api.get("/v1/health").status_code == 200,
            timeout=30,
            describe=lambda: tail(self.daemon.log_path, 10),
        )
        log.info("moat daemon serves on %s", self.socket)

    def stop_daemon(self, sig: int = signal.SIGTERM) -> None:
        self.daemon.stop(sig)

    def sandboxes(self, username: Optional[str] = None) -> List[Dict[str, Any]]:
        params = {"label": f"{USERNAME_LABEL}={username}"} if username else None
        response = self.moat_api.get("/v1/sandboxes", params=params)
        response.raise_for_status()
        return list(response.json()["sandboxes"])

    def running_sandbox(self, username: str) -> Dict[str, Any]:
        """The one running sandbox of ``username``'s default server."""
        running = [s for s in self.sandboxes(username) if s["state"] == "running"]
        if len(running) != 1:
            raise StackError(
                f"expected exactly one running sandbox labelled {USERNAME_LABEL}={username}; "
                f"the daemon lists {json.dumps(self.sandboxes(username), indent=1)}"
            )
        return running[0]

    def sandbox(self, ref: str) -> Optional[Dict[str, Any]]:
        response = self.moat_api.get(f"/v1/sandboxes/{ref}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def sandbox_log(self, ref: str, tail_lines: Optional[int] = None) -> str:
        params = {"tail": str(tail_lines)} if tail_lines else None
        response = self.moat_api.get(f"/v1/sandboxes/{ref}/logs", params=params)
        if response.status_code == 404:
            return f"(no log: sandbox {ref} is unknown to the daemon)"
        return response.text

    def lifecycle_events(
        self, sandbox_id: str, until: str, timeout: float = 10
    ) -> List[Dict[str, Any]]:
        """The daemon's lifecycle events of one sandbox (``GET /v1/events?since=0``: the
        events on disk, then live ones), up to the first whose Operation is ``until``.
        Fails if that one does not come within ``timeout`` s."""
        found: List[Dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            with self.moat_api.stream(
                "GET", "/v1/events", params={"since": "0"},
                timeout=httpx.Timeout(timeout, read=timeout),
            ) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("Type") != "SandboxEvent":
                        continue
                    if event.get("ContainerID") != sandbox_id:
                        continue
                    found.append(event)
                    if event.get("Operation") == until:
                        return found
                    if time.monotonic() > deadline:
                        break
        except httpx.ReadTimeout:
            pass
        raise StackError(
            f"expected a {until!r} event of sandbox {sandbox_id} on GET /v1/events within "
            f"{timeout:.0f} s; its events: {json.dumps(found, indent=1)}"
        )

    def stop_all_sandboxes(self, grace: int = 5) -> None:
        """Stops every live sandbox of this daemon (teardown)."""
        try:
            live = [s for s in self.sandboxes() if s["state"] in LIVE_STATES]
        except Exception as e:  # noqa: BLE001
            log.warning("cannot list sandboxes for the teardown: %s", e)
            return
        for sandbox in live:
            try:
                self.moat_api.post(
                    f"/v1/sandboxes/{sandbox['id']}/stop",
                    json={"grace_seconds": grace},
                    timeout=grace + 30,
                )
                log.info("stopped sandbox %s (%s)", sandbox["name"], sandbox["id"])
            except Exception as e:  # noqa: BLE001
                log.warning("cannot stop sandbox %s: %s", sandbox["id"], e)

    # -- the proxy ---------------------------------------------------------------------

    def start_proxy(self) -> None:
        self.proxy.start()
        wait_for(
            f"configurable-http-proxy to answer GET {PROXY_API}/routes",
            lambda: self.proxy.check_alive()
            or httpx.get(
                f"{PROXY_API}/routes",
                headers={"Authorization": f"token {self.proxy_token}"},
                timeout=5,
            ).status_code
            == 200,
            timeout=30,
            describe=lambda: tail(self.proxy.log_path, 10),
        )

    def routes(self) -> Dict[str, Any]:
        response = httpx.get(
            f"{PROXY_API}/routes",
            headers={"Authorization": f"token {self.proxy_token}"},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    # -- the hub -----------------------------------------------------------------------

    def start_hub(self) -> None:
        self.hub_api.close()
        self.hub_api = self._hub_client()
        self.hub.start()
        wait_for(
            f"the hub API to answer GET {HUB_API}/",
            lambda: self.hub.check_alive()
            or httpx.get(f"{HUB_API}/", timeout=5).status_code == 200,
            timeout=60,
            describe=lambda: tail(self.hub.log_path, 20),
        )
        log.info("the hub answers on %s", HUB_API)

    def stop_hub(self, sig: int = signal.SIGTERM) -> Optional[int]:
        return self.hub.stop(sig)

    def hub_log(self) -> str:
        return self.hub.log_path.read_text(errors="replace")

    # -- users and servers, through the hub's REST API ---------------------------------

    def create_user(self, name: str) -> None:
        response = self.hub_api.post(f"/users/{name}")
        if response.status_code not in (201, 409):
            raise StackError(
                f"expected POST /hub/api/users/{name} to answer 201 (or 409 if the user "
                f"exists), got {response.status_code}: {response.text}"
            )

    def user(self, name: str) -> Dict[str, Any]:
        response = self.hub_api.get(f"/users/{name}")
        response.raise_for_status()
        return dict(response.json())

    def server(self, name: str) -> Optional[Dict[str, Any]]:
        """The hub's model of ``name``'s default server, or None if it has none."""
        return self.user(name).get("servers", {}).get("")

    def start_server(self, name: str) -> None:
        response = self.hub_api.post(f"/users/{name}/server")
        if response.status_code not in (201, 202):
            raise StackError(
                f"expected POST /hub/api/users/{name}/server to answer 201 or 202, got "
                f"{response.status_code}: {response.text}"
            )

    def wait_ready(self, name: str, timeout: float = 90) -> Dict[str, Any]:
        """Waits until the hub shows ``name``'s server ready; its model. A server that
        disappears (a failed spawn) fails at once, with the hub's log."""

        def ready() -> Optional[Dict[str, Any]]:
            self.hub.check_alive()
            server = self.server(name)
            if server is None:
                raise StackError(
                    f"expected {name}'s server to be running or starting; the hub shows "
                    f"none. Sandboxes: {self.sandboxes(name)}. Hub log:\n"
                    f"{tail(self.hub.log_path, 30)}"
                )
            return server if server.get("ready") else None

        def describe() -> str:
            return (
                f"server model {self.server(name)}; sandboxes {self.sandboxes(name)}; "
                f"hub log:\n{tail(self.hub.log_path, 15)}"
            )

        deadline = time.monotonic() + timeout
        while True:
            server = ready()  # StackError passes through: no point waiting on
            if server:
                return server
            if time.monotonic() >= deadline:
                raise StackError(
                    f"expected the hub to show {name}'s server ready within {timeout:.0f} s; "
                    f"saw: {describe()}"
                )
            time.sleep(0.5)

    def stop_server(self, name: str) -> int:
        response = self.hub_api.delete(f"/users/{name}/server")
        return response.status_code

    def wait_stopped(self, name: str, timeout: float) -> None:
        wait_for(
            f"the hub to show {name}'s server stopped (no server in its user model)",
            lambda: self.server(name) is None,
            timeout=timeout,
            interval=0.5,
            describe=lambda: f"server model {self.server(name)}",
        )

    def ensure_running(self, *names: str) -> Dict[str, Dict[str, Any]]:
        """Users exist and their servers are ready (started if needed); their models."""
        for name in names:
            self.create_user(name)
            server = self.server(name)
            if server is None:
                log.info("starting %s's server", name)
                self.start_server(name)
        return {name: self.wait_ready(name) for name in names}

    def home(self, name: str) -> Path:
        """The host path of ``name``'s home (MoatSpawner: home_root/identity)."""
        return self.homes / f"{IDENTITY_PREFIX}{name}"

    # -- everything --------------------------------------------------------------------

    def start(self) -> None:
        self.write_config()
        self.start_daemon()
        self.start_proxy()
        self.start_hub()

    def check_alive(self) -> None:
        for process in (self.daemon, self.proxy, self.hub):
            process.check_alive()

    def revive(self) -> None:
        """Starts again whatever is not running, so that one failed test (say, one that
        stopped the hub and failed before starting it again) does not fail the next."""
        for process, start in (
            (self.daemon, self.start_daemon),
            (self.proxy, self.start_proxy),
            (self.hub, self.start_hub),
        ):
            if process.alive():
                continue
            if process.proc is not None:
                log.warning(
                    "%s exited on its own (status %s); last lines of its log:\n%s",
                    process.name, process.proc.returncode, tail(process.log_path),
                )
                process.proc = None
            else:
                log.warning("%s is not running (an earlier test left it so); starting it",
                            process.name)
            start()

    def teardown(self) -> None:
        """Stops the servers, then the hub, the proxy and the daemon."""
        if not self.daemon.alive():
            try:
                self.start_daemon()  # to stop the sandboxes through it
            except Exception as e:  # noqa: BLE001
                log.warning("cannot restart the daemon for the teardown: %s", e)
        self.stop_all_sandboxes()
        for process in (self.hub, self.proxy, self.daemon):
            try:
                process.stop()
            except Exception as e:  # noqa: BLE001
                log.warning("cannot stop %s: %s", process.name, e)
        self.hub_api.close()
        self.moat_api.close()
