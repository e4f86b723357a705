"""Offline image datasets of the VLM testbed and their registry (:data:`DATASETS`).

The one source of truth for the testbed's class names, questions and splits: the training
script, the ``classify`` / ``caption`` commands and ``scripts/vlm_experiments.py`` all read
them from here.

Every dataset is a list of :class:`ImageExample` (a PIL RGB image, a question, the answer
text, and for classification the label index). Each has three disjoint splits, fixed by
construction: "train" (the tiny VLM learns from it), "select" (head selection) and "test"
(held-out evaluation).

- digits: sklearn's 1,797 8×8 digits shuffled with seed 0: 1,097 train, 200 select, 500 test.
- fashion: the vendored Fashion-MNIST subset (``headpursuit/data/fashion_mnist``): 15,000
  train and 1,000 select images from the official training file, 2,000 test images from t10k.
- drawn sets (house numbers, traffic signs, textures, two land-cover styles) and the caption
  scenes: image i of a split is drawn from seed offset + i (test 0+, select 500,000+, train
  1,000,000+; see :mod:`headpursuit.evaluation.vision.datasets.drawing`).

The classification sets form two pairs of similar tasks, as in the paper's Jaccard analysis:
digits / house numbers (MNIST / SVHN) and satellite / aerial land cover (EuroSAT /
RESISC45), each pair with the same class names and question.
"""

from __future__ import annotations

import io
import lzma
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...errors import InputError
from .datasets import drawing, house_numbers, land_cover, textures, traffic_signs
from .datasets.drawing import SPLITS

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
FASHION_DIR = Path(__file__).resolve().parents[2] / "data" / "fashion_mnist"
DIGIT_QUESTION = "What digit is this?"
FASHION_QUESTION = "What is this?"
SHAPES_QUESTION = "Describe the image."
DIGIT_SPLITS = {"train": (0, 1097), "select": (1097, 1297), "test": (1297, 1797)}

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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, not {split!r}")


def digits(split: str, limit: int | None = None) -> list[ImageExample]:
    """sklearn's 8×8 digits, upscaled to 48×48: "train" (1,097), "select" (200) or "test" (500)."""
    _check_split(split)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    start, stop = DIGIT_SPLITS[split]
    chosen = order[start:stop][:limit]
    return [
        ImageExample(
            _to_rgb(bunch.images[i], 16.0),
            DIGIT_QUESTION,
            DIGIT_NAMES[int(bunch.target[i])],
            int(bunch.target[i]),
        )
        for i in chosen
    ]


@cache
def _fashion_arrays(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    images_path = root / f"{split}-images.npy.xz"
    if not images_path.is_file():
        raise InputError(
            f"The vendored Fashion-MNIST split is missing at {images_path}; reinstall the "
            "package or write it with `python scripts/vendor_fashion_mnist.py`."
        )
    images = np.load(io.BytesIO(lzma.decompress(images_path.read_bytes())))
    labels = np.load(root / f"{split}-labels.npy")
    return images, labels


def fashion(split: str, limit: int | None = None, root: Path = FASHION_DIR) -> list[ImageExample]:
    """Vendored Fashion-MNIST, upscaled to 48×48: "train" (15,000), "select" (1,000) or "test"
    (2,000, the first images of the official t10k file); the first ``limit`` images."""
    _check_split(split)
    images, labels = _fashion_arrays(split, Path(root))
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


def shapes(split: str, n: int) -> list[ImageExample]:
    """``n`` shape scenes of a split: "train", "select" (head selection) or "test"."""
    return [shape_scene(seed) for seed in drawing.split_seeds(split, n)]


def colour_words(text: str) -> list[str]:
    """The shape-colour words of ``text`` in order: "A red circle and a blue one" -> [red, blue]."""
    return [word for word in re.findall(r"[a-z]+", text.lower()) if word in SHAPE_COLOURS]


def colours_correct(caption: str, example: ImageExample) -> bool:
    """Whether ``caption`` names exactly the scene's colours, left to right (no more, no fewer)."""
    return colour_words(caption) == colour_words(example.answer)


def colour_error(caption: str, example: ImageExample) -> str:
    """How ``caption``'s colours compare with the scene's: ``"right"`` (as
    :func:`colours_correct`), ``"swapped"`` (a two-shape scene's two colours, right to left)
    or ``"wrong"`` (a colour wrong, missing or extra)."""
    said, wanted = colour_words(caption), colour_words(example.answer)
    if said == wanted:
        return "right"
    if len(wanted) == 2 and said == wanted[::-1]:
        return "swapped"
    return "wrong"


def colour_shares(captions: Sequence[str], scenes: Sequence[ImageExample]) -> dict[str, float]:
    """Shares of ``captions`` that name exactly their scenes' colours: left to right
    (``colours_correct``) and in either order (``colours_any_order``; the CIDEr references
    accept both orders of a two-shape scene)."""
    kinds = [colour_error(c, e) for c, e in zip(captions, scenes, strict=True)]
    return {
        "colours_correct": sum(kind == "right" for kind in kinds) / len(kinds),
        "colours_any_order": sum(kind != "wrong" for kind in kinds) / len(kinds),
    }


# ---------------------------------------------------------------- drawn sets and registry

DEFAULT_SIZES = {"train": 4000, "select": 200, "test": 500}


def _drawn(
    salt: str,
    draw: Callable[[int, np.random.Generator], Image.Image],
    names: list[str],
    question: str,
) -> Callable[[str, int | None], list[ImageExample]]:
    def load(split: str, n: int | None = None) -> list[ImageExample]:
        count = DEFAULT_SIZES.get(split, 0) if n is None else n
        pairs = drawing.generate(salt, draw, len(names), split, count)
        return [ImageExample(image, question, names[label], label) for image, label in pairs]

    return load


@dataclass(frozen=True)
class ImageDataset:
    """A classification dataset of the testbed.

    Attributes:
        name: registry key ("digits", "svhn_like", …).
        class_names: the answers, indexed by label; short words or phrases.
        question: the user question asked with every image.
        load: ``load(split, n=None) -> list[ImageExample]``; ``split`` is "train", "select"
            or "test"; ``n=None`` gives the whole split (drawn sets: ``DEFAULT_SIZES``).
        stands_for: the paper's dataset that this one stands in for.
        similar_to: the registry key of its similar task, if any.
        source: where the images come from (and their licence).
    """

    name: str
    class_names: tuple[str, ...]
    question: str
    load: Callable[[str, int | None], list[ImageExample]]
    stands_for: str
    similar_to: str | None
    source: str

    def examples(self, split: str, n: int | None = None) -> list[ImageExample]:
        """The first ``n`` examples of ``split`` (all of a fixed split when ``n`` is None)."""
        _check_split(split)
        return self.load(split, n)


_LAND = tuple(land_cover.CLASS_NAMES)
DATASETS: dict[str, ImageDataset] = {
    d.name: d
    for d in (
        ImageDataset(
            "digits",
            tuple(DIGIT_NAMES),
            DIGIT_QUESTION,
            lambda split, n=None: digits(split, n),
            "MNIST",
            "svhn_like",
            "scikit-learn's bundled UCI optical digits (BSD-3-Clause), 8×8 upscaled",
        ),
        ImageDataset(
            "svhn_like",
            tuple(DIGIT_NAMES),
            house_numbers.QUESTION,
            _drawn(
                house_numbers.SALT,
                house_numbers.draw_house_number,
                DIGIT_NAMES,
                house_numbers.QUESTION,
            ),
            "SVHN",
            "digits",
            "drawn here (headpursuit.evaluation.vision.datasets.house_numbers; fonts shipped with matplotlib)",
        ),
        ImageDataset(
            "fashion",
            tuple(FASHION_NAMES),
            FASHION_QUESTION,
            lambda split, n=None: fashion(split, n),
            "Fashion-MNIST",
            None,
            "Fashion-MNIST subset vendored in headpursuit/data/fashion_mnist (MIT, Zalando SE)",
        ),
        ImageDataset(
            "gtsrb_like",
            tuple(traffic_signs.CLASS_NAMES),
            traffic_signs.QUESTION,
            _drawn(
                traffic_signs.SALT,
                traffic_signs.draw_sign,
                traffic_signs.CLASS_NAMES,
                traffic_signs.QUESTION,
            ),
            "GTSRB",
            None,
            "drawn here (headpursuit.evaluation.vision.datasets.traffic_signs)",
        ),
        ImageDataset(
            "dtd_like",
            tuple(textures.CLASS_NAMES),
            textures.QUESTION,
            _drawn(textures.SALT, textures.draw_texture, textures.CLASS_NAMES, textures.QUESTION),
            "DTD",
            None,
            "drawn here (headpursuit.evaluation.vision.datasets.textures)",
        ),
        ImageDataset(
            "eurosat_like",
            _LAND,
            land_cover.QUESTION,
            _drawn(
                land_cover.SATELLITE_SALT,
                land_cover.draw_satellite,
                list(_LAND),
                land_cover.QUESTION,
            ),
            "EuroSAT",
            "resisc_like",
            "drawn here (headpursuit.evaluation.vision.datasets.land_cover, satellite style)",
        ),
        ImageDataset(
            "resisc_like",
            _LAND,
            land_cover.QUESTION,
            _drawn(
                land_cover.AERIAL_SALT, land_cover.draw_aerial, list(_LAND), land_cover.QUESTION
            ),
            "RESISC45",
            "eurosat_like",
            "drawn here (headpursuit.evaluation.vision.datasets.land_cover, aerial style)",
        ),
    )
}
#: The similar-task pairs, each once (from the registry's ``similar_to``).
SIMILAR_PAIRS = [
    (d.name, d.similar_to) for d in DATASETS.values() if d.similar_to and d.name < d.similar_to
]


def get_dataset(name: str) -> ImageDataset:
    """The registry entry ``name`` (hyphens and case are ignored: "SVHN-like" works)."""
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise InputError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    return DATASETS[key]


def load_split(name: str, split: str, n: int | None = None) -> list[ImageExample]:
    """``get_dataset(name).examples(split, n)``: the first ``n`` examples of a split."""
    return get_dataset(name).examples(split, n)
