# jupyterhub_config.py: a JupyterHub whose single-user servers run in moat sandboxes.
#
# Host prerequisites (see ../README.md):
#   - `moat daemon --group jupyterhub --home-root /srv/homes` running (socket
#     /run/moat/moat.sock, 0660; homes only under /srv/homes);
#     the hub runs as an unprivileged account in group `jupyterhub`.
#   - 10.77.0.1/32 on `lo` (the first /30 of moat's address pool is the host's), so
#     that sandboxes, which see only their own loopback, can reach the hub API.
#   - /srv/homes: root-owned, 0755.
#   - jupyterhub-singleuser installed under /usr (sandboxes see /usr, not /opt):
#     /usr/bin/python3 -m venv /usr/local/lib/jupyter
#     /usr/local/lib/jupyter/bin/pip install jupyterhub jupyterlab

import sys

c = get_config()  # noqa: F821 (provided by JupyterHub)

# --- The hub --------------------------------------------------------------------------

# Users reach the proxy; terminate TLS here or in a reverse proxy in front of it.
c.JupyterHub.bind_url = "https://hub.example.org:443"
c.JupyterHub.ssl_cert = "/etc/letsencrypt/live/hub.example.org/fullchain.pem"
c.JupyterHub.ssl_key = "/etc/letsencrypt/live/hub.example.org/privkey.pem"

# The hub API: where each single-user server calls the hub (token checks, OAuth, activity).
# It must be an address the sandboxes may reach: host-local, outside 127.0.0.0/8. The
# spawner lets each sandbox reach exactly this host:port and nothing else on the host.
c.JupyterHub.hub_ip = "10.77.0.1"
c.JupyterHub.hub_port = 8081
# If the hub must listen on every address instead, keep the servers pointed here:
# c.JupyterHub.hub_ip = "0.0.0.0"
# c.JupyterHub.hub_connect_ip = "10.77.0.1"

# State and secrets live outside the working directory, readable by the hub only.
c.JupyterHub.db_url = "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/jupyterhub/jupyterhub_cookie_secret"
# CONFIGPROXY_AUTH_TOKEN comes from the service's environment file, not from here.

# Authentication: any JupyterHub authenticator works; users and groups come from it.
# c.JupyterHub.authenticator_class = "github"
# c.GitHubOAuthenticator.allowed_organizations = {"example-org"}
# c.GitHubOAuthenticator.populate_teams_in_auth_state = True
c.Authenticator.admin_users = {"admin"}

# Stop idle servers: they hold memory and an address of moat's pool
# (pip install jupyterhub-idle-culler next to the hub).
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600"],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]

# --- The spawner ----------------------------------------------------------------------

c.JupyterHub.spawner_class = "moat"

c.MoatSpawner.socket_path = "/run/moat/moat.sock"
c.MoatSpawner.cmd = ["/usr/local/lib/jupyter/bin/jupyterhub-singleuser"]
c.MoatSpawner.default_url = "/lab"

# The walls: moat's built-in `untrusted` profile, or the path of a profile file of yours
# (check it with `moat run --profile FILE --dry-run -- true`).
c.MoatSpawner.profile = "untrusted"

# Each user's home is /srv/homes/<identity>, owned by a host id range that belongs to
# that user for good. The identity is the username, escaped one to one
# (john.doe -> john_2edoe); keep the template stable, or homes change owner.
c.MoatSpawner.home_root = "/srv/homes"
c.MoatSpawner.identity_template = "{username}"

# Defaults for everyone; a profile below may override them.
c.MoatSpawner.mem_limit = "2G"
c.MoatSpawner.cpu_limit = 1.0
c.MoatSpawner.network_mode = "isolated"  # the hub API only: no internet
c.MoatSpawner.bandwidth = "50mbit"

# Runtime policies (KubeArmor format), selected by the labels of the sandboxes: every
# sandbox carries hub.jupyter.org/username and hub.jupyter.org/servername, plus these.
# (this one is a copy of moat's policies/examples/jupyterhub-hardening.yaml).
c.MoatSpawner.policies = ["/etc/moat/policies/jupyterhub-hardening.yaml"]
c.MoatSpawner.extra_labels = {"app": "jupyterhub"}

# Give kernels time to shut down cleanly when a server is stopped.
c.MoatSpawner.stop_grace_seconds = 15
# moat starts a sandbox in well under a second; the rest is the server's own start-up.
c.MoatSpawner.start_timeout = 60
c.MoatSpawner.http_timeout = 60

# --- Profiles users may choose from ---------------------------------------------------
#
# Keys: profile, mem_limit, cpu_limit, network_mode, egress, bandwidth, policies
# (replace the defaults above), extra_labels (merged), display_name. A typo in a key
# stops the hub at start-up rather than silently weakening a sandbox.
c.MoatSpawner.profiles = {
    "standard": {
        "display_name": "Standard: 1 CPU, 2 GB, no internet",
    },
    "internet": {
        "display_name": "Standard with HTTPS to the internet (pip, git)",
        "network_mode": "egress",
        # Private, loopback, link-local (cloud metadata) and CGNAT ranges stay closed
        # whatever this list says. DNS needs resolvers in the moat profile (network.resolvers).
        "egress": ["0.0.0.0/0:443/tcp"],
        "extra_labels": {"egress": "https"},
    },
    "large": {
        "display_name": "Large: 4 CPUs, 16 GB, HTTPS to the internet",
        "mem_limit": "16G",
        "cpu_limit": 4,
        "network_mode": "egress",
        "egress": ["0.0.0.0/0:443/tcp"],
        "bandwidth": "200mbit",
        "extra_labels": {"egress": "https", "size": "large"},
    },
}


async def allowed_profiles(spawner):
    """Which profiles this user may pick: decided here, never by the user.

    A choice outside this list (a forged form, the REST API) is refused with HTTP 400
    before anything is created. The first name is the default when no choice is made.
    """
    groups = {group.name for group in spawner.user.groups}
    allowed = {"standard"}
    if groups & {"staff", "research"}:
        allowed.add("internet")
    if "research" in groups:
        allowed.add("large")
    return list(allowed)  # offered in the order of c.MoatSpawner.profiles


c.MoatSpawner.allowed_profiles = allowed_profiles
