"""Print markdown tables (normalised metrics; random = mean ± std over seeds) from task JSONs.

Usage: python benchmarks/summarize_tasks.py benchmarks/tasks_out/qa.json [...]
"""

import json
import sys
from pathlib import Path

import pandas as pd

for path in sys.argv[1:]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    frame = pd.DataFrame(data["rows"])
    metrics = [m for m in data["metrics"] if not m.endswith("_em") and m != "nontarget_contains"]
    print(f"\n### {data['task']} / {data['concept']} ({path})\n")
    print(
        "baseline (unmodified model, raw): "
        + ", ".join(f"{m} = {data['baseline'][m]:.3f}" for m in metrics)
    )
    print()
    print("| k | α | arm | " + " | ".join(metrics) + " |")
    print("|---|---|---|" + "---|" * len(metrics))
    for (k, alpha), group in frame[frame.arm != "baseline"].groupby(
        ["k", "intervention"], sort=False
    ):
        for arm in ("selected", "logit_lens", "random"):
            rows = group[group.arm == arm]
            cells = []
            for m in metrics:
                values = rows[f"{m}_norm"]
                if arm == "random":
                    cells.append(f"{values.mean():.2f} ± {values.std(ddof=0):.2f}")
                else:
                    cells.append(f"{values.iloc[0]:.2f}")
            heads = rows["heads"].iloc[0] if arm != "random" else f"{len(rows)} seeds"
            print(f"| {k} | {alpha} | {arm} ({heads}) | " + " | ".join(cells) + " |")
