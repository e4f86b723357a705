"""The paper's language experiments: fact QA, concept-word frequency, amplification.

Each task ranks heads on data disjoint from its evaluation data, then runs
:func:`~headpursuit.evaluation.experiment.run_experiment`: the selected heads against the
unmodified model, other rankings' heads and at least 20 matched random control head sets,
for several head counts k and scales α, with bootstrap CIs and control p-values.
"""

from ...steering.generation import generate
from ..experiment import heads_for_percent
from .amplify import run_amplify
from .metrics import (
    continuation_perplexities,
    continuation_perplexity,
    count_words,
    exact_match,
    heldout_split,
    normalize_answer,
    token_f1,
    word_counts,
    word_frequency,
)
from .qa import run_qa
from .wordfreq import WordTask, run_wordfreq, split_prompts, word_task

__all__ = [
    "WordTask",
    "continuation_perplexities",
    "continuation_perplexity",
    "count_words",
    "exact_match",
    "generate",
    "heads_for_percent",
    "heldout_split",
    "normalize_answer",
    "run_amplify",
    "run_qa",
    "run_wordfreq",
    "split_prompts",
    "token_f1",
    "word_counts",
    "word_frequency",
    "word_task",
]
