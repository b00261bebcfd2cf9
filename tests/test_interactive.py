"""Editing notebooks for new experiments: interactive runs, sweeps, new chapters, `make lab`.

- Without the build's variables (``SALIENCY_SECTIONS``, set only by ``scripts/execute_notebook.py``)
  a section's claims go to the scratch folder ``build/interactive/`` and its provenance box says
  "interactive run"; ``book/sections/`` changes only through ``make book``.
- ``scripts/new_chapter.py`` (``make chapter``) writes a clean chapter from the template.
- ``lib.sweeps.compare`` puts the claims of a sweep's runs side by side.
- The runs (``-m notebooks``, a template chapter in a copy of ``notebooks/``): executed the way
  Jupyter does (nbclient, the venv's kernel, no build variables), it writes nothing under
  ``book/sections/``; a sweep over two values prints its table; the chapter builds with ``-W``;
  ``make lab`` serves the project's kernel (skipped where JupyterLab is not installed).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from lib import claims, paths, provenance, sweeps

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
BOOK_SECTIONS = REPO / "book" / "sections"
SCRATCH_CLAIMS = REPO / "build" / "interactive" / "claims"
BUILD_VARIABLES = ("SALIENCY_SECTIONS", "SALIENCY_RUN")
PROBE = "interactive_probe"  # the template chapter's slug in the tests (no real chapter has it)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _claim(section: str, text: str, our: str, verdict: str = "not tested", n: int = 6) -> claims.Claim:
    return claims.Claim(section, text, "source", "paper", our, "setting", verdict, n=n, units="images",
                        reason="n < 30" if verdict == "not tested" else "")


def _outputs_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _touching(stem: str) -> list[str]:
    """Files under book/sections/ whose name contains `stem` (a chapter's own files there)."""
    return sorted(str(p) for p in BOOK_SECTIONS.rglob(f"*{stem}*")) if BOOK_SECTIONS.is_dir() else []


def _snapshot() -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in BOOK_SECTIONS.rglob("*") if p.is_file()} if BOOK_SECTIONS.is_dir() else {}


# ---------------------------------------------------------------- where claims go, what the box says


def test_without_the_build_claims_go_to_scratch_and_the_run_is_interactive(monkeypatch, tmp_path):
    for name in BUILD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert claims.claims_dir() == REPO / "build" / "interactive" / "claims"
    assert provenance.run_kind() == provenance.INTERACTIVE
    assert provenance.summary(profile="quick").splitlines()[0] == f"run: {provenance.INTERACTIVE}"

    # A section saved without a directory lands in <repository>/build/interactive/claims/.
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    section = claims.Section("98_scratch", model="m", data="d", profile="quick")
    section.not_tested("a claim", "a paper", "a value", "needs data")
    assert section.save() == tmp_path / "build" / "interactive" / "claims" / "98_scratch.json"
    assert not (tmp_path / "book").exists()


def test_the_runner_marks_its_runs(monkeypatch, tmp_path):
    execute = _script("execute_notebook")
    for name in (*BUILD_VARIABLES, "JUPYTER_PATH", "MPLBACKEND"):
        monkeypatch.setenv(name, "")  # restored after the test: kernel_environment writes them
    monkeypatch.setenv("SALIENCY_SECTIONS", str(tmp_path))
    execute.kernel_environment()
    assert os.environ["SALIENCY_RUN"] == "build"
    assert claims.claims_dir() == tmp_path / "claims"
    assert provenance.run_kind() == "book build (scripts/execute_notebook.py)"

    monkeypatch.setenv("SALIENCY_RUN", "sweep groups=8 (scripts/sweep.py)")
    execute.kernel_environment()  # a caller's name for the run is kept
    assert provenance.summary().splitlines()[0] == "run: sweep groups=8 (scripts/sweep.py)"


def test_overrides_are_read_as_yaml_and_checked_against_the_parameters_cell(tmp_path):
    execute = _script("execute_notebook")
    assert execute.parse_overrides(["groups=8", "theta=70.5", "methods=[gradcam, rise]", "layer=null"]) == {
        "groups": 8, "theta": 70.5, "methods": ["gradcam", "rise"], "layer": None}
    with pytest.raises(execute.UsageError, match="expected NAME=VALUE"):
        execute.parse_overrides(["groups"])

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('profile = "quick"\ngroups = 32', metadata={"tags": ["parameters"]})],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    src = tmp_path / "00_probe.ipynb"
    nbformat.write(nb, src)
    assert execute.overridden(src, {"profile": "smoke"}, {"groups": 8}) == {"profile": "smoke", "groups": 8}
    with pytest.raises(execute.UsageError, match=r"grups are not parameters of .*accepted: groups"):
        execute.overridden(src, {}, {"grups": 8})
    with pytest.raises(execute.UsageError, match="profile"):
        execute.overridden(src, {}, {"profile": "full"})


# ---------------------------------------------------------------- a new chapter from the template


def test_new_chapter_takes_the_next_number_and_fills_the_template(tmp_path):
    new = _script("new_chapter")
    check = _script("check_notebooks_clean")
    for name in ("00_a.ipynb", "03_b.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    path = new.new_chapter("deletion_game", tmp_path, title="The deletion game")
    assert path == tmp_path / "04_deletion_game.ipynb"
    assert check.problems(path) == []  # clean: no outputs, one parameters cell, a proper name

    nb = nbformat.read(path, as_version=4)
    text = json.dumps(nb)
    assert "__" not in text.replace("__name__", "")  # every placeholder filled
    assert nb.cells[0].source.startswith("# The deletion game\n")
    figures = [c.metadata["mystnb"]["figure"]["name"] for c in nb.cells if "mystnb" in c.metadata]
    assert figures == ["fig-deletion-game-maps"]
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'SECTION = "04_deletion_game"' in code and "claims.Section(SECTION" in code
    assert 'evidence="fig-deletion-game-maps"' in code and "verdicts.save()" in code
    provenance_cells = [c for c in nb.cells if "provenance.summary(" in c.source]
    assert len(provenance_cells) == 1 and "hide-output" in provenance_cells[0].metadata["tags"]


def test_new_chapter_refuses_bad_or_taken_slugs(tmp_path):
    new = _script("new_chapter")
    (tmp_path / "00_gallery.ipynb").write_text("{}")
    for slug in ("Deletion", "07_deletion", "deletion-game", "", "_x"):
        with pytest.raises(new.UsageError, match="lower-case letters"):
            new.new_chapter(slug, tmp_path)
    with pytest.raises(new.UsageError, match="taken by 00_gallery.ipynb"):
        new.new_chapter("gallery", tmp_path)
    (tmp_path / "99_last.ipynb").write_text("{}")
    with pytest.raises(new.UsageError, match="chapter 99"):
        new.new_chapter("more", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_gallery.ipynb", "99_last.ipynb"]


# ---------------------------------------------------------------- the comparison table


def _run(folder: Path, value, order: int, found: list[claims.Claim], ok: bool = True, parameter: str = "groups") -> Path:
    if found:
        claims.save(found, found[0].section, folder / "claims")
    sweeps.record(folder, notebook="04_x", parameter=parameter, value=value, label=str(value), order=order,
                  profile="smoke", parameters={"profile": "smoke", parameter: value}, seconds=1.0, ok=ok,
                  error="" if ok else "RuntimeError: boom")
    return folder


def test_compare_puts_each_value_side_by_side(tmp_path):
    sweep = tmp_path / "04_x"
    _run(sweep / "groups=32", 32, 1, [_claim("04_x", "A beats B", "A 0.52 vs B 0.50", "reproduced", 40)])
    _run(sweep / "groups=8", 8, 0, [_claim("04_x", "A beats B", "A 0.49 vs B 0.50", "not reproduced", 40),
                                    _claim("04_x", "only at 8", "0.1")])
    table = sweeps.compare(sweep)  # the sweep's order (recorded), not the folders' names
    assert list(table.columns.get_level_values(0).unique()) == ["groups=8", "groups=32"]
    assert list(table.columns.get_level_values(1)[:3]) == list(sweeps.FIELDS)
    row = table.loc[("04_x", "A beats B")]
    assert (row["groups=8"].tolist(), row["groups=32"].tolist()) == (
        ["not reproduced", "A 0.49 vs B 0.50", 40], ["reproduced", "A 0.52 vs B 0.50", 40])
    assert table.loc[("04_x", "only at 8")]["groups=8"].tolist() == ["not tested (n < 30)", "0.1", 6]
    assert table.loc[("04_x", "only at 8")]["groups=32"].tolist() == ["", "", ""]


def test_compare_marks_failed_runs_and_refuses_mixed_sweeps(tmp_path):
    good = _run(tmp_path / "a", 8, 0, [_claim("04_x", "A beats B", "A 0.49")])
    failed = _run(tmp_path / "b", 16, 1, [], ok=False)
    table = sweeps.compare([good, failed])
    assert table.loc[("04_x", "A beats B"), ("groups=16", "verdict")] == "run failed"
    assert sweeps.load(failed)["error"] == "RuntimeError: boom"
    other = _run(tmp_path / "c", 0.5, 0, [], parameter="theta")
    with pytest.raises(ValueError, match="different parameters"):
        sweeps.compare([good, other])
    with pytest.raises(FileNotFoundError, match="run.json"):
        sweeps.compare([tmp_path])


def test_sweep_arguments(tmp_path):
    sweep = _script("sweep")
    assert sweep.parse_sweep("groups=8,16") == ("groups", [("8", 8), ("16", 16)])
    assert sweep.parse_sweep("methods=[a, b],[c]") == ("methods", [("[a, b]", ["a", "b"]), ("[c]", ["c"])])
    for bad in ("groups", "groups=", "groups=8,,16", "groups=8,8", "2x=1"):
        with pytest.raises(sweep.UsageError):
            sweep.parse_sweep(bad)
    assert sweep.find_notebook("04").name.startswith("04_")
    with pytest.raises(sweep.UsageError, match="known: 00_"):
        sweep.find_notebook("no_such_chapter")
    assert sweep.main([sweep.find_notebook("04").stem, "groups=8", "--out", str(BOOK_SECTIONS / "x")]) == 2


# ---------------------------------------------------------------- bad input to the scripts and lib.sweeps


def test_build_variables_that_are_blank_or_odd(monkeypatch, tmp_path):
    monkeypatch.setenv("SALIENCY_SECTIONS", "   ")  # blank: interactive, for the claims and the box alike
    monkeypatch.setenv("SALIENCY_RUN", "build")
    assert provenance.run_kind() == provenance.INTERACTIVE
    assert claims.claims_dir() == REPO / "build" / "interactive" / "claims"
    monkeypatch.setenv("SALIENCY_SECTIONS", f" {tmp_path} ")
    monkeypatch.setenv("SALIENCY_RUN", "sweep groups=8\n(scripts/sweep.py)")
    assert claims.claims_dir() == tmp_path / "claims"
    assert provenance.run_kind() == "sweep groups=8 (scripts/sweep.py)"
    assert provenance.summary().splitlines()[0] == "run: sweep groups=8 (scripts/sweep.py)"


def test_override_values_that_are_not_yaml_or_are_given_twice():
    execute = _script("execute_notebook")
    assert execute.parse_overrides(["step=1e-3", "groups=08", "name='1e3'"]) == {"step": 0.001, "groups": 8, "name": "1e3"}
    for items, message in ((["methods=[gradcam"], "not a YAML value"), (["layer=@x"], "not a YAML value"),
                           (["layer="], "empty value"), (["groups=8", "groups=16"], "given twice")):
        with pytest.raises(execute.UsageError, match=message):
            execute.parse_overrides(items)
    for profile in ("../params/quick", "", None):
        with pytest.raises(execute.UsageError, match="name a file of params/"):
            execute.load_profile(profile)


def test_sweep_values_with_quotes_repeats_and_clashing_folders():
    sweep = _script("sweep")
    assert sweep.parse_sweep("layer='a, b',c") == ("layer", [("'a, b'", "a, b"), ("c", "c")])
    assert sweep.parse_sweep("step=1e-3,0.01") == ("step", [("1e-3", 0.001), ("0.01", 0.01)])
    for bad, message in (("groups=8,08", "repeated"), ("flag=yes,true", "repeated"), ("layer=null,~", "repeated"),
                         ("methods=[a,b", "not a YAML value")):
        with pytest.raises(sweep.UsageError, match=message):
            sweep.parse_sweep(bad)
    names = sweep.folder_names("layer", ["a/b", "a b", "c"])
    assert names == ["layer=a_b~0", "layer=a_b~1", "layer=c"] and len(set(names)) == 3


@pytest.mark.parametrize("out", ["book", "book/x", "notebooks/x"])
def test_a_sweep_never_writes_into_the_books_sources_or_the_chapters(out, capsys):
    sweep = _script("sweep")
    assert sweep.main([sweep.find_notebook("04").stem, "groups=8", "--out", str(REPO / out)]) == 2
    assert "use a folder under build/" in capsys.readouterr().err
    assert not (REPO / out / sweep.find_notebook("04").stem).exists()


def test_new_chapter_refuses_slugs_and_titles_that_only_look_right(tmp_path):
    new = _script("new_chapter")
    for slug in ("deletion_game\n", "a" * 65, None):
        with pytest.raises(new.UsageError, match="lower-case letters"):
            new.new_chapter(slug, tmp_path)
    for title in ("The game\n# another heading", "", "  "):
        with pytest.raises(new.UsageError, match="one non-empty line"):
            new.new_chapter("deletion_game", tmp_path, title=title)
    assert list(tmp_path.iterdir()) == []
    assert new.new_chapter("a" * 64, tmp_path).name == "00_" + "a" * 64 + ".ipynb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_" + "a" * 64 + ".ipynb"]  # no partial file left


def test_record_refuses_bad_fields_before_writing(tmp_path):
    good = dict(notebook="04_x", parameter="groups", value=8, label="8", order=0, profile="smoke", parameters={}, seconds=1.0, ok=True)
    for bad, message in ((dict(ok="no"), "ok must be True or False"), (dict(order="x"), "order must be"),
                         (dict(order=-1), "order must be"), (dict(seconds=None), "seconds must be"),
                         (dict(seconds=float("nan")), "seconds must be"), (dict(label=""), "label must be")):
        with pytest.raises((TypeError, ValueError), match=message):
            sweeps.record(tmp_path / "run", **(good | bad))
    assert not (tmp_path / "run").exists()
    path = sweeps.record(tmp_path / "run", **good)
    assert sorted(p.name for p in path.parent.iterdir()) == [sweeps.RUN_FILE]  # no partial file left


def test_load_and_compare_refuse_unreadable_runs_and_repeated_values(tmp_path):
    broken = tmp_path / "sweep" / "groups=8"
    broken.mkdir(parents=True)
    for text in ("{not json", "[1, 2]", '{"notebook": "04_x"}'):
        (broken / sweeps.RUN_FILE).write_text(text)
        with pytest.raises(ValueError, match="not a run record"):
            sweeps.load(broken)
        with pytest.raises(ValueError, match="not a run record"):
            sweeps.compare(tmp_path / "sweep")
    one = _run(tmp_path / "a", 8, 0, [_claim("04_x", "A beats B", "A 0.49")])
    again = _run(tmp_path / "b", 8, 1, [_claim("04_x", "A beats B", "A 0.51")])
    with pytest.raises(ValueError, match="groups=8 is the value of more than one run"):
        sweeps.compare([one, again])
    assert sweeps.compare(one).loc[("04_x", "A beats B"), ("groups=8", "our value")] == "A 0.49"  # one run's folder
    with pytest.raises(TypeError, match="a sweep folder or a list of run folders"):
        sweeps.compare(None)
    (one / "claims" / "04_x.json").write_text("{not json")
    with pytest.raises(ValueError, match="claims of the run"):
        sweeps.load(one)


# ---------------------------------------------------------------- runs of the template chapter


@pytest.fixture(scope="module")
def chapter(tmp_path_factory) -> Path:
    """A template chapter in a copy of notebooks/ (the profiles name the real chapters)."""
    folder = tmp_path_factory.mktemp("repo") / "notebooks"
    folder.mkdir()
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, folder / nb.name)
    return _script("new_chapter").new_chapter(PROBE, folder)


@pytest.fixture(scope="module")
def swept(chapter, tmp_path_factory):
    """`scripts/sweep.py` over two values of the template's `step`, smoke profile: (process, sweep folder)."""
    out = tmp_path_factory.mktemp("sweeps")
    env = {k: v for k, v in os.environ.items() if k not in BUILD_VARIABLES}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "sweep.py"), str(chapter), "step=12544,25088",
                           "--profile", "smoke", "--out", str(out)], capture_output=True, text=True, env=env)
    return proc, out / chapter.stem


@pytest.mark.notebooks
def test_a_chapter_run_as_in_jupyter_writes_nothing_under_book_sections(chapter, monkeypatch):
    from nbclient import NotebookClient

    for name in BUILD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # What `make lab` gives its kernels (the venv's kernelspec first, the inline backend).
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    scratch = SCRATCH_CLAIMS / f"{chapter.stem}.json"
    scratch.unlink(missing_ok=True)
    before = _snapshot()
    nb = nbformat.read(chapter, as_version=4)
    try:
        # As Jupyter runs it: a kernel in the notebook's folder, the parameters cell's own values.
        NotebookClient(nb, kernel_name="python3", timeout=600, startup_timeout=180,
                       resources={"metadata": {"path": str(chapter.parent)}}).execute()
        saved = json.loads(scratch.read_text())
    finally:
        scratch.unlink(missing_ok=True)
    assert [c["section"] for c in saved] == [chapter.stem] and saved[0]["verdict"] == "not tested"
    assert f"run: {provenance.INTERACTIVE}" in _outputs_text(nb)
    assert _touching(chapter.stem) == []
    # A concurrent `make book` may rewrite other chapters' files; this run must have changed none of them.
    changed = {p for p, mtime in _snapshot().items() if before.get(p) != mtime}
    assert not {p for p in changed if chapter.stem in p}
    assert set(before) - set(_snapshot()) == set(), "files disappeared from book/sections/"


@pytest.mark.notebooks
def test_a_sweep_over_two_values_prints_its_comparison_table(swept, chapter):
    proc, sweep = swept
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("claims side by side", 1)[1]
    for label in ("12544", "25088"):
        folder = sweep / f"step={label}"
        run = sweeps.load(folder)
        assert run["status"] == "ok" and run["value"] == int(label) and run["parameters"]["step"] == int(label)
        executed = nbformat.read(folder / chapter.name, as_version=4)
        assert executed.metadata["papermill"]["parameters"]["step"] == int(label)
        assert f"run: sweep step={label} (scripts/sweep.py, profile smoke;" in _outputs_text(executed)
        (claim,) = run["claims"]
        assert claim.section == chapter.stem
        # The claim once, then one line per value: the value, its verdict, n and our value.
        line = f"  step={label}  {claim.shown_verdict}  n = {claim.n}"
        assert any(row.startswith(line) and row.endswith(claim.our_value) for row in table.splitlines()), table
    assert table.count(claim.claim) == 1
    assert _touching(chapter.stem) == []


@pytest.mark.notebooks
def test_a_new_chapter_builds_with_warnings_as_errors(swept, chapter, tmp_path):
    proc, sweep = swept
    executed = sweep / "step=12544" / chapter.name
    assert executed.is_file(), f"the sweep did not execute the template chapter:\n{proc.stdout}{proc.stderr}"
    out = tmp_path / "html"
    build = subprocess.run([sys.executable, str(SCRIPTS / "build_book.py"), "--out", str(out), str(executed)],
                           capture_output=True, text=True)
    assert build.returncode == 0, f"book build failed (warnings are errors):\n{build.stdout}\n{build.stderr}"
    page = (out / "sections" / f"{chapter.stem}.html").read_text(encoding="utf-8")
    assert "<img" in page and "Interactive probe" in page
    claims_page = (out / "claims.html").read_text(encoding="utf-8")
    assert "the pixels gradcam ranks first" in claims_page


# ---------------------------------------------------------------- make lab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _run_in_kernel(base: str, token: str, code: str) -> str:
    """Start a python3 kernel through the server's REST API, run `code`, return its stdout."""
    from tornado import httpclient, websocket

    http = httpclient.AsyncHTTPClient()
    reply = await http.fetch(f"http://{base}/api/kernels?token={token}", method="POST", body=json.dumps({"name": "python3"}))
    kernel = json.loads(reply.body)["id"]
    try:
        channel = await websocket.websocket_connect(f"ws://{base}/api/kernels/{kernel}/channels?token={token}")
        msg_id = uuid.uuid4().hex
        await channel.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "content": {"code": code, "silent": False}}))
        out = ""
        while True:
            message = json.loads(await asyncio.wait_for(channel.read_message(), 180))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                out += message["content"]["text"]
            elif message["msg_type"] == "error":
                out += "\n".join(message["content"]["traceback"])
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return out
    finally:
        await http.fetch(f"http://{base}/api/kernels/{kernel}?token={token}", method="DELETE")


@pytest.mark.notebooks
def test_make_lab_serves_the_project_kernel_with_the_build_data_root(tmp_path):
    pytest.importorskip("jupyterlab", reason="JupyterLab is installed by `make lab` only")
    if shutil.which("make") is None or Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("needs make and the Makefile's .venv")
    port, token = _free_port(), uuid.uuid4().hex
    env = {**os.environ, "SALIENCY_DATA": str(tmp_path), "SALIENCY_SECTIONS": str(tmp_path / "not-for-lab")}
    # -o: never rebuild the venv from a test; the arguments replace the browser by a known port and token.
    log = tmp_path / "lab.log"
    server = subprocess.Popen(["make", "-s", "-o", ".venv/.stamp", "lab",
                               f"LAB_ARGS=--no-browser --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"],
                              cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from urllib.request import urlopen

        for _ in range(240):
            try:
                with urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5) as reply:
                    specs = json.load(reply)
                break
            except OSError:
                assert server.poll() is None, f"make lab exited:\n{log.read_text()}"
                time.sleep(0.5)
        else:
            pytest.fail("make lab did not answer in 120 s")
        assert specs["default"] == "python3"
        code = ("import json, sys; from lib import claims, paths, provenance\n"
                "print(json.dumps([sys.executable, str(claims.claims_dir()), provenance.run_kind(), str(paths.data_root())]))")
        out = asyncio.run(_run_in_kernel(f"127.0.0.1:{port}", token, code))
        executable, claims_folder, run, data_root = json.loads(out.strip().splitlines()[-1])
        assert Path(executable).resolve() == Path(sys.executable).resolve()  # the venv's python, as the build's kernel
        assert Path(claims_folder) == SCRATCH_CLAIMS and run == provenance.INTERACTIVE
        assert Path(data_root) == tmp_path.resolve()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert f"http://127.0.0.1:{port}/lab/tree/notebooks?token=" in log.read_text()  # the URL it printed
