"""Answer parsing and step checking (qcrd_plugin.answers)."""

import time

import pytest

from qcrd_plugin.answers import (
    answers_match,
    format_number,
    parse_label,
    parse_stated_answer,
    parse_steps,
    stated_answer,
    step_validity,
)
from qcrd_plugin.asked import asked_for


def test_stated_answer_takes_the_last_answer_phrase():
    assert parse_stated_answer("3 + 4 = 7. The answer is 7.") == 7.0
    assert parse_stated_answer("So the answer is (12).") == 12.0
    assert parse_stated_answer("The answer is 5. No wait, the answer is 6.") == 6.0
    assert parse_stated_answer("Answer: -3") == -3.0


def test_no_answer_phrase_is_unparseable():
    assert parse_stated_answer("3 + 4 = 7.") is None
    assert parse_stated_answer("") is None


def test_label_is_the_first_number():
    assert parse_label("12") == 12.0
    assert parse_label(" 7 apples") == 7.0
    assert parse_label("2.5") == 2.5
    assert parse_label("none") is None


def test_steps_and_validity():
    text = "Tom has 3. 3 + 4 = 7. 7 - 2 = 6. 6 * 2 = 12. The answer is 12."
    steps = parse_steps(text)
    assert [(s.a, s.op, s.b, s.c) for s in steps] == [(3, "+", 4, 7), (7, "-", 2, 6), (6, "*", 2, 12)]
    assert [s.is_valid for s in steps] == [True, False, True]
    assert step_validity(text) == 2 / 3
    assert step_validity("no steps here") is None


def test_numbers_match_and_format():
    assert answers_match(7.0, "7")
    assert not answers_match(None, "7")
    assert not answers_match(6.0, "7")
    assert format_number(7.0) == "7" and format_number(2.5) == "2.5"


def test_safe_eval_does_arithmetic_and_nothing_else():
    from qcrd_plugin.answers import safe_eval

    assert safe_eval("( 84.0 / 2.0 )") == 42.0
    assert safe_eval("(10 * 45) - 3") == 447.0
    assert safe_eval("-(2 + 3) * 4") == -20.0
    for hostile in (
        "__import__('os').system('true')",
        "open('x')",
        "(1).__class__",
        "[1, 2]",
        "a + 1",
        "2 ** 10 ** 10",
    ):
        assert safe_eval(hostile) is None
    assert safe_eval("1 / 0") is None


def test_typed_answers():
    from qcrd_plugin.answers import normalize_answer, stated_answer

    choices = ["park", "coloring book", "garden center", "math problem", "gravity"]
    assert stated_answer("Only math problem fits. So the answer is (d) math problem.", "choice", choices) == "d"
    assert stated_answer("The answer is B", "choice", choices) == "b"
    assert normalize_answer("garden center", "choice", choices) == "c"
    assert stated_answer("Oxford is in London. So the answer is contradiction.", "label") == "contradiction"
    assert normalize_answer(1, "label") == "neutral"
    assert stated_answer("... therefore it is True. The answer is True", "yesno") == "yes"
    assert normalize_answer("No", "yesno") == "no"
    assert stated_answer("So they planted 10 * 45 seeds. The answer is (10 * 45).") == 450.0
    assert stated_answer("Danny has 100 - 68 = 32 more wrappers.") == 32.0  # raw sample: its last number
    assert stated_answer("Danny has 100 - 68 = 32 more wrappers.", require_phrase=True) is None
    assert stated_answer("She makes 9 * 2 = $18.\n#### 1,018") == 1018.0


def _reads_number(chain: str, question: str, want: float | None) -> None:
    """The number answer read from ``chain`` is ``want`` (None: no answer)."""
    got = stated_answer(chain, "number", question=question)
    assert got is None if want is None else got == pytest.approx(want)


# ---- issue 25: answers as LLMs write them (real chains from tests/fixtures/answer_labels_*2/_text) ----


@pytest.mark.parametrize(
    "chain, want",
    [
        # after a colon at the end (text-davinci-003, Plan-and-Solve)
        ("Step 3: Concatenate the last letters.\n\nThe concatenated last letters are: nyni.", "nyni"),
        # "we get" with a quoted answer (text-davinci-002, zero-shot CoT)
        ('The last letter of "Ashlee" is "e".\n\nIf we put all these letters together, we get "tiiae".', "tiiae"),
        # "is" with single quotes (gpt-3.5-turbo, Rephrase-and-Respond)
        (
            "The last letters from each word are respectively 'n', 'e', 'y', 'o'. Therefore, when concatenated "
            "the result is 'neyo'.",
            "neyo",
        ),  # fmt: skip
        # an answer statement with spaced or hyphenated letters: one word
        ('So the final answer is "l i e o".', "lieo"),
        ('So, the final answer is "s-e-y-y" (without the quotation marks).', "seyy"),
        ("Answer: l, e, y, y → leyy", "leyy"),
        # the answer restated as the question's subject after it
        (
            'Joining these letters together, the resultant string is "ycan". Thus, the original question is '
            "asking for this string.",
            "ycan",
        ),  # fmt: skip
        # a bare answer, the whole reply (gpt-4 without CoT)
        ("lyica", "lyica"),
        # no answer stated
        ("I apologize, but I cannot provide the last names of Jorge Raul as they were not given.", None),
    ],
)
def test_free_text_answers_at_the_end_of_a_chain(chain, want):
    assert stated_answer(chain, "text") == want


def test_free_text_answers_keep_their_symbols_and_ignore_closing_remarks():
    assert stated_answer("So the language we get is: C++.", "text") == "c++"
    assert stated_answer("So we get nyay. This is correct.", "text") == "nyay"
    assert stated_answer("Putting them together, we get: self-driving", "text") == "self-driving"
    assert not answers_match("ice cream", "icecream")
    started = time.perf_counter()
    stated_answer("Result: a" + " " * 20000 + "b", "text")
    assert time.perf_counter() - started < 0.5  # endings read a sentence's tail, never backtrack over it


def test_free_text_answers_follow_case_fold_and_the_ending_table_is_extendable():
    assert stated_answer("Putting them together: Berl.", "text") == "berl"
    assert stated_answer("Putting them together: Berl.", "text", case_fold=False) == "Berl"
    assert stated_answer("The name of the city: **Paris**.", "text", case_fold=False) == "Paris"
    assert stated_answer("In the end it is Yajc, I think", "text", pattern=r"it is (\w+)") == "yajc"


@pytest.mark.parametrize(
    "chain, question, want",
    [
        # a fraction as the stated result (text-davinci-002)
        (
            "1/4 + 1/2 = 3/4\n\nTherefore, 3/4 of the nails are either size 2d or 4d.",
            "0.25 the nails are size 2d and 0.5 the nails are size 4d . What fraction ...",
            0.75,
        ),  # fmt: skip
        # a mixed number
        ("1 and 1/8 laps plus 2 and 1/8 laps is 3 and 1/4 laps.", "Kyle jogged 1.125 laps and 2.125 laps.", 3.25),
        ("In total, Charlie picked 2/6 + 2/6 + 1/3 = 1 1/2 bags of fruit.", "", 1.5),
        # a number word in the closing sentence (MCC-KD)
        (
            "There are now a total of 5 birds sitting on the fence (3 original birds + 2 new birds) and 4 storks. "
            "Therefore, there is one more bird than storks sitting on the fence.",
            "3 birds and 4 storks ...",
            1.0,
        ),  # fmt: skip
        ("Jake had one more balloon than Allan in the park.", "Allan brought 2 balloons and Jake brought 3", 1.0),
        # the conclusion wins over a restatement of the question's numbers after it (MCC-KD)
        (
            "Solving for x, we get: x = 420 / 30 = 14. This means the ring toss game made $14 per day. We also "
            "know that together with the other games at the carnival, they earned $22.",
            "In total in 30 days they earned 420 dollars. Together with game they earned 22 dollars.",
            14.0,
        ),  # fmt: skip
        # cut off mid-sentence by the teacher's length limit: no answer
        ("Finally, she paid $9.31 for peaches.\n\nTo find out how much money Mary spent in", "", None),
        ("She has 12 apples.\n---", "", 12.0),  # a closing rule is not a cut
        ("10 / 2 = 5. So each one gets five.", "", 5.0),  # the last number word, not the pronoun
        ("Therefore, no one is left out.", "", None),
        ("2/3 of a mile.\n\nIn total, she walked 1/9 +", "", None),
        ("We want to know what x is equal to.\n\n4000 = (3/4", "", None),
        # cut off on a word, without a full stop, after computing nothing in its last line (text-davinci-002)
        (
            "We can multiply this by 2 to find out that there are 6,200 pennies in two thirds of the cup. \n"
            "Now that we know how many pennies are in two thirds of the cup, we can multiply 6,200 by 0.01. \n"
            "This will give us the total dollar amount in a stack that contains two thirds",
            "There are 9,300 pennies in a cup. What is the total dollar amount in a stack that contains two thirds?",
            None,
        ),  # fmt: skip
        (
            "6 pounds of butter = 3 pounds of butter + 3 pounds of butter\n\nNow, we can see a pattern. For every 1 "
            "pound of butter, Dennis",
            "",
            None,
        ),
        # ends announcing a step it never takes
        (
            "This means that the second slide is 20 feet per minute faster than the first slide. \n\n"
            "Now we can set up a proportion. \n\n$$\\frac{60}{60}=\\frac{x}{80}$$\n\nCross multiply to solve for x.",
            "The biggest waterslide is 300 feet long ... How much longer does it take to ride the biggest slide?",
            None,
        ),  # fmt: skip
        # alternatives offered, no choice made (MCC-KD)
        (
            "So from the above expression, we see that she played with 18 or  grindingly 20, rounded from halfway.",
            "",
            None,
        ),
        # a closing equation is the answer, also when it recomputes an earlier number: "There are a total of
        # 40 pictures. ... Each album has 8 pictures. So, 8 pictures x 5 albums = 40 pictures." reads 40
        # (labelled 8), because answer-first chains have the same shape and far more often (MCC-KD)
        (
            "Paco had 12 cookies left. \n\nTo solve: \n\nFirst, subtract the number of cookies he gave away: "
            "\n\n36 - 14 = 22 cookies left \n\nNext, subtract the number of cookies he ate: \n\n22 - 10 = 12 "
            "cookies left",
            "Paco had 36 cookies. He gave 14 cookies to his friend and ate 10 cookies. How many cookies did Paco "
            "have left?",
            12.0,
        ),  # fmt: skip
        # an answer line without a full stop is no cut (MCC-KD)
        (
            "315 (girls) + 309 (boys) + 772 (teachers) = \n\nThe result is:\n\n1396 people",
            "In a school there are 315 girls and 309 boys. There are also 772 teachers How many people are there?",
            1396.0,
        ),  # fmt: skip
        # "In other words" restates the problem before any conclusion; a remark after the conclusion (MCC-KD)
        (
            "We are also given that after the apple-picking incident, the tree had 7 apples still on it. In other "
            "words, we know that x - 2 = 7.\n\nTo find x, we can simply add 2 to both sides of this equation: x - 2 "
            "+ 2 = 7 + 2. Simplifying this equation gives us x = 9.\n\nTherefore, the tree had 9 apples initially.",
            "Rachel picked 2 apples from 1 of her trees. Now the tree has 7 apples still on it.",
            9.0,
        ),  # fmt: skip
        (
            "Jake has 8+3= 11 apples.\n\nTherefore, Jake has 11 apples. It wouldn't matter if he had a negative "
            "value for the peaches as we are only asked to find apples, so long as the information regarding the "
            "apples is still intact.",
            "Jake has 3 more apples than Steven. Steven has 8 apples.",
            11.0,
        ),  # fmt: skip
        # the asked quantity first, another after it, across a line that ends ", and" (text-davinci-002)
        (
            "That means in total, there are \n\n43 + 24 = 67 blue marbles, and \n16 + 0 = 16 red marbles.",
            "Jason has 43 blue and 16 red marbles . Tom has 24 blue marbles . How many blue marbles "
            "do they have in all ?",
            67.0,
        ),  # fmt: skip
        # two numbers naming different asked things: no single answer (MCC-KD)
        (
            "Crackers per person: 13 ÷ 28 = 0.46\n\nCakes per person: 15 ÷ 28 = 0.54\n\nTherefore, "
            "each person ate approximately 0.46 crackers and 0.54 cakes.",
            "If he had 13 crackers and 15 cakes initially How many crackers and cakes did each person eat?",
            None,
        ),  # fmt: skip
        (
            "Rachel had to complete 10 pages of reading homework and 6 pages of biology homework.",
            "Rachel had to complete 5 pages of math homework, 10 pages of reading homework and 6 more pages of "
            "biology homework. How many pages of reading and biology homework did she have to complete?",
            None,
        ),  # fmt: skip
        # an answer given first, then derived again, is not a check (MCC-KD)
        (
            "The tree originally had 9 apples on it. \n\nTo figure this out, we can use subtraction. Rachel picked 2 "
            "of the apples, so that means there were originally 9 + 2 = 11 apples on the tree. Therefore, the tree "
            "originally had 11 - 2 = 9 apples on it.",
            "She picked 2 apples from 1 of her trees. Now the tree has 7 apples still on it.",
            9.0,
        ),  # fmt: skip
        # an answer statement naming several quantities: the one whose unit is what was asked (Plan-and-Solve)
        (
            "Calculation: \n36 star-shaped stones / 3 = 12 star-shaped stones \n\nAnswer: \nBetty will make 3 "
            "bracelets for Brenda, each with 12 star-shaped stones.",
            "Brenda, Betty's sister, wanted to have 3 bracelets with star-shaped stones. She also "
            "bought 36 star-shaped "
            "stones from the local store and gave it to Betty. How many star-shaped stones will "
            "there be in each of the "
            "bracelet Betty makes for Brenda?",
            12.0,
        ),  # fmt: skip
        (
            "2. Number of toys = 40 / 8 = 5 toys \n\nAnswer: Frank can buy 5 8 dollar toys.",
            "Frank had saved up 3 dollars. If he received another 37 dollars for his allowance, how "
            "many 8 dollar toys "
            "could he buy?",
            5.0,
        ),  # fmt: skip
        # alternatives with their units (text-davinci-002)
        (
            "His room has 4 shelves.\n\nThat means that in his room, he could fit a total of 320 action figures, or "
            "400 cabinets.",
            "Adam could fit 8 action figures and 10 cabinets on each shelf in his room. His room has 4 shelves. How "
            "many total items could his shelves hold?",
            None,
        ),  # fmt: skip
        # the result restated in words, and a chain with no digit at all
        (
            "19 apples - 15 peaches = 4\n\nSteven has four more apples than peaches.",
            "Jake has 3 fewer peaches and 4 more apples than Steven. Steven has 19 apples and 15 peaches.",
            4.0,
        ),  # fmt: skip
        (
            "There are six birds in the bushes. Two-thirds of that number is four, so there are four birds flying "
            "overhead. \nAdding these up, we get six + four + twenty-four, or thirty-four birds in total.",
            "Jerry counts six birds nesting in the bushes, 2/3rd of that number of birds flying overhead.",
            34.0,
        ),  # fmt: skip
        # a chain that only restates the question (text-davinci-002)
        (
            "His grandmother gave Chris $25 for his birthday. \n\nThis means that Chris had $25 more on his birthday. "
            "\n\nNow Chris had $279. \n\nThis means that Chris had $279 on his birthday.",
            "His grandmother gave Chris $25 for his birthday. Now Chris had $279. How much money did "
            "Chris have before "
            "his birthday?",
            None,
        ),  # fmt: skip
        # an answer statement written as a sentence whose first number is the question's (Plan-and-Solve)
        (
            "Step 2: The total cost of the ice cream is 4 cartons x $4.00 per carton = $16.00.\n\n"
            "Answer: After 60 days, Cynthia will spend $16.00 on ice cream.",
            "She buys cartons of ice cream with 15 servings of ice cream per carton at a cost of $4.00 per carton. "
            "After 60 days, how much will she spend on ice cream?",
            16.0,
        ),  # fmt: skip
        ("The answer is 246 people times 4 sections, which equals 984 people.", "", 984.0),
        # a result after "we get"; a restatement after the answer (text-davinci-002, MCC-KD)
        (
            "There are 2 pop albums. Each album has 9 songs. So that's 18 songs. \n\n"
            "Now we just have to add 54 and 18 and we get 72.",
            "Isabel bought 6 country albums and 2 pop albums. Each album had 9 songs. How many songs did Isabel buy?",
            72.0,
        ),  # fmt: skip
        (
            "Therefore, Danny has 16 more wrappers than bottle caps in his collection now. \n\nTo put it another "
            "way, if we compare the ratio of his current bottle caps to wrappers, we can say Danny has:\n\n"
            "- 1 bottle cap for every 1.59 (62 wrappers ÷ 10 bottle caps) wrappers\n- 1 wrapper for every 0.63 (10 "
            "bottle caps ÷ 62 wrappers) bottle caps \n\nThis means he has collected more wrappers for each bottle cap "
            "he’s found.",
            "He found 10 bottle caps and 62 wrappers at the park. Now he has 27 bottle caps and 43 wrappers.",
            16.0,
        ),  # fmt: skip
        # declined with a contraction (text-davinci-002)
        (
            "That means she has 37 pictures in one album and 4 pictures in the other two albums. \nWe don't know how "
            "many pictures are in each of the other two albums, so we can't solve this problem.",
            "Nancy uploaded 41 pictures to Facebook. She put 37 pics into one album.",
            None,
        ),  # fmt: skip
        # "or" after a sum means "that is"; a rounded result; a statement opening with the question's number
        (
            "We also know that his hair is now 10 inches long. \nThat means that the original length of his hair "
            "must have been 10 inches + 20 inches, or 30 inches.",
            "Robin cut off 20 inches of his hair. If his hair is now 10 inches long How long was his hair before "
            "he cut?",
            30.0,
        ),  # fmt: skip
        (
            "If Frank read 40 chapters at 11 pages per day and 1 chapter at 5 pages, he read (40*11) + 5 = 445 pages "
            "in 30 days.\nTherefore, the approximate number of pages Frank read per day is 445/30 ≈ 14.83. Rounded to "
            "two decimal points.",
            "It has a total of 450 pages. It took Frank 30 days to finish the book. How many pages did he read per "
            "day?",
            14.83,
        ),  # fmt: skip
        (
            "2. Calculate the total ore mined in a month with 30 days: 1440 x 30 = 43,200 pounds.\n\nAnswer:\n\n"
            "40 dwarves with steel pickaxes can mine 43,200 pounds of ore in a month with 30 days.",
            "How many pounds of ore can 40 dwarves with steel pickaxes mine in a month with 30 days?",
            43200.0,
        ),  # fmt: skip
    ],
)
def test_number_answers_as_llms_write_them(chain, question, want):
    _reads_number(chain, question, want)


# What the question asks, read against what the chain ends on (issue 25, second session; real MCC-KD,
# Plan-and-Solve and zero-shot-CoT chains of the development draws, tests/fixtures/answer_labels_numbers*).
@pytest.mark.parametrize(
    "chain, question, want",
    [
        # the concluding sentence goes past the answer: another unit, a comparison nobody asked, another person
        (
            "Jackie has a total of 11 + 89 = 100 fruits.\nIf Adam has five more apples than Jackie's 11 apples, then "
            "Adam has 11 + 5 = 16 apples.\nAdam therefore has 16 + 89 = 105 fruits.",
            "Adam has 5 more apples than Jackie. Jackie has 89 oranges and 11 apples. How many apples does Adam have?",
            16.0,
        ),  # fmt: skip
        (
            "Helen baked 397 + 85 = 482 raisin cookies in total.\nTherefore, Helen baked 482 - 403 = 79 more raisin "
            "cookies than chocolate chip cookies.",
            "Helen baked 144 chocolate chip cookies and 397 raisin cookies yesterday. And she baked 85 raisin cookies "
            "and 403 chocolate chip cookies this morning. How many raisin cookies did Helen bake?",
            482.0,
        ),  # fmt: skip
        (
            "Solution:\nDavid = 19 + 39 = 58 push-ups\nJohn = 58 - 13 = 45 push-ups",
            "Zachary did 19 push-ups in gym class today. David did 39 more push-ups than Zachary. John did 13 "
            "push-ups less than david. How many push-ups did David do?",
            58.0,
        ),  # fmt: skip
        # several people, or what is left, in one closing sentence
        (
            "19 - 13 = Jill's number of peaches\n6 = Jill's number of peaches\n\nTherefore, Steven has 19 peaches, "
            "Jill has 6 peaches, and Jake has 1 peach.",
            "Jake has 18 fewer peaches than Steven who has 13 more peaches than Jill. Steven has 19 peaches. How many "
            "peaches does Jill have?",
            6.0,
        ),  # fmt: skip
        (
            "Then he ate 9 more pieces, leaving him with a total of 7 pieces of candy (16 - 9 = 7). Thus, he ate a "
            "total of 14 pieces of candy (5 + 9 = 14) and has 7 pieces left.",
            "Bobby had 21 pieces of candy. He ate 5 pieces of candy. Then he ate 9 more. How many pieces of candy "
            "does he still have left?",
            7.0,
        ),  # fmt: skip
        # one count of two things asked, and the chain ends on the parts: the total stated before, else none
        (
            "After picking 53 tomatoes, the farmer is left with 177 - 53 = 124 tomatoes.\nHe still has 12 potatoes."
            "\nTherefore, he has 124 tomatoes and 12 potatoes left.",
            "A farmer had 177 tomatoes and 12 potatoes in his garden. If he picked 53 tomatoes How many tomatoes "
            "and potatoes does he have left?",
            None,
        ),  # fmt: skip
        (
            "Zachary did a total of 53+14 = 67 push-ups and crunches in gym class today.\nDavid did 17 more push-ups "
            "than Zachary (53+17 = 70 push-ups)\nDavid did 10 fewer crunches than Zachary (14-10 = 4 crunches)\n"
            "David did a total of 70+4 = 74 push-ups and crunches.\nTherefore, Zachary did 53 push-ups and 14 "
            "crunches.",
            "Zachary did 53 push-ups and 14 crunches in gym class today. David did 17 more push-ups but 10 less "
            "crunches than zachary. How many push-ups and crunches did Zachary do?",
            67.0,
        ),  # fmt: skip
        # "2 5 dollar toys": 2 is the count of 5-dollar toys, not the 10 dollars after it
        (
            "Step 2: Paul can buy 10/5 = 2 5 dollar toys with the 10 dollars he has.\n\nAnswer: Paul can buy 2 5 "
            "dollar toys with the 10 dollars he has.",
            "Paul had saved up 3 dollars. If he received another 7 dollars for his allowance, how many 5 dollar "
            "toys could he buy?",
            2.0,
        ),  # fmt: skip
        # cut off after the answer; cut off on a currency sign; ending on the question itself
        (
            "$840 + $756 = $1596\n\n\nTherefore, Aleena paid a total of $1596 for the streaming service by",
            "If the streaming company charged her the initial amount for the first half of the year and then charged "
            "her 10% less money on the other half of the year, calculate the total amount she had paid.",
            1596.0,
        ),  # fmt: skip
        (
            "$45/hour * x hours = $225 \n\n$45/hour * x hours/ $45/hour = $225/$45/hour \n\n$x hours = $225/$45 \n\n$",
            "A mechanic charged 45 dollars an hour , plus 225 dollars for the parts. If the total bill was 450 "
            "dollars , how many hours did the job take?",
            None,
        ),  # fmt: skip
        (
            "So it would be $1.08 + $4.80 = $5.88. \n\nMary paid with a 20 dollar bill. \n\nThat means she paid $20 "
            "for the lunch. \n\nWhat was the total of the lunch bill?",
            "Mary spent $ 1.08 on soup and $ 4.80 on a salad . Mary paid with a 20 dollar bill . What was the total "
            "of the lunch bill ?",
            None,
        ),  # fmt: skip
    ],
)
def test_the_asked_quantity_wins_over_what_the_chain_ends_on(chain, question, want):
    _reads_number(chain, question, want)


def test_asked_for_reads_the_asked_sentence():
    asked = asked_for("Steven has 19 peaches. How many tomatoes and potatoes does Jill have left?")
    assert asked.sentence == "How many tomatoes and potatoes does Jill have left?"
    assert asked.owners == {"Jill"} and asked.people == {"Steven", "Jill"} and not asked.compares
    assert len(asked.parts) == 2 and asked_for("How many more apples than peaches?").compares


# Issue 25's third round of number rules (development draw numbers7 and earlier ones, real text).
@pytest.mark.parametrize(
    "chain, question, want",
    [
        # a fraction answer is the fraction, not its numerator (Plan-and-Solve, a wrong chain)
        ("x = 8*6/7\n\nx = 48/7\n\nAnswer:\n\nMelanie started with 48/7 vacuum cleaners.", "", 48 / 7),
        # "x-21" is x minus 21, not a quantity of -21; "so Dan" names no unit (zero-shot CoT)
        (
            "Dan now has 5 kittens. So we have $x-21$ kittens remaining.\n\nWe can set up the equation "
            "$x-5-7-4-5=0$ and solve for $x$. We find that $x=21$, so Dan",
            "Dan 's cat had kittens and 5 had spots . He gave 7 to Tim and 4 to Jason . He now has 5 kittens . "
            "How many kittens did he have to start with ?",
            21.0,
        ),  # fmt: skip
        # a rounded result is the result (MCC-KD)
        (
            "There are 54 soda + 15 water = 69 bottles in total that Debby drinks per day.\nDebby's water bottles "
            "will last 165/69 = 2.39 days, which rounds down to 2 days.",
            "If she drank 15 water bottles and 54 soda bottles a day How many days would the water bottles last?",
            2.0,
        ),  # fmt: skip
        # an answer first, then "To find out, ..." and checks (MCC-KD)
        (
            "Robin's hair was 30 inches long before he cut it. \n\nTo find out, you can use subtraction: \n\n30 "
            "(original length) - 20 (amount cut off) = 10 (current length)\n\nAlternatively, you can also subtract "
            "the current length from the original length: \n\n30 (original length) - 10 (current length) = 20 "
            "(amount cut off)",
            "Robin cut off 20 inches of his hair. If his hair is now 10 inches long How long was his hair before "
            "he cut?",
            30.0,
        ),  # fmt: skip
        # a sum left open by the length limit (zero-shot CoT)
        (
            "This means that she spends 1.5 hours doing her makeup every week. \n\nNow let's add up all the time "
            "that Britany spends on TikTok in a week: \n\n72 minutes + 2",
            "How much time does Britany spend on TikTok in a month with four weeks?",
            None,
        ),  # fmt: skip
        # an answer statement that gives the parts of the asked count (MCC-KD)
        (
            "14 - 10 = 4 crunches. \n\nZachary did not do any more push-ups or crunches than what was stated in "
            "the problem. So the final answer is: \n\nZachary did 53 push-ups and 14 crunches in gym class today.",
            "Zachary did 53 push-ups and 14 crunches in gym class today. David did 17 more push-ups but 10 less "
            "crunches than zachary. How many push-ups and crunches did Zachary do?",
            None,
        ),  # fmt: skip
        # a comparison asked: the quantity said as one, after "so" (zero-shot CoT)
        (
            "Now we can see that Raymond does 200 pounds of laundry and David does 100 pounds of laundry, so the "
            "difference is that Raymond does 100 pounds more laundry than David.",
            "If Raymond does half as much laundry as Sarah, and Sarah does 4 times as much laundry as David, "
            "calculate the difference in the amount of laundry Raymond and David do if Sarah does 400 pounds of "
            "laundry.",
            100.0,
        ),  # fmt: skip
        (
            "There are now 11 birds and 14 storks, so there are 3 more storks than birds.",
            "3 birds were sitting on the fence. 6 more storks and 2 more birds came to join them. How many more "
            "storks than birds are sitting on the fence?",
            3.0,
        ),  # fmt: skip
    ],
)
def test_number_rules_of_the_third_round(chain, question, want):
    _reads_number(chain, question, want)


def test_the_asked_sentence_starts_at_its_how():
    # SVAMP runs the last statement into the question: "more" there is no comparison asked.
    asked = asked_for("Paco had 40 cookies. Then he bought 37 more cookies How many cookies did Paco have left?")
    assert asked.sentence == "How many cookies did Paco have left?" and not asked.compares


# Found by a code review of the rules above (made-up text that reads one way to any person).
@pytest.mark.parametrize(
    "chain, question, want",
    [
        # the clauses of a closing sentence keep their commas: the person asked about, not a computed other
        (
            "Steven has 4 + 9 = 13 peaches.\nTherefore, Steven has 13 peaches, Jill has 9 peaches, and Jake has "
            "2 peaches.",
            "Steven has 4 more peaches than Jill. Jake has 2. How many peaches does Jill have?",
            9.0,
        ),  # fmt: skip
        # "$...$" maths and "45$" are no cut-off on a currency sign
        ("First, 3 + 4 = 7.\nSo the total is $7$", "How many apples?", 7.0),
        ("He pays 20 + 25 = 45.\nSo he pays 45$", "How much does he pay?", 45.0),
        # parts with their total are no list of parts; parts all equal are "as many of each"
        (
            "He picked some.\nSo he has 124 tomatoes + 12 potatoes = 136 tomatoes and potatoes.",
            "A farmer has 124 tomatoes and 12 potatoes. How many tomatoes and potatoes does he have in total?",
            136.0,
        ),  # fmt: skip
        (
            "He picked some.\nSo he has 124 tomatoes and 12 potatoes, which makes 136 tomatoes and potatoes in total.",
            "A farmer has 124 tomatoes and 12 potatoes. How many tomatoes and potatoes does he have in total?",
            136.0,
        ),  # fmt: skip
        (
            "They shared 6 + 6 = 12 fruits.\nTherefore, each friend got 3 apples and 3 pears.",
            "How many apples and pears did each friend get?",
            3.0,
        ),  # fmt: skip
        # a pronoun is nobody else: "He has 20 apples" is Adam's answer
        (
            "Adam has 11 + 5 = 16 apples in the morning.\nHe has 16 + 4 = 20 apples.",
            "Adam has 11 apples. He buys 5 more apples. Then he buys 4 more. How many apples does Adam have?",
            20.0,
        ),  # fmt: skip
        # "left" in the question's condition is not what it asks
        (
            "x - 91 + 91 = 92 + 91\n\nx = 183\n\nTherefore, Kelly initially had 183 Nintendo games before giving "
            "away 91, leaving her with 92 games remaining.",
            "Kelly gives away 91 nintendo games. How many did she have initially if she still has 92 games left?",
            183.0,
        ),  # fmt: skip
    ],
)
def test_reader_review_cases(chain, question, want):
    _reads_number(chain, question, want)


def test_singular_and_plural_units_are_one_form():
    assert asked_for("How many candies did she buy?").words == asked_for("How many candy did she buy?").words
    assert asked_for("How many cookies?").words == asked_for("How many cookie?").words == ("cookie",)
    assert asked_for("How many peaches?").words == ("peach",)
    assert asked_for("Mary ate 2 on Monday. How many apples does Mary have on Tuesday?").owners == {"Mary"}


# A tiny teacher's free-text replies (real SmolLM2-135M-Instruct replies of the development draw,
# tests/fixtures/answer_labels_smollm2_dev.jsonl): replies that state no answer however they end.
@pytest.mark.parametrize(
    "reply, question, want",
    [
        # repetition until the token limit
        (
            'So the answer is "A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-',
            'Take the last letters of each word in "Tim Cook" and concatenate them.',
            None,
        ),  # fmt: skip
        (
            'The word "button" is "b-i-c-u-l-l-u-c-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u-l-u',
            'Spell the word "button" backwards.',
            None,
        ),  # fmt: skip
        (
            'Rosa Parks: "R-S-A-P-A-S-A"\nRosa Parks: "S-A-P-A-S-A"\nRosa Parks: "R-A-S-A-R-A"\nRosa Parks: '
            '"S-A-P-A-R-A"\nRosa Parks: "S',
            'Take the last letters of each word in "Rosa Parks" and concatenate them.',
            None,
        ),  # fmt: skip
        # a decline, a hedge, the question's own words
        (
            "It's impossible to determine a specific answer to the question without further information. So, the "
            "answer is not possible.",
            'Take the last letters of each word in "Isaac Newton" and concatenate them.',
            None,
        ),  # fmt: skip
        (
            "The answer is either 2:1 or 3:1, but it is a simple and unambiguous answer.",
            "Which colour do you get when you mix red and blue paint?",
            None,
        ),  # fmt: skip
        ("Larry Page.", 'Take the last letters of each word in "Larry Page" and concatenate them.', None),
        # the answer alone out of "indeed X, because ..." and "that X is ..."
        (
            "When you mix red and white paint, you get a shade of green.\n\nThe correct answer is indeed 202, because "
            "202 is the final colour after the blending of red and white paints.",
            "Which colour do you get when you mix red and white paint?",
            "202",
        ),  # fmt: skip
        (
            "4. Explain the answer: The answer is that Ottawa is the capital city of Canada.",
            "What is the capital city of Canada?",
            "ottawa",
        ),  # fmt: skip
        # and a short reply that is not the question's words is still its own answer
        ("Paris.", "What is the capital city of France?", "paris"),
    ],
)
def test_tiny_teacher_replies_that_state_no_answer(reply, question, want):
    assert stated_answer(reply, "text", question=question) == want


@pytest.mark.parametrize(
    "chain, question, want",
    [
        # arithmetic in words gives a result, and what follows ", so" concludes (zero-shot CoT)
        (
            "If he spends $5 a week, that means he has $35 left. \n$35 divided by $5 is 7, so the money would "
            "last him 7 weeks.",
            "Mike made 14 dollars mowing lawns and 26 dollars weed eating. If he only spent 5 dollar a week, how "
            "long would the money last him?",
            7.0,
        ),  # fmt: skip
        # what follows ", then" concludes (zero-shot CoT)
        (
            "That means that 48 students were picked for the team. \nIf the 48 students were put into 8 groups, "
            "then each group would have 6 students.",
            "There are 65 students trying out for the school's trivia teams. If 17 of them didn't get picked for "
            "the team and the rest were put into 8 groups, how many students would be in each group?",
            6.0,
        ),  # fmt: skip
        # ... but a bare "and then" is a step (MCC-KD)
        (
            "16 - 9 = 7  \n\nBobby would have 7 pieces left after eating 5 and then 9 pieces.",
            "Bobby had 21 pieces of candy. He ate 5 pieces of candy. Then he ate 9 more. How many pieces of candy "
            "does he still have left?",
            7.0,
        ),  # fmt: skip
        # a reason given after the answer checks it (the first fixture, gpt-3.5)
        (
            "The length of Jesse's room would be 2 feet, as 7 times 2 equals 14 square feet.",
            "Jesse's room is 7 feet wide. If she needs a carpet of size 14 square feet What is the length of her "
            "room?",
            2.0,
        ),  # fmt: skip
        # cut off by the length limit while restating a number the question gave (zero-shot CoT)
        (
            "This means that Janey has 3 + 2x(the number of books that Sally has). \n\nNow we have all the "
            "information we need to solve for Sally's number of books. We know that Janey has 21",
            "Janey has 3 more than twice the number of books that Sally has. If Janey has 21 books, how many "
            "does Sally have?",
            None,
        ),  # fmt: skip
        # a distance asked; the time it takes follows it, sentences later (MCC-KD)
        (
            "1218 ft - 849 ft = 369 ft\n\nSo they need to travel an additional 369 feet to reach the end of the "
            "cave. We also know they are traveling at a speed of 17 (we'll assume feet per minute), so we just "
            "need to divide distance by speed to get the time it will take:\n\n369 ft ÷ 17 ft/min = 21.71 min "
            "(rounded to two decimal places)\n\nSo it will take them approximately 21.71 minutes to reach the "
            "end of the cave, assuming they travel at a constant speed and don't encounter any obstacles.",
            "The cave is 1218 feet deep and they are already at 849 feet. If they are travelling at speed of 17 "
            "How much farther until they reach the end of the cave?",
            369.0,
        ),  # fmt: skip
        # the last sentence computes the answer even though the question gave that number (MCC-KD)
        (
            "Paco started with 26 + 17 = 43 cookies.\nHe then ate 14 + 9 = 23 cookies.\nTherefore, he has 43 - "
            "23 = 20 cookies left.\nSince he ate 9 salty cookies, he has 26 - 9 = 17 salty cookies left.",
            "Paco had 26 salty cookies and 17 sweet cookies. He ate 14 sweet cookies and 9 salty cookies. How "
            "many salty cookies did Paco have left?",
            17.0,
        ),  # fmt: skip
        # the asked count three sentences before the closing one about something else (MCC-KD)
        (
            "120 students ÷ 24 classrooms = 5 students per class\n\nTherefore, there are 5 students in each "
            "class. \n\nNow we need to figure out how many buses are needed for the field trip. We can do this "
            "by dividing the total number of students by the number of seats on each bus:\n\n120 students ÷ 84 "
            "seats = 1.43 buses\n\nSince we can't have a fraction of a bus, we will need to round up to 2 buses. "
            "\n\nTherefore, the school will need 2 school buses for the field trip.",
            "The school is planning a field trip. The school has 24 classrooms. There are 120 students in the "
            "school with each classroom having the same number of students. There are 84 seats on each school "
            "bus. How many students are in each class?",
            5.0,
        ),  # fmt: skip
    ],
)
def test_number_rules_of_the_fourth_round(chain, question, want):
    _reads_number(chain, question, want)


def test_asked_for_knows_the_measure_a_question_asks_without_a_unit():
    assert (
        asked_for("If they are travelling at speed of 17 How much farther until they reach the end?").measure
        == "length"
    )
    assert asked_for("How far did she walk?").measure == "length"
    assert asked_for("How long will it take to fill 240 drums?").measure == "time"
    assert asked_for("How long is the rope?").measure == ""  # a length or a time: not decided here
    assert asked_for("How many apples does he have?").measure == ""


@pytest.mark.parametrize(
    "chain, question, want",
    [
        # "which is" gives a result (zero-shot CoT) ...
        (
            "There are a total of 16 chicken wings. \nThere are 4 people in the group. \nThat means that each "
            "person would get 1/4 of the 16 chicken wings, which is 4 chicken wings.",
            "A group of 4 friends went into a restaurant. The chef already had 9 chicken wings cooked but cooked "
            "7 more for the group. If they each got the same amount how many would each person get?",
            4.0,
        ),  # fmt: skip
        # ... but not a number that an operator follows (MCC-KD)
        (
            "The total number of customers he had was the number of customers who left plus the number who "
            "stayed, which is 9 + 12 = **21** customers at the start.",
            "A waiter had some customers. After 9 customers left he still had 12 customers. How many customers "
            "did he have at the start?",
            21.0,
        ),  # fmt: skip
        # what follows an "If ..." clause concludes (zero-shot CoT)
        (
            "Kaleb has 10 video games. \n8 of them aren't working. \nThis leaves 2 that are working. \nIf he "
            "sells these 2 games for $6 each, he will earn $12.",
            "Kaleb had 10 video games but 8 of them weren't working. If he wanted to sell the working games for "
            "$6 each, how much money could he earn?",
            12.0,
        ),  # fmt: skip
        # an answer left as an expression in an unknown states no number (MCC-KD)
        (
            "After giving (210 - n) baseball cards to Jeff, she has 239 + (210 - n) = 449 - n baseball cards "
            "left.\nNell therefore has 376 - (449 - n) = n - 73 more Ace cards than baseball cards.",
            "Nell collects cards. She had 239 baseball cards and 38 Ace cards. She gave some of her cards to Jeff "
            "and now has 376 Ace cards and 111 baseball cards left. How many more Ace cards than baseball cards "
            "does Nell have?",
            None,
        ),  # fmt: skip
    ],
)
def test_number_rules_of_the_fifth_round(chain, question, want):
    _reads_number(chain, question, want)


@pytest.mark.parametrize(
    "chain, question, want",
    [
        # "or" after arithmetic in words restates its result, no hedge (zero-shot CoT)
        (
            "This means she sold a total of 10 necklaces. \nEach necklace cost 9 dollars. \nThis means she earned "
            "10 times 9 dollars, or 90 dollars.",
            "Megan was selling her necklaces at a garage sale. She sold 7 bead necklaces and 3 gem stone "
            "necklaces. If each necklace cost 9 dollars, how much money did she earn?",
            90.0,
        ),  # fmt: skip
        # what follows ", for a total of" and ", totaling" concludes (zero-shot CoT, MCC-KD)
        (
            "In one game, Melissa scored 109 points plus 82 bonus points, for a total of 191 points. \nIn 79 "
            "games, Melissa would score 191 points 79 times, for a total of 15,129 points.",
            "Melissa scored 109 points in each game. She also got 82 bonus points in each game. How many points "
            "did she score in 79 games?",
            15129.0,
        ),  # fmt: skip
        (
            "7 / 3 = 2.33\n\nSince you can't give out a portion of a cracker, we'll round down to 2 crackers per "
            "friend. Therefore, Matthew gave each of his 3 friends 2 crackers, totaling 6 crackers given away.",
            "Matthew had 24 crackers. If Matthew gave equal numbers of crackers to his 3 friends and still had 17 "
            "crackers left How many crackers did Matthew give to his friends?",
            6.0,
        ),  # fmt: skip
        # "checked" restated from a question about checking is no verification (MCC-KD)
        (
            "To solve this problem, there are several pieces of information that we need to use:\n\n- The picker "
            "checked the grapevines after 57 stops.\n- 252 of the pickers fill 108 drums of grapes "
            "per day.\n\nFinally, to calculate the total number of drums of grapes that would be filled in 58 "
            "days, we can add the 108 drums/day for the first 57 days to the 46 drums for the 58th day:\n\n(108 "
            "drums/day x 57 days) + 46 drums = 6174 drums.",
            "Being his favorite, he saved checking on the grapevines after 57 stops. He was told by 252 of the "
            "pickers that they fill 108 drums of grapes per day. How many drums of grapes would be filled in 58 "
            "days?",
            6174.0,
        ),  # fmt: skip
    ],
)
def test_number_rules_of_the_sixth_round(chain, question, want):
    _reads_number(chain, question, want)


@pytest.mark.parametrize(
    "chain, question, want",
    [
        # "equals" after a number gives a result (zero-shot CoT)
        (
            "There are 3 rare mutant invertebrates, each with 10 legs. So, 10 times 3 equals 30. \nNow we can add "
            "all of these numbers together to get the total number of legs Jake sees. \n640 + 540 + 30 equals 1210.",
            "Jake sees 80 spiders with 8 legs each, 90 insects with 6 legs each, and 3 rare mutant invertebrates "
            "with 10 legs each. How many legs does Jake see total?",
            1210.0,
        ),  # fmt: skip
        # a unit conversion gives its result (zero-shot CoT)
        (
            "There are 4 quarters in a dollar, so 9 dollars is 36 quarters. \nThere are 12 quarters in a dozen, "
            "so 36 quarters is 3 dozen.",
            "Sara has saved 9 dollars from washing cars.  How many dozen quarters does Sara have?",
            3.0,
        ),  # fmt: skip
    ],
)
def test_number_rules_of_the_seventh_round(chain, question, want):
    _reads_number(chain, question, want)


@pytest.mark.parametrize(
    "chain, question, want",
    [
        # made-up chains from a code review of the fourth to seventh rounds, each misread before its fix:
        # a comparison or a share after "which is" is no result
        (
            "Jerry has 7 apples. Tom has 5 more, so 7 + 5 = 12. So Tom has 12 apples, which is 5 more than Jerry.",
            "Jerry has 7 apples. Tom has 5 more apples than Jerry. How many apples does Tom have?",
            12.0,
        ),  # fmt: skip
        (
            "She spent 12 + 18 = $30 in all. Therefore she spent $30, which is 60% of her allowance.",
            "Lily spent $12 on a book and $18 on a game. How much did she spend in all?",
            30.0,
        ),  # fmt: skip
        # "the 2 tickets are $30" is no unit conversion
        (
            "2 tickets cost 2 x 15 = $30. She has 50 - 30 = $20 left. So the 2 tickets are $30 and she has $20 left.",
            "Mia has $50. She buys 2 tickets for $15 each. How much money does she have left?",
            20.0,
        ),  # fmt: skip
        # a question about a check written does not make "To verify" a restatement
        (
            "He paid 45 + 30 = $75 in total. So he paid $75. To verify, 75 - 30 = 45, which matches.",
            "Dan wrote a check for $45 to the plumber and paid $30 in cash. How much did Dan pay in total?",
            75.0,
        ),  # fmt: skip
        # a line that is only its number, one that states it, and a cut-off verification are no cut-offs
        (
            "Sam had 10 marbles and lost 5, so 10 - 5 = 5.\n\n**5**",
            "Sam had 10 marbles and lost 5. How many marbles does Sam have?",
            5.0,
        ),  # fmt: skip
        (
            "Maria gives away 12 / 2 = 6 apples.\nMaria has 12 - 6 = 6 apples now.\nThe number of apples Maria has "
            "now is 6",
            "Maria has 12 apples. She gives away half of them. John has 6 oranges. How many apples does Maria have "
            "now?",
            6.0,
        ),  # fmt: skip
        (
            "Therefore, Maria has 8 apples left. We can verify this: 8 apples plus the 4 she gave away makes 12",
            "Maria has 12 apples and gives 4 to her friend. How many apples does Maria have left?",
            8.0,
        ),  # fmt: skip
        # ", as a result" and ", as well as" give no reason
        (
            "Tom walks 2 x 3 = 6 miles a day, as a result he walks 6 x 7 = 42 miles a week.",
            "Tom walks 3 laps of 2 miles every day. How many miles does Tom walk in a week?",
            42.0,
        ),  # fmt: skip
        (
            "Each shelf holds 4 x 5 = 20 books, as well as 3 + 2 = 5 magazines.",
            "A shelf has 4 rows of 5 books, 3 comics and 2 newspapers. How many magazines are on the shelf?",
            5.0,
        ),  # fmt: skip
        # "How long is the last piece?" asks no time
        (
            "Tim cuts 2 + 1 = 3 short pieces in all. The short pieces use 2 x 5 + 4 = 14 feet. So the last piece "
            "is 30 - 14 = 16 feet long.",
            "Tim has a 30-foot rope. He cuts 2 pieces of 5 feet and one piece of 4 feet. How long is the last piece?",
            16.0,
        ),  # fmt: skip
        # a recap "= given" computes nothing; a unit glued to its number is no unknown
        (
            "She needs 24 / 4 = 6 boxes. Total cookies = 24.",
            "Mia baked 24 cookies and puts 4 cookies in each box. How many boxes does she need?",
            6.0,
        ),  # fmt: skip
        (
            "She jogs 30 minutes and walks 15 minutes. So her total exercise time = 30 + 15m = 45 minutes.",
            "Sue jogs for 30 minutes and walks for 15 minutes. How many minutes does she exercise?",
            45.0,
        ),  # fmt: skip
    ],
)
def test_review_of_the_later_rounds(chain, question, want):
    _reads_number(chain, question, want)


# A tiny teacher's free-text replies that restate what a "What is the ... of ...?" question asks
# (real SmolLM2-135M-Instruct replies of tests/fixtures/answer_labels_smollm2_dev.jsonl), and the
# guards: other questions, and descriptions after the answer.
@pytest.mark.parametrize(
    "reply, question, want",
    [
        ("The capital city of Canada is Ottawa, Ontario.", "What is the capital city of Canada?", "ottawa"),
        (
            "Le Coeur de la France\n\nL'Allema de la France is the capital of France.",
            "What is the capital city of France?",
            "l'allema de la france",
        ),
        (
            "Il capo di Roma (The King of Roma) is the capital city of Italy.",
            "What is the capital city of Italy?",
            "il capo di roma",
        ),
        (
            "Italy is a continent located in the southern part of Europe. The capital city of Italy is Rome, the "
            "largest city in the European Union and the most visited city on the planet.",
            "What is the capital city of Italy?",
            "rome",
        ),  # fmt: skip
        # made up for the guards: an answer phrase still speaks first; another question is not read this way
        ("The capital of Peru is Lima. So the answer is Cusco.", "What is the capital city of Peru?", "cusco"),
        ("The capital city of Canada is Ottawa, Ontario.", "Which city hosts the parliament?", None),
        ('The plural of "sheep" is "sheep".', 'What is the plural of "sheep"?', "sheep"),
    ],
)
def test_tiny_teacher_replies_that_restate_the_question(reply, question, want):
    assert stated_answer(reply, "text", question=question) == want


@pytest.mark.parametrize(
    "reply, question, want",
    [
        # real SmolLM2 replies (development draw): the quoted word given back unchanged
        (
            'Tim Cook concatenate the last letters of each word in "Tim Cook" and concatenate them into a single '
            "sentence.",
            'Take the last letters of each word in "Tim Cook" and concatenate them.',
            None,
        ),  # fmt: skip
        ('The word "planet" is a noun.', 'Spell the word "planet" backwards.', None),
        # made up for the guards: a transformed answer, and a question that quotes two strings
        ('So "planet" backwards is "tenalp".', 'Spell the word "planet" backwards.', "tenalp"),
        ('The longer word is "banana".', 'Which is longer when spelled backwards, "apple" or "banana"?', "banana"),
    ],
)
def test_a_transforming_question_s_quoted_word_given_back_is_no_answer(reply, question, want):
    assert stated_answer(reply, "text", question=question) == want


# The eighth round (2026-12-07, fourth session), from the chains of answer_labels_numbers13.jsonl
# (opened after its single measurement), with guards from the MCC-KD pool.
@pytest.mark.parametrize(
    "chain, question, want",
    [
        # a plan announced as the next step: the chain stopped before its answer ("the two numbers" is no 2)
        (
            "So she has 14-5=9 cups of flour left to add. \n\nNext, we need to see how many cups of sugar she "
            "has left to add. So she has 6-0=6 cups of sugar left to add. \n\nFinally, we need to compare the two "
            "numbers.",
            "The recipe calls for 14 cups of flour and 6 cups of sugar. She already put in 5 cups of flour. How many "
            "more cups of flour than cups of sugar does she need to add now?",
            None,
        ),  # fmt: skip
        # an equation left open at the end: cut off
        (
            "Now, we know that my mom's age is one less than three times my brother's age. So we have: \n"
            "1 + 3(my brother's age) = my mom's",
            "I am three years younger than my brother. How old am I?",
            None,
        ),  # fmt: skip
        ("So we set up the equation: \n$7.5x + 15x = 1125$\n$22.5x = 1125$\n$x = \\", "How much per day?", None),
        # ... but a result written number first is no open equation (MCC-KD)
        (
            "Subtracting 30 from both sides:  \n\n7 = Zachary's push-ups",
            "David did 30 more push-ups than Zachary. If David did 37 push-ups How many push-ups did Zachary do?",
            7.0,
        ),  # fmt: skip
        # "16-7, or 9": "or" restates the subtraction's result
        (
            "Seven players quit. \n\nSo the total number of lives left would be 16-7, or 9.",
            "There were 16 friends playing a video game online when 7 players quit. How many lives did they have?",
            9.0,
        ),  # fmt: skip
        # "4 of the 8 football games": the part, not the whole
        (
            "There were a total of 8 football games this year. Keith missed 4 of the games. So Keith went to 4 of "
            "the 8 football games.",
            "There were a total of 8 football games this year , 4 are played at night . Keith missed 4 of the games "
            ". How many football games did Keith go to in total ?",
            4.0,
        ),  # fmt: skip
        # the answer stated again after a check that passed
        (
            "By trial and error, we can see that it takes Julia about 2 hours to play with 12 kids and 4 hours to "
            "play with 14 kids, for a total of 6 hours. Now we can check our work by making sure all the information "
            "in the problem fits together:\n\n- Julia played with a total of 12 + 14 = 26 kids\n- It took her 2 hours "
            "to play with 12 kids and 4 hours to play with 14 kids, for a total of 6 hours\n- The total time spent "
            "playing tag is 34 hours\n\nLooks like everything checks out! So, Julia played with a total of 26 kids.",
            "Julia played tag with 12 kids on monday. She played tag with 14 kids on tuesday. She spent a total of 34 "
            "hours to play tag on both days. How many kids did she play with altogether?",
            26.0,
        ),  # fmt: skip
        # ... not a closing remark after the check (MCC-KD)
        (
            "So there are 337 boys in the school. \n\nChecking our answer: \n\n- There are 402 more girls than boys, "
            "so 337 + 402 = 739 which matches the given number of girls. \n -Therefore, our answer is correct.",
            "In a school there are 402 more girls than boys. If there are 739 girls How many boys are there?",
            337.0,
        ),  # fmt: skip
    ],
)
def test_eighth_round(chain, question, want):
    _reads_number(chain, question, want)


# A review of the eighth round and the restated-answer rules (made-up chains the rules first misread
# and the reader before them read right; each fails on the rules as first written).
@pytest.mark.parametrize(
    "chain, question, want",
    [
        (
            "Sydney is the largest city in Australia, but it is not the capital. Thus, the capital of Australia is "
            "Canberra.",
            "What is the capital of Australia?",
            "canberra",
        ),  # fmt: skip
        (
            "A common misconception is that Sydney is the capital of Australia. In fact, Australia's capital is "
            "Canberra.",
            "What is the capital of Australia?",
            "canberra",
        ),  # fmt: skip
        (
            "The capital of Australia is not Sydney, as many people believe. The capital is Canberra.",
            "What is the capital of Australia?",
            "canberra",
        ),  # fmt: skip
        (
            "Leo Tolstoy wrote several novels. The title of Tolstoy's most famous novel is **War and Peace**.",
            "What is the title of Tolstoy's most famous novel?",
            "war and peace",
        ),  # fmt: skip
        (
            'To spell "level" backwards, we reverse the order of its letters: l-e-v-e-l becomes l-e-v-e-l. So the '
            'word spelled backwards is "level".',
            'Spell the word "level" backwards.',
            "level",
        ),  # fmt: skip
    ],
)
def test_review_of_the_restated_answers(chain, question, want):
    assert stated_answer(chain, "text", question=question) == want


@pytest.mark.parametrize(
    "chain, question, want",
    [
        (
            "Tom has 8 red balls and 3 blue balls. 8 - 3 = 5. Now we can say that Tom has five more red balls than "
            "blue balls.",
            "Tom has 8 red balls and 3 blue balls. How many more red balls than blue balls does Tom have?",
            5.0,
        ),  # fmt: skip
        (
            "John ate 2 out of 8 slices. Therefore, John ate 1/4, or 25%, of the pizza.",
            "A pizza is cut into 8 slices. John eats 2 slices. What fraction of the pizza did John eat?",
            0.25,
        ),  # fmt: skip
        (
            "Jake ate 4 slices, which was 1/3 of the pizza. So, Jake ate 4 of the 12 slices.",
            "Jake ate 4 slices of pizza, which was 1/3 of the pizza. How many slices did the pizza have?",
            12.0,
        ),  # fmt: skip
        (
            "The garden is 8 m long and 6 m wide. Multiplying, 8 × 6 = 48. So the area of the garden is 48 square "
            "meters (Area = length × width)",
            "A rectangular garden is 8 meters long and 6 meters wide. What is its area?",
            48.0,
        ),  # fmt: skip
        (
            "The shirts cost 3 x $12 = $36. So the hat cost $50 - $36 = $14. Let's verify: $36 + $14 = $50, which is "
            "correct. Therefore, Tom spent $50 in total.",
            "Tom bought 3 shirts for $12 each and a hat. He spent $50 in total. How much did the hat cost?",
            14.0,
        ),  # fmt: skip
    ],
)
def test_review_of_the_eighth_round(chain, question, want):
    _reads_number(chain, question, want)


# The ninth round (fifth session) was dropped after its review: its two rules read these made-up
# zero-shot CoT chains, each of which states no answer, as the numbers they restate. A restated
# given is no answer even when the question wrote it without the asked unit ("35 of them", "7 more",
# "12 left"), and a result carried into a step the chain never finishes is none either.
@pytest.mark.parametrize(
    "chain, question",
    [
        (
            "The baker made 43 cakes.\nHe sold 35 cakes.",
            "A baker made 43 cakes. He sold 35 of them. How many cakes does the baker have left?",
        ),  # fmt: skip
        (
            "Sam had 9 dimes in his bank.\nHis dad gave him 7 dimes.",
            "Sam had 9 dimes in his bank. His dad gave him 7 more. How many dimes does Sam have now?",
        ),  # fmt: skip
        (
            "Tim ate 5 cookies.\nHe gave 8 cookies to his sister.\nHe has 12 cookies left.",
            "Tim had some cookies. He ate 5 of them and gave 8 to his sister. Now he has 12 left. How many cookies "
            "did Tim have at first?",
        ),  # fmt: skip
        (
            "Tom has 9 yellow balloons. \nSara has 8 yellow balloons. \nTom has 9 yellow balloons.",
            "Tom has 9 yellow balloons. Sara has 8 yellow balloons. How many yellow balloons do they have in total ?",
        ),  # fmt: skip
        (
            "First, we need to find the total number of pencils: 3 x 12 = 36 pencils.\nNow, we subtract the 10 "
            "pencils he gave away from the 36 pencils to find",
            "There are 3 boxes with 12 pencils in each box. Tom gives away 10 pencils. How many pencils does Tom "
            "have left?",
        ),  # fmt: skip
        (
            "Rachel bought 7 packs of gum with 15 pieces each. To find the total number of pieces, we multiply 7 by "
            "15: 7 x 15 = 105.\nRachel had 105 pieces of gum before she chewed",
            "Rachel bought 7 packs of gum with 15 pieces each. She chewed 23 pieces. How many pieces of gum does she "
            "have left?",
        ),  # fmt: skip
        (
            "0.375 + 0.5 = 0.875\n\nElizabeth had 2 haircuts in",
            "Elizabeth had 0.375 of an inch of hair cut off, then another 0.5 of an inch. How much hair did she have "
            "cut off in all?",
        ),  # fmt: skip
    ],
)
def test_review_of_the_ninth_round(chain, question):
    _reads_number(chain, question, None)
