"""alice's sandbox holds her in: bob's home is not there for her to read or write (not
even through /proc), and the network reaches the hub API and nothing else: not bob's
server, not the host's other ports, not cloud metadata. Each closed target is first
shown to answer the test process on the host (the control)."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Dict, List, Tuple

import httpx

from .stack import HUB_IP, HUB_PORT, PROXY_API_PORT, PROXY_PORT, Stack, connect

log = logging.getLogger("e2e")

PROBE = """
import concurrent.futures, json, socket
def probe(target):
    host, port = target
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        s.close()
with concurrent.futures.ThreadPoolExecutor(len(TARGETS)) as pool:
    results = dict(zip(TARGETS, pool.map(probe, TARGETS.values())))
print(json.dumps(results))
"""

SNOOP = """
import json, os
out = {}
def attempt(action):
    try:
        return "OK " + repr(action())[:300]
    except BaseException as e:
        return f"{type(e).__name__}: {e}"
secret_path = os.path.join(BOB_HOME, SECRET_NAME)
parents = [BOB_HOME, os.path.dirname(BOB_HOME), os.path.dirname(os.path.dirname(BOB_HOME))]
out["exists"] = {p: os.path.exists(p) for p in parents}
out["direct"] = {
    "read bob's file": attempt(lambda: open(secret_path).read()),
    "list bob's home": attempt(lambda: os.listdir(BOB_HOME)),
    "write a file in bob's home": attempt(
        lambda: open(os.path.join(BOB_HOME, "from-alice.txt"), "w").write("alice was here")),
    "make bob's home and a directory in it": attempt(
        lambda: os.makedirs(os.path.join(BOB_HOME, "from-alice-dir"))),
}
# Where a path that "worked" really is (e.g. /var/tmp is a link to the sandbox's own /tmp).
out["realpath"] = os.path.realpath(BOB_HOME)
own = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["own_pids"] = own
tricks = {}
for pid in sorted(set(own) | set(BOB_PIDS)):
    for path in (f"/proc/{pid}/root{secret_path}",
                 f"/proc/{pid}/root/home/jovyan/{SECRET_NAME}",
                 f"/proc/{pid}/cwd/{SECRET_NAME}"):
        tricks[path] = attempt(lambda path=path: open(path).read())
for pid in BOB_PIDS:
    for what in ("environ", "cmdline", "ns/mnt", "root"):
        path = f"/proc/{pid}/{what}"
        if what == "root":
            tricks[path] = attempt(lambda path=path: os.listdir(path))
        else:
            tricks[path] = attempt(lambda path=path: open(path, "rb").read(200))
out["tricks"] = tricks
mountinfo = open("/proc/self/mountinfo").read()
out["mountinfo names bob's home"] = BOB_HOME in mountinfo or "e2e-bob" in mountinfo
out["own pids' cmdlines"] = {
    pid: attempt(lambda pid=pid: open(f"/proc/{pid}/cmdline", "rb").read(120).decode("latin-1"))
    for pid in own
}
print(json.dumps(out))
"""


def host_pids_of_uid(uid: int) -> List[int]:
    """Host pids whose real uid is ``uid`` (from /proc/PID/status: sandbox processes are
    not dumpable, so /proc/PID itself is root's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        pids.append(int(entry.name))
                    break
        except OSError:
            continue
    return sorted(pids)


async def test_alice_cannot_read_or_write_bobs_home(stack: Stack, servers, run_code) -> None:
    secret_name = f"e2e-secret-{secrets.token_hex(4)}.txt"
    secret = f"bob's secret {secrets.token_hex(16)}"
    await run_code("bob", f"open({secret_name!r}, 'w').write({secret!r})")
    bob_home = stack.home("bob")
    secret_file = bob_home / secret_name
    assert secret_file.read_text() == secret, (
        f"expected bob's kernel to have written {secret_file} on the host (the control), "
        f"saw {sorted(p.name for p in bob_home.iterdir())}"
    )
    bob_uid = bob_home.stat().st_uid
    bob_pids = host_pids_of_uid(bob_uid)
    assert bob_pids, (
        f"expected host processes running as bob's host uid {bob_uid} (his server and "
        "kernel), saw none"
    )

    code = (
        f"BOB_HOME = {str(bob_home)!r}\nSECRET_NAME = {secret_name!r}\n"
        f"BOB_PIDS = {bob_pids!r}\n" + SNOOP
    )
    output = await run_code("alice", code)
    assert secret not in output, (
        f"expected bob's secret never to reach alice's kernel; her output holds it: {output}"
    )
    seen = json.loads(output.strip().splitlines()[-1])

    assert not any(seen["exists"].values()), (
        f"expected bob's home {bob_home} and its parents not to exist in alice's sandbox, "
        f"saw {seen['exists']}"
    )
    reads = {w: r for w, r in seen["direct"].items() if not w.startswith(("write", "make"))}
    succeeded = {what: result for what, result in reads.items() if result.startswith("OK")}
    assert not succeeded, (
        f"expected every read of {bob_home} from alice's sandbox to fail, these "
        f"succeeded: {succeeded}"
    )
    # A write may "succeed" only where the path leads into alice's own sandbox: with the
    # homes under /var/tmp, her /var/tmp is a link to her private /tmp.
    writes = {w: r for w, r in seen["direct"].items() if w.startswith(("write", "make"))}
    landed = {what: result for what, result in writes.items() if result.startswith("OK")}
    assert not landed or seen["realpath"].startswith("/tmp/"), (
        f"expected every write to {bob_home} from alice's sandbox to fail or land in her "
        f"own private /tmp; these succeeded: {landed}, and the path resolves to "
        f"{seen['realpath']} in her sandbox"
    )
    succeeded = {what: result for what, result in seen["tricks"].items() if result.startswith("OK")}
    assert not succeeded, (
        f"expected every /proc route to bob's files and processes to fail in alice's "
        f"sandbox (her own pids {seen['own_pids']}, bob's host pids {bob_pids}); these "
        f"succeeded: {succeeded}"
    )
    assert not seen["mountinfo names bob's home"], (
        f"expected alice's /proc/self/mountinfo not to mention bob's home {bob_home}"
    )
    cmdlines = seen["own pids' cmdlines"]
    assert not any("bob" in str(c) for c in cmdlines.values()), (
        f"expected only alice's processes in her sandbox's /proc, saw {cmdlines}"
    )
    # And nothing appeared in bob's real home, whatever the sandbox said.
    intruders = sorted(p.name for p in bob_home.iterdir() if p.name.startswith("from-alice"))
    assert not intruders, f"expected nothing of alice's in {bob_home}, found {intruders}"
    assert secret_file.read_text() == secret, f"expected {secret_file} to be untouched"


async def test_alice_reaches_the_hub_api_and_nothing_else(
    stack: Stack, servers, run_json, host_services
) -> None:
    alice = stack.running_sandbox("alice")
    bob = stack.running_sandbox("bob")
    closed: Dict[str, Tuple[str, int]] = {
        "bob's server": (bob["address"], 8888),
        "the proxy on the hub address": (HUB_IP, PROXY_PORT),
        "the proxy API on the hub address": (HUB_IP, PROXY_API_PORT),
        "ssh on the hub address": host_services["ssh"],
        "cloud metadata": host_services["metadata"],
        "the proxy on alice's gateway": (alice["host_address"], PROXY_PORT),
        "the proxy API on alice's gateway": (alice["host_address"], PROXY_API_PORT),
        "ssh on alice's gateway": (alice["host_address"], 22),
        "the proxy on bob's gateway": (bob["host_address"], PROXY_PORT),
    }
    hub_api = (HUB_IP, HUB_PORT)

    # Controls: every target answers from the host, where the test runs.
    from_host = {what: connect(*target) for what, target in {**closed, "hub API": hub_api}.items()}
    not_answering = {w: r for w, r in from_host.items() if r != "connected"}
    assert not not_answering, (
        f"expected every target to accept a connection from the host (the control), these "
        f"did not: {not_answering}"
    )
    response = httpx.get(f"http://{bob['address']}:8888/user/bob/api", timeout=10)
    assert response.status_code == 200 and "version" in response.json(), (
        f"expected bob's server to answer GET /user/bob/api from the host (the control), "
        f"saw {response.status_code}: {response.text[:200]}"
    )

    targets = {what: list(target) for what, target in {**closed, "hub API": hub_api}.items()}
    seen = await run_json("alice", f"TARGETS = {targets!r}\n" + PROBE)
    for what, (host, port) in {**closed, "hub API": hub_api}.items():
        log.info("%-34s %s:%-5s from the host: %-9s from alice's sandbox: %s",
                 what, host, port, from_host[what], seen[what])
    assert seen["hub API"] == "connected", (
        f"expected alice's sandbox to reach the hub API {HUB_IP}:{HUB_PORT} (the control "
        f"inside the sandbox), saw {seen['hub API']}"
    )
    reached = {what: f"{closed[what][0]}:{closed[what][1]}" for what in closed
               if seen[what] == "connected"}
    assert not reached, (
        f"expected alice's sandbox to reach nothing but the hub API; it connected to "
        f"{reached} (all results: {seen})"
    )
