"""The build scripts publish whole results or none (issue 17).

- `scripts/execute_notebook.py`: a run replaces its notebook's claims file whole (a claim the
  run did not save is gone; a run that saved none removes the file), a failed run leaves the
  published pair (notebook, claims) as it was, and SIGTERM or SIGINT removes the temporary
  copy, publishes nothing and says so in one line (exit 143 or 130), without a traceback.
- `scripts/build_book.py`: the claims file of a notebook that no longer exists is removed.

The notebooks run here are generated: a parameters cell and a cell that writes JSON or
sleeps; none imports torch. A kernel starts in about two seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# What execute_notebook.kernel_environment sets in the process that runs it.
RUNNER_VARIABLES = ("JUPYTER_PATH", "MPLBACKEND", "PYDEVD_DISABLE_FILE_VALIDATION", "SALIENCY_RUN", "SALIENCY_SECTIONS")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, parameters: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(body)], metadata={"kernelspec": KERNELSPEC})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _claim(section: str, text: str) -> dict:
    return {"section": section, "claim": text, "source": "s", "paper_value": "p", "our_value": "o",
            "setting": "set", "verdict": "reproduced"}


# A chapter that saves the claims named by `names` as lib.claims.save would (without importing
# lib, hence torch), into the staging folder the runner gives it, then fails when asked.
SAVES = '''import json, os, pathlib
folder = pathlib.Path(os.environ["SALIENCY_SECTIONS"]) / "claims"
folder.mkdir(parents=True, exist_ok=True)
if names:
    (folder / f"{section}.json").write_text(json.dumps([
        {"section": section, "claim": n, "source": "s", "paper_value": "p", "our_value": "o",
         "setting": "set", "verdict": "reproduced"} for n in names]))
print("ran", names)
if fail:
    raise RuntimeError("boom")
'''


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """scripts/execute_notebook.py as a module: no profile file read, failures kept under tmp_path."""
    for name in RUNNER_VARIABLES:  # restored after the test (execute sets them)
        monkeypatch.delenv(name, raising=False)
    execute = _script("execute_notebook")
    monkeypatch.setattr(execute, "load_profile", lambda profile: {})
    monkeypatch.setattr(execute, "FAILED_DIR", tmp_path / "failed")
    return execute


# ---------------------------------------------------------------- claims: one file per notebook, replaced whole


def _published(sections: Path, stem: str):
    path = sections / "claims" / f"{stem}.json"
    return [c["claim"] for c in json.loads(path.read_text())] if path.exists() else None


def test_a_run_replaces_its_claims_file_whole_and_a_failed_run_leaves_it(runner, tmp_path):
    src = _notebook(tmp_path / "notebooks" / "99_probe.ipynb", 'profile = "x"\nsection = "99_probe"\nnames = []\nfail = False', SAVES)
    sections = tmp_path / "sections"
    dst = sections / src.name
    runner.execute(src, dst, "quick", {"names": ["a", "b"]})
    assert _published(sections, "99_probe") == ["a", "b"]
    runner.execute(src, dst, "quick", {"names": ["a"]})
    assert _published(sections, "99_probe") == ["a"]  # "b" was not saved by this run: gone
    published = dst.read_bytes()
    with pytest.raises(Exception, match="boom"):
        runner.execute(src, dst, "quick", {"names": ["c"], "fail": True})
    assert _published(sections, "99_probe") == ["a"] and dst.read_bytes() == published  # the last good pair stays
    assert (tmp_path / "failed" / src.name).is_file()
    runner.execute(src, dst, "quick", {"names": []})
    assert _published(sections, "99_probe") is None  # a chapter that stopped saving claims has none
    assert sorted(p.name for p in sections.iterdir()) == ["99_probe.ipynb", "claims"]  # no temporary or staging left


def test_a_run_that_saves_another_sections_claims_publishes_nothing(runner, tmp_path):
    src = _notebook(tmp_path / "notebooks" / "99_probe.ipynb", 'profile = "x"\nsection = "04_other"\nnames = ["x"]\nfail = False', SAVES)
    sections = tmp_path / "sections"
    (sections / "claims").mkdir(parents=True)
    theirs = sections / "claims" / "04_other.json"
    theirs.write_text(json.dumps([_claim("04_other", "theirs")]))
    with pytest.raises(runner.PublishError, match=r"claims of section\(s\) 04_other.*claims.Section\('99_probe'"):
        runner.execute(src, sections / src.name, "quick")
    assert json.loads(theirs.read_text())[0]["claim"] == "theirs"
    assert not (sections / src.name).exists() and not (sections / "claims" / "99_probe.json").exists()


def test_publish_claims_replaces_removes_or_refuses(tmp_path):
    execute = _script("execute_notebook")
    staged, folder = tmp_path / "stage" / "claims", tmp_path / "sections" / "claims"
    staged.mkdir(parents=True)
    folder.mkdir(parents=True)
    (folder / "01_a.json").write_text(json.dumps([_claim("01_a", "old"), _claim("01_a", "dropped")]))
    (folder / "02_b.json").write_text(json.dumps([_claim("02_b", "kept")]))
    (staged / "01_a.json").write_text(json.dumps([_claim("01_a", "new")]))
    assert execute.publish_claims(staged, folder, "01_a") == folder / "01_a.json"
    assert [c["claim"] for c in json.loads((folder / "01_a.json").read_text())] == ["new"]
    assert execute.publish_claims(tmp_path / "nothing-staged", folder, "01_a") is None
    assert sorted(p.name for p in folder.iterdir()) == ["02_b.json"]  # another chapter's file is not touched
    (staged / "02_b.json").write_text("[]")
    with pytest.raises(execute.PublishError, match="02_b"):
        execute.publish_claims(staged, folder, "03_c")
    assert json.loads((folder / "02_b.json").read_text())[0]["claim"] == "kept"


def test_a_build_removes_the_claims_files_of_deleted_notebooks(tmp_path, capsys):
    book = _script("build_book")
    source = tmp_path / "notebooks"
    for stem in ("01_a", "02_b"):
        _notebook(source / f"{stem}.ipynb", "x = 1", "print(x)")
    sections = tmp_path / "sections"
    (sections / "claims").mkdir(parents=True)
    for stem in ("01_a", "02_b", "07_deleted", "98_given"):
        (sections / "claims" / f"{stem}.json").write_text(json.dumps([_claim(stem, "c")]))
    (sections / "claims" / ".01_a.json.1-ab.tmp").write_text("")  # a writer's temporary file is not a claims file
    given = [sections / "01_a.ipynb", sections / "98_given.ipynb"]  # an executed chapter of the build stays
    assert book.remove_stray_claims(given, source) == [sections / "claims" / "07_deleted.json"]
    assert sorted(p.name for p in (sections / "claims").glob("*.json")) == ["01_a.json", "02_b.json", "98_given.json"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "07_deleted.json" in out[0] and "notebooks/07_deleted.ipynb no longer exists" in out[0]
    assert book.remove_stray_claims(given, source) == []


# ---------------------------------------------------------------- SIGTERM and SIGINT


SLEEPS = '''import os, pathlib, time
pathlib.Path(marker).write_text(str(os.getpid()))
time.sleep(60)
'''

# The runner's main() in a fresh process, without the profile files and build/failed of the repository.
MAIN = '''import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("execute_notebook", {script!r})
execute = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute)
execute.load_profile = lambda profile: {{}}
execute.FAILED_DIR = Path({failed!r})
sys.exit(execute.main([{src!r}, {dst!r}, "--profile", "quick"]))
'''


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True
        if "\nState:\tZ" in state:  # exited, not yet reaped
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_removes_its_temporary_files_and_says_so_in_one_line(tmp_path, signum, status):
    marker = tmp_path / "kernel-started"
    src = _notebook(tmp_path / "notebooks" / "99_sleep.ipynb", f"profile = \"x\"\nmarker = {str(marker)!r}", SLEEPS)
    sections = tmp_path / "sections"
    dst = sections / src.name
    code = MAIN.format(script=str(SCRIPTS / "execute_notebook.py"), failed=str(tmp_path / "failed"), src=str(src), dst=str(dst))
    env = {k: v for k, v in os.environ.items() if k not in RUNNER_VARIABLES}
    # A session of its own: SIGINT goes to its process group, as Ctrl-C in a terminal sends it.
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the kernel never ran the cell: {proc.communicate(timeout=30)}"
        assert list(sections.glob(".99_sleep.tmp-*.ipynb"))  # the run is under way, in its temporary copy
        time.sleep(0.2)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, (out, err)
    assert err.strip().splitlines() == [f"interrupted: {src}, nothing published"] and "Traceback" not in err
    assert sorted(p.name for p in sections.iterdir()) == []  # no temporary copy, no staging folder, no DST
    assert not (tmp_path / "failed").exists()  # stopped on purpose: no failed copy to inspect
    assert _gone(int(marker.read_text())), "the kernel outlived the run"


def test_interruptible_turns_sigterm_into_interrupted_and_restores_the_handlers():
    execute = _script("execute_notebook")
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(execute.Interrupted) as caught:
        with execute.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_status == 143 and not caught.value.published
    assert isinstance(caught.value, KeyboardInterrupt)  # a sweep stops on it as on Ctrl-C
    assert {s: signal.getsignal(s) for s in before} == before
    with pytest.raises(execute.Interrupted) as caught:  # while publishing: held, then raised once it is done
        with execute.interruptible() as signals:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)
                done = True
    assert done and caught.value.published and caught.value.exit_status == 130
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_held_while_publishing_fails_is_not_lost():
    execute = _script("execute_notebook")
    with pytest.raises(execute.Interrupted) as caught:
        with execute.interruptible() as signals:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                raise OSError("disk full")  # the publishing failed after the signal came
    assert caught.value.signum == signal.SIGTERM and not caught.value.published
