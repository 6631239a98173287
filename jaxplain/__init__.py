"""jaxplain: attribution methods for JAX and Flax models, each compiled to one XLA program."""

from jaxplain import amortized, data, engine, generation, io, metrics, models, runs, schedules, training
from jaxplain.attribution import Attribution
from jaxplain.generation import GenerationAttribution, generation_attributions
from jaxplain.io import load_model
from jaxplain.methods.attention import attention_flow, attention_rollout, gradient_weighted_attention
from jaxplain.methods.gradients import input_x_gradient, saliency
from jaxplain.methods.integrated import blur_ig, expected_gradients, guided_ig, idgi, integrated_gradients
from jaxplain.methods.layers import (
    fullgrad,
    grad_cam,
    layer_gradient_x_activation,
    layer_integrated_gradients,
    layer_names,
    neuron_attribution,
    neuron_gradient,
    neuron_integrated_gradients,
    token_attributions,
)
from jaxplain.methods.perturbation import (
    banzhaf,
    exact_shapley,
    feature_ablation,
    kernel_shap,
    lime,
    occlusion,
    patch_mask,
    shapley_sampling,
)
from jaxplain.methods.registry import METHODS
from jaxplain.methods.rules import (
    AlphaBeta,
    Composite,
    Epsilon,
    Gamma,
    Rule,
    ZBox,
    deconvnet,
    deeplift,
    deeplift_shap,
    epsilon_alpha2_beta1,
    epsilon_gamma_box,
    epsilon_plus,
    guided_backprop,
    lrp,
    lrp_layers,
)
from jaxplain.methods.smoothing import smoothgrad, smoothgrad_sq, vargrad
from jaxplain.methods.xrai import xrai, xrai_segments
from jaxplain.metrics import evaluate
from jaxplain.model import Model, Output, region, select, top_k
from jaxplain.models.train import train
from jaxplain.runs import explain_dataset, load_attributions
from jaxplain.superpixels import superpixels
from jaxplain.training import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "AlphaBeta",
    "Attribution",
    "Composite",
    "Epsilon",
    "Gamma",
    "Rule",
    "ZBox",
    "GenerationAttribution",
    "METHODS",
    "Model",
    "Output",
    "TrainConfig",
    "amortized",
    "attention_flow",
    "attention_rollout",
    "blur_ig",
    "data",
    "deconvnet",
    "deeplift",
    "deeplift_shap",
    "epsilon_alpha2_beta1",
    "epsilon_gamma_box",
    "epsilon_plus",
    "engine",
    "evaluate",
    "exact_shapley",
    "expected_gradients",
    "explain_dataset",
    "feature_ablation",
    "fullgrad",
    "generation",
    "generation_attributions",
    "grad_cam",
    "gradient_weighted_attention",
    "guided_backprop",
    "guided_ig",
    "idgi",
    "input_x_gradient",
    "integrated_gradients",
    "io",
    "kernel_shap",
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "layer_names",
    "lime",
    "banzhaf",
    "load_attributions",
    "load_model",
    "lrp",
    "lrp_layers",
    "metrics",
    "models",
    "runs",
    "neuron_attribution",
    "neuron_gradient",
    "neuron_integrated_gradients",
    "occlusion",
    "patch_mask",
    "region",
    "saliency",
    "schedules",
    "select",
    "shapley_sampling",
    "smoothgrad",
    "smoothgrad_sq",
    "token_attributions",
    "top_k",
    "train",
    "training",
    "superpixels",
    "vargrad",
    "xrai",
    "xrai_segments",
]
