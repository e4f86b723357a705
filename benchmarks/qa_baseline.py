"""Unmodified-model QA metrics with the exact question set and settings of ``run_qa``."""

import json

from headpursuit import load_model
from headpursuit.evaluation.language import data
from headpursuit.evaluation.language.qa import score_questions

loaded = load_model()
_, eval_rows = data.split_countries(0)
questions = data.capital_to_country(eval_rows) + data.nontarget_questions(eval_rows, n_sums=20)
metrics, answers = score_questions(loaded, questions, max_new_tokens=12)
print(json.dumps(metrics))
for q, a in list(zip(questions, answers, strict=True))[:: max(1, len(questions) // 12)]:
    print(f"{q.category:8s} {q.question} -> {a!r} (gold {q.answers[0]})")
