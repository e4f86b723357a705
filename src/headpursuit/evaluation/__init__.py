"""The evaluation stage: the paper's experiments as runnable tasks.

* :mod:`~headpursuit.evaluation.language` -- question answering, concept-word frequency.
* :mod:`~headpursuit.evaluation.vision` -- image classification and captioning on VLMs.
"""
