"""``headpursuit demo``: the whole chain on the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import app, handle_errors, load


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
) -> None:
    """Run the whole chain on the embedded SmolLM2-135M-Instruct and bundled prompts.

    Captures 40 bundled questions, ranks heads for colours and countries, explains the top
    heads, flips them (alpha = -1) next to matched random controls, and writes an HTML report.
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

    check_writable(out_dir / "report.html", what="demo folder")
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    loaded = load(None)
    typer.echo(f"Model: {loaded.model_id} (loaded in {time.perf_counter() - start:.1f} s)")
    prompts = bundled_prompts("demo")
    acts = capture(loaded, prompts, chat=True, progress=False, batch_size=len(prompts))
    sites = AttentionSites(loaded.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    acts.save(out_dir / "activations.safetensors")
    typer.echo(f"Captured {acts.n_samples} bundled prompts: {acts!r}")
    artifacts: list[Any] = []
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
            loaded, questions, heads, alpha=-1.0, max_new_tokens=max_new_tokens, concept=name
        )
        run.save(out_dir / f"steering_{name}.json")
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
            typer.echo(f"    {name} heads flipped:    {run.steered[i]}")
            typer.echo(f"    control [{control}]: {run.control_outputs[0][i]}")
    written = write_report(artifacts, out_dir / "report.html", top_k=10)
    typer.echo(
        f"\nReport: {written[0].resolve()} (artifacts in {out_dir}/). "
        f"Done in {time.perf_counter() - start:.1f} s."
    )
