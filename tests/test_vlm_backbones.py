"""Vision-language models by their backbone: image token ids, image pooling, exact capture.

Four families whose image tokens are marked differently: LLaVA (``image_token_id`` in the
config), Qwen2-VL (``<|image_pad|>``, expanded per merged patch), Gemma-3 (soft tokens;
its processor's ``image_token_id`` is the begin-of-image token instead) and Idefics3
(``<image>`` between ``<fake_token_around_image>`` markers).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conformance import _owner_layer, _silenced_parameters, one_thread  # noqa: F401
from conftest import IMAGE_TOKEN, random_images, random_prompts, tiny_llava
from headpursuit import AttentionSites, capture
from headpursuit.activations.capture import pooling_positions
from headpursuit.models.architectures import image_token_id, language_backbone, text_config
from tiny_vlms import tiny_gemma3, tiny_idefics3, tiny_qwen2_vl

pytestmark = pytest.mark.usefixtures("one_thread")  # see conformance.one_thread


def _llava():
    return tiny_llava(), IMAGE_TOKEN, (28 // 7) ** 2  # one token per patch, CLS dropped


BUILDERS = {
    "llava": _llava,
    "qwen2_vl": tiny_qwen2_vl,
    "gemma3": tiny_gemma3,
    "idefics3": tiny_idefics3,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request):
    torch.manual_seed(0)
    loaded, marker, per_image = BUILDERS[request.param]()
    return request.param, loaded, marker, per_image


def _prompts(marker: str, n: int) -> list[str]:
    return [f"{marker} {text}" for text in random_prompts(n, seed=5)]


def test_backbone_is_the_language_model(vlm):
    name, loaded, _, _ = vlm
    sites = AttentionSites(loaded.model)
    assert sites.decoder is language_backbone(loaded.model)
    assert sites.d_model == text_config(loaded.model).hidden_size == 48
    in_decoder = {id(module) for module in sites.decoder.modules()}
    tower = [m for m in loaded.model.modules() if id(m) not in in_decoder and m._parameters]
    assert tower, f"{name} should have parameters outside its language model (a vision tower)"
    for site in sites.layers:  # every head site is in the language model, none in the tower
        assert any(module is site.out_proj for module in sites.decoder.modules())


def test_image_token_id_is_the_models_own(vlm):
    name, loaded, _, _ = vlm
    expected = {
        "llava": loaded.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        "qwen2_vl": loaded.tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "gemma3": loaded.tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        "idefics3": loaded.tokenizer.convert_tokens_to_ids("<image>"),
    }[name]
    assert image_token_id(loaded) == expected
    assert image_token_id(loaded.model) == expected  # a bare model answers the same
    if name == "gemma3":  # the processor names the begin-of-image token: the config wins
        assert loaded.processor.image_token_id != expected


def test_image_token_id_falls_back_to_the_processor():
    config = SimpleNamespace(image_token_id=None)
    model = SimpleNamespace(config=config)
    tokenizer = SimpleNamespace(convert_tokens_to_ids=lambda token: 7, unk_token_id=0)
    processor = SimpleNamespace(image_token="<img>", tokenizer=tokenizer)
    loaded = SimpleNamespace(model=model, tokenizer=tokenizer, processor=processor)
    assert image_token_id(loaded) == 7
    assert image_token_id(SimpleNamespace(model=model, tokenizer=tokenizer, processor=None)) is None


def test_image_pooling_selects_exactly_the_image_tokens(vlm):
    _, loaded, marker, per_image = vlm
    prompts = _prompts(marker, 3)
    inputs = loaded.processor(
        images=[[image] for image in random_images(3)],
        text=prompts,
        padding=True,
        return_tensors="pt",
    )
    token = image_token_id(loaded)
    is_image = inputs["input_ids"] == token
    assert is_image.sum(1).tolist() == [per_image] * 3  # the hand count of each family
    chosen = pooling_positions(dict(inputs), "image", token)
    assert torch.equal(chosen, is_image & inputs["attention_mask"].bool())


def _layer_updates_at_images(loaded, sites, prompt, image, layer) -> torch.Tensor:
    """Oracle: what decoder layer ``layer`` adds to the residual stream, with its other
    sub-blocks silenced (zero weights), averaged over the image positions ``[d_model]``."""
    site = sites.layers[layer]
    owner, inner_path = _owner_layer(sites.decoder, site.out_proj_name)
    seen = {}
    handles = [
        owner.register_forward_pre_hook(
            lambda m, a, k: seen.__setitem__("x", a[0] if a else k["hidden_states"]),
            with_kwargs=True,
        ),
        owner.register_forward_hook(
            lambda m, a, out: seen.__setitem__("out", out[0] if isinstance(out, tuple) else out)
        ),
    ]
    silenced = _silenced_parameters(owner, inner_path)
    saved = [param.detach().clone() for param in silenced]
    inputs = loaded.processor(images=[[image]], text=[prompt], return_tensors="pt")
    try:
        with torch.no_grad():
            for param in silenced:
                param.zero_()
            loaded.model(**inputs)
    finally:
        with torch.no_grad():
            for param, value in zip(silenced, saved, strict=True):
                param.copy_(value)
        for handle in handles:
            handle.remove()
    update = (seen["out"] - seen["x"])[0].double()
    return update[inputs["input_ids"][0] == image_token_id(loaded)].mean(0)


def test_capture_at_image_positions_is_exact(vlm):
    name, loaded, marker, _ = vlm
    prompts, images = _prompts(marker, 3), random_images(3)
    acts = capture(loaded, prompts, images=images, pooling="image", batch_size=2, progress=False)
    sites = AttentionSites(loaded.model)
    assert acts.pooled.shape == (3, sites.n_layers, sites.n_heads, sites.head_dim)
    for layer in range(sites.n_layers):
        total = sum(acts.residual(sites, layer, h) for h in range(sites.n_heads)).double()
        bias = sites.output_bias(layer)
        if bias is not None:  # no post-norm in the families with a projection bias here
            total = total + sites.residual_scale(layer) * bias.double()
        for row in range(3):
            expected = _layer_updates_at_images(loaded, sites, prompts[row], images[row], layer)
            error = (total[row] - expected).norm() / expected.norm()
            assert error < 1e-4, f"{name} layer {layer} prompt {row}: relative error {error:.1e}"
