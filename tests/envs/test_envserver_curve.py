"""CURVE, ironhouse: an encrypted server serves the clients on its allow-list that hold its public key, and nobody
else (forced on loopback here; off loopback it is the only way the binary serves)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import zmq

from beast.envs import EnvClient, EnvServer, EnvServerTimeoutError
from beast.envs.curve import (
    allow_list_keys,
    ensure_curve_keypair,
    read_curve_keypair,
    read_curve_public_key,
    write_curve_keypair,
)
from beast.envs.scenarios import vizdoom_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_serves_the_clients_on_its_allow_list_only(envserver_binary: str, tmp_path: Path) -> None:
    secret_file, public_file = tmp_path / "server.key", tmp_path / "server.pub"
    public = write_curve_keypair(secret_file, public_file)
    assert read_curve_public_key(public_file) == public
    assert secret_file.stat().st_mode & 0o077 == 0
    trainer_public, trainer_secret, created = ensure_curve_keypair(tmp_path / "trainer.key")
    assert created and read_curve_public_key(tmp_path / "trainer.key.pub") == trainer_public
    assert ensure_curve_keypair(tmp_path / "trainer.key") == (trainer_public, trainer_secret, False)
    second = tuple(k.decode() for k in zmq.curve_keypair())  # a second trainer, listed as a bare key
    allowed = tmp_path / "allowed_clients"
    allowed.write_text(f"# the trainers\n{(tmp_path / 'trainer.key.pub').read_text()}\n  {second[0]}\n")
    assert allow_list_keys(allowed.read_text()) == [trainer_public, second[0]]
    server = EnvServer(
        scenario="basic",
        num_envs=1,
        binary=envserver_binary,
        address=f"tcp://127.0.0.1:{free_port()}",
        curve_secret_key_file=str(secret_file),
        curve_allowed_clients_file=str(allowed),
    )
    keys = (trainer_public, trainer_secret)
    with server as srv:
        with EnvClient(srv.address, curve_server_key=public, curve_client_keys=keys) as good:
            assert good.reset()["rgb"].shape == (1, 3, 64, 64)
            assert good.step([0])["reward"].shape == (1,)
        with EnvClient(srv.address, curve_server_key=public, curve_client_keys=second, timeout_ms=10_000) as other:
            assert other.info.num_envs == 1
        stranger_public, stranger_secret = (k.decode() for k in zmq.curve_keypair())
        stranger = (stranger_public, stranger_secret)
        with pytest.raises(EnvServerTimeoutError, match="allow-list"):
            EnvClient(srv.address, curve_server_key=public, curve_client_keys=stranger, timeout_ms=1500)
        with pytest.raises(EnvServerTimeoutError, match=r"its server\.pub"):
            EnvClient(srv.address, curve_server_key=zmq.curve_keypair()[0], curve_client_keys=keys, timeout_ms=1500)
        with pytest.raises(EnvServerTimeoutError):
            EnvClient(srv.address, timeout_ms=1500)  # plaintext client
        assert srv.alive()
        log = srv.stderr_tail()
    assert f"its CURVE public key {stranger[0]} is not in --curve-allowed-clients-file" in log, log
    assert trainer_public not in log


def test_curve_without_an_allow_list_is_refused(envserver_binary: str, tmp_path: Path) -> None:
    write_curve_keypair(tmp_path / "server.key", tmp_path / "server.pub")
    base = [
        envserver_binary,
        "--scenario=basic",
        "--num-envs=1",
        f"--address=tcp://127.0.0.1:{free_port()}",
        f"--vizdoom-dir={vizdoom_dir()}",
    ]
    proc = subprocess.run(
        [*base, f"--curve-secret-key-file={tmp_path / 'server.key'}"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and "needs --curve-allowed-clients-file" in proc.stderr, proc.stderr
    (tmp_path / "allowed").write_text("not-a-key\n")
    proc = subprocess.run(
        [
            *base,
            f"--curve-secret-key-file={tmp_path / 'server.key'}",
            f"--curve-allowed-clients-file={tmp_path / 'allowed'}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "line 1 of the CURVE allow-list" in proc.stderr, proc.stderr


def test_no_public_key_begins_with_the_comment_character() -> None:
    from zmq.utils.z85 import encode

    assert encode(b"\xff" * 32)[:1] == b"%"  # the largest first digit: '#' (84) comes after '%' (82)
    assert b"#" in encode(b"\x00\x00\x00\x54" * 8)  # while '#' is a digit elsewhere in a key


def test_an_allow_list_line_that_is_no_key_is_named() -> None:
    with pytest.raises(ValueError, match="line 2 is not"):
        allow_list_keys("# trainers\nnot-a-key\n")


def test_a_keypair_file_gives_back_its_keys_and_refuses_a_foreign_public_key(tmp_path: Path) -> None:
    public = write_curve_keypair(tmp_path / "k", tmp_path / "k.pub")
    assert read_curve_keypair(tmp_path / "k")[0] == public
    other = zmq.curve_keypair()[0].decode()
    text = (tmp_path / "k").read_text().replace(public, other)
    (tmp_path / "bad").write_text(text)
    with pytest.raises(ValueError, match="does not belong"):
        read_curve_keypair(tmp_path / "bad")
