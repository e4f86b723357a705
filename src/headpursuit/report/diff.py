"""Word-level differences between two generations, for highlighting what steering changed.

Texts are cut into words (runs of letters/digits) and single punctuation marks, each
keeping the whitespace before it; :class:`difflib.SequenceMatcher` aligns the two word
lists. Whitespace alone never counts as a change.
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])(?:\s+$)?|\s+$")


@dataclass(frozen=True)
class Piece:
    """A stretch of one text: ``text`` (with its leading whitespace) and whether it changed."""

    text: str
    changed: bool


def words(text: str) -> list[str]:
    """``text`` cut into words and punctuation marks, each with its leading whitespace.

    Trailing whitespace joins the last word (a text of whitespace only is one piece), so
    ``"".join(words(text)) == text`` always holds.
    """
    return _TOKEN.findall(text)


def word_diff(before: str, after: str) -> tuple[list[Piece], list[Piece]]:
    """Align two texts word by word.

    Returns:
        ``(old, new)``: ``before`` and ``after`` as pieces; in ``old`` a changed piece is a
        word that ``after`` dropped or replaced, in ``new`` one that ``after`` inserted or
        replaced. Joining each side's ``text`` gives the input back.
    """
    old, new = words(before), words(after)
    matcher = difflib.SequenceMatcher(
        None, [w.strip() for w in old], [w.strip() for w in new], autojunk=False
    )
    old_pieces: list[Piece] = []
    new_pieces: list[Piece] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        same = tag == "equal"
        old_pieces += [Piece(w, not same and bool(w.strip())) for w in old[i1:i2]]
        new_pieces += [Piece(w, not same and bool(w.strip())) for w in new[j1:j2]]
    return old_pieces, new_pieces


def changed_fraction(before: str, after: str) -> float:
    """Share of words not shared by the two texts: ``1 - 2 M / (|before| + |after|)``.

    ``M`` is the number of words :func:`word_diff` matches; 0 for identical texts, 1 when
    no word survives. Two empty texts give 0.
    """
    old = [w.strip() for w in words(before) if w.strip()]
    new = [w.strip() for w in words(after) if w.strip()]
    if not old and not new:
        return 0.0
    matched = sum(
        block.size
        for block in difflib.SequenceMatcher(None, old, new, autojunk=False).get_matching_blocks()
    )
    return 1.0 - 2.0 * matched / (len(old) + len(new))


def pieces_html(pieces: list[Piece], css_class: str) -> str:
    """Pieces as escaped HTML; changed words wrapped in ``<mark class="css_class">``.

    The whitespace around a word stays outside the mark.
    """
    out = []
    for piece in pieces:
        if not piece.changed:
            out.append(html.escape(piece.text))
            continue
        word = piece.text.strip()
        start = piece.text.index(word)
        before, after = piece.text[:start], piece.text[start + len(word) :]
        marked = f'<mark class="{css_class}">{html.escape(word)}</mark>'
        out.append(html.escape(before) + marked + html.escape(after))
    return "".join(out)


def diff_html(before: str, after: str) -> tuple[str, str]:
    """``(before, after)`` as HTML: dropped words marked ``hp-del``, new ones ``hp-ins``."""
    old, new = word_diff(before, after)
    return pieces_html(old, "hp-del"), pieces_html(new, "hp-ins")
