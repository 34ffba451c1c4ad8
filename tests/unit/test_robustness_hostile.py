"""Hostile protocol cases: the raw HTTP reading and the judging, without a server."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import zlib

import pytest
from PIL import Image

from pytest_serving.protocols.tfserving import V1ImageProtocol
from pytest_serving.protocols.torchserve import TorchServeProtocol
from pytest_serving.protocols.v2 import V2Protocol
from pytest_serving.robustness import catalogue, hostile
from pytest_serving.robustness.hostile import CLOSED, Attack, HostileOutcome, Wire, attack_problems
from pytest_serving.robustness.outcome import Aftermath, Answer
from pytest_serving.targets import TARGETS
from pytest_serving.types import HttpRequest

ALIVE = Aftermath((), True, "sample a: top-1 1, in-process 1")
DEAD = Aftermath((), False, "sample a: HTTP 500 Stub process is not healthy", "log", next_answered=False)
V2 = V2Protocol("m")
REQUEST = HttpRequest("POST", "/v2/models/m/infer", b'{"inputs": []}', {"Content-Type": "application/json"})


def wire(valid=lambda: Answer(200, b"", 1.0)) -> Wire:
    return Wire.of("http://127.0.0.1:8000", REQUEST, {"Authorization": "Bearer k"}, V2, valid)


@pytest.mark.parametrize(
    ("sent", "status", "body", "error"),
    [
        (b"HTTP/1.1 431 Too Large\r\nContent-Length: 12\r\nX: y\r\n\r\nheader large", 431, b"header large", ""),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\nhead", 400, b"head", ""),
        (b"garbage\r\n\r\n", None, b"", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 4", None, b"", CLOSED + " (after 10 bytes of a head)"),
    ],
)
def test_an_answer_is_read_as_far_as_it_came_before_the_server_closed(sent, status, body, error):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(sent)
        theirs.close()
        answer = hostile.read_answer(ours, time.perf_counter(), 5)
    assert (answer.status, answer.body) == (status, body) and answer.transport_error.startswith(error)


def test_a_wire_goes_to_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        Wire.of("http://10.0.0.5:8000", REQUEST, {}, V2, lambda: None)


def test_the_head_keeps_auth_and_swaps_the_framing():
    head = wire().head({"X-Pad": "a"}, framing={"Transfer-Encoding": "chunked"}, without="content-type").decode()
    assert head.startswith("POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert "Authorization: Bearer k\r\n" in head and "X-Pad: a\r\n" in head
    assert "Transfer-Encoding: chunked\r\n" in head and "Content-Length" not in head and "Content-Type" not in head
    assert head.endswith("\r\n\r\n")


def test_nested_json_is_valid_json_of_the_depth_asked_under_the_protocols_key():
    body = hostile.nested_json_body(V1ImageProtocol("m").json_inputs_key, depth=50)
    value = json.loads(body)["instances"]
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    assert depth == 49 and value == []
    assert hostile.nested_json_body(V2.json_inputs_key, depth=3) == b'{"inputs": [[[]]]}'


def test_the_nested_json_case_goes_to_json_protocols_only_and_the_rest_to_every_protocol():
    torchserve = TorchServeProtocol("m")
    nested = hostile.BY_NAME["json-nesting-150000"]
    assert nested.applies_to(V2) and nested.applies_to(V1ImageProtocol("m")) and not nested.applies_to(torchserve)
    assert all(case.applies_to(torchserve) for case in hostile.CASES if case is not nested)


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS)])
def test_a_bomb_expands_a_thousandfold(encoding, wbits):
    expanded = 8 * 1024 * 1024
    body = hostile.bomb(encoding, expanded)
    assert len(zlib.decompress(body, wbits)) == expanded
    assert len(body) * 900 < expanded


def serve_once(reply: bytes) -> int:
    """A one-shot loopback socket that reads a request and writes ``reply`` (then closes): pure transport."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(reply)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def test_exchange_reads_an_answer_or_sees_the_connection_closed():
    port = serve_once(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!")
    target = Wire.of(f"http://127.0.0.1:{port}", REQUEST, {}, V2, lambda: None)
    answer = hostile.exchange(target, target.head() + REQUEST.body, timeout=5)
    assert (answer.status, answer.body) == (400, b"nope!")
    port = serve_once(b"")
    target = Wire.of(f"http://127.0.0.1:{port}", REQUEST, {}, V2, lambda: None)
    assert hostile.exchange(target, target.head(), timeout=5).transport_error == CLOSED


REJECT = hostile.BY_NAME["header-1mib"]
ENDURE = hostile.BY_NAME["stalled-body"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Answer(431, b"", 2.0), ""),
        (Answer(None, b"", 2.0, CLOSED), ""),
        (Answer(500, b"boom", 2.0), "HTTP 500: a server error"),
        (Answer(200, b"{}", 2.0), "HTTP 200: the server accepted it"),
        (Answer(None, b"", 15000.0, "no answer within 15 s"), "neither a 4xx nor a closed connection"),
        (Answer(302, b"", 2.0), "HTTP 302 is neither"),
    ],
)
def test_a_reject_case_wants_a_4xx_or_a_closed_connection(answer, problem):
    problems = attack_problems(REJECT, Attack(answer), lambda _: "")
    assert problems[0].startswith(problem) if problem else problems == [], problems


def test_an_endure_case_judges_the_valid_request_sent_during_the_attack():
    still_open = Answer(None, b"", 8000.0, "connection still open after 8 s (closed by the client)")
    assert attack_problems(ENDURE, Attack(still_open, Answer(200, b"", 3.0)), lambda _: "") == []
    problems = attack_problems(ENDURE, Attack(still_open, Answer(None, b"", 15000.0, "no answer")), lambda a: "hung")
    assert problems == ["a valid request sent during the attack was not answered right: hung"]


def test_a_dead_server_fails_and_its_record_says_so():
    outcome = HostileOutcome("triton", "triton 2.51.0", REJECT, Attack(Answer(None, b"", 3.0, CLOSED)), DEAD, ())
    assert outcome.outcome == "fail"
    assert outcome.record()["survived"] is False and outcome.record()["died"] is True
    assert "server survived: NO, it died" in outcome.message() and outcome.message().endswith("log")


def test_a_known_deviation_excuses_a_death_only_on_a_throwaway_deployment():
    seen = Attack(Answer(None, b"", 3.0, CLOSED))
    shared = HostileOutcome("triton", "triton 2.51.0", REJECT, seen, DEAD, (), "crashes", isolated=False)
    throwaway = HostileOutcome("triton", "triton 2.51.0", REJECT, seen, DEAD, (), "crashes", isolated=True)
    assert shared.outcome == "fail" and throwaway.outcome == "deviation"
    assert throwaway.record()["deviation"] == "crashes"
    alive = HostileOutcome("triton", "triton 2.51.0", REJECT, seen, ALIVE, (), "crashes", isolated=True)
    assert alive.outcome == "pass"  # the suite's strict xfail then reports XPASS: remove the entry


def test_every_known_deviation_names_a_case_that_exists():
    """A misspelt case name in a target's known_deviations would never match, and never xfail."""
    jpeg = io.BytesIO()
    Image.linear_gradient("L").resize((32, 32)).convert("RGB").save(jpeg, "JPEG")
    names = {case.name for case in catalogue(jpeg.getvalue())} | set(hostile.BY_NAME)
    for target in TARGETS.values():
        for cases in target.known_deviations.values():
            assert set(cases) <= names, f"{target.__name__}: {sorted(set(cases) - names)}"
