"""The VLM testbed's datasets: registry, determinism by seed, disjoint splits, provenance."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from headpursuit.evaluation.vision import data
from headpursuit.evaluation.vision.class_names import normalise
from headpursuit.evaluation.vision.datasets.drawing import SPLIT_OFFSETS, split_seeds

DRAWN = ["svhn_like", "gtsrb_like", "dtd_like", "eurosat_like", "resisc_like"]


def _bytes(examples: list[data.ImageExample]) -> list[bytes]:
    return [e.image.tobytes() for e in examples]


def test_registry_lists_seven_datasets_with_two_similar_pairs():
    assert sorted(data.DATASETS) == sorted(["digits", "fashion", *DRAWN])
    assert data.SIMILAR_PAIRS == [("digits", "svhn_like"), ("eurosat_like", "resisc_like")]
    for first, second in data.SIMILAR_PAIRS:
        a, b = data.get_dataset(first), data.get_dataset(second)
        assert a.similar_to == second and b.similar_to == first
        assert a.class_names == b.class_names and a.question == b.question
    assert data.get_dataset("SVHN-like") is data.DATASETS["svhn_like"]
    with pytest.raises(ValueError, match="choose one of"):
        data.get_dataset("imagenet")


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_class_names_are_short_distinct_and_survive_normalisation(name):
    names = data.DATASETS[name].class_names
    assert len(set(names)) == len(names) >= 10
    assert all(len(n.split()) <= 4 and normalise(n) == n for n in names)


@pytest.mark.parametrize("name", DRAWN)
def test_drawn_sets_are_deterministic_by_seed(name):
    dataset = data.DATASETS[name]
    first = dataset.examples("test", 12)
    again = dataset.examples("test", 12)
    assert _bytes(first) == _bytes(again)
    # Image i depends on its seed only, not on how many images were asked for.
    assert _bytes(dataset.examples("test", 5)) == _bytes(first[:5])
    assert [e.label for e in first] == [i % len(dataset.class_names) for i in range(12)]
    for example in first:
        assert example.image.size == (48, 48) and example.image.mode == "RGB"
        assert example.answer == dataset.class_names[example.label]
        assert example.question == dataset.question
    # Different seeds give different pictures (no constant generator).
    assert len(set(_bytes(first))) == 12


@pytest.mark.parametrize("name", DRAWN)
def test_drawn_splits_are_disjoint(name):
    dataset = data.DATASETS[name]
    splits = {split: set(_bytes(dataset.examples(split, 30))) for split in data.SPLITS}
    assert splits["train"].isdisjoint(splits["select"])
    assert splits["train"].isdisjoint(splits["test"])
    assert splits["select"].isdisjoint(splits["test"])


def test_seed_ranges_of_splits_do_not_meet():
    ranges = {split: split_seeds(split, 400_000) for split in SPLIT_OFFSETS}
    for a in ranges:
        for b in ranges:
            if a < b:
                assert set(ranges[a]).isdisjoint(ranges[b])
    with pytest.raises(ValueError, match="split must be one of"):
        split_seeds("validation", 3)


def test_digit_splits_partition_the_sklearn_digits():
    pytest.importorskip("sklearn", reason="digits need scikit-learn (the vlm extra)")
    from sklearn.datasets import load_digits

    splits = {split: data.digits(split) for split in data.SPLITS}
    assert {s: len(e) for s, e in splits.items()} == {"train": 1097, "select": 200, "test": 500}
    # Every source image lands in exactly one split: compare multisets of the 8×8 sources.
    source = Counter(data._to_rgb(image, 16.0).tobytes() for image in load_digits().images)
    together = Counter(b for examples in splits.values() for b in _bytes(examples))
    assert together == source
    assert data.digits("test")[0].image.tobytes() == splits["test"][0].image.tobytes()
    assert data.digits("train", limit=3)[2].answer == splits["train"][2].answer


def test_fashion_vendored_subset():
    arrays = {split: data._fashion_arrays(split, data.FASHION_DIR) for split in data.SPLITS}
    assert {s: a[0].shape for s, a in arrays.items()} == {
        "train": (15000, 28, 28),
        "select": (1000, 28, 28),
        "test": (2000, 28, 28),
    }
    examples = data.fashion("test", limit=5)
    assert [e.label for e in examples] == [9, 2, 1, 1, 6]  # the published t10k labels
    assert examples[0].answer == "ankle boot" and examples[0].image.size == (48, 48)
    assert min(Counter(arrays["train"][1].tolist()).values()) > 1300  # every class is there
    with pytest.raises(ValueError, match="split must be one of"):
        data.fashion("validation")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    shape = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def test_fashion_subset_equals_the_official_files():
    """Against the official IDX files where they are installed (Debian dataset-fashion-mnist)."""
    official = Path("/usr/share/datasets/fashion-mnist")
    if not (official / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("official Fashion-MNIST files not installed")
    ranges = {
        "train": ("train", 0, 15000),
        "select": ("train", 15000, 16000),
        "test": ("t10k", 0, 2000),
    }
    for split, (prefix, start, stop) in ranges.items():
        images, labels = data._fashion_arrays(split, data.FASHION_DIR)
        np.testing.assert_array_equal(
            images, _read_idx(official / f"{prefix}-images-idx3-ubyte.gz")[start:stop]
        )
        np.testing.assert_array_equal(
            labels, _read_idx(official / f"{prefix}-labels-idx1-ubyte.gz")[start:stop]
        )


def test_caption_colour_scoring():
    scene = data.ImageExample(
        None, "Describe the image.", "a small red circle and a large blue square"
    )
    assert data.colours_correct("A red circle and a blue square.", scene)
    assert not data.colours_correct("a blue square and a red circle", scene)  # wrong order
    assert not data.colours_correct("a red circle", scene)  # a colour missing
    assert not data.colours_correct("a red circle and a blue green square", scene)
    assert data.colour_error("A red circle and a blue square.", scene) == "right"
    assert data.colour_error("a blue square and a red circle", scene) == "swapped"
    assert data.colour_error("a blue circle and a blue square", scene) == "wrong"
    assert data.colour_error("a blue square", scene) == "wrong"
    said = ["a red circle and a blue square", "a blue square and a red circle", "a red one"]
    shares = data.colour_shares(said, [scene] * 3)  # by hand: 1 right, 1 swapped, 1 wrong
    assert shares == {"colours_correct": 1 / 3, "colours_any_order": 2 / 3}
    assert data.colour_words("Orange, WHITE and reddish") == ["orange", "white"]


def test_the_classify_command_names_every_registry_dataset():
    from typer.testing import CliRunner

    from headpursuit.cli import app

    shown = CliRunner().invoke(app, ["classify", "--help"], terminal_width=400).output
    for name in data.DATASETS:
        assert name in shown, name
