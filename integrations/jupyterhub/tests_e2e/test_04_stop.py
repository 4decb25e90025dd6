"""Stopping a server through the REST API delivers SIGTERM to it: jupyter_server shuts
down on its own (kernels included) and exits 0, and the hub shows the server stopped."""

from __future__ import annotations

import logging
import re

from .kernel import Kernel
from .stack import LIVE_STATES, PUBLIC_URL, Stack

log = logging.getLogger("e2e")


async def test_stopping_a_server_shuts_it_down_cleanly(stack: Stack, servers) -> None:
    sandbox = stack.running_sandbox("alice")
    sandbox_id = sandbox["id"]
    # A kernel with some state, so that its shutdown is part of the server's.
    kernel = await Kernel(PUBLIC_URL, "alice", stack.admin_token).start()
    await kernel.execute("work = 'unsaved'")
    kernel_id = kernel.kernel_id
    before_stop = stack.sandbox_log(sandbox_id)
    assert kernel_id in before_stop, (
        f"expected GET /v1/sandboxes/{sandbox_id}/logs to show alice's server starting "
        f"kernel {kernel_id} (the control of the log); its last lines: {before_stop[-800:]}"
    )
    # MoatSpawner.stop() forgets the sandbox (record and log: DELETE /v1/sandboxes/ID) as
    # soon as the daemon reports it gone, so the log cannot be fetched through the API
    # afterwards. Hold the daemon's log file of the sandbox open (docs/operations.md:
    # STATE/sandboxes/ID/log) to read the end of it once the stop is over.
    log_file = open(stack.state_dir / "sandboxes" / sandbox_id / "log", "rb")
    try:
        status = stack.stop_server("alice")
        assert status in (202, 204), (
            f"expected DELETE /hub/api/users/alice/server to answer 202 or 204, got {status}"
        )
        stack.wait_stopped("alice", timeout=30)
        output = log_file.read().decode(errors="replace")
    finally:
        log_file.close()
        await kernel.close(delete=False)
    log.info("alice's server stopped; the end of its log:\n%s", "\n".join(output.splitlines()[-5:]))

    # The daemon: a stop, then an exit with status 0 (its record, as the events give it).
    events = stack.lifecycle_events(sandbox_id, until="exit")
    operations = [event["Operation"] for event in events]
    assert "stop" in operations, (
        f"expected the daemon to record a stop of sandbox {sandbox_id}, its events: {operations}"
    )
    exit_event = events[-1]
    assert exit_event["Data"] == "exit_code=0", (
        f"expected sandbox {sandbox_id} to exit with status 0 after SIGTERM (a clean "
        f"shutdown), the daemon's exit event says {exit_event['Data']!r}"
    )
    record = stack.sandbox(sandbox_id)
    log.info("the daemon's events of %s: %s; its record now: %s", sandbox_id,
             [(e["Operation"], e["Data"]) for e in events],
             record or "none (404: MoatSpawner.stop() deleted it)")
    if record is not None:  # kept, if the spawner ever stops forgetting stopped sandboxes
        assert record["state"] == "exited" and record["exit_code"] == 0, (
            f"expected the daemon's record of {sandbox_id} to show state exited and "
            f"exit_code 0, saw {record}"
        )
    stopped = re.search(
        rf"Stopped sandbox jupyter-alice \({sandbox_id}\) of alice: (.*)", stack.hub_log()
    )
    assert stopped and stopped.group(1).strip() == "exited (exit status 0)", (
        f"expected the spawner to log the daemon's final record of {sandbox_id} as "
        f"'exited (exit status 0)', saw {stopped.group(0) if stopped else 'no such line'}"
    )

    # jupyter_server's own shutdown, in the sandbox's log.
    for expected in (
        "received signal 15, stopping",
        "Shutting down 1 kernel",
        f"Kernel shutdown: {kernel_id}",
    ):
        assert expected in output, (
            f"expected jupyter_server's shutdown line {expected!r} in the sandbox's log; its "
            f"last lines:\n{chr(10).join(output.splitlines()[-25:])}"
        )

    # Nothing of the sandbox is left running, and the hub shows no server.
    try:
        with open(f"/proc/{sandbox['pid']}/cmdline", "rb") as f:
            supervisor = f.read().replace(b"\0", b" ").decode()
    except OSError:
        supervisor = ""
    assert sandbox_id not in supervisor, (
        f"expected the sandbox's supervisor (pid {sandbox['pid']}) to be gone, it runs: "
        f"{supervisor}"
    )
    model = stack.user("alice")
    assert model.get("servers", {}).get("") is None and not model.get("server"), (
        f"expected the hub to show alice with no running server, saw servers "
        f"{model.get('servers')} server {model.get('server')}"
    )
    live = [s for s in stack.sandboxes("alice") if s["state"] in LIVE_STATES]
    assert not live, f"expected no live sandbox of alice's, the daemon lists {live}"
