"""Does jaxplain compute what Captum computes? Both libraries on the same models and inputs.

The shipped wine MLP and digits CNN are rebuilt in PyTorch with the same weights
(`_torch_models.py`); the script first checks that both give the same logits, then runs
each jaxplain method and its Captum counterpart on the same batch of test examples, the
same targets (each example's predicted class) and the same baselines, all in float64.

Deterministic methods must agree to a max relative difference of 1e-4, where

    max relative difference = max |a_jaxplain - a_captum| / max |a_captum|,

both maxima over the whole batch (every example and feature). Where the two libraries
define a method differently (documented in jaxplain's docstrings), the row says
"differs: <reason>" and, where a variant exists on which the definitions coincide (a
bias-free model, a clone() before max-pooling), that variant is checked to 1e-4 too.
Randomized methods are compared with a reference (the exact Shapley values, IG averaged
over the references, a long SmoothGrad run) at growing sample budgets: each library's
error must fall as the budget grows. The metrics infidelity and sensitivity_max are
deterministic rows too: both libraries get the same perturbations, drawn once in numpy.

    python benchmarks/crosscheck_captum.py [--n 16] [--out benchmarks/results] [--quick]

Writes crosscheck_captum.json into --out and prints a table. Exits 1 if a deterministic
method misses its tolerance without a documented difference, or any method raises; a
statistical row whose errors do not fall is reported (and fails tests/test_crosscheck_captum.py)
but does not change the exit code, since it can happen by chance.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import jax

# Before any array exists: both libraries run in float64, so that the differences left
# are the algorithms', not float32 rounding.
jax.config.update("jax_enable_x64", True)

import captum  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    LRP,
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
    ShapleyValues,
    ShapleyValueSampling,
)
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule  # noqa: E402
from captum.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max  # noqa: E402

import jaxplain  # noqa: E402
from jaxplain.methods.perturbation import patch_mask  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, max_rel_diff, write  # noqa: E402
from _torch_models import from_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4
METRIC = (
    "max relative difference = max|a_jaxplain - a_captum| / max|a_captum|, both maxima over "
    "the whole batch (all examples and features). Statistical rows: max_rel_diff is jaxplain "
    "vs Captum at the largest budget; details hold each library's error to the row's "
    "reference (the same metric, the reference in the denominator) at every budget"
)

# jaxplain schedule -> Captum IntegratedGradients method.
SCHEDULES = {
    "riemann_left": "riemann_left",
    "riemann_right": "riemann_right",
    "riemann_middle": "riemann_middle",
    "trapezoid": "riemann_trapezoid",
    "gauss_legendre": "gausslegendre",
}

# Documented definitional differences (jaxplain/methods/rules.py and perturbation.py):
# (short label for the table, the full reason for the JSON).
DEEPLIFT_MAXPOOL = (
    "Captum's MaxPool2d rule is inert after a ReLU",
    "Captum's DeepLift MaxPool2d rule has no effect when a ReLU feeds the pool directly: "
    "the ReLU's output hook and the pool's input hook sit on one tensor, the ReLU reads the "
    "pool's unmodified gradient, so Captum's result is DeepLift with the plain max-pool "
    "gradient (equal to Captum with unhooked F.max_pool2d, see details) and misses "
    "summation-to-delta; jaxplain applies the rule. With clone() between ReLU and pool "
    "the rule acts in Captum and the two agree",
)
LRP_GAMMA_BIAS = (
    "gamma rule's bias term (b + gamma b+ vs b)",
    "jaxplain's gamma rule divides by z + b + gamma b+ (Montavon et al. 2019), Captum's "
    "GammaRule by z + b with the bias unchanged; they agree on the bias-free model",
)
LRP_ALPHA_BIAS = (
    "z+ rule's bias and signs ((a w)+, b+ vs a w+, b)",
    "jaxplain's alpha1beta0 takes (a w)+ and the bias b+, Captum's Alpha1_Beta0_Rule a w+ "
    "and the bias b: equal only for a >= 0 and b >= 0; they agree on the bias-free model "
    "with inputs >= 0",
)
LRP_ALPHA_NEGATIVE = (
    "z+ rule with inputs < 0 ((a w)+ vs a w+)",
    "the standardised wine features are < 0 in places: jaxplain's (a w)+ and Captum's a w+ "
    "differ at the first layer; they agree for inputs >= 0 (next row)",
)
OCCLUSION_PLACEMENT = (
    "window placement (Captum adds an edge window)",
    "the stride does not divide size - window: Captum places ceil((n - w) / s) + 1 windows, "
    "the last one cut off at the edge, jaxplain only windows that fit (range(0, n - w + 1, s))",
)

# Where float64 runs still differ by more than rounding (all far below the tolerance).
CAPTUM_IG_FLOAT32 = "Captum casts the step sizes to float32 (torch.tensor(step_sizes).float()): ~1e-8"
CAPTUM_ACCUMULATES_FLOAT32 = "Captum accumulates the attributions in float32 (torch.float / .float()): ~1e-7"
CAPTUM_LRP_POOL_EPSILON = (
    "Captum applies its EpsilonRule to MaxPool2d too (relevance times a / (a + 1e-9)), "
    "jaxplain passes relevance through max pooling unchanged: ~1e-8"
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    n: int = 16  # test examples
    steps: int = 50  # IG steps (Captum's default)
    references: int = 8  # DeepLiftShap / GradientShap references from x_train
    shapley_groups: int = 7  # feature groups for the Shapley methods (<= 7: Captum enumerates G!)
    sampling_budgets: tuple = (8, 32, 128, 512)  # permutations
    kernel_budgets: tuple = (32, 128, 512)  # coalitions
    gradient_budgets: tuple = (16, 64, 256)  # expected gradients / GradientShap draws
    noise_budgets: tuple = (16, 64, 256)  # SmoothGrad noisy copies
    reference_steps: int = 128  # IG steps of the expected-gradients reference
    reference_samples: int = 4096  # noisy copies of the SmoothGrad reference
    statistical_models: tuple = ("mlp", "cnn")  # where the randomized methods run
    plain_orders: bool = True  # also run shapley_sampling without antithetic orders
    metric_samples: int = 16  # perturbations per example of infidelity / sensitivity_max


QUICK = Sizes(
    n=4,
    steps=8,
    references=3,
    shapley_groups=4,
    sampling_budgets=(4, 64),
    kernel_budgets=(16, 256),
    gradient_budgets=(8, 128),
    noise_budgets=(8, 128),
    reference_steps=32,
    reference_samples=1024,
    statistical_models=("mlp",),
    plain_orders=False,
    metric_samples=4,
)


@dataclasses.dataclass
class Row:
    method: str
    model: str
    setting: str
    kind: str  # "deterministic" or "statistical"
    max_rel_diff: float | None
    tolerance: float | None
    passed: bool  # within tolerance (deterministic) or errors falling (statistical)
    status: str  # "pass", "FAIL", "FAIL: <error>" or "differs: <reason>"
    documented_difference: str | None = None
    notes: str = ""
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Counts as success for the exit code: statistical rows fail it only by crashing."""
        if self.kind == "statistical":
            return not self.status.startswith("FAIL:")
        return self.passed or self.documented_difference is not None

    def as_json(self) -> dict:
        record = dataclasses.asdict(self)
        record["pass"] = record.pop("passed")
        return record


@dataclasses.dataclass
class Case:
    """One model on both sides, with the inputs every method is run on."""

    name: str
    checkpoint: object
    variables: dict  # float64 Flax variables
    model: jaxplain.Model
    x: np.ndarray  # (n, ...) float64
    target: np.ndarray  # (n,) predicted classes
    baseline: np.ndarray  # one nonzero reference example, from x_train
    references: np.ndarray  # (K, ...) from x_train
    ablation_mask: np.ndarray  # feature groups for feature_ablation
    shapley_mask: np.ndarray  # <= 7 groups for the Shapley methods
    occlusions: list  # (window, stride, documented difference or None)

    def torch_model(self, variables=None, **options):
        return from_checkpoint(self.checkpoint, self.variables if variables is None else variables, **options)


# --- helpers ------------------------------------------------------------------------------


def as_torch(array) -> torch.Tensor:
    """A fresh float64 tensor (Captum sets requires_grad on its inputs)."""
    return torch.tensor(np.array(array, dtype=np.float64))


def as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def seed_captum(seed: int) -> None:
    """Captum draws from torch's and numpy's global generators (GradientShap's references
    and alphas come from np.random)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def float64_variables(variables):
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, jnp.float64), variables)


def without_biases(variables):
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.zeros_like(leaf) if getattr(path[-1], "key", None) == "bias" else leaf,
        variables,
    )


def grouped_mask(size: int, groups: int) -> np.ndarray:
    """Consecutive features in `groups` nearly equal groups: [0, 0, 1, 1, ...]."""
    return (np.arange(size) * groups // size).astype(np.int32)


def shapley_mask_cnn(groups: int) -> np.ndarray:
    """At most 7 groups of an 8x8x1 image: 2x3 boxes of 4x3 pixels (6), or 2x2 quadrants."""
    return patch_mask((8, 8, 1), (4, 3, 1) if groups >= 6 else (4, 4, 1))


def load_cases(sizes: Sizes):
    cases = []
    specs = [("mlp", "wine_mlp", "wine"), ("cnn", "digits_cnn", "digits")]
    for name, checkpoint_name, dataset in specs:
        checkpoint = jaxplain.io.load_checkpoint(os.path.join(ROOT, "checkpoints", checkpoint_name))
        variables = float64_variables(checkpoint.variables)
        model = jaxplain.Model.from_linen(checkpoint.module, variables)
        data = jaxplain.data.load(dataset)
        x = np.asarray(data.x_test[: sizes.n], np.float64)
        x_train = np.asarray(data.x_train, np.float64)
        target = np.asarray(np.argmax(np.asarray(model(jnp.asarray(x))), axis=-1), np.int32)
        shape = x.shape[1:]
        if name == "mlp":
            ablation_mask = grouped_mask(shape[0], 7)
            shapley_mask = grouped_mask(shape[0], sizes.shapley_groups)
            # 13 - 3 = 10 and 13 - 1 = 12 are multiples of the strides: same windows in both.
            occlusions = [((3,), (2,), None), ((1,), (1,), None), ((3,), (3,), OCCLUSION_PLACEMENT)]
        else:
            ablation_mask = patch_mask(shape, (2, 2, 1))
            shapley_mask = shapley_mask_cnn(sizes.shapley_groups)
            occlusions = [
                ((2, 2, 1), (2, 2, 1), None),
                ((3, 3, 1), (1, 1, 1), None),
                ((3, 3, 1), (2, 2, 1), OCCLUSION_PLACEMENT),
            ]
        cases.append(
            Case(
                name,
                checkpoint,
                variables,
                model,
                x,
                target,
                baseline=x_train[0],
                references=x_train[1 : 1 + sizes.references],
                ablation_mask=ablation_mask,
                shapley_mask=shapley_mask,
                occlusions=occlusions,
            )
        )
    return cases


def check_logits(case: Case) -> dict:
    """Max abs difference of jaxplain's and the torch twin's logits on the batch, for every
    variant of the twin used below; anything beyond rounding stops the script."""
    variants = {"shipped": ({}, None)}
    if case.name == "cnn":
        variants.update({f"pooling={p}": ({"pooling": p}, None) for p in ("clone_module", "functional")})
    variants["bias-free"] = ({}, without_biases(case.variables))
    gaps = {}
    for label, (options, variables) in variants.items():
        model = case.model if variables is None else case.model.replace(params=variables)
        ours = np.asarray(model(jnp.asarray(case.x)))
        with torch.no_grad():
            theirs = as_numpy(case.torch_model(variables, **options)(as_torch(case.x)))
        gap, scale = float(np.abs(ours - theirs).max()), float(np.abs(ours).max())
        if not gap <= 1e-9 * max(1.0, scale):
            raise AssertionError(
                f"{case.name} ({label}): the torch twin's logits differ from jaxplain's by {gap:.3e}"
            )
        gaps[label] = gap
    print(f"{case.name}: logits max abs diff " + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()))
    return gaps


# --- deterministic comparisons --------------------------------------------------------------


class Checks:
    def __init__(self, sizes: Sizes):
        self.sizes = sizes
        self.rows: list[Row] = []

    def record(self, row: Row) -> None:
        self.rows.append(row)
        shown = f"{row.max_rel_diff:.2e}" if row.max_rel_diff is not None else "-"
        seconds = row.details.get("seconds", float("nan"))
        print(
            f"  {row.method:20} {row.model:4} {row.setting:40} {shown:>9} {seconds:6.1f}s  {row.status[:50]}",
            flush=True,
        )

    def compare(
        self,
        method: str,
        case: Case,
        setting: str,
        run: Callable[[], tuple],
        *,
        documented: tuple | None = None,
        notes: str = "",
    ) -> None:
        """Records one deterministic row.

        `run()` returns (jaxplain values, Captum values[, evidence]), evidence being a dict
        of numbers that support a documented difference's explanation. `documented` is a
        (short, full) reason where the two libraries define the method differently.
        """
        short, reason = documented if documented else (None, None)
        began = time.perf_counter()
        try:
            ours, theirs, *evidence = run()
            diff = max_rel_diff(ours, theirs)
        except Exception as error:  # one broken method must not hide the others' results
            traceback.print_exc()
            self.record(
                Row(
                    method,
                    case.name,
                    setting,
                    "deterministic",
                    None,
                    TOLERANCE,
                    False,
                    f"FAIL: {type(error).__name__}: {error}",
                    reason,
                    notes,
                )
            )
            return
        within = diff <= TOLERANCE
        if within:
            status = "pass"
            if documented:
                notes = (notes + " " if notes else "") + "expected to differ, but agrees here"
        else:
            status = f"differs: {short}" if documented else "FAIL"
        details = {**(evidence[0] if evidence else {}), "seconds": time.perf_counter() - began}
        self.record(
            Row(
                method,
                case.name,
                setting,
                "deterministic",
                diff,
                TOLERANCE,
                within,
                status,
                reason,
                notes,
                details,
            )
        )

    def statistical(
        self,
        method: str,
        case: Case,
        setting: str,
        budgets,
        run: Callable[[int], tuple],
        reference,
        *,
        reference_name: str,
        notes: str = "",
    ) -> None:
        """Records one statistical row: each library's error to `reference` per budget.

        `run(budget)` returns (jaxplain values, Captum values[, extra jaxplain variants dict]).
        """
        began = time.perf_counter()
        try:
            errors = {"jaxplain": [], "captum": [], "mutual": []}
            extra_errors: dict = {}
            for budget in budgets:
                ours, theirs, *extra = run(budget)
                errors["jaxplain"].append(max_rel_diff(ours, reference))
                errors["captum"].append(max_rel_diff(theirs, reference))
                errors["mutual"].append(max_rel_diff(ours, theirs))
                for name, values in (extra[0] if extra else {}).items():
                    extra_errors.setdefault(name, []).append(max_rel_diff(values, reference))
        except Exception as error:
            traceback.print_exc()
            self.record(
                Row(
                    method,
                    case.name,
                    setting,
                    "statistical",
                    None,
                    None,
                    False,
                    f"FAIL: {type(error).__name__}: {error}",
                    notes=notes,
                )
            )
            return
        falling = all(errors[side][-1] < errors[side][0] for side in ("jaxplain", "captum"))
        details = {
            "budgets": list(budgets),
            "reference": reference_name,
            "error_jaxplain": errors["jaxplain"],
            "error_captum": errors["captum"],
            "jaxplain_vs_captum": errors["mutual"],
            "seconds": time.perf_counter() - began,
        }
        for name, values in extra_errors.items():
            details[f"error_{name}"] = values
        status = "pass" if falling else "FAIL (error does not fall)"
        self.record(
            Row(
                method,
                case.name,
                setting,
                "statistical",
                errors["mutual"][-1],
                None,
                falling,
                status,
                notes=notes,
                details=details,
            )
        )


def gradient_methods(checks: Checks, case: Case) -> None:
    x, t = case.x, case.target
    xj, tt = jnp.asarray(x), torch.as_tensor(t, dtype=torch.long)

    checks.compare(
        "saliency",
        case,
        "abs=False",
        lambda: (
            jaxplain.saliency(case.model, xj, target=t).values,
            Saliency(case.torch_model()).attribute(as_torch(x), target=tt, abs=False),
        ),
    )
    checks.compare(
        "input_x_gradient",
        case,
        "",
        lambda: (
            jaxplain.input_x_gradient(case.model, xj, target=t).values,
            InputXGradient(case.torch_model()).attribute(as_torch(x), target=tt),
        ),
    )

    baselines = {
        "zero baseline": np.zeros_like(x),
        "x_train[0] baseline": np.broadcast_to(case.baseline, x.shape),
    }
    steps = checks.sizes.steps
    for schedule, captum_method in SCHEDULES.items():
        for label, baseline in baselines.items():
            # Captum's trapezoid weights sum to (n - 1) / n, jaxplain's to 1.
            scale = steps / (steps - 1) if schedule == "trapezoid" else 1.0

            def run(schedule=schedule, captum_method=captum_method, baseline=baseline, scale=scale):
                ours = jaxplain.integrated_gradients(
                    case.model, xj, target=t, baseline=jnp.asarray(baseline), steps=steps, schedule=schedule
                ).values
                theirs = IntegratedGradients(case.torch_model()).attribute(
                    as_torch(x), baselines=as_torch(baseline), target=tt, n_steps=steps, method=captum_method
                )
                return ours, as_numpy(theirs) * scale

            notes = CAPTUM_IG_FLOAT32
            if schedule == "trapezoid":
                notes = f"Captum's result times n/(n-1) = {scale:.4f}; " + notes
            checks.compare(
                "integrated_gradients", case, f"{schedule}, {label}, {steps} steps", run, notes=notes
            )


def rule_methods(checks: Checks, case: Case) -> None:
    x, t = case.x, case.target
    xj, tt = jnp.asarray(x), torch.as_tensor(t, dtype=torch.long)
    cnn = case.name == "cnn"

    # DeepLIFT. The CNN's ReLUs feed its max-pools directly, where Captum's max-pool rule
    # has no effect; the "clone_module" twin is the same function with each pool's input
    # on a tensor of its own, where the rule acts. The evidence for the cause: Captum's
    # result on the plain twin equals its result with unhooked (functional) pooling, i.e.
    # the plain max-pool gradient, and misses summation-to-delta.
    baselines = {
        "zero baseline": np.zeros_like(x),
        "x_train[0] baseline": np.broadcast_to(case.baseline, x.shape),
    }
    references = case.references
    poolings = [("", "module", DEEPLIFT_MAXPOOL if cnn else None)]
    if cnn:
        poolings.append(("clone before pool, ", "clone_module", None))
    for prefix, pooling, documented in poolings:
        options = {"pooling": pooling} if cnn else {}
        for label, baseline in baselines.items():

            def run(baseline=baseline, options=options):
                ours = jaxplain.deeplift(case.model, xj, target=t, baseline=jnp.asarray(baseline))
                theirs, gap = DeepLift(case.torch_model(**options)).attribute(
                    as_torch(x), baselines=as_torch(baseline), target=tt, return_convergence_delta=True
                )
                evidence = {
                    "jaxplain_max_summation_gap": float(np.abs(np.asarray(ours.delta)).max()),
                    "captum_max_summation_gap": float(gap.abs().max()),
                }
                if documented:
                    unhooked = DeepLift(case.torch_model(pooling="functional")).attribute(
                        as_torch(x), baselines=as_torch(baseline), target=tt
                    )
                    evidence["captum_vs_captum_with_unhooked_pooling"] = max_rel_diff(theirs, unhooked)
                return ours.values, theirs, evidence

            checks.compare("deeplift", case, prefix + label, run, documented=documented)

        def run_shap(options=options):
            ours = jaxplain.deeplift_shap(case.model, xj, target=t, background=jnp.asarray(references)).values
            theirs = DeepLiftShap(case.torch_model(**options)).attribute(
                as_torch(x), baselines=as_torch(references), target=tt
            )
            evidence = {}
            if documented:
                unhooked = DeepLiftShap(case.torch_model(pooling="functional")).attribute(
                    as_torch(x), baselines=as_torch(references), target=tt
                )
                evidence["captum_vs_captum_with_unhooked_pooling"] = max_rel_diff(theirs, unhooked)
            return ours, theirs, evidence

        checks.compare(
            "deeplift_shap",
            case,
            f"{prefix}{len(references)} x_train references",
            run_shap,
            documented=documented,
        )

    checks.compare(
        "guided_backprop",
        case,
        "",
        lambda: (
            jaxplain.guided_backprop(case.model, xj, target=t).values,
            GuidedBackprop(case.torch_model()).attribute(as_torch(x), target=tt),
        ),
    )
    checks.compare(
        "deconvnet",
        case,
        "",
        lambda: (
            jaxplain.deconvnet(case.model, xj, target=t).values,
            Deconvolution(case.torch_model()).attribute(as_torch(x), target=tt),
        ),
    )

    def captum_lrp(variables, inputs, captum_rule=None, pool_epsilon=None):
        twin = case.torch_model(variables)
        for layer in twin.modules():
            if captum_rule is not None and isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                layer.rule = captum_rule()  # on every layer with weights
            if pool_epsilon is not None and isinstance(layer, torch.nn.MaxPool2d):
                layer.rule = EpsilonRule(epsilon=pool_epsilon)  # else Captum's default 1e-9
        return LRP(twin).attribute(as_torch(inputs), target=tt)

    def lrp(rule, variables=None, inputs=x, captum_rule=None):
        model = case.model if variables is None else case.model.replace(params=variables)
        ours = jaxplain.lrp(model, jnp.asarray(inputs), target=t, rule=rule).values
        theirs = captum_lrp(variables, inputs, captum_rule)
        evidence = {}
        if cnn:  # what is left with (almost) no stabiliser on Captum's max-pools
            nearly_bare = captum_lrp(variables, inputs, captum_rule, pool_epsilon=1e-100)
            evidence["jaxplain_vs_captum_with_pool_epsilon_1e-100"] = max_rel_diff(ours, nearly_bare)
        return ours, theirs, evidence

    bias_free = without_biases(case.variables)
    pool_note = CAPTUM_LRP_POOL_EPSILON if cnn else ""
    checks.compare("lrp", case, "epsilon (Captum's default rules)", lambda: lrp("epsilon"), notes=pool_note)
    checks.compare(
        "lrp", case, "gamma=0.25", lambda: lrp("gamma", captum_rule=GammaRule), documented=LRP_GAMMA_BIAS
    )
    checks.compare(
        "lrp",
        case,
        "gamma=0.25, bias-free model",
        lambda: lrp("gamma", bias_free, captum_rule=GammaRule),
        notes=pool_note,
    )
    checks.compare(
        "lrp",
        case,
        "alpha1beta0",
        lambda: lrp("alpha1beta0", captum_rule=Alpha1_Beta0_Rule),
        documented=LRP_ALPHA_BIAS,
    )
    # The digits are >= 0 already; standardised wine features are negative in places.
    checks.compare(
        "lrp",
        case,
        "alpha1beta0, bias-free model",
        lambda: lrp("alpha1beta0", bias_free, captum_rule=Alpha1_Beta0_Rule),
        **({"notes": pool_note} if cnn else {"documented": LRP_ALPHA_NEGATIVE}),
    )
    if not cnn:
        checks.compare(
            "lrp",
            case,
            "alpha1beta0, bias-free, |x| inputs",
            lambda: lrp("alpha1beta0", bias_free, np.abs(x), captum_rule=Alpha1_Beta0_Rule),
            notes="inputs |x| >= 0, targets kept",
        )

    if cnn:
        layer = list(jaxplain.layer_names(case.model, xj[:1]))
        layer = [name for name in layer if name.startswith("Conv_")][-1]  # the last convolution
        for relu in (True, False):
            checks.compare(
                "grad_cam",
                case,
                f"layer {layer}, relu={relu}",
                lambda relu=relu: (
                    jaxplain.grad_cam(
                        case.model, xj, target=t, layer=layer, relu=relu, upsample=False
                    ).values,
                    as_numpy(
                        LayerGradCam(twin := case.torch_model(), twin.convs[-1]).attribute(
                            as_torch(x), target=tt, relu_attributions=relu
                        )
                    )[:, 0],
                ),
                notes="Captum LayerGradCam on the torch twin's last Conv2d, channel axis dropped",
            )


def subset_shapley(case: Case, mask: np.ndarray) -> np.ndarray:
    """Shapley values by the subset formula in float64 numpy, from one batched forward
    pass over all 2^G coalitions: a third opinion on the exact values."""
    groups = int(mask.max()) + 1
    coalitions = (np.arange(2**groups)[:, None] >> np.arange(groups)) & 1  # (2^G, G)
    points = np.where(coalitions[:, mask][:, None].astype(bool), case.x[None], 0.0)  # (2^G, B, ...)
    outputs = np.asarray(case.model(jnp.asarray(points.reshape((-1,) + case.x.shape[1:]))))
    values = outputs.reshape(2**groups, len(case.x), -1)[:, np.arange(len(case.x)), case.target]
    sizes = coalitions.sum(axis=1)
    phi = np.zeros((len(case.x), groups))
    for g in range(groups):
        without = np.flatnonzero(coalitions[:, g] == 0)  # S not holding g; S + g is S | 2^g
        weight = np.array([math.factorial(s) * math.factorial(groups - s - 1) for s in sizes[without]])
        phi[:, g] = (weight / math.factorial(groups)) @ (values[without + 2**g] - values[without])
    return phi[:, mask]


def perturbation_methods(checks: Checks, case: Case) -> None:
    x, t = case.x, case.target
    xj, tt = jnp.asarray(x), torch.as_tensor(t, dtype=torch.long)

    for window, stride, documented in case.occlusions:
        checks.compare(
            "occlusion",
            case,
            f"window {window}, stride {stride}",
            lambda window=window, stride=stride: (
                jaxplain.occlusion(case.model, xj, target=t, window=window, stride=stride).values,
                Occlusion(case.torch_model()).attribute(
                    as_torch(x),
                    sliding_window_shapes=window,
                    strides=stride,
                    baselines=0.0,
                    target=tt,
                    perturbations_per_eval=16,
                ),
            ),
            documented=documented,
            notes=CAPTUM_ACCUMULATES_FLOAT32,
        )

    def mask_tensor(mask):
        return torch.as_tensor(np.asarray(mask, np.int64))[None]

    groups = int(case.ablation_mask.max()) + 1
    checks.compare(
        "feature_ablation",
        case,
        f"{groups} groups, zero baseline",
        lambda: (
            jaxplain.feature_ablation(case.model, xj, target=t, feature_mask=case.ablation_mask).values,
            FeatureAblation(case.torch_model()).attribute(
                as_torch(x),
                baselines=0.0,
                target=tt,
                feature_mask=mask_tensor(case.ablation_mask),
                perturbations_per_eval=groups,
            ),
        ),
    )

    groups = int(case.shapley_mask.max()) + 1

    def shapley():
        ours = jaxplain.exact_shapley(case.model, xj, target=t, feature_mask=case.shapley_mask).values
        theirs = ShapleyValues(case.torch_model()).attribute(
            as_torch(x),
            baselines=0.0,
            target=tt,
            feature_mask=mask_tensor(case.shapley_mask),
            perturbations_per_eval=groups,
        )
        truth = subset_shapley(case, case.shapley_mask)
        return (
            ours,
            theirs,
            {
                "jaxplain_vs_float64_subset_sum": max_rel_diff(ours, truth),
                "captum_vs_float64_subset_sum": max_rel_diff(theirs, truth),
            },
        )

    checks.compare(
        "exact_shapley",
        case,
        f"{groups} groups, vs ShapleyValues",
        shapley,
        notes=f"Captum enumerates all {groups}! orders; " + CAPTUM_ACCUMULATES_FLOAT32,
    )

    def noiseless():
        ours = jaxplain.smoothgrad(
            case.model,
            xj,
            method=jaxplain.saliency,
            target=t,
            key=jax.random.key(0),
            samples=4,
            noise_scale=0.0,
        ).values
        theirs = NoiseTunnel(Saliency(case.torch_model())).attribute(
            as_torch(x), nt_type="smoothgrad", nt_samples=4, stdevs=0.0, target=tt, abs=False
        )
        gradient = Saliency(case.torch_model()).attribute(as_torch(x), target=tt, abs=False)
        return (
            ours,
            theirs,
            {
                "jaxplain_vs_captum_saliency": max_rel_diff(ours, gradient),
                "captum_vs_captum_saliency": max_rel_diff(theirs, gradient),
            },
        )

    checks.compare(
        "smoothgrad",
        case,
        "noise 0, 4 samples, vs NoiseTunnel",
        noiseless,
        notes="both must equal saliency (details)",
    )


# --- metrics ----------------------------------------------------------------------------


def metric_methods(checks: Checks, case: Case) -> None:
    """infidelity and sensitivity_max against Captum's, on the same perturbations: drawn
    once in numpy and handed to jaxplain (`perturbations=`) and to Captum (a perturb_func
    that returns them, in Captum's repeat_interleave row order: example-major)."""
    x, t = case.x, case.target
    xj, tt = jnp.asarray(x), torch.as_tensor(t, dtype=torch.long)
    samples = checks.sizes.metric_samples
    rng = np.random.default_rng(0)
    baseline = np.broadcast_to(case.baseline, x.shape)
    removed = rng.uniform(size=(samples,) + x.shape) < 0.5
    subsets = np.where(removed, x - baseline, 0.0)  # I = (x - b) * m
    noise = rng.normal(scale=0.1, size=(samples,) + x.shape)
    shifts = rng.uniform(-0.02, 0.02, size=(samples,) + x.shape)

    def rows(perturbations):  # (samples, B, ...) -> Captum's (B * samples, ...), row b * samples + s
        return torch.as_tensor(
            np.ascontiguousarray(np.swapaxes(perturbations, 0, 1)).reshape((-1,) + x.shape[1:])
        )

    ig = jaxplain.integrated_gradients(
        case.model, xj, target=t, baseline=jnp.asarray(baseline), steps=checks.sizes.steps
    ).values
    gradient = jaxplain.saliency(case.model, xj, target=t).values

    @infidelity_perturb_func_decorator(True)  # Captum computes I / (x - b) itself
    def remove_subsets(inputs, baselines):
        return inputs - rows(subsets)

    def add_noise(inputs):
        return rows(noise), inputs - rows(noise)

    settings = {
        "subsets to x_train[0], IG, multiply_by_inputs": (subsets, ig, True, remove_subsets),
        "gaussian noise 0.1, saliency": (noise, gradient, False, add_noise),
    }
    for label, (perturbations, attribution, multiply, perturb_func) in settings.items():
        for normalize in (False, True):
            checks.compare(
                "infidelity",
                case,
                f"{label}, normalize={normalize}, {samples} draws",
                lambda p=perturbations, a=attribution, m=multiply, fn=perturb_func, n=normalize: (
                    jaxplain.metrics.infidelity(
                        case.model,
                        xj,
                        a,
                        target=t,
                        key=None,
                        perturbations=p,
                        baseline=baseline,
                        multiply_by_inputs=m,
                        normalize=n,
                    ),
                    infidelity(
                        case.torch_model(),
                        fn,
                        as_torch(x),
                        as_torch(a),
                        baselines=as_torch(baseline) if m else None,
                        target=tt,
                        n_perturb_samples=samples,
                        normalize=n,
                    ),
                ),
                notes="the same perturbations on both sides",
            )

    def shifted(inputs, radius):
        return inputs + rows(shifts)

    steps = checks.sizes.steps
    explainers = {
        "saliency": (jaxplain.saliency, {}, lambda: Saliency(case.torch_model()), {"abs": False}),
        f"integrated_gradients, {steps} steps": (
            jaxplain.integrated_gradients,
            {"steps": steps},
            lambda: IntegratedGradients(case.torch_model()),
            {"n_steps": steps},
        ),
    }
    for label, (method, options, captum_method, captum_options) in explainers.items():
        checks.compare(
            "sensitivity_max",
            case,
            f"{label}, uniform radius 0.02, {samples} draws",
            lambda method=method, options=options, make=captum_method, extra=captum_options: (
                jaxplain.metrics.sensitivity_max(
                    method, case.model, xj, target=t, key=None, perturbations=shifts, **options
                ),
                sensitivity_max(
                    make().attribute,
                    as_torch(x),
                    perturb_func=shifted,
                    n_perturb_samples=samples,
                    target=tt,
                    **extra,
                ),
            ),
            notes="the same perturbations on both sides; targets fixed to the clean predictions"
            + ("; " + CAPTUM_IG_FLOAT32 if options else ""),
        )


# --- statistical comparisons ------------------------------------------------------------


def statistical_methods(checks: Checks, case: Case) -> None:
    sizes = checks.sizes
    x, t = case.x, case.target
    xj, tt = jnp.asarray(x), torch.as_tensor(t, dtype=torch.long)
    mask = case.shapley_mask
    groups = int(mask.max()) + 1
    mask_t = torch.as_tensor(np.asarray(mask, np.int64))[None]
    exact = np.asarray(jaxplain.exact_shapley(case.model, xj, target=t, feature_mask=mask).values)

    def shapley(budget):
        seed_captum(budget)
        key = jax.random.key(budget)
        ours = jaxplain.shapley_sampling(
            case.model, xj, target=t, feature_mask=mask, samples=budget, key=key
        ).values
        theirs = ShapleyValueSampling(case.torch_model()).attribute(
            as_torch(x),
            baselines=0.0,
            target=tt,
            feature_mask=mask_t,
            n_samples=budget,
            perturbations_per_eval=groups,
        )
        if not sizes.plain_orders:
            return ours, theirs
        plain = jaxplain.shapley_sampling(
            case.model, xj, target=t, feature_mask=mask, samples=budget, antithetic=False, key=key
        ).values
        return ours, theirs, {"jaxplain_plain_orders": plain}

    checks.statistical(
        "shapley_sampling",
        case,
        f"{groups} groups, vs ShapleyValueSampling",
        sizes.sampling_budgets,
        shapley,
        exact,
        reference_name="exact_shapley",
        notes="budget = orders; jaxplain antithetic (default); plain orders in details (full run)",
    )

    def kernel(budget):
        seed_captum(budget)
        ours = jaxplain.kernel_shap(
            case.model, xj, target=t, feature_mask=mask, samples=budget, key=jax.random.key(budget)
        ).values
        theirs = KernelShap(case.torch_model()).attribute(
            as_torch(x),
            baselines=0.0,
            target=tt,
            feature_mask=mask_t,
            n_samples=budget,
            perturbations_per_eval=min(budget, 64),
        )
        return ours, theirs

    checks.statistical(
        "kernel_shap",
        case,
        f"{groups} groups, vs KernelShap",
        sizes.kernel_budgets,
        kernel,
        exact,
        reference_name="exact_shapley",
        notes="budget = coalitions per example; jaxplain paired (default)",
    )

    # Expected gradients = IG averaged over uniformly drawn references: the reference is
    # that average over the same references, with many IG steps.
    references = case.references
    averaged = np.mean(
        [
            np.asarray(
                jaxplain.integrated_gradients(
                    case.model,
                    xj,
                    target=t,
                    baseline=jnp.broadcast_to(jnp.asarray(b), xj.shape),
                    steps=sizes.reference_steps,
                ).values
            )
            for b in references
        ],
        axis=0,
    )

    def expected(budget):
        seed_captum(budget)
        ours = jaxplain.expected_gradients(
            case.model,
            xj,
            target=t,
            background=jnp.asarray(references),
            key=jax.random.key(budget),
            samples=budget,
        ).values
        theirs = GradientShap(case.torch_model()).attribute(
            as_torch(x), baselines=as_torch(references), n_samples=budget, stdevs=0.0, target=tt
        )
        return ours, theirs

    checks.statistical(
        "expected_gradients",
        case,
        f"{len(references)} refs, vs GradientShap",
        sizes.gradient_budgets,
        expected,
        averaged,
        reference_name=f"mean over the references of IG ({sizes.reference_steps} Gauss-Legendre steps)",
        notes="budget = draws per example; GradientShap with stdevs=0",
    )

    # SmoothGrad: jaxplain's noise is noise_scale * (max(x) - min(x)) per example; Captum
    # takes one absolute stdev per call, so it runs example by example.
    noise_scale = 0.15
    spread = noise_scale * (x.reshape(len(x), -1).max(axis=1) - x.reshape(len(x), -1).min(axis=1))
    reference = np.asarray(
        jaxplain.smoothgrad(
            case.model,
            xj,
            method=jaxplain.saliency,
            target=t,
            key=jax.random.key(12345),
            samples=sizes.reference_samples,
            noise_scale=noise_scale,
            noise_chunk_size=256,
        ).values
    )

    def smooth(budget):
        seed_captum(budget)
        ours = jaxplain.smoothgrad(
            case.model,
            xj,
            method=jaxplain.saliency,
            target=t,
            key=jax.random.key(budget),
            samples=budget,
            noise_scale=noise_scale,
        ).values
        twin = NoiseTunnel(Saliency(case.torch_model()))
        theirs = np.concatenate(
            [
                as_numpy(
                    twin.attribute(
                        as_torch(x[i : i + 1]),
                        nt_type="smoothgrad",
                        nt_samples=budget,
                        stdevs=float(spread[i]),
                        target=int(t[i]),
                        abs=False,
                    )
                )
                for i in range(len(x))
            ]
        )
        return ours, theirs

    checks.statistical(
        "smoothgrad",
        case,
        f"noise {noise_scale} of range, vs NoiseTunnel",
        sizes.noise_budgets,
        smooth,
        reference,
        reference_name=f"jaxplain smoothgrad, {sizes.reference_samples} samples, another key",
        notes="budget = noisy copies; Captum per example with stdev 0.15 (max - min)",
    )


# --- output -------------------------------------------------------------------------------


def table(rows) -> str:
    """The rows as text: method, model, setting, max rel diff, tolerance, result."""
    cells = []
    for row in rows:
        shown = f"{row.max_rel_diff:.2e}" if row.max_rel_diff is not None else "-"
        if row.kind == "statistical" and "budgets" in row.details:
            d = row.details
            # the mutual difference at the largest budget, then each library's error to the reference
            tol = "stat"
            result = (
                f"{row.status}: error to {d['reference'].split(' ')[0]} at {_series(d['budgets'], 'd')} "
                f"samples: jaxplain {_series(d['error_jaxplain'])}, captum {_series(d['error_captum'])}"
            )
        else:
            tol = f"{row.tolerance:.0e}" if row.tolerance else "-"
            result = row.status
        cells.append((row.method, row.model, row.setting, shown, tol, result))
    header = ("method", "model", "setting", "max rel diff", "tol", "result")
    widths = [max(len(c[i]) for c in cells + [header]) for i in range(5)]
    lines = []
    for c in [header] + cells:
        left = "  ".join(v.ljust(w) for v, w in zip(c[:3], widths[:3]))
        right = "  ".join(v.rjust(w) for v, w in zip(c[3:5], widths[3:5]))
        lines.append(f"{left}  {right}  {c[5]}")
    return "\n".join(lines)


def _series(values, spec=".2g") -> str:
    return " -> ".join(f"{v:{spec}}" for v in values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="test examples per model (default 16, quick 4)")
    parser.add_argument("--out", default=None, help="folder for the JSON (default: benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else Sizes()
    if args.n is not None:
        sizes = dataclasses.replace(sizes, n=args.n)
    torch.set_default_dtype(torch.float64)  # Captum's own tensors (alphas, masks) in float64 too
    seed_captum(0)
    warnings.filterwarnings("ignore", module="captum")  # hook and perturbation chatter
    start = time.perf_counter()

    cases = load_cases(sizes)
    logits = {case.name: check_logits(case) for case in cases}  # before anything else
    checks = Checks(sizes)
    for case in cases:
        print(f"{case.name}: {len(case.x)} examples, targets {case.target.tolist()}")
        gradient_methods(checks, case)
        rule_methods(checks, case)
        perturbation_methods(checks, case)
        metric_methods(checks, case)
        if case.name in sizes.statistical_models:
            statistical_methods(checks, case)
    seconds = time.perf_counter() - start

    failures = [row for row in checks.rows if not row.ok]
    payload = {
        "benchmark": "crosscheck_captum",
        "machine": machine(),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "dtype": "float64 (jax_enable_x64; torch float64)",
        "quick": bool(args.quick),
        "sizes": dataclasses.asdict(sizes),
        "metric": METRIC,
        "tolerance": TOLERANCE,
        "targets": "each example's predicted class, the same int array for both libraries",
        "logits_max_abs_diff": {name: max(gaps.values()) for name, gaps in logits.items()},
        "logits_max_abs_diff_per_twin": logits,
        "seconds": seconds,
        "summary": {
            "rows": len(checks.rows),
            "deterministic_pass": sum(r.kind == "deterministic" and r.passed for r in checks.rows),
            "documented_differences": sum(
                r.kind == "deterministic" and not r.passed and r.documented_difference is not None
                for r in checks.rows
            ),
            "failures": len(failures),
            "statistical_not_falling": sum(r.kind == "statistical" and not r.passed for r in checks.rows),
        },
        "rows": [row.as_json() for row in checks.rows],
    }
    path = write("crosscheck_captum.json", payload, *([args.out] if args.out else []))
    print()
    print(f"wrote {path} ({seconds:.0f} s)")
    print(table(checks.rows))
    if failures:
        print(
            f"{len(failures)} deterministic check(s) failed: "
            + ", ".join(f"{r.method}/{r.model}/{r.setting}" for r in failures)
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
