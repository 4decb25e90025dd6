"""MoatSpawner: each JupyterHub single-user server in a moat sandbox.

The spawner asks the moat daemon (docs/api.md) for one sandbox per server, in moat's
``isolated`` (or ``egress``) network mode: the sandbox gets an address of its own, may
reach exactly one host endpoint (the hub API) and is reachable from the host only on the
server's port. Sandboxes run under supervisors of their own, so neither a hub restart nor
a daemon restart stops them; the spawner keeps the sandbox id in the hub's database to
find them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import ipaddress
import posixpath
import socket
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from jupyterhub.spawner import Spawner
from jupyterhub.traitlets import ByteSpecification, Callable
from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Dict as DictTrait
from traitlets import Enum, Float, Integer, TraitError, Unicode, Union, default, validate
from traitlets import List as ListTrait

from .client import MoatAPIError, MoatClient, MoatError, MoatUnavailable

__all__ = ["MoatSpawner", "SandboxFailed", "escape_name", "sandbox_name"]

USERNAME_LABEL = "hub.jupyter.org/username"
SERVERNAME_LABEL = "hub.jupyter.org/servername"

#: States in which the workload may still be there (docs/api.md).
LIVE_STATES = frozenset({"starting", "running", "stopping"})
#: States in which it is gone for good.
ENDED_STATES = frozenset({"exited", "failed"})

#: Keys an entry of ``MoatSpawner.profiles`` may set.
PROFILE_KEYS = frozenset(
    {
        "profile",
        "mem_limit",
        "cpu_limit",
        "network_mode",
        "egress",
        "bandwidth",
        "policies",
        "extra_labels",
        "display_name",
    }
)

#: Lines of the sandbox's log quoted when it fails.
LOG_TAIL_LINES = 20
#: Polling while a sandbox starts: moat usually needs milliseconds, so start fast.
_FIRST_POLL_DELAY = 0.05
_MAX_POLL_DELAY = 1.0


class SandboxFailed(Exception):
    """A sandbox did not come up, or moat refused it.

    The message is what the user sees on the spawn page ("Spawn failed: ...") and what
    the hub logs, so it says what happened in moat's own words.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


def _refusal(status: int, message: str) -> web.HTTPError:
    """An HTTP error whose message JupyterHub shows as is on the spawn page."""
    error = web.HTTPError(status, "%s", message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


# -- names -------------------------------------------------------------------------


def escape_name(raw: str, max_length: int) -> str:
    """Map any text to ``[a-z0-9_-]``, starting with a letter or digit, one to one.

    The result names sandboxes and, above all, moat identities: an identity owns a host
    id range and with it a home, so two users must never get the same one. Merely
    replacing odd characters would let ``john.doe`` and ``john-doe`` share files; this
    escaping is reversible instead: ``a-z``, ``0-9`` and ``-`` stay, every other byte of
    the UTF-8 text becomes ``_`` and two hex digits (``john.doe`` -> ``john_2edoe``).
    A result that would start with ``_`` or ``-`` (or be empty) gets the prefix ``0_``;
    text longer than ``max_length`` keeps its start and ends in ``__`` and 16 hex digits
    of its SHA-256. Neither form can be produced by plain escaping (there ``_`` is
    always followed by two hex digits), so they never collide with it.
    """
    out = []
    for byte in raw.encode("utf-8"):
        char = chr(byte)
        if "a" <= char <= "z" or "0" <= char <= "9" or char == "-":
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    escaped = "".join(out)
    if not escaped or not escaped[0].isalnum():
        escaped = "0_" + escaped
    if len(escaped) > max_length:
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
        escaped = escaped[: max_length - 18] + "__" + digest
    return escaped


def sandbox_name(username: str, servername: str = "") -> str:
    """``jupyter-<user>`` or ``jupyter-<user>.<server>``, escaped, at most 128 characters.

    ``.`` never occurs in an escaped part, so a user ``a`` with a server ``b`` can never
    take the name of a user ``a-b`` (or ``a.b``) and make that user's start fail.
    """
    name = "jupyter-" + escape_name(username, 60)
    if servername:
        name += "." + escape_name(servername, 59)
    return name


# -- what one start asks for ---------------------------------------------------------


@dataclass
class _Settings:
    """The spawner's traits with the chosen admin profile's overrides applied.

    Built afresh for every start rather than written back onto the spawner, so one
    spawn's profile never leaks into the next.
    """

    moat_profile: str
    mem_limit: Optional[int]
    cpu_limit: Optional[float]
    network_mode: str
    egress: List[str]
    bandwidth: str
    policies: List[str]
    labels: Dict[str, str] = field(default_factory=dict)


async def _render_options_form(spawner: "MoatSpawner") -> str:
    return await spawner.profile_options_form()


async def _check_user_options(spawner: "MoatSpawner", user_options: Dict[str, Any]) -> None:
    # JupyterHub >= 5.3 runs this hook before pre_spawn_hook and start(), so a bad
    # choice is refused as early as possible; start() checks again for older hubs.
    await spawner.choose_profile(user_options)


class MoatSpawner(Spawner):
    """Spawn each single-user server in a moat sandbox, through the moat daemon.

    Select with ``c.JupyterHub.spawner_class = "moat"``. The hub must be reachable from
    the sandboxes: bind it to a host-local address outside 127.0.0.0/8, e.g.
    ``c.JupyterHub.hub_ip = "10.77.0.1"`` (see the package README).
    """

    socket_path = Unicode(
        "/run/moat/moat.sock",
        help="""The moat daemon's unix socket.

        Whoever can open it can start code on the machine: run the daemon with
        `--group` set to the hub's group (the socket becomes 0660) rather than opening
        it wider.
        """,
    ).tag(config=True)

    profile = Unicode(
        "untrusted",
        help="""The moat profile of the sandboxes: a name moat knows or the path of a
        profile file on the daemon's host. It sets the walls and the default limits.""",
    ).tag(config=True)

    home_root = Unicode(
        "/srv/homes",
        help="""Where the users' homes live on the host: each server gets
        `<home_root>/<identity>` (moat creates it, 0700, owned by the identity), so
        files survive from one server to the next. The directory must be owned by root,
        not writable by others, and searchable (0755); moat refuses homes inside system
        trees, /var/lib/moat included. Empty: no persistent home (moat gives the sandbox
        a size-capped throwaway one).""",
    ).tag(config=True)

    identity_template = Unicode(
        "{username}",
        help="""The moat identity of a user's sandboxes, formatted with `{username}`.

        An identity is a stable host id range: it is what owns the user's home, so it
        must stay the same from one server to the next and differ between users. The
        result is escaped into moat's identity alphabet one to one (`alice` stays
        `alice`, `john.doe` becomes `john_2edoe`), and it also names the home directory.
        """,
    ).tag(config=True)

    port = Integer(
        8888,
        help="""The port the single-user server listens on inside its sandbox (on
        0.0.0.0), published to the host. Every sandbox has an address of its own, so
        all servers can use the same port.""",
    ).tag(config=True)

    network_mode = Enum(
        ["isolated", "egress"],
        default_value="isolated",
        help="""`isolated`: the sandbox reaches the hub API and nothing else.
        `egress`: also outbound traffic matching `egress` (private, loopback,
        link-local and cloud metadata ranges stay closed whatever the list says).""",
    ).tag(config=True)

    egress = ListTrait(
        Unicode(),
        help="""Outbound allowlist in `egress` mode, entries like `0.0.0.0/0:443/tcp`
        (`CIDR[:PORT[-PORT]][/tcp|/udp]`). Empty: the moat profile's list (TCP 80 and
        443 for `untrusted`). Not sent in `isolated` mode.""",
    ).tag(config=True)

    bandwidth = Unicode(
        "",
        help="""Bandwidth limit in each direction, e.g. `100mbit`. Empty: the moat
        profile's (unlimited for `untrusted`).""",
    ).tag(config=True)

    policies = ListTrait(
        Unicode(),
        help="""Policy files (KubeArmor-style YAML, see moat's docs/policy.md) on the
        daemon's host, applied to every sandbox.""",
    ).tag(config=True)

    extra_labels = DictTrait(
        value_trait=Unicode(),
        key_trait=Unicode(),
        help="""Labels added to every sandbox, next to `hub.jupyter.org/username` and
        `hub.jupyter.org/servername`. Policies select sandboxes by label.""",
    ).tag(config=True)

    stop_grace_seconds = Integer(
        10,
        min=0,
        max=600,
        help="""On stop, how long the server has between SIGTERM and SIGKILL to save
        and shut down its kernels.""",
    ).tag(config=True)

    request_timeout = Float(
        30.0,
        help="""Seconds to wait for the daemon to answer one request (a stop waits the
        grace period on top).""",
    ).tag(config=True)

    profiles = DictTrait(
        help="""Profiles a user may choose from when starting a server, by name.

        Each is a dict of overrides of this spawner's settings, with keys among
        `profile` (the moat profile), `mem_limit`, `cpu_limit`, `network_mode`,
        `egress`, `bandwidth`, `policies`, `extra_labels` (merged into
        `extra_labels`) and `display_name` (shown in the form). An unknown key is an
        error at hub start, so a typo never silently weakens a sandbox. Which of them
        a user may pick is `allowed_profiles`; without a choice, a user gets the first
        allowed one, in the order given here. Empty (the default): no choice, and
        `user_options` are ignored.
        """,
    ).tag(config=True)

    allowed_profiles = Union(
        [ListTrait(Unicode()), Callable()],
        default_value=None,
        allow_none=True,
        help="""The names in `profiles` a user may choose: a list, or a callable
        `(spawner) -> list of names` (which may be async), e.g. to decide by
        `spawner.user.groups`. None (the default): every profile. A choice outside the
        list is refused before anything is created.""",
    ).tag(config=True)

    sandbox_id = Unicode(
        None,
        allow_none=True,
        help="The id of this server's sandbox (kept in the hub's database).",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Steps of the current start, for progress(); see _reset_progress().
        self._progress_events: List[Dict[str, Any]] = []
        self._progress_done = False
        self._progress_event: Optional[asyncio.Event] = None
        # The sandbox whose end was already explained in the log.
        self._reported_end: Optional[str] = None

    # -- configuration checks ----------------------------------------------------------

    @validate("profiles")
    def _validate_profiles(self, proposal: Any) -> Dict[str, Dict[str, Any]]:
        checked: Dict[str, Dict[str, Any]] = {}
        for name, overrides in proposal["value"].items():
            where = f"MoatSpawner.profiles[{name!r}]"
            if not isinstance(name, str) or not name:
                raise TraitError(f"{where}: profile names must be non-empty strings")
            if not isinstance(overrides, dict):
                raise TraitError(f"{where}: expected a dict of overrides")
            unknown = sorted(set(overrides) - PROFILE_KEYS)
            if unknown:
                raise TraitError(
                    f"{where}: unknown key(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(PROFILE_KEYS))}"
                )
            entry = dict(overrides)
            if entry.get("mem_limit") is not None:
                try:
                    entry["mem_limit"] = ByteSpecification().validate(self, entry["mem_limit"])
                except TraitError as e:
                    raise TraitError(f"{where}: mem_limit: {e}") from None
            if entry.get("cpu_limit") is not None:
                try:
                    entry["cpu_limit"] = float(entry["cpu_limit"])
                except (TypeError, ValueError):
                    entry["cpu_limit"] = -1.0
                if entry["cpu_limit"] <= 0:
                    raise TraitError(f"{where}: cpu_limit must be a positive number of CPUs")
            if entry.get("network_mode", "isolated") not in ("isolated", "egress"):
                raise TraitError(f"{where}: network_mode must be 'isolated' or 'egress'")
            for key in ("egress", "policies"):
                if key in entry and not _is_str_list(entry[key]):
                    raise TraitError(f"{where}: {key} must be a list of strings")
            for key in ("profile", "bandwidth", "display_name"):
                if key in entry and not isinstance(entry[key], str):
                    raise TraitError(f"{where}: {key} must be a string")
            labels = entry.get("extra_labels", {})
            if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                raise TraitError(f"{where}: extra_labels must map strings to strings")
            checked[name] = entry
        return checked

    @validate("home_root")
    def _validate_home_root(self, proposal: Any) -> str:
        value = proposal["value"]
        if value and not value.startswith("/"):
            raise TraitError(f"MoatSpawner.home_root {value!r}: must be an absolute path")
        return value

    # -- profiles and user_options -----------------------------------------------------

    @default("options_form")
    def _default_options_form(self) -> Any:
        # Without profiles, no form at all (the hub's pages then never offer one).
        return _render_options_form if self.profiles else ""

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return self._options_from_form_data

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _check_user_options

    async def allowed_profile_names(self) -> List[str]:
        """The profiles this user may choose, in the order of ``profiles``."""
        allowed = self.allowed_profiles
        if allowed is None:
            return list(self.profiles)
        if callable(allowed):
            allowed = await maybe_future(allowed(self))
        if isinstance(allowed, str) or not _is_str_list(list(allowed or [])):
            raise TypeError(
                f"MoatSpawner.allowed_profiles returned {allowed!r}; expected a list of names"
            )
        wanted = set(allowed or [])
        unknown = wanted - set(self.profiles)
        if unknown:
            self.log.warning(
                "allowed_profiles for %s names profiles that are not configured: %s",
                self._log_name,
                ", ".join(sorted(unknown)),
            )
        return [name for name in self.profiles if name in wanted]

    async def profile_options_form(self) -> str:
        """A select of the allowed profiles, or nothing (spawn at once) for fewer than two."""
        if not self.profiles:
            return ""
        names = await self.allowed_profile_names()
        if len(names) < 2:
            return ""
        previous = (self.user_options or {}).get("profile")
        options = []
        for name in names:
            label = self.profiles[name].get("display_name") or name
            selected = " selected" if name == previous else ""
            options.append(
                f'<option value="{html.escape(name)}"{selected}>{html.escape(label)}</option>'
            )
        return (
            '<div class="form-group">\n'
            '<label for="moat-profile">Server profile</label>\n'
            '<select class="form-control" name="profile" id="moat-profile">\n'
            + "\n".join(options)
            + "\n</select>\n</div>"
        )

    def _options_from_form_data(self, form_data: Dict[str, Any]) -> Dict[str, Any]:
        """Keep only the profile choice; other form fields pass through untouched when no
        profiles are configured (for an admin's own ``options_form``)."""
        if not self.profiles:
            return form_data
        value = form_data.get("profile")
        if isinstance(value, list):
            value = value[0] if value else None
        return {"profile": value} if value else {}

    async def choose_profile(self, user_options: Any) -> Optional[str]:
        """The profile this start uses, or None when no profiles are configured.

        ``user_options`` come from the user (form or REST API), so the choice is checked
        against ``allowed_profiles``; a refusal raises HTTP 400 (or 403 when this user may
        choose nothing) before anything is created.
        """
        if not self.profiles:
            return None
        allowed = await self.allowed_profile_names()
        requested = user_options.get("profile") if isinstance(user_options, dict) else None
        if requested is None or requested == "":
            if not allowed:
                raise _refusal(
                    403,
                    f"No server profile is available to {self.user.name}: ask an administrator.",
                )
            return allowed[0]
        if not isinstance(requested, str) or requested not in allowed:
            raise _refusal(
                400,
                f"Profile {_short_repr(requested)} is not available to {self.user.name}; "
                f"choose one of: {', '.join(allowed) or '(none)'}.",
            )
        return requested

    def _settings(self, choice: Optional[str]) -> _Settings:
        settings = _Settings(
            moat_profile=self.profile,
            mem_limit=self.mem_limit or None,
            cpu_limit=self.cpu_limit or None,
            network_mode=self.network_mode,
            egress=list(self.egress),
            bandwidth=self.bandwidth,
            policies=list(self.policies),
            labels=dict(self.extra_labels),
        )
        if choice is None:
            return settings
        overrides = self.profiles[choice]
        settings.moat_profile = overrides.get("profile", settings.moat_profile)
        settings.mem_limit = overrides.get("mem_limit", settings.mem_limit)
        settings.cpu_limit = overrides.get("cpu_limit", settings.cpu_limit)
        settings.network_mode = overrides.get("network_mode", settings.network_mode)
        settings.egress = list(overrides.get("egress", settings.egress))
        settings.bandwidth = overrides.get("bandwidth", settings.bandwidth)
        settings.policies = list(overrides.get("policies", settings.policies))
        settings.labels.update(overrides.get("extra_labels", {}))
        return settings

    # -- the request ---------------------------------------------------------------------

    def identity(self) -> str:
        """This user's moat identity (also the name of their home directory)."""
        try:
            raw = self.identity_template.format(username=self.user.name)
        except (KeyError, IndexError, ValueError) as e:
            raise SandboxFailed(
                f"MoatSpawner.identity_template {self.identity_template!r} is invalid: {e!r}"
            ) from None
        return escape_name(raw, 63)

    async def build_request(self, settings: _Settings) -> Dict[str, Any]:
        """The body of ``POST /v1/sandboxes`` for this server (holds the API token)."""
        # Inside its sandbox the server must listen on the sandbox's own address, and
        # get_env() tells jupyterhub-singleuser where to listen (JUPYTERHUB_SERVICE_URL).
        self.ip = "0.0.0.0"
        if not self.port:
            self.port = 8888
        command = list(self.cmd) + list(self.get_args())
        env = {key: str(value) for key, value in self.get_env().items() if value is not None}
        # get_env() reports the spawner's own limits; report the profile's instead.
        if settings.mem_limit:
            env["MEM_LIMIT"] = str(settings.mem_limit)
        if settings.cpu_limit:
            env["CPU_LIMIT"] = str(settings.cpu_limit)
        identity = self.identity()

        limits: Dict[str, Any] = {}
        if settings.mem_limit:
            limits["memory"] = str(int(settings.mem_limit))
        if settings.cpu_limit:
            limits["cpus"] = float(settings.cpu_limit)
        network: Dict[str, Any] = {
            "mode": settings.network_mode,
            "allow_host": [await self.hub_api_endpoint(env["JUPYTERHUB_API_URL"])],
            "publish": [self.port],
        }
        if settings.network_mode == "egress" and settings.egress:
            network["egress"] = settings.egress
        if settings.bandwidth:
            network["bandwidth"] = settings.bandwidth
        labels = dict(settings.labels)
        labels[USERNAME_LABEL] = self.user.name
        labels[SERVERNAME_LABEL] = self.name or ""

        body: Dict[str, Any] = {
            "name": sandbox_name(self.user.name, self.name or ""),
            "command": command,
            "env": env,
            "profile": settings.moat_profile,
            "identity": identity,
            "network": network,
            "labels": labels,
        }
        if self.home_root:
            body["home"] = posixpath.join(self.home_root, identity)
        if limits:
            body["limits"] = limits
        if settings.policies:
            body["policies"] = settings.policies
        return body

    async def hub_api_endpoint(self, api_url: str) -> str:
        """``IPV4:PORT`` of the hub API the server will call: the one host endpoint its
        sandbox may reach (moat's ``allow_host``)."""
        parsed = urlparse(api_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SandboxFailed(
                f"The hub API URL {api_url} is not http(s)://HOST:PORT; moat sandboxes "
                "reach the hub over TCP (see the moat-spawner README)"
            )
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            address = ipaddress.ip_address(parsed.hostname)
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    parsed.hostname, port, family=socket.AF_INET, type=socket.SOCK_STREAM
                )
            except OSError as e:
                raise SandboxFailed(
                    f"Cannot resolve the hub API host {parsed.hostname!r} of {api_url}: {e}"
                ) from None
            address = ipaddress.ip_address(infos[0][4][0])
        if address.version != 4:
            raise SandboxFailed(
                f"The hub API is at {address} ({api_url}), but sandboxes have no IPv6: "
                "bind the hub API to a host-local IPv4 address, e.g. "
                "c.JupyterHub.hub_ip = '10.77.0.1' (see the moat-spawner README)."
            )
        if address.is_loopback or address.is_unspecified:
            raise SandboxFailed(
                f"The hub API is at {address} ({api_url}), which a sandbox cannot reach: "
                "inside a sandbox, loopback is the sandbox's own. Bind the hub API to a "
                "host-local IPv4 address outside 127.0.0.0/8, e.g. "
                "c.JupyterHub.hub_ip = '10.77.0.1' (see the moat-spawner README)."
            )
        return f"{address}:{port}"

    # -- lifecycle -----------------------------------------------------------------------

    def _client(self) -> MoatClient:
        return MoatClient(self.socket_path, timeout=self.request_timeout)

    async def start(self) -> Tuple[str, int]:
        """Create the sandbox and return ``(address, port)`` once it runs.

        Nothing is created when the profile choice or the configuration is refused.
        """
        self._reset_progress()
        try:
            choice = await self.choose_profile(self.user_options)
            settings = self._settings(choice)
            body = await self.build_request(settings)
            name = body["name"]
            self.log.info(
                "Starting sandbox %s for %s: moat profile %s%s, network %s, limits %s",
                name,
                self._log_name,
                settings.moat_profile,
                f" (profile {choice})" if choice else "",
                settings.network_mode,
                body.get("limits", "of the moat profile"),
            )
            try:
                async with self._client() as moat:
                    self._emit(10, f"Requesting sandbox {name} from moat")
                    created = await self._create(moat, body)
                    self.sandbox_id = str(created["id"])
                    address = await self._wait_running(moat, name)
            except MoatError as e:
                self.log.error("moat could not start %s's server: %s", self._log_name, e)
                raise SandboxFailed(f"moat could not start the server: {e}") from None
        finally:
            self._finish_progress()
        self.log.info(
            "Sandbox %s (%s) for %s runs at %s:%s",
            name,
            self.sandbox_id,
            self._log_name,
            address,
            self.port,
        )
        return address, self.port

    async def _create(self, moat: MoatClient, body: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return await moat.create(body)
        except MoatAPIError as e:
            if e.status == 400:
                raise SandboxFailed(f"moat refused the sandbox: {e.message}") from None
            if e.status != 409:
                raise
        # The name is taken: a sandbox of this server that the hub lost track of (a
        # crash between create and saving the state). It was started with an API token
        # the hub has since revoked, so it could not serve; replace it.
        await self._replace_leftover(moat, body["name"])
        try:
            return await moat.create(body)
        except MoatAPIError as e:
            if e.status in (400, 409):
                raise SandboxFailed(f"moat refused the sandbox: {e.message}") from None
            raise

    async def _replace_leftover(self, moat: MoatClient, name: str) -> None:
        mine = {USERNAME_LABEL: self.user.name, SERVERNAME_LABEL: self.name or ""}
        for sandbox in await moat.list_sandboxes():
            if sandbox.get("name") != name or sandbox.get("state") not in LIVE_STATES:
                continue
            labels = sandbox.get("labels") or {}
            if any(labels.get(key) != value for key, value in mine.items()):
                raise SandboxFailed(
                    f"A sandbox named {name} (id {sandbox.get('id')}) is running, and this "
                    "hub did not start it (its labels differ); an administrator must "
                    "stop it first"
                )
            self.log.warning(
                "Sandbox %s (%s) of %s is still running from a start the hub lost track "
                "of; its credentials are revoked, so it is stopped and replaced",
                name,
                sandbox["id"],
                self._log_name,
            )
            self._emit(15, f"Stopping a leftover sandbox {name} of this server")
            await moat.stop(sandbox["id"], self.stop_grace_seconds)
            await self._forget(moat, sandbox["id"])

    async def _wait_running(self, moat: MoatClient, name: str) -> str:
        """Poll the sandbox until it runs; its address, or SandboxFailed with its story."""
        assert self.sandbox_id is not None
        delay = _FIRST_POLL_DELAY
        said_starting = said_address = warned_unavailable = False
        while True:
            try:
                info = await moat.inspect(self.sandbox_id)
            except MoatUnavailable as e:
                # e.g. the daemon restarts: the sandbox starts on under its supervisor,
                # so keep asking until the hub's start_timeout says enough.
                if not warned_unavailable:
                    self.log.warning("Waiting for %s: %s", name, e)
                    warned_unavailable = True
                await asyncio.sleep(_MAX_POLL_DELAY)
                continue
            except MoatAPIError as e:
                if e.status == 404:
                    raise SandboxFailed(f"Sandbox {name} disappeared while starting") from None
                raise
            state = info.get("state")
            address = info.get("address")
            if state in ("starting", "running") and not said_starting:
                self._emit(30, f"Sandbox {name} is starting")
                said_starting = True
            if address and not said_address:
                self._emit(60, f"Sandbox {name} has address {address}")
                said_address = True
            if state == "running":
                if not address:
                    raise SandboxFailed(f"Sandbox {name} runs but has no network address")
                self._emit(90, f"Sandbox {name} is running; waiting for the server to answer")
                return str(address)
            if state in ENDED_STATES or state == "stopping":
                message = await self._failure_message(moat, info, name)
                self.log.error("Sandbox %s of %s did not start: %s", name, self._log_name, message)
                self._reported_end = self.sandbox_id  # poll() need not tell it again
                raise SandboxFailed(message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_DELAY)

    async def _failure_message(self, moat: MoatClient, info: Dict[str, Any], name: str) -> str:
        state = info.get("state")
        error = info.get("error")
        if state == "failed":
            message = f"Sandbox {name} failed to start: {error or 'moat gave no reason'}"
        elif state == "stopping":
            message = f"Sandbox {name} was stopped while starting"
        else:
            message = f"Sandbox {name} exited while starting{_exit_story(info)}"
            if error:
                message += f": {error}"
        tail = await self._log_tail(moat, str(info.get("id") or self.sandbox_id))
        if tail:
            message += f"\nLast lines of its log:\n{tail}"
        return message

    async def _log_tail(self, moat: MoatClient, ref: str) -> str:
        try:
            return (await moat.logs(ref, tail=LOG_TAIL_LINES)).rstrip("\n")
        except MoatError as e:
            self.log.warning("Could not read the log of sandbox %s: %s", ref, e)
            return ""

    async def poll(self) -> Optional[int]:
        """None while the sandbox may be running; its exit status once it ended.

        An unreachable daemon is not evidence of death: sandboxes outlive daemon
        restarts, so that answers None (and logs a warning) rather than report the
        server dead and make the hub drop a working server.
        """
        if not self.sandbox_id:
            return 0
        try:
            async with self._client() as moat:
                info = await moat.inspect(self.sandbox_id)
                state = info.get("state")
                if state in ENDED_STATES:
                    await self._report_end(moat, info)
        except MoatUnavailable as e:
            self.log.warning("Cannot check %s's server: %s", self._log_name, e)
            return None
        except MoatAPIError as e:
            if e.status == 404:
                return 0
            self.log.warning("Cannot check %s's server: %s", self._log_name, e)
            return None
        if state in ENDED_STATES:
            exit_code = info.get("exit_code")
            if isinstance(exit_code, int):
                return exit_code
            return 1 if state == "failed" else 0
        if state not in LIVE_STATES:
            self.log.warning(
                "Sandbox %s of %s is in unknown state %r; taking it as running",
                self.sandbox_id,
                self._log_name,
                state,
            )
        return None

    async def _report_end(self, moat: MoatClient, info: Dict[str, Any]) -> None:
        """Log, once, why a server ended on its own: the hub only says it stopped."""
        if self._reported_end == self.sandbox_id:
            return
        self._reported_end = self.sandbox_id
        message = f"{info.get('state')}{_exit_story(info)}"
        if info.get("error"):
            message += f": {info['error']}"
        tail = await self._log_tail(moat, str(self.sandbox_id))
        self.log.warning(
            "Sandbox %s (%s) of %s ended: %s%s",
            info.get("name"),
            self.sandbox_id,
            self._log_name,
            message,
            f"\nLast lines of its log:\n{tail}" if tail else "",
        )

    async def stop(self, now: bool = False) -> None:
        """Stop the sandbox (SIGTERM, SIGKILL after the grace period).

        Returns once the sandbox is gone; stopping what is already gone is a no-op. The
        daemon keeps the ended sandbox's record and log (for its `--keep-ended` time), so
        an operator can still read how the server ended.
        """
        sandbox_id = self.sandbox_id
        if not sandbox_id:
            return
        grace = 0 if now else self.stop_grace_seconds
        async with self._client() as moat:
            try:
                final = await moat.stop(sandbox_id, grace)
            except MoatAPIError as e:
                if e.status != 404:
                    raise
                self.log.info("Sandbox %s of %s was already gone", sandbox_id, self._log_name)
            else:
                self.log.info(
                    "Stopped sandbox %s (%s) of %s: %s%s",
                    final.get("name"),
                    sandbox_id,
                    self._log_name,
                    final.get("state"),
                    _exit_story(final),
                )
        self.sandbox_id = None

    async def _forget(self, moat: MoatClient, ref: str) -> None:
        try:
            await moat.delete(ref)
        except MoatAPIError as e:
            if e.status not in (404, 409):
                raise

    # -- state kept in the hub's database ------------------------------------------------

    def get_state(self) -> Dict[str, Any]:
        state = super().get_state()
        if self.sandbox_id:
            state["sandbox_id"] = self.sandbox_id
        return state

    def load_state(self, state: Dict[str, Any]) -> None:
        super().load_state(state)
        sandbox_id = state.get("sandbox_id")
        if sandbox_id:
            self.sandbox_id = str(sandbox_id)

    def clear_state(self) -> None:
        super().clear_state()
        self.sandbox_id = None
        # The hub clears the state right before each spawn: start the progress afresh
        # so a progress page opened now does not replay the previous spawn.
        self._reset_progress()

    # -- progress ------------------------------------------------------------------------

    def _reset_progress(self) -> None:
        self._progress_events = []
        self._progress_done = False
        self._progress_changed().set()

    def _emit(self, progress: int, message: str) -> None:
        self._progress_events.append({"progress": progress, "message": message})
        self._progress_changed().set()

    def _finish_progress(self) -> None:
        self._progress_done = True
        self._progress_changed().set()

    def _progress_changed(self) -> asyncio.Event:
        # Made on first use, inside the hub's event loop.
        if self._progress_event is None:
            self._progress_event = asyncio.Event()
        return self._progress_event

    async def progress(self) -> AsyncIterator[Dict[str, Any]]:
        """The steps of the current start, as they happen, for the spawn page.

        Ends when the start has returned or failed (the hub then reports which); a page
        opened later replays the steps.
        """
        sent = 0
        while True:
            changed = self._progress_changed()
            changed.clear()
            while sent < len(self._progress_events):
                yield self._progress_events[sent]
                sent += 1
            if self._progress_done:
                return
            await changed.wait()


def _exit_story(info: Dict[str, Any]) -> str:
    parts = []
    if info.get("exit_code") is not None:
        parts.append(f"exit status {info['exit_code']}")
    if info.get("oom_killed"):
        parts.append("killed for want of memory (limit reached)")
    return f" ({', '.join(parts)})" if parts else ""


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
