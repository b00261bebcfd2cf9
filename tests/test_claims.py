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
    assert page.count("| {doc}`fig-x </sections/01_a>` |") == 2  # an unknown label links its chapter (a dangling numref fails -W)
    assert page.count("| {doc}`fig-x </sections/02_b>` |") == 1
    assert claims.markdown(found, {"fig-x"}).count("| {numref}`fig-x` |") == 3
    assert "## 01 · A\n" in page and "## 02 · B\n" in page  # no title known: number and slug
    odd = claims.Claim("03_c", "costs $5 and $10 with `code` and *stars*", "s", "p", "o", "set", "reproduced",
                       evidence="Table 1 (left, right), <>")
    odd_page = claims.markdown([odd])
    assert "costs \\$5 and \\$10 with \\`code\\` and \\*stars\\*" in odd_page  # MyST reads none of it as syntax
    assert "{doc}`Table 1 (left, right) </sections/03_c>`, {doc}`the chapter </sections/03_c>`" in odd_page
    titled = claims.markdown(found, titles={"01_a": "Extract & Aggregate: NormGrad"})
    assert "## 01 · Extract & Aggregate: NormGrad\n" in titled and "## 02 · B\n" in titled  # each chapter's own title
    colour = lambda verdict: f'<strong class="verdict" style="background-color: {claims.VERDICT_COLOURS[verdict]}">'
    assert f"| {colour('not tested')}not tested</strong> |" in page  # the chapters' colour of each verdict
    assert page.count(colour("reproduced")) == 1 and page.count(colour("partly")) == 1
    assert set(claims.VERDICT_COLOURS) == {*claims.VERDICTS, *claims.CHECK_VERDICTS}  # every verdict has its colour
    assert "strong.verdict" in (REPO / "book" / "_static" / "tables.css").read_text()


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
    source = tmp_path / "notebooks"  # the chapters that exist: 01_a only
    source.mkdir()
    (source / "01_a.ipynb").write_text("{}")
    assert not update.claims_headline(readme, tmp_path / "sections", source)  # nothing built: left as is
    assert "old" in readme.read_text()
    claims.save([_claim("01_a", "reproduced")], "01_a", tmp_path / "sections" / "claims")
    assert update.claims_headline(readme, tmp_path / "sections", source)
    text = readme.read_text()
    assert "\nold\n" not in text and "| **all** | 1 | 0 | 0 | 0 | 0 / 0 |" in text and text.endswith("\n\nrest\n")
    assert "at commit" not in text  # no executed notebook: no commit to name
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print()")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="run: book build\ngit commit: abc1234\ndevice: CPU\n")]
    nbformat.write(nb, tmp_path / "sections" / "01_a.ipynb")
    assert update.claims_headline(readme, tmp_path / "sections", source)
    assert "as measured by `make book` at commit abc1234 " in readme.read_text()
    assert "No reproduction could be tested in this build." in readme.read_text()  # its n is 0
    # The book's introduction gets the same text, counting only the sections it is built from.
    spec = importlib.util.spec_from_file_location("build_book", REPO / "scripts" / "build_book.py")
    book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book)
    intro = tmp_path / "intro.md"
    for notebooks, expected in (([tmp_path / "sections" / "01_a.ipynb"], "| **all** | 1 | 0 | 0 | 0 | 0 / 0 |"),
                                ([], "No section of this build saved claims.")):
        intro.write_text(f"# Book\n\n{book.FINDINGS}\n\nmore\n")
        book.write_findings(intro, notebooks)
        text = intro.read_text()
        assert book.FINDINGS not in text and expected in text and text.startswith("# Book\n\n") and text.endswith("more\n")


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
    assert list(section.table().data["kind"]) == ["reproduction", "reproduction", "check", "check"]


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


# ---------------------------------------------------------------- bad input (each once a silent wrong result or a deep traceback)


def test_units_must_be_one_finite_value_each_and_pair_up():
    section, g = _section(), _rng(6)
    a, b = g.normal(1, 1, 40), g.normal(0, 1, 40)
    with pytest.raises(ValueError, match=r"one value per unit, shape \(n,\), got shape \(8, 5\)"):
        section.difference("transposed", "p", "x", a.reshape(8, 5), b.reshape(5, 8))  # was paired element by element
    assert section.difference("column", "p", "x", a.reshape(40, 1), b).n == 40
    with pytest.raises(ValueError, match="values: 1 of 10 values are NaN"):  # was 'not tested' below n = 30
        section.difference("few with NaN", "p", "x", np.r_[a[:9], np.nan], b[:10])
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        section.difference("NaN threshold", "p", "x", a, float("nan"))
    with pytest.raises(ValueError, match="got str"):  # "0" was read as the number 0
        section.difference("text threshold", "p", "x", a, "0")
    import torch

    zero_d = section.difference("0-d threshold", "p", "x", a, torch.tensor(0.0))  # was "40 values but 1 baseline"
    assert zero_d.our_value == section.difference("float threshold", "p", "x", a, 0.0).our_value
    with pytest.raises(ValueError, match="outside the bounds"):  # percentages against (0, 1) were never saturated
        section.difference("percent", "p", "x", np.full(40, 100.0), np.full(40, 100.0), bounds=(0, 1))


def test_weights_are_checked_whatever_n_and_the_sum_cannot_overflow():
    section, g = _section(), _rng(7)
    a, b = g.normal(1, 1, 40), g.normal(0, 1, 40)
    with pytest.raises(ValueError, match="3 weights for 10 units"):  # was 'not tested' without a word
        section.difference("few", "p", "x", a[:10], b[:10], weights=np.ones(3))
    with pytest.raises(ValueError, match="39 weights for 40 units"):  # was a numpy broadcast error
        section.best_of("best", "p", "x", {"A": a, "B": b}, "A", weights=np.ones(39))
    with pytest.raises(ValueError, match="non-negative with a positive sum"):  # was a RuntimeWarning and NaN means
        claims.test_weights(np.zeros(4), 4)
    with pytest.raises(ValueError, match="non-negative"):
        claims.test_weights(np.array([1.0, -1.0, 1.0, 1.0]), 4)
    assert claims.test_weights(np.full(4, 1e308), 4) == pytest.approx(np.full(4, 0.25))  # the sum is inf


def test_margins_directions_names_and_display_are_checked():
    section, g = _section(), _rng(8)
    a, b = g.normal(1, 1, 40), g.normal(0, 1, 40)
    for margin, direction in ((-5, "greater"), (float("nan"), "greater"), (0.0, "equal")):
        with pytest.raises(ValueError, match="margin must be"):  # NaN and equal-within-0 could never pass
            section.difference(f"margin {margin} {direction}", "p", "x", a, b, margin=margin, direction=direction)
    with pytest.raises(ValueError, match="direction must be one of"):  # 'up' fell through to 'equal': partly
        section.difference("weaker up", "p", "x", a, b, margin=5, weaker={"direction": "up"})
    with pytest.raises(ValueError, match=r"unknown keys \['direcion'\]"):
        section.difference("weaker typo", "p", "x", a, b, margin=5, weaker={"direcion": "less"})
    with pytest.raises(ValueError, match="names must be two strings"):
        section.difference("one name", "p", "x", a, b, names=("A",))
    with pytest.raises(ValueError, match="bounds must be a sequence"):
        section.difference("scalar bound", "p", "x", a, b, bounds=1)
    with pytest.raises(ValueError, match="digits"):
        section.difference("digits", "p", "x", a, b, digits=-1)
    with pytest.raises(ValueError, match="scale must be above 0"):  # scale 0 printed every number as 0.000
        section.difference("scale", "p", "x", a, b, scale=0)


def test_best_of_and_trend_refuse_what_they_cannot_decide():
    section, g = _section(), _rng(9)
    a, b = g.normal(-4, 1, 40), g.normal(0, 1, 40)
    with pytest.raises(ValueError, match="must map each method"):
        section.best_of("list", "p", "x", [a, b], "A")
    for competitors in (["D"], ["A"], [], "BB"):  # a KeyError, a vacuous 'partly', 'BB' read as 'B', 'B'
        with pytest.raises(ValueError, match=r"weaker\['competitors'\]"):
            section.best_of(f"weaker {competitors}", "p", "x", {"A": a, "B": b, "BB": b}, "A",
                            weaker={"competitors": competitors})
    curves = g.normal(0, 1, (40, 4)) + np.arange(4)
    for x in ([1, 1, 1, 1], [1, 2, np.nan, 4], [[1, 2], [3, 4]]):  # a RuntimeWarning, a sign_flip error, flattened
        with pytest.raises(ValueError, match="x must be the k distinct, finite settings"):
            section.trend(f"x {x}", "p", "x", x, curves)
    curves[0, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        section.trend("inf", "p", "x", [1, 2, 3, 4], curves)


def test_checks_compare_like_with_like():
    section = _section()
    with pytest.raises(ValueError, match=r"a has shape \(3, 4\) but b has shape \(4, 3\)"):
        section.check_close("transposed", "p", "x", np.zeros((3, 4)), np.zeros((4, 3)), atol=1e-6)
    both_inf = section.check_close("equal infinities", "p", "x", np.r_[np.inf, 0.0], np.r_[np.inf, 0.0], atol=1e-6)
    assert both_inf.verdict == "holds"
    undefined = section.check_close("NaN", "p", "x", np.r_[np.nan, 0.0], np.zeros(2), atol=1e-6)
    assert undefined.verdict == "fails" and undefined.our_value == "1 of 2 values NaN"
    empty = section.check_close("nothing", "p", "x", np.zeros(0), np.zeros(0), atol=1e-6)
    assert (empty.verdict, empty.reason) == ("not tested", "no values")  # was 'fails' with 'nan'
    with pytest.raises(ValueError, match="atol must be at least 0"):
        section.check_close("atol", "p", "x", np.zeros(2), np.zeros(2), atol=-1)
    with pytest.raises(ValueError, match="holds must be one boolean"):  # the string "False" was truthy: holds
        section.check("string", "p", "x", "False", "v", rule="r")
    with pytest.raises(ValueError, match="holds must be one boolean"):
        section.check("array", "p", "x", np.array([True, False]), "v", rule="r")
    with pytest.raises(ValueError, match="non-negative whole number"):  # 2.7 was cut to 2
        section.check("fractional n", "p", "x", True, "v", rule="r", n=2.7)
    with pytest.raises(ValueError, match="give the reason"):
        section.not_tested("no reason", "p", "x", "")


def test_a_section_states_each_claim_once_and_saves_inside_its_folder(tmp_path):
    section = _section(tmp_path)
    section.difference("A beats B", "p", "x", np.ones(40), np.zeros(40))
    with pytest.raises(ValueError, match="already stated"):  # the claims page listed it twice
        section.difference("A beats B", "p", "x", np.ones(40), np.zeros(40))
    section.save()
    section.save()  # saving twice rewrites the one file
    assert len(claims.load_all(tmp_path)) == 1 and not list(tmp_path.glob("*.tmp"))
    for name in ("../escaped", "", ".hidden"):  # '../escaped' wrote outside the folder
        with pytest.raises(ValueError, match="notebook stem"):
            claims.Section(name, model="m", data="d", profile="p", directory=tmp_path)
    with pytest.raises(TypeError, match="list of Claim"):
        claims.markdown([{"claim": "x"}])
    with pytest.raises(ValueError, match="claim must be a non-empty string"):
        _section().difference(None, "p", "x", np.ones(40), 0.0)


def test_a_claim_the_run_cannot_test_says_why_keeps_its_rule_and_reads_no_values():
    tested, absent = claims.Section("01_x", model="m", data="d", profile="quick"), claims.Section("01_x", model="m", data="d", profile="quick")
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 40), rng.normal(0, 1, 40)
    for method, args in (("difference", (a, b)), ("best_of", ({"A": a, "B": b}, "A")),
                         ("trend", ([1, 2, 3], np.stack([b, b + a, b + 2 * a], 1)))):
        full = getattr(tested, method)(f"claim {method}", "src", "p", *args)
        assert full.verdict == "reproduced"
        empty = ((np.zeros(0), np.zeros(3)) if method == "difference" else
                 ({"A": np.zeros(0), "B": np.zeros(5)}, "A") if method == "best_of" else ([1, 2, 3], np.zeros((0, 2))))
        skipped = getattr(absent, method)(f"claim {method}", "src", "p", *empty, unavailable="no COCO images")
        assert (skipped.verdict, skipped.reason, skipped.n, skipped.our_value) == ("not tested", "no COCO images", 0, "not run")
        assert skipped.rule == full.rule
    for bad in ("", "  ", 3, True):
        with pytest.raises(ValueError, match="unavailable must be None or the reason"):
            absent.difference(f"bad {bad!r}", "src", "p", a, b, unavailable=bad)


def test_the_verdict_table_shows_every_cell_whole_and_colours_each_verdict():
    section = _section()
    long_claim = "a claim long enough that the pandas view would cut it at fifty characters, " * 2
    section.not_tested(long_claim, "src", "p", reason="needs GPUs")
    rng = np.random.default_rng(0)
    section.difference("a real effect", "src", "p", rng.normal(1, 1, 40), rng.normal(0, 1, 40))
    html = section.table().to_html()
    assert long_claim.strip() in html and "..." not in html
    assert claims.VERDICT_COLOURS["not tested"] in html and claims.VERDICT_COLOURS["reproduced"] in html
    assert claims.VERDICT_COLOURS["not reproduced"] not in html
    section.not_tested("with evidence", "src", "p", reason="r", evidence="fig-a-b, part 4b table <i>")
    html = section.table().to_html()
    assert '<a href="#fig-a-b">fig-a-b</a>, part 4b table &lt;i&gt;' in html  # a figure label links its figure; the rest is text


def test_what_the_review_found_is_refused_or_shown_safely():
    section = _section()
    rng = np.random.default_rng(0)
    curves = np.array([0.0, 5.0, 4.0, 3.0, 2.0, 1.0]) + rng.normal(0, 0.01, (40, 6))  # rho < 0, but last > first
    for weaker in ({"first_last": False}, {"text": "last above first"}, {"first_last": "no"}):
        with pytest.raises(ValueError, match="the only weaker form is"):
            section.trend(f"rises {weaker}", "src", "p", [1, 2, 3, 4, 5, 6], curves, weaker=weaker)
    assert section.trend("rises", "src", "p", [1, 2, 3, 4, 5, 6], curves, weaker={"first_last": True}).verdict == "partly"
    for boolean in (True, np.bool_(True), np.array(True)):
        with pytest.raises(ValueError, match="got the boolean"):
            section.difference(f"vs {boolean!r}", "src", "p", rng.normal(1, 1, 40), boolean)
    spaced = section.difference("spaced", "src", "p", [], unavailable="  no COCO\n images ")
    assert spaced.reason == "no COCO images"
    section.not_tested("AUC<baseline & <script>x</script>", "src", "p", reason="r")
    html = section.table().to_html()
    assert "<script>" not in html and "AUC&lt;baseline &amp; &lt;script&gt;" in html
    other = _section()
    other.not_tested("another claim", "src", "p", reason="r")
    assert section.table().uuid != other.table().uuid and section.table().uuid == section.table().uuid


# ---------------------------------------------------------------- saved files: whole, readable, the chapters that exist


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    update = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update)
    return update


def test_the_headline_ignores_the_claims_and_copies_of_deleted_notebooks(tmp_path, capsys):
    import nbformat

    update = _update_readme()
    source, sections = tmp_path / "notebooks", tmp_path / "sections"
    source.mkdir()
    (source / "01_a.ipynb").write_text("{}")
    claims.save([_claim("01_a", "reproduced")], "01_a", sections / "claims")
    claims.save([_claim("07_deleted", "not reproduced"), _claim("07_deleted", "partly", "b")], "07_deleted",
                sections / "claims")  # notebooks/07_deleted.ipynb was deleted; its files stayed
    for stem, commit in (("01_a", "abc1234"), ("07_deleted", "dead000")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print()")])
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"run: book build\ngit commit: {commit}\n")]
        nbformat.write(nb, sections / f"{stem}.ipynb")
    text = update.findings(sections, source=source)
    assert "07_deleted" not in text and "dead000" not in text and "| **all** | 1 | 0 | 0 | 0 | 0 / 0 |" in text
    assert "at commit abc1234 " in text
    readme = tmp_path / "README.md"
    readme.write_text(f"{update.BEGIN}\n{update.END}\n")
    assert update.claims_headline(readme, sections, source)
    assert "07_deleted" not in readme.read_text()
    assert "ignored 1 claims file(s) of notebooks no longer in notebooks/: 07_deleted.json" in capsys.readouterr().out
    assert (sections / "claims" / "07_deleted.json").is_file()  # the README only reads; the book build removes it
    # The claims page and the introduction read the build's own chapters only, by file.
    assert [c.section for c in update.saved_claims([sections / "01_a.ipynb"])] == ["01_a"]


def test_a_save_replaces_the_file_whole_and_refuses_another_sections_claims(tmp_path):
    claims.save([_claim("01_a", "reproduced"), _claim("01_a", "partly", "b")], "01_a", tmp_path)
    claims.save([_claim("01_a", "partly", "b")], "01_a", tmp_path)
    assert [c.claim for c in claims.load_all(tmp_path)] == ["b"]
    with pytest.raises(ValueError, match=r"claims of section\(s\) 02_b cannot be saved as '01_a'"):
        claims.save([_claim("02_b", "reproduced")], "01_a", tmp_path)
    assert [c.claim for c in claims.load_all(tmp_path)] == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["01_a.json"]


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    claims.save([_claim("01_a", "reproduced")], "01_a", tmp_path)

    def dies(descriptor):  # the text is written, not yet on disk nor renamed
        raise KeyboardInterrupt

    monkeypatch.setattr(claims.os, "fsync", dies)
    with pytest.raises(KeyboardInterrupt):
        claims.save([_claim("01_a", "not tested")], "01_a", tmp_path)
    assert [c.verdict for c in claims.load_all(tmp_path)] == ["reproduced"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_a.json"]


@pytest.mark.parametrize("text, problem", [('{"trunc', "cannot be read"), ('{"claims": []}', "not a list of claims"),
                                           ('[{"section": "01_a"}]', "holds a claim that is not one"),
                                           ('[{"section": "01_a", "claim": "c", "source": "s", "paper_value": "p", '
                                            '"our_value": "o", "setting": "x", "verdict": "maybe"}]', "verdict 'maybe' unknown")],
                         ids=["truncated", "not-a-list", "missing-fields", "bad-verdict"])
def test_a_damaged_claims_file_is_one_error_naming_it_and_the_fix(tmp_path, text, problem):
    (tmp_path / "01_a.json").write_text(text)
    with pytest.raises(ValueError, match=problem) as error:
        claims.load_all(tmp_path)
    assert str(tmp_path / "01_a.json") in str(error.value) and "delete it or run notebooks/01_a.ipynb again" in str(error.value)
    assert claims.load_all(tmp_path, sections=["02_b"]) == []  # a file that is not asked for is not read


def test_a_claims_file_holding_another_sections_claims_is_refused(tmp_path):
    (tmp_path / "01_a.json").write_text(json.dumps([{"section": "02_b", "claim": "c", "source": "s", "paper_value": "p",
                                                     "our_value": "o", "setting": "x", "verdict": "reproduced"}]))
    with pytest.raises(ValueError, match="holds claims of section\\(s\\) 02_b, not of '01_a'"):
        claims.load_all(tmp_path)
