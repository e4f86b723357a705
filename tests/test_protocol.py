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
