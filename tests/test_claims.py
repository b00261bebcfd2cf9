"""lib.claims: verdicts are validated, saved and gathered; the README headline counts them."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lib import claims

REPO = Path(__file__).resolve().parent.parent


def _claim(section, verdict, claim="a claim | with a pipe"):
    return claims.Claim(section, claim, "Paper, Table 1", "1.0", "0.9 [0.8, 1.0]", "lite0, quick", verdict, "fig-x")


def test_an_unknown_verdict_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: reproduced, partly"):
        _claim("01_a", "maybe")
    with pytest.raises(ValueError, match="accepted: holds, fails"):
        claims.Claim("01_a", "c", "s", "p", "o", "x", "reproduced", kind="check")
    with pytest.raises(ValueError, match="kind 'identity' unknown"):
        claims.Claim("01_a", "c", "s", "p", "o", "x", "holds", kind="identity")


def test_saved_claims_come_back_and_count_per_section(tmp_path):
    claims.save([_claim("01_a", "reproduced"), _claim("01_a", "partly")], "01_a", tmp_path)
    claims.save([_claim("02_b", "not tested")], "02_b", tmp_path)
    found = claims.load_all(tmp_path)
    assert [c.verdict for c in found] == ["reproduced", "partly", "not tested"]
    rows = claims.headline(found).splitlines()
    assert rows[0] == "| section | reproduced | partly | not reproduced | not tested | checks (hold / fail) |"
    assert rows[2:] == ["| 01_a | 1 | 1 | 0 | 0 | 0 / 0 |", "| 02_b | 0 | 0 | 0 | 1 | 0 / 0 |", "| **all** | 1 | 1 | 0 | 1 | 0 / 0 |"]
    page = claims.markdown(found)
    assert "Reproductions: 1 reproduced, 1 partly, 0 not reproduced, 1 not tested. Checks: 0 hold, 0 fail." in page
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
    assert "\nold\n" not in text and "| **all** | 1 | 0 | 0 | 0 | 0 / 0 |" in text and text.endswith("\n\nrest\n")


# ---------------------------------------------------------------- the protocol


def _section(tmp_path=None):
    return claims.Section("03_x", model="lite0", data="coco128", profile="quick", directory=tmp_path)


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("n", [10, 30, 100])
def test_null_data_is_reproduced_at_most_five_percent_of_the_time(n):
    # No true effect: paired differences of two methods drawn from one distribution, three shapes
    # (normal, heavy-tailed, and the hit/miss differences of two equally good pointing methods).
    trials = 400
    for shape in ("normal", "student3", "hits"):
        reproduced = 0
        for trial in range(trials):
            g = _rng(1000 * n + trial)
            if shape == "normal":
                a, b = g.normal(size=n), g.normal(size=n)
            elif shape == "student3":
                a, b = g.standard_t(3, size=n), g.standard_t(3, size=n)
            else:
                a, b = (g.random(n) < 0.6).astype(float), (g.random(n) < 0.6).astype(float)
            section = _section()
            found = section.difference("A beats B", "paper", "x", a, b, names=("A", "B"), seed=trial)
            reproduced += found.verdict == "reproduced" if found.reason == "" else 0
        assert reproduced / trials <= 0.05, f"{shape}, n={n}: {reproduced}/{trials} false 'reproduced'"


def test_a_real_effect_is_found_and_n_is_counted_from_the_values():
    g = _rng(1)
    found = _section().difference("A beats B", "paper", "53 vs 51", g.normal(1, 1, 40), g.normal(0, 1, 40), names=("A", "B"))
    assert found.verdict == "reproduced" and found.n == 40 and found.kind == "reproduction"
    assert found.setting == "lite0, 40 images, coco128, quick profile"
    assert "sign-flip" in found.rule and "A − B" in found.our_value


def test_the_shared_edge_cases():
    section = _section()
    few = section.difference("few", "p", "x", np.ones(29), np.zeros(29))
    assert (few.verdict, few.reason) == ("not tested", "n < 30") and few.shown_verdict == "not tested (n < 30)"
    saturated = section.difference("both at 100%", "p", "x", np.ones(40), np.ones(40), bounds=(0, 1))
    assert (saturated.verdict, saturated.reason) == ("not tested", "saturated")
    tie = section.difference("tie", "p", "x", np.full(40, 0.5), np.full(40, 0.5))
    assert tie.verdict == "not reproduced"
    wrong_way = section.difference("A beats B", "p", "x", np.zeros(40), np.ones(40))
    assert wrong_way.verdict == "not reproduced"
    both_best = section.best_of("A best", "p", "x", {"A": np.ones(40), "B": np.ones(40)}, "A", bounds=(0, 1))
    assert both_best.reason == "saturated"


def test_partly_needs_a_weaker_form_stated_beforehand():
    g = _rng(2)
    a, b = g.normal(0.5, 1, 60), g.normal(0, 1, 60)
    strong = _section().difference("A beats B by 2", "p", "x", a, b, margin=2.0)
    assert strong.verdict == "not reproduced"
    weaker = _section().difference("A beats B by 2", "p", "x", a, b, margin=2.0, weaker={"margin": 0.0, "text": "A beats B"})
    assert weaker.verdict == "partly" and "partly: A beats B" in weaker.rule


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    g = _rng(3)
    close = _section().difference("same", "p", "x", g.normal(0, 0.01, 40), 0.0, direction="equal", margin=0.05)
    assert close.verdict == "reproduced"
    loose = _section().difference("same", "p", "x", g.normal(0, 1, 40), 0.0, direction="equal", margin=0.05)
    assert loose.verdict == "not reproduced"


def test_best_of_k_needs_every_paired_comparison():
    g = _rng(4)
    a = g.normal(1, 1, 50)
    values = {"A": a, "B": g.normal(0, 1, 50), "C": a - 0.01 + np.tile([0.3, -0.3], 25)}  # C 0.01 behind A, noisily
    found = _section().best_of("A best", "p", "x", values, "A")
    assert found.verdict == "not reproduced" and "best: A" in found.our_value  # A is ahead of C, not significantly
    partly = _section().best_of("A best", "p", "x", values, "A", weaker={"competitors": ["B"], "text": "A beats B"})
    assert partly.verdict == "partly"
    lower = {"A": g.normal(0, 1, 50), "B": g.normal(3, 1, 50)}
    assert _section().best_of("A lowest", "p", "x", lower, "A", direction="less").verdict == "reproduced"


def test_trend_is_per_unit_and_constant_curves_are_left_out_and_counted():
    g = _rng(5)
    curves = g.normal(0, 1, (40, 4)) + np.arange(4)
    curves[:3] = 7.0  # undefined correlation
    found = _section().trend("rises", "p", "x", [1, 4, 16, 64], curves)
    assert found.verdict == "reproduced" and found.n == 37 and "3 constant curves left out" in found.our_value
    flat = _section().trend("rises", "p", "x", [1, 4, 16, 64], np.tile([[0, 1, 2, 3], [3, 2, 1, 0]], (20, 1)))
    assert flat.verdict == "not reproduced"


def test_claims_without_units_say_so_and_print_no_number():
    import warnings

    empty = {"A": np.zeros(0), "B": np.zeros(0)}
    none = _section().best_of("A best", "p", "x", empty, "A")
    assert none.verdict == "not tested" and none.n == 0
    assert "0.00" not in none.our_value and "A –" in none.our_value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice"
        curve = _section().trend("rises", "p", "x", [1, 2, 3], np.zeros((0, 3)))
    assert curve.verdict == "not tested" and curve.n == 0 and "mean curve –" in curve.our_value


def test_checks_are_apart_from_reproductions(tmp_path):
    section = _section(tmp_path)
    section.check_close("identity", "p", "x", np.zeros((3, 4)), np.full((3, 4), 1e-9), atol=1e-6)
    section.check_close("broken identity", "p", "x", np.zeros(3), np.ones(3), atol=1e-6)
    section.difference("A beats B", "p", "x", np.ones(40), np.zeros(40))
    section.not_tested("fine-tuning", "p", "x", "needs GPUs")
    section.save()
    found = claims.load_all(tmp_path)
    assert [(c.kind, c.verdict) for c in found] == [("check", "holds"), ("check", "fails"), ("reproduction", "reproduced"),
                                                     ("reproduction", "not tested")]
    assert found[0].n == 3 and found[3].shown_verdict == "not tested (needs GPUs)"
    assert claims.headline(found).splitlines()[-1] == "| **all** | 1 | 0 | 0 | 1 | 1 / 1 |"
    page = claims.markdown(found)
    assert page.index("**Reproductions**") < page.index("**Checks (by construction; not counted)**")
    assert claims.PROTOCOL in page and "## 03 · X" in page
    assert list(section.table().index) == ["reproduction", "reproduction", "check", "check"]


def test_bad_specifications_are_named():
    section = _section()
    with pytest.raises(ValueError, match="must be paired"):
        section.difference("c", "p", "x", np.ones(40), np.ones(39))
    with pytest.raises(ValueError, match="direction must be one of"):
        section.difference("c", "p", "x", np.ones(40), 0.0, direction="up")
    with pytest.raises(ValueError, match="NaN"):
        section.difference("c", "p", "x", np.r_[np.ones(39), np.nan], 0.0)
    with pytest.raises(ValueError, match="not among"):
        section.best_of("c", "p", "x", {"A": np.ones(40), "B": np.ones(40)}, "C")
    with pytest.raises(ValueError, match="at least 3 settings"):
        section.trend("c", "p", "x", [1, 2], np.ones((40, 2)))
