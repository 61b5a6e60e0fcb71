"""The test-mode GIF: what the agent saw, what it did, and how it is scoring, one labelled frame per agent step.

A GIF is watched by a person who has to judge the policy: does it turn towards the enemy, does it fire when the
enemy is in its sights, does the return rise when it does. Three unlabelled grey-and-colour squares do not answer
that, so every frame names its panels (RGB, depth, enemy mask) and carries a status line with the step, the
action taken (ATTACK highlighted, since firing is the decision most worth seeing) and the running return.

Layout, uint8 [H, W, 3] with H = title + 64*scale + status and W = 3*64*scale (for 64x64 observations): a title
strip above each panel, the panels side by side with nothing between them (each exactly the nearest-neighbour
upscale of its observation, so the pixels are the agent's), and one status strip below. The strips' heights
depend only on the font and `scale`, never on the text, so every frame of a GIF has the same shape.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL_NAMES = ("RGB", "depth", "enemy mask")
BACKGROUND = (48, 48, 48)  # dark grey, not black: where a black panel (no enemy, near depth) ends stays visible
TEXT = (255, 255, 255)
FIRE = (255, 200, 0)  # the colour of an action that fires, so shots stand out while the GIF plays
PAD = 3  # pixels of strip above and below the text


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default()


@functools.lru_cache(maxsize=1)
def _line_height() -> int:
    # From the tallest glyphs (caps, ascenders, descenders), not from the text drawn, so strips never resize;
    # measured down from the text origin, which is where draw.text puts the top of a line.
    return int(_font().getbbox("Ag|_y+-")[3])


def _strip_height() -> int:
    height = _line_height() + 2 * PAD
    return height + height % 2  # even, so that H stays even for video encoders and GIF viewers alike


def _grey(channel: np.ndarray) -> np.ndarray:
    return np.repeat(channel, 3, axis=0)


def frame(
    rgb: np.ndarray,
    depth: np.ndarray,
    enemy: np.ndarray,
    *,
    step: int,
    action: str,
    running_return: float,
    scale: int = 4,
) -> np.ndarray:
    """One GIF frame from one observation: rgb uint8 [3, h, w], depth uint8 [1, h, w], enemy [1, h, w] (0/1)
    -> uint8 [title + h*scale + status, 3*w*scale, 3] (see the module docstring for the layout)."""
    rgb, depth, enemy = np.asarray(rgb, np.uint8), np.asarray(depth, np.uint8), np.asarray(enemy)
    if rgb.ndim != 3 or rgb.shape[0] != 3 or depth.shape != (1, *rgb.shape[1:]) or enemy.shape != depth.shape:
        raise ValueError(
            f"frame() needs rgb [3, h, w], depth [1, h, w] and enemy [1, h, w]; got {rgb.shape}, {depth.shape}, "
            f"{enemy.shape}"
        )
    if scale < 1:
        raise ValueError(f"frame() needs scale >= 1, got {scale}")
    mask = (enemy > 0).astype(np.uint8) * 255
    chw = np.concatenate([rgb, _grey(depth), _grey(mask)], axis=2)  # [3, h, 3w]
    panels = np.ascontiguousarray(chw.transpose(1, 2, 0)).repeat(scale, axis=0).repeat(scale, axis=1)
    panel_h, width = panels.shape[:2]
    panel_w = width // 3

    strip = _strip_height()
    image = Image.new("RGB", (width, strip + panel_h + strip), BACKGROUND)
    image.paste(Image.fromarray(panels), (0, strip))
    draw = ImageDraw.Draw(image)
    font = _font()
    for i, name in enumerate(PANEL_NAMES):
        x = i * panel_w + (panel_w - font.getlength(name)) / 2
        draw.text((x, PAD), name, fill=TEXT, font=font)

    # Each field at a fixed x, so the action and the return stay put while the step counter grows.
    y = strip + panel_h + PAD
    fields = [
        (f"step {step}", TEXT),
        (action, FIRE if "ATTACK" in action else TEXT),
        (f"return {running_return:+.1f}", TEXT),
    ]
    for i, (text, colour) in enumerate(fields):
        draw.text((i * panel_w + PAD, y), text, fill=colour, font=font)
    return np.array(image)  # a writable copy, like the panels evaluate.py made before


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write `frames` (uint8 [H, W, 3], all one shape) as a GIF at `fps`, looping forever."""
    import imageio.v3 as iio

    iio.imwrite(path, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
