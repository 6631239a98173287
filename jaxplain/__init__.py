"""jaxplain: attribution methods for JAX and Flax models, each compiled to one XLA program."""

from jaxplain import data, engine, io, models, schedules
from jaxplain.attribution import Attribution
from jaxplain.io import load_model
from jaxplain.methods.gradients import input_x_gradient, saliency
from jaxplain.methods.integrated import blur_ig, expected_gradients, guided_ig, idgi, integrated_gradients
from jaxplain.methods.registry import METHODS
from jaxplain.methods.smoothing import smoothgrad, smoothgrad_sq, vargrad
from jaxplain.model import Model, top_k
from jaxplain.models.train import train

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Attribution",
    "Model",
    "blur_ig",
    "expected_gradients",
    "guided_ig",
    "idgi",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "data",
    "engine",
    "input_x_gradient",
    "integrated_gradients",
    "io",
    "load_model",
    "models",
    "saliency",
    "schedules",
    "top_k",
    "train",
]
