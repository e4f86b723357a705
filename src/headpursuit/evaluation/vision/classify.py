"""Image classification under head interventions (paper §4.2, Figure 1), on the experiment engine.

The model is asked to name the class of each image; an answer is ``correct`` (1, else 0)
when the greedy answer equals the class name after
:func:`~headpursuit.evaluation.vision.class_names.normalise`. Heads are ranked by
:func:`~headpursuit.ranking.criteria.rank_heads` over the class names' unembedding rows,
with head outputs pooled over the image tokens (``capture(..., pooling="image")``) of
*selection* images, which must be disjoint from the *evaluation* images. The top-k heads
are scaled (α = −1 flips them) and compared, through
:func:`~headpursuit.evaluation.experiment.run_experiment`, with the unmodified model, with
at least 20 matched random control head sets and with the top-k of the comparison
rankings: items are the evaluation images (each image its own bootstrap cluster), the
target set is the dataset whose class names ranked the heads, and other datasets evaluated
alongside (their own images and class names) are non-target sets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...activations.capture import capture
from ...activations.store import Activations
from ...errors import InputError
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...models.tiny_vlm import IMAGE_TOKEN, vlm_prompt
from ...ranking.concepts import concept_from_words, word_token_ids
from ...ranking.criteria import DEFAULT_CRITERION, DEFAULT_N_RANDOM, rank_heads
from ...ranking.head_ranking import HeadRanking
from ...steering.generation import generate
from ..experiment import ExperimentResult, ItemSet, choose_ks, complete_rankings, run_experiment
from .class_names import normalise
from .data import ImageExample

#: The comparison rankings of every vision experiment (as in the language tasks).
COMPARISONS = ("evr", "logit_lens")


def prompt_for(loaded: LoadedModel, question: str) -> str:
    """The full prompt for one image question.

    The tiny VLM (image token ``<empty_output>``) uses
    :func:`~headpursuit.models.tiny_vlm.vlm_prompt`; other LLaVA models get their
    processor's image token in their chat template (``"<image> question"`` without one).
    """
    token = getattr(loaded.processor, "image_token", IMAGE_TOKEN)
    if token == IMAGE_TOKEN:
        return vlm_prompt(question)
    if not getattr(loaded.tokenizer, "chat_template", None):
        return f"{token} {question}"
    return loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{token}\n{question}"}],
        add_generation_prompt=True,
        tokenize=False,
    )


def answer_length(loaded: LoadedModel, class_names: Sequence[str]) -> int:
    """Tokens generated per answer: the longest class name's token count plus one."""
    return max(len(loaded.tokenizer(name).input_ids) for name in class_names) + 1


def answer_images(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
) -> list[str]:
    """The greedy answer to each example's question about its image (as the model is now,
    steered or not)."""
    _, answers = generate(
        loaded,
        [prompt_for(loaded, e.question) for e in examples],
        images=[e.image for e in examples],
        chat=False,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return answers


def correct_answers(
    answers: Sequence[str], examples: Sequence[ImageExample], class_names: Sequence[str]
) -> np.ndarray:
    """``[n]`` 1.0 where the normalised answer is the example's class name, else 0.0."""
    names = [normalise(n) for n in class_names]
    return np.array(
        [float(normalise(a) == names[e.label]) for a, e in zip(answers, examples, strict=True)]
    )


def accuracy(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    class_names: Sequence[str],
    *,
    batch_size: int = 32,
) -> tuple[float, list[str]]:
    """Exact-match accuracy of the model as it is now on ``examples``.

    Returns:
        (accuracy in [0, 1], the raw answers).
    """
    answers = answer_images(
        loaded,
        examples,
        max_new_tokens=answer_length(loaded, class_names),
        batch_size=batch_size,
    )
    return float(correct_answers(answers, examples, class_names).mean()), answers


def image_activations(
    loaded: LoadedModel, examples: Sequence[ImageExample], *, batch_size: int = 32
) -> Activations:
    """Head outputs ``[n, L, H, head_dim]`` pooled over each example's image tokens."""
    return capture(
        loaded,
        [prompt_for(loaded, e.question) for e in examples],
        images=[e.image for e in examples],
        pooling="image",
        batch_size=batch_size,
        progress=False,
    )


def name_and_words(name: str) -> list[str]:
    """A class name followed by its words, without repeats: ``"Ankle boot"`` ->
    ``["Ankle boot", "Ankle", "boot"]``, ``"Bag"`` -> ``["Bag"]``."""
    return list(dict.fromkeys([name, *name.split()]))


def concept_token_ids(loaded: LoadedModel, words: Sequence[str], concept: str) -> list[int]:
    """Unembedding rows of a list of names: every single-token spelling of each name and
    of its words (:func:`name_and_words`), or its first token when it has none
    (``concept_from_words(..., multi_token="first")``)."""
    expanded = [w for name in words for w in name_and_words(name)]
    tokens = concept_from_words(loaded.tokenizer, expanded, name=concept, multi_token="first")
    return list(tokens.token_ids)


def rank_image_heads(
    loaded: LoadedModel,
    activations: Activations,
    token_ids: Sequence[int],
    *,
    concept: str = "concept",
    criterion: str = DEFAULT_CRITERION,
    n_random: int = DEFAULT_N_RANDOM,
    seed: int = 0,
    layers: tuple[int, int] | None = None,
) -> HeadRanking:
    """Every head scored for a concept from image-pooled activations
    (:func:`image_activations`), by :func:`~headpursuit.ranking.criteria.rank_heads`.

    The ``specificity`` criterion (the library's default) draws its ``n_random`` random
    dictionaries from the tokenizer's word-like tokens, as the language tasks do.
    """
    return rank_heads(
        activations,
        AttentionSites(loaded.model),
        token_ids,
        criterion=criterion,
        concept=concept,
        n_random=n_random,
        random_pool=word_token_ids(loaded.tokenizer),
        seed=seed,
        layers=layers,
    )


def select_heads(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    words: Sequence[str],
    *,
    concept: str = "classes",
    criterion: str = DEFAULT_CRITERION,
    seed: int = 0,
    batch_size: int = 32,
) -> HeadRanking:
    """Capture ``examples`` (image pooling) and rank every head for ``words`` (class names
    or concept words, see :func:`concept_token_ids`) under one criterion."""
    return rank_image_heads(
        loaded,
        image_activations(loaded, examples, batch_size=batch_size),
        concept_token_ids(loaded, words, concept),
        concept=concept,
        criterion=criterion,
        seed=seed,
    )


def check_disjoint(select: Sequence[ImageExample], evaluate: Sequence[ImageExample]) -> None:
    """Refuse selection images that are also evaluation images (the same image objects)."""
    seen = {id(e.image) for e in select}
    if any(id(e.image) in seen for e in evaluate):
        raise InputError("Selection and evaluation images overlap; use disjoint sets.")


def rank_all(
    loaded: LoadedModel,
    select: Sequence[ImageExample],
    words: Sequence[str],
    names: Sequence[str],
    *,
    concept: str,
    rankings: Mapping[str, HeadRanking] | None = None,
    seed: int = 0,
    layers: tuple[int, int] | None = None,
    batch_size: int = 32,
    log: Callable[[str], None] | None = None,
) -> dict[str, HeadRanking]:
    """The rankings named in ``names`` (``rankings`` given, the rest computed from one
    capture of the selection images)."""
    say = log or (lambda text: None)

    def selection() -> tuple[Any, list[int]]:
        say(f"Capturing {len(select)} selection images (image-token pooling)...")
        activations = image_activations(loaded, select, batch_size=batch_size)
        return activations, concept_token_ids(loaded, words, concept)

    return complete_rankings(
        names,
        rankings,
        selection,
        lambda data, name: rank_image_heads(
            loaded, data[0], data[1], concept=concept, criterion=name, seed=seed, layers=layers
        ),
        concept=concept,
        log=say,
    )


def record_texts(result: ExperimentResult, texts: list[dict[str, list[str]]]) -> None:
    """Keep the generated texts of every arm but the controls in ``result.config["texts"]``
    (``texts`` holds one entry per evaluator call, in the order of ``result.arms``)."""
    if len(texts) != len(result.arms):
        raise RuntimeError(f"{len(texts)} evaluator calls for {len(result.arms)} arms.")
    result.config["texts"] = {
        f"{arm.arm} k={arm.k} alpha={arm.alpha:g}": per_set
        for arm, per_set in zip(result.arms, texts, strict=True)
        if arm.arm != "control"
    }


def run_classify(
    loaded: LoadedModel,
    dataset: str,
    select: Sequence[ImageExample],
    evaluate: Sequence[ImageExample],
    class_names: Sequence[str],
    *,
    nontarget: Mapping[str, tuple[Sequence[ImageExample], Sequence[str]]] | None = None,
    rankings: Mapping[str, HeadRanking] | None = None,
    criterion: str = DEFAULT_CRITERION,
    comparisons: Sequence[str] = COMPARISONS,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    alphas: Sequence[float] = (-1.0,),
    n_controls: int = 20,
    seed: int = 0,
    positions: str = "all",
    layers: tuple[int, int] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """The §4.2 experiment: scale the dataset's top-k heads vs matched controls vs nothing.

    Args:
        dataset: the target set's name (and the concept of the ranking).
        select: images for head selection (disjoint from every evaluated image).
        evaluate: held-out images with labels (indices into ``class_names``).
        nontarget: other datasets evaluated under the same interventions, by name:
            (images, class names); the heads should leave them intact.
        rankings: precomputed rankings of the class names by criterion (the missing ones
            are computed from ``select``).
        criterion, comparisons: the ranking under test and the comparison rankings.
        percents / ks: head counts as % of all heads, or explicitly.
        alphas: scales (−1 flips, 0 ablates); the direction is "decrease" (accuracy lost).
        n_controls: matched control sets per (k, α) (at least 20 for p < 0.05).
        positions: where the heads are scaled ("all", "image", "text", ...).
        max_new_tokens: tokens generated per answer (default: the longest class name's
            token count plus one, per set).

    Returns:
        an :class:`~headpursuit.evaluation.experiment.ExperimentResult` (task "classify",
        primary ``correct`` per image); ``config["texts"]`` holds the answers of the
        baseline and of every ranking's arm.
    """
    if nontarget and dataset in nontarget:
        raise InputError(f"The target dataset {dataset!r} cannot also be a non-target set.")
    sets_data: dict[str, tuple[Sequence[ImageExample], Sequence[str]]] = {
        dataset: (evaluate, class_names),
        **(nontarget or {}),
    }
    for name, (examples, names) in sets_data.items():
        if not examples:
            raise InputError(f"No evaluation images for {name!r}.")
        check_disjoint(select, examples)
        for e in examples:
            if not 0 <= e.label < len(names):
                raise InputError(
                    f"An image of {name!r} has label {e.label}, outside its "
                    f"{len(names)} class names."
                )
    known = rank_all(
        loaded,
        select,
        class_names,
        [criterion, *comparisons],
        concept=dataset,
        rankings=rankings,
        seed=seed,
        layers=layers,
        batch_size=batch_size,
        log=log,
    )
    ranking = known[criterion]
    others = [known[c] for c in comparisons if c != criterion]
    lengths = {
        name: max_new_tokens or answer_length(loaded, names)
        for name, (_, names) in sets_data.items()
    }
    texts: list[dict[str, list[str]]] = []

    def score() -> dict[str, dict[str, np.ndarray]]:
        values, answers = {}, {}
        for name, (examples, names) in sets_data.items():
            answers[name] = answer_images(
                loaded, examples, max_new_tokens=lengths[name], batch_size=batch_size
            )
            values[name] = {"correct": correct_answers(answers[name], examples, names)}
        texts.append(answers)
        return values

    item_sets = [
        ItemSet(
            name,
            "target" if name == dataset else "nontarget",
            tuple(f"{name}/{i}" for i in range(len(examples))),
        )
        for name, (examples, _) in sets_data.items()
    ]
    result = run_experiment(
        loaded,
        task="classify",
        concept=dataset,
        sets=item_sets,
        evaluate=score,
        primary="correct",
        selected=ranking,
        others=others,
        ks=choose_ks(AttentionSites(loaded.model), percents, ks),
        alphas=alphas,
        n_controls=n_controls,
        seed=seed,
        direction="decrease",
        positions=positions,
        config={
            "n_select": len(select),
            "n_items": {name: len(examples) for name, (examples, _) in sets_data.items()},
            "class_names": {name: list(names) for name, (_, names) in sets_data.items()},
            "labels": {
                name: [e.label for e in examples] for name, (examples, _) in sets_data.items()
            },
            "max_new_tokens": lengths,
            "comparisons": [o.criterion for o in others],
            "percents": list(percents) if not ks else None,
        },
        log=log,
    )
    record_texts(result, texts)
    if output is not None:
        result.save(output)
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
        if "," not in line:
            raise InputError(f"{labels_file}: write each line as 'filename,label', got {line!r}.")
        filename, label = (part.strip() for part in line.rsplit(",", 1))
        if label.isdigit():
            index = int(label)
        else:
            index = names.index(normalise(label)) if normalise(label) in names else -1
        if not 0 <= index < len(class_names):
            raise InputError(
                f"{labels_file}: label {label!r} is neither a class index below "
                f"{len(class_names)} nor one of the class names."
            )
        if not (root / filename).is_file():
            raise InputError(f"{labels_file}: no image file {root / filename}.")
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
