#!/usr/bin/env python3
"""Execute one source notebook into an executed copy, with a profile's parameters.

    python scripts/execute_notebook.py notebooks/NN_slug.ipynb book/sections/NN_slug.ipynb --profile quick

This is the only code path that runs notebooks: `make book` calls it for each stale
notebook and `tests/test_notebooks.py` calls it with `--profile smoke`.

Each notebook's `parameters` cell holds its defaults, which are the quick profile's values;
`params/<profile>.yaml` lists only what a profile changes (`params/quick.yaml` sets nothing):

    common:            # offered to every notebook
      seed: 1
    NN_slug:           # only for notebooks/NN_slug.ipynb
      n_images: 4

A `common` key is injected only into notebooks whose `parameters` cell defines it. A key
that the target notebook does not define (or, under `common`, that no notebook defines) is
an error (it is almost surely a typo), and so is a top-level section named after no
notebook. A file with only comments, or a section left empty, changes nothing. `profile`
is always injected, so the executed copy records the profile and every value it changed.

The notebook runs with papermill on the `python3` kernel of the Python running this
script (the project's virtualenv), with the repository root as working directory and the
inline matplotlib backend (an inherited `MPLBACKEND=Agg` would silently drop figures).
It is executed into a temporary file next to DST, which is renamed onto DST only on
success; on failure the partly executed copy is kept in `build/failed/` and the script
exits with status 1 and a one-line message naming the notebook.

The section's claims (`lib.claims`) are staged beside DST and published with it, as one
file, `<DST folder>/claims/<notebook stem>.json`, that replaces the previous one whole: the
claims this run did not save are gone, and a run that saved none removes the file. A run
that fails publishes neither the notebook nor its claims: the last good pair stays. A
notebook that saved the claims of another section fails (it would overwrite that
chapter's claims).

SIGINT (Ctrl-C) and SIGTERM stop the run: the kernel is killed, the temporary copy and the
staged claims are removed, nothing is published, and the script prints one line
(`interrupted: NOTEBOOK, nothing published`) and exits with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO / "params"
FAILED_DIR = REPO / "build" / "failed"
KERNEL = "python3"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def rel(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (shorter messages)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


class UsageError(Exception):
    """A problem with the inputs (profile, parameters cell), reported in one line."""


def load_profile(profile: str) -> dict:
    import yaml

    if not isinstance(profile, str) or not profile or any(c in profile for c in "/\\\0") or profile.startswith("."):
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise UsageError(f"profile {profile!r}: name a file of params/ without its extension (known: {', '.join(known)})")
    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise UsageError(f"no profile {profile!r}: {rel(path)} does not exist (known: {', '.join(known)})")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{rel(path)}: top level must be a mapping")
    for key, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"{rel(path)}: section {key!r} must be a mapping of parameter names to values")
    return data


def parameters_for(src: Path, profile: str) -> dict:
    """The parameters to inject into `src` under `profile` (see the module docstring)."""
    import nbformat
    import papermill

    nb = nbformat.read(src, as_version=4)
    n_param_cells = sum("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
    if n_param_cells != 1:
        raise UsageError(f"{rel(src)}: needs exactly one cell tagged 'parameters', found {n_param_cells}")

    data = load_profile(profile)
    params_file = PARAMS_DIR / f"{profile}.yaml"
    stems = {p.stem for p in src.parent.glob("*.ipynb")}
    unknown_sections = sorted(k for k in data if k != "common" and k not in stems)
    if unknown_sections:
        raise UsageError(
            f"{rel(params_file)}: section(s) {', '.join(unknown_sections)} name no notebook in {rel(src.parent)}/"
        )

    defined = set(papermill.inspect_notebook(str(src)))
    common = data.get("common") or {}
    notebooks = src.parent.glob("*.ipynb") if common else []
    defined_anywhere = set().union(*(papermill.inspect_notebook(str(nb)) for nb in notebooks))
    undefined_common = sorted(k for k in common if k not in defined_anywhere)
    if undefined_common:
        raise UsageError(
            f"{rel(params_file)}: key(s) {', '.join(undefined_common)} under 'common' are not defined "
            f"in the parameters cell of any notebook in {rel(src.parent)}/"
        )
    own = data.get(src.stem) or {}
    undefined = sorted(k for k in own if k not in defined)
    if undefined:
        raise UsageError(
            f"{rel(params_file)}: key(s) {', '.join(undefined)} under {src.stem!r} are not defined "
            f"in the parameters cell of {rel(src)}"
        )
    params = {k: v for k, v in common.items() if k in defined}
    params.update(own)
    params["profile"] = profile
    return params


def kernel_environment() -> None:
    """Make the kernel that papermill starts see a clean, explicit environment."""
    venv_share = Path(sys.prefix) / "share" / "jupyter"
    # The venv's kernelspec before any user-level `python3` kernelspec.
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(venv_share)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    )
    # Inline backend, whatever the caller's MPLBACKEND or matplotlibrc says.
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    # ipykernel's debugger otherwise prints a "frozen modules" warning on every start.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # Marks a scripted run (lib.provenance.run_kind): "build" unless the caller named it
    # (scripts/sweep.py: "sweep ..."). A kernel without it is an interactive run.
    os.environ["SALIENCY_RUN"] = os.environ.get("SALIENCY_RUN", "").strip() or "build"


def overridden(src: Path, params: dict, overrides: dict | None) -> dict:
    """`params` with `overrides` (``--parameter``, a sweep's value) on top; each override must
    be defined in the parameters cell of `src`, and `profile` cannot be overridden."""
    if not overrides:
        return params
    import papermill

    defined = set(papermill.inspect_notebook(str(src)))
    wrong = sorted(k for k in overrides if k not in defined or k == "profile")
    if wrong:
        accepted = ", ".join(sorted(defined - {"profile"}))
        raise UsageError(f"override(s) {', '.join(wrong)} are not parameters of {rel(src)}; accepted: {accepted}")
    return {**params, **overrides}


NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
"""A number as Python writes it; YAML 1.1 reads ``1e3`` and ``08`` as strings, so they are read here."""


def read_value(text: str, what: str):
    """One VALUE as YAML (``8``, ``0.5``, ``null``, ``[a, b]``), numbers such as ``1e-3`` and ``08`` as numbers.

    Raises:
        UsageError: empty text, or text that is not one YAML value (an unclosed bracket or quote, ``@x``).
    """
    import re

    import yaml

    if not text.strip():
        raise UsageError(f"{what}: an empty value (write null for None, '' for an empty string)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{what}: {text.strip()!r} is not a YAML value ({problem}); quote a string, "
                         "e.g. \"'a, b'\"") from None
    if isinstance(value, str) and value == text.strip() and re.fullmatch(NUMBER, value):
        value = int(value) if re.fullmatch(r"[-+]?\d+", value) else float(value)
    return value


def parse_overrides(items: list[str] | None) -> dict:
    """``NAME=VALUE`` strings into a mapping; each VALUE is read by :func:`read_value` (YAML: ``8``, ``0.5``, ``null``, ``[a, b]``).

    Raises:
        UsageError: an item without ``=`` or a name that is not an identifier, a name given
            twice, an empty VALUE or one that is not YAML.
    """
    overrides = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"--parameter {item!r}: expected NAME=VALUE, e.g. groups=16")
        if name in overrides:
            raise UsageError(f"--parameter {name} is given twice; give each parameter once")
        overrides[name] = read_value(value, f"--parameter {item!r}")
    return overrides


def collapse_redraws(text: str) -> str:
    """Each line as a terminal leaves it: the text after its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


# The toggles of collapsed cells (MyST-NB's per-cell prompt; its default reads "Show code cell source").
INJECTED_PROMPT = "Show the values the profile set (papermill injected them; they override the parameters cell above)"
CODE_PROMPT = "Show the code"
# Lines a static page should not keep: a finished progress bar (lib.progress, tqdm's ascii bar) and
# tqdm's notice, printed by peer libraries that import tqdm.auto, that no widget is available.
PROGRESS_LINE = re.compile(r"^.*\d+%\|[ #0-9]*\| *\d+/\d+ \[[^\]]*\]\s*$")
TQDM_NOTICE = re.compile(r"TqdmWarning: IProgress not found|^\s*from \.autonotebook import tqdm as notebook_tqdm\s*$")


def without_residue(text: str) -> str:
    """``text`` without progress bars and tqdm's widget notice (the run's timer prints the times)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not PROGRESS_LINE.match(line.rstrip("\n")) and not TQDM_NOTICE.search(line))


def tidy(path: Path) -> None:
    """Hide the code of every cell but the parameters cell behind a toggle (the book shows the
    narrative, the parameters, the figures, the tables and the printed results; the code is
    one click away). Consecutive stream outputs are merged, each line is collapsed to what a
    terminal would show, and finished progress bars (``lib.progress``) and tqdm's widget notice
    are dropped: a static page keeps the results, and the chapters' timers print the times."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "parameters" not in tags:
                if "hide-input" not in tags:
                    tags.append("hide-input")
                prompt = INJECTED_PROMPT if "injected-parameters" in tags else CODE_PROMPT
                cell.metadata.setdefault("mystnb", {})["code_prompt_show"] = prompt
        merged = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                if merged and merged[-1].get("output_type") == "stream" and merged[-1]["name"] == output["name"]:
                    merged[-1]["text"] += output["text"]
                    continue
            merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream":
                output["text"] = without_residue(collapse_redraws(output["text"]))
        merged = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]
        if "outputs" in cell:
            cell["outputs"] = merged
    nbformat.write(nb, path)


RUN_BOX_TAG = "run-box"
PROVENANCE_LINE = re.compile(r"^(run|git commit|device): (.*)$")


def provenance_of(nb) -> dict:
    """The run kind, commit and device the section printed (``lib.provenance.summary``), or {}."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream" or output.get("name") != "stdout":
                continue
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else str(text)
            block = re.search(r"^run: .*", text, flags=re.M | re.S)  # lib.provenance.summary, wherever it starts
            if block:
                return {m.group(1): m.group(2) for line in block.group(0).splitlines() if (m := PROVENANCE_LINE.match(line))}
    return {}


def _code(value) -> str:
    return "`" + repr(value).replace("`", "'") + "`"


def run_box(nb, *, src: Path, dst: Path, profile: str, params: dict, seconds: float, claims: list,
            overrides: dict | None = None) -> str:
    """The "This page ran on" box of a section: what ran (profile, data, model, device, commit,
    time), the values that differ from the parameters cell shown on the page, the verdicts
    with the units they rest on, and the command that reproduces the page."""
    sys.path.insert(0, str(REPO))
    from lib import paths

    seen = provenance_of(nb)
    paths.usable_data_root()  # a set but unusable $SALIENCY_DATA is an error, never "no data root"
    found = [name for name, where in (("ImageNet val", paths.imagenet_val_root()), ("COCO128", paths.coco128_root()))
             if where.is_dir()]
    data = (f"`${paths.DATA_ENV}` with {' and '.join(found)}" if found and os.environ.get(paths.DATA_ENV, "").strip()
            else f"`data/` with {' and '.join(found)}" if found else "no data root: the six embedded photographs")
    minutes, rest = divmod(round(seconds), 60)
    took = f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["```{admonition} This page ran on", f":class: note {RUN_BOX_TAG}",
             f"**Profile** `{profile}` · **data** {data} · **device** {seen.get('device', 'unknown')} · "
             f"**commit** `{seen.get('git commit', 'unknown')}` · **ran** {when} in {took}", ""]
    changed = {k: v for k, v in params.items() if k != "profile"}
    lines.append("**Values that ran instead of the parameters cell below**: "
                 + ", ".join(f"`{k}` = {_code(v)}" for k, v in changed.items()) if changed
                 else "**Parameters**: exactly the parameters cell below (the quick profile's values).")
    lines.append("")
    if claims:
        from lib import claims as claim_module

        parts = []
        for kind, verdicts in (("reproduction", claim_module.VERDICTS), ("check", claim_module.CHECK_VERDICTS)):
            chosen = [c for c in claims if c.kind == kind]
            counts = ", ".join(f"{n} {v}" for v in verdicts if (n := sum(c.verdict == v for c in chosen)))
            if chosen:
                parts.append(f"{len(chosen)} {kind}{'' if len(chosen) == 1 else 's'} ({counts})")
        tested = [c for c in claims if c.kind == "reproduction" and c.verdict != "not tested" and c.n]
        units = sorted({c.units for c in tested if c.units})
        rest_on = (f"; the tested reproductions rest on n = {min(c.n for c in tested)} to {max(c.n for c in tested)} "
                   f"({', '.join(units)})" if tested else "; no reproduction could be tested in this run")
        lines += [f"**Verdicts** ({{doc}}`/claims`): " + " and ".join(parts) + rest_on + ".", ""]
    command = ["python", "scripts/execute_notebook.py", rel(src), rel(dst), "--profile", profile]
    for name, value in (overrides or {}).items():  # JSON is YAML, which -p reads
        command += ["-p", f"{name}={json.dumps(value)}"]
    environment = f"{paths.DATA_ENV}=/path/to/data " if found and os.environ.get(paths.DATA_ENV, "").strip() else ""
    book = "make book" if profile == "quick" else f"make book PROFILE={shlex.quote(profile)}"
    every = f" (every page: `{environment}{book}`)" if not overrides else ""
    shown = " ".join(shlex.quote(part) for part in command).replace("`", "'")
    lines += [f"**Reproduce this page**: `{environment}{shown}`{every}.", "```"]
    return "\n".join(lines)


def insert_run_box(path: Path, box: str) -> None:
    """Put ``box`` right under the page's title (the first cell when it is a heading), replacing an older one."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if RUN_BOX_TAG not in c.get("metadata", {}).get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(box, metadata={"tags": [RUN_BOX_TAG]})
    first = nb.cells[0] if nb.cells else None
    titled = first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("# ")
    if titled:
        title, _, narrative = first.source.lstrip().partition("\n")
        first.source = title  # the box sits between the title and the chapter's introduction
        nb.cells[1:1] = [cell] + ([nbformat.v4.new_markdown_cell(narrative.strip("\n"))] if narrative.strip() else [])
    else:
        nb.cells.insert(0, cell)
    nbformat.write(nb, path)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a notebook ran (:func:`interruptible`).

    A KeyboardInterrupt, so that what stops on Ctrl-C (a sweep, nbclient's cleanup) stops on
    SIGTERM alike.

    Attributes:
        signum: the signal's number.
        published: True when it arrived while the run was publishing its results, which
            then completed (the signal is acted on right after).
    """

    def __init__(self, signum: int, published: bool = False):
        self.signum = signum
        self.published = published
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process that a signal stopped (130, 143)."""
        return 128 + self.signum


class PublishError(Exception):
    """A run whose results cannot be published (it saved the claims of another section)."""


class _Signals:
    """The state of SIGINT and SIGTERM during one run (see :func:`interruptible`)."""

    def __init__(self):
        self.caught: Interrupted | None = None
        self.deferring = False
        self.pending: int | None = None

    def handler(self, signum, frame) -> None:
        if self.caught is not None:  # the run is already being cleaned up: let the cleanup finish
            return
        if self.deferring:  # publishing: a half-published run would be worse than a late stop
            self.pending = signum
            return
        self.caught = Interrupted(signum)
        raise self.caught

    @contextmanager
    def deferred(self):
        """Hold SIGINT and SIGTERM until the block is done, then raise :class:`Interrupted`.

        Raises:
            Interrupted: a signal arrived during the block; ``published`` says whether the block
                completed (else it replaces the block's own error).
        """
        self.deferring = True
        completed = False
        try:
            yield
            completed = True
        finally:
            self.deferring = False
            if self.pending is not None and self.caught is None:
                self.caught = Interrupted(self.pending, published=completed)
                raise self.caught


_ACTIVE: _Signals | None = None
"""The run under way in this process, read by the kernel manager (:func:`kernel_manager_class`)."""


@contextmanager
def interruptible():
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block, once: a second signal while
    the run cleans up is ignored, so the cleanup (killing the kernel, removing the temporary
    files) is not cut short. The previous handlers are restored on the way out. Outside the
    main thread (where Python cannot install handlers) nothing changes.

    Returns:
        A context manager yielding the run's :class:`_Signals`.
    """
    global _ACTIVE
    state = _Signals()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, state.handler)
    outer, _ACTIVE = _ACTIVE, state
    try:
        yield state
    finally:
        _ACTIVE = outer
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def kernel_manager_class():
    """jupyter_client's AsyncKernelManager, except that it kills the kernel at once when the run
    was interrupted: the polite shutdown (interrupt, then a shutdown request) races the
    interrupted cell's reply in the kernel, which then prints a zmq traceback."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.manager import KernelManager

    class InterruptibleKernelManager(AsyncKernelManager):
        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            interrupted = _ACTIVE is not None and _ACTIVE.caught is not None
            await KernelManager._async_shutdown_kernel(self, now=now or interrupted, restart=restart)

    return InterruptibleKernelManager


def publish_claims(staged: Path, folder: Path, section: str) -> Path | None:
    """Publish the claims a run of notebook `section` staged, replacing its claims file whole.

    Args:
        staged: the run's staging claims folder (``$SALIENCY_SECTIONS/claims``); may not exist.
        folder: the published claims folder (``book/sections/claims``).
        section: the notebook's stem; its file is ``folder / f"{section}.json"``.

    Returns:
        The published file, or None when the run saved no claims (the old file is then removed:
        a chapter that stopped saving claims has none).

    Raises:
        PublishError: the run saved the claims of another section (named); nothing is published.
    """
    files = sorted(staged.glob("*.json")) if staged.is_dir() else []
    foreign = [p.stem for p in files if p.stem != section]
    if foreign:
        raise PublishError(f"the notebook saved the claims of section(s) {', '.join(foreign)}; a notebook saves "
                           f"only its own: claims.Section({section!r}, ...)")
    target = folder / f"{section}.json"
    if not files:
        target.unlink(missing_ok=True)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(files[0], target)  # the staged file was written whole (lib.claims.save), beside the target's folder
    return target


def execute(src: Path, dst: Path, profile: str, overrides: dict | None = None) -> None:
    """Execute `src` into `dst` with `profile`'s parameters and `overrides`, and publish its claims.

    Args:
        src: the source notebook (``notebooks/NN_slug.ipynb``).
        dst: the executed copy to write (``book/sections/NN_slug.ipynb``); its claims go to
            ``dst.parent / "claims" / f"{src.stem}.json"``.
        profile: the name of a file of ``params/``.
        overrides: values to inject over the profile's (``--parameter``).

    Raises:
        UsageError: a bad profile, parameters cell or override (nothing runs).
        Interrupted: SIGINT or SIGTERM (the temporary copy and the staged claims removed,
            nothing published unless ``published``).
        PublishError: the notebook saved another section's claims (its copy kept in ``build/failed/``).
        Exception: the notebook failed (papermill's error; its copy kept in ``build/failed/``).
    """
    import papermill
    from traitlets.config import Config

    params = overridden(src, parameters_for(src, profile), overrides)
    kernel_environment()
    dst.parent.mkdir(parents=True, exist_ok=True)
    (FAILED_DIR / dst.name).unlink(missing_ok=True)  # a copy kept from an earlier failure
    tmp = dst.parent / f".{dst.stem}.tmp-{os.getpid()}.ipynb"
    # Sections save their claims (lib.claims) into a staging folder, published beside the
    # executed notebooks only with it: a failed run leaves the last good claims in place.
    stage = dst.parent / f".{dst.stem}.stage-{os.getpid()}"
    os.environ["SALIENCY_SECTIONS"] = str(stage.resolve())
    start = time.monotonic()
    with interruptible() as signals:
        try:
            papermill.execute_notebook(
                str(src),
                str(tmp),
                parameters=params,
                kernel_name=KERNEL,
                cwd=str(REPO),
                progress_bar=False,
                log_output=False,
                start_timeout=180,
                # Killed at once when interrupted (no zmq traceback from the kernel).
                kernel_manager_class=kernel_manager_class(),
                # CurveZMQ keys for the kernel's sockets (else ipykernel warns about plain TCP).
                config=Config({"KernelManager": {"transport_encryption": "auto"}}),
            )
            tidy(tmp)
            import nbformat

            sys.path.insert(0, str(REPO))
            from lib import claims as claim_module

            section_claims = claim_module.load_all(stage / "claims") if (stage / "claims").is_dir() else []
            insert_run_box(tmp, run_box(nbformat.read(tmp, as_version=4), src=src, dst=dst, profile=profile, params=params,
                                        seconds=time.monotonic() - start, claims=section_claims, overrides=overrides))
            with signals.deferred():  # the claims and the notebook together, or neither
                publish_claims(stage / "claims", dst.parent / "claims", src.stem)
                os.replace(tmp, dst)
        except KeyboardInterrupt:  # Interrupted included: stopped on purpose, nothing to inspect
            tmp.unlink(missing_ok=True)
            raise
        except BaseException:
            if tmp.exists():
                FAILED_DIR.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, FAILED_DIR / dst.name)
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def one_line(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename:  # papermill.PapermillExecutionError
        cell = getattr(exc, "exec_count", None)
        where = f" in cell [{cell}]" if cell else ""
        evalue = str(getattr(exc, "evalue", "")).splitlines()
        return f"{ename}{where}: {evalue[0][:200] if evalue else ''}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="source notebook, notebooks/NN_slug.ipynb")
    parser.add_argument("dst", type=Path, help="executed copy to write")
    parser.add_argument("--profile", default="quick",
                        help="params/<profile>.yaml, the values that differ from the parameters cell (default: quick)")
    parser.add_argument("-p", "--parameter", action="append", metavar="NAME=VALUE",
                        help="override one parameter after the profile (VALUE read as YAML); repeatable")
    args = parser.parse_args(argv)
    src, dst = args.src.resolve(), args.dst.resolve()
    name = args.src.as_posix()

    start = time.monotonic()
    print(f"executing {name} [profile {args.profile}] ...", flush=True)
    try:
        execute(src, dst, args.profile, parse_overrides(args.parameter))
    except UsageError as exc:
        print(f"error: {name}: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        done = f"{args.dst.as_posix()} was published before it stopped" if exc.published else "nothing published"
        print(f"interrupted: {name}, {done}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # before or after the run: nothing of it is under way
        print(f"interrupted: {name}, nothing published", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
        kept = FAILED_DIR / dst.name
        kept_msg = f"; executed copy kept in {os.path.relpath(kept)}" if kept.exists() else ""
        print(f"error: notebook {name} failed with {one_line(exc)}{kept_msg}", file=sys.stderr)
        return 1
    print(f"executed {name} -> {args.dst.as_posix()} in {time.monotonic() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
