"""Fast SOMP against the textbook oracle, and its identities."""

from __future__ import annotations

import pytest
import torch

from headpursuit import logit_lens, somp, somp_factored
from oracle import textbook_somp


def _low_rank_heads(n_heads=5, n=30, d=40, r=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(n_heads, n, r, generator=generator)
    codes = codes * torch.rand(n_heads, 1, r, generator=generator) * 3
    maps = torch.randn(n_heads, d, r, generator=generator)
    return codes, maps


@pytest.mark.parametrize("center", [True, False])
def test_factored_somp_matches_textbook(center):
    codes, maps = _low_rank_heads()
    dictionary = torch.randn(3000, 40, generator=torch.Generator().manual_seed(1))
    fast = somp_factored(codes, maps, dictionary, 7, center=center, heads_per_chunk=2)
    for b in range(codes.shape[0]):
        support, evr, coefficients = textbook_somp(
            codes[b].double() @ maps[b].double().T, dictionary, 7, center=center
        )
        assert fast.support[b].tolist() == support
        assert torch.allclose(fast.evr[b], torch.tensor(evr, dtype=torch.float64), atol=1e-9)
        torch.testing.assert_close(fast.coefficients[b], coefficients, rtol=1e-8, atol=1e-8)
    assert fast.n_exact_scores < codes.shape[0] * 7 * 3000  # the bounds prune


def test_plain_somp_matches_textbook():
    generator = torch.Generator().manual_seed(2)
    signals = torch.randn(25, 32, generator=generator)
    dictionary = torch.randn(500, 32, generator=generator)
    fast = somp(signals, dictionary, 6)
    support, evr, _ = textbook_somp(signals, dictionary, 6)
    assert fast.support[0].tolist() == support
    assert torch.allclose(fast.evr[0], torch.tensor(evr, dtype=torch.float64), atol=1e-9)


def test_recovers_planted_sparse_support():
    generator = torch.Generator().manual_seed(3)
    dictionary = torch.randn(2000, 64, generator=generator)
    planted = [17, 523, 1999, 4]
    weights = torch.randn(50, len(planted), generator=generator) * 2 + 1
    signals = weights @ dictionary[planted]
    result = somp(signals, dictionary, len(planted), center=False)
    assert sorted(result.support[0].tolist()) == sorted(planted)
    assert result.evr[0, -1] > 1 - 1e-9
    assert torch.all(result.evr[0, 1:] >= result.evr[0, :-1])


def test_one_step_on_one_sample_is_the_logit_lens():
    generator = torch.Generator().manual_seed(4)
    dictionary = torch.randn(1000, 24, generator=generator)
    agreements = 0
    for _ in range(20):
        sample = torch.randn(1, 24, generator=generator)
        step = somp(sample, dictionary, 1, center=False)
        top, _ = logit_lens(sample, dictionary, per_sample=1, normalize=True)
        logits = sample @ torch.nn.functional.normalize(dictionary, dim=1).T
        # SOMP's criterion is |correlation|: the logit lens on |logits| always agrees ...
        assert int(step.support[0, 0]) == int(logits.abs().argmax())
        # ... and the signed logit lens agrees whenever the top logit outweighs the bottom one.
        if logits.max() > -logits.min():
            assert int(step.support[0, 0]) == int(top[0, 0])
            agreements += 1
    assert agreements > 0


def test_logit_lens_counts_most_frequent_tokens():
    dictionary = torch.eye(6)
    signals = torch.tensor([[5.0, 4, 0, 0, 0, 0], [5, 0, 4, 0, 0, 0], [0, 5, 0, 0, 4, 0]])
    top, frequent = logit_lens(signals, dictionary, per_sample=2, n_tokens=2)
    assert top.tolist() == [[0, 1], [0, 2], [1, 4]]
    assert frequent == [(0, 2), (1, 2)]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_atoms"):
        somp(torch.randn(3, 4), torch.randn(5, 4), 6)
    with pytest.raises(ValueError, match="width"):
        somp(torch.randn(3, 4), torch.randn(5, 3), 2)
