"""Protocol search for colour word frequency on the embedded SmolLM2 (selected heads only)."""

import json
import random
import sys
import time

from headpursuit import AttentionSites, capture, concept_from_words, load_model, steer
from headpursuit.evaluation.language import data
from headpursuit.evaluation.language.metrics import heldout_split, word_frequency
from headpursuit.evaluation.language.selection import parse_intervention, select_ranking
from headpursuit.steering.generation import generate

concept = sys.argv[1] if len(sys.argv) > 1 else "colors"
ks = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [8]
loaded = load_model()
sites = AttentionSites(loaded.model)
words = data.concept_words(concept)
sel_words, held = heldout_split(words, seed=0)
prompts = data.default_prompts(concept)
random.Random(0).shuffle(prompts)
sel_p, ev_p = prompts[:20], prompts[20:]
fed, outs = generate(loaded, sel_p, max_new_tokens=24)
acts = capture(loaded, [p + c for p, c in zip(fed, outs, strict=False)], progress=False)
mean_out = acts.pooled.mean(0)
dictionary = concept_from_words(loaded.tokenizer, sel_words)


def evaluate():
    _, o = generate(loaded, ev_p, max_new_tokens=24)
    return {"held": word_frequency(o, held), "all": word_frequency(o, words)}, o


base, o = evaluate()
print("baseline", base, held, o[:3], flush=True)
for method, window in [
    ("specificity", None),
    ("specificity", (10, 29)),
    ("evr", None),
    ("evr", (10, 29)),
]:
    ranking = select_ranking(method, acts, sites, dictionary.token_ids, window=window)
    for k in ks:
        heads = ranking.top(k)
        for spec in ["-1", "-0.5", "0", "mean"]:
            mode, alpha = parse_intervention(spec)
            t = time.time()
            with steer(
                loaded.model, heads, alpha, replacement=mean_out if mode == "mean" else None
            ):
                m, o = evaluate()
            norm = {k2: round(m[k2] / base[k2], 2) if base[k2] else None for k2 in m}
            print(
                method,
                window,
                k,
                spec,
                " ".join(map(str, heads)),
                json.dumps(norm),
                f"{time.time() - t:.0f}s",
                o[0][:60],
                flush=True,
            )
