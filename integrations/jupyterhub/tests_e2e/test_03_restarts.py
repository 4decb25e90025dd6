"""Servers outlive the hub and the daemon: after a restart of either, the same sandboxes
run, the hub shows the servers ready, and code runs through the proxy again."""

from __future__ import annotations

import logging
import signal
import time
from typing import Dict

import pytest

from .stack import POLL_INTERVAL, Stack

log = logging.getLogger("e2e")

USERS = ("alice", "bob")


def running_ids(stack: Stack) -> Dict[str, str]:
    return {name: stack.running_sandbox(name)["id"] for name in USERS}


async def assert_code_runs(run_code, when: str) -> None:
    for name in USERS:
        output = await run_code(name, "import os; print(os.environ['JUPYTERHUB_USER'], 6 * 7)")
        assert output.strip() == f"{name} 42", (
            f"expected code to run in {name}'s kernel through the proxy {when}, "
            f"printing '{name} 42'; saw {output!r}"
        )


async def test_hub_restart_keeps_the_servers(stack: Stack, servers, run_code) -> None:
    before = running_ids(stack)
    routes_before = {k: v["target"] for k, v in stack.routes().items() if k.startswith("/user/")}
    hub_log_start = len(stack.hub_log())

    status = stack.stop_hub(signal.SIGTERM)
    log.info("hub stopped with status %s; sandboxes %s", status, before)
    assert running_ids(stack) == before, (
        f"expected the sandboxes {before} to keep running with the hub stopped, the daemon "
        f"shows {running_ids(stack)}"
    )
    routes_down = {k: v["target"] for k, v in stack.routes().items() if k.startswith("/user/")}
    assert routes_down == routes_before, (
        f"expected the proxy (its own process) to keep the routes {routes_before} while the "
        f"hub is down, saw {routes_down}"
    )

    stack.start_hub()
    for name in USERS:
        model = stack.wait_ready(name, timeout=30)
        assert model.get("ready"), f"expected the hub to show {name}'s server ready, saw {model}"
    after = running_ids(stack)
    assert after == before, (
        f"expected the same sandboxes running after the hub restart, {before}; the daemon "
        f"shows {after}"
    )
    restart_log = stack.hub_log()[hub_log_start:]
    for name in USERS:
        assert f"{name} still running" in restart_log, (
            f"expected the restarted hub to find {name}'s server still running (its log "
            f"saying '{name} still running'); it did not say so"
        )
    await assert_code_runs(run_code, "after the hub restarted")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_daemon_restart_keeps_the_servers(stack: Stack, servers, run_code, sig) -> None:
    before = {name: stack.running_sandbox(name) for name in USERS}
    hub_log_start = len(stack.hub_log())

    stack.stop_daemon(sig)
    log.info("daemon stopped by %s; the hub polls without it for %s s",
             sig.name, 2 * POLL_INTERVAL + 1)
    # Long enough for the hub to poll every server at least twice without a daemon.
    time.sleep(2 * POLL_INTERVAL + 1)
    for name in USERS:
        supervisor = before[name]["pid"]
        try:
            with open(f"/proc/{supervisor}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode()
        except OSError as e:
            cmdline = f"gone ({e})"
        assert "moat" in cmdline and before[name]["id"] in cmdline, (
            f"expected {name}'s sandbox supervisor (pid {supervisor}, moat run --id "
            f"{before[name]['id']}) to survive the daemon's {sig.name}; /proc says {cmdline}"
        )
        model = stack.server(name)
        assert model and model.get("ready"), (
            f"expected the hub to keep showing {name}'s server ready while the daemon is "
            f"down, saw {model}"
        )
    down_log = stack.hub_log()[hub_log_start:]
    for name in USERS:
        assert f"Cannot check {name}'s server" in down_log, (
            f"expected the hub to have polled {name}'s server while the daemon was down "
            f"(the spawner's warning 'Cannot check {name}'s server'); its log since the "
            f"stop does not say so"
        )
    await assert_code_runs(run_code, f"while the daemon is down ({sig.name})")

    stack.start_daemon()
    after = {name: stack.running_sandbox(name) for name in USERS}
    for name in USERS:
        same = (after[name]["id"], after[name]["pid"]) == (before[name]["id"], before[name]["pid"])
        assert same, (
            f"expected the restarted daemon to re-attach to {name}'s sandbox "
            f"{before[name]['id']} (supervisor pid {before[name]['pid']}), it shows "
            f"{after[name]['id']} (pid {after[name]['pid']}, state {after[name]['state']})"
        )
    # Let the hub poll through the new daemon, then check it still holds both servers.
    time.sleep(2 * POLL_INTERVAL + 1)
    for name in USERS:
        model = stack.server(name)
        assert model and model.get("ready"), (
            f"expected the hub to show {name}'s server ready after the daemon restart "
            f"(the spawner's poll reporting it running), saw {model}"
        )
    up_log = stack.hub_log()[hub_log_start:]
    for line in up_log.splitlines():
        assert "ended:" not in line and "appears to have stopped" not in line, (
            f"expected no server to be reported ended after the daemon's {sig.name}; the "
            f"hub logged: {line}"
        )
    await assert_code_runs(run_code, f"after the daemon restarted ({sig.name})")
