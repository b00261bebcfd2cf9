"""Where the tests find real data: the data root of :mod:`lib.paths`.

That is ``$SALIENCY_DATA`` when it is set, else ``./data``; its ``imagenet-val/`` and
``coco128/`` are described in ``data/README.md``. A test that needs one of them carries
``needs_imagenet`` or ``needs_coco128`` and is skipped, saying so, where the data is absent:
``SALIENCY_DATA=/path/to/data make test`` runs them.
"""

from __future__ import annotations

import pytest

from lib import paths

if paths.data_root_is_set():  # a mistyped $SALIENCY_DATA fails the session instead of skipping every data test
    paths.usable_data_root()
DATA_ROOT = paths.data_root()
IMAGENET = paths.imagenet_val_root()
COCO128 = paths.coco128_root()
HAS_IMAGENET = (IMAGENET / "LOC_val_solution.csv").is_file()
HAS_COCO128 = (COCO128 / "names.yaml").is_file() and (COCO128 / "images").is_dir()

needs_imagenet = pytest.mark.skipif(not HAS_IMAGENET, reason=f"no ImageNet val at {IMAGENET} (set SALIENCY_DATA)")
needs_coco128 = pytest.mark.skipif(not HAS_COCO128, reason=f"no COCO128 at {COCO128} (set SALIENCY_DATA)")
