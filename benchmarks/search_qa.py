"""Protocol search for country QA on the embedded SmolLM2 (selected heads only).

Usage: python benchmarks/search_qa.py  (prints one line per protocol/k/intervention)
"""

import json
import time

from headpursuit import AttentionSites, capture, concept_from_words, load_model, steer
from headpursuit.evaluation.language import data
from headpursuit.evaluation.language.qa import score_questions
from headpursuit.evaluation.language.selection import parse_intervention, select_ranking

loaded = load_model()
sites = AttentionSites(loaded.model)
sel, ev = data.split_countries(0)
non = data.nontarget_questions(ev, n_sums=10)
questions = data.capital_to_country(ev) + [q for q in non if q.category == "city"][:10]
questions += [q for q in non if q.category in ("number", "general")]
words = [a for r in sel for a in r["aliases"]]
concept = concept_from_words(loaded.tokenizer, words, name="countries")
acts = capture(loaded, data.selection_texts_countries(sel), progress=False)
mean_out = acts.pooled.mean(0)
base, _ = score_questions(loaded, questions, max_new_tokens=10)
print("baseline", json.dumps({k: round(v, 3) for k, v in base.items()}), flush=True)
grid = [
    ("specificity", None, [3, 5, 8], ["-1", "-0.5", "0", "mean"]),
    ("evr", (10, 29), [8], ["-1", "0"]),
    ("evr", None, [8], ["-1"]),
]
for method, window, ks, specs in grid:
    ranking = select_ranking(method, acts, sites, concept.token_ids, window=window)
    for k in ks:
        heads = ranking.top(k)
        for spec in specs:
            mode, alpha = parse_intervention(spec)
            t = time.time()
            replacement = mean_out if mode == "mean" else None
            with steer(loaded.model, heads, alpha, replacement=replacement):
                m, answers = score_questions(loaded, questions, max_new_tokens=10)
            norm = {k2: round(m[k2] / base[k2], 2) if base[k2] else None for k2 in m}
            print(
                method,
                window,
                k,
                spec,
                " ".join(map(str, heads)),
                json.dumps(norm),
                f"{time.time() - t:.0f}s",
                answers[0],
                "|",
                answers[-1],
                flush=True,
            )
