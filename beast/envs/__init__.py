"""Environments: the C++ env server's launcher and client, its wire protocol, and scenario lookup."""

from beast.envs.client import AsyncEnvClient, EnvClient, EnvInfo, EnvServerError, EnvServerTimeoutError
from beast.envs.server import EnvServer, EnvServerStartError

__all__ = [
    "AsyncEnvClient",
    "EnvClient",
    "EnvInfo",
    "EnvServer",
    "EnvServerError",
    "EnvServerStartError",
    "EnvServerTimeoutError",
]
