"""Clients of one env server, one per way of using it: `EnvClient` steps every env in lockstep (tests, evaluation),
`AsyncEnvClient` sends steps for some envs and receives results as games finish (the batcher).

The socket is a DEALER talking to the server's ROUTER (docs/protocol.md, "Sockets"): requests may be pipelined
and results come back whenever games finish, several envs per message. One batcher thread can drive many servers
by polling each async client's `socket` with a `zmq.Poller` and calling `recv(timeout_ms=0)` on the readable ones.
Results are only ever taken off the socket by the call that asked for them: a sync call on an async client is
refused while steps are in flight, and the keep-alive is a one-way heartbeat, so no call can take results that
the poller is waiting to see.

Result arrays are zero-copy, read-only `np.frombuffer` views of the received ZeroMQ frames; numpy holds a reference
to each frame, so they stay valid after later receives. Copy (or write into your own buffers) to modify them.
Every blocking call has a timeout: a dead server raises EnvServerTimeoutError, never hangs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import zmq

from beast.envs.protocol import (
    ErrorCode,
    Header,
    MsgType,
    ProtocolError,
    decode_error,
    decode_info,
    decode_results,
    encode_request,
    results_arrays,
    results_schema_mismatch,
    unpack_header,
)

Results = dict[str, np.ndarray]
_EVENTS, _POLLIN, _POLLOUT = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.POLLOUT)


class EnvServerError(RuntimeError):
    """The server rejected a request (the message names the problem) or a game could not be restarted."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code


class EnvServerTimeoutError(TimeoutError):
    """No reply within the timeout: the server is dead, hung, or unreachable (e.g. a wrong CURVE key)."""


@dataclass(frozen=True)
class EnvInfo:
    """What the server said about itself in its hello reply (docs/protocol.md, "INFO")."""

    num_envs: int
    num_actions: int
    action_names: list[str]
    var_names: list[str]
    obs: dict[str, dict[str, Any]]
    frame_skip: int
    scenario: str
    engine_version: str
    protocol_version: int
    server_pid: int
    engine_pids: list[int]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EnvInfo:
        return cls(
            num_envs=doc["num_envs"],
            num_actions=doc["num_actions"],
            action_names=list(doc["action_names"]),
            var_names=list(doc["var_names"]),
            obs=doc["obs"],
            frame_skip=doc["frame_skip"],
            scenario=doc["scenario"],
            engine_version=doc["engine_version"],
            protocol_version=doc["protocol_version"],
            server_pid=doc["server_pid"],
            engine_pids=list(doc["engine_pids"]),
            raw=doc,
        )

    @property
    def num_vars(self) -> int:
        return len(self.var_names)


class _Connection:
    """The socket, the hello and the request/reply exchange both clients share. Not thread-safe: one thread owns a
    client (ZeroMQ sockets are single-threaded)."""

    def __init__(
        self,
        address: str,
        curve_server_key: str | bytes | None = None,
        timeout_ms: int = 60_000,
        context: zmq.Context | None = None,
        curve_client_keys: tuple[str, str] | None = None,
    ) -> None:
        self.address = address
        self.timeout_ms = timeout_ms
        self._context = context or zmq.Context.instance()
        self.socket: zmq.Socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        public = b""
        if curve_server_key:
            # The server is authenticated by its public key, and we by ours (`curve_client_keys`: public, secret),
            # which a server with an allow-list must know; without them a throwaway keypair, which it refuses.
            public, secret = (k.encode() for k in curve_client_keys) if curve_client_keys else zmq.curve_keypair()
            self.socket.curve_publickey = public
            self.socket.curve_secretkey = secret
            key = curve_server_key.encode() if isinstance(curve_server_key, str) else curve_server_key
            self.socket.curve_serverkey = key.strip()
        self.socket.connect(address)
        self._seq = 0
        try:
            try:
                self.info = self.hello()
            except EnvServerTimeoutError as err:
                if not curve_server_key:
                    raise
                raise EnvServerTimeoutError(
                    f"{err}. With CURVE a server that does not accept us stays silent: check that "
                    "--curve-server-key is its public key (its server.pub) and that our public key "
                    f"({public.decode()}) is in its allow-list (allowed_clients)."
                ) from None
            mismatch = results_schema_mismatch(self.info.raw.get("results"), self.info.num_vars)
            if mismatch:
                raise ProtocolError(
                    f"env server {address} speaks another results layout: {mismatch}; rebuild the server from this "
                    "checkout (make envserver)."
                )
        except BaseException:
            self.socket.close(linger=0)
            raise

    def hello(self, timeout_ms: int | None = None) -> EnvInfo:
        """Fetch the server's description (also refreshes engine pids, which change when a game restarts)."""
        frames = self._call(encode_request(MsgType.HELLO, self._next_seq()), MsgType.INFO, timeout_ms)
        return EnvInfo.from_json(decode_info(frames))

    def reset(self, timeout_ms: int | None = None) -> Results:
        """Start a new episode in every env; arrays are [num_envs, ...]."""
        frames = self._call(encode_request(MsgType.RESET, self._next_seq()), MsgType.RESULTS, timeout_ms)
        return decode_results(frames, self.info.num_vars)[1]

    # --- lifetime --------------------------------------------------------------------------------------------
    def close(self, stop_server: bool = False, timeout_ms: int = 5_000) -> None:
        """Close the socket; with stop_server=True first ask the server to exit (it closes its games)."""
        if self.socket.closed:
            return
        if stop_server:
            with contextlib.suppress(EnvServerTimeoutError, EnvServerError):
                self._call(
                    encode_request(MsgType.CLOSE, self._next_seq()), MsgType.CLOSED, timeout_ms, discard_results=True
                )
        self.socket.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1  # 1..2^32-1; 0 marks async results and unsolicited errors
        return self._seq

    def _deadline(self, timeout_ms: int | None) -> float:
        return time.monotonic() + (self.timeout_ms if timeout_ms is None else timeout_ms) / 1000.0

    # ZMQ_EVENTS is the cheapest readiness check (Socket.poll builds a Poller per call); plain ints, because
    # arithmetic on pyzmq's enums costs more than the call itself on this hot path (a send and a receive per batch).
    def _ready(self, event: int) -> bool:
        return bool(int(self.socket.getsockopt(_EVENTS)) & event)

    def _send(self, frames: list[bytes]) -> None:
        if not self._ready(_POLLOUT) and not self.socket.poll(self.timeout_ms, zmq.POLLOUT):
            raise EnvServerTimeoutError(f"env server {self.address}: cannot send (queue full for {self.timeout_ms} ms)")
        self.socket.send_multipart(frames)  # a few bytes: copying beats tracking zero-copy frames

    def _recv_until(self, deadline: float) -> list[zmq.Frame]:
        if not self._ready(_POLLIN):
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(remaining_ms, zmq.POLLIN):
                raise EnvServerTimeoutError(f"env server {self.address} did not answer within the timeout")
        return self.socket.recv_multipart(copy=False)

    def _call(
        self, frames: list[bytes], expect: MsgType, timeout_ms: int | None, discard_results: bool = False
    ) -> list[zmq.Frame]:
        """Send a request and wait for the reply carrying its seq. Async results here mean someone else's steps
        were in flight: an error (taking them would hide them), unless the caller is closing and wants none."""
        seq = Header.unpack(frames[0]).seq
        deadline = self._deadline(timeout_ms)
        self._send(frames)
        while True:
            reply = self._recv_until(deadline)
            header = Header.unpack(_buf(reply[0]))
            if header.type == MsgType.ASYNC_RESULTS:
                if discard_results:
                    continue
                raise ProtocolError(
                    f"env server {self.address}: async results arrived during a {expect.name} call; steps sent with "
                    "AsyncEnvClient.send must be received before a sync call."
                )
            if header.type == MsgType.ERROR and header.seq in (seq, 0):
                _, text = decode_error(reply)
                raise EnvServerError(text, header.status)
            if header.seq != seq:
                continue  # a late reply to an earlier call that timed out
            if header.type != expect:
                raise ProtocolError(f"expected a reply of type {expect.name}, got 0x{header.type:02x}")
            return reply


class EnvClient(_Connection):
    """Every env of the server in lockstep: `reset`, then `step` with one action per env."""

    def step(self, actions: Sequence[int] | np.ndarray, timeout_ms: int | None = None) -> Results:
        """One step of every env (actions [num_envs]); on episode end the obs is the next episode's first."""
        req = encode_request(MsgType.STEP, self._next_seq(), actions=actions)
        frames = self._call(req, MsgType.RESULTS, timeout_ms)
        return decode_results(frames, self.info.num_vars)[1]

    def ping(self, timeout_ms: int | None = None) -> float:
        """Round trip in seconds; any message also counts as a heartbeat for the server's idle timeout."""
        start = time.perf_counter()
        self._call(encode_request(MsgType.PING, self._next_seq()), MsgType.PONG, timeout_ms)
        return time.perf_counter() - start


class AsyncEnvClient(_Connection):
    """Steps of some envs out, results in as games finish. `in_flight` counts the envs stepping: results only
    `recv` takes, and `hello`/`reset` are refused while any are out, so whoever polls the socket sees them all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.in_flight = 0
        self._error: tuple[str, int] | None = None  # an async error that arrived behind results recv returned
        super().__init__(*args, **kwargs)
        # ZeroMQ reconnects by itself to a server restarted at the same address (`--mode=serve` restarts one),
        # and delivers to it what was queued: the steps out are lost and the next ones play games we never reset.
        # A disconnect is the only sign of it; `lost_connection` reports it.
        self._monitor = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def lost_connection(self) -> bool:
        """Whether the connection to the server dropped since the hello: its games are no longer the ones this
        client reset (make a new client: hello, reset)."""
        try:
            self._monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self, stop_server: bool = False, timeout_ms: int = 5_000) -> None:
        if not self.socket.closed:
            self.socket.disable_monitor()
        self._monitor.close(linger=0)
        super().close(stop_server, timeout_ms)

    def hello(self, timeout_ms: int | None = None) -> EnvInfo:
        self._check_idle("hello")
        return super().hello(timeout_ms)

    def reset(self, timeout_ms: int | None = None) -> Results:
        self._check_idle("reset")
        return super().reset(timeout_ms)

    def send(self, env_ids: Sequence[int] | np.ndarray, actions: Sequence[int] | np.ndarray) -> None:
        """Start a step of the given envs; their results arrive through `recv` as the games finish."""
        self._send(encode_request(MsgType.SEND, self._next_seq(), env_ids=env_ids, actions=actions))
        self.in_flight += len(env_ids)

    def heartbeat(self) -> None:
        """Tell the server we are here (its idle timeout counts any message) without waiting: the PONG is dropped
        by the next `recv`, and results that arrive meanwhile stay on the socket for the poller to see."""
        self._send(encode_request(MsgType.PING, self._next_seq()))

    def recv(self, timeout_ms: int | None = None) -> tuple[np.ndarray, Results]:
        """Every finished env there is: (env_ids [n], arrays [n, ...]). Waits up to `timeout_ms` for the first
        results message (`0`: only what is there), then takes the ones already queued without waiting, merged in
        arrival order, so a batcher gets everything ready in one call. Raises EnvServerError if the server
        rejected a `send` or lost a game, EnvServerTimeoutError if nothing arrives in time."""
        if self._error is not None:
            text, status = self._error
            self._error = None
            raise EnvServerError(text, status)
        parts: list[Results] = []
        deadline = self._deadline(timeout_ms)
        while not parts:
            self._take(self._recv_until(deadline), parts)
        while self._error is None and self._ready(_POLLIN):
            self._take(self.socket.recv_multipart(zmq.NOBLOCK, copy=False), parts)
        if len(parts) == 1:
            ids, results = parts[0]["env_ids"], parts[0]
        else:
            results = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            for array in results.values():
                array.flags.writeable = False  # read-only either way, so no caller comes to rely on writing
            ids = results["env_ids"]
        self.in_flight -= len(ids)
        return ids, results

    def _take(self, frames: list[zmq.Frame], parts: list[Results]) -> None:
        """Async results go to `parts`; an error is raised now when nothing was taken yet, else kept for the next
        recv (the results taken first must not be lost); anything else (a PONG) is dropped."""
        type_, count, _, status, _ = unpack_header(_buf(frames[0]))
        if type_ == MsgType.ASYNC_RESULTS:
            if len(frames) != 2:
                raise ProtocolError(f"results carry 2 frames (header, body), got {len(frames)}")
            parts.append(results_arrays(_buf(frames[1]), count, self.info.num_vars))
        elif type_ == MsgType.ERROR:
            _, text = decode_error(frames)
            if not parts:
                raise EnvServerError(text, status)
            self._error = (text, status)

    def _check_idle(self, call: str) -> None:
        if self.in_flight:
            raise RuntimeError(
                f"{call} on env server {self.address} with {self.in_flight} env steps in flight would take their "
                "results: recv them first."
            )


def _buf(frame: Any) -> Any:
    return frame.buffer if hasattr(frame, "buffer") else frame
