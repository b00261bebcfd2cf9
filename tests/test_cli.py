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
