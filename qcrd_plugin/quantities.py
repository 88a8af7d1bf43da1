"""Numbers and their units as chains write them: quantities, number words, what follows a number.

Shared by the answer reader (:mod:`qcrd_plugin.answers`) and what a question asks
(:mod:`qcrd_plugin.asked`).
"""

from __future__ import annotations

import math
import re

NUMBER = r"-?\d+(?:\.\d+)?"
FIRST_NUMBER = re.compile(NUMBER)
# A quantity as a chain writes it: a mixed number ("1 1/2", "3 and 1/4"), a fraction ("3/4", never
# part of a date such as 12/31/2014) or a decimal.
_QUANTITY = re.compile(
    r"(?<![\d/.])(-?\d+)\s+(?:and\s+)?(\d+)/(\d+)(?![\d/])|(?<![\d/.])(-?\d+)/(\d+)(?![\d/])"
    r"|(?<=[A-Za-z])-(?P<after_minus>\d+(?:\.\d+)?)|(" + NUMBER + ")"  # "x-21": x minus 21, not -21
)
_WORD_NUMBERS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ORDINAL_PARTS = {"half": 2, "halves": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6,
                  "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10}  # fmt: skip
_WORD_NUMBER = re.compile(
    r"\b("
    + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True))
    + r")(?:[\s-]+("
    + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True))
    + r"))?(?:[\s-]+("
    + "|".join(_ORDINAL_PARTS)
    + r")s?)?\b",
    re.IGNORECASE,
)
# "one" as a pronoun, not a count: "no one", "each one gets", "one of the boys", "the only one"
_NOT_A_COUNT = re.compile(r"\b(?:no|each|every|any|some|only|this|that|which)\s+$", re.IGNORECASE)
_SCALE_WORD = re.compile(
    r"^[\s-]*(?:hundred|thousand|million|billion|dozen|of\b|another\b|first|second|third|fourth|fifth|sixth|seventh"
    r"|eighth|ninth|tenth)",
    re.IGNORECASE,
)


def quantities(text: str) -> list[float]:
    """Every quantity of ``text`` in order, fractions and mixed numbers as their values
    ("1/4 + 1/2 = 3/4" -> [0.25, 0.5, 0.75], "3 and 1/4 laps" -> [3.25]); commas in numbers are read
    as thousands separators."""
    found = []
    for match in _QUANTITY.finditer((text or "").replace(",", "")):
        whole, numerator, denominator, top, bottom, after_minus, plain = match.groups()
        if plain is not None or after_minus is not None:
            found.append(float(plain if plain is not None else after_minus))
        elif top is not None:
            found.append(float(top) / float(bottom) if float(bottom) else math.nan)
        elif float(denominator):
            found.append(float(whole) + math.copysign(float(numerator) / float(denominator), float(whole) or 1.0))
    return [value for value in found if math.isfinite(value)]


def word_number(text: str) -> float | None:
    """The last number written in words ("so each one gets five" -> 5, "one more bird" -> 1,
    "twenty-five" -> 25, "two thirds" -> 2/3), or None: "no one", "one of", a count of hundreds
    or dozens ("two hundred", read by no rule here) and pronoun uses do not count."""
    text = text or ""
    matches = [
        m
        for m in _WORD_NUMBER.finditer(text)
        if not _NOT_A_COUNT.search(text[: m.start()]) and not _SCALE_WORD.match(text[m.end() :])
    ]
    if not matches:
        return None
    match = matches[-1]
    first, second, part = (g.lower() if g else None for g in match.groups())
    value = float(_WORD_NUMBERS[first] + (_WORD_NUMBERS[second] if second and _WORD_NUMBERS[first] >= 20 else 0))
    return value / _ORDINAL_PARTS[part.rstrip("s") if part.rstrip("s") in _ORDINAL_PARTS else part] if part else value


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

# What gives a result just before a number: "=", "we get", "gives us" ("add 54 and 18 and we get 72").
_RESULT_BEFORE = re.compile(r"(?:=|\bwe get|\bgives us)\s*\$?\s*$", re.IGNORECASE)
# ... and in words: "which is", "equals" after a number ("640 + 540 + 30 equals 1210"), a unit
# conversion ("36 quarters is 3 dozen"), arithmetic ("$35 divided by $5 is 7", "10 times 9 dollars,
# or 90 dollars"). These give no result when a comparison or a share follows ("$30, which is 60% of
# her allowance", "12 apples, which is 5 more than Jerry"). A result in a clause that gives the
# reason for an answer stated before it ("2 feet, as 7 times 2 equals 14 square feet") is a check:
# the number reader drops that clause (``answers._concluding_clause``).
ARITHMETIC_WORDS = r"divided by|times|multiplied by|plus|minus"  # arithmetic as chains write it in words
_RESULT_IN_WORDS = re.compile(
    r"(?:\bwhich (?:is|equals|gives)|\d\s+equals|\d\s+[a-z]+s\s+is"
    rf"|\b(?:{ARITHMETIC_WORDS})\s+\$?[\d.]+(?:\s+[a-z]+){{0,2}}\s+(?:is|equals|gives|or))"
    r"\s+\$?\s*$",
    re.IGNORECASE,
)
_NOT_A_RESULT_AFTER = re.compile(r"\s*(?:%|percent\b|more\b|less\b|fewer\b|times\b|as\b)", re.IGNORECASE)
# Words that end a number's unit ("21.7 seconds to reach", "8 apples and").
_UNIT_END = frozenset(
    "to and or so then because since it is are was were in on at for that which with by from left per each".split()
)


def split_sentences(text: str) -> list[str]:
    """The sentences and lines of ``text``, stripped, empty ones left out."""
    return [s.strip() for s in _SENTENCE_END.split(text or "") if s.strip()]


def singular(word: str) -> str:
    """One form for a noun's singular and plural, as far as units need it: "peaches" and "peach" ->
    "peach", "boxes" -> "box", "candies" and "candy" -> "candie", "cookies" and "cookie" -> "cookie"."""
    if re.search(r"(?:ch|sh|x|ss)es$", word):
        return word[:-2]
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ie"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def unit_quantities(sentence: str, width: int = 4) -> list[tuple[float, tuple[str, ...], bool]]:
    """Each quantity of ``sentence`` with its unit, the singular words after it up to a clause break
    ("67 blue marbles, and" -> ("blue", "marble"); "21.7 seconds to reach" -> ("second",)), at most
    ``width`` words, and whether an "=" or "we get" gives it. A count just before another number
    takes that number's unit ("2 5 dollar toys": 2 -> ("dollar", "toy"))."""
    found = []
    for match in _QUANTITY.finditer(sentence):
        values = quantities(match.group("after_minus") or match.group(0))
        if values:
            rest = sentence[match.end() :]
            adjacent = re.match(r"\s+\d+(?=\s+[a-zA-Z])", rest)  # "2 5 dollar toys": 2's unit is "dollar toy"
            tail = re.split(r"\d|[,;:]", rest[adjacent.end() :] if adjacent else rest, maxsplit=1)[0]
            words = []
            for word in re.findall(r"[a-z]+", tail.lower()):
                if word in _UNIT_END or len(words) == width:
                    break
                words.append(singular(word))
            words = tuple(words)
            before = sentence[max(0, match.start() - 40) : match.start()]  # a window: searching all is quadratic
            operand = re.match(r"\s*[-+*/×]\s*\$?\d", rest)  # "which is 9 + 12 = 21": 9 is no result
            said = _RESULT_IN_WORDS.search(before) and not _NOT_A_RESULT_AFTER.match(rest)
            found.append((values[0], words, bool(_RESULT_BEFORE.search(before) or said) and not operand))
    return found
