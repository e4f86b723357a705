"""Metrics for the language tasks: answer F1/EM, held-out word splits, word counts, perplexity."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ...errors import InputError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD/TriviaQA normalisation: lower case, drop punctuation and articles, collapse spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, answer: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Token-level F1 of a prediction against the best-matching answer alias."""
    if not answers:
        raise InputError("A question needs at least one answer.")
    return max(_f1(prediction, answer) for answer in answers)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised alias, else 0.0."""
    if not answers:
        raise InputError("A question needs at least one answer.")
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(answer) for answer in answers))


def heldout_split(
    words: Sequence[str], *, train_fraction: float = 0.7, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Deterministic split of unique words into (selection, held-out) lists.

    The words are de-duplicated (first spelling kept), sorted, shuffled with ``seed`` and
    cut at ``round(train_fraction * n)``; both parts are returned sorted. The same words and
    seed always give the same split, whatever their input order.
    """
    if not 0.0 < train_fraction < 1.0:
        raise InputError(f"train_fraction must be in (0, 1), got {train_fraction}.")
    unique = sorted(dict.fromkeys(w.strip() for w in words if w.strip()))
    if len(unique) < 2:
        raise InputError("Need at least two words to split.")
    random.Random(seed).shuffle(unique)
    cut = min(max(round(train_fraction * len(unique)), 1), len(unique) - 1)
    return sorted(unique[:cut]), sorted(unique[cut:])


def _word_pattern(words: Iterable[str]) -> re.Pattern[str]:
    alternatives = sorted({re.escape(w.lower()) for w in words if w.strip()}, key=len, reverse=True)
    if not alternatives:
        raise InputError("No words to count.")
    # Word boundaries that also treat letters/digits on either side as part of the word.
    return re.compile(r"(?<![\w])(?:" + "|".join(alternatives) + r")(?![\w])", re.IGNORECASE)


def count_words(text: str, words: Iterable[str]) -> int:
    """Occurrences of any of ``words`` in ``text`` as whole words, case-insensitively.

    "red" counts in "Red roses, red." (2) but not in "reddish" or "bored". Multi-word
    entries ("light blue") are matched as phrases; the longest alternative wins.
    """
    return len(_word_pattern(words).findall(text))


def word_counts(texts: Sequence[str], words: Iterable[str]) -> np.ndarray:
    """``[n]`` occurrences of any of ``words`` in each text (as :func:`count_words`)."""
    pattern = _word_pattern(words)
    return np.array([len(pattern.findall(t)) for t in texts], dtype=np.float64)


def word_frequency(texts: Sequence[str], words: Iterable[str]) -> float:
    """Concept-word occurrences per generated text (mean over ``texts``)."""
    if not texts:
        return 0.0
    pattern = _word_pattern(words)
    return sum(len(pattern.findall(t)) for t in texts) / len(texts)


@torch.inference_mode()
def continuation_nll(
    loaded, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Negative log-likelihood of each continuation given its prompt, under the model.

    Prompts are the exact strings that were fed to generation (chat template applied), and
    continuations the decoded generated text; only continuation tokens are scored. An empty
    continuation (the model ended its turn at once) is scored as the end-of-sequence token
    alone, so that it counts as unlikely rather than as missing. Call it outside any
    :func:`~headpursuit.steer` block to score with the unmodified model.

    Returns:
        ``nll``: ``[n]`` the summed negative log-likelihood of each continuation's tokens;
        ``tokens``: ``[n]`` how many tokens were scored (0 only for an empty continuation
        of a tokenizer without an end-of-sequence token).
    """
    if len(prompts) != len(continuations):
        raise InputError("One continuation per prompt.")
    tokenizer, model = loaded.tokenizer, loaded.model
    device = next(model.parameters()).device
    nll = np.zeros(len(prompts))
    tokens = np.zeros(len(prompts), dtype=np.int64)
    for start in range(0, len(prompts), batch_size):
        rows: list[int] = []
        ids_list: list[list[int]] = []
        starts: list[int] = []
        for offset, (prompt, cont) in enumerate(
            zip(
                prompts[start : start + batch_size],
                continuations[start : start + batch_size],
                strict=True,
            )
        ):
            p = tokenizer.encode(prompt, add_special_tokens=False)
            c = tokenizer.encode(cont, add_special_tokens=False)
            if not c and tokenizer.eos_token_id is not None:
                c = [tokenizer.eos_token_id]
            if not c:
                continue
            rows.append(start + offset)
            ids_list.append(p + c)
            starts.append(len(p))
        if not ids_list:
            continue
        width = max(len(ids) for ids in ids_list)
        pad = tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids_list), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width), dtype=torch.long)
        for row, ids in enumerate(ids_list):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [b, T-1, vocab]
        targets = input_ids[:, 1:].to(device)
        picked = logprobs.gather(-1, targets[..., None])[..., 0]  # [b, T-1]
        for row, ids in enumerate(ids_list):
            # Token t is predicted at position t - 1.
            scored = picked[row, starts[row] - 1 : len(ids) - 1]
            nll[rows[row]] = -float(scored.double().sum())
            tokens[rows[row]] = scored.numel()
    return nll, tokens


def continuation_perplexity(
    loaded, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 16
) -> float:
    """Perplexity of all ``continuations`` together given their ``prompts`` (a fluency proxy):
    ``exp`` of the mean negative log-likelihood over every continuation token (see
    :func:`continuation_nll`); NaN when there is no token at all."""
    nll, tokens = continuation_nll(loaded, prompts, continuations, batch_size=batch_size)
    if tokens.sum() == 0:
        return float("nan")
    return float(np.exp(nll.sum() / tokens.sum()))


def continuation_perplexities(
    loaded, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 16
) -> np.ndarray:
    """``[n]`` the perplexity of each continuation given its prompt (see
    :func:`continuation_nll`; NaN only where nothing could be scored)."""
    nll, tokens = continuation_nll(loaded, prompts, continuations, batch_size=batch_size)
    out = np.full(len(prompts), np.nan)
    scored = tokens > 0
    out[scored] = np.exp(nll[scored] / tokens[scored])
    return out
