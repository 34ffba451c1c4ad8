import json
import multiprocessing

from pytest_serving.report.results import ResultsStore


def test_nested_set_and_append_are_on_disk_at_once(tmp_path):
    path = tmp_path / "out" / "results.json"
    store = ResultsStore(path)
    store.set(("targets", "triton", "correctness"), {"top1": 0.9})
    store.append(("targets", "triton", "load"), {"users": 10})
    store.append(("targets", "triton", "load"), {"users": 20})
    on_disk = json.loads(path.read_text())
    assert on_disk["targets"]["triton"]["correctness"] == {"top1": 0.9}
    assert [entry["users"] for entry in on_disk["targets"]["triton"]["load"]] == [10, 20]
    # Only results.json shows in the report folder: no temporary file, the lock hidden.
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == ["results.json"]


def _append_many(path, worker):
    store = ResultsStore(path)
    for index in range(20):
        store.append(("entries",), f"{worker}-{index}")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "results.json"
    processes = [multiprocessing.Process(target=_append_many, args=(path, worker)) for worker in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert len(json.loads(path.read_text())["entries"]) == 80


def test_without_a_path_results_stay_in_memory():
    store = ResultsStore(None)
    store.set(("a", "b"), 1)
    assert store.read() == {"a": {"b": 1}}
