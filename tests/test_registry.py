"""lib.saliency.registry: one registration reaches every reader; entries agree with the book and the code."""

import dataclasses
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import test_benchmark
import test_reliability
from _tiny import images, no_hooks_left, tiny_cnn
from lib import benchmark, saliency
from lib.capture import check_images, check_targets, prepared
from lib.metrics import class_sensitivity as cs
from lib.saliency import floors, registry
from lib.saliency.passes import finish, layer_pass

ROOT = Path(__file__).resolve().parent.parent


def input_x_gradient(model, images, targets=None, *, raw=False):
    """Input x gradient: |sum_c x_c dS_t/dx_c| per pixel, S_t the target's logit (a method the library lacks)."""
    check_images(images)
    with prepared(model) as module, torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        logits = module(x)
        chosen = check_targets(targets, logits, getattr(model, "categories", None))
        (gradients,) = torch.autograd.grad(logits.gather(1, chosen.view(-1, 1)).sum(), x)
    return finish((gradients * images).sum(dim=1).abs(), images, raw)


@pytest.fixture
def toy():
    """input_x_gradient registered for the test, unregistered after it (even when it fails)."""
    before = list(registry.REGISTRY.items())
    registry.register(input_x_gradient, display="Input x gradient", family="input gradient", equation="Sec. 2",
                      floor=floors.input_passes())
    yield "input_x_gradient"
    if "input_x_gradient" in registry.REGISTRY:
        registry.unregister("input_x_gradient")
    assert list(registry.REGISTRY.items()) == before


def test_one_registration_reaches_the_reliability_suite_the_benchmark_and_resolve_method(toy):
    assert toy in test_reliability.methods() and toy not in test_reliability.methods(lambda entry: entry.takes_layer)
    assert toy in benchmark.default_methods()
    assert saliency.resolve_method(toy) is input_x_gradient and saliency.METHODS[toy] is input_x_gradient
    # The reliability suite's own checks, run on the new method as they run on every registered one.
    test_reliability.test_two_hundred_calls_leave_no_hook_identical_parameters_and_flat_memory(toy)
    test_reliability.test_bad_inputs_get_clear_errors(toy)
    test_reliability.test_training_mode_is_switched_for_the_call_and_restored(toy)
    test_reliability.test_constant_maps_normalise_to_zeros_not_nan(toy)
    test_reliability.test_batched_equals_one_by_one_and_seeded_is_repeatable(toy)
    # The benchmark: its floor counts the same images as the method, and a run gives its row.
    test_benchmark.test_floor_sends_as_many_images_through_the_network_as_the_method(toy)
    rows = benchmark.compare(test_benchmark._tiny_classifier(), [toy], batches=(2,), repeats=1)
    assert [(r["method"], r["batch"], r["peer"]) for r in rows] == [(toy, 2, "-")] and rows[0]["ours / floor"] > 0
    # The metrics resolve the name to the registered function.
    model, x = tiny_cnn(), images(2, size=16)
    by_name = cs.class_sensitivity(model, toy, x)
    top, bottom = cs.extreme_classes(model(x))
    by_hand = cs.max_min_correlation(input_x_gradient(model, x, top), input_x_gradient(model, x, bottom))
    assert torch.allclose(by_name.correlation, by_hand, equal_nan=True)
    assert "| Input x gradient | input gradient | – | Sec. 2 |" in registry.equation_index()


def test_unregistering_restores_the_registry_and_every_view(toy):
    registry.unregister(toy)
    assert toy not in saliency.METHODS and toy not in registry.REGISTRY and toy not in benchmark.default_methods()
    assert toy not in test_reliability.methods()
    with pytest.raises(ValueError, match="unknown saliency method 'input_x_gradient'"):
        saliency.resolve_method(toy)
    assert benchmark.floor(tiny_cnn(), images(1), torch.tensor([0]), toy) is None


def test_the_decorator_registers_any_function_and_reads_whether_it_takes_a_layer():
    @registry.register(name="constant_at_a_layer", display="Constant", family="class activation map", baseline=True)
    def constant(model, images, targets=None, *, layer="last", raw=False):
        check_images(images)
        return torch.zeros(images.shape[0], *images.shape[-2:])

    try:
        assert constant.__name__ == "constant"  # returned unchanged
        assert registry.get("constant_at_a_layer").function is constant
        assert "constant_at_a_layer" in test_reliability.methods(lambda entry: entry.takes_layer)
        assert saliency.BASELINES[-1] == "constant_at_a_layer"
        assert registry.get("constant_at_a_layer").defaults == {"layer": "last", "raw": False}
    finally:
        registry.unregister("constant_at_a_layer")
    assert "constant_at_a_layer" not in saliency.BASELINES


def _no_targets(model, images, *, raw=False):
    return images


@pytest.mark.parametrize("bad, message", [
    (dict(function=saliency.gradcam, name="gradcam"), "already registered"),
    (dict(name="grad-cam"), "Python identifier"),
    (dict(family="gradients"), "family must be one of"),
    (dict(light={"n_sample": 2}), r"light settings \['n_sample'\] are not parameters"),
    (dict(work={"layer": "last"}), r"work settings \['layer'\] are not parameters"),
    (dict(function=_no_targets), r"must take \(model, images, targets\)"),
    (dict(peers=[registry.Peer("torchray", "norm_grad")]), "peers must be Peer entries of"),
])
def test_bad_registrations_are_refused_and_leave_the_registry_as_it_was(bad, message):
    before = list(registry.REGISTRY.items())
    arguments = dict(function=input_x_gradient, name="input_x_gradient", display="Input x gradient", family="input gradient") | bad
    with pytest.raises((ValueError, TypeError), match=message):
        registry.register(arguments.pop("function"), **arguments)
    assert list(registry.REGISTRY.items()) == before


def test_unknown_names_get_the_closest_registered_ones():
    for call in (registry.get, registry.unregister, saliency.resolve_method):
        with pytest.raises(ValueError, match="closest: gradcam"):
            call("gradcan")


def test_the_views_and_the_entries_are_read_only():
    with pytest.raises(TypeError):
        saliency.METHODS["mine"] = input_x_gradient
    with pytest.raises(TypeError):
        registry.get("smoothgrad").light["n_samples"] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.get("smoothgrad").display = "SG"
    benchmark.WORK["smoothgrad"]["n_samples"] = 1  # a fresh dict: the registered work is unchanged
    assert benchmark.WORK["smoothgrad"] == {"n_samples": 16}


def test_the_old_names_keep_their_meaning():
    assert tuple(saliency.BASELINES) == ("gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam",
                                         "gradcam_pp", "scorecam", "layercam", "rise")
    assert [name for name in saliency.METHODS if name not in saliency.BASELINES] == [
        "gradient_x_input", "deconvnet", "guided_gradcam", "fullgrad", "xrai", "hirescam", "xgradcam", "eigencam", "ablationcam",
        "excitation_backprop", "contrastive_excitation_backprop", "occlusion", "extremal_perturbation", "cameras", "groupcam", "layer_gradient", "linear_approx", "selective_normgrad", "normgrad",
        "normgrad_conv"]
    assert all(getattr(saliency, name) is function for name, function in saliency.METHODS.items())


def _bibliography() -> dict[str, str]:
    """Citation key -> first author's surname, from the book's references.bib."""
    text = (ROOT / "book" / "references.bib").read_text()
    return dict(re.findall(r"@\w+\{(\w+),.*?author\s*=\s*\{([^,}]+)", text, re.S))


@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_each_entry_cites_the_book_and_names_the_equation_its_docstring_states(name):
    entry, first_authors = registry.get(name), _bibliography()
    docstring = " ".join(inspect.getdoc(entry.function).split())
    assert entry.paper in first_authors, f"{entry.paper!r} is not a key of book/references.bib"
    assert first_authors[entry.paper] in docstring
    assert entry.equation and entry.equation in docstring


def test_the_equation_index_has_one_row_per_method_linking_its_function():
    table = registry.equation_index().splitlines()
    assert table[0] == "| Method | Family | Paper | Equation or section | Function |"
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table[2:]]
    assert len(rows) == len(registry.REGISTRY) + len(registry.TECHNIQUES) and all(len(cells) == 5 for cells in rows)
    for cells, entry in zip(rows, registry.REGISTRY.values()):
        assert cells[2].strip() == f"{{cite:t}}`{entry.paper}`"
        target = re.fullmatch(r" \{py:func\}`(.+)` ", cells[4]).group(1)
        module, _, attribute = target.rpartition(".")
        assert getattr(importlib.import_module(module), attribute) is entry.function
    plain = registry.equation_index(roles=False)
    assert "{cite" not in plain and "`lib.saliency.cam.gradcam`" in plain


@pytest.mark.parametrize("technique", registry.TECHNIQUES, ids=lambda t: t.function)
def test_each_technique_row_links_a_function_whose_docstring_cites_its_paper_and_section(technique):
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in registry.equation_index().splitlines()[2:]]
    cells = rows[len(registry.REGISTRY) + registry.TECHNIQUES.index(technique)]
    assert [c.strip() for c in cells] == [technique.display, technique.family, f"{{cite:t}}`{technique.paper}`",
                                          technique.equation, f"{{py:func}}`{technique.function}`"]
    module, _, attribute = technique.function.rpartition(".")
    function, first_authors = getattr(importlib.import_module(module), attribute), _bibliography()
    docstring = " ".join(inspect.getdoc(function).split())
    assert first_authors[technique.paper] in docstring and technique.equation in docstring


def test_a_pipe_in_a_display_name_does_not_break_the_table():
    registry.register(input_x_gradient, name="piped", display="Input | gradient", family="input gradient")
    try:
        row = registry.equation_index().splitlines()[1 + len(registry.REGISTRY)]  # the last method's row
        assert len(re.split(r"(?<!\\)\|", row)) == 7 and "Input \\| gradient" in row
    finally:
        registry.unregister("piped")


def test_reductions_state_each_method_once():
    from lib.saliency.cam import REDUCTIONS as CAMS
    from lib.saliency.extract_and_aggregate import REDUCTIONS as TABLE_2_ROWS

    assert registry.REDUCTIONS == {**CAMS, **TABLE_2_ROWS}  # read from where each method is stated, not restated


@pytest.mark.parametrize("name", sorted(registry.REDUCTIONS))
def test_each_one_pass_reduction_is_the_methods_raw_map(name):
    model, x, targets = tiny_cnn(), images(3, size=16), torch.tensor([0, 2, 4])
    method, reduction = registry.get(name).function, registry.REDUCTIONS[name]
    for layer in ("features.1", "features.3"):
        record = layer_pass(model, x, targets, layer)
        expected = method(model, x, targets, layer=layer, raw=True)
        assert torch.allclose(reduction(record.activations, record.gradients), expected, rtol=1e-5, atol=1e-9)
    assert no_hooks_left(model)


def test_the_packages_modules_are_attributes_of_a_fresh_import():
    code = ("import lib; "
            "assert lib.metrics.pointing.__name__ == 'lib.metrics.pointing'; "
            "assert lib.metrics.sanity.resolve_method is lib.saliency.resolve_method; "
            "assert lib.saliency.combine.__name__ == 'lib.saliency.combine'; "
            "assert lib.benchmark.WORK is lib.saliency.registry.WORK; "
            "assert {'metrics', 'benchmark', 'plot'} <= set(dir(lib))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import lib

        lib.nothing


@pytest.mark.parametrize("bad, error, message", [
    (dict(name=5), ValueError, "Python identifier"),
    (dict(name="class"), ValueError, "not a keyword"),
    (dict(light=[("n_samples", 2)]), TypeError, "light must be a mapping"),
    (dict(work="n_samples"), TypeError, "work must be a mapping"),
    (dict(peers="captum"), TypeError, "peers must be a list of Peer"),
    (dict(peers=registry.Peer("captum", "InputXGradient")), TypeError, "peers must be a list of Peer"),
    (dict(paper="a`b"), ValueError, "paper must be a citation key"),
    (dict(paper=2020), ValueError, "paper must be a citation key"),
    (dict(equation="Eq. 1\n| injected |"), ValueError, "equation must be a non-empty string on one line"),
    (dict(display="Input\nx gradient"), ValueError, "display must be a non-empty string on one line"),
    (dict(baseline="no"), TypeError, "baseline must be True or False"),
    (dict(function=3), TypeError, "must be a callable"),
    (dict(function="input_x_gradient"), TypeError, "pass the name as name="),
    (dict(function=int), TypeError, "no signature"),
])
def test_malformed_registrations_get_one_clear_error(bad, error, message):
    before = list(registry.REGISTRY.items())
    arguments = dict(function=input_x_gradient, name="input_x_gradient", display="Input x gradient", family="input gradient") | bad
    with pytest.raises(error, match=message):
        registry.register(arguments.pop("function"), **arguments)
    assert list(registry.REGISTRY.items()) == before
    assert "|---|" in registry.equation_index()
    assert len(registry.equation_index().splitlines()) == len(before) + 2 + len(registry.TECHNIQUES)


def test_a_name_that_is_not_a_string_is_a_type_error():
    for call in (registry.get, registry.unregister, saliency.resolve_method):
        for name in (None, 5, ["gradcam"]):
            with pytest.raises(TypeError, match="named by a string"):
                call(name)
    assert saliency.resolve_method("gradcam") is saliency.gradcam
