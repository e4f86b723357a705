"""Shared helpers of the procedural image generators (house numbers, signs, textures, land).

Every generated image is a pure function of ``(dataset salt, seed)``: its random stream is
numpy's PCG64 seeded with both, so the same seed always draws the same picture and two
datasets never share a stream. Splits are disjoint ranges of seeds (:data:`SPLIT_OFFSETS`).
Pictures are drawn at :data:`SUPERSAMPLE` times the final size and downsampled (antialiasing).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from ....errors import InputError

CANVAS = 48
SUPERSAMPLE = 4
BIG = CANVAS * SUPERSAMPLE
SPLITS = ("train", "select", "test")
# Image i of a split is drawn from seed offset + i; the ranges never meet for n < 500,000.
SPLIT_OFFSETS = {"test": 0, "select": 500_000, "train": 1_000_000}
MAX_PER_SPLIT = 500_000

Colour = tuple[int, int, int]


def split_seeds(split: str, n: int) -> range:
    """The seeds of the first ``n`` images of ``split`` ("train", "select" or "test")."""
    if split not in SPLIT_OFFSETS:
        raise InputError(f"split must be one of {SPLITS}, not {split!r}")
    if not 0 <= n <= MAX_PER_SPLIT:
        raise InputError(f"n must be between 0 and {MAX_PER_SPLIT} images per split, not {n}")
    return range(SPLIT_OFFSETS[split], SPLIT_OFFSETS[split] + n)


def rng_for(salt: str, seed: int) -> np.random.Generator:
    """The random stream of one image: PCG64 seeded with (crc32 of ``salt``, ``seed``)."""
    return np.random.default_rng([zlib.crc32(salt.encode()), seed])


def generate(
    salt: str,
    draw: Callable[[int, np.random.Generator], Image.Image],
    n_classes: int,
    split: str,
    n: int,
) -> list[tuple[Image.Image, int]]:
    """``n`` (image, label) pairs of a split; labels cycle 0, 1, …, so every split is balanced."""
    pairs = []
    for index, seed in enumerate(split_seeds(split, n)):
        label = index % n_classes
        pairs.append((draw(label, rng_for(salt, seed)), label))
    return pairs


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high)."""
    return float(rng.uniform(low, high))


def random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> Colour:
    r, g, b = rng.integers(low, high, size=3)
    return int(r), int(g), int(b)


def jitter(rng: np.random.Generator, colour: Colour, amount: int) -> Colour:
    """``colour`` with each channel moved by up to ``amount`` (clipped to 0..255)."""
    shifted = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return int(shifted[0]), int(shifted[1]), int(shifted[2])


def luminance(colour: Colour) -> float:
    """Perceived brightness (ITU-R BT.601 weights), 0..255."""
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``[size, size]`` value noise in [0, 1]: a ``cells``² random grid, bicubically upsampled."""
    grid = (rng.random((cells + 1, cells + 1)) * 255).astype(np.uint8)
    big = Image.fromarray(grid, mode="L").resize((size, size), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def fractal_noise(
    rng: np.random.Generator, size: int, octaves: int = 4, base: int = 3
) -> np.ndarray:
    """``[size, size]`` sum of value-noise octaves (cells ``base``·2^k, halving weights), in [0, 1]."""
    total = np.zeros((size, size), np.float32)
    weight, norm = 1.0, 0.0
    for octave in range(octaves):
        total += weight * smooth_noise(rng, size, base * 2**octave)
        norm += weight
        weight *= 0.5
    return total / norm


def blend(a: Colour, b: Colour, t: np.ndarray) -> np.ndarray:
    """``[h, w, 3]`` float image: ``a`` where ``t`` = 0, ``b`` where ``t`` = 1."""
    t = t[..., None]
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def to_image(pixels: np.ndarray) -> Image.Image:
    """``[h, w, 3]`` float or int array -> RGB PIL image (clipped to 0..255)."""
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def finish(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    blur: tuple[float, float] = (0.0, 0.6),
    noise: tuple[float, float] = (0.0, 6.0),
) -> Image.Image:
    """Downsample to ``CANVAS``² (Lanczos), then a random Gaussian blur and pixel noise."""
    small = image.resize((CANVAS, CANVAS), Image.LANCZOS) if image.size[0] != CANVAS else image
    radius = uniform(rng, *blur)
    if radius > 0.05:
        small = small.filter(ImageFilter.GaussianBlur(radius))
    sigma = uniform(rng, *noise)
    pixels = np.asarray(small, np.float32)
    if sigma > 0:
        pixels = pixels + rng.normal(0.0, sigma, pixels.shape)
    return to_image(pixels)


def coordinates(size: int, angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotated pixel coordinates ``(u, v)``, each ``[size, size]``, centred, in units of ``scale`` px."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    c, s = np.cos(angle), np.sin(angle)
    return (c * x + s * y) / scale, (-s * x + c * y) / scale
