"""Saliency methods, one module per family, each method a plain function.

Calling convention::

    maps = lib.saliency.gradcam(model, images, targets, layer="last")

``model`` is a ``lib.models.Classifier`` or an ``nn.Module``; ``images`` a float tensor
(B, 3, H, W) normalised for the model; ``targets`` an int tensor (B,), an int, or None
for the predicted class.  The result is a float tensor (B, H, W) on the images' device,
each map min-max normalised to [0, 1]; ``raw=True`` returns the unnormalised map at its
native resolution.  The model comes back exactly as it was given.

Every method is registered once in :mod:`lib.saliency.registry` with its display name,
family, paper and equation, light settings, benchmark floor and peers.  ``METHODS`` (name ->
function), ``BASELINES`` (the classical methods the papers compare against) and
``resolve_method`` are live views of it, so notebooks can loop over the methods.
"""

from .._submodules import lazy_submodules

from .cam import ablationcam, eigencam, gradcam, gradcam_pp, hirescam, layercam, scorecam, xgradcam
from .gradients import (CompletenessWarning, averaged_baseline_ig, completeness_error, deconvnet, fullgrad, fullgrad_terms,
                        gradient, gradient_x_input, guided_backprop, guided_gradcam, ig_baseline, integrated_gradients, smoothgrad)
from .perturbation import extremal_perturbation, occlusion, rise
from .regions import xrai
from .excitation import contrastive_excitation_backprop, excitation_backprop
from .group_masking import groupcam
from .multiscale import cameras
from .extract_and_aggregate import extract_aggregate, layer_gradient, linear_approx, normgrad, normgrad_conv, selective_normgrad
from .meta import meta_saliency
from . import registry
from .registry import BASELINES, METHODS, REGISTRY, register, resolve_method, unregister


__getattr__, __dir__ = lazy_submodules(__name__, __path__, globals())  # ``lib.saliency.combine`` imported on first use


__all__ = ["METHODS", "BASELINES", "REGISTRY", "register", "unregister", "resolve_method", "registry", "extract_aggregate",
           "meta_saliency", "fullgrad_terms", "completeness_error", "CompletenessWarning", "ig_baseline", "averaged_baseline_ig",
           *METHODS]
