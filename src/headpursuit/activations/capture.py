"""Capture each head's pooled output over a dataset, in head space.

For layer l and head h, ``z_{l,h}`` is the head's slice of the attention output
projection's input (TransformerLens's ``hook_z``). Pooling over positions is linear, so
the pooled ``z`` (n × head_dim per head) is stored and multiplied by the head's slice of
W_O only on demand: ``head_dim / d_model`` of the memory of per-head residual vectors.

For architectures with a post-attention norm (Gemma 2/3), each token's ``z`` is scaled by
that norm's per-token factor ``1 / rms_t(attention output)`` before pooling, so that
``pooled_z @ (γ ⊙ W_O,h)ᵀ`` is exactly the head's pooled contribution to the residual.
The projection's bias belongs to no head and is not stored.

Which positions are pooled (``pooling``):

* ``"mean"`` (default): the tokens of the text the user wrote. Chat-template scaffolding
  (system turn, role markers, the assistant cue) and special tokens (BOS, EOS, padding)
  are left out; the positions are found from the tokenizer's character offsets.
* ``"all"``: every non-padding position, scaffolding and special tokens included.
* ``"last"``: the last non-padding position.
* ``"image"`` / ``"text"``: a VLM prompt's image-token positions, or its other
  non-special positions.

:func:`capture` returns the activations in memory. :func:`capture_to_disk` streams them
into an artifact directory a shard at a time (memory flat in n), resumes an interrupted
capture, and splits the work between processes under ``torchrun`` / ``accelerate
launch`` (see :mod:`headpursuit.activations.shards` for the format).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import DegenerateDataError, InputError
from ..models.architectures import AttentionSites, image_token_id
from ..models.loading import LoadedModel
from . import shards
from .prompts import adds_special_tokens, format_prompts, has_chat_template
from .store import Activations

POOLINGS = ("mean", "all", "last", "image", "text")


class _PoolingHooks:
    """Forward hooks on every layer's output projection that pool its input per sample."""

    def __init__(self, sites: AttentionSites):
        self.sites = sites
        self.out: torch.Tensor | None = None  # [B, L, H, dh] the batch's pooled outputs
        self.weights: torch.Tensor | None = None  # [B, T] pooling weights, rows sum to 1
        self.handles = [
            site.out_proj.register_forward_hook(self._hook(site.index)) for site in sites.layers
        ]

    def _hook(self, layer: int):
        eps = self.sites.post_norm_eps(layer)
        site = self.sites.layers[layer]
        has_post_norm = site.post_norm is not None
        n_heads, head_dim = site.n_heads, site.head_dim  # this layer's; the grid is padded

        def hook(module, args, output):
            z = args[0]
            weights = self.weights.to(z.device)
            if has_post_norm:
                scale = torch.rsqrt(output.float().pow(2).mean(-1) + eps)  # [B, T]
                weights = weights * scale
            pooled = torch.einsum("bt,btf->bf", weights, z.float())
            self.out[:, layer, :n_heads, :head_dim] = pooled.view(-1, n_heads, head_dim).cpu()

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def pooling_positions(
    batch: dict[str, torch.Tensor], pooling: str, image_token: int | None
) -> torch.Tensor:
    """Which positions to average, ``[B, T]`` bool, from an :func:`encode_batch` output."""
    valid = batch["attention_mask"].bool()
    special = batch.get("special_tokens_mask")
    plain = valid if special is None else valid & ~special.bool()
    if pooling == "mean":
        content = batch.get("content_mask")
        return plain if content is None else plain & content.bool()
    if pooling == "all":
        return valid
    if pooling == "last":
        chosen = torch.zeros_like(valid)
        last = valid.long().cumsum(-1).argmax(-1)
        chosen[torch.arange(len(valid)), last] = True
        return chosen
    if pooling in ("image", "text"):
        if image_token is None:
            raise InputError(f"pooling={pooling!r} needs a vision-language model.")
        is_image = batch["input_ids"] == image_token
        return valid & is_image if pooling == "image" else plain & ~is_image
    raise InputError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")


def _pool_weights(chosen: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Rows of ``chosen`` ``[B, T]`` as averaging weights; an empty row is an error."""
    counts = chosen.sum(-1, keepdim=True)
    empty = (counts[:, 0] == 0).nonzero()[:, 0].tolist()
    if empty:
        raise InputError(
            f"Nothing to pool in prompt {prompts[empty[0]]!r} (no position of the chosen kind, "
            "e.g. an empty prompt or no image token); fix the prompt or choose another --pooling."
        )
    return chosen.float() / counts


def _content_mask(
    tokenizer: Any, texts: Sequence[str], contents: Sequence[str], offsets: torch.Tensor
) -> torch.Tensor:
    """``[B, T]`` True where a token lies inside the user's text within the formatted text.

    The user's text is found in the formatted text by its last occurrence (after any
    system turn); tokens are matched by their character offsets.
    """
    mask = torch.zeros(offsets.shape[:2], dtype=torch.bool)
    for row, (text, content) in enumerate(zip(texts, contents, strict=True)):
        start = text.rfind(content)
        if start < 0:
            stripped = content.strip()
            start, content = text.rfind(stripped), stripped
        if start < 0:
            raise InputError(
                f"The chat template changed the prompt {content[:60]!r}, so its tokens cannot "
                "be told from the template's; capture with --pooling all or without --chat."
            )
        end = start + len(content)
        begin, finish = offsets[row, :, 0], offsets[row, :, 1]
        mask[row] = (finish > begin) & (begin >= start) & (finish <= end)
    return mask


def encode_batch(
    loaded: LoadedModel,
    texts: list[str],
    images: list[Any] | None,
    max_length: int,
    *,
    chat: bool = False,
    contents: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize a batch with right padding (and process images for a VLM).

    Returns ``input_ids``, ``attention_mask`` (and the processor's image tensors), plus two
    masks used only for pooling: ``special_tokens_mask`` and, when ``contents`` (the user's
    texts inside ``texts``) are given for a text-only batch, ``content_mask``.
    """
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    add_special = adds_special_tokens(chat, tokenizer)
    if images is not None:
        if loaded.processor is None:
            raise InputError(
                f"{loaded.model_id!r} is not a vision-language model; drop the images."
            )
        # One list of images per prompt: the form every image-text processor accepts
        # (Gemma-3's and Idefics3's refuse a flat list for a batch of prompts).
        nested = [[image] for image in images]
        batch = dict(loaded.processor(images=nested, text=texts, padding=True, return_tensors="pt"))
        ids = batch["input_ids"]
        special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
        image_id = image_token_id(loaded)
        special = torch.isin(ids, special_ids)
        if image_id is not None:
            special &= ids != image_id
        batch["special_tokens_mask"] = special
        return batch
    encoded = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=max_length,
        add_special_tokens=add_special,
        return_special_tokens_mask=True,
        return_offsets_mapping=contents is not None,
        return_tensors="pt",
    )
    batch = {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        # Template markers written as text (e.g. "<|im_start|>") are special tokens too.
        "special_tokens_mask": encoded["special_tokens_mask"].bool()
        | torch.isin(encoded["input_ids"], torch.tensor(sorted(set(tokenizer.all_special_ids)))),
    }
    if contents is not None:
        batch["content_mask"] = _content_mask(tokenizer, texts, contents, encoded["offset_mapping"])
    return batch


class _Runner:
    """Runs batches of prompts through the model and returns their pooled head outputs."""

    def __init__(
        self,
        loaded: LoadedModel,
        prompts: Sequence[str],
        images: Sequence[Any] | None,
        pooling: str,
        masks: Sequence[torch.Tensor] | None,
        max_length: int,
        chat: bool,
    ):
        self.loaded = loaded
        self.sites = AttentionSites(loaded.model)
        self.prompts = prompts
        self.texts = format_prompts(loaded.tokenizer, prompts, chat)
        self.wrapped = chat and has_chat_template(loaded.tokenizer)
        self.images, self.pooling, self.masks = images, pooling, masks
        self.max_length, self.chat = max_length, chat
        self.image_token = image_token_id(loaded)
        self.hooks = _PoolingHooks(self.sites)

    @property
    def row_shape(self) -> tuple[int, int, int]:
        """``(n_layers, n_heads, head_dim)``: the shape of one sample's pooled outputs.

        ``head_dim`` is the largest over the layers: a layer with smaller heads fills the
        leading part of each head's slot and the rest stays zero.
        """
        return self.sites.n_layers, self.sites.n_heads, self.sites.head_dim

    def order(self, rows: Sequence[int]) -> list[int]:
        """``rows`` in processing order: text-only prompts longest first (little padding)."""
        if self.images is None and self.masks is None:
            return sorted(rows, key=lambda i: -len(self.texts[i]))
        return list(rows)

    def run(self, rows: list[int]) -> torch.Tensor:
        """Pooled head outputs of prompts ``rows``: ``[len(rows), L, H, head_dim]`` float32."""
        loaded, images = self.loaded, self.images
        batch = encode_batch(
            loaded,
            [self.texts[i] for i in rows],
            None if images is None else [images[i] for i in rows],
            self.max_length,
            chat=self.chat,
            contents=[self.prompts[i] for i in rows] if self.wrapped and images is None else None,
        )
        if self.masks is not None:
            chosen = _mask_positions(batch["attention_mask"], [self.masks[i] for i in rows])
        else:
            chosen = pooling_positions(batch, self.pooling, self.image_token)
        self.hooks.weights = _pool_weights(chosen, [self.prompts[i] for i in rows])
        self.hooks.out = torch.zeros(len(rows), *self.row_shape)
        inputs = {
            key: value.to(loaded.device)
            for key, value in batch.items()
            if key not in ("special_tokens_mask", "content_mask")
        }
        with torch.inference_mode():
            loaded.model.base_model(**inputs, use_cache=False)
        out, self.hooks.out = self.hooks.out, None
        return out

    def close(self) -> None:
        self.hooks.remove()


def _settings(loaded: LoadedModel, batch_size: int, max_length: int, chat: bool) -> dict:
    """The capture settings stored with the activations."""
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    return {"max_length": max_length, "chat": chat, "batch_size": batch_size, "model_dtype": dtype}


def capture(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    images: Sequence[Any] | None = None,
    pooling: str = "mean",
    masks: Sequence[torch.Tensor] | None = None,
    batch_size: int = 16,
    max_length: int = 512,
    chat: bool = False,
    progress: bool = True,
) -> Activations:
    """Run prompts (and images) through the model and pool each head's output, in memory.

    For more prompts than fit in memory, :func:`capture_to_disk` writes shards as it goes.

    Args:
        loaded: the model, from :func:`~headpursuit.load_model`.
        prompts: n texts. For VLMs each must contain the processor's image token.
        images: n images (PIL or arrays) for a VLM, else ``None``.
        pooling: which positions to average (see the module doc): "mean" over the text the
            user wrote (default), "all", "last", and for VLMs "image" (the paper's choice)
            or "text".
        masks: optional per-prompt boolean masks over the tokens of the prompt as
            tokenized (with ``chat``), choosing the positions to average; overrides ``pooling``.
        batch_size, max_length: batching and truncation of the prompts.
        chat: wrap each prompt in the chat template as a user turn (a model without a
            template gets plain prompts and a notice).
        progress: show a progress bar.

    Returns:
        :class:`Activations` with ``pooled`` of shape ``[n, n_layers, n_heads, head_dim]``.
    """
    _check_capture_args(prompts, images, masks, pooling, batch_size, max_length)
    runner = _Runner(loaded, prompts, images, pooling, masks, max_length, chat)
    n = len(prompts)
    out = torch.zeros(n, *runner.row_shape)
    order = runner.order(range(n))
    bar = tqdm(total=n, desc="capture", unit="prompt", disable=not progress)
    try:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            batch = runner.run(rows)
            _refuse_non_finite(batch, rows, prompts, "no activations were returned")
            out[rows] = batch
            bar.update(len(rows))
    finally:
        runner.close()
        bar.close()
    return Activations(
        pooled=out,
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        pooling="mask" if masks is not None else pooling,
        d_model=runner.sites.d_model,
        prompts=list(prompts),
        settings=_settings(loaded, batch_size, max_length, chat),
    )


def capture_to_disk(
    loaded: LoadedModel,
    prompts: Sequence[str],
    out: str | os.PathLike[str],
    *,
    pooling: str = "mean",
    batch_size: int = 16,
    max_length: int = 512,
    chat: bool = False,
    shard_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Capture into the artifact directory ``out``, a shard at a time; resume if interrupted.

    Memory stays flat whatever n: one shard ``[shard_size, L, H, head_dim]`` float32 and
    one batch are held at a time, and each shard is written (atomically) as soon as it is
    full. Running the same call again after an interruption computes only the shards that
    are missing; a partial artifact made with other prompts, weights, pooling or settings
    is refused (see :func:`~headpursuit.activations.shards.prepare`).

    Several processes: under ``torchrun`` / ``accelerate launch`` with a process group
    initialised (:func:`headpursuit.distributed.init_from_env`), every process runs this
    with the same arguments; rank 0 prepares the directory, the missing shards are dealt
    out in turn (shard i of the missing list to process ``i mod world_size``), every
    process writes its own shard files, and rank 0 marks the artifact complete once all
    are written. ``out`` must be on a file system every process sees.

    Args:
        loaded, prompts, pooling, batch_size, max_length, chat, progress: as for
            :func:`capture` (text prompts only).
        out: the artifact directory (created; an empty directory or an artifact is fine).
        shard_size: rows per shard (default: about 128 MiB of float32 per shard).

    Returns:
        ``out`` as a :class:`~pathlib.Path`; read it with :meth:`Activations.load` or
        :meth:`Activations.open`.
    """
    from .. import distributed

    _check_capture_args(prompts, None, None, pooling, batch_size, max_length)
    if shard_size is not None and shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}.")
    out = shards.check_output(out)
    current = distributed.world()
    runner = _Runner(loaded, prompts, None, pooling, None, max_length, chat)
    layers, heads, head_dim = runner.row_shape
    plan = shards.Plan(
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        pooling=pooling,
        d_model=runner.sites.d_model,
        shape=(len(prompts), layers, heads, head_dim),
        shard_size=shard_size or shards.default_shard_size(layers, heads, head_dim),
        prompts_sha256=shards.prompts_digest(prompts),
        settings=_settings(loaded, batch_size, max_length, chat),
    )
    entries = plan.entries()
    try:

        def prepare() -> tuple[list[int], bool]:
            missing = shards.prepare(out, plan, prompts)
            return missing, not missing and shards.read_meta(out).complete

        # Rank 0 decides for everyone, so that all processes reach the same collectives.
        missing, already_complete = distributed.on_main(prepare)
        mine = missing[current.rank :: current.size]
        rows_total = sum(entries[i].stop - entries[i].start for i in mine)
        show = progress and bool(mine) and current.is_main  # one bar: rank 0's share
        bar = tqdm(total=rows_total, desc="capture", unit="prompt", disable=not show)

        def work() -> dict[int, str]:
            digests = {}
            for index in mine:
                entry = entries[index]
                buffer = torch.zeros(entry.stop - entry.start, layers, heads, head_dim)
                order = runner.order(range(entry.start, entry.stop))
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    buffer[[r - entry.start for r in rows]] = runner.run(rows)
                    bar.update(len(rows))
                _check_finite(buffer, entry, prompts)
                digests[index] = shards.write_shard(
                    out / entry.file, buffer, plan.shard_metadata(entry)
                )
            return digests

        try:
            written = distributed.agree(work)
        finally:
            bar.close()
    finally:
        runner.close()
    if not already_complete:
        digests = {k: v for part in distributed.all_gather(written) for k, v in part.items()}
        distributed.on_main(lambda: shards.finalize(out, plan, digests))
    return out


def _refuse_non_finite(
    values: torch.Tensor, rows: Sequence[int], prompts: Sequence[str], consequence: str
) -> None:
    """Raise :class:`DegenerateDataError` naming the first prompt whose head outputs are NaN/inf.

    Args:
        values: ``[len(rows), ...]`` pooled head outputs of one batch or shard.
        rows: the prompt index of each row of ``values``.
        consequence: what was not kept, for the message ("this shard was not saved").
    """
    bad = (~torch.isfinite(values.reshape(values.shape[0], -1))).any(-1).nonzero()
    if len(bad):
        row = int(rows[int(bad[0, 0])])
        raise DegenerateDataError(
            f"The model's head outputs for prompt {row} ({prompts[row][:60]!r}) overflowed to "
            f"NaN or inf; {consequence}. Capture with --dtype float32 or bfloat16."
        )


def _check_finite(buffer: torch.Tensor, entry: shards.ShardEntry, prompts: Sequence[str]) -> None:
    """Refuse a shard with NaN/inf head outputs before it is written."""
    rows = range(entry.start, entry.start + buffer.shape[0])
    _refuse_non_finite(buffer, rows, prompts, "this shard was not saved")


def _mask_positions(attention_mask: torch.Tensor, masks: Sequence[torch.Tensor]) -> torch.Tensor:
    valid = attention_mask.bool()
    chosen = torch.zeros_like(valid)
    for row, mask in enumerate(masks):
        positions = valid[row].nonzero().squeeze(-1)
        if mask.numel() != positions.numel():
            raise InputError(
                f"Pooling mask {row} has {mask.numel()} entries but the prompt has "
                f"{positions.numel()} tokens; give one boolean per prompt token."
            )
        chosen[row, positions] = mask.bool().to(valid.device)
    return chosen


def _check_capture_args(
    prompts: Sequence[str],
    images: Sequence[Any] | None,
    masks: Sequence[torch.Tensor] | None,
    pooling: str,
    batch_size: int,
    max_length: int,
) -> None:
    if not prompts:
        raise InputError("No prompts to capture.")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise InputError(
            f"Prompt {bad[0]} is {prompts[bad[0]]!r}; every prompt must be non-empty text."
        )
    if images is not None and len(images) != len(prompts):
        raise InputError(f"{len(images)} images for {len(prompts)} prompts; give one each.")
    if masks is not None and len(masks) != len(prompts):
        raise InputError(f"{len(masks)} pooling masks for {len(prompts)} prompts; give one each.")
    if masks is None and pooling not in POOLINGS:
        raise InputError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    if max_length < 1:
        raise InputError(f"max_length must be at least 1, got {max_length}.")
