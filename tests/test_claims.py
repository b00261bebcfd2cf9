"""lib.claims: verdicts are validated, saved and gathered; the README headline counts them."""

import importlib.util
import json
from pathlib import Path

import pytest

from lib import claims

REPO = Path(__file__).resolve().parent.parent


def _claim(section, verdict, claim="a claim | with a pipe"):
    return claims.Claim(section, claim, "Paper, Table 1", "1.0", "0.9 [0.8, 1.0]", "lite0, quick", verdict, "fig-x")


def test_an_unknown_verdict_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: reproduced, partly"):
        _claim("01_a", "maybe")


def test_verdict_reads_holds_and_partly():
    assert claims.verdict(True) == "reproduced"
    assert claims.verdict(False, partly=True) == "partly"
    assert claims.verdict(False) == "not reproduced"


def test_saved_claims_come_back_and_count_per_section(tmp_path):
    claims.save([_claim("01_a", "reproduced"), _claim("01_a", "partly")], "01_a", tmp_path)
    claims.save([_claim("02_b", "not tested")], "02_b", tmp_path)
    found = claims.load_all(tmp_path)
    assert [c.verdict for c in found] == ["reproduced", "partly", "not tested"]
    rows = claims.headline(found).splitlines()
    assert rows[0] == "| section | reproduced | partly | not reproduced | not tested |"
    assert rows[2:] == ["| 01_a | 1 | 1 | 0 | 0 |", "| 02_b | 0 | 0 | 0 | 1 |", "| **all** | 1 | 1 | 0 | 1 |"]
    page = claims.markdown(found)
    assert "Totals: 1 reproduced, 1 partly, 0 not reproduced, 1 not tested." in page
    assert "a claim \\| with a pipe" in page  # a pipe would split the table's cell
    assert page.count("| fig-x |") == 3  # an unknown label stays text (a dangling reference fails the -W build)
    assert claims.markdown(found, {"fig-x"}).count("| {numref}`fig-x` |") == 3


def test_figure_labels_are_those_of_cells_that_drew_an_image(tmp_path):
    figure = {"mystnb": {"figure": {"name": "fig-drawn", "caption": "c"}}}
    cells = [
        {"cell_type": "code", "metadata": figure, "outputs": [{"output_type": "display_data", "data": {"image/png": "x"}}]},
        {"cell_type": "code", "metadata": {"mystnb": {"figure": {"name": "fig-empty"}}}, "outputs": []},
        {"cell_type": "markdown", "metadata": {}},
    ]
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"cells": cells}))
    assert claims.figure_labels(notebook) == {"fig-drawn"}


def test_readme_headline_is_replaced_between_its_markers(tmp_path):
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    update = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{update.BEGIN}\nold\n{update.END}\n\nrest\n")
    assert not update.claims_headline(readme, tmp_path / "sections")  # nothing built: left as is
    assert "old" in readme.read_text()
    claims.save([_claim("01_a", "reproduced")], "01_a", tmp_path / "sections" / "claims")
    assert update.claims_headline(readme, tmp_path / "sections")
    text = readme.read_text()
    assert "old" not in text and "| **all** | 1 | 0 | 0 | 0 |" in text and text.endswith("\n\nrest\n")
