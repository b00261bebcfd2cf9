"""lib.benchmark: the measurement, the floors (same passes as the methods) and the peers' table."""

import inspect
import math
import time

import numpy as np
import pytest
import torch

from _tiny import images, no_hooks_left, tiny_cnn
from lib import benchmark, saliency
from lib.models import Classifier
from lib.metrics import insertion_deletion as causal
from lib.saliency import registry

LAYER = "features.3"
CHUNK = 3  # images per pass where a method takes a batch size: 2 images x 2 samples, 4 masks, ... leave a remainder


def tiny_work(name: str) -> dict:
    """A registered method's settings on the tiny network: its light settings, LAYER if it takes a layer,
    chunks of CHUNK if it takes a batch size."""
    entry = registry.get(name)
    work = dict(entry.light)
    if entry.takes_layer:
        work["layer"] = LAYER
    if "batch_size" in inspect.signature(entry.function).parameters:
        work["batch_size"] = CHUNK
    return work


class ImageCounter:
    """Counts the images going through a model's forward passes."""

    def __init__(self, model):
        self.images = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.images += args[0].shape[0]


def _tiny_classifier() -> Classifier:
    """The tiny network as a Classifier: it knows its 5 classes, so given targets need no pass."""
    return Classifier(tiny_cnn(), "tiny", 16, torch.zeros(3), torch.ones(3), [f"class {i}" for i in range(5)])


def _images_through(model, fn) -> int:
    counter = ImageCounter(model)
    try:
        fn()
    finally:
        counter.handle.remove()
    return counter.images


def test_measure_repeats_after_one_warm_up_and_reports_the_median():
    durations = iter([0.0, 0.03, 0.01, 0.02])
    calls = []

    def fn():
        calls.append(1)
        time.sleep(next(durations))

    result = benchmark.measure(fn, repeats=3, budget=10.0)
    assert len(calls) == 4
    assert 0.02 <= result.seconds < 0.03  # median of 0.03, 0.01, 0.02 (plus overhead)


def test_measure_takes_a_warm_up_over_budget_as_the_measurement():
    calls = []
    result = benchmark.measure(lambda: (calls.append(1), time.sleep(0.05)), repeats=3, budget=0.01)
    assert len(calls) == 1 and result.seconds >= 0.05


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/status").exists(), reason="peak memory needs Linux /proc")
def test_measure_sees_the_memory_a_call_touches():
    result = benchmark.measure(lambda: torch.ones(64 * 2**20 // 4).sum(), repeats=1)  # 64 MiB, written then freed
    assert result.peak_mib >= 48


def test_measure_rejects_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        benchmark.measure(lambda: None, repeats=0)


@pytest.mark.parametrize("name", benchmark.default_methods())
def test_floor_sends_as_many_images_through_the_network_as_the_method(name):
    classifier, x = _tiny_classifier(), images(2, size=16)
    targets, work = torch.tensor([1, 3]), tiny_work(name)
    floor = benchmark.floor(classifier, x, targets, name, work)
    assert floor is not None
    ours = _images_through(classifier.model, lambda: registry.get(name).function(classifier, x, targets, **work))
    passes = _images_through(classifier.model, floor)
    assert passes == ours
    assert no_hooks_left(classifier.model)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")  # captum's notice of its own hooks
@pytest.mark.parametrize("name", [name for name in benchmark.default_methods() if registry.get(name).peers])
def test_every_registered_peer_is_found_and_runs_the_methods_work(name):
    classifier, x = _tiny_classifier(), images(2, size=16)
    found = benchmark.peers(classifier, x, torch.tensor([1, 3]), name, tiny_work(name))
    assert list(found) == [peer.label for peer in registry.get(name).peers]  # the three peer libraries are installed
    for run in found.values():
        run()
    assert no_hooks_left(classifier.model)


def test_given_targets_cost_a_classifier_no_extra_pass_but_are_still_checked():
    classifier, x = _tiny_classifier(), images(2, size=16)
    assert _images_through(classifier.model, lambda: saliency.smoothgrad(classifier, x, torch.tensor([0, 4]), n_samples=3)) == 6
    assert _images_through(classifier.model, lambda: saliency.smoothgrad(classifier, x, None, n_samples=3)) == 2 + 6
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        saliency.smoothgrad(classifier, x, torch.tensor([0, 5]), n_samples=3)


def test_insertion_deletion_floor_matches_the_batched_games():
    model, x = tiny_cnn(), images(2, size=16)
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    step = 40
    ours = _images_through(model, lambda: causal.insertion_deletion(model, x, maps, step=step))
    assert ours == 2 * (math.ceil(16 * 16 / step) + 1) * 2 + 2  # both curves, plus the pass that picks the targets


def test_no_floor_for_an_unknown_method():
    assert benchmark.floor(tiny_cnn(), images(1, size=16), torch.tensor([0]), "meta_saliency") is None


def test_rows_where_a_peer_is_faster_carry_their_reason():
    import pandas as pd

    row = dict(batch=1, **{"ours ms/img": 1.0, "peer ms/img": 1.0, "ours / floor": 1.0})
    frame = pd.DataFrame([
        {**row, "method": "gradcam", "peer": "torchcam", "ours / peer": 0.5},  # ours faster: not listed
        {**row, "method": "gradient", "peer": "captum", "ours / peer": 1.2},
        {**row, "method": "scorecam", "peer": "pytorch-grad-cam", "ours / peer": 1.3},
        {**row, "method": "guided_backprop", "peer": "captum (ReLU only)", "ours / peer": 2.0},
    ])
    slower = benchmark.slower_than_peers(frame)
    assert slower["method"].tolist() == ["gradient", "scorecam", "guided_backprop"]
    assert slower["reason"].tolist() == [
        f"within the run-to-run noise (ratio <= {benchmark.NOISE})",
        "not explained: to be looked at",
        benchmark.REASONS[("guided_backprop", "captum (ReLU only)")],
    ]


def test_numbers_read_as_a_table_shows_them():
    from lib.plot import significant

    shown = [significant(v) for v in (0.0123456, 1.23456, 12.3456, 99.96, 1234.5, 7, np.int64(3), float("nan"), None,
                                      np.float32(0.5), float("inf"), -0.04567)]
    assert shown == ["0.0123", "1.23", "12.3", "100", "1,234", "7", "3", "—", "—", "0.500", "∞", "-0.0457"]
    assert significant(0.0123456, 2) == "0.012"


def test_a_row_faster_than_its_floor_is_flagged_not_shown_as_a_result():
    import pandas as pd

    ours = benchmark.Measurement(seconds=0.010, peak_mib=5.0, iqr_seconds=0.002, calls=3)
    rows = [benchmark._row("gradcam", 2, "captum", ours, benchmark.Measurement(0.020, 1.0), benchmark.Measurement(0.012, 2.0)),
            benchmark._row("gradient", 2, "-", ours, benchmark.Measurement(0.009, 1.0), None),
            benchmark._row("rise", 2, "-", ours, None, None)]
    frame = pd.DataFrame(rows)
    assert frame["ours IQR ms/img"].tolist() == [1.0, 1.0, 1.0]  # per image
    assert benchmark.below_floor(frame).tolist() == [True, False, False]  # 0.5 is below its floor; 1.11 is not; no floor is not
    table = benchmark.readable(frame)
    assert table["method"].tolist() == ["Grad-CAM", "Gradient", "RISE"]  # the registry's display names
    assert table["ours ms/img (IQR)"].tolist() == ["5.00 (1.0)"] * 3
    assert table["ours / floor"].tolist() == ["—", "1.11", "—"] and table["peer"].tolist() == ["captum", "—", "—"]
    assert table["check"][0].startswith("faster than its floor (x0.50)") and table["check"][1:].tolist() == ["", ""]
    assert table["peer ms/img (IQR)"].tolist() == ["6.00 (1 call)", "—", "—"]  # one timed call: no spread to show
    assert table["ours / peer"].tolist() == ["0.833", "—", "—"]
    assert benchmark.readable(rows)["check"][0] == table["check"][0]  # compare()'s own list of rows is accepted
    with pytest.raises(ValueError, match="expected the rows of lib.benchmark.compare"):
        benchmark.readable([])
    for bad in ({"repeats": 1.5}, {"repeats": 0}, {"budget": -1}, {"budget": float("nan")}):
        with pytest.raises(ValueError, match="repeats must be an integer|budget must be a positive number"):
            benchmark.measure(lambda: None, **bad)


def test_the_spread_is_the_interquartile_range_of_the_timed_calls(monkeypatch):
    times = iter([9.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # the warm-up (9 s) is not counted
    monkeypatch.setattr(benchmark, "_one_call", lambda fn, device: (next(times), 1.0))
    measured = benchmark.measure(lambda: None, repeats=5, budget=30.0)
    assert (measured.seconds, measured.iqr_seconds, measured.calls) == (3.0, 2.0, 5)  # quartiles 2 and 4 (inclusive)
    monkeypatch.setattr(benchmark, "_one_call", lambda fn, device: (60.0, 1.0))
    assert benchmark.measure(lambda: None, repeats=5, budget=30.0) == benchmark.Measurement(60.0, 1.0, 0.0, 1)
