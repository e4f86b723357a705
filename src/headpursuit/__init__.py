"""headpursuit: find the attention heads that specialise in a concept, and edit the model through them.

The pipeline, one module per stage::

    load_model -> capture -> (somp / logit_lens) -> rank_heads -> steer

See the README for a tour.
"""

from ._version import __version__
from .architectures import (
    ARCHITECTURES,
    ArchitectureSpec,
    AttentionSites,
    UnsupportedArchitectureError,
    image_token_id,
    register_architecture,
)
from .capture import Activations, ArtifactError, capture
from .comparison import SteeringRun, compare_generations
from .concepts import BUILTIN_CONCEPTS, Concept, ConceptError, concept_from_words, resolve_concept
from .explain import Explanation, HeadExplanation, explain_heads
from .loading import LoadedModel, ModelLoadError, load_model, weights_fingerprint
from .pursuit import SOMPResult, logit_lens, somp, somp_factored
from .ranking import Head, HeadRanking, head_somp, jaccard, matched_controls, parse_head, rank_heads
from .steering import steer

__all__ = [
    "ARCHITECTURES",
    "BUILTIN_CONCEPTS",
    "Activations",
    "ArchitectureSpec",
    "ArtifactError",
    "AttentionSites",
    "Concept",
    "ConceptError",
    "Explanation",
    "Head",
    "HeadExplanation",
    "HeadRanking",
    "LoadedModel",
    "ModelLoadError",
    "SOMPResult",
    "SteeringRun",
    "UnsupportedArchitectureError",
    "__version__",
    "capture",
    "compare_generations",
    "concept_from_words",
    "explain_heads",
    "head_somp",
    "image_token_id",
    "jaccard",
    "load_model",
    "logit_lens",
    "matched_controls",
    "parse_head",
    "rank_heads",
    "register_architecture",
    "resolve_concept",
    "somp",
    "somp_factored",
    "steer",
    "weights_fingerprint",
]
