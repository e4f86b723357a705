"""The ranking stage: SOMP over the unembedding, concepts, head rankings, controls, explanations.

* :mod:`~headpursuit.ranking.pursuit` -- SOMP and the logit lens (pure tensor math).
* :mod:`~headpursuit.ranking.concepts` -- word lists to token ids.
* :mod:`~headpursuit.ranking.criteria` -- ``rank_heads`` under a named criterion.
* :mod:`~headpursuit.ranking.head_ranking` -- the :class:`HeadRanking` artifact.
* :mod:`~headpursuit.ranking.controls` -- matched random control heads, Jaccard overlaps.
* :mod:`~headpursuit.ranking.explain` -- heads described in tokens (SOMP vs logit lens).
"""

from .concepts import BUILTIN_CONCEPTS, Concept, concept_from_words, resolve_concept, word_token_ids
from .controls import ControlDraw, draw_controls, jaccard, matched_controls, random_jaccard
from .criteria import CRITERIA, DEFAULT_CRITERION, rank_heads
from .explain import Explanation, HeadExplanation, explain_heads
from .head_ranking import HeadRanking, head_somp
from .pursuit import SOMPResult, logit_lens, somp, somp_factored

__all__ = [
    "BUILTIN_CONCEPTS",
    "CRITERIA",
    "DEFAULT_CRITERION",
    "Concept",
    "ControlDraw",
    "Explanation",
    "HeadExplanation",
    "HeadRanking",
    "SOMPResult",
    "concept_from_words",
    "draw_controls",
    "explain_heads",
    "head_somp",
    "jaccard",
    "logit_lens",
    "matched_controls",
    "random_jaccard",
    "rank_heads",
    "resolve_concept",
    "somp",
    "somp_factored",
    "word_token_ids",
]
