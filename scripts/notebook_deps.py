#!/usr/bin/env python3
"""Which `lib` files each notebook's executed copy depends on, as make rules.

`make book` re-executes a notebook when a `lib` module it uses changed, not when any `lib`
file did (the per-figure dependency graph of showyourwork).  A notebook uses:

* the `lib` modules its code cells import (`import lib`, `import lib.x`, `from lib import x`,
  `from lib.x import y`), and those reached through attributes of an imported module
  (`lib.saliency.registry`, `metrics.audit` after `from lib import metrics`): `lib` imports its
  submodules lazily on first attribute access, so an attribute chain is an import;
* every package `__init__.py` on the way to each of them (importing `lib.a.b` runs `lib`'s and
  `lib.a`'s);
* whatever those modules import inside `lib`, to any depth, including imports inside functions
  (a conservative reading: a module depends on every `lib` module named anywhere in it);
* every file under `lib/` that is not Python (the label spaces), which any module may read.

The analysis reads source text only (`ast`, standard library): it runs before the venv exists
and costs a fraction of a second.  Output: one rule per notebook,
`book/sections/NN_x.ipynb: lib/a.py lib/b.py ...`, written only when it changes.

Usage: python3 scripts/notebook_deps.py --out build/notebook-deps.mk notebooks/*.ipynb
       python3 scripts/notebook_deps.py --show notebooks/07_practitioners_audit.ipynb
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "lib"
DOTTED = re.compile(rf"^{PACKAGE}(\.[A-Za-z_][A-Za-z0-9_]*)+$")  # "lib.x.y", as importlib.import_module takes it


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The source file of a dotted module name under ``root`` (a package's ``__init__.py``)."""
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def is_package(module: str, root: Path = ROOT) -> bool:
    return (root.joinpath(*module.split(".")) / "__init__.py").is_file()


def _resolve_relative(current: str, is_pkg: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside module ``current``."""
    parts = current.split(".")
    if not is_pkg:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([target] if target else []))


def _attribute_chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None for anything else (calls, subscripts at the root)."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(names)]
    return None


def _deepest_module(module: str, attributes: list[str], root: Path) -> str:
    """Follow ``module.attr.attr...`` while each step is a submodule; the last one reached."""
    for attribute in attributes:
        candidate = f"{module}.{attribute}"
        if module_file(candidate, root) is None:
            break
        module = candidate
    return module


def _package_all(package: str, root: Path) -> list[str]:
    """The names in a package's ``__all__`` (read from its ``__init__.py``), for ``from package import *``."""
    path = module_file(package, root)
    if path is None or path.name != "__init__.py":
        return []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return [n for n in ast.literal_eval(node.value) if isinstance(n, str)]
            except ValueError:
                return []
    return []


def modules_used(tree: ast.AST, current: str | None = None, current_is_package: bool = False,
                 root: Path = ROOT) -> set[str]:
    """The ``lib`` modules a piece of code imports or reaches: import statements, attribute chains
    of a bound module (also through a plain ``name = module`` assignment and ``getattr(module,
    "name")``), and string constants naming a ``lib`` module (``importlib.import_module("lib.x")``)."""
    used: set[str] = set()
    bound: dict[str, str] = {}  # local name -> lib module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value):
            used.add(_deepest_module(PACKAGE, node.value.split(".")[1:], root))
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    used.add(alias.name)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[alias.name.split(".")[0]] = PACKAGE
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if current is None:
                    continue
                base = _resolve_relative(current, current_is_package, node.level, node.module)
            else:
                base = node.module or ""
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            used.add(base)
            names = [ast.alias(name=n) for n in _package_all(base, root)] if any(a.name == "*" for a in node.names) else node.names
            for alias in names:
                candidate = f"{base}.{alias.name}"
                if module_file(candidate, root) is not None:
                    used.add(candidate)
                    bound[alias.asname or alias.name] = candidate
    for _ in range(3):  # plain assignments of a bound module (m = lib.metrics), a few levels deep
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                chain = _attribute_chain(node.value)
                if chain and chain[0] in bound:
                    bound.setdefault(node.targets[0].id, _deepest_module(bound[chain[0]], chain[1:], root))
    for node in ast.walk(tree):
        chain = _attribute_chain(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in bound:
            used.add(_deepest_module(bound[chain[0]], chain[1:], root))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            chain = _attribute_chain(node.args[0])
            if chain and chain[0] in bound:
                used.add(_deepest_module(bound[chain[0]], [*chain[1:], node.args[1].value], root))
    return {m for m in used if module_file(m, root) is not None}


def with_parents(module: str) -> set[str]:
    """``lib.a.b`` -> {lib, lib.a, lib.a.b}: importing a module runs every package above it."""
    parts = module.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


@functools.lru_cache(maxsize=None)
def _module_imports(module: str, root: Path) -> frozenset[str]:
    """The lib modules one module's source uses (each file parsed once per run)."""
    path = module_file(module, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return frozenset(modules_used(tree, module, is_package(module, root), root))


def closure(modules: set[str], root: Path = ROOT) -> set[str]:
    """Every ``lib`` module the given ones import, to any depth, packages above them included."""
    seen: set[str] = set()
    todo = [p for m in modules for p in with_parents(m)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for found in _module_imports(module, root):
            todo.extend(p for p in with_parents(found) if p not in seen)
    return seen


#: Magics whose argument is Python that IPython runs (``%time lib.x.f()``, ``%%timeit`` cells).
CODE_MAGICS = ("time", "timeit", "prun", "debug", "capture")


def _python_line(line: str) -> str:
    """One cell line as Python: a code-running line magic becomes its code, any other magic,
    shell escape or help request ``pass`` at the same indentation (line numbers unchanged)."""
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if stripped.startswith("%") and not stripped.startswith("%%"):
        name, _, rest = stripped[1:].partition(" ")
        if name in CODE_MAGICS:
            words = rest.split()
            while words and words[0].startswith("-"):  # options such as -n 10 -r 3
                words = words[2:] if len(words) > 1 and not words[1].startswith("-") and words[0] in ("-n", "-r") else words[1:]
            return indent + (" ".join(words) or "pass")
        return indent + "pass"
    if stripped.startswith("!") or (stripped.endswith("?") and not stripped.startswith("#")) or "= !" in stripped:
        return indent + "pass"
    return line


def _cell_code(source: str) -> str | None:
    """A code cell's source as Python, or None for a cell run by a non-Python cell magic (%%bash)."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        name = lines[0].lstrip()[2:].split(" ")[0]
        if name not in CODE_MAGICS:
            return None
        lines = ["pass", *lines[1:]]
    # Shell escapes and help requests first, line magics only if the cell still is not Python: a line
    # starting with % may be the continuation of an expression (x = (10\n % 3)).
    for magics in (False, True):
        code = "\n".join(_python_line(line) if magics or not line.lstrip().startswith("%") else line for line in lines)
        try:
            ast.parse(code)
            return code
        except SyntaxError:
            pass
    return code


def notebook_code(path: Path) -> ast.Module:
    """The code cells of a notebook as one module (magics as in :func:`_python_line`).

    Raises:
        SystemExit: a file that is not a notebook (not JSON, no list of cells) or a cell that is
            not Python, naming the file, the cell and the line.
    """
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = notebook["cells"]
        if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
            raise TypeError("cells is not a list of objects")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"notebook_deps: {path} is not a readable notebook ({type(error).__name__}: {error})") from None
    body = []
    for number, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source") or ""
        source = source if isinstance(source, str) else "".join(str(part) for part in source)
        code = _cell_code(source)
        if code is None:
            continue
        try:
            body.extend(ast.parse(code).body)
        except SyntaxError as error:
            raise SystemExit(f"notebook_deps: {path}, cell {number} (a code cell): {error.msg} (line {error.lineno} "
                             "of the cell)") from None
    return ast.Module(body=body, type_ignores=[])


def data_files(root: Path = ROOT) -> list[Path]:
    """Files under lib/ that are not Python sources (read by some module at run time)."""
    return sorted(p for p in (root / PACKAGE).rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)


def dependencies(notebook: Path, root: Path = ROOT) -> list[Path]:
    """The lib files (sources and data) the notebook's executed copy depends on, sorted."""
    modules = closure(modules_used(notebook_code(notebook), root=root), root)
    return sorted({module_file(m, root) for m in modules} | set(data_files(root)))


def rules(notebooks: list[Path], root: Path = ROOT) -> str:
    lines = ["# Generated by scripts/notebook_deps.py: which lib files each executed notebook depends on.", ""]
    for notebook in notebooks:
        target = Path("book/sections") / notebook.name
        files = " ".join(str(p.relative_to(root)) for p in dependencies(notebook, root))
        lines.append(f"{target}: {files}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="the make fragment to write (rewritten only when it changes)")
    parser.add_argument("--show", action="store_true", help="print each notebook's lib files")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        print(f"notebook_deps: no such notebook (a file is needed): {', '.join(missing)}", file=sys.stderr)
        return 2
    notebooks = [p.resolve() for p in args.notebooks]
    if args.show:
        for notebook in notebooks:
            files = dependencies(notebook)
            print(f"{notebook.name}: {len(files)} lib files")
            for path in files:
                print(f"  {path.relative_to(ROOT)}")
    if args.out and (args.out.is_dir() or any(p.exists() and not p.is_dir() for p in args.out.parents)):
        print(f"notebook_deps: --out {args.out} must be a file path in a folder", file=sys.stderr)
        return 2
    if args.out:
        text = rules(notebooks)
        if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            temporary = args.out.with_suffix(".tmp")
            temporary.write_text(text, encoding="utf-8")
            temporary.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
