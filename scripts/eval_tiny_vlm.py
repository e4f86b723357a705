"""Held-out quality of the tiny VLM: accuracy per dataset, caption colours, and robustness.

    nice -n 10 .venv/bin/python scripts/eval_tiny_vlm.py --n 500 --flip-n 100

- **accuracy**: the greedy answer to each held-out test image (``split="test"`` of every
  dataset in ``headpursuit.evaluation.vision.data.DATASETS``), exact match with the class
  name after ``headpursuit.evaluation.vision.class_names.normalise``
  (``headpursuit.evaluation.vision.classify.accuracy``);
  with it the share of answers that are one of the class names at all and the share of the
  most frequent answer (1.0 would be a collapse onto one answer).
- **caption colours**: the caption of each held-out scene names exactly the scene's colours,
  left to right (``headpursuit.evaluation.vision.data.colours_correct``), and in either order
  (the CIDEr references accept both orders of a two-shape scene); the share of captions equal
  to the reference caption; and the errors by number of shapes in the scene, split into two
  colours named right to left ("swapped") and the rest (``data.colour_error``).
- **robustness** (``--flip-ks``, ``--flip-seeds``): the same accuracies with k uniformly
  random heads of the language model flipped (α = −1, all positions, ``headpursuit.steer``);
  each seed draws one head set, used on every dataset.

Writes the results as JSON to ``--out`` (default ``src/headpursuit/data/tiny_vlm/eval.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from headpursuit.evaluation.vision import data  # noqa: E402
from headpursuit.evaluation.vision.class_names import normalise  # noqa: E402
from headpursuit.evaluation.vision.classify import accuracy, prompt_for  # noqa: E402
from headpursuit.heads import Head  # noqa: E402
from headpursuit.models.architectures import AttentionSites  # noqa: E402
from headpursuit.models.loading import LoadedModel  # noqa: E402
from headpursuit.models.tiny_vlm import (  # noqa: E402
    SHIPPED_DIR,
    WEIGHTS_FILE,
    build_tiny_vlm,
    shipped_vision_config,
)
from headpursuit.models.zoo import DEFAULT_MODEL, locate_named  # noqa: E402
from headpursuit.steering.generation import generate  # noqa: E402
from headpursuit.steering.hooks import steer  # noqa: E402


def load_shipped(directory: Path = SHIPPED_DIR) -> LoadedModel:
    """The tiny VLM with the float16 weights of ``directory``, assembled in memory (the same
    weights ``load_model("tiny-vlm")`` loads, without writing a checkpoint to the cache)."""
    from safetensors.torch import load_file

    model, processor = build_tiny_vlm(locate_named(DEFAULT_MODEL), shipped_vision_config(directory))
    weights = load_file(str(Path(directory) / WEIGHTS_FILE))
    model.load_state_dict({name: w.float() for name, w in weights.items()}, strict=False)
    model.eval()
    return LoadedModel(model, processor.tokenizer, "tiny-vlm", processor)


def _answer_stats(answers: list[str], class_names: tuple[str, ...]) -> dict[str, float]:
    names = {normalise(n) for n in class_names}
    cleaned = [normalise(a) for a in answers]
    top = Counter(cleaned).most_common(1)[0][1] / len(cleaned)
    return {
        "valid_share": round(sum(a in names for a in cleaned) / len(cleaned), 4),
        "top_answer_share": round(top, 4),
    }


def classification(
    loaded: LoadedModel, n: int, heads: list[Head] | None = None
) -> dict[str, dict[str, float]]:
    """Per dataset: accuracy on the first ``n`` test images (with ``heads`` flipped)."""
    results = {}
    for name, dataset in data.DATASETS.items():
        examples = dataset.examples("test", n)
        with steer(loaded.model, heads or (), -1.0):
            value, answers = accuracy(loaded, examples, list(dataset.class_names))
        results[name] = {
            "n": len(examples),
            "accuracy": round(value, 4),
            **_answer_stats(answers, dataset.class_names),
        }
    return results


def captions(loaded: LoadedModel, n: int, heads: list[Head] | None = None) -> dict[str, float]:
    """Caption colour accuracy and exact-caption share on the first ``n`` test scenes."""
    scenes = data.shapes("test", n)
    prompts = [prompt_for(loaded, e.question) for e in scenes]
    with steer(loaded.model, heads or (), -1.0):
        _, texts = generate(
            loaded, prompts, images=[e.image for e in scenes], chat=False, max_new_tokens=16
        )
    return {
        "n": len(scenes),
        **{name: round(share, 4) for name, share in data.colour_shares(texts, scenes).items()},
        "exact_caption": round(
            sum(normalise(t) == normalise(e.answer) for t, e in zip(texts, scenes, strict=True))
            / n,
            4,
        ),
        "errors_by_shapes": colour_errors(texts, scenes),
        "examples": texts[:5],
    }


def colour_errors(texts: list[str], scenes: list[data.ImageExample]) -> dict[str, dict[str, int]]:
    """Counts of ``data.colour_error`` kinds by the number of shapes in the scene:
    ``{"1": {"right": 150, "wrong": 3}, "2": {"right": 100, "swapped": 30, "wrong": 17}}``."""
    counts: dict[str, Counter[str]] = {}
    for text, scene in zip(texts, scenes, strict=True):
        shapes = str(len(data.colour_words(scene.answer)))
        counts.setdefault(shapes, Counter())[data.colour_error(text, scene)] += 1
    return {shapes: dict(sorted(kinds.items())) for shapes, kinds in sorted(counts.items())}


def evaluate_heldout(loaded: LoadedModel, n: int) -> dict[str, dict]:
    """Classification accuracy per dataset and caption colours on ``n`` test images each."""
    results = classification(loaded, n)
    results["captions"] = captions(loaded, n)
    return results


def random_heads(loaded: LoadedModel, k: int, seed: int) -> list[Head]:
    """``k`` distinct heads drawn uniformly from all of the language model's heads."""
    sites = AttentionSites(loaded.model)
    every = [Head(layer, head) for layer in range(sites.n_layers) for head in range(sites.n_heads)]
    return sorted(random.Random(seed).sample(every, k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR / "eval.json")
    parser.add_argument("--n", type=int, default=500, help="held-out images per dataset")
    parser.add_argument("--flip-n", type=int, default=100, help="images per dataset under flips")
    parser.add_argument("--flip-ks", default="3,8")
    parser.add_argument("--flip-seeds", type=int, default=3)
    args = parser.parse_args()
    start = time.time()
    loaded = load_shipped(args.weights)
    report: dict = {"command": " ".join(sys.argv), "heldout": evaluate_heldout(loaded, args.n)}
    print(json.dumps(report["heldout"], indent=1), flush=True)
    flips = []
    for k in [int(part) for part in args.flip_ks.split(",") if part]:
        for seed in range(args.flip_seeds):
            heads = random_heads(loaded, k, seed)
            row = {
                "k": k,
                "seed": seed,
                "heads": [str(h) for h in heads],
                "classification": classification(loaded, args.flip_n, heads),
                "captions": captions(loaded, args.flip_n, heads),
            }
            flips.append(row)
            print(json.dumps(row), flush=True)
    unflipped = {"classification": classification(loaded, args.flip_n)}
    unflipped["captions"] = captions(loaded, args.flip_n)
    report["flips"] = {"n": args.flip_n, "unflipped": unflipped, "rows": flips}
    report["seconds"] = round(time.time() - start, 1)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} in {report['seconds']} s")


if __name__ == "__main__":
    main()
