"""Classification and captioning on the experiment engine, on the tiny random LLaVA: per-image
metrics against a hand count of the generated texts, α = 1 as the identity in every arm,
20 matched controls by default, the direction of captions, JSON round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import IMAGE_TOKEN, random_images, tiny_llava
from headpursuit import steer
from headpursuit.errors import InputError
from headpursuit.evaluation.experiment import ExperimentResult
from headpursuit.evaluation.vision.caption import direction_for, run_caption
from headpursuit.evaluation.vision.cider import cider
from headpursuit.evaluation.vision.classify import run_classify
from headpursuit.evaluation.vision.data import ImageExample
from headpursuit.steering.generation import generate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
QUESTION = "w1 w2 w3"


@pytest.fixture(scope="module")
def tiny():
    return tiny_llava()


def _examples(n: int, seed: int, label: int = 0, references=()) -> list[ImageExample]:
    return [
        ImageExample(image, QUESTION, "", label, list(references))
        for image in random_images(n, seed=seed)
    ]


def _texts(loaded, examples, max_new_tokens: int, heads=(), alpha: float = 1.0) -> list[str]:
    """Greedy continuations of "<image> question", generated here (not by the task)."""
    prompts = [f"{IMAGE_TOKEN} {e.question}" for e in examples]
    images = [e.image for e in examples]
    with steer(loaded.model, list(heads), alpha):
        return generate(loaded, prompts, images=images, chat=False, max_new_tokens=max_new_tokens)[
            1
        ]


def _identity_holds(result: ExperimentResult) -> None:
    """Every α = 1 arm (selected, comparison, control) reproduces the baseline item by item."""
    identity = [a for a in result.arms[1:] if a.alpha == 1.0]
    assert {a.arm for a in identity} >= {"selected", "control"}
    for arm in identity:
        assert arm.means == result.baseline.means
        if arm.arm != "control":
            assert arm.items == result.baseline.items
    assert all(r["value"] == 1.0 for r in result.summary() if r["alpha"] == 1.0)


def test_classify_counts_identity_controls_and_round_trip(tiny, tmp_path):
    select, evaluate, other = _examples(6, seed=1), _examples(8, seed=2), _examples(6, seed=3)
    # Class names and labels from the unmodified model's own one-token answers, so that the
    # baseline gets some images right and some wrong.
    answers = [a.strip() for a in _texts(tiny, evaluate + other, 1)]
    names = sorted({a for a in answers if a} | {"red", "blue"})
    for i, (example, answer) in enumerate(zip(evaluate + other, answers, strict=True)):
        right = names.index(answer) if answer in names else 0
        example.label = right if i % 3 else (right + 1) % len(names)
    out = tmp_path / "classify.json"
    result = run_classify(
        tiny, "toy", select, evaluate, names, nontarget={"other": (other, names)},
        criterion="evr", comparisons=("logit_lens",), ks=[2], alphas=[1.0, -1.0],
        max_new_tokens=1, output=out,
    )  # fmt: skip
    assert [(s.name, s.role) for s in result.sets] == [("toy", "target"), ("other", "nontarget")]
    assert result.sets[0].clusters == tuple(f"toy/{i}" for i in range(8))  # one per image
    assert result.primary == "correct" and result.direction == "decrease"
    # 20 matched controls per (k, α) by default, seeds 0..19, the same heads for every α.
    for alpha in (1.0, -1.0):
        controls = [a for a in result.arms if a.arm == "control" and a.alpha == alpha]
        assert [a.seed for a in controls] == list(range(20))
    # Per-image correctness against a hand count on texts generated here.
    base = result.baseline.items
    assert base["toy"]["correct"] == [
        float(a == names[e.label]) for a, e in zip(answers[:8], evaluate, strict=True)
    ]
    assert 0 < sum(base["toy"]["correct"]) < 8 and sum(base["other"]["correct"]) > 0
    flipped = next(a for a in result.arms if a.arm == "selected" and a.alpha == -1.0)
    steered = [a.strip() for a in _texts(tiny, other, 1, flipped.heads, -1.0)]
    assert flipped.items["other"]["correct"] == [
        float(a == names[e.label]) for a, e in zip(steered, other, strict=True)
    ]
    assert result.config["texts"]["selected k=2 alpha=-1"]["other"] == _texts(
        tiny, other, 1, flipped.heads, -1.0
    )
    _identity_holds(result)
    verdict = next(v for v in result.verdicts() if v["alpha"] == -1.0)
    assert verdict["specific"] is not None  # a non-target set: specificity is tested
    back = ExperimentResult.load(out)
    assert back.summary() == result.summary() and back.verdicts() == result.verdicts()
    assert back.config["texts"] == result.config["texts"]


def test_classify_refuses_overlapping_images_and_bad_labels(tiny):
    images = _examples(4, seed=1)
    with pytest.raises(InputError, match="overlap"):
        run_classify(tiny, "toy", images, images[2:], ["red"], criterion="evr", comparisons=())
    with pytest.raises(InputError, match="label 3"):
        run_classify(
            tiny, "toy", images[:2], _examples(2, seed=5, label=3), ["red", "blue"],
            criterion="evr", comparisons=(),
        )  # fmt: skip
    with pytest.raises(InputError, match="non-target"):
        run_classify(
            tiny, "toy", images[:2], images[2:], ["red"], nontarget={"toy": (images[2:], ["red"])}
        )


def test_caption_counts_cider_identity_and_round_trip(tiny, tmp_path):
    select, evaluate = _examples(5, seed=1), _examples(6, seed=2)
    # References: each image's own unmodified caption, cut, and one shared caption (CIDEr
    # weighs n-grams by how few images' references hold them).
    for example, text in zip(evaluate, _texts(tiny, evaluate, 5), strict=True):
        example.references = [" ".join(text.split()[:3]), "a red w60"]
    words = ["w82", "w89", "w21", "green", "red"]
    out = tmp_path / "caption.json"
    result = run_caption(
        tiny, select, evaluate, words=words, concept="toywords", criterion="evr",
        comparisons=(), ks=[2], alphas=[1.0, -1.0], n_controls=3, max_new_tokens=5, output=out,
    )  # fmt: skip
    assert result.task == "caption" and result.primary == "concept_words"
    assert result.direction == "decrease"
    assert result.config["texts"]["baseline k=0 alpha=1"]["shapes"] == [
        c.strip() for c in _texts(tiny, evaluate, 5)
    ]
    for arm in (result.baseline, next(a for a in result.arms if a.alpha == -1.0)):
        captions = [c.strip() for c in _texts(tiny, evaluate, 5, arm.heads, arm.alpha)]
        items = arm.items["shapes"]
        counts = [sum(token in words for token in c.split()) for c in captions]
        assert items["concept_words"] == counts
        assert items["any_concept_word"] == [float(c > 0) for c in counts]
        corpus, per_image = cider([e.references for e in evaluate], captions)
        assert items["cider"] == pytest.approx(per_image)
        assert np.mean(items["cider"]) == pytest.approx(corpus)
        # The non-concept CIDEr: captions and references with the concept words struck out
        # here, token by token.
        strike = lambda text: " ".join(t for t in text.split() if t not in words)  # noqa: E731
        _, rest = cider(
            [[strike(r) for r in e.references] for e in evaluate], [strike(c) for c in captions]
        )
        assert items["cider_non_concept"] == pytest.approx(rest)
    assert sum(result.baseline.items["shapes"]["concept_words"]) > 0  # not a count of nothing
    assert min(result.baseline.items["shapes"]["cider"]) > 0
    _identity_holds(result)
    back = ExperimentResult.load(out)
    assert back.summary() == result.summary()
    assert back.summary("cider") == result.summary("cider")


def test_caption_direction_follows_the_scales(tiny):
    assert direction_for([-1.0]) == direction_for([0.0, 1.0]) == "decrease"
    assert direction_for([5.0]) == direction_for([1.0, 3.0]) == "increase"
    with pytest.raises(InputError, match="two experiments"):
        direction_for([-1.0, 5.0])
    result = run_caption(
        tiny, _examples(4, seed=1), _examples(4, seed=2, references=["w82 w89"]),
        words=["w82", "w89", "w21"], criterion="evr", comparisons=(), ks=[2], alphas=[5.0],
        n_controls=5, max_new_tokens=4,
    )  # fmt: skip
    assert result.direction == "increase"
    selected = next(a for a in result.arms if a.arm == "selected")
    value = result.normalised(selected, "shapes")
    controls = [result.normalised(a, "shapes") for a in result.arms if a.arm == "control"]
    row = next(r for r in result.summary() if r["arm"] == "selected")
    assert not math.isnan(value)  # the unmodified model names some concept words
    assert row["p"] == pytest.approx((1 + sum(c >= value for c in controls)) / 6)
