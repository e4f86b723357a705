"""Where the attention heads live in a model: one declarative table, resolved at run time.

Each entry of :data:`ARCHITECTURES` names, relative to one decoder layer, the attention
output projection (the module whose *input* is the concatenation of the per-head outputs)
and, if the architecture has one, the norm applied to the attention output before it is
added to the residual stream (Gemma 2/3, OLMo 2). The list of decoder layers, the
language backbone inside a vision-language composite, and the unembedding are found at
run time, because their module paths move between transformers versions.

Beware names: Llama's ``post_attention_layernorm`` is the norm *before the MLP* and must
not be declared as ``post_norm``; Gemma 2/3 call the true post-attention norm by the same
name. This is why the table is keyed by ``model_type`` and not inferred from names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths inside one decoder layer (dotted, relative to the layer).

    Attributes:
        out_proj: the attention output projection (``nn.Linear`` or GPT-2 ``Conv1D``).
        post_norm: an RMS-style norm applied to the attention output before the residual
            add, or ``None``. Its per-token scale is frozen when computing contributions.
        final_norm: the final norm of the decoder, relative to the decoder module; only
            used when folding its gain into the dictionary (an option, off by default).
    """

    out_proj: str
    post_norm: str | None = None
    final_norm: str | None = None


_LLAMA_LIKE = ArchitectureSpec(out_proj="self_attn.o_proj", final_norm="norm")
_GEMMA_POST_NORM = ArchitectureSpec(
    out_proj="self_attn.o_proj", post_norm="post_attention_layernorm", final_norm="norm"
)

#: ``config.model_type`` (of the text config for composites) -> where the heads are.
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen2_moe",
            "qwen3",
            "qwen3_moe",
            "gemma",
            "smollm3",
            "olmo",
            "granite",
            "phi3",
            "starcoder2",
        )
    },
    "gemma2": _GEMMA_POST_NORM,
    "gemma3": _GEMMA_POST_NORM,
    "gemma3_text": _GEMMA_POST_NORM,
    "olmo2": _GEMMA_POST_NORM,
    "gpt2": ArchitectureSpec(out_proj="attn.c_proj", final_norm="ln_f"),
    "gpt_neox": ArchitectureSpec(out_proj="attention.dense", final_norm="final_layer_norm"),
    "gptj": ArchitectureSpec(out_proj="attn.out_proj", final_norm="ln_f"),
    "opt": ArchitectureSpec(out_proj="self_attn.out_proj", final_norm="final_layer_norm"),
    "phi": ArchitectureSpec(out_proj="self_attn.dense", final_norm="final_layernorm"),
    "falcon": ArchitectureSpec(out_proj="self_attention.dense", final_norm="ln_f"),
}


def register_architecture(model_type: str, spec: ArchitectureSpec) -> None:
    """Teach headpursuit a new architecture (or override one) by its ``config.model_type``."""
    ARCHITECTURES[model_type] = spec


def _get_submodule(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def text_config(model: nn.Module):
    """The config of the language part (the model's own config for a plain LM)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _decoder(model: nn.Module) -> nn.Module:
    get_decoder = getattr(model, "get_decoder", None)
    if get_decoder is None:
        return model
    try:
        return get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return model


@dataclass
class LayerSite:
    """The attention output of one decoder layer."""

    index: int
    out_proj: nn.Module
    out_proj_name: str
    post_norm: nn.Module | None

    @property
    def is_conv1d(self) -> bool:
        return isinstance(self.out_proj, Conv1D)

    @property
    def output_module(self) -> nn.Module:
        """The module whose output is what the layer adds to the residual stream."""
        return self.post_norm if self.post_norm is not None else self.out_proj


def _norm_epsilon(norm: nn.Module) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if value is not None:
            return float(value)
    raise UnsupportedArchitectureError(
        f"Cannot read the epsilon of post-attention norm {type(norm).__name__}; "
        "expected an attribute 'eps' or 'variance_epsilon'."
    )


def rms_norm_gain(norm: nn.Module, d_model: int) -> torch.Tensor:
    """The elementwise gain γ ``[d_model]`` of an RMS norm ``γ ⊙ x / sqrt(mean(x²) + eps)``.

    Read by probing the module on a constant vector, which covers both conventions
    (``w`` and Gemma's ``1 + w``), then checked on a random vector: a norm of another form
    raises instead of being silently mis-modelled.
    """
    eps = _norm_epsilon(norm)
    param = next(norm.parameters())
    ones = torch.ones(1, d_model, device=param.device, dtype=param.dtype)
    probe = torch.randn(3, d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gain = norm(ones).float().cpu()[0] * (1.0 + eps) ** 0.5
        actual = norm(probe.to(param.device, param.dtype)).float().cpu()
    expected = gain * probe / (probe.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    if not torch.allclose(actual, expected, rtol=1e-2, atol=1e-3):
        raise UnsupportedArchitectureError(
            f"The norm {type(norm).__name__} is not an RMS norm with an elementwise gain; "
            "headpursuit cannot split its input by head."
        )
    return gain


class AttentionSites:
    """The attention-output sites of a model, one per decoder layer.

    Attributes:
        n_layers, n_heads, head_dim, d_model: sizes of the language backbone.
        layers: one :class:`LayerSite` per decoder layer.
    """

    def __init__(self, model: nn.Module):
        config = text_config(model)
        model_type = getattr(config, "model_type", None)
        spec = ARCHITECTURES.get(model_type)
        if spec is None:
            raise UnsupportedArchitectureError(
                f"No head adapter for model_type {model_type!r} ({type(model).__name__}). "
                "Register one with headpursuit.register_architecture("
                f"{model_type!r}, ArchitectureSpec(out_proj='self_attn.o_proj', ...)), "
                "giving the attention output projection's path inside one decoder layer."
            )
        self.model = model
        self.spec = spec
        self.model_type: str = model_type
        self.n_layers: int = int(config.num_hidden_layers)
        self.n_heads: int = int(config.num_attention_heads)
        self.d_model: int = int(config.hidden_size)
        head_dim = getattr(config, "head_dim", None)
        self.head_dim: int = int(head_dim) if head_dim else self.d_model // self.n_heads
        self.decoder = _decoder(model)
        self.layers = self._find_layers()

    def _find_layers(self) -> list[LayerSite]:
        spec = self.spec
        for list_name, module_list in self.decoder.named_modules():
            if not isinstance(module_list, nn.ModuleList) or len(module_list) != self.n_layers:
                continue
            if any(_get_submodule(layer, spec.out_proj) is None for layer in module_list):
                continue
            prefix = f"{list_name}." if list_name else ""
            sites = []
            for index, layer in enumerate(module_list):
                out_proj = layer.get_submodule(spec.out_proj)
                post_norm = None
                if spec.post_norm is not None:
                    post_norm = _get_submodule(layer, spec.post_norm)
                    if post_norm is None:
                        raise UnsupportedArchitectureError(
                            f"Layer {index} ({prefix}{index}) has no module {spec.post_norm!r}, "
                            f"declared as post-attention norm for {self.model_type!r}. "
                            "Fix the entry with headpursuit.register_architecture()."
                        )
                sites.append(
                    LayerSite(index, out_proj, f"{prefix}{index}.{spec.out_proj}", post_norm)
                )
            self._check_width(sites[0])
            return sites
        raise UnsupportedArchitectureError(
            f"Could not find {self.n_layers} decoder layers each containing "
            f"{spec.out_proj!r} inside {type(self.decoder).__name__}. "
            f"The entry for model_type {self.model_type!r} may be out of date: register the "
            "right path with headpursuit.register_architecture()."
        )

    def _check_width(self, site: LayerSite) -> None:
        weight = site.out_proj.weight
        in_features = weight.shape[0] if site.is_conv1d else weight.shape[1]
        if in_features != self.n_heads * self.head_dim:
            raise UnsupportedArchitectureError(
                f"{site.out_proj_name} takes {in_features} inputs, but the config says "
                f"{self.n_heads} heads x head_dim {self.head_dim}. Set head_dim in the config."
            )

    # -- weights, in the conventions of the math (float32 copies) -------------------------

    def output_weight(self, layer: int) -> torch.Tensor:
        """W_O of a layer as ``[d_model, n_heads * head_dim]`` (``out = z @ W_O.T + b``)."""
        site = self.layers[layer]
        weight = site.out_proj.weight.detach().float()
        return weight.T if site.is_conv1d else weight

    def output_bias(self, layer: int) -> torch.Tensor | None:
        """Bias of the output projection ``[d_model]``; it belongs to no head."""
        bias = getattr(self.layers[layer].out_proj, "bias", None)
        return None if bias is None else bias.detach().float()

    def post_norm_gain(self, layer: int) -> torch.Tensor | None:
        """The elementwise gain γ ``[d_model]`` of the post-attention norm, or ``None``."""
        return self._post_norm_gains[layer]

    def post_norm_eps(self, layer: int) -> float:
        norm = self.layers[layer].post_norm
        return 0.0 if norm is None else _norm_epsilon(norm)

    @cached_property
    def _post_norm_gains(self) -> list[torch.Tensor | None]:
        return [
            None if site.post_norm is None else rms_norm_gain(site.post_norm, self.d_model)
            for site in self.layers
        ]

    def head_matrices(self, layer: int) -> torch.Tensor:
        """Per-head output maps ``[n_heads, d_model, head_dim]`` with any post-norm gain folded in.

        The contribution of head h to the residual stream is ``s_t * (M[h] @ z_h)`` where
        ``z_h`` is the head's slice of the projection input and ``s_t`` the post-norm's
        per-token scale (1 without a post-norm), which capture folds into the pooled z.
        """
        weight = self.output_weight(layer).cpu()
        gain = self.post_norm_gain(layer)
        if gain is not None:
            weight = gain[:, None] * weight
        return weight.reshape(self.d_model, self.n_heads, self.head_dim).permute(1, 0, 2)

    def unembedding(self) -> torch.Tensor:
        """The unembedding matrix ``[vocab, d_model]`` (float32, on the CPU)."""
        head = self.model.get_output_embeddings()
        if head is None:
            raise UnsupportedArchitectureError(
                f"{type(self.model).__name__} has no output embeddings; load it with a "
                "language-modelling head (AutoModelForCausalLM or a LLaVA model)."
            )
        return head.weight.detach().float().cpu()

    def dictionary(self, *, fold_final_norm: bool = False) -> torch.Tensor:
        """The SOMP dictionary ``[vocab, d_model]``: unembedding rows, optionally ⊙ final-norm γ.

        Folding γ in makes the atoms the directions that the final norm and unembedding
        actually read from the residual stream (up to the norm's per-token scale). Off by
        default, as in the paper, which uses the unembedding matrix as it is.
        """
        unembedding = self.unembedding()
        return unembedding * self.final_norm_gain() if fold_final_norm else unembedding

    def final_norm_gain(self) -> torch.Tensor:
        """Gain ``[d_model]`` of the decoder's final norm (for the fold-in option)."""
        name = self.spec.final_norm
        norm = None if name is None else _get_submodule(self.decoder, name)
        if norm is None or getattr(norm, "weight", None) is None:
            raise UnsupportedArchitectureError(
                f"No final norm with a weight at {name!r} in {type(self.decoder).__name__}; "
                "set final_norm in the ArchitectureSpec or do not fold the final norm."
            )
        if isinstance(norm, nn.LayerNorm):
            return norm.weight.detach().float().cpu()
        return rms_norm_gain(norm, self.d_model)

    def __repr__(self) -> str:
        post = f", post_norm={self.spec.post_norm!r}" if self.spec.post_norm else ""
        return (
            f"AttentionSites({self.model_type}: {self.n_layers} layers x {self.n_heads} heads, "
            f"head_dim={self.head_dim}, d_model={self.d_model}, out_proj={self.spec.out_proj!r}"
            f"{post})"
        )


def image_token_id(model: nn.Module) -> int | None:
    """The id of the image placeholder token of a vision-language model, else ``None``."""
    config = model.config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None
