"""Offline image datasets for the tiny VLM: sklearn digits, Fashion-MNIST, synthetic shapes.

Every dataset is a list of :class:`ImageExample` (a PIL RGB image, a question, the answer
text, and for classification the label index). Splits are fixed by seeds so that the
training, head-selection and evaluation images are always the same and never overlap:

- digits: ``load_digits`` shuffled with seed 0; the first 1,197 train, the last 600 test.
- fashion: the official Fashion-MNIST train file trains, the official t10k file tests.
- shapes: generated from a seed; training uses seeds ≥ 1,000,000, selection seeds
  500,000+, evaluation seeds 0+ (disjoint ranges).
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...errors import InputError

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FASHION_NAMES = [
    "t-shirt",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGIT_QUESTION = "What digit is this?"
FASHION_QUESTION = "What is this?"
SHAPES_QUESTION = "Describe the image."

SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
}
COLOUR_NAMES = list(SHAPE_COLOURS)
SHAPE_KINDS = ["circle", "square", "triangle"]
SHAPE_SIZES = {"small": 6, "large": 10}  # half-width in pixels on the 48×48 canvas
CANVAS = 48


@dataclass
class ImageExample:
    """One image with its prompt question and answer.

    Attributes:
        image: RGB PIL image (48×48 for the bundled sets).
        question: the user question ("What digit is this?").
        answer: the target text ("seven", "a small red circle").
        label: class index for classification sets, -1 for captions.
        references: reference captions for CIDEr (captions only).
    """

    image: Image.Image
    question: str
    answer: str
    label: int = -1
    references: list[str] = field(default_factory=list)


def _to_rgb(gray: np.ndarray, scale: float) -> Image.Image:
    """``[h, w]`` grey values (0..scale) -> 48×48 RGB PIL image (bilinear upscaling)."""
    pixels = np.clip(gray.astype(np.float32) * (255.0 / scale), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((CANVAS, CANVAS), Image.BILINEAR).convert("RGB")


def digits(split: str) -> list[ImageExample]:
    """sklearn's 1,797 8×8 digits, upscaled; ``split`` is "train" (1,197) or "test" (600)."""
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', not {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    chosen = order[:1197] if split == "train" else order[1197:]
    return [
        ImageExample(
            _to_rgb(bunch.images[i], 16.0),
            DIGIT_QUESTION,
            DIGIT_NAMES[int(bunch.target[i])],
            int(bunch.target[i]),
        )
        for i in chosen
    ]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    n_dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(n_dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def fashion(split: str, limit: int | None = None, root: Path = FASHION_DIR) -> list[ImageExample]:
    """Fashion-MNIST (Debian package ``dataset-fashion-mnist``); the first ``limit`` images."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise InputError(f"split must be 'train' or 'test', not {split!r}")
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.is_file():
        raise InputError(
            f"Fashion-MNIST not found at {root}; install it with "
            "`apt-get install -y dataset-fashion-mnist`."
        )
    images = _read_idx(images_path)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    n = len(labels) if limit is None else min(limit, len(labels))
    return [
        ImageExample(
            _to_rgb(images[i], 255.0),
            FASHION_QUESTION,
            FASHION_NAMES[int(labels[i])],
            int(labels[i]),
        )
        for i in range(n)
    ]


@dataclass
class Shape:
    """One drawn shape: its size, colour and kind words and its centre on the canvas."""

    size: str
    colour: str
    kind: str
    x: int
    y: int

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


def _draw(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    r = SHAPE_SIZES[shape.size]
    box = (shape.x - r, shape.y - r, shape.x + r, shape.y + r)
    fill = SHAPE_COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse(box, fill=fill)
    elif shape.kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(
            [(shape.x, shape.y - r), (shape.x - r, shape.y + r), (shape.x + r, shape.y + r)],
            fill=fill,
        )


def shape_scene(seed: int) -> ImageExample:
    """A 48×48 scene of 1 or 2 shapes (left to right) on a dark background, with its caption.

    The caption names the shapes from left to right: "a small red circle and a large blue
    square". References for CIDEr: that caption, the same objects in the other order, and
    the caption without the size words.
    """
    rng = random.Random(seed)
    n_shapes = rng.choice([1, 2])
    shapes: list[Shape] = []
    for k in range(n_shapes):
        size = rng.choice(list(SHAPE_SIZES))
        r = SHAPE_SIZES[size]
        if n_shapes == 1:
            x = rng.randint(r + 2, CANVAS - r - 3)
        else:  # left shape in the left half, right shape in the right half
            low, high = (
                (r + 1, CANVAS // 2 - r - 1) if k == 0 else (CANVAS // 2 + r, CANVAS - r - 2)
            )
            x = rng.randint(low, max(low, high))
        y = rng.randint(r + 2, CANVAS - r - 3)
        colour = rng.choice(list(SHAPE_COLOURS))
        while shapes and colour == shapes[0].colour:
            colour = rng.choice(list(SHAPE_COLOURS))
        shapes.append(Shape(size, colour, rng.choice(SHAPE_KINDS), x, y))
    grey = rng.randint(0, 60)
    image = Image.new("RGB", (CANVAS, CANVAS), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        _draw(draw, shape)
    caption = " and ".join(s.phrase for s in shapes)
    references = [caption, " and ".join(s.phrase for s in reversed(shapes))]
    references.append(" and ".join(f"a {s.colour} {s.kind}" for s in shapes))
    return ImageExample(image, SHAPES_QUESTION, caption, -1, list(dict.fromkeys(references)))


SHAPES_EVAL_SEED = 0
SHAPES_SELECT_SEED = 500_000
SHAPES_TRAIN_SEED = 1_000_000


def shapes(split: str, n: int) -> list[ImageExample]:
    """``n`` shape scenes of a split: "train", "select" (head selection) or "test"."""
    offsets = {"test": SHAPES_EVAL_SEED, "select": SHAPES_SELECT_SEED, "train": SHAPES_TRAIN_SEED}
    if split not in offsets:
        raise InputError(f"split must be one of {sorted(offsets)}, not {split!r}")
    return [shape_scene(offsets[split] + i) for i in range(n)]
