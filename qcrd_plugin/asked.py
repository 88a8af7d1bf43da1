"""What a question asks for, as the number reader uses it: the asked sentence and words, whether it
asks a comparison, who it asks about, and the parts of one asked count ("How many tomatoes and
potatoes ...?").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from .quantities import quantities, singular, split_sentences, unit_quantities

# What a question asks for: the words after its last "how many"/"how much", up to its verb.
_ASKED = re.compile(r"\bhow\s+(?:many|much)\s+([^?.,;]*)", re.IGNORECASE)
_ASKED_END = re.compile(
    r"\b(?:do|does|did|are|is|was|were|will|would|can|could|should|has|have|had|must|in|on|at|for)\b", re.IGNORECASE
)
# Words of a question's asked phrase that name no unit ("how many more", "in total").
_NOT_A_UNIT = frozenset(
    "a an the in on at of for to and or by per each more less left total altogether now then so this that is are was"
    " were".split()
)


def asked_words(question: str) -> tuple[str, ...]:
    """The words naming what a question asks for, singular: "How many blue marbles do they have in
    all?" -> ("blue", "marble"); () when it has no "how many" or "how much"."""
    return _unit_words(_asked_phrase(question))


def _asked_phrase(question: str) -> str:
    """The words after a question's last "how many"/"how much", up to its verb ("" without one)."""
    matches = list(_ASKED.finditer(question or ""))
    return _ASKED_END.split(matches[-1].group(1), maxsplit=1)[0] if matches else ""


def _unit_words(phrase: str) -> tuple[str, ...]:
    return tuple(singular(w) for w in re.findall(r"[a-z]+", phrase.lower()) if w not in _NOT_A_UNIT)


# What the asked sentence compares ("How many more ...", "How much farther ..."): a quantity said as
# "79 more raisin cookies than chocolate chip" answers only such a question.
_COMPARISON = re.compile(
    r"\b(?:more|fewer|less|farther|further|longer|shorter|taller|older|younger|difference)\b", re.IGNORECASE
)
_LEFT = re.compile(r"\b(?:left|remain\w*)\b", re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r",(?!\d{3}\b)|;|\band\b|\bbut\b|\bwhile\b")  # never the comma of "1,200"
# Capitalised words that open questions and clauses rather than name a person.
_NOT_A_NAME = frozenset(
    "How If What Which When Where Who Why Then After Before During In On At The A An I He She It They We You His"
    " Her Its Their Our Your This That These Those There Each Every Some All Both Now So But And Mr Mrs Ms Dr"
    " Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August"
    " September October November December".split()
)


# Units by what they measure, for a question that asks a measure without naming its unit ("How much
# farther until they reach the end of the cave?"): a closing quantity of another measure (the time
# it takes) does not answer it.
_MEASURES = {
    "length": frozenset("mile feet foot ft meter metre kilometer km yard inch centimeter cm".split()),
    "time": frozenset("second minute hour day week month year min hr".split()),
}
_ASKED_MEASURE = (
    ("length", re.compile(r"\bhow\s+(?:far|much\s+(?:farther|further))\b", re.IGNORECASE)),
    # "how long will it take ...", "how long would the money last him?"; not "How long is the last piece?"
    (
        "time",
        re.compile(
            r"\bhow\s+long\b[^?]*\b(?:take|takes|took|taking)\b|\bhow\s+long\b[^?]*\blasts?\b(?:\s+(?:him|her|them|us|you|me))?\s*\??\s*$"
            r"|\bhow\s+much\s+time\b",
            re.IGNORECASE,
        ),
    ),
)


def measure_of(unit: tuple[str, ...]) -> str:
    """What a quantity with ``unit`` measures ("length", "time"), "" when its unit names neither."""
    return next((name for name, units in _MEASURES.items() if unit and unit[0] in units), "")


@dataclass(frozen=True)
class AskedFor:
    """What a question asks for, as the number reader uses it (:func:`asked_for`).

    ``words``: :func:`asked_words`; ``sentence``: the sentence that asks, from its last "how" (SVAMP
    runs a statement into it: "Then he bought 37 more cookies How many ...?"); ``compares``: whether
    it asks a comparison; ``left``: whether it asks what is left (not in a condition: "... if she
    still has 92 games left?" does not); ``people``: the question's capitalised words that can name someone (not
    "How", "He", "Monday", ...); ``owners``: those in the asked sentence; ``parts``: the things
    joined by "and" when one count of several is asked ("How many tomatoes and potatoes ...?" ->
    ({"tomatoe"}, {"potatoe"})); ``measure``: what a question asks to measure without naming a unit
    ("How far ...?", "How much farther ...?" -> "length"; "How long will it take ...?" -> "time"),
    "" otherwise."""

    words: tuple[str, ...] = ()
    sentence: str = ""
    compares: bool = False
    left: bool = False
    people: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    parts: tuple[frozenset[str], ...] = ()
    measure: str = ""


@lru_cache(maxsize=4096)  # a pool reads each question once per sample (10 for MCC-KD)
def asked_for(question: str) -> AskedFor:
    """What ``question`` asks for (:class:`AskedFor`); empty fields for an empty question."""
    sentences = split_sentences(question)
    asking = [s for s in sentences if "?" in s or re.search(r"\bhow\b", s, re.IGNORECASE)]
    sentence = (asking or sentences or [""])[-1]
    how = list(re.finditer(r"\bhow\b", sentence, re.IGNORECASE))
    sentence = sentence[how[-1].start() :] if how else sentence
    people = frozenset(w for w in re.findall(r"\b[A-Z][a-z]+\b", question or "") if w not in _NOT_A_NAME)
    phrase = _asked_phrase(question)
    sides = [frozenset(_unit_words(side)) for side in re.split(r"\band\b", phrase, flags=re.IGNORECASE)]
    asking = re.split(r"\b(?:if|so that|when|after|given)\b", sentence, flags=re.IGNORECASE)[0]
    return AskedFor(
        words=_unit_words(phrase),
        sentence=sentence,
        compares=bool(_COMPARISON.search(sentence)),
        left=bool(_LEFT.search(asking)),
        people=people,
        owners=_names(sentence, people),
        parts=tuple(side for side in sides if side) if len(sides) > 1 else (),
        measure=next((name for name, pattern in _ASKED_MEASURE if pattern.search(sentence)), ""),
    )


def _names(text: str, people: frozenset[str]) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"\b[A-Z][a-z]+\b", text) if w in people)


def said_of_asked(sentence: str, asked: AskedFor) -> set | None:
    """The quantities of ``sentence`` (with its commas) said of what is asked, when its clauses say
    different things: of the one person asked about ("Steven has 19 peaches, Jill has 6 peaches,
    and Jake has 1 peach" asked Jill -> {6}), as a comparison when one is asked ("..., so the
    difference is that Raymond does 100 pounds more laundry than David" -> {100}), or as what is
    left when that is asked ("he ate a total of 14 pieces of candy and has 7 pieces left" -> {7}).
    None when that picks nothing out."""
    clauses = [c for c in _CLAUSE_BREAK.split(sentence) if quantities(c)]
    if len(asked.owners) == 1:
        named = [(_names(c, asked.people), c) for c in clauses]
        if len({n for n, _ in named if n}) > 1:
            owned = {v for n, c in named if n & asked.owners for v in quantities(c)}
            if owned:
                return owned
    if asked.compares:
        compared = _fewer_said(clauses, _COMPARISON, r"\bso\b")  # "14 storks so there are 3 more"
        if compared:
            return compared
    return _fewer_said(clauses, _LEFT) if asked.left else None


def _fewer_said(clauses: list[str], pattern: re.Pattern, split: str = "") -> set | None:
    """The quantities of the clauses that ``pattern`` finds, when they are not all of them."""
    parts = [p for c in clauses for p in (re.split(split, c) if split else [c]) if quantities(p)]
    picked = {v for p in parts if pattern.search(p) for v in quantities(p)}
    return picked if len(parts) > 1 and picked and len(picked) < sum(len(quantities(p)) for p in parts) else None


def fits(unit: tuple[str, ...], sentence: str, asked: AskedFor) -> bool:
    """Whether a quantity with ``unit``, said in ``sentence``, can be what was asked: no comparison
    nobody asked for, a unit naming every asked word, and not said of another person only."""
    if not asked.compares and _COMPARISON.search(" ".join(unit)):
        return False
    measure = measure_of(unit)
    if asked.measure and measure:
        if measure != asked.measure:
            return False
    elif asked.words and unit and not set(asked.words) <= set(unit):
        return False
    named = _names(sentence, asked.people)
    return not (asked.owners and named and not named & asked.owners)


def lists_parts(sentence: str, asked: AskedFor) -> bool:
    """Whether ``sentence`` gives the parts of one asked count of several things, each part alone
    ("124 tomatoes and 12 potatoes" asked "How many tomatoes and potatoes ...?"); not when it also
    gives their total ("124 tomatoes + 12 potatoes = 136 tomatoes and potatoes")."""
    if len(asked.parts) < 2:
        return False
    found = unit_quantities(sentence)
    values = [value for value, _, _ in found]
    if len(found) < 2 or any(by_equation for _, _, by_equation in found):
        return False
    if len(set(values)) == 1:
        return False  # "each person ate 1 cracker and 1 cake": as many of each, which is the answer
    if len(values) > 2 and any(math.isclose(value, sum(values) - value, abs_tol=1e-9) for value in values):
        return False  # one of them is the others' total
    sides = [[i for i, part in enumerate(asked.parts) if part & set(unit)] for _, unit, _ in found]
    return all(len(hit) == 1 for hit in sides) and len({hit[0] for hit in sides}) >= 2
