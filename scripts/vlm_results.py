"""Render the VLM experiments' artifacts into the VLM block of docs/results.md.

    .venv/bin/python scripts/vlm_experiments.py --render

Reads what ``scripts/vlm_experiments.py`` wrote to its ``--out`` folder (whichever parts
exist) and writes the markdown between ``<!-- vlm-results:begin -->`` and
``<!-- vlm-results:end -->``. Also the one definition of the testbed's bar (its thresholds
and :func:`classify_bar`) and of the caption experiments (``CAPTIONS``), which the
experiments import from here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from headpursuit.evaluation.experiment import ExperimentResult  # noqa: E402
from headpursuit.evaluation.stats import format_p  # noqa: E402
from headpursuit.evaluation.vision import data  # noqa: E402

BEGIN, END = "<!-- vlm-results:begin -->", "<!-- vlm-results:end -->"
RESULTS_MD = ROOT / "docs" / "results.md"
#: The caption experiments: the paper's suppression and amplification, and the ablation
#: (α = 0) beside them.
CAPTIONS = {"suppress": -1.0, "ablate": 0.0, "amplify": 5.0}
#: The bar of the testbed: the selected heads cut accuracy to at most this share of baseline
#: while at least CONTROL_SHARE of the control sets keep at least CONTROL_KEEP of it, ...
CUT, CONTROL_KEEP, CONTROL_SHARE = 0.5, 0.8, 0.95
#: ... and suppressing colours leaves at most this many of them, with this non-colour CIDEr.
COLOUR_CUT, RETENTION = 0.3, 0.8
N_EXAMPLES = 4

#: The paper's VLM findings (LLaVA-NeXT-7B, 32 × 32 = 1,024 heads), as its text states them.
PAPER_CLASSIFY = {
    "MNIST": "large drop at 16 heads, severe at 32",
    "SVHN": "large drop at 16 heads, severe at 32",
    "GTSRB": "large drop at 16 heads, severe at 32",
    "EuroSAT": "large drop at 16 heads, severe at 32",
    "RESISC45": "large drop at 16 heads, severe at 32",
    "DTD": "unaffected at 16 heads, disrupted at 32",
    "Fashion-MNIST": "not in the paper",
}
PAPER_CAPTION = {
    "suppress": "colour words near zero, CIDEr retained > 80 % (16 heads, Flickr30k)",
    "ablate": "not in the paper",
    "amplify": "colour words +60 % or more, CIDEr retained > 80 % (16 heads, Flickr30k)",
}


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it."""
    full = path.resolve()
    return full.relative_to(ROOT) if full.is_relative_to(ROOT) else path


def _artifact(out: Path, name: str) -> dict[str, Any] | None:
    """The JSON artifact ``out/name`` (None when the grid has not written it)."""
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def _num(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ci(row: dict[str, Any]) -> str:
    return f"{_num(row['value'])} [{_num(row['low'])}, {_num(row['high'])}]"


def _controls(row: dict[str, Any]) -> str:
    return (
        f"{_num(row['controls_mean'])} ({_num(row['controls_p5'])}–"
        f"{_num(row['controls_p95'])}, n={row['n_controls']})"
    )


def _classify_section(out: Path) -> list[str]:
    files = sorted(out.glob("classify_*.json"))
    if not files:
        return []
    lines = [
        "### Classification with the top-k heads flipped (α = −1)",
        "",
        "Accuracy with the heads flipped / accuracy of the unmodified model on the same "
        "held-out images (95 % cluster-bootstrap CI); the matched random control sets' mean "
        "(5th–95th percentile, number of sets); p: share of control sets at least as harmful "
        "as the selected heads (one-sided, with the +1 correction); the comparison rankings' "
        "top-k (raw EVR, logit lens) for reference; other datasets evaluated under the same "
        "heads (non-target) in the last column.",
        "",
        "| dataset (stands for) | unmodified | k | selected / unmodified [95% CI] | controls "
        "mean (p5–p95, n) | p | evr | logit lens | non-target / unmodified | paper, LLaVA-NeXT-7B |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for path in files:
        result = ExperimentResult.load(path)
        name = result.concept
        stands_for = data.get_dataset(name).stands_for if name in data.DATASETS else "?"
        rows = result.summary()
        base = result.baseline.means[name]["correct"]
        for k, alpha in result.settings():
            here = [r for r in rows if (r["k"], r["alpha"]) == (k, alpha)]
            target = {r["arm"]: r for r in here if r["role"] == "target"}
            selected = target["selected"]
            nontarget = ", ".join(
                f"{r['set']} {_num(r['value'])}"
                for r in here
                if r["role"] == "nontarget" and r["arm"] == "selected"
            )
            lines.append(
                f"| {name} ({stands_for}) | {_num(base)} | {k} | {_ci(selected)} | "
                f"{_controls(selected)} | {format_p(selected['p'])} | "
                f"{_num(target['evr']['value']) if 'evr' in target else '–'} | "
                f"{_num(target['logit_lens']['value']) if 'logit_lens' in target else '–'} | "
                f"{nontarget or '–'} | {PAPER_CLASSIFY.get(stands_for, '')} |"
            )
        for verdict in result.verdicts():
            if verdict["specific"] is not None:
                verdicts.append(
                    f"{name} k={verdict['k']}: significant={verdict['significant']}, "
                    f"specific={verdict['specific']} (target p={format_p(verdict['target_p'])}, "
                    f"lowest non-target p={format_p(verdict['nontarget_p'])})"
                )
    config = ExperimentResult.load(files[0]).config
    lines += [
        "",
        f"Head selection on {config.get('n_select')} 'select' images per dataset; "
        "evaluation on the 'test' images counted in the artifacts "
        f"(`{_shown(out)}/classify_<dataset>.json`). The paper flipped 16 and 32 of LLaVA-NeXT-7B's "
        "1,024 heads (1.6 % and 3.1 %); random heads there had little to no effect.",
    ]
    if verdicts:
        lines += ["", "Specificity (significant on the target, inside the controls' range on "]
        lines[-1] += "every non-target set):"
        lines += [f"- {v}" for v in verdicts]
    return lines


def _arm_ci(rows: list[dict[str, Any]], like: dict[str, Any]) -> str:
    """The CI text of the row of the same arm at the (k, α) of ``like``."""
    for row in rows:
        if (row["k"], row["alpha"], row["arm"]) == (like["k"], like["alpha"], like["arm"]):
            return _ci(row)
    return "–"


def _caption_section(out: Path) -> list[str]:
    found = [(label, out / f"caption_{label}.json") for label in CAPTIONS]
    found = [(label, path) for label, path in found if path.is_file()]
    if not found:
        return []
    lines = [
        "### Captions: colour heads suppressed (α = −1), ablated (α = 0) and amplified (α = 5)",
        "",
        "Per metric: value with the heads scaled / value of the unmodified model "
        "(95 % CI). Colour words: colour words per caption. CIDEr retention: CIDEr-D of the "
        "whole caption. Non-colour CIDEr retention: CIDEr-D after deleting the colour words "
        "from the caption and its references (`cider_non_concept`), i.e. how much of the "
        "rest of the caption (objects, sizes, order) survives. Controls and p for the colour "
        "words (p: share of control sets with at least as large an effect in the expected "
        "direction).",
        "",
        "| intervention | k | heads | colour words [95% CI] | controls mean (p5–p95, n) | p "
        "| CIDEr retention [95% CI] | non-colour CIDEr retention [95% CI] | paper, "
        "LLaVA-NeXT-7B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, path in found:
        result = ExperimentResult.load(path)
        summaries = {m: result.summary(m) for m in ("concept_words", "cider", "cider_non_concept")}
        for row in summaries["concept_words"]:
            selected = row["arm"] == "selected"
            lines.append(
                f"| {label} (α = {row['alpha']:g}) | {row['k']} | {row['arm']} | {_ci(row)} | "
                f"{_controls(row) if selected else '–'} | {format_p(row['p'])} | "
                f"{_arm_ci(summaries['cider'], row)} | "
                f"{_arm_ci(summaries['cider_non_concept'], row)} | "
                f"{PAPER_CAPTION[label] if selected else ''} |"
            )
    config = ExperimentResult.load(found[0][1]).config
    lines += [
        "",
        f"{config.get('n_items')} held-out shape scenes, heads selected on "
        f"{config.get('n_select')} 'select' scenes for the colour words "
        f"({', '.join(config.get('words', []))}).",
        "",
        f"Captions of the first {N_EXAMPLES} held-out scenes under each ranking's heads "
        "(`config.texts` of the artifacts):",
        "",
        "| heads | " + " | ".join(f"scene {i + 1}" for i in range(N_EXAMPLES)) + " |",
        "|---|" + "---|" * N_EXAMPLES,
    ]
    seen = set()
    for _, path in found:
        for arm, texts in ExperimentResult.load(path).config.get("texts", {}).items():
            if arm in seen:
                continue
            seen.add(arm)
            cells = [f"“{t.strip()}”" for t in texts["shapes"][:N_EXAMPLES]]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _caption_dev_section(out: Path) -> list[str]:
    payload = _artifact(out, "caption_dev.json")
    if payload is None:
        return []
    rows = payload["rows"]
    ks = sorted({r["k"] for r in rows})
    lines = [
        "### Caption suppression: the protocol chosen on dev scenes",
        "",
        f"Each ranking's top-k heads flipped (α = −1) on {payload['n_dev']} dev scenes "
        f"({payload['dev_scenes']}; disjoint from the selection scenes and from the test "
        "scenes). Cell: colour words / non-colour CIDEr retention, both as shares of the "
        "unmodified model. Pooling: head outputs averaged over the image tokens (as above), "
        "or over the text tokens of the prompt followed by the scene's reference caption. "
        f"Rule, fixed before the test run: among the settings with colour words ≤ "
        f"{COLOUR_CUT}, the highest non-colour retention.",
        "",
        "| pooling | criterion | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for pooling, criterion in dict.fromkeys((r["pooling"], r["criterion"]) for r in rows):
        cells = {
            r["k"]: f"{_num(r['colour'])} / {_num(r['retention'])}"
            for r in rows
            if (r["pooling"], r["criterion"]) == (pooling, criterion)
        }
        lines.append(
            f"| {pooling} | {criterion} | " + " | ".join(cells.get(k, "–") for k in ks) + " |"
        )
    chosen = payload["chosen"]
    if chosen is None:
        lines += ["", f"No setting cuts colour words to ≤ {COLOUR_CUT} on the dev scenes."]
        return lines
    lines += [
        "",
        f"Chosen on dev: {chosen['pooling']} pooling, {chosen['criterion']}, k={chosen['k']} "
        f"(dev: colour words {_num(chosen['colour'])}, non-colour retention "
        f"{_num(chosen['retention'])}).",
    ]
    test = out / "caption_dev_choice.json"
    if test.is_file():
        result = ExperimentResult.load(test)
        colour = next(r for r in result.summary("concept_words") if r["arm"] == "selected")
        lines += [
            "",
            f"On the {result.config.get('n_items')} test scenes (columns as in the caption table above):",
            "",
            "| heads | k | colour words [95% CI] | controls mean (p5–p95, n) | p | "
            "CIDEr retention [95% CI] | non-colour CIDEr retention [95% CI] |",
            "|---|---|---|---|---|---|---|",
            f"| {chosen['pooling']} pooling, {chosen['criterion']} | {colour['k']} | "
            f"{_ci(colour)} | {_controls(colour)} | {format_p(colour['p'])} | "
            f"{_arm_ci(result.summary('cider'), colour)} | "
            f"{_arm_ci(result.summary('cider_non_concept'), colour)} |",
        ]
    return lines


def _jaccard_section(out: Path) -> list[str]:
    payload = _artifact(out, "jaccard.json")
    if payload is None:
        return []
    rows = payload["rows"]
    names = list(dict.fromkeys([r["a"] for r in rows] + [r["b"] for r in rows]))
    lines = [
        "### Overlap of the selected heads (Jaccard)",
        "",
        f"Jaccard overlap of the top-k heads of two sets, and in brackets its p-value under "
        f"the null of two random sets of k of the {payload['n_heads_total']} heads "
        f"({payload['n_null_draws']:,} draws of `headpursuit.ranking.random_jaccard`; "
        "p = share of draws at least as large, +1 corrected). Similar-task pairs in bold. "
        "The paper reports high MNIST/SVHN and EuroSAT/RESISC45 overlap for LLaVA-NeXT-7B "
        "(no numbers in its text).",
    ]
    for k in sorted({r["k"] for r in rows}):
        here = {(r["a"], r["b"]): r for r in rows if r["k"] == k}
        null_mean = next(iter(here.values()))["null_mean"]
        lines += [
            "",
            f"k = {k} (null mean {null_mean:.3f}):",
            "",
            "| | " + " | ".join(names[1:]) + " |",
            "|---|" + "---|" * (len(names) - 1),
        ]
        for i, a in enumerate(names[:-1]):
            cells = []
            for j, b in enumerate(names[1:], start=1):
                row = here.get((a, b)) or here.get((b, a))
                if j <= i or row is None:
                    cells.append("")
                    continue
                text = f"{row['jaccard']:.2f} ({format_p(row['p'])})"
                cells.append(f"**{text}**" if row["similar"] else text)
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def _heldout_section(out: Path) -> list[str]:
    heldout = _artifact(out, "heldout.json")
    if heldout is None:
        return []
    lines = [
        "### Held-out quality of the unmodified model",
        "",
        "| dataset | stands for | accuracy | images |",
        "|---|---|---|---|",
    ]
    for name, row in heldout["accuracy"].items():
        lines.append(
            f"| {name} | {data.get_dataset(name).stands_for} | {row['value']:.3f} | {row['n']} |"
        )
    captions = heldout["captions"]
    any_order = captions.get("colours_any_order")  # absent from artifacts made before it
    either = "" if any_order is None else f" (in either order {any_order:.3f})"
    lines.append(
        f"| captions (shapes) | Flickr30k colours | colours right, left to right "
        f"{captions['colours_correct']:.3f}{either}, CIDEr-D {captions['cider']:.3f} "
        f"| {captions['n']} |"
    )
    return lines


def classify_bar(result: ExperimentResult) -> list[dict[str, Any]]:
    """Per (k, α) of one classify artifact: the selected heads' normalised accuracy, the share
    of control sets keeping at least ``CONTROL_KEEP`` of it, and whether both halves of the
    bar hold."""
    rows = []
    selected = {
        (r["k"], r["alpha"]): r
        for r in result.summary()
        if r["arm"] == "selected" and r["role"] == "target"
    }
    for (k, alpha), row in selected.items():
        controls = result.control_values(k, alpha, result.concept)
        kept = sum(v >= CONTROL_KEEP for v in controls) / len(controls) if controls else math.nan
        rows.append(
            {
                "k": k,
                "alpha": alpha,
                "selected": row["value"],
                "controls_kept": kept,
                "n_controls": len(controls),
                "met": row["value"] <= CUT and kept >= CONTROL_SHARE,
            }
        )
    return rows


def _bar_section(out: Path) -> list[str]:
    """Whether the testbed's bar is met, from the artifacts that exist."""
    header = [
        "### The bar",
        "",
        f"Classification: the selected heads cut accuracy to ≤ {CUT} of the unmodified model "
        f"while ≥ {CONTROL_SHARE:.0%} of the control sets keep ≥ {CONTROL_KEEP} of it, on at "
        f"least 3 datasets. Captions: colour words ≤ {COLOUR_CUT} of baseline with a "
        f"non-colour CIDEr retention ≥ {RETENTION}. Jaccard: similar-task pairs overlap more "
        "than dissimilar ones, beyond the random-set null.",
        "",
    ]
    lines: list[str] = []
    passing = []
    for path in sorted(out.glob("classify_*.json")):
        result = ExperimentResult.load(path)
        rows = classify_bar(result)
        met = [r for r in rows if r["met"]]
        detail = "; ".join(
            f"k={r['k']}: {_num(r['selected'])}, controls ≥ {CONTROL_KEEP}: "
            f"{_num(r['controls_kept'] * 100, 0)} % of {r['n_controls']}"
            for r in rows
        )
        if met:
            passing.append(result.concept)
        lines.append(f"- {result.concept}: {'met' if met else 'not met'} ({detail})")
    if passing:
        lines.append(
            f"- classification bar {'met' if len(passing) >= 3 else 'not met'}: "
            f"{len(passing)} dataset(s) ({', '.join(passing)})"
        )
    path = out / "caption_suppress.json"
    if path.is_file():
        result = ExperimentResult.load(path)
        rest = {
            (r["k"], r["alpha"]): r["value"]
            for r in result.summary("cider_non_concept")
            if r["arm"] == "selected"
        }
        for row in result.summary("concept_words"):
            if row["arm"] != "selected":
                continue
            kept = rest.get((row["k"], row["alpha"]), math.nan)
            met = row["value"] <= COLOUR_CUT and kept >= RETENTION
            lines.append(
                f"- caption suppression k={row['k']}: colour words {_num(row['value'])}, "
                f"non-colour CIDEr retention {_num(kept)}: {'met' if met else 'not met'}"
            )
    path = out / "caption_dev_choice.json"
    if path.is_file():
        result = ExperimentResult.load(path)
        summaries = {m: result.summary(m) for m in ("concept_words", "cider_non_concept")}
        colour = next(r for r in summaries["concept_words"] if r["arm"] == "selected")
        kept = next(r for r in summaries["cider_non_concept"] if r["arm"] == "selected")
        met = colour["value"] <= COLOUR_CUT and kept["value"] >= RETENTION
        lines.append(
            f"- caption suppression, protocol chosen on dev ({result.config.get('pooling')} "
            f"pooling, {result.config.get('criterion')} k={colour['k']}): colour words "
            f"{_num(colour['value'])}, non-colour CIDEr retention {_num(kept['value'])}: "
            f"{'met' if met else 'not met'}"
        )
    jaccard = _artifact(out, "jaccard.json")
    if jaccard is not None:
        rows = jaccard["rows"]
        for k in sorted({r["k"] for r in rows}):
            similar = [r for r in rows if r["k"] == k and r["similar"]]
            other = [r for r in rows if r["k"] == k and not r["similar"]]
            if not similar or not other:
                continue
            mean_similar = sum(r["jaccard"] for r in similar) / len(similar)
            mean_other = sum(r["jaccard"] for r in other) / len(other)
            beyond = all(r["p"] < 0.05 for r in similar)
            met = mean_similar > mean_other and beyond
            # The bar compares means; the most-overlapping other pair says whether that hides
            # a dissimilar pair that overlaps as much as the similar ones.
            top = max(other, key=lambda r: r["jaccard"])
            lines.append(
                f"- Jaccard k={k}: similar pairs {mean_similar:.2f} (p "
                + ", ".join(format_p(r["p"]) for r in similar)
                + f") vs other pairs {mean_other:.2f} (highest {top['jaccard']:.2f}, "
                + f"{top['a']}/{top['b']}), null {similar[0]['null_mean']:.2f}: "
                + ("met on the means" if met else "not met")
            )
    return [*header, *lines] if lines else []


def render(out: Path) -> str:
    """The markdown of the VLM results block from the artifacts in ``out`` (what is there)."""
    recorded = _artifact(out, "command.json")
    if recorded is not None:
        command = "nice -n 10 .venv/bin/python " + recorded["command"]
    else:
        command = f"nice -n 10 .venv/bin/python scripts/vlm_experiments.py --out {_shown(out)}"
    lines = [
        "## Vision-language model: the tiny VLM",
        "",
        "Model: `tiny-vlm` (docs/vlm.md); numbers from the artifacts of",
        f"`{command}`, this block written by the same command with `--render`.",
    ]
    sections = (
        _heldout_section,
        _bar_section,
        _classify_section,
        _caption_section,
        _caption_dev_section,
        _jaccard_section,
    )
    for section in sections:
        part = section(out)
        if part:
            lines += ["", *part]
    return "\n".join(lines) + "\n"


def current_block(target: Path = RESULTS_MD) -> str:
    """The VLM block of ``target``, markers included ('' when it has none)."""
    text = target.read_text() if target.is_file() else ""
    if BEGIN not in text or END not in text:
        return ""
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END


def write_block(markdown: str, target: Path = RESULTS_MD) -> None:
    """Replace the text between the VLM markers of ``target`` (added at its end if absent)."""
    text = target.read_text() if target.is_file() else ""
    block = f"{BEGIN}\n{markdown}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    target.write_text(text)
