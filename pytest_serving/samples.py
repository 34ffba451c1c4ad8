"""Find labelled sample images: folders (ImageFolder or flat) or a CSV labelled with the card's labels,
ImageNet folders with wnids, or the bundled default photos."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
WNID = re.compile(r"^(n\d{8})")


class SampleError(ValueError):
    """The samples cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Sample:
    """One labelled image as it is sent to servers.

    ``accepted`` holds the classes that count as correct: the ImageNet label alone for
    ImageNet samples, a few fair classes for the default photos (a tabby is also a tiger cat).
    """

    id: str
    data: bytes
    label: int
    accepted: frozenset[int]
    source: str
    #: The label as the samples name it (the card's label, or the ImageNet wnid): per-class figures use it.
    label_name: str = ""


def load_classes(path: Path) -> dict[str, tuple[int, str]]:
    """wnid -> (class index, name) from a classes.tsv with columns index, wnid, name."""
    if not path.is_file():
        raise SampleError(f"classes file not found: {path} (give --serving-classes=FILE)")
    classes = {}
    with path.open(newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or row[0].startswith("#") or (line_number == 1 and not row[0].strip().isdigit()):
                continue
            if len(row) < 2:
                raise SampleError(f"{path}:{line_number}: expected 'index<TAB>wnid<TAB>name', got {row!r}")
            classes[row[1].strip()] = (int(row[0]), row[2].strip() if len(row) > 2 else row[1].strip())
    if not classes:
        raise SampleError(f"{path}: no classes")
    return classes


def discover(directory: Path, classes_file: Path | None = None, limit: int | None = None) -> list[Sample]:
    """ImageNet samples from ``directory``: ``<wnid>_*.JPEG`` files, or ``<wnid>/*.JPEG`` ImageFolder subfolders."""
    if not directory.is_dir():
        raise SampleError(f"samples directory not found: {directory}")
    classes = load_classes(classes_file or directory / "classes.tsv")
    found: list[tuple[str, Path]] = []
    for path in sorted(directory.iterdir()):
        if path.is_dir() and WNID.match(path.name):
            found += [(path.name, image) for image in sorted(path.iterdir()) if _is_image(image)]
        elif _is_image(path) and (match := WNID.match(path.name)):
            found.append((match.group(1), path))
    if not found:
        raise SampleError(f"no samples in {directory}: expected files named '<wnid>_*.JPEG' or folders '<wnid>/*.JPEG'")
    unknown = sorted({wnid for wnid, _ in found if wnid not in classes})
    if unknown:
        raise SampleError(f"wnids not in the classes file: {', '.join(unknown[:5])}")
    return _samples(directory, [(wnid, classes[wnid][0], path) for wnid, path in found], limit)


def discover_labelled(directory: Path, labels: Sequence[str], limit: int | None = None) -> list[Sample]:
    """Samples labelled with a card's ``labels``: ``<label>/*.jpg`` folders, or ``<label>_*.jpg`` files
    (the longest label that prefixes the name). A folder or file naming no label is an error listing them."""
    if not directory.is_dir():
        raise SampleError(f"samples directory not found: {directory}")
    index = {label: position for position, label in enumerate(labels)}
    by_length = sorted(labels, key=len, reverse=True)
    found: list[tuple[str, int, Path]] = []
    unknown: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            if path.name in index:
                found += [(path.name, index[path.name], image) for image in sorted(path.iterdir()) if _is_image(image)]
            elif any(_is_image(image) for image in path.iterdir()):
                unknown.append(f"{path.name}/")
        elif _is_image(path):
            label = next((label for label in by_length if path.name.startswith(f"{label}_")), None)
            if label is None:
                unknown.append(path.name)
            else:
                found.append((label, index[label], path))
    if unknown:
        raise SampleError(
            f"samples in {directory} name no label of the model card: {', '.join(unknown[:10])}"
            f"{' …' if len(unknown) > 10 else ''}; the card's labels are: {', '.join(labels)}"
        )
    if not found:
        raise SampleError(
            f"no samples in {directory}: expected folders '<label>/*.jpg' or files '<label>_*.jpg' "
            f"with the card's labels ({', '.join(labels)})"
        )
    return _samples(directory, found, limit)


def read_csv(path: Path, labels: Sequence[str] | None, classes_file: Path | None, limit: int | None) -> list[Sample]:
    """Samples listed in a CSV of ``path,label`` rows (a header row is allowed; paths relative to the CSV).
    Labels are the card's, or ImageNet wnids (looked up in classes.tsv) for ImageNet cards."""
    if not path.is_file():
        raise SampleError(f"samples CSV not found: {path}")
    if labels is not None:
        index = {label: position for position, label in enumerate(labels)}
    else:
        index = {
            wnid: number for wnid, (number, _) in load_classes(classes_file or path.parent / "classes.tsv").items()
        }
    found: list[tuple[str, int, Path]] = []
    with path.open(newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if (
                not row
                or row[0].startswith("#")
                or (line_number == 1 and [c.strip() for c in row] == ["path", "label"])
            ):
                continue
            if len(row) != 2:
                raise SampleError(f"{path}:{line_number}: expected 'path,label', got {row!r}")
            image, label = Path(row[0].strip()), row[1].strip()
            image = image if image.is_absolute() else path.parent / image
            if label not in index:
                known = ", ".join(labels) if labels is not None else "the wnids of classes.tsv"
                raise SampleError(f"{path}:{line_number}: label {label!r} is not the model card's; known: {known}")
            if not image.is_file():
                raise SampleError(f"{path}:{line_number}: image {image} not found")
            found.append((label, index[label], image))
    if not found:
        raise SampleError(f"{path}: no 'path,label' rows")
    return _samples(path.parent, found, limit)


def _samples(root: Path, found: list[tuple[str, int, Path]], limit: int | None) -> list[Sample]:
    return [
        Sample(
            id=_sample_id(root, path),
            data=path.read_bytes(),
            label=number,
            accepted=frozenset({number}),
            source=str(path),
            label_name=name,
        )
        for name, number, path in _spread(found, limit)
    ]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _sample_id(root: Path, path: Path) -> str:
    try:
        relative = path.relative_to(root)
    except ValueError:  # a CSV may list images anywhere
        relative = Path(path.name)
    return relative.with_suffix("").as_posix().replace("/", "-")


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items taken evenly across the list, so a small limit still spans classes."""
    if limit is None or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(index * step)] for index in range(limit)]


#: Real photos that scikit-image ships (file in skimage's data folder -> the ImageNet classes
#: a person would fairly accept).
DEFAULT_PHOTOS: dict[str, tuple[int, ...]] = {
    "chelsea.png": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee.png": (967, 968, 504),  # espresso, cup, coffee mug
    "rocket.jpg": (657, 744, 812),  # missile, projectile, space shuttle
    "motorcycle_left.png": (665, 670),  # moped, motor scooter
    "motorcycle_right.png": (665, 670),
    "camera.png": (872, 759, 732),  # tripod, reflex camera, Polaroid camera (a greyscale photo)
}


def default_samples(limit: int | None = None) -> list[Sample]:
    """The bundled photos re-encoded as JPEG (what the servers' contract takes), each with its fair classes."""
    import skimage.data
    from PIL import Image

    samples = []
    for filename, accepted in _spread(list(DEFAULT_PHOTOS.items()), limit):
        path = Path(skimage.data.data_dir) / filename
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=95)
        samples.append(
            Sample(
                id=path.stem,
                data=buffer.getvalue(),
                label=accepted[0],
                accepted=frozenset(accepted),
                source=f"scikit-image {path.name}",
                label_name=str(accepted[0]),
            )
        )
    return samples
