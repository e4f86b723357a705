"""The paper's language experiments: country QA, concept-word frequency, amplification.

Each task selects heads on data disjoint from its evaluation data, then compares the
selected heads with logit-lens-selected heads, matched random controls (several seeds)
and the unmodified model, for several head counts k and interventions.
"""

from ...steering.generation import generate
from .amplify import run_amplify
from .metrics import (
    continuation_perplexity,
    count_words,
    exact_match,
    heldout_split,
    normalize_answer,
    token_f1,
    word_frequency,
)
from .qa import run_qa
from .selection import (
    METHODS,
    TaskResult,
    heads_for_percent,
    parse_intervention,
    select_ranking,
)
from .wordfreq import run_wordfreq

__all__ = [
    "METHODS",
    "TaskResult",
    "continuation_perplexity",
    "count_words",
    "exact_match",
    "generate",
    "heads_for_percent",
    "heldout_split",
    "normalize_answer",
    "parse_intervention",
    "run_amplify",
    "run_qa",
    "run_wordfreq",
    "select_ranking",
    "token_f1",
    "word_frequency",
]
