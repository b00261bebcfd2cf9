"""One source of parameters: each notebook's `parameters` cell is the quick profile, and
`params/smoke.yaml` and `params/full.yaml` list only the values they change.

- The cell of every notebook equals what the quick profile resolves to, so a notebook run as
  it is (in Jupyter, without papermill) is the quick run.
- Every key of a profile file exists in its notebook's cell and differs from its value there
  (an override equal to the default is redundant).
- Sections are in chapter order, `common` first.
- The runner (`scripts/execute_notebook.py`) injects the profile and every override, rejects
  an unknown key or section with one clear error, and accepts a profile file that is only
  comments or has empty sections. No notebook is executed here.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PROFILES = sorted(p.stem for p in (REPO / "params").glob("*.yaml"))
QUICK = "quick"


def _runner():
    spec = importlib.util.spec_from_file_location("execute_notebook", REPO / "scripts" / "execute_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXECUTE = _runner()


def cell_values(notebook: Path) -> dict:
    """The literal values of the `parameters` cell of `notebook`, by name, in cell order.

    Raises:
        AssertionError: the cell is missing, repeated, or holds anything but `name = literal`.
    """
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: needs exactly one cell tagged 'parameters', found {len(cells)}"
    values = {}
    for statement in ast.parse(cells[0].source).body:
        target = statement.targets[0] if isinstance(statement, ast.Assign) and len(statement.targets) == 1 else None
        assert isinstance(target, ast.Name), (
            f"{notebook.name}: the parameters cell must hold only `name = literal` lines, found {ast.unparse(statement)!r}")
        values[target.id] = ast.literal_eval(statement.value)
    return values


def same(a, b) -> bool:
    """Equal values of the same types (1, 1.0 and True are three different parameters)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def profile_data(profile: str) -> dict:
    """`params/<profile>.yaml` as written (sections in file order; a file of comments is {})."""
    return yaml.safe_load((REPO / "params" / f"{profile}.yaml").read_text(encoding="utf-8")) or {}


def override_problems(data: dict, cells: dict[str, dict]) -> list[str]:
    """Every key of a profile's `data` that no cell defines or that equals the cell's value."""
    problems = []
    for key, value in (data.get("common") or {}).items():
        defaults = [values[key] for values in cells.values() if key in values]
        if not defaults:
            problems.append(f"common.{key}: no notebook's parameters cell defines it")
        elif all(value == default for default in defaults):
            problems.append(f"common.{key}: {value!r} is the default of every notebook that defines it (redundant)")
    for section, values in data.items():
        if section == "common":
            continue
        if section not in cells:
            problems.append(f"{section}: names no notebook")
            continue
        for key, value in (values or {}).items():
            if key not in cells[section]:
                problems.append(f"{section}.{key}: not defined in the notebook's parameters cell")
            elif value == cells[section][key]:
                problems.append(f"{section}.{key}: {value!r} is the cell's own value (redundant)")
    return problems


def order_problems(sections: list) -> list[str]:
    """What is out of place in a profile's top-level `sections`: `common` first, then chapters."""
    chapters = [s for s in sections if s != "common"]
    problems = []
    if "common" in sections and sections[0] != "common":
        problems.append("'common' must be the first section")
    if chapters != sorted(chapters):
        problems.append(f"chapters must be in chapter order: {', '.join(sorted(chapters))}; found {', '.join(chapters)}")
    return problems


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_parameters_cell_is_the_quick_profile(notebook):
    cell = cell_values(notebook)
    resolved = {**cell, **EXECUTE.parameters_for(notebook, QUICK)}
    differing = {k: (cell[k], resolved[k]) for k in cell if not same(cell[k], resolved[k])}
    assert not differing, f"{notebook.name}: the parameters cell differs from the quick profile (cell, quick): {differing}"
    assert cell["profile"] == QUICK


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_keys_exist_in_the_cell_and_differ_from_it(profile):
    cells = {nb.stem: cell_values(nb) for nb in NOTEBOOKS}
    problems = override_problems(profile_data(profile), cells)
    assert not problems, f"params/{profile}.yaml must list only values that differ from the cells:\n" + "\n".join(problems)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_sections_are_in_chapter_order(profile):
    problems = order_problems(list(profile_data(profile)))
    assert not problems, f"params/{profile}.yaml: " + "; ".join(problems)


@pytest.mark.parametrize("profile", PROFILES)
def test_runner_injects_the_profile_and_every_override(profile):
    data = profile_data(profile)
    for notebook in NOTEBOOKS:
        cell = cell_values(notebook)
        expected = {k: v for k, v in (data.get("common") or {}).items() if k in cell}
        expected.update(data.get(notebook.stem) or {})
        expected["profile"] = profile
        assert same(EXECUTE.parameters_for(notebook, profile), expected), f"{notebook.name} under {profile}"


def test_the_checks_catch_a_redundant_or_unknown_override_and_a_misplaced_section():
    cells = {"00_a": {"n": 1, "seed": 0}, "01_b": {"seed": 0}}
    assert override_problems({"common": {"seed": 1}, "00_a": {"n": 2}, "01_b": None}, cells) == []
    assert override_problems({"00_a": {"n": 1}}, cells) == ["00_a.n: 1 is the cell's own value (redundant)"]
    assert override_problems({"01_b": {"n": 2}}, cells) == ["01_b.n: not defined in the notebook's parameters cell"]
    assert override_problems({"common": {"seed": 0}}, cells) == [
        "common.seed: 0 is the default of every notebook that defines it (redundant)"]
    assert override_problems({"02_c": {}}, cells) == ["02_c: names no notebook"]
    assert order_problems(["common", "00_a", "01_b"]) == []
    assert order_problems(["00_a", "common"]) == ["'common' must be the first section"]
    assert order_problems(["01_b", "00_a"]) == ["chapters must be in chapter order: 00_a, 01_b; found 01_b, 00_a"]


# ---------------------------------------------------------------- the runner's validation

NOTEBOOK = NOTEBOOKS[0]


@pytest.fixture
def write_profile(tmp_path, monkeypatch):
    """Write a profile file `probe.yaml` into a private params folder; returns its name."""
    monkeypatch.setattr(EXECUTE, "PARAMS_DIR", tmp_path)

    def write(text: str) -> str:
        (tmp_path / "probe.yaml").write_text(text, encoding="utf-8")
        return "probe"

    return write


@pytest.mark.parametrize(
    "text, message",
    [
        (f"{NOTEBOOK.stem}:\n  n_imgaes: 3\n",
         rf"key\(s\) n_imgaes under '{NOTEBOOK.stem}' are not defined in the parameters cell of notebooks/{NOTEBOOK.name}"),
        ("99_no_such_chapter:\n  n_images: 3\n", r"section\(s\) 99_no_such_chapter name no notebook in notebooks/"),
        ("common:\n  sed: 1\n", r"key\(s\) sed under 'common' are not defined in the parameters cell of any notebook"),
        ("common: [seed]\n", r"section 'common' must be a mapping"),
    ],
    ids=["unknown-key", "unknown-section", "unknown-common-key", "not-a-mapping"],
)
def test_runner_rejects_an_unknown_key_or_section_with_one_clear_error(write_profile, text, message):
    with pytest.raises(EXECUTE.UsageError) as error:
        EXECUTE.parameters_for(NOTEBOOK, write_profile(text))
    reported = str(error.value)
    assert "\n" not in reported and reported.startswith(str(EXECUTE.PARAMS_DIR / "probe.yaml")), reported
    assert re.search(message, reported), reported


def test_runner_accepts_comments_only_and_empty_sections(write_profile):
    key = next(k for k in cell_values(NOTEBOOK) if k != "profile")
    assert EXECUTE.parameters_for(NOTEBOOK, write_profile("# nothing but a comment\n")) == {"profile": "probe"}
    assert EXECUTE.parameters_for(NOTEBOOK, write_profile(f"common:\n{NOTEBOOK.stem}:\n")) == {"profile": "probe"}
    profile = write_profile(f"common:\n  seed: 7\n{NOTEBOOK.stem}:\n  {key}: changed\n")
    assert EXECUTE.parameters_for(NOTEBOOK, profile) == {"seed": 7, key: "changed", "profile": "probe"}


# ---------------------------------------------------------------- the device

TEMPLATE = REPO / "scripts" / "templates" / "chapter.ipynb"


def calls(code: str, opening: str) -> list[str]:
    """The argument text of every call in ``code`` that starts with ``opening`` (e.g. ``"models.load("``)."""
    found, start = [], code.find(opening)
    while start >= 0:
        depth, end = 1, start + len(opening)
        while depth:
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        found.append(code[start + len(opening):end - 1])
        start = code.find(opening, end)
    return found


def test_calls_reads_nested_arguments():
    assert calls("a = models.load(f(x), device=device) + models.load(n)", "models.load(") == ["f(x), device=device", "n"]


@pytest.mark.parametrize("notebook", NOTEBOOKS + [TEMPLATE], ids=[nb.stem for nb in NOTEBOOKS] + ["template"])
def test_every_notebook_computes_on_its_device_parameter_and_names_it(notebook):
    assert cell_values(notebook).get("device") == "auto", f"{notebook.name}: the parameters cell must set device = \"auto\""
    code = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells
                     if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    loads, summaries = calls(code, "models.load("), calls(code, "provenance.summary(")
    assert loads and all("device=device" in args for args in loads), f"{notebook.name}: a model loaded without device=device"
    assert len(summaries) == 1 and "device=device" in summaries[0], f"{notebook.name}: the provenance must name the device"
    assert "provenance.device_name()" not in code, f"{notebook.name}: device_name() names the default device, not the one used"
    if notebook != TEMPLATE:
        assert EXECUTE.overridden(notebook, {"profile": "smoke"}, {"device": "cpu"}) == {"profile": "smoke", "device": "cpu"}


def test_the_run_box_reads_the_device_the_summary_names():
    from lib import provenance

    summary = provenance.summary(device="cpu", profile="smoke")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "print(summary)", outputs=[nbformat.v4.new_output("stream", name="stdout", text=summary + "\n")])])
    assert EXECUTE.provenance_of(nb)["device"] == provenance.device_name("cpu")
