"""`evaluate`: several methods judged by several metrics on the same inputs, as one table.

`METRICS` lists every metric `evaluate` runs, by group (Quantus' six: faithfulness,
robustness, localisation, complexity, randomisation, axiomatic), with its definition and
which way is better; `DEFAULT_METRICS` are the quick ones it runs unless asked, and
`metrics="all"` runs every one. Each metric here is a small function of a `_Case` (one
method's attribution on the batch, and what the metric needs besides); the metrics
themselves live in the modules of `jaxplain.metrics`. A new metric goes there, and gets
one entry in `METRICS` and one runner in `_RUNNERS`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks
from jaxplain._progress import Progress
from jaxplain.attribution import Attribution
from jaxplain.methods import layers as _layers
from jaxplain.methods import registry
from jaxplain.methods.registry import METHODS
from jaxplain.metrics import (
    _common,
    axiomatic,
    curves,
    faithfulness,
    localisation,
    randomisation,
    removal,
    robustness,
    sparsity,
)
from jaxplain.model import OUTPUTS, Model


class Metric(NamedTuple):
    """What a metric in `METRICS` measures, which way is better, and its group."""

    definition: str
    better: str  # "lower" or "higher"
    group: str


GROUPS = ("faithfulness", "robustness", "localisation", "complexity", "randomisation", "axiomatic")

# name -> Metric; the table's columns come in this order
METRICS = {
    # faithfulness
    "infidelity": Metric(
        "mean infidelity under random subset removal (Yeh et al. 2019)", "lower", "faithfulness"
    ),
    "faithfulness_correlation": Metric(
        "mean Pearson correlation of attribution sums and output drops (Bhatt et al. 2020)",
        "higher",
        "faithfulness",
    ),
    "faithfulness_estimate": Metric(
        "mean Pearson correlation of each group's attribution and the output drop when it alone is removed",
        "higher",
        "faithfulness",
    ),
    "sensitivity_n": Metric(
        "mean faithfulness correlation over subsets of 10%, 30% and 50% of the groups (Ancona et al. 2018)",
        "higher",
        "faithfulness",
    ),
    "monotonicity": Metric(
        "share of examples whose output never falls as groups are added in increasing attribution (Arya et al. 2019)",
        "higher",
        "faithfulness",
    ),
    "monotonicity_correlation": Metric(
        "mean Spearman correlation of |attribution| and the output's variance under noisy replacement "
        "(Nguyen & Martinez 2020)",
        "higher",
        "faithfulness",
    ),
    "deletion_auc": Metric(
        "mean AUC of the probability as top features are deleted (Petsiuk et al. 2018)",
        "lower",
        "faithfulness",
    ),
    "insertion_auc": Metric(
        "mean AUC of the probability as top features are inserted into a blurred image (zeros for other inputs)",
        "higher",
        "faithfulness",
    ),
    "pixel_flipping": Metric(
        "mean AUC of the probability as groups are set to zero one by one in attribution order (Bach et al. 2015)",
        "lower",
        "faithfulness",
    ),
    "road": Metric(
        "mean AUC of the probability as top groups are imputed by noisy linear imputation (Rong et al. 2022)",
        "lower",
        "faithfulness",
    ),
    "region_perturbation": Metric(
        "mean area over the probability drops as top patches are replaced by uniform noise (Samek et al. 2015)",
        "higher",
        "faithfulness",
    ),
    "selectivity": Metric(
        "mean AUC of the probability as top patches are removed one by one (Montavon et al. 2018)",
        "lower",
        "faithfulness",
    ),
    "irof": Metric(
        "mean area over the probability curve as SLIC superpixels are removed by mean attribution "
        "(Rieger & Hansen 2020)",
        "higher",
        "faithfulness",
    ),
    "sufficiency": Metric(
        "mean share of examples with a similar explanation that get the same prediction (Dasgupta et al. 2022)",
        "higher",
        "faithfulness",
    ),
    # robustness
    "max_sensitivity": Metric(
        "mean max of ||phi(x + d) - phi(x)|| / ||phi(x)|| over uniform noise of radius 0.02 (Yeh et al. 2019)",
        "lower",
        "robustness",
    ),
    "avg_sensitivity": Metric(
        "mean average of ||phi(x + d) - phi(x)|| / ||phi(x)|| over uniform noise of radius 0.02 (Yeh et al. 2019)",
        "lower",
        "robustness",
    ),
    "local_lipschitz_estimate": Metric(
        "mean max of ||phi(x) - phi(x')|| / ||x - x'|| over Gaussian neighbours (Alvarez-Melis & Jaakkola 2018)",
        "lower",
        "robustness",
    ),
    "continuity": Metric(
        "mean largest change of the explanation per unit change of the input along a shift (Montavon et al. 2018)",
        "lower",
        "robustness",
    ),
    "consistency": Metric(
        "mean share of examples with the same discretised explanation that get the same prediction "
        "(Dasgupta et al. 2022)",
        "higher",
        "robustness",
    ),
    "relative_input_stability": Metric(
        "mean max relative change of the explanation over the relative change of the input (Agarwal et al. 2022)",
        "lower",
        "robustness",
    ),
    "relative_output_stability": Metric(
        "mean max relative change of the explanation over the change of the logits (Agarwal et al. 2022)",
        "lower",
        "robustness",
    ),
    "relative_representation_stability": Metric(
        "mean max relative change of the explanation over that of a hidden layer's output (Agarwal et al. 2022)",
        "lower",
        "robustness",
    ),
    # localisation (needs masks=)
    "pointing_game": Metric(
        "share of examples whose largest attribution lies on the object (Zhang et al. 2018)",
        "higher",
        "localisation",
    ),
    "attribution_localisation": Metric(
        "mean share of positive relevance on the object (Kohlbrenner et al. 2020)", "higher", "localisation"
    ),
    "top_k_intersection": Metric(
        "mean share of the top 10% features that lie on the object (Theiner et al. 2021)",
        "higher",
        "localisation",
    ),
    "relevance_mass_accuracy": Metric(
        "mean share of the total relevance on the object (Arras et al. 2022)", "higher", "localisation"
    ),
    "relevance_rank_accuracy": Metric(
        "mean share of the object among the |S| top-ranked features (Arras et al. 2022)",
        "higher",
        "localisation",
    ),
    "auc": Metric(
        "mean ROC AUC of the attribution against the object mask (Fawcett 2006)", "higher", "localisation"
    ),
    "focus": Metric(
        "mean share of positive relevance on the target-class tiles of 2x2 mosaics (Arias-Duart et al. 2022)",
        "higher",
        "localisation",
    ),
    # complexity
    "sparseness": Metric("mean Gini index of |attribution| (Chalasani et al. 2020)", "higher", "complexity"),
    "complexity": Metric(
        "mean entropy of the fractional contributions |a_i| / sum |a| (Bhatt et al. 2020)",
        "lower",
        "complexity",
    ),
    "effective_complexity": Metric(
        "mean count of features with |attribution| above 1e-5 of the largest (Nguyen & Martinez 2020)",
        "lower",
        "complexity",
    ),
    # randomisation
    "randomisation": Metric(
        "mean Spearman similarity to the explanation after randomising every layer (Adebayo et al. 2018)",
        "lower",
        "randomisation",
    ),
    "model_parameter_randomisation": Metric(
        "mean Spearman similarity of |phi| after the top-down cascade has randomised every layer (Quantus' MPRT)",
        "lower",
        "randomisation",
    ),
    "smooth_mprt": Metric(
        "model_parameter_randomisation of explanations averaged over noisy inputs (Hedstroem et al. 2024)",
        "lower",
        "randomisation",
    ),
    "efficient_mprt": Metric(
        "mean relative rise of the explanation's discrete entropy once every layer is randomised "
        "(Hedstroem et al. 2024)",
        "higher",
        "randomisation",
    ),
    "random_logit": Metric(
        "mean SSIM of the explanations of the target and of a random other class (Sixt et al. 2020)",
        "lower",
        "randomisation",
    ),
    # axiomatic
    "completeness": Metric(
        "mean |sum(values) - (F(x) - F(baseline))| / |F(x) - F(baseline)| (methods with a delta)",
        "lower",
        "axiomatic",
    ),
    "non_sensitivity": Metric(
        "mean count of groups where a zero attribution and no output change disagree (Nguyen & Martinez 2020)",
        "lower",
        "axiomatic",
    ),
    "input_invariance": Metric(
        "share of examples whose explanation is unchanged by a constant input shift the model absorbs "
        "(Kindermans et al. 2017)",
        "higher",
        "axiomatic",
    ),
}
# other names a metric goes by: its column keeps the name asked for
ALIASES = {"sensitivity_max": "max_sensitivity"}  # Captum's name
# the quick ones, run unless `metrics=` asks for others
DEFAULT_METRICS = (
    "completeness",
    "infidelity",
    "faithfulness_correlation",
    "deletion_auc",
    "insertion_auc",
    "max_sensitivity",
    "randomisation",
)


def _info(name: str) -> Metric:
    return METRICS[ALIASES.get(name, name)]


@dataclasses.dataclass
class Table:
    """Methods x metrics: `rows[method][metric]` is a float, or None where it does not apply.

    Every row also has "ms_per_example": the method's median run time per example
    (after one compiling run), measured in this process. `attributions[method]` keeps
    each method's values (for pictures such as `jaxplain.viz.method_grid`), and
    `seconds[metric]` the wall time each metric took over all methods, compiling
    included (to choose the metrics worth their time). A metric that
    is undefined (NaN) on some examples is the mean over the others, with a note.
    """

    rows: dict[str, dict[str, float | None]]
    metrics: Sequence[str]
    notes: dict[str, str]
    attributions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {
            "metrics": {
                name: {
                    "definition": _info(name).definition,
                    "better": _info(name).better,
                    "group": _info(name).group,
                }
                for name in self.metrics
            },
            "rows": self.rows,
            "notes": self.notes,
            "seconds_per_metric": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def markdown(self) -> str:
        """One Markdown table; with more than 8 metrics, one table per metric group."""
        if len(self.metrics) <= 8:
            return self._markdown(["ms_per_example", *self.metrics])
        parts = []
        for group in GROUPS:
            names = [m for m in self.metrics if _info(m).group == group]
            if names:
                first = ["ms_per_example"] if not parts else []
                parts.append(f"{group}:\n\n" + self._markdown(first + names))
        return "\n\n".join(parts)

    def _markdown(self, columns) -> str:
        arrows = {
            name: (" (lower better)" if _info(name).better == "lower" else " (higher better)")
            for name in columns
            if name != "ms_per_example"
        }
        lines = [
            "| method | " + " | ".join(c + arrows.get(c, "") for c in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for method, row in self.rows.items():
            cells = ["-" if row.get(c) is None else f"{row[c]:.3g}" for c in columns]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()


MethodSpec = str | Callable | tuple


def _methods(methods) -> dict[str, tuple]:
    """{label: (function, options)} from names, functions, (function, options) or a dict."""
    pair = isinstance(methods, tuple) and len(methods) == 2 and isinstance(methods[1], Mapping)
    if isinstance(methods, str) or pair or callable(methods) or not hasattr(methods, "__iter__"):
        # A lone name would be iterated letter by letter, a lone (method, options) pair
        # item by item.
        raise TypeError(
            "methods must be a list or dict of methods (names, functions or (method, options) "
            f"pairs), got {methods!r}; e.g. [{methods!r}]"
        )
    if isinstance(methods, Mapping):
        items = list(methods.items())
    else:
        items = [(_label(m), m) for m in methods]
    found = {}
    for label, spec in items:
        if isinstance(spec, tuple) and (len(spec) != 2 or not isinstance(spec[1], Mapping)):
            raise TypeError(f"methods: {label!r} must be (method, options) with options a dict, got {spec!r}")
        function, options = spec if isinstance(spec, tuple) else (spec, {})
        if isinstance(function, str) and function not in METHODS:
            raise ValueError(
                f"methods: {function!r} is not a jaxplain method; known: {', '.join(sorted(METHODS))}"
            )
        if not isinstance(function, str) and not callable(function):
            raise TypeError(
                f"methods: {label!r} must be a method, a method name or (method, options), got {spec!r}"
            )
        function = registry.resolve(function)
        if label in found:
            raise ValueError(f"methods: two methods are labelled {label!r}; pass a dict to label them apart")
        found[label] = (function, registry.options_of(function, options))
    if not found:
        raise ValueError("methods is empty")
    return found


def _label(spec) -> str:
    """A method's row label: its name; a (method, options) pair's method's name."""
    method = spec[0] if isinstance(spec, tuple) and spec else spec
    return method if isinstance(method, str) else getattr(method, "__name__", repr(spec))


def _input_shaped(values, x):
    """Values shaped like x; a (batch, H, W) map of NHWC images is spread over channels."""
    if values.shape == x.shape:
        return values
    if x.ndim == 4 and values.shape == x.shape[:3]:
        return jnp.broadcast_to(values[..., None] / x.shape[-1], x.shape)
    return None


def evaluate(
    methods,
    model: Model,
    x,
    *,
    target,
    key,
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    samples: int = 64,
    repeats: int = 3,
    score_output: str = "probs",
    masks=None,
    representation_layer: str | None = None,
    free_programs: bool | None = None,
    progress: bool = False,
) -> Table:
    """Runs every method on the same inputs and judges it by every metric.

    The target is resolved once (e.g. "predicted" becomes each example's class) so that
    every method and metric explains the same class. Metrics that judge an attribution
    use the method's; a map of NHWC images without channels (Grad-CAM, FullGrad) is
    spread evenly over the channels; an attribution of another shape (a layer's) gets
    None. Metrics that re-run the method (robustness, randomisation, input invariance,
    focus) call it with its options. The removal curves (deletion, insertion, pixel
    flipping, ROAD, region perturbation, selectivity, IROF) follow the model's
    `score_output` ("probs", as in RISE); everything else uses the model as given. On
    NHWC images the removal and axiomatic metrics move whole pixels (all channels at
    once). Each metric is the mean over the examples (see `METRICS` for each one's
    summary; the metrics' own functions in `jaxplain.metrics` give every example's value
    and more options).

    Args:
      methods: method names (`"integrated_gradients"`), methods, `(method, options)`
        pairs, or a dict from a label to any of these. A method is called as
        `method(model, x, target=..., **options)` (plus `key=` if it takes one); a
        noise method's options name the method it wraps as `method` (or `wrap`), e.g.
        `("smoothgrad", {"method": "integrated_gradients", "steps": 16})`.
      model: a `jaxplain.Model`.
      x: a batch of inputs.
      target: as for the methods, one class per example.
      key: a `jax.random.key`; each method and metric gets its own key from it.
      metrics: names from `METRICS`, or "all" (every metric; the localisation ones need
        `masks`). By default the quick `DEFAULT_METRICS`.
      samples: random draws of the sampling metrics (those that re-run the method take at
        most 16).
      repeats: timed runs per method (the median is reported).
      score_output: the output that the removal curves follow.
      masks: ground-truth masks for the localisation metrics: bool `(batch, *x.shape[1:])`,
        or `(batch, H, W)` for NHWC images (e.g. `jaxplain.data.synthetic_objects`).
      representation_layer: the layer whose output `relative_representation_stability`
        compares (see `jaxplain.layer_names`); by default the last layer before the
        output layer.
      free_programs: drop each method's compiled programs once its row is done
        (`jax.clear_caches()`, which drops the process's other compiled programs too). A
        table of many methods by many metrics compiles thousands of programs, and a
        process that keeps them all runs out of memory maps (Linux's vm.max_map_count,
        65530 by default: XLA fails with "Cannot allocate memory"). By default (None)
        only for tables of more than 100 method-metric cells; True or False always.
      progress: show a progress bar over the methods.

    Returns:
      A `Table`; `print(table)` shows it as Markdown, `table.as_dict()` is JSON-ready.

    Example:
      >>> table = jaxplain.evaluate(["saliency", "integrated_gradients"], model, x,
      ...                           target="predicted", key=jax.random.key(0))  # doctest: +SKIP
      >>> print(table)  # doctest: +SKIP
    """
    found = _methods(methods)
    if isinstance(metrics, str):
        if metrics != "all":
            raise TypeError(
                f"metrics must be 'all' or a sequence of names from METRICS, got {metrics!r}; e.g. [{metrics!r}]"
            )
        metrics = tuple(METRICS)
    if not hasattr(metrics, "__iter__"):
        raise TypeError(f"metrics must be 'all' or a sequence of names from METRICS, got {metrics!r}")
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS and m not in ALIASES]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; choose from {list(METRICS)}")
    key = _checks.key(key)
    samples = _checks.positive_int("samples", samples)
    repeats = _checks.positive_int("repeats", repeats)
    x, targets = _checks.prepare(model, x, target)
    if not targets.single:
        raise ValueError("target must name one class per example to build a table of metrics")
    if score_output not in OUTPUTS:
        raise ValueError(f"score_output must be one of {OUTPUTS}, got {score_output!r}")
    if masks is not None:
        masks = _ground_truth(masks, x)
    if free_programs is not None and not isinstance(free_programs, bool):
        raise TypeError(f"free_programs must be None or a bool, got {type(free_programs).__name__}")
    if representation_layer is not None and not isinstance(representation_layer, str):
        raise TypeError(f"representation_layer must be a layer name, got {representation_layer!r}")
    classes = targets.resolve(model(x))[:, 0]
    scorer = model.with_output(score_output)
    rows, notes, kept = {}, {}, {}
    seconds = dict.fromkeys(metrics, 0.0)
    if masks is None and any(_info(m).group == "localisation" and m != "focus" for m in metrics):
        notes["localisation"] = "pass masks= (ground-truth object masks) for the localisation metrics"
    bar = Progress(len(found), description="evaluate", unit="methods", enabled=progress)
    for index, (label, (function, options)) in enumerate(found.items()):
        method_key, *metric_keys = jax.random.split(jax.random.fold_in(key, index), 1 + len(metrics))
        call_options = {**options, **({"key": method_key} if registry.takes_key(function) else {})}

        def explain(inputs=x):
            return function(model, inputs, target=classes, **call_options)

        attribution = explain()
        jax.block_until_ready(attribution.values)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(explain().values)
            times.append(time.perf_counter() - start)
        row = {"ms_per_example": 1e3 * statistics.median(times) / x.shape[0]}
        values = _input_shaped(jnp.asarray(attribution.values), x)
        if values is None:
            notes[label] = (
                f"values of shape {tuple(attribution.values.shape)} are not shaped like x: input metrics skipped"
            )
        # The method's own settings are bound to it, so that none collides with a
        # metric's (both may have `samples`); the metric hands it keys of its own.
        bound = functools.partial(function, **{k: v for k, v in options.items() if k != "key"})
        for metric, metric_key in zip(metrics, metric_keys):
            case = _Case(
                function=function,
                method=bound,
                options=call_options,
                model=model,
                scorer=scorer,
                x=x,
                classes=classes,
                attribution=attribution,
                values=values,
                key=metric_key,
                samples=samples,
                masks=masks,
                representation_layer=representation_layer,
            )
            start = time.perf_counter()
            try:
                value = _RUNNERS[ALIASES.get(metric, metric)](case)
                row[metric], undefined = _summary(value)
            except (ValueError, TypeError) as error:  # e.g. a model the metric cannot randomise
                row[metric] = None
                notes[f"{label} {metric}"] = f"{type(error).__name__}: {error}"
                continue
            finally:
                seconds[metric] += time.perf_counter() - start
            if undefined:
                notes[f"{label} {metric}"] = (
                    f"undefined (NaN) on {undefined} of {x.shape[0]} examples, left out"
                )
        rows[label] = row
        kept[label] = np.asarray(attribution.values)
        if free_programs or (free_programs is None and len(found) * len(metrics) > 100):
            jax.clear_caches()
        bar.update(1)
    bar.close()
    return Table(rows, metrics, notes, kept, {m: round(t, 3) for m, t in seconds.items()})


def _ground_truth(masks, x):
    masks = np.asarray(masks)
    shapes = [tuple(x.shape)] + ([tuple(x.shape[:-1])] if x.ndim == 4 else [])
    if masks.shape not in shapes:
        raise ValueError(
            f"masks must be shaped like x, {tuple(x.shape)}"
            + (f", or {shapes[1]} for NHWC images" if len(shapes) > 1 else "")
            + f"; got {masks.shape}"
        )
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise ValueError("masks must be bool or hold only 0 and 1")
    return masks.astype(bool)


def _summary(value):
    """`(mean over the examples, number undefined)`; None stays None."""
    if value is None:
        return None, 0
    value = np.asarray(value, dtype=np.float64)
    defined = np.isfinite(value)
    undefined = int(value.size - defined.sum())
    return (float(value[defined].mean()) if defined.any() else float("nan")), undefined


@dataclasses.dataclass
class _Case:
    """One method's attribution on the batch, and what the metrics need besides."""

    function: Callable  # the method
    method: Callable  # the method with its options bound, keyless: for the metrics that re-run it
    options: dict  # its options, with its key if it takes one
    model: Model
    scorer: Model  # the model's `score_output`, for the removal curves
    x: jax.Array
    classes: jax.Array
    attribution: Attribution
    values: jax.Array | None  # shaped like x, or None
    key: jax.Array
    samples: int
    masks: np.ndarray | None
    representation_layer: str | None

    @property
    def image(self) -> bool:
        return self.x.ndim == 4

    @property
    def few(self) -> int:
        """Draws for a metric that re-runs the method on each."""
        return min(self.samples, 16)

    @property
    def method_key(self):
        """The key for a metric that re-runs the method, where the method needs one."""
        return self.key if registry.takes_key(self.function) else None

    def patch(self) -> int:
        """A patch side for the patch metrics: a quarter of the image's shorter side."""
        return max(1, min(self.x.shape[1], self.x.shape[2]) // 4)

    def groups(self) -> int:
        return _common.groups(None, self.x, self.image)[1]


def _needs_values(run):
    """A runner of a metric that judges the attribution: None where it is not shaped like x."""

    @functools.wraps(run)
    def checked(case: _Case):
        return None if case.values is None else run(case)

    return checked


def _needs_masks(run):
    @functools.wraps(run)
    def checked(case: _Case):
        return None if case.values is None or case.masks is None else run(case)

    return checked


def _needs_images(name):
    def decorate(run):
        @functools.wraps(run)
        def checked(case: _Case):
            if case.values is None:
                return None
            if not case.image:
                raise ValueError(f"{name} needs images (batch, H, W, C)")
            return run(case)

        return checked

    return decorate


def _last(similarities: dict):
    """The similarity after the last layer randomised (every layer, in a cascade)."""
    return list(similarities.values())[-1]


def _representation_layer(case: _Case) -> str:
    if case.representation_layer is not None:
        return case.representation_layer
    names = list(_layers.layer_names(case.model, case.x[:1]))
    if len(names) < 2:
        raise ValueError("relative_representation_stability: the model has no hidden layer to compare")
    return names[-2]


def _mosaic_focus(case: _Case):
    if case.values is None:
        return None
    tiles = localisation.mosaics(case.x, case.classes, key=case.key)
    mosaic = case.function(case.model, tiles.images, target=tiles.targets, **case.options)
    return localisation.focus(mosaic, tiles.quadrants)


def _sensitivity_n(case: _Case):
    groups = case.groups()
    sizes = sorted({max(1, min(groups - 1, round(groups * f))) for f in (0.1, 0.3, 0.5)})
    mask = _common.groups(None, case.x, case.image)[0]
    return faithfulness.sensitivity_n(
        case.model,
        case.x,
        case.values,
        target=case.classes,
        key=case.key,
        subset_sizes=sizes,
        samples=case.samples,
        feature_mask=mask,
    ).mean(axis=-1)


def _robustness(metric):
    def run(case: _Case):
        return metric(case.method, case.model, case.x, target=case.classes, key=case.key, samples=case.few)

    return run


_localise = {
    "pointing_game": localisation.pointing_game,
    "attribution_localisation": localisation.attribution_localisation,
    "relevance_mass_accuracy": localisation.relevance_mass_accuracy,
    "relevance_rank_accuracy": localisation.relevance_rank_accuracy,
    "auc": localisation.auc,
}

# name -> runner(case) -> per-example values (or one value), None where it does not apply
_RUNNERS: dict[str, Callable[[_Case], object]] = {
    # faithfulness
    "infidelity": _needs_values(
        lambda c: faithfulness.infidelity(
            c.model, c.x, c.values, target=c.classes, key=c.key, samples=c.samples
        )
    ),
    "faithfulness_correlation": _needs_values(
        lambda c: faithfulness.faithfulness_correlation(
            c.model, c.x, c.values, target=c.classes, key=c.key, samples=c.samples
        )
    ),
    "faithfulness_estimate": _needs_values(
        lambda c: removal.faithfulness_estimate(c.model, c.x, c.values, target=c.classes, per_pixel=c.image)
    ),
    "sensitivity_n": _needs_values(_sensitivity_n),
    "monotonicity": _needs_values(
        lambda c: removal.monotonicity(c.model, c.x, c.values, target=c.classes, per_pixel=c.image)
    ),
    "monotonicity_correlation": _needs_values(
        lambda c: removal.monotonicity_correlation(
            c.model,
            c.x,
            c.values,
            target=c.classes,
            key=c.key,
            samples=c.few,
            low=float(jnp.min(c.x)),
            high=float(jnp.max(c.x)),
            per_pixel=c.image,
        )
    ),
    "deletion_auc": _needs_values(
        lambda c: curves.deletion(c.scorer, c.x, c.values, target=c.classes, per_pixel=c.image).auc
    ),
    # inserted into a blurred image (RISE), or into the zero baseline for other inputs
    "insertion_auc": _needs_values(
        lambda c: (
            curves.insertion(
                c.scorer,
                c.x,
                c.values,
                target=c.classes,
                per_pixel=c.image,
                baseline="blur" if c.image else "zeros",
            ).auc
        )
    ),
    "pixel_flipping": _needs_values(
        lambda c: curves.pixel_flipping(c.scorer, c.x, c.values, target=c.classes, per_pixel=c.image).auc
    ),
    "road": _needs_values(
        lambda c: curves.road(c.scorer, c.x, c.values, target=c.classes, key=c.key, per_pixel=c.image).auc
    ),
    "region_perturbation": _needs_images("region_perturbation")(
        lambda c: (
            removal.region_perturbation(
                c.scorer, c.x, c.values, target=c.classes, key=c.key, patch_size=c.patch()
            ).auc
        )
    ),
    "selectivity": _needs_images("selectivity")(
        lambda c: removal.selectivity(c.scorer, c.x, c.values, target=c.classes, patch_size=c.patch()).auc
    ),
    "irof": _needs_images("irof")(lambda c: removal.irof(c.scorer, c.x, c.values, target=c.classes)),
    "sufficiency": _needs_values(lambda c: removal.sufficiency(c.model, c.x, c.values, target=c.classes)),
    # robustness
    "max_sensitivity": _robustness(robustness.max_sensitivity),
    "avg_sensitivity": _robustness(robustness.avg_sensitivity),
    "local_lipschitz_estimate": _robustness(robustness.local_lipschitz_estimate),
    "continuity": lambda c: robustness.continuity(c.method, c.model, c.x, target=c.classes, key=c.method_key),
    "consistency": _needs_values(lambda c: robustness.consistency(c.model, c.x, c.values)),
    "relative_input_stability": _robustness(robustness.relative_input_stability),
    "relative_output_stability": _robustness(robustness.relative_output_stability),
    "relative_representation_stability": lambda c: robustness.relative_representation_stability(
        c.method, c.model, c.x, target=c.classes, key=c.key, layer=_representation_layer(c), samples=c.few
    ),
    # localisation
    **{name: _needs_masks(lambda c, f=f: f(c.values, c.masks)) for name, f in _localise.items()},
    "top_k_intersection": _needs_masks(
        lambda c: localisation.top_k_intersection(c.values, c.masks, k=max(1, c.groups() // 10))
    ),
    "focus": _mosaic_focus,
    # complexity
    "sparseness": _needs_values(lambda c: sparsity.sparseness(c.values)),
    "complexity": _needs_values(lambda c: sparsity.complexity(c.values)),
    "effective_complexity": _needs_values(lambda c: sparsity.effective_complexity(c.values)),
    # randomisation
    "randomisation": lambda c: _last(
        randomisation.randomisation_check(c.method, c.model, c.x, target=c.classes, key=c.key)
    ),
    "model_parameter_randomisation": lambda c: _last(
        randomisation.model_parameter_randomisation(c.method, c.model, c.x, target=c.classes, key=c.key)
    ),
    "smooth_mprt": lambda c: _last(
        randomisation.smooth_mprt(
            c.method,
            c.model,
            c.x,
            target=c.classes,
            key=c.key,
            samples=min(c.samples, 8),
            layer_order="top_down",
        )
    ),
    "efficient_mprt": lambda c: randomisation.efficient_mprt(
        c.method, c.model, c.x, target=c.classes, key=c.key
    ),
    "random_logit": lambda c: randomisation.random_logit(c.method, c.model, c.x, target=c.classes, key=c.key),
    # axiomatic
    "completeness": lambda c: c.attribution.relative_delta,
    "non_sensitivity": _needs_values(
        lambda c: axiomatic.non_sensitivity(c.model, c.x, c.values, target=c.classes, per_pixel=c.image)
    ),
    "input_invariance": lambda c: axiomatic.input_invariance(
        c.method, c.model, c.x, target=c.classes, key=c.method_key
    ),
}
assert set(_RUNNERS) == set(METRICS), set(_RUNNERS) ^ set(METRICS)
