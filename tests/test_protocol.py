"""The library's defaults are the protocol chosen on the dev split (results/protocol.json,
written by scripts/choose_protocol.py): a change of either side must be made on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headpursuit.protocol import DEFAULT_ALPHA, DEFAULT_CRITERION

PROTOCOL = Path(__file__).resolve().parents[1] / "results" / "protocol.json"


@pytest.mark.skipif(not PROTOCOL.exists(), reason="no protocol has been chosen in this checkout")
def test_defaults_are_the_dev_chosen_protocol():
    from typer.testing import CliRunner

    from headpursuit.cli import app

    chosen = json.loads(PROTOCOL.read_text())
    assert chosen["chosen_on"] == "dev"
    assert chosen["criterion"] == DEFAULT_CRITERION
    best = max(chosen["mean_margin"], key=chosen["mean_margin"].get)
    assert best == f"{chosen['criterion']} {chosen['alpha']:g}"  # the file agrees with itself
    assert chosen["alpha"] == DEFAULT_ALPHA
    for command in ("qa", "wordfreq"):
        help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert f"[default: {chosen['alpha']:g}]" in " ".join(help_text.split())


def _choose_script():
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(folder))  # the script imports its sibling qa_common lazily
    spec = importlib.util.spec_from_file_location("choose_protocol", folder / "choose_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _margins(model: str, values: dict[tuple[str, float], float]) -> dict:
    rows = [
        {"model": model, "concept": "countries", "criterion": c, "alpha": a, "margin": m}
        for (c, a), m in values.items()
    ]
    return {"model": model, "rows": rows, "seconds": 1.0, "machine": "test"}


def test_protocol_choice_pools_every_models_margins():
    script = _choose_script()
    low = {(c, a): -1.0 for c in ("evr", "logit_lens") for a in (-1.0, 0.0)}
    # On model a alone α = 0 wins; pooled with model b, α = -1 does: (0.1 + 0.2) / 2 > (0.5 - 0.3) / 2.
    a = _margins("a", {("specificity", -1.0): 0.1, ("specificity", 0.0): 0.5, **low})
    b = _margins("b", {("specificity", -1.0): 0.2, ("specificity", 0.0): -0.3, **low})
    assert script.choose([a])["alpha"] == 0.0
    pooled = script.choose([a, b])
    assert (pooled["criterion"], pooled["alpha"]) == ("specificity", -1.0)
    assert pooled["mean_margin"]["specificity -1"] == pytest.approx(0.15)
    assert pooled["models"] == ["a", "b"] and len(pooled["rows"]) == 12
    page = script.render(pooled)
    assert "--model a --model b" in page and "criterion `specificity`, α = -1" in page
    assert "| specificity | -1 | +0.100 | +0.200 |" in page  # each model's own mean


def test_protocol_margins_are_read_back_not_recomputed(tmp_path, monkeypatch):
    script = _choose_script()
    monkeypatch.setattr(script, "ROWS", tmp_path)
    made = _margins("m", {("specificity", 0.0): 0.3})
    calls = []
    monkeypatch.setattr(script, "model_rows", lambda name: calls.append(name) or made)
    assert script.cached_rows("m", rerun=False) == made
    assert script.cached_rows("m", rerun=False) == made  # read from results/protocol_dev
    assert calls == ["m"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no partial file left
    script.cached_rows("m", rerun=True)
    assert calls == ["m", "m"]
