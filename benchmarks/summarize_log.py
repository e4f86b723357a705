"""Markdown table from a task's progress log (for runs stopped before writing their JSON).

Usage: python benchmarks/summarize_log.py LOG BASELINE_JSON_LINE_FILE METRIC [METRIC ...]
The baseline file's first line starting with "{" holds the unmodified model's metrics.
"""

import json
import re
import sys
from pathlib import Path

import pandas as pd

log, baseline_file, *metrics = sys.argv[1:]
baseline = next(
    json.loads(line)
    for line in Path(baseline_file).read_text(encoding="utf-8").splitlines()
    if line.startswith("{")
)
rows = []
pattern = re.compile(r"^k=(\d+) (\S+) ([a-z_]+?)(\d*): (.*)$")
for line in Path(log).read_text(encoding="utf-8").splitlines():
    match = pattern.match(line)
    if not match:
        continue
    k, alpha, arm, seed, rest = match.groups()
    values = dict(item.split("=") for item in rest.split())
    row = {"k": int(k), "alpha": alpha, "arm": arm, "seed": seed}
    for m in metrics:
        row[m] = float(values[m]) / baseline[m]
    rows.append(row)
frame = pd.DataFrame(rows)
print("baseline (raw): " + ", ".join(f"{m} = {baseline[m]:.3f}" for m in metrics) + "\n")
print("| k | α | arm | " + " | ".join(metrics) + " |")
print("|---|---|---|" + "---|" * len(metrics))
for (k, alpha, arm), group in frame.groupby(["k", "alpha", "arm"], sort=False):
    if arm == "random":
        cells = [f"{group[m].mean():.2f} ± {group[m].std(ddof=0):.2f}" for m in metrics]
        arm = f"random ({len(group)} seeds)"
    else:
        cells = [f"{group[m].iloc[0]:.2f}" for m in metrics]
    print(f"| {k} | {alpha} | {arm} | " + " | ".join(cells) + " |")
