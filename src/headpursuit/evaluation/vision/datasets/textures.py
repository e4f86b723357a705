"""DTD-like procedural textures: 10 of the Describable Textures Dataset's categories, by name.

Each 48×48 image fills the frame with one pattern in random colours, scale and orientation,
with a smooth random warp of the coordinates so that no two images repeat exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .drawing import (
    coordinates,
    finish,
    fractal_noise,
    random_colour,
    smooth_noise,
    to_image,
    uniform,
)

SALT = "textures"
QUESTION = "What texture is this?"
CLASS_NAMES = [
    "striped",
    "chequered",
    "dotted",
    "zigzagged",
    "crosshatched",
    "honeycombed",
    "cracked",
    "marbled",
    "blotchy",
    "spiralled",
]
SIZE = 96  # drawn at 2× and downsampled


def _cells(u: np.ndarray, v: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance gap between the nearest and second-nearest of ``centres`` ([n, 2]) per pixel."""
    d = np.sqrt((u[..., None] - centres[:, 0]) ** 2 + (v[..., None] - centres[:, 1]) ** 2)
    d.sort(axis=-1)
    return d[..., 1] - d[..., 0]


def _pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """``[SIZE, SIZE]`` foreground weight in [0, 1] of pattern ``label``."""
    name = CLASS_NAMES[label]
    period = uniform(rng, 12, 24)
    u, v = coordinates(SIZE, uniform(rng, 0, np.pi), period)
    warp = uniform(rng, 0.0, 0.25)
    u = u + warp * (smooth_noise(rng, SIZE, 3) - 0.5) * 2
    v = v + warp * (smooth_noise(rng, SIZE, 3) - 0.5) * 2
    if name == "striped":
        return (np.sin(2 * np.pi * u) > uniform(rng, -0.4, 0.4)).astype(np.float32)
    if name == "chequered":
        return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    if name == "dotted":
        du, dv = u - np.round(u), v - np.round(v)
        return (np.sqrt(du**2 + dv**2) < uniform(rng, 0.18, 0.32)).astype(np.float32)
    if name == "zigzagged":
        tooth = uniform(rng, 0.8, 1.6)
        triangle = np.abs((v / tooth) % 2 - 1) * uniform(rng, 0.6, 1.2)
        return (np.sin(2 * np.pi * (u + triangle)) > 0).astype(np.float32)
    if name == "crosshatched":
        line = uniform(rng, 0.06, 0.12)
        a = np.abs((u + v) / 1.4 % 1 - 0.5) > 0.5 - line
        b = np.abs((u - v) / 1.4 % 1 - 0.5) > 0.5 - line
        return (a | b).astype(np.float32)
    if name == "honeycombed":
        u, v = u / 1.5, v / 1.5  # cells larger than the other patterns' periods
        rows, cols = np.mgrid[-12:13, -12:13].astype(np.float32)
        centres = np.stack([cols + 0.5 * (rows % 2), rows * np.sqrt(3) / 2], -1).reshape(-1, 2)
        keep = (np.abs(centres) < SIZE / period / 1.8 + 2).all(-1)
        return (_cells(u, v, centres[keep]) < uniform(rng, 0.06, 0.12)).astype(np.float32)
    if name == "cracked":
        extent = SIZE / period / 1.2 + 1
        centres = rng.uniform(-extent, extent, size=(int(4 * extent**2 * 0.8), 2))
        return (_cells(u, v, centres) < uniform(rng, 0.05, 0.1)).astype(np.float32)
    if name == "marbled":
        turbulence = fractal_noise(rng, SIZE, octaves=4, base=2)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (0.4 * u + uniform(rng, 3, 6) * turbulence))
    if name == "blotchy":
        noise = fractal_noise(rng, SIZE, octaves=3, base=int(rng.integers(3, 6)))
        return (noise > np.quantile(noise, uniform(rng, 0.4, 0.7))).astype(np.float32)
    # spiralled: arms around a centre near the middle
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cx, cy = SIZE / 2 + uniform(rng, -12, 12), SIZE / 2 + uniform(rng, -12, 12)
    radius = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    theta = np.arctan2(y - cy, x - cx)
    arms = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
    return (np.sin(arms * theta + 2 * np.pi * radius / period) > 0).astype(np.float32)


def draw_texture(label: int, rng: np.random.Generator) -> Image.Image:
    """A 48×48 texture of category ``label`` (index into ``CLASS_NAMES``)."""
    weight = _pattern(label, rng)
    while True:
        back, front = random_colour(rng), random_colour(rng)
        if np.abs(np.subtract(back, front)).sum() > 150:
            break
    shade = 1 + uniform(rng, 0.0, 0.3) * (fractal_noise(rng, SIZE, octaves=2) - 0.5)
    pixels = np.asarray(back) * (1 - weight[..., None]) + np.asarray(front) * weight[..., None]
    return finish(to_image(pixels * shade[..., None]), rng, blur=(0.0, 0.5), noise=(0.0, 6.0))
