"""Fixtures: a fake moat daemon on a unix socket, and spawners wired to minimal hub objects.

The spawners get a real ``jupyterhub.objects.Hub`` (so ``get_env()`` and the hub API URL
are JupyterHub's own) and a stand-in user; no hub process, proxy or database is needed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from types import SimpleNamespace
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import pytest
from jupyterhub.objects import Hub

from moat_spawner import MoatSpawner

sys.path.insert(0, os.path.dirname(__file__))
from fake_daemon import FakeDaemon  # noqa: E402

API_TOKEN = "s3cret-api-token-for-tests"


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    path = tempfile.mkdtemp(prefix="moat-spawner-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def daemon(socket_dir: str) -> AsyncIterator[FakeDaemon]:
    fake = FakeDaemon(socket_path=os.path.join(socket_dir, "moat.sock"))
    await fake.start()
    yield fake
    await fake.close()


def make_user(name: str = "alice", groups: Sequence[str] = ()) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        escaped_name=name,
        url=f"/user/{name}/",
        groups=[SimpleNamespace(name=g) for g in groups],
    )


@pytest.fixture
def make_spawner(daemon: FakeDaemon) -> Callable[..., MoatSpawner]:
    """Build a MoatSpawner for a user (and named server) talking to the fake daemon."""

    def make(
        user: str = "alice",
        server: str = "",
        groups: Sequence[str] = (),
        hub_ip: str = "10.77.0.1",
        **traits: Any,
    ) -> MoatSpawner:
        traits.setdefault("socket_path", daemon.socket_path)
        return MoatSpawner(
            user=make_user(user, groups),
            hub=Hub(ip=hub_ip, port=8081, base_url="/hub/"),
            orm_spawner=SimpleNamespace(name=server, server=None, display_name=server),
            api_token=API_TOKEN,
            oauth_client_id=f"jupyterhub-user-{user}",
            **traits,
        )

    return make
