"""`evaluate`: several methods judged by several metrics on the same inputs, as one table."""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks
from jaxplain._progress import Progress
from jaxplain.methods import registry
from jaxplain.methods.registry import METHODS
from jaxplain.metrics.curves import deletion, insertion
from jaxplain.metrics.faithfulness import faithfulness_correlation, infidelity
from jaxplain.metrics.randomisation import randomisation_check
from jaxplain.metrics.robustness import sensitivity_max
from jaxplain.model import OUTPUTS, Model

# name -> (what it measures, which way is better)
METRICS = {
    "completeness": (
        "mean |sum(values) - (F(x) - F(baseline))| / |F(x) - F(baseline)| (methods with a delta)",
        "lower",
    ),
    "infidelity": ("mean infidelity under random subset removal (Yeh et al. 2019)", "lower"),
    "faithfulness_correlation": (
        "mean Pearson correlation of attribution sums and output drops (Bhatt et al. 2020)",
        "higher",
    ),
    "deletion_auc": (
        "mean AUC of the probability as top features are deleted (Petsiuk et al. 2018)",
        "lower",
    ),
    "insertion_auc": (
        "mean AUC of the probability as top features are inserted into a blurred image (zeros for other inputs)",
        "higher",
    ),
    "sensitivity_max": (
        "mean max relative change of the explanation within an L-inf ball of 0.02 (Yeh et al.)",
        "lower",
    ),
    "randomisation": (
        "mean Spearman similarity to the explanation after randomising every layer (Adebayo et al. 2018)",
        "lower",
    ),
}
DEFAULT_METRICS = tuple(METRICS)


@dataclasses.dataclass
class Table:
    """Methods x metrics: `rows[method][metric]` is a float, or None where it does not apply.

    Every row also has "ms_per_example": the method's median run time per example
    (after one compiling run), measured in this process. `attributions[method]` keeps
    each method's values (for pictures such as `jaxplain.viz.method_grid`).
    """

    rows: dict[str, dict[str, float | None]]
    metrics: Sequence[str]
    notes: dict[str, str]
    attributions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {
            "metrics": {
                name: {"definition": METRICS[name][0], "better": METRICS[name][1]} for name in self.metrics
            },
            "rows": self.rows,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def markdown(self) -> str:
        columns = ["ms_per_example", *self.metrics]
        arrows = {
            name: (" (lower better)" if METRICS[name][1] == "lower" else " (higher better)")
            for name in self.metrics
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
        items = [(m if isinstance(m, str) else getattr(m, "__name__", repr(m)), m) for m in methods]
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
        found[label] = (function, registry.options_of(function, options))
    if not found:
        raise ValueError("methods is empty")
    return found


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
    metrics: Sequence[str] = DEFAULT_METRICS,
    samples: int = 64,
    repeats: int = 3,
    score_output: str = "probs",
    progress: bool = False,
) -> Table:
    """Runs every method on the same inputs and judges it by every metric.

    The target is resolved once (e.g. "predicted" becomes each example's class) so that
    every method and metric explains the same class. Metrics that perturb the input
    (infidelity, faithfulness correlation, deletion, insertion) use the method's
    attribution; a map of NHWC images without channels (Grad-CAM, FullGrad) is spread
    evenly over the channels; an attribution of another shape (a layer's) gets None.
    Deletion (towards zeros) and insertion (into a blurred image, or zeros for inputs
    that are not NHWC images) score the model's `score_output` ("probs", as in RISE);
    everything else uses the model as given. Each metric is the mean over the examples.

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
      metrics: names from `METRICS`.
      samples: random draws of the sampling metrics.
      repeats: timed runs per method (the median is reported).
      score_output: the output that deletion and insertion follow.
      progress: show a progress bar over the methods.

    Returns:
      A `Table`; `print(table)` shows it as Markdown, `table.as_dict()` is JSON-ready.

    Example:
      >>> table = jaxplain.evaluate(["saliency", "integrated_gradients"], model, x,
      ...                           target="predicted", key=jax.random.key(0))  # doctest: +SKIP
      >>> print(table)  # doctest: +SKIP
    """
    found = _methods(methods)
    if isinstance(metrics, str) or not hasattr(metrics, "__iter__"):
        raise TypeError(f"metrics must be a sequence of names from METRICS, got {metrics!r}")
    unknown = [m for m in metrics if m not in METRICS]
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
    classes = targets.resolve(model(x))[:, 0]
    scorer = model.with_output(score_output)
    rows, notes, kept = {}, {}, {}
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
        image = x.ndim == 4
        for metric, metric_key in zip(metrics, metric_keys):
            try:
                row[metric] = _metric(
                    metric,
                    function,
                    call_options,
                    model,
                    scorer,
                    x,
                    classes,
                    attribution,
                    values,
                    metric_key,
                    samples,
                    image,
                )
            except (ValueError, TypeError) as error:  # e.g. a model the metric cannot randomise
                row[metric] = None
                notes[f"{label} {metric}"] = f"{type(error).__name__}: {error}"
        rows[label] = row
        kept[label] = np.asarray(attribution.values)
        bar.update(1)
    bar.close()
    return Table(rows, list(metrics), notes, kept)


def _metric(name, function, options, model, scorer, x, classes, attribution, values, key, samples, image):
    def mean(value):
        return float(jnp.mean(value))

    if name == "completeness":
        return None if attribution.relative_delta is None else mean(attribution.relative_delta)
    if name in ("sensitivity_max", "randomisation"):
        # The method's own settings are bound to it, so that none collides with the
        # metric's (both may have `samples`); the metric hands it keys of its own.
        method = functools.partial(function, **{k: v for k, v in options.items() if k != "key"})
        if name == "sensitivity_max":
            return mean(sensitivity_max(method, model, x, target=classes, key=key, samples=min(samples, 16)))
        similarities = randomisation_check(method, model, x, target=classes, key=key)
        return mean(list(similarities.values())[-1])
    if values is None:
        return None
    if name == "infidelity":
        return mean(infidelity(model, x, values, target=classes, key=key, samples=samples))
    if name == "faithfulness_correlation":
        return mean(faithfulness_correlation(model, x, values, target=classes, key=key, samples=samples))
    if name == "deletion_auc":
        return mean(deletion(scorer, x, values, target=classes, per_pixel=image).auc)
    # inserted into a blurred image (RISE), or into the zero baseline for other inputs
    return mean(
        insertion(
            scorer, x, values, target=classes, per_pixel=image, baseline="blur" if image else "zeros"
        ).auc
    )
