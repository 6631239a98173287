"""Metrics: how faithful, robust and model-dependent an explanation is, and how two agree.

Metrics that judge a given attribution take it after the inputs,
`metric(model, x, attribution, *, target, ...)`; metrics that re-run an explainer take
the method first, `metric(method, model, x, *, target, key, ...)`. All are batched over
examples and compile to one XLA program per call; model evaluations go through
`jaxplain.engine.path_outputs` (chunked by `chunk_size`), and randomness comes only from
`key`.
"""

from jaxplain.metrics._common import Curve
from jaxplain.metrics.agreement import l2_error, relative_l2_error, spearman, top_k_overlap
from jaxplain.metrics.curves import deletion, insertion, pixel_flipping, road
from jaxplain.metrics.evaluate import METRICS, Table, evaluate
from jaxplain.metrics.faithfulness import completeness, faithfulness_correlation, infidelity, sensitivity_n
from jaxplain.metrics.randomisation import randomisation_check
from jaxplain.metrics.robustness import sensitivity_max

__all__ = [
    "METRICS",
    "Curve",
    "Table",
    "completeness",
    "deletion",
    "evaluate",
    "faithfulness_correlation",
    "infidelity",
    "insertion",
    "l2_error",
    "pixel_flipping",
    "randomisation_check",
    "relative_l2_error",
    "road",
    "sensitivity_max",
    "sensitivity_n",
    "spearman",
    "top_k_overlap",
]
