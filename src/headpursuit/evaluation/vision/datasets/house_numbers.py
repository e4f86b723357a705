"""SVHN-like house-number crops, drawn with Pillow (the similar task of the sklearn digits).

Each 48×48 image centres one digit (the label) in a random font, size, colour and slant on a
plain, gradient or textured background; like SVHN crops, neighbouring digits of the house
number often show at the sides. Fonts: the TrueType fonts that matplotlib ships (DejaVu,
STIX, Computer Modern), with Pillow's built-in font as the fallback.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .drawing import (
    BIG,
    blend,
    finish,
    fractal_noise,
    jitter,
    luminance,
    random_colour,
    to_image,
    uniform,
)

SALT = "house-numbers"
QUESTION = "What digit is this?"
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
)


@cache
def font_paths() -> tuple[str, ...]:
    """The available TrueType fonts (matplotlib's); empty when matplotlib is absent."""
    try:
        import matplotlib
    except ImportError:
        return ()
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(str(folder / name) for name in FONT_FILES if (folder / name).is_file())


@cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    if not path:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, foreground) with a luminance difference of at least 90."""
    while True:
        background, foreground = random_colour(rng), random_colour(rng)
        if abs(luminance(background) - luminance(foreground)) >= 90:
            return background, foreground


def draw_house_number(label: int, rng: np.random.Generator) -> Image.Image:
    """A 48×48 crop centred on digit ``label`` (0-9)."""
    background, foreground = _colours(rng)
    style = int(rng.integers(3))
    if style == 0:  # flat
        pixels = np.broadcast_to(np.asarray(background, np.float32), (BIG, BIG, 3)).copy()
    elif style == 1:  # vertical or horizontal gradient
        ramp = np.linspace(0, 1, BIG, dtype=np.float32)
        t = np.tile(ramp, (BIG, 1)) if rng.random() < 0.5 else np.tile(ramp[:, None], (1, BIG))
        pixels = blend(background, jitter(rng, background, 50), t * uniform(rng, 0.3, 1))
    else:  # weathered surface
        pixels = blend(background, jitter(rng, background, 60), fractal_noise(rng, BIG))
    image = to_image(pixels)
    draw = ImageDraw.Draw(image)
    fonts = font_paths() or ("",)
    font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(115, 170)))
    digits = [int(rng.integers(10)), label, int(rng.integers(10))]
    widths = [font.getlength(str(d)) for d in digits]
    gap = uniform(rng, -0.05, 0.25) * widths[1]
    centre_x = BIG / 2 + uniform(rng, -0.06, 0.06) * BIG
    centre_y = BIG / 2 + uniform(rng, -0.06, 0.06) * BIG
    left_x = centre_x - widths[1] / 2
    starts = [left_x - gap - widths[0], left_x, left_x + widths[1] + gap]
    show = [rng.random() < 0.35, True, rng.random() < 0.35]
    stroke = int(rng.integers(0, 6)) if rng.random() < 0.3 else 0
    outline = jitter(rng, background, 80) if stroke else None
    for digit, x, visible in zip(digits, starts, show, strict=True):
        if visible:
            draw.text(
                (x, centre_y),
                str(digit),
                font=font,
                fill=foreground,
                anchor="lm",
                stroke_width=stroke,
                stroke_fill=outline,
            )
    shear = uniform(rng, -0.15, 0.15)
    image = image.transform(
        image.size,
        Image.AFFINE,
        (1, shear, -shear * BIG / 2, 0, 1, 0),
        resample=Image.BILINEAR,
        fillcolor=background,
    )
    image = image.rotate(uniform(rng, -8, 8), resample=Image.BILINEAR, fillcolor=background)
    return finish(image, rng, blur=(0.0, 1.0), noise=(0.0, 8.0))
