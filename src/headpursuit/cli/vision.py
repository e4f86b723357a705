"""The vision-language experiment commands ``classify`` and ``caption``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..models.zoo import TINY_VLM as TINY_VLM_NAME
from .common import (
    DeviceMapOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    SeedOption,
    app,
    check_model_options,
    handle_errors,
    load,
    out_option,
    parse_list,
    parse_numbers,
    parse_window,
)
from .language import (
    CompareOpt,
    ControlsOpt,
    CriterionOpt,
    KsOpt,
    PercentsOpt,
    TokensOpt,
    WindowOpt,
    _counts,
    _criteria,
    print_experiment,
)

VlmModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="A LLaVA-family model: hub id or directory.")
]
SelectOpt = Annotated[int, typer.Option(min=2, help="Images used to select heads.")]
EvalOpt = Annotated[int, typer.Option(min=1, help="Held-out images to evaluate on.")]
PositionsOpt = Annotated[
    str,
    typer.Option(
        help="Where the heads are scaled: all, prompt, generated (tokens after the prompt), "
        "image or text (the prompt's image tokens, or every other position)."
    ),
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]


def _check_common(positions: str) -> None:
    """Refuse an unknown --positions before any work."""
    from ..steering.hooks import POSITIONS

    if positions not in POSITIONS:
        raise InputError(
            f"Unknown --positions {positions!r}; choose one of {', '.join(POSITIONS)}."
        )


def _check_bundled(name: str, option: str = "dataset") -> None:
    """Refuse a name that is not a dataset of the testbed, before any work."""
    from ..evaluation.vision.data import DATASETS

    if name not in DATASETS:
        raise InputError(
            f"No bundled images for {option} {name!r}: use one of {', '.join(DATASETS)}, or "
            "give --images and --labels with a class-name list."
        )


def _bundled(name: str, n_select: int, n_eval: int) -> tuple[list[Any], list[Any], list[str]]:
    """(selection images, evaluation images, class names) of a testbed dataset: the first
    ``n_select`` images of its "select" split and the first ``n_eval`` of its "test" split
    (disjoint by construction)."""
    from ..evaluation.vision.data import get_dataset

    _check_bundled(name)
    dataset = get_dataset(name)
    select, evaluate = dataset.examples("select", n_select), dataset.examples("test", n_eval)
    for split, wanted, got in (("select", n_select, select), ("test", n_eval, evaluate)):
        if len(got) < wanted:
            option = "--n-select" if split == "select" else "--n-eval"
            raise InputError(
                f"{name} has {len(got)} {split!r} images, fewer than {option} {wanted}; "
                f"ask for at most {len(got)}."
            )
    return select, evaluate, list(dataset.class_names)


@app.command()
@handle_errors
def classify(
    dataset: Annotated[
        str,
        typer.Argument(
            help="A testbed dataset (digits, svhn_like, fashion, gtsrb_like, dtd_like, "
            "eurosat_like, resisc_like: bundled or drawn, heads selected on its 'select' split, "
            "evaluated on its 'test' split), or a class-name list (mnist, svhn, gtsrb, eurosat, "
            "resisc45, dtd) with --images and --labels."
        ),
    ] = "digits",
    model: VlmModelOpt = TINY_VLM_NAME,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    images: Annotated[Path | None, typer.Option(help="Folder of images (with --labels).")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Lines 'filename,label' (index or class name).")
    ] = None,
    nontarget: Annotated[
        str,
        typer.Option(
            help="Testbed datasets also evaluated, as non-target sets (comma-separated; "
            "'' for none)."
        ),
    ] = "",
    n_select: SelectOpt = 40,
    n_eval: EvalOpt = 150,
    criterion: CriterionOpt = None,
    compare: CompareOpt = "evr,logit_lens",
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[
        str, typer.Option(help="Scales of the chosen heads, comma-separated (−1 flips).")
    ] = "-1",
    layers: WindowOpt = None,
    controls: ControlsOpt = 20,
    positions: PositionsOpt = "all",
    seed: SeedOption = 0,
    batch_size: BatchOpt = 32,
    out: Annotated[Path, out_option("Results JSON.")] = Path("results/classify.json"),
) -> None:
    """Image classification with the dataset's top heads (image-token pooling) flipped,
    against matched random control head sets and the unmodified model (paper §4.2).

    Each evaluation image is an item (correct: 1 or 0); the output has bootstrap CIs and a
    control p-value per (k, alpha), and with --nontarget a specificity verdict.

    Example: headpursuit classify digits --nontarget fashion --out results/classify_digits.json
    """
    from ..evaluation.vision.class_names import class_names
    from ..evaluation.vision.classify import load_image_folder, run_classify
    from ..io import check_writable

    criterion, comparisons = _criteria(criterion, compare)
    chosen_percents, chosen_ks = _counts(percents, ks)
    chosen_alphas = parse_numbers(alphas, "--alphas")
    window = parse_window(layers)
    _check_common(positions)
    check_model_options(device, device_map)
    others = parse_list(nontarget)
    for name in others:
        _check_bundled(name, "--nontarget")
        if name == dataset:
            raise InputError(f"--nontarget {name!r} is the target dataset; drop it.")
    check_writable(out, what="results file")
    if images is not None or labels is not None:
        if images is None or labels is None:
            raise InputError("Give both --images and --labels for an image folder.")
        if not images.is_dir():
            raise InputError(f"No image folder at {images}.")
        if not labels.is_file():
            raise InputError(f"No labels file at {labels}.")
        names = class_names(dataset)
        examples = load_image_folder(images, labels, names)
        if len(examples) <= n_select:
            raise InputError(
                f"{len(examples)} labelled images: need more than --n-select {n_select}."
            )
        select, evaluate = examples[:n_select], examples[n_select : n_select + n_eval]
    else:
        select, evaluate, names = _bundled(dataset, n_select, n_eval)
    extra = {}
    for name in others:
        _, other_eval, other_names = _bundled(name, 0, n_eval)
        extra[name] = (other_eval, other_names)
    result = run_classify(
        load(model, dtype, device, device_map),
        dataset,
        select,
        evaluate,
        names,
        nontarget=extra,
        criterion=criterion,
        comparisons=comparisons,
        percents=chosen_percents,
        ks=chosen_ks,
        alphas=chosen_alphas,
        n_controls=controls,
        seed=seed,
        positions=positions,
        layers=window,
        batch_size=batch_size,
        output=out,
        log=typer.echo,
    )
    print_experiment(result, out)


@app.command()
@handle_errors
def caption(
    model: VlmModelOpt = TINY_VLM_NAME,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    n_select: SelectOpt = 40,
    n_eval: EvalOpt = 20,
    criterion: CriterionOpt = None,
    compare: CompareOpt = "evr,logit_lens",
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[
        str,
        typer.Option(
            help="Scales, comma-separated: all at most 1 (suppression, e.g. -1: fewer colour "
            "words expected) or all at least 1 (amplification, e.g. 5: more expected)."
        ),
    ] = "-1",
    layers: WindowOpt = None,
    controls: ControlsOpt = 20,
    positions: PositionsOpt = "all",
    max_new_tokens: TokensOpt = 14,
    seed: SeedOption = 0,
    batch_size: BatchOpt = 32,
    out: Annotated[Path, out_option("Results JSON.")] = Path("results/caption.json"),
) -> None:
    """Captions of the bundled shape scenes with the colour heads suppressed (α = −1) or
    amplified (α = 5): colour words per caption and CIDEr against matched random control
    head sets, with bootstrap CIs and a control p-value (paper §4.2).

    Example: headpursuit caption --alphas=-1 --out results/caption_suppress.json
    """
    from ..evaluation.vision import data
    from ..evaluation.vision.caption import direction_for, run_caption
    from ..io import check_writable

    criterion, comparisons = _criteria(criterion, compare)
    chosen_percents, chosen_ks = _counts(percents, ks)
    chosen_alphas = parse_numbers(alphas, "--alphas")
    direction = direction_for(chosen_alphas)
    window = parse_window(layers)
    _check_common(positions)
    check_model_options(device, device_map)
    check_writable(out, what="results file")
    result = run_caption(
        load(model, dtype, device, device_map),
        data.shapes("select", n_select),
        data.shapes("test", n_eval),
        words=data.COLOUR_NAMES,
        concept="colours",
        criterion=criterion,
        comparisons=comparisons,
        percents=chosen_percents,
        ks=chosen_ks,
        alphas=chosen_alphas,
        direction=direction,
        n_controls=controls,
        seed=seed,
        positions=positions,
        layers=window,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        output=out,
        log=typer.echo,
    )
    print_experiment(result, out, also=("cider", "cider_non_concept", "any_concept_word"))
