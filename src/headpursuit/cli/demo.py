"""``headpursuit demo``: the whole chain on the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..evaluation.stats import format_p
from ..protocol import DEFAULT_ALPHA
from .common import (
    DeviceMapOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    app,
    check_model_options,
    handle_errors,
    load,
)


@app.command()
@handle_errors
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo's artifacts.")
    ] = Path("headpursuit-demo"),
    top_k: Annotated[int, typer.Option(min=1, help="Heads steered per concept.")] = 3,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per prompt.")] = 20,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="CPU threads for torch. 1 (default) is fastest for this small model's "
            "token-by-token decoding and stays fast on a busy shared machine; 0 = torch's default.",
        ),
    ] = 1,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
) -> None:
    """Run the whole chain on the embedded SmolLM2-135M-Instruct and bundled prompts.

    Captures 40 bundled questions, ranks heads for colours and countries, explains the top
    heads, scales them by the default protocol's alpha next to matched random controls,
    tests the countries heads against 20 matched random head sets on held-out fact
    questions (target: countries; non-targets: colours, numbers) with CIs and a p-value,
    and writes an HTML report.
    """
    import torch

    from ..activations.capture import capture
    from ..activations.prompts import bundled_prompts
    from ..io import check_writable
    from ..models.architectures import AttentionSites
    from ..ranking.concepts import resolve_concept, word_token_ids
    from ..ranking.criteria import rank_heads
    from ..ranking.explain import explain_heads
    from ..report import write_report
    from ..steering.comparison import compare_generations

    check_model_options(device, device_map)
    check_writable(out_dir / "report.html", what="demo folder")
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    loaded = load(None, dtype, device, device_map)
    typer.echo(f"Model: {loaded.model_id} (loaded in {time.perf_counter() - start:.1f} s)")
    prompts = bundled_prompts("demo")
    acts = capture(loaded, prompts, chat=True, progress=False, batch_size=len(prompts))
    sites = AttentionSites(loaded.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    acts.save(out_dir / "activations.safetensors")
    typer.echo(f"Captured {acts.n_samples} bundled prompts: {acts!r}")
    artifacts: list[Any] = []
    rankings: dict[str, Any] = {}
    pool = word_token_ids(loaded.tokenizer)
    steer_prompts = {
        "colors": ["What colour is the sky on a clear day?"],
        "countries": ["What is the capital of France?"],
    }
    for name, questions in steer_prompts.items():
        concept = resolve_concept(loaded.tokenizer, name)
        ranking = rank_heads(acts, sites, concept.token_ids, concept=name, random_pool=pool)
        ranking.save(out_dir / f"ranking_{name}.json")
        heads = ranking.top(top_k)
        explanation = explain_heads(
            acts, sites, loaded.tokenizer, heads, n_atoms=5, source=f"top {top_k} of {name}"
        )
        explanation.save(out_dir / f"explanation_{name}.json")
        run = compare_generations(
            loaded,
            questions,
            heads,
            alpha=DEFAULT_ALPHA,
            max_new_tokens=max_new_tokens,
            concept=name,
        )
        run.save(out_dir / f"steering_{name}.json")
        rankings[name] = ranking
        artifacts += [ranking, explanation, run]
        typer.echo(f"\n== {name}: {len(concept)} tokens; ranked by {ranking.criterion}")
        for item in explanation.heads:
            typer.echo(
                f"  {item.head!s:7} score {float(ranking.scores[item.head]):.3f}  "
                f"SOMP: {', '.join(item.somp_tokens)} | logit lens: {', '.join(item.lens_tokens)}"
            )
        control = ", ".join(str(h) for h in run.controls[0])
        for i, question in enumerate(run.prompts):
            typer.echo(f"  > {question}")
            typer.echo(f"    unmodified:              {run.unmodified[i]}")
            typer.echo(f"    {name} heads {_done_to(DEFAULT_ALPHA)}:    {run.steered[i]}")
            typer.echo(f"    control [{control}]: {run.control_outputs[0][i]}")
    artifacts.append(_specificity_check(loaded, rankings["countries"], top_k, out_dir))
    written = write_report(artifacts, out_dir / "report.html", top_k=10)
    typer.echo(
        f"\nReport: {written[0].resolve()} (artifacts in {out_dir}/). "
        f"Done in {time.perf_counter() - start:.1f} s."
    )


def _done_to(alpha: float) -> str:
    """What scaling a head's output by ``alpha`` does to it, in one word or two."""
    if alpha == 0:
        return "ablated"
    if alpha == -1:
        return "flipped"
    return f"scaled by {alpha:g}"


#: Test-split questions asked per fact concept in the demo's specificity check.
DEMO_QUESTIONS = 120


def _specificity_check(loaded: Any, ranking: Any, top_k: int, out_dir: Path) -> Any:
    """Scale the top countries heads and 20 matched control sets by the default alpha on
    held-out fact questions."""
    from ..evaluation.language.facts import CONCEPTS
    from ..evaluation.language.qa import known_facts, run_qa

    sets = {c: known_facts(loaded, c, "test", max_asked=DEMO_QUESTIONS) for c in CONCEPTS}
    typer.echo(
        f"\n== Is it specific? The top {top_k} countries heads {_done_to(DEFAULT_ALPHA)} vs 20 "
        "matched random head sets (same heads per layer), on test questions the model answers "
        "right: " + ", ".join(f"{c} {len(s.facts)}" for c, s in sets.items())
    )
    result = run_qa(
        loaded,
        "countries",
        sets=sets,
        rankings={ranking.criterion: ranking},
        criterion=ranking.criterion,
        comparisons=(),
        ks=[top_k],
        alphas=(DEFAULT_ALPHA,),
        n_controls=20,
        headline=False,
        output=out_dir / "experiment_countries.json",
    )
    for row in result.summary():
        typer.echo(
            f"  {row['set']:<10} ({row['role']:<9}) still right: {row['value']:.2f} "
            f"[95% CI {row['low']:.2f}, {row['high']:.2f}]; random heads "
            f"{row['controls_p5']:.2f}-{row['controls_p95']:.2f} (5th-95th pct); p = {format_p(row['p'])}"
        )
    for verdict in result.verdicts():
        typer.echo(
            "  Verdict: "
            + ("specific" if verdict["specific"] else "not specific")
            + " (specific = target p < 0.05 and every non-target p >= 0.05)."
        )
    return result
