"""Land-cover scenes drawn two ways: EuroSAT-like (satellite) and RESISC45-like (aerial).

Both sets share the same 10 classes and question, so they are a pair of similar tasks (as
EuroSAT and RESISC45 are in the paper). They differ in how the ground is seen:

- **satellite** (EuroSAT-like, Sentinel-2 at 10 m per pixel): the scene is laid out on a
  24×24 grid of "ground pixels" and upsampled; classes show as colour fields, fine
  speckle and thin lines, in hazy, muted colours.
- **aerial** (RESISC45-like, under a metre per pixel): the scene is drawn at 192×192 with
  objects one can count (tree crowns, roofs, cars, lane markings, crop rows, waves) and
  downsampled, in brighter natural colours.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .drawing import (
    BIG,
    CANVAS,
    Colour,
    blend,
    finish,
    fractal_noise,
    jitter,
    smooth_noise,
    to_image,
    uniform,
)

QUESTION = "What kind of land is this?"
CLASS_NAMES = [
    "forest",
    "river",
    "lake",
    "highway",
    "residential",
    "industrial",
    "farmland",
    "meadow",
    "orchard",
    "beach",
]
SATELLITE_SALT = "land-satellite"
AERIAL_SALT = "land-aerial"
LOW = 24  # ground pixels per side of a satellite scene


def _curve(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Signed distance (pixels) to a random gently curving line across a ``size``² frame."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = uniform(rng, 0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    along = c * (x - size / 2) + s * (y - size / 2)
    across = -s * (x - size / 2) + c * (y - size / 2)
    bend = uniform(rng, 0, 0.12) * size
    wiggle = bend * np.sin(
        2 * math.pi * along / (size * uniform(rng, 0.6, 1.4)) + uniform(rng, 0, 6.3)
    )
    return across - wiggle - uniform(rng, -0.2, 0.2) * size, angle


def _water_mask(rng: np.random.Generator, size: int, cover: tuple[float, float]) -> np.ndarray:
    """Boolean ``[size, size]``: a smooth blob covering a random share ``cover`` of the frame."""
    noise = fractal_noise(rng, size, octaves=3, base=2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = uniform(rng, 0.2, 0.8), uniform(rng, 0.2, 0.8)
    field = noise - 0.8 * np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return field > np.quantile(field, 1 - uniform(rng, *cover))


def _parcels(rng: np.random.Generator, size: int, n_cuts: int) -> np.ndarray:
    """Integer ``[size, size]`` parcel ids from ``n_cuts`` straight cuts across the frame."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    ids = np.zeros((size, size), np.int64)
    base = uniform(rng, 0, math.pi)
    for k in range(n_cuts):
        angle = base + (math.pi / 2 if k % 2 else 0) + uniform(rng, -0.1, 0.1)
        offset = uniform(rng, -0.35, 0.35) * size
        side = (math.cos(angle) * (x - size / 2) + math.sin(angle) * (y - size / 2)) > offset
        ids = ids * 2 + side
    return ids


# ---------------------------------------------------------------- satellite (EuroSAT-like)

SAT_FOREST = (38, 62, 40)
SAT_MEADOW = (112, 140, 82)
SAT_SOIL = (132, 112, 90)
SAT_WATER = (32, 48, 78)
SAT_GREY = (150, 148, 146)
SAT_SAND = (196, 184, 150)
SAT_CROPS = [(96, 132, 70), (150, 150, 92), (128, 104, 80), (78, 112, 60), (170, 160, 110)]


def _sat_background(rng: np.random.Generator, colour: Colour, amount: int = 18) -> np.ndarray:
    return blend(jitter(rng, colour, amount), jitter(rng, colour, amount), fractal_noise(rng, LOW))


def _satellite_pixels(label: int, rng: np.random.Generator) -> np.ndarray:
    name = CLASS_NAMES[label]
    n = LOW
    if name == "forest":
        mottle = smooth_noise(rng, n, 12)
        return blend(jitter(rng, SAT_FOREST, 10), jitter(rng, SAT_FOREST, 25), mottle)
    if name == "meadow":
        return _sat_background(rng, SAT_MEADOW, 20)
    if name in ("farmland", "orchard"):
        ids = _parcels(rng, n, int(rng.integers(2, 5)))
        colours = [jitter(rng, SAT_CROPS[int(rng.integers(len(SAT_CROPS)))], 15) for _ in range(32)]
        pixels = np.asarray(colours, np.float32)[ids % 32]
        if name == "orchard":  # rows of tree dots over the parcels
            step = int(rng.integers(2, 4))
            dots = np.zeros((n, n), bool)
            dots[::step, ::step] = True
            dots = np.roll(dots, (int(rng.integers(step)), int(rng.integers(step))), (0, 1))
            pixels[dots] = jitter(rng, SAT_FOREST, 12)
        return pixels + rng.normal(0, 4, pixels.shape)
    if name in ("residential", "industrial"):
        pixels = _sat_background(rng, SAT_MEADOW if name == "residential" else SAT_GREY, 15)
        if name == "residential":
            roofs = rng.random((n, n)) < 0.55
            palette = np.asarray(
                [(170, 120, 105), (150, 150, 150), (190, 180, 170), (120, 100, 95)]
            )
            pixels[roofs] = palette[rng.integers(len(palette), size=int(roofs.sum()))]
            step = int(rng.integers(4, 7))
            pixels[::step, :] = jitter(rng, SAT_GREY, 10)
            pixels[:, ::step] = jitter(rng, SAT_GREY, 10)
        else:
            for _ in range(int(rng.integers(3, 7))):
                w, h = rng.integers(3, 11, size=2)
                x, y = rng.integers(0, n - 2, size=2)
                roof = jitter(rng, (210, 212, 215) if rng.random() < 0.7 else (140, 170, 200), 20)
                pixels[y : y + h, x : x + w] = roof
        return pixels + rng.normal(0, 5, pixels.shape)
    if name in ("highway", "river"):
        pixels = _sat_background(rng, SAT_CROPS[int(rng.integers(len(SAT_CROPS)))], 20)
        distance, _ = _curve(rng, n)
        width = uniform(rng, 0.6, 1.3) if name == "highway" else uniform(rng, 0.8, 2.0)
        colour = jitter(rng, SAT_GREY if name == "highway" else SAT_WATER, 12)
        weight = np.clip(width - np.abs(distance) + 0.5, 0, 1)
        return pixels * (1 - weight[..., None]) + np.asarray(colour) * weight[..., None]
    if name == "lake":
        pixels = _sat_background(rng, SAT_MEADOW if rng.random() < 0.5 else SAT_FOREST, 20)
        water = _water_mask(rng, n, (0.4, 0.95))
        pixels[water] = jitter(rng, SAT_WATER, 10) + rng.normal(0, 2, (int(water.sum()), 3))
        return pixels
    # beach: sea | sand | land across a straight coast
    distance, _ = _curve(rng, n)
    sand = uniform(rng, 1.0, 3.0)
    pixels = _sat_background(rng, SAT_MEADOW, 20)
    pixels[distance < sand] = jitter(rng, SAT_SAND, 12)
    pixels[distance < 0] = jitter(rng, SAT_WATER, 12)
    return pixels + rng.normal(0, 3, pixels.shape)


def draw_satellite(label: int, rng: np.random.Generator) -> Image.Image:
    """A 48×48 EuroSAT-like scene of class ``label`` (index into ``CLASS_NAMES``)."""
    pixels = _satellite_pixels(label, rng)
    haze = uniform(rng, 0.0, 0.35)
    pixels = pixels * (1 - haze) + np.asarray((150, 160, 175), np.float32) * haze
    small = to_image(pixels * uniform(rng, 0.8, 1.15))
    image = small.resize((CANVAS, CANVAS), Image.BILINEAR)
    return finish(image, rng, blur=(0.0, 0.4), noise=(1.0, 4.0))


# ---------------------------------------------------------------- aerial (RESISC45-like)

AIR_GRASS = (104, 150, 70)
AIR_TREE = (40, 90, 40)
AIR_SOIL = (150, 120, 85)
AIR_ASPHALT = (70, 72, 75)
AIR_CONCRETE = (175, 172, 165)
AIR_WATER = (40, 95, 130)
AIR_SAND = (225, 205, 160)


def _crowns(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    centres: list[tuple[float, float]],
    radius: tuple[float, float],
) -> None:
    """Tree crowns: a dark shadow disc offset down-right, then a lit crown."""
    for x, y in centres:
        r = uniform(rng, *radius)
        shade = jitter(rng, AIR_TREE, 18)
        draw.ellipse([x - r + 3, y - r + 3, x + r + 3, y + r + 3], fill=(25, 35, 25))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
        highlight = tuple(min(255, c + 25) for c in shade)
        draw.ellipse([x - r / 2, y - r / 2, x + r / 4, y + r / 4], fill=highlight)


def _ground(rng: np.random.Generator, colour: Colour, amount: int = 20) -> Image.Image:
    return to_image(
        blend(jitter(rng, colour, amount), jitter(rng, colour, amount), fractal_noise(rng, BIG))
    )


def _houses(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, block: tuple[float, float, float, float]
) -> None:
    """Small houses with two-tone gable roofs inside ``block`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = block
    roofs = [(170, 70, 55), (120, 120, 125), (150, 100, 70), (200, 200, 195)]
    y = y0 + 3
    while y + 14 < y1:
        x = x0 + 3
        h = uniform(rng, 12, 18)
        while x + 14 < x1:
            w = uniform(rng, 12, 20)
            roof = jitter(rng, roofs[int(rng.integers(len(roofs)))], 15)
            dark = tuple(int(c * 0.75) for c in roof)
            draw.rectangle([x, y, x + w, y + h / 2], fill=roof)
            draw.rectangle([x, y + h / 2, x + w, y + h], fill=dark)
            x += w + uniform(rng, 5, 10)
        y += h + uniform(rng, 6, 10)


def _cars(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    spots: list[tuple[float, float]],
    along: float,
) -> None:
    for x, y in spots:
        colour = jitter(
            rng,
            [(200, 30, 30), (230, 230, 230), (30, 30, 30), (40, 60, 160)][int(rng.integers(4))],
            20,
        )
        dx, dy = 5 * math.cos(along), 5 * math.sin(along)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=5)


def _aerial_image(label: int, rng: np.random.Generator) -> Image.Image:
    name = CLASS_NAMES[label]
    n = BIG
    if name == "forest":
        image = _ground(rng, (30, 60, 30))
        draw = ImageDraw.Draw(image)
        centres = [
            (uniform(rng, -5, n + 5), uniform(rng, -5, n + 5))
            for _ in range(int(rng.integers(110, 170)))
        ]
        _crowns(draw, rng, centres, (9, 16))
        return image
    if name == "meadow":
        image = _ground(rng, AIR_GRASS, 25)
        draw = ImageDraw.Draw(image)
        centres = [(uniform(rng, 0, n), uniform(rng, 0, n)) for _ in range(int(rng.integers(0, 6)))]
        _crowns(draw, rng, centres, (5, 10))
        return image
    if name == "orchard":
        image = _ground(rng, AIR_SOIL if rng.random() < 0.5 else AIR_GRASS)
        draw = ImageDraw.Draw(image)
        step = uniform(rng, 18, 28)
        angle = uniform(rng, -0.3, 0.3)
        centres = []
        for i in range(-2, int(n / step) + 3):
            for j in range(-2, int(n / step) + 3):
                u, v = i * step, j * step
                centres.append(
                    (
                        u * math.cos(angle) - v * math.sin(angle),
                        u * math.sin(angle) + v * math.cos(angle),
                    )
                )
        _crowns(draw, rng, centres, (step * 0.25, step * 0.35))
        return image
    if name == "farmland":
        ids = _parcels(rng, n, int(rng.integers(1, 4)))
        crops = [(120, 160, 60), (200, 180, 90), (150, 110, 70), (90, 140, 60), (215, 200, 130)]
        pixels = np.zeros((n, n, 3), np.float32)
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        for parcel in np.unique(ids):
            inside = ids == parcel
            colour = np.asarray(jitter(rng, crops[int(rng.integers(len(crops)))], 15), np.float32)
            angle = uniform(rng, 0, math.pi)
            rows = np.sin(
                2 * math.pi * (math.cos(angle) * x + math.sin(angle) * y) / uniform(rng, 5, 9)
            )
            pixels[inside] = colour * (1 + 0.12 * rows[inside][:, None])
        return to_image(pixels)
    if name in ("residential", "industrial"):
        image = _ground(rng, AIR_GRASS if name == "residential" else AIR_CONCRETE, 15)
        draw = ImageDraw.Draw(image)
        step = uniform(rng, 60, 90) if name == "residential" else uniform(rng, 90, 130)
        offset = uniform(rng, 0, step)
        road = 9 if name == "residential" else 12
        lines = [offset + k * step for k in range(-1, int(n / step) + 2)]
        for a in lines:
            for b in lines:
                block = (a + road, b + road, a + step - road, b + step - road)
                if name == "residential":
                    _houses(draw, rng, block)
                    if rng.random() < 0.5:
                        _crowns(draw, rng, [(block[2] - 6, block[3] - 6)], (5, 8))
                elif rng.random() < 0.75:
                    roof = jitter(
                        rng,
                        [(215, 215, 218), (150, 175, 200), (185, 180, 170)][int(rng.integers(3))],
                        12,
                    )
                    draw.rectangle(block, fill=roof)
                    for _ in range(int(rng.integers(0, 4))):
                        u, v = (
                            uniform(rng, block[0], block[2] - 8),
                            uniform(rng, block[1], block[3] - 8),
                        )
                        draw.rectangle([u, v, u + 7, v + 7], fill=(120, 120, 120))
                else:  # a parking lot
                    spots = [
                        (block[0] + 6 + 8 * k, block[1] + 10)
                        for k in range(int((block[2] - block[0]) / 8) - 1)
                    ]
                    _cars(draw, rng, spots, math.pi / 2)
        for a in lines:
            draw.rectangle([a - road, 0, a + road, n], fill=AIR_ASPHALT)
            draw.rectangle([0, a - road, n, a + road], fill=AIR_ASPHALT)
        return image
    if name in ("highway", "river"):
        image = _ground(rng, AIR_GRASS if rng.random() < 0.6 else AIR_SOIL, 25)
        distance, angle = _curve(rng, n)
        if name == "river":
            width = uniform(rng, 18, 40)
            water = jitter(rng, AIR_WATER if rng.random() < 0.6 else (95, 100, 70), 15)
            bank = np.clip(width + 6 - np.abs(distance), 0, 1)[..., None]
            inside = np.clip(width - np.abs(distance), 0, 1)[..., None]
            pixels = np.asarray(image, np.float32)
            pixels = pixels * (1 - bank) + np.asarray(AIR_SAND, np.float32) * bank
            pixels = pixels * (1 - inside) + np.asarray(water, np.float32) * inside
            image = to_image(pixels)
            draw = ImageDraw.Draw(image)
            shore = np.argwhere(np.abs(np.abs(distance) - width - 16) < 1.0)
            picks = shore[rng.permutation(len(shore))[: int(rng.integers(5, 20))]]
            _crowns(draw, rng, [(float(c), float(r)) for r, c in picks], (5, 10))
            return image
        lanes = int(rng.integers(2, 4))
        width = 9.0 * lanes
        pixels = np.asarray(image, np.float32)
        for sign in (-1, 1):
            road = np.clip(width - np.abs(distance - sign * (width + 4)) + 0.5, 0, 1)[..., None]
            pixels = (
                pixels * (1 - road) + np.asarray(jitter(rng, AIR_ASPHALT, 8), np.float32) * road
            )
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        along = math.cos(angle) * x + math.sin(angle) * y
        dashes = (np.sin(2 * math.pi * along / 16) > 0.2).astype(np.float32)
        for sign in (-1, 1):
            for k in range(1, lanes):
                centre = sign * (width + 4) - width + 2 * width * k / lanes
                mark = (np.abs(distance - centre) < 1.0) * dashes
                pixels[mark > 0] = (235, 235, 230)
        image = to_image(pixels)
        draw = ImageDraw.Draw(image)
        spots = np.argwhere(np.abs(np.abs(distance) - width / 2 - 4) < 0.7)
        picks = spots[rng.permutation(len(spots))[: int(rng.integers(3, 12))]]
        _cars(draw, rng, [(float(c), float(r)) for r, c in picks], angle)
        return image
    if name == "lake":
        image = _ground(rng, AIR_GRASS, 20)
        water = _water_mask(rng, n, (0.5, 0.9))
        pixels = np.asarray(image, np.float32)
        ripples = 1 + 0.06 * np.sin(np.mgrid[0:n, 0:n][0] / uniform(rng, 2, 4))
        pixels[water] = np.asarray(jitter(rng, AIR_WATER, 20), np.float32) * ripples[water][:, None]
        image = to_image(pixels)
        draw = ImageDraw.Draw(image)
        land = np.argwhere(~water)
        picks = land[rng.permutation(len(land))[: int(rng.integers(5, 30))]]
        _crowns(draw, rng, [(float(c), float(r)) for r, c in picks], (5, 11))
        return image
    # beach: sea with foam lines, wet and dry sand, land beyond
    distance, _ = _curve(rng, n)
    sand = uniform(rng, 40, 90)
    pixels = np.asarray(_ground(rng, AIR_GRASS, 20), np.float32)
    sea = distance < 0
    depth = np.clip(-distance / 80, 0, 1)[..., None]
    sea_colour = blend(
        jitter(rng, (80, 170, 190), 15), jitter(rng, (30, 80, 140), 15), depth[..., 0]
    )
    pixels[sea] = sea_colour[sea]
    beach = (distance >= 0) & (distance < sand)
    pixels[beach] = np.asarray(jitter(rng, AIR_SAND, 12), np.float32)
    foam = (distance < 0) & (np.abs((-distance) % 14 - 7) < 1.2) & (distance > -45)
    pixels[foam] = (240, 245, 245)
    image = to_image(pixels)
    draw = ImageDraw.Draw(image)
    spots = np.argwhere(beach)
    for r, c in spots[rng.permutation(len(spots))[: int(rng.integers(0, 12))]]:
        colour = jitter(
            rng, [(230, 60, 50), (250, 200, 40), (60, 120, 220)][int(rng.integers(3))], 20
        )
        draw.ellipse([c - 4, r - 4, c + 4, r + 4], fill=colour)
    return image


def draw_aerial(label: int, rng: np.random.Generator) -> Image.Image:
    """A 48×48 RESISC45-like scene of class ``label`` (index into ``CLASS_NAMES``)."""
    image = _aerial_image(label, rng)
    pixels = np.asarray(image, np.float32) * uniform(rng, 0.85, 1.15)
    return finish(to_image(pixels), rng, blur=(0.0, 0.4), noise=(0.0, 4.0))
