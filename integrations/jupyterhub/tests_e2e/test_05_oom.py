"""mem_limit is enforced: a kernel that allocates far beyond it is killed, the kill ends
the sandbox (the daemon's record says oom_killed), and the hub sees the server stop."""

from __future__ import annotations

import json
import logging
import time

from .kernel import Kernel
from .stack import MEM_LIMIT, POLL_INTERVAL, PUBLIC_URL, Stack

log = logging.getLogger("e2e")

USER = "carol"  # a server of her own: the test ends it
LIMIT_BYTES = 512 << 20
assert MEM_LIMIT == "512M"

CGROUP_LIMIT = """
import json, os
limits = {}
for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
        limits[path] = open(path).read().strip()
    except OSError as e:
        limits[path] = f"{type(e).__name__}"
print(json.dumps({"env": os.environ.get("MEM_LIMIT"), "cgroup": limits}))
"""

HOG = "hog = b'x' * (2 << 30)  # 2 GiB, every page written\nprint('still alive', len(hog))"


async def test_memory_hog_ends_the_server_and_the_hub_sees_it(stack: Stack) -> None:
    stack.revive()
    stack.ensure_running(USER)
    sandbox = stack.running_sandbox(USER)
    sandbox_id = sandbox["id"]

    kernel = await Kernel(PUBLIC_URL, USER, stack.admin_token).start()
    try:
        seen = json.loads((await kernel.execute(CGROUP_LIMIT)).strip().splitlines()[-1])
        assert seen["env"] == str(LIMIT_BYTES), (
            f"expected MEM_LIMIT={LIMIT_BYTES} in {USER}'s kernel, saw {seen['env']!r}"
        )
        assert str(LIMIT_BYTES) in seen["cgroup"].values(), (
            f"expected the sandbox's cgroup memory limit to be {LIMIT_BYTES} bytes, "
            f"saw {seen['cgroup']}"
        )
        log.info("%s's kernel allocates 2 GiB with a limit of %s", USER, MEM_LIMIT)
        started = time.monotonic()
        await kernel.send(HOG)
    finally:
        await kernel.close(delete=False)

    # The daemon: the out-of-memory kill ends the whole sandbox.
    deadline = started + 40
    record = stack.sandbox(sandbox_id)
    while time.monotonic() < deadline and not (
        record and record["state"] == "exited" and record["oom_killed"]
    ):
        time.sleep(0.5)
        record = stack.sandbox(sandbox_id)
    log.info("after %.1f s the daemon's record: %s", time.monotonic() - started, record)
    assert record is not None, (
        f"expected the daemon to keep the record of {USER}'s sandbox {sandbox_id} after it "
        f"ended, it answers 404"
    )
    assert record["oom_killed"] is True and record["state"] == "exited", (
        f"expected the memory hog to end {USER}'s sandbox {sandbox_id} within 40 s with "
        f"the record showing state 'exited' and oom_killed true; it shows state "
        f"{record['state']!r}, oom_killed {record['oom_killed']}, exit_code "
        f"{record['exit_code']} (full record: {record}). Last lines of its log:\n"
        f"{stack.sandbox_log(sandbox_id, tail_lines=15)}"
    )
    events = stack.lifecycle_events(sandbox_id, until="exit")
    assert "oom" in [event["Operation"] for event in events], (
        f"expected an 'oom' event of sandbox {sandbox_id} from the daemon, saw "
        f"{[(e['Operation'], e['Data']) for e in events]}"
    )

    # The hub: its poll (every POLL_INTERVAL s) sees the server stop.
    remaining = max(deadline - time.monotonic(), 2 * POLL_INTERVAL + 1)
    stack.wait_stopped(USER, timeout=remaining)
    log.info("the hub shows %s's server stopped %.1f s after the hog",
             USER, time.monotonic() - started)
    assert f"{sandbox_id}) of {USER} ended" in stack.hub_log(), (
        f"expected the spawner to log why {USER}'s server ended ('Sandbox jupyter-{USER} "
        f"({sandbox_id}) of {USER} ended: ...'); the hub log does not say so"
    )
