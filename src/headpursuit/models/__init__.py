"""The model stage: load a model, and find where its attention heads live.

* :mod:`~headpursuit.models.loading` -- ``load_model`` (short names, hub ids, directories,
  GGUF files), dtype and device handling, weight fingerprints.
* :mod:`~headpursuit.models.zoo` -- the models that Python packages carry, by short name.
* :mod:`~headpursuit.models.architectures` -- the attention-output sites of a model.
* :mod:`~headpursuit.models.tiny_vlm` -- the small LLaVA trained here.
"""

from .architectures import (
    ARCHITECTURES,
    ArchitectureSpec,
    AttentionSites,
    image_token_id,
    register_architecture,
)
from .loading import LoadedModel, load_model, weights_fingerprint
from .zoo import MODELS

__all__ = [
    "ARCHITECTURES",
    "MODELS",
    "ArchitectureSpec",
    "AttentionSites",
    "LoadedModel",
    "image_token_id",
    "load_model",
    "register_architecture",
    "weights_fingerprint",
]
