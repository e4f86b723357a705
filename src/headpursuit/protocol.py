"""The default protocol: the ranking criterion and the intervention scale that the library,
the CLI and the demo use unless told otherwise.

Both were chosen on the dev split of the fact questions of the three real models by
``scripts/choose_protocol.py`` (its evidence: docs/protocol.md; a test holds these values to
``results/protocol.json``).
Kept here, free of heavy imports, so that the CLI can show them in ``--help``.
"""

from __future__ import annotations

#: Ranking criterion (see :mod:`headpursuit.ranking.criteria`).
DEFAULT_CRITERION = "specificity"
#: Scale of the chosen heads' outputs: −1 flips them, as the paper does (0 would ablate).
DEFAULT_ALPHA = -1.0
