"""Fixtures of the end-to-end tests: a real moat daemon, configurable-http-proxy and
JupyterHub with MoatSpawner (stack.py), real single-user servers in real sandboxes.

Run them with integrations/jupyterhub/scripts/e2e, which makes the throwaway network
namespace they need (as root) and cleans up after them. Run any other way, they fail
with the reason rather than touch the machine's own network.
"""

from __future__ import annotations

import logging
import os
import signal
import socketserver
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from .kernel import run_code as _run_code
from .kernel import run_json as _run_json
from .stack import HUB_IP, PUBLIC_URL, Stack

log = logging.getLogger("e2e")
# One line per request is noise in the progress output; failures say what was asked.
logging.getLogger("httpx").setLevel(logging.WARNING)

METADATA_IP = "169.254.169.254"


def _environment_problems() -> list:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root: moat creates sandboxes and the tests bind port 22")
    namespace = os.environ.get("MOAT_E2E_NETNS", "")
    try:
        inside = namespace and (
            os.stat(f"/run/netns/{namespace}").st_ino == os.stat("/proc/self/ns/net").st_ino
        )
    except OSError:
        inside = False
    if not inside:
        problems.append(
            f"not inside the throwaway network namespace of scripts/e2e "
            f"(MOAT_E2E_NETNS={namespace!r}): the tests bind host ports and addresses, so "
            "they never run in the machine's own network namespace"
        )
    addresses = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
    ).stdout
    for address in (HUB_IP, METADATA_IP):
        if f" {address}/32 " not in addresses:
            problems.append(f"{address}/32 is not on lo (scripts/e2e puts it there)")
    if not os.environ.get("MOAT_E2E_WORK"):
        problems.append("MOAT_E2E_WORK is not set (scripts/e2e sets it)")
    moat = os.environ.get("MOAT", "")
    if not (moat and os.access(moat, os.X_OK)):
        problems.append(f"MOAT={moat!r} is not an executable moat binary")
    jupyter = Path(os.environ.get("MOAT_E2E_JUPYTER", "/usr/local/lib/moat-jupyter"))
    for needed in ("venv/bin/jupyterhub", "venv/bin/jupyterhub-singleuser",
                   "node/bin/configurable-http-proxy"):
        if not os.access(jupyter / needed, os.X_OK):
            problems.append(f"{jupyter / needed} is missing (scripts/jupyter-env installs it)")
    return problems


def pytest_configure(config: pytest.Config) -> None:
    # scripts/e2e's time limit (and an interrupted CI job) sends SIGTERM: turn it into
    # KeyboardInterrupt, so the fixtures' teardown still stops the servers, the hub, the
    # proxy and the daemon.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    problems = _environment_problems()
    if problems:
        pytest.fail(
            "the end-to-end tests cannot run here (use integrations/jupyterhub/scripts/e2e):\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )
    work = Path(os.environ["MOAT_E2E_WORK"])
    jupyter = Path(os.environ.get("MOAT_E2E_JUPYTER", "/usr/local/lib/moat-jupyter"))
    the_stack = Stack(work, os.environ["MOAT"], jupyter)
    try:
        the_stack.start()
        yield the_stack
    finally:
        the_stack.teardown()


@pytest.fixture
def servers(stack: Stack) -> Dict[str, Dict[str, Any]]:
    """alice and bob exist and their servers are ready (started if they are not)."""
    stack.revive()
    return stack.ensure_running("alice", "bob")


class _Banner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            self.request.sendall(self.server.banner)  # type: ignore[attr-defined]
        except OSError:
            pass


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple, banner: bytes) -> None:
        super().__init__(address, _Banner)
        self.banner = banner


@pytest.fixture(scope="session")
def host_services(stack: Stack) -> Iterator[Dict[str, tuple]]:
    """Stand-ins for services of a real host, inside the test namespace: an "ssh" on
    port 22 of every host address and a "cloud metadata" server on 169.254.169.254:80.
    They answer the test process, so a sandbox's failure to reach them means something."""
    listeners = [
        _Listener(("0.0.0.0", 22), b"SSH-2.0-moat-e2e\r\n"),
        _Listener((METADATA_IP, 80), b"HTTP/1.0 200 OK\r\n\r\nmetadata of moat-e2e\n"),
    ]
    threads = [threading.Thread(target=l.serve_forever, daemon=True) for l in listeners]
    for thread in threads:
        thread.start()
    try:
        yield {"ssh": (HUB_IP, 22), "metadata": (METADATA_IP, 80)}
    finally:
        for listener in listeners:
            listener.shutdown()
            listener.server_close()


@pytest.fixture
def run_code(stack: Stack):
    """``await run_code(user, code)``: the output of ``code`` run in a new kernel of
    ``user``'s server, through the proxy, with the tests' admin token."""

    async def run(user: str, code: str, timeout: float = 60) -> str:
        return await _run_code(PUBLIC_URL, user, stack.admin_token, code, timeout)

    return run


@pytest.fixture
def run_json(stack: Stack):
    """Like run_code, for code whose last output line is JSON; the parsed value."""

    async def run(user: str, code: str, timeout: float = 60) -> Any:
        return await _run_json(PUBLIC_URL, user, stack.admin_token, code, timeout)

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run: in CI, "not tested" must not pass for "tested"."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped: a skip fails this run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
