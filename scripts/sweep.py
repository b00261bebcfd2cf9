#!/usr/bin/env python3
"""Execute one chapter once per value of one parameter, into scratch folders, and compare the runs.

    python scripts/sweep.py 04_groupcam_ablations groups=8,16,32 [--profile quick] [-p n_images=30]
    make sweep NOTEBOOK=04_groupcam_ablations PARAM=groups VALUES=8,16,32 [PROFILE=quick]

NOTEBOOK is a chapter's stem (`04_groupcam_ablations`), its number (`04`) or a path to a
notebook. The sweep is `NAME=V1,V2,...`; each value is read as YAML (`8`, `0.5`, `null`,
`[a, b]`, and numbers such as `1e-3`; commas inside brackets or quotes do not split; a value
given twice is refused). The other parameters take the profile's values (`--profile`,
default quick) and any `-p NAME=VALUE` given.

Every run goes through `scripts/execute_notebook.py` (papermill, the project's kernel, the
inline backend), into `build/interactive/sweeps/<notebook>/<NAME>=<value>/` (`--out` changes
the root; it may not lie in `book/` or `notebooks/`): the executed copy, its claims
(`claims/`) and `run.json` (`lib.sweeps.record`: the parameters, the commit, the wall time).
The provenance box of each copy says `sweep NAME=value`. A run folder is emptied before its run; `book/sections/` is never written
(only `make book` changes it). At the end the runs' claims are printed side by side
(`lib.sweeps.compare`). Exit status 0 when every run succeeded, 1 when one failed (the others
still run), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(REPO))

import execute_notebook  # noqa: E402  (a sibling script, not a package)

DEFAULT_OUT = REPO / "build" / "interactive" / "sweeps"


class UsageError(Exception):
    """Bad arguments, reported in one line."""


def find_notebook(name: str) -> Path:
    """The chapter named by a path, a stem (`04_groupcam_ablations`) or a number (`04`)."""
    path = Path(name)
    if path.suffix == ".ipynb":
        if not path.is_file():
            raise UsageError(f"notebook {name!r} does not exist")
        return path.resolve()
    chapters = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    matches = [p for p in chapters if p.stem == name or p.stem.split("_", 1)[0] == name]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in chapters)
        raise UsageError(f"no single chapter named {name!r}; known: {known}")
    return matches[0]


def split_values(text: str) -> list[str]:
    """`a,b,[c, d],'e, f'` -> `['a', 'b', '[c, d]', "'e, f'"]`: commas inside brackets, braces or quotes do not split."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            depth += char in "[{"
            depth -= char in "]}"
        if char == "," and depth == 0 and not quote:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if any(not v for v in values):
        raise UsageError(f"sweep values {text!r}: an empty value (expected V1,V2,...)")
    return values


def parse_sweep(text: str) -> tuple[str, list[tuple[str, object]]]:
    """`NAME=V1,V2` -> (NAME, [(label, value), ...]), each value read as YAML (`execute_notebook.read_value`).

    Raises:
        UsageError: no `=`, a name that is not an identifier, an empty value, a value that is
            not YAML, or a value given twice (`8,8`, or `null,~`: the same value twice).
    """
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier() or not values.strip():
        raise UsageError(f"sweep {text!r}: expected NAME=V1,V2,..., e.g. groups=8,16,32")
    labels = split_values(values)
    try:
        parsed = [(label, execute_notebook.read_value(label, f"sweep value of {name}")) for label in labels]
    except execute_notebook.UsageError as exc:
        raise UsageError(str(exc)) from None
    seen = {}
    for label, value in parsed:
        key = (type(value).__name__, repr(value))
        if key in seen:
            same = "" if seen[key] == label else f" (as {seen[key]!r})"
            raise UsageError(f"sweep {text!r}: the value {label!r} is repeated{same}; give each value once")
        seen[key] = label
    return name, parsed


def folder_name(parameter: str, label: str) -> str:
    """`NAME=value` with the characters a file name should not hold replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", f"{parameter}={label}")


def folder_names(parameter: str, labels: list[str]) -> list[str]:
    """:func:`folder_name` of each label, a run's order appended (`~1`) where two labels would share a folder."""
    names = [folder_name(parameter, label) for label in labels]
    taken = {name for name in names if names.count(name) == 1}
    unique = []
    for order, name in enumerate(names):
        if names.count(name) > 1:
            name = f"{name}~{order}"
            while name in taken:
                name += "~"
        taken.add(name)
        unique.append(name)
    return unique


FORBIDDEN_OUT = (REPO / "book", REPO / "notebooks")
"""Folders a sweep never writes into: the book's sources (`book/`, `book/sections/` included) and the chapters."""


def rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def as_text(table) -> str:
    """`lib.sweeps.compare`'s table for a terminal: each claim, then one aligned line per value
    (value, verdict, n, our value), so that long values do not push the columns apart."""
    values = list(dict.fromkeys(table.columns.get_level_values(0)))
    verdicts = [str(v) for v in table.xs("verdict", axis=1, level=1).to_numpy().ravel()]
    value_width, verdict_width = max(map(len, values)), max(map(len, verdicts), default=0)
    lines = []
    for (_, claim), row in table.iterrows():
        lines.append(claim)
        for value in values:
            n = f"n = {row[(value, 'n')]}" if row[(value, "n")] != "" else ""
            lines.append(f"  {value:<{value_width}}  {row[(value, 'verdict')]:<{verdict_width}}  {n:<8}  {row[(value, 'our value')]}".rstrip())
    return "\n".join(lines)


def run_one(src: Path, folder: Path, profile: str, parameter: str, label: str, value, order: int,
            fixed: dict) -> bool:
    """Execute `src` with `parameter=value` into `folder`; write its record; True on success."""
    from lib import sweeps

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    overrides = {**fixed, parameter: value}
    parameters = execute_notebook.overridden(src, execute_notebook.parameters_for(src, profile), overrides)
    before = os.environ.get("SALIENCY_RUN")
    os.environ["SALIENCY_RUN"] = (f"sweep {parameter}={label} (scripts/sweep.py, profile {profile}; "
                                  f"outputs in {rel(folder)}, not in the book)")
    start = time.monotonic()
    error = ""
    try:
        execute_notebook.execute(src, folder / src.name, profile, overrides)
    except Exception as exc:  # noqa: BLE001 - a failed value is recorded and the sweep goes on
        error = execute_notebook.one_line(exc)
    finally:
        if before is None:
            os.environ.pop("SALIENCY_RUN", None)
        else:
            os.environ["SALIENCY_RUN"] = before
    seconds = time.monotonic() - start
    sweeps.record(folder, notebook=src.stem, parameter=parameter, value=value, label=label, order=order,
                  profile=profile, parameters=parameters, seconds=seconds, ok=not error, error=error)
    status = f"failed with {error}" if error else "done"
    print(f"  {parameter}={label}: {status} in {seconds:.1f} s -> {rel(folder)}", flush=True)
    return not error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="chapter stem, number or path, e.g. 04_groupcam_ablations")
    parser.add_argument("sweep", help="NAME=V1,V2,..., e.g. groups=8,16,32")
    parser.add_argument("--profile", default="quick", help="the profile of the other parameters (default: quick)")
    parser.add_argument("-p", "--parameter", action="append", metavar="NAME=VALUE",
                        help="fix another parameter for every run (VALUE read as YAML); repeatable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="root of the sweeps (default: build/interactive/sweeps)")
    args = parser.parse_args(argv)

    try:
        src = find_notebook(args.notebook)
        parameter, values = parse_sweep(args.sweep)
        fixed = execute_notebook.parse_overrides(args.parameter)
        if parameter in fixed:
            raise UsageError(f"{parameter} is both swept and fixed with -p")
        out = args.out.resolve()
        for forbidden in FORBIDDEN_OUT:
            if out == forbidden.resolve() or forbidden.resolve() in out.parents:
                raise UsageError(f"--out {args.out} lies in {rel(forbidden)}/ (the book's sources and the chapters; "
                                 "book/sections/ is written only by `make book`); use a folder under build/")
        # Every value is checked before the first run (a typo fails in a second, not after a run).
        execute_notebook.overridden(src, execute_notebook.parameters_for(src, args.profile), {**fixed, parameter: values[0][1]})
    except (UsageError, execute_notebook.UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    sweep_folder = out / src.stem
    print(f"sweep of {src.stem}: {parameter} = {', '.join(label for label, _ in values)} [profile {args.profile}]", flush=True)
    start = time.monotonic()
    folders, ok = [], True
    names = folder_names(parameter, [label for label, _ in values])
    try:
        for order, (label, value) in enumerate(values):
            folder = sweep_folder / names[order]
            ok &= run_one(src, folder, args.profile, parameter, label, value, order, fixed)
            folders.append(folder)
    except execute_notebook.Interrupted as exc:  # SIGINT or SIGTERM: one line, the runs so far kept
        print(f"interrupted: sweep of {src.stem}, stopped at {parameter}={label}; {len(folders)} run(s) kept", file=sys.stderr)
        return exc.exit_status
    print(f"{len(values)} runs in {time.monotonic() - start:.1f} s; claims side by side (lib.sweeps.compare):\n", flush=True)

    from lib import sweeps

    print(as_text(sweeps.compare(folders)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
