"""Properties of the games behind the server: seeded determinism and the enemy mask, on real scenarios."""

from __future__ import annotations

import numpy as np

from beast.envs import EnvClient, EnvServer


def _rollout(binary: str, scenario: str, seed: int, actions: np.ndarray) -> list[dict[str, bytes]]:
    """Bytes of every array of reset + one step per row of `actions` [T, K]."""
    server = EnvServer(scenario=scenario, num_envs=actions.shape[1], seed=seed, binary=binary)
    with server as srv, EnvClient(srv.address) as c:
        outs = [c.reset()]
        outs += [c.step(a) for a in actions]
    return [{k: v.tobytes() for k, v in o.items()} for o in outs]


def test_same_seed_same_actions_give_identical_bytes_and_another_seed_differs(envserver_binary: str) -> None:
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, size=(40, 2))
    a = _rollout(envserver_binary, "basic", 11, actions)
    b = _rollout(envserver_binary, "basic", 11, actions)
    c = _rollout(envserver_binary, "basic", 12, actions)
    assert a == b
    assert any(x["rgb"] != y["rgb"] for x, y in zip(a, c, strict=True))
    # the two envs of one server are seeded differently too
    first = np.frombuffer(a[0]["rgb"], np.uint8).reshape(2, -1)
    assert (first[0] != first[1]).any()


def _enemy_pixels(binary: str, scenario: str, steps: int, action: int) -> list[int]:
    with EnvServer(scenario=scenario, num_envs=1, seed=1, binary=binary) as srv, EnvClient(srv.address) as c:
        counts = [int(np.count_nonzero(c.reset()["enemy"]))]
        for _ in range(steps):
            counts.append(int(np.count_nonzero(c.step([action])["enemy"])))
    return counts


def test_enemy_mask_shows_monsters_in_view_and_nothing_where_there_are_none(envserver_binary: str) -> None:
    # deadly_corridor: the corridor's monsters stand in view from the start.
    assert max(_enemy_pixels(envserver_binary, "deadly_corridor", 10, 0)) > 0
    # health_gathering: medkits and acid, no monsters at all.
    assert max(_enemy_pixels(envserver_binary, "health_gathering", 10, 0)) == 0
