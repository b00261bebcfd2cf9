#!/usr/bin/env python3
"""Render executed notebooks into the HTML book, replacing the old HTML only on success.

    python scripts/build_book.py --out book/_build/html book/sections/00_a.ipynb book/sections/01_b.ipynb

Jupyter Book only renders here: the notebooks were executed beforehand by
`scripts/execute_notebook.py` (`execute_notebooks: "off"` in `book/_config.yml`).

1. A staging source tree is assembled in a fresh directory beside OUT: every file of
   `book/` (except `_build/`, `sections/` and hidden files) plus the given executed
   notebooks under `sections/`.
2. Its `_toc.yml` is generated: root `intro`, one chapter `sections/NN_slug` per notebook
   in the order given (the Makefile passes them sorted), then `references` if
   `book/references.md` exists. There is no hand-written `_toc.yml`: dropping a notebook
   into `notebooks/` is enough to give it a chapter.
3. `jupyter-book build -W --keep-going` builds it: any Sphinx warning fails the build.
   Before that, a claims file beside the given notebooks (`<folder>/claims/<stem>.json`) whose
   notebook is neither given nor in `notebooks/` any more is removed, with a line saying so:
   the claims page, the introduction and the README count only the chapters that exist.
4. On success the new HTML is moved onto OUT (the old one is moved aside first and then
   deleted: two renames on one filesystem). On failure OUT is left untouched, so the last
   good book stays, and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"
NOTEBOOKS = REPO / "notebooks"
SKIP = {"_build", "sections", "_toc.yml"}


def stage_sources(src: Path, notebooks: list[Path]) -> None:
    src.mkdir(parents=True)
    for item in sorted(BOOK.iterdir()):
        if item.name in SKIP or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, src / item.name)
        else:
            shutil.copy2(item, src / item.name)
    (src / "sections").mkdir()
    for nb in notebooks:
        shutil.copy2(nb, src / "sections" / nb.name)
    stage_mathjax(src / "_static" / "mathjax")
    has_claims = write_claims_page(src, notebooks)
    write_findings(src / "intro.md", notebooks)
    write_api_page(src)
    (src / "_toc.yml").write_text(toc(notebooks, has_references=(BOOK / "references.md").is_file(), has_claims=has_claims))


def stage_mathjax(target: Path) -> None:
    """MathJax 3 from the django-static-mathjax wheel, so pages with math need no CDN."""
    import mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", target / "tex-chtml.js")
    shutil.copytree(es5 / "output" / "chtml" / "fonts" / "woff-v2", target / "output" / "chtml" / "fonts" / "woff-v2")


def repair_pages(html_root: Path) -> None:
    """Fix what Jupyter Book 1's templates get wrong in every page (found by ``make check-book``),
    and link every figure to its full-size PNG (:func:`link_full_size`).

    Repeated <script> tags are dropped (the first copy is kept), and the colour mode falls
    back to "light" instead of "" (sphinx-book-theme has no ``default_mode`` option, so
    pydata-sphinx-theme logs "Got invalid theme mode" on a reader's first visit).

    Jupyter Book 1 writes sphinx-thebe's inline ``const THEBE_JS_URL`` script twice (a
    "has already been declared" error in every browser) and, with a local ``mathjax_path``,
    MathJax twice (MathJax 3 then fails on its second start).
    """
    source = re.compile(r'<script[^>]*\ssrc="([^"?]+)')
    for page in html_root.rglob("*.html"):
        original = page.read_text()
        seen, kept = set(), []
        for line in original.split("\n"):
            match = source.search(line)
            key = match.group(1) if match else (line.strip() if "const THEBE_JS_URL" in line else None)
            if key is not None and key in seen:
                continue
            if key is not None:
                seen.add(key)
            kept.append(line)
        text = "\n".join(kept).replace('localStorage.getItem("mode") || ""', 'localStorage.getItem("mode") || "light"')
        text = link_full_size(text)
        if text != original:
            page.write_text(text)


FIGURE = re.compile(r'(<a\b[^>]*>\s*)?(<img\b[^>]*\bsrc="([^"]*_images/[^"]+\.png)"[^>]*>)')


def link_full_size(page: str) -> str:
    """Each figure's <img> wrapped in a link to its PNG, so a reader can open it at full size
    (the text column shows a wide figure at 768 px); an image already inside a link is left."""
    def wrap(match: re.Match) -> str:
        if match.group(1):
            return match.group(0)
        return f'<a class="full-size" href="{match.group(3)}" title="open the figure at full size">{match.group(2)}</a>'

    return FIGURE.sub(wrap, page)


def write_claims_page(src: Path, notebooks: list[Path]) -> bool:
    """claims.md from the verdicts the executed sections saved beside them (lib.claims)."""
    sys.path.insert(0, str(REPO))
    from lib import claims

    found = readme_script().saved_claims(notebooks)
    if found:
        labels = set().union(*(claims.figure_labels(nb) for nb in notebooks))
        (src / "claims.md").write_text(claims.markdown(found, labels, {nb.stem: chapter_title(nb) for nb in notebooks}))
    return bool(found)


def remove_stray_claims(notebooks: list[Path], source: Path = NOTEBOOKS) -> list[Path]:
    """Remove the claims files of deleted notebooks from the claims folders of the given ones.

    Args:
        notebooks: the executed notebooks of this build; their claims stay.
        source: the source notebooks (default ``notebooks/``); a claims file of one of them stays.

    Returns:
        The removed files (each announced in one line).
    """
    readme = readme_script()
    keep = {Path(nb).stem for nb in notebooks}
    removed = []
    for folder in dict.fromkeys(Path(nb).parent / "claims" for nb in notebooks):
        for path in readme.stray_claims(folder, source, keep):
            path.unlink(missing_ok=True)
            removed.append(path)
            print(f"removed {os.path.relpath(path)}: {source.name}/{path.stem}.ipynb no longer exists", flush=True)
    return removed


def chapter_title(notebook: Path) -> str:
    """The text of a notebook's first level-1 heading (its chapter's title), or ""."""
    import json

    for cell in json.loads(notebook.read_text(encoding="utf-8")).get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", [])).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


FINDINGS = "<!-- findings -->"


def readme_script():
    """``scripts/update_readme.py`` as a module: the README headline and the introduction share its text."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_findings(intro: Path, notebooks: list[Path]) -> None:
    """Replace the introduction's ``<!-- findings -->`` marker with what this build finds (the
    README's headline, ``scripts/update_readme.py``), or with a line saying no section saved claims."""
    text = intro.read_text()
    if FINDINGS not in text:
        return
    found = readme_script().findings(notebooks[0].parent, notebooks) if notebooks else None
    body = found if found else "No section of this build saved claims."
    intro.write_text(text.replace(FINDINGS, "## What this build finds\n\n" + body))


def public_modules() -> list[str]:
    """Every importable module of ``lib`` whose dotted name has no part starting with ``_``."""
    import pkgutil

    sys.path.insert(0, str(REPO))
    import lib

    names = ["lib"] + [m.name for m in pkgutil.walk_packages(lib.__path__, "lib.")]
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def write_api_page(src: Path) -> None:
    """api.md: the reference of every public module of ``lib``, rendered from its docstrings
    (Sphinx autodoc with napoleon for the Args/Returns/Raises sections), after the index from
    equations to functions that the method registry renders (when it offers one)."""
    lines = [
        "# API reference",
        "",
        "Generated by `scripts/build_book.py` from the docstrings of `lib/` at build time: every public module,",
        "in alphabetical order. Each docstring gives the paper and the equation first, then its arguments.",
        "",
    ]
    try:
        from lib.saliency import registry
    except ImportError:
        registry = None
    if registry is not None and hasattr(registry, "equation_index"):
        lines += ["## From an equation to its code", "", registry.equation_index(), ""]
    import importlib

    for name in public_modules():
        package = hasattr(importlib.import_module(name), "__path__")  # its members are documented in their modules
        lines += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", *([] if package else ["   :members:"]), "```", ""]
    (src / "api.md").write_text("\n".join(lines))


def toc(notebooks: list[Path], has_references: bool, has_claims: bool = False) -> str:
    lines = [
        "# Generated by scripts/build_book.py from the list of notebooks; do not edit.",
        "format: jb-book",
        "root: intro",
    ]
    chapters = ["architecture"] if (BOOK / "architecture.md").is_file() else []
    chapters += [f"sections/{nb.stem}" for nb in notebooks]
    if has_claims:
        chapters.append("claims")
    chapters.append("api")
    if has_references:
        chapters.append("references")
    if chapters:
        lines.append("chapters:")
        lines += [f"  - file: {c}" for c in chapters]
    return "\n".join(lines) + "\n"


def swap_in(new: Path, out: Path, stage: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    old = stage / "previous-html"
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="executed notebooks, in chapter order")
    parser.add_argument("--out", type=Path, required=True, help="where the HTML goes (e.g. book/_build/html)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress, not only its warnings")
    args = parser.parse_args(argv)

    notebooks = [nb.resolve() for nb in args.notebooks]
    missing = [str(nb) for nb in notebooks if not nb.is_file()]
    if missing:
        print(f"error: executed notebook(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    remove_stray_claims(notebooks)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=out.parent))
    try:
        src = stage / "src"
        stage_sources(src, notebooks)
        jb = Path(sys.executable).with_name("jupyter-book")
        cmd = [str(jb), "build", str(src), "--path-output", str(stage), "--builder", "html", "-W", "--keep-going"]
        if not args.verbose:
            cmd.append("-q")
        print(f"building the book from {len(notebooks)} notebook(s) ...", flush=True)
        result = subprocess.run(cmd, cwd=stage)
        html = stage / "_build" / "html"
        if result.returncode != 0 or not (html / "index.html").is_file():
            where = os.path.relpath(out)
            kept = f"; the previous HTML in {where} is unchanged" if out.exists() else ""
            print(
                f"error: jupyter-book build failed (exit {result.returncode}; warnings are errors){kept}",
                file=sys.stderr,
            )
            return 1
        repair_pages(html)
        swap_in(html, out, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"built the book in {time.monotonic() - start:.1f} s: {out / 'index.html'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
