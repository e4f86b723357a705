"""Loading: the default model, GGUF files, the plain-checkpoint cache, fingerprints, errors."""

from __future__ import annotations

import time

import pytest
import torch

from conftest import tiny_model
from headpursuit import ModelLoadError, load_model, weights_fingerprint
from headpursuit.io import TEMP_PREFIX
from headpursuit.models.zoo import gguf_cache_path, packaged_gguf


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="Cannot load model"):
        load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))


def test_fingerprint_tracks_weights_not_dtype():
    model = tiny_model("llama_gqa").model
    before = weights_fingerprint(model)
    assert weights_fingerprint(model.to(torch.bfloat16)) == before
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.mul_(2)
    assert weights_fingerprint(model) != before


@pytest.mark.slow
def test_default_model_is_cached_as_plain_checkpoint(smollm):
    cache = gguf_cache_path(packaged_gguf("smollm2-135m"))
    assert (cache / "config.json").exists()
    assert not list(cache.parent.glob(f"{TEMP_PREFIX}*"))
    start = time.perf_counter()
    again = load_model(str(packaged_gguf("smollm2-135m")))
    elapsed = time.perf_counter() - start
    assert again.fingerprint == smollm.fingerprint
    assert "quantization_config" not in again.model.config.to_dict()
    print(f"cached load: {elapsed:.2f}s")
