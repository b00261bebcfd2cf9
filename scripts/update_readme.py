#!/usr/bin/env python3
"""Refresh the README's generated parts: the overview figure and the claims headline.

    python scripts/update_readme.py [--sections book/sections] [--figure book/images/overview.png]

- The figure (``book/images/overview.png``): three embedded photographs with Grad-CAM, Group-CAM,
  CAMERAS and selective NormGrad (at ``stage5``, 14x14) maps of EfficientNet-Lite0, computed here with
  ``lib`` (about a minute on a CPU).
- The headline (:func:`findings`, also the head of the book's introduction): the verdict
  counts per section, read from the claims the executed sections saved
  (``<sections>/claims/*.json``), written between the README's ``<!-- claims:begin -->`` and
  ``<!-- claims:end -->`` markers with the build they come from and the units they rest on.
  Without executed sections the headline is left as it is. Only the chapters that exist count:
  the claims file and the executed copy of a notebook no longer in ``notebooks/`` are ignored
  (``make book`` removes such a claims file, ``scripts/build_book.py``).

``make readme`` runs it after ``make book``.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NOTEBOOKS = REPO / "notebooks"
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"


def overview_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from PIL import Image

    import lib
    from lib import data, models, plot

    classifier = models.load("efficientnet_lite0")
    samples = [s for s in data.embedded() if s.id in ("chelsea", "coffee", "motorcycle")]
    batch = data.batch(samples, classifier.preprocess, classifier.input_size, classifier.crop_fraction)
    methods = {"Grad-CAM": ("gradcam", {}), "Group-CAM": ("groupcam", {}), "CAMERAS": ("cameras", {}),
               "selective NormGrad (stage5)": ("selective_normgrad", {"layer": "stage5"})}
    maps = {name: lib.saliency.METHODS[key](classifier, batch.images, batch.labels, **kwargs) for name, (key, kwargs) in methods.items()}
    fig = plot.method_grid(classifier.denormalize(batch.images), maps, row_titles=[classifier.categories[int(l)] for l in batch.labels],
                           cell=1.8, percentile=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    # A 256-colour palette keeps the committed file small (about a third of the RGB file).
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def build_commits(sections: Path, notebooks: list[Path] | None = None) -> list[str]:
    """The commits the executed sections ran at, in section order, as their provenance printed them."""
    import json

    found = []
    for notebook in sorted(sections.glob("*.ipynb")) if notebooks is None else notebooks:
        for cell in json.loads(notebook.read_text()).get("cells", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    found += re.findall(r"^git commit: (\S+)$", "".join(output.get("text", "")), flags=re.M)
    return list(dict.fromkeys(found))


def chapters(source: Path = NOTEBOOKS) -> set[str]:
    """The stems of the source notebooks in ``source`` (``notebooks/``): the chapters that exist."""
    return {path.stem for path in Path(source).glob("*.ipynb")}


def stray_claims(folder: Path, source: Path = NOTEBOOKS, keep=()) -> list[Path]:
    """The claims files in ``folder`` (``book/sections/claims``) of notebooks that no longer exist.

    Args:
        folder: a claims folder; a missing one has none.
        source: the source notebooks (default ``notebooks/``).
        keep: sections to keep whatever ``source`` holds (the executed notebooks a build was given).

    Returns:
        The files, in name order.
    """
    from lib import claims

    live = chapters(source) | set(keep)
    return [path for section, path in claims.claim_files(folder).items() if section not in live]


def saved_claims(notebooks: list[Path]) -> list:
    """The claims the given executed sections saved beside them (``<folder>/claims/<stem>.json``), theirs only.

    Args:
        notebooks: executed sections, the chapters of a build (the Makefile lists those of
            ``notebooks/``); the other files of their claims folders are not read.

    Returns:
        Their claims, folder by folder, sections in name order.

    Raises:
        ValueError: a claims file of theirs that cannot be read (``lib.claims.load_all``).
    """
    from lib import claims

    folders: dict[Path, set[str]] = {}
    for nb in notebooks:
        folders.setdefault(Path(nb).parent / "claims", set()).add(Path(nb).stem)
    return [c for folder, stems in folders.items() for c in claims.load_all(folder, sections=stems)]


def findings(sections: Path, notebooks: list[Path] | None = None, source: Path = NOTEBOOKS) -> str | None:
    """What a build finds, in a few lines and a table: the verdict counts per section, the build
    they come from (commits, profile, images) and the units the tested verdicts rest on; the same
    text heads the README and the book's introduction. None when no section saved claims.

    Args:
        sections: the folder of executed sections (``book/sections``) with ``claims/``.
        notebooks: the executed sections to count (default: those in ``sections`` whose notebook
            exists in ``source``, with their claims; a stray claims file or executed copy of a
            deleted notebook is ignored).
        source: the source notebooks (default ``notebooks/``), read when ``notebooks`` is None.

    Returns:
        The text, or None.

    Raises:
        ValueError: a claims file that cannot be read (``lib.claims.load_all``).
    """
    import json
    import statistics

    from lib import claims

    if notebooks is not None:  # only the sections being built, wherever they lie
        notebooks = [Path(nb) for nb in notebooks]
        found = saved_claims(notebooks)
    else:
        live = chapters(source)
        found = claims.load_all(sections / "claims", sections=live)
        notebooks = [nb for nb in sorted(sections.glob("*.ipynb")) if nb.stem in live]
    if not found:
        return None
    profiles = set()
    for notebook in notebooks:
        meta = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
        profiles.add(meta.get("parameters", {}).get("profile", "?"))
    images = images_of((sections / ".profile").read_text() if (sections / ".profile").is_file() else "")
    commits = build_commits(sections, notebooks)
    built = f" at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}" if commits else ""
    reproductions = [c for c in found if c.kind == "reproduction"]
    tested = [c.n for c in reproductions if c.verdict != "not tested" and c.n]
    rest_on = (f" The {len(tested)} tested reproductions rest on n = {min(tested)} to {max(tested)} units "
               f"(median {statistics.median(tested):g}: images or image-category pairs)." if tested
               else " No reproduction could be tested in this build.")
    checks = [c for c in found if c.kind == "check"]
    held = sum(c.verdict == "holds" for c in checks)
    return (f"Verdicts of the {len(reproductions)} paper claims the sections test, and apart from them "
            f"{len(checks)} checks of identities expected to hold by construction ({held} hold, {len(checks) - held} do not), "
            f"as measured by `make book`{built} "
            f"(profile {', '.join(sorted(profiles))}, on {images}).{rest_on} Each verdict follows one protocol: at least "
            f"{claims.N_MIN} independent units, a paired sign-flip test, rules fixed before the data (the book's claims "
            f"page has every row with its rule, n and numbers):\n\n{claims.headline(found)}")


def images_of(stamp: str) -> str:
    """The images a build ran on, from its profile stamp (``book/sections/.profile``): the data
    sets found under ``$SALIENCY_DATA`` (or ``./data``), else the embedded photographs."""
    given = re.search(r"SALIENCY_DATA=(\S*)", stamp)
    root, where = (Path(given.group(1)), "`SALIENCY_DATA`") if given and given.group(1) else (REPO / "data", "`./data`")
    found = [name for name, folder in (("ImageNet val", "imagenet-val"), ("COCO128", "coco128")) if (root / folder).is_dir()]
    if not (given and given.group(1)):  # ./data as the stamp recorded it when the build ran
        found = [name for name, folder in (("ImageNet val", "imagenet-val"), ("COCO128", "coco128"))
                 if f"data/{folder}=present" in stamp]
    return f"{' and '.join(found)} images from {where}" if found else "the embedded photographs"


def claims_headline(readme: Path, sections: Path, source: Path = NOTEBOOKS) -> bool:
    """Write :func:`findings` between the README's markers; True when it did.

    Args:
        readme: the README.
        sections: the executed sections (``book/sections``).
        source: the source notebooks (``notebooks/``): only their chapters count.

    Returns:
        False when no chapter saved claims (the headline is left as it is).

    Raises:
        SystemExit: the README lacks the markers.
        ValueError: a claims file that cannot be read.
    """
    ignored = stray_claims(sections / "claims", source)
    if ignored:
        print(f"ignored {len(ignored)} claims file(s) of notebooks no longer in {source.name}/: "
              f"{', '.join(p.name for p in ignored)}")
    text = findings(sections, source=source)
    if text is None:
        print(f"no claims under {sections / 'claims'}: headline left as it is (run make book first)")
        return False
    readme_text = readme.read_text()
    if BEGIN not in readme_text or END not in readme_text:
        raise SystemExit(f"{readme}: the markers {BEGIN} and {END} are missing")
    block = f"{BEGIN}\n{text}\n{END}"
    readme.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, readme_text, flags=re.S))
    print(f"updated the claims headline of {readme.name}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=Path, default=REPO / "book" / "sections")
    parser.add_argument("--figure", type=Path, default=REPO / "book" / "images" / "overview.png")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                        help="the source notebooks: only their chapters count (default: notebooks/)")
    parser.add_argument("--no-figure", action="store_true", help="only the headline")
    args = parser.parse_args(argv)
    if not args.no_figure:
        overview_figure(args.figure)
    claims_headline(args.readme, args.sections, args.notebooks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
