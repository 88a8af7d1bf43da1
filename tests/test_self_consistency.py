"""Self-consistency selection (qcrd_plugin.rationales)."""

from qcrd_plugin.config import SelfConsistencyConfig, SynthTaskConfig, TeacherConfig
from qcrd_plugin.rationales import pool_statistics, select, select_pool
from qcrd_plugin.synth import generate
from qcrd_plugin.teachers import PoolEntry, SimulatedTeacher, TeacherSample


def entry(answers, gold="5"):
    samples = [
        TeacherSample(f"r{i} The answer is {a}." if a is not None else f"r{i} trails off", a)
        for i, a in enumerate(answers)
    ]
    return PoolEntry("q", "question", gold, samples)


def test_majority_answers_are_positives_minority_are_negatives():
    sel = select(entry([5.0, 5.0, 3.0, 5.0, 4.0]), SelfConsistencyConfig())
    assert sel.majority == 5.0
    assert len(sel.positives) == 3 and len(sel.negatives) == 2
    assert all("The answer is 5" in r for r in sel.positives)


def test_unparseable_samples_are_dropped_and_counted():
    sel = select(entry([5.0, None, 5.0, None, 3.0]), SelfConsistencyConfig())
    assert sel.n_unparseable == 2
    assert len(sel.positives) + len(sel.negatives) == 3


def test_tie_prefers_gold_else_first_sampled():
    tied = entry([3.0, 5.0, 3.0, 5.0], gold="5")
    assert select(tied, SelfConsistencyConfig(tie_break="gold")).majority == 5.0
    assert select(tied, SelfConsistencyConfig(tie_break="first")).majority == 3.0
    no_gold = entry([3.0, 4.0], gold="9")
    sel = select(no_gold, SelfConsistencyConfig(tie_break="gold"))
    assert sel.tie and sel.majority == 3.0


def test_all_unparseable_gives_empty_sets():
    sel = select(entry([None, None]), SelfConsistencyConfig())
    assert sel.majority is None and not sel.positives and not sel.negatives and sel.n_unparseable == 2


def test_gold_filter_and_disabled_modes():
    wrong_majority = entry([3.0, 3.0, 5.0], gold="5")
    assert select(wrong_majority, SelfConsistencyConfig()).majority == 3.0
    gold_sel = select(wrong_majority, SelfConsistencyConfig(gold_filter=True))
    assert len(gold_sel.positives) == 1 and len(gold_sel.negatives) == 2
    off = select(wrong_majority, SelfConsistencyConfig(enabled=False))
    assert off.positives == [wrong_majority.samples[0].rationale] and not off.negatives


def test_simulated_teacher_pool_matches_the_documented_noise():
    problems = generate(SynthTaskConfig(n_train=300, n_valid=1, n_test=1))["train"]
    pool = SimulatedTeacher(TeacherConfig()).sample(problems, 5, 0.7)
    stats = pool_statistics(pool, select_pool(pool, SelfConsistencyConfig()))
    assert 0.15 < 1 - stats["sample_accuracy"] < 0.35  # roughly a quarter of samples wrong
    assert stats["majority_eq_gold_rate"] > 0.9  # the majority is right for most questions
    hot = SimulatedTeacher(TeacherConfig()).sample(problems, 5, 1.5)
    assert (
        pool_statistics(hot, select_pool(hot, SelfConsistencyConfig()))["sample_accuracy"] < stats["sample_accuracy"]
    )
    # The stated answer follows from the written steps, even when a step went wrong.
    for e in pool:
        for s in e.samples:
            if s.answer is not None and "no_answer" not in s.error and "skip" not in s.error:
                last = s.rationale.split(" = ")[-1].split(".")[0].split()[0]
                assert float(last) == s.answer


def test_teacher_labels_replace_gold_with_the_majority_and_drop_questions_without_one():
    """task.label_source: teacher_majority (the paper's Table 3): the label is the teacher's
    self-consistent answer, written as a gold answer is; a question without a majority is dropped."""
    from qcrd_plugin.questions import Question
    from qcrd_plugin.rationales import Selection
    from qcrd_plugin.training import teacher_labels

    questions = [
        Question("a", "3 + 4?", "7"),
        Question("b", "2 + 2?", "4"),
        Question("c", "Where?", "a", answer_type="choice", choices=["x", "y"]),
    ]
    selections = [
        Selection("a", "7", majority=8.0),
        Selection("b", "4", majority=None),
        Selection("c", "a", majority="b"),
    ]
    labelled, dropped = teacher_labels(questions, selections)
    assert [(q.id, q.answer) for q in labelled] == [("a", "8"), ("c", "b")] and dropped == 1
    assert questions[0].answer == "7"  # the task's own questions are not changed
