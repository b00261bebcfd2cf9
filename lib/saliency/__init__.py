"""Saliency methods, one module per family, each method a plain function.

Calling convention::

    maps = lib.saliency.gradcam(model, images, targets, layer="last")

``model`` is a ``lib.models.Classifier`` or an ``nn.Module``; ``images`` a float tensor
(B, 3, H, W) normalised for the model; ``targets`` an int tensor (B,), an int, or None
for the predicted class.  The result is a float tensor (B, H, W) on the images' device,
each map min-max normalised to [0, 1]; ``raw=True`` returns the unnormalised map at its
native resolution.  The model comes back exactly as it was given.

``METHODS`` maps each registered name to its function so notebooks can loop over them.
"""

import difflib
from typing import Callable

from .cam import gradcam, gradcam_pp, layercam, scorecam
from .gradients import gradient, guided_backprop, integrated_gradients, smoothgrad
from .perturbation import rise
from .groupcam import groupcam
from .cameras import cameras
from .normgrad import extract_aggregate, layer_gradient, linear_approx, normgrad, normgrad_conv, selective_normgrad
from .meta import meta_saliency

METHODS = {
    "gradient": gradient,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "gradcam": gradcam,
    "gradcam_pp": gradcam_pp,
    "scorecam": scorecam,
    "layercam": layercam,
    "rise": rise,
}

BASELINES = tuple(METHODS)

METHODS["cameras"] = cameras  # Jalwana et al. 2021 (notebooks/03_cameras_lemmas)
METHODS["groupcam"] = groupcam  # Zhang et al. 2021 (notebooks/04_groupcam_ablations)
# Rebuffi et al. 2020, Table 2 (notebooks/01_extract_aggregate)
METHODS.update(layer_gradient=layer_gradient, linear_approx=linear_approx, selective_normgrad=selective_normgrad, normgrad=normgrad,
               normgrad_conv=normgrad_conv)



def resolve_method(method: str | Callable) -> Callable:
    """A registered method by name (or a callable, returned as is).

    Raises:
        ValueError: unknown name; the message lists the closest registered names.
    """
    if callable(method):
        return method
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=5, cutoff=0.4)
        raise ValueError(f"unknown saliency method {method!r}; closest: {', '.join(close or sorted(METHODS))}")
    return METHODS[method]


__all__ = ["METHODS", "BASELINES", "resolve_method", "extract_aggregate", "meta_saliency", *METHODS]
