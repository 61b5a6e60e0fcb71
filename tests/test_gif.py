"""The labelled GIF frame: a fixed shape, the agent's own pixels in the panels, and text that follows the step."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from beast.gif import PANEL_NAMES, frame, write_gif

SIDE = 64
SCALE = 4


def observation(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (3, SIDE, SIDE), dtype=np.uint8)
    depth = rng.integers(0, 256, (1, SIDE, SIDE), dtype=np.uint8)
    enemy = (rng.random((1, SIDE, SIDE)) < 0.3).astype(np.uint8)
    return rgb, depth, enemy


def upscaled(chw: np.ndarray, scale: int) -> np.ndarray:
    """[C, h, w] -> [h*scale, w*scale, C] by the definition of nearest neighbour: pixel (y, x) is (y//s, x//s)."""
    ys = np.arange(chw.shape[1] * scale) // scale
    xs = np.arange(chw.shape[2] * scale) // scale
    return chw[:, ys[:, None], xs[None, :]].transpose(1, 2, 0)


def panel_top(out: np.ndarray, rgb: np.ndarray, scale: int) -> int:
    """The one row where the RGB panel (left third) starts, found by matching the upscaled input."""
    expected = upscaled(rgb, scale)
    height = expected.shape[0]
    tops = [
        y
        for y in range(out.shape[0] - height + 1)
        if np.array_equal(out[y : y + height, : expected.shape[1]], expected)
    ]
    assert len(tops) == 1, f"the upscaled RGB input appears at rows {tops} of the frame, expected exactly once"
    return tops[0]


def test_panel_names() -> None:
    assert PANEL_NAMES == ("RGB", "depth", "enemy mask")


@pytest.mark.parametrize("scale", [2, 4])
def test_shape_and_dtype_are_fixed_whatever_the_text(scale: int) -> None:
    rgb, depth, enemy = observation()
    labels = [
        (0, "ATTACK", 0.0),
        (7, "TURN_LEFT", -3.25),
        (123456, "MOVE_FORWARD+ATTACK", 123.4),
        (99, "", -98765.4),
    ]
    frames = [frame(rgb, depth, enemy, step=s, action=a, running_return=r, scale=scale) for s, a, r in labels]
    shapes = {f.shape for f in frames}
    assert len(shapes) == 1, shapes
    ((height, width, channels),) = shapes
    assert all(f.dtype == np.uint8 for f in frames)
    assert channels == 3 and width == 3 * SIDE * scale
    assert height > SIDE * scale  # room for the title and status strips
    assert height % 2 == 0 and width % 2 == 0


@pytest.mark.parametrize("scale", [1, 4])
def test_panels_are_the_upscaled_observation(scale: int) -> None:
    rgb, depth, enemy = observation(seed=1)
    out = frame(rgb, depth, enemy, step=3, action="ATTACK", running_return=1.0, scale=scale)
    top = panel_top(out, rgb, scale)
    size = SIDE * scale
    panels = out[top : top + size]
    assert top > 0 and top + size < out.shape[0]  # a title strip above, a status strip below

    np.testing.assert_array_equal(panels[:, :size], upscaled(rgb, scale))
    np.testing.assert_array_equal(panels[:, size : 2 * size], upscaled(np.repeat(depth, 3, axis=0), scale))
    mask = panels[:, 2 * size :]
    enemy_up = upscaled(enemy, scale)[..., 0]
    assert enemy_up.any() and not enemy_up.all()  # both cases are exercised
    assert (mask[enemy_up == 1] == 255).all()
    assert (mask[enemy_up == 0] == 0).all()


def test_each_panel_has_its_own_title() -> None:
    rgb, depth, enemy = observation()
    out = frame(rgb, depth, enemy, step=0, action="ATTACK", running_return=0.0)
    size = SIDE * SCALE
    titles = [out[: panel_top(out, rgb, SCALE), i * size : (i + 1) * size] for i in range(3)]
    for title in titles:
        assert len(np.unique(title.reshape(-1, 3), axis=0)) > 1  # something is drawn on the strip's background
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(titles[i], titles[j]), f"panels {i} and {j} carry the same title"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"action": "ATTACK"}, {"action": "TURN_LEFT"}),
        ({"running_return": 12.5}, {"running_return": -12.5}),
        ({"running_return": 123.4}, {"running_return": 123.3}),  # one decimal is shown
        ({"step": 41}, {"step": 42}),
    ],
)
def test_status_strip_shows_what_changed_and_nothing_else_moves(
    first: dict[str, object], second: dict[str, object]
) -> None:
    rgb, depth, enemy = observation()
    base: dict[str, object] = {"step": 10, "action": "MOVE_LEFT", "running_return": 0.0}
    a = frame(rgb, depth, enemy, **{**base, **first})  # type: ignore[arg-type]
    b = frame(rgb, depth, enemy, **{**base, **second})  # type: ignore[arg-type]
    bottom = panel_top(a, rgb, SCALE) + SIDE * SCALE
    assert not np.array_equal(a[bottom:], b[bottom:]), f"{first} and {second} give the same status strip"
    np.testing.assert_array_equal(a[:bottom], b[:bottom])  # titles and panels do not depend on the status


def test_write_gif_writes_every_frame_looping_at_the_given_rate(tmp_path: Path) -> None:
    rgb, depth, enemy = observation()
    # Different steps make every frame different: the GIF writer would merge identical consecutive frames.
    frames = [frame(rgb, depth, enemy, step=s, action="ATTACK", running_return=0.5 * s) for s in range(5)]
    path = tmp_path / "episode.gif"
    fps = 35.0 / 4

    write_gif(path, frames, fps=fps)

    read = iio.imread(path, index=None)
    assert read.shape == (len(frames), *frames[0].shape)
    meta = iio.immeta(path)
    assert meta["loop"] == 0  # forever
    assert abs(meta["duration"] - 1000.0 / fps) <= 10  # GIF stores delays in hundredths of a second
    top = panel_top(frames[0], rgb, SCALE)
    size = SIDE * SCALE
    # The black-and-white mask panel survives the GIF palette exactly.
    np.testing.assert_array_equal(read[0, top : top + size, 2 * size :], frames[0][top : top + size, 2 * size :])
