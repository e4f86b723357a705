"""Teacher-forced scoring with and without reusing the layers below the first steered one.

    python benchmarks/bench_prefix.py                 # the embedded SmolLM2
    python benchmarks/bench_prefix.py gemma-3-270m    # or qwen2.5-0.5b

Scores 96 dev colour questions three ways, side by side in one process, with two heads
flipped (one two thirds of the way up, one in the last layer): the first pass with a
:class:`~headpursuit.steering.prefix.LayerPrefixCache` (it records the hidden states and
checks the shortened pass once), a second pass that reuses them, and a plain full pass.
Prints ``name=value`` lines; ``reuse_speedup`` is full / reuse. The two results must be
equal (``max_abs_diff``).
"""

from __future__ import annotations

import sys
import time

from headpursuit import AttentionSites, Head, load_model, steer
from headpursuit.evaluation.language import facts
from headpursuit.steering.generation import next_token_logprobs
from headpursuit.steering.prefix import LayerPrefixCache


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
    loaded = load_model(name)
    sites = AttentionSites(loaded.model)
    questions, answers = facts.questions(loaded.tokenizer, "colours", "dev")
    prompts = [q.prompt for q in questions[:96]]
    prefix = LayerPrefixCache(loaded, sites)
    heads = [Head(sites.n_layers * 2 // 3, 0), Head(sites.n_layers - 1, 1)]
    with steer(loaded.model, heads, -1.0, sites=sites):
        start = time.perf_counter()
        next_token_logprobs(loaded, prompts, answers.token_ids, prefix=prefix)
        record_s = time.perf_counter() - start
        start = time.perf_counter()
        reused = next_token_logprobs(loaded, prompts, answers.token_ids, prefix=prefix)
        reuse_s = time.perf_counter() - start
        start = time.perf_counter()
        full = next_token_logprobs(loaded, prompts, answers.token_ids)
        full_s = time.perf_counter() - start
    print(f"model={name}")
    print(f"first_steered_layer={min(h.layer for h in heads)} of {sites.n_layers}")
    print(f"trusted={all(prefix.trusted.values())}")
    print(f"record_and_check_s={record_s:.2f}")
    print(f"reuse_s={reuse_s:.2f}")
    print(f"full_s={full_s:.2f}")
    print(f"reuse_speedup={full_s / reuse_s:.2f}")
    print(f"max_abs_diff={float((reused - full).abs().max()):.2e}")


if __name__ == "__main__":
    main()
