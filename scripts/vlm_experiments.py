"""Run the VLM experiments of docs/vlm.md on the shipped tiny VLM and write JSON results.

    nice -n 10 .venv/bin/python scripts/vlm_experiments.py --out benchmarks/vlm_out

Writes ``heldout.json`` (accuracy/CIDEr of the unmodified model), ``classify_digits.json``,
``classify_fashion.json`` (each with the other dataset as a non-target set when both are
run), ``caption_suppress.json`` (α = −1), ``caption_amplify.json`` (α = 5), the rankings and
``jaccard.json`` to ``--out``; the classify and caption files are
:class:`~headpursuit.evaluation.experiment.ExperimentResult` artifacts (matched controls,
bootstrap CIs, control p-values).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from headpursuit import jaccard, load_model  # noqa: E402
from headpursuit.evaluation.experiment import ExperimentResult  # noqa: E402
from headpursuit.evaluation.vision import data  # noqa: E402
from headpursuit.evaluation.vision.caption import caption_images, run_caption  # noqa: E402
from headpursuit.evaluation.vision.cider import cider  # noqa: E402
from headpursuit.evaluation.vision.classify import (  # noqa: E402
    accuracy,
    rank_all,
    run_classify,
)

FILES = {
    "digits": "classify_digits.json",
    "fashion": "classify_fashion.json",
    "suppress": "caption_suppress.json",
    "amplify": "caption_amplify.json",
}


def _ci(row: dict) -> str:
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def _p(row: dict) -> str:
    return "" if math.isnan(row["p"]) else f"{row['p']:.3f}"


def tables(out: Path) -> str:
    """Markdown tables of the experiment artifacts in ``out``: per set, k, α and arm the
    normalised primary metric (95 % cluster-bootstrap CI), the controls' 5-95 % range and
    the control p-value (selected arm only)."""
    lines: list[str] = []
    for name, filename in FILES.items():
        path = out / filename
        if not path.is_file():
            continue
        result = ExperimentResult.load(path)
        metrics = [result.primary] + (["cider"] if result.task == "caption" else [])
        lines += [
            f"\n**{name}** ({result.task}, {result.direction} expected; select "
            f"{result.config.get('n_select')} images, items {result.config.get('n_items')})\n",
            "| set | k | α | arm | metric | value / unmodified [95% CI] | controls p5–p95 | p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for metric in metrics:
            for row in result.summary(metric):
                lines.append(
                    f"| {row['set']} | {row['k']} | {row['alpha']:g} | {row['arm']} | {metric} "
                    f"| {_ci(row)} | {row['controls_p5']:.2f}–{row['controls_p95']:.2f} "
                    f"(n={row['n_controls']}) | {_p(row)} |"
                )
        for verdict in result.verdicts():
            lines.append(
                f"\nk={verdict['k']} α={verdict['alpha']:g}: target p={verdict['target_p']:.3f}, "
                f"significant={verdict['significant']}, specific={verdict['specific']}"
            )
    path = out / "jaccard.json"
    if path.is_file():
        overlap = json.loads(path.read_text())
        lines += ["\n| tasks, top-k | Jaccard |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in overlap.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "vlm_out")
    parser.add_argument("--n-select", type=int, default=40)
    parser.add_argument("--n-eval", type=int, default=150)
    parser.add_argument("--n-caption", type=int, default=20)
    parser.add_argument("--controls", type=int, default=20, help="matched control sets")
    parser.add_argument("--n-heldout", type=int, default=300)
    parser.add_argument("--percents", default="1,2,3", help="k as %% of all heads")
    parser.add_argument("--ks", default=None, help="explicit head counts (overrides --percents)")
    parser.add_argument("--criterion", default=None, help="default: the library's")
    parser.add_argument("--compare", default="evr,logit_lens")
    parser.add_argument("--only", default="heldout,digits,fashion,suppress,amplify")
    parser.add_argument("--tables", action="store_true", help="only print the markdown tables")
    args = parser.parse_args()
    if args.tables:
        print(tables(args.out))
        return
    from headpursuit.ranking.criteria import DEFAULT_CRITERION

    criterion = args.criterion or DEFAULT_CRITERION
    comparisons = [c for c in args.compare.split(",") if c]
    percents = [float(p) for p in args.percents.split(",")]
    ks = [int(k) for k in args.ks.split(",")] if args.ks else None
    args.out.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    start = time.time()
    loaded = load_model("tiny-vlm")
    tasks = {
        "digits": (
            data.digits("train")[: args.n_select],
            data.digits("test")[: args.n_eval],
            data.DIGIT_NAMES,
        ),
        "fashion": (
            data.fashion("train", limit=args.n_select),
            data.fashion("test", limit=args.n_eval),
            data.FASHION_NAMES,
        ),
    }
    if "heldout" in only:
        heldout = {}
        for name, (_, _, names) in tasks.items():
            examples = (
                data.digits("test")[: args.n_heldout]
                if name == "digits"
                else data.fashion("test", limit=args.n_heldout)
            )
            heldout[f"{name}_accuracy"], _ = accuracy(loaded, examples, names)
        scenes = data.shapes("test", args.n_heldout // 3)
        captions = caption_images(loaded, scenes, max_new_tokens=16)
        heldout["shapes_cider"], _ = cider([e.references for e in scenes], captions)
        heldout["shapes_exact"] = sum(
            c == e.answer for c, e in zip(captions, scenes, strict=True)
        ) / len(scenes)
        heldout["n"] = {"digits": args.n_heldout, "fashion": args.n_heldout, "shapes": len(scenes)}
        heldout["examples"] = list(zip([e.answer for e in scenes[:8]], captions[:8], strict=True))
        (args.out / "heldout.json").write_text(json.dumps(heldout, indent=1))
        print("heldout", heldout, f"{time.time() - start:.0f}s", flush=True)
    common = dict(
        criterion=criterion,
        comparisons=comparisons,
        percents=percents,
        ks=ks,
        n_controls=args.controls,
        log=print,
    )
    rankings = {}
    for name, (select, evaluate, names) in tasks.items():
        if name not in only and f"{name}-rank" not in only:
            continue
        # Selection images come from the training split, evaluation from the held-out split.
        rankings[name] = rank_all(loaded, select, names, [criterion, *comparisons], concept=name)
        (args.out / f"ranking_{name}.json").write_text(
            json.dumps(rankings[name][criterion].to_json())
        )
        if name not in only:
            continue
        others = {
            other: (evaluate_other, names_other)
            for other, (_, evaluate_other, names_other) in tasks.items()
            if other != name and other in only
        }
        run_classify(
            loaded,
            name,
            select,
            evaluate,
            names,
            nontarget=others,
            rankings=rankings[name],
            output=args.out / FILES[name],
            **common,
        )
        print(name, f"{time.time() - start:.0f}s", flush=True)
    select = data.shapes("select", args.n_select)
    evaluate = data.shapes("test", args.n_caption)
    for name, alpha in (("suppress", -1.0), ("amplify", 5.0)):
        if name not in only:
            continue
        if "shapes" not in rankings:
            rankings["shapes"] = rank_all(
                loaded, select, data.COLOUR_NAMES, [criterion, *comparisons], concept="colours"
            )
        run_caption(
            loaded,
            select,
            evaluate,
            words=data.COLOUR_NAMES,
            rankings=rankings["shapes"],
            alphas=[alpha],
            max_new_tokens=14,
            output=args.out / FILES[name],
            **common,
        )
        print(name, f"{time.time() - start:.0f}s", flush=True)
    if len(rankings) > 1:
        overlap = {
            f"{a}/{b} top-{k}": jaccard(
                rankings[a][criterion].top(k), rankings[b][criterion].top(k)
            )
            for a, b in [("digits", "fashion"), ("digits", "shapes"), ("fashion", "shapes")]
            if a in rankings and b in rankings
            for k in (3, 5, 8, 16)
        }
        (args.out / "jaccard.json").write_text(json.dumps(overlap, indent=1))
        print("jaccard", overlap)
    print(tables(args.out))


if __name__ == "__main__":
    main()
