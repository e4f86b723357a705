"""Rerun only the decoder layers an intervention can change.

Scaling heads of decoder layers ``>= l`` leaves layers ``< l`` untouched, so over the many
arms of one experiment on the same prompts (the selected heads, 20 matched controls at
the same layers, other α), the residual stream entering layer ``l`` is always the same.
:class:`LayerPrefixCache` records it on the first pass of each batch and later runs only
layers ``l, l + 1, ...``: the decoder's layer list is shortened for the call and the
recorded states are given as ``inputs_embeds``. On SmolLM2, whose specialised heads sit in
layers 18-29 of 30, that is a half to a quarter of the compute.

This relies on the decoder treating ``inputs_embeds`` as the input of its first listed
layer and on nothing in the loop depending on a layer's position in the list. Both are
checked, not assumed: the first time a layer is used as the start, the shortened pass is
compared with the full pass on the same batch, and a model where they differ is always
run in full from then on.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from ..models.architectures import AttentionSites
from ..models.loading import LoadedModel
from .hooks import steered_heads

#: Largest difference between the shortened and the full pass's logits, relative to the
#: logits' scale, for the shortened pass to be trusted (float32 round-off is ~1e-6).
AGREEMENT_RTOL = 1e-4


class LayerPrefixCache:
    """Hidden states entering the first steered layer, per batch of prompts.

    Args:
        loaded: the model.
        sites: its :class:`AttentionSites` if already built.
    """

    def __init__(self, loaded: LoadedModel, sites: AttentionSites | None = None):
        self.loaded = loaded
        self.sites = sites or AttentionSites(loaded.model)
        self.states: dict[tuple[Hashable, int], torch.Tensor] = {}
        self.trusted: dict[int, bool] = {}
        self.full_passes = 0
        self.short_passes = 0

    def start_layer(self) -> int:
        """Decoder-layer index of the first steered head now (0 when nothing is steered)."""
        heads = steered_heads(self.loaded.model)
        if not heads:
            return 0
        return min(self.sites.layers[h.layer].decoder_layer for h in heads)

    def last_logits(self, key: Hashable, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[batch, vocab]`` logits at the last position, under the interventions now active.

        Args:
            key: identifies the batch's prompts (the same key must mean the same inputs).
            batch: ``input_ids`` and ``attention_mask`` on the model's device.
        """
        start = self.start_layer()
        if start == 0 or self.trusted.get(start) is False:
            return self._full(batch, None)[0]
        cached = self.states.get((key, start))
        if cached is not None:
            return self._short(batch, cached, start)
        logits, states = self._full(batch, start)
        self.states[(key, start)] = states
        if start not in self.trusted:
            short = self._short(batch, states, start)
            scale = logits.abs().max().clamp_min(1.0)
            self.trusted[start] = bool((short - logits).abs().max() <= AGREEMENT_RTOL * scale)
        return logits

    def _layer_list(self) -> tuple[nn.Module, str, nn.ModuleList]:
        parent_name, _, attr = self.sites.layer_list_name.rpartition(".")
        parent = (
            self.sites.decoder.get_submodule(parent_name) if parent_name else self.sites.decoder
        )
        return parent, attr, getattr(parent, attr)

    def _full(
        self, batch: dict[str, torch.Tensor], start: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole forward pass; with ``start``, also the hidden states entering that layer."""
        recorded: list[torch.Tensor] = []
        handle = None
        if start is not None:
            layer = self._layer_list()[2][start]

            def record(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
                hidden = args[0] if args else kwargs["hidden_states"]
                recorded.append(hidden.detach().clone())

            handle = layer.register_forward_pre_hook(record, with_kwargs=True)
        try:
            logits = last_position_logits(self.loaded.model, batch)
        finally:
            if handle is not None:
                handle.remove()
        self.full_passes += 1
        return logits, (recorded[0] if recorded else None)

    def _short(
        self, batch: dict[str, torch.Tensor], states: torch.Tensor, start: int
    ) -> torch.Tensor:
        """Only layers ``start, ...``, from the recorded hidden states."""
        parent, attr, layers = self._layer_list()
        setattr(parent, attr, nn.ModuleList(list(layers)[start:]))
        try:
            inputs = {"inputs_embeds": states, "attention_mask": batch["attention_mask"]}
            logits = last_position_logits(self.loaded.model, inputs)
        finally:
            setattr(parent, attr, layers)
        self.short_passes += 1
        return logits


def last_position_logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[batch, vocab]`` float32 logits at the last position (only those are computed where
    the model supports ``logits_to_keep``)."""
    with torch.inference_mode():
        try:
            logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
        except TypeError:  # a model without logits_to_keep
            logits = model(**inputs, use_cache=False).logits[:, -1]
    return logits.float()
