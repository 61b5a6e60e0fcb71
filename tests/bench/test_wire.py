"""The wire benchmark measures real results from a real server: every env step carries the observation arrays."""

from __future__ import annotations

from beast.bench import wire
from beast.config import Config

# RGB, depth and enemy mask at 64x64 (uint8) and 1024 stereo int16 samples: the floor of an env step's results.
OBSERVATION_BYTES = 3 * 64 * 64 + 64 * 64 + 64 * 64 + 2 * 1024 * 2


def test_an_env_step_carries_its_observations_and_the_codec_rows_follow(monkeypatch) -> None:
    monkeypatch.setattr(wire, "SAMPLE_STEPS", 20)
    cfg = Config(scenario="basic", envs_per_server=2)
    payloads = wire.step_payloads(cfg, steps=20)
    assert len(payloads) == 2 * 20 and len({len(p) for p in payloads}) == 1
    assert OBSERVATION_BYTES < len(payloads[0]) < OBSERVATION_BYTES + 512  # plus reward, flags, game variables
    rows = {row.name: row for row in wire.run(cfg)}
    assert rows["results per env step"].value == len(payloads[0])
    assert rows["zlib level 1: compressed size"].value > 1.0
    assert all(row.value > 0 for row in rows.values())
