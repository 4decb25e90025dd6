"""Run code in a Jupyter kernel of a user's server, through the public proxy.

The same path a browser takes: ``POST /user/NAME/api/kernels`` on the proxy, then an
``execute_request`` on the kernel's websocket (``/api/kernels/ID/channels``), reading
``stream`` and ``error`` messages until the kernel says ``idle``. Authentication is a hub
API token with ``access:servers`` in the ``Authorization`` header, which the
single-user server checks with the hub (from inside its sandbox).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Dict, List, Optional

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect


class KernelError(AssertionError):
    """The code could not be run, or raised: the message says where and what."""


class Kernel:
    """One kernel of ``user``'s server, reached through the proxy at ``base``."""

    def __init__(self, base: str, user: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.user = user
        self.headers = {"Authorization": f"token {token}"}
        self.kernel_id: Optional[str] = None
        self._ws: Any = None
        self._session = uuid.uuid4().hex

    @property
    def api(self) -> str:
        return f"{self.base}/user/{self.user}/api"

    async def start(self, timeout: float = 60) -> "Kernel":
        http = AsyncHTTPClient()
        try:
            response = await http.fetch(
                f"{self.api}/kernels",
                method="POST",
                body="{}",
                headers=self.headers,
                request_timeout=timeout,
            )
        except HTTPClientError as e:
            body = e.response.body.decode(errors="replace")[:500] if e.response else ""
            raise KernelError(
                f"expected {self.user}'s server to start a kernel (POST {self.api}/kernels), "
                f"got HTTP {e.code}: {body}"
            ) from None
        self.kernel_id = json.loads(response.body)["id"]
        ws_url = f"{self.api}/kernels/{self.kernel_id}/channels".replace("http", "ws", 1)
        self._ws = await asyncio.wait_for(
            websocket_connect(HTTPRequest(ws_url, headers=self.headers)), timeout
        )
        return self

    async def execute(self, code: str, timeout: float = 60) -> str:
        """Runs ``code``; its stdout and stderr. A Python exception raises KernelError."""
        assert self._ws is not None, "start() first"
        msg_id = await self.send(code)
        out: List[str] = []
        errors: List[str] = []

        async def collect() -> None:
            while True:
                raw = await self._ws.read_message()
                if raw is None:
                    raise KernelError(
                        f"the websocket of {self.user}'s kernel closed before the code "
                        f"finished; output so far: {''.join(out)!r}"
                    )
                message: Dict[str, Any] = json.loads(raw)
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = message["msg_type"]
                if kind == "stream":
                    out.append(message["content"]["text"])
                elif kind == "error":
                    content = message["content"]
                    errors.append(
                        f"{content['ename']}: {content['evalue']}\n"
                        + "\n".join(content.get("traceback", []))
                    )
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    return

        try:
            await asyncio.wait_for(collect(), timeout)
        except asyncio.TimeoutError:
            raise KernelError(
                f"expected the code to finish in {self.user}'s kernel within {timeout} s; "
                f"output so far: {''.join(out)!r}"
            ) from None
        if errors:
            raise KernelError(
                f"expected the code to run in {self.user}'s kernel without error, it raised "
                f"{errors[0]}\noutput: {''.join(out)!r}"
            )
        return "".join(out)

    async def send(self, code: str) -> str:
        """Sends an execute_request without waiting for it (e.g. code that may kill the
        kernel); its message id."""
        assert self._ws is not None, "start() first"
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "username": self.user,
                "session": self._session,
                "msg_type": "execute_request",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "channel": "shell",
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
        }
        await self._ws.write_message(json.dumps(request))
        return msg_id

    async def close(self, delete: bool = True) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if delete and self.kernel_id:
            try:
                await AsyncHTTPClient().fetch(
                    f"{self.api}/kernels/{self.kernel_id}",
                    method="DELETE",
                    headers=self.headers,
                    request_timeout=30,
                )
            except Exception:
                pass  # best effort: the server may be gone already
            self.kernel_id = None


async def run_code(base: str, user: str, token: str, code: str, timeout: float = 60) -> str:
    """Starts a kernel in ``user``'s server, runs ``code``, deletes the kernel; the output."""
    kernel = Kernel(base, user, token)
    await kernel.start(timeout)
    try:
        return await kernel.execute(code, timeout)
    finally:
        await kernel.close()


async def run_json(base: str, user: str, token: str, code: str, timeout: float = 60) -> Any:
    """Like run_code, for code whose last line of output is a JSON document."""
    output = await run_code(base, user, token, code, timeout)
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise KernelError(f"expected JSON output from {user}'s kernel, got nothing")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise KernelError(
            f"expected JSON as the last line of output from {user}'s kernel, got {output!r}"
        ) from None
