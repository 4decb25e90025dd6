"""MoatSpawner driven by a real (mock) JupyterHub: the hub's own spawn, wait and stop code.

Uses the pytest-jupyterhub plugin's MockHub (initialized, not started: no proxy is
needed). The fake daemon hands out 127.0.0.1, where a stub answers as a single-user
server would, so the hub's check that the server is up succeeds.
"""

from __future__ import annotations

import os
import socket
from typing import Any, AsyncIterator, Callable, Dict, Tuple

import pytest
from aiohttp import web
from jupyterhub import orm
from jupyterhub.tests.mocking import MockHub
from tornado.web import HTTPError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def server_stub() -> AsyncIterator[int]:
    """What the hub sees of a started jupyterhub-singleuser: `GET {url}api` answers."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"version": "2.0"}, headers={"X-JupyterHub-Version": "6"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


@pytest.fixture
async def hub_with_moat(
    daemon, server_stub, socket_dir, configured_mockhub_instance
) -> AsyncIterator[Callable[..., Any]]:
    daemon.fixed_address = "127.0.0.1"
    hubs = []

    async def make(**spawner_config: Any) -> Tuple[MockHub, Any]:
        config: Dict[str, Any] = {
            "socket_path": daemon.socket_path,
            "port": server_stub,
            # The mock hub listens on 127.0.0.1, which no sandbox could reach; point the
            # servers at a host-local address as a real deployment would.
            "hub_connect_url": "http://10.77.0.1:8081",
            "http_timeout": 5,
        }
        config.update(spawner_config)
        hub_config = {
            "spawner_class": "moat",
            # Not the working directory: the hub writes its cookie secret there.
            "cookie_secret_file": os.path.join(socket_dir, "cookie_secret"),
        }
        hub = configured_mockhub_instance({"JupyterHub": hub_config, "MoatSpawner": config})
        await hub.initialize()
        hubs.append(hub)
        user = hub.users[hub.db.query(orm.User).filter_by(name="user").one()]
        return hub, user

    yield make
    for hub in hubs:
        if os.path.exists(hub.pid_file):
            os.remove(hub.pid_file)
    MockHub.clear_instance()


async def test_hub_spawns_waits_polls_and_stops(daemon, hub_with_moat, server_stub):
    hub, user = await hub_with_moat()

    await user.spawn()

    spawner = user.spawner
    assert spawner.ready
    assert spawner.server.url.startswith(f"http://127.0.0.1:{server_stub}/")
    body = daemon.sent("POST", "/v1/sandboxes")[0].body
    assert body["network"]["allow_host"] == ["10.77.0.1:8081"]
    assert body["env"]["JUPYTERHUB_API_URL"].startswith("http://10.77.0.1:8081/")
    assert body["env"]["JUPYTERHUB_API_TOKEN"] == spawner.api_token
    # The hub saved the state that lets it find the sandbox after a restart.
    assert spawner.orm_spawner.state == {"sandbox_id": spawner.sandbox_id}
    assert await spawner.poll() is None

    sandbox_id = spawner.sandbox_id
    await user.stop()
    assert daemon.sent("POST", f"/v1/sandboxes/{sandbox_id}/stop")
    assert daemon.sandboxes[sandbox_id]["state"] == "exited", "the record stays, ended"
    assert spawner.orm_spawner.state == {}


async def test_hub_refuses_a_profile_the_user_may_not_choose(daemon, hub_with_moat):
    hub, user = await hub_with_moat(
        profiles={"small": {}, "big": {"mem_limit": "64G"}}, allowed_profiles=["small"]
    )
    with pytest.raises(HTTPError) as raised:
        await user.spawn(options={"profile": "big"})
    assert raised.value.status_code == 400
    assert daemon.requests == []
