"""A stand-in for `moat daemon`, serving docs/api.md on a unix socket with aiohttp.

It creates no sandboxes: each record walks through the documented states as the
spawner inspects it, following ``outcome``, and every request is recorded so tests can
assert on what the spawner sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from aiohttp import web

NAME = re.compile(r"^[a-z0-9._-]{1,128}$")
LIVE = ("starting", "running", "stopping")


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, List[str]]
    body: Any


@dataclass
class FakeDaemon:
    socket_path: str
    #: What a new sandbox does: "run", "fail" (could not start), "exit" (workload died)
    #: or "stay" (keeps its state).
    outcome: str = "run"
    #: Inspections a sandbox spends in "starting" before the outcome (address from the 1st).
    start_polls: int = 2
    error: str = "profile: no such profile: gpu"
    log_lines: List[str] = field(default_factory=lambda: [f"line {i}" for i in range(1, 31)])
    #: When set, every create is refused with 400 and this error.
    refuse: Optional[str] = None
    #: Seconds a stop takes (the daemon answers only once the sandbox is gone).
    stop_seconds: float = 0.0
    requests: List[Request] = field(default_factory=list)
    sandboxes: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: Give every sandbox this address (for a test whose hub must reach a real server).
    fixed_address: Optional[str] = None
    _runner: Optional[web.AppRunner] = None
    _next_address: int = 6

    # -- control ---------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/health", self.health)
        app.router.add_post("/v1/sandboxes", self.create)
        app.router.add_get("/v1/sandboxes", self.list)
        app.router.add_get("/v1/sandboxes/{ref}", self.inspect)
        app.router.add_post("/v1/sandboxes/{ref}/stop", self.stop)
        app.router.add_delete("/v1/sandboxes/{ref}", self.delete)
        app.router.add_get("/v1/sandboxes/{ref}/logs", self.logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, self.socket_path).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add(
        self,
        name: str,
        state: str = "running",
        labels: Optional[Dict[str, str]] = None,
        **fields: Any,
    ) -> Dict[str, Any]:
        """Put a sandbox in the daemon's records, as if created earlier."""
        record = self._record(name, labels or {})
        record.update(state=state, **fields)
        if state == "running" and record["address"] is None:
            record["address"] = self._address()
        return record

    def sent(self, method: str, path_prefix: str = "") -> List[Request]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- endpoints -------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        await self._note(request)
        return web.json_response({"version": "0.1.0", "sandboxes": len(self.sandboxes)})

    async def create(self, request: web.Request) -> web.Response:
        body = await self._note(request)
        if not isinstance(body, dict):
            return _error(400, "malformed JSON")
        command = body.get("command")
        if not isinstance(command, list) or not command:
            return _error(400, "command: required, a non-empty list")
        if self.refuse:
            return _error(400, self.refuse)
        name = body.get("name") or secrets.token_hex(8)
        if not NAME.match(name):
            return _error(400, f"name: {name!r} is not a-z, 0-9, '-', '.', '_' (at most 128)")
        if any(s["name"] == name and s["state"] in LIVE for s in self.sandboxes.values()):
            return _error(409, f"a sandbox named {name} is already running")
        record = self._record(name, body.get("labels") or {})
        record["outcome"] = self.outcome
        return web.json_response(
            {"id": record["id"], "name": name, "state": record["state"]}, status=201
        )

    async def list(self, request: web.Request) -> web.Response:
        await self._note(request)
        wanted = [pair.split("=", 1) for pair in request.query.getall("label", [])]
        found = [
            _public(s)
            for s in reversed(list(self.sandboxes.values()))
            if all(s["labels"].get(k) == v for k, v in wanted)
        ]
        return web.json_response({"sandboxes": found})

    async def inspect(self, request: web.Request) -> web.Response:
        await self._note(request)
        record = self._find(request.match_info["ref"])
        if record is None:
            return _error(404, "no such sandbox")
        self._advance(record)
        return web.json_response(_public(record))

    async def stop(self, request: web.Request) -> web.Response:
        body = await self._note(request)
        record = self._find(request.match_info["ref"])
        if record is None:
            return _error(404, "no such sandbox")
        grace = (body or {}).get("grace_seconds", 10)
        if not isinstance(grace, int) or not 0 <= grace <= 600:
            return _error(400, "grace_seconds: expected 0 to 600")
        if record["state"] in LIVE:
            record["state"] = "stopping"
            await asyncio.sleep(self.stop_seconds)
            record.update(state="exited", exit_code=143, finished="2026-11-23T01:30:00Z")
        return web.json_response(_public(record))

    async def delete(self, request: web.Request) -> web.Response:
        await self._note(request)
        record = self._find(request.match_info["ref"])
        if record is None:
            return _error(404, "no such sandbox")
        if record["state"] in LIVE:
            return _error(409, "the sandbox is running: stop it first")
        del self.sandboxes[record["id"]]
        return web.json_response({})

    async def logs(self, request: web.Request) -> web.Response:
        await self._note(request)
        record = self._find(request.match_info["ref"])
        if record is None:
            return _error(404, "no such sandbox")
        lines = list(self.log_lines)
        if "tail" in request.query:
            lines = lines[-int(request.query["tail"]) :]
        return web.Response(text="".join(line + "\n" for line in lines))

    # -- internals -------------------------------------------------------------------

    async def _note(self, request: web.Request) -> Any:
        text = await request.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        query = {key: request.query.getall(key) for key in request.query.keys()}
        self.requests.append(Request(request.method, request.path, query, body))
        return body

    def _record(self, name: str, labels: Dict[str, str]) -> Dict[str, Any]:
        record = {
            "id": secrets.token_hex(8),
            "name": name,
            "state": "starting",
            "address": None,
            "host_address": None,
            "ports": [8888],
            "pid": 41213,
            "labels": dict(labels),
            "created": "2026-11-23T01:20:31.102Z",
            "started": None,
            "finished": None,
            "exit_code": None,
            "oom_killed": False,
            "error": None,
            "outcome": "run",
            "polls": 0,
        }
        self.sandboxes[record["id"]] = record
        return record

    def _address(self) -> str:
        if self.fixed_address:
            return self.fixed_address
        address = f"10.77.0.{self._next_address}"
        self._next_address += 4
        return address

    def _find(self, ref: str) -> Optional[Dict[str, Any]]:
        if ref in self.sandboxes:
            return self.sandboxes[ref]
        named = [s for s in self.sandboxes.values() if s["name"] == ref]
        live = [s for s in named if s["state"] in LIVE]
        return (live or named or [None])[-1]

    def _advance(self, record: Dict[str, Any]) -> None:
        if record["state"] != "starting":
            return
        record["polls"] += 1
        outcome = record["outcome"]
        if outcome == "stay":
            return
        if outcome == "fail":
            if record["polls"] >= self.start_polls:
                record.update(state="failed", error=self.error, exit_code=125)
            return
        if record["address"] is None:
            record["address"] = self._address()
            record["host_address"] = record["address"][:-1] + "5"
        if record["polls"] >= self.start_polls:
            if outcome == "exit":
                record.update(state="exited", exit_code=1, oom_killed=True)
            else:
                record.update(state="running", started="2026-11-23T01:20:31.161Z")


def _public(record: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("outcome", "polls")}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
