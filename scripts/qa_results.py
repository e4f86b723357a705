"""Fact-QA results on the test split for the three named models, and docs/results.md.

One command runs every experiment that is missing and rewrites the document:

    python scripts/qa_results.py                      # all models, all concepts
    python scripts/qa_results.py --model smollm2-135m # one model
    python scripts/qa_results.py --render-only        # re-render from results/qa/

Per model it captures the dev questions once (head selection), ranks heads once per
(concept, criterion), finds the test questions the unmodified model answers right, then
runs :func:`headpursuit.evaluation.language.qa.run_qa` per concept at k = 1, 2, 3 % of
heads and the protocol's α values, with 20 matched control sets each. Every experiment is
saved as ``results/qa/<model>/<concept>.json`` (an ExperimentResult) as soon as it
finishes, so an interrupted run continues where it stopped. The protocol (criterion and
α) comes from ``results/protocol.json``, written by ``scripts/choose_protocol.py`` on
the dev split.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from qa_common import MODELS

from headpursuit.evaluation.stats import format_p

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "qa"  # the same folder as qa_common.RESULTS
PROTOCOL = ROOT / "results" / "protocol.json"
DOC = ROOT / "docs" / "results.md"
PERCENTS = (1.0, 2.0, 3.0)
PAPER_ALPHA = -1.0
MIN_KNOWN = 150  # known questions per concept that make a test set big enough to fail


def protocol() -> dict:
    """The dev-chosen protocol (criterion, α); the paper's α and the library default before."""
    if PROTOCOL.exists():
        return json.loads(PROTOCOL.read_text())
    from headpursuit.ranking.criteria import DEFAULT_CRITERION

    return {"criterion": DEFAULT_CRITERION, "alpha": PAPER_ALPHA, "chosen_on": None}


def result_stem(concept: str, alphas: list[float], percents: list[float], chosen: float) -> str:
    """The result file's name: the concept for the full grid, else the grid in the name
    (``countries_a-1_p1_3``), so that a partial run adds to, and never replaces, others."""
    if alphas == sorted({PAPER_ALPHA, chosen}) and percents == sorted(PERCENTS):
        return concept
    return (
        f"{concept}_a{'_'.join(f'{a:g}' for a in alphas)}_p{'_'.join(f'{p:g}' for p in percents)}"
    )


def run_model(
    name: str,
    concepts: list[str],
    n_controls: int,
    headline: bool,
    alphas: list[float] | None = None,
    percents: list[float] | None = None,
) -> None:
    """Every missing experiment of one model, each saved when done.

    ``alphas``/``percents`` restrict the grid (default: the paper's α and the protocol's,
    k = 1, 2, 3 %); the document lists exactly the settings that were run.
    """
    from qa_common import dev_rankings

    from headpursuit import load_model
    from headpursuit.evaluation.experiment import heads_for_percent
    from headpursuit.evaluation.language import facts
    from headpursuit.evaluation.language.qa import COMPARISONS, known_facts, run_qa
    from headpursuit.models.architectures import AttentionSites

    chosen = protocol()
    alphas = sorted(alphas or {PAPER_ALPHA, float(chosen["alpha"])})
    percents = sorted(percents or PERCENTS)
    out_dir = RESULTS / name
    stem = {c: result_stem(c, alphas, percents, float(chosen["alpha"])) for c in concepts}
    todo = [c for c in concepts if not (out_dir / f"{stem[c]}.json").exists()]
    if not todo:
        print(f"{name}: every experiment exists in {out_dir}")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_path = out_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    start = time.perf_counter()
    loaded = load_model(name)
    timings["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    sets = {c: known_facts(loaded, c, "test") for c in facts.CONCEPTS}
    timings["known_test_s"] = time.perf_counter() - start
    for concept, fact_set in sets.items():
        print(f"{name} {concept}: {fact_set.n_known} of {fact_set.n_asked} test questions known")
    sites = AttentionSites(loaded.model)
    middle_k = heads_for_percent(percents[len(percents) // 2], sites.n_layers * sites.n_heads)
    for concept in todo:
        start = time.perf_counter()
        rankings = dev_rankings(loaded, name, concept, [chosen["criterion"], *COMPARISONS])
        ranked = time.perf_counter() - start
        start = time.perf_counter()
        run_qa(
            loaded,
            concept,
            sets=sets,
            rankings=rankings,
            criterion=chosen["criterion"],
            percents=percents,
            alphas=alphas,
            n_controls=n_controls,
            headline=headline,
            # Greedy generation costs ~15 teacher-forced passes: only for the selected
            # heads at the middle k with the first α run (the paper's −1 when it is run).
            headline_controls=0,
            headline_when=lambda arm, k, alpha, mid=middle_k: (
                arm == "selected" and k == mid and alpha == alphas[0]
            ),
            output=out_dir / f"{stem[concept]}.json",
            log=lambda text, c=concept: print(f"{name} {c}: {text}", flush=True),
        )
        timings[stem[concept]] = {"rank_s": ranked, "experiment_s": time.perf_counter() - start}
        timings["machine"] = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
        # Another run of the same model may have written its own entries meanwhile.
        on_disk = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        timings = {**on_disk, **timings}
        timings_path.write_text(json.dumps(timings, indent=1))


def _cell(row: dict) -> str:
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def _evr_comparison(result, rows: list[dict]) -> list[str]:
    """A plain sentence: where the paper's raw EVR top-k does worse than the selected heads."""
    worse = []
    for k, alpha in result.settings():
        here = {(r["arm"], r["set"]): r for r in rows if (r["k"], r["alpha"]) == (k, alpha)}
        if ("evr", result.concept) not in here:
            continue
        spill = {
            arm: min(r["value"] for (a, s), r in here.items() if a == arm and s != result.concept)
            for arm in ("selected", "evr")
        }
        target = {arm: here[(arm, result.concept)]["value"] for arm in ("selected", "evr")}
        # Less target damage, or more damage to another concept, than the selected heads.
        if target["evr"] > target["selected"] or spill["evr"] < spill["selected"]:
            worse.append(
                f"k={k} α={alpha:g} (target {target['evr']:.2f} vs {target['selected']:.2f}, "
                f"worst non-target {spill['evr']:.2f} vs {spill['selected']:.2f})"
            )
    if not worse:
        return ["The paper's raw EVR heads do as well as the selected heads here.", ""]
    return [
        "The paper's raw EVR heads are less targeted than the selected ones (less target "
        "damage or more non-target damage) at " + "; ".join(worse) + ".",
        "",
    ]


def render() -> str:
    """docs/results.md from every saved experiment."""
    from headpursuit.evaluation.experiment import ExperimentResult

    chosen = protocol()
    lines = [
        "# Results: fact questions on three real models, and the tiny VLM",
        "",
        "Generated by `python scripts/qa_results.py` (this file is overwritten; numbers come",
        "from the JSON results in `results/qa/`). Method and statistics: "
        "[method.md](method.md#evaluation).",
        "",
        f"**Protocol** (chosen on the dev split of {', '.join(chosen.get('models', []))} by "
        f"`scripts/choose_protocol.py`, see [protocol.md](protocol.md)): criterion "
        f"`{chosen['criterion']}`, default α = {chosen['alpha']:g}; k is reported at every "
        "1, 2, 3 % rather than chosen. Heads are ranked on the dev questions; every number "
        "below is on the test split, on the test questions the unmodified model answers "
        "right (teacher-forced, calibrated; at most 200 per concept).",
        "",
        "Each cell is the share of those questions still answered right under the "
        "intervention, relative to the unmodified model (1.00 = no damage), with a 95 % "
        "bootstrap CI over entities. *controls* is the 5th–95th percentile over 20 matched "
        "random head sets (same number of heads per layer); *p* the share of control sets at "
        "least as damaging as the selected heads, (1 + b)/(1 + 20). **Specific** = target "
        "p < 0.05 and every non-target p ≥ 0.05. Rows `evr` and `logit_lens` are the paper's "
        "criterion and its baseline at the same k (their p is not computed: the controls are "
        "matched to the selected heads' layers).",
        "",
        "**Scale of the paper's experiments.** Its text reports (Table 2, Mistral-7B, 1,024 "
        "heads) that flipping the top 16 or 32 toxic heads (1.6 % and 3.1 % of heads) left "
        "0.77 and 0.72 of the held-out toxic words on RealToxicityPrompts and 0.66 and 0.48 on "
        "TET, against 1.26 ± 0.48 and 1.19 ± 0.31 (RTP), 1.09 ± 0.17 and 1.41 ± 0.49 (TET) for "
        "random heads. For country QA on TriviaQA only a summary of the paper (not its text) "
        "gives a shape: flipping 8 heads (0.8 %) drops country answers significantly with a "
        "minor non-target drop and no significant effect of random heads. k = 1–3 % below is "
        "that scale.",
        "",
        "The vision-language testbed's results (written by `scripts/vlm_experiments.py --render`) "
        "are the last section of this file; the testbed itself is described in [vlm.md](vlm.md).",
        "",
    ]
    verdict_rows = []
    for model_dir in sorted(p for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.exists() else []:
        files = sorted(f for f in model_dir.glob("*.json") if f.name != "timings.json")
        results = [ExperimentResult.load(f) for f in files]
        if not results:
            continue
        timings = json.loads((model_dir / "timings.json").read_text())
        lines += [f"## {model_dir.name}", ""]
        first = results[0]
        lines.append(
            "Known test questions (asked → answered right → used): "
            + "; ".join(
                f"{c} {first.config['n_asked'][c]} → {first.config['n_known'][c]} → "
                f"{first.config['n_items'][c]} ({first.config['n_entities'][c]} entities)"
                for c in first.config["n_asked"]
            )
            + f". Head selection on {first.config['n_selection_prompts']} dev questions."
        )
        weak = {c: n for c, n in first.config["n_known"].items() if n < MIN_KNOWN}
        if weak:
            lines.append(
                f"This model answers fewer than {MIN_KNOWN} test questions right for "
                + ", ".join(f"{c} ({n})" for c, n in weak.items())
                + ": too weak there for tight intervals; the numbers are shown anyway."
            )
        lines.append("")
        for path, result in zip(files, results, strict=True):
            rows = result.summary()
            settings = result.settings()
            lines += [
                f"### {model_dir.name} · {result.concept} · "
                f"k ∈ {{{', '.join(str(k) for k in sorted({k for k, _ in settings}))}}}, "
                f"α ∈ {{{', '.join(f'{a:g}' for a in sorted({a for _, a in settings}))}}}",
                "",
                "| k | α | arm | target | "
                + " | ".join(f"{s.name} (non-target)" for s in result.sets if s.role != "target")
                + " | target controls | target p | non-target p |",
                "|---|---|---|---|"
                + "---|" * sum(s.role != "target" for s in result.sets)
                + "---|---|---|",
            ]
            for k, alpha in result.settings():
                here = [r for r in rows if (r["k"], r["alpha"]) == (k, alpha)]
                for arm in dict.fromkeys(r["arm"] for r in here):
                    mine = {r["set"]: r for r in here if r["arm"] == arm}
                    target = next(r for r in mine.values() if r["role"] == "target")
                    others = [mine[s.name] for s in result.sets if s.role != "target"]
                    name = f"**{arm}**" if arm == "selected" else arm
                    lines.append(
                        f"| {k} | {alpha:g} | {name} | {_cell(target)} | "
                        + " | ".join(_cell(r) for r in others)
                        + f" | {target['controls_p5']:.2f}–{target['controls_p95']:.2f} | "
                        f"{format_p(target['p'])} | {format_p(min(r['p'] for r in others))} |"
                    )
            lines.append("")
            drawn: dict[tuple, list[tuple[str, ...]]] = {}
            for a in result.arms:
                if a.arm == "control":
                    drawn.setdefault((a.k, a.alpha), []).append(tuple(sorted(map(str, a.heads))))
            few = {key: sets for key, sets in drawn.items() if len(set(sets)) < len(sets)}
            if few:
                lines += [
                    "Fewer *distinct* control sets than draws (the layers of the selected heads "
                    "have few other heads, so seeded draws repeat): "
                    + "; ".join(
                        f"k={k} α={a:g}: {len(set(sets))} of {len(sets)}"
                        for (k, a), sets in few.items()
                    )
                    + ". Their p-values rest on that many alternatives only.",
                    "",
                ]
            for verdict in result.verdicts():
                verdict_rows.append((model_dir.name, result.concept, verdict))
            gen = [r for r in result.summary("gen_f1") if r["role"] == "target"]
            if gen:
                lines.append(
                    "Greedy answers (token F1, the paper's QA scoring), target set: "
                    + "; ".join(
                        f"k={r['k']} α={r['alpha']:g} {r['arm']} {r['value']:.2f}" for r in gen
                    )
                    + "."
                )
                lines.append("")
            lines += _evr_comparison(result, rows)
            grid = [f"--alphas={','.join(f'{a:g}' for a in result.config['alphas'])}"]
            grid.append(f"--percents={','.join(f'{p:g}' for p in result.config['percents'])}")
            lines += [
                "Command: `OMP_NUM_THREADS=1 python scripts/qa_results.py --model "
                f"{model_dir.name} --concept {result.concept} {' '.join(grid)}`.",
                "",
            ]
            spent = timings.get(path.stem, {})
            if spent:
                lines.append(
                    f"Run time: ranking {spent['rank_s']:.0f} s (about 0 when read from the ranking "
                    "cache of an earlier run), experiment "
                    f"{spent['experiment_s']:.0f} s ({timings.get('machine', '')})."
                )
                lines.append("")
    summary = ["## Summary", ""]
    default_alpha = float(chosen["alpha"])
    models = list(dict.fromkeys(m for m, _, _ in verdict_rows))
    passing = 0
    for model in models:
        mine = [(c, v) for m, c, v in verdict_rows if m == model and v["alpha"] == default_alpha]
        specific = sorted({c for c, v in mine if v["specific"]})
        run = sorted({c for c, _ in mine})
        passing += len(specific) >= 2
        other_alphas = sorted(
            {v["alpha"] for m, _, v in verdict_rows if m == model} - {default_alpha}
        )
        other_notes = ""
        for alpha in other_alphas:
            there = [(c, v) for m, c, v in verdict_rows if m == model and v["alpha"] == alpha]
            there_specific = sorted({c for c, v in there if v["specific"]})
            label = "the paper's; " if alpha == PAPER_ALPHA else "ablation; " if alpha == 0 else ""
            concepts_run = ", ".join(sorted({c for c, _ in there}))
            other_notes += (
                f" With α = {alpha:g} ({label}concepts run: {concepts_run}): "
                + (", ".join(there_specific) if there_specific else "no concept")
                + "."
            )
        summary.append(
            f"* **{model}** (default protocol, α = {default_alpha:g}; concepts run: "
            f"{', '.join(run) or 'none'}): specific at some k ≤ 3 % for "
            + (", ".join(specific) if specific else "no concept")
            + "."
            + other_notes
        )
    summary += [
        "",
        f"The bar (at least 2 concepts specific on at least 2 of the 3 models) is "
        f"{'met' if passing >= 2 else 'not met'} by the runs below: {passing} model(s) reach "
        "2 concepts. Every (model, concept, k, α) verdict is in the last table.",
        "",
    ]
    if models:
        head = lines.index(f"## {models[0]}")
        lines[head:head] = summary
    lines += [
        "## Verdicts",
        "",
        "| model | concept | k | α | target p | lowest non-target p | specific |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for model, concept, v in verdict_rows:
        lines.append(
            f"| {model} | {concept} | {v['k']} | {v['alpha']:g} | {format_p(v['target_p'])} | "
            f"{format_p(v['nontarget_p'])} | {'yes' if v['specific'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=MODELS, help="default: all three")
    parser.add_argument("--concept", action="append", help="default: every fact concept")
    parser.add_argument("--controls", type=int, default=20)
    parser.add_argument("--no-headline", action="store_true", help="skip greedy generation")
    parser.add_argument(
        "--alphas", help="restrict α, comma-separated (default: -1 and the protocol's)"
    )
    parser.add_argument("--percents", help="restrict k %%, comma-separated (default: 1,2,3)")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if not args.render_only:
        from headpursuit.evaluation.language.facts import CONCEPTS

        for name in args.model or MODELS:
            run_model(
                name,
                args.concept or list(CONCEPTS),
                args.controls,
                not args.no_headline,
                [float(a) for a in args.alphas.split(",")] if args.alphas else None,
                [float(p) for p in args.percents.split(",")] if args.percents else None,
            )
    from vlm_results import current_block

    # The VLM block that scripts/vlm_experiments.py --render wrote stays as it is.
    block = current_block(DOC)
    DOC.write_text(render() + (f"\n{block}\n" if block else ""))
    print(f"Wrote {DOC}")


if __name__ == "__main__":
    main()
