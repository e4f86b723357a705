"""Choose the QA protocol (ranking criterion and α) on the dev split only.

    python scripts/choose_protocol.py          # the three models of the results

Each model's dev margins are kept in ``results/protocol_dev/<model>.json`` and read back on
the next run (``--rerun`` recomputes them), so the models can be run as separate processes
(``--rows-only``: compute one model's margins without choosing) and pooled afterwards.

For every model, concept, criterion (evr, specificity, logit_lens) and α (−1: flip,
0: ablate) it flips or ablates the top 2 % of heads ranked on the dev questions and
measures, on the *dev* questions the unmodified model answers right, the damage to the
target concept and to the other concepts' questions, next to 5 matched control sets (the rule reads only their mean).

The rule, fixed before looking at the numbers: a setting's margin for one concept is

    (control mean - selected) on the target  -  max over non-targets (control mean - selected)

(damage beyond random heads on the target, minus the worst such damage on a non-target;
all values normalised by the unmodified model). The chosen (criterion, α) has the largest
mean margin over every model and concept run. It is written to results/protocol.json and
docs/protocol.md; the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qa_common import MODELS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "protocol.json"
ROWS = ROOT / "results" / "protocol_dev"
DOC = ROOT / "docs" / "protocol.md"
CRITERIA = ("specificity", "evr", "logit_lens")
ALPHAS = (-1.0, 0.0)
PERCENT = 2.0
N_CONTROLS = 5


def margins(result) -> dict[tuple[str, float], float]:
    """``(criterion, α) -> margin`` of one dev experiment (see the module doc)."""
    rows = result.summary()
    out = {}
    for k, alpha in result.settings():
        here = [r for r in rows if (r["k"], r["alpha"]) == (k, alpha) and r["arm"] == "selected"]
        target = next(r for r in here if r["role"] == "target")
        others = [r for r in here if r["role"] == "nontarget"]
        damage = target["controls_mean"] - target["value"]
        spill = max(r["controls_mean"] - r["value"] for r in others)
        out[(result.config["criterion"], alpha)] = damage - spill
    return out


def model_rows(name: str) -> dict:
    """One model's dev margins: ``{"model", "rows", "seconds", "machine"}``."""
    import platform

    import torch
    from qa_common import dev_rankings

    from headpursuit import load_model
    from headpursuit.evaluation.experiment import heads_for_percent
    from headpursuit.evaluation.language import facts
    from headpursuit.evaluation.language.qa import known_facts, run_qa
    from headpursuit.models.architectures import AttentionSites

    rows = []
    start = time.perf_counter()
    loaded = load_model(name)
    sites = AttentionSites(loaded.model)
    k = heads_for_percent(PERCENT, sites.n_layers * sites.n_heads)
    sets = {c: known_facts(loaded, c, "dev") for c in facts.CONCEPTS}
    for concept in facts.CONCEPTS:
        rankings = dev_rankings(loaded, name, concept, list(CRITERIA))
        for criterion in CRITERIA:
            result = run_qa(
                loaded,
                concept,
                sets=sets,
                rankings=rankings,
                criterion=criterion,
                comparisons=(),
                ks=[k],
                alphas=ALPHAS,
                n_controls=N_CONTROLS,
                split="dev",
                headline=False,
                log=lambda text, c=concept, r=criterion: print(f"  {c} {r}: {text}", flush=True),
            )
            for (crit, alpha), margin in margins(result).items():
                rows.append(
                    {
                        "model": name,
                        "concept": concept,
                        "criterion": crit,
                        "alpha": alpha,
                        "k": k,
                        "margin": margin,
                        "n_items": {c: len(s.facts) for c, s in sets.items()},
                    }
                )
                print(f"{name} {concept} {crit} alpha={alpha:g}: margin {margin:+.3f}", flush=True)
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.0f} s", flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    return {"model": name, "rows": rows, "seconds": seconds, "machine": machine}


def cached_rows(name: str, rerun: bool) -> dict:
    """``model_rows(name)``, read from ``results/protocol_dev`` unless absent or ``rerun``."""
    path = ROWS / f"{name}.json"
    if path.exists() and not rerun:
        print(f"{name}: dev margins read from {path}", flush=True)
        return json.loads(path.read_text())
    done = model_rows(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(done, indent=1))
    partial.replace(path)
    return done


def choose(per_model: list[dict]) -> dict:
    """The (criterion, α) with the largest mean margin over every model and concept."""
    rows = [row for done in per_model for row in done["rows"]]
    means = {}
    for criterion in CRITERIA:
        for alpha in ALPHAS:
            values = [
                r["margin"] for r in rows if (r["criterion"], r["alpha"]) == (criterion, alpha)
            ]
            means[f"{criterion} {alpha:g}"] = sum(values) / len(values)
    best = max(means, key=means.get)
    criterion, alpha = best.split()
    return {
        "criterion": criterion,
        "alpha": float(alpha),
        "chosen_on": "dev",
        "models": [done["model"] for done in per_model],
        "seconds": {done["model"]: round(done["seconds"]) for done in per_model},
        "machine": {done["model"]: done["machine"] for done in per_model},
        "percent": PERCENT,
        "n_controls": N_CONTROLS,
        "mean_margin": means,
        "rows": rows,
    }


def render(chosen: dict) -> str:
    lines = [
        "# Protocol choice on the dev split",
        "",
        "Generated by `python scripts/choose_protocol.py "
        + " ".join(f"--model {m}" for m in chosen["models"])
        + "` (overwritten on each run; each model's margins are read back from "
        "`results/protocol_dev/` when present). Only dev-split entities are read.",
        "",
        "Run time per model: "
        + "; ".join(
            f"{m} {chosen['seconds'][m] / 60:.0f} min ({chosen['machine'][m]})"
            for m in chosen["models"]
        )
        + ".",
        "",
        f"Setting: top {chosen['percent']:g} % of heads ranked on the dev questions, "
        f"{chosen['n_controls']} matched control sets, effects on the dev questions the "
        "unmodified model answers right. Margin = damage beyond the controls' mean on the "
        "target concept minus the largest such damage on a non-target concept (normalised "
        "accuracy; higher is more specific).",
        "",
        "| criterion | α | mean margin |",
        "|---|---|---|",
    ]
    for key, value in sorted(chosen["mean_margin"].items(), key=lambda kv: -kv[1]):
        criterion, alpha = key.split()
        lines.append(f"| {criterion} | {alpha} | {value:+.3f} |")
    models = chosen["models"]
    lines += [
        "",
        "Per model (mean over its concepts):",
        "",
        "| criterion | α | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for key in sorted(chosen["mean_margin"], key=lambda k: -chosen["mean_margin"][k]):
        criterion, alpha = key.split()
        cells = []
        for model in models:
            values = [
                r["margin"]
                for r in chosen["rows"]
                if (r["model"], r["criterion"], f"{r['alpha']:g}") == (model, criterion, alpha)
            ]
            cells.append(f"{sum(values) / len(values):+.3f}" if values else "–")
        lines.append(f"| {criterion} | {alpha} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Chosen: criterion `{chosen['criterion']}`, α = {chosen['alpha']:g}.**",
        "",
        "| model | concept | criterion | α | margin |",
        "|---|---|---|---|---|",
    ]
    for row in chosen["rows"]:
        lines.append(
            f"| {row['model']} | {row['concept']} | {row['criterion']} | {row['alpha']:g} | "
            f"{row['margin']:+.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", choices=MODELS, help=f"default: {', '.join(MODELS)}"
    )
    parser.add_argument(
        "--rerun", action="store_true", help="recompute margins already in results/protocol_dev"
    )
    parser.add_argument(
        "--rows-only",
        action="store_true",
        help="compute the models' dev margins but choose nothing (for parallel runs)",
    )
    args = parser.parse_args()
    per_model = [cached_rows(name, args.rerun) for name in args.model or MODELS]
    if args.rows_only:
        return
    chosen = choose(per_model)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(chosen, indent=1))
    DOC.write_text(render(chosen))
    print(f"Chosen: {chosen['criterion']} alpha={chosen['alpha']:g}; wrote {OUT} and {DOC}")


if __name__ == "__main__":
    main()
