#!/usr/bin/env python3
"""Create a new chapter, `notebooks/NN_slug.ipynb`, from the minimal template.

    python scripts/new_chapter.py deletion_game [--title "The deletion game"]   # make chapter NAME=deletion_game

NN is the next free chapter number (one more than the highest in the folder). The template,
`scripts/templates/chapter.ipynb`, is a chapter that runs and builds as it is: the parameters
cell (holding the quick profile's values), the provenance cell, one labelled figure
(`fig-<slug>-maps`, with hyphens) and one claim stated with `lib.claims.Section`, the verdict
protocol. The new chapter needs nothing else: the book's table of contents, the claims page
and `make test` find it by its file name, and a profile that does not name it runs it with the
values of its parameters cell (`params/<profile>.yaml` lists only what a profile changes).

The notebook is written without outputs, ready to commit. The script refuses a slug that is
not lower-case letters, digits and underscores (starting with a letter, at most 64), a slug
that an existing chapter already has, a title on more than one line, and a folder with
chapter 99.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "scripts" / "templates" / "chapter.ipynb"
SLUG = re.compile(r"[a-z][a-z0-9_]*")
SLUG_LENGTH = 64
"""The longest slug: a file name, a figure label and a claims file are made of it."""
CHAPTER = re.compile(r"(\d\d)_([a-z0-9_]+)\.ipynb")


class UsageError(Exception):
    """A slug or folder the script cannot use, reported in one line."""


def next_number(notebooks: Path) -> int:
    """One more than the highest `NN` of `notebooks/NN_slug.ipynb` (0 in an empty folder)."""
    numbers = [int(m.group(1)) for p in notebooks.glob("*.ipynb") if (m := CHAPTER.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def render(section: str, title: str, slug: str) -> str:
    """The template's JSON text with its placeholders filled (section stem, title, figure label)."""
    import json

    label = "fig-" + slug.replace("_", "-") + "-maps"
    text = TEMPLATE.read_text(encoding="utf-8")
    # Placeholders sit inside JSON strings: substitute JSON-escaped text, without the quotes.
    for placeholder, value in (("__SECTION__", section), ("__TITLE__", title), ("__LABEL__", label)):
        text = text.replace(placeholder, json.dumps(value)[1:-1])
    return text


def new_chapter(slug: str, notebooks: Path, title: str | None = None) -> Path:
    """Write `notebooks/NN_<slug>.ipynb` from the template and return its path.

    Args:
        slug: lower-case letters, digits and underscores, starting with a letter (at most 64).
        notebooks: the chapters' folder (the repository's `notebooks/`).
        title: the chapter's heading, one line; default: the slug in words, capitalised.

    Raises:
        UsageError: a malformed slug, one an existing chapter has, a title that is empty or
            not one line, or no free number left.
    """
    import nbformat

    if not isinstance(slug, str) or not SLUG.fullmatch(slug) or len(slug) > SLUG_LENGTH:
        raise UsageError(f"slug {slug!r}: use lower-case letters, digits and underscores, starting with a letter, "
                         f"at most {SLUG_LENGTH} characters (e.g. deletion_game)")
    if title is not None and (not isinstance(title, str) or not title.strip() or any(c in title for c in "\r\n")):
        raise UsageError(f"title {title!r}: the chapter's heading is one non-empty line of text")
    if not notebooks.is_dir():
        raise UsageError(f"{notebooks} is not a folder")
    taken = [p.name for p in notebooks.glob("*.ipynb") if (m := CHAPTER.fullmatch(p.name)) and m.group(2) == slug]
    if taken:
        raise UsageError(f"slug {slug!r} is taken by {', '.join(sorted(taken))}")
    number = next_number(notebooks)
    if number > 99:
        raise UsageError(f"{notebooks} already has chapter 99; chapter numbers have two digits")
    section = f"{number:02d}_{slug}"
    target = notebooks / f"{section}.ipynb"
    nb = nbformat.reads(render(section, title or slug.replace("_", " ").capitalize(), slug), as_version=4)
    nbformat.validate(nb)
    partial = notebooks / f".{section}.ipynb.partial"  # renamed onto the target once complete
    try:
        nbformat.write(nb, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slug", help="the chapter's name in the file name, e.g. deletion_game")
    parser.add_argument("--title", help="the chapter's heading (default: the slug in words)")
    parser.add_argument("--notebooks", type=Path, default=REPO / "notebooks", help="the chapters' folder (default: notebooks/)")
    args = parser.parse_args(argv)
    try:
        target = new_chapter(args.slug, args.notebooks, args.title)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        shown = target.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = str(target)
    print(f"created {shown}: edit it with `make lab`; `make book` adds it to the book, `make test` smoke-runs it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
