"""jaxplain: attribution methods for JAX and Flax models, each compiled to one XLA program."""

from jaxplain import engine, schedules
from jaxplain.attribution import Attribution
from jaxplain.methods.gradients import input_x_gradient, saliency
from jaxplain.methods.integrated import integrated_gradients
from jaxplain.model import Model, top_k

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "Model",
    "engine",
    "input_x_gradient",
    "integrated_gradients",
    "saliency",
    "schedules",
    "top_k",
]
