"""Prompts in: text, JSONL and Hugging Face dataset sources, and the chat-template wrapping.

:func:`read_prompts` is the one reader of prompt sources for every command and task.
:func:`format_prompts` wraps prompts in a tokenizer's chat template as one user turn; a
tokenizer without a template gets the plain prompts and one notice.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError


class NoChatTemplateWarning(UserWarning):
    """Chat formatting was asked for, but the tokenizer has no chat template."""


def read_prompts(
    source: str | Path,
    *,
    column: str | None = None,
    split: str = "train",
    limit: int | None = None,
) -> list[str]:
    """Prompts from a text file (one per line), a JSONL file (``column``), or a dataset.

    A ``datasets`` source is a local dataset directory (``save_to_disk`` output) or a hub
    name; both need ``column``. In text files, blank lines and lines starting with ``#``
    are skipped. Every prompt must be a non-empty string.

    Args:
        limit: keep only the first ``limit`` prompts (at least 1).
    """
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}.")
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix in (".jsonl", ".json"):
            prompts = _read_jsonl(path, column)
        else:
            prompts = _read_lines(path)
    elif path.is_dir() or not (path.suffix or text.startswith((".", "/", "~"))):
        prompts = _read_dataset(text, column, split)
    else:
        raise InputError(f"No prompts file at {text}.")
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise InputError(f"No prompts in {text}.")
    return prompts


def _read_lines(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text: {error}.") from error
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _read_jsonl(path: Path, column: str | None) -> list[str]:
    if column is None:
        raise InputError(f"{path} is JSONL: name the text field with --column.")
    prompts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text: {error}.") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number} is not JSON: {error}.") from error
        if not isinstance(record, dict) or column not in record:
            raise InputError(f"{path}:{number} has no field {column!r}.")
        prompts.append(_prompt_text(record[column], f"{path}:{number} field {column!r}"))
    return prompts


def _prompt_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} must be non-empty text, found {value!r}.")
    return value


def _read_dataset(source: str, column: str | None, split: str) -> list[str]:
    try:
        import datasets
    except ImportError as error:
        raise InputError(
            f"{source!r} is not a file; reading it as a Hugging Face dataset needs the "
            "`datasets` package: pip install 'headpursuit[datasets]'."
        ) from error
    if column is None:
        raise InputError(f"Name the dataset's text column with --column (reading {source!r}).")
    path = Path(source)
    saved = [path / "dataset_dict.json", path / "state.json"]
    try:
        if path.is_dir() and any(marker.exists() for marker in saved):
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset(source, split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as error:
        raise InputError(f"Cannot read dataset {source!r}: {error}") from error
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise InputError(f"Dataset {source!r} has no split {split!r}: {list(data)}.")
        data = data[split]
    if column not in data.column_names:
        raise InputError(f"Dataset {source!r} has no column {column!r}: {data.column_names}.")
    return [
        _prompt_text(x, f"{source} row {i} column {column!r}") for i, x in enumerate(data[column])
    ]


def bundled_prompts(name: str = "demo") -> list[str]:
    """A prompt list shipped with the package (``data/prompts/<name>.txt``)."""
    text = resources.files("headpursuit").joinpath("data", "prompts", f"{name}.txt")
    lines = text.read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[str]:
    """Wrap prompts in the tokenizer's chat template (one user turn + the assistant cue).

    With ``chat`` and a tokenizer that has no template, the prompts are returned as they
    are and a :class:`NoChatTemplateWarning` is issued once.
    """
    if not chat:
        return list(prompts)
    if not has_chat_template(tokenizer):
        warnings.warn(
            "This model has no chat template; its prompts are used as plain text.",
            NoChatTemplateWarning,
            stacklevel=2,
        )
        return list(prompts)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        for prompt in prompts
    ]


def adds_special_tokens(chat: bool, tokenizer: Any) -> bool:
    """Whether to let the tokenizer add BOS/EOS: not when a chat template already wrote them."""
    return not (chat and has_chat_template(tokenizer))
