"""A small async client for the moat daemon's HTTP API (docs/api.md).

The daemon serves HTTP/1.1 + JSON on a unix socket; the host part of the URL is
ignored, so every request goes to ``http://moat``. The client is deliberately thin:
one method per endpoint, the daemon's JSON passed back as plain dicts, and errors
turned into two exception types so callers can tell "the daemon said no" (which is
final) from "the daemon could not be asked" (which may pass, e.g. during a daemon
restart, while the sandboxes themselves keep running).

Request bodies are never logged or put into exception messages: they carry the
workload's environment, which holds the server's API token.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Type
from urllib.parse import quote

import httpx

__all__ = ["MoatClient", "MoatError", "MoatAPIError", "MoatUnavailable"]

#: How much of a non-JSON error body is kept in an exception message.
_MAX_ERROR_TEXT = 500


class MoatError(Exception):
    """Base class of the errors raised by :class:`MoatClient`."""


class MoatUnavailable(MoatError):
    """The daemon could not be reached, or did not answer in time.

    Says nothing about the sandboxes: they run under supervisors of their own and
    outlive a daemon restart.
    """


class MoatAPIError(MoatError):
    """The daemon answered with an error status (4xx or 5xx).

    ``message`` is the daemon's ``error`` field: one line, in moat's words, naming the
    field at fault for a 400.
    """

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        super().__init__(f"moat daemon: {method} {path}: {status}: {message}")


class MoatClient:
    """One connection pool to the daemon; use as ``async with MoatClient(...) as moat``.

    A client is cheap (a unix socket, no TLS), so callers open one per operation
    rather than keep one alive for the life of the hub: nothing outlives the event
    loop that made it, and a daemon restart never leaves a stale pooled connection.
    """

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://moat",
            timeout=timeout,
            headers={"User-Agent": "moat-spawner"},
        )

    async def __aenter__(self) -> "MoatClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- endpoints -----------------------------------------------------------------

    async def health(self) -> Dict[str, Any]:
        """``GET /v1/health``: ``{"version": ..., "sandboxes": N}``."""
        return _json(await self._request("GET", "/v1/health"))

    async def create(self, body: Mapping[str, Any]) -> Dict[str, Any]:
        """``POST /v1/sandboxes``: ``{"id", "name", "state"}``; the start goes on in the
        background. A name still starting or running raises :class:`MoatAPIError` 409."""
        return _json(await self._request("POST", "/v1/sandboxes", json=dict(body)))

    async def list_sandboxes(
        self, labels: Optional[Mapping[str, str]] = None
    ) -> List[Dict[str, Any]]:
        """``GET /v1/sandboxes``, newest first, optionally filtered by labels (all must match)."""
        params = [("label", f"{key}={value}") for key, value in (labels or {}).items()]
        sandboxes = _json(await self._request("GET", "/v1/sandboxes", params=params))
        return list(sandboxes.get("sandboxes", []))

    async def inspect(self, ref: str) -> Dict[str, Any]:
        """``GET /v1/sandboxes/{id or name}``."""
        return _json(await self._request("GET", _sandbox_path(ref)))

    async def stop(self, ref: str, grace_seconds: int) -> Dict[str, Any]:
        """``POST /v1/sandboxes/{ref}/stop``: SIGTERM, SIGKILL after the grace period.

        The daemon answers only once the sandbox is gone and cleaned up, so the read
        timeout covers the grace period on top of the usual request timeout.
        """
        timeout = httpx.Timeout(self.timeout, read=self.timeout + grace_seconds)
        response = await self._request(
            "POST",
            _sandbox_path(ref, "stop"),
            json={"grace_seconds": grace_seconds},
            timeout=timeout,
        )
        return _json(response)

    async def delete(self, ref: str) -> None:
        """``DELETE /v1/sandboxes/{ref}``: forget an ended sandbox (409 while it runs)."""
        await self._request("DELETE", _sandbox_path(ref))

    async def logs(self, ref: str, tail: Optional[int] = None) -> str:
        """``GET /v1/sandboxes/{ref}/logs``: the workload's output, plus ``moat:`` lines."""
        params = {"tail": str(tail)} if tail is not None else None
        return (await self._request("GET", _sandbox_path(ref, "logs"), params=params)).text

    # -- plumbing ------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            # Connection refused, no such socket, permission denied, timeouts, a daemon
            # that hung up mid-answer: all mean "could not ask", not "the answer is no".
            detail = str(e) or type(e).__name__
            if isinstance(e, httpx.ConnectError):
                detail += " (is `moat daemon` running, and is this account in its socket's group?)"
            raise MoatUnavailable(
                f"moat daemon at {self.socket_path} did not answer {method} {path}: {detail}"
            ) from e
        if response.status_code >= 400:
            raise MoatAPIError(method, path, response.status_code, _error_text(response))
        return response


def _sandbox_path(ref: str, action: str = "") -> str:
    path = "/v1/sandboxes/" + quote(ref, safe="")
    return f"{path}/{action}" if action else path


def _json(response: httpx.Response) -> Dict[str, Any]:
    """The answer's JSON object; anything else is a daemon bug, reported as such."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise MoatAPIError(
            response.request.method,
            response.request.url.path,
            response.status_code,
            "the answer is not a JSON object",
        )
    return payload


def _error_text(response: httpx.Response) -> str:
    """The daemon's ``error`` field, or the start of whatever else it sent."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    text = response.text.strip()
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "…"
    return text or response.reason_phrase or "no error message"
