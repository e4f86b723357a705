"""Architecture conformance: every decoder of the installed transformers, tiny and random.

For each ``model_type`` of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` and
``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES``: build a 2-layer config of width 64 from the
config class's defaults, randomise every weight, norm gain, bias and scalar multiplier of
the config, build :class:`~headpursuit.AttentionSites`, and check what it claims against an
oracle that ignores everything the library decided except where ``z`` enters the output
projection:

* the *update* of an attention layer is what the decoder layer adds to its input when its
  other parametric children (MLP, MoE, Mamba mixer...) output zeros: ``layer(x) - x``;
* total: the library's per-head contributions (``head_matrices`` at the post-norm's frozen
  per-token scale) plus the bias term equal that update, token by token;
* per head: each head alone (the others zeroed at the projection input) changes the update
  by exactly its contribution. For a layer whose update is affine in ``z`` that change is
  ``update(only h) - update(none)``; for a layer whose update is scale-free in the
  projection output (an RMS post-norm), it is ``update(only h)·ρ(only h) - update(none)·ρ(none)``
  rescaled by ``1/ρ(all)``, ρ the RMS of the projection output: the frozen per-token scale
  read off the module's own behaviour, not from the library's post-norm;
* head count: where the attention module returns its weights (eager attention), their head
  axis equals the library's head count.

A type the library refuses must raise :class:`~headpursuit.UnsupportedArchitectureError`
with a reason. ``run(model_type)`` returns one row of the table; the test file and
``scripts/architecture_table.py`` both call it.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)

from headpursuit import AttentionSites, UnsupportedArchitectureError

N_LAYERS = 2
VOCAB = 256
BATCH, TOKENS = 2, 10
#: Relative error allowed per token: models run in float64 (the library keeps float32 maps);
#: the few whose code cannot run in float64 run in float32.
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}

#: Sizes given to every config (and sub-config) that has the field.
SIZES = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=96,
    vocab_size=VOCAB,
    max_position_embeddings=256,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    num_experts=4,
    num_local_experts=4,
    n_routed_experts=4,
    num_experts_per_tok=2,
    n_shared_experts=1,
    n_group=1,
    topk_group=1,
    kv_lora_rank=16,
    q_lora_rank=24,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=12,  # != qk head size: multi-head latent attention's value width is tested
    rotary_dim=8,
    global_head_dim=32,  # Gemma 4 full-attention layers: a second head size
    # linear-attention and state-space mixers of hybrids: small states and chunks
    linear_head_dim=16,
    linear_num_heads=4,
    dim_head=16,
    dim_ff=96,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=96,
    decoder_ffn_dim=96,
    d_head=16,
    linear_key_head_dim=8,
    linear_value_head_dim=8,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    mamba_d_ssm=128,
    mamba_n_heads=8,
    mamba_d_head=16,
    mamba_num_heads=8,
    mamba_head_dim=16,
    mamba_d_state=8,
    ssm_state_size=8,
    mamba_chunk_size=8,
    chunk_size=8,
    moe_shared_expert_intermediate_size=32,
    swa_head_dim=16,
    swa_num_attention_heads=4,
    swa_num_key_value_heads=2,
    encoder_hash_byte_group_vocab=64,
    vocab_size_per_layer_input=VOCAB,
    hidden_size_per_layer_input=16,
    depth=1,
    embed_dim=32,
    num_heads=2,
)
TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id")

#: Per-type config fields that the generic sizes get wrong (mostly: which layers have
#: attention in a hybrid, so that the first layers include one).
PER_TYPE: dict[str, dict] = {
    "jamba": dict(
        attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1
    ),
    "bamba": dict(attn_layer_indices=[1]),
    "granitemoehybrid": dict(layer_types=["mamba", "attention"]),
    "zamba2": dict(hybrid_layer_ids=[1]),
    "big_bird": dict(attention_type="original_full"),
    "reformer": dict(is_decoder=True),
    "recurrent_gemma": dict(block_types=["recurrent", "attention"]),
    "glm4v_moe": dict(
        text_config=dict(
            rope_parameters=dict(
                rope_type="default",
                rope_theta=1e4,
                partial_rotary_factor=0.5,
                mrope_section=[1, 1, 2],
            )
        )
    ),
    "paddleocr_vl": dict(
        text_config=dict(
            rope_parameters=dict(rope_type="default", rope_theta=1e4, mrope_section=[2, 3, 3])
        )
    ),
    "step3p7": dict(text_config=dict(sliding_window=8)),
    "mllama": dict(text_config=dict(cross_attention_layers=[1])),
}

MODEL_TYPES = sorted(
    set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) | set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one thread: many threads make their small matmuls 10-100x slower on
    a busy machine (CI has 2 cores). Import it into a test module with autouse to apply."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Unbuildable(Exception):
    """The tiny config or model cannot be built (a limit of this test, not of headpursuit)."""


def _layer_choice(values: dict, n_default: int) -> list[int]:
    """Which of the default config's layers to keep: the first ``N_LAYERS``, plus, for a
    hybrid, the first layer of each kind in every per-layer list (so that a tiny hybrid
    still has an attention layer); at most 4."""
    firsts: set[int] = set()
    for value in values.values():
        kinds = list(value) if isinstance(value, (list, str)) else []
        if len(kinds) == n_default and len(set(map(str, kinds))) > 1:
            firsts |= {kinds.index(kind) for kind in kinds}
    keep = sorted(firsts)[:4]
    extra = [i for i in range(n_default) if i not in keep]
    return sorted(keep + extra[: max(0, N_LAYERS - len(keep))])


def _per_layer(value):
    """A per-layer override (Gemma 4's ``per_layer_config``): a second, small head size."""
    if isinstance(value, dict) and isinstance(value.get("head_dim"), int):
        return {**value, "head_dim": 2 * SIZES["head_dim"]}
    return value


def _shrink(values: dict, extra: dict) -> dict:
    model_type = values.get("model_type")
    # (the lazy CONFIG_MAPPING's .get() answers None for every key)
    config_class = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else None  # noqa: SIM401
    aliases = getattr(config_class, "attribute_map", {}) if config_class else {}
    out = dict(values)
    for key, value in values.items():
        if isinstance(value, dict) and "model_type" in value:
            out[key] = _shrink(value, extra.get(key, {}))
    layers_key = aliases.get("num_hidden_layers", "num_hidden_layers")
    n_default = values.get(layers_key)
    if isinstance(n_default, int) and n_default > 0:
        keep = _layer_choice(values, n_default)
        out[layers_key] = len(keep)
        for key in ("decoder_layers", "encoder_layers", "num_decoder_layers"):
            if isinstance(values.get(key), int):
                out[key] = len(keep)
        for key, value in values.items():  # per-layer lists and {layer: ...} dicts
            if (
                isinstance(value, (list, str))
                and len(value) == n_default
                and key not in TOKEN_FIELDS
            ):
                picked = [value[i] for i in keep]
                out[key] = "".join(picked) if isinstance(value, str) else picked
            elif isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
                out[key] = {
                    type(k)(keep.index(int(k))): _per_layer(v)
                    for k, v in value.items()
                    if int(k) in keep
                }
    for field, value in SIZES.items():
        name = aliases.get(field, field)
        if name in out and isinstance(out[name], list) and field.endswith("_size"):
            out[name] = [value] * len(out[name])  # per-layer sizes
        elif name in out and not isinstance(out[name], (dict, list)):
            out[name] = value
    if "qk_rope_head_dim" in out:  # multi-head latent attention: derived sizes
        rope = out.get("rope_parameters")
        if isinstance(rope, dict) and "partial_rotary_factor" in rope:
            out["rope_parameters"] = {k: v for k, v in rope.items() if k != "partial_rotary_factor"}
        if "num_key_value_heads" in out:
            out["num_key_value_heads"] = out["num_attention_heads"]
        if "head_dim" in out:
            out["head_dim"] = out["qk_rope_head_dim"]
        if "qk_head_dim" in out:
            out["qk_head_dim"] = out["qk_rope_head_dim"] + out["qk_nope_head_dim"]
    rope = out.get("rope_parameters")
    mrope = "mrope_section" in getattr(config_class, "ignore_keys_at_rope_validation", ())
    if isinstance(rope, dict) and ("mrope_section" in rope or mrope):
        out["rope_parameters"] = {**rope, "mrope_section": [2, 3, 3]}  # sums to head_dim / 2
    for key in TOKEN_FIELDS:
        value = out.get(key)
        if isinstance(value, int) and value >= VOCAB:
            out[key] = 1
        elif isinstance(value, list):
            out[key] = [v if v < VOCAB else 1 for v in value]
    for key, value in extra.items():
        if not (
            isinstance(value, dict)
            and isinstance(values.get(key), dict)
            and "model_type" in values[key]
        ):
            out[key] = value
    return out


def _randomise_multipliers(values: dict, generator: torch.Generator) -> dict:
    """Scalar multipliers of the config (``residual_multiplier``...) set to values in [0.3, 0.9]."""
    out = dict(values)
    for key, value in values.items():
        if isinstance(value, dict) and "model_type" in value:
            out[key] = _randomise_multipliers(value, generator)
        elif isinstance(value, float) and (
            ("multiplier" in key and "dim" not in key) or key == "scale_depth"
        ):
            out[key] = round(0.3 + 0.6 * float(torch.rand(1, generator=generator)), 4)
    return out


def tiny_config(model_type: str, seed: int = 0):
    """A 2-layer, width-64 config of ``model_type`` with random scalar multipliers."""
    config_class = CONFIG_MAPPING[model_type]
    values = _shrink(config_class().to_dict(), PER_TYPE.get(model_type, {}))
    values = _randomise_multipliers(values, torch.Generator().manual_seed(seed))
    config = config_class.from_dict(values)
    return config


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere: norm gains around 1, biases and other weights around 0."""
    generator = torch.Generator().manual_seed(seed)
    norm_params = {
        id(param)
        for module in model.modules()
        if _is_norm(module)
        for param in module.parameters(recurse=False)
    }
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.is_floating_point():
                continue
            noise = torch.randn(param.shape, generator=generator).to(param.dtype)
            if id(param) in norm_params and not name.endswith("bias"):
                param.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            else:
                param.copy_(0.2 * noise)
    return model.eval()


def build(model_type: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The tiny random model of ``model_type``; raises :class:`Unbuildable` if it cannot be built."""
    auto = (
        AutoModelForCausalLM
        if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        else AutoModelForImageTextToText
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = tiny_config(model_type, seed)
            torch.manual_seed(seed)
            model = auto.from_config(
                config,
                dtype=dtype,
                attn_implementation="eager",  # returns attention weights: head-count check
                experts_implementation="eager",  # grouped-mm kernels refuse float64
            )
    except Exception as error:
        raise Unbuildable(f"{type(error).__name__}: {str(error).splitlines()[0][:160]}") from error
    return randomise(model, seed)


# -- the oracle -----------------------------------------------------------------------------


def _owner_layer(decoder: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The decoder layer that holds ``path`` (the module right under the innermost
    ModuleList on the way), and the rest of the path inside that layer."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = decoder.get_submodule(".".join(parts[: cut - 1])) if cut > 1 else decoder
        if isinstance(parent, nn.ModuleList):
            layer = decoder.get_submodule(".".join(parts[:cut]))
            return layer, ".".join(parts[cut:])
    raise AssertionError(f"{path} is not inside a list of layers")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or bool(
        re.search("norm$", type(module).__name__, re.IGNORECASE)
    )


def _silenced_parameters(layer: nn.Module, inner_path: str) -> list[nn.Parameter]:
    """Parameters of the sub-blocks of ``layer`` beside its attention block.

    Walks down ``inner_path`` (the way to the output projection) until a module whose class
    says attention; on the way, every sibling that has parameters and is not a norm (the
    MLP, MoE, Mamba mixer...) is collected.
    """
    params: list[nn.Parameter] = []
    module = layer
    for part in inner_path.split("."):
        for name, child in module.named_children():
            if name != part and not _is_norm(child):
                params.extend(child.parameters())
        module = module.get_submodule(part)
        if re.search("attention|attn|mla$", type(module).__name__, re.IGNORECASE):
            return params
    raise AssertionError(f"no attention module on the way to {inner_path}")


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


AMPLIFY = 1e4  # z factor of the per-head groups: makes any post-norm epsilon negligible


def check_layer(model: nn.Module, sites: AttentionSites, layer: int, seed: int = 1) -> dict:
    """Oracle checks of one attention layer; returns the worst relative errors.

    One forward pass of ``2 * (n_heads + 2)`` copies of a random batch. At this layer's
    projection input, copy group ``g`` keeps the heads ``mask[g]``: all heads, none, then each
    head alone; the second half repeats that with ``z`` multiplied by :data:`AMPLIFY`.
    """
    site = sites.layers[layer]
    decoder = sites.decoder
    owner, inner_path = _owner_layer(decoder, site.out_proj_name)
    attention_block = owner.get_submodule(inner_path.split(".")[0])
    heads, width = site.n_heads, site.head_dim
    per_set = heads + 2
    groups = 2 * per_set
    mask = torch.zeros(groups, heads, dtype=torch.float64)
    for offset, factor in ((0, 1.0), (per_set, AMPLIFY)):
        mask[offset] = factor
        for h in range(heads):
            mask[offset + 2 + h, h] = factor
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (BATCH, TOKENS), generator=generator).repeat(groups, 1)
    seen: dict[str, torch.Tensor] = {}
    weights_heads: list[int] = []

    def mask_z(module, args):
        z = args[0]  # [G * B, T', heads * width]; T' may exceed TOKENS (prompt tokens)
        shaped = z.reshape(groups, -1, heads, width) * mask[:, None, :, None].to(z.dtype)
        seen["z"] = shaped.reshape(z.shape).double()
        return (shaped.reshape(z.shape), *args[1:])

    def keep_y(module, args, output):
        seen["y"] = output.double()

    def layer_in(module, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).double()

    def layer_out(module, args, output):
        seen["out"] = _first(output).double()

    def attention_weights(module, args, output):
        if isinstance(output, tuple):
            for item in output[1:]:
                if isinstance(item, torch.Tensor) and item.dim() == 4 and item.shape[-1] >= TOKENS:
                    weights_heads.append(int(item.shape[1]))

    handles = [
        site.out_proj.register_forward_pre_hook(mask_z),
        site.out_proj.register_forward_hook(keep_y),
        owner.register_forward_pre_hook(layer_in, with_kwargs=True),
        owner.register_forward_hook(layer_out),
        attention_block.register_forward_hook(attention_weights),
    ]
    # The other sub-blocks of this layer (MLP, MoE, mixers) get all-zero weights: they add
    # nothing (and pass on a residual they are handed), so the layer's output is its input
    # carried through plus what the attention adds.
    silenced = _silenced_parameters(owner, inner_path)
    saved = [param.detach().clone() for param in silenced]
    try:
        with torch.no_grad():
            for param in silenced:
                param.zero_()
            decoder(input_ids=ids, use_cache=False)
    finally:
        with torch.no_grad():
            for param, value in zip(silenced, saved, strict=True):
                param.copy_(value)
        for handle in handles:
            handle.remove()
    d = sites.d_model
    hidden = seen["x"].reshape(groups, -1, d)
    out = seen["out"].reshape(groups, -1, d)
    y = seen["y"].reshape(groups, -1, d)
    z = seen["z"].reshape(groups, -1, heads, width)

    def relative(actual: torch.Tensor, claimed: torch.Tensor) -> float:
        scale = actual.norm(dim=-1) + claimed.norm(dim=-1)
        return float(((actual - claimed).norm(dim=-1) / scale.clamp_min(1e-12)).max())

    # The library's claim, from its own numbers: per head, at the post-norm's frozen scale.
    maps = sites.head_matrices(layer).double()[:heads, :, :width]  # [H, d, dh]
    eps = sites.post_norm_eps(layer)

    def claimed_heads(group: int) -> torch.Tensor:
        per_head = torch.einsum("hdk,nhk->hnd", maps, z[group])  # [H, N, d]
        if site.post_norm is not None:
            per_head = per_head * torch.rsqrt(y[group].pow(2).mean(-1, keepdim=True) + eps)
        return per_head

    bias = sites.output_bias(layer)
    bias_term = torch.zeros(d, dtype=torch.float64)
    if bias is not None:
        gain = sites.post_norm_gain(layer)
        scale = sites.residual_scale(layer)
        bias_term = bias.double() * (1 if gain is None else gain.double())
        bias_term = bias_term * (scale.double() if isinstance(scale, torch.Tensor) else scale)

    # The oracle: changes of the layer output as heads are switched off. The residual input
    # (however the layer carries it) is the same in every group and cancels.
    change = out - out[1]  # group 1: no head
    # Affine in z (no norm after the projection) or not; float32 runs round at ~1e-7.
    exact_dtype = site.out_proj.weight.dtype == torch.float64
    affine = relative(change[0], change[2:per_set].sum(0)) < (1e-9 if exact_dtype else 1e-5)
    if affine:
        total_error = relative(change[0], claimed_heads(0).sum(0))
        oracle_heads = change[per_set + 2 :]
    else:  # scale-free in the projection output: an RMS-type post-norm
        # Total, at the real scale: what the attention block outputs is the change from "no
        # head" when the projection has no bias (then "no head" outputs 0), else output - input.
        attention = change[0] if bias is None else out[0] - hidden[0]
        frozen = torch.rsqrt(y[0].pow(2).mean(-1, keepdim=True) + eps)
        total_error = relative(attention, claimed_heads(0).sum(0) + frozen * bias_term)
        # Per head, amplified so that the norm's epsilon is negligible: undo each group's own
        # RMS and apply the all-heads group's RMS.
        amplified = change[per_set:] if bias is None else out[per_set:] - hidden[per_set:]
        rho = y[per_set:].pow(2).mean(-1, keepdim=True).sqrt()
        oracle_heads = (amplified[2:] * rho[2:] - amplified[1] * rho[1]) / rho[0]
    claimed = claimed_heads(per_set)
    head_error = max(relative(oracle_heads[h], claimed[h]) for h in range(heads))
    return {
        "total": total_error,
        "per_head": head_error,
        "affine": affine,
        "weight_heads": weights_heads[0] if weights_heads else None,
        "update_norm": float(change[0].norm() / hidden[0].norm()),
    }


@dataclass
class Row:
    """One line of the conformance table."""

    model_type: str
    status: str  # "exact", "refused", "unbuildable", "WRONG"
    detail: str
    seconds: float


def run(model_type: str) -> Row:
    """Build, discover, verify against the oracle; never raises for a model's own problem."""
    start = time.perf_counter()
    dtype = torch.float64
    try:
        model = build(model_type)
    except Unbuildable as error:
        return Row(model_type, "unbuildable", str(error), time.perf_counter() - start)
    try:
        try:
            sites = AttentionSites(model)
        except UnsupportedArchitectureError as error:
            if not error.reason.startswith("probe forward pass failed"):
                raise
            dtype = torch.float32  # some model code cannot run in float64
            model = build(model_type, dtype=dtype)
            sites = AttentionSites(model)
    except UnsupportedArchitectureError as error:
        return Row(model_type, "refused", error.reason, time.perf_counter() - start)
    except Exception as error:  # a crash of the library is a failure, reported as such
        detail = f"AttentionSites crashed: {type(error).__name__}: {error}"
        return Row(model_type, "CRASH", detail, time.perf_counter() - start)
    tolerance = TOLERANCE[dtype]
    problems = []
    for layer in range(sites.n_layers):
        try:
            result = check_layer(model, sites, layer)
        except Exception as error:  # the oracle itself could not run: report, never pass
            problems.append(f"layer {layer}: oracle failed ({type(error).__name__}: {error})")
            continue
        if result["total"] > tolerance:
            problems.append(f"layer {layer}: total off by {result['total']:.1e}")
        if result["per_head"] > tolerance:
            problems.append(f"layer {layer}: a head off by {result['per_head']:.1e}")
        if result["update_norm"] < 1e-9:
            problems.append(f"layer {layer}: the attention adds nothing; nothing was checked")
        counted = result["weight_heads"]
        if counted is not None and counted != sites.layers[layer].n_heads:
            problems.append(
                f"layer {layer}: {sites.layers[layer].n_heads} heads, attention weights have {counted}"
            )
    seconds = time.perf_counter() - start
    if problems:
        return Row(model_type, "WRONG", "; ".join(problems), seconds)
    detail = describe(sites) + ("" if dtype == torch.float64 else " (checked in float32)")
    return Row(model_type, "exact", detail, seconds)


def describe(sites: AttentionSites) -> str:
    """What was found, in a few words: heads, post-norm, scale, attention layers."""
    site = sites.layers[0]
    parts = [f"{sites.n_heads}x{sites.head_dim}", sites.spec.out_proj]
    if site.post_norm_name:
        parts.append(f"post-norm {site.post_norm_name}")
    scales = [s.scale for s in sites.layers]
    if any(isinstance(c, torch.Tensor) for c in scales):
        parts.append("scale per channel")
    elif any(abs(c - 1) > 1e-6 for c in scales):
        parts.append("scale " + "/".join(f"{c:.3g}" for c in scales))
    streams = [s.stream_scale for s in sites.layers]
    if any(isinstance(a, torch.Tensor) for a in streams):
        parts.append("residual carried per channel")
    elif any(abs(a - 1) > 1e-6 for a in streams):
        parts.append("residual carried x " + "/".join(f"{a:.3g}" for a in streams))
    if sites.n_layers != sites.n_decoder_layers:
        parts.append(f"attention in layers {sites.attention_layers} of {sites.n_decoder_layers}")
    return ", ".join(parts)


def summary(rows: list[Row]) -> dict[str, int]:
    """Counts by status, and refusals by reason."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    for row in rows:
        if row.status == "refused":  # grouped by the reason without its particulars
            key = f"refused: {row.detail.split(' (')[0]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def format_table(rows: list[Row]) -> str:
    """The table as Markdown: counts, then one line per model type."""
    counts = summary(rows)
    lines = [
        f"{counts.get('exact', 0)} exact, {counts.get('refused', 0)} refused, "
        f"{counts.get('unbuildable', 0)} not buildable as a tiny model here, "
        f"{counts.get('WRONG', 0)} wrong, {counts.get('CRASH', 0)} crashed "
        f"(of {len(rows)} model types).",
        "",
        "| refusal reason | types |",
        "|---|---|",
    ]
    reasons = sorted((k for k in counts if k.startswith("refused: ")), key=lambda k: -counts[k])
    lines += [f"| {key[len('refused: ') :]} | {counts[key]} |" for key in reasons]
    lines += ["", "| model_type | result | what was found, or why not |", "|---|---|---|"]
    for row in rows:
        detail = row.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{row.model_type}` | {row.status} | {detail} |")
    return "\n".join(lines)
