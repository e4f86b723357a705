"""Fast SOMP against the float64 textbook loop on a real model's full vocabulary.

    python benchmarks/check_real_dictionaries.py MODEL [--n 64] [--oracle-heads 12]

MODEL is anything ``headpursuit.load_model`` takes (a ``.gguf`` file, a checkpoint
directory, a hub id). It captures ``--n`` plain prompts, runs SOMP (k = 10) on every head
over the whole unembedding, then the textbook loop of ``tests/oracle.py`` in float64 on
``--oracle-heads`` heads spread over the layers (its input is the float64 product of the
same pooled outputs and W_O slices). Prints one line per checked head and a summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_core import benchmark_prompts  # noqa: E402
from headpursuit import AttentionSites, Head, capture, head_somp, load_model  # noqa: E402
from oracle import textbook_somp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--oracle-heads", type=int, default=12)
    args = parser.parse_args()
    loaded = load_model(args.model)
    sites = AttentionSites(loaded.model)
    acts = capture(loaded, benchmark_prompts(args.n), chat=False, max_length=64, progress=False)
    dictionary = sites.unembedding()
    heads = [Head(l, h) for l in range(sites.n_layers) for h in range(sites.n_heads)]
    start = time.perf_counter()
    result = head_somp(acts, sites, dictionary, args.atoms, heads=heads)
    fast_s = time.perf_counter() - start
    vocab = dictionary.shape[0]
    print(
        f"{args.model}: dictionary {tuple(dictionary.shape)}, {len(heads)} heads in "
        f"{fast_s:.1f} s, {result.n_exact_scores / (len(heads) * args.atoms * vocab):.3%} "
        "of the atom scores computed",
        flush=True,
    )
    stride = max(1, len(heads) // args.oracle_heads)
    checked = [i for i in range(0, len(heads), stride)][: args.oracle_heads]
    same, worst = 0, 0.0
    for row in checked:
        layer, head = heads[row]
        signals = acts.pooled[:, layer, head].double() @ sites.head_matrices(layer)[head].double().T
        support, evr, _ = textbook_somp(signals, dictionary, args.atoms)
        match = support == result.support[row].tolist()
        same += match
        worst = max(
            worst, float((result.evr[row] - torch.tensor(evr, dtype=torch.float64)).abs().max())
        )
        print(f"  {heads[row]}: {'same atoms' if match else f'DIFFERENT {support}'}", flush=True)
    print(f"identical_heads={same}/{len(checked)}")
    print(f"max_evr_diff={worst:.2e}")


if __name__ == "__main__":
    main()
