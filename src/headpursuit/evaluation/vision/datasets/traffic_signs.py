"""GTSRB-like traffic signs, drawn with Pillow: 10 of GTSRB's classes, by their GTSRB names.

Each 48×48 image shows one sign (its shape, colours and symbol as in the German code) at a
random size, position, tilt and perspective squash, lit brighter or darker, on a random
outdoor-looking background (sky, foliage or wall colours with noise), blurred and noisy as
GTSRB's road-camera crops are.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .drawing import BIG, blend, finish, fractal_noise, jitter, to_image, uniform
from .house_numbers import _font, font_paths

SALT = "traffic-signs"
QUESTION = "What traffic sign is this?"
CLASS_NAMES = [
    "speed limit 30 km/h",
    "speed limit 50 km/h",
    "stop",
    "yield",
    "no entry",
    "priority road",
    "general caution",
    "no vehicles",
    "turn left ahead",
    "turn right ahead",
]
RED = (200, 25, 30)
WHITE = (245, 245, 240)
BLUE = (20, 70, 170)
YELLOW = (250, 195, 20)
BLACK = (20, 20, 20)
BACKGROUNDS = [(120, 170, 230), (60, 110, 50), (140, 140, 135), (180, 160, 120), (40, 50, 60)]

Point = tuple[float, float]


def _polygon(cx: float, cy: float, r: float, n: int, start: float) -> list[Point]:
    return [
        (
            cx + r * math.cos(start + 2 * math.pi * k / n),
            cy + r * math.sin(start + 2 * math.pi * k / n),
        )
        for k in range(n)
    ]


def _text(
    draw: ImageDraw.ImageDraw,
    text: str,
    cx: float,
    cy: float,
    size: int,
    fill: tuple[int, int, int],
) -> None:
    fonts = font_paths()
    bold = [p for p in fonts if "Bold" in p] or list(fonts) or [""]
    draw.text((cx, cy), text, font=_font(bold[0], size), fill=fill, anchor="mm")


def _arrow(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, right: bool) -> None:
    """White 'turn ahead' arrow: a stem up from the bottom, bending towards one side."""
    w = 0.16 * r
    side = 1 if right else -1
    draw.line(
        [(cx - side * 0.25 * r, cy + 0.6 * r), (cx - side * 0.25 * r, cy)],
        fill=WHITE,
        width=int(2 * w),
    )
    draw.pieslice(
        [cx - side * 0.25 * r - w, cy - w, cx - side * 0.25 * r + w, cy + w], 0, 360, fill=WHITE
    )
    draw.line([(cx - side * 0.25 * r, cy), (cx + side * 0.2 * r, cy)], fill=WHITE, width=int(2 * w))
    tip = cx + side * 0.6 * r
    draw.polygon(
        [(tip, cy), (cx + side * 0.15 * r, cy - 0.38 * r), (cx + side * 0.15 * r, cy + 0.38 * r)],
        fill=WHITE,
    )


def _sign(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float) -> None:
    name = CLASS_NAMES[label]
    box = [cx - r, cy - r, cx + r, cy + r]
    if name.startswith("speed limit") or name == "no vehicles":
        draw.ellipse(box, fill=RED)
        inner = 0.75 * r
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=WHITE)
        if name.startswith("speed limit"):
            _text(draw, name.split()[2], cx, cy, int(0.95 * r), BLACK)
    elif name == "stop":
        draw.polygon(_polygon(cx, cy, r, 8, math.pi / 8), fill=WHITE)
        draw.polygon(_polygon(cx, cy, 0.9 * r, 8, math.pi / 8), fill=RED)
        _text(draw, "STOP", cx, cy, int(0.55 * r), WHITE)
    elif name == "yield":  # point down
        draw.polygon(_polygon(cx, cy - 0.1 * r, 1.1 * r, 3, math.pi / 2), fill=RED)
        draw.polygon(_polygon(cx, cy - 0.1 * r, 0.62 * r, 3, math.pi / 2), fill=WHITE)
    elif name == "general caution":  # point up
        draw.polygon(_polygon(cx, cy + 0.1 * r, 1.1 * r, 3, -math.pi / 2), fill=RED)
        draw.polygon(_polygon(cx, cy + 0.1 * r, 0.7 * r, 3, -math.pi / 2), fill=WHITE)
        draw.rectangle([cx - 0.07 * r, cy - 0.25 * r, cx + 0.07 * r, cy + 0.25 * r], fill=BLACK)
        draw.ellipse([cx - 0.08 * r, cy + 0.35 * r, cx + 0.08 * r, cy + 0.5 * r], fill=BLACK)
    elif name == "no entry":
        draw.ellipse(box, fill=RED)
        draw.rectangle([cx - 0.7 * r, cy - 0.17 * r, cx + 0.7 * r, cy + 0.17 * r], fill=WHITE)
    elif name == "priority road":
        draw.polygon(_polygon(cx, cy, r, 4, 0), fill=WHITE)
        draw.polygon(_polygon(cx, cy, 0.65 * r, 4, 0), fill=YELLOW)
    else:  # turn left / right ahead
        draw.ellipse(box, fill=WHITE)
        draw.ellipse([cx - 0.93 * r, cy - 0.93 * r, cx + 0.93 * r, cy + 0.93 * r], fill=BLUE)
        _arrow(draw, cx, cy, r, right=name.endswith("right ahead"))


def draw_sign(label: int, rng: np.random.Generator) -> Image.Image:
    """A 48×48 photo-like crop of traffic sign ``label`` (index into ``CLASS_NAMES``)."""
    base = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    pixels = blend(jitter(rng, base, 40), jitter(rng, base, 60), fractal_noise(rng, BIG))
    image = to_image(pixels)
    layer = Image.new("RGBA", (BIG, BIG), (0, 0, 0, 0))
    r = uniform(rng, 0.28, 0.44) * BIG
    cx = BIG / 2 + uniform(rng, -0.08, 0.08) * BIG
    cy = BIG / 2 + uniform(rng, -0.08, 0.08) * BIG
    if rng.random() < 0.4:  # the post below the sign
        post = ImageDraw.Draw(image)
        post.rectangle([cx - 0.06 * r, cy, cx + 0.06 * r, BIG], fill=(110, 110, 110))
    _sign(ImageDraw.Draw(layer), label, cx, cy, r)
    squash = uniform(rng, 0.75, 1.0)
    layer = layer.transform(
        layer.size,
        Image.AFFINE,
        (1 / squash, 0, cx - cx / squash, 0, 1, 0),
        resample=Image.BILINEAR,
    )
    layer = layer.rotate(uniform(rng, -10, 10), resample=Image.BILINEAR, center=(cx, cy))
    image.paste(layer, (0, 0), layer)
    light = uniform(rng, 0.45, 1.25)
    cast = np.asarray([uniform(rng, 0.85, 1.15) for _ in range(3)], np.float32)
    image = to_image(np.asarray(image, np.float32) * light * cast)
    return finish(image, rng, blur=(0.0, 1.2), noise=(1.0, 9.0))
