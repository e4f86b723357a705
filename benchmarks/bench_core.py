"""Core benchmark on the real embedded SmolLM2-135M-Instruct, everything measured in one run.

    python benchmarks/bench_core.py            # n = 512 prompts, all 270 heads (~15 min on 2 cores)
    python benchmarks/bench_core.py --quick    # n = 128 prompts, the 27 heads of 3 layers

Prints progress, then as its last lines one ``name=value`` per line:
SOMP fast vs the textbook oracle (tests/oracle.py, float32, same prompts, same heads, full
49,152-token dictionary, 10 atoms), capture vs plain forward passes on the same batches
(the full model, and the decoder alone), and head-space storage vs per-head residual
vectors. Run it on an otherwise idle machine: both sides of each ratio are timed in the
same run, but other load inflates the many small operations of the fast SOMP most.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from headpursuit import AttentionSites, Head, capture, head_somp, load_model
from headpursuit.activations.capture import encode_batch, format_prompts
from headpursuit.ranking.concepts import builtin_words
from oracle import textbook_somp

TEMPLATES = [
    "What is the capital of {}?",
    "Tell me something interesting about {}.",
    "Write one sentence that mentions {}.",
    "Is {} a word you would use every day?",
]


def benchmark_prompts(n: int) -> list[str]:
    """n distinct prompts from templates over the bundled word lists (deterministic)."""
    words = [
        w
        for name in ("countries", "colors", "nationalities", "months_weekdays", "numbers")
        for w in builtin_words(name)
    ]
    prompts = [t.format(w) for w, t in itertools.product(words, TEMPLATES)]
    if len(prompts) < n:
        raise ValueError(f"only {len(prompts)} benchmark prompts available")
    step = len(prompts) / n
    return [prompts[int(i * step)] for i in range(n)]


def time_capture_and_forward(loaded, prompts, batch_size, max_length=128, rounds=2):
    """Capture vs plain forward passes over the same (length-sorted) batches, interleaved.

    Returns the activations and the best of ``rounds`` wall times for: capture, a plain
    full forward (``model(...)``, which also computes the logits capture does not need),
    and a plain forward of the decoder alone (``model.base_model(...)``, the same layers
    capture runs, without hooks).
    """
    texts = format_prompts(loaded.tokenizer, prompts, chat=True)
    lengths = [len(ids) for ids in loaded.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])

    def forward(module):
        with torch.inference_mode():
            for first in range(0, len(order), batch_size):
                rows = order[first : first + batch_size]
                batch = encode_batch(loaded, [texts[i] for i in rows], None, max_length)
                module(**batch, use_cache=False)

    times = {"capture": [], "forward": [], "decoder_forward": []}
    acts = None
    for _ in range(rounds):
        start = time.perf_counter()
        acts = capture(
            loaded,
            prompts,
            chat=True,
            batch_size=batch_size,
            max_length=max_length,
            progress=False,
        )
        times["capture"].append(time.perf_counter() - start)
        for name, module in (
            ("forward", loaded.model),
            ("decoder_forward", loaded.model.base_model),
        ):
            start = time.perf_counter()
            forward(module)
            times[name].append(time.perf_counter() - start)
    return acts, {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n=128 and 27 heads")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    n = args.n or (128 if args.quick else 512)
    torch.manual_seed(0)

    loaded = load_model()
    sites = AttentionSites(loaded.model)
    prompts = benchmark_prompts(n)
    # Warm-up so that neither side pays one-time allocation costs.
    time_capture_and_forward(loaded, prompts[: args.batch_size], args.batch_size, rounds=1)
    acts, wall = time_capture_and_forward(loaded, prompts, args.batch_size)
    print(f"capture/forward wall times on {n} prompts (best of 2): {wall}", flush=True)

    layers = range(27, 30) if args.quick else range(sites.n_layers)
    heads = [Head(l, h) for l in layers for h in range(sites.n_heads)]
    dictionary = sites.unembedding()

    start = time.perf_counter()
    fast = head_somp(acts, sites, dictionary, args.atoms, heads=heads)
    fast_s = time.perf_counter() - start
    print(
        f"fast SOMP {fast_s:.2f}s for {len(heads)} heads "
        f"({fast.n_exact_scores / (len(heads) * args.atoms * dictionary.shape[0]):.2%} of "
        "atom scores computed exactly)",
        flush=True,
    )

    # Where the fast time goes: the one-time D·W_O products, measured alone.
    start = time.perf_counter()
    atoms = torch.nn.functional.normalize(dictionary, dim=1)
    for layer in layers:
        atoms @ sites.output_weight(layer)
    products_s = time.perf_counter() - start

    identical = 0
    max_evr_diff = 0.0
    start = time.perf_counter()
    for row, head in enumerate(heads):
        support, evr, _ = textbook_somp(
            acts.residual(sites, *head), dictionary, args.atoms, dtype=torch.float32
        )
        identical += fast.support[row].tolist() == support
        max_evr_diff = max(max_evr_diff, float((fast.evr[row] - torch.tensor(evr)).abs().max()))
        if row % 27 == 26:
            print(
                f"  textbook {row + 1}/{len(heads)} heads, {time.perf_counter() - start:.0f}s",
                flush=True,
            )
    textbook_s = time.perf_counter() - start

    activation_bytes = acts.pooled.numel() * acts.pooled.element_size()
    residual_bytes = n * sites.n_layers * sites.n_heads * sites.d_model * 4
    results = {
        "n_prompts": n,
        "n_heads": len(heads),
        "dictionary_size": dictionary.shape[0],
        "n_atoms": args.atoms,
        "somp_textbook_s": f"{textbook_s:.2f}",
        "somp_fast_s": f"{fast_s:.2f}",
        "somp_fast_products_s": f"{products_s:.2f}",
        "somp_speedup": f"{textbook_s / fast_s:.1f}",
        "somp_identical_heads": f"{identical}/{len(heads)}",
        "somp_max_evr_diff": f"{max_evr_diff:.2e}",
        "capture_s": f"{wall['capture']:.2f}",
        "forward_s": f"{wall['forward']:.2f}",
        "decoder_forward_s": f"{wall['decoder_forward']:.2f}",
        "capture_overhead": f"{wall['capture'] / wall['forward']:.3f}",
        "capture_overhead_vs_decoder": f"{wall['capture'] / wall['decoder_forward']:.3f}",
        "activation_bytes": activation_bytes,
        "residual_bytes": residual_bytes,
        "activation_bytes_ratio": f"{activation_bytes / residual_bytes:.4f}",
    }
    for name, value in results.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
