"""Config is the one source of settings: every field documented, validated, and round-tripped."""

from __future__ import annotations

import dataclasses

import pytest

from beast.config import Config, ConfigError


def test_every_field_has_help_text() -> None:
    for f in dataclasses.fields(Config):
        assert f.metadata.get("help"), f"Config.{f.name} has no help text"


def test_defaults_validate() -> None:
    Config().validate()


def test_round_trip_through_dict_ignores_unknown_keys() -> None:
    cfg = Config(scenario="basic", batch_size=4, learning_rate=1e-3)
    data = cfg.to_dict() | {"a_setting_from_a_newer_version": 1}
    assert Config.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"mode": "fly"}, "--mode"),
        ({"batch_size": 0}, "--batch-size"),
        ({"discounting": 1.5}, "--discounting"),
        ({"headdim": 48}, "--headdim"),
        ({"logit_lower_bound": 3.0}, "--logit-lower-bound"),
        ({"scenario": "/no/such/file.cfg"}, "--scenario"),
        ({"bench_envs": "4,x"}, "--bench-envs"),
        ({"grad_norm_clipping": -1.0}, "--grad-norm-clipping"),
        ({"num_buffers": 10, "envs_per_server": 8, "batch_size": 4}, "--num-buffers"),
        ({"max_inference_batch": 0}, "--max-inference-batch"),
        ({"num_servers": 0}, "--num-servers"),  # no local servers and no remote ones: no envs
        ({"num_servers": -1, "env_servers": "tcp://127.0.0.1:5555"}, "--num-servers"),
    ],
)
def test_bad_values_name_the_flag(overrides: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        Config(**overrides).validate()


def test_a_trainer_of_remote_servers_alone_needs_no_local_one() -> None:
    Config(num_servers=0, env_servers="tcp://127.0.0.1:5555").validate()


def test_list_settings_parse() -> None:
    cfg = Config(env_servers=" tcp://10.0.0.1:5555 ,tcp://h:1,", bench_envs="4, 8", enemy_classes="A, B")
    assert cfg.remote_server_list() == ["tcp://10.0.0.1:5555", "tcp://h:1"]
    assert cfg.bench_env_counts() == [4, 8]
    assert cfg.enemy_class_list() == ["A", "B"]


def test_automatic_buffer_count_leaves_a_full_batch_beside_every_filling_env() -> None:
    cfg = Config(num_servers=2, envs_per_server=8, batch_size=4)
    assert cfg.buffer_count() >= cfg.num_envs() + cfg.batch_size
    assert Config(num_buffers=64).buffer_count() == 64
