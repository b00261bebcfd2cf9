"""Parameter sweeps of a chapter: the record each run leaves, and the runs' claims side by side.

``scripts/sweep.py`` (``make sweep``) executes one chapter once per value of one parameter, each
run into its own scratch folder ``build/interactive/sweeps/<notebook>/<parameter>=<value>/``:

- ``<notebook>.ipynb``, the executed copy, whose provenance box names the sweep and its value;
- ``claims/<notebook>.json``, the claims it saved (:mod:`lib.claims`);
- ``run.json``, written by :func:`record`: the notebook, the swept parameter and its value, the
  profile, every injected parameter, the commit, the start time, the wall time and whether the run
  succeeded.

:func:`compare` reads runs back into one table, one row per claim and, for each value, the
claim's verdict, our value and its number of units. Nothing here writes into the book.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from . import claims as _claims
from . import provenance

__all__ = ["RUN_FILE", "FIELDS", "record", "load", "runs", "compare"]

RUN_FILE = "run.json"
"""The name of a run's record inside its folder."""
FIELDS = ("verdict", "our value", "n")
"""The columns :func:`compare` shows for each value."""


def record(folder: Path, *, notebook: str, parameter: str, value, label: str, order: int, profile: str,
           parameters: dict, seconds: float, ok: bool, error: str = "") -> Path:
    """Write a run's ``run.json`` into its folder.

    Args:
        folder: the run's folder (created if missing).
        notebook: the chapter's stem, ``NN_slug``.
        parameter, value: the swept parameter and the value this run gave it.
        label: the value as it was typed (names the folder and the table's column).
        order: the run's place in the sweep, from 0.
        profile: the profile whose values the other parameters took.
        parameters: every parameter injected into the notebook.
        seconds: the run's wall time.
        ok: whether the notebook ran to the end.
        error: the failure in one line, when it did not.

    Returns:
        The path of ``run.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "notebook": notebook, "parameter": parameter, "value": value, "label": label, "order": int(order),
        "profile": profile, "parameters": parameters, "git_commit": provenance.git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - seconds)),
        "seconds": round(float(seconds), 1), "status": "ok" if ok else "failed", "error": error,
    }
    target = folder / RUN_FILE
    target.write_text(json.dumps(data, indent=1, default=str))
    return target


def load(folder: Path) -> dict:
    """A run's record (``run.json``) with its ``claims``, a list of :class:`lib.claims.Claim`.

    Raises:
        FileNotFoundError: the folder holds no ``run.json`` (it is not a run of ``scripts/sweep.py``).
    """
    folder = Path(folder)
    path = folder / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no {RUN_FILE}: not a run of scripts/sweep.py")
    data = json.loads(path.read_text())
    claims_folder = folder / "claims"
    data["claims"] = _claims.load_all(claims_folder) if claims_folder.is_dir() else []
    return data


def runs(sweep: Path) -> list[Path]:
    """The run folders of one sweep (``build/interactive/sweeps/<notebook>/``), in the sweep's order.

    Raises:
        FileNotFoundError: no run folder under ``sweep``.
    """
    sweep = Path(sweep)
    found = [p.parent for p in sweep.glob(f"*/{RUN_FILE}")]
    if not found:
        raise FileNotFoundError(f"no runs under {sweep} (folders holding {RUN_FILE}); run scripts/sweep.py first")
    return sorted(found, key=lambda p: (json.loads((p / RUN_FILE).read_text()).get("order", 0), p.name))


def compare(runs_or_sweep: Sequence[Path] | Path):
    """The runs' claims side by side: one row per claim, for each value its verdict, our value and n.

    Args:
        runs_or_sweep: run folders in the order to show them, or one sweep folder (all its
            runs, in the sweep's order, see :func:`runs`).

    Returns:
        A ``pandas.DataFrame`` indexed by (section, claim), with columns (``parameter=value``,
        field) for each run and each of :data:`FIELDS`. A claim one run did not make is
        blank there; a run that failed shows ``run failed`` as the verdict of every claim.

    Raises:
        ValueError: no runs, or runs of different parameters.
    """
    import pandas as pd

    if isinstance(runs_or_sweep, (str, Path)):
        folders = runs(Path(runs_or_sweep))
    else:
        folders = [Path(f) for f in runs_or_sweep]
    if not folders:
        raise ValueError("compare: no runs given")
    records = [load(f) for f in folders]
    swept = sorted({r["parameter"] for r in records})
    if len(swept) != 1:
        raise ValueError(f"compare: runs of different parameters ({', '.join(swept)}); compare one sweep at a time")

    columns = [f"{r['parameter']}={r['label']}" for r in records]
    rows: dict[tuple[str, str], dict] = {}
    for column, run in zip(columns, records):
        for claim in run["claims"]:
            row = rows.setdefault((claim.section, claim.claim), {})
            row[(column, "verdict")] = claim.shown_verdict
            row[(column, "our value")] = claim.our_value
            row[(column, "n")] = claim.n
    for column, run in zip(columns, records):
        if run["status"] != "ok":
            if not rows:
                rows[(run["notebook"], "(no claims)")] = {}
            for row in rows.values():
                row[(column, "verdict")] = "run failed"
    index = pd.MultiIndex.from_tuples(list(rows), names=["section", "claim"])
    frame = pd.DataFrame(list(rows.values()), index=index)
    frame = frame.reindex(columns=pd.MultiIndex.from_product([columns, list(FIELDS)]))
    return frame.astype(object).where(frame.notna(), "")
