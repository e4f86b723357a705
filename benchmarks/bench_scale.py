"""Scale benchmark: SOMP at Mistral-7B shapes and on the full SmolLM2 problem, against its GEMMs.

    python benchmarks/bench_scale.py            # everything (~25 min on 2 busy cores)
    python benchmarks/bench_scale.py --quick    # smaller subsets of the same measurements
    python benchmarks/bench_scale.py --only paper_somp memory_scaling
    python benchmarks/bench_scale.py --only explain_memory --model gemma-3-270m-q4_k_m.gguf

Prints progress, then as its last lines one ``name=value`` per line. Each measurement is a
function in ``MEASUREMENTS`` that returns its lines; the ratios are measured side by side
in one run (the GEMM rate is timed right before and right after the SOMP it is compared
with, and the faster of the two is used, which makes the floor as low as it can be).

* ``paper_somp``: SOMP for the 32 heads of one layer of a random-init Mistral-7B-shaped
  model (d_model 4096, heads of 128, vocabulary 32,000, realistic statistics: see
  tests/test_pursuit_scale.py), n = 1,000 pooled prompts, k = 10; extrapolated to the
  1,024 heads of Mistral-7B (the work is per head). The floor is the time of the one-time
  GEMMs of those heads, ``D·W_O`` (v × d × head_dim per head) and ``Z·Gᵀ``
  (n × head_dim × v per head), at the rate of ``D·W_O`` measured in the same run.
* ``smollm_somp``: the same ratio on the real embedded SmolLM2 (270 heads, 49,152 atoms),
  n = 512 chat prompts, k = 10.
* ``memory_scaling``: peak memory above the inputs while SOMP runs on a Gemma-3-sized
  dictionary (262,144 × 640, heads of 256), in a fresh process per setting, for two
  block sizes and two head counts at a fixed chunk of 2 heads.
* ``capture_scale``: ``benchmarks/bench_capture_scale.py`` in a child process (streamed
  capture of 20,000 vs 1,000 prompts, and a two-process ``torchrun`` capture against one
  process); its ``capture_rss_ratio``, ``two_process_identical`` and
  ``two_process_speedup`` lines are passed on (``--quick``: 4,000 prompts).
* ``explain_memory`` (only with ``--model``, e.g. the Gemma-3-270M GGUF of
  docs/performance.md): peak memory of ``explain_heads`` on 10 heads above the loaded model
  (weights paged in) and its activations, in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from headpursuit import somp_factored  # noqa: E402

MISTRAL_HEADS = 1024  # 32 layers × 32 heads


def gemm_rate(left: torch.Tensor, right: torch.Tensor, rounds: int = 1) -> float:
    """Float32 GEMM rate (flop/s) of ``left @ right``, the best of ``rounds``."""
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        left @ right
        best = min(best, time.perf_counter() - start)
    return 2 * left.shape[0] * left.shape[1] * right.shape[1] / best


def paper_somp(args: argparse.Namespace) -> dict[str, object]:
    from test_pursuit_scale import mistral_shaped_problem

    n_heads, n_samples = (8, 256) if args.quick else (32, 1000)
    heads = [(1, h) for h in range(n_heads)]
    print(f"paper: building the Mistral-shaped problem (n = {n_samples})", flush=True)
    codes, maps, unembedding = mistral_shaped_problem(n_samples, heads)
    vocab, width = unembedding.shape
    rank = codes.shape[2]
    stacked = maps.permute(1, 0, 2).reshape(width, n_heads * rank)  # this subset's W_O
    atoms = torch.nn.functional.normalize(unembedding, dim=1)
    rates = [gemm_rate(atoms, stacked)]
    start = time.perf_counter()
    result = somp_factored(codes, maps, unembedding, args.atoms)
    somp_s = time.perf_counter() - start
    rates.append(gemm_rate(atoms, stacked))
    rate = max(rates)
    floor_flops = 2 * n_heads * rank * vocab * (width + n_samples)
    floor_s = floor_flops / rate
    print(f"paper: {n_heads} heads in {somp_s:.1f} s, floor {floor_s:.1f} s", flush=True)
    return {
        "paper_heads_measured": n_heads,
        "paper_n_samples": n_samples,
        "paper_gemm_gflops": f"{rate / 1e9:.1f}",
        "paper_somp_subset_s": f"{somp_s:.2f}",
        "paper_exact_score_fraction": f"{result.n_exact_scores / (n_heads * args.atoms * vocab):.4%}",
        "paper_somp_extrapolated_s": f"{somp_s * MISTRAL_HEADS / n_heads:.0f}",
        "paper_somp_floor_ratio": f"{somp_s / floor_s:.3f}",
    }


def smollm_somp(args: argparse.Namespace) -> dict[str, object]:
    from bench_core import benchmark_prompts
    from headpursuit import AttentionSites, Head, capture, head_somp, load_model

    n_samples = 128 if args.quick else 512
    loaded = load_model()
    sites = AttentionSites(loaded.model)
    layers = range(27, 30) if args.quick else range(sites.n_layers)
    heads = [Head(l, h) for l in layers for h in range(sites.n_heads)]
    print(f"smollm: capturing {n_samples} prompts", flush=True)
    acts = capture(loaded, benchmark_prompts(n_samples), chat=True, batch_size=32, progress=False)
    dictionary = sites.unembedding()
    vocab, width = dictionary.shape
    atoms = torch.nn.functional.normalize(dictionary, dim=1)
    weights = torch.cat([sites.output_weight(l) for l in layers], 1)  # [d, heads * head_dim]

    rates = [gemm_rate(atoms, weights)]
    start = time.perf_counter()
    result = head_somp(acts, sites, dictionary, args.atoms, heads=heads)
    somp_s = time.perf_counter() - start
    rates.append(gemm_rate(atoms, weights))
    rate = max(rates)
    floor_flops = 2 * len(heads) * sites.head_dim * vocab * (width + n_samples)
    floor_s = floor_flops / rate
    print(f"smollm: {len(heads)} heads in {somp_s:.1f} s, floor {floor_s:.1f} s", flush=True)
    return {
        "smollm_heads": len(heads),
        "smollm_n_samples": n_samples,
        "smollm_gemm_gflops": f"{rate / 1e9:.1f}",
        "smollm_somp_s": f"{somp_s:.2f}",
        "smollm_floor_s": f"{floor_s:.2f}",
        "smollm_exact_score_fraction": f"{result.n_exact_scores / (len(heads) * args.atoms * vocab):.4%}",
        "smollm_somp_floor_ratio": f"{somp_s / floor_s:.3f}",
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def _peak_while(run: Callable[[], object]) -> int:
    """The largest RSS (bytes) seen every 5 ms while ``run()`` runs."""
    peak = _rss_bytes()
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run()
    finally:
        done.set()
        watcher.join()
    return max(peak, _rss_bytes())


def memory_probe(block: int, n_heads: int) -> float:
    """Peak RSS above the inputs (MiB) while SOMP runs on a Gemma-3-sized problem."""
    from test_pursuit_scale import realistic_dictionary, realistic_heads

    dictionary = realistic_dictionary(262144, 640, seed=0)
    codes, maps = realistic_heads(n_heads, 256, 256, dictionary, seed=0)
    baseline = _rss_bytes()
    peak = _peak_while(
        lambda: somp_factored(codes, maps, dictionary, 3, heads_per_chunk=2, vocab_block=block)
    )
    return (peak - baseline) / 2**20


def memory_scaling(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    head_counts = (2, 4) if args.quick else (2, 8)
    for block in (2048, 32768):
        for n_heads in head_counts:
            print(f"memory: block {block}, {n_heads} heads", flush=True)
            output = subprocess.run(
                [sys.executable, __file__, "--memory-probe", str(block), str(n_heads)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            extra = json.loads(output.strip().splitlines()[-1])
            results[f"memory_block_{block}_heads_{n_heads}_mb"] = f"{extra:.0f}"
    # What one [v, head_dim] float32 factor per head, held for a chunk, would take.
    results["memory_unstreamed_factor_per_head_mb"] = f"{262144 * 256 * 4 / 2**20:.0f}"
    return results


def explain_probe(model: str, n_samples: int) -> dict[str, float]:
    """Peak RSS (MiB) of explain_heads on 10 heads, above the model and its activations."""
    from bench_core import benchmark_prompts
    from headpursuit import AttentionSites, Head, capture, load_model
    from headpursuit.ranking.explain import explain_heads

    loaded = load_model(model)
    sites = AttentionSites(loaded.model)
    acts = capture(loaded, benchmark_prompts(n_samples), chat=False, max_length=64, progress=False)
    with torch.no_grad():  # page every weight in, so that the baseline holds the whole model
        for param in loaded.model.parameters():
            param.sum()
    heads = [Head(l, h) for l in range(sites.n_layers) for h in range(sites.n_heads)]
    heads = heads[:: max(1, len(heads) // 10)][:10]
    baseline = _rss_bytes()
    peak = _peak_while(lambda: explain_heads(acts, sites, loaded.tokenizer, heads, n_atoms=10))
    return {"baseline_mb": baseline / 2**20, "extra_mb": (peak - baseline) / 2**20}


def explain_memory(args: argparse.Namespace) -> dict[str, object]:
    if args.model is None:
        return {}
    print(f"explain memory: {args.model}", flush=True)
    output = subprocess.run(
        [sys.executable, __file__, "--explain-probe", args.model],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    probe = json.loads(output.strip().splitlines()[-1])
    return {
        "explain_model_and_activations_mb": f"{probe['baseline_mb']:.0f}",
        "explain_extra_mb": f"{probe['extra_mb']:.0f}",
    }


def capture_scale(args: argparse.Namespace) -> dict[str, object]:
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_capture_scale.py")]
    command += ["--quick"] if args.quick else []
    print("capture scale: benchmarks/bench_capture_scale.py", flush=True)
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    lines = [line.split("=", 1) for line in output.splitlines() if "=" in line]
    return {name: value for name, value in lines if name.replace("_", "").isalnum()}


MEASUREMENTS: list[Callable[[argparse.Namespace], dict[str, object]]] = [
    paper_somp,
    smollm_somp,
    memory_scaling,
    capture_scale,
    explain_memory,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller subsets")
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--only", nargs="+", choices=[m.__name__ for m in MEASUREMENTS])
    parser.add_argument("--model", help="a model for explain_memory (e.g. a .gguf file)")
    parser.add_argument("--memory-probe", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--explain-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe)))
        return
    if args.explain_probe:
        print(json.dumps(explain_probe(args.explain_probe, 64)))
        return
    torch.manual_seed(0)
    results: dict[str, object] = {}
    for measure in MEASUREMENTS:
        if args.only is None or measure.__name__ in args.only:
            results.update(measure(args))
    for name, value in results.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
