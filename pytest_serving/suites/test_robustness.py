"""Robustness: corrupt, unusual and malformed requests get a clear answer, and the server survives them.

One test per target and catalogue case (``fixtures/README.md`` lists them) that applies to the
target's protocol family: the answer must be the case's expected 4xx with a readable error,
or a 2xx agreeing with the in-process model on the same bytes; afterwards the server's health
must be unchanged and the next valid sample answered right. Then one poisoned-load test per
target: concurrent valid requests with corrupted ones mixed in must all be answered right.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from pytest_serving.correctness import same_top1
from pytest_serving.deployment import Deployment, deploy, target_options
from pytest_serving.model.card import ModelCard
from pytest_serving.model.preprocess import InvalidImage
from pytest_serving.protocols.base import HttpRequest, Prediction, Protocol, ProtocolError
from pytest_serving.protocols.client import ClassifierClient
from pytest_serving.report.results import ResultsStore
from pytest_serving.robustness import Case, catalogue, hostile
from pytest_serving.robustness.outcome import (
    POISON_EVERY,
    Aftermath,
    Answer,
    CaseOutcome,
    Classification,
    PlannedRequest,
    ServerDeviation,
    health_changes,
    judge,
    known_deviation,
    poisoned_plan,
    poisoned_problem,
    valid_answer_problem,
)
from pytest_serving.samples import Sample
from pytest_serving.session import state
from pytest_serving.settings import selected_targets
from pytest_serving.targets import TARGETS

pytestmark = [pytest.mark.serving, pytest.mark.serving_robustness]

#: No answer within this long is a hang...
REQUEST_TIMEOUT_S = 60.0
#: ...plus this much per MiB of body: a server may take time in proportion to what it is sent
#: (KServe 0.21 took ~47 s to answer an 80 MiB binary tensor with its 400, and over 60 s on a busy machine).
TIMEOUT_S_PER_MIB = 2.0
CATALOGUE_SEED = 0
POISONED_THREADS = 8
#: Failures quoted in the poisoned-load message.
QUOTED_FAILURES = 5


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "robustness_case_name" in metafunc.fixturenames:
        metafunc.parametrize("robustness_case_name", applicable_case_names(metafunc.config))
    if "hostile_case_name" in metafunc.fixturenames:
        protocols = selected_protocols(metafunc.config)
        names = [case.name for case in hostile.CASES if any(case.applies_to(protocol) for protocol in protocols)]
        metafunc.parametrize("hostile_case_name", names)


def selected_protocols(config: pytest.Config) -> list[Protocol]:
    """The protocols of the selected targets."""
    settings = state(config).settings
    options = target_options(settings)
    return [TARGETS[name](options).protocol() for name in selected_targets(settings)]


def applicable_case_names(config: pytest.Config) -> list[str]:
    """Names of the cases that apply to the selected targets' protocols.

    Names do not depend on the image, so a catalogue of a tiny generated JPEG gives them at
    collection; the real cases are built from a sample at run time.
    """
    cases = catalogue(_tiny_jpeg(), CATALOGUE_SEED)
    return [case.name for case in cases if any(case.applies_to(protocol) for protocol in selected_protocols(config))]


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((32, 32)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def robustness_sample(serving_samples: list[Sample], serving_reference: dict[str, Prediction]) -> Sample:
    """The sample every case is derived from: the first JPEG whose label the in-process model has in its
    top-5, so that "the sample's class in the top-5" is a fair demand on re-encodings of it."""
    jpegs = [sample for sample in serving_samples if sample.data.startswith(b"\xff\xd8")]
    if not jpegs:
        pytest.skip("the robustness cases are derived from a JPEG sample, and no sample is a JPEG")
    recognised = (sample for sample in jpegs if sample.accepted & set(serving_reference[sample.id].classes))
    return next(recognised, jpegs[0])


@pytest.fixture(scope="session")
def robustness_cases(robustness_sample: Sample) -> dict[str, Case]:
    """The catalogue built from the robustness sample, by case name; large images are built only when sent."""
    return {case.name: case for case in catalogue(robustness_sample.data, CATALOGUE_SEED)}


class CaseReferences:
    """The in-process model's answer to each image-level case's own bytes, computed once per case."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self._classifier = None
        self._answers: dict[str, tuple[Prediction | None, str]] = {}

    def __call__(self, case: Case) -> tuple[Prediction | None, str]:
        """(prediction, "") or (None, why the shared decoder refuses the bytes)."""
        if case.name not in self._answers:
            if self._classifier is None:
                from pytest_serving.model.reference import ReferenceClassifier

                # One thread: the server under test holds the other cores.
                self._classifier = ReferenceClassifier(self.card, threads=1)
            try:
                self._answers[case.name] = (self._classifier.predict(case.image_bytes()), "")
            except InvalidImage as error:
                self._answers[case.name] = (None, str(error))
        return self._answers[case.name]

    def compare(self, case: Case, answer: Answer, protocol: Protocol, sample: Sample) -> Classification:
        """The server's 2xx answer to ``case`` next to the in-process answer on the same bytes."""
        reference, refusal = self(case)
        required = sample.accepted if case.same_label_as_sample else frozenset()
        try:
            prediction = protocol.decode(answer.status, answer.body)
        except ProtocolError as error:
            return Classification(None, reference, required, str(error))
        return Classification(prediction, reference, required, refusal)


@pytest.fixture(scope="session")
def robustness_references(serving_settings) -> CaseReferences:
    """In-process answers to the cases' own bytes, shared by every target."""
    return CaseReferences(serving_settings.card)


class ServerWatch:
    """Looks at one target after each case: health as at the first look, the next valid sample right."""

    def __init__(
        self, deployment: Deployment, client: ClassifierClient, samples: list[Sample], reference: dict[str, Prediction]
    ) -> None:
        self.deployment = deployment
        self.client = client
        self.reference = reference
        self._samples = itertools.cycle(samples)
        self._session = requests.Session()
        self._session.headers.update(deployment.endpoint.headers)
        self.baseline = self.health()

    def health(self) -> dict[str, object]:
        return self.deployment.target.health(self.deployment.endpoint, self._session)

    def aftermath(self) -> Aftermath:
        """Health against the baseline, right after the case and again after a real inference of the next valid
        sample (alive means answering): a crashed worker that its server restarts in the meantime shows in one
        of the two (not ready, or another pid), whichever the server's bookkeeping had caught up with."""
        changes = health_changes(self.baseline, self.health())
        sample = next(self._samples)
        expected = self.reference[sample.id]
        try:
            prediction = self.client.classify(sample.data)
        except (ProtocolError, requests.RequestException) as error:
            answered, correct, answer = False, False, f"sample {sample.id}: {type(error).__name__}: {error}"
        else:
            answered, correct = True, same_top1(prediction, expected)
            answer = f"sample {sample.id}: top-1 {prediction.top1}, in-process {expected.top1}"
        changes = tuple(dict.fromkeys((*changes, *health_changes(self.baseline, self.health()))))
        log_tail = "" if correct and not changes else self.deployment.log_tail()
        return Aftermath(changes, correct, answer, log_tail, next_answered=answered)

    def close(self) -> None:
        self._session.close()


@pytest.fixture(scope="session")
def robustness_watch(serving_deployment, serving_client, serving_samples, serving_reference) -> Iterator[ServerWatch]:
    """The current target's ServerWatch; its health baseline is taken before the target's first case."""
    watch = ServerWatch(serving_deployment, serving_client, serving_samples, serving_reference)
    yield watch
    watch.close()


def request_timeout(request: HttpRequest) -> float:
    """How long ``request`` may go unanswered before it counts as a hang: longer for larger bodies."""
    return REQUEST_TIMEOUT_S + TIMEOUT_S_PER_MIB * len(request.body) / (1 << 20)


def send(client: ClassifierClient, request: HttpRequest) -> Answer:
    """Send ``request`` with a bounded timeout; a timeout or a dropped connection is an Answer without status."""
    timeout = request_timeout(request)
    start = time.perf_counter()
    try:
        response = client.send(request, timeout=timeout)
    except requests.Timeout:
        return Answer(None, b"", _ms_since(start), f"no answer within {timeout:.0f} s")
    except requests.RequestException as error:
        return Answer(None, b"", _ms_since(start), f"{type(error).__name__}: {error}")
    return Answer(response.status_code, response.content, _ms_since(start))


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def test_case(
    robustness_case_name,
    robustness_cases,
    robustness_sample,
    robustness_references,
    robustness_watch,
    serving_endpoint,
    serving_target,
    serving_client,
    serving_results,
    request,
):
    case = robustness_cases[robustness_case_name]
    protocol = serving_endpoint.protocol
    if not case.applies_to(protocol):
        pytest.skip(f"{case.name} does not apply to the {protocol.name} protocol: its requests have no such part")
    deviations = serving_target.known_deviations
    deviation = known_deviation(deviations, serving_endpoint.server_version, case.name)
    if deviation:
        where = f"{type(serving_target).__name__}.known_deviations"
        reason = f"{deviation} [{where}: remove the entry when this XPASSes]"
        request.applymarker(pytest.mark.xfail(reason=reason, raises=ServerDeviation, strict=True))
    answer = send(serving_client, case.request(protocol, robustness_sample.data))
    classification = None
    if answer.success and case.image is not None:
        classification = robustness_references.compare(case, answer, protocol, robustness_sample)
    outcome = judge(
        serving_endpoint.target,
        serving_endpoint.server_version,
        case,
        answer,
        robustness_watch.aftermath(),
        classification,
        deviations,
    )
    report_outcome(serving_results, serving_endpoint.target, case.name, outcome)


def test_hostile(
    hostile_case_name,
    robustness_sample,
    robustness_watch,
    serving_deployment,
    serving_settings,
    serving_known_answer,
    serving_samples,
    serving_reference,
    serving_results,
    request,
):
    """A transport-level attack (robustness.hostile) gets a 4xx or a closed connection, and the server goes on
    answering valid requests right, during the attack when it lasts and after it.

    A case listed as a known deviation runs against a throwaway deployment of its own: what such a case
    does to a server (Triton 2.51 crashes on deep JSON) must not take the target's other tests with it.
    """
    case = hostile.BY_NAME[hostile_case_name]
    endpoint = serving_deployment.endpoint
    if not case.applies_to(endpoint.protocol):
        pytest.skip(f"{case.name} does not apply to the {endpoint.protocol.name} protocol: it takes no JSON bodies")
    target_class = type(serving_deployment.target)
    deviation = known_deviation(target_class.known_deviations, endpoint.server_version, case.name)
    if deviation is None:
        outcome = attack(case, robustness_watch, robustness_sample, serving_reference, None)
    elif serving_deployment.container is None:
        pytest.skip(
            f"{case.name} is a known deviation of {endpoint.server_version} ({deviation}); it runs only against a "
            "throwaway deployment, which a server given by --serving-url cannot have"
        )
    else:
        reason = f"{deviation} [{target_class.__name__}.known_deviations: remove the entry when this XPASSes]"
        request.applymarker(pytest.mark.xfail(reason=reason, raises=ServerDeviation, strict=True))
        with deploy(endpoint.target, serving_settings, serving_known_answer) as throwaway:
            client = ClassifierClient(
                throwaway.endpoint.base_url, endpoint.protocol, headers=throwaway.endpoint.headers
            )
            watch = ServerWatch(throwaway, client, serving_samples, serving_reference)
            try:
                outcome = attack(case, watch, robustness_sample, serving_reference, deviation)
            finally:
                watch.close()
                client.close()
    report_outcome(serving_results, endpoint.target, case.name, outcome)


def report_outcome(
    results: ResultsStore, target: str, case_name: str, outcome: CaseOutcome | hostile.HostileOutcome
) -> None:
    """Record a robustness case's outcome and end its test the way the outcome says."""
    results.set(("targets", target, "robustness", case_name), outcome.record())
    if outcome.outcome == "deviation":
        raise ServerDeviation(outcome.message())
    if outcome.outcome == "fail":
        pytest.fail(outcome.message(), pytrace=False)


def attack(
    case: hostile.HostileCase,
    watch: ServerWatch,
    sample: Sample,
    reference: dict[str, Prediction],
    deviation: str | None,
) -> hostile.HostileOutcome:
    """Run ``case`` against the server ``watch`` looks at, and judge it with the server's aftermath."""
    endpoint = watch.deployment.endpoint
    protocol = endpoint.protocol
    valid_request = protocol.encode(sample.data)
    wire = hostile.Wire.of(
        endpoint.base_url, valid_request, endpoint.headers, protocol, lambda: send(watch.client, valid_request)
    )
    seen = case.run(wire)
    expected = reference[sample.id]
    problems = hostile.attack_problems(case, seen, lambda answer: valid_answer_problem(answer, protocol, expected))
    aftermath = watch.aftermath()
    return hostile.HostileOutcome(
        endpoint.target,
        endpoint.server_version,
        case,
        seen,
        aftermath,
        tuple(problems),
        deviation,
        deviation is not None,
    )


def run_concurrently(
    plan: list[PlannedRequest], make_client: Callable[[], ClassifierClient]
) -> list[tuple[PlannedRequest, Answer]]:
    """Send the plan from POISONED_THREADS threads, each with its own client; answers in plan order."""
    local = threading.local()
    clients: list[ClassifierClient] = []

    def one(planned: PlannedRequest) -> tuple[PlannedRequest, Answer]:
        if not hasattr(local, "client"):
            local.client = make_client()
            clients.append(local.client)
        return planned, send(local.client, local.client.protocol.encode(planned.data))

    try:
        with ThreadPoolExecutor(POISONED_THREADS, thread_name_prefix="poisoned-load") as pool:
            return list(pool.map(one, plan))
    finally:
        for client in clients:
            client.close()


def test_poisoned_load(
    robustness_cases, robustness_watch, serving_deployment, serving_samples, serving_reference, serving_results
):
    endpoint = serving_deployment.endpoint
    if not endpoint.protocol.carries_image:
        pytest.skip(f"the {endpoint.protocol.name} protocol sends no image bytes to the server")
    poisons = [case for case in robustness_cases.values() if case.expect == "reject" and case.rejected_by == "decoder"]
    plan = poisoned_plan(serving_samples, poisons)

    def make_client() -> ClassifierClient:
        return ClassifierClient(
            endpoint.base_url, endpoint.protocol, headers=endpoint.headers, timeout=REQUEST_TIMEOUT_S
        )

    start = time.perf_counter()
    answers = run_concurrently(plan, make_client)
    wall_s = time.perf_counter() - start
    protocol = endpoint.protocol
    judged = [(planned, poisoned_problem(planned, answer, serving_reference, protocol)) for planned, answer in answers]
    valid_problems = [problem for planned, problem in judged if problem and planned.sample]
    poison_problems = [problem for planned, problem in judged if problem and planned.case]
    aftermath = robustness_watch.aftermath()
    serving_results.set(
        ("targets", endpoint.target, "robustness_poisoned_load"),
        {
            "requests": len(plan),
            "corrupted": sum(1 for planned in plan if planned.case),
            "threads": POISONED_THREADS,
            "valid_failed": len(valid_problems),
            "corrupted_misanswered": len(poison_problems),
            "statuses": dict(Counter(str(answer.status) for _, answer in answers)),
            "survived": aftermath.survived,
            "died": aftermath.died,
            "wall_s": round(wall_s, 2),
        },
    )
    failures = []
    if valid_problems:
        failures.append(f"{len(valid_problems)} valid requests not answered right, e.g.:")
        failures += [f"  {problem}" for problem in valid_problems[:QUOTED_FAILURES]]
    if poison_problems:
        failures.append(f"{len(poison_problems)} corrupted requests without an accepted 4xx, e.g.:")
        failures += [f"  {problem}" for problem in poison_problems[:QUOTED_FAILURES]]
    if not aftermath.survived:
        failures.append(aftermath.describe())
    if failures:
        pytest.fail(
            f"poisoned load on {endpoint.target} ({endpoint.server_version}): {len(plan)} requests from "
            f"{POISONED_THREADS} threads, one in {POISON_EVERY} corrupted\n"
            + "\n".join(failures)
            + f"\ncontainer log tail:\n{serving_deployment.log_tail()}",
            pytrace=False,
        )
