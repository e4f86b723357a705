"""Find each decoder layer's attention output projection by structure, and prove it on a probe.

Nothing here trusts a module's name for what it does. For every decoder layer:

1. *Structure.* The attention blocks are the outermost sub-modules whose class name says
   attention (``...Attention``, ``...Attn``). Inside them, every ``nn.Linear`` / GPT-2
   ``Conv1D`` that writes ``d_model`` features is a candidate; on the probe, the one called
   last in its block is the output projection (its input is the concatenated per-head
   outputs ``z``). A table entry (:data:`~headpursuit.models.architectures.ARCHITECTURES`) may
   name the projection instead.
2. *Probe.* One forward pass of the language backbone on a few random tokens, with every
   other parametric child of each layer (MLP, MoE, Mamba mixer, ...) silenced so that
   ``layer output - layer input`` is exactly what the attention block adds to the residual
   stream. Each token's ``z`` is multiplied by a random factor in [0.5, 2] on its way into
   the projection, so that a norm after the projection (whose output ignores that factor)
   cannot pass for a plain linear map (whose output follows it).
3. *Verification.* The measured update must equal ``c * G(z @ W_Oᵀ + b)`` token by token,
   where ``G`` is the identity or an RMS post-norm of the layer (gain γ, per-token scale
   frozen), and ``c`` a scalar read off the probe by least squares (Granite's
   ``residual_multiplier``, Mllama's tanh gates, Falcon-H1's attention multiplier...).
   A layer is accepted only if the worst token's error is within float rounding;
   otherwise :class:`~headpursuit.models.architectures.UnsupportedArchitectureError` says what was
   found and how far off it was.

Layers without an attention block that runs on text (Mamba, linear-attention and other
mixers; cross-attention that needs image states) are not attention layers; sites index
only the attention layers, in order (see :class:`~headpursuit.models.architectures.AttentionSites`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

#: Class names of attention blocks (``LlamaAttention``, ``GPT2Attention``, ``MptAttention``...).
ATTENTION_CLASS = re.compile("attention|attn|MLA$", re.IGNORECASE)
#: Linear-attention and state-space mixers named "...Attention" (Kimi's and Bailing's delta
#: rule, MiniMax's lightning attention): not softmax heads, not counted as attention.
LINEAR_MIXER_CLASS = re.compile("linear|delta|lightning|retention|mamba", re.IGNORECASE)
NORM_CLASS = re.compile("norm", re.IGNORECASE)
#: Class names that say "a bigger block" even if they mention a norm (RobertaPreLayerNorm...).
NOT_NORM_CLASS = re.compile(
    "attention|attn|model|layer$|block|mlp|intermediate|output|embedding", re.IGNORECASE
)
EPS_NAMES = ("eps", "variance_epsilon", "epsilon")

PROBE_BATCH = 2
PROBE_TOKENS = 12
#: Relative error allowed on the worst token, by the dtype of the output projection.
RELATIVE_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
HALF_TOLERANCE = 3e-2


class ProbeError(Exception):
    """Raised by discovery with the one-line reason a layer cannot be made exact."""


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def projection_shape(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or a GPT-2 ``Conv1D``."""
    weight = module.weight
    if isinstance(module, Conv1D):
        return int(weight.shape[0]), int(weight.shape[1])
    return int(weight.shape[1]), int(weight.shape[0])


def projection_weight(module: nn.Module) -> torch.Tensor:
    """``W`` as ``[out, in]`` (``y = z @ W.T + b``), detached, in the module's dtype."""
    weight = module.weight.detach()
    return weight.T if isinstance(module, Conv1D) else weight


def is_norm(module: nn.Module) -> bool:
    """A normalisation module: a torch norm, or a class named ``...Norm...`` that is not a
    bigger block named after its model (``RobertaPreLayerNormAttention`` is no norm)."""
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
        return True
    name = type(module).__name__
    return bool(NORM_CLASS.search(name)) and not NOT_NORM_CLASS.search(name)


def norm_epsilon(norm: nn.Module) -> float | None:
    for name in EPS_NAMES:
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def attention_blocks(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost strict sub-modules of ``layer`` whose class name says (softmax) attention."""
    blocks: list[tuple[str, nn.Module]] = []
    # The model's own name ("KimiLinear" in KimiLinearDecoderLayer) says nothing of a block.
    model_name = re.sub("(decoder)?(layer|block)$", "", type(layer).__name__, flags=re.IGNORECASE)
    for name, module in layer.named_modules():
        if not name or is_norm(module):
            continue
        kind = type(module).__name__
        own = kind[len(model_name) :] if model_name and kind.startswith(model_name) else kind
        if not ATTENTION_CLASS.search(kind) or LINEAR_MIXER_CLASS.search(own):
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in blocks):
            continue
        blocks.append((name, module))
    return blocks


OTHER_MODALITY = re.compile("vision|visual|image|audio|speech|patch", re.IGNORECASE)


def find_layer_lists(decoder: nn.Module, n_layers: int) -> list[tuple[str, nn.ModuleList]]:
    """Candidate lists of decoder layers, best first.

    ``nn.ModuleList`` s of ``n_layers`` modules of which at least one holds attention; if
    there is none (a config whose layer count is not the decoder's), the lists whose every
    module holds attention, longest first. Lists under a vision or audio tower come last.
    """
    lists = [
        (name, module)
        for name, module in decoder.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    ]
    exact = [
        (name, module)
        for name, module in lists
        if len(module) == n_layers and any(attention_blocks(layer) for layer in module)
    ]
    full = [(name, module) for name, module in lists if all(attention_blocks(m) for m in module)]
    found = exact or sorted(full, key=lambda item: -len(item[1]))
    return sorted(found, key=lambda item: bool(OTHER_MODALITY.search(item[0])))


def sub_blocks_to_silence(layer: nn.Module, attention_paths: list[str]) -> list[str]:
    """Paths (in ``layer``) of the sub-blocks beside the attention: MLP, MoE, mixers.

    The parametric children of the layer, and of every module on the way down to an
    attention block (T5 keeps its sub-layers in a list), that neither are nor contain an
    attention block and are not norms.
    """
    found: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path in attention_paths:
                continue
            if any(p.startswith(f"{path}.") for p in attention_paths):
                walk(child, f"{path}.")
            elif has_parameters(child) and not is_norm(child):
                found.append(path)

    walk(layer, "")
    return found


@dataclass
class LayerProbe:
    """What the probe saw in one decoder layer (tensors float64, on the CPU)."""

    inputs: list[torch.Tensor] = field(default_factory=list)  # [B, T, d] per call
    outputs: list[torch.Tensor] = field(default_factory=list)
    #: silenced children that were handed the attention output (or a norm of it)
    on_attention_path: list[str] = field(default_factory=list)
    attention_output: torch.Tensor | None = None  # the attention block's first output
    _attention_outputs: list[torch.Tensor] = field(default_factory=list, repr=False)


@dataclass
class ProjectionProbe:
    """What the probe saw at one candidate projection."""

    z: list[torch.Tensor] = field(default_factory=list)  # [B, T, in] per call
    y: list[torch.Tensor] = field(default_factory=list)  # [B, T, out] per call
    order: list[int] = field(default_factory=list)  # global call counter per call


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "to_tuple"):
        return _first_tensor(value.to_tuple())
    return None


def _with_zero_parameters(module: nn.Module, args: tuple, kwargs: dict):
    """What ``module`` returns on the same call with all its parameters set to zero.

    Silences an MLP, MoE or Mamba block: it then adds nothing, but still passes on a residual
    it was handed (BLOOM's and MPT's MLPs add the residual themselves). The zeros are
    broadcast views, so large experts cost no memory.
    """
    zeros = {
        name: torch.zeros((), dtype=param.dtype, device=param.device).expand(param.shape)
        for name, param in module.named_parameters()
    }
    try:
        return torch.func.functional_call(module, zeros, args, kwargs, strict=False)
    except RuntimeError as error:  # a kernel that wants contiguous weights
        if isinstance(error, RecursionError):
            raise
        zeros = {name: torch.zeros_like(param) for name, param in module.named_parameters()}
        return torch.func.functional_call(module, zeros, args, kwargs, strict=False)


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(f"{root}.") for root in roots)


def _cpu64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float64)


def probe_ids(vocab_size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Random token ids ``[PROBE_BATCH, PROBE_TOKENS]`` (ids 3..vocab-1: skips pad/bos/eos)."""
    generator = torch.Generator().manual_seed(seed)
    low = 3 if vocab_size > 16 else 0
    ids = torch.randint(low, vocab_size, (PROBE_BATCH, PROBE_TOKENS), generator=generator)
    return ids.to(device)


def run_probe(
    decoder: nn.Module,
    layers: list[nn.Module],
    candidates: dict[int, list[tuple[str, nn.Module]]],
    silenced: dict[int, list[str]],
    vocab_size: int,
    seed: int = 0,
) -> tuple[list[LayerProbe], dict[int, dict[str, ProjectionProbe]], list[str]]:
    """One forward pass of ``decoder`` with the hooks described in the module docstring.

    Args:
        decoder: the language backbone (called with ``input_ids`` only).
        layers: its decoder layers, in order.
        candidates: per layer index, the candidate projections ``(name in layer, module)``.
        silenced: per layer index, paths of the sub-blocks to run with zero parameters
            (see :func:`sub_blocks_to_silence`).
        vocab_size: size of the input embedding.

    Returns:
        per layer what went in and out, per layer and candidate what it saw, and the names of
        the decoder's direct norm children in the order they were called.
    """

    def factors(shape: torch.Size) -> torch.Tensor:
        """Per-token factors in [0.5, 2], log-uniform, the same for every call of one shape."""
        generator = torch.Generator().manual_seed(seed + 1 + shape.numel())
        return torch.exp((torch.rand(shape, generator=generator) * 2 - 1) * math.log(2.0))

    layer_probes = [LayerProbe() for _ in layers]
    projection_probes = {
        i: {name: ProjectionProbe() for name, _ in c} for i, c in candidates.items()
    }
    norm_calls: list[str] = []
    counter = [0]
    handles = []

    def layer_pre_hook(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor):
                layer_probes[index].inputs.append(_cpu64(hidden))

        return hook

    def layer_hook(index):
        def hook(module, args, kwargs, output):
            hidden = _first_tensor(output)
            if hidden is not None:
                layer_probes[index].outputs.append(_cpu64(hidden))

        return hook

    def projection_pre_hook(record: ProjectionProbe):
        def hook(module, args):
            z = args[0]
            if z.dim() >= 2:
                z = z * factors(z.shape[:-1]).to(z.device, z.dtype)[..., None]
            record.z.append(_cpu64(z))
            return (z, *args[1:])

        return hook

    def projection_hook(record: ProjectionProbe):
        def hook(module, args, output):
            counter[0] += 1
            record.order.append(counter[0])
            record.y.append(_cpu64(output))

        return hook

    silencing: set[int] = set()

    def attention_output_hook(index):
        def hook(module, args, output):
            tensor = _first_tensor(output)
            if tensor is not None:
                layer_probes[index]._attention_outputs.append(tensor)
                if layer_probes[index].attention_output is None:
                    layer_probes[index].attention_output = _cpu64(tensor)

        return hook

    def kept_norm_hook(index):  # a norm of the attention output is still the attention output
        def hook(module, args, output):
            derived = layer_probes[index]._attention_outputs
            if args and any(args[0] is tensor for tensor in derived):
                derived.append(_first_tensor(output))

        return hook

    def silenced_pre_hook(index, name):
        def hook(module, args, kwargs):
            derived = layer_probes[index]._attention_outputs
            given = [*args, *kwargs.values()]
            handed = any(any(item is tensor for tensor in derived) for item in given)
            if handed and name not in layer_probes[index].on_attention_path:
                layer_probes[index].on_attention_path.append(name)

        return hook

    def silence(module, args, kwargs, output):
        if id(module) in silencing:  # the zero-parameter call below comes through here too
            return None
        silencing.add(id(module))
        try:
            return _with_zero_parameters(module, args, kwargs)
        finally:
            silencing.discard(id(module))

    def norm_hook(name):
        def hook(module, args, output):
            norm_calls.append(name)

        return hook

    training = {module: module.training for module in decoder.modules()}
    try:
        for index, layer in enumerate(layers):
            handles.append(layer.register_forward_pre_hook(layer_pre_hook(index), with_kwargs=True))
            handles.append(layer.register_forward_hook(layer_hook(index), with_kwargs=True))
            for _, block in attention_blocks(layer):
                handles.append(block.register_forward_hook(attention_output_hook(index)))
            for path in silenced[index]:
                child = layer.get_submodule(path)
                handles.append(
                    child.register_forward_pre_hook(
                        silenced_pre_hook(index, path), with_kwargs=True
                    )
                )
                handles.append(child.register_forward_hook(silence, with_kwargs=True))
            for path, module in layer.named_modules():
                if path and is_norm(module) and not _inside(path, silenced[index]):
                    handles.append(module.register_forward_hook(kept_norm_hook(index)))
            for name, module in candidates.get(index, []):
                record = projection_probes[index][name]
                handles.append(module.register_forward_pre_hook(projection_pre_hook(record)))
                handles.append(module.register_forward_hook(projection_hook(record)))
        for name, child in decoder.named_children():
            if is_norm(child):
                handles.append(child.register_forward_hook(norm_hook(name)))
        decoder.eval()
        device = _input_device(decoder)
        ids = probe_ids(vocab_size, device, seed)
        with torch.no_grad():
            try:
                decoder(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            except TypeError:
                decoder(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.training = mode
        for probe in layer_probes:
            probe._attention_outputs.clear()
    return layer_probes, projection_probes, norm_calls


def _input_device(decoder: nn.Module) -> torch.device:
    get_embeddings = getattr(decoder, "get_input_embeddings", None)
    embeddings = get_embeddings() if get_embeddings is not None else None
    if embeddings is not None and getattr(embeddings, "weight", None) is not None:
        return embeddings.weight.device
    return next(decoder.parameters()).device


def tolerance(dtype: torch.dtype) -> float:
    """Relative error allowed on the worst probe token for a model in ``dtype``."""
    return RELATIVE_TOLERANCE.get(dtype, HALF_TOLERANCE)


@dataclass
class Fit:
    """How a layer's output depends on its input ``x`` and the projection output ``y``.

    ``output = a ⊙ x + c ⊙ G(y)`` where ``G`` is the identity (``post_norm`` is ``None``) or an
    RMS norm ``G(y) = γ ⊙ y / sqrt(mean(y²) + eps)``, ``c`` the factor the attention output
    reaches the layer's output with, and ``a`` the factor the residual stream itself is
    carried with: both 1 nearly always, scalars in a few models (Granite, Beam), one per
    channel in a few others (Doge). ``error`` is the worst token's relative error.
    """

    scale: float | torch.Tensor
    post_norm_name: str | None
    post_norm: nn.Module | None
    gain: torch.Tensor | None  # γ [d_model] float64, or None
    eps: float
    error: float
    stream_scale: float | torch.Tensor = 1.0


def rms_scale(y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-token ``1 / sqrt(mean(y²) + eps)``: ``[..., d] -> [..., 1]``."""
    return torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)


def token_error(
    update: torch.Tensor, predicted: torch.Tensor, hidden: torch.Tensor, dtype: torch.dtype
) -> float:
    """Worst token's ``‖update - predicted‖ / (‖update‖ + ‖predicted‖ + rounding)``.

    The rounding term (``8·ε_dtype·‖hidden‖``) is what subtracting two residual-stream
    vectors of that size loses in the model's dtype: an exact update is never refused for it.
    """
    resolution = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    difference = (update - predicted).norm(dim=-1)
    scale = update.norm(dim=-1) + predicted.norm(dim=-1) + 8 * resolution * hidden.norm(dim=-1)
    return float((difference / scale.clamp_min(1e-30)).max())


def _least_squares_scale(target: torch.Tensor, basis: torch.Tensor) -> float:
    denominator = float((basis * basis).sum())
    return float((target * basis).sum()) / denominator if denominator > 0 else 0.0


def _fit_one(
    output: torch.Tensor, hidden: torch.Tensor, basis: torch.Tensor, form: str
) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """``(c, a)`` of ``output ≈ a ⊙ hidden + c ⊙ basis`` by least squares, for the form:
    ``"plain"`` (``a = 1``, scalar ``c``), ``"scalar"`` (scalar ``a`` and ``c``), or
    ``"channel"`` (``a`` and ``c`` one per channel: layer-scale vectors, Doge's residual
    weights)."""
    if form == "plain":
        return _least_squares_scale(output - hidden, basis), 1.0
    if form == "scalar":
        gram = torch.tensor(
            [
                [float((hidden * hidden).sum()), float((hidden * basis).sum())],
                [float((hidden * basis).sum()), float((basis * basis).sum())],
            ],
            dtype=torch.float64,
        )
        rhs = torch.tensor(
            [[float((hidden * output).sum())], [float((basis * output).sum())]],
            dtype=torch.float64,
        )
        a, c = torch.linalg.lstsq(gram, rhs).solution[:, 0].tolist()
        return c, a
    sxx, sxu, suu = (hidden * hidden).sum(0), (hidden * basis).sum(0), (basis * basis).sum(0)
    sxo, suo = (hidden * output).sum(0), (basis * output).sum(0)
    det = (sxx * suu - sxu * sxu).clamp_min(1e-300)
    return (suo * sxx - sxo * sxu) / det, (sxo * suu - suo * sxu) / det


def fit_update(
    output: torch.Tensor,
    hidden: torch.Tensor,
    y: torch.Tensor,
    norms: list[tuple[str, nn.Module, torch.Tensor | None, float]],
    dtype: torch.dtype,
) -> list[Fit]:
    """Every model ``output ≈ a ⊙ hidden + c * G(y)`` tried, simplest first.

    Args:
        output: the layer's output ``[N, d]`` (float64), other sub-blocks silenced.
        hidden: the layer's input ``[N, d]``: the residual stream.
        y: the projection's output ``[N, d]`` recomputed from ``z`` (float64).
        norms: post-norm candidates ``(name, module, γ or None if not an RMS norm, eps)``.
        dtype: the model's dtype (for the rounding allowance).

    Returns:
        one :class:`Fit` per model, in order of simplicity: ``a = 1`` with each ``G``, then
        a scalar ``a``, then ``a`` per channel. The first within tolerance is the answer.
    """
    options: list[tuple[str | None, nn.Module | None, torch.Tensor | None, float]] = [
        (None, None, None, 0.0)
    ]
    options += [(name, module, gain, eps) for name, module, gain, eps in norms if gain is not None]
    fits = []
    for form in ("plain", "scalar", "channel"):
        for name, module, gain, eps in options:
            basis = y if gain is None else gain * y * rms_scale(y, eps)
            scale, stream_scale = _fit_one(output, hidden, basis, form)
            predicted = stream_scale * hidden + scale * basis
            error = token_error(output - hidden, predicted - hidden, hidden, dtype)
            fits.append(Fit(scale, name, module, gain, eps, error, stream_scale))
    return fits
