import io
import zlib

import numpy as np
import pytest

from pytest_serving.load.channel import (
    ChannelError,
    Progress,
    Reassembly,
    check_result_files,
    chunk_messages,
    lost_worker_error,
    version_mismatch,
)
from pytest_serving.load.stats import RawSamples


def raw_bytes(latencies: list[float], tmp_path) -> bytes:
    samples = RawSamples(
        offset_s=np.arange(len(latencies), dtype=np.float64),
        latency_ms=np.array(latencies),
        code=np.full(len(latencies), 200, dtype=np.int32),
        completed_s=np.arange(len(latencies), dtype=np.float64),
    )
    samples.save(tmp_path / "raw.npz")
    return (tmp_path / "raw.npz").read_bytes()


def test_files_survive_chunking_exactly(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "raw-1.npz": raw_bytes(rng.exponential(20.0, 50_000).tolist(), tmp_path),
        "answers-1.json": b'{"answered": 3}',
    }
    messages = chunk_messages("phase-a", files, chunk_bytes=64 * 1024)
    assert len(messages) > 3
    assert sum(len(message["data"]) for message in messages) < sum(map(len, files.values()))  # compressed
    reassembly = Reassembly("phase-a")
    out = [reassembly.add("worker", message) for message in messages]
    assert out[:-1] == [None] * (len(messages) - 1)
    assert out[-1] == files
    latencies = RawSamples.load(io.BytesIO(out[-1]["raw-1.npz"])).latency_ms
    assert np.array_equal(latencies, RawSamples.load(io.BytesIO(files["raw-1.npz"])).latency_ms)


def test_senders_are_reassembled_separately_even_when_interleaved():
    first = chunk_messages("p", {"raw-0.npz": b"a" * 5000 + bytes(range(256)) * 40}, chunk_bytes=100)
    second = chunk_messages("p", {"raw-1.npz": bytes(range(256)) * 30}, chunk_bytes=100)
    reassembly = Reassembly("p")
    done = {}
    for index in range(max(len(first), len(second))):
        for sender, messages in (("one", first), ("two", second)):
            if index < len(messages) and (files := reassembly.add(sender, messages[index])) is not None:
                done[sender] = files
    assert set(done["one"]) == {"raw-0.npz"} and set(done["two"]) == {"raw-1.npz"}


def test_chunks_of_an_earlier_phase_are_discarded():
    reassembly = Reassembly("now")
    late = chunk_messages("before", {"raw-0.npz": b"old"})
    assert [reassembly.add("worker", message) for message in late] == [None] * len(late)
    assert reassembly.discarded == len(late)
    assert reassembly.add("worker", chunk_messages("now", {"raw-0.npz": b"new"})[0]) == {"raw-0.npz": b"new"}


@pytest.mark.parametrize(
    "message",
    [
        {"phase": "p", "seq": 1, "total": 2, "data": b""},  # out of order
        {"phase": "p", "seq": 0, "total": 0, "data": b""},
        {"phase": "p", "seq": 0, "total": 1},
        {"phase": "p", "seq": 0, "total": 1, "data": b"not zlib"},
        {"phase": "p", "seq": 0, "total": 1, "data": zlib.compress(b"\x93\x01\x02\x03")},  # msgpack list
    ],
    ids=["out of order", "no chunks", "no data", "not compressed", "not a mapping"],
)
def test_malformed_chunks_are_refused_naming_the_sender(message):
    with pytest.raises(ChannelError, match="worker-7"):
        Reassembly("p").add("worker-7", message)


def test_a_worker_may_send_only_its_own_result_files():
    check_result_files({"raw-2.npz": b"", "answers-2.json": b""}, 2, "w")
    for files in ({"raw-1.npz": b""}, {"raw-2.npz": b"", "../plan.json": b""}, {"answers-2.json": b""}):
        with pytest.raises(ChannelError, match="w "):
            check_result_files(files, 2, "w")


def test_version_mismatch_is_one_error_naming_both_versions():
    assert version_mismatch("host pid 1", "0.1.0", "0.1.0") is None
    message = version_mismatch("host pid 1", "0.0.9", "0.1.0")
    assert "host pid 1" in message and "0.0.9" in message and "pytest-serving==0.1.0" in message


def test_a_lost_worker_is_named_with_what_it_had_recorded():
    message = lost_worker_error("box pid 42", Progress(recorded=311, at=10.0), now=13.5, how="stopped answering")
    assert "box pid 42 stopped answering" in message
    assert "311 measured request(s)" in message and "3.5 s" in message
    assert "not reported" in lost_worker_error("box pid 42", Progress(), now=1.0, how="quit")
