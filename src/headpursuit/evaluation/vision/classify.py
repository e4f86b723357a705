"""Image classification under head interventions (paper §4.2, Figure 1).

The model is asked to name the class of each image; a prediction is correct when the
greedy answer equals the class name after :func:`~headpursuit.vlm.class_names.normalise`.
Heads are selected by SOMP over the class names' unembedding rows with image-token pooling
(``capture(..., pooling="image")`` then ``rank_heads``) on *selection* images, which must be
disjoint from the *evaluation* images. The top-k heads are flipped (α = −1) and compared
with matched random controls (same per-layer counts, disjoint, several seeds) and with the
unmodified model.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...activations.capture import capture
from ...errors import InputError
from ...heads import Head
from ...io import write_json
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...models.tiny_vlm import IMAGE_TOKEN, vlm_prompt
from ...ranking.concepts import concept_from_words
from ...ranking.controls import matched_controls
from ...ranking.criteria import rank_heads
from ...ranking.head_ranking import HeadRanking
from ...steering.generation import generate
from ...steering.hooks import steer
from .class_names import normalise
from .data import ImageExample

DEFAULT_KS = (3, 5, 8)  # about 1%, 2%, 3% of SmolLM2's 270 heads


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN-safe: NaN in, NaN out)."""
    if any(math.isnan(v) for v in values):
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def prompt_for(loaded: LoadedModel, question: str) -> str:
    """The full prompt for one image question.

    The tiny VLM (image token ``<empty_output>``) uses :func:`~headpursuit.vlm.tiny.vlm_prompt`;
    other LLaVA models get their processor's image token in their chat template.
    """
    token = getattr(loaded.processor, "image_token", IMAGE_TOKEN)
    if token == IMAGE_TOKEN:
        return vlm_prompt(question)
    return loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{token}\n{question}"}],
        add_generation_prompt=True,
        tokenize=False,
    )


def accuracy(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    class_names: Sequence[str],
    *,
    heads: Sequence[Head] = (),
    alpha: float = -1.0,
    positions: str = "all",
    batch_size: int = 32,
) -> tuple[float, list[str]]:
    """Exact-match accuracy of the model (with ``heads`` scaled by ``alpha``) on ``examples``.

    Returns:
        (accuracy in [0, 1], the raw answers).
    """
    prompts = [prompt_for(loaded, e.question) for e in examples]
    images = [e.image for e in examples]
    longest = max(len(loaded.tokenizer(name).input_ids) for name in class_names)
    with steer(loaded.model, heads, alpha, positions=positions):
        _, answers = generate(
            loaded,
            prompts,
            images=images,
            chat=False,
            max_new_tokens=longest + 1,
            batch_size=batch_size,
        )
    names = [normalise(n) for n in class_names]
    hits = [normalise(a) == names[e.label] for a, e in zip(answers, examples, strict=True)]
    return sum(hits) / len(hits), answers


CRITERIA = ("evr", "specificity")


def rank_image_heads(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    token_ids: Sequence[int],
    *,
    concept: str = "concept",
    criterion: str = "specificity",
    n_atoms: int = 10,
    n_random: int = 3,
    seed: int = 0,
    batch_size: int = 32,
) -> HeadRanking:
    """Capture image-token-pooled head outputs on ``examples`` and rank heads for a concept.

    Args:
        token_ids: the concept's unembedding rows.
        criterion: "evr" ranks by the concept-restricted SOMP EVR (the paper); "specificity"
            subtracts the mean EVR of ``n_random`` random token sets of the same size (drawn
            from the rest of the vocabulary with ``seed``), which removes the heads that any
            dictionary explains (layer-0 heads of tied-embedding models; see DESIGN.md).
    """
    if criterion not in CRITERIA:
        raise InputError(f"Unknown criterion {criterion!r}; choose one of {CRITERIA}.")
    activations = capture(
        loaded,
        [prompt_for(loaded, e.question) for e in examples],
        images=[e.image for e in examples],
        pooling="image",
        batch_size=batch_size,
        progress=False,
    )
    sites = AttentionSites(loaded.model)
    return rank_heads(
        activations,
        sites,
        token_ids,
        criterion=criterion,
        concept=concept,
        n_atoms=n_atoms,
        n_random=n_random,
        seed=seed,
    )


def select_heads(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    class_names: Sequence[str],
    *,
    concept: str = "classes",
    criterion: str = "specificity",
    n_atoms: int = 10,
    batch_size: int = 32,
) -> HeadRanking:
    """Rank heads by SOMP over the class names' tokens, pooling each head over image tokens.

    Every class name contributes its single-token spellings (and those of its words), or its
    first token when it has none (``concept_from_words(..., multi_token="first")``). See
    :func:`rank_image_heads` for ``criterion``.
    """
    words = [w for name in class_names for w in dict.fromkeys([name, *name.split()])]
    tokens = concept_from_words(loaded.tokenizer, words, name=concept, multi_token="first")
    return rank_image_heads(
        loaded,
        examples,
        tokens.token_ids,
        concept=concept,
        criterion=criterion,
        n_atoms=n_atoms,
        batch_size=batch_size,
    )


@dataclass
class ClassifyRow:
    """One evaluated condition.

    Attributes:
        condition: "unmodified", "somp" or "random".
        k: number of heads intervened on (0 for unmodified).
        seed: control seed (-1 for SOMP/unmodified).
        alpha: the scale applied to the heads.
        accuracy: exact-match accuracy.
        normalised: accuracy / unmodified accuracy (the paper's Figure 1 axis).
    """

    condition: str
    k: int
    seed: int
    alpha: float
    accuracy: float
    normalised: float = float("nan")


@dataclass
class ClassifyResult:
    """Classification under interventions: per-condition rows, the heads, and a summary."""

    dataset: str
    n_select: int
    n_eval: int
    rows: list[ClassifyRow]
    heads: dict[int, list[str]] = field(default_factory=dict)
    model_id: str = ""

    def to_frame(self):
        """One row per condition (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def summary(self):
        """Mean ± std over control seeds: columns condition, k, mean, std, n (DataFrame)."""
        import pandas as pd

        groups: dict[tuple[str, int], list[float]] = {}
        for row in self.rows:
            groups.setdefault((row.condition, row.k), []).append(row.normalised)
        records = []
        for (condition, k), values in groups.items():
            mean, std = mean_std(values)
            records.append(
                {"condition": condition, "k": k, "mean": mean, "std": std, "n": len(values)}
            )
        return pd.DataFrame(records)

    def to_json(self) -> dict:
        return {
            "kind": "headpursuit.vlm.classify",
            "dataset": self.dataset,
            "model_id": self.model_id,
            "n_select": self.n_select,
            "n_eval": self.n_eval,
            "heads": {str(k): v for k, v in self.heads.items()},
            "rows": [asdict(r) for r in self.rows],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_json(path, self.to_json())


def classify(
    loaded: LoadedModel,
    select: Sequence[ImageExample],
    evaluate: Sequence[ImageExample],
    class_names: Sequence[str],
    *,
    dataset: str = "dataset",
    ks: Sequence[int] = DEFAULT_KS,
    seeds: int = 5,
    alpha: float = -1.0,
    positions: str = "all",
    ranking: HeadRanking | None = None,
    out: str | os.PathLike[str] | None = None,
) -> ClassifyResult:
    """The §4.2 experiment: flip the top-k SOMP heads vs matched random heads vs nothing.

    Args:
        select: images for head selection (disjoint from ``evaluate``; checked by identity).
        evaluate: held-out images with labels (indices into ``class_names``).
        ks: numbers of heads to flip.
        seeds: random control seeds per k (mean and std reported).
        ranking: a precomputed ranking (else computed from ``select``).
        out: write the result JSON there.
    """
    if {id(e.image) for e in select} & {id(e.image) for e in evaluate}:
        raise InputError("Selection and evaluation images overlap; use disjoint sets.")
    if ranking is None:
        ranking = select_heads(loaded, select, class_names, concept=dataset)
    sites = AttentionSites(loaded.model)
    base, _ = accuracy(loaded, evaluate, class_names)
    rows = [ClassifyRow("unmodified", 0, -1, 1.0, base)]
    heads: dict[int, list[str]] = {}
    for k in ks:
        top = ranking.top(k)
        heads[k] = [str(h) for h in top]
        value, _ = accuracy(
            loaded, evaluate, class_names, heads=top, alpha=alpha, positions=positions
        )
        rows.append(ClassifyRow("somp", k, -1, alpha, value))
        for seed in range(seeds):
            controls = matched_controls(top, sites.n_layers, sites.n_heads, seed=seed)
            value, _ = accuracy(
                loaded, evaluate, class_names, heads=controls, alpha=alpha, positions=positions
            )
            rows.append(ClassifyRow("random", k, seed, alpha, value))
    for row in rows:
        row.normalised = row.accuracy / base if base > 0 else float("nan")
    result = ClassifyResult(dataset, len(select), len(evaluate), rows, heads, loaded.model_id)
    if out is not None:
        result.save(out)
    return result


def load_image_folder(
    folder: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    class_names: Sequence[str],
    question: str = "What is this?",
) -> list[ImageExample]:
    """Images listed in a labels file: one ``filename,label`` line each (label = class index
    or class name), paths relative to ``folder``."""
    from PIL import Image

    root = Path(folder)
    names = [normalise(n) for n in class_names]
    examples = []
    for line in Path(labels_file).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        filename, label = (part.strip() for part in line.rsplit(",", 1))
        index = int(label) if label.isdigit() else names.index(normalise(label))
        image = Image.open(root / filename).convert("RGB")
        examples.append(ImageExample(image, question, class_names[index], index))
    return examples


def load_hf_dataset(
    name: str,
    class_names: Sequence[str],
    *,
    split: str = "test",
    image_key: str = "image",
    label_key: str = "label",
    limit: int | None = None,
    question: str = "What is this?",
) -> list[ImageExample]:
    """Images from a Hugging Face ``datasets`` dataset (needs ``pip install datasets``)."""
    try:
        import datasets
    except ImportError as error:
        raise InputError(
            "Loading a dataset by name needs the `datasets` package: `pip install datasets`. "
            "Or use load_image_folder() with a local folder and labels file."
        ) from error
    dataset = datasets.load_dataset(name, split=split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    examples = []
    for i in range(n):
        item = dataset[i]
        index = int(item[label_key])
        image = item[image_key].convert("RGB")
        examples.append(ImageExample(image, question, class_names[index], index))
    return examples
