"""Run the VLM experiments of docs/results.md (VLM section) on the shipped tiny VLM and write JSON results.

    nice -n 10 .venv/bin/python scripts/vlm_experiments.py --out benchmarks/vlm_out

Writes ``heldout.json`` (accuracy/CIDEr of the unmodified model), ``classify_digits.json``,
``classify_fashion.json``, ``caption_shapes.json`` and ``jaccard.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from headpursuit import jaccard, load_model  # noqa: E402
from headpursuit.evaluation.vision import data  # noqa: E402
from headpursuit.evaluation.vision.caption import caption, select_concept_heads  # noqa: E402
from headpursuit.evaluation.vision.cider import cider  # noqa: E402
from headpursuit.evaluation.vision.classify import (  # noqa: E402
    accuracy,
    classify,
    prompt_for,
    select_heads,
)
from headpursuit.steering.generation import generate  # noqa: E402


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def tables(out: Path) -> str:
    """Markdown tables of the JSON results in ``out`` (the ones pasted into docs/results.md (VLM section))."""
    lines: list[str] = []
    for name in ("digits", "fashion"):
        path = out / f"classify_{name}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        rows = result["rows"]
        base = rows[0]["accuracy"]
        lines += [
            f"\n**{name}** (select {result['n_select']}, evaluate {result['n_eval']} held-out "
            f"images; unmodified accuracy {base:.2f})\n",
            "| heads flipped (α = −1) | SOMP top-k: accuracy (normalised) | matched random: normalised, mean ± std (seeds) | SOMP heads |",
            "|---|---|---|---|",
        ]
        for k, heads in result["heads"].items():
            somp = next(r for r in rows if r["condition"] == "somp" and r["k"] == int(k))
            controls = [
                r["normalised"] for r in rows if r["condition"] == "random" and r["k"] == int(k)
            ]
            mean = sum(controls) / len(controls)
            std = (sum((c - mean) ** 2 for c in controls) / max(1, len(controls) - 1)) ** 0.5
            lines.append(
                f"| {k} ({100 * int(k) / 270:.1f}%) | {somp['accuracy']:.2f} ({somp['normalised']:.2f}) "
                f"| {_pm(mean, std)} ({len(controls)}) | {', '.join(heads)} |"
            )
    path = out / "caption_shapes.json"
    if path.is_file():
        result = json.loads(path.read_text())
        rows = result["rows"]
        base = rows[0]
        lines += [
            f"\n**shapes captions** (select {result['n_select']}, evaluate {result['n_eval']}; "
            f"unmodified: {base['keywords_per_caption']:.2f} colour words per caption, "
            f"{100 * base['keyword_share']:.0f}% of captions name a colour, CIDEr {base['cider']:.2f})\n",
            "| heads | α | colour words / caption (retention) | CIDEr (retention) | example caption |",
            "|---|---|---|---|---|",
        ]
        for k, heads in result["heads"].items():
            for alpha in sorted({r["alpha"] for r in rows if r["condition"] == "somp"}):
                somp = next(
                    r
                    for r in rows
                    if r["condition"] == "somp" and r["k"] == int(k) and r["alpha"] == alpha
                )
                lines.append(
                    f"| SOMP top-{k} ({', '.join(heads)}) | {alpha:g} | {somp['keywords_per_caption']:.2f} "
                    f"({somp['keyword_retention']:.2f}) | {somp['cider']:.2f} ({somp['cider_retention']:.2f}) "
                    f"| {somp['example']!r} |"
                )
                controls = [
                    r
                    for r in rows
                    if r["condition"] == "random" and r["k"] == int(k) and r["alpha"] == alpha
                ]
                kw = [r["keyword_retention"] for r in controls]
                ci = [r["cider_retention"] for r in controls]
                kw_mean = sum(kw) / len(kw)
                ci_mean = sum(ci) / len(ci)
                kw_std = (sum((v - kw_mean) ** 2 for v in kw) / max(1, len(kw) - 1)) ** 0.5
                ci_std = (sum((v - ci_mean) ** 2 for v in ci) / max(1, len(ci) - 1)) ** 0.5
                lines.append(
                    f"| matched random ×{len(controls)} | {alpha:g} | retention {_pm(kw_mean, kw_std)} "
                    f"| retention {_pm(ci_mean, ci_std)} | {controls[0]['example']!r} |"
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
    parser.add_argument("--n-select", type=int, default=100)
    parser.add_argument("--n-eval", type=int, default=100)
    parser.add_argument("--n-caption", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-heldout", type=int, default=300)
    parser.add_argument("--ks", default="3,5,8", help="numbers of heads to flip")
    parser.add_argument("--only", default="heldout,digits,fashion,shapes")
    parser.add_argument("--tables", action="store_true", help="only print the markdown tables")
    args = parser.parse_args()
    if args.tables:
        print(tables(args.out))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    start = time.time()
    loaded = load_model("tiny-vlm")
    tasks = {
        "digits": (data.digits("train"), data.digits("test"), data.DIGIT_NAMES),
        "fashion": (
            data.fashion("train", limit=args.n_select),
            data.fashion("test", limit=args.n_eval),
            data.FASHION_NAMES,
        ),
    }
    if "heldout" in only:
        heldout = {}
        for name, (_, test, names) in tasks.items():
            examples = (
                test[: args.n_heldout]
                if name == "digits"
                else data.fashion("test", limit=args.n_heldout)
            )
            heldout[f"{name}_accuracy"], _ = accuracy(loaded, examples, names)
        scenes = data.shapes("test", args.n_heldout // 3)
        _, captions = generate(
            loaded,
            [prompt_for(loaded, e.question) for e in scenes],
            images=[e.image for e in scenes],
            chat=False,
            max_new_tokens=16,
        )
        captions = [c.strip().split("\n")[0] for c in captions]
        heldout["shapes_cider"], _ = cider([e.references for e in scenes], captions)
        heldout["shapes_exact"] = sum(
            c == e.answer for c, e in zip(captions, scenes, strict=True)
        ) / len(scenes)
        heldout["n"] = {"digits": args.n_heldout, "fashion": args.n_heldout, "shapes": len(scenes)}
        heldout["examples"] = list(zip([e.answer for e in scenes[:8]], captions[:8], strict=True))
        (args.out / "heldout.json").write_text(json.dumps(heldout, indent=1))
        print("heldout", heldout, f"{time.time() - start:.0f}s", flush=True)
    rankings = {}
    ks = tuple(int(k) for k in args.ks.split(","))
    for name, (train, test, names) in tasks.items():
        if name not in only and f"{name}-rank" not in only:
            continue
        # Selection images come from the training split, evaluation from the held-out split.
        select, evaluate = train[: args.n_select], test[: args.n_eval]
        rankings[name] = select_heads(loaded, select, names, concept=name)
        (args.out / f"ranking_{name}.json").write_text(json.dumps(rankings[name].to_json()))
        if name not in only:
            continue
        result = classify(
            loaded,
            select,
            evaluate,
            names,
            dataset=name,
            ks=ks,
            seeds=args.seeds,
            ranking=rankings[name],
            out=args.out / f"classify_{name}.json",
        )
        print(name, f"{time.time() - start:.0f}s")
        print(result.summary().to_string(), flush=True)
    if "shapes" in only:
        select = data.shapes("select", args.n_select)
        rankings["shapes"] = select_concept_heads(loaded, select, data.COLOUR_NAMES)
        result = caption(
            loaded,
            select,
            data.shapes("test", args.n_caption),
            ks=ks[-1:],
            seeds=args.seeds,
            max_new_tokens=14,
            ranking=rankings["shapes"],
            out=args.out / "caption_shapes.json",
        )
        print("shapes", f"{time.time() - start:.0f}s")
        print(result.summary().to_string(), flush=True)
    if len(rankings) > 1:
        overlap = {
            f"{a}/{b} top-{k}": jaccard(rankings[a].top(k), rankings[b].top(k))
            for a, b in [("digits", "fashion"), ("digits", "shapes"), ("fashion", "shapes")]
            if a in rankings and b in rankings
            for k in (3, 5, 8, 16)
        }
        (args.out / "jaccard.json").write_text(json.dumps(overlap, indent=1))
        print("jaccard digits/fashion", overlap)


if __name__ == "__main__":
    main()
