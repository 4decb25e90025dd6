"""Servers start through the REST API, and user code runs as the sandbox's user, in its
home, and can call the hub API (and only as its own user)."""

from __future__ import annotations

import json
import os
import secrets

from .stack import Stack

#: 2^30: the first host id moat gives to sandboxes (README: "mapped to a host id range
#: (2^30 and up) that no host account ... holds").
FIRST_SANDBOX_HOST_ID = 1 << 30

WHOAMI = """
import json, os
marker = os.path.join(os.environ["HOME"], "e2e-whoami.txt")
with open(marker, "w") as f:
    f.write({content!r})
print(json.dumps({{
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
    "cwd": os.getcwd(), "home": os.environ.get("HOME"), "user": os.environ.get("USER"),
    "marker": marker,
}}))
"""


def test_users_and_servers_start_through_the_rest_api(stack: Stack) -> None:
    for name in ("alice", "bob"):
        stack.create_user(name)
        assert stack.user(name)["name"] == name
    for name in ("alice", "bob"):
        if stack.server(name) is None:
            stack.start_server(name)
    models = {name: stack.wait_ready(name) for name in ("alice", "bob")}
    sandboxes = {name: stack.running_sandbox(name) for name in ("alice", "bob")}
    for name in ("alice", "bob"):
        sandbox = sandboxes[name]
        assert sandbox["name"] == f"jupyter-{name}", (
            f"expected {name}'s sandbox to be named jupyter-{name}, saw {sandbox['name']}"
        )
        assert sandbox["address"] and sandbox["ports"] == [8888], (
            f"expected {name}'s sandbox to have an address and publish port 8888, saw {sandbox}"
        )
        assert models[name]["url"] == f"/user/{name}/", (
            f"expected the hub to serve {name}'s server at /user/{name}/, saw {models[name]}"
        )
    assert sandboxes["alice"]["address"] != sandboxes["bob"]["address"], (
        f"expected alice and bob to have different addresses, saw {sandboxes}"
    )
    routes = stack.routes()
    for name in ("alice", "bob"):
        target = routes.get(f"/user/{name}", {}).get("target")
        expected = f"http://{sandboxes[name]['address']}:8888"
        assert target == expected, (
            f"expected the proxy to route /user/{name} to {expected}, saw {target!r} "
            f"(routes: {sorted(routes)})"
        )


async def test_code_runs_as_the_sandbox_user_in_its_home(stack: Stack, servers, run_json) -> None:
    host_uids = {}
    for name in ("alice", "bob"):
        content = f"{name} was here {secrets.token_hex(8)}"
        seen = await run_json(name, WHOAMI.format(content=content))
        assert seen["uid"] != 0 and seen["euid"] != 0, (
            f"expected {name}'s code to run as a non-root user, saw uid {seen['uid']} "
            f"euid {seen['euid']}"
        )
        assert seen["cwd"] == seen["home"], (
            f"expected {name}'s kernel to run in $HOME ({seen['home']}), saw cwd {seen['cwd']}"
        )
        home = stack.home(name)
        host_file = home / os.path.basename(seen["marker"])
        assert host_file.is_file(), (
            f"expected the file {name} wrote to {seen['marker']} to appear in {name}'s "
            f"home on the host, {host_file}; that directory holds "
            f"{sorted(p.name for p in home.iterdir()) if home.is_dir() else 'nothing (missing)'}"
        )
        assert host_file.read_text() == content, (
            f"expected {host_file} to hold {content!r}, saw {host_file.read_text()!r}"
        )
        owner = host_file.stat().st_uid
        assert owner != 0 and owner >= FIRST_SANDBOX_HOST_ID, (
            f"expected {host_file} to be owned by a sandbox host uid (>= 2^30), "
            f"saw uid {owner}"
        )
        home_owner = home.stat().st_uid
        assert home_owner == owner, (
            f"expected {name}'s home on the host to be owned by the same uid as the file "
            f"({owner}), saw {home_owner}"
        )
        host_uids[name] = owner
    assert host_uids["alice"] != host_uids["bob"], (
        f"expected alice's and bob's files to have different host owners, saw {host_uids}"
    )


HUB_API_FROM_INSIDE = """
import json, os, urllib.error, urllib.request
api = os.environ["JUPYTERHUB_API_URL"]
token = os.environ["JUPYTERHUB_API_TOKEN"]
def get(path):
    request = urllib.request.Request(api + path, headers={"Authorization": "token " + token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:300]
print(json.dumps({"api": api, "me": get("/user"), "other": get("/users/" + OTHER)}))
"""


async def test_hub_api_works_from_inside(stack: Stack, servers, run_json) -> None:
    for name, other in (("alice", "bob"), ("bob", "alice")):
        seen = await run_json(name, f"OTHER = {other!r}\n" + HUB_API_FROM_INSIDE)
        assert seen["api"] == "http://10.77.0.1:8081/hub/api", (
            f"expected {name}'s JUPYTERHUB_API_URL to be the hub API on 10.77.0.1:8081, "
            f"saw {seen['api']}"
        )
        status, model = seen["me"]
        assert status == 200 and isinstance(model, dict) and model.get("name") == name, (
            f"expected GET $JUPYTERHUB_API_URL/user from {name}'s sandbox to answer 200 "
            f"with {name}'s own model, saw {status}: {json.dumps(model)[:300]}"
        )
        status, body = seen["other"]
        assert status in (403, 404), (
            f"expected {name}'s server token to be refused {other}'s model (403 or 404), "
            f"saw {status}: {str(body)[:300]}"
        )
