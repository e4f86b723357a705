"""Running the (possibly steered) model on prompts: greedy batched generation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..activations.prompts import adds_special_tokens, format_prompts
from ..errors import InputError
from ..models.loading import LoadedModel
from .prefix import LayerPrefixCache, last_position_logits


def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 12,
    chat: bool = True,
    batch_size: int = 32,
    images: Sequence[Any] | None = None,
) -> tuple[list[str], list[str]]:
    """Greedy batched generation with left padding (chat template by default).

    Args:
        images: one image per prompt for a vision-language model (the processor then
            encodes each batch; prompts must already contain the image token).

    Returns:
        (the formatted prompts fed to the model, the decoded continuations).
    """
    tokenizer, model = loaded.tokenizer, loaded.model
    if images is not None and loaded.processor is None:
        raise InputError(f"{loaded.model_id!r} is not a vision-language model; drop the images.")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    texts = format_prompts(tokenizer, prompts, chat)
    add_special = adds_special_tokens(chat, tokenizer)
    device = loaded.device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch_texts = texts[start : start + batch_size]
            if images is None:
                batch = tokenizer(
                    batch_texts, return_tensors="pt", padding=True, add_special_tokens=add_special
                )
            else:
                batch = loaded.processor(
                    images=list(images[start : start + batch_size]),
                    text=batch_texts,
                    padding=True,
                    return_tensors="pt",
                )
            batch = {key: value.to(device) for key, value in batch.items()}
            with torch.inference_mode():
                ids = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = ids[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
    return texts, [o.strip() for o in outputs]


@torch.inference_mode()
def next_token_logprobs(
    loaded: LoadedModel,
    prompts: Sequence[str],
    groups: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
    chat: bool = False,
    prefix: LayerPrefixCache | None = None,
) -> torch.Tensor:
    """Teacher-forced scoring: log-probability of each answer group as the next token.

    One forward pass per batch of prompts (left-padded; only the last position's logits
    are computed where the model supports it). A group is a set of token ids that spell
    the same answer (``" grey"``, ``" gray"``, ``" Grey"``); its log-probability is the
    log-sum-exp of its members'.

    Args:
        prompts: n texts (formatted with the chat template if ``chat``).
        groups: G lists of token ids.
        prefix: reuse the hidden states below the first steered layer across calls with
            the same prompts (:class:`~headpursuit.steering.prefix.LayerPrefixCache`).

    Returns:
        ``[n, G]`` float32 log-probabilities.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    if not groups or any(not g for g in groups):
        raise InputError("Every answer group needs at least one token id.")
    tokenizer, model = loaded.tokenizer, loaded.model
    texts = format_prompts(tokenizer, prompts, chat)
    add_special = adds_special_tokens(chat, tokenizer)
    width = max(len(g) for g in groups)
    index = torch.tensor([list(g) + [g[0]] * (width - len(g)) for g in groups])  # [G, w]
    valid = torch.tensor([[i < len(g) for i in range(width)] for g in groups])  # [G, w]
    # Batches of similar length waste little compute on padding; rows are put back in order.
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=add_special).input_ids]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                [texts[i] for i in order[start : start + batch_size]],
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special,
            )
            batch = {key: value.to(loaded.device) for key, value in batch.items()}
            if prefix is None:
                logits = last_position_logits(model, batch)
            else:
                key = (add_special, *(texts[i] for i in order[start : start + batch_size]))
                logits = prefix.last_logits(key, batch)
            logprobs = torch.log_softmax(logits, dim=-1).cpu()  # [b, V]
            picked = logprobs[:, index].masked_fill(~valid, -torch.inf)  # [b, G, w]
            out.append(torch.logsumexp(picked, dim=-1))
    finally:
        tokenizer.padding_side = old_side
    result = torch.empty(len(texts), len(groups))
    result[torch.tensor(order)] = torch.cat(out)
    return result
