"""JupyterHub spawner for moat: each single-user server in a moat sandbox.

Select it with ``c.JupyterHub.spawner_class = "moat"`` (entry point
``jupyterhub.spawners``); see the package README for the hub side of the set-up.
"""

from .client import MoatAPIError, MoatClient, MoatError, MoatUnavailable
from .spawner import MoatSpawner, SandboxFailed, escape_name, sandbox_name

__version__ = "0.1.0"

__all__ = [
    "MoatAPIError",
    "MoatClient",
    "MoatError",
    "MoatSpawner",
    "MoatUnavailable",
    "SandboxFailed",
    "escape_name",
    "sandbox_name",
]
