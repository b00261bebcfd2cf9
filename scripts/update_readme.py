#!/usr/bin/env python3
"""Refresh the README's generated parts: the overview figure and the claims headline.

    python scripts/update_readme.py [--sections book/sections] [--figure book/images/overview.png]

- The figure (``book/images/overview.png``): three embedded photographs with Grad-CAM, Group-CAM,
  CAMERAS and selective NormGrad (at ``stage5``, 14x14) maps of EfficientNet-Lite0, computed here with
  ``lib`` (about a minute on a CPU).
- The headline: the verdict counts per section, read from the claims the executed
  sections saved (``<sections>/claims/*.json``), written between the README's
  ``<!-- claims:begin -->`` and ``<!-- claims:end -->`` markers with the profile they
  were measured with.  Without executed sections the headline is left as it is.

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


def build_commits(sections: Path) -> list[str]:
    """The commits the executed sections ran at, in section order, as their provenance printed them."""
    import json

    found = []
    for notebook in sorted(sections.glob("*.ipynb")):
        for cell in json.loads(notebook.read_text()).get("cells", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    found += re.findall(r"^git commit: (\S+)$", "".join(output.get("text", "")), flags=re.M)
    return list(dict.fromkeys(found))


def claims_headline(readme: Path, sections: Path) -> bool:
    import json

    from lib import claims

    found = claims.load_all(sections / "claims") if (sections / "claims").is_dir() else []
    if not found:
        print(f"no claims under {sections / 'claims'}: headline left as it is (run make book first)")
        return False
    profiles = set()
    for notebook in sections.glob("*.ipynb"):
        meta = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
        profiles.add(meta.get("parameters", {}).get("profile", "?"))
    stamp = (sections / ".profile").read_text() if (sections / ".profile").is_file() else ""
    root = re.search(r"SALIENCY_DATA=(\S*)", stamp)
    if root and root.group(1):
        images = "ImageNet val and COCO128 images from `SALIENCY_DATA`"
    elif "data/imagenet-val=present" in stamp:
        images = "ImageNet val and COCO128 images from `./data`"
    else:
        images = "the embedded photographs"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: the markers {BEGIN} and {END} are missing")
    commits = build_commits(sections)
    built = f" at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}" if commits else ""
    reproductions = sum(c.kind == "reproduction" for c in found)
    block = (f"{BEGIN}\nVerdicts of the {reproductions} paper claims the sections test, and apart from them "
             f"{len(found) - reproductions} checks of identities that hold by construction, as measured by `make book`{built} "
             f"(profile {', '.join(sorted(profiles))}, on {images}). Each verdict follows one protocol: at least "
             f"{claims.N_MIN} independent units, a paired sign-flip test, rules fixed before the data (the book's claims "
             f"page has every row with its rule, n and numbers):\n\n{claims.headline(found)}\n{END}")
    readme.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
    print(f"updated the claims headline of {readme.name} ({len(found)} claims)")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=Path, default=REPO / "book" / "sections")
    parser.add_argument("--figure", type=Path, default=REPO / "book" / "images" / "overview.png")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--no-figure", action="store_true", help="only the headline")
    args = parser.parse_args(argv)
    if not args.no_figure:
        overview_figure(args.figure)
    claims_headline(args.readme, args.sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
