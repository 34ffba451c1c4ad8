import json

import pytest

from pytest_serving.protocols.base import Prediction
from pytest_serving.protocols.v2 import V2Protocol
from pytest_serving.robustness import Case
from pytest_serving.robustness.outcome import (
    BODY_EXCERPT_CHARS,
    Aftermath,
    Answer,
    Classification,
    answer_problems,
    expectation,
    health_changes,
    judge,
    known_deviation,
    poisoned_plan,
    poisoned_problem,
    readable_text,
)
from pytest_serving.samples import Sample
from pytest_serving.targets import TARGETS
from pytest_serving.targets.triton import Triton

TRITON = "triton 2.51.0"
INVALID = frozenset({400, 422})


def image_case(name: str, expect: str, **fields) -> Case:
    if expect != "classify":
        fields = {"rejected_by": "decoder", "statuses": INVALID, **fields}
    return Case(name, f"the {name} case", expect, image=lambda: name.encode(), **fields)


TRUNCATED = image_case("truncated-50pct", "reject")
PNG = image_case("png", "classify", same_label_as_sample=True)
WEBP = image_case("webp", "classify")
BITFLIP = image_case("bitflip-body", "survive")
JSON_MALFORMED = Case(
    "json-malformed",
    "A valid JSON request cut in half.",
    "reject",
    rejected_by="protocol",
    statuses=INVALID,
    build=lambda protocol, image: None,
)


def pred(*classes: int) -> Prediction:
    return Prediction(classes, (0.6, 0.2, 0.1, 0.05, 0.05))


def answer(status: int | None, body: bytes = b'{"error":"cannot decode image"}', error: str = "") -> Answer:
    return Answer(status, body, 12.5, error)


HEALTHY = Aftermath((), True, "sample a: top-1 1, in-process 1")
CRASHED = Aftermath(
    ("not ready (ready=False)",), False, "sample a: ConnectionError: refused", "Segmentation fault", next_answered=False
)
#: A Triton python stub that died: health and the repository index still say READY, every request gets 500.
DEAD_STUB = Aftermath(
    (),
    False,
    "sample a: ProtocolError: v2: HTTP 500: Stub process 'efficientnet_lite0_0_0' is not healthy.",
    "Stub process ... is not healthy",
    next_answered=False,
)


def test_answer_describes_status_and_start_of_body():
    long_body = b"x" * 1000
    described = answer(500, long_body).describe()
    assert described.startswith("HTTP 500 in 12 ms") and "x" * BODY_EXCERPT_CHARS in described
    assert "x" * (BODY_EXCERPT_CHARS + 1) not in described
    assert answer(None, b"", "no answer within 60 s").describe() == "no answer after 12 ms: no answer within 60 s"


@pytest.mark.parametrize(
    ("body", "readable"),
    [
        (b'{"error":"IMAGE[0]: cannot decode image"}', True),
        ("image trop grande: 7000×7000".encode(), True),
        (b"", False),
        (b" \n", False),
        (b"\x00\x01binary", False),
        (b"\xff\xd8\xff\xe0", False),
    ],
)
def test_readable_text(body, readable):
    assert readable_text(body) is readable


def test_health_unchanged_is_survival():
    snapshot = {"ready": True, "models": {"efficientnet_lite0/1": "READY"}}
    assert health_changes(snapshot, dict(snapshot)) == ()


def test_health_changes_name_what_changed():
    before = {"ready": True, "workers": [101, 102]}
    changes = health_changes(before, {"ready": False, "workers": [101, 103]})
    assert changes == ("not ready (ready=False)", "workers changed from [101, 102] to [101, 103]")
    assert health_changes(before, {"ready": True}) == ("workers changed from [101, 102] to None",)


def test_expectation_in_words():
    assert expectation(TRUNCATED) == "400/422 with a readable error (rejected by the decoder layer)"
    assert expectation(PNG) == "a 2xx with the in-process model's top-1 and the sample's class in the top-5"
    assert expectation(BITFLIP).startswith("a 2xx with the in-process model's top-1, or 400/422")


def test_accepted_rejection_with_readable_error_has_no_problem():
    assert answer_problems(TRUNCATED, answer(400), None) == []


@pytest.mark.parametrize(
    ("case", "response", "problem"),
    [
        (TRUNCATED, answer(500), "HTTP 500: a server error is never a correct answer"),
        (TRUNCATED, answer(404), "HTTP 404 is not an accepted answer"),
        (TRUNCATED, answer(200, b"{}"), "HTTP 200 is not an accepted answer"),
        (TRUNCATED, answer(400, b""), "the error body is empty or not readable text"),
        (PNG, answer(400), "HTTP 400 is not an accepted answer"),
        (TRUNCATED, answer(None, b"", "no answer within 60 s"), "no HTTP answer: no answer within 60 s"),
    ],
)
def test_wrong_answers_are_problems(case, response, problem):
    problems = answer_problems(case, response, None)
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_a_2xx_is_judged_by_its_classification():
    with pytest.raises(ValueError, match="needs a Classification"):
        answer_problems(PNG, answer(200, b"{}"), None)
    agreeing = Classification(pred(7, 1, 2, 3, 4), pred(7, 2, 1, 3, 4), frozenset({7}))
    assert answer_problems(PNG, answer(200, b"{}"), agreeing) == []
    assert answer_problems(BITFLIP, answer(200, b"{}"), agreeing) == []


def test_classification_problems():
    disagreeing = Classification(pred(5, 1, 2, 3, 4), pred(7, 2, 1, 3, 4))
    assert disagreeing.problems()[0].startswith("top-1 5 differs from the in-process model's 7")
    lost_label = Classification(pred(5, 1, 2, 3, 4), pred(5, 2, 1, 3, 4), frozenset({9}))
    assert lost_label.problems() == [
        "none of the sample's classes [9] in the top-5 [5, 1, 2, 3, 4]: the image is the sample re-encoded"
    ]
    no_prediction = Classification(None, pred(5, 2, 1, 3, 4), detail="v2: response is not a top-5 prediction")
    assert no_prediction.problems() == ["a 2xx without a prediction: v2: response is not a top-5 prediction"]
    refused = Classification(pred(5, 1, 2, 3, 4), None, detail="cannot decode image")
    assert refused.problems() == ["the server classified bytes that the shared decoder refuses (cannot decode image)"]


def test_passing_case_records_its_answer():
    result = judge("triton", TRITON, TRUNCATED, answer(400), HEALTHY)
    assert result.outcome == "pass"
    assert result.record() == {
        "expect": "reject",
        "status": 400,
        "error": '{"error":"cannot decode image"}',
        "survived": True,
        "died": False,
        "next_answer_correct": True,
        "latency_ms": 12.5,
        "outcome": "pass",
        "problems": [],
    }
    json.dumps(result.record())


def test_failure_message_says_case_answer_and_survival():
    message = judge("triton", TRITON, TRUNCATED, answer(500, b"boom" * 100), HEALTHY).message()
    assert "robustness case 'truncated-50pct' on triton (triton 2.51.0)" in message
    assert "expected: 400/422 with a readable error" in message
    assert "got: HTTP 500 in 12 ms, body '" + "boom" * 75 + "'" in message
    assert "server survived: yes (health unchanged, next valid sample answered right)" in message
    assert "container log tail" not in message


def test_a_server_that_dies_fails_with_its_log_tail():
    result = judge("triton", TRITON, TRUNCATED, answer(400), CRASHED)
    assert result.outcome == "fail"
    message = result.message()
    assert "server survived: NO, it died: a valid sample gets no prediction (not ready (ready=False))" in message
    assert "next valid sample: WRONG: sample a: ConnectionError: refused" in message
    assert message.endswith("container log tail:\nSegmentation fault")
    assert result.record()["survived"] is False and result.record()["next_answer_correct"] is False


def test_wrong_next_answer_fails_even_when_health_is_unchanged():
    wrong = Aftermath((), False, "sample a: top-1 3, in-process 1", "log")
    result = judge("triton", TRITON, TRUNCATED, answer(400), wrong)
    assert result.outcome == "fail" and result.record()["survived"] is False
    assert "server survived: NO: it answers a valid sample wrong" in result.message()


def test_a_dead_backend_behind_green_health_endpoints_did_not_survive_and_died():
    result = judge("triton", TRITON, TRUNCATED, answer(400), DEAD_STUB)
    assert result.outcome == "fail"
    assert result.record()["survived"] is False and result.record()["died"] is True
    message = result.message()
    assert "server survived: NO, it died: a valid sample gets no prediction (its health endpoints still say ready)" in (
        message
    )
    assert message.endswith("container log tail:\nStub process ... is not healthy")


def test_a_known_deviation_does_not_excuse_a_dead_backend():
    dead = judge("triton", TRITON, JSON_MALFORMED, answer(500), DEAD_STUB, deviations=Triton.known_deviations)
    assert dead.outcome == "fail"


def test_known_server_500_is_a_deviation():
    body = b'{"error":"failed to parse"}'
    result = judge("triton", TRITON, JSON_MALFORMED, answer(500, body), HEALTHY, deviations=Triton.known_deviations)
    assert result.outcome == "deviation"
    assert result.deviation and "Triton 2.51.0" in result.deviation
    assert result.record()["deviation"] == result.deviation
    assert "known server deviation: Triton 2.51.0" in result.message()


def test_a_deviation_does_not_excuse_a_crash_or_another_target():
    deviations = Triton.known_deviations
    assert judge("triton", TRITON, JSON_MALFORMED, answer(500), CRASHED, deviations=deviations).outcome == "fail"
    assert judge("kserve", "kserve 0.21.0", JSON_MALFORMED, answer(500), HEALTHY).outcome == "fail"
    kserve = TARGETS["kserve"].known_deviations
    assert judge("kserve", "kserve 0.21.0", JSON_MALFORMED, answer(500), HEALTHY, deviations=kserve).outcome == "fail"
    newer = judge("triton", "triton 2.52.0", JSON_MALFORMED, answer(500), HEALTHY, deviations=deviations)
    assert newer.outcome == "fail"


def test_a_fixed_deviation_passes():
    # The suite marks the test xfail(strict=True), so this pass reports XPASS(strict): remove the entry.
    fixed = judge("triton", TRITON, JSON_MALFORMED, answer(400), HEALTHY, deviations=Triton.known_deviations)
    assert fixed.outcome == "pass"


def test_deviation_versions_match_by_dotted_prefix():
    deviations = {"1.2": {"empty": "demo 1.2 answers 500"}}
    assert known_deviation(deviations, "demo 1.2", "empty") == "demo 1.2 answers 500"
    assert known_deviation(deviations, "demo 1.2.7", "empty") == "demo 1.2 answers 500"
    assert known_deviation(deviations, "demo 1.20.0", "empty") is None
    assert known_deviation(deviations, "unknown", "empty") is None
    assert known_deviation(deviations, "demo 1.2", "png") is None


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_deviation_names_server_and_version(name):
    system = name.split("-")[0]
    for prefix, cases in TARGETS[name].known_deviations.items():
        for reason in cases.values():
            assert system in reason.lower() and prefix in reason


def test_deviations_live_on_their_target_classes():
    assert "json-malformed" in Triton.known_deviations["2.51"]
    assert "unknown-version" in TARGETS["kserve"].known_deviations["0.21"]
    assert set(TARGETS["kserve-v1"].known_deviations["0.21"]) == {"header-1mib"}
    assert "oversize-80mib" in TARGETS["torchserve"].known_deviations["0.12"]


def sample(sample_id: str, label: int) -> Sample:
    return Sample(sample_id, sample_id.encode(), label, frozenset({label}), "test")


def test_poisoned_plan_mixes_one_corrupted_request_in_twenty():
    samples = [sample("a", 1), sample("b", 2)]
    plan = poisoned_plan(samples, [TRUNCATED, BITFLIP], count=200, every=20)
    corrupted = [planned for planned in plan if planned.case]
    assert len(plan) == 200 and len(corrupted) == 10
    assert [planned.case.name for planned in corrupted[:3]] == ["truncated-50pct", "bitflip-body", "truncated-50pct"]
    assert corrupted[0].data == b"truncated-50pct"
    valid = [planned.sample.id for planned in plan if planned.sample]
    assert valid[:4] == ["a", "b", "a", "b"]
    with pytest.raises(ValueError):
        poisoned_plan(samples, [])


def v2_body(*classes: int) -> bytes:
    outputs = [
        {"name": "CLASSES", "datatype": "INT64", "shape": [1, 5], "data": list(classes)},
        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 5], "data": [0.6, 0.2, 0.1, 0.05, 0.05]},
    ]
    return json.dumps({"outputs": outputs}).encode()


def test_poisoned_problem_judges_each_kind_of_request():
    protocol = V2Protocol("efficientnet_lite0")
    reference = {"a": pred(1, 2, 3, 4, 5)}
    [valid] = poisoned_plan([sample("a", 1)], [TRUNCATED], count=1)
    corrupted = poisoned_plan([sample("a", 1)], [TRUNCATED], count=20)[10]
    assert poisoned_problem(valid, answer(200, v2_body(1, 2, 3, 4, 5)), reference, protocol) == ""
    assert poisoned_problem(valid, answer(200, v2_body(9, 2, 3, 4, 5)), reference, protocol) == (
        "sample a: top-1 9, in-process 1"
    )
    assert poisoned_problem(valid, answer(500, b"batch failed"), reference, protocol).startswith("sample a: HTTP 500")
    assert poisoned_problem(corrupted, answer(400), reference, protocol) == ""
    assert poisoned_problem(corrupted, answer(500), reference, protocol).startswith(
        "corrupted (truncated-50pct): HTTP 500"
    )
