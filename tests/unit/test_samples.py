from pathlib import Path

import pytest
from PIL import Image

from pytest_serving.samples import SampleError, default_samples, discover, discover_labelled, load_classes, read_csv

CLASSES = "index\twnid\tname\n0\tn01440764\ttench\n1\tn01443537\tgoldfish\n2\tn01484850\tgreat_white_shark\n"


def jpeg(path):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="JPEG")
    return path


@pytest.fixture
def flat(tmp_path):
    (tmp_path / "classes.tsv").write_text(CLASSES)
    jpeg(tmp_path / "n01440764_tench.JPEG")
    jpeg(tmp_path / "n01443537_goldfish.JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_flat_layout_labels_from_the_wnid_prefix(flat):
    samples = discover(flat)
    assert [(s.id, s.label) for s in samples] == [("n01440764_tench", 0), ("n01443537_goldfish", 1)]
    assert samples[0].accepted == frozenset({0})
    assert samples[0].data[:2] == b"\xff\xd8"


def test_imagefolder_layout_labels_from_the_folder(tmp_path):
    classes = tmp_path / "elsewhere.tsv"
    classes.write_text(CLASSES)
    root = tmp_path / "val"
    for wnid in ("n01484850", "n01443537"):
        (root / wnid).mkdir(parents=True)
        jpeg(root / wnid / "ILSVRC2012_val_00000001.JPEG")
    samples = discover(root, classes_file=classes)
    assert [(s.id, s.label) for s in samples] == [
        ("n01443537-ILSVRC2012_val_00000001", 1),
        ("n01484850-ILSVRC2012_val_00000001", 2),
    ]


def test_limit_spreads_over_the_list(flat):
    jpeg(flat / "n01484850_shark.JPEG")
    assert [s.label for s in discover(flat, limit=2)] == [0, 1]
    assert len(discover(flat, limit=1)) == 1


def test_missing_classes_file_names_the_option(tmp_path):
    jpeg(tmp_path / "n01440764_tench.JPEG")
    with pytest.raises(SampleError, match="--serving-classes"):
        discover(tmp_path)


def test_wnid_missing_from_classes_is_reported(flat):
    jpeg(flat / "n09999999_unknown.JPEG")
    with pytest.raises(SampleError, match="n09999999"):
        discover(flat)


def test_empty_directory_says_what_layout_is_expected(tmp_path):
    (tmp_path / "classes.tsv").write_text(CLASSES)
    with pytest.raises(SampleError, match="<wnid>"):
        discover(tmp_path)


def test_classes_tsv_without_header(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("0\tn01440764\ttench\n")
    assert load_classes(path) == {"n01440764": (0, "tench")}


def test_default_samples_are_real_jpeg_photos_with_fair_classes():
    samples = default_samples()
    assert len(samples) >= 4
    for sample in samples:
        assert sample.data[:2] == b"\xff\xd8"
        assert sample.label in sample.accepted


LABELS = ("cat", "cat_toy", "dog")


def touch_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 not decoded here")
    return path


def test_imagefolder_named_by_the_cards_labels(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "dog" / "a.jpg")
    touch_jpeg(tmp_path / "cat_toy" / "b.jpg")
    samples = discover_labelled(tmp_path, LABELS)
    assert [(s.id, s.label, s.label_name) for s in samples] == [("cat_toy-b", 1, "cat_toy"), ("dog-a", 2, "dog")]


def test_flat_files_take_the_longest_label_that_prefixes_them(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "cat_toy_001.jpg")
    touch_jpeg(tmp_path / "cat_002.jpg")
    assert [(s.label_name, s.label) for s in discover_labelled(tmp_path, LABELS)] == [("cat", 0), ("cat_toy", 1)]


def test_a_folder_or_file_naming_no_label_lists_them_and_the_labels(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "horse" / "a.jpg")
    touch_jpeg(tmp_path / "cow_1.jpg")
    with pytest.raises(SampleError, match=r"name no label of the model card: cow_1.jpg, horse/; the card's labels are: cat, cat_toy, dog"):
        discover_labelled(tmp_path, LABELS)


def test_csv_rows_are_paths_relative_to_the_file_and_the_cards_labels(tmp_path: Path) -> None:
    touch_jpeg(tmp_path / "images" / "x.jpg")
    touch_jpeg(tmp_path / "images" / "y.jpg")
    (tmp_path / "val.csv").write_text("path,label\nimages/x.jpg,dog\nimages/y.jpg,cat\n")
    samples = read_csv(tmp_path / "val.csv", LABELS, None, None)
    assert [(s.id, s.label, s.label_name) for s in samples] == [("images-x", 2, "dog"), ("images-y", 0, "cat")]
    (tmp_path / "bad.csv").write_text("images/x.jpg,horse\n")
    with pytest.raises(SampleError, match=r"bad.csv:1: label 'horse' is not the model card's; known: cat, cat_toy, dog"):
        read_csv(tmp_path / "bad.csv", LABELS, None, None)
