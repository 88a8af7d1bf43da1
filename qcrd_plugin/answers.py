"""Answer and rationale parsing shared by training, self-consistency and the lm-eval tasks.

Everything that turns model or teacher text into an answer lives here (with its two helpers:
:mod:`qcrd_plugin.quantities`, numbers and their units in text, and :mod:`qcrd_plugin.asked`, what
a question asks), so the task utilities in ``tasks/`` and the training code can never disagree
about what an answer is.
"""

from __future__ import annotations

import ast
import logging
import math
import operator
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

from .asked import AskedFor, asked_for, fits, lists_parts, measure_of, said_of_asked
from .quantities import (
    ARITHMETIC_WORDS,
    FIRST_NUMBER,
    NUMBER,
    quantities,
    split_sentences,
    unit_quantities,
    word_number,
)

# A teacher's finish reasons that mean the chain stopped before its end: at the token limit
# (OpenAI, vLLM, llama.cpp, TGI: "length"; Mistral: "model_length" at the context window), or cut
# by a content filter. Such a chain is read only for an answer it states explicitly, in a sentence
# it finished: its closing quantity is wherever the limit fell, not a conclusion.
CUT_OFF_REASONS = frozenset({"length", "model_length", "content_filter"})

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n|\}")


def finished_part(text: str) -> str:
    """``text`` up to its last finished sentence (a chain stopped at the token limit may stop inside
    its answer statement: "... The answer is 1" of "... is 12"); "" when no sentence finished."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text or "")]
    return text[: ends[-1]] if ends else ""


# One arithmetic step as written in a rationale: "a op b = c".
_STEP = re.compile(rf"({NUMBER})\s*([-+*/x×])\s*({NUMBER})\s*=\s*({NUMBER})")

_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "x": lambda a, b: a * b,
    "×": lambda a, b: a * b,
    "/": lambda a, b: a / b if b != 0 else math.nan,
}


def parse_stated_answer(rationale: str) -> float | None:
    """The number a rationale states ("... The answer is 7."), or None if it states none (the
    synthetic task's strict reading; see :func:`stated_answer` for every answer type)."""
    value = stated_answer(rationale, "number", require_phrase=True)
    return None if value is None else float(value)


def parse_label(prediction: str) -> float | None:
    """The number a ``predict:`` generation gives (an equation is evaluated), or None."""
    value = predicted_answer(prediction, "number")
    return None if value is None else float(value)


def format_number(value: float) -> str:
    """Canonical text of a number: integers without a decimal point ("7", not "7.0"), other
    numbers in the shortest positional form that reads back as the same float ("2.5",
    "1234.5678", "0.00001"). Never ``%g``'s 6 significant digits or exponent: "1.23457e+06" would
    lose a gold answer's digits, and every reader here would take "1e-05" for 1."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if not math.isfinite(value):
        return f"{value:g}"
    return format(Decimal(repr(float(value))), "f")


def canonical_text(value: float | str) -> str:
    """A canonical answer as stored in question records: numbers via :func:`format_number`."""
    return format_number(value) if isinstance(value, float) else str(value)


def answers_match(predicted: float | str | None, gold: float | str | None, tol: float = 1e-6) -> bool:
    """True when both answers exist and agree: numerically when both are numbers, else as
    canonical strings (choice letters, NLI labels, yes/no)."""
    if predicted is None or gold is None:
        return False
    try:
        a, b = float(predicted), float(gold)
    except (TypeError, ValueError, OverflowError):
        a = b = math.nan
    if math.isfinite(a) and math.isfinite(b):
        return abs(a - b) <= tol
    # Not two finite numbers: a text answer "nan" or "infinity" must still equal itself.
    return str(predicted).strip().lower() == str(gold).strip().lower()


# ---- safe arithmetic (DSS's SVAMP labels are equations such as "( 84.0 / 2.0 )") -----------

_AST_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_AST_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# No answer or label is longer; the cap also keeps Python's parser away from inputs it cannot
# handle ("-" * 100000 + "1" raises MemoryError, a long "1+1+..." RecursionError).
MAX_EXPRESSION_CHARS = 1000


def safe_eval(expression: str) -> float | None:
    """Value of an arithmetic expression (numbers, + - * / // % **, parentheses), or None.

    Parsed with :mod:`ast` and evaluated over a whitelist of node types: no names, calls or
    attributes ever reach Python's ``eval``. Huge powers, division by zero, results that are not
    finite and expressions over :data:`MAX_EXPRESSION_CHARS` give None; it never raises.
    """
    text = (expression or "").replace("×", "*").replace("x", "*").replace("^", "**").replace(",", "")
    if len(text) > MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # MemoryError: the parser's own stack limit
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise ValueError("power too large")
            return _AST_BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _AST_UNARY:
            return _AST_UNARY[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {type(node).__name__}")

    try:
        result = value(tree)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return result if math.isfinite(result) else None


def _finite(text: str) -> float | None:
    """float(text), or None when it is not finite ("9" * 400 reads as inf)."""
    value = float(text)
    return value if math.isfinite(value) else None


# ---- typed answers: number, choice, label, yes/no, free text --------------------------------
#
# How LLMs state answers, as measured on the hand-labelled fixture (tests/fixtures/
# answer_labels.jsonl, docs/data.md): an explicit statement ("The correct answer is (F)", "Final
# answer: 42", "#### 42", "\boxed{42}") is what a reader trusts, and the last one wins because
# teachers correct themselves ("The answer is 3, but ... so the correct answer is 2"). A statement
# inside a verification ("To check our answer: ...") is not one. Without any statement, a number
# answer is the concluding sentence's result, a choice the letter the last sentence names, a
# yes/no a sentence that opens with it; anything else is unanswered (None), never a guess.

ANSWER_TYPES = ("number", "choice", "label", "yesno", "text")
NLI_LABELS = ("entailment", "neutral", "contradiction")  # ANLI / e-SNLI ids 0, 1, 2
CHOICE_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ANSWER_STATEMENT = re.compile(
    r"(?:(?:the[\s.-]+)?(?:(?:correct|final|right|best)\s+)?answer[\s.-]*(?:is|would\s+be|will\s+be|should\s+be|=|:)"
    r"|\b(?:the\s+)?final\s+result\s*(?:is|:|=)|####|\\boxed\s*\{)",
    re.IGNORECASE,
)
# A clause that checks an answer rather than stating one ("To check our answer: 40 + 2 = 42").
_VERIFICATION = re.compile(
    r"\b(?:check(?:ing|ed)?|verif(?:y|ied|ication)|confirm\w*)\b|\b(?:plug|substitut)\w*\b[^.\n]*\bback\b",
    re.IGNORECASE,
)
# A check that ends by saying it passed; a concluding sentence right after it states the answer again.
_CHECK_PASSED = re.compile(r"\b(?:checks out|is correct|are correct|confirms|matches|works out)\b", re.IGNORECASE)
# Sentences that are asides, not conclusions ("Note that ... about 20.4 nails each").
_ASIDE = re.compile(r"^\W*(?:note that|it'?s also worth|also note|alternatively|however, note)\b", re.IGNORECASE)
# What restates an answer given before it another way ("To put it another way, ... 1 wrapper for
# every 0.63 bottle caps"): it and what follows do not count, as after a verification.
_RESTATEMENT = re.compile(r"^\W*(?:to put it another way|put another way|in other words)\b", re.IGNORECASE)
# A concluding sentence that declines to answer ("Therefore, the problem has no solution.").
_DECLINED = re.compile(
    r"\bno solution\b|\b(?:cannot|can'?t|can not) (?:be )?(?:calculate|determine|solve|answer)"
    r"|\b(?:not enough|need more|more) information\b"
    r"|\berror in the problem\b|\bask for clarification\b|\bimpossible to (?:calculate|determine|answer)",
    re.IGNORECASE,
)
_CONCLUSION = re.compile(
    r"^\W*(?:therefore|thus|so|hence|in total|altogether|in conclusion|overall|finally|in all)\b", re.IGNORECASE
)
# An answer given first and then justified ("Jake has 25 apples. To see why, ...").
_JUSTIFICATION = re.compile(
    r"^\W*(?:to see why|to get this answer|to arrive at this|to (?:solve|figure out|work out) (?:this|the problem)"
    r"|to (?:figure|work) (?:this|it) out|to find out(?:\s*[,:]|\s+(?:you|we|i)\b)"
    r"|here'?s how|here is how"
    r"|this is because|explanation\b)",
    re.IGNORECASE,
)
# A chain cut off mid-sentence (a teacher's length limit): it ends on an operator, a comma, an open
# bracket or a word that cannot end a sentence ("To find out how much she spent in").
_TRUNCATED = re.compile(
    r"(?:[-+*/=,(:]|\b(?:in|on|at|by|of|to|for|with|from|and|or|the|a|an|than|that|which))$",
    re.IGNORECASE,
)
# A chain that ends announcing a step it never takes ("Cross multiply to solve for x.", "Now we
# need to add them up."): what came before are intermediate results.
_PLAN = re.compile(
    r"\b(?:we|let'?s|i)\s+(?:(?:now|then|just|first)\s+)*(?:need to|can|will|have to|must|should)\b"
    r"|\bto (?:solve|find|calculate|work out|figure out)\b",
    re.IGNORECASE,
)
# A step announced as the next one to take ("Finally, we need to compare the two numbers."): even
# after concluding sentences, a chain that ends on it stopped before its answer.
_NEXT_STEP = re.compile(
    r"^\W*(?:finally|next|now|then)\b.*\b(?:we|i)\s+(?:still\s+)?(?:need to|have to|must|will)\b"
    r"|^\W*(?:finally|next|now|then)\b.*\blet'?s\s+(?!see\b|say\b)",
    re.IGNORECASE,
)
# Two answers offered as alternatives ("she played with 18 or grindingly 20", "320 action figures,
# or 400 cabinets"): a hedge.
_ALTERNATIVES = re.compile(rf"({NUMBER})(?:\s+[a-z]+){{0,3}},?\s+or\s+(?:[a-z]+\s+)?({NUMBER})", re.IGNORECASE)
_ARITHMETIC_PREFIX = re.compile(r"^[\s$]*([-+*/×().\d\s,]*\d[-+*/×().\d\s,]*)")
_MARKUP = "*_`$ \t\"'“”‘’"
_YES = ("yes", "true")
_NO = ("no", "false")


def _clause_before(text: str, position: int, width: int = 40) -> str:
    """The clause before ``position``: back to the last sentence mark or line break, at most
    ``width`` characters (GSM8K-style text runs sentences together without a space)."""
    start = max([text.rfind(mark, 0, position) + 1 for mark in ".!?;\n"] + [position - width, 0])
    return text[start:position]


def _balanced(text: str, open_at: int, opening: str = "{", closing: str = "}") -> str | None:
    """The text inside the bracket opened at ``open_at`` (nested brackets kept), or None."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {opening: 1, closing: -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1 : i]
    return None


def answer_statements(text: str) -> list[str]:
    """What follows each explicit answer statement of ``text``, in order: the rest of its line (or
    the next non-empty line when the statement ends its line: "the final answer:\\n42"), or the
    inside of ``\\boxed{...}``. Statements inside a verification clause are left out."""
    found = []
    for match in _ANSWER_STATEMENT.finditer(text or ""):
        if _VERIFICATION.search(_clause_before(text, match.start())):
            continue
        if match.group(0).lower().startswith("\\boxed"):
            inside = _balanced(text, match.end() - 1)
            if inside is not None:
                found.append(inside)
            continue
        rest = text[match.end() :]
        line, _, after = rest.partition("\n")
        if not line.strip(" *:"):
            line = next((row for row in after.split("\n") if row.strip()), "")
        found.append(line.strip())
    return found


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0] if text else ""


def _number(text: str) -> float | None:
    """The number an answer statement gives: a parenthesised expression is evaluated (DSS states
    "(84 / 2)"; one that does not evaluate, "((28 - 13) and (28 - 15))", gives None); an equation
    chain gives its last result ("9 * 15 = 135 + 120 = 255" -> 255); else the arithmetic at its
    start ("$1,200." -> 1200, "84 / 2" -> 42) or its first quantity ("about 7 apples" -> 7, "48/7
    vacuum cleaners" -> 48/7)."""
    text = _first_sentence((text or "").strip().lstrip(_MARKUP + "="))
    if text.startswith("(") and re.search(r"[a-zA-Z]", _balanced(text, 0, "(", ")") or ""):
        return None  # "(some - 563 - 558)": an expression with an unknown in it states no number
    text = re.sub(r",?\s*which (?:equals|is equal to)\s|(?<=[\d)])\s*≈", " = ", text)  # "4 sections, which equals 984"
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    mixed = re.match(r"^[\s$]*(-?\d+\s+(?:and\s+)?\d+/\d+)(?![\d/])", text)
    value = quantities(mixed.group(1)) if mixed else []
    if value:  # "1 1/2 bags": one and a half, not 1
        return value[0]
    match = _ARITHMETIC_PREFIX.match(text)
    if match:
        candidate = match.group(1).strip().rstrip(".").strip()
        while candidate.count("(") < candidate.count(")") and candidate.endswith(")"):
            candidate = candidate[:-1]  # "7)" from "(7)." after the phrase's own "("
        while candidate.count("(") > candidate.count(")") and candidate.startswith("("):
            candidate = candidate[1:]
        value = safe_eval(candidate)
        if value is not None:
            return value
    found = quantities(text)  # "48/7 vacuum cleaners" -> 48/7, not 48
    return found[0] if found else word_number(text)


def _cut_off(text: str) -> bool:
    """Whether a chain was cut off mid-sentence (a teacher's length limit): its last line ends on
    an operator, a comma, an open bracket or a word that cannot end a sentence ("To find out how
    much she spent in"); or it stops on a word without a full stop, with no "=" and no
    concluding word in its last line ("This will give us the total dollar amount in a stack that
    contains two thirds"). A line that opens with its number ("1396 people", "- 16 green
    peaches") and a one-sentence chain stand. So is one that stops on a lone currency sign ("= $225/$45
    \n\n$") or leaves a sum open ("72 minutes + 2")."""
    lines = [row.strip(_MARKUP) for row in (text or "").split("\n")]
    lines = [row for row in lines if row.strip("-*=_#~ ")]  # rules ("---") and emphasis are no text
    last = lines[-1] if lines else ""
    if _TRUNCATED.search(last) or last.count("(") > last.count(")") or re.search(r"(?:^|\s)\$\s*$", text or ""):
        return True
    # Only the line's end is searched: the pattern is quadratic on a long line without punctuation.
    if "=" not in last and re.search(r"\d[\w\s$]*\s[-+*/×]\s*\$?\d+(?:\.\d+)?$", last[-200:]):
        return True
    # An equation left open: an arithmetic left side whose right side holds no number yet ("1 +
    # 3(my brother's age) = my mom's"), or a LaTeX one cut at its backslash ("$x = \\"). "7 =
    # Zachary's push-ups" is a result, "Area = length × width" a formula in words.
    open_side = re.search(r"([^=]*)=([^=]*)$", last[-200:])
    if open_side and not re.search(r"\d", open_side.group(2)) and word_number(open_side.group(2)) is None:
        left, right = open_side.groups()
        arithmetic = re.search(r"\d\s*[-+*/×(]|[-+*/×)]\s*\d", left) and not re.search(r"[.!?)]\W*$", right)
        if arithmetic or right.strip().endswith("\\"):
            return True
    answer_line = re.match(r"[-\s]*\d", last)  # "1396 people", "- 16 green peaches": an answer line
    unfinished = re.search(r"[A-Za-z]$", last) and "=" not in last and not answer_line and not _CONCLUSION.search(last)
    return bool(unfinished) and len(split_sentences(text)) > 1


def _asked_before(numbered: list[str], at: int, value: float, givens: set, results: set, asked: AskedFor) -> float:
    """The answer when the concluding sentence (``numbered[at]``) goes past it: a result of one of
    the three sentences before that is what was asked, when the concluding one's ``value`` is not
    (another unit, another person, a comparison nobody asked; of any sentence before when it
    measures something else, a time where a distance was asked): "then Adam has 11 + 5 = 16 apples.
    Adam therefore has 16 + 89 = 105 fruits." asked apples -> 16; "David = 19 + 39 = 58 push-ups
    / John = 58 - 13 = 45 push-ups" asked David -> 58. Else ``value``. ``givens``: the question's
    numbers, ``results``: the chain's equation results."""
    units = [unit for q, unit, _ in unit_quantities(numbered[at], 8) if q == value]
    if not units or fits(units[0], numbered[at], asked):
        return value
    # A quantity of another measure than the one asked (the time it takes, where a distance was
    # asked) was computed from the answer, however far back: every earlier sentence is searched.
    other_measure = asked.measure and measure_of(units[0]) not in ("", asked.measure)
    for earlier in reversed(numbered[:at] if other_measure else numbered[max(0, at - 3) : at]):
        for q, unit, _ in reversed(unit_quantities(earlier, 8)):
            computed = q in results or _CONCLUSION.search(earlier)
            if q != value and q not in givens and computed and unit and fits(unit, earlier, asked):
                return q
    return value


def _parts_of_asked(numbered: list[str], at: int, asked: AskedFor) -> float | None | bool:
    """When one count of several things was asked and the concluding sentence (``numbered[at]``)
    gives each part only ("he has 124 tomatoes and 12 potatoes left"): the total if an earlier
    sentence stated it ("a total of 53 + 14 = 67 push-ups and crunches ... Zachary did 53 push-ups
    and 14 crunches" -> 67), else None. False when it is not such a list."""
    if not lists_parts(numbered[at], asked):
        return False
    total = sum(value for value, _, _ in unit_quantities(numbered[at]))
    earlier = [value for s in numbered[:at] for value in quantities(s)]
    return total if any(math.isclose(total, value, abs_tol=1e-9) for value in earlier) else None


def _cut_after_answer(text: str, givens: set) -> bool:
    """Whether a chain cut off mid-sentence had already concluded with a number the question did
    not give (``givens``): "Therefore, Aleena paid a total of $1596 for the streaming service by"."""
    sentences = split_sentences(text)
    last = sentences[-1] if sentences else ""
    return bool(_CONCLUSION.search(last) and re.search(r"[A-Za-z]$", last) and set(quantities(last)) - givens)


def _cut_on_given(sentences: list[str], givens: set) -> bool:
    """Whether a chain (its ``sentences``) stops, without a full stop or a concluding word, on a
    number the question gave: a teacher's length limit cut it while it restated the question ("We
    know that Janey has 21", "We know that the baker sold 154"). Not a line that is only its number
    ("**5**") or states it ("The number of apples Maria has now is 6")."""
    last = sentences[-1].strip(_MARKUP) if sentences else ""
    ending = re.search(rf"({NUMBER})$", last[-60:].replace(",", ""))  # only the end: the search is quadratic
    return bool(
        len(sentences) > 1
        and ending
        and float(ending.group(1)) in givens
        and " " in last
        and not re.search(r"(?:=|:|\b(?:is|are|was|were|equals))\s*\S+$", last[-60:])
        and not _CONCLUSION.search(last)
    )


def _verification_words(text: str) -> set[str]:
    """The verification words of ``text``, by their first five letters ("checking" and "checked"
    are one word)."""
    return {match.group(0).lower()[:5] for match in _VERIFICATION.finditer(text or "")}


def _same_words(a: str, b: str) -> bool:
    words = re.findall(r"[a-z0-9]+", a.lower())
    return bool(words) and words == re.findall(r"[a-z0-9]+", b.lower())


def _computes(sentence: str) -> bool:
    """Whether ``sentence`` computes: an operator or an unknown before an "=" that gives a number
    ("26 - 9 = 17", "x = 36", "Wilfred = 3"); a recap ("Total cookies = 24.") does not. Each side
    of an "=" is searched once (a pattern spanning them is quadratic on long lines)."""
    sides = sentence.split("=")
    return any(
        re.match(r"\s*\$?\d", right)
        and (re.search(r"[-+*/×÷–−]|\b[a-zA-Z]\b", left) or i == 0 and re.fullmatch(r"\W*[A-Za-z]+\s*", left))
        for i, (left, right) in enumerate(zip(sides, sides[1:]))
    )


def _concluding_at(candidates: list[str], numbered: list[str], givens: set, results: set) -> int:
    """Where in ``numbered`` the sentence that states the answer is: the last with a number, unless
    it only restates the question's numbers after an earlier one found something a step computed
    ("This means the ring toss game made $14 per day. We also know ... they earned $22."), or the
    chain opens with the answer and only justifies it after ("Jake has 29 apples. To solve the
    problem, ...")."""
    found = [
        i for i, s in enumerate(numbered) if _CONCLUSION.search(s) or not set(quantities(s)) <= givens or _computes(s)
    ]  # a sentence that computes finds something, even a number the question gave ("26 - 9 = 17")
    if found and found[-1] != len(numbered) - 1 and not set(quantities(numbered[found[-1]])) & results:
        found = []  # the earlier sentence found nothing a step computed: the last one stands
    if (
        len(candidates) > 1
        and candidates[0] in numbered
        and _JUSTIFICATION.search(candidates[1])
        and not any(_CONCLUSION.search(s) for s in numbered[1:])
    ):
        return 0
    return found[-1] if found else len(numbered) - 1


# A clause that states what follows from the one before it ("$35 divided by $5 is 7, so the money
# would last him 7 weeks", "If the 48 students were put into 8 groups, then each group would have 6
# students", "If he sells these 2 games for $6 each, he will earn $12", "191 points 79 times, for a
# total of 15,129 points"). Commas are still in the sentence here: a bare "then" ("and then ate 9")
# is a step.
_CONSEQUENCE = re.compile(
    r",\s*(?:so|then|which means|that means|this means|for a total of|totall?ing)\s|^\W*if\b[^,]*,", re.IGNORECASE
)
# A clause that gives the reason for a quantity stated before it ("2 feet, as 7 times 2 equals 14").
_REASON = re.compile(r",\s*as\s+(?!a result|well\b|follows|shown|such|much|many|long|soon)", re.IGNORECASE)


def _concluding_clause(sentence: str) -> str:
    """What follows the last consequence of ``sentence`` (", so", ", then", ", which means", ", for
    a total of", an opening "If ...,") when that holds a number, else what comes before an ", as"
    that gives the reason when that does; the whole sentence otherwise."""
    consequences = list(_CONSEQUENCE.finditer(sentence))
    if consequences and FIRST_NUMBER.search(sentence[consequences[-1].end() :]):
        return sentence[consequences[-1].end() :]
    reason = _REASON.search(sentence)
    if reason and FIRST_NUMBER.search(sentence[: reason.start()]):
        return sentence[: reason.start()]
    return sentence


def _sentence_answer(spoken: str, givens: set, results: set, asked: AskedFor, said: set | None = None) -> float | None:
    """The answer the concluding sentence ``spoken`` gives. With an equation in its concluding
    clause (:func:`_concluding_clause`), the result of the one whose unit names what was asked
    ("43 + 24 = 67 blue marbles, and 16 + 0 = 16 red marbles" asked "blue marbles" -> 67), else
    of the last. Without one, a number the question did not give ("Debby's 12 bottles would last
    her 2 days" -> 2), then one a step computed ("Oliver could buy 7 4 dollar games" -> 7), then
    one whose unit names what was asked, then one of the concluding clause ("If the 48 students
    were put into 8 groups, then each group would have 6 students" -> 6); two numbers naming
    different asked things ("0.46 crackers and 0.54 cakes") give None."""
    found = unit_quantities(spoken.replace(",", ""))
    clause = _concluding_clause(spoken)
    concluding = found if clause == spoken else unit_quantities(clause.replace(",", ""))
    by_equation = [q for q in concluding if q[2]]
    if by_equation:
        return max(reversed(by_equation), key=lambda q: len(set(q[1]) & set(asked.words)))[0]
    if not found:
        return None
    words, in_clause = set(asked.words), {q[0] for q in concluding}
    key = lambda q: (q[0] not in givens, q[0] in results, len(set(q[1]) & words), q[0] in in_clause)  # noqa: E731
    if said:  # what :func:`~qcrd_plugin.asked.said_of_asked` picked out of the sentence
        found = [q for q in found if q[0] in said] or found
    best = max(found, key=key)
    rivals = [q for q in found if key(q)[:3] == key(best)[:3] and key(q)[2] and q[0] != best[0]]
    if any(set(q[1]) & words != set(best[1]) & words for q in rivals):
        return None
    return best[0]


# An answer left as an expression in an unknown ("= n - 73 more Ace cards", "221 + 8n nails",
# "X = 10 - A"): no number is stated. A lone "x" between numbers is a times sign ("10 x 8").
_UNKNOWN_LEFT = re.compile(
    r"=\s*(?:[a-wyzA-Z]\s*[-+]\s*\d+(?:\.\d+)?|\d+(?:\.\d+)?\s*[-+]\s*\d*[a-wyzA-Z])\b(?!\s*=)"
)  # "30 + 15m = 45 minutes" is a unit glued to its number, then a result


# Arithmetic just before an "or", which then restates its result rather than offering another value.
_ARITHMETIC_BEFORE = re.compile(rf"(?:[-+*/×]|\b(?:{ARITHMETIC_WORDS}))\s*$", re.IGNORECASE)


def _offers_alternatives(sentence: str) -> bool:
    """Whether a sentence offers different values as alternatives ("18 or 20", "320 action
    figures, or 400 cabinets"); an "or" after a sum means "that is" ("10 inches + 20 inches, or
    30 inches", "10 times 9 dollars, or 90 dollars")."""
    return any(
        float(match.group(1)) != float(match.group(2)) and not _ARITHMETIC_BEFORE.search(sentence[: match.start()])
        for match in _ALTERNATIVES.finditer(sentence)
    )


def _restates_question(numbered: list[str], givens: set, results: set) -> bool:
    """Whether a chain only restates the question ("His grandmother gave Chris $25 ... This means
    that Chris had $279 on his birthday." when the question gave 25 and 279): two or more sentences
    with numbers, every number a given, no equation, no concluding word."""
    return (
        len(numbered) > 1
        and not results
        and all(set(quantities(s)) <= givens for s in numbered)
        and not any(_CONCLUSION.search(s) for s in numbered)
    )


def _answer_after_check(sentences: list[str], givens: set) -> bool:
    """Whether the last sentence states the answer again right after a check that passed ("Looks
    like everything checks out! So, Julia played with a total of 26 kids."): it concludes, and
    states one number the question did not give ("Therefore, Tom spent $50 in total." does not)."""
    if len(sentences) < 2 or not _CHECK_PASSED.search(sentences[-2]) or not _CONCLUSION.search(sentences[-1]):
        return False
    return len([value for value in quantities(sentences[-1].replace(",", "")) if value not in givens]) == 1


def _concluding_number(text: str, question: str = "") -> float | None:
    """A number answer stated without an answer phrase (raw LLM samples such as MCC-KD's): the
    answer of the concluding sentence (:func:`_concluding_at`, :func:`_sentence_answer`).
    A verification ("We can check this by plugging x = 4 ...") or a restatement ("To put it
    another way, ...") and what follows it, asides ("Note that ..."), and parenthesised remarks
    ("50 candies (15 chewing gums ...)") do not count. None when the chain is cut off, declines,
    ends on a step it never takes ("Cross multiply to solve for x."), offers alternatives ("18 or
    20"), only restates the question or ends repeating its asked sentence, or lists the parts of
    one asked count without their total (:func:`_parts_of_asked`). A chain cut off after it
    concluded keeps that answer (:func:`_cut_after_answer`); one that stops on a number the
    question gave does not (:func:`_cut_on_given`); an answer the concluding sentence goes
    past is taken from before it (:func:`_asked_before`)."""
    givens = set(quantities(question or ""))
    if _cut_off(text) and not _cut_after_answer(text, givens):
        return None
    text = re.sub(r"(?<=[\d)])\s*≈", " =", text)  # "445/30 ≈ 14.83": a rounded result is the result
    # "16-7, or 9" is 16-7 = 9 (not "3/4, or 75%": a fraction, and a percentage says it another way)
    text = re.sub(r"(\d\s*[-+*×]\s*\d[\d.]*),?\s+or\s+(?=\$?\d[\d.,]*(?!\d)(?!\s*(?:%|percent)))", r"\1 = ", text)
    # "went to 4 of the 8 football games": 4 games, when the 8 is the question's whole
    text = re.sub(
        r"(?<![\d/.])(\d+) of the (\d+)\b(?![./])",
        lambda m: m.group(1) if float(m.group(2)) in givens else m.group(0),
        text,
    )
    # "2.39 days, which rounds down to 2 days": the rounded number is the result
    text = re.sub(r",?\s+(?:which|that)\s+rounds?\s+(?:down\s+|up\s+)?to\b", " =", text)
    sentences = split_sentences(re.sub(r"(,|\band)[ \t]*\n\s*", r"\1 ", text))  # a line ending ", and" goes on
    concluded = [i for i, s in enumerate(sentences) if _CONCLUSION.search(s) and FIRST_NUMBER.search(s)]
    # A verification word the question itself uses restates it ("he saved checking on the grapevines"
    # -> "The picker checked the grapevines"); "To verify" after "Dan wrote a check" still checks.
    asked_checks = _verification_words(question)
    verifies = lambda s: _VERIFICATION.search(s) and not _verification_words(s) & asked_checks  # noqa: E731
    restates = lambda i, s: _RESTATEMENT.search(s) and concluded and concluded[0] < i  # noqa: E731
    checked = next((i for i, s in enumerate(sentences) if i and (verifies(s) or restates(i, s))), len(sentences))
    if checked < len(sentences) - 1 and _answer_after_check(sentences, givens):
        checked = len(sentences)
    if checked == len(sentences) and _cut_on_given(sentences, givens):
        return None
    sentences = [s for s in sentences[:checked] if not _ASIDE.search(s)]
    if any(_DECLINED.search(s) for s in sentences[-2:]):
        return None
    asked = asked_for(question)
    if sentences and _same_words(sentences[-1], asked.sentence):
        return None  # it ends repeating the question ("What was the total of the lunch bill?")
    spoken = [re.sub(r"\([^()]*\)", " ", s) for s in sentences]
    candidates = [s.replace(",", "") for s in spoken]
    numbered_at = [i for i, s in enumerate(candidates) if FIRST_NUMBER.search(s)]
    numbered = [candidates[i] for i in numbered_at]
    equations = [quantities(part)[:1] for part in re.findall(r"=\s*\$?([^=\n]*)", text or "")]
    if candidates and candidates[-1] not in numbered:
        # In words: "Therefore, there is one more bird than storks.", "... = 4\n\nSteven has four more
        # apples than peaches.", or a chain that writes no digit at all ("..., or thirty-four birds").
        if _NEXT_STEP.search(candidates[-1][:_TAIL]):  # its opening: no pattern scans a long sentence
            return None  # "Finally, we need to compare the two numbers.": not "two"
        spelled = word_number(candidates[-1])
        restated = equations and equations[-1] == [spelled]
        if spelled is not None and (
            len(candidates) == 1 or _CONCLUSION.search(candidates[-1]) or restated or not numbered
        ):
            return spelled
        if spelled is None and _PLAN.search(candidates[-1]) and not concluded:
            return None
    results = {value for found in equations for value in found}
    if not numbered or _restates_question(numbered, givens, results):
        return None
    at = _concluding_at(candidates, numbered, givens, results)
    if _offers_alternatives(numbered[at]) or _UNKNOWN_LEFT.search(numbered[at]):
        return None
    total = _parts_of_asked(numbered, at, asked)
    if total is not False:
        return total
    said = said_of_asked(spoken[numbered_at[at]], asked)
    value = _sentence_answer(spoken[numbered_at[at]], givens, results, asked, said)
    if value is None or value in (said or ()):
        return value
    return _asked_before(numbered, at, value, givens, results, asked)


def _letters(choices: Sequence[str] | None) -> str:
    """The letters a question offers: as many as its choices, any letter without a choices list."""
    return CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS


# A letter stated as a choice: "(d)", "d)", "**B**", "B:", "B." or "B" (upper case, or at the end):
# never the article in "a shallow pool".
_LETTER_AT_START = re.compile(
    r"^[\s*_`\"'“”]*(?:\(([a-zA-Z])\)|([a-zA-Z])\)|([A-Z])(?![\w'])|([a-z])(?=\s*[.:,*]|\s*$))"
)
_LETTER_IN_SENTENCE = re.compile(
    r"\(([a-zA-Z])\)|\*\*\(?([A-Z])\)?[*:.)\s]|\b(?:option|choice)\s+\(?([a-zA-Z])\b|\b([A-Z])\W*$"
)


def _choice(text: str, choices: Sequence[str] | None) -> str | None:
    """A choice letter from an answer statement: a stated letter ("(D) 12/31/2014" -> d, even when
    another choice's text is 12/31/2014), else the longest choice whose text it contains."""
    text = _first_sentence((text or "").strip())
    letters = _letters(choices)
    match = _LETTER_AT_START.match(text)
    if match:
        letter = next(g for g in match.groups() if g).lower()
        if letter in letters:
            return letter
    return _choice_text(text, choices)


def _choice_text(text: str, choices: Sequence[str] | None) -> str | None:
    lowered = text.lower()
    found = [(len(c), i) for i, c in enumerate((choices or [])[: len(CHOICE_LETTERS)]) if c and c.lower() in lowered]
    return CHOICE_LETTERS[max(found)[1]] if found else None


def _concluding_choice(text: str, choices: Sequence[str] | None) -> str | None:
    """A choice stated without an answer phrase: the last sentence naming a letter ("(A) Lolita",
    "**B**", "option C", "... it was C"), else the last sentence's choice text."""
    sentences = split_sentences(text)
    for sentence in reversed(sentences):
        hits = [next(g for g in m.groups() if g).lower() for m in _LETTER_IN_SENTENCE.finditer(sentence)]
        hits = [h for h in hits if h in _letters(choices)]
        if hits:
            return hits[-1]
    return _choice_text(sentences[-1], choices) if sentences else None


_NLI_WORDS = (
    ("entail", "entailment"),
    ("neutral", "neutral"),
    ("contradict", "contradiction"),
    ("not possible to tell", "neutral"),
    ("cannot be determined", "neutral"),
)


def _nli_label(text: str) -> str | None:
    lowered = (text or "").lower()
    hits = [(lowered.find(stem), label) for stem, label in _NLI_WORDS if stem in lowered]
    if hits:
        return min(hits)[1]
    word = _yes_no(_first_sentence(lowered), first_word_only=True)  # "Answer: yes" in an NLI few-shot prompt
    return {"yes": "entailment", "no": "contradiction"}.get(word)


def _yes_no(text: str, first_word_only: bool = False) -> str | None:
    words = re.findall(r"[a-z]+", (text or "").lower())
    for word in words[:1] if first_word_only else words:
        if word in _YES:
            return "yes"
        if word in _NO:
            return "no"
    return None


def _opening_yes_no(text: str) -> str | None:
    """A yes/no stated without an answer phrase: the last sentence that opens with it, or says it
    between commas ("No, Rahul Dravid is a cricketer ...", "So, no, seasons of Survivor are not
    ..."); a conclusion that only implies it counts as unanswered."""
    for sentence in reversed(split_sentences(text)):
        match = re.search(
            r"(?:^[\s*_\"']*|[,;:]\s*)(yes|no|true|false)\b(?=\s*[,.!:;*]|\s*$)", sentence, re.IGNORECASE
        )
        if match:
            return _yes_no(match.group(1))
    return None


_BOLD = r"\*\*([^*]+)\*\*"
_QUOTED = r"\"([^\"]+)\"|“([^”]+)”"
# Where a free-text answer follows at the end of a chain when no answer statement precedes it, in
# the order they are tried on the chain's last sentence (an entry's group 1 is the answer): a
# quoted or bolded string, then what follows the last of these phrasings. Extend it here; a task's
# own ``answer_pattern`` still overrides every rule. Measured on tests/fixtures/answer_labels_text.jsonl.
TEXT_ENDINGS = (
    _BOLD,  # **yajc**
    _QUOTED,  # "yajc"
    r"(?<![\w'])'([^']+)'(?!\w)",  # 'yajc' (never the apostrophe of "Rob's")
    r"(?:→|=>)[ \t]*([^→\s][^→]*)$",  # l, e, y, y → leyy
    r"\b(?:we get|you get|it becomes|they form|gives(?: you)?|results? in|is|are|becomes|was)"
    r"[ \t]*[:–—]?[ \t]+(\S+)$",  # ... we get yajc.
    r"[:–—][ \t]*([^:–—\s][^:–—]*)$",  # Putting them all together, we get: yajc
)
# The endings are matched against a sentence's last characters, without its closing punctuation,
# so that no pattern scans a long reply (a 20,000-character line took seconds).
_TAIL = 300
# A closing remark after the answer ("This is correct.", "I hope this helps."): the sentence before speaks.
_REMARK = re.compile(r"^\W*(?:this|that|it|i|hope|let me|note)\b", re.IGNORECASE)
_SPACED_LETTERS = re.compile(
    r"^[^\W\d_](?:\s*[,\-–]\s*|\s+)(?:and\s+)?[^\W\d_](?:(?:\s*[,\-–]\s*|\s+)(?:and\s+)?[^\W\d_])*$"
)


def _strip_ends(value: str, characters: str) -> str:
    """``value`` without ``characters`` at either end (a loop, never a backtracking regex)."""
    start, end = 0, len(value)
    while start < end and (value[start].isspace() or value[start] in characters):
        start += 1
    while end > start and (value[end - 1].isspace() or value[end - 1] in characters):
        end -= 1
    return value[start:end]


def _clean_text(value: str, case_fold: bool) -> str | None:
    """A free-text answer without markup, surrounding punctuation and spacing between single letters
    ("s, c, a, n" and "s-e-y-y" -> "scan", "seyy"), lower-cased when ``case_fold``. Symbols that
    belong to the answer stay ("C++", "-3/4", ".NET")."""
    value = (value or "").lower() if case_fold else value or ""
    previous = None
    while value != previous:  # "a. ." -> "a", "(:)" -> "": every end in any order (idempotent)
        previous = value
        value = _strip_ends(value, _MARKUP + ",;:!?")
        value = value[:-1] if len(value) > 1 and value.endswith(".") else value
        if len(value) > 1 and value[0] + value[-1] in ("()", "[]", "{}") and value.count(value[0]) == 1:
            value = value[1:-1].strip()
    if len(value) < 200 and _SPACED_LETTERS.match(value):
        value = re.sub(r"[\s,\-–]+|\band\b", "", value)
    return " ".join(value.split()) or None


def _ending_answer(sentence: str, endings: Sequence[str], case_fold: bool) -> str | None:
    """The last match of the first of ``endings`` that matches ``sentence``'s tail, cleaned; or None."""
    tail = _strip_ends(sentence[-_TAIL:], ".!?")
    for ending in endings:
        found = [next(g for g in m.groups() if g) for m in re.finditer(ending, tail) if any(m.groups())]
        if found:
            return _clean_text(found[-1], case_fold)
    return None


def _text(text: str, case_fold: bool = True) -> str | None:
    """A free-text answer from an answer statement: its last quoted or bolded string ('so the result
    is "yeha"' -> yeha), or after an arrow, else the statement up to its sentence end."""
    found = _ending_answer(text or "", TEXT_ENDINGS[:4], case_fold)  # quoted, bolded, after an arrow
    if found is not None:
        return found
    sentence = _first_sentence(text or "")
    # "indeed 202, because 202 is ...", "that Ottawa is the capital city of Canada": the answer alone
    sentence = re.split(r",?\s+(?:because|since|as)\s", sentence, maxsplit=1)[0]
    that = re.match(r"(?:indeed|simply)?\s*that\s+(.+?)\s+(?:is|was|are)\s", sentence, re.IGNORECASE)
    sentence = that.group(1) if that else re.sub(r"^(?:indeed|simply)\s+", "", sentence, flags=re.IGNORECASE)
    return _clean_text(sentence, case_fold)


# A reply that degenerates until the token limit: a short piece repeated to the end ("A-A-A-A-...",
# "u-l-u-l-u-l-..."), or the same line started again and again ("Rosa Parks: ..." ten times).
_REPEATED_TAIL = re.compile(r"(.{1,4}?)\1{7,}\W*$", re.DOTALL)
# Answers that are no answer besides the declines of ``_DECLINED``: "not possible", a hedge ("either 2:1 or 3:1").
_NO_TEXT_ANSWER = re.compile(r"^either\b.*\bor\b|\bnot possible\b", re.IGNORECASE)


def _degenerate(text: str) -> bool:
    """Whether a reply ran into repetition until it was cut off (see ``_REPEATED_TAIL``)."""
    if _REPEATED_TAIL.search(text[-120:]):
        return True
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    start = lines[-1][:12] if lines else ""
    unfinished = not re.search(r"[.!?\"')\]*]$", lines[-1]) if lines else False
    return len(start) >= 8 and unfinished and sum(line.startswith(start) for line in lines) >= 4


def _no_text_answer(text: str, question: str) -> bool:
    """Whether a free-text reply states no answer however it ends: it degenerated, or it only
    repeats words of the question ("Grace Hopper." asked for the last letters of "Grace Hopper")."""
    words = re.findall(r"\w+", text.lower())
    return _degenerate(text) or (0 < len(words) <= 3 and set(words) <= set(re.findall(r"\w+", question.lower())))


# "What is the capital city of France?": what is asked (its head "capital", its object "France").
_WHAT_IS = re.compile(
    r"^\s*(?:what|which)\s+(?:is|was)\s+the\s+(\w+)(?:\s+\w+)?\s+of\s+(?:the\s+)?(.+?)\s*\?\s*$", re.I
)
# Where an answer that restates what was asked stops: its description ("Ottawa, Ontario", "Cairo,
# known as ...", "Rome, also ...", "Paris (the City of Light)"); a name may hold "and" or "in".
_DESCRIPTION = re.compile(r",|;|\s[-–—]\s|\s\(|\s(?:which|known|also|located)\b", re.I)
# Short words a name carries in lower case ("L'Allema de la France", "Il capo di Roma").
_NAME_PARTICLES = frozenset("de la le di da del della du von van of the y el al".split())
# A restating sentence longer than this is a paragraph, not an answer (and no pattern scans it).
_RESTATED_MAX = 300


def _name_like(part: str) -> bool:
    """Whether the words before "is the capital of ..." name something ("Le Grand Paris", "Il capo
    di Roma"), not a clause ("A common misconception is that Sydney", "Let's think about what"):
    it opens with a capital and has at most one lower-case word besides name particles."""
    words = part.split()
    lower = [w for w in words if w[:1].islower() and w.lower() not in _NAME_PARTICLES]
    return bool(words) and words[0][:1].isupper() and len(lower) <= 1


def _restated_answer(text: str, question: str, case_fold: bool) -> str | None:
    """The answer of a reply that restates what a "What is the H ... of O?" question asks: "The
    capital city of Canada is Ottawa, Ontario." (after any opening clause: "Thus, ...", "In Italy,
    the capital city is Rome") -> ottawa; "Australia's capital is Canberra." -> canberra; "L'Allema
    de la France is the capital of France." -> l'allema de la france; "Le Cailleballe, capital city
    of France." -> le cailleballe. The last such sentence speaks; "is not Sydney" states nothing.
    None for other questions, or when no sentence restates it."""
    asked = _WHAT_IS.match(question or "")
    if not asked:
        return None
    head, obj = re.escape(asked.group(1)), re.escape(asked.group(2))
    asked_of = rf"(?:the\s+)?{head}(?:\s+\w+)?\s+of\s+(?:the\s+)?{obj}\b"
    opening = r"(?:[^,]{0,60},\s*)?"  # "Thus, ", "In summary, ", "In Italy, "
    shapes = (
        rf"^{opening}{asked_of}\s+is\s+(?P<after>.+)$",
        rf"^{opening}(?:{obj}'s\s+|(?:the\s+)?){head}(?:\s+\w+)?\s+is\s+(?P<after>.+)$",
        rf"^(?P<before>\S.*?)\s+is\s+{asked_of}",
        rf"^(?P<before>[^,]+),\s*{asked_of}",
    )
    found = None
    for sentence in split_sentences(text):
        sentence = sentence.strip().lstrip(_MARKUP)
        if len(sentence) > _RESTATED_MAX or not re.search(head, sentence, re.I):
            continue
        for shape in shapes:
            match = re.match(shape, sentence, re.I)
            if not match:
                continue
            after = match.groupdict().get("after")
            if after is not None and re.match(r"(?:not|never)\b", after, re.I):
                break  # "The capital of Australia is not Sydney, as many believe."
            part = _name_after(after) if after is not None else match.group("before")
            part = re.sub(r"\s*\([^)]*\)", "", part).strip()
            if after is None and not _name_like(part):
                break
            if 0 < len(part.split()) <= 6:
                found = _clean_text(part, case_fold)
            break
    return found


def _name_after(after: str) -> str:
    """The quoted or bolded name that opens ``after`` ('"Singin' in the Rain".', "**War and
    Peace**"), else ``after`` up to its description (:data:`_DESCRIPTION`)."""
    quoted = re.match(rf"\s*(?:{_BOLD}|{_QUOTED})", after)
    if quoted:
        return next(group for group in quoted.groups() if group)
    return _DESCRIPTION.split(after, maxsplit=1)[0]


# A question that asks to transform the string it quotes, and what the transformation does to it.
_TRANSFORMS = (
    (re.compile(r"\b(?:backwards?|revers\w*)\b", re.I), lambda word: word[::-1]),
    (re.compile(r"\b(?:sort\w*|alphabetical)\b", re.I), lambda word: "".join(sorted(word))),
    (re.compile(r"\b(?:last|first)\s+letters?\b|\bconcatenat\w*", re.I), lambda word: None),
)


def _echoes_question(answer: str | None, question: str, case_fold: bool) -> bool:
    """Whether a free-text answer is the one string a transforming question quotes, given back
    though the transformation changes it ("planet" asked to spell "planet" backwards): the thing to
    transform is no answer. Not so when it is its own transform ("level" backwards, "below" sorted)
    or for other questions ('What is the plural of "sheep"?' -> sheep)."""
    quoted = re.findall(_QUOTED, question or "")
    if answer is None or len(quoted) != 1:
        return False
    word = _clean_text("".join(quoted[0]), case_fold)
    for asks, transform in _TRANSFORMS:
        if asks.search(question):
            return answer == word and transform(word) != word
    return False


def _concluding_text(text: str, case_fold: bool = True) -> str | None:
    """A free-text answer stated without an answer phrase: the first :data:`TEXT_ENDINGS` entry that
    matches the chain's last sentence (or, failing that, the one before it: "..., the resultant
    string is "ycan". Thus, the question asks for this string."), its last match; a chain of one
    short line is its own answer ("an"). Anything else states no answer."""
    sentences = split_sentences(text)
    if len(sentences) == 1 and len(sentences[0].split()) <= 2:
        return _clean_text(sentences[0], case_fold)
    last = sentences[-2:]
    if len(last) == 2 and _REMARK.search(last[1]):
        last = last[:1]
    for sentence in reversed(last):
        found = _ending_answer(sentence, TEXT_ENDINGS, case_fold)
        if found is not None:
            return found
    return None


def normalize_answer(
    text: str | float | int | bool | None,
    answer_type: str,
    choices: Sequence[str] | None = None,
    case_fold: bool = True,
) -> float | str | None:
    """The canonical form of an answer of ``answer_type``: a finite float for numbers, a letter
    for choices, an NLI label, "yes"/"no", or (lower-cased unless not ``case_fold``) text. None
    when nothing parses. Normalizing a canonical form gives it back (idempotent)."""
    if text is None:
        return None
    if answer_type == "number":
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            try:
                value = float(text)
            except OverflowError:  # an int beyond float range
                return None
            return value if math.isfinite(value) else None
        return _number(str(text))
    if answer_type == "choice":
        return _choice(str(text), choices)
    if answer_type == "label":
        if isinstance(text, int) and not isinstance(text, bool) and 0 <= text < len(NLI_LABELS):
            return NLI_LABELS[text]
        return _nli_label(str(text))
    if answer_type == "yesno":
        if isinstance(text, bool):
            return "yes" if text else "no"
        return _yes_no(str(text))
    if answer_type == "text":
        return _clean_text(str(text), case_fold)
    raise ValueError(f"unknown answer type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}")


def _statement_value(
    statement: str, answer_type: str, choices: Sequence[str] | None, case_fold: bool, question: str = ""
) -> float | str | None:
    if answer_type == "text":
        value = _text(statement, case_fold)
        declined = value is not None and (_NO_TEXT_ANSWER.search(value) or _DECLINED.search(value))
        return None if declined else value
    if answer_type == "number" and "\\" in statement:
        latex = latex_number(statement)
        if latex is not None:
            return latex
    if answer_type == "number" and question:
        if lists_parts(_first_sentence(statement).replace(",", ""), asked_for(question)):
            return None  # "So the final answer is: Zachary did 53 push-ups and 14 crunches" asked their sum
        read = _sentence_statement(statement, question)
        if read is not None:
            return read
    return normalize_answer(statement, answer_type, choices)


def _sentence_statement(statement: str, question: str) -> float | None:
    """An answer statement written as a sentence with several numbers, read as a concluding
    sentence (:func:`_sentence_answer`): "Answer: After 60 days, Cynthia will spend $16.00" -> 16,
    "Betty will make 3 bracelets for Brenda, each with 12 star-shaped stones." -> 12, "Frank can buy
    5 8 dollar toys" (asked "8 dollar toys") -> 5, "40 dwarves ... can mine 43,200 pounds" (40 is
    the question's) -> 43200. One that opens with its own number ("The answer is 12 apples, 3 more
    than Tom") or an expression ("(84 / 2)") is not one: None."""
    sentence = _first_sentence(statement.strip().lstrip(_MARKUP)).replace(",", "")
    givens = set(quantities(question))
    opens_with_given = quantities(sentence)[:1] and quantities(sentence)[0] in givens and sentence[:1].isdigit()
    if not (re.match(r"[A-Za-z]", sentence) or opens_with_given) or len(quantities(sentence)) < 2:
        return None
    return _sentence_answer(sentence, givens, set(), asked_for(question))


def _attempts_answer(statement: str, answer_type: str) -> bool:
    """Whether an unreadable statement still tried to give an answer (then the sample is
    unanswered): a number statement with a digit in it ("(some - 563 - 558)"), any non-empty text
    statement. "The answer is simply the difference of ..." or "so our answer is correct" did not
    try, and an earlier statement (or the concluding sentence) speaks instead."""
    if answer_type == "number":
        return bool(re.search(r"\d", _first_sentence(statement)))
    return answer_type == "text" and bool(statement.strip())


def latex_number(text: str) -> float | None:
    """The value of a LaTeX answer ("\\frac{3}{4}", "\\dfrac{1}{2}", "2\\sqrt{4}") read by Hugging
    Face's ``math-verify`` (latex2sympy), or None when it is not a finite real number."""
    from math_verify import LatexExtractionConfig, parse

    # No timeout: math-verify's own uses SIGALRM, which only works in the main thread (lm-eval
    # scores in others); the statement is one short \\boxed{} body. Silence its warning about that.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        parsed = parse(f"${text}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        return _finite(str(float(parsed[0]))) if parsed else None
    except Exception:  # noqa: BLE001 - sympy raises many types (TypeError for a set, ...): all mean "not a number"
        return None


def stated_answer(
    rationale: str,
    answer_type: str = "number",
    choices: Sequence[str] | None = None,
    require_phrase: bool = False,
    pattern: str = "",
    case_fold: bool = True,
    question: str = "",
    finish_reason: str = "",
) -> float | str | None:
    """The answer a rationale states (see the notes above this section): the last explicit
    statement's answer; without one, and unless ``require_phrase``, the concluding sentence's
    (numbers, choices, yes/no; None for labels and text that state nothing). ``pattern``, a
    task's own ``answer_pattern`` regex, replaces all of this: its last match's first group.
    ``question``: the question's text, whose numbers are givens rather than answers.
    ``finish_reason``: why the teacher stopped; a chain stopped early (:data:`CUT_OFF_REASONS`)
    gives only an answer it states explicitly, in a sentence it finished."""
    if finish_reason in CUT_OFF_REASONS:
        rationale, require_phrase = finished_part(rationale), True
    if pattern:
        matches = [m for m in re.finditer(pattern, rationale or "")]
        return normalize_answer(matches[-1].group(1), answer_type, choices, case_fold) if matches else None
    if answer_type == "text" and question and _no_text_answer(rationale or "", question):
        return None
    for statement in reversed(answer_statements(rationale)):
        value = _statement_value(statement, answer_type, choices, case_fold, question)
        if value is not None or _attempts_answer(statement, answer_type):
            return value
    if require_phrase or not (rationale or "").strip():
        return None
    if answer_type == "number":
        return _concluding_number(rationale, question)
    if answer_type == "choice":
        return _concluding_choice(rationale, choices)
    if answer_type == "yesno":
        return _opening_yes_no(rationale)
    if answer_type == "label":
        sentences = split_sentences(rationale)
        return _nli_label(sentences[-1]) if sentences else None
    found = _restated_answer(rationale, question, case_fold) or _concluding_text(rationale, case_fold)
    return None if _echoes_question(found, question, case_fold) else found


def predicted_answer(
    generation: str,
    answer_type: str = "number",
    choices: Sequence[str] | None = None,
    pattern: str = "",
    case_fold: bool = True,
) -> float | str | None:
    """The answer a ``predict:`` generation gives (a whole answer statement is accepted too)."""
    if pattern:
        return stated_answer(generation, answer_type, choices, pattern=pattern, case_fold=case_fold)
    for statement in reversed(answer_statements(generation)):
        value = _statement_value(statement, answer_type, choices, case_fold)
        if value is not None or _attempts_answer(statement, answer_type):
            return value
    return normalize_answer(generation, answer_type, choices, case_fold)


@dataclass(frozen=True)
class WrittenStep:
    """One ``a op b = c`` step as written in a rationale."""

    a: float
    op: str
    b: float
    c: float

    @property
    def is_valid(self) -> bool:
        """True when the stated result is arithmetically right."""
        value = _OPS[self.op](self.a, self.b)
        return math.isfinite(value) and abs(value - self.c) <= 1e-6


def parse_steps(rationale: str) -> list[WrittenStep]:
    """All ``a op b = c`` steps of a rationale, in order."""
    return [WrittenStep(float(a), op, float(b), float(c)) for a, op, b, c in _STEP.findall(rationale or "")]


def step_validity(rationale: str) -> float | None:
    """Fraction of written steps that are arithmetically right; None if there are no steps."""
    steps = parse_steps(rationale)
    if not steps:
        return None
    return sum(step.is_valid for step in steps) / len(steps)
