"""Fast SOMP at the paper's shapes, on large dictionaries and on adversarial near-ties.

Every check compares with the float64 textbook loop of ``tests/oracle.py``. The problems
have the statistics of real models (measured on the Gemma-3-270M and Qwen2.5-0.5B
unembeddings and on SmolLM2's pooled head outputs): row norms spread ±30 %, a shared
direction giving a mean pairwise cosine of about 0.2, 10 % near-duplicate rows (cosine
about 0.9) and 1 % exact duplicates; head outputs whose top three directions hold most of
the variance, half of the heads writing along token rows (as copy and concept heads do).
"""

from __future__ import annotations

import math

import pytest
import torch

from headpursuit import somp, somp_factored
from oracle import textbook_somp


def realistic_dictionary(
    vocab: int, width: int, *, seed: int = 0, norm_spread: float = 0.2
) -> torch.Tensor:
    """``[vocab, width]`` float32 rows with the statistics of real unembeddings (module doc)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(vocab, width, generator=generator)
    shared = torch.randn(width, generator=generator)
    rows += shared * (0.55 * math.sqrt(width) / shared.norm())  # mean pair cosine ≈ 0.23
    near = torch.randperm(vocab, generator=generator)[: vocab // 10]
    sources = torch.randint(0, vocab, (near.numel(),), generator=generator)
    rows[near] = rows[sources] + 0.55 * torch.randn(near.numel(), width, generator=generator)
    copies = torch.randperm(vocab, generator=generator)[: vocab // 100]
    rows[copies] = rows[torch.randint(0, vocab, (copies.numel(),), generator=generator)]
    scale = torch.exp(norm_spread * torch.randn(vocab, 1, generator=generator))
    return rows * (scale / rows.norm(dim=1, keepdim=True))


def head_spectrum(rank: int) -> torch.Tensor:
    """Singular values of pooled head outputs like SmolLM2's: three directions dominate."""
    i = torch.arange(rank, dtype=torch.float32)
    return torch.exp(-i / 2) + 0.1 / (1 + i).sqrt()


def realistic_heads(
    n_heads: int, n_samples: int, rank: int, dictionary: torch.Tensor, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[B, n, r]`` and maps ``[B, d, r]``; odd heads write their top directions
    along token rows (plus noise), even heads have isotropic maps like most real W_O."""
    generator = torch.Generator().manual_seed(seed)
    width = dictionary.shape[1]
    codes = torch.randn(n_heads, n_samples, rank, generator=generator) * head_spectrum(rank)
    codes += torch.randn(n_heads, 1, rank, generator=generator)  # a mean, removed by centring
    maps = torch.randn(n_heads, width, rank, generator=generator) / math.sqrt(width)
    for head in range(1, n_heads, 2):
        tokens = torch.randint(0, dictionary.shape[0], (3,), generator=generator)
        maps[head, :, :3] = 3 * torch.nn.functional.normalize(dictionary[tokens], dim=1).T
    return codes, maps


def mistral_shaped_problem(
    n_samples: int, heads: list[tuple[int, int]], *, seed: int = 0, n_tokens: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled codes ``[B, n, 128]``, maps ``[B, 4096, 128]`` and the ``[32000, 4096]``
    unembedding of a random-init two-layer Mistral-7B-shaped model (d_model 4096, 32 heads
    of 128, 8 KV heads, vocabulary 32,000; small MLP, which SOMP never sees).

    The unembedding (tied) gets real statistics; each KV head's value map gets the head
    spectrum, and odd heads' output maps write their top value directions along token rows.
    Codes are the ``o_proj`` inputs mean-pooled over random prompts of ``n_tokens`` tokens.
    """
    from transformers import AutoModelForCausalLM, MistralConfig

    config = MistralConfig(
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        num_hidden_layers=2,
        vocab_size=32000,
        intermediate_size=256,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    unembedding = realistic_dictionary(32000, 4096, seed=seed)
    spectrum = head_spectrum(128)
    with torch.no_grad():
        model.get_output_embeddings().weight.copy_(unembedding)
        for layer in model.model.layers:
            value = layer.self_attn.v_proj.weight.view(8, 128, 4096)
            value.mul_(spectrum[None, :, None] * 8)
            output = layer.self_attn.o_proj.weight.view(4096, 32, 128)
            for head in range(1, 32, 2):
                tokens = torch.randint(0, 32000, (3,), generator=generator)
                direction = torch.nn.functional.normalize(unembedding[tokens], dim=1).T
                output[:, head, :3] = 0.2 * direction
    pooled: dict[int, torch.Tensor] = {}
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda module, args, i=i: pooled.__setitem__(i, args[0].mean(1))
        )
        for i, layer in enumerate(model.model.layers)
    ]
    ids = torch.randint(0, 32000, (n_samples, n_tokens), generator=generator)
    try:
        with torch.inference_mode():
            model.model(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    weights = [layer.self_attn.o_proj.weight.detach() for layer in model.model.layers]
    codes = torch.stack([pooled[l].view(n_samples, 32, 128)[:, h] for l, h in heads])
    maps = torch.stack([weights[l].view(4096, 32, 128)[:, h] for l, h in heads])
    return codes.clone(), maps.clone(), unembedding


def assert_matches_textbook(result, codes, maps, dictionary, n_atoms, *, center=True):
    """Same atoms as the float64 textbook SOMP for every head, EVR to 1e-9."""
    worst = 0.0
    for b in range(codes.shape[0]):
        signals = codes[b].double() @ maps[b].double().T if maps is not None else codes[b]
        support, evr, _ = textbook_somp(signals, dictionary, n_atoms, center=center)
        assert result.support[b].tolist() == support, f"head {b}"
        worst = max(
            worst, float((result.evr[b] - torch.tensor(evr, dtype=torch.float64)).abs().max())
        )
    assert worst < 1e-9
    return worst


# --- adversarial near-ties ------------------------------------------------------------------


def _near_tie(width=48, n=20, gap=1e-9, seed=0):
    """Signals dominated by atom a, and b = a nudged so that its ℓ1 score differs by ~gap
    (relative): far below float32 resolution, far above float64's."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(
        torch.randn(width, generator=generator, dtype=torch.float64), dim=0
    )
    signals = 4 * torch.randn(n, 1, generator=generator, dtype=torch.float64) * a
    signals += torch.randn(n, width, generator=generator, dtype=torch.float64)
    signals -= signals.mean(0)
    ascent = signals.T @ torch.sign(signals @ a)  # gradient of Σ|h_i·x| at a
    ascent -= (ascent @ a) * a
    b = torch.nn.functional.normalize(a + gap * ascent / ascent.norm(), dim=0)
    return signals, a, b


@pytest.mark.parametrize("gap", [1e-9, 1e-11])
@pytest.mark.parametrize("b_first", [True, False])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_float64_decides_a_near_tie_below_float32_resolution(gap, b_first, sign):
    signals, a, b = _near_tie(gap=sign * gap)
    generator = torch.Generator().manual_seed(1)
    dictionary = torch.randn(300, a.numel(), generator=generator, dtype=torch.float64)
    first, second = (17, 230) if b_first else (230, 17)
    dictionary[first], dictionary[second] = b, a
    score_a, score_b = ((signals @ x).abs().sum() for x in (a, b))
    # The construction is adversarial: the gap is below float32 round-off of the scores ...
    assert 0 < abs(score_b - score_a) / score_a < 1e-7
    # ... and float32 cannot see it (b and a round to nearly the same float32 atom).
    assert (b.float() - a.float()).abs().max() < 1e-7
    winner = first if sign > 0 else second
    support, _, _ = textbook_somp(signals, dictionary, 3, center=False)
    assert support[0] == winner
    fast = somp(signals, dictionary, 3, center=False, vocab_block=64)
    assert fast.support[0].tolist() == support


def test_float64_decides_a_near_tie_at_a_later_step():
    signals, a, b = _near_tie(gap=-3e-10, seed=2)
    generator = torch.Generator().manual_seed(3)
    width = a.numel()
    lead = torch.nn.functional.normalize(
        torch.randn(width, generator=generator, dtype=torch.float64), dim=0
    )
    lead -= (lead @ a) * a
    lead /= lead.norm()
    signals = (
        signals
        + 10 * torch.randn(signals.shape[0], 1, generator=generator, dtype=torch.float64) * lead
    )
    dictionary = torch.randn(500, width, generator=generator, dtype=torch.float64)
    dictionary[5], dictionary[400], dictionary[250] = lead, b, a
    support, evr, _ = textbook_somp(signals, dictionary, 4)
    assert support[:2] == [5, 250]  # the tie is decided at step 2
    fast = somp(signals, dictionary, 4, vocab_block=100)
    assert fast.support[0].tolist() == support
    assert torch.allclose(fast.evr[0], torch.tensor(evr, dtype=torch.float64), atol=1e-12)


def test_one_float32_ulp_apart_atoms_follow_the_float64_oracle():
    generator = torch.Generator().manual_seed(5)
    dictionary = torch.randn(2000, 64, generator=generator)
    signals = (
        torch.randn(40, 64, generator=generator)
        + 3 * torch.randn(40, 1, generator=generator) * dictionary[7]
    )
    for twin in (1500, 3):  # after and before the original
        nudged = dictionary.clone()
        nudged[twin] = dictionary[7]
        nudged[twin, 0] = torch.nextafter(dictionary[7, 0], torch.tensor(math.inf))
        support, _, _ = textbook_somp(signals, nudged, 5)
        fast = somp(signals, nudged, 5, vocab_block=256)
        assert fast.support[0].tolist() == support
        assert {support[0], support[1]} != {7, twin}  # once one is in, the other scores ~0


def test_exact_duplicate_rows_pick_the_lowest_index_like_argmax():
    generator = torch.Generator().manual_seed(6)
    dictionary = torch.randn(3000, 32, generator=generator)
    signals = (
        torch.randn(30, 32, generator=generator)
        + 4 * torch.randn(30, 1, generator=generator) * dictionary[2500]
    )
    dictionary[900] = dictionary[2500]  # an earlier copy, in another block and round
    dictionary[2999] = dictionary[2500]
    support, _, _ = textbook_somp(signals, dictionary, 3)
    assert support[0] == 900
    for block in (128, None):
        assert somp(signals, dictionary, 3, vocab_block=block).support[0].tolist() == support


# --- the invariants of the derivation (docs/method.md, "Why the choice is exact") -----------


def test_every_bound_and_screening_interval_holds_at_every_step():
    """Before each selection, every unselected atom's bound is ≥ its float64 score, and the
    float32 screening intervals contain the float64 scores, at d = 1024."""
    from headpursuit.ranking.pursuit import _Atoms, _ChunkPursuit, _ieee_float32_matmul

    dictionary = realistic_dictionary(6000, 1024, seed=8)
    codes, maps = realistic_heads(3, 40, 64, dictionary, seed=8)
    atoms64 = torch.nn.functional.normalize(dictionary.double(), dim=1)
    signals = [c.double() @ m.double().T for c, m in zip(codes, maps, strict=True)]
    signals = [h - h.mean(0) for h in signals]
    with _ieee_float32_matmul():
        chunk = _ChunkPursuit(
            codes.double(), maps.double(), _Atoms(dictionary, True, None), 6, True, 2000
        )
        chunk._initial_bounds()
        widths = []
        for _ in range(6):
            chosen = chunk.selected[:, : chunk.steps]
            scores = []
            for b, h in enumerate(signals):
                basis = torch.linalg.qr(atoms64[chosen[b]].T)[0]
                residual = h - (h @ basis) @ basis.T
                scores.append((residual @ atoms64.T).abs().sum(0))
            scores = torch.stack(scores)  # [3, v], the textbook's float64 scores
            free = torch.ones_like(scores, dtype=torch.bool).scatter_(1, chosen, False)
            bounds = chunk.bound.double() * chunk.tri_factor
            assert bool((bounds[free] >= scores[free]).all())
            sample = torch.randint(0, 6000, (3, 200), generator=torch.Generator().manual_seed(0))
            lower, upper = chunk._screen_scores(torch.arange(3), sample)
            truth = scores.gather(1, sample)
            assert bool((lower <= truth).all()) and bool((truth <= upper).all())
            best = scores.masked_fill(~free, 0).max(1, keepdim=True).values
            widths.append(float(((upper - lower) / best).max()))
            added = chunk._add(chunk._select())
            if chunk.steps < 6:
                chunk._update_bounds(*added)
    # Certified, and still narrow next to the best score (≈ 0.1 % at first, a few % late).
    assert max(widths) < 0.1


# --- blocking, chunking, dtypes, device -------------------------------------------------------


def test_blocks_and_chunks_do_not_change_the_result():
    dictionary = realistic_dictionary(5000, 96, seed=1)
    codes, maps = realistic_heads(5, 40, 16, dictionary, seed=1)
    reference = somp_factored(codes, maps, dictionary, 6)
    assert_matches_textbook(reference, codes, maps, dictionary, 6)
    for block, chunk in [(97, 1), (333, 2), (5000, 5), (None, 3)]:
        other = somp_factored(codes, maps, dictionary, 6, vocab_block=block, heads_per_chunk=chunk)
        assert torch.equal(other.support, reference.support)
        torch.testing.assert_close(other.evr, reference.evr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_any_float_dictionary_dtype_matches_the_oracle_on_the_same_values(dtype):
    dictionary = realistic_dictionary(4000, 64, seed=2).to(dtype)
    codes, maps = realistic_heads(3, 30, 16, dictionary.float(), seed=2)
    result = somp_factored(codes, maps, dictionary, 5)
    assert_matches_textbook(result, codes, maps, dictionary.double(), 5)


def test_unnormalised_atoms_match_the_oracle():
    dictionary = realistic_dictionary(3000, 48, seed=3, norm_spread=0.6)
    signals = torch.randn(25, 48) @ torch.randn(48, 48)
    fast = somp(signals, dictionary, 5, normalize=False)
    support, evr, _ = textbook_somp(signals, dictionary, 5, normalize=False)
    assert fast.support[0].tolist() == support
    assert torch.allclose(fast.evr[0], torch.tensor(evr, dtype=torch.float64), atol=1e-9)


def test_results_come_back_on_the_signals_device():
    dictionary = realistic_dictionary(500, 24, seed=4)
    result = somp(torch.randn(10, 24), dictionary, 3, device="cpu")
    assert result.support.device == result.evr.device == torch.device("cpu")
    with pytest.raises(ValueError, match="vocab_block"):
        somp(torch.randn(10, 24), dictionary, 3, vocab_block=0)
    with pytest.raises(ValueError, match="NaN"):
        somp(torch.full((10, 24), math.nan), dictionary, 3)


def test_head_somp_runs_where_asked_or_where_the_model_is(monkeypatch):
    """head_somp hands ``device`` (default: the model's) to every chunk's SOMP."""
    from conftest import random_prompts, tiny_text_model
    from headpursuit import AttentionSites, capture, head_somp
    from headpursuit.ranking import head_ranking

    tiny = tiny_text_model("llama_gqa")
    acts = capture(tiny, random_prompts(6), progress=False)
    sites = AttentionSites(tiny.model)
    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs["device"])
        return somp_factored(*args, **kwargs)

    monkeypatch.setattr(head_ranking, "somp_factored", recording)
    monkeypatch.setattr(head_ranking, "CODES_BUDGET", 1)  # one head per chunk
    heads = [(0, 1), (2, 3)]
    default = head_somp(acts, sites, sites.unembedding(), 2, heads=heads)
    assert [torch.device(d) for d in seen] == [next(tiny.model.parameters()).device] * 2
    seen.clear()
    asked = head_somp(acts, sites, sites.unembedding(), 2, heads=heads, device="cpu")
    assert seen == ["cpu", "cpu"]
    assert torch.equal(asked.support, default.support)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_the_oracle():
    dictionary = realistic_dictionary(20000, 128, seed=5)
    codes, maps = realistic_heads(6, 50, 32, dictionary, seed=5)
    result = somp_factored(codes, maps, dictionary, 8, device="cuda")
    assert result.support.device.type == "cpu"
    assert_matches_textbook(result, codes, maps, dictionary, 8)


# --- paper shapes and real-size dictionaries ----------------------------------------------------


@pytest.mark.slow
def test_mistral_7b_shapes_match_the_float64_textbook():
    """d_model 4096, heads of 128, vocabulary 32,000; four heads of both layers, k = 10."""
    heads = [(0, 0), (0, 1), (1, 6), (1, 7)]
    codes, maps, unembedding = mistral_shaped_problem(64, heads)
    result = somp_factored(codes, maps, unembedding, 10)
    assert_matches_textbook(result, codes, maps, unembedding, 10)
    assert result.n_exact_scores < 0.05 * len(heads) * 10 * 32000  # the bounds prune


@pytest.mark.slow
@pytest.mark.parametrize(
    ("vocab", "width", "rank"), [(151936, 896, 64), (262144, 640, 256)], ids=["qwen2.5", "gemma3"]
)
def test_real_size_dictionaries_match_the_float64_textbook(vocab, width, rank):
    dictionary = realistic_dictionary(vocab, width, seed=7)
    codes, maps = realistic_heads(2, 32, rank, dictionary, seed=7)
    result = somp_factored(codes, maps, dictionary, 6, vocab_block=16384)
    assert_matches_textbook(result, codes, maps, dictionary, 6)
