"""The real env server with real games: what it returns, how episodes end, and how it handles bad input.

One `basic` server (2 envs) is shared by the module: starting games is the slow part. Tests that must not
disturb it (killing an engine) start their own.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq

from beast.envs import AsyncEnvClient, EnvClient, EnvServer, EnvServerError
from beast.envs.client import EnvServerTimeoutError
from beast.envs.protocol import (
    MAGIC,
    RESULT_FIELDS,
    VERSION,
    ErrorCode,
    Header,
    MsgType,
    ProtocolError,
    decode_error,
    decode_results,
    encode_request,
    encode_results,
    results_layout,
    results_schema_mismatch,
)

NUM_ENVS = 2
MOVE_LEFT, MOVE_RIGHT, ATTACK = 0, 1, 2  # basic.cfg's buttons, in order


@pytest.fixture(scope="module")
def server(envserver_binary: str) -> Iterator[EnvServer]:
    with EnvServer(scenario="basic", num_envs=NUM_ENVS, seed=3, binary=envserver_binary, idle_timeout_s=120) as srv:
        yield srv


@pytest.fixture()
def client(server: EnvServer) -> Iterator[EnvClient]:
    with EnvClient(server.address, timeout_ms=30_000) as c:
        yield c


@pytest.fixture()
def async_client(server: EnvServer) -> Iterator[AsyncEnvClient]:
    with AsyncEnvClient(server.address, timeout_ms=30_000) as c:
        yield c


def test_info_describes_the_server(client: EnvClient, server: EnvServer) -> None:
    info = client.info
    assert info.num_envs == NUM_ENVS and info.protocol_version == VERSION == 2
    assert info.action_names == ["MOVE_LEFT", "MOVE_RIGHT", "ATTACK"] and info.num_actions == 3
    assert info.engine_version == "1.3.2" and info.raw["library_version"] == "1.3.2"
    assert info.frame_skip == 4 and info.scenario.endswith("basic.cfg")
    assert info.server_pid == server.pid and len(info.engine_pids) == NUM_ENVS
    assert "HEALTH" in info.var_names and "KILLCOUNT" in info.var_names
    assert info.obs["audio"] == {"shape": [2, 1024], "dtype": "int16"}


def test_observations_have_documented_shapes_dtypes_and_ranges(client: EnvClient) -> None:
    g = client.info.num_vars
    expected = {
        "env_ids": ((2,), np.int32),
        "rgb": ((2, 3, 64, 64), np.uint8),
        "depth": ((2, 1, 64, 64), np.uint8),
        "enemy": ((2, 1, 64, 64), np.uint8),
        "audio": ((2, 2, 1024), np.int16),
        "vars": ((2, g), np.float32),
        "final_vars": ((2, g), np.float32),
        "reward": ((2,), np.float32),
        "done": ((2,), np.uint8),
        "truncated": ((2,), np.uint8),
        "crashed": ((2,), np.uint8),
        "episode_return": ((2,), np.float32),
        "episode_length": ((2,), np.int32),
    }
    for obs in (client.reset(), client.step([MOVE_LEFT, ATTACK])):
        assert {k: (v.shape, v.dtype) for k, v in obs.items()} == expected
        assert obs["env_ids"].tolist() == [0, 1]
        assert obs["rgb"].std() > 5  # a rendered scene, not a blank frame
        assert obs["depth"].max() > obs["depth"].min()
        assert set(np.unique(obs["enemy"]).tolist()) <= {0, 1} or set(np.unique(obs["enemy"]).tolist()) <= {0, 255}
        assert np.isfinite(obs["vars"]).all() and (obs["vars"][:, client.info.var_names.index("HEALTH")] > 0).all()
        assert set(obs["done"].tolist()) <= {0, 1} and not obs["crashed"].any()
    assert (obs["reward"] != 0).all()  # basic pays -1 per tic: never zero after a step


def test_episodes_end_restart_and_report_return_and_length(client: EnvClient) -> None:
    client.reset()
    rewards: list[list[float]] = [[], []]
    ended: list[tuple[float, int, float]] = []
    for _ in range(120):  # basic times out after 300 tics = 75 steps at frame skip 4
        out = client.step([MOVE_LEFT, MOVE_RIGHT])
        for i in range(NUM_ENVS):
            rewards[i].append(float(out["reward"][i]))
            if out["done"][i]:
                ended.append((float(out["episode_return"][i]), int(out["episode_length"][i]), sum(rewards[i])))
                assert out["truncated"][i] == 1  # moving never kills the monster: the timeout ends it
                assert len(rewards[i]) == out["episode_length"][i]
                rewards[i] = []
        if len(ended) >= NUM_ENVS:
            break
    assert len(ended) >= NUM_ENVS, "no episode ended within 120 steps"
    for episode_return, length, summed in ended:
        assert 60 <= length <= 80
        assert episode_return == pytest.approx(summed, rel=1e-5)
    # the next step belongs to the new episode and goes on normally
    after = client.step([ATTACK, ATTACK])
    assert not after["done"].any()


def test_audio_is_heard_after_firing(client: EnvClient) -> None:
    client.reset()
    loudest = 0
    for _ in range(6):
        out = client.step([ATTACK, ATTACK])
        loudest = max(loudest, int(np.abs(out["audio"].astype(np.int32)).max()))
    assert loudest > 100, "the pistol made no sound in the audio buffer"


def test_the_servers_results_schema_is_pythons_field_by_field(client: EnvClient) -> None:
    published = client.info.raw["results"]
    assert list(published) == [name for name, _, _ in RESULT_FIELDS]
    assert results_schema_mismatch(published, client.info.num_vars) is None
    assert client.info.obs == {key: published[key] for key in ("rgb", "depth", "enemy", "audio", "vars")}
    # And a difference in any one field is found and named (the check the client makes when it connects).
    for i, (name, _, shape) in enumerate(RESULT_FIELDS):
        changed = {**published, name: {"shape": published[name]["shape"] + [1], "dtype": published[name]["dtype"]}}
        assert f"results field {i}" in str(results_schema_mismatch(changed, client.info.num_vars)), (name, shape)


def test_async_results_carry_their_env_ids(async_client: AsyncEnvClient) -> None:
    client = async_client
    client.reset()
    client.send([1], [MOVE_LEFT])
    ids, out = client.recv()
    assert ids.tolist() == [1] and out["rgb"].shape == (1, 3, 64, 64)
    client.send([0, 1], [ATTACK, MOVE_RIGHT])
    assert client.in_flight == 2
    seen: list[int] = []
    while len(seen) < 2:
        ids, out = client.recv()
        assert out["env_ids"].tolist() == ids.tolist() and len(out["reward"]) == len(ids)
        seen += ids.tolist()
    assert sorted(seen) == [0, 1] and client.in_flight == 0
    with pytest.raises(EnvServerError, match="outside"):
        client.send([0], [7])
        client.recv(timeout_ms=5_000)


def _wait_readable(client: AsyncEnvClient | EnvClient) -> None:
    deadline = time.monotonic() + 30
    while client.socket.poll(0) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # the games are done long before this: every result is queued


def test_recv_returns_every_finished_env_in_one_call(async_client: AsyncEnvClient) -> None:
    """A batcher's recv takes everything that is ready: results queued behind the first come merged with it."""
    client = async_client
    client.reset()
    client.send([0], [MOVE_LEFT])
    client.send([1], [MOVE_RIGHT])
    _wait_readable(client)
    ids, out = client.recv(timeout_ms=0)
    assert sorted(ids.tolist()) == [0, 1] and out["rgb"].shape == (2, 3, 64, 64)
    assert out["env_ids"].tolist() == ids.tolist() and out["vars"].shape == (2, client.info.num_vars)
    assert not any(a.flags.writeable for a in out.values())
    with pytest.raises(EnvServerTimeoutError):
        client.recv(timeout_ms=0)


def test_no_call_takes_results_the_poller_waits_for(async_client: AsyncEnvClient) -> None:
    """The batcher's socket stays readable until it receives: a heartbeat leaves queued results where they are,
    and a sync call with steps out is refused rather than swallowing them."""
    client = async_client
    client.reset()
    client.send([0, 1], [MOVE_LEFT, MOVE_RIGHT])
    _wait_readable(client)
    client.heartbeat()
    with pytest.raises(RuntimeError, match="2 env steps in flight"):
        client.reset()
    assert client.socket.poll(0) == zmq.POLLIN
    seen: list[int] = []
    while len(seen) < 2:
        ids, _ = client.recv(timeout_ms=5_000)
        seen += ids.tolist()
    assert sorted(seen) == [0, 1] and client.in_flight == 0
    with pytest.raises(EnvServerTimeoutError):  # the PONG was dropped, not returned as results
        client.recv(timeout_ms=500)
    client.reset()  # nothing out: sync calls work again


def test_a_sync_client_refuses_async_results(client: EnvClient) -> None:
    """Results a sync call runs into were asked for by someone else on the same socket: an error, never kept aside
    where no poller would see them."""
    client.reset()
    client.socket.send_multipart(encode_request(MsgType.SEND, 99, env_ids=[0], actions=[MOVE_LEFT]))
    assert client.socket.poll(30_000) == zmq.POLLIN  # the results are queued before the ping goes out
    with pytest.raises(ProtocolError, match="async results arrived during a PONG call"):
        client.ping()


def test_results_decode_and_re_encode_to_the_servers_exact_bytes(server: EnvServer) -> None:
    with EnvClient(server.address) as c:
        c.reset()
        raw = c.socket
        raw.send_multipart(encode_request(MsgType.STEP, seq=77, actions=[ATTACK, MOVE_LEFT]))
        assert raw.poll(30_000)
        frames = raw.recv_multipart()
        header, arrays = decode_results(frames, c.info.num_vars)
        assert header.type == MsgType.RESULTS and header.seq == 77 and header.count == NUM_ENVS
        assert encode_results(MsgType.RESULTS, 77, arrays) == frames


def _raw_request(sock: zmq.Socket, frames: list[bytes], timeout_ms: int = 10_000) -> tuple[Header, list[bytes]]:
    """Send frames and return the first reply that is not an async result."""
    sock.send_multipart(frames)
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        assert sock.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"no reply to {frames!r:.120}"
        reply = sock.recv_multipart()
        header = Header.unpack(reply[0])
        if header.type != MsgType.ASYNC_RESULTS:
            return header, reply


def _hdr(type_: int, count: int = 0, seq: int = 9, version: int = VERSION, magic: int = MAGIC) -> bytes:
    return struct.pack("<IHBBIIII", magic, version, type_, 0, count, seq, 0, 0)


def _i32(*values: int) -> bytes:
    return np.asarray(values, "<i4").tobytes()


def test_malformed_messages_get_errors_and_the_server_serves_on(server: EnvServer) -> None:
    k = NUM_ENVS
    cases: list[tuple[list[bytes], ErrorCode]] = [
        ([b""], ErrorCode.MALFORMED),
        ([_hdr(MsgType.PING)[:23]], ErrorCode.MALFORMED),
        ([_hdr(MsgType.PING) + b"\0"], ErrorCode.MALFORMED),
        ([_hdr(MsgType.PING, magic=0x12345678)], ErrorCode.MALFORMED),
        ([_hdr(MsgType.PING, version=1)], ErrorCode.BAD_VERSION),
        ([_hdr(0x07)], ErrorCode.MALFORMED),
        ([_hdr(MsgType.RESULTS)], ErrorCode.MALFORMED),
        ([_hdr(MsgType.HELLO), b"extra"], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.RESET, count=1)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.STEP, count=k)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.STEP, count=k - 1), _i32(0)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.STEP, count=k), _i32(0)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.STEP, count=k), _i32(0, 0) + b"\0"], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.STEP, count=k), _i32(0, 3)], ErrorCode.BAD_ACTION),
        ([_hdr(MsgType.STEP, count=k), _i32(-1, 0)], ErrorCode.BAD_ACTION),
        ([_hdr(MsgType.SEND, count=0), b"", b""], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.SEND, count=k + 1), _i32(0, 1, 0), _i32(0, 0, 0)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.SEND, count=1), _i32(0)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.SEND, count=1), _i32(0, 1), _i32(0)], ErrorCode.BAD_FRAMES),
        ([_hdr(MsgType.SEND, count=1), _i32(k), _i32(0)], ErrorCode.BAD_ENV_ID),
        ([_hdr(MsgType.SEND, count=1), _i32(-1), _i32(0)], ErrorCode.BAD_ENV_ID),
        ([_hdr(MsgType.SEND, count=2), _i32(1, 1), _i32(0, 0)], ErrorCode.BAD_ENV_ID),
        ([_hdr(MsgType.SEND, count=1), _i32(0), _i32(99)], ErrorCode.BAD_ACTION),
    ]
    rng = random.Random(1234)
    for _ in range(300):
        n_frames = rng.randint(1, 4)
        cases.append(([rng.randbytes(rng.choice([0, 3, 24, 24, 40, rng.randint(0, 200)])) for _ in range(n_frames)], 0))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.address)
    try:
        for frames, code in cases:
            header, reply = _raw_request(sock, frames)
            assert header.type == MsgType.ERROR, f"{frames!r:.120} was served"
            _, text = decode_error(reply)
            assert text, "an error reply must name the problem"
            if code:
                assert header.status == code, f"{frames!r:.120}: got {header.status} ({text}), want {code!r}"
                assert header.seq == 9 or len(frames[0]) < 16
        _check_busy_is_rejected(sock)
    finally:
        sock.close(linger=0)
    with EnvClient(server.address) as c:  # still serving, and correctly
        assert c.reset()["rgb"].shape == (NUM_ENVS, 3, 64, 64)
        assert c.step([0, 1])["done"].shape == (NUM_ENVS,)


def _check_busy_is_rejected(sock: zmq.Socket) -> None:
    """Stepping an env whose step is in flight is refused. Both sends leave together, so the server almost always
    sees them in one batch; if the first step finished in between, try again."""
    for attempt in range(20):
        sock.send_multipart(encode_request(MsgType.SEND, 100 + attempt, env_ids=[0], actions=[0]))
        sock.send_multipart(encode_request(MsgType.SEND, 200 + attempt, env_ids=[0], actions=[0]))
        replies = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(len(r) for r in replies) < 2:
            if sock.poll(1000):
                frames = sock.recv_multipart()
                header = Header.unpack(frames[0])
                if header.type == MsgType.ERROR:
                    assert header.status == ErrorCode.BUSY and header.seq == 200 + attempt
                    # drain the first send's result before returning
                    while sock.poll(10_000):
                        if Header.unpack(sock.recv_multipart()[0]).type == MsgType.ASYNC_RESULTS:
                            return
                    raise AssertionError("the first send's result never came")
                replies.append(decode_results(frames, num_vars=_num_vars(frames))[1]["env_ids"].tolist())
    raise AssertionError("a second send for a stepping env was never refused")


def _num_vars(frames: list[bytes]) -> int:
    n = Header.unpack(frames[0]).count
    return next(g for g in range(256) if results_layout(n, g)[0] == len(frames[1]))


def test_a_crashed_game_is_restarted_and_reported_while_the_others_continue(
    envserver_binary: str, wait_gone: Callable[..., set[int]]
) -> None:
    with EnvServer(scenario="basic", num_envs=3, seed=5, binary=envserver_binary) as srv, EnvClient(srv.address) as c:
        c.reset()
        c.step([0, 0, 0])
        victim = c.info.engine_pids[1]
        os.kill(victim, signal.SIGKILL)
        out = c.step([ATTACK, ATTACK, ATTACK])
        assert out["crashed"].tolist() == [0, 1, 0]
        assert out["done"].tolist() == [0, 1, 0]
        assert out["episode_length"][1] == 1  # the step before the kill
        assert out["rgb"][1].std() > 5  # the new game's first observation
        assert not wait_gone([victim], 5.0)
        pids = c.hello().engine_pids
        assert pids[1] != victim and pids[0] == c.info.engine_pids[0] and pids[2] == c.info.engine_pids[2]
        for _ in range(3):
            out = c.step([MOVE_LEFT] * 3)
            assert not out["crashed"].any()


def test_a_stalled_game_does_not_stall_the_others(envserver_binary: str) -> None:
    with (
        EnvServer(scenario="basic", num_envs=2, seed=8, binary=envserver_binary) as srv,
        AsyncEnvClient(srv.address) as c,
        EnvClient(srv.address) as other,
    ):
        c.reset()
        frozen = c.info.engine_pids[0]
        os.kill(frozen, signal.SIGSTOP)
        try:
            c.send([0, 1], [MOVE_LEFT, MOVE_LEFT])
            for _ in range(5):  # env 1 keeps stepping while env 0's engine is frozen
                ids, _ = c.recv(timeout_ms=10_000)
                assert ids.tolist() == [1]
                c.send([1], [MOVE_RIGHT])
            assert other.ping() < 5.0  # and the server still answers at once
        finally:
            os.kill(frozen, signal.SIGCONT)
        seen = set()
        while len(seen) < 2:  # env 0's step completes once its engine runs again
            ids, out = c.recv(timeout_ms=30_000)
            assert not out["crashed"].any()
            seen |= set(ids.tolist())


def test_doom_skill_overrides_the_scenarios_own(envserver_binary: str) -> None:
    """Skill 1 halves the damage a player takes (Doom's "I'm too young to die"): running down deadly_corridor
    for the same steps with the same seeds hurts less there than at the cfg's own skill 5."""
    damage = {}
    for skill in (1, 0):
        with (
            EnvServer(scenario="deadly_corridor", num_envs=4, seed=11, binary=envserver_binary, doom_skill=skill) as s,
            EnvClient(s.address, timeout_ms=30_000) as env,
        ):
            assert env.info.raw["doom_skill"] == skill
            obs = env.reset()
            column = env.info.var_names.index("DAMAGE_TAKEN")
            forward = np.full(4, env.info.action_names.index("MOVE_FORWARD"), np.int32)
            total = np.zeros(4)
            for _ in range(12):
                obs = env.step(forward)
                total = np.maximum(total, np.where(obs["done"], obs["final_vars"][:, column], obs["vars"][:, column]))
            damage[skill] = total.sum()
    assert damage[0] > 0 and damage[1] < 0.8 * damage[0], damage
