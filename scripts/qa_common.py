"""What scripts/choose_protocol.py and scripts/qa_results.py share: one capture of the dev
questions and one ranking per (model, concept, criterion), cached under results/qa/<model>/.

Both scripts rank heads on the same dev questions, so the rankings are computed once and
read back (they are HeadRanking artifacts, checked against the model's fingerprint).
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "qa"
#: The three real models of the language results, by short name.
MODELS = ("smollm2-135m", "qwen2.5-0.5b", "gemma-3-270m")
_DEV_ACTIVATIONS: dict[str, object] = {}
_LENS_TOP: dict[str, object] = {}  # model -> its logit-lens top tokens (any concept)


def dev_rankings(
    loaded, name: str, concept: str, criteria: list[str], log=print
) -> dict[str, object]:
    """``criterion -> HeadRanking`` of ``concept``'s heads on the dev questions (cached)."""
    from headpursuit.evaluation.language.qa import capture_questions, rank_concept
    from headpursuit.ranking.head_ranking import HeadRanking

    folder = RESULTS / name / "rankings"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {}
    for criterion in dict.fromkeys(criteria):
        path = folder / f"{concept}_{criterion}.json"
        if path.exists():
            ranking = HeadRanking.load(path)
            if ranking.fingerprint == loaded.fingerprint:
                out[criterion] = ranking
                continue
        if name not in _DEV_ACTIVATIONS:
            start = time.perf_counter()
            _DEV_ACTIVATIONS[name] = capture_questions(loaded, "dev")
            log(
                f"{name}: captured {_DEV_ACTIVATIONS[name].n_samples} dev questions in "
                f"{time.perf_counter() - start:.0f} s"
            )
        activations = _DEV_ACTIVATIONS[name]
        start = time.perf_counter()
        top = None
        if criterion == "logit_lens":
            if name not in _LENS_TOP:
                from headpursuit.models.architectures import AttentionSites
                from headpursuit.ranking.criteria import logit_lens_top_tokens

                sites = AttentionSites(loaded.model)
                _LENS_TOP[name] = logit_lens_top_tokens(activations, sites, sites.unembedding())
            top = _LENS_TOP[name]
        ranking = rank_concept(loaded, activations, concept, criterion, lens_top_tokens=top)
        ranking.save(path)
        log(f"{name}: ranked {concept} by {criterion} in {time.perf_counter() - start:.0f} s")
        out[criterion] = ranking
    return out
