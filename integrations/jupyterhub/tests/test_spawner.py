"""MoatSpawner against a fake daemon: what it sends, and how it reacts to the answers."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Dict, List

import pytest
from conftest import API_TOKEN
from tornado import web
from traitlets import TraitError

from moat_spawner import MoatSpawner, SandboxFailed, escape_name, sandbox_name

# -- start ---------------------------------------------------------------------------


async def test_start_sends_the_documented_request_and_returns_the_address(daemon, make_spawner):
    spawner = make_spawner(mem_limit="2G", cpu_limit=1.5, extra_labels={"team": "physics"})

    address, port = await spawner.start()

    assert (address, port) == ("10.77.0.6", 8888)
    [create] = daemon.sent("POST", "/v1/sandboxes")
    body = create.body
    assert spawner.sandbox_id == next(iter(daemon.sandboxes))
    assert body["name"] == "jupyter-alice"
    assert body["command"] == ["jupyterhub-singleuser"]
    assert body["profile"] == "untrusted"
    assert body["identity"] == "alice"
    assert body["home"] == "/srv/homes/alice"
    assert body["limits"] == {"memory": str(2 * 1024**3), "cpus": 1.5}
    assert body["network"] == {
        "mode": "isolated",
        "allow_host": ["10.77.0.1:8081"],
        "publish": [8888],
    }
    assert body["labels"] == {
        "hub.jupyter.org/username": "alice",
        "hub.jupyter.org/servername": "",
        "team": "physics",
    }
    assert "policies" not in body
    env = body["env"]
    assert env["JUPYTERHUB_API_TOKEN"] == API_TOKEN
    assert env["JUPYTERHUB_API_URL"] == "http://10.77.0.1:8081/hub/api"
    # jupyterhub-singleuser listens where JUPYTERHUB_SERVICE_URL says: all of the sandbox.
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8888/"
    assert env["MEM_LIMIT"] == str(2 * 1024**3)
    assert all(isinstance(v, str) for v in env.values())


async def test_named_server_and_odd_usernames_get_safe_distinct_names(daemon, make_spawner):
    spawner = make_spawner(user="john.doe", server="gpu", cmd=["jupyter-labhub"], args=["--debug"])
    await spawner.start()
    body = daemon.sent("POST", "/v1/sandboxes")[0].body
    assert body["name"] == "jupyter-john_2edoe.gpu"
    assert body["identity"] == "john_2edoe"
    assert body["home"] == "/srv/homes/john_2edoe"
    assert body["command"] == ["jupyter-labhub", "--debug"]
    assert body["labels"]["hub.jupyter.org/username"] == "john.doe"
    assert body["labels"]["hub.jupyter.org/servername"] == "gpu"


async def test_failed_start_raises_with_the_daemon_error_and_log_lines(daemon, make_spawner):
    daemon.outcome = "fail"
    spawner = make_spawner()

    with pytest.raises(SandboxFailed) as raised:
        await spawner.start()

    message = str(raised.value)
    assert "profile: no such profile: gpu" in message
    assert "line 30" in message and "line 11" in message and "line 10" not in message
    assert raised.value.jupyterhub_message == message
    [logs] = daemon.sent("GET", "/v1/sandboxes/" + spawner.sandbox_id + "/logs")
    assert logs.query == {"tail": ["20"]}


async def test_progress_ends_when_the_start_fails(daemon, make_spawner):
    daemon.outcome = "fail"
    spawner = make_spawner()
    events: List[Dict[str, Any]] = []

    async def follow() -> None:
        async for event in spawner.progress():
            events.append(event)

    follower = asyncio.ensure_future(follow())
    with pytest.raises(SandboxFailed):
        await spawner.start()
    await asyncio.wait_for(follower, 5)
    assert events[0]["message"] == "Requesting sandbox jupyter-alice from moat"


async def test_workload_exiting_during_start_is_reported(daemon, make_spawner):
    daemon.outcome = "exit"
    with pytest.raises(SandboxFailed, match=r"exited while starting \(exit status 1, killed"):
        await make_spawner().start()


async def test_daemon_refusal_is_shown_in_moat_words(daemon, make_spawner):
    daemon.refuse = 'limits.memory: "lots" is not a size (e.g. 512M, 2G)'
    with pytest.raises(SandboxFailed, match='moat refused the sandbox: limits.memory: "lots"'):
        await make_spawner().start()


async def test_long_names_stay_within_the_daemon_limits(daemon, make_spawner):
    await make_spawner(user="a" * 200, server="s" * 200).start()
    body = daemon.sent("POST", "/v1/sandboxes")[0].body
    assert len(body["name"]) <= 128 and len(body["identity"]) <= 63


async def test_hub_api_on_loopback_is_refused_before_anything_is_created(daemon, make_spawner):
    spawner = make_spawner(hub_ip="127.0.0.1")
    with pytest.raises(SandboxFailed, match="outside 127.0.0.0/8"):
        await spawner.start()
    assert daemon.requests == []


async def test_progress_yields_the_steps_as_they_happen(daemon, make_spawner):
    daemon.start_polls = 3
    spawner = make_spawner()
    events: List[Dict[str, Any]] = []

    async def follow() -> None:
        async for event in spawner.progress():
            events.append(event)

    follower = asyncio.ensure_future(follow())
    await asyncio.sleep(0)
    await spawner.start()
    await asyncio.wait_for(follower, 5)

    messages = [e["message"] for e in events]
    assert messages == [
        "Requesting sandbox jupyter-alice from moat",
        "Sandbox jupyter-alice is starting",
        "Sandbox jupyter-alice has address 10.77.0.6",
        "Sandbox jupyter-alice is running; waiting for the server to answer",
    ]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] < 100

    # A page opened after the start replays the steps and ends.
    replay = [e async for e in spawner.progress()]
    assert replay == events


# -- profiles and user_options ---------------------------------------------------------

PROFILES = {
    "small": {"display_name": "Small (1 CPU, 2 GB)", "mem_limit": "2G", "cpu_limit": 1},
    "big": {
        "display_name": "Big, with internet",
        "profile": "/etc/moat/profiles/big.toml",
        "mem_limit": "16G",
        "cpu_limit": 4,
        "network_mode": "egress",
        "egress": ["0.0.0.0/0:443/tcp"],
        "bandwidth": "100mbit",
        "policies": ["/etc/moat/policies/jupyter.yaml"],
        "extra_labels": {"tier": "big"},
    },
}


async def test_choice_outside_allowed_profiles_is_refused_with_nothing_sent(daemon, make_spawner):
    spawner = make_spawner(profiles=PROFILES, allowed_profiles=["small"])
    spawner.user_options = {"profile": "big"}

    with pytest.raises(web.HTTPError) as raised:
        await spawner.start()
    assert raised.value.status_code == 400
    assert "'big' is not available to alice; choose one of: small" in str(raised.value)
    # JupyterHub >= 5.3 runs the same check through apply_user_options, before start().
    if hasattr(spawner, "apply_user_options"):
        with pytest.raises(web.HTTPError):
            await spawner.apply_user_options(spawner, {"profile": ["big"]})
    assert daemon.requests == []


async def test_no_allowed_profile_is_refused(daemon, make_spawner):
    spawner = make_spawner(profiles=PROFILES, allowed_profiles=[])
    with pytest.raises(web.HTTPError) as raised:
        await spawner.start()
    assert raised.value.status_code == 403
    assert daemon.requests == []


async def test_allowed_profile_overrides_the_settings(daemon, make_spawner):
    async def by_group(spawner: MoatSpawner) -> List[str]:
        await asyncio.sleep(0)
        return ["small", "big"] if "physics" in [g.name for g in spawner.user.groups] else ["small"]

    spawner = make_spawner(
        groups=["physics"],
        profiles=PROFILES,
        allowed_profiles=by_group,
        extra_labels={"site": "lab"},
        egress=["1.2.3.4/32:22/tcp"],
    )
    spawner.user_options = spawner.options_from_form({"profile": ["big"]})
    await spawner.start()

    body = daemon.sent("POST", "/v1/sandboxes")[0].body
    assert body["profile"] == "/etc/moat/profiles/big.toml"
    assert body["limits"] == {"memory": str(16 * 1024**3), "cpus": 4.0}
    assert body["network"]["mode"] == "egress"
    assert body["network"]["egress"] == ["0.0.0.0/0:443/tcp"]
    assert body["network"]["bandwidth"] == "100mbit"
    assert body["policies"] == ["/etc/moat/policies/jupyter.yaml"]
    assert body["labels"]["site"] == "lab" and body["labels"]["tier"] == "big"
    assert body["env"]["MEM_LIMIT"] == str(16 * 1024**3)
    assert body["env"]["CPU_LIMIT"] == "4.0"
    # The spawner's own settings are untouched for the next start.
    assert spawner.network_mode == "isolated" and spawner.extra_labels == {"site": "lab"}


async def test_default_choice_is_the_first_allowed_profile(daemon, make_spawner):
    spawner = make_spawner(profiles=PROFILES)
    await spawner.start()
    body = daemon.sent("POST", "/v1/sandboxes")[0].body
    assert body["limits"] == {"memory": str(2 * 1024**3), "cpus": 1.0}
    assert body["network"]["mode"] == "isolated" and "egress" not in body["network"]


async def test_options_form_lists_allowed_profiles_only(daemon, make_spawner):
    both = make_spawner(profiles=PROFILES)
    form = await both.get_options_form()
    assert '<select class="form-control" name="profile"' in form
    assert "Small (1 CPU, 2 GB)" in form and "Big, with internet" in form

    one = make_spawner(profiles=PROFILES, allowed_profiles=lambda spawner: ["small"])
    assert await one.get_options_form() == ""
    assert make_spawner().options_form == ""


async def test_without_profiles_user_options_are_ignored(daemon, make_spawner):
    spawner = make_spawner()
    spawner.user_options = {"profile": "big", "mem_limit": "64G"}
    await spawner.start()
    body = daemon.sent("POST", "/v1/sandboxes")[0].body
    assert body["profile"] == "untrusted" and "limits" not in body


def test_profile_typos_are_configuration_errors():
    with pytest.raises(TraitError, match="unknown key.*mem_limt"):
        MoatSpawner(profiles={"x": {"mem_limt": "2G"}})
    with pytest.raises(TraitError, match="network_mode"):
        MoatSpawner(profiles={"x": {"network_mode": "open"}})
    with pytest.raises(TraitError, match="mem_limit"):
        MoatSpawner(profiles={"x": {"mem_limit": "lots"}})


# -- 409: a leftover sandbox of the same server --------------------------------------------


async def test_leftover_sandbox_of_this_server_is_replaced(daemon, make_spawner):
    old = daemon.add(
        "jupyter-alice",
        labels={"hub.jupyter.org/username": "alice", "hub.jupyter.org/servername": ""},
    )
    spawner = make_spawner()

    address, _ = await spawner.start()

    assert [r.path for r in daemon.sent("POST", "/v1/sandboxes")] == [
        "/v1/sandboxes",
        f"/v1/sandboxes/{old['id']}/stop",
        "/v1/sandboxes",
    ]
    assert daemon.sent("DELETE")[0].path == f"/v1/sandboxes/{old['id']}"
    assert (
        spawner.sandbox_id != old["id"]
        and address == daemon.sandboxes[spawner.sandbox_id]["address"]
    )


async def test_name_taken_by_a_foreign_sandbox_is_not_touched(daemon, make_spawner):
    daemon.add("jupyter-alice", labels={"hub.jupyter.org/username": "mallory"})
    with pytest.raises(SandboxFailed, match="this hub did not start it"):
        await make_spawner().start()
    assert daemon.sent("POST", "/v1/sandboxes/") == [] and daemon.sent("DELETE") == []


# -- poll ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"state": "starting"}, None),
        ({"state": "running"}, None),
        ({"state": "stopping"}, None),
        ({"state": "exited", "exit_code": 3}, 3),
        ({"state": "exited", "exit_code": None}, 0),
        ({"state": "failed", "exit_code": 125, "error": "no such profile"}, 125),
        ({"state": "failed", "exit_code": None, "error": "no such profile"}, 1),
    ],
)
async def test_poll_maps_states(daemon, make_spawner, fields, expected):
    record = daemon.add("jupyter-alice", **fields)
    record["outcome"] = "stay"  # no state change on inspection
    spawner = make_spawner()
    spawner.load_state({"sandbox_id": record["id"]})
    assert await spawner.poll() == expected


async def test_poll_without_sandbox_or_after_it_is_gone_is_zero(daemon, make_spawner):
    spawner = make_spawner()
    assert await spawner.poll() == 0
    assert daemon.requests == []
    spawner.load_state({"sandbox_id": "0123456789abcdef"})
    assert await spawner.poll() == 0


async def test_poll_with_daemon_unreachable_is_none(socket_dir, make_spawner, caplog):
    spawner = make_spawner(socket_path=socket_dir + "/nobody-here.sock")
    spawner.load_state({"sandbox_id": "0123456789abcdef"})
    with caplog.at_level(logging.WARNING):
        assert await spawner.poll() is None
    assert "did not answer GET /v1/sandboxes/0123456789abcdef" in caplog.text


async def test_server_that_ended_on_its_own_is_explained_once_in_the_log(
    daemon, make_spawner, caplog
):
    record = daemon.add("jupyter-alice", state="exited", exit_code=137, oom_killed=True)
    spawner = make_spawner()
    spawner.load_state({"sandbox_id": record["id"]})
    with caplog.at_level(logging.WARNING):
        assert await spawner.poll() == 137
        assert await spawner.poll() == 137
    assert caplog.text.count("ended: exited (exit status 137, killed for want of memory") == 1
    assert "line 30" in caplog.text


# -- stop ------------------------------------------------------------------------------


async def test_stop_sends_grace_seconds_waits_and_keeps_the_record(daemon, make_spawner):
    daemon.stop_seconds = 0.3
    spawner = make_spawner(stop_grace_seconds=7)
    await spawner.start()
    sandbox_id = spawner.sandbox_id

    began = time.monotonic()
    await spawner.stop()
    assert time.monotonic() - began >= 0.3

    [stop] = daemon.sent("POST", f"/v1/sandboxes/{sandbox_id}/stop")
    assert stop.body == {"grace_seconds": 7}
    # The ended record and its log stay with the daemon, for the operator.
    assert daemon.sent("DELETE") == []
    assert daemon.sandboxes[sandbox_id]["state"] == "exited" and spawner.sandbox_id is None
    assert await spawner.poll() == 0

    before = len(daemon.requests)
    await spawner.stop()  # idempotent: nothing left to stop
    assert len(daemon.requests) == before


async def test_stop_now_has_no_grace_and_a_vanished_sandbox_is_fine(daemon, make_spawner):
    spawner = make_spawner()
    await spawner.start()
    await spawner.stop(now=True)
    assert daemon.sent("POST", "/v1/sandboxes/")[0].body == {"grace_seconds": 0}

    gone = make_spawner()
    gone.load_state({"sandbox_id": "0123456789abcdef"})
    await gone.stop()
    assert gone.sandbox_id is None


# -- state -----------------------------------------------------------------------------


async def test_state_round_trip_reattaches_after_a_hub_restart(daemon, make_spawner):
    first = make_spawner()
    await first.start()
    state = first.get_state()
    assert state == {"sandbox_id": first.sandbox_id}

    # The hub restarts: a new spawner object, state from the database.
    second = make_spawner()
    second.load_state(state)
    assert await second.poll() is None
    await second.stop()
    assert daemon.sent("POST", f"/v1/sandboxes/{state['sandbox_id']}/stop")

    second.load_state(state)
    second.clear_state()
    assert second.get_state() == {} and second.sandbox_id is None


# -- names and secrets -----------------------------------------------------------------


IDENTITY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def test_escape_name_is_valid_and_one_to_one():
    samples = [
        "alice",
        "john.doe",
        "john-doe",
        "john_doe",
        "John",
        "-x",
        "_x",
        "",
        "0",
        "0_2ex",
        ".x",
        "jdoe@example.com",
        "Émile",
        "名前",
        "a" * 63,
        "a" * 64,
        "a" * 300,
        "a" * 301,
        "0__2ex",
        "x" * 45 + "__" + "0" * 16,
    ]
    escaped = [escape_name(s, 63) for s in samples]
    assert all(IDENTITY.match(e) for e in escaped), escaped
    assert len(set(escaped)) == len(samples)
    assert escape_name("alice", 63) == "alice" and escape_name("john.doe", 63) == "john_2edoe"


def test_sandbox_names_of_different_servers_never_collide():
    assert sandbox_name("a", "b") != sandbox_name("a-b") != sandbox_name("a.b")
    assert sandbox_name("a", "b-c") != sandbox_name("a-b", "c")
    assert len(sandbox_name("x" * 500, "y" * 500)) <= 128
    assert re.match(r"^[a-z0-9._-]{1,128}$", sandbox_name("Ünïcode User", "My Server!"))


async def test_secrets_never_reach_the_logs(daemon, make_spawner, caplog):
    daemon.outcome = "fail"
    with caplog.at_level(logging.DEBUG):
        spawner = make_spawner()
        with pytest.raises(SandboxFailed) as raised:
            await spawner.start()
    assert API_TOKEN not in caplog.text
    assert API_TOKEN not in str(raised.value)


def test_registered_as_the_moat_spawner_entry_point():
    from jupyterhub.app import JupyterHub

    assert JupyterHub(spawner_class="moat").spawner_class is MoatSpawner


def test_example_config_loads_and_its_profiles_validate():
    import os
    from types import SimpleNamespace

    from traitlets.config import PyFileConfigLoader

    examples = os.path.join(os.path.dirname(__file__), "..", "examples")
    config = PyFileConfigLoader("jupyterhub_config.py", path=examples).load_config()
    assert config.JupyterHub.spawner_class == "moat"
    spawner = MoatSpawner(
        config=config, user=SimpleNamespace(name="bob", groups=[SimpleNamespace(name="research")])
    )
    assert set(spawner.profiles) == {"standard", "internet", "large"}
    assert asyncio.run(spawner.allowed_profile_names()) == ["standard", "internet", "large"]
