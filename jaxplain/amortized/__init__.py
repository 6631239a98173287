"""Amortized explainers: networks that explain in one forward pass, trained with Optax.

Teacher labels at dataset scale (`make_labels`), three recipes (`train_supervised`,
`train_fastshap` with `train_surrogate`, `train_cortx`), selective recomputation
(`selective`), and the trained `Explainer`, called as `explainer(model, x, target=...)`
and saved and loaded (`Explainer.save`, `load`) in jaxplain's checkpoint format.
See docs/amortized.md.
"""

from jaxplain.amortized import cortx, fastshap, networks, supervised, training
from jaxplain.amortized.cortx import labelled_rows, pretrain_encoder, train_cortx
from jaxplain.amortized.explainer import Explainer, load
from jaxplain.amortized.fastshap import Surrogate, train_fastshap, train_surrogate
from jaxplain.amortized.labels import Labels, make_labels
from jaxplain.amortized.networks import ConvExplainer, MLPExplainer, TokenExplainer
from jaxplain.amortized.selective import selective
from jaxplain.amortized.supervised import train_supervised

__all__ = [
    "ConvExplainer",
    "Explainer",
    "Labels",
    "MLPExplainer",
    "Surrogate",
    "TokenExplainer",
    "cortx",
    "fastshap",
    "labelled_rows",
    "load",
    "make_labels",
    "networks",
    "pretrain_encoder",
    "selective",
    "supervised",
    "train_cortx",
    "train_fastshap",
    "train_supervised",
    "train_surrogate",
    "training",
]
