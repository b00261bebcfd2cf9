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
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "lib"


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


def modules_used(tree: ast.AST, current: str | None = None, current_is_package: bool = False,
                 root: Path = ROOT) -> set[str]:
    """The ``lib`` modules a piece of code imports or reaches through attribute chains."""
    used: set[str] = set()
    bound: dict[str, str] = {}  # local name -> lib module it is bound to
    for node in ast.walk(tree):
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
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if module_file(candidate, root) is not None:
                    used.add(candidate)
                    bound[alias.asname or alias.name] = candidate
    for node in ast.walk(tree):
        chain = _attribute_chain(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in bound:
            used.add(_deepest_module(bound[chain[0]], chain[1:], root))
    return {m for m in used if module_file(m, root) is not None}


def with_parents(module: str) -> set[str]:
    """``lib.a.b`` -> {lib, lib.a, lib.a.b}: importing a module runs every package above it."""
    parts = module.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def closure(modules: set[str], root: Path = ROOT) -> set[str]:
    """Every ``lib`` module the given ones import, to any depth, packages above them included."""
    seen: set[str] = set()
    todo = [p for m in modules for p in with_parents(m)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for found in modules_used(tree, module, is_package(module, root), root):
            todo.extend(p for p in with_parents(found) if p not in seen)
    return seen


def notebook_code(path: Path) -> ast.Module:
    """The code cells of a notebook as one module (IPython's %magics and !shell lines dropped)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    body = []
    for number, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            body.extend(ast.parse("\n".join(lines)).body)
        except SyntaxError as error:
            raise SystemExit(f"notebook_deps: {path}, code cell {number}: {error.msg} (line {error.lineno})") from None
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
        print(f"notebook_deps: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    notebooks = [p.resolve() for p in args.notebooks]
    if args.show:
        for notebook in notebooks:
            files = dependencies(notebook)
            print(f"{notebook.name}: {len(files)} lib files")
            for path in files:
                print(f"  {path.relative_to(ROOT)}")
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
