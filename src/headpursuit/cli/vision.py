"""The vision-language experiment commands ``classify`` and ``caption``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..models.zoo import TINY_VLM as TINY_VLM_NAME
from .common import app, handle_errors, load, parse_numbers

VlmModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="A LLaVA-family model: hub id or directory.")
]
KsOpt = Annotated[str, typer.Option(help="Numbers of heads to intervene on, comma-separated.")]
SeedsOpt = Annotated[int, typer.Option(min=0, help="Matched random control seeds.")]
SelectOpt = Annotated[int, typer.Option(min=2, help="Images used to select heads.")]
EvalOpt = Annotated[int, typer.Option(min=1, help="Held-out images to evaluate on.")]
PositionsOpt = Annotated[str, typer.Option(help="Intervene at all, image or text positions.")]


def _ints(text: str) -> list[int]:
    return parse_numbers(text, "--ks", integer=True, minimum=1)


def _check_common(positions: str, output: Path) -> None:
    """Refuse an unknown --positions or an unwritable --output before any work."""
    from ..io import check_writable
    from ..steering.hooks import POSITIONS

    if positions not in POSITIONS:
        raise InputError(
            f"Unknown --positions {positions!r}; choose one of {', '.join(POSITIONS)}."
        )
    check_writable(output, what="results file")


@app.command()
@handle_errors
def classify(
    dataset: Annotated[
        str,
        typer.Argument(
            help="'digits' or 'fashion' (bundled / Debian package), or a class-name list "
            "(mnist, svhn, gtsrb, eurosat, resisc45, dtd) with --images and --labels."
        ),
    ] = "digits",
    model: VlmModelOpt = TINY_VLM_NAME,
    images: Annotated[Path | None, typer.Option(help="Folder of images (with --labels).")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Lines 'filename,label' (index or class name).")
    ] = None,
    n_select: SelectOpt = 40,
    n_eval: EvalOpt = 150,
    ks: KsOpt = "3,5,8",
    seeds: SeedsOpt = 5,
    alpha: Annotated[float, typer.Option(help="Scale of the heads (−1 flips).")] = -1.0,
    positions: PositionsOpt = "all",
    output: Annotated[Path, typer.Option(help="Results JSON.")] = Path("results/classify.json"),
) -> None:
    """Image classification with the top SOMP heads (image-token pooling) flipped,
    against matched random heads and the unmodified model (paper §4.2).

    Example: headpursuit classify digits --ks 3,5,8 --seeds 5
    """
    from ..evaluation.vision import data
    from ..evaluation.vision.class_names import class_names
    from ..evaluation.vision.classify import classify as run_classify
    from ..evaluation.vision.classify import load_image_folder

    ks_list = _ints(ks)
    parse_numbers(str(alpha), "--alpha")  # finite
    _check_common(positions, output)
    if images is not None or labels is not None:
        if images is None or labels is None:
            raise InputError("Give both --images and --labels for an image folder.")
        names = class_names(dataset)
        examples = load_image_folder(images, labels, names)
        if len(examples) <= n_select:
            raise InputError(
                f"{len(examples)} labelled images: need more than --n-select {n_select}."
            )
        select, evaluate = examples[:n_select], examples[n_select : n_select + n_eval]
    elif dataset == "digits":
        names = data.DIGIT_NAMES
        select, evaluate = data.digits("train")[:n_select], data.digits("test")[:n_eval]
    elif dataset == "fashion":
        names = data.FASHION_NAMES
        select = data.fashion("train", limit=n_select)
        evaluate = data.fashion("test", limit=n_eval)
    else:
        raise InputError(
            f"No bundled images for {dataset!r}: use 'digits' or 'fashion', or give "
            "--images and --labels."
        )
    result = run_classify(
        load(model),
        select,
        evaluate,
        names,
        dataset=dataset,
        ks=ks_list,
        seeds=seeds,
        alpha=alpha,
        positions=positions,
        out=output,
    )
    typer.echo(result.summary().to_string(index=False))
    typer.echo(f"wrote {output}")


@app.command()
@handle_errors
def caption(
    model: VlmModelOpt = TINY_VLM_NAME,
    n_select: SelectOpt = 40,
    n_eval: EvalOpt = 20,
    ks: KsOpt = "5",
    alphas: Annotated[
        str, typer.Option(help="Scales, comma-separated (−1 suppresses, 5 amplifies).")
    ] = "-1,5",
    seeds: SeedsOpt = 5,
    positions: PositionsOpt = "all",
    output: Annotated[Path, typer.Option(help="Results JSON.")] = Path("results/caption.json"),
) -> None:
    """Captions of the bundled shape scenes with the colour heads suppressed or amplified:
    colour-word frequency and CIDEr retention vs matched random heads (paper §4.2).

    Example: headpursuit caption --ks 5 --alphas=-1,5
    """
    from ..evaluation.vision import data
    from ..evaluation.vision.caption import caption as run_caption
    from ..evaluation.vision.caption import select_concept_heads

    ks_list = _ints(ks)
    alpha_list = parse_numbers(alphas, "--alphas")
    _check_common(positions, output)
    loaded = load(model)
    select = data.shapes("select", n_select)
    ranking = select_concept_heads(loaded, select, data.COLOUR_NAMES)
    result = run_caption(
        loaded,
        select,
        data.shapes("test", n_eval),
        ks=ks_list,
        alphas=alpha_list,
        seeds=seeds,
        positions=positions,
        max_new_tokens=14,
        ranking=ranking,
        out=output,
    )
    typer.echo(result.summary().to_string(index=False))
    typer.echo(f"wrote {output}")
