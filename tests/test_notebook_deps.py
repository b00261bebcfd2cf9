"""scripts/notebook_deps.py: each notebook depends on the lib files it uses, found statically.

Checked three ways: on a small package built here (what is and is not a dependency), on the
book's notebooks against facts of the code (only the audit chapter uses lib.synthetic), and at
run time: what a notebook's imports and attribute chains really load must be among the files
the script lists (a missing dependency would let `make book` keep a stale chapter).
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import notebook_deps  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def write_notebook(path: Path, *cells: str) -> Path:
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [],
                                           "execution_count": None} for c in cells],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


@pytest.fixture()
def package(tmp_path):
    files = {
        "lib/__init__.py": "from . import core\n",
        "lib/core.py": "import torch\n",
        "lib/lazy.py": "def f():\n    from .helper import g\n    return g()\n",
        "lib/helper.py": "",
        "lib/unused.py": "from . import core\n",
        "lib/sub/__init__.py": "",
        "lib/sub/deep.py": "from ..core import *\n",
        "lib/sub/other.py": "",
        "lib/tables/space.json": "{}",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def names(paths, root):
    return {str(p.relative_to(root)) for p in paths}


def test_imports_inside_functions_and_parent_packages_count_and_unused_modules_do_not(package):
    notebook = write_notebook(package / "a.ipynb", "%matplotlib inline\nimport lib.lazy\n", "!ls\nx = 1")
    assert names(notebook_deps.dependencies(notebook, package), package) == {
        "lib/__init__.py", "lib/core.py", "lib/lazy.py", "lib/helper.py", "lib/tables/space.json"}


def test_attribute_chains_are_lazy_imports(package):
    notebook = write_notebook(package / "b.ipynb", "from lib import sub\nsub.deep.thing()\n")
    assert names(notebook_deps.dependencies(notebook, package), package) == {
        "lib/__init__.py", "lib/core.py", "lib/sub/__init__.py", "lib/sub/deep.py", "lib/tables/space.json"}
    aliased = write_notebook(package / "c.ipynb", "import lib.sub as s\nfrom lib.sub import other as o\ns.deep\n")
    assert "lib/sub/other.py" in names(notebook_deps.dependencies(aliased, package), package)


def test_a_syntax_error_names_the_notebook_and_cell(package):
    notebook = write_notebook(package / "bad.ipynb", "x = 1", "def (")
    with pytest.raises(SystemExit, match=r"bad.ipynb, cell 1 \(a code cell\)"):
        notebook_deps.dependencies(notebook, package)


def test_the_book_chapters_use_what_their_code_names():
    deps = {nb.name[:2]: names(notebook_deps.dependencies(nb), REPO) for nb in NOTEBOOKS}
    assert all({"lib/__init__.py", "lib/saliency/__init__.py", "lib/label_spaces/coco.json"} <= d for d in deps.values())
    assert [k for k, d in deps.items() if "lib/synthetic.py" in d] == ["07"]
    assert [k for k, d in deps.items() if "lib/metrics/audit.py" in d] == ["07"]
    assert [k for k, d in deps.items() if "lib/benchmark.py" in d] == ["06"]
    assert not any("lib/distributed.py" in d for d in deps.values())
    everything = {str(p.relative_to(REPO)) for p in (REPO / "lib").rglob("*.py")}
    assert all(d < everything | names(notebook_deps.data_files(), REPO) for d in deps.values())


# One interpreter imports the heavy third-party packages once, then forks a child per notebook that
# runs the notebook's imports and attribute chains and reports which lib files got loaded.
RUNTIME = textwrap.dedent("""
    import ast, json, os, sys, types
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import notebook_deps
    import matplotlib.pyplot, numpy, pandas, scipy.stats, torch, torchvision  # noqa: F401 (shared by the children)
    for notebook in sys.argv[2:]:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read)
            tree = notebook_deps.notebook_code(Path(notebook))
            namespace = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import) or isinstance(node, ast.ImportFrom) and not node.level:
                    exec(compile(ast.Module(body=[node], type_ignores=[]), "imports", "exec"), namespace)
            for node in ast.walk(tree):
                chain = notebook_deps._attribute_chain(node) if isinstance(node, ast.Attribute) else None
                if chain and isinstance(namespace.get(chain[0]), types.ModuleType):
                    value = namespace[chain[0]]
                    for attribute in chain[1:]:
                        value = getattr(value, attribute, None)
                        if not isinstance(value, types.ModuleType):
                            break
            files = sorted(m.__file__ for n, m in sys.modules.items() if n == "lib" or n.startswith("lib."))
            os.write(write, json.dumps(files).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            text = pipe.read()
        _, status = os.waitpid(child, 0)
        if status or not text:
            sys.exit(f"{notebook}: the child failed (status {status})")
        print(json.dumps({"notebook": notebook, "files": json.loads(text)}))
""")


@pytest.fixture(scope="module")
def loaded_at_run_time():
    out = subprocess.run([sys.executable, "-c", RUNTIME, str(REPO / "scripts"), *map(str, NOTEBOOKS)], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {Path(r["notebook"]).name: {str(Path(p).resolve().relative_to(REPO)) for p in r["files"]} for r in rows}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name[:2] for nb in NOTEBOOKS])
def test_what_a_notebook_loads_at_run_time_is_among_its_listed_dependencies(notebook, loaded_at_run_time):
    loaded = loaded_at_run_time[notebook.name]
    listed = names(notebook_deps.dependencies(notebook), REPO)
    assert len(loaded) >= 10  # lib, its eager submodules and their imports
    assert loaded <= listed, sorted(loaded - listed)


def test_the_make_fragment_is_rewritten_only_when_it_changes(tmp_path):
    out = tmp_path / "deps.mk"
    subprocess.run([sys.executable, str(REPO / "scripts/notebook_deps.py"), "--out", str(out), *map(str, NOTEBOOKS)],
                   check=True)
    text = out.read_text()
    assert text.count("book/sections/") == len(NOTEBOOKS)
    before = out.stat().st_mtime_ns
    subprocess.run([sys.executable, str(REPO / "scripts/notebook_deps.py"), "--out", str(out), *map(str, NOTEBOOKS)],
                   check=True)
    assert out.stat().st_mtime_ns == before
    missing = subprocess.run([sys.executable, str(REPO / "scripts/notebook_deps.py"), "nope.ipynb"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no such notebook (a file is needed): nope.ipynb" in missing.stderr


@pytest.mark.parametrize("code, module", [
    ("import lib\n%time lib.sub.deep.thing()\n", "lib/sub/deep.py"),                 # a code-running magic is code
    ("import lib\n%timeit -n 3 -r 2 lib.sub.deep.thing()\n", "lib/sub/deep.py"),
    ("%%time\nimport lib.sub.deep\n", "lib/sub/deep.py"),
    ("import lib\nm = lib.sub\nm.deep.thing()\n", "lib/sub/deep.py"),               # a module bound by assignment
    ("import importlib\nimportlib.import_module('lib.sub.other')\n", "lib/sub/other.py"),  # by name
    ("import lib\ngetattr(lib.sub, 'other')\n", "lib/sub/other.py"),
    ("from lib.sub import *\n", "lib/sub/other.py"),                                # the package's __all__
    ("if True:\n    !pip install x\n    import lib.lazy\nx = (10\n     % 3)\n", "lib/helper.py"),  # shell and % kept valid
])
def test_the_less_common_ways_of_reaching_a_module_are_followed(package, code, module):
    (package / "lib/sub/__init__.py").write_text('__all__ = ["other", "deep"]\n')
    notebook = write_notebook(package / "d.ipynb", code)
    assert module in names(notebook_deps.dependencies(notebook, package), package)


@pytest.mark.parametrize("text", ["not json", "[]", '{"cells": 3}', '{"nocells": []}', '{"cells": ["x"]}'])
def test_a_file_that_is_not_a_notebook_gets_one_line(package, text):
    path = package / "x.ipynb"
    path.write_text(text)
    with pytest.raises(SystemExit, match="is not a readable notebook"):
        notebook_deps.dependencies(path, package)
