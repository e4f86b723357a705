"""Why Fashion-MNIST and the textures select the same heads: rank them with parts of their
dictionaries (7 min on 2 cores beside a training run; never in CI)::

    .venv/bin/python scripts/vlm_dictionary_check.py

On the tiny VLM the two sets' top 3, 5 and 8 heads are the same (docs/results.md, Jaccard),
though their class names share one token. Most of both answers are several tokens long, so
most of both dictionaries are first pieces of words and single letters. This script splits
each set's dictionary (``concept_token_ids`` of its class names) into the tokens that are a
whole class word and the rest (fragments), adds a dictionary of capital letters that
neither set uses, and ranks the set's selection images (the same 40 ``select`` images and
criterion as ``scripts/vlm_experiments.py``) with each. For each it prints, and writes to
``--out``, the top 8 heads and their Jaccard overlap at k = 3, 5, 8 with the top-k of the
set's full dictionary, beside the overlap expected for two random head sets.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path
from statistics import fmean
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SETS = ("fashion", "dtd_like")
KS = (3, 5, 8)


def split_dictionary(
    tokenizer: Any, token_ids: list[int], class_names: list[str]
) -> tuple[list[int], list[int]]:
    """Split a class-name dictionary into (whole-word tokens, fragments): a token is whole
    when, stripped and lowercased, it is one of the class names or one of their words (the
    spellings ``concept_token_ids`` looks up)."""
    from headpursuit.evaluation.vision.classify import name_and_words

    words = {w.lower() for name in class_names for w in name_and_words(name)}
    is_whole = [tokenizer.decode([i]).strip().lower() in words for i in token_ids]
    whole = [i for i, keep in zip(token_ids, is_whole, strict=True) if keep]
    return whole, [i for i, keep in zip(token_ids, is_whole, strict=True) if not keep]


def unused_letters(tokenizer: Any, used: set[str]) -> list[int]:
    """Single-token capital letters (bare and after a space) whose letter is not a token of
    any dictionary in ``used`` (decoded and stripped)."""
    ids = []
    for letter in string.ascii_uppercase:
        if letter in used:
            continue
        for spelling in (letter, " " + letter):
            tokens = tokenizer(spelling, add_special_tokens=False).input_ids
            if len(tokens) == 1:
                ids.append(tokens[0])
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-select", type=int, default=40, help="selection images per set")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "vlm_dictionaries.json")
    args = parser.parse_args()
    if args.n_select < 1:
        parser.error(f"--n-select {args.n_select}: must be at least 1")
    from headpursuit.errors import InputError
    from headpursuit.io import check_writable, write_json

    try:
        check_writable(args.out, what="--out")
    except InputError as error:
        parser.error(str(error))

    import headpursuit as hp
    from headpursuit.evaluation.vision import data
    from headpursuit.evaluation.vision.classify import (
        concept_token_ids,
        image_activations,
        rank_image_heads,
    )
    from headpursuit.ranking.controls import jaccard, random_jaccard

    loaded = hp.load_model("tiny-vlm")
    tokenizer = loaded.tokenizer
    names = {s: list(data.get_dataset(s).class_names) for s in SETS}
    full = {s: concept_token_ids(loaded, names[s], s) for s in SETS}
    used = {tokenizer.decode([i]).strip() for s in SETS for i in full[s]}
    letters = unused_letters(tokenizer, used)
    sets: dict[str, Any] = {}
    for name in SETS:
        print(f"Capturing {args.n_select} '{name}' selection images...", flush=True)
        activations = image_activations(loaded, data.load_split(name, "select", args.n_select))
        whole, fragments = split_dictionary(tokenizer, full[name], names[name])
        dictionaries = {
            "full": full[name],
            "whole words": whole,
            "fragments": fragments,
            "unused capital letters": letters,
        }
        rows: dict[str, Any] = {}
        reference = None  # the full dictionary's ranking (ranked first)
        for label, ids in dictionaries.items():
            ranking = rank_image_heads(loaded, activations, ids, concept=f"{name}: {label}")
            if reference is None:
                reference = ranking
            overlap = {k: jaccard(ranking.top(k), reference.top(k)) for k in KS}
            rows[label] = {
                "tokens": [tokenizer.decode([i]) for i in ids],
                "top": [str(h) for h in ranking.top(max(KS))],
                "jaccard_with_full": overlap,
            }
            shown = ", ".join(f"k={k} {v:.2f}" for k, v in overlap.items())
            print(f"{name} × {label} ({len(ids)} tokens): {' '.join(rows[label]['top'])}; {shown}")
        sets[name] = rows
    n_heads = reference.n_heads_total
    null_mean = {k: fmean(random_jaccard(n_heads, k, k)) for k in KS}
    print(f"random head sets of k of {n_heads}: mean Jaccard {null_mean}")
    shared = set(full[SETS[0]]) & set(full[SETS[1]])
    report = {
        "n_select": args.n_select,
        "null_mean": null_mean,
        "shared_tokens": sorted(tokenizer.decode([i]) for i in shared),
        "sets": sets,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
