"""The steering stage: interventions on heads, generation, side-by-side comparisons.

* :mod:`~headpursuit.steering.hooks` -- ``steer``: scale, replace or edit heads' outputs.
* :mod:`~headpursuit.steering.generation` -- greedy batched generation.
* :mod:`~headpursuit.steering.comparison` -- unmodified vs steered vs matched controls.
"""

from .comparison import SteeringRun, compare_generations
from .generation import generate
from .hooks import POSITIONS, steer

__all__ = ["POSITIONS", "SteeringRun", "compare_generations", "generate", "steer"]
