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
