"""headpursuit: find the attention heads that specialise in a concept, and edit the model through them.

The pipeline, one sub-package per stage, data flowing one way::

    models       load_model, AttentionSites          -> a model and where its heads are
    activations  capture                              -> Activations (pooled z per head)
    ranking      rank_heads, explain_heads, controls  -> HeadRanking, Explanation
    steering     steer, compare_generations           -> SteeringRun
    evaluation   the paper's experiments              -> experiment results
    report       write_report                         -> one HTML file

See the README for a tour.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ArtifactError,
    ConceptError,
    DegenerateDataError,
    InputError,
    ModelLoadError,
    UnsupportedArchitectureError,
    UserError,
)

if TYPE_CHECKING:
    from .activations import Activations, capture, read_prompts
    from .heads import Head, as_heads, parse_head
    from .io import load_artifact
    from .models import (
        ARCHITECTURES,
        MODELS,
        ArchitectureSpec,
        AttentionSites,
        LoadedModel,
        image_token_id,
        load_model,
        register_architecture,
        weights_fingerprint,
    )
    from .ranking import (
        BUILTIN_CONCEPTS,
        CRITERIA,
        Concept,
        Explanation,
        HeadExplanation,
        HeadRanking,
        SOMPResult,
        concept_from_words,
        draw_controls,
        explain_heads,
        head_somp,
        jaccard,
        logit_lens,
        matched_controls,
        rank_heads,
        resolve_concept,
        somp,
        somp_factored,
        word_token_ids,
    )
    from .report import write_report
    from .steering import SteeringRun, compare_generations, generate, steer


# Everything but the errors is imported on first use (PEP 562), so that `import
# headpursuit` and the command line start without torch: the CLI installs its Ctrl-C and
# SIGTERM handling before the heavy imports, and `--help` is quick.
_LAZY = {
    **dict.fromkeys(["Activations", "capture", "read_prompts"], "activations"),
    **dict.fromkeys(["Head", "as_heads", "parse_head"], "heads"),
    "load_artifact": "io",
    **dict.fromkeys(
        [
            "ARCHITECTURES",
            "MODELS",
            "ArchitectureSpec",
            "AttentionSites",
            "LoadedModel",
            "image_token_id",
            "load_model",
            "register_architecture",
            "weights_fingerprint",
        ],
        "models",
    ),
    **dict.fromkeys(
        [
            "BUILTIN_CONCEPTS",
            "CRITERIA",
            "Concept",
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
            "rank_heads",
            "resolve_concept",
            "somp",
            "somp_factored",
            "word_token_ids",
        ],
        "ranking",
    ),
    "write_report": "report",
    **dict.fromkeys(["SteeringRun", "compare_generations", "generate", "steer"], "steering"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'headpursuit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ARCHITECTURES",
    "BUILTIN_CONCEPTS",
    "CRITERIA",
    "MODELS",
    "Activations",
    "ArchitectureSpec",
    "ArtifactError",
    "AttentionSites",
    "Concept",
    "ConceptError",
    "DegenerateDataError",
    "Explanation",
    "Head",
    "HeadExplanation",
    "HeadRanking",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "SOMPResult",
    "SteeringRun",
    "UnsupportedArchitectureError",
    "UserError",
    "__version__",
    "as_heads",
    "capture",
    "compare_generations",
    "concept_from_words",
    "draw_controls",
    "explain_heads",
    "generate",
    "head_somp",
    "image_token_id",
    "jaccard",
    "load_artifact",
    "load_model",
    "logit_lens",
    "matched_controls",
    "parse_head",
    "rank_heads",
    "read_prompts",
    "register_architecture",
    "resolve_concept",
    "somp",
    "somp_factored",
    "steer",
    "weights_fingerprint",
    "word_token_ids",
    "write_report",
]
