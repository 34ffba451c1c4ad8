"""The files every deployment of a card carries beside its handler, whatever the server.

``model.onnx`` (the card's artifact), ``serving_card.json`` (``ModelCard.serving_spec``) and
``serving_preprocess.py`` (``preprocess.py`` byte for byte): a handler builds
``serving_preprocess.Classifier(folder)`` from them and knows no model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..files import write_atomically
from .card import ModelCard
from .preprocess import CARD_FILE, MODEL_FILE

SERVING_PREPROCESS = "serving_preprocess.py"


def write_card_files(card: ModelCard, folder: Path) -> Path:
    """Put the card's three files into ``folder`` (created if needed) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / MODEL_FILE
    try:
        os.link(card.artifact, model)  # same filesystem: no copy of a possibly large file
    except OSError:
        write_atomically(model, lambda path: shutil.copyfile(card.artifact, path))
    spec = json.dumps(card.serving_spec(), indent=2, sort_keys=True)
    write_atomically(folder / CARD_FILE, lambda path: path.write_text(spec + "\n"))
    copy_preprocess(folder)
    return folder


def copy_preprocess(dest_dir: Path) -> Path:
    """Copy preprocess.py byte for byte to ``dest_dir/serving_preprocess.py`` for a server's handler."""
    source = Path(__file__).with_name("preprocess.py").read_bytes()
    dest = Path(dest_dir) / SERVING_PREPROCESS
    if not (dest.exists() and dest.read_bytes() == source):
        write_atomically(dest, lambda path: path.write_bytes(source))
    return dest
