import pytest

from pytest_serving.correctness import judge, max_probability_difference, same_top1, summarize, unanswered_record
from pytest_serving.protocols.base import Prediction
from pytest_serving.samples import Sample


def pred(classes, probabilities=(0.5, 0.2, 0.1, 0.1, 0.1)):
    return Prediction(tuple(classes), tuple(probabilities))


def sample(sample_id, label, accepted=None):
    return Sample(sample_id, b"", label, frozenset(accepted or {label}), "test")


def test_same_top1_exact():
    assert same_top1(pred([1, 2, 3, 4, 5]), pred([1, 3, 2, 4, 5]))


def test_different_top1_disagrees():
    assert not same_top1(pred([2, 1, 3, 4, 5]), pred([1, 2, 3, 4, 5]))


def test_near_tie_in_the_reference_is_agreement():
    reference = pred([1, 2, 3, 4, 5], (0.4001, 0.4, 0.1, 0.05, 0.04))
    assert same_top1(pred([2, 1, 3, 4, 5]), reference)


def test_probability_difference_over_common_classes():
    assert max_probability_difference(
        pred([1, 2, 3, 4, 5], (0.5, 0.2, 0.1, 0.1, 0.1)), pred([1, 2, 3, 4, 6], (0.49, 0.2, 0.1, 0.1, 0.1))
    ) == pytest.approx(0.01)


def test_judge_reports_both_answers():
    verdict = judge(sample("a", 7), pred([3, 7, 1, 2, 4]), pred([3, 1, 2, 4, 5]))
    assert verdict.agrees and verdict.top5_correct and not verdict.top1_correct
    assert not verdict.reference_top5_correct
    assert "sample a" in verdict.message and "[3, 7, 1, 2, 4]" in verdict.message


def test_summary_counts_accuracy_and_agreement():
    samples = [sample("a", 1), sample("b", 2), sample("c", 3, {3, 9})]
    server = {"a": pred([1, 0, 4, 5, 6]), "b": pred([0, 2, 4, 5, 6]), "c": pred([9, 0, 4, 5, 6])}
    reference = {"a": pred([1, 0, 4, 5, 6]), "b": pred([2, 0, 4, 5, 6]), "c": pred([9, 0, 4, 5, 6])}
    summary = summarize(samples, server, reference)
    assert summary.n == 3
    assert summary.top1 == pytest.approx(2 / 3)
    assert summary.top5 == 1.0
    assert summary.reference_top1 == 1.0
    assert summary.agreement == pytest.approx(2 / 3)


def test_cross_target_agreement_counts_common_samples_both_ways():
    from pytest_serving.correctness import cross_target_agreement, cross_target_violations

    a = {"s1": pred([1, 2, 3, 4, 5]), "s2": pred([7, 2, 3, 4, 5]), "s3": pred([1, 2, 3, 4, 5])}
    b = {"s1": pred([1, 2, 3, 4, 5]), "s2": pred([2, 7, 3, 4, 5])}
    record = cross_target_agreement({"a": a, "b": b})
    assert record["a"]["b"] == record["b"]["a"]
    assert record["a"]["b"]["n"] == 2 and record["a"]["b"]["same"] == 1
    (agreement_line, probability_line) = cross_target_violations(record)
    assert agreement_line.startswith("a vs b: top-1 agreement 0.500 < 0.99 over n=2")
    assert "probabilities differ" in probability_line


def test_agreeing_targets_have_no_violations():
    from pytest_serving.correctness import cross_target_agreement, cross_target_violations

    same = {"s1": pred([1, 2, 3, 4, 5], (0.5, 0.2, 0.1, 0.1, 0.1))}
    close = {"s1": pred([1, 2, 3, 4, 5], (0.5004, 0.2, 0.1, 0.1, 0.1))}
    assert cross_target_violations(cross_target_agreement({"a": same, "b": close})) == []


def test_gate_records_the_matrix_in_results(tmp_path):
    from pytest_serving.correctness import gate_cross_target_agreement
    from pytest_serving.report.results import ResultsStore

    store = ResultsStore(tmp_path / "results.json")
    for name, top in (("a", 1), ("b", 2)):
        store.set(("targets", name, "predictions"), {"s1": [[top, 0, 3, 4, 5], [0.5, 0.2, 0.1, 0.1, 0.1]]})
    assert gate_cross_target_agreement(store)
    assert store.read()["agreement"]["a"]["b"]["same"] == 0


def test_judge_measures_how_far_the_probabilities_are_from_the_reference():
    reference = pred([3, 1, 2, 4, 5], (0.9, 0.04, 0.03, 0.02, 0.01))
    halved = pred([3, 1, 2, 4, 5], (0.45, 0.02, 0.015, 0.01, 0.005))
    verdict = judge(sample("a", 3), halved, reference)
    assert verdict.agrees and verdict.probability_difference == pytest.approx(0.45)
    assert judge(sample("a", 3), reference, reference).probability_difference == 0.0


def test_a_target_that_left_samples_unanswered_records_the_count_and_the_first_error():
    record = unanswered_record(6, {"b": "ProtocolError: HTTP 500: stub died", "c": "ProtocolError: HTTP 500"})
    assert record == {
        "n": 6,
        "answered": 4,
        "failures": 2,
        "first_error": "sample b: ProtocolError: HTTP 500: stub died",
    }
