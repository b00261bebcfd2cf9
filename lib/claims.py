"""Verdict tables: each section records the paper's claims it checks and what it found.

A section notebook builds a list of :class:`Claim` and calls :func:`save`; the book's
claims page (and the README's headline) are generated from the saved files, never typed
by hand.  :func:`table` renders them for the notebook itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths

__all__ = ["Claim", "verdict", "save", "load_all", "table", "markdown", "headline", "figure_labels", "VERDICTS"]

VERDICTS = ("reproduced", "partly", "not reproduced", "not tested")


@dataclass
class Claim:
    """One claim of a paper and the evidence this book has for it.

    Attributes:
        section: notebook stem, e.g. ``"01_extract_aggregate"``.
        claim: the claim in one sentence.
        source: paper and figure/table, e.g. ``"Rebuffi et al. 2020, Table 3"``.
        paper_value: the paper's number or statement.
        our_value: ours, with its interval where there is one.
        setting: model, data and profile it was measured on.
        verdict: one of :data:`VERDICTS`.
        evidence: the figure/table label in the section that shows it.
    """

    section: str
    claim: str
    source: str
    paper_value: str
    our_value: str
    setting: str
    verdict: str
    evidence: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} unknown; accepted: {', '.join(VERDICTS)}")


def claims_dir() -> Path:
    """``<sections>/claims``: the executed sections' folder is ``$SALIENCY_SECTIONS`` (set by
    ``scripts/execute_notebook.py``), else ``book/sections``."""
    import os

    sections = os.environ.get("SALIENCY_SECTIONS")
    return (Path(sections) if sections else paths.REPO_ROOT / "book" / "sections") / "claims"


def verdict(holds: bool, partly: bool = False) -> str:
    """``reproduced`` when the claim holds, else ``partly`` when the weaker form holds, else ``not reproduced``."""
    return "reproduced" if holds else ("partly" if partly else "not reproduced")


def save(claims: list[Claim], section: str, directory: Path | None = None) -> Path:
    """Write a section's claims to ``<directory>/<section>.json`` (atomically)."""
    directory = Path(directory) if directory is not None else claims_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{section}.json"
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps([asdict(c) for c in claims], indent=1))
    temporary.replace(target)
    return target


def load_all(directory: Path | None = None) -> list[Claim]:
    """Every saved claim, sections in name order."""
    directory = Path(directory) if directory is not None else claims_dir()
    return [Claim(**item) for path in sorted(directory.glob("*.json")) for item in json.loads(path.read_text())]


def table(claims: list[Claim]):
    """A pandas DataFrame of the claims, for display in a notebook."""
    import pandas as pd

    columns = ["claim", "source", "paper_value", "our_value", "setting", "verdict", "evidence"]
    return pd.DataFrame([asdict(c) for c in claims], columns=["section", *columns])[columns]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def figure_labels(notebook: Path) -> set[str]:
    """The figure labels (``mystnb.figure.name``) of an executed notebook's cells that drew an image."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    return {
        cell["metadata"]["mystnb"]["figure"]["name"]
        for cell in cells
        if cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
        and any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))
    }


def _evidence(text: str, labels: set[str]) -> str:
    """Each comma-separated item of ``evidence``: a cross-reference when it is a known figure label."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    return ", ".join(f"{{numref}}`{item}`" if item in labels else _cell(item) for item in items)


def markdown(claims: list[Claim], labels: set[str] = frozenset()) -> str:
    """The book's claims page: one table per section, generated from the saved claims.

    Args:
        claims: the saved claims (:func:`load_all`).
        labels: figure labels that exist in the book (:func:`figure_labels`); evidence naming
            one becomes a link to that figure, any other evidence stays text.
    """
    lines = [
        "# Claims and verdicts",
        "",
        "Every claim the sections test, gathered from their verdict tables when the book was built",
        "(`lib.claims`); each row links to the section holding the evidence. Verdicts hold for the model,",
        "data and profile in the *setting* column, not beyond.",
        "",
    ]
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    lines += ["Totals: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", ""]
    for section in sorted({c.section for c in claims}):
        lines += [f"## {section.replace('_', ' ', 1).replace('_', ' ')}", "", f"Evidence: {{doc}}`sections/{section}`.", "",
                  "| claim | source | paper | ours | setting | verdict | evidence |", "|---|---|---|---|---|---|---|"]
        lines += [
            "| " + " | ".join(_cell(x) for x in (c.claim, c.source, c.paper_value, c.our_value, c.setting, f"**{c.verdict}**"))
            + f" | {_evidence(c.evidence, labels)} |"
            for c in claims
            if c.section == section
        ]
        lines.append("")
    return "\n".join(lines)


def headline(claims: list[Claim]) -> str:
    """Verdict counts per section and in total, as a Markdown table (the README's headline)."""
    sections = sorted({c.section for c in claims})
    lines = ["| section | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for section in [*sections, None]:
        chosen = [c for c in claims if section is None or c.section == section]
        name = "**all**" if section is None else section
        lines.append(f"| {name} | " + " | ".join(str(sum(c.verdict == v for c in chosen)) for v in VERDICTS) + " |")
    return "\n".join(lines)
