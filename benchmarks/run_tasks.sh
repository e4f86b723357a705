#!/usr/bin/env bash
# The exact commands behind the numbers in docs/results.md (embedded SmolLM2-135M-Instruct,
# CPU). Protocol search first (selected heads only), then the full task runs with logit-lens
# heads, 5 matched random control seeds and the unmodified model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# One thread per process: with OpenMP spin-waits, 2 threads on a busy 2-core machine made
# SOMP hang for minutes.
export OMP_NUM_THREADS=1
OUT=benchmarks/tasks_out
mkdir -p "$OUT"

# 1. Protocol search (selected heads only; one line per protocol / k / intervention).
$PY benchmarks/search_qa.py > "$OUT/search_qa.log"
$PY benchmarks/search_wordfreq.py colors 3,8 > "$OUT/search_colors.log"

# 2. Full runs (specificity ranking; α given explicitly: -1 was the first default, 0 the
#    final one, see docs/results.md).
$PY benchmarks/qa_baseline.py > "$OUT/qa_baseline.log"
$PY -m headpursuit.tasks.cli qa --alphas=-1 --output "$OUT/qa.json"
$PY -m headpursuit.tasks.cli qa --ks 3 --alphas=0 --output "$OUT/qa_k3_alpha0.json"
# The default protocol as a user runs it (k = 1/2/3 % of heads, α = 0, 5 control seeds).
$PY -m headpursuit.tasks.cli qa --output "$OUT/qa_default.json" > "$OUT/qa_default.log"
$PY -m headpursuit.tasks.cli wordfreq colors --alphas=-1,0 --output "$OUT/wordfreq_colors.json"
$PY -m headpursuit.tasks.cli wordfreq colors --ks 8 --alphas=-1 --fluency \
    --output "$OUT/wordfreq_colors_fluency.json"
$PY -m headpursuit.tasks.cli amplify colors --alphas=5 --output "$OUT/amplify_colors.json"
# The defaults as a user runs them (timed in docs/performance.md).
$PY -m headpursuit.tasks.cli wordfreq colors --output "$OUT/wordfreq_default.json" > "$OUT/wordfreq_default.log"
$PY -m headpursuit.tasks.cli amplify colors --output "$OUT/amplify_default.json" > "$OUT/amplify_default.log"
$PY -m headpursuit.tasks.cli wordfreq colors --ks 8 --fluency \
    --output "$OUT/wordfreq_k8_alpha0_fluency.json" > "$OUT/wordfreq_k8_alpha0_fluency.log"

# 3. Tables for docs/results.md.
$PY benchmarks/summarize_tasks.py "$OUT"/qa.json "$OUT"/qa_k3_alpha0.json "$OUT"/wordfreq_colors.json \
    "$OUT"/wordfreq_colors_fluency.json "$OUT"/amplify_colors.json
