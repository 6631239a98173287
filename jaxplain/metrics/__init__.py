"""Metrics: how faithful, robust, localised, simple and model-dependent an explanation is.

Every metric of Quantus' six groups, under Quantus' names (docs/metrics.md lists them with
their definitions, papers and which way is better):

* faithfulness (`faithfulness.py`, `removal.py`, `curves.py`): infidelity,
  faithfulness_correlation, faithfulness_estimate, sensitivity_n, monotonicity,
  monotonicity_correlation, deletion, insertion, pixel_flipping, road,
  region_perturbation, selectivity, irof, sufficiency;
* robustness (`robustness.py`): max_sensitivity (= sensitivity_max), avg_sensitivity,
  local_lipschitz_estimate, continuity, consistency and the relative input, output and
  representation stabilities;
* localisation (`localisation.py`, against a ground-truth mask): pointing_game,
  attribution_localisation, top_k_intersection, relevance_mass_accuracy,
  relevance_rank_accuracy, auc, focus;
* complexity (`sparsity.py`): sparseness, complexity, effective_complexity;
* randomisation (`randomisation.py`): model_parameter_randomisation (and
  randomisation_check), smooth_mprt, efficient_mprt, random_logit;
* axiomatic (`axiomatic.py`, `faithfulness.py`): completeness, non_sensitivity,
  input_invariance.

Metrics that judge a given attribution take it after the inputs,
`metric(model, x, attribution, *, target, ...)`; metrics that re-run an explainer take
the method first, `metric(method, model, x, *, target, key, ...)`; the localisation and
complexity metrics need no model, `metric(attribution, [mask], ...)`. All are batched
over examples and compile to one XLA program per call; model evaluations go through
`jaxplain.engine` (chunked by `chunk_size`), and randomness comes only from `key`.
`evaluate` runs several methods by any of them into one table.
"""

from jaxplain.metrics._common import Curve
from jaxplain.metrics.agreement import l2_error, relative_l2_error, spearman, top_k_overlap
from jaxplain.metrics.axiomatic import input_invariance, non_sensitivity, shifted_first_layer
from jaxplain.metrics.curves import deletion, insertion, pixel_flipping, road
from jaxplain.metrics.evaluate import ALIASES, DEFAULT_METRICS, METRICS, Table, evaluate
from jaxplain.metrics.faithfulness import completeness, faithfulness_correlation, infidelity, sensitivity_n
from jaxplain.metrics.localisation import (
    Mosaics,
    attribution_localisation,
    auc,
    focus,
    mosaics,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from jaxplain.metrics.randomisation import (
    efficient_mprt,
    model_parameter_randomisation,
    random_logit,
    randomisation_check,
    smooth_mprt,
)
from jaxplain.metrics.removal import (
    faithfulness_estimate,
    irof,
    monotonicity,
    monotonicity_correlation,
    region_perturbation,
    selectivity,
    sufficiency,
)
from jaxplain.metrics.robustness import (
    avg_sensitivity,
    consistency,
    continuity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
    sensitivity_max,
)
from jaxplain.metrics.sparsity import complexity, effective_complexity, sparseness

__all__ = [
    "ALIASES",
    "DEFAULT_METRICS",
    "METRICS",
    "Curve",
    "Mosaics",
    "Table",
    "attribution_localisation",
    "auc",
    "avg_sensitivity",
    "completeness",
    "complexity",
    "consistency",
    "continuity",
    "deletion",
    "effective_complexity",
    "efficient_mprt",
    "evaluate",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "focus",
    "infidelity",
    "input_invariance",
    "insertion",
    "irof",
    "l2_error",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "model_parameter_randomisation",
    "monotonicity",
    "monotonicity_correlation",
    "mosaics",
    "non_sensitivity",
    "pixel_flipping",
    "pointing_game",
    "random_logit",
    "randomisation_check",
    "region_perturbation",
    "relative_input_stability",
    "relative_l2_error",
    "relative_output_stability",
    "relative_representation_stability",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "road",
    "selectivity",
    "sensitivity_max",
    "sensitivity_n",
    "shifted_first_layer",
    "smooth_mprt",
    "sparseness",
    "spearman",
    "sufficiency",
    "top_k_intersection",
    "top_k_overlap",
]
