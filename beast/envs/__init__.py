"""Environments: the C++ env server's launcher and client, its wire protocol, and scenario lookup."""

from beast.envs.client import EnvClient, EnvInfo, EnvServerError, EnvServerTimeoutError
from beast.envs.server import EnvServer, EnvServerStartError

__all__ = ["EnvClient", "EnvInfo", "EnvServer", "EnvServerError", "EnvServerStartError", "EnvServerTimeoutError"]
