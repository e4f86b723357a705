"""The language experiment commands ``qa``, ``wordfreq`` and ``amplify``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from .common import (
    DeviceMapOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    ModelOption,
    SeedOption,
    app,
    check_model_options,
    handle_errors,
    load,
    out_option,
    parse_interventions,
    parse_list,
    parse_numbers,
    parse_window,
)

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


def print_experiment(result: Any, output: Path | None = None) -> None:
    """The experiment's table (normalised primary metric, CI, controls, p) and verdicts."""
    typer.echo(
        f"{'set':<10} {'role':<9} {'k':>3} {'alpha':>5} {'arm':<12} {'value':>6} "
        f"{'95% CI':>15} {'controls p5-p95':>15} {'p':>6}"
    )
    for row in result.summary():
        p = "" if math.isnan(row["p"]) else f"{row['p']:.3f}"
        ci = f"[{row['low']:.3f}, {row['high']:.3f}]"
        spread = f"{row['controls_p5']:.3f}-{row['controls_p95']:.3f}"
        typer.echo(
            f"{row['set']:<10} {row['role']:<9} {row['k']:>3} {row['alpha']:>5g} "
            f"{row['arm']:<12} {row['value']:>6.3f} {ci:>15} {spread:>15} {p:>6}"
        )
    for verdict in result.verdicts():
        word = "specific" if verdict["specific"] else "not specific"
        typer.echo(
            f"k={verdict['k']} alpha={verdict['alpha']:g}: {word} "
            f"(target p={verdict['target_p']:.3f}, lowest non-target p={verdict['nontarget_p']:.3f})"
        )
    if output is not None:
        typer.echo(f"Wrote {output}")


@app.command()
@handle_errors
def qa(
    concept: Annotated[
        str, typer.Argument(help="Fact concept: countries, colours or numbers.")
    ] = "countries",
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    criterion: Annotated[
        str | None,
        typer.Option(help="Head ranking: evr, specificity, logit_lens (default: the library's)."),
    ] = None,
    compare: Annotated[
        str, typer.Option(help="Comparison rankings, comma-separated ('' for none).")
    ] = "evr,logit_lens",
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[
        str, typer.Option(help="Scales of the chosen heads, comma-separated.")
    ] = "-1",
    layers: WindowOpt = None,
    controls: Annotated[
        int, typer.Option(min=1, help="Matched random control head sets per (k, alpha).")
    ] = 20,
    split: Annotated[str, typer.Option(help="Split the effects are measured on: test or dev.")] = (
        "test"
    ),
    headline: Annotated[
        bool,
        typer.Option(
            help="Also score the selected heads' greedy answers (token F1, the paper's scoring)."
        ),
    ] = True,
    seed: SeedOption = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Questions per forward pass.")] = 32,
    out: Annotated[Path, out_option("Results JSON.")] = Path("results/qa.json"),
) -> None:
    """Flip a fact concept's heads: target questions vs matched non-target questions.

    Heads are ranked on the dev split's questions; the effects are measured on the test
    split's questions that the unmodified model answers right, against matched random
    control head sets (same count per layer), with bootstrap CIs and a control p-value.

    Example: headpursuit qa countries --model qwen2.5-0.5b --out results/qa_countries.json
    """
    from ..evaluation.language.facts import CONCEPTS, SPLITS
    from ..evaluation.language.qa import run_qa
    from ..io import check_writable
    from ..ranking.criteria import CRITERIA

    if concept not in CONCEPTS:
        raise InputError(f"Unknown QA concept {concept!r}; choose one of {', '.join(CONCEPTS)}.")
    if split not in SPLITS:
        raise InputError(f"Unknown --split {split!r}; choose one of {', '.join(SPLITS)}.")
    from ..ranking.criteria import DEFAULT_CRITERION

    criterion = criterion or DEFAULT_CRITERION
    comparisons = parse_list(compare)
    for name in [criterion, *comparisons]:
        if name not in CRITERIA:
            raise InputError(f"Unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}.")
    chosen_percents = parse_numbers(percents, "--percents", minimum=1e-9, maximum=100)
    chosen_ks = parse_numbers(ks, "--ks", integer=True, minimum=1) if ks else None
    chosen_alphas = parse_numbers(alphas, "--alphas")
    window = parse_window(layers)
    check_model_options(device, device_map)
    check_writable(out, what="results file")
    result = run_qa(
        load(model, dtype, device, device_map),
        concept,
        criterion=criterion,
        comparisons=comparisons,
        percents=chosen_percents,
        ks=chosen_ks,
        alphas=chosen_alphas,
        n_controls=controls,
        seed=seed,
        split=split,
        layers=window,
        headline=headline,
        headline_controls=0,
        headline_when=lambda arm, k, alpha: arm == "selected",
        batch_size=batch_size,
        output=out,
        log=typer.echo,
    )
    print_experiment(result, out)


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
