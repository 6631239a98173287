"""Does jaxplain compute what Quantus computes? Every metric on the same model and attributions.

The shipped digits CNN runs on both sides: jaxplain's Flax model (NHWC) and its PyTorch
twin with the same weights (`_torch_models.py`), wrapped to take the NCHW input Quantus
requires of torch models; both in float64, and the script first checks that they give
the same logits. The attributions are computed once, by jaxplain, on the test digits
(targets: each example's predicted class) and handed to Quantus as `a_batch` (NHWC ->
NCHW; the digits have one channel, so both flatten in the same order). Where a metric
re-runs the explainer, Quantus gets `explain_func`: the same explainer (saliency) in
torch on the model Quantus passes, which is the twin or Quantus's changed copy of it.

Each row is one of:

* deterministic: both sides see the same perturbations. Where Quantus lets us pass
  them (a `perturb_func`), we either hand it perturbations drawn once in numpy, or wrap
  its own perturbation function to record what it produced, then give the recorded
  perturbations to jaxplain (`perturbations=`). Agreement: max |jaxplain - quantus| /
  max |quantus| over the batch, within the row's tolerance.
* statistical: the metric draws at random and jaxplain cannot take Quantus's draws.
  Both are run with their own randomness (Quantus: numpy's global generator, seeded;
  jaxplain: `key`), one value per example, and compared with a two-sided paired t-test
  on the per-example differences (H0: the same mean); the row passes at p >= 0.01.
  As a scale for the differences, `details` holds jaxplain against itself under
  another key.
* differs: the two libraries define the metric differently (Quantus's source read for
  the definition); the row records both values and says what differs and whose
  definition follows the paper. Where a variant agrees (e.g. Quantus's curve read on
  jaxplain's terms), it is its own deterministic row.

Rows for metrics jaxplain does not have (yet) say so ("missing").

Timing: every row also times each library on the whole batch (`--repeats` interleaved
calls, `_common.interleaved_medians`, after the agreement check's calls have compiled
jaxplain's program; one call where Quantus takes over 5 s), reported per example. Where
Quantus re-runs the explainer it gets the same saliency in torch (`torch_saliency`),
so each library's time includes its own explainer.

    python benchmarks/crosscheck_quantus.py [--quick] [--n 32] [--metrics a,b] [--repeats 3]
                                            [--out benchmarks/results] [--markdown FILE]
    python benchmarks/crosscheck_quantus.py --render results.json [--markdown FILE]

Writes crosscheck_quantus.json into --out, prints the agreement and timing tables, and
with --markdown writes them as Markdown (`markdown_tables`). Exits 1 if a
deterministic row misses its tolerance without a documented difference, or a row
raises; a statistical row with p < 0.01 is reported but does not change the exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
import types
import warnings
from collections.abc import Callable

import jax

# Before any array exists: both libraries in float64, so the differences left are the
# algorithms', not float32 rounding. `--float32` runs both in float32 instead, for the
# timing table: XLA's CPU float64 convolutions are about 10x slower than its float32 ones,
# which no user would run (agreement is then checked at float32's tolerance).
FLOAT32 = "--float32" in sys.argv
if not FLOAT32:
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import quantus  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402

import jaxplain  # noqa: E402
import jaxplain.metrics  # noqa: E402

if not hasattr(np, "trapz"):  # numpy 2.4 removed trapz, which Quantus 0.6.0 calls (IROF's area)
    np.trapz = np.trapezoid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved_medians, machine, write  # noqa: E402
from _torch_models import ChannelsFirst, from_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-3 if FLOAT32 else 1e-6  # deterministic rows, both sides in the same precision
DTYPE = np.float32 if FLOAT32 else np.float64  # of the model, the inputs and the attributions
TORCH_DTYPE = torch.float32 if FLOAT32 else torch.float64
ALPHA = 0.01  # statistical rows
AGREEMENT = (
    "deterministic rows: max relative difference = max|jaxplain - quantus| / max|quantus| over "
    "the batch (the absolute gap where quantus is all 0), NaNs matched by position; statistical "
    "rows: two-sided paired t-test on the per-example differences, pass at p >= 0.01"
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    n: int = 32  # test digits
    repeats: int = 3  # timed calls per library and row
    runs: int = 100  # random draws of the statistical rows (Quantus nr_runs / nr_samples)
    samples: int = 10  # perturbations of the robustness rows


QUICK = Sizes(n=8, repeats=1, runs=20, samples=3)


@dataclasses.dataclass
class Row:
    metric: str  # jaxplain's name
    quantus: str  # Quantus's class
    setting: str
    kind: str  # "deterministic", "statistical", "differs" or "missing"
    jaxplain: list | None = None
    quantus_values: list | None = None
    agreement: dict = dataclasses.field(default_factory=dict)  # max_abs_diff, max_rel_diff or p_value
    tolerance: float | None = None
    passed: bool | None = None
    status: str = ""
    difference: str | None = None  # definitional difference, and whose definition follows the paper
    timing: dict = dataclasses.field(default_factory=dict)  # seconds per example
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Success for the exit code: statistical rows fail it only by crashing."""
        if self.status.startswith("FAIL:"):
            return False
        if self.kind == "deterministic":
            return bool(self.passed) or self.difference is not None
        return True

    def as_json(self) -> dict:
        record = dataclasses.asdict(self)
        record["pass"] = record.pop("passed")
        return record


# --- the shared setup ----------------------------------------------------------------------


def nchw(a) -> np.ndarray:
    a = np.asarray(a, DTYPE)
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if a.ndim == 4 else a


def nhwc(a) -> np.ndarray:
    a = np.asarray(a, DTYPE)
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if a.ndim == 4 else a


def as_list(values) -> list:
    return np.asarray(values, np.float64).tolist()


@dataclasses.dataclass
class Case:
    checkpoint: object
    variables: dict
    model: jaxplain.Model
    x: np.ndarray  # (n, 8, 8, 1)
    y: np.ndarray  # (n,) predicted classes
    masks: np.ndarray  # (n, 8, 8, 1) bool ground truth for localisation
    attributions: dict  # name -> (n, 8, 8, 1) jaxplain values
    sizes: Sizes

    @property
    def xq(self) -> np.ndarray:
        return nchw(self.x)

    def twin(self, variables=None, *, fresh: bool = False) -> torch.nn.Module:
        """The NCHW torch twin (float64, eval mode); the shipped weights' twin is built once
        (so that building it is not timed), unless `fresh`."""
        if variables is None and not fresh and getattr(self, "_twin", None) is not None:
            return self._twin
        inner = from_checkpoint(
            self.checkpoint, self.variables if variables is None else variables, dtype=TORCH_DTYPE
        )
        twin = ChannelsFirst(inner).eval()
        if variables is None and not fresh:
            self._twin = twin
        return twin

    def a(self, name: str) -> np.ndarray:
        return np.asarray(self.attributions[name], np.float64)


def load_case(sizes: Sizes) -> Case:
    checkpoint = jaxplain.io.load_checkpoint(os.path.join(ROOT, "checkpoints", "digits_cnn"))
    variables = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, DTYPE), checkpoint.variables)
    model = jaxplain.Model.from_linen(checkpoint.module, variables)
    data = jaxplain.data.load("digits")
    x = np.asarray(data.x_test[: sizes.n], DTYPE)
    y = np.asarray(np.argmax(np.asarray(model(jnp.asarray(x))), axis=-1), np.int64)
    # ground truth for localisation: each digit's ink (pixels above half the maximum)
    masks = x > 0.5
    xj = jnp.asarray(x)
    attributions = {
        "saliency": np.asarray(jaxplain.saliency(model, xj, target=y).values),
        "integrated_gradients": np.asarray(
            jaxplain.integrated_gradients(model, xj, target=y, steps=32).values
        ),
    }
    case = Case(checkpoint, variables, model, x, y, masks, attributions, sizes)
    with torch.no_grad():
        theirs = case.twin()(torch.as_tensor(case.xq)).numpy()
    gap = float(np.abs(np.asarray(model(xj)) - theirs).max())
    if not gap <= (1e-4 if FLOAT32 else 1e-9):
        raise AssertionError(f"the NCHW torch twin's logits differ from jaxplain's by {gap:.3e}")
    case.logits_gap = gap
    return case


# --- Quantus-side helpers ------------------------------------------------------------------


def jaxplain_explain_func(method: Callable, case: Case, **options) -> Callable:
    """A Quantus `explain_func` that runs a jaxplain method on the jaxplain model (the
    torch model Quantus passes is the twin of the same weights): NCHW in, NCHW out."""

    def explain(model, inputs, targets, **unused):
        values = method(case.model, jnp.asarray(nhwc(inputs)), target=np.asarray(targets), **options).values
        return nchw(values)

    return explain


def torch_saliency(model, inputs, targets, **unused) -> np.ndarray:
    """A Quantus `explain_func` on the torch model it is given: d logit_target / d input."""
    inputs = torch.as_tensor(np.asarray(inputs, DTYPE)).requires_grad_(True)
    outputs = model(inputs)
    chosen = outputs[torch.arange(len(inputs)), torch.as_tensor(np.asarray(targets), dtype=torch.long)]
    (gradient,) = torch.autograd.grad(chosen.sum(), inputs)
    return gradient.detach().numpy()


class Recorder:
    """Wraps a Quantus perturbation function and keeps every array it returns."""

    def __init__(self, function: Callable):
        self.function = function
        self.outputs: list[np.ndarray] = []

    def __call__(self, arr, **kwargs):
        out = self.function(arr=arr, **kwargs)
        self.outputs.append(np.array(out, np.float64))
        return out


class Replay:
    """A Quantus perturbation function that adds given shifts, (S, B, features) flat in
    Quantus's NCHW order, one per call; `reset()` before each metric call."""

    def __init__(self, shifts: np.ndarray):
        self.shifts = shifts
        self.calls = 0

    def reset(self):
        self.calls = 0
        return self

    def __call__(self, arr, indices, **kwargs):
        shift = self.shifts[self.calls % len(self.shifts)]
        self.calls += 1
        return arr + shift.reshape(arr.shape)


def quantus_call(metric, case: Case, a=None, *, s=None, explain_func=None, **kwargs):
    return metric(
        model=case.twin(),
        x_batch=case.xq,
        y_batch=case.y,
        a_batch=None if a is None else nchw(a),
        s_batch=None if s is None else nchw(s),
        channel_first=True,
        explain_func=explain_func,
        device="cpu",
        **kwargs,
    )


def rel_diff(ours, theirs) -> tuple[float, float]:
    """(max abs diff, max abs diff / max |theirs|) over the finite entries; inf if the NaNs
    are not in the same places."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: jaxplain {ours.shape}, quantus {theirs.shape}")
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return float("inf"), float("inf")
    finite = ~np.isnan(theirs)
    if not finite.any():
        return 0.0, 0.0
    gap = float(np.abs(ours[finite] - theirs[finite]).max())
    scale = float(np.abs(theirs[finite]).max())
    return gap, gap / scale if scale > 0 else gap


def paired_test(ours, theirs) -> dict:
    ours, theirs = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    keep = ~(np.isnan(ours) | np.isnan(theirs))
    d = ours[keep] - theirs[keep]
    p = float(scipy.stats.ttest_rel(ours[keep], theirs[keep]).pvalue) if d.std() > 0 else 1.0
    half = float(scipy.stats.t.ppf(0.975, max(len(d) - 1, 1)) * d.std(ddof=1) / np.sqrt(len(d)))
    return {
        "test": "paired t-test (two-sided) on per-example differences",
        "p_value": p,
        "mean_diff": float(d.mean()),
        "ci95_mean_diff": [float(d.mean() - half), float(d.mean() + half)],
        "mean_abs_diff": float(np.abs(d).mean()),
        "examples": int(keep.sum()),
    }


# --- the checks ---------------------------------------------------------------------------


class Checks:
    def __init__(self, case: Case, sizes: Sizes):
        self.case, self.sizes = case, sizes
        self.rows: list[Row] = []

    def record(self, row: Row) -> None:
        self.rows.append(row)
        measure = row.agreement.get("max_rel_diff", row.agreement.get("p_value"))
        shown = "-" if measure is None else f"{measure:.2e}"
        speed = row.timing.get("speedup")
        speed = f"{speed:6.1f}x" if speed else "      -"
        print(f"  {row.metric:28} {row.setting[:44]:44} {shown:>9} {speed}  {row.status[:60]}", flush=True)

    def time(
        self, row: Row, ours: Callable, theirs: Callable, *, warm: bool = True, slow: bool = False
    ) -> None:
        """Seconds per example of each library on the whole batch: interleaved calls, medians.
        `warm`: both were just called with these arguments (jaxplain compiled), so no warm-up
        call; `slow`: Quantus took over 5 s, one timed call each. --repeats 0 skips timing."""
        if self.sizes.repeats <= 0:
            return
        results = interleaved_medians(
            {"jaxplain": ours, "quantus": theirs},
            repeats=1 if slow else self.sizes.repeats,
            warmup=0 if warm else 1,
        )
        n = len(self.case.x)
        row.timing = {
            "jaxplain_s_per_example": results["jaxplain"]["median_s"] / n,
            "quantus_s_per_example": results["quantus"]["median_s"] / n,
            "speedup": results["quantus"]["median_s"] / results["jaxplain"]["median_s"],
            "batch": n,
            "runs": results["jaxplain"]["runs"],
        }

    def deterministic(
        self,
        row: Row,
        ours: Callable,
        theirs: Callable,
        *,
        tolerance: float = TOLERANCE,
        timed: tuple | None = None,
    ) -> None:
        """`ours()` and `theirs()` return arrays of the same shape; `timed` replaces them
        for timing (e.g. without the recording)."""
        row.kind = row.kind or "deterministic"
        row.tolerance = tolerance
        try:
            a = np.asarray(ours(), np.float64)
            began = time.perf_counter()
            b = np.asarray(theirs(), np.float64)
            slow = time.perf_counter() - began > 5
            gap, rel = rel_diff(a, b)
            row.jaxplain, row.quantus_values = as_list(a), as_list(b)
            row.agreement = {"max_abs_diff": gap, "max_rel_diff": rel}
            row.passed = rel <= tolerance
            if row.passed:
                row.status = "pass" if not row.difference else "pass (equal here; differs in general)"
            elif row.difference:
                row.status = "differs (documented)"
            else:
                row.status = "FAIL"
            self.time(row, *(timed or (ours, theirs)), warm=timed is None, slow=slow)
        except Exception as error:  # one broken metric must not hide the others
            traceback.print_exc()
            row.status, row.passed = f"FAIL: {type(error).__name__}: {error}", False
        self.record(row)

    def statistical(self, row: Row, ours: Callable, theirs: Callable, ours_again: Callable) -> None:
        """`ours()`, `theirs()` one value per example; `ours_again()` jaxplain under another key."""
        row.kind, row.tolerance = "statistical", ALPHA
        try:
            a = np.asarray(ours(), np.float64)
            began = time.perf_counter()
            b = np.asarray(theirs(), np.float64)
            slow = time.perf_counter() - began > 5
            again = np.asarray(ours_again(), np.float64)
            row.jaxplain, row.quantus_values = as_list(a), as_list(b)
            row.agreement = paired_test(a, b)
            row.details["jaxplain_vs_jaxplain_other_key"] = paired_test(a, again)
            row.passed = row.agreement["p_value"] >= ALPHA
            row.status = "pass" if row.passed else "p < 0.01"
            self.time(row, ours, theirs, slow=slow)
        except Exception as error:
            traceback.print_exc()
            row.status, row.passed = f"FAIL: {type(error).__name__}: {error}", False
        self.record(row)

    def differs(self, row: Row, ours: Callable, theirs: Callable) -> None:
        """Both values recorded, no pass/fail: the definitions differ (row.difference)."""
        row.kind = "differs"
        try:
            row.jaxplain = as_list(ours())
            began = time.perf_counter()
            row.quantus_values = as_list(theirs())
            slow = time.perf_counter() - began > 5
            row.status = "differs (documented)"
            self.time(row, ours, theirs, slow=slow)
        except Exception as error:
            traceback.print_exc()
            row.status, row.passed = f"FAIL: {type(error).__name__}: {error}", False
        self.record(row)

    def missing(self, metric: str, quantus_name: str) -> None:
        self.record(Row(metric, quantus_name, "-", "missing", status="missing in jaxplain"))


def metric_function(name: str):
    """jaxplain.metrics.<name>, or None while it does not exist."""
    import importlib

    found = getattr(jaxplain.metrics, name, None)
    if found is not None:
        return found
    for module in (
        "localisation",
        "complexity",
        "sparsity",
        "robustness",
        "removal",
        "randomisation",
        "axiomatic",
        "faithfulness",
        "curves",
    ):
        try:
            found = getattr(importlib.import_module(f"jaxplain.metrics.{module}"), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


# --- faithfulness -------------------------------------------------------------------------


def check_infidelity(checks: Checks) -> None:
    case = checks.case
    a = case.a("saliency")
    recorder = Recorder(quantus.functions.perturb_func.batch_baseline_replacement_by_indices)
    black = case.x.reshape(len(case.x), -1).min(axis=1)  # Quantus's "black": each example's minimum

    def theirs(perturb_func=recorder):
        recorder.outputs.clear()
        metric = quantus.Infidelity(
            perturb_patch_sizes=[4], n_perturb_samples=1, perturb_func=perturb_func, disable_warnings=True
        )
        return quantus_call(metric, case, a)

    def ours():
        if not recorder.outputs:
            theirs()
        # Quantus's perturbed inputs, flat NCHW -> NHWC; I = x - x_perturbed
        perturbed = np.stack([nhwc(out.reshape(case.xq.shape)) for out in recorder.outputs])
        return jaxplain.metrics.infidelity(
            case.model,
            jnp.asarray(case.x),
            a,
            target=case.y,
            key=None,
            perturbations=case.x[None] - perturbed,
            multiply_by_inputs=False,
            baseline=black[:, None, None, None],
        )

    theirs()
    checks.deterministic(
        Row(
            "infidelity",
            "Infidelity",
            "saliency, 4x4 patches to black, Quantus's perturbations",
            "",
            difference=None,
            details={
                "note": "Quantus's default perturbation is deterministic: the 4x4 patches set to the "
                "example's minimum one after another, cumulatively (I_k = x - x with patches 1..k "
                "removed), each of its n_perturb_samples repeats identical; jaxplain draws random "
                "subsets (Yeh et al.: I is a random variable). Given Quantus's I_k, both compute "
                "mean_k (I_k . phi - (F(x) - F(x - I_k)))^2."
            },
        ),
        ours,
        theirs,
    )


def check_faithfulness_correlation(checks: Checks) -> None:
    case, sizes = checks.case, checks.sizes
    a = case.a("integrated_gradients")
    subset = 16

    def theirs():
        np.random.seed(0)
        metric = quantus.FaithfulnessCorrelation(
            nr_runs=sizes.runs, subset_size=subset, return_aggregate=False, disable_warnings=True
        )
        return quantus_call(metric, case, a)

    def ours(seed=0):
        return jaxplain.metrics.faithfulness_correlation(
            case.model,
            jnp.asarray(case.x),
            a,
            target=case.y,
            key=jax.random.key(seed),
            subset_size=subset,
            samples=sizes.runs,
        )

    checks.statistical(
        Row(
            "faithfulness_correlation",
            "FaithfulnessCorrelation",
            f"IG, {subset} of 64 pixels to 0, {sizes.runs} subsets",
            "statistical",
            details={
                "note": "Quantus normalises the attribution by its max (no effect on Pearson's r) and "
                "returns the mean over examples by default (return_aggregate=True); here per example"
            },
        ),
        ours,
        theirs,
        lambda: ours(seed=1),
    )


def check_sensitivity_n(checks: Checks) -> None:
    case = checks.case
    a = case.a("integrated_gradients")
    sizes_n = (1, 4, 16)

    def theirs():
        metric = quantus.SensitivityN(
            n_max_percentage=0.5, return_aggregate=False, normalise=False, disable_warnings=True
        )
        return np.asarray(quantus_call(metric, case, a))[[n - 1 for n in sizes_n]]

    def ours():
        values = jaxplain.metrics.sensitivity_n(
            case.model.with_output("probs"),  # Quantus's SensitivityN uses softmax by default
            jnp.asarray(case.x),
            a,
            target=case.y,
            key=jax.random.key(0),
            subset_sizes=sizes_n,
            samples=checks.sizes.runs,
        )
        return np.nanmean(np.asarray(values), axis=0)

    checks.differs(
        Row(
            "sensitivity_n",
            "SensitivityN",
            f"IG, n = {sizes_n}: jaxplain mean over examples vs Quantus",
            "differs",
            difference=(
                "Quantus removes the top-ranked pixels cumulatively, one step at a time, and for each "
                "n correlates over the EXAMPLES of the batch the output drop after n steps with the "
                "attribution of the n-th step's pixels only; jaxplain follows Ancona et al. 2018: per "
                "example, the Pearson correlation over random subsets of size n between the subset's "
                "attribution sum and the output drop. jaxplain follows the paper."
            ),
        ),
        ours,
        theirs,
    )


def check_pixel_flipping(checks: Checks) -> None:
    case = checks.case
    a = case.a("saliency")
    black = case.x.reshape(len(case.x), -1).min(axis=1)

    probs = case.model.with_output("probs")

    def theirs():
        metric = quantus.PixelFlipping(disable_warnings=True)  # softmax=True by default
        return np.asarray(quantus_call(metric, case, a))

    def ours():
        curve = jaxplain.metrics.pixel_flipping(
            probs, jnp.asarray(case.x), a, target=case.y, baseline=black[:, None, None, None]
        )
        return np.asarray(curve.scores)[:, 1:]  # Quantus's curve has no point at x itself

    checks.deterministic(
        Row(
            "pixel_flipping",
            "PixelFlipping",
            "saliency, one pixel a step to black, softmax, the 64-point curve",
            "",
            details={
                "note": "the curves agree point by point; the areas differ by convention: Quantus's "
                "return_auc_per_sample is np.trapz over the G points after each flip with dx = 1, "
                "jaxplain's auc the trapezoid over the fraction of groups flipped, G + 1 points "
                "from x itself, on [0, 1]"
            },
        ),
        ours,
        theirs,
    )


def check_road(checks: Checks) -> None:
    case = checks.case
    a = case.a("saliency")
    percentages = [10, 30, 50, 70, 90]
    recorder = Recorder(quantus.functions.perturb_func.noisy_linear_imputation)

    def theirs_accuracy(perturb_func=recorder):
        recorder.outputs.clear()
        metric = quantus.ROAD(
            percentages=percentages, noise=0.0, perturb_func=perturb_func, disable_warnings=True
        )
        return quantus_call(metric, case, a)

    def theirs():
        # the target logits of the inputs Quantus imputed (Quantus itself reports accuracy)
        theirs_accuracy()
        perturbed = np.stack(recorder.outputs).reshape((len(percentages), len(case.x)) + case.xq.shape[1:])
        with torch.no_grad():
            twin = case.twin()
            logits = np.stack([twin(torch.as_tensor(p)).numpy() for p in perturbed])  # (P, B, classes)
        return logits[:, np.arange(len(case.x)), case.y].T

    def ours(noise=0.0):
        return jaxplain.metrics.road(
            case.model,
            jnp.asarray(case.x),
            a,
            target=case.y,
            key=jax.random.key(0),
            percentages=percentages,
            imputation_noise=noise,
        ).scores

    accuracy = theirs_accuracy()
    checks.deterministic(
        Row(
            "road",
            "ROAD",
            "saliency, MoRF, noise 0, target logit of the imputed inputs",
            "",
            difference=None,
            details={
                "quantus_accuracy_per_percentage": {str(k): float(v) for k, v in accuracy.items()},
                "note": "Quantus scores ROAD by the accuracy over the batch (argmax == label), as the "
                "ROAD paper does; jaxplain by each example's target output (a per-example curve). "
                "The rows compare the imputed inputs Quantus made (recorded from its "
                "noisy_linear_imputation, noise 0) by their target logits; jaxplain solves the same "
                "linear system by conjugate gradients (tol 1e-6), Quantus by a sparse direct solve",
            },
        ),
        ours,
        theirs,
        tolerance=1e-4,
        timed=(lambda: ours(0.01), lambda: theirs_accuracy(None)),
    )


def check_completeness(checks: Checks) -> None:
    case = checks.case
    ig = jaxplain.integrated_gradients(case.model, jnp.asarray(case.x), target=case.y, steps=32)

    def theirs():
        metric = quantus.Completeness(normalise=False, disable_warnings=True)
        return np.asarray(quantus_call(metric, case, np.asarray(ig.values)), np.float64)

    def ours():
        return jaxplain.metrics.completeness(ig)

    checks.differs(
        Row(
            "completeness",
            "Completeness",
            "IG 32 steps from 0: jaxplain relative gap, Quantus bool",
            "differs",
            difference=(
                "Quantus returns whether sum(phi) == F(x) - F(black) holds exactly (a float equality, "
                "False for any attribution with rounding error); jaxplain the relative gap "
                "|sum(phi) - (F(x) - F(baseline))| / |F(x) - F(baseline)| (0 is complete). The paper "
                "(Sundararajan et al. 2017) states the property; jaxplain measures how far from it."
            ),
        ),
        ours,
        theirs,
    )


def _black(case: Case) -> np.ndarray:
    """Quantus's "black" baseline as a jaxplain baseline: each example's minimum."""
    return case.x.reshape(len(case.x), -1).min(axis=1)[:, None, None, None]


def _revealing(x_flat: np.ndarray) -> Callable:
    """A Quantus perturb_func that puts x's own values at `indices` (AIX360's monotonicity
    reveals features of x on the baseline; Quantus's default perturb_func re-writes the
    baseline there)."""

    def reveal(arr, indices, **kwargs):
        out = np.array(arr, copy=True)
        rows = np.arange(len(out))[:, None]
        out[rows, indices] = x_flat[rows, indices]
        return out

    return reveal


def check_monotonicity(checks: Checks) -> None:
    case = checks.case
    function = metric_function("monotonicity")
    probs = case.model.with_output("probs")
    a = np.abs(case.a("saliency"))

    def ours():
        return function(probs, jnp.asarray(case.x), a, target=case.y, baseline=_black(case))

    def theirs(reveal=True):
        options = {"perturb_func": _revealing(case.xq.reshape(len(case.x), -1))} if reveal else {}
        metric = quantus.Monotonicity(disable_warnings=True, **options)  # abs, softmax, black
        return np.asarray(quantus_call(metric, case, a), np.float64)

    checks.deterministic(
        Row(
            "monotonicity",
            "Monotonicity",
            "|saliency|, softmax, black, Quantus given a revealing perturb_func",
            "",
            details={"note": "both reveal x's pixels on the black image in increasing |phi| order"},
        ),
        ours,
        theirs,
    )
    checks.differs(
        Row(
            "monotonicity",
            "Monotonicity",
            "|saliency|, softmax, black, Quantus's default perturb_func",
            "differs",
            difference=(
                "with its default perturb_func (baseline replacement) Quantus 0.6.0 'reveals' a feature "
                "by writing the baseline value into the baseline image, so the image never changes, every "
                "step scores F(baseline) and every example is monotonic (True); jaxplain reveals x's "
                "values, as Arya et al. (AIX360) and Luss et al. define the metric (jaxplain follows the "
                "paper; Quantus agrees when given a perturb_func that reveals, above)."
            ),
        ),
        ours,
        lambda: theirs(reveal=False),
    )


def check_monotonicity_correlation(checks: Checks) -> None:
    case, sizes = checks.case, checks.sizes
    function = metric_function("monotonicity_correlation")
    probs = case.model.with_output("probs")
    a = np.abs(case.a("saliency"))
    samples = max(4, sizes.runs // 10)  # Quantus predicts 64 x samples batches, one at a time

    def theirs():
        np.random.seed(0)
        metric = quantus.MonotonicityCorrelation(nr_samples=samples, disable_warnings=True)
        return quantus_call(metric, case, a)

    def ours(seed=0):
        return function(
            probs, jnp.asarray(case.x), a, target=case.y, key=jax.random.key(seed), samples=samples
        )

    checks.statistical(
        Row(
            "monotonicity_correlation",
            "MonotonicityCorrelation",
            f"|saliency|, softmax, U[0, 1] replacements, {samples} draws per pixel",
            "statistical",
            details={
                "note": "Quantus scales the squared changes by 1 / F(x)^2 (a constant per example: no "
                "effect on Spearman's rho) and draws one uniform value per example and call"
            },
        ),
        ours,
        theirs,
        lambda: ours(seed=1),
    )


def check_faithfulness_estimate(checks: Checks) -> None:
    case = checks.case
    function = metric_function("faithfulness_estimate")
    a = case.a("integrated_gradients")

    def ours():
        return function(case.model, jnp.asarray(case.x), a, target=case.y, baseline=_black(case))

    def theirs():
        metric = quantus.FaithfulnessEstimate(disable_warnings=True)
        return quantus_call(metric, case, a)

    checks.deterministic(
        Row("faithfulness_estimate", "FaithfulnessEstimate", "IG, each pixel alone to black, logits", ""),
        ours,
        theirs,
    )


def check_irof(checks: Checks) -> None:
    """Quantus's own SLIC segments given to jaxplain; baseline 0 on both sides (Quantus's
    default "mean" is the mean of the whole current batch, re-taken at every step)."""
    case = checks.case
    function = metric_function("irof")
    probs = case.model.with_output("probs")
    a = case.a("saliency")
    segments = np.stack(
        [
            quantus.helpers.utils.get_superpixel_segments(img=x.astype("double"), segmentation_method="slic")
            for x in case.x
        ]
    ).astype(np.int32)
    recorder = Recorder(quantus.functions.perturb_func.baseline_replacement_by_mask)

    def theirs(baseline=0.0):
        recorder.outputs.clear()
        metric = quantus.IROF(
            perturb_baseline=baseline, perturb_func=recorder, return_aggregate=False, disable_warnings=True
        )
        return np.asarray(quantus_call(metric, case, a), np.float64)

    def theirs_in_jaxplain_terms():
        # Quantus's curve p_k = F(x^(k)) / F(x), k = 1..G_b, from the inputs it made, read as
        # jaxplain's area: 1 - (1/G) [ (1 + p_1) / 2 + trapz(p_1..p_G) ]
        theirs()
        with torch.no_grad():
            twin = case.twin()
            p = np.stack([torch.softmax(twin(torch.as_tensor(out)), -1).numpy() for out in recorder.outputs])
            clean = torch.softmax(twin(torch.as_tensor(case.xq)), -1).numpy()
        rows = np.arange(len(case.x))
        p = p[:, rows, case.y] / clean[rows, case.y]  # (steps, B)
        counts = segments.reshape(len(case.x), -1).max(axis=1) + 1
        values = []
        for b, g in enumerate(counts):
            curve = np.concatenate([[1.0], p[:g, b]])
            values.append(1 - np.trapezoid(curve, dx=1.0 / g))
        return np.asarray(values)

    def ours():
        return function(probs, jnp.asarray(case.x), a, target=case.y, segments=segments, baseline=0.0)

    checks.deterministic(
        Row(
            "irof",
            "IROF",
            "saliency, Quantus's SLIC segments, baseline 0, softmax, read on [0, 1]",
            "",
            details={
                "segments_per_example": (segments.reshape(len(case.x), -1).max(axis=1) + 1).tolist(),
                "note": "jaxplain's area is normalised to [0, 1] and starts at k = 0 (Rieger & Hansen's "
                "area over the relative curve); Quantus returns G_b - trapz(p_1..p_G) (dx = 1, no k = 0 "
                "point). The row reads Quantus's curve (from the inputs it perturbed, recorded) in "
                "jaxplain's terms; Quantus's own values are in quantus_own",
            },
        ),
        ours,
        theirs_in_jaxplain_terms,
        timed=(ours, theirs),
    )
    checks.rows[-1].details["quantus_own"] = as_list(theirs())
    checks.differs(
        Row(
            "irof",
            "IROF",
            "saliency, Quantus's default baseline 'mean' vs jaxplain 'mean'",
            "differs",
            difference=(
                "baseline 'mean': Quantus replaces a segment by the mean of the WHOLE current batch "
                "(every example, already-removed segments included, re-taken at each step), jaxplain by "
                "the example's own mean; and Quantus returns the area in units of segments, "
                "G_b - trapz(p_1..p_G), jaxplain on [0, 1] from k = 0. Rieger & Hansen use the "
                "per-image mean and a normalised area (jaxplain follows the paper)."
            ),
        ),
        lambda: function(probs, jnp.asarray(case.x), a, target=case.y, segments=segments),
        lambda: theirs("mean"),
    )


def _patch_curve(
    checks: Checks, metric: str, quantus_name: str, quantus_options: dict, options: dict, drop: bool
):
    case = checks.case
    function = metric_function(metric)
    probs = case.model.with_output("probs")
    a = case.a("saliency")

    def ours():
        curve = function(probs, jnp.asarray(case.x), a, target=case.y, baseline=_black(case), **options)
        return np.asarray(curve.scores)[:, 1:]  # Quantus has no point at k = 0

    def theirs():
        metric_object = getattr(quantus, quantus_name)(disable_warnings=True, **quantus_options)
        return np.asarray(quantus_call(metric_object, case, a), np.float64)

    checks.deterministic(
        Row(
            metric,
            quantus_name,
            "saliency, 2x2 patches to black, softmax, the curve" + (" of drops" if drop else ""),
            "",
            details={
                "note": "the curves agree point by point (Quantus has no k = 0 point); Quantus's "
                "default patch_size 8 is the whole digit, so 2 here"
            },
        ),
        ours,
        theirs,
    )


def check_selectivity(checks: Checks) -> None:
    _patch_curve(checks, "selectivity", "Selectivity", {"patch_size": 2}, {"patch_size": 2}, False)


def check_region_perturbation(checks: Checks) -> None:
    _patch_curve(
        checks,
        "region_perturbation",
        "RegionPerturbation",
        {"patch_size": 2, "regions_evaluation": 16},
        {"patch_size": 2, "regions": 16},
        True,
    )
    checks.rows[-1].details["defaults"] = (
        "Quantus's default baseline is 'black' (each example's minimum), jaxplain's 'uniform' "
        "(U[min x, max x] per feature), Samek et al.'s"
    )


def check_sufficiency(checks: Checks) -> None:
    case = checks.case
    function = metric_function("sufficiency")
    raw = case.a("saliency")
    magnitude = np.abs(raw)
    scaled = magnitude / magnitude.reshape(len(raw), -1).max(axis=1)[:, None, None, None]

    for a, label, difference in (
        (scaled, "|saliency| / its own max (both normalisations no-ops), threshold 0.9", None),
        (
            raw,
            "saliency as computed (Quantus normalises by the batch max), threshold 0.9",
            "Quantus's normalise=True divides every |phi| by the largest of the whole batch, jaxplain "
            "each by its own largest; the distances, and so the neighbours within the threshold, "
            "differ. Dasgupta et al. do not fix a normalisation; jaxplain's makes an example's "
            "explanation independent of the batch.",
        ),
    ):

        def ours(a=a):
            return function(case.model, jnp.asarray(case.x), a, target="predicted", threshold=0.9)

        def theirs(a=a):
            # seuclidean, abs, normalise; Quantus's default threshold 0.6 leaves the digits without
            # neighbours (every score 0), 0.9 gives some
            metric = quantus.Sufficiency(threshold=0.9, disable_warnings=True)
            return quantus_call(metric, case, a)

        checks.deterministic(
            Row("sufficiency", "Sufficiency", label, "", difference=difference), ours, theirs
        )


def check_non_sensitivity(checks: Checks) -> None:
    case = checks.case
    function = metric_function("non_sensitivity")
    probs = case.model.with_output("probs")
    a = np.abs(case.a("integrated_gradients"))
    a = a / a.reshape(len(a), -1).max(axis=1)[:, None, None, None]

    def ours():
        return function(probs, jnp.asarray(case.x), a, target=case.y, baseline=_black(case))

    def theirs():
        metric = quantus.NonSensitivity(disable_warnings=True)  # abs, normalise, eps 1e-5, black, softmax
        return np.asarray(quantus_call(metric, case, a), np.float64)

    checks.deterministic(
        Row(
            "non_sensitivity",
            "NonSensitivity",
            "|IG| / its own max, eps 1e-5, each pixel to black, softmax",
            "",
            details={
                "note": "Quantus normalises by the batch's largest |phi|, jaxplain by the example's: "
                "equal here (each example's maximum is 1)"
            },
        ),
        ours,
        theirs,
    )


def check_input_invariance(checks: Checks) -> None:
    """Quantus shifts the twin's first layer (add_mean_shift_to_first_layer) and explains with
    `torch_saliency` on the shifted torch model; jaxplain shifts its own (shifted_first_layer)."""
    case = checks.case
    function = metric_function("input_invariance")
    from jaxplain.metrics import axiomatic

    a = case.a("saliency")
    seen: list[np.ndarray] = []

    def recording(model, inputs, targets, **kwargs):
        seen.append(torch_saliency(model, inputs, targets))
        return seen[-1]

    def ours():
        return function(jaxplain.saliency, case.model, jnp.asarray(case.x), target=case.y, shift=-1.0)

    inner = from_checkpoint(case.checkpoint, case.variables, dtype=TORCH_DTYPE)
    twin = ChannelsFirst(inner, first=inner.convs[0]).eval()  # Quantus shifts named_modules()[1]

    def theirs():
        metric = quantus.InputInvariance(disable_warnings=True)  # shift -1, atol 1e-4
        return np.asarray(
            metric(
                model=twin,
                x_batch=case.xq,
                y_batch=case.y,
                a_batch=nchw(a),
                channel_first=True,
                explain_func=recording,
                device="cpu",
            ),
            np.float64,
        )

    checks.deterministic(
        Row("input_invariance", "InputInvariance", "saliency, shift -1, atol 1e-4", ""), ours, theirs
    )
    # the shifted models' explanations themselves, as evidence for the bools above
    shifted = axiomatic.shifted_first_layer(case.model, -1.0)
    ours_shifted = np.asarray(jaxplain.saliency(shifted, jnp.asarray(case.x - 1.0), target=case.y).values)
    if seen:
        gap, rel = rel_diff(nchw(ours_shifted), seen[-1])
        checks.rows[-1].details["shifted_explanations_max_rel_diff"] = rel
        checks.rows[-1].details["note"] = (
            "jaxplain shifts the first convolution's bias by -shift * sum(W) (the interior value); "
            "Quantus sets b' = 2b - min over positions of conv(shift)[i] (torch.unique's first, the "
            "smallest, which with padding=1 can be a border value); with 'SAME' convolutions the "
            "border outputs differ in both libraries, so saliency is not invariant there; "
            "shifted_explanations_max_rel_diff compares the two libraries' explanations of their "
            "shifted models"
        )


# --- robustness -------------------------------------------------------------------------


def _replayed_robustness(
    checks: Checks,
    metric: str,
    quantus_name: str,
    setting: str,
    shifts: np.ndarray,
    options: dict,
    quantus_options: dict,
    *,
    tolerance: float = TOLERANCE,
    note: str | None = None,
    difference: str | None = None,
    method: Callable = jaxplain.saliency,
    nan_to: float | None = None,
) -> None:
    """A robustness metric on the same perturbations: `shifts` (S, B, ...) NHWC are given to
    jaxplain (`perturbations=`) and replayed to Quantus (its perturb_func adds shift s at its
    s-th call); the clean explanation is Quantus's `a_batch`, the perturbed ones come from
    `explain_func`, the same jaxplain explainer."""
    case = checks.case
    function = metric_function(metric)
    samples = len(shifts)
    replay = Replay(np.stack([nchw(s_).reshape(len(case.x), -1) for s_ in shifts]))
    a = np.asarray(method(case.model, jnp.asarray(case.x), target=case.y).values)
    explain = torch_saliency if method is jaxplain.saliency else jaxplain_explain_func(method, case)

    def theirs():
        found = getattr(quantus, quantus_name)(
            nr_samples=samples, perturb_func=replay.reset(), disable_warnings=True, **quantus_options
        )
        return quantus_call(found, case, a, explain_func=explain)

    def ours():
        values = function(
            method, case.model, jnp.asarray(case.x), target=case.y, key=None, perturbations=shifts, **options
        )
        values = np.asarray(values, np.float64)
        return values if nan_to is None else np.where(np.isnan(values), nan_to, values)

    row = Row(metric, quantus_name, setting, "", difference=difference)
    if note:
        row.details["note"] = note
    checks.deterministic(row, ours, theirs, tolerance=tolerance)


def _uniform(case: Case, samples: int, low: float, high: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=(samples,) + case.x.shape)


def check_max_sensitivity(checks: Checks) -> None:
    case, sizes = checks.case, checks.sizes
    name = "max_sensitivity" if metric_function("max_sensitivity") is not None else "sensitivity_max"
    for radius in (0.02, 0.2):
        _replayed_robustness(
            checks,
            name,
            "MaxSensitivity",
            f"saliency, uniform radius {radius}, {sizes.samples} draws, same draws",
            _uniform(case, sizes.samples, -radius, radius, 1),
            {},
            {},
            note="defaults differ: Quantus draws uniform noise in [-0.2, 0.2] (lower_bound=0.2), 200 "
            "samples; jaxplain (as Captum and Yeh et al.'s code) radius 0.02, 10 samples. Quantus "
            "skips (nanmax) no sample by default (return_nan_when_prediction_changes=False)",
        )


def check_avg_sensitivity(checks: Checks) -> None:
    case, sizes = checks.case, checks.sizes
    _replayed_robustness(
        checks,
        "avg_sensitivity",
        "AvgSensitivity",
        f"saliency, uniform radius 0.2, {sizes.samples} draws, same draws",
        _uniform(case, sizes.samples, -0.2, 0.2, 2),
        {},
        {},
    )


def check_local_lipschitz_estimate(checks: Checks) -> None:
    case, sizes = checks.case, checks.sizes
    noise = np.random.default_rng(4).normal(0.0, 0.1, size=(sizes.samples,) + case.x.shape)
    _replayed_robustness(
        checks,
        "local_lipschitz_estimate",
        "LocalLipschitzEstimate",
        f"saliency, gaussian sigma 0.1, {sizes.samples} draws, same draws",
        noise,
        {},
        {"normalise": False},
        note="Quantus adds 1e-10 to the denominator",
        tolerance=TOLERANCE,
    )
    _replayed_robustness(
        checks,
        "local_lipschitz_estimate",
        "LocalLipschitzEstimate",
        "saliency, Quantus's default normalise=True (batch max)",
        noise,
        {},
        {},
        difference=(
            "Quantus's default normalise=True divides the clean explanations by the largest |phi| of "
            "the batch and each batch of perturbed explanations by ITS largest |phi|, so the ratio mixes "
            "two scales; jaxplain compares the explanations as they are, as Alvarez-Melis & Jaakkola "
            "define the estimate (jaxplain follows the paper)."
        ),
    )


def _relative_stability(checks: Checks, metric: str, quantus_name: str, options: dict, quantus_options: dict):
    case, sizes = checks.case, checks.sizes
    # Quantus's default draws: uniform in [0.02, 0.2], a positive shift of every feature
    shifts = _uniform(case, sizes.samples, 0.02, 0.2, 5)
    _replayed_robustness(
        checks,
        metric,
        quantus_name,
        f"saliency, uniform [0.02, 0.2] (Quantus's), {sizes.samples} draws, same draws",
        shifts,
        options,
        quantus_options,
        tolerance=TOLERANCE,
        note="Quantus puts NaN into a sample where the prediction changes and then takes np.max, "
        "so one changed sample makes the example NaN; jaxplain takes the maximum over the samples "
        "that keep the prediction, as Agarwal et al. define it (NaN only when none does). On these "
        "draws the prediction never changed, or the rows would show NaN mismatches",
    )


def check_relative_input_stability(checks: Checks) -> None:
    _relative_stability(checks, "relative_input_stability", "RelativeInputStability", {}, {})


def check_relative_output_stability(checks: Checks) -> None:
    _relative_stability(checks, "relative_output_stability", "RelativeOutputStability", {}, {})


def check_relative_representation_stability(checks: Checks) -> None:
    _relative_stability(
        checks,
        "relative_representation_stability",
        "RelativeRepresentationStability",
        {"layer": "Dense_0"},
        {"layer_names": ["inner.hidden"]},
    )


def check_continuity(checks: Checks) -> None:
    case = checks.case
    function = metric_function("continuity")
    explain = torch_saliency
    width = case.x.shape[2]
    for steps, explicit in ((8, False), (5, False)):
        dx = (2 * width + 1) // steps
        shifts = tuple(-width + k * dx for k in range(1, steps + 1))  # Quantus's translations

        def theirs(steps=steps):
            metric = quantus.Continuity(nr_steps=steps, abs=False, normalise=False, disable_warnings=True)
            return quantus_call(metric, case, None, explain_func=explain)

        def ours(steps=steps, shifts=shifts, explicit=explicit):
            options = {"shifts": shifts} if explicit else {"steps": steps}
            return function(jaxplain.saliency, case.model, jnp.asarray(case.x), target=case.y, **options)

        given = "jaxplain given Quantus's shifts" if explicit else "jaxplain's own steps="
        checks.deterministic(
            Row(
                "continuity",
                "Continuity",
                f"saliency, {steps} steps, {given}",
                "",
                details={
                    "quantus_shifts": list(shifts),
                    "note": "Quantus translates by -W + k floor((2W + 1) / steps), k = 1..steps (a shift "
                    "beyond W raises an IndexError in Quantus, e.g. 17 steps on 8 pixels), adds 1e-9 to "
                    "the denominator; its abs and normalise (both True by default) are off here",
                },
            ),
            ours,
            theirs,
        )


def check_consistency(checks: Checks) -> None:
    """Explanations discretised to their top-1 feature (jaxplain "top_k", k = 1); Quantus gets
    the same discretisation as its `discretise_func`."""
    case = checks.case
    function = metric_function("consistency")
    a = case.a("saliency")

    def top_1(a, **kwargs):
        return int(np.argmax(np.abs(a)))

    def theirs():
        metric = quantus.Consistency(discretise_func=top_1, abs=False, normalise=False, disable_warnings=True)
        return quantus_call(metric, case, a)

    def ours():
        values = np.asarray(function(case.model, jnp.asarray(case.x), a, discretisation="top_k", k=1))
        return np.where(np.isnan(values), 0.0, values)

    checks.deterministic(
        Row(
            "consistency",
            "Consistency",
            "saliency, top-1 feature as the discrete explanation",
            "",
            details={
                "note": "Quantus scores 0 where no other example shares the explanation (it divides by "
                "count + 1e-9), jaxplain NaN; jaxplain's NaNs are read as 0 here. Quantus's default "
                "discretisation top_n_sign takes the signs of the FIRST n = 5 features in index order "
                "(not the top-ranked ones); jaxplain offers the top-k set and the sign of every "
                "feature (Dasgupta et al. leave the discretisation open)"
            },
        ),
        ours,
        theirs,
        tolerance=TOLERANCE,
    )


# --- randomisation ------------------------------------------------------------------------


def jaxplain_randomised(case: Case, key):
    """The parameters `model_parameter_randomisation` draws for `key` (its own split and
    draw: `redraw_key, method_key = split(key)`, every floating leaf redrawn once from a
    normal with the leaf's mean and standard deviation), as a torch twin."""
    from jaxplain.metrics import randomisation as module

    leaves, treedef, names, _ = module._layers(case.model.params)
    redraw_key, _ = jax.random.split(key)
    floating = [i for i, n in enumerate(names) if n is not None]
    redrawn = dict(zip(floating, module._redrawn([leaves[i] for i in floating], redraw_key)))
    params = jax.tree_util.tree_unflatten(treedef, [redrawn.get(i, leaf) for i, leaf in enumerate(leaves)])
    return case.twin(params)


def _load_redrawn(self):
    with torch.no_grad():
        for name, value in self._redrawn.items():
            getattr(self, name).copy_(value)


def hooked_twin(case: Case, random_twin) -> torch.nn.Module:
    """A fresh twin whose layers, when Quantus redraws them (`reset_parameters()`), load the
    values jaxplain drew (`random_twin`'s); a bound method, so Quantus's deepcopy of the
    model rebinds it to the copy's layers."""
    twin = case.twin(fresh=True)
    sources = dict(random_twin.named_modules())
    for name, layer in twin.named_modules():
        if hasattr(layer, "reset_parameters"):
            layer._redrawn = {k: v.detach().clone() for k, v in sources[name].named_parameters()}
            layer.reset_parameters = types.MethodType(_load_redrawn, layer)
    return twin


def _stored_layers(case: Case) -> list:
    from jaxplain.metrics import randomisation as module

    return module._layers(case.model.params)[3]


MPRT_NOTE = (
    "Quantus redraws a layer by its reset_parameters() (torch's default initialisation, "
    "Kaiming-uniform), jaxplain from a normal with the layer's own mean and standard deviation; "
    "here Quantus's resets load jaxplain's draws (a hook on reset_parameters), so both see the same "
    "randomised models. Adebayo et al. re-initialise from the initialisation distribution: "
    "Quantus is closer to the paper on the draw; the cascade, similarity and |phi| agree"
)


def check_model_parameter_randomisation(checks: Checks) -> None:
    case = checks.case
    key = jax.random.key(0)
    a = case.a("saliency")
    random_twin = jaxplain_randomised(case, key)
    stored = _stored_layers(case)
    function = metric_function("model_parameter_randomisation")
    for order in ("top_down", "bottom_up", "independent"):
        layers = stored[::-1] if order == "top_down" else stored

        def theirs(order=order):
            metric = quantus.MPRT(layer_order=order, disable_warnings=True)  # Spearman, abs=True
            scores = metric(
                model=hooked_twin(case, random_twin),
                x_batch=case.xq,
                y_batch=case.y,
                a_batch=nchw(a),
                channel_first=True,
                explain_func=torch_saliency,
                device="cpu",
            )
            return np.stack([scores[k] for k in scores if k != "original"])  # (layers, B)

        def ours(order=order, layers=layers):
            if function is not None:
                found = function(
                    jaxplain.saliency,
                    case.model,
                    jnp.asarray(case.x),
                    target=case.y,
                    key=key,
                    layer_order=order,
                )
            else:  # older releases: the top-down cascade only
                found = jaxplain.metrics.randomisation_check(
                    jaxplain.saliency, case.model, jnp.asarray(case.x), target=case.y, key=key, absolute=True
                )
            return np.stack([np.asarray(found[k]) for k in layers])

        if function is None and order != "top_down":
            continue
        checks.deterministic(
            Row(
                "model_parameter_randomisation" if function is not None else "randomisation_check",
                "MPRT",
                f"saliency, |phi|, {order}, jaxplain's redrawn weights",
                "",
                details={"layers": list(layers), "note": MPRT_NOTE},
            ),
            ours,
            theirs,
        )


def check_efficient_mprt(checks: Checks) -> None:
    case = checks.case
    key = jax.random.key(0)
    random_twin = jaxplain_randomised(case, key)
    function = metric_function("efficient_mprt")

    def theirs():
        metric = quantus.EfficientMPRT(disable_warnings=True)  # discrete entropy, 100 bins, bottom_up
        return metric(
            model=hooked_twin(case, random_twin),
            x_batch=case.xq,
            y_batch=case.y,
            a_batch=nchw(case.a("saliency")),
            channel_first=True,
            explain_func=torch_saliency,
            device="cpu",
        )

    def ours():
        return function(jaxplain.saliency, case.model, jnp.asarray(case.x), target=case.y, key=key)

    checks.deterministic(
        Row(
            "efficient_mprt",
            "EfficientMPRT",
            "saliency, discrete entropy (100 bins), all layers redrawn",
            "",
            details={
                "note": "the same fully randomised model on both sides (Quantus's resets load "
                "jaxplain's draws); Quantus scores the original explanation it recomputes with "
                "explain_func, not a_batch. " + MPRT_NOTE
            },
        ),
        ours,
        theirs,
    )


def check_smooth_mprt(checks: Checks) -> None:
    """Same randomised weights; the noise differs (Quantus: numpy's generator, fresh draws for
    every model; jaxplain: `key`, the same draws for every model): a paired test per layer."""
    case, sizes = checks.case, checks.sizes
    key = jax.random.key(0)
    random_twin = jaxplain_randomised(case, key)
    stored = _stored_layers(case)
    function = metric_function("smooth_mprt")
    samples = max(2, sizes.runs // 2)

    def saliency_explain(model, inputs, targets, **unused):
        return torch_saliency(model, inputs, targets)

    def theirs(seed=0):
        np.random.seed(seed)
        original = quantus.explain
        quantus.explain = saliency_explain  # sMPRT calls quantus.explain, not explain_func
        try:
            metric = quantus.SmoothMPRT(nr_samples=samples, disable_warnings=True)  # bottom_up, abs
            scores = metric(
                model=hooked_twin(case, random_twin),
                x_batch=case.xq,
                y_batch=case.y,
                a_batch=None,
                channel_first=True,
                explain_func=saliency_explain,
                device="cpu",
            )
        finally:
            quantus.explain = original
        return np.asarray(scores[list(scores)[-1]])  # every layer redrawn

    def ours(seed=0):
        found = function(
            jaxplain.saliency,
            case.model,
            jnp.asarray(case.x),
            target=case.y,
            key=key,
            samples=samples,
            noise_scale=0.1,
        )
        return np.asarray(found[stored[-1]])

    def ours_again():
        found = function(
            jaxplain.saliency,
            case.model,
            jnp.asarray(case.x),
            target=case.y,
            key=jax.random.key(1),
            samples=samples,
            noise_scale=0.1,
        )
        return np.asarray(found[stored[-1]])

    checks.statistical(
        Row(
            "smooth_mprt",
            "SmoothMPRT",
            f"saliency, {samples} noisy copies, last layer of the bottom-up cascade",
            "statistical",
            difference=(
                "Quantus averages N - 1 noisy copies and the clean input (its last sample has no noise) "
                "and draws fresh noise for the original and every randomised model; jaxplain averages N "
                "noisy copies with the same draws for every model (so the similarity measures the "
                "model's change alone). Hedstroem et al. 2024 average N noisy copies (jaxplain follows "
                "the paper's estimator)."
            ),
            details={
                "note": "the other-key control uses another key for the weights too, so it is wider",
                "layer": stored[-1],
            },
        ),
        ours,
        theirs,
        ours_again,
    )


def check_random_logit(checks: Checks) -> None:
    case = checks.case
    a = case.a("saliency")
    function = metric_function("random_logit")
    seen: list[np.ndarray] = []

    def recording(model, inputs, targets, **kwargs):
        seen.append(np.asarray(targets))
        return torch_saliency(model, inputs, targets)

    for similarity, quantus_similarity in (
        ("ssim", quantus.functions.similarity_func.ssim),
        ("spearman", quantus.functions.similarity_func.correlation_spearman),
    ):

        def theirs(similarity=quantus_similarity, normalise=False):
            seen.clear()
            metric = quantus.RandomLogit(
                num_classes=10, similarity_func=similarity, normalise=normalise, disable_warnings=True
            )
            return quantus_call(metric, case, a, explain_func=recording)

        def ours(similarity=similarity, normalise=False):
            if not seen:
                theirs()
            return function(
                jaxplain.saliency,
                case.model,
                jnp.asarray(case.x),
                target=case.y,
                key=None,
                similarity=similarity,
                normalise=normalise,
                other_target=seen[-1],
            )

        checks.deterministic(
            Row(
                "random_logit",
                "RandomLogit",
                f"saliency, {similarity}, Quantus's other classes, no normalisation",
                "",
                details={
                    "note": "Quantus's other class (np.random.seed(42)) recorded from its "
                    "explain_func call and given to jaxplain as other_target"
                },
            ),
            ours,
            theirs,
        )
    checks.deterministic(
        Row(
            "random_logit",
            "RandomLogit",
            "saliency, ssim, default normalise (batch max vs per example)",
            "",
            difference=(
                "normalise=True: Quantus divides by the largest |phi| of the whole batch (for the "
                "other-class explanations: of their batch), jaxplain by each example's own; SSIM "
                "depends on the scale, so the scores differ. Sixt et al. do not normalise; jaxplain's "
                "per-example form makes an example's score independent of the batch."
            ),
        ),
        lambda: ours("ssim", normalise=True),
        lambda: theirs(quantus.functions.similarity_func.ssim, normalise=True),
    )


# --- localisation and complexity (no model) -------------------------------------------------


def _model_free(
    checks: Checks,
    metric: str,
    quantus_name: str,
    setting: str,
    options: dict,
    quantus_options: dict,
    *,
    attribution: str = "saliency",
    with_mask: bool = True,
    tolerance: float = TOLERANCE,
    difference: str | None = None,
    note: str | None = None,
    prepare: Callable | None = None,
    quantus_raises: bool = False,
) -> None:
    """A metric of the attribution (and the ground-truth mask) alone: the same arrays on
    both sides; Quantus gets the model too (it requires one) but does not run it.
    `quantus_raises`: Quantus 0.6.0 fails on this setting; the row records jaxplain's
    values and Quantus's error."""
    case = checks.case
    function = metric_function(metric)
    a = case.a(attribution) if prepare is None else prepare(case.a(attribution))
    masks = case.masks

    def ours():
        return function(a, masks, **options) if with_mask else function(a, **options)

    def theirs():
        found = getattr(quantus, quantus_name)(disable_warnings=True, **quantus_options)
        return quantus_call(found, case, a, s=masks if with_mask else None)

    row = Row(metric, quantus_name, setting, "", difference=difference)
    if note:
        row.details["note"] = note
    if quantus_raises:
        try:
            theirs()
            row.details["quantus_error"] = None
        except Exception as error:
            row.details["quantus_error"] = f"{type(error).__name__}: {error}"
        row.kind = "differs"
        row.jaxplain = as_list(ours())
        row.status = "Quantus raises" if row.details["quantus_error"] else "differs (documented)"
        checks.record(row)
        return
    checks.deterministic(row, ours, theirs, tolerance=tolerance)


def check_pointing_game(checks: Checks) -> None:
    plain = {"abs": False, "normalise": False}
    _model_free(checks, "pointing_game", "PointingGame", "saliency, ink mask", {}, plain)
    _model_free(
        checks,
        "pointing_game",
        "PointingGame",
        "saliency, ink mask, weighted",
        {"weighted": True},
        {**plain, "weighted": True},
        quantus_raises=True,
        difference=(
            "Quantus 0.6.0 raises a TypeError with weighted=True (it assigns a (hits, 1) array "
            "through a boolean index); jaxplain multiplies a hit by 1 - |S| / N as Quantus intends."
        ),
    )


def check_attribution_localisation(checks: Checks) -> None:
    _model_free(
        checks,
        "attribution_localisation",
        "AttributionLocalisation",
        "saliency, positive part (paper) = Quantus positive_attributions",
        {},
        {"abs": False, "normalise": False, "positive_attributions": True},
        tolerance=TOLERANCE,
        note="Quantus divides by total + 1e-9",
    )
    _model_free(
        checks,
        "attribution_localisation",
        "AttributionLocalisation",
        "saliency, |a| (Quantus's default abs=True)",
        {"abs": True},
        {"abs": True, "normalise": False},
        tolerance=TOLERANCE,
    )
    _model_free(
        checks,
        "attribution_localisation",
        "AttributionLocalisation",
        "saliency, |a|, weighted",
        {"abs": True, "weighted": True},
        {"abs": True, "normalise": False, "weighted": True},
        difference=(
            "weighted: Kohlbrenner et al. weight mu by N / |S| (jaxplain); Quantus multiplies by "
            "|S| / size_data, the inverse, with size_data = x_batch[2:].size (the batch from its "
            "third example on, not one example's size). jaxplain follows the paper."
        ),
    )


def check_top_k_intersection(checks: Checks) -> None:
    plain = {"abs": False, "normalise": False}
    _model_free(
        checks,
        "top_k_intersection",
        "TopKIntersection",
        "saliency, ink mask, k = 8",
        {"k": 8},
        {**plain, "k": 8},
    )
    _model_free(
        checks,
        "top_k_intersection",
        "TopKIntersection",
        "saliency, k = 8, concept influence",
        {"k": 8, "concept_influence": True},
        {**plain, "k": 8, "concept_influence": True},
    )


def check_relevance_mass_accuracy(checks: Checks) -> None:
    _model_free(
        checks,
        "relevance_mass_accuracy",
        "RelevanceMassAccuracy",
        "saliency (signed), ink mask",
        {},
        {"abs": False, "normalise": False},
    )
    _model_free(
        checks,
        "relevance_mass_accuracy",
        "RelevanceMassAccuracy",
        "IG, |a|",
        {"abs": True},
        {"abs": True, "normalise": False},
        attribution="integrated_gradients",
    )


def check_relevance_rank_accuracy(checks: Checks) -> None:
    _model_free(
        checks,
        "relevance_rank_accuracy",
        "RelevanceRankAccuracy",
        "saliency, ink mask",
        {},
        {"abs": False, "normalise": False},
    )


def check_auc(checks: Checks) -> None:
    _model_free(checks, "auc", "AUC", "saliency, ink mask", {}, {"abs": False, "normalise": False})
    _model_free(
        checks,
        "auc",
        "AUC",
        "IG (ties at 0 on blank pixels), ink mask",
        {},
        {"abs": False, "normalise": False},
        attribution="integrated_gradients",
    )


def check_focus(checks: Checks) -> None:
    """Mosaics of four digits from jaxplain's `mosaics`; the attribution of a mosaic is
    each tile's own saliency map, so both sides score the same maps."""
    from jaxplain.metrics import localisation

    case = checks.case
    mosaics = localisation.mosaics(jnp.asarray(case.x), case.y, key=jax.random.key(0))
    sources = np.asarray(mosaics.sources)  # (M, 4) example of each tile
    tiles = case.a("saliency")[sources]  # (M, 4, 8, 8, 1)
    top = np.concatenate([tiles[:, 0], tiles[:, 1]], axis=2)
    bottom = np.concatenate([tiles[:, 2], tiles[:, 3]], axis=2)
    a = np.concatenate([top, bottom], axis=1)  # (M, 16, 16, 1)
    images = np.asarray(mosaics.images, DTYPE)
    quadrants = np.asarray(mosaics.quadrants)

    def ours():
        return localisation.focus(a, quadrants)

    def theirs():
        metric = quantus.Focus(abs=False, normalise=False, disable_warnings=True)
        return metric(
            model=case.twin(),
            x_batch=nchw(images),
            y_batch=np.asarray(mosaics.targets),
            a_batch=nchw(a),
            custom_batch=quadrants.astype(int),
            channel_first=True,
            device="cpu",
        )

    checks.deterministic(
        Row(
            "focus",
            "Focus",
            "saliency tiles on jaxplain mosaics of 4 digits",
            "",
            details={"note": "Quantus divides by the positive total + 1e-9"},
        ),
        ours,
        theirs,
    )


def check_sparseness(checks: Checks) -> None:
    _model_free(
        checks,
        "sparseness",
        "Sparseness",
        "saliency, |a|",
        {},
        {"abs": True, "normalise": False},
        with_mask=False,
        tolerance=1e-5,
        note="Quantus adds 1e-7 to every magnitude before the Gini index (jaxplain does not): a shift of "
        "order 1e-7 N / sum|a|, inside the stated 1e-5",
    )


def check_complexity(checks: Checks) -> None:
    _model_free(
        checks,
        "complexity",
        "Complexity",
        "saliency, |a|",
        {},
        {"abs": True, "normalise": False},
        with_mask=False,
        note="Quantus takes log(P + 1e-12)",
    )


def check_effective_complexity(checks: Checks) -> None:
    def per_example_max(a):  # Quantus's normalise_by_max works on the whole batch: normalise here
        flat = np.abs(a).reshape(len(a), -1).max(axis=1)
        return a / flat.reshape((-1,) + (1,) * (a.ndim - 1))

    _model_free(
        checks,
        "effective_complexity",
        "EffectiveComplexity",
        "saliency / its own max |a|, eps 1e-2",
        {"eps": 1e-2},
        {"abs": True, "normalise": False, "eps": 1e-2},
        with_mask=False,
        prepare=per_example_max,
    )
    _model_free(
        checks,
        "effective_complexity",
        "EffectiveComplexity",
        "saliency, Quantus's default normalise=True",
        {"eps": 1e-2},
        {"eps": 1e-2},
        with_mask=False,
        difference=(
            "Quantus's normalise=True divides every attribution by the largest magnitude in the "
            "WHOLE BATCH (normalise_by_max over all axes), so an example's count depends on the other "
            "examples; jaxplain (relative=True) by the example's own largest magnitude (above: equal "
            "when Quantus is given per-example normalised attributions). Nguyen & Martinez define the "
            "measure through the model; both implement the attribution-only simplification."
        ),
    )


# --- the registry of checks ------------------------------------------------------------------

# jaxplain name -> (Quantus class, check). A check whose jaxplain function is missing
# records a "missing" row.
CHECKS: dict[str, tuple[str, Callable]] = {
    "infidelity": ("Infidelity", check_infidelity),
    "faithfulness_correlation": ("FaithfulnessCorrelation", check_faithfulness_correlation),
    "sensitivity_n": ("SensitivityN", check_sensitivity_n),
    "pixel_flipping": ("PixelFlipping", check_pixel_flipping),
    "road": ("ROAD", check_road),
    "completeness": ("Completeness", check_completeness),
    "monotonicity": ("Monotonicity", check_monotonicity),
    "monotonicity_correlation": ("MonotonicityCorrelation", check_monotonicity_correlation),
    "faithfulness_estimate": ("FaithfulnessEstimate", check_faithfulness_estimate),
    "irof": ("IROF", check_irof),
    "selectivity": ("Selectivity", check_selectivity),
    "region_perturbation": ("RegionPerturbation", check_region_perturbation),
    "sufficiency": ("Sufficiency", check_sufficiency),
    "non_sensitivity": ("NonSensitivity", check_non_sensitivity),
    "input_invariance": ("InputInvariance", check_input_invariance),
    "max_sensitivity": ("MaxSensitivity", check_max_sensitivity),
    "avg_sensitivity": ("AvgSensitivity", check_avg_sensitivity),
    "local_lipschitz_estimate": ("LocalLipschitzEstimate", check_local_lipschitz_estimate),
    "relative_input_stability": ("RelativeInputStability", check_relative_input_stability),
    "relative_output_stability": ("RelativeOutputStability", check_relative_output_stability),
    "relative_representation_stability": (
        "RelativeRepresentationStability",
        check_relative_representation_stability,
    ),
    "continuity": ("Continuity", check_continuity),
    "consistency": ("Consistency", check_consistency),
    "model_parameter_randomisation": ("MPRT", check_model_parameter_randomisation),
    "efficient_mprt": ("EfficientMPRT", check_efficient_mprt),
    "smooth_mprt": ("SmoothMPRT", check_smooth_mprt),
    "random_logit": ("RandomLogit", check_random_logit),
    "pointing_game": ("PointingGame", check_pointing_game),
    "attribution_localisation": ("AttributionLocalisation", check_attribution_localisation),
    "top_k_intersection": ("TopKIntersection", check_top_k_intersection),
    "relevance_mass_accuracy": ("RelevanceMassAccuracy", check_relevance_mass_accuracy),
    "relevance_rank_accuracy": ("RelevanceRankAccuracy", check_relevance_rank_accuracy),
    "auc": ("AUC", check_auc),
    "focus": ("Focus", check_focus),
    "sparseness": ("Sparseness", check_sparseness),
    "complexity": ("Complexity", check_complexity),
    "effective_complexity": ("EffectiveComplexity", check_effective_complexity),
}

# checks whose jaxplain function has another name
JAXPLAIN_NAMES = {
    "model_parameter_randomisation": "randomisation_check",
    "max_sensitivity": "sensitivity_max",
}


# --- output -------------------------------------------------------------------------------


def _measure(row: dict) -> str:
    agreement = row.get("agreement") or {}
    if "max_rel_diff" in agreement:
        return f"max rel diff {agreement['max_rel_diff']:.1e}"
    if "p_value" in agreement:
        return f"p = {agreement['p_value']:.2f} (mean diff {agreement['mean_diff']:+.3f})"
    return "-"


def _tolerance(row: dict) -> str:
    if row["kind"] == "deterministic":
        return f"{row['tolerance']:.0e}"
    if row["kind"] == "statistical":
        return "p >= 0.01"
    return "-"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def markdown_tables(payload: dict) -> str:
    """The agreement table, the timing table and the definitional differences, as Markdown,
    from the JSON payload the script writes."""
    rows = payload["rows"]
    lines = [
        "| metric | Quantus | setting | kind | agreement | tolerance | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['metric']}` | {row['quantus']} | {_cell(row['setting'])} | {row['kind']} | "
            f"{_cell(_measure(row))} | {_tolerance(row)} | {_cell(row['status'])} |"
        )
    timed = [row for row in rows if row.get("timing")]
    if timed:
        lines += [
            "",
            "| metric | Quantus | setting | jaxplain ms/example | Quantus ms/example | Quantus / jaxplain |",
            "|---|---|---|---|---|---|",
        ]
        for row in timed:
            timing = row["timing"]
            lines.append(
                f"| `{row['metric']}` | {row['quantus']} | {_cell(row['setting'])} | "
                f"{1e3 * timing['jaxplain_s_per_example']:.3g} | {1e3 * timing['quantus_s_per_example']:.3g} | "
                f"{timing['speedup']:.1f}x |"
            )
    differences = [row for row in rows if row.get("difference")]
    if differences:
        lines += ["", "Definitional differences:", ""]
        lines += [f"- `{row['metric']}` ({row['quantus']}): {row['difference']}" for row in differences]
    machine_facts = payload.get("machine", {})
    lines += [
        "",
        f"Digits CNN (jaxplain) and its torch twin (Quantus), {payload['sizes']['n']} test digits, {payload.get('dtype', 'float64').split(' ')[0]}. "
        f"Times: the whole batch per call, medians of {payload['sizes']['repeats']} interleaved calls after "
        "the agreement check's calls (which compile jaxplain's program), one call where Quantus took over "
        f"5 s, divided by the batch; {machine_facts.get('cpu_count')} CPUs, jax {machine_facts.get('jax')}, "
        f"torch {payload.get('torch')}, quantus {payload.get('quantus')}, {machine_facts.get('date')}.",
    ]
    return "\n".join(lines) + "\n"


def text_table(rows: list[Row]) -> str:
    out = []
    for row in rows:
        record = row.as_json()
        out.append(f"{row.metric:30} {row.quantus:28} {_measure(record):40} {row.status}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="test digits (default 32, quick 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per library and row")
    parser.add_argument("--metrics", default=None, help="comma-separated jaxplain names (default: all)")
    parser.add_argument("--out", default=None, help="folder for the JSON (default: benchmarks/results)")
    parser.add_argument("--markdown", default=None, help="also write the Markdown tables to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument(
        "--float32",
        action="store_true",
        help="both libraries in float32 (for the timing table; writes crosscheck_quantus_float32.json)",
    )
    parser.add_argument(
        "--render", default=None, help="only render this results JSON as Markdown (to --markdown or stdout)"
    )
    args = parser.parse_args(argv)
    if args.render:
        import json

        with open(args.render) as f:
            tables = markdown_tables(json.load(f))
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(tables)
        else:
            print(tables, end="")
        return 0

    sizes = QUICK if args.quick else Sizes()
    if args.n is not None:
        sizes = dataclasses.replace(sizes, n=args.n)
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    selected = (
        list(CHECKS) if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    )
    unknown = [m for m in selected if m not in CHECKS]
    if unknown:
        parser.error(f"unknown metrics {unknown}; known: {', '.join(CHECKS)}")
    # Quantus builds tensors with torch.Tensor(x)
    torch.set_default_dtype(torch.float32 if FLOAT32 else torch.float64)
    warnings.filterwarnings("ignore")  # Quantus's parameterisation and perturbation chatter
    start = time.perf_counter()

    case = load_case(sizes)
    print(f"digits CNN: {len(case.x)} examples, logits max abs diff {case.logits_gap:.1e}")
    checks = Checks(case, sizes)
    for name in selected:
        quantus_name, check = CHECKS[name]
        if metric_function(name) is None and metric_function(JAXPLAIN_NAMES.get(name, name)) is None:
            checks.missing(name, quantus_name)
            continue
        try:
            check(checks)
        except Exception as error:
            traceback.print_exc()
            checks.record(
                Row(name, quantus_name, "-", "deterministic", status=f"FAIL: {error}", passed=False)
            )
    seconds = time.perf_counter() - start

    failures = [row for row in checks.rows if not row.ok]
    payload = {
        "benchmark": "crosscheck_quantus",
        "machine": machine(),
        "torch": torch.__version__,
        "quantus": quantus.__version__,
        "dtype": "float32 (both)" if FLOAT32 else "float64 (jax_enable_x64; torch float64)",
        "model": "digits_cnn (jaxplain NHWC; torch twin NCHW)",
        "quick": bool(args.quick),
        "sizes": dataclasses.asdict(sizes),
        "agreement": AGREEMENT,
        "tolerance": TOLERANCE,
        "alpha": ALPHA,
        "targets": "each example's predicted class, the same int array for both libraries",
        "logits_max_abs_diff": case.logits_gap,
        "seconds": seconds,
        "summary": {
            "rows": len(checks.rows),
            "deterministic_pass": sum(r.kind == "deterministic" and bool(r.passed) for r in checks.rows),
            "statistical_pass": sum(r.kind == "statistical" and bool(r.passed) for r in checks.rows),
            "differs": sum(r.kind == "differs" for r in checks.rows),
            "missing": sum(r.kind == "missing" for r in checks.rows),
            "failures": len(failures),
        },
        "rows": [row.as_json() for row in checks.rows],
    }
    name = "crosscheck_quantus_float32.json" if FLOAT32 else "crosscheck_quantus.json"
    path = write(name, payload, *([args.out] if args.out else []))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_tables(payload))
    print()
    print(f"wrote {path} ({seconds:.0f} s)")
    print(text_table(checks.rows))
    if failures:
        print(f"{len(failures)} check(s) failed: " + ", ".join(f"{r.metric}/{r.setting}" for r in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
