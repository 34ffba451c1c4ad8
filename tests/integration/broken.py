"""Bug injection for the broken-deployment integration tests: one helper, so each test plants its bug the same way.

A bug is a text substitution on a small, well-defined spot of a handler; the substitution asserts it found
its spot exactly once, so a rewritten handler fails the test loudly instead of silently testing nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

# Imported with this module, before any test: pytester restores sys.modules after each test, and torch
# (which the built-in card's export imports) aborts the process when it is imported a second time.
import pytest_serving.model.export  # noqa: F401
from pytest_serving.deployment import EMBEDDED_MODEL_REPO
from pytest_serving.model.card import load_card
from pytest_serving.targets import TARGETS
from pytest_serving.targets.base import TargetOptions

#: Plants one bug: (handler path inside the target's deployment sources, regex, re.sub replacement).
Bug = tuple[str, str, str]
#: The line of TorchServe's handler that answers a batch (``serving_preprocess.Classifier.answer_batch``):
#: the spot where the bugs that change a batch's answers go.
TORCHSERVE_ANSWERS = '        return self.classifier.answer_batch(data, context, {"model_version": self.version})\n'


def literal(handler: str, text: str, replacement: str) -> Bug:
    """A bug that replaces ``text`` as it is (no regex, no group references)."""
    return handler, re.escape(text), replacement.replace("\\", "\\\\")


def after_torchserve_answers(change: str) -> Bug:
    """A bug in TorchServe's handler: ``change`` (lines at the handler's indent) runs on the batch's JSON answers,
    ``responses``, before they are returned."""
    computed = TORCHSERVE_ANSWERS.replace("return self.", "responses = self.")
    return literal("handler.py", TORCHSERVE_ANSWERS, computed + change + "        return responses\n")


def plant(folder: Path, handler: str, pattern: str, replacement: str) -> None:
    """Replace the one match of ``pattern`` in ``folder/handler``; anything but exactly one match fails."""
    path = folder / handler
    text, count = re.subn(pattern, replacement, path.read_text())
    assert count == 1, f"{path}: the bug's spot /{pattern}/ was found {count} times, not once; adapt the bug"
    path.write_text(text)


def deployment_copy(target: str, model: str, root: Path, bug: Bug | None) -> Path:
    """A model repository root (for ``--serving-model-repo``) holding ``target``'s deployment of the card
    ``model``, built by the target's ``build_deployment`` from a copy of its sources with ``bug`` planted."""
    card = load_card(model)
    instance = TARGETS[target](TargetOptions(model_name=card.name, card=card))
    sources = root / "sources"
    shutil.copytree(EMBEDDED_MODEL_REPO / instance.model_repo_folder, sources)
    if bug is not None:
        plant(sources, *bug)
    folder = root / "repo" / instance.model_repo_folder
    folder.mkdir(parents=True)
    instance.build_deployment(sources, folder)
    return root / "repo"
