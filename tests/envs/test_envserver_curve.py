"""CURVE: an encrypted server serves a client holding its public key and nobody else (forced on loopback)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import zmq

from beast.envs import EnvClient, EnvServer, EnvServerTimeoutError
from beast.envs.client import read_curve_public_key
from beast.envs.server import write_curve_keypair


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_curve_server_serves_the_right_key_only(envserver_binary: str, tmp_path: Path) -> None:
    secret_file, public_file = tmp_path / "server.key", tmp_path / "server.pub"
    public = write_curve_keypair(secret_file, public_file)
    assert read_curve_public_key(public_file) == public
    assert secret_file.stat().st_mode & 0o077 == 0
    address = f"tcp://127.0.0.1:{_free_port()}"
    server = EnvServer(
        scenario="basic", num_envs=1, binary=envserver_binary, address=address, curve_secret_key_file=str(secret_file)
    )
    with server as srv:
        with EnvClient(srv.address, curve_server_key=public) as good:
            assert good.reset()["rgb"].shape == (1, 3, 64, 64)
            assert good.step([0])["reward"].shape == (1,)
        wrong_key = zmq.curve_keypair()[0]
        with pytest.raises(EnvServerTimeoutError):
            EnvClient(srv.address, curve_server_key=wrong_key, timeout_ms=1500)
        with pytest.raises(EnvServerTimeoutError):
            EnvClient(srv.address, timeout_ms=1500)  # plaintext client
        assert srv.alive()
