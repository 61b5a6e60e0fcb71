"""The env server's wire format, mirrored from docs/protocol.md (the contract) and envserver/src/protocol.h.

A message is a ZeroMQ multipart message: one fixed 24-byte little-endian header frame, then a request's arrays (one
frame each) or a results message's arrays (all in one body frame, at 8-byte aligned offsets). Arrays are raw bytes
in wire order, so `decode_results` maps each one with `np.frombuffer` instead of copying or unpickling: the hot path
(results for a batch of envs) costs no serialisation at all, and one frame per message keeps the per-message cost
(ZeroMQ frames, Python objects) independent of the number of arrays.
"""

from __future__ import annotations

import enum
import functools
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = 0x54534542  # the bytes b"BEST" read as a little-endian u32
VERSION = 2
HEADER = struct.Struct("<IHBBIIII")  # magic, version, type, flags, count, seq, status, reserved
HEADER_SIZE = HEADER.size  # 24
assert HEADER_SIZE == 24

OBS_SIDE = 64
AUDIO_CHANNELS = 2
AUDIO_SAMPLES = 1024


class MsgType(enum.IntEnum):
    HELLO = 0x01
    RESET = 0x02
    STEP = 0x03
    SEND = 0x04
    PING = 0x05
    CLOSE = 0x06
    INFO = 0x81
    RESULTS = 0x82
    ASYNC_RESULTS = 0x83
    PONG = 0x85
    CLOSED = 0x86
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    OK = 0
    MALFORMED = 1
    BAD_VERSION = 2
    BAD_FRAMES = 3
    BAD_ENV_ID = 4
    BAD_ACTION = 5
    BUSY = 6
    ENV_FAILED = 7


class ProtocolError(ValueError):
    """A message that does not follow docs/protocol.md (bad header, frame count or size)."""


@dataclass(frozen=True)
class Header:
    type: int
    count: int = 0
    seq: int = 0
    status: int = 0
    flags: int = 0
    magic: int = MAGIC
    version: int = VERSION

    def pack(self) -> bytes:
        return HEADER.pack(self.magic, self.version, self.type, self.flags, self.count, self.seq, self.status, 0)

    @classmethod
    def unpack(cls, frame: bytes | memoryview) -> Header:
        type_, count, seq, status, flags = unpack_header(frame)
        return cls(type=type_, count=count, seq=seq, status=status, flags=flags)


def unpack_header(frame: bytes | memoryview) -> tuple[int, int, int, int, int]:
    """(type, count, seq, status, flags) of a checked header frame; the hot path's cheaper `Header.unpack`."""
    if len(frame) != HEADER_SIZE:
        raise ProtocolError(f"header frame must be {HEADER_SIZE} bytes, got {len(frame)}")
    magic, version, type_, flags, count, seq, status, _ = HEADER.unpack(frame)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, this client speaks {VERSION}")
    return type_, count, seq, status, flags


# The results schema, Python's one statement of it: the arrays of a results body in wire order, as (name, dtype,
# per-env shape) with "G" for the number of vars. The server publishes its own table (envserver/src/protocol.cpp)
# in INFO as "results"; every client checks the two agree when it connects (`results_schema_mismatch`).
RESULT_FIELDS: tuple[tuple[str, np.dtype, tuple[int | str, ...]], ...] = (
    ("env_ids", np.dtype("<i4"), ()),
    ("rgb", np.dtype("u1"), (3, OBS_SIDE, OBS_SIDE)),
    ("depth", np.dtype("u1"), (1, OBS_SIDE, OBS_SIDE)),
    ("enemy", np.dtype("u1"), (1, OBS_SIDE, OBS_SIDE)),
    ("audio", np.dtype("<i2"), (AUDIO_CHANNELS, AUDIO_SAMPLES)),
    ("vars", np.dtype("<f4"), ("G",)),
    ("final_vars", np.dtype("<f4"), ("G",)),
    ("reward", np.dtype("<f4"), ()),
    ("done", np.dtype("u1"), ()),
    ("truncated", np.dtype("u1"), ()),
    ("crashed", np.dtype("u1"), ()),
    ("episode_return", np.dtype("<f4"), ()),
    ("episode_length", np.dtype("<i4"), ()),
)


RESULT_ALIGN = 8  # every array of a results body starts at a multiple of this offset


def field_shape(shape: tuple[int | str, ...], num_vars: int) -> tuple[int, ...]:
    return tuple(num_vars if d == "G" else int(d) for d in shape)


def results_schema_mismatch(published: Any, num_vars: int) -> str | None:
    """How the server's results schema (INFO "results": {name: {"shape", "dtype"}} in wire order) differs from
    RESULT_FIELDS, or None when the two agree field by field."""
    if not isinstance(published, dict):
        return "it publishes no results schema (a server older than this client)"
    ours = [(name, dtype.name, list(field_shape(shape, num_vars))) for name, dtype, shape in RESULT_FIELDS]
    theirs = [(name, spec.get("dtype"), spec.get("shape")) for name, spec in published.items()]
    for i, (mine, served) in enumerate(zip(ours, theirs, strict=False)):
        if mine != served:
            return f"results field {i} is {served} on the server and {mine} here"
    if len(ours) != len(theirs):
        return f"the server sends {len(theirs)} results fields, this client reads {len(ours)}"
    return None


@functools.lru_cache(maxsize=256)
def results_layout(n: int, num_vars: int) -> tuple[int, tuple[tuple[str, np.dtype, int, int, tuple[int, ...]], ...]]:
    """(body size, per array (name, dtype, offset, element count, shape [n, ...])) of a results body for n envs."""
    fields = []
    offset = 0
    for name, dtype, shape in RESULT_FIELDS:
        full = (n, *field_shape(shape, num_vars))
        count = int(np.prod(full))
        fields.append((name, dtype, offset, count, full))
        offset += -(-count * dtype.itemsize // RESULT_ALIGN) * RESULT_ALIGN
    return offset, tuple(fields)


def encode_request(
    msg_type: MsgType,
    seq: int = 0,
    env_ids: Sequence[int] | np.ndarray | None = None,
    actions: Sequence[int] | np.ndarray | None = None,
) -> list[bytes]:
    """Frames of a request. STEP takes `actions` (one per env); SEND takes `env_ids` and `actions`."""
    if msg_type == MsgType.STEP:
        acts = np.ascontiguousarray(actions, dtype="<i4")
        return [HEADER.pack(MAGIC, VERSION, msg_type, 0, len(acts), seq, 0, 0), acts.tobytes()]
    if msg_type == MsgType.SEND:
        ids = np.ascontiguousarray(env_ids, dtype="<i4")
        acts = np.ascontiguousarray(actions, dtype="<i4")
        if ids.shape != acts.shape or ids.ndim != 1:
            raise ValueError(f"env_ids {ids.shape} and actions {acts.shape} must be 1-d and of equal length")
        return [HEADER.pack(MAGIC, VERSION, msg_type, 0, len(ids), seq, 0, 0), ids.tobytes(), acts.tobytes()]
    return [HEADER.pack(MAGIC, VERSION, msg_type, 0, 0, seq, 0, 0)]


def decode_results(frames: Sequence[Any], num_vars: int) -> tuple[Header, dict[str, np.ndarray]]:
    """Map a RESULTS/ASYNC_RESULTS message to arrays with a leading env dimension [n, ...].

    `frames` may be bytes or zmq.Frame objects (recv_multipart(copy=False)); the arrays are read-only views of
    the body frame's buffer, kept alive by numpy's reference to it, so they stay valid after later receives.
    """
    header = Header.unpack(_buffer(frames[0]))
    if header.type not in (MsgType.RESULTS, MsgType.ASYNC_RESULTS):
        raise ProtocolError(f"expected a results message, got type 0x{header.type:02x}")
    if len(frames) != 2:
        raise ProtocolError(f"results carry 2 frames (header, body), got {len(frames)}")
    return header, results_arrays(_buffer(frames[1]), header.count, num_vars)


def results_arrays(body: bytes | memoryview, n: int, num_vars: int) -> dict[str, np.ndarray]:
    """The arrays [n, ...] of a results body: read-only views of `body`, no copies."""
    size, layout = results_layout(n, num_vars)
    if len(body) != size:
        raise ProtocolError(f"results body has {len(body)} bytes, expected {size} for {n} envs and {num_vars} vars")
    view = memoryview(body).toreadonly()  # so every array is read-only, whatever the frame allows
    return {name: np.ndarray(full, dtype, view, offset) for name, dtype, offset, _, full in layout}


def encode_results(msg_type: MsgType, seq: int, results: dict[str, np.ndarray]) -> list[bytes]:
    """The server's side of `decode_results`, for tests and for fake servers."""
    n = len(results["env_ids"])
    num_vars = np.asarray(results["vars"]).reshape(n, -1).shape[1]
    size, layout = results_layout(n, num_vars)
    body = bytearray(size)
    for name, dtype, offset, _, full in layout:
        data = np.ascontiguousarray(results[name], dtype=dtype).reshape(full).tobytes()
        body[offset : offset + len(data)] = data
    return [Header(msg_type, count=n, seq=seq).pack(), bytes(body)]


def decode_info(frames: Sequence[Any]) -> dict[str, Any]:
    header = Header.unpack(_buffer(frames[0]))
    if header.type != MsgType.INFO or len(frames) != 2:
        raise ProtocolError(f"expected an info message, got type 0x{header.type:02x} with {len(frames)} frames")
    return json.loads(bytes(_buffer(frames[1])).decode("utf-8"))


def decode_error(frames: Sequence[Any]) -> tuple[Header, str]:
    header = Header.unpack(_buffer(frames[0]))
    text = bytes(_buffer(frames[1])).decode("utf-8", "replace") if len(frames) > 1 else ""
    return header, text


def _buffer(frame: Any) -> memoryview | bytes:
    return frame.buffer if hasattr(frame, "buffer") else frame
