"""Greedy batched generation, shared by the steering comparison and the tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .capture import format_prompts
from .loading import LoadedModel


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
        raise ValueError(f"{loaded.model_id!r} is not a vision-language model.")
    texts = format_prompts(tokenizer, prompts, chat)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch_texts = texts[start : start + batch_size]
            if images is None:
                batch = tokenizer(
                    batch_texts, return_tensors="pt", padding=True, add_special_tokens=not chat
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
