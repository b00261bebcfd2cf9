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
import math
import os
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
        The path of ``run.json``, written whole (through a temporary file) or not at all.

    Raises:
        TypeError, ValueError: ``order`` not a whole number >= 0, ``seconds`` not a finite
            number >= 0, ``ok`` not a bool, names or label not strings.
    """
    for what, text in (("notebook", notebook), ("parameter", parameter), ("label", label), ("profile", profile)):
        if not isinstance(text, str) or not text:
            raise TypeError(f"record: {what} must be a non-empty string, got {text!r}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"record: order must be the run's place in the sweep, an integer >= 0, got {order!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"record: seconds must be a finite wall time >= 0, got {seconds!r}")
    if not isinstance(ok, bool):
        raise TypeError(f"record: ok must be True or False (whether the notebook ran to the end), got {ok!r}")
    if not isinstance(parameters, dict):
        raise TypeError(f"record: parameters must be a dict of the injected parameters, got {type(parameters).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "notebook": notebook, "parameter": parameter, "value": value, "label": label, "order": int(order),
        "profile": profile, "parameters": parameters, "git_commit": provenance.git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - seconds)),
        "seconds": round(float(seconds), 1), "status": "ok" if ok else "failed", "error": error,
    }
    target = folder / RUN_FILE
    text = json.dumps(data, indent=1, default=str)
    partial = folder / f".{RUN_FILE}.partial"
    try:
        partial.write_text(text)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


_KEYS = ("notebook", "parameter", "value", "label", "order", "status")


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a run record of scripts/sweep.py (not JSON: {exc}); delete the folder or re-run "
                         "the sweep") from None
    missing = [key for key in _KEYS if not isinstance(data, dict) or key not in data]
    if missing or isinstance(data["order"], bool) or not isinstance(data["order"], int):
        raise ValueError(f"{path} is not a run record of scripts/sweep.py (missing or bad keys: "
                         f"{', '.join(missing) or 'order'}); delete the folder or re-run the sweep")
    return data


def load(folder: Path) -> dict:
    """A run's record (``run.json``) with its ``claims``, a list of :class:`lib.claims.Claim`.

    Raises:
        FileNotFoundError: the folder holds no ``run.json`` (it is not a run of ``scripts/sweep.py``).
        ValueError: a ``run.json`` or a claims file that cannot be read (corrupt, or not a run's).
    """
    folder = Path(folder)
    path = folder / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no {RUN_FILE}: not a run of scripts/sweep.py")
    data = _read_record(path)
    claims_folder = folder / "claims"
    try:
        data["claims"] = _claims.load_all(claims_folder) if claims_folder.is_dir() else []
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the claims of the run in {folder} cannot be read ({type(exc).__name__}: {exc})") from None
    return data


def runs(sweep: Path) -> list[Path]:
    """The run folders of one sweep (``build/interactive/sweeps/<notebook>/``), in the sweep's order.

    Raises:
        FileNotFoundError: no run folder under ``sweep``.
        ValueError: a run's ``run.json`` cannot be read.
    """
    sweep = Path(sweep)
    found = [p.parent for p in sweep.glob(f"*/{RUN_FILE}")]
    if not found:
        raise FileNotFoundError(f"no runs under {sweep} (folders holding {RUN_FILE}); run scripts/sweep.py first")
    return sorted(found, key=lambda p: (_read_record(p / RUN_FILE)["order"], p.name))


def compare(runs_or_sweep: Sequence[Path] | Path):
    """The runs' claims side by side: one row per claim, for each value its verdict, our value and n.

    Args:
        runs_or_sweep: run folders in the order to show them, one sweep folder (all its
            runs, in the sweep's order, see :func:`runs`), or one run folder.

    Returns:
        A ``pandas.DataFrame`` indexed by (section, claim), with columns (``parameter=value``,
        field) for each run and each of :data:`FIELDS`. A claim one run did not make is
        blank there; a run that failed shows ``run failed`` as the verdict of every claim.

    Raises:
        ValueError: no runs, runs of different parameters, or two runs of the same value.
        TypeError: neither a folder nor a list of folders.
    """
    import pandas as pd

    if isinstance(runs_or_sweep, (str, os.PathLike)):
        one = Path(runs_or_sweep)
        folders = [one] if (one / RUN_FILE).is_file() else runs(one)
    elif isinstance(runs_or_sweep, Sequence) and all(isinstance(f, (str, os.PathLike)) for f in runs_or_sweep):
        folders = [Path(f) for f in runs_or_sweep]
    else:
        raise TypeError(f"compare: expected a sweep folder or a list of run folders, got {type(runs_or_sweep).__name__}")
    if not folders:
        raise ValueError("compare: no runs given")
    records = [load(f) for f in folders]
    swept = sorted({str(r["parameter"]) for r in records})
    if len(swept) != 1:
        raise ValueError(f"compare: runs of different parameters ({', '.join(swept)}); compare one sweep at a time")

    columns = [f"{r['parameter']}={r['label']}" for r in records]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        twice = [str(f) for f, c in zip(folders, columns) if c in repeated]
        raise ValueError(f"compare: {', '.join(repeated)} is the value of more than one run ({', '.join(twice)}); "
                         "compare each value once")
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
