"""The language experiment commands ``qa``, ``wordfreq`` and ``amplify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..evaluation.stats import format_p
from ..protocol import DEFAULT_ALPHA
from .common import (
    DeviceMapOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    ModelOption,
    SeedOption,
    app,
    check_model_options,
    existing_file,
    handle_errors,
    load,
    out_option,
    parse_list,
    parse_numbers,
    parse_window,
)

PercentsOpt = Annotated[str, typer.Option(help="k as % of all heads, comma-separated.")]
KsOpt = Annotated[str | None, typer.Option(help="Explicit head counts (overrides --percents).")]
WindowOpt = Annotated[str | None, typer.Option(help="Layer window MIN:MAX for selection.")]
CriterionOpt = Annotated[
    str | None,
    typer.Option(help="Head ranking: evr, specificity, logit_lens (default: the library's)."),
]
CompareOpt = Annotated[
    str, typer.Option(help="Comparison rankings, comma-separated ('' for none).")
]
ControlsOpt = Annotated[
    int, typer.Option(min=1, help="Matched random control head sets per (k, alpha).")
]
SplitOpt = Annotated[str, typer.Option(help="Split the effects are measured on: test or dev.")]
ConceptArg = Annotated[str, typer.Argument(help="Built-in concept, 'profanity' or a word file.")]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(help="Prompts: RealToxicityPrompts JSONL or text (default: the bundled set)."),
]
TokensOpt = Annotated[int, typer.Option(min=1, help="Tokens generated per prompt.")]


def _criteria(criterion: str | None, compare: str) -> tuple[str, list[str]]:
    """The ranking under test (default: the library's) and the comparison rankings, checked."""
    from ..ranking.criteria import CRITERIA, DEFAULT_CRITERION

    criterion = criterion or DEFAULT_CRITERION
    comparisons = parse_list(compare)
    for name in [criterion, *comparisons]:
        if name not in CRITERIA:
            raise InputError(f"Unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}.")
    return criterion, comparisons


def _counts(percents: str, ks: str | None) -> tuple[list[float], list[int] | None]:
    """--percents and --ks, checked."""
    chosen_percents = parse_numbers(percents, "--percents", minimum=1e-9, maximum=100)
    chosen_ks = parse_numbers(ks, "--ks", integer=True, minimum=1) if ks else None
    return chosen_percents, chosen_ks


def _word_experiment(
    run: Any,
    *,
    concept: str,
    model: str | None,
    dtype: Dtype,
    device: str | None,
    device_map: str | None,
    prompts: Path | None,
    criterion: str | None,
    compare: str,
    percents: str,
    ks: str | None,
    alphas: str,
    layers: str | None,
    controls: int,
    split: str,
    max_new_tokens: int,
    seed: int,
    out: Path,
    **extra: Any,
) -> None:
    """Check every option of ``wordfreq`` / ``amplify``, then load the model and run."""
    from ..evaluation.language.wordfreq import SPLITS, word_task
    from ..io import check_writable

    if split not in SPLITS:
        raise InputError(f"Unknown --split {split!r}; choose one of {', '.join(SPLITS)}.")
    criterion, comparisons = _criteria(criterion, compare)
    chosen_percents, chosen_ks = _counts(percents, ks)
    chosen_alphas = parse_numbers(alphas, "--alphas")
    window = parse_window(layers)
    check_model_options(device, device_map)
    if prompts is not None:
        existing_file(prompts, "prompt file")
    task = word_task(concept, prompts, seed=seed)
    check_writable(out, what="results file")
    result = run(
        load(model, dtype, device, device_map),
        task,
        criterion=criterion,
        comparisons=comparisons,
        percents=chosen_percents,
        ks=chosen_ks,
        alphas=chosen_alphas,
        n_controls=controls,
        seed=seed,
        split=split,
        layers=window,
        max_new_tokens=max_new_tokens,
        output=out,
        log=typer.echo,
        **extra,
    )
    print_experiment(result, out, also=("perplexity",))


def _print_table(result: Any, metric: str | None = None) -> None:
    typer.echo(
        f"{'set':<10} {'role':<9} {'k':>3} {'alpha':>5} {'arm':<12} {'value':>6} "
        f"{'95% CI':>15} {'controls p5-p95':>15} {'p':>7}"
    )
    for row in result.summary(metric):
        ci = f"[{row['low']:.3f}, {row['high']:.3f}]"
        spread = f"{row['controls_p5']:.3f}-{row['controls_p95']:.3f}"
        typer.echo(
            f"{row['set']:<10} {row['role']:<9} {row['k']:>3} {row['alpha']:>5g} "
            f"{row['arm']:<12} {row['value']:>6.3f} {ci:>15} {spread:>15} {format_p(row['p']):>7}"
        )


def print_experiment(result: Any, output: Path | None = None, also: tuple[str, ...] = ()) -> None:
    """The experiment's table (normalised primary metric, CI, controls, p), the tables of
    the metrics in ``also`` (those the run measured), and the verdicts."""
    typer.echo(f"{result.primary} / unmodified model:")
    _print_table(result)
    for metric in also:
        if any(metric in means for means in result.baseline.means.values()):
            typer.echo(
                f"{metric} / unmodified model (p in the same direction, {result.direction}):"
            )
            _print_table(result, metric)
    for verdict in result.verdicts():
        if verdict["specific"] is None:  # no non-target set: only significance is tested
            word = "significant" if verdict["significant"] else "not significant"
            typer.echo(
                f"k={verdict['k']} alpha={verdict['alpha']:g}: {word} "
                f"(target p={format_p(verdict['target_p'])}, {result.direction} expected)"
            )
            continue
        word = "specific" if verdict["specific"] else "not specific"
        typer.echo(
            f"k={verdict['k']} alpha={verdict['alpha']:g}: {word} "
            f"(target p={format_p(verdict['target_p'])}, lowest non-target p={format_p(verdict['nontarget_p'])})"
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
    criterion: CriterionOpt = None,
    compare: CompareOpt = "evr,logit_lens",
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[
        str,
        typer.Option(help="Scales of the chosen heads, comma-separated (-1 flips: the paper)."),
    ] = f"{DEFAULT_ALPHA:g}",
    layers: WindowOpt = None,
    controls: ControlsOpt = 20,
    split: SplitOpt = "test",
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

    if concept not in CONCEPTS:
        raise InputError(f"Unknown QA concept {concept!r}; choose one of {', '.join(CONCEPTS)}.")
    if split not in SPLITS:
        raise InputError(f"Unknown --split {split!r}; choose one of {', '.join(SPLITS)}.")
    criterion, comparisons = _criteria(criterion, compare)
    chosen_percents, chosen_ks = _counts(percents, ks)
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
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    prompts: PromptsOpt = None,
    criterion: CriterionOpt = None,
    compare: CompareOpt = "evr,logit_lens",
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[
        str, typer.Option(help="Scales of the chosen heads, comma-separated (0 ablates).")
    ] = f"{DEFAULT_ALPHA:g}",
    layers: WindowOpt = None,
    controls: ControlsOpt = 20,
    split: SplitOpt = "test",
    max_new_tokens: TokensOpt = 48,
    fluency: Annotated[
        bool, typer.Option(help="Also score each continuation's perplexity (fluency proxy).")
    ] = False,
    seed: SeedOption = 0,
    out: Annotated[Path, out_option("Results JSON.")] = Path("results/wordfreq.json"),
) -> None:
    """Held-out concept words in generations after suppressing the concept's heads.

    Heads are ranked on half of the prompts (followed by the unmodified model's own
    continuations) with 70 % of the concept's words; the other 30 % (held-out words) are
    counted in the continuations of the split's evaluation prompts, against matched random
    control head sets, with bootstrap CIs and a control p-value.

    Example: headpursuit wordfreq colors --ks 8 --out results/wordfreq_colors.json
    """
    from ..evaluation.language.wordfreq import run_wordfreq

    _word_experiment(
        run_wordfreq,
        concept=concept,
        model=model,
        dtype=dtype,
        device=device,
        device_map=device_map,
        prompts=prompts,
        criterion=criterion,
        compare=compare,
        percents=percents,
        ks=ks,
        alphas=alphas,
        layers=layers,
        controls=controls,
        split=split,
        max_new_tokens=max_new_tokens,
        seed=seed,
        out=out,
        fluency=fluency,
    )


@app.command()
@handle_errors
def amplify(
    concept: ConceptArg = "colors",
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    prompts: PromptsOpt = None,
    criterion: CriterionOpt = None,
    compare: CompareOpt = "evr,logit_lens",
    percents: PercentsOpt = "1,2,3",
    ks: KsOpt = None,
    alphas: Annotated[str, typer.Option(help="Amplification factors, comma-separated.")] = "5",
    layers: WindowOpt = None,
    controls: ControlsOpt = 20,
    split: SplitOpt = "test",
    max_new_tokens: TokensOpt = 48,
    seed: SeedOption = 0,
    out: Annotated[Path, out_option("Results JSON.")] = Path("results/amplify.json"),
) -> None:
    """Concept words and perplexity after amplifying the concept's heads (α = 5).

    The protocol of ``wordfreq``; the effect should increase the held-out concept words
    (the p-value counts control sets at least as strong), and each continuation's
    perplexity under the unmodified model measures the fluency cost.

    Example: headpursuit amplify colors --ks 3 --out results/amplify_colors.json
    """
    from ..evaluation.language.amplify import run_amplify

    _word_experiment(
        run_amplify,
        concept=concept,
        model=model,
        dtype=dtype,
        device=device,
        device_map=device_map,
        prompts=prompts,
        criterion=criterion,
        compare=compare,
        percents=percents,
        ks=ks,
        alphas=alphas,
        layers=layers,
        controls=controls,
        split=split,
        max_new_tokens=max_new_tokens,
        seed=seed,
        out=out,
    )
