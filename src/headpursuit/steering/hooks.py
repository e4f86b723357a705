"""Interventions on heads during forward passes and generation.

:func:`steer` scales the chosen heads' slices of the attention output projection's input
by α (−1 flips, 0 ablates, 5 amplifies), or replaces them by a fixed vector (mean
ablation), at all positions or only at prompt, generated or image positions. Scaling
before the projection scales exactly the head's contribution to the residual stream
(through a post-attention norm too, up to that norm's per-token rescaling, which the
model recomputes as it would for any input).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from ..errors import InputError
from ..heads import Head, HeadLike, as_heads, check_heads
from ..models.architectures import AttentionSites, image_token_id

POSITIONS = ("all", "prompt", "generated", "image", "text")


class _PositionTracker:
    """A pre-hook on the top model that records which positions of the current call count."""

    def __init__(self, positions: str, image_token_id: int | None):
        self.positions = positions
        self.image_token_id = image_token_id
        self.mask: torch.Tensor | None = None  # [B, T] bool for the current call

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        reference = input_ids if input_ids is not None else embeds
        if reference is None:
            raise InputError("steer(positions=...) needs input_ids or inputs_embeds in the call.")
        shape = reference.shape[:2]
        cache = kwargs.get("past_key_values")
        is_prompt = cache is None or _cache_length(cache) == 0
        if self.positions == "prompt":
            mask = torch.full(shape, is_prompt)
        elif self.positions == "generated":
            mask = torch.full(shape, not is_prompt)
        else:  # image / text positions are only in the prompt
            if input_ids is None:
                raise InputError(f"positions={self.positions!r} needs input_ids in the call.")
            is_image = input_ids == self.image_token_id
            mask = is_image if self.positions == "image" else ~is_image
        self.mask = mask.to(reference.device)


def _cache_length(cache) -> int:
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2]) if len(cache) else 0


#: (model, heads) of every ``steer`` block open in this context, innermost last.
_STEERED: ContextVar[tuple[tuple[nn.Module, tuple[Head, ...]], ...]] = ContextVar(
    "headpursuit_steered", default=()
)


def steered_heads(model: nn.Module) -> list[Head]:
    """The heads of ``model`` under intervention in the current context (open ``steer`` blocks).

    Lets an evaluator know which layers an intervention can change, e.g. to reuse the
    hidden states below the first steered layer (:class:`~headpursuit.steering.prefix.LayerPrefixCache`).
    """
    return [head for owner, heads in _STEERED.get() for head in heads if owner is model]


#: ``edit(z, head)`` gets a head's slice ``[batch, tokens, head_dim]`` and returns its new value.
HeadEdit = Callable[[torch.Tensor, int], torch.Tensor]


@contextmanager
def steer(
    model: nn.Module,
    heads: Iterable[HeadLike],
    alpha: float = -1.0,
    *,
    positions: str = "all",
    replacement: torch.Tensor | None = None,
    edit: HeadEdit | None = None,
    sites: AttentionSites | None = None,
) -> Iterator[None]:
    """Intervene on heads inside a ``with`` block; hooks are removed on exit and on errors.

    Args:
        model: the model (a plain forward pass or ``model.generate`` both work).
        heads: :class:`~headpursuit.Head`, ``(layer, head)`` pairs or ``"L3H5"`` strings.
        alpha: scale of the heads' outputs (any finite float; 1 leaves outputs unchanged).
        positions: "all" (the paper), "prompt" (positions of the prompt, i.e. the first
            call of generation), "generated" (positions of generated tokens, i.e. later
            calls), "image" or "text" (image-token positions of a VLM prompt, or the rest).
        replacement: optional ``[n_layers, n_heads, head_dim]`` values (e.g. dataset means of
            the pooled head outputs): the chosen heads' outputs become
            ``alpha * replacement[l, h]`` instead of ``alpha * z`` (mean ablation at α = 1).
        edit: optional ``edit(z, head_index)`` applied to each chosen head's slice
            ``[batch, tokens, head_dim]`` instead of scaling (any function of the slice).
        sites: the model's :class:`AttentionSites` if already built.
    """
    if positions not in POSITIONS:
        raise InputError(f"Unknown positions {positions!r}; choose one of {', '.join(POSITIONS)}.")
    if not math.isfinite(float(alpha)):
        raise InputError(f"alpha must be a finite number, got {alpha}.")
    if edit is not None and replacement is not None:
        raise InputError("Give a replacement or an edit function, not both.")
    sites = sites or AttentionSites(model)
    heads = as_heads(heads)
    check_heads(heads, sites.n_layers, sites.n_heads)
    if replacement is not None:
        expected = (sites.n_layers, sites.n_heads, sites.head_dim)
        if tuple(replacement.shape) != expected:
            raise InputError(
                f"replacement must have shape {list(expected)}, got {list(replacement.shape)}."
            )
    image_token = image_token_id(model)
    if positions in ("image", "text") and image_token is None:
        raise InputError(f"positions={positions!r} needs a vision-language model.")
    tracker = None if positions == "all" else _PositionTracker(positions, image_token)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for head in heads:
        by_layer[head.layer].append(head.head)
    handles = []
    token = _STEERED.set((*_STEERED.get(), (model, tuple(heads))))
    try:
        if tracker is not None:
            handles.append(model.register_forward_pre_hook(tracker, with_kwargs=True))
        for layer, layer_heads in by_layer.items():
            if edit is None:
                hook = _scale_hook(sites, layer, layer_heads, alpha, replacement, tracker)
            else:
                hook = _edit_hook(sites, layer, layer_heads, edit, tracker)
            handles.append(sites.layers[layer].out_proj.register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        _STEERED.reset(token)


def _scale_hook(
    sites: AttentionSites,
    layer: int,
    heads: list[int],
    alpha: float,
    replacement: torch.Tensor | None,
    tracker: _PositionTracker | None,
):
    site = sites.layers[layer]  # this layer's heads; replacement is on the padded grid
    width = site.n_heads * site.head_dim
    chosen = torch.zeros(site.n_heads, dtype=torch.bool)
    chosen[heads] = True
    chosen = chosen.repeat_interleave(site.head_dim)  # [F]
    if replacement is None:
        scale = torch.where(chosen, torch.tensor(float(alpha)), torch.tensor(1.0))
        offset = None
    else:
        scale = torch.where(chosen, torch.tensor(0.0), torch.tensor(1.0))
        offset = torch.where(
            chosen,
            float(alpha)
            * replacement[layer, : site.n_heads, : site.head_dim].reshape(width).float(),
            torch.tensor(0.0),
        )
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def hook(module, args):
        z = args[0]
        key = (z.device, z.dtype)
        if key not in cache:
            cache[key] = (
                scale.to(z.device, z.dtype),
                None if offset is None else offset.to(z.device, z.dtype),
            )
        layer_scale, layer_offset = cache[key]
        steered = z * layer_scale if layer_offset is None else z * layer_scale + layer_offset
        if tracker is not None:
            steered = torch.where(tracker.mask[..., None], steered, z)
        return (steered, *args[1:])

    return hook


def _edit_hook(
    sites: AttentionSites,
    layer: int,
    heads: list[int],
    edit: HeadEdit,
    tracker: _PositionTracker | None,
):
    dh = sites.layers[layer].head_dim

    def hook(module, args):
        z = args[0]
        steered = z.clone()
        for head in heads:
            part = z[..., head * dh : (head + 1) * dh]
            new = edit(part, head)
            if new.shape != part.shape:
                raise InputError(
                    f"edit returned shape {list(new.shape)} for a head slice of {list(part.shape)}."
                )
            steered[..., head * dh : (head + 1) * dh] = new
        if tracker is not None:
            steered = torch.where(tracker.mask[..., None], steered, z)
        return (steered, *args[1:])

    return hook
