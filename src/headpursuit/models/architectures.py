"""Where the attention heads live in a model, found by structure and proven on a probe.

:class:`AttentionSites` finds, for every decoder layer of the language backbone, the
attention output projection (the module whose *input* is the concatenation of the
per-head outputs ``z``), and then checks on one probe forward pass that what the layer adds
to its residual stream is exactly ``c * G(z @ W_Oᵀ + b)``: ``G`` the identity or an RMS
post-attention norm (Gemma 2/3, OLMo 2, GLM-4), ``c`` a scalar the model applies
(Granite's ``residual_multiplier``, Mllama's gates). Only then are per-head contributions
``c * γ ⊙ (W_O,h z_h) * s_t`` exact; a model that does not pass is refused with the reason
(see :mod:`headpursuit.discovery` for the probe).

:data:`ARCHITECTURES` is an optional declarative table keyed by ``config.model_type``:
an entry pins the projection's path (and a post-norm or head size) where discovery would
guess wrong or cannot see; it is verified like everything else. The list of decoder
layers, the language backbone inside a vision-language composite, and the unembedding
are found at run time, because their module paths move between transformers versions.

Beware names: Llama's ``post_attention_layernorm`` is the norm *before the MLP*; Gemma 2/3
call the true post-attention norm by the same name. This is why no name is trusted: the
probe decides which norm (if any) sits between the projection and the residual stream.

Layer indexing: ``Head(layer, head)`` and everything in this package index the
*attention layers* of the model in order (``sites.layers[i]``). For a model whose decoder
layers all have attention (nearly all), that is the decoder-layer index. For hybrids
(Jamba, Bamba, Qwen3-Next...) the decoder-layer index of attention layer ``i`` is
``sites.layers[i].decoder_layer`` (all of them: :attr:`AttentionSites.attention_layers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import DegenerateDataError, UnsupportedArchitectureError
from .discovery import (
    ProbeError,
    attention_blocks,
    find_layer_lists,
    fit_update,
    is_norm,
    is_projection,
    norm_epsilon,
    projection_shape,
    projection_weight,
    run_probe,
    sub_blocks_to_silence,
    token_error,
    tolerance,
)


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths inside one decoder layer (dotted, relative to the layer).

    Every field is optional help for discovery; all of it is verified on the probe.

    Attributes:
        out_proj: the attention output projection (``nn.Linear`` or GPT-2 ``Conv1D``).
            Layers without a module at this path are treated as non-attention layers.
        post_norm: a norm applied to the attention output before the residual add, or
            ``None`` to let the probe find one (or none).
        final_norm: the final norm of the decoder, relative to the decoder module; only
            used when folding its gain into the dictionary (an option, off by default).
        head_dim: the per-head width of the projection's input (the *value* head size,
            e.g. ``v_head_dim`` for multi-head latent attention), if the config and the
            attention module do not tell it.
    """

    out_proj: str
    post_norm: str | None = None
    final_norm: str | None = None
    head_dim: int | None = None


_LLAMA_LIKE = ArchitectureSpec(out_proj="self_attn.o_proj", final_norm="norm")
_GEMMA_POST_NORM = ArchitectureSpec(
    out_proj="self_attn.o_proj", post_norm="post_attention_layernorm", final_norm="norm"
)

#: ``config.model_type`` (of the text config for composites) -> where the heads are.
#: Optional: a type missing here is discovered by structure (see the module docstring).
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
    """Teach headpursuit where the heads are for a ``config.model_type`` (or override it).

    The entry is still verified on the probe when :class:`AttentionSites` is built.
    """
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


def language_backbone(model: nn.Module) -> nn.Module:
    """The decoder of the language part: ``model.get_decoder()`` where it has one."""
    get_decoder = getattr(model, "get_decoder", None)
    if get_decoder is None:
        return model
    try:
        decoder = get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return model
    if not isinstance(decoder, nn.Module):
        return model
    if not any(isinstance(m, nn.ModuleList) for m in decoder.modules()):
        # ModernBERT-decoder's get_decoder() is its LM head (named "decoder"): not layers
        return getattr(model, "base_model", model)
    return decoder


_decoder = language_backbone  # the old private name


def _register_hint(model_type: str | None, out_proj: str = "self_attn.o_proj") -> str:
    return (
        f"headpursuit.register_architecture({model_type!r}, "
        f"ArchitectureSpec(out_proj={out_proj!r}, post_norm=None, head_dim=None))"
    )


def image_token_id(model_or_loaded: Any) -> int | None:
    """The token id that marks image positions in a vision-language model's input, or ``None``.

    Accepts a model or a :class:`~headpursuit.models.loading.LoadedModel`. Read from the config
    (``image_token_id`` / ``image_token_index``, on the composite or its text config),
    then from the processor (``image_token_id``, or ``image_token`` through the tokenizer).
    """
    is_loaded = not isinstance(model_or_loaded, nn.Module) and hasattr(model_or_loaded, "model")
    model = model_or_loaded.model if is_loaded else model_or_loaded
    processor = getattr(model_or_loaded, "processor", None) if is_loaded else None
    configs = [getattr(model, "config", None)]
    if configs[0] is not None and hasattr(configs[0], "get_text_config"):
        configs.append(configs[0].get_text_config())
    for config in configs:
        for name in ("image_token_id", "image_token_index"):
            value = getattr(config, name, None)
            if isinstance(value, int):
                return int(value)
    if processor is not None:
        value = getattr(processor, "image_token_id", None)
        if isinstance(value, int):
            return int(value)
        token = getattr(processor, "image_token", None)
        tokenizer = getattr(processor, "tokenizer", None) or getattr(
            model_or_loaded, "tokenizer", None
        )
        if isinstance(token, str) and tokenizer is not None:
            value = tokenizer.convert_tokens_to_ids(token)
            if isinstance(value, int) and value != getattr(tokenizer, "unk_token_id", None):
                return int(value)
    return None


@dataclass
class LayerSite:
    """The attention output of one attention layer, as verified on the probe.

    Attributes:
        index: position among the model's attention layers (the ``layer`` of a head).
        out_proj: the output projection; its input is ``z`` ``[..., n_heads * head_dim]``.
        out_proj_name: its path from the language backbone.
        post_norm: the RMS norm between projection and residual stream, or ``None``.
        decoder_layer: index of the decoder layer that holds it.
        n_heads, head_dim: this layer's heads and per-head width of ``z``.
        scale: the factor ``c`` (a float, or a ``[d_model]`` tensor for per-channel layer
            scales) the layer's output receives the attention output times.
        post_norm_name: the post-norm's path inside the decoder layer, or ``None``.
        gain: the post-norm's elementwise gain γ ``[d_model]`` (float32), or ``None``.
        eps: the post-norm's epsilon (0 without one).
        probe_error: worst token's relative error of the verification.
        stream_scale: the factor ``a`` the layer carries its residual input with (1 in
            nearly every model; a scalar or a ``[d_model]`` tensor in a few, e.g. Doge).
            Head contributions do not depend on it.
    """

    index: int
    out_proj: nn.Module
    out_proj_name: str
    post_norm: nn.Module | None
    decoder_layer: int = -1
    n_heads: int = 0
    head_dim: int = 0
    scale: float | torch.Tensor = 1.0
    post_norm_name: str | None = None
    gain: torch.Tensor | None = None
    eps: float = 0.0
    probe_error: float = 0.0
    stream_scale: float | torch.Tensor = 1.0

    @property
    def is_conv1d(self) -> bool:
        return isinstance(self.out_proj, Conv1D)

    @property
    def output_module(self) -> nn.Module:
        """The module whose output (times :attr:`scale`) the layer adds to the residual stream."""
        return self.post_norm if self.post_norm is not None else self.out_proj


def _norm_epsilon(norm: nn.Module) -> float:
    value = norm_epsilon(norm)
    if value is None:
        raise UnsupportedArchitectureError(
            f"Cannot read the epsilon of norm {type(norm).__name__}; "
            "expected an attribute 'eps' or 'variance_epsilon'."
        )
    return value


def rms_norm_gain(norm: nn.Module, d_model: int) -> torch.Tensor:
    """The elementwise gain γ ``[d_model]`` of an RMS norm ``γ ⊙ x / sqrt(mean(x²) + eps)``.

    Read by probing the module on a constant vector, which covers both conventions
    (``w`` and Gemma's ``1 + w``), then checked on a random vector: a norm of another form
    raises instead of being silently mis-modelled. The probe is float32 where the module
    takes it (RMS norms compute in float32 and keep their input's dtype), so a bfloat16
    model's norm is read to float32 precision; else in the module's dtype.
    """
    eps = _norm_epsilon(norm)
    param = next(norm.parameters())
    probe = torch.randn(3, d_model, generator=torch.Generator().manual_seed(0))
    for dtype in dict.fromkeys((torch.float32, param.dtype)):
        ones = torch.ones(1, d_model, device=param.device, dtype=dtype)
        try:
            with torch.no_grad():
                gain = norm(ones).float().cpu()[0] * (1.0 + eps) ** 0.5
                actual = norm(probe.to(param.device, dtype)).float().cpu()
        except RuntimeError:  # a norm that insists on its own dtype
            continue
        resolution = max(torch.finfo(dtype).eps, torch.finfo(param.dtype).eps)
        expected = gain * probe / (probe.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        if torch.allclose(actual, expected, rtol=max(1e-2, 8 * resolution), atol=1e-3):
            return gain
        break
    raise UnsupportedArchitectureError(
        f"The norm {type(norm).__name__} is not an RMS norm with an elementwise gain; "
        "headpursuit cannot split its input by head.",
        reason=f"post-attention norm {type(norm).__name__} is not an RMS norm",
    )


def _degenerate(fit: Any) -> bool:
    """A fit that multiplies the attention output or the residual input by (nearly) 0."""
    attention = float(torch.as_tensor(fit.scale).abs().max())
    stream = float(torch.as_tensor(fit.stream_scale).abs().max())
    return attention < 1e-6 or stream < 1e-3


def _snap(value: float | torch.Tensor, tol: float) -> float | torch.Tensor:
    """A fitted factor as the model has it: exactly 1.0 when it is 1 within the probe's
    resolution (nearly every model), a float when it is one number, else float32 per channel."""
    if isinstance(value, torch.Tensor):
        if torch.allclose(value, torch.ones_like(value), rtol=0, atol=tol / 4):
            return 1.0
        if torch.allclose(value, value.mean().expand_as(value), rtol=0, atol=tol / 4):
            value = float(value.mean())
        else:
            return value.float()
    return 1.0 if abs(value - 1.0) <= tol / 4 else float(value)


def _adds_residual(
    block_output: torch.Tensor | None, hidden: torch.Tensor, y: torch.Tensor, tol: float
) -> bool:
    """Whether an attention block returned ``hidden + y``: the residual add done inside it
    (BLOOM), so that what later modules receive is already the residual stream."""
    if block_output is None or block_output.shape != hidden.shape:
        return False
    return token_error(block_output - hidden, y, hidden, torch.float32) <= max(tol, 1e-5)


def _head_shape(
    block: nn.Module, config: Any, in_features: int, spec: ArchitectureSpec | None
) -> tuple[int, int] | None:
    """``(n_heads, head_dim)`` with ``n_heads * head_dim == in_features``, or ``None``.

    Head counts come from the attention module (``num_heads``...) or the config; the per-head
    width from the spec, the module or the config, value head size first (MLA's
    ``v_head_dim``). If no declared width fits, the width is ``in_features / n_heads``.
    """

    def attributes(names: Sequence[str]) -> list[int]:
        found = []
        for module in block.modules():
            for name in names:
                value = getattr(module, name, None)
                if isinstance(value, int) and value > 0:
                    found.append(value)
        return found

    def declared(name: str) -> list[int]:
        try:  # some configs raise for attributes that vary by layer (Gemma 4's head_dim)
            value = getattr(config, name, None)
        except Exception:
            return []
        return [int(value)] if isinstance(value, int) and value > 0 else []

    counts = attributes(("num_heads", "num_attention_heads", "n_heads", "n_head"))
    counts += declared("num_attention_heads")
    widths = attributes(("v_head_dim",)) + declared("v_head_dim")
    widths += attributes(("head_dim", "head_size", "attention_head_size", "dim_head"))
    widths += declared("head_dim")
    if spec is not None and spec.head_dim is not None:
        if in_features % spec.head_dim:
            return None
        return in_features // spec.head_dim, spec.head_dim
    for count in counts:
        for width in widths:
            if count * width == in_features:
                return count, width
    for count in counts:
        if in_features % count == 0:
            return count, in_features // count
    return None


class AttentionSites:
    """The attention-output sites of a model, one per attention layer, verified on a probe.

    Attributes:
        n_layers: number of attention layers (``len(layers)``).
        n_heads, head_dim: the largest head count and per-head width over those layers
            (all layers share them in nearly every model; see :meth:`head_matrices`).
        d_model: residual width of the language backbone.
        layers: one :class:`LayerSite` per attention layer.
        attention_layers: decoder-layer index of each attention layer.
        n_decoder_layers: number of decoder layers (attention or not).
        spec: the module paths in use (from the table, or as discovered).
        discovered: ``True`` when the paths come from discovery, not the table.
    """

    def __init__(self, model: nn.Module):
        config = text_config(model)
        model_type = getattr(config, "model_type", None)
        self.model = model
        self.model_type: str = model_type
        self.config = config
        table_spec = ARCHITECTURES.get(model_type)
        self.discovered = table_spec is None
        hidden = getattr(config, "hidden_size", None)
        if not isinstance(hidden, int):
            raise self._refuse(
                f"config has no integer hidden_size ({hidden!r})", "config has no hidden_size"
            )
        self.d_model: int = int(hidden)
        self.decoder = language_backbone(model)
        layer_list_name, layer_list = self._find_layer_list()
        self.layer_list_name: str = layer_list_name  # relative to ``self.decoder``
        self.n_decoder_layers: int = len(layer_list)
        self.layers: list[LayerSite] = self._verify(layer_list_name, list(layer_list), table_spec)
        self.n_layers: int = len(self.layers)
        self.n_heads: int = max(site.n_heads for site in self.layers)
        self.head_dim: int = max(site.head_dim for site in self.layers)
        self.attention_layers: list[int] = [site.decoder_layer for site in self.layers]
        first = self.layers[0]
        relative = first.out_proj_name[len(f"{layer_list_name}.{first.decoder_layer}.") :]
        self.spec = ArchitectureSpec(
            out_proj=relative,
            post_norm=first.post_norm_name,
            final_norm=(table_spec.final_norm if table_spec else None) or self._final_norm_name,
            head_dim=table_spec.head_dim if table_spec else None,
        )

    # -- discovery and verification ------------------------------------------------------

    def _refuse(self, detail: str, reason: str, out_proj: str = "self_attn.o_proj"):
        return UnsupportedArchitectureError(
            f"headpursuit cannot give exact per-head contributions for model_type "
            f"{self.model_type!r} ({type(self.model).__name__}): {detail}. If another module "
            f"is the attention output projection, register it with "
            f"{_register_hint(self.model_type, out_proj)}; it is verified the same way.",
            reason=reason,
        )

    def _refuse_non_finite(self, layer_probes: list[Any], layers: Sequence[nn.Module]) -> None:
        """A layer whose probe output is NaN/inf because of NaN/inf weights: say so, rather
        than fail inside the least-squares fits that follow."""
        for index, (probe, layer) in enumerate(zip(layer_probes, layers, strict=True)):
            if all(torch.isfinite(t).all() for t in probe.outputs):
                continue
            broken = [n for n, p in layer.named_parameters() if not torch.isfinite(p).all()]
            if broken:
                raise DegenerateDataError(
                    f"Layer {index} of {type(self.model).__name__} holds NaN or inf weights "
                    f"({broken[0]}) and returns NaN or inf: the checkpoint is damaged. Load "
                    "it again (or another copy); with --dtype float32 if it was saved in "
                    "float16."
                )

    def _find_layer_list(self) -> tuple[str, nn.ModuleList]:
        n_layers = getattr(self.config, "num_hidden_layers", None)
        if not isinstance(n_layers, int):
            raise self._refuse(
                f"its config has no integer num_hidden_layers ({n_layers!r})",
                "config has no num_hidden_layers",
            )
        lists = find_layer_lists(self.decoder, n_layers)
        if not lists:
            raise self._refuse(
                f"no list of {n_layers} decoder layers holding an attention module (a class "
                f"named ...Attention/...Attn) inside {type(self.decoder).__name__}",
                f"no list of {n_layers} decoder layers with attention modules",
            )
        return lists[0]

    def _verify(
        self, list_name: str, layers: list[nn.Module], spec: ArchitectureSpec | None
    ) -> list[LayerSite]:
        d_model = self.d_model
        candidates: dict[int, list[tuple[str, nn.Module]]] = {}
        blocks: dict[int, list[tuple[str, nn.Module]]] = {}
        silenced: dict[int, list[str]] = {}
        for index, layer in enumerate(layers):
            blocks[index] = attention_blocks(layer)
            if spec is not None:
                module = _get_submodule(layer, spec.out_proj)
                candidates[index] = [] if module is None else [(spec.out_proj, module)]
            else:
                candidates[index] = [
                    (f"{block_name}.{name}" if name else block_name, module)
                    for block_name, block in blocks[index]
                    for name, module in block.named_modules()
                    if is_projection(module) and projection_shape(module)[1] == d_model
                ]
            attention_paths = [name for name, _ in candidates[index]] + [
                name for name, _ in blocks[index]
            ]
            silenced[index] = sub_blocks_to_silence(layer, attention_paths)
        if not any(candidates.values()):
            where = f"at {spec.out_proj!r}" if spec else "writing d_model features"
            raise self._refuse(
                f"no nn.Linear/Conv1D {where} inside the attention modules of its "
                f"{len(layers)} decoder layers ({list_name})",
                "no attention output projection found",
                spec.out_proj if spec else "self_attn.o_proj",
            )
        embeddings = (
            self.decoder.get_input_embeddings()
            if hasattr(self.decoder, "get_input_embeddings")
            else None
        )
        vocab = getattr(embeddings, "num_embeddings", None) or getattr(
            self.config, "vocab_size", None
        )
        try:
            layer_probes, projection_probes, norm_calls = run_probe(
                self.decoder, layers, candidates, silenced, int(vocab)
            )
        except Exception as error:  # any failure of the model's own forward pass
            raise self._refuse(
                f"the probe forward pass of {type(self.decoder).__name__} on random token ids "
                f"failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})",
                f"probe forward pass failed ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:90] if str(error) else ''})",
            ) from error
        self._refuse_non_finite(layer_probes, layers)
        self._final_norm_name = norm_calls[-1] if norm_calls else None
        sites: list[LayerSite] = []
        for index, layer in enumerate(layers):
            called = [
                (name, module, projection_probes[index][name])
                for name, module in candidates[index]
                if projection_probes[index][name].order
            ]
            if not called:
                continue
            try:
                site = self._verify_layer(
                    index,
                    layer,
                    f"{list_name}.{index}",
                    called,
                    blocks[index],
                    silenced[index],
                    layer_probes[index],
                    spec,
                )
            except ProbeError as error:
                detail, reason = error.args
                found = max(called, key=lambda entry: max(entry[2].order))[0]
                raise self._refuse(detail, reason, out_proj=found) from None
            site.index = len(sites)
            sites.append(site)
        if not sites:
            raise self._refuse(
                "no attention output projection ran on the probe (text-only input)",
                "no attention layer runs on text",
            )
        counts = sorted({site.n_heads for site in sites})
        if len(counts) > 1:
            raise self._refuse(
                f"its attention layers have different head counts {counts}; rankings, random "
                "control heads and activation files assume one head count (head sizes may "
                "differ: they are padded)",
                "attention layers with different head counts",
            )
        return sites

    def _verify_layer(
        self,
        index: int,
        layer: nn.Module,
        prefix: str,
        called: list[tuple[str, nn.Module, Any]],
        blocks: list[tuple[str, nn.Module]],
        silenced: list[str],
        probe: Any,
        spec: ArchitectureSpec | None,
    ) -> LayerSite:
        d_model = self.d_model

        def block_of(path: str) -> str:
            for name, _ in blocks:
                if path == name or path.startswith(f"{name}."):
                    return name
            return path

        last: dict[str, tuple[str, nn.Module, Any]] = {}
        for entry in called:
            block = block_of(entry[0])
            if block not in last or max(entry[2].order) > max(last[block][2].order):
                last[block] = entry
        if len(last) > 1:
            raise ProbeError(
                f"decoder layer {index} runs {len(last)} attention blocks ({', '.join(last)}); "
                "headpursuit handles one per layer",
                "several attention blocks in one layer",
            )
        name, module, record = next(iter(last.values()))
        path = f"{prefix}.{name}"
        if len(record.z) != 1 or len(probe.inputs) != 1 or len(probe.outputs) != 1:
            raise ProbeError(
                f"{path} ran {len(record.z)} times and its layer {len(probe.inputs)} times in "
                "one forward pass (a module shared between layers?)",
                "attention module runs more than once per forward pass",
            )
        hidden, output = probe.inputs[0], probe.outputs[0]
        if hidden.shape != output.shape or hidden.shape[-1] != d_model:
            raise ProbeError(
                f"decoder layer {index} maps hidden states {tuple(hidden.shape)} to "
                f"{tuple(output.shape)}; expected one residual stream of width {d_model}",
                "decoder layers do not carry a single residual stream",
            )
        z = record.z[0]
        if z.shape[:-1] != hidden.shape[:-1] or record.y[0].shape != hidden.shape:
            raise ProbeError(
                f"{path} maps {tuple(z.shape)} to {tuple(record.y[0].shape)} while its layer "
                f"carries hidden states {tuple(hidden.shape)}; expected one output row per token",
                "attention output does not line up with the residual stream",
            )
        weight = projection_weight(module).to("cpu", torch.float64)
        bias = getattr(module, "bias", None)
        y = z @ weight.T
        if bias is not None:
            y = y + bias.detach().to("cpu", torch.float64)
        dtype = module.weight.dtype
        tol = tolerance(dtype)
        mismatch = token_error(record.y[0], y, record.y[0], dtype)
        if mismatch > tol:
            raise ProbeError(
                f"{path} ({type(module).__name__}) does not compute z @ W.T + b from its "
                f"weight (relative error {mismatch:.1e}; quantised or wrapped?)",
                "output projection is not a plain linear map",
            )
        if not all(torch.isfinite(t).all() for t in (output, hidden, y)):
            raise ProbeError(
                f"decoder layer {index} returns NaN or inf on the probe's token ids in {dtype}",
                "layer overflows on the probe input",
            )
        norms = self._post_norm_candidates(layer, silenced, spec)
        fits = fit_update(
            output.reshape(-1, d_model),
            hidden.reshape(-1, d_model),
            y.reshape(-1, d_model),
            norms,
            dtype,
        )
        # A fit in which the attention output or the residual input is multiplied by 0 says
        # only that the silenced layer lost it (a LayerNorm inside the silenced MLP block).
        sound = [fit for fit in fits if not _degenerate(fit)]
        passing = [fit for fit in sound if fit.error <= tol]
        best = passing[0] if passing else min(sound or fits, key=lambda fit: fit.error)
        if not passing:
            tried = "identity" + "".join(f", RMS norm {n}" for n, _, g, _ in norms if g is not None)
            not_rms = [n for n, _, g, _ in norms if g is None]
            extra = f"; not RMS norms: {', '.join(not_rms)}" if not_rms else ""
            raise ProbeError(
                f"the output of decoder layer {index} (its MLP and other mixers silenced) is "
                f"not a * input + c * G(output of {path}) for G in ({tried}{extra}): best "
                f"relative error {best.error:.1e} (tolerance {tol:.0e})",
                "residual update is not c * G(output of the projection)"
                + (f" (non-RMS norms: {', '.join(not_rms)})" if not_rms else ""),
            )
        if probe.on_attention_path and not _adds_residual(probe.attention_output, hidden, y, tol):
            child = probe.on_attention_path[0]
            kind = type(layer.get_submodule(child)).__name__
            raise ProbeError(
                f"the attention output of decoder layer {index} goes through {prefix}.{child} "
                f"({kind}) before it joins the residual stream; what that module does to it "
                "cannot be split by head",
                f"attention output passes through {kind} before the residual add",
            )
        scale, stream_scale = _snap(best.scale, tol), _snap(best.stream_scale, tol)
        in_features = projection_shape(module)[0]
        block_name = block_of(name)
        block = layer.get_submodule(block_name) if block_name != name else module
        shape = _head_shape(block, self.config, in_features, spec)
        if shape is None:
            raise ProbeError(
                f"{path} takes {in_features} inputs, which no head count x head size of the "
                f"config or attention module explains; register the value head size with "
                f"ArchitectureSpec(head_dim=...)",
                "head size unknown",
            )
        return LayerSite(
            index=index,
            out_proj=module,
            out_proj_name=path,
            post_norm=best.post_norm,
            decoder_layer=index,
            n_heads=shape[0],
            head_dim=shape[1],
            scale=scale,
            post_norm_name=best.post_norm_name,
            gain=None if best.gain is None else best.gain.float(),
            eps=best.eps,
            probe_error=best.error,
            stream_scale=stream_scale,
        )

    def _post_norm_candidates(
        self, layer: nn.Module, silenced: list[str], spec: ArchitectureSpec | None
    ) -> list[tuple[str, nn.Module, torch.Tensor | None, float]]:
        """Norms of width ``d_model`` in running children of the layer: ``(name, module, γ, eps)``.

        γ is ``None`` for a norm that is not an RMS norm (it cannot be split by head).
        """
        found = []
        for name, module in layer.named_modules():
            inside = any(name == root or name.startswith(f"{root}.") for root in silenced)
            if not name or inside or not is_norm(module):
                continue
            if spec is not None and spec.post_norm is not None and name != spec.post_norm:
                continue
            eps = norm_epsilon(module)
            weight = getattr(module, "weight", None)
            if eps is None or weight is None or weight.numel() != self.d_model:
                continue
            try:
                gain = rms_norm_gain(module, self.d_model).double()
            except Exception:
                gain = None
            found.append((name, module, gain, eps))
        return found

    # -- weights, in the conventions of the math (float32 copies) -------------------------

    def output_weight(self, layer: int) -> torch.Tensor:
        """W_O of a layer as ``[d_model, n_heads * head_dim]`` (``out = z @ W_O.T + b``)."""
        return projection_weight(self.layers[layer].out_proj).float()

    def output_bias(self, layer: int) -> torch.Tensor | None:
        """Bias of the output projection ``[d_model]``; it belongs to no head.

        Its contribution to the residual stream is ``residual_scale * bias`` (through the
        post-norm's per-token scale and gain where there is one).
        """
        bias = getattr(self.layers[layer].out_proj, "bias", None)
        return None if bias is None else bias.detach().float()

    def residual_scale(self, layer: int) -> float | torch.Tensor:
        """The factor ``c`` this layer's output receives its attention output times.

        A float (1.0 in most models; Granite's ``residual_multiplier``...), or a ``[d_model]``
        tensor where the model scales the update per channel.
        """
        return self.layers[layer].scale

    def post_norm_gain(self, layer: int) -> torch.Tensor | None:
        """The elementwise gain γ ``[d_model]`` of the post-attention norm, or ``None``."""
        return self.layers[layer].gain

    def post_norm_eps(self, layer: int) -> float:
        return self.layers[layer].eps

    def head_matrices(self, layer: int) -> torch.Tensor:
        """Per-head output maps ``[n_heads, d_model, head_dim]`` with scale and post-norm gain folded in.

        The contribution of head h to the residual stream is ``s_t * (M[h] @ z_h)`` where
        ``z_h`` is the head's slice of the projection input and ``s_t`` the post-norm's
        per-token scale (1 without a post-norm), which capture folds into the pooled z.
        ``M[h] = c * γ ⊙ W_O[:, h]`` (γ = 1 without a post-norm). In a layer with fewer
        heads or narrower heads than the model's largest, the missing rows/columns are 0.
        """
        site = self.layers[layer]
        weight = self.output_weight(layer).cpu()
        if site.gain is not None:
            weight = site.gain[:, None] * weight
        scale = site.scale
        weight = (scale.float()[:, None] if isinstance(scale, torch.Tensor) else scale) * weight
        maps = weight.reshape(self.d_model, site.n_heads, site.head_dim).permute(1, 0, 2)
        if (site.n_heads, site.head_dim) == (self.n_heads, self.head_dim):
            return maps
        padded = torch.zeros(self.n_heads, self.d_model, self.head_dim)
        padded[: site.n_heads, :, : site.head_dim] = maps
        return padded

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
        scales = {
            "per channel" if isinstance(site.scale, torch.Tensor) else round(site.scale, 6)
            for site in self.layers
        }
        scale = "" if scales == {1.0} else f", residual_scale={sorted(scales, key=str)}"
        hybrid = (
            ""
            if self.n_layers == self.n_decoder_layers
            else f" (decoder layers {self.attention_layers} of {self.n_decoder_layers})"
        )
        return (
            f"AttentionSites({self.model_type}: {self.n_layers} attention layers{hybrid} x "
            f"{self.n_heads} heads, head_dim={self.head_dim}, d_model={self.d_model}, "
            f"out_proj={self.spec.out_proj!r}{post}{scale})"
        )
