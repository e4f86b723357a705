"""Run the VLM experiments of docs/vlm.md on the tiny VLM, and render them into docs/results.md.

    nice -n 10 .venv/bin/python scripts/vlm_experiments.py
    .venv/bin/python scripts/vlm_experiments.py --render

Every dataset of the testbed (``headpursuit.evaluation.vision.data.DATASETS``) selects its
heads on ``--n-select`` images of its "select" split and is evaluated on ``--n-test`` images
of its "test" split. Writes to ``--out``:

- ``heldout.json``: accuracy of the unmodified model per dataset, caption colours and CIDEr;
- ``ranking_<set>_<criterion>.json``: every head ranking (the criterion under test and the
  comparisons), per dataset and for the caption colours;
- ``classify_<dataset>.json``: the top-k heads flipped (α = −1) at k = ``--percents`` % of
  all heads, against ``--controls`` matched random control sets, the comparison rankings'
  top-k and the unmodified model; ``--nontarget`` picks the other datasets evaluated under
  the same interventions (``similar``: the similar-task partner of ``data.SIMILAR_PAIRS``);
- ``caption_suppress.json`` (α = −1), ``caption_ablate.json`` (α = 0),
  ``caption_amplify.json`` (α = 5), at k = ``--caption-percents`` % of all heads: colour
  words per caption, CIDEr-D, and CIDEr-D of the non-colour part of the caption
  (``cider_non_concept``);
- ``caption_dev.json``: the suppression protocol chosen on dev scenes (scenes ``--n-select``
  onwards of the "select" split: disjoint from the selection scenes and from the test split).
  Heads are ranked by every criterion of ``DEV_CRITERIA`` from two poolings (the image
  tokens, as the paper and the other experiments do, and the text tokens of the prompt
  followed by the scene's reference caption), and each ranking's top-k is flipped
  (α = −1) for every k of ``--dev-ks``; :func:`choose_caption_setting` picks one setting,
  which ``caption_dev_choice.json`` then evaluates on the test scenes against the
  matched controls;
- ``jaccard.json``: the Jaccard overlap of the selected top-k heads for every pair of sets,
  with the null of ``headpursuit.ranking.controls.random_jaccard`` (two random head sets of
  the same sizes): its mean and the p-value of the observed overlap.

The classify and caption files are :class:`~headpursuit.evaluation.experiment.ExperimentResult`
artifacts (bootstrap CIs, control p-values). ``--render`` reads them and writes the VLM block
of docs/results.md (``scripts/vlm_results.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vlm_results import CAPTIONS, COLOUR_CUT, RESULTS_MD, render, write_block  # noqa: E402

from headpursuit.errors import InputError  # noqa: E402
from headpursuit.evaluation.experiment import heads_for_percent  # noqa: E402
from headpursuit.evaluation.vision import data  # noqa: E402
from headpursuit.ranking.controls import jaccard, random_jaccard  # noqa: E402
from headpursuit.ranking.head_ranking import HeadRanking  # noqa: E402

#: The parts of a run (`--only`), in the order they run.
PARTS = ("heldout", "classify", "caption", "caption-dev", "jaccard")
#: The rankings compared on the dev scenes: the library's criteria, the signed logit lens
#: (``logit_lens_z``) included, since suppression needs heads that write the colours *up*.
DEV_CRITERIA = ("specificity", "evr", "logit_lens", "logit_lens_z")
COLOURS = "colours"
N_NULL_DRAWS = 10_000


def ranking_path(out: Path, name: str, criterion: str) -> Path:
    return out / f"ranking_{name}_{criterion}.json"


def saved_rankings(
    out: Path, name: str, criteria: list[str], fingerprint: str
) -> dict[str, HeadRanking]:
    """The rankings of ``name`` in ``out`` that were made on the model with ``fingerprint``."""
    known = {}
    for criterion in criteria:
        path = ranking_path(out, name, criterion)
        if path.is_file():
            ranking = HeadRanking.load(path)
            if ranking.fingerprint == fingerprint:
                known[criterion] = ranking
    return known


def get_rankings(
    loaded: Any,
    out: Path,
    name: str,
    select: list[data.ImageExample],
    words: list[str],
    criteria: list[str],
) -> dict[str, HeadRanking]:
    """The rankings of one set by every criterion: reused from ``out`` when they were made on
    this model (same fingerprint), otherwise computed from one capture and saved."""
    from headpursuit.evaluation.vision.classify import rank_all

    known = saved_rankings(out, name, criteria, loaded.fingerprint)
    rankings = rank_all(loaded, select, words, criteria, concept=name, rankings=known, log=print)
    for criterion, ranking in rankings.items():
        ranking.save(ranking_path(out, name, criterion))
    return rankings


def caption_rankings(
    loaded: Any, out: Path, select: list[data.ImageExample], criteria: list[str]
) -> dict[str, HeadRanking]:
    """The colour rankings from head outputs pooled over the text tokens of each selection
    scene's prompt followed by its reference caption (the positions that write the caption,
    where the image-token pooling reads the image); saved as ``ranking_colours_caption_*``."""
    from headpursuit.activations.capture import capture
    from headpursuit.evaluation.experiment import complete_rankings
    from headpursuit.evaluation.vision.classify import (
        concept_token_ids,
        prompt_for,
        rank_image_heads,
    )

    name = f"{COLOURS}_caption"

    def activations() -> Any:
        print(f"Capturing {len(select)} selection scenes with their captions (text pooling)...")
        return capture(
            loaded,
            [prompt_for(loaded, e.question) + e.answer for e in select],
            images=[e.image for e in select],
            pooling="text",
            progress=False,
        )

    token_ids = concept_token_ids(loaded, data.COLOUR_NAMES, COLOURS)
    rankings = complete_rankings(
        criteria,
        saved_rankings(out, name, criteria, loaded.fingerprint),
        activations,
        lambda pooled, criterion: rank_image_heads(
            loaded, pooled, token_ids, concept=COLOURS, criterion=criterion
        ),
        concept=COLOURS,
        log=print,
    )
    for criterion, ranking in rankings.items():
        ranking.save(ranking_path(out, name, criterion))
    return rankings


def choose_caption_setting(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The dev rule: among the settings that cut colour words to ≤ ``COLOUR_CUT`` of the
    unmodified model, the one with the highest non-colour CIDEr retention (ties: the smaller
    k, then the earlier row). ``None`` when no setting cuts colour words that far.

    ``rows``: ``{"pooling", "criterion", "k", "colour", "retention", ...}`` per setting."""
    cut = [r for r in rows if r["colour"] <= COLOUR_CUT]
    if not cut:
        return None
    best = max(r["retention"] for r in cut)
    return min((r for r in cut if r["retention"] == best), key=lambda r: r["k"])


def run_caption_dev(loaded: Any, args: argparse.Namespace, common: dict[str, Any]) -> None:
    """The ``caption-dev`` part (module doc): the dev sweep, the rule, the test run."""
    from headpursuit.evaluation.vision.caption import caption_images, caption_scores, run_caption
    from headpursuit.steering.hooks import steer

    criteria = list(DEV_CRITERIA)
    select = data.shapes("select", args.n_select)
    dev = data.shapes("select", args.n_select + args.n_dev)[args.n_select :]
    by_pooling = {
        "image": get_rankings(loaded, args.out, COLOURS, select, data.COLOUR_NAMES, criteria),
        "caption": caption_rankings(loaded, args.out, select, criteria),
    }

    def scores() -> dict[str, float]:
        captions = caption_images(loaded, dev, max_new_tokens=args.caption_tokens)
        found = caption_scores(captions, dev, data.COLOUR_NAMES)
        return {metric: float(values.sum()) for metric, values in found.items()}

    base = scores()
    rows = []
    for pooling, rankings in by_pooling.items():
        for criterion in criteria:
            for k in [int(k) for k in args.dev_ks.split(",")]:
                with steer(loaded.model, rankings[criterion].top(k), CAPTIONS["suppress"]):
                    arm = scores()
                rows.append(
                    {
                        "pooling": pooling,
                        "criterion": criterion,
                        "k": k,
                        "colour": arm["concept_words"] / base["concept_words"],
                        "retention": arm["cider_non_concept"] / base["cider_non_concept"],
                        "cider": arm["cider"] / base["cider"],
                    }
                )
                print("caption-dev", json.dumps(rows[-1]), flush=True)
    chosen = choose_caption_setting(rows)
    payload = {
        "n_dev": len(dev),
        "dev_scenes": f"'select' split, scenes {args.n_select}–{args.n_select + len(dev) - 1}",
        "baseline": base,
        "rows": rows,
        "chosen": chosen,
    }
    (args.out / "caption_dev.json").write_text(json.dumps(payload, indent=1))
    if chosen is None:
        (args.out / "caption_dev_choice.json").unlink(missing_ok=True)
        return
    ranking = by_pooling[chosen["pooling"]][chosen["criterion"]]
    result = run_caption(
        loaded,
        select,
        data.shapes("test", args.n_caption),
        words=data.COLOUR_NAMES,
        concept=COLOURS,
        rankings={ranking.criterion: ranking},
        alphas=[CAPTIONS["suppress"]],
        max_new_tokens=args.caption_tokens,
        **{**common, "criterion": ranking.criterion, "comparisons": [], "percents": []},
        ks=[chosen["k"]],
    )
    result.config["pooling"] = chosen["pooling"]
    result.save(args.out / "caption_dev_choice.json")


def nontarget_sets(name: str, chosen: list[str], mode: str) -> list[str]:
    """The non-target sets of a classify run: every other chosen dataset, its similar-task
    partner (when chosen), or none."""
    if mode == "all":
        return [other for other in chosen if other != name]
    if mode == "similar":
        partner = data.get_dataset(name).similar_to
        return [partner] if partner in chosen else []
    return []


def dataset_names(spec: str) -> list[str]:
    """``--datasets`` as a list of registry names (``"all"``: every dataset)."""
    return list(data.DATASETS) if spec == "all" else spec.split(",")


def run(args: argparse.Namespace) -> None:
    """Every experiment named in ``--only``, writing the artifacts listed in the module doc."""
    from headpursuit import load_model
    from headpursuit.evaluation.vision.caption import caption_images, run_caption
    from headpursuit.evaluation.vision.cider import cider
    from headpursuit.evaluation.vision.classify import accuracy, run_classify
    from headpursuit.models.tiny_vlm import assemble_tiny_vlm
    from headpursuit.models.zoo import DEFAULT_MODEL, locate_named
    from headpursuit.ranking.criteria import DEFAULT_CRITERION

    criterion = args.criterion or DEFAULT_CRITERION
    comparisons = [c for c in args.compare.split(",") if c]
    criteria = list(dict.fromkeys([criterion, *comparisons]))
    percents = [float(p) for p in args.percents.split(",")]
    caption_percents = [float(p) for p in args.caption_percents.split(",")]
    chosen = dataset_names(args.datasets)
    only = set(args.only.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def elapsed() -> str:
        return f"{time.time() - start:.0f}s"

    if args.weights is None:
        loaded = load_model("tiny-vlm")
    else:
        loaded = load_model(assemble_tiny_vlm(locate_named(DEFAULT_MODEL), args.weights))
    splits = {
        name: (
            data.load_split(name, "select", args.n_select),
            data.load_split(name, "test", args.n_test),
            list(data.get_dataset(name).class_names),
        )
        for name in chosen
    }
    if "heldout" in only:
        heldout: dict[str, Any] = {"n": args.n_heldout, "accuracy": {}}
        for name in chosen:
            examples = data.load_split(name, "test", args.n_heldout)
            value, _ = accuracy(loaded, examples, splits[name][2])
            heldout["accuracy"][name] = {"value": value, "n": len(examples)}
        scenes = data.shapes("test", args.n_heldout)
        captions = caption_images(loaded, scenes, max_new_tokens=args.caption_tokens)
        heldout["captions"] = {
            "n": len(scenes),
            "cider": cider([e.references for e in scenes], captions)[0],
            **data.colour_shares(captions, scenes),
            "examples": [[e.answer, c] for e, c in zip(scenes[:8], captions, strict=False)],
        }
        (args.out / "heldout.json").write_text(json.dumps(heldout, indent=1))
        print("heldout", json.dumps(heldout), elapsed(), flush=True)
    common: dict[str, Any] = dict(
        criterion=criterion,
        comparisons=comparisons,
        percents=percents,
        n_controls=args.controls,
        batch_size=args.batch_size,
        log=print,
    )
    rankings: dict[str, dict[str, HeadRanking]] = {}
    for name in chosen if only & {"classify", "jaccard"} else []:
        select, evaluate, names = splits[name]
        rankings[name] = get_rankings(loaded, args.out, name, select, names, criteria)
        if "classify" not in only:
            continue
        others = {
            other: (splits[other][1], splits[other][2])
            for other in nontarget_sets(name, chosen, args.nontarget)
        }
        run_classify(
            loaded,
            name,
            select,
            evaluate,
            names,
            nontarget=others,
            rankings=rankings[name],
            output=args.out / f"classify_{name}.json",
            **common,
        )
        print("classify", name, elapsed(), flush=True)
    if "caption-dev" in only:
        run_caption_dev(loaded, args, common)
        print("caption-dev", elapsed(), flush=True)
    if "caption" in only or "jaccard" in only:
        select = data.shapes("select", args.n_select)
        rankings[COLOURS] = get_rankings(
            loaded, args.out, COLOURS, select, data.COLOUR_NAMES, criteria
        )
    if "caption" in only:
        evaluate = data.shapes("test", args.n_caption)
        for label in args.captions.split(","):
            alpha = CAPTIONS[label]
            run_caption(
                loaded,
                select,
                evaluate,
                words=data.COLOUR_NAMES,
                concept=COLOURS,
                rankings=rankings[COLOURS],
                alphas=[alpha],
                max_new_tokens=args.caption_tokens,
                output=args.out / f"caption_{label}.json",
                **{**common, "percents": caption_percents},
            )
            print("caption", label, elapsed(), flush=True)
    if "jaccard" in only:
        write_jaccard(args.out, {n: r[criterion] for n, r in rankings.items()}, percents)
        print("jaccard", elapsed(), flush=True)


def work_units(args: argparse.Namespace) -> list[argparse.Namespace]:
    """``args`` split into independent runs for ``--jobs`` processes, longest first: one per
    classified dataset, one for the held-out pass (all datasets), one for the caption parts
    (they share the colour rankings). Jaccard is left out: it reads every ranking, so it
    runs after them."""
    only = [part for part in PARTS if part in args.only.split(",") and part != "jaccard"]
    chosen = dataset_names(args.datasets)
    captions = [part for part in only if part.startswith("caption")]
    units = [(",".join(captions), args.datasets)] if captions else []
    if "classify" in only:
        units += [("classify", name) for name in chosen]
    if "heldout" in only:
        units.append(("heldout", args.datasets))
    return [
        argparse.Namespace(**{**vars(args), "only": parts, "datasets": datasets, "jobs": 1})
        for parts, datasets in units
    ]


def _run_unit(args: argparse.Namespace, threads: int) -> str:
    import torch

    torch.set_num_threads(threads)
    run(args)
    return f"{args.only} {args.datasets}"


def run_parallel(args: argparse.Namespace) -> None:
    """:func:`run` over :func:`work_units` in ``args.jobs`` processes (each loads the model and
    gets an equal share of the cores), then the Jaccard part in this process."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    units = work_units(args)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{len(units)} runs in {args.jobs} processes, {threads} thread(s) each", flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        for done in [pool.submit(_run_unit, unit, threads) for unit in units]:
            print("done:", done.result(), flush=True)
    if "jaccard" in args.only.split(","):
        run(argparse.Namespace(**{**vars(args), "only": "jaccard"}))


def write_jaccard(out: Path, rankings: dict[str, HeadRanking], percents: list[float]) -> None:
    """``jaccard.json``: per k and pair of sets, the overlap of their top-k heads, the mean of
    the random-set null and the p-value ``(1 + #{null ≥ observed}) / (1 + draws)``."""
    total = next(iter(rankings.values())).n_heads_total
    rows = []
    for k in sorted({heads_for_percent(p, total) for p in percents}):
        null = random_jaccard(total, k, k, n_draws=N_NULL_DRAWS, seed=k)
        for a, b in combinations(rankings, 2):
            observed = jaccard(rankings[a].top(k), rankings[b].top(k))
            rows.append(
                {
                    "k": k,
                    "a": a,
                    "b": b,
                    "jaccard": observed,
                    "null_mean": sum(null) / len(null),
                    "p": (1 + sum(v >= observed for v in null)) / (1 + len(null)),
                    "similar": (a, b) in data.SIMILAR_PAIRS or (b, a) in data.SIMILAR_PAIRS,
                }
            )
    payload = {"n_heads_total": total, "n_null_draws": N_NULL_DRAWS, "rows": rows}
    (out / "jaccard.json").write_text(json.dumps(payload, indent=1))


# ---------------------------------------------------------------- rendering -------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "vlm")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped VLM")
    parser.add_argument("--datasets", default="all", help="comma-separated registry names")
    parser.add_argument("--n-select", type=int, default=40, help="selection images per set")
    parser.add_argument("--n-test", type=int, default=100, help="evaluation images per dataset")
    parser.add_argument("--n-caption", type=int, default=60, help="evaluation scenes")
    parser.add_argument("--n-heldout", type=int, default=300, help="images per held-out score")
    parser.add_argument("--controls", type=int, default=20, help="matched control sets")
    parser.add_argument("--percents", default="1,2,3", help="k as %% of all heads")
    parser.add_argument(
        "--caption-percents",
        default="1,3",
        help="k as %% of all heads for the caption experiments",
    )
    parser.add_argument("--criterion", default=None, help="default: the library's")
    parser.add_argument("--compare", default="evr,logit_lens")
    parser.add_argument(
        "--nontarget",
        choices=["similar", "all", "none"],
        default="none",
        help="other datasets evaluated in each classify run (similar: 2× the cost, all: 7×)",
    )
    parser.add_argument(
        "--captions",
        default=",".join(CAPTIONS),
        help=f"caption experiments to run, any of {', '.join(CAPTIONS)}",
    )
    parser.add_argument("--caption-tokens", type=int, default=14)
    parser.add_argument("--n-dev", type=int, default=100, help="dev scenes (caption-dev)")
    parser.add_argument("--dev-ks", default="1,2,3,4,5,6,8", help="k swept on the dev scenes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes to spread the runs over (each loads the model; e.g. 3 on 2 cores)",
    )
    parser.add_argument(
        "--only", default=",".join(PARTS), help="parts to run (a subset, comma-separated)"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only write the VLM block of --results-md from the artifacts in --out",
    )
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    args = parser.parse_args()
    for option, given, valid in (
        ("--captions", args.captions, CAPTIONS),
        ("--only", args.only, PARTS),
    ):
        unknown = sorted(set(given.split(",")) - set(valid))
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(valid)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    for option, given, kind in (
        ("--percents", args.percents, float),
        ("--caption-percents", args.caption_percents, float),
        ("--dev-ks", args.dev_ks, int),
    ):
        try:
            values = [kind(v) for v in given.split(",")]
        except ValueError:
            values = []
        if not values or min(values) <= 0:
            parser.error(f"{option}: expected positive {kind.__name__}s like 1,3, not {given!r}")
    args.out = args.out.resolve()
    if args.render:
        write_block(render(args.out), args.results_md)
        print(f"wrote the VLM block of {args.results_md}")
        return
    for name in dataset_names(args.datasets):
        try:
            data.get_dataset(name)  # an unknown name fails here, before any model loads
        except InputError as error:
            parser.error(f"--datasets: {error}")
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["scripts/vlm_experiments.py", *sys.argv[1:]])
    (args.out / "command.json").write_text(json.dumps({"command": command}))
    if args.jobs > 1:
        run_parallel(args)
    else:
        run(args)
    print(render(args.out))


if __name__ == "__main__":
    main()
