"""The Python mirror of the wire format, checked against docs/protocol.md's byte layout (no server needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from beast.envs.protocol import (
    HEADER_SIZE,
    MAGIC,
    RESULT_ALIGN,
    RESULT_FIELDS,
    VERSION,
    Header,
    MsgType,
    ProtocolError,
    decode_results,
    encode_request,
    encode_results,
    field_shape,
    results_layout,
)


def test_header_layout_matches_the_documented_bytes() -> None:
    frame = Header(MsgType.STEP, count=3, seq=0x01020304, status=7).pack()
    assert len(frame) == HEADER_SIZE == 24
    assert frame[:4] == b"BEST"
    assert VERSION == 2 and struct.unpack_from("<H", frame, 4) == (VERSION,)
    assert frame[6] == 0x03 and frame[7] == 0
    assert struct.unpack_from("<IIII", frame, 8) == (3, 0x01020304, 7, 0)
    assert Header.unpack(frame) == Header(MsgType.STEP, count=3, seq=0x01020304, status=7)


@pytest.mark.parametrize(
    "frame",
    [b"", b"BEST", b"X" * 24, struct.pack("<IHBBIIII", MAGIC, 1, 1, 0, 0, 0, 0, 0), b"\0" * 25],
    ids=["empty", "truncated", "bad-magic", "bad-version", "too-long"],
)
def test_bad_headers_are_rejected(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        Header.unpack(frame)


def test_send_request_carries_ids_and_actions_as_int32() -> None:
    frames = encode_request(MsgType.SEND, seq=5, env_ids=[2, 0], actions=[1, 6])
    assert Header.unpack(frames[0]) == Header(MsgType.SEND, count=2, seq=5)
    assert np.frombuffer(frames[1], "<i4").tolist() == [2, 0]
    assert np.frombuffer(frames[2], "<i4").tolist() == [1, 6]


def _random_results(n: int, num_vars: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for name, dtype, shape in RESULT_FIELDS:
        full = (n, *field_shape(shape, num_vars))
        if dtype.kind == "f":
            out[name] = rng.standard_normal(full).astype(dtype)
        else:
            info = np.iinfo(dtype)
            out[name] = rng.integers(info.min, info.max, size=full, dtype=dtype, endpoint=True)
    return out


def test_results_round_trip_is_exact_and_zero_copy() -> None:
    rng = np.random.default_rng(0)
    sent = _random_results(3, 5, rng)
    frames = encode_results(MsgType.ASYNC_RESULTS, 0, sent)
    header, got = decode_results(frames, num_vars=5)
    assert header.count == 3 and header.type == MsgType.ASYNC_RESULTS
    for name, *_ in RESULT_FIELDS:
        np.testing.assert_array_equal(got[name], sent[name])
        assert not got[name].flags.writeable  # a view of the frame, not a copy
    assert encode_results(MsgType.ASYNC_RESULTS, 0, got) == frames


def test_results_body_holds_the_arrays_in_order_at_aligned_offsets() -> None:
    """docs/protocol.md: one body frame, the arrays back to back in table order, each [n, ...], each starting at a
    multiple of 8 bytes, the padding zero."""
    n, num_vars = 3, 5
    sent = _random_results(n, num_vars, np.random.default_rng(2))
    _, body = encode_results(MsgType.ASYNC_RESULTS, 0, sent)
    offset = 0
    for name, dtype, shape in RESULT_FIELDS:
        size = n * int(np.prod(field_shape(shape, num_vars), dtype=np.int64)) * dtype.itemsize
        assert offset % RESULT_ALIGN == 0
        assert body[offset : offset + size] == np.ascontiguousarray(sent[name], dtype).tobytes(), name
        end = offset + size
        offset = -(-end // RESULT_ALIGN) * RESULT_ALIGN
        assert body[end:offset] == bytes(offset - end), f"padding after {name}"
    assert len(body) == offset == results_layout(n, num_vars)[0]


def test_results_with_a_wrong_frame_size_are_rejected() -> None:
    frames = encode_results(MsgType.RESULTS, 1, _random_results(2, 4, np.random.default_rng(1)))
    with pytest.raises(ProtocolError, match="vars"):
        decode_results(frames, num_vars=3)
    with pytest.raises(ProtocolError, match="frames"):
        decode_results(frames[:-1], num_vars=4)
