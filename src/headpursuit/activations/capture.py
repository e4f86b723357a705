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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.architectures import AttentionSites, image_token_id
from ..models.loading import LoadedModel
from .prompts import adds_special_tokens, format_prompts, has_chat_template
from .store import Activations

POOLINGS = ("mean", "all", "last", "image", "text")


class _PoolingHooks:
    """Forward hooks on every layer's output projection that pool its input per sample."""

    def __init__(self, sites: AttentionSites, out: torch.Tensor):
        self.sites = sites
        self.out = out  # [n, L, H, dh]
        self.weights: torch.Tensor | None = None  # [B, T] pooling weights, rows sum to 1
        self.rows: torch.Tensor | None = None  # [B] sample indices of the batch
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
            self.out[self.rows, layer, :n_heads, :head_dim] = pooled.view(
                -1, n_heads, head_dim
            ).cpu()

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
    """Run prompts (and images) through the model and pool each head's output.

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
    model = loaded.model
    sites = AttentionSites(model)
    texts = format_prompts(loaded.tokenizer, prompts, chat)
    wrapped = chat and has_chat_template(loaded.tokenizer)
    n = len(texts)
    out = torch.zeros(n, sites.n_layers, sites.n_heads, sites.head_dim)
    image_token = image_token_id(loaded)

    # Text-only batches are sorted by length so that little compute goes into padding.
    if images is None and masks is None:
        lengths = [len(t) for t in texts]
        order = sorted(range(n), key=lambda i: -lengths[i])
    else:
        order = list(range(n))

    hooks = _PoolingHooks(sites, out)
    bar = tqdm(total=n, desc="capture", unit="prompt", disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                batch_texts = [texts[i] for i in rows]
                batch = encode_batch(
                    loaded,
                    batch_texts,
                    None if images is None else [images[i] for i in rows],
                    max_length,
                    chat=chat,
                    contents=[prompts[i] for i in rows] if wrapped and images is None else None,
                )
                if masks is not None:
                    chosen = _mask_positions(batch["attention_mask"], [masks[i] for i in rows])
                else:
                    chosen = pooling_positions(batch, pooling, image_token)
                hooks.rows = torch.tensor(rows)
                hooks.weights = _pool_weights(chosen, [prompts[i] for i in rows])
                inputs = {
                    key: value.to(loaded.device)
                    for key, value in batch.items()
                    if key not in ("special_tokens_mask", "content_mask")
                }
                model.base_model(**inputs, use_cache=False)
                bar.update(len(rows))
    finally:
        hooks.remove()
        bar.close()
    return Activations(
        pooled=out,
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        pooling="mask" if masks is not None else pooling,
        d_model=sites.d_model,
        prompts=list(prompts),
    )


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
