#!/usr/bin/env python3
"""Check that source notebooks are committed clean (d2l's rule: outputs never slip in).

    python scripts/check_notebooks_clean.py [notebooks/*.ipynb]

A clean source notebook has
- a name `NN_slug.ipynb` (two digits, an underscore, a lower-case slug);
- no outputs and no execution counts in any code cell;
- exactly one code cell tagged `parameters` (papermill injects the profile's values after it);
- no papermill metadata and no `injected-parameters` cell (an executed copy saved over its source);
- an `id` on every cell, unique in the notebook (nbformat 4.5; a cell pasted in by hand has none).

To clean a notebook: `jupyter nbconvert --clear-output --inplace notebooks/NN_slug.ipynb`
(or "Clear All Outputs" in Jupyter before saving).
Exits 1 listing every problem, 0 when all notebooks are clean.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
CELL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # nbformat 4.5's pattern


def problems(path: Path) -> list[str]:
    """Every way `path` is not a clean source notebook (empty when it is clean)."""
    import json

    import nbformat

    found = []
    try:  # before nbformat.read, which fills in missing ids (with a warning) instead of reporting them
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return found + [f"cannot be read as a notebook: {exc}"]
    raw_cells = raw.get("cells") if isinstance(raw, dict) else None
    if not isinstance(raw_cells, list) or not all(isinstance(cell, dict) for cell in raw_cells):
        return found + ["cannot be read as a notebook: it needs a top-level object with a list of cell objects"]
    missing = [i for i, cell in enumerate(raw_cells) if not cell.get("id")]
    if missing:
        found.append(f"cells {', '.join(map(str, missing))}: no id (give each cell a unique id)")
    bad_ids = [i for i, cell in enumerate(raw_cells) if cell.get("id") and not (
        isinstance(cell["id"], str) and CELL_ID.match(cell["id"]))]
    if bad_ids:
        found.append(f"cells {', '.join(map(str, bad_ids))}: an id must be 1-64 letters, digits, '-' or '_'")
    ids = [cell["id"] for cell in raw_cells if isinstance(cell.get("id"), str)]
    if len(set(ids)) != len(ids):
        found.append(f"cell ids repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    if not NAME.match(path.name):
        found.append("name must look like NN_slug.ipynb (lower-case slug)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001
        return found + [f"cannot be read as a notebook: {exc}"]
    params = []
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags") or []
        if not isinstance(tags, list):
            found.append(f"cell {i}: its tags must be a list, got {tags!r}")
            tags = []
        if "parameters" in tags:
            params.append(i)
            if cell.cell_type != "code":
                found.append(f"cell {i}: the 'parameters' tag is on a {cell.cell_type} cell")
        if "injected-parameters" in tags:
            found.append(f"cell {i}: papermill's injected-parameters cell (an executed copy?)")
        if cell.cell_type == "code":
            if cell.get("outputs"):
                found.append(f"cell {i}: has outputs")
            if cell.get("execution_count") is not None:
                found.append(f"cell {i}: has an execution count")
    if len(params) != 1:
        found.append(f"needs exactly one cell tagged 'parameters', found {len(params)}")
    if "papermill" in nb.metadata:
        found.append("has papermill metadata (an executed copy?)")
    return found


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((REPO / "notebooks").glob("*.ipynb"))
    bad = 0
    for path in paths:
        for problem in problems(path):
            print(f"{path}: {problem}", file=sys.stderr)
            bad += 1
    if bad:
        print(
            f"error: {bad} problem(s) in source notebooks; clear outputs with "
            "`.venv/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`",
            file=sys.stderr,
        )
        return 1
    print(f"{len(paths)} source notebook(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
