"""The ``headpursuit`` command line: one subcommand per pipeline stage, each a file in, a file out.

    headpursuit capture  --prompts prompts.txt            -> activations.safetensors
    headpursuit rank     activations.safetensors colors   -> ranking_colors.json
    headpursuit explain  activations.safetensors --ranking ranking_colors.json
                                                          -> explanation.json
    headpursuit steer    --ranking ranking_colors.json --prompt "..." -> steering.json
    headpursuit report   ranking_*.json explanation.json steering.json -> report.html
    headpursuit demo     (all of the above on the embedded model)

User errors (missing file, wrong artifact, unknown concept, k out of range, activations
from another model) end with one line on stderr and exit status 2; Ctrl-C exits with 130.
Every artifact is written atomically, so neither leaves a partial file.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .architectures import UnsupportedArchitectureError
from .capture import ArtifactError
from .concepts import BUILTIN_CONCEPTS, ConceptError
from .loading import ModelLoadError
from .tasks.cli import register as _register_task_commands
from .vlm.cli import register as _register_vlm_commands

app = typer.Typer(
    help=(
        "Find the attention heads that specialise in a concept (SOMP over the unembedding), "
        "explain them in tokens, and steer the model through them.\n\n"
        "Pipeline: capture -> rank -> explain -> steer -> report. Each stage reads and writes "
        "a file, so any stage can be re-run alone. Try `headpursuit demo` first."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

F = TypeVar("F", bound=Callable[..., Any])

#: Errors a user can fix; they end with one line on stderr, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ArtifactError,
    ConceptError,
    ModelLoadError,
    UnsupportedArchitectureError,
    OSError,
    ValueError,
)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def handle_errors(function: F) -> F:
    """Turn user errors into a one-line message and exit status 2; Ctrl-C into status 130."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo("Interrupted; no partial file was written.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except USER_ERRORS as error:
            typer.echo(f"Error: {_one_line(error)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Pooling(str, Enum):
    mean = "mean"
    last = "last"
    image = "image"
    text = "text"


class Positions(str, Enum):
    all = "all"
    prompt = "prompt"
    generated = "generated"
    image = "image"
    text = "text"


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hugging Face hub id, local checkpoint directory or .gguf file. "
        "Omitted: the embedded SmolLM2-135M-Instruct.",
    ),
]
DtypeOption = Annotated[Dtype, typer.Option(help="Weights dtype.")]
DeviceMapOption = Annotated[
    str | None, typer.Option(help="Passed to from_pretrained, e.g. 'auto' on a GPU machine.")
]
ActivationsArg = Annotated[
    Path, typer.Argument(help="Activations file written by `headpursuit capture`.")
]
HeadOption = Annotated[
    list[str] | None,
    typer.Option("--head", help="A head as L12H3 (0-indexed layer and head); repeatable."),
]
RankingOption = Annotated[
    Path | None,
    typer.Option(help="Ranking JSON from `headpursuit rank`: use its --top-k best heads."),
]


def _load(model: str | None, dtype: Dtype = Dtype.float32, device_map: str | None = None):
    import torch

    from .loading import load_model

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return load_model(model, dtype=torch_dtype[dtype.value], device_map=device_map)


def _set_threads(threads: int) -> None:
    """Set torch's intra-op CPU threads (0 leaves torch's default)."""
    if threads < 0:
        raise ValueError(f"--threads must be 0 (default) or more, got {threads}.")
    if threads:
        import torch

        torch.set_num_threads(threads)


# --- prompts -------------------------------------------------------------------------


def read_prompts(
    source: str, *, column: str | None = None, split: str = "train", limit: int | None = None
) -> list[str]:
    """Prompts from a text file (one per line), a JSONL file (``column``), or a dataset.

    A ``datasets`` source is a local dataset directory (``save_to_disk`` output) or a hub
    name; both need ``column``. Blank lines and lines starting with ``#`` in text files
    are skipped.
    """
    path = Path(source)
    if path.is_file():
        if path.suffix in (".jsonl", ".json"):
            prompts = _read_jsonl(path, column)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            prompts = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    elif path.is_dir() or not (path.suffix or source.startswith((".", "/", "~"))):
        prompts = _read_dataset(source, column, split)
    else:
        raise FileNotFoundError(f"No prompts file at {source}")
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise ValueError(f"No prompts in {source}.")
    return prompts


def _read_jsonl(path: Path, column: str | None) -> list[str]:
    if column is None:
        raise ValueError(f"{path} is JSONL: name the text field with --column.")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not JSON: {error}") from error
        if not isinstance(record, dict) or column not in record:
            raise ValueError(f"{path}:{number} has no field {column!r}.")
        prompts.append(str(record[column]))
    return prompts


def _read_dataset(source: str, column: str | None, split: str) -> list[str]:
    try:
        import datasets
    except ImportError as error:
        raise ValueError(
            f"{source!r} is not a file; reading it as a Hugging Face dataset needs the "
            "`datasets` package (pip install datasets)."
        ) from error
    if column is None:
        raise ValueError(f"Name the dataset's text column with --column (reading {source!r}).")
    path = Path(source)
    saved = [path / "dataset_dict.json", path / "state.json"]
    if path.is_dir() and any(marker.exists() for marker in saved):
        data = datasets.load_from_disk(str(path))
    else:
        data = datasets.load_dataset(source, split=split)
    if isinstance(data, datasets.DatasetDict):
        data = data[split]
    if column not in data.column_names:
        raise ValueError(f"Dataset {source!r} has no column {column!r}: {data.column_names}.")
    return [str(x) for x in data[column]]


def _bundled_prompts() -> list[str]:
    text = resources.files("headpursuit").joinpath("data", "prompts", "demo.txt")
    lines = text.read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- heads ---------------------------------------------------------------------------


def _choose_heads(
    heads: list[str] | None, ranking_path: Path | None, top_k: int, fingerprint: str | None
):
    """Heads from --head and/or the top-k of a ranking file, checked against the model."""
    from .ranking import HeadRanking, parse_head

    chosen = [parse_head(text) for text in heads or []]
    source = "--head"
    if not chosen and ranking_path is None:
        raise ValueError("No heads given: use --head L12H3 (repeatable) or --ranking FILE.")
    if ranking_path is not None:
        ranking = HeadRanking.load(ranking_path)
        if fingerprint is not None and ranking.fingerprint != fingerprint:
            raise ArtifactError(
                f"{ranking_path} ranks heads of {ranking.model_id!r} (weights "
                f"{ranking.fingerprint}), not of this model (weights {fingerprint})."
            )
        chosen += ranking.top(top_k)
        source = f"top {top_k} of {ranking.concept} ({ranking.criterion})"
    return list(dict.fromkeys(chosen)), source


def _check_concept(concept: str) -> None:
    """Raise ConceptError for an unknown built-in name or a missing word-list file."""
    from .concepts import builtin_words, read_word_list

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


def apply_min_layer(ranking, min_layer: int):
    """Exclude layers below ``min_layer`` from a ranking's order (their score becomes -1)."""
    n_layers = ranking.scores.shape[0]
    if not 0 <= min_layer < n_layers:
        raise ValueError(f"--min-layer must be between 0 and {n_layers - 1}, got {min_layer}.")
    if min_layer > 0:
        ranking.scores[:min_layer] = -1.0
        ranking.criterion = f"{ranking.criterion}, layers >= {min_layer}"
    return ranking


# --- subcommands ---------------------------------------------------------------------


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
    out: Annotated[Path, typer.Option(help="Activations file to write.")] = Path(
        "activations.safetensors"
    ),
    model: ModelOption = None,
    column: Annotated[str | None, typer.Option(help="Text field of JSONL / dataset.")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "train",
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 16,
    max_length: Annotated[int, typer.Option(help="Truncate prompts to this many tokens.")] = 512,
    pooling: Annotated[
        Pooling, typer.Option(help="Positions averaged per prompt (image/text: VLMs only).")
    ] = Pooling.mean,
    dtype: DtypeOption = Dtype.float32,
    device_map: DeviceMapOption = None,
    chat: Annotated[bool, typer.Option(help="Wrap each prompt in the chat template.")] = True,
) -> None:
    """Run prompts through the model and store each head's pooled output.

    Writes a safetensors file: `pooled` [n_prompts, n_layers, n_heads, head_dim] (head space,
    before W_O) plus metadata (model id, weights fingerprint, pooling, prompts).

    Example: headpursuit capture --prompts questions.txt --out activations.safetensors
    """
    from .capture import capture as run_capture

    texts = read_prompts(prompts, column=column, split=split, limit=limit)
    loaded = _load(model, dtype, device_map)
    acts = run_capture(
        loaded,
        texts,
        pooling=pooling.value,
        batch_size=batch_size,
        max_length=max_length,
        chat=chat,
    )
    acts.save(out)
    typer.echo(f"Wrote {out}: {acts!r}")


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
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Ranking file (.json, or .csv for a table). Default ranking_<concept>.json."
        ),
    ] = None,
    n_atoms: Annotated[int, typer.Option(help="SOMP atoms per head.")] = 10,
    min_layer: Annotated[
        int,
        typer.Option(
            help="Exclude layers below this from the order (e.g. 1: layer-0 heads copy token "
            "embeddings and look specialised for every concept)."
        ),
    ] = 0,
    multi_token: Annotated[
        str,
        typer.Option(help="'skip' words with no single-token spelling, or keep the 'first' piece."),
    ] = "skip",
    show: Annotated[int, typer.Option(help="How many top heads to print.")] = 10,
) -> None:
    """Rank every head by how much of its output the concept's tokens explain (SOMP EVR).

    Writes the ranking (JSON, or CSV for a .csv path) and prints the top heads and the
    concept's words that have no single-token spelling (dropped).

    Example: headpursuit rank activations.safetensors colors --min-layer 1
    """
    from .architectures import AttentionSites
    from .capture import Activations
    from .concepts import resolve_concept
    from .ranking import rank_heads

    acts = Activations.load(activations)
    _check_concept(concept)  # fail before loading the model
    loaded = _load(model)
    sites = AttentionSites(loaded.model)
    acts.check_model(sites, loaded.fingerprint)
    resolved = resolve_concept(loaded.tokenizer, concept, multi_token=multi_token)
    if n_atoms < 1:
        raise ValueError(f"--n-atoms must be at least 1, got {n_atoms}.")
    ranking = rank_heads(acts, sites, resolved.token_ids, concept=resolved.name, n_atoms=n_atoms)
    apply_min_layer(ranking, min_layer)
    out = out or Path(f"ranking_{resolved.name}.json")
    ranking.save(out)
    typer.echo(f"{resolved!r}")
    if resolved.dropped:
        typer.echo(_dropped_summary(resolved.dropped))
    typer.echo(ranking.to_frame().head(max(show, 0)).to_string(index=False))
    typer.echo(f"Wrote {out}")


@app.command()
@handle_errors
def explain(
    activations: ActivationsArg,
    model: ModelOption = None,
    head: HeadOption = None,
    ranking: RankingOption = None,
    top_k: Annotated[int, typer.Option(help="Heads taken from --ranking.")] = 5,
    n_atoms: Annotated[int, typer.Option(help="SOMP atoms (tokens) per head.")] = 10,
    out: Annotated[Path, typer.Option(help="Explanation JSON to write.")] = Path(
        "explanation.json"
    ),
) -> None:
    """Describe heads in tokens: SOMP over the full vocabulary next to the logit lens.

    The paper's Table 1. SOMP picks tokens that jointly explain the head's outputs over all
    prompts; the logit lens lists the tokens most often among each prompt's top-5 logits.

    Example: headpursuit explain activations.safetensors --ranking ranking_colors.json
    --top-k 5 --head L29H7
    """
    from .architectures import AttentionSites
    from .capture import Activations
    from .explain import explain_heads

    acts = Activations.load(activations)
    _choose_heads(head, ranking, top_k, acts.fingerprint)  # fail before loading the model
    loaded = _load(model)
    sites = AttentionSites(loaded.model)
    acts.check_model(sites, loaded.fingerprint)
    heads, source = _choose_heads(head, ranking, top_k, loaded.fingerprint)
    explanation = explain_heads(
        acts, sites, loaded.tokenizer, heads, n_atoms=n_atoms, source=source
    )
    explanation.save(out)
    typer.echo(explanation.to_frame().to_string(index=False))
    typer.echo(f"Wrote {out}")


@app.command("steer")
@handle_errors
def steer_command(
    model: ModelOption = None,
    head: HeadOption = None,
    ranking: RankingOption = None,
    top_k: Annotated[int, typer.Option(help="Heads taken from --ranking.")] = 3,
    alpha: Annotated[
        float, typer.Option(help="Scale of the heads' outputs: -1 flips, 0 ablates, 5 amplifies.")
    ] = -1.0,
    positions: Annotated[
        Positions, typer.Option(help="Where to intervene: all positions (the paper) or a part.")
    ] = Positions.all,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="A prompt; repeatable.")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option(help="Prompts file/dataset, as for `capture`.")
    ] = None,
    column: Annotated[str | None, typer.Option(help="Text field of JSONL / dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    controls: Annotated[int, typer.Option(help="Number of matched random control sets.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the first control set.")] = 0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt.")] = 40,
    chat: Annotated[bool, typer.Option(help="Use the chat template.")] = True,
    out: Annotated[Path, typer.Option(help="Steering JSON to write.")] = Path("steering.json"),
    threads: Annotated[
        int,
        typer.Option(help="CPU threads for torch (0 = torch's default; 1 often decodes fastest)."),
    ] = 0,
) -> None:
    """Generate with the heads scaled by alpha, next to the unmodified model and controls.

    Greedy decoding, chat template by default. Controls are random heads with the same
    count per layer as the steered ones, disjoint from them, one set per seed.

    Example: headpursuit steer --ranking ranking_countries.json --top-k 3 --alpha -1
    --prompt "What is the capital of France?"
    """
    from .comparison import compare_generations

    texts = list(prompt or [])
    if prompts is not None:
        texts += read_prompts(prompts, column=column, limit=limit)
    if not texts:
        raise ValueError("No prompts: use --prompt TEXT (repeatable) or --prompts FILE.")
    _choose_heads(head, ranking, top_k, None)  # fail before loading the model
    _set_threads(threads)
    loaded = _load(model)
    heads, source = _choose_heads(head, ranking, top_k, loaded.fingerprint)
    concept = source if ranking is not None else ""
    run = compare_generations(
        loaded,
        texts,
        heads,
        alpha=alpha,
        positions=positions.value,
        n_controls=controls,
        seed=seed,
        max_new_tokens=max_new_tokens,
        chat=chat,
        concept=concept,
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
        list[Path], typer.Argument(help="Ranking, explanation and steering JSON files.")
    ],
    out: Annotated[Path, typer.Option(help="HTML file to write; PNG figures go beside it.")] = Path(
        "report.html"
    ),
    top_k: Annotated[int, typer.Option(help="Heads per concept in tables and overlaps.")] = 10,
) -> None:
    """Write one self-contained HTML report from any mix of JSON artifacts.

    Layers x heads EVR heatmaps per concept, Jaccard overlaps of the concepts' top-k
    heads, SOMP vs logit-lens token tables, steering examples. Figures are embedded (no
    external URL) and also written as PNG files beside the HTML.

    Example: headpursuit report ranking_*.json explanation.json steering.json
    """
    from .report import load_artifact, write_report

    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}.")
    loaded = [load_artifact(path) for path in artifacts]
    written = write_report(loaded, out, top_k=top_k)
    typer.echo(f"Wrote {written[0]} (+ {len(written) - 1} PNG figures beside it)")


@app.command()
@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option(help="Folder for the demo's artifacts.")] = Path(
        "headpursuit-demo"
    ),
    top_k: Annotated[int, typer.Option(help="Heads steered per concept.")] = 3,
    min_layer: Annotated[
        int, typer.Option(help="Exclude layers below this from the ranking (see `rank --help`).")
    ] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt.")] = 20,
    threads: Annotated[
        int,
        typer.Option(
            help="CPU threads for torch. 1 (default) is fastest for this small model's "
            "token-by-token decoding and stays fast on a busy shared machine; 0 = torch's default."
        ),
    ] = 1,
) -> None:
    """Run the whole chain on the embedded SmolLM2-135M-Instruct and bundled prompts.

    Captures 40 bundled questions, ranks heads for colours and countries (layer 0
    excluded, see `rank --help`), explains the top heads, flips them (alpha = -1) next to
    matched random controls, and writes an HTML report.
    """
    from .architectures import AttentionSites
    from .capture import capture as run_capture
    from .comparison import compare_generations
    from .concepts import resolve_concept
    from .explain import explain_heads
    from .ranking import rank_heads
    from .report import write_report

    _set_threads(threads)
    start = time.perf_counter()
    loaded = _load(None)
    typer.echo(f"Model: {loaded.model_id} (loaded in {time.perf_counter() - start:.1f} s)")
    prompts = _bundled_prompts()
    acts = run_capture(loaded, prompts, chat=True, progress=False, batch_size=len(prompts))
    sites = AttentionSites(loaded.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    acts.save(out_dir / "activations.safetensors")
    typer.echo(f"Captured {acts.n_samples} bundled prompts: {acts!r}")
    typer.echo(
        f"Ranking: concept-restricted SOMP EVR, layers >= {min_layer} only. Raw EVR puts "
        "layer-0 heads first for every concept (tied embeddings: they copy token "
        "embeddings), so they are excluded here; the raw top heads are shown for honesty."
    )
    artifacts: list[Any] = []
    # One question per concept (the first of its kind in the bundled prompts, not picked
    # for effect), to keep the demo within a minute on two CPU cores.
    steer_prompts = {
        "colors": ["What colour is the sky on a clear day?"],
        "countries": ["What is the capital of France?"],
    }
    for name, questions in steer_prompts.items():
        concept = resolve_concept(loaded.tokenizer, name)
        ranking = rank_heads(acts, sites, concept.token_ids, concept=name, n_atoms=10)
        raw_top = ", ".join(str(h) for h in ranking.top(top_k))
        apply_min_layer(ranking, min_layer)
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
        typer.echo(f"\n== {name}: {len(concept)} tokens; raw-EVR top {top_k}: {raw_top}")
        for item in explanation.heads:
            typer.echo(
                f"  {item.head!s:7} EVR {float(ranking.evr[item.head]):.3f}  "
                f"SOMP: {', '.join(item.somp_tokens)} | logit lens: {', '.join(item.lens_tokens)}"
            )
        control = ", ".join(str(h) for h in run.controls[0])
        for i, question in enumerate(run.prompts):
            typer.echo(f"  > {question}")
            typer.echo(f"    unmodified:              {run.unmodified[i]}")
            typer.echo(f"    {name} heads flipped:    {run.steered[i]}")
            typer.echo(f"    control [{control}]: {run.control_outputs[0][i]}")
    typer.echo(
        "\nRead the flipped output against the control: only a change the matched random "
        "heads do not cause points at the concept's heads."
    )
    written = write_report(artifacts, out_dir / "report.html", top_k=10)
    typer.echo(
        f"\nReport: {written[0].resolve()} (artifacts in {out_dir}/). "
        f"Done in {time.perf_counter() - start:.1f} s."
    )


@app.command()
def version() -> None:
    """Print the version."""
    from ._version import __version__

    typer.echo(__version__)


# The paper's experiments: language (`qa`, `wordfreq`, `amplify`) and vision-language
# (`classify`, `caption`).
_register_task_commands(app)
_register_vlm_commands(app)
