"""Notebook smoke runs and the book build, through the same scripts as `make book`.

- The profiles (fast): every profile's keys exist in the notebooks they target, so a typo in
  `full.yaml` is caught on a CPU (`tests/test_params.py` checks the layout of the profiles).
- The sources (fast): committed without outputs and with one `parameters` cell.
- The runs (`-m notebooks`): every notebook executed with the smoke profile by
  `scripts/execute_notebook.py`, its figures present, then the book built from those
  copies by `scripts/build_book.py` with warnings as errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PROFILES = sorted((REPO / "params").glob("*.yaml"))
SMOKE = "smoke"
# A cell "draws" when its source calls matplotlib or lib.plot; such a notebook must show a PNG.
DRAWS = re.compile(r"\bplt\.|\blib\.plot\b|\bplot\.\w+\(|\bsubplots?\(|\.figure\(")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(paths):
    return [p.stem for p in paths]


def _pngs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


# ---------------------------------------------------------------- fast checks


def test_source_notebooks_are_clean():
    check = _script("check_notebooks_clean")
    problems = [f"{nb.relative_to(REPO)}: {p}" for nb in NOTEBOOKS for p in check.problems(nb)]
    assert not problems, "source notebooks must be stored clean:\n" + "\n".join(problems)


def test_a_cell_without_an_id_or_with_a_repeated_one_is_reported(tmp_path):
    check = _script("check_notebooks_clean")
    source = json.loads((REPO / "notebooks" / "06_benchmarks.ipynb").read_text())
    del source["cells"][1]["id"]
    source["cells"][3]["id"] = source["cells"][2]["id"]
    path = tmp_path / "06_benchmarks.ipynb"
    path.write_text(json.dumps(source))
    found = check.problems(path)
    assert any("cells 1: no id" in p for p in found) and any("ids repeated" in p for p in found), found


@pytest.mark.parametrize("profile", PROFILES, ids=_ids(PROFILES))
def test_profile_keys_exist_in_notebooks(profile):
    execute = _script("execute_notebook")
    for nb in NOTEBOOKS:
        params = execute.parameters_for(nb, profile.stem)  # raises on an unknown key or section
        assert params["profile"] == profile.stem


def test_progress_redraws_collapse_to_the_last_state(tmp_path):
    execute = _script("execute_notebook")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="loop:   0%|   | 0/2\r"),
        nbformat.v4.new_output("stream", name="stdout", text="loop:  50%|#  | 1/2\rloop: 100%|## | 2/2\n"),
        nbformat.v4.new_output("stream", name="stdout", text="done\n"),
        nbformat.v4.new_output("stream", name="stderr", text="note\n"),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    execute.tidy(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "loop: 100%|## | 2/2\ndone\n"), ("stderr", "note\n")]


def test_finished_progress_bars_and_the_tqdm_widget_notice_leave_the_page(tmp_path):
    execute = _script("execute_notebook")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="methods:   0%|          | 0/9 [00:00<?, ?it/s]\r"
                               "methods: 100%|##########| 9/9 [09:25<00:00, 62.84s/it]\n[maps: 565.6 s]\n"),
        nbformat.v4.new_output("stream", name="stderr", text="/v/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update\n"
                               "  from .autonotebook import tqdm as notebook_tqdm\n"),
        nbformat.v4.new_output("stream", name="stdout", text="a table | 12/30 hits [all pairs]\n"),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    execute.tidy(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "[maps: 565.6 s]\n"), ("stdout", "a table | 12/30 hits [all pairs]\n")]


def test_code_is_collapsed_behind_toggles_that_say_what_they_hold_but_the_parameters_stay_shown(tmp_path):
    execute = _script("execute_notebook")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_code_cell('n = 1', metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell('n = 2', metadata={"tags": ["injected-parameters"]}),
                                         nbformat.v4.new_code_cell('print(n)')])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    execute.tidy(path)
    title, parameters, injected, code = nbformat.read(path, as_version=4).cells
    assert injected.metadata.tags == ["injected-parameters", "hide-input"]
    assert injected.metadata.mystnb["code_prompt_show"] == execute.INJECTED_PROMPT
    assert "override the parameters cell" in execute.INJECTED_PROMPT
    assert code.metadata.tags == ["hide-input"] and code.metadata.mystnb["code_prompt_show"] == execute.CODE_PROMPT
    assert "mystnb" not in parameters.metadata and parameters.metadata.tags == ["parameters"]
    assert "tags" not in title.metadata


def test_the_run_box_sits_under_the_title_and_says_what_ran(tmp_path, monkeypatch):
    execute = _script("execute_notebook")
    from lib import claims

    monkeypatch.delenv("SALIENCY_DATA", raising=False)
    monkeypatch.setattr("lib.paths.data_root", lambda: tmp_path / "no-data")
    printed = nbformat.v4.new_output("stream", name="stdout",
                                     text="run: book build (scripts/execute_notebook.py)\nmodel: m\ngit commit: abc1234\ndevice: CPU (x86_64, 2 threads)\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# The title\n\nThe introduction."),
                                         nbformat.v4.new_code_cell("print(...)", outputs=[printed])])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    made = [claims.Claim("99_x", "a", "s", "p", "o", "set", "reproduced", n=40, units="images"),
            claims.Claim("99_x", "b", "s", "p", "o", "set", "not reproduced", n=486, units="image-category pairs"),
            claims.Claim("99_x", "c", "s", "p", "o", "set", "not tested", n=6, units="images", reason="n < 30"),
            claims.Claim("99_x", "d", "s", "p", "o", "set", "holds", kind="check", n=3, units="images")]
    box = execute.run_box(nbformat.read(path, as_version=4), src=execute.REPO / "notebooks" / "99_x.ipynb",
                          dst=execute.REPO / "book" / "sections" / "99_x.ipynb", profile="full",
                          params={"profile": "full", "n_images": 1000, "methods": ["gradcam"]}, seconds=125.4, claims=made)
    assert "**device** CPU (x86_64, 2 threads)" in box and "**commit** `abc1234`" in box and "in 2 min 05 s" in box
    assert "the six embedded photographs" in box
    assert "`n_images` = `1000`, `methods` = `['gradcam']`" in box and "profile` =" not in box
    assert "3 reproductions (1 reproduced, 1 not reproduced, 1 not tested) and 1 check (1 holds)" in box
    assert "tested reproductions rest on n = 40 to 486 (image-category pairs, images)" in box  # not the check's 3 nor the untested 6
    assert "python scripts/execute_notebook.py notebooks/99_x.ipynb book/sections/99_x.ipynb --profile full" in box
    assert "(every page: `make book PROFILE=full`)" in box
    overridden = execute.run_box(nbformat.read(path, as_version=4), src=execute.REPO / "notebooks" / "99_x.ipynb",
                                 dst=execute.REPO / "book" / "sections" / "99_x.ipynb", profile="quick",
                                 params={"profile": "quick", "groups": 16}, seconds=1, claims=[], overrides={"groups": 16})
    assert "--profile quick -p groups=16`." in overridden  # the override is part of what reproduces the page
    late = nbformat.v4.new_output("stream", name="stdout", text="loading\nrun: build\ngit commit: def5678\ndevice: GPU\n")
    assert execute.provenance_of(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=[late])])) == {
        "run": "build", "git commit": "def5678", "device": "GPU"}  # found after an earlier print in the same stream
    unchanged = execute.run_box(nbformat.read(path, as_version=4), src=path, dst=path, profile="quick",
                                params={"profile": "quick"}, seconds=3, claims=[])
    assert "exactly the parameters cell below" in unchanged and "Verdicts" not in unchanged and "device** unknown" not in box
    for _ in range(2):  # a second run replaces the box instead of adding one
        execute.insert_run_box(path, box)
    cells = nbformat.read(path, as_version=4).cells
    assert [c.source for c in cells[:1]] == ["# The title"] and cells[2].source == "The introduction."
    assert cells[1].metadata.tags == [execute.RUN_BOX_TAG] and cells[1].source == box
    assert sum(execute.RUN_BOX_TAG in c.metadata.get("tags", []) for c in cells) == 1 and len(cells) == 4


def test_claims_are_published_only_with_a_successful_run(tmp_path, monkeypatch):
    execute = _script("execute_notebook")
    monkeypatch.setattr(execute, "load_profile", lambda profile: {"common": {}})
    monkeypatch.setattr(execute, "FAILED_DIR", tmp_path / "failed")
    save = ('from lib import claims\n'
            'claims.save([claims.Claim("99_probe", "c", "s", "p", "o", "set", "reproduced")], "99_probe")\n')
    sections = tmp_path / "sections"
    for body, fails in ((save + 'raise RuntimeError("boom")', True), (save, False)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('profile = "x"', metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(body)],
                                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        src = tmp_path / "notebooks" / "99_probe.ipynb"
        src.parent.mkdir(exist_ok=True)
        nbformat.write(nb, src)
        if fails:
            with pytest.raises(Exception, match="boom"):
                execute.execute(src, sections / src.name, "smoke")
            assert not (sections / "claims" / "99_probe.json").exists() and not (sections / src.name).exists()
        else:
            execute.execute(src, sections / src.name, "smoke")
            assert (sections / "claims" / "99_probe.json").is_file() and (sections / src.name).is_file()
    assert not list(sections.glob(".99_probe.*"))  # no staging folder or temporary copy left behind


# ---------------------------------------------------------------- smoke runs


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Execute every notebook once with the smoke profile: stem -> (exit code, log, copy)."""
    sections = tmp_path_factory.mktemp("sections")
    results = {}
    for src in NOTEBOOKS:
        dst = sections / src.name
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / "execute_notebook.py"), str(src), str(dst), "--profile", SMOKE],
            capture_output=True,
            text=True,
        )
        results[src.stem] = (proc.returncode, proc.stdout + proc.stderr, dst)
    return results


@pytest.mark.notebooks
@pytest.mark.parametrize("src", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(executed, src):
    code, log, dst = executed[src.stem]
    assert code == 0, f"{src.name} failed with the smoke profile:\n{log}"
    nb = nbformat.read(dst, as_version=4)
    assert nb.metadata["papermill"]["parameters"]["profile"] == SMOKE

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{src.name}: error outputs {[e.ename for e in errors]}"
    text = "".join(o.get("text", "") for c in code_cells for o in c.outputs if o.output_type == "stream")
    assert "non-interactive, and thus cannot be shown" not in text, f"{src.name}: a non-inline backend dropped a figure"
    assert "\r" not in text, f"{src.name}: a progress bar left its redraws in the executed copy"
    execute = _script("execute_notebook")
    bars = [line for line in text.splitlines() if execute.PROGRESS_LINE.match(line) or execute.TQDM_NOTICE.search(line)]
    assert not bars, f"{src.name}: progress bars or tqdm's notice left on the page: {bars[:3]}"
    assert execute.RUN_BOX_TAG in nb.cells[1].metadata.get("tags", []), f"{src.name}: no 'This page ran on' box under the title"
    assert "**commit**" in nb.cells[1].source and "commit** `unknown`" not in nb.cells[1].source

    for i, cell in enumerate(nb.cells):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if figure:
            assert _pngs(cell) >= 1, f"{src.name}: cell {i} is a captioned figure without a PNG output"
    if any(DRAWS.search(c.source) for c in code_cells):
        assert sum(_pngs(c) for c in code_cells) >= 1, f"{src.name}: draws but shows no image/png output"


@pytest.mark.notebooks
def test_book_builds_from_smoke_runs(executed, tmp_path):
    failed = sorted(stem for stem, (code, _, _) in executed.items() if code != 0)
    if failed:
        pytest.skip(f"notebook(s) failed, see test_notebook_executes: {', '.join(failed)}")
    copies = [str(dst) for _, _, dst in executed.values()]
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "build_book.py"), "--out", str(out), *copies],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"book build failed (warnings are errors):\n{proc.stdout}\n{proc.stderr}"
    assert (out / "index.html").is_file()
    for stem, (_, _, dst) in executed.items():
        page = out / "sections" / f"{stem}.html"
        assert page.is_file(), f"no page for {stem}"
        pngs = sum(_pngs(c) for c in nbformat.read(dst, as_version=4).cells)
        assert page.read_text(encoding="utf-8").count("<img") >= pngs, f"{page.name} lost some of its {pngs} figure(s)"
    claims_page = out / "claims.html"
    assert claims_page.is_file(), "the claims page was not generated from the sections' verdicts"
    assert "Claims and verdicts" in claims_page.read_text(encoding="utf-8")
    browser_check(out, tmp_path / "screenshots")
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    break_like_a_reader_would_notice(broken)
    proc = browser_check(broken, tmp_path / "broken-screenshots", expect_failure=True)
    for problem in ("claims.html: evidence without a link: 'evidence as plain text'",
                    "wider than the text column: div: a deliberately wide block", "output cut off at the right: 'xxxx",
                    "stderr or warning in an output: 'left on stderr'", "figure under 600 px without a full-size link",
                    "on a 420 px screen the page is"):
        assert problem in proc.stdout, f"the browser check missed {problem!r} on a deliberately broken copy:\n{proc.stdout}"


def break_like_a_reader_would_notice(html: Path) -> None:
    """Put into a built book each thing the browser check must catch: stderr in an output, a small
    unlinked figure, a block wider than the column (and the phone), a line cut off, unlinked evidence."""
    page = sorted((html / "sections").glob("*.html"))[0]  # the gallery: it has figures
    text = page.read_text(encoding="utf-8")
    image = re.search(r'src="(\.\./_images/[^"]+\.png)"', text).group(1)
    injected = ('<div class="cell_output docutils container"><div class="output stderr"><pre>left on stderr</pre></div></div>'
                f'<p><img src="{image}" style="width:300px"></p><div style="width:3000px">a deliberately wide block</div>'
                '<div class="cell_output docutils container"><div class="output stream"><pre style="white-space:pre">'
                + "x" * 400 + "</pre></div></div>")
    page.write_text(text.replace("</article>", injected + "</article>", 1), encoding="utf-8")
    claims_page = html / "claims.html"
    text = claims_page.read_text(encoding="utf-8")
    linked = re.search(r'<td><p><a class="reference internal"[^>]*>.*?</a></p></td>', text, flags=re.S)
    claims_page.write_text(text.replace(linked.group(0), "<td><p>evidence as plain text</p></td>", 1), encoding="utf-8")


def browser_check(html: Path, screenshots: Path, expect_failure: bool = False):
    """What `make check-book` does, on the smoke-built book (skipped without Chromium, failed under CI)."""

    chromium = shutil.which("chromium")
    if chromium is None:
        # In CI the browser check is part of the contract: a missing browser fails, it does not skip.
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(
            "Chromium is not installed (make test installs Debian's chromium when it can)")
    pytest.importorskip("playwright")
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "check_book.py"), str(html), "--screenshots", str(screenshots), "--chromium", chromium],
        capture_output=True,
        text=True,
    )
    if expect_failure:
        assert proc.returncode == 1, f"the browser check passed a deliberately broken book:\n{proc.stdout}\n{proc.stderr}"
    else:
        assert proc.returncode == 0, f"browser check failed:\n{proc.stdout}\n{proc.stderr}"
    return proc
