"""The language experiment commands ``qa``, ``wordfreq`` and ``amplify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from .common import app, handle_errors, load, parse_interventions, parse_numbers

ModelOpt = Annotated[
    str | None, typer.Option(help="Model directory, hub id or GGUF (default: embedded).")
]
PercentsOpt = Annotated[str, typer.Option(help="k as % of all heads, comma-separated.")]
KsOpt = Annotated[str | None, typer.Option(help="Explicit head counts (overrides --percents).")]
MethodOpt = Annotated[str, typer.Option(help="Head selection: evr, specificity or logit_lens.")]
WindowOpt = Annotated[str | None, typer.Option(help="Layer window MIN:MAX for selection.")]
SeedsOpt = Annotated[int, typer.Option(min=0, help="Matched random control seeds.")]
ConceptArg = Annotated[str, typer.Argument(help="Built-in concept, 'profanity' or a file.")]
PromptsOpt = Annotated[
    Path | None, typer.Option(help="Prompts: RealToxicityPrompts JSONL or text.")
]
TokensOpt = Annotated[int, typer.Option(min=1, help="Tokens generated per prompt.")]
OutputOpt = Annotated[Path, typer.Option(help="Results JSON.")]


def _parse_window(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        low, high = (int(x) for x in text.split(":"))
    except ValueError as error:
        raise InputError(f"Write the layer window as MIN:MAX, got {text!r}.") from error
    return low, high


def _selection(
    percents: str, ks: str | None, method: str, window: str | None, seeds: int
) -> dict[str, Any]:
    """The head-selection keyword arguments shared by every task, checked before any work."""
    from ..evaluation.language.selection import METHODS

    if method not in METHODS:
        raise InputError(f"Unknown --method {method!r}; choose one of {', '.join(METHODS)}.")
    return dict(
        percents=parse_numbers(percents, "--percents", minimum=1e-9, maximum=100),
        ks=parse_numbers(ks, "--ks", integer=True, minimum=1) if ks else None,
        method=method,
        window=_parse_window(window),
        control_seeds=list(range(seeds)),
    )


def _check_output(output: Path) -> None:
    from ..io import check_writable

    check_writable(output, what="results file")


def _print(result, output: Path) -> None:
    summary = result.summary()
    columns = ["k", "intervention", "arm"] + [
        c for c in summary.columns if c.endswith("_norm") or c.endswith("_norm_std")
    ]
    typer.echo(f"baseline: {result.baseline}")
    typer.echo(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"wrote {output}")


@app.command()
@handle_errors
def qa(
    model: ModelOpt = None,
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[str, typer.Option(help="Interventions: α values and/or 'mean'.")] = "0",
    method: MethodOpt = "specificity",
    window: WindowOpt = None,
    seeds: SeedsOpt = 5,
    triviaqa: Annotated[
        Path | None, typer.Option(help="TriviaQA-style JSON/JSONL questions.")
    ] = None,
    max_questions: Annotated[
        int | None, typer.Option(min=1, help="At most this many target/non-target.")
    ] = None,
    output: OutputOpt = Path("results/qa.json"),
) -> None:
    """Country QA: target (country answers) vs non-target F1 under head interventions."""
    from ..evaluation.language.qa import run_qa

    selection = _selection(percents, ks, method, window, seeds)
    interventions = parse_interventions(alphas)
    _check_output(output)
    result = run_qa(
        load(model),
        interventions=interventions,
        triviaqa=triviaqa,
        max_questions=max_questions,
        output=output,
        log=typer.echo,
        **selection,
    )
    _print(result, output)


@app.command()
@handle_errors
def wordfreq(
    concept: ConceptArg = "colors",
    model: ModelOpt = None,
    prompts: PromptsOpt = None,
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[str, typer.Option(help="Interventions: α values and/or 'mean'.")] = "0",
    method: MethodOpt = "specificity",
    window: WindowOpt = None,
    seeds: SeedsOpt = 5,
    max_new_tokens: TokensOpt = 24,
    fluency: Annotated[bool, typer.Option(help="Also report perplexity (fluency proxy).")] = False,
    output: OutputOpt = Path("results/wordfreq.json"),
) -> None:
    """Held-out concept-word frequency after suppressing the concept's heads."""
    from ..evaluation.language.wordfreq import run_wordfreq

    selection = _selection(percents, ks, method, window, seeds)
    interventions = parse_interventions(alphas)
    _check_output(output)
    result = run_wordfreq(
        load(model),
        concept,
        prompts=prompts,
        interventions=interventions,
        max_new_tokens=max_new_tokens,
        fluency=fluency,
        output=output,
        log=typer.echo,
        **selection,
    )
    _print(result, output)


@app.command()
@handle_errors
def amplify(
    concept: ConceptArg = "colors",
    model: ModelOpt = None,
    prompts: PromptsOpt = None,
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[str, typer.Option(help="Amplification factors α > 1.")] = "5",
    method: MethodOpt = "specificity",
    window: WindowOpt = None,
    seeds: SeedsOpt = 5,
    max_new_tokens: TokensOpt = 24,
    output: OutputOpt = Path("results/amplify.json"),
) -> None:
    """Concept-word frequency and perplexity after amplifying the concept's heads."""
    from ..evaluation.language.amplify import run_amplify

    selection = _selection(percents, ks, method, window, seeds)
    factors = parse_interventions(alphas)
    _check_output(output)
    result = run_amplify(
        load(model),
        concept,
        prompts=prompts,
        alphas=factors,
        max_new_tokens=max_new_tokens,
        output=output,
        log=typer.echo,
        **selection,
    )
    _print(result, output)
