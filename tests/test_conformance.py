"""Every decoder model type of the installed transformers: exact heads or a clear refusal.

One test per ``model_type`` of the causal-LM and image-text-to-text mappings (see
``conformance.py`` for the tiny random models and the oracle). A type must be exact, or
refused with the reason listed in :data:`REFUSED` for it; a type this test cannot build is
skipped with the builder's error. Nothing may come out "WRONG" (accepted by the library
but off against the oracle) or crash. The last test prints the whole table; the same
table is in docs/architectures.md (``python scripts/architecture_table.py``).
"""

from __future__ import annotations

import pytest

from conformance import MODEL_TYPES, Row, format_table, one_thread, run  # noqa: F401

#: Types refused by design, with a phrase of the reason. A type refused for a reason not
#: listed here fails (a regression, or a new type to look at); a listed type that becomes
#: exact passes. Regenerate with ``python scripts/architecture_table.py --refused``.
REFUSED: dict[str, str] = {
    "bart": "residual update is not c * G(output of the projection)",
    "bert": "residual update is not c * G(output of the projection)",
    "bert-generation": "residual update is not c * G(output of the projection)",
    "big_bird": "residual update is not c * G(output of the projection)",
    "blenderbot-small": "residual update is not c * G(output of the projection)",
    "blip": "residual update is not c * G(output of the projection)",
    "blt": "config has no hidden_size",
    "camembert": "residual update is not c * G(output of the projection)",
    "data2vec-text": "residual update is not c * G(output of the projection)",
    "deepseek_v4": "attention output does not line up with the residual stream",
    "diffusion_gemma": "probe forward pass failed",
    "electra": "residual update is not c * G(output of the projection)",
    "ernie": "residual update is not c * G(output of the projection)",
    "ernie4_5_vl_moe": "probe forward pass failed",
    "falcon_mamba": "no list of 2 decoder layers with attention modules",
    "florence2": "residual update is not c * G(output of the projection)",
    "git": "residual update is not c * G(output of the projection)",
    "gpt_neox_japanese": "residual update is not c * G(output of the projection)",
    "hrm_text": "attention module runs more than once per forward pass",
    "hy_v4": "attention output does not line up with the residual stream",
    "idefics": "probe forward pass failed",
    "inkling2_text": "residual update is not c * G(output of the projection)",
    "inkling_mm_model": "attention output passes through InklingShortConvolution before the residual add",
    "inkling_text": "attention output passes through InklingShortConvolution before the residual add",
    "jetmoe": "residual update is not c * G(output of the projection)",
    "longcat_flash": "several attention blocks in one layer",
    "mamba": "no list of 2 decoder layers with attention modules",
    "marian": "residual update is not c * G(output of the projection)",
    "minimax": "residual update is not c * G(output of the projection)",
    "mistral4": "probe forward pass failed",
    "mvp": "residual update is not c * G(output of the projection)",
    "openai-gpt": "residual update is not c * G(output of the projection)",
    "pi0": "config has no hidden_size",
    "pix2struct": "probe forward pass failed",
    "plbart": "residual update is not c * G(output of the projection)",
    "prophetnet": "attention module runs more than once per forward pass",
    "rembert": "residual update is not c * G(output of the projection)",
    "roberta": "residual update is not c * G(output of the projection)",
    "roc_bert": "residual update is not c * G(output of the projection)",
    "roformer": "residual update is not c * G(output of the projection)",
    "rwkv": "residual update is not c * G(output of the projection)",
    "t5gemma2": "probe forward pass failed",
    "trocr": "residual update is not c * G(output of the projection)",
    "unlimited_ocr": "probe forward pass failed",
    "vision-encoder-decoder": "residual update is not c * G(output of the projection)",
    "xlm": "no list of 2 decoder layers with attention modules",
    "xlm-roberta": "residual update is not c * G(output of the projection)",
    "xlnet": "no attention output projection found",
    "xlstm": "no list of 2 decoder layers with attention modules",
    "xmod": "probe forward pass failed",
    "zamba2": "probe forward pass failed",
}

ROWS: dict[str, Row] = {}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conformance.one_thread


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_exact_or_refused_with_reason(model_type):
    row = run(model_type)
    ROWS[model_type] = row
    if row.status == "unbuildable":
        pytest.skip(f"no tiny config of {model_type}: {row.detail}")
    assert row.status in ("exact", "refused"), f"{model_type} is {row.status}: {row.detail}"
    if row.status == "refused":
        expected = REFUSED.get(model_type)
        assert expected is not None, f"{model_type} is newly refused: {row.detail}"
        assert expected in row.detail, f"{model_type} refused for another reason: {row.detail}"


def test_table():
    """Prints the table (``pytest -s``) and holds the suite to its goal."""
    if len(ROWS) < len(MODEL_TYPES):
        pytest.skip("run the whole module to get the table")
    rows = [ROWS[t] for t in MODEL_TYPES]
    print("\n" + format_table(rows))
    exact = sum(row.status == "exact" for row in rows)
    assert exact >= 80
    assert not [row for row in rows if row.status not in ("exact", "refused", "unbuildable")]
