"""Speed and memory of every saliency method beside its peers and its floor; writes tables.

The tables of ``notebooks/06_benchmarks.ipynb`` outside the book, with the full work of
``lib.benchmark.WORK`` (see that module for what is measured and how):

    python benchmarks/run_all.py --out benchmarks/results [--batches 1 16] [--repeats 3]

writes ``methods.csv``, ``insertion_deletion.csv`` and ``benchmarks.md``.  Not a test:
run it with ``make bench``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lib  # noqa: E402
from lib import benchmark, models, progress, provenance  # noqa: E402
from lib.metrics.insertion_deletion import RISE_STEP  # noqa: E402


def markdown(frame) -> str:
    """A pandas frame as a Markdown table, ratios and times rounded for reading."""
    cells = frame.astype(object).where(frame.notna(), "-")
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) and abs(v) >= 10 else f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(lib.saliency.METHODS))
    parser.add_argument("--step", type=int, default=RISE_STEP, help="insertion/deletion pixels per step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    classifier = models.load(args.model, device=torch.device(args.device))
    about = provenance.summary(model=args.model, batches=args.batches, repeats=args.repeats, work=benchmark.WORK,
                               device=args.device)
    print(about, flush=True)
    methods = pd.DataFrame(benchmark.compare(classifier, args.methods, args.batches, repeats=args.repeats, progress=progress.track))
    causal = pd.DataFrame(benchmark.insertion_deletion_rows(classifier, args.batches, step=args.step, repeats=args.repeats))
    args.out.mkdir(parents=True, exist_ok=True)
    methods.to_csv(args.out / "methods.csv", index=False)
    causal.to_csv(args.out / "insertion_deletion.csv", index=False)
    text = [f"# Saliency methods: time and memory beside peers and floors ({args.model})", "", "```", about, "```", "",
            markdown(methods), "", "## Where a peer is faster", "", markdown(benchmark.slower_than_peers(methods)), "",
            "## Insertion and deletion", "", markdown(causal), ""]
    (args.out / "benchmarks.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
