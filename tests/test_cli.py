"""python -m lib explain: top-5, overlay file, one-line errors."""

import pytest
from PIL import Image

from lib.__main__ import main


@pytest.fixture
def picture(tmp_path):
    from lib import data

    path = tmp_path / "cat.png"
    data.embedded()[0].image.save(path)
    return path


def test_explain_prints_top5_and_writes_the_overlay(picture, tmp_path, capsys):
    out = tmp_path / "maps" / "cat.png"
    assert main(["explain", str(picture), "--method", "gradcam", "--target", "281", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len([line for line in printed if "%" in line]) == 5
    assert any("tabby" in line for line in printed)
    assert Image.open(out).size[0] > 100


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "gradcm"], "closest: gradcam"),
        (["--model", "efficientnet_lite9"], "unknown model"),
        (["--target", "1000"], "outside [0, 1000)"),
        (["--target", "cat"], "matches"),
    ],
)
def test_bad_names_are_one_line_errors(picture, tmp_path, capsys, argv, message):
    assert main(["explain", str(picture), "--out", str(tmp_path / "m.png"), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error


def test_unreadable_image_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    assert main(["explain", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read image")


# ---------------------------------------------------------------------------------------------
# Issue 17: every bad input is one line on stderr and exit status 2, never a traceback
# ---------------------------------------------------------------------------------------------


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("limit", [10_000, 100_000])  # 451 x 300: over twice the limit (Pillow raises) / over it (warns)
def test_decompression_bomb_is_a_one_line_error(picture, tmp_path, capsys, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert main(["explain", str(picture), "--out", str(tmp_path / "m.png")]) == 2
    error = _one_line_error(capsys)
    assert "cat.png: too many pixels" in error and f"MAX_IMAGE_PIXELS = {limit}" in error


@pytest.mark.parametrize("target", ["²", "٣"])  # str.isdigit() is true, int() fails or reads a non-ASCII digit
def test_non_ascii_digit_target_is_a_one_line_error(picture, tmp_path, capsys, target):
    assert main(["explain", str(picture), "--method", "gradcam", "--target", target, "--out", str(tmp_path / "m.png")]) == 2
    error = _one_line_error(capsys)
    assert f"no class name contains {target!r}" in error and "ASCII digits" in error


def test_layer_that_is_not_a_feature_map_is_a_one_line_error(picture, tmp_path, capsys):
    assert main(["explain", str(picture), "--method", "gradcam", "--layer", "classifier",
                 "--out", str(tmp_path / "m.png")]) == 2
    error = _one_line_error(capsys)
    assert "layer 'classifier' gives shape (1, 1000)" in error and "feature map (B, C, h, w)" in error
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--method", "gradient", "--layer", "last"], "gradient takes no --layer; the methods that do: guided_gradcam, gradcam,"),
    (["--method", "gradcam", "--layer", "no_such_layer"], "--layer no_such_layer: unknown layer"),
])
def test_layer_errors_are_one_line(picture, tmp_path, capsys, argv, message):
    assert main(["explain", str(picture), "--out", str(tmp_path / "m.png"), *argv]) == 2
    assert message in _one_line_error(capsys)


def _forbid_work(monkeypatch):
    """Make loading a model or resolving a method fail the test: nothing may be computed."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("work was done before the output path was checked")

    monkeypatch.setattr("lib.models.load", spy)
    monkeypatch.setattr("lib.saliency.resolve_method", spy)
    return calls


@pytest.mark.parametrize("where, message", [
    ("under-a-file", "is a file, not a folder"),
    ("/proc/saliency-map.png", "is under /proc"),
    ("/sys/saliency-map.png", "is under /sys"),
    ("map.xyz", "unknown extension '.xyz'; the overlay can be written as .png, .jpg"),
])
def test_bad_output_path_fails_before_any_work(picture, tmp_path, capsys, monkeypatch, where, message):
    calls = _forbid_work(monkeypatch)
    if where == "under-a-file":
        (tmp_path / "plain.txt").write_text("a file")
        out = tmp_path / "plain.txt" / "map.png"
    elif where.startswith("/"):
        out = where
    else:
        out = tmp_path / where
    assert main(["explain", str(picture), "--out", str(out)]) == 2
    assert message in _one_line_error(capsys)
    assert calls == []


def test_fifo_input_is_refused_without_blocking(tmp_path, capsys):
    import os
    import threading

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    status = []
    worker = threading.Thread(target=lambda: status.append(main(["explain", str(fifo), "--out", str(tmp_path / "m.png")])),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # blocked opening the FIFO: give it a writer so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=10)
        pytest.fail("explain blocked on a FIFO instead of refusing it")
    assert status == [2]
    assert "pipe.png is a FIFO (named pipe); expected an image file" in _one_line_error(capsys)


def test_float_image_outside_the_accepted_ranges_is_a_one_line_error(tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "hdr.tif"
    Image.fromarray(np.array([[0.0, 2.5, 900.0]], dtype=np.float32)).save(bad)
    assert main(["explain", str(bad), "--out", str(tmp_path / "m.png")]) == 2  # before: clipped silently
    error = _one_line_error(capsys)
    assert "hdr.tif" in error and "mode 'F'" in error and "accepted:" in error


def test_argument_errors_are_one_line(capsys):
    assert main(["explain"]) == 2
    assert "the following arguments are required: image" in _one_line_error(capsys)
    assert main(["explain", "x.png", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in _one_line_error(capsys)


@pytest.mark.parametrize("out, written", [
    ("folder", "maps/cat.png"),  # an existing folder receives <image stem>.png
    ("maps/new/", "maps/new/cat.png"),  # so does a name ending in "/", created
    ("maps/overlay", "maps/overlay.png"),  # no extension: .png
    ("maps/overlay.jpg", "maps/overlay.jpg"),
])
def test_out_prints_the_path_actually_written(picture, tmp_path, capsys, out, written):
    (tmp_path / "maps").mkdir()
    argument = str(tmp_path / "maps") if out == "folder" else str(tmp_path) + "/" + out
    assert main(["explain", str(picture), "--method", "gradcam", "--out", argument]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"wrote {tmp_path / written}"
    assert (tmp_path / written).is_file() and Image.open(tmp_path / written).size[0] > 100


# ---------------------------------------------------------------------------------------------
# --log: the audit record, one JSON line per explanation
# ---------------------------------------------------------------------------------------------


def _sha256sum(path) -> str:
    import subprocess

    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def _records(log) -> list[dict]:
    import json

    text = log.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_log_appends_one_verifiable_line_per_explanation(picture, tmp_path, capsys):
    import hashlib
    from datetime import datetime, timedelta, timezone

    import numpy as np
    import torch

    import lib
    from lib import data, models, saliency

    log = tmp_path / "audit.jsonl"
    argv = ["explain", str(picture), "--method", "gradcam", "--target", "281", "--out", str(tmp_path / "m.png"), "--log", str(log)]
    assert main(argv) == 0
    assert f"appended 1 line to {log}" in capsys.readouterr().out
    assert main(argv) == 0  # a second run appends, never rewrites
    first, second = _records(log)
    assert {k: v for k, v in first.items() if k != "time"} == {k: v for k, v in second.items() if k != "time"}

    assert first["image"] == str(picture)
    assert first["image_sha256"] == _sha256sum(picture)  # the real binary over the file's bytes
    classifier = models.load("efficientnet_lite0")
    x = classifier.preprocess(data.open_image(picture)).unsqueeze(0)
    direct = saliency.gradcam(classifier, x, torch.tensor([281]))[0]  # the library called directly, same inputs
    assert first["map_sha256"] == hashlib.sha256(np.ascontiguousarray(direct.numpy(), dtype=np.float32).tobytes()).hexdigest()
    assert first["map_shape"] == [224, 224]
    assert first["weights_sha256"] == _sha256sum(models.lite_weights_path(0))
    assert first["weights_file"] == str(models.lite_weights_path(0))
    assert first["model"] == "efficientnet_lite0" and first["method"] == "gradcam"
    assert first["method_parameters"] == {"layer": "last", "raw": False, "batch_size": None}  # gradcam's signature defaults

    with torch.no_grad():
        probabilities = classifier(x).softmax(dim=1)[0]
    predicted = int(probabilities.argmax())
    assert first["target"] == {"index": 281, "name": "tabby"}
    assert first["predicted"] == {"index": predicted, "name": classifier.categories[predicted]}
    assert first["confidence"]["target"] == pytest.approx(float(probabilities[281]), abs=1e-6)
    assert first["confidence"]["predicted"] == pytest.approx(float(probabilities.max()), abs=1e-6)

    values = np.sort(direct.numpy().astype(np.float64).ravel())[::-1]
    top = int(np.ceil(0.1 * values.size))
    assert first["map_stats"] == pytest.approx({"min": values.min(), "max": values.max(), "mean": values.mean(),
                                                "top10_mass": values[:top].sum() / values.sum()}, rel=1e-6)
    assert 0.1 < first["map_stats"]["top10_mass"] < 1  # a map concentrated above uniform

    assert first["library_version"] == lib.__version__ and first["device"] == "cpu"
    stamp = datetime.fromisoformat(first["time"])
    assert stamp.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=10)


def test_a_model_without_a_weight_file_is_fingerprinted_by_its_state_dict(picture, tmp_path, monkeypatch):
    import hashlib

    import torch

    from _tiny import tiny_cnn
    from lib import models

    network = tiny_cnn(classes=5).to(memory_format=torch.channels_last)  # stored NHWC: the hash must not see it
    tiny = models.Classifier(model=network, name="tiny", input_size=16, mean=torch.full((3,), 0.5),
                             std=torch.full((3,), 0.25), categories=[f"class {k}" for k in range(5)],
                             layers={"last": "features.3"})
    monkeypatch.setattr("lib.models.load", lambda *args, **kwargs: tiny)
    log = tmp_path / "audit.jsonl"
    assert main(["explain", str(picture), "--method", "gradcam", "--out", str(tmp_path / "m.png"), "--log", str(log)]) == 0
    (record,) = _records(log)
    by_hand = hashlib.sha256(b"".join(t.numpy().tobytes() for t in tiny_cnn(classes=5).state_dict().values()))
    assert record["weights_sha256"] == by_hand.hexdigest() and record["weights_file"] is None
    assert record["model"] == "tiny" and record["map_shape"] == [16, 16]


def test_git_commit_is_the_checkout_of_the_package_or_null(tmp_path, monkeypatch):
    import re

    import lib.__main__ as cli

    root = cli.Path(cli.__file__).resolve().parent.parent
    assert cli.git_commit(tmp_path) is None  # not a git checkout
    assert cli.git_commit(root / "lib") is None  # inside a checkout but not its top: some other repository's commit
    commit = cli.git_commit()
    if (root / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
    else:
        assert commit is None
    cli.git_commit.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH
    try:
        assert cli.git_commit() is None
    finally:
        cli.git_commit.cache_clear()


@pytest.mark.parametrize("where, message", [
    ("missing/audit.jsonl", "does not exist; create it first"),
    ("plain.txt/audit.jsonl", "is a file, not a folder"),
    ("folder", "exists and is not a regular file"),
    ("/proc/audit.jsonl", "is under /proc"),
])
def test_unwritable_log_fails_before_any_work(picture, tmp_path, capsys, monkeypatch, where, message):
    calls = _forbid_work(monkeypatch)
    (tmp_path / "plain.txt").write_text("a file")
    (tmp_path / "folder").mkdir()
    log = where if where.startswith("/") else str(tmp_path / where)
    assert main(["explain", str(picture), "--out", str(tmp_path / "m.png"), "--log", log]) == 2
    assert message in _one_line_error(capsys)
    assert calls == [] and not (tmp_path / "m.png").exists() and not (tmp_path / "missing").exists()


# ---------------------------------------------------------------------------------------------
# A folder: one line per image and a review sheet grouped by predicted class
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """Three small photographs (two PNG, one JPEG) and a text file, in a folder of their own."""
    from lib import data

    images = tmp_path / "images"
    images.mkdir()
    for k, name in enumerate(["a_cat.png", "b_coffee.jpg", "c_camera.png"]):
        photo = data.embedded()[k].image.copy()
        photo.thumbnail((160, 160))
        photo.save(images / name)
    (images / "notes.txt").write_text("not an image")
    return images


def _predictions(folder) -> dict[str, tuple[int, float]]:
    """File name -> (predicted class, its probability), computed here without the command line."""
    import torch

    from lib import data, models

    classifier = models.load("efficientnet_lite0")
    found = {}
    for path in sorted(folder.glob("*.*g")):
        with torch.no_grad():
            probabilities = classifier(classifier.preprocess(data.open_image(path)).unsqueeze(0)).softmax(dim=1)[0]
        found[path.name] = (int(probabilities.argmax()), float(probabilities.max()))
    return found


def _image_lines(out: str) -> list[list[str]]:
    """The tab-separated per-image lines of the output (a progress bar redraw ends at its last carriage return)."""
    lines = [line.rsplit("\r", 1)[-1] for line in out.splitlines()]
    return [line.split("\t") for line in lines if line.count("\t") == 3]


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_folder_prints_one_line_per_image_and_splits_correct_from_incorrect(folder, tmp_path, capsys, kind):
    import json

    from lib import models

    categories = models.imagenet_categories()
    predicted = _predictions(folder)
    right, wrong = predicted["a_cat.png"][0], (predicted["b_coffee.jpg"][0] + 1) % 1000
    labels = tmp_path / f"labels.{kind}"
    if kind == "csv":  # indices, with a header row
        labels.write_text(f"file,label\na_cat.png,{right}\nb_coffee.jpg,{wrong}\nelsewhere.png,3\n")
    else:  # class names
        labels.write_text(json.dumps({"a_cat.png": categories[right], "b_coffee.jpg": categories[wrong]}))
    sheet, log = tmp_path / "review" / "sheet.png", tmp_path / "audit.jsonl"
    assert main(["explain", str(folder), "--method", "gradcam", "--out", str(sheet), "--labels", str(labels),
                 "--log", str(log)]) == 0
    out = capsys.readouterr().out
    rows = _image_lines(out)
    assert [row[0] for row in rows] == ["a_cat.png", "b_coffee.jpg", "c_camera.png"]  # sorted, the text file skipped
    for name, shown, confidence, _ in rows:
        index, probability = predicted[name]
        assert shown == f"{index} {categories[index]}" and confidence == f"{probability:.1%}"
    assert [row[3] for row in rows] == ["correct", f"incorrect (label: {wrong} {categories[wrong]})", "no label"]
    assert "skipped 1 entry that is not an image file: notes.txt" in out and "3/3" in out  # notice and progress bar
    assert out.splitlines()[-1] == f"wrote {sheet}" and Image.open(sheet).size[0] > 300
    assert [r["image"] for r in _records(log)] == [str(folder / n) for n in ("a_cat.png", "b_coffee.jpg", "c_camera.png")]


def test_folder_without_labels_and_with_limits(folder, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["explain", str(folder), "--method", "gradcam", "--out", str(sheet), "--per-class", "1", "--total", "2"]) == 0
    rows = _image_lines(capsys.readouterr().out)
    assert len(rows) == 3 and {row[3] for row in rows} == {"no label"}
    assert sheet.is_file()


@pytest.mark.parametrize("setup, argv, message", [
    ("empty", [], "holds no image file (0 other entries"),
    ("text only", [], "holds no image file (1 other entries"),
    ("images", ["--out", "{tmp}/sheets/"], "is a folder; for a folder input give the review sheet's file name"),
    ("images", ["--out", "{tmp}/sheet"], "the review sheet needs an image extension: .png"),
    ("images", ["--labels", "{tmp}/labels.csv"], "labels none of the 1 image files"),
    ("images", ["--labels", "{tmp}/labels.txt"], "unknown extension '.txt'; accepted: .csv, .json"),
    ("images", ["--per-class", "0"], "expected a whole number of at least 1, got '0'"),
])
def test_folder_errors_are_one_line_before_any_work(tmp_path, capsys, monkeypatch, setup, argv, message):
    calls = _forbid_work(monkeypatch)
    images = tmp_path / "in"
    images.mkdir()
    if setup == "text only":
        (images / "notes.txt").write_text("x")
    if setup == "images":
        Image.new("RGB", (32, 32)).save(images / "one.png")
    (tmp_path / "labels.csv").write_text("other.png,3\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "sheet.png")]
    assert main(["explain", str(images), *argv]) == 2
    assert message in _one_line_error(capsys)
    assert calls == []


def test_folder_options_with_one_image_are_refused(picture, tmp_path, capsys):
    assert main(["explain", str(picture), "--labels", str(tmp_path / "l.csv"), "--per-class", "3"]) == 2
    assert "--labels, --per-class apply to a folder of images" in _one_line_error(capsys)


def test_a_label_naming_no_class_is_a_one_line_error(folder, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("a_cat.png,no such animal\n")
    assert main(["explain", str(folder), "--method", "gradcam", "--out", str(tmp_path / "s.png"), "--labels", str(labels)]) == 2
    assert "a_cat.png: no class name contains 'no such animal'" in _one_line_error(capsys)
