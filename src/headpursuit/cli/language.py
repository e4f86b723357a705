"""The language experiment commands ``qa``, ``wordfreq`` and ``amplify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from .common import app, handle_errors, load

ModelOpt = Annotated[
    str | None, typer.Option(help="Model directory, hub id or GGUF (default: embedded).")
]
PercentsOpt = Annotated[str, typer.Option(help="k as % of all heads, comma-separated.")]
KsOpt = Annotated[str | None, typer.Option(help="Explicit head counts (overrides --percents).")]
MethodOpt = Annotated[str, typer.Option(help="Head selection: evr, specificity or logit_lens.")]
WindowOpt = Annotated[str | None, typer.Option(help="Layer window MIN:MAX for selection.")]
SeedsOpt = Annotated[int, typer.Option(help="Matched random control seeds.")]
ConceptArg = Annotated[str, typer.Argument(help="Built-in concept, 'profanity' or a file.")]
PromptsOpt = Annotated[
    Path | None, typer.Option(help="Prompts: RealToxicityPrompts JSONL or text.")
]
TokensOpt = Annotated[int, typer.Option(help="Tokens generated per prompt.")]
OutputOpt = Annotated[Path, typer.Option(help="Results JSON.")]


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


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
    """The head-selection keyword arguments shared by every task."""
    return dict(
        percents=[float(p) for p in _parse_list(percents)],
        ks=[int(x) for x in _parse_list(ks)] if ks else None,
        method=method,
        window=_parse_window(window),
        control_seeds=list(range(seeds)),
    )


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
        int | None, typer.Option(help="At most this many target/non-target.")
    ] = None,
    output: OutputOpt = Path("results/qa.json"),
) -> None:
    """Country QA: target (country answers) vs non-target F1 under head interventions."""
    from ..evaluation.language.qa import run_qa

    result = run_qa(
        load(model),
        interventions=_parse_list(alphas),
        triviaqa=triviaqa,
        max_questions=max_questions,
        output=output,
        log=typer.echo,
        **_selection(percents, ks, method, window, seeds),
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

    result = run_wordfreq(
        load(model),
        concept,
        prompts=prompts,
        interventions=_parse_list(alphas),
        max_new_tokens=max_new_tokens,
        fluency=fluency,
        output=output,
        log=typer.echo,
        **_selection(percents, ks, method, window, seeds),
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

    result = run_amplify(
        load(model),
        concept,
        prompts=prompts,
        alphas=_parse_list(alphas),
        max_new_tokens=max_new_tokens,
        output=output,
        log=typer.echo,
        **_selection(percents, ks, method, window, seeds),
    )
    _print(result, output)
