"""The atomic write and build: a reader sees the old result or the new one, never half of one, and no scratch stays."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pytest_serving.files import build_atomically, write_atomically


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".tmp-"))


def test_a_write_replaces_the_file_readable_by_all(tmp_path):
    dest = tmp_path / "results.json"
    dest.write_text("old")
    write_atomically(dest, lambda path: path.write_text("new"))
    assert dest.read_text() == "new" and stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert leftovers(tmp_path) == []


def folder_of(text: str):
    def build(scratch: Path) -> Path:
        folder = scratch / "built"
        folder.mkdir()
        (folder / "content").write_text(text)
        return folder

    return build


def test_a_build_replaces_an_outdated_folder_and_leaves_no_scratch(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "content").write_text("outdated")
    assert build_atomically(dest, folder_of("fresh")) == dest
    assert (dest / "content").read_text() == "fresh" and stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert leftovers(tmp_path) == []


def test_a_build_keeps_a_finished_folder_it_accepts(tmp_path):
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "content").write_text("another session's")
    build_atomically(dest, folder_of("ours"), done=Path.is_dir)
    assert (dest / "content").read_text() == "another session's" and leftovers(tmp_path) == []


def test_a_failed_build_leaves_the_old_result_and_no_scratch(tmp_path):
    dest = tmp_path / "model.mar"
    dest.write_text("old archive")

    def fail(scratch: Path) -> Path:
        (scratch / "half").write_text("half")
        raise RuntimeError("archiver failed")

    with pytest.raises(RuntimeError):
        build_atomically(dest, fail)
    assert dest.read_text() == "old archive" and leftovers(tmp_path) == []


def test_a_built_file_replaces_the_old_one(tmp_path):
    dest = tmp_path / "model.mar"
    dest.write_text("old archive")

    def archive(scratch: Path) -> Path:
        (scratch / "m.mar").write_text("new archive")
        return scratch / "m.mar"

    build_atomically(dest, archive)
    assert dest.read_text() == "new archive" and stat.S_IMODE(dest.stat().st_mode) == 0o644
