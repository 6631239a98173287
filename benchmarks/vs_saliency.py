"""jaxplain against PAIR's `saliency` package: same model, same inputs, matched settings.

PAIR saliency (https://github.com/PAIR-code/saliency, `saliency.core`) is framework
agnostic: each method's `GetMask` explains ONE example, calling back into the model
through a `call_model_function(x_value_batch, call_model_args, expected_keys)` that
returns the input gradients of the explained class for a batch of points. Here that
callback is a `jax.jit`-compiled gradient of the target logit (one compile per batch
shape, the target a traced argument), its result converted to numpy, as saliency's
README describes; it is compiled with the XLA options jaxplain compiles its own programs
with (`jaxplain.engine.jit`), so both sides run the same kernels. Explaining N examples with saliency is a Python loop over them;
jaxplain explains the batch in one call.

For IntegratedGradients, SmoothGrad (around the vanilla gradient), BlurIG and GuidedIG,
on the shipped digits CNN (and the digits ResNet-18 at fewer steps), this script

  * times saliency's loop over N test digits against one jaxplain call on the batch, and
    both on a single example (the per-call overhead), as medians of interleaved runs
    after warm-up (`_common.interleaved_medians`), and reports saliency / jaxplain;
  * compares the attributions: max relative difference
        max |a_jaxplain - a_saliency| / max |a_saliency|
    over the whole batch, and says per method where the two definitions differ. The
    deterministic methods whose definitions coincide (IG, GuidedIG) are checked to 1e-4
    on a float64 rerun of both (model, inputs and callback in float64: in float32 the two
    build the path points with different roundings, 1 ulp apart, enough to flip ReLU
    kinks of the ResNet); their float32 differences, as timed, are reported next to it.

Settings are matched as far as the definitions allow (see DIFFERENCES): saliency's
IG puts weight 1 / m on each of the m nodes linspace(0, 1, m), a rule jaxplain has no
schedule for; jaxplain runs schedule="trapezoid" (the same m nodes) and the check adds
the endpoint terms that turn the trapezoid rule into saliency's, so it compares the same
gradients at the same points. Saliency's path methods get batch_size = steps (all the
points of one example in one callback), the fastest setting for them.

    python benchmarks/vs_saliency.py [--n 32] [--repeats 5] [--quick] [--no-resnet] [--no-xrai]
                                     [--xrai-n 8] [--out DIR]

XRAI (`saliency.core.XRAI`, `jaxplain.methods.xrai.xrai`) runs on 64 x 64 x 3 synthetic images
(a bright rectangle on noise) and a small randomly initialised CNN, N images: the heat maps
of the two are compared on the same base attribution and the same segments (the merge, to
1e-5 of the largest value, and the same region ranks), and three timings are reported per
image: the whole method (IG from the min and max baselines, Felzenszwalb at six scales,
merge), the merge alone and the segmentation alone (`--no-xrai` skips it).

--quick (digits CNN only, N=2, 8 steps or samples, one timed round, no N=1 timing) checks
that the script works in a few seconds; its timings mean nothing. Writes vs_saliency.json
into --out (default benchmarks/results) and prints a Markdown table. Exits 1 if IG or
GuidedIG misses the 1e-4 tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, interleaved_medians, machine, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4
METHODS = ("integrated_gradients", "smoothgrad", "blur_ig", "guided_ig")
METRIC = (
    "max_rel_diff = max|a_jaxplain - a_saliency| / max|a_saliency|, both maxima over the whole "
    "batch (all examples and features); the explained class is each example's predicted class. "
    "Deterministic rows: max_rel_diff from a float64 run of both libraries (the check, tolerance "
    "1e-4), max_rel_diff_float32 at the timed float32 settings"
)
TIMING = (
    "seconds to explain the batch: saliency = a Python loop of GetMask / GetSmoothedMask over "
    "the examples, jaxplain = one call on the batch; median of interleaved runs after warm-up "
    "(compilation happens before the timed rounds); ratio = saliency median / jaxplain median; "
    "ratio_1 the same for one example (N=1)"
)

DIFFERENCES = {
    "integrated_gradients": {
        "coincide": "after the endpoint correction below (same nodes, same gradients)",
        "quadrature": (
            "saliency's IntegratedGradients evaluates the m = x_steps points alpha = "
            "linspace(0, 1, m) (both ends included) and weights each by 1 / m: "
            "sum_k g(k / (m - 1)) / m. That is no standard rule (its weights sum to 1 but the "
            "nodes span m - 1 intervals, an O(1/m) bias). jaxplain has no such schedule; "
            "schedule='trapezoid' uses the same m nodes with weights 1 / (m - 1), halved at "
            "the ends, so saliency = (m - 1) / m * trapezoid + (x - b) (g(b) + g(x)) / (2 m) "
            "exactly; max_rel_diff is measured against that (g from the same jitted gradient), "
            "max_rel_diff_trapezoid is the plain difference of the two rules, "
            "max_rel_diff_gauss_legendre the difference to jaxplain's default rule"
        ),
        "baseline": "both zero (saliency's default; jaxplain baseline=0.0)",
        "precision": (
            "saliency builds the points alpha * x in float64 (the float32 callback rounds them) and "
            "accumulates the gradients in float32 even in a float64 run; jaxplain forms float32 "
            "alpha times float32 x. The points differ by 1 ulp, which flips ReLU kinks: on the "
            "ResNet single path gradients change by percents (max_rel_diff_float32); the float64 "
            "run removes that (max_rel_diff, left at saliency's float32 accumulation)"
        ),
    },
    "smoothgrad": {
        "coincide": "same definition, different random draws: compared statistically",
        "definition": (
            "both: mean over nsamples / samples noisy copies x + e, e ~ N(0, sigma^2), sigma = "
            "stdev_spread / noise_scale times (max(x) - min(x)) of each example, of the plain "
            "input gradient (saliency GradientSaliency.GetSmoothedMask with magnitude=False; "
            "jaxplain.smoothgrad(model, x, method=jaxplain.saliency, ...)). saliency's default magnitude=True "
            "averages the squared gradients instead: that is jaxplain.smoothgrad_sq"
        ),
        "noise": "saliency draws with numpy's global np.random.normal (float64), jaxplain with a "
        "jax.random key inside the compiled program; the noise differs, so the "
        "attributions agree only up to Monte Carlo error",
        "statistic": (
            "mean_rel_diff = mean|a_jaxplain - a_saliency| / mean|a_saliency|, next to "
            "jaxplain_self_mean_rel_diff, the same statistic between two jaxplain runs with "
            "different keys: equal levels mean the two estimate the same quantity"
        ),
    },
    "blur_ig": {
        "coincide": "no: the blur path and the quadrature differ (same max_sigma and steps)",
        "blur": (
            "saliency blurs with scipy.ndimage.gaussian_filter(mode='constant'): zero padding "
            "outside the image, kernel truncated at 4 sigma for each sigma; jaxplain reflects at "
            "the borders and truncates every level at radius ceil(3 max_sigma) (at most size - 1), "
            "renormalised. So the two paths start from different blurred images (saliency's "
            "fades towards 0 at the borders, jaxplain's keeps the image's mass)"
        ),
        "quadrature": (
            "saliency: sigmas i max_sigma / steps, gradient at the less blurred end of each step "
            "(sigma_i, starting at x itself) times a forward finite difference of the blur in "
            "sigma (grad_step=0.01) times d sigma (a left Riemann sum, O(1/steps)); jaxplain: "
            "gradient at the mid-level times the exact change of the blurred image over the step "
            "(a midpoint rule whose changes telescope to x - blur(x, max_sigma))"
        ),
    },
    "xrai": {
        "coincide": "the merge: same heat map and region ranks for the same base attribution and segments",
        "segments": (
            "the same Felzenszwalb settings (scales 50, 100, 150, 250, 500, 1200, sigma 0.8, min_size "
            "150, on the image rescaled to [-1, 1] and resized to 224 x 224, masks dilated by a disk of "
            "radius 5): the same masks; PAIR also lists the empty labels the resizing back leaves "
            "(they never add a pixel); a constant image: PAIR divides by zero, jaxplain segments it "
            "as one flat image"
        ),
        "gains": (
            "PAIR: the float32 mean over each candidate's new pixels, recomputed for every segment at "
            "every step (O(S^2 P)); jaxplain: every segment's count and float64 sum over the pixels "
            "not yet covered, updated by the pixels each step adds (O(S P)); gains agree to float32 "
            "rounding. Ties: PAIR takes the first segment of equal gain (strict >); jaxplain takes "
            "the first whose gain is within 1e-9 of the largest |attribution| of the best, which "
            "is the same choice for exact ties and differs only where PAIR's float32 means cannot "
            "order the two either"
        ),
        "base_attribution": (
            "both: IG averaged over two constant baselines at the image's minimum and maximum, "
            "the channel maximum of it. PAIR's IG rule (weights 1 / m on linspace(0, 1, m)) "
            "differs from jaxplain's gauss_legendre default (see integrated_gradients), so the "
            "whole methods' heat maps differ as their IG does (full_correlation)"
        ),
        "output": "PAIR returns the (H, W) map; jaxplain the same map in every channel, shaped like x",
    },
    "guided_ig": {
        "coincide": "same algorithm (same steps, fraction, max_dist, zero baseline)",
        "precision": (
            "saliency moves the point and accumulates in float64 (gradients float32 from the "
            "callback), tolerance math.isclose(rel_tol=1e-9, abs_tol=1e-9); jaxplain is float32 "
            "with isclose(rtol=1e-5, atol=1e-7 (1 + |x - b|_1)) and at most ceil(1 / fraction) + 8 "
            "moves per step. In float32 the rounding differences flip ReLU kinks and quantile "
            "ties, and the adaptive path amplifies them (max_rel_diff_float32); the float64 run "
            "of both agrees to rounding (max_rel_diff)"
        ),
        "numpy_shim": (
            "saliency 0.2.1 calls np.quantile(..., interpolation='lower'), an argument numpy 2.x "
            "removed; this script gives saliency.core.guided_ig a copy of the numpy namespace "
            "whose quantile maps interpolation= to method= (in process, no file changed)"
        ),
    },
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    n: int  # test examples explained per call
    ig_steps: int
    samples: int  # SmoothGrad noisy copies
    blur_steps: int
    guided_steps: int
    noise_scale: float = 0.15  # saliency's default stdev_spread, jaxplain's default noise_scale
    max_sigma: float = 4.0  # on 8x8 digits (both libraries default to 50, the whole image many times over)
    fraction: float = 0.25  # both defaults
    max_dist: float = 0.02  # both defaults


def sizes(model_name: str, n: int, quick: bool) -> Sizes:
    if quick:
        return Sizes(n=2, ig_steps=8, samples=4, blur_steps=8, guided_steps=8)
    if model_name == "digits_resnet18":
        return Sizes(n=n, ig_steps=32, samples=16, blur_steps=32, guided_steps=32)
    return Sizes(n=n, ig_steps=64, samples=32, blur_steps=64, guided_steps=64)


def _patch_saliency_quantile():
    """saliency.core.guided_ig uses np.quantile(interpolation=), removed in numpy 2.x."""
    import saliency.core.guided_ig as guided

    if getattr(guided.np, "_vs_saliency_shim", False):
        return
    try:
        np.quantile(np.zeros(2), 0.5, interpolation="lower")
        return  # this numpy still takes it
    except TypeError:
        pass
    shim = types.ModuleType("numpy")
    shim.__dict__.update(np.__dict__)

    def quantile(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return np.quantile(a, q, *args, **kwargs)

    shim.quantile = quantile
    shim._vs_saliency_shim = True
    guided.np = shim


def gradient_callback(model, dtype=jnp.float32):
    """saliency's call_model_function: a jitted JAX input gradient of the target class."""
    from saliency.core import INPUT_OUTPUT_GRADIENTS

    # Compiled with the XLA options jaxplain compiles its own programs with, so that both
    # libraries run the same kernels and the comparison measures the methods' work.
    @jaxplain.engine.jit
    def gradients(params, points, target):
        def total(p):
            return model.replace(params=params)(p)[:, target].sum()

        return jax.grad(total)(points)

    def call_model_function(x_value_batch, call_model_args=None, expected_keys=None):
        points = jnp.asarray(x_value_batch, dtype)
        grads = gradients(model.params, points, call_model_args["target"])
        return {INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}

    return call_model_function


def loop_over(explain):
    """saliency explains one example per call: a Python loop over the batch."""

    def run(x, targets):
        return np.stack([explain(x[i], {"target": int(targets[i])}) for i in range(x.shape[0])])

    return run


def _saliency_ig(xi, callback, args, steps, batch_size):
    import saliency.core as saliency

    return saliency.IntegratedGradients().GetMask(
        xi, callback, args, x_baseline=np.zeros_like(xi), x_steps=steps, batch_size=batch_size
    )


def _gradient_floors(model, x, targets, steps):
    """The IG path gradients with no method around them: N calls of `steps` points, or one call."""

    @jaxplain.engine.jit
    def gradients(params, points, point_targets):
        def total(p):
            outputs = model.replace(params=params)(p)
            return jnp.take_along_axis(outputs, point_targets[:, None], axis=1).sum()

        return jax.grad(total)(points)

    alphas = np.linspace(0.0, 1.0, steps).astype(np.float32).reshape((1, steps) + (1,) * (x.ndim - 1))
    points = alphas * x[:, None]  # (N, steps, ...)
    point_targets = np.repeat(targets[:, None], steps, axis=1)
    per_example = [(jnp.asarray(p), jnp.asarray(t)) for p, t in zip(points, point_targets)]
    flat = (jnp.asarray(points.reshape((-1,) + x.shape[1:])), jnp.asarray(point_targets.reshape(-1)))
    return {
        "floor_separate_calls": lambda: [gradients(model.params, p, t) for p, t in per_example],
        "floor_one_call": lambda: gradients(model.params, *flat),
    }


def contenders(method, model, callback, s: Sizes):
    """(saliency(x, targets), jaxplain(x, targets)) for one method, both returning numpy-able arrays."""
    import saliency.core as saliency

    if method == "integrated_gradients":
        sal = loop_over(lambda xi, args: _saliency_ig(xi, callback, args, s.ig_steps, s.ig_steps))
        jxp = lambda x, t: (
            jaxplain.integrated_gradients(  # noqa: E731
                model, x, target=t, steps=s.ig_steps, schedule="trapezoid", baseline=0.0
            ).values
        )
    elif method == "smoothgrad":
        grad = saliency.GradientSaliency()
        sal = loop_over(
            lambda xi, args: grad.GetSmoothedMask(
                xi, callback, args, stdev_spread=s.noise_scale, nsamples=s.samples, magnitude=False
            )
        )
        key = jax.random.key(0)
        jxp = lambda x, t: (
            jaxplain.smoothgrad(  # noqa: E731
                model,
                x,
                method=jaxplain.saliency,
                target=t,
                key=key,
                samples=s.samples,
                noise_scale=s.noise_scale,
            ).values
        )
    elif method == "blur_ig":
        blur = saliency.BlurIG()
        sal = loop_over(
            lambda xi, args: blur.GetMask(
                xi, callback, args, max_sigma=s.max_sigma, steps=s.blur_steps, batch_size=s.blur_steps
            )
        )
        jxp = lambda x, t: (
            jaxplain.blur_ig(  # noqa: E731
                model, x, target=t, max_sigma=s.max_sigma, steps=s.blur_steps
            ).values
        )
    elif method == "guided_ig":
        _patch_saliency_quantile()
        guided = saliency.GuidedIG()
        sal = loop_over(
            lambda xi, args: guided.GetMask(
                xi,
                callback,
                args,
                x_baseline=np.zeros_like(xi),
                x_steps=s.guided_steps,
                fraction=s.fraction,
                max_dist=s.max_dist,
            )
        )
        jxp = lambda x, t: (
            jaxplain.guided_ig(  # noqa: E731
                model,
                x,
                target=t,
                baseline=0.0,
                steps=s.guided_steps,
                fraction=s.fraction,
                max_dist=s.max_dist,
            ).values
        )
    else:
        raise ValueError(method)
    return sal, jxp


def max_rel(a, reference) -> float:
    a, reference = np.asarray(a, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(a - reference).max() / np.abs(reference).max())


def mean_rel(a, reference) -> float:
    a, reference = np.asarray(a, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(a - reference).mean() / np.abs(reference).mean())


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _saliency_rule(callback, x, targets, trapezoid, m):
    """saliency's IG from jaxplain's trapezoid IG on the same m nodes (zero baseline):
    sum_k g(k / (m - 1)) / m = (m - 1) / m * trapezoid + (g(0) + g(1)) / (2 m), times x - 0."""
    from saliency.core import INPUT_OUTPUT_GRADIENTS

    def gradient(points):  # the endpoint gradients, one example at a time
        return np.stack(
            [
                callback(p[None], {"target": int(t)})[INPUT_OUTPUT_GRADIENTS][0]
                for p, t in zip(points, targets)
            ]
        )

    return (m - 1) / m * trapezoid + x * (gradient(np.zeros_like(x)) + gradient(x)) / (2 * m)


def float64_check(method, model, x, targets, s: Sizes) -> float:
    """max_rel_diff with model, inputs and both libraries in float64 (IG and GuidedIG).

    In float32 the two libraries build the path points with different roundings (saliency
    float64 alpha * x cast to float32, jaxplain float32 alpha times float32 x): 1-ulp
    apart, enough to flip ReLU kinks of the ResNet and change single gradients by percents.
    In float64 the points agree to 1e-16 and what is left is the algorithms' difference.
    """
    with jax.enable_x64(True):
        model64 = model.replace(
            params=jax.tree_util.tree_map(
                lambda p: jnp.asarray(p, jnp.float64) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                model.params,
            )
        )
        callback = gradient_callback(model64, jnp.float64)
        x64 = np.asarray(x, np.float64)
        sal, jxp = contenders(method, model64, callback, s)
        sal_values = sal(x64, targets)
        jxp_values = np.asarray(jxp(x64, targets))
        assert jxp_values.dtype == np.float64, jxp_values.dtype
        if method == "integrated_gradients":
            jxp_values = _saliency_rule(callback, x64, targets, jxp_values, s.ig_steps)
        return max_rel(jxp_values, sal_values)


def compare(method, model, callback, x, targets, sal_values, jxp_values, s: Sizes, quick: bool) -> dict:
    """Agreement of the two attributions (float32, as timed), in the terms the definitions allow."""
    sal_values, jxp_values = np.asarray(sal_values), np.asarray(jxp_values)
    out = {"max_rel_diff": None, "correlation": correlation(jxp_values, sal_values)}
    if method in ("integrated_gradients", "guided_ig"):
        out["kind"] = "deterministic"
        out["max_rel_diff"] = float64_check(method, model, x, targets, s)
        if method == "integrated_gradients":
            rule = _saliency_rule(callback, x, targets, jxp_values, s.ig_steps)
            out["max_rel_diff_float32"] = max_rel(rule, sal_values)
            out["max_rel_diff_trapezoid"] = max_rel(jxp_values, sal_values)
            if not quick:
                gauss = jaxplain.integrated_gradients(
                    model, x, target=targets, steps=s.ig_steps, baseline=0.0
                ).values
                out["max_rel_diff_gauss_legendre"] = max_rel(gauss, sal_values)
        else:
            out["max_rel_diff_float32"] = max_rel(jxp_values, sal_values)
            out["mean_rel_diff_float32"] = mean_rel(jxp_values, sal_values)
    elif method == "smoothgrad":
        other = jaxplain.smoothgrad(
            model,
            x,
            method=jaxplain.saliency,
            target=targets,
            key=jax.random.key(1),
            samples=s.samples,
            noise_scale=s.noise_scale,
        ).values
        out.update(
            kind="statistical",
            mean_rel_diff=mean_rel(jxp_values, sal_values),
            jaxplain_self_mean_rel_diff=mean_rel(other, jxp_values),
            max_rel_diff_statistical=max_rel(jxp_values, sal_values),
        )
    else:  # blur_ig
        out.update(
            kind="differs",
            max_rel_diff=max_rel(jxp_values, sal_values),
            mean_rel_diff=mean_rel(jxp_values, sal_values),
        )
    out["tolerance"] = TOLERANCE if out["kind"] == "deterministic" else None
    if out["tolerance"] is not None:
        out["pass"] = out["max_rel_diff"] <= TOLERANCE
    return out


def settings_of(method, s: Sizes) -> dict:
    return {
        "integrated_gradients": {
            "steps": s.ig_steps,
            "baseline": 0.0,
            "saliency": f"x_steps={s.ig_steps}, x_baseline=zeros, batch_size={s.ig_steps}",
            "jaxplain": f"steps={s.ig_steps}, schedule='trapezoid', baseline=0.0",
        },
        "smoothgrad": {
            "samples": s.samples,
            "noise_scale": s.noise_scale,
            "saliency": f"GradientSaliency.GetSmoothedMask(nsamples={s.samples}, "
            f"stdev_spread={s.noise_scale}, magnitude=False)",
            "jaxplain": f"smoothgrad(method=jaxplain.saliency, samples={s.samples}, "
            f"noise_scale={s.noise_scale})",
        },
        "blur_ig": {
            "steps": s.blur_steps,
            "max_sigma": s.max_sigma,
            "saliency": f"max_sigma={s.max_sigma}, steps={s.blur_steps}, grad_step=0.01, "
            f"sqrt=False, batch_size={s.blur_steps}",
            "jaxplain": f"max_sigma={s.max_sigma}, steps={s.blur_steps}",
        },
        "guided_ig": {
            "steps": s.guided_steps,
            "fraction": s.fraction,
            "max_dist": s.max_dist,
            "baseline": 0.0,
            "saliency": f"x_steps={s.guided_steps}, fraction={s.fraction}, "
            f"max_dist={s.max_dist}, x_baseline=zeros",
            "jaxplain": f"steps={s.guided_steps}, fraction={s.fraction}, max_dist={s.max_dist}, baseline=0.0",
        },
    }[method]


def run_model(name, x_all, n, quick, repeats, warmup):
    model = jaxplain.load_model(os.path.join(ROOT, "checkpoints", name))
    s = sizes(name, n, quick)
    x = np.asarray(x_all[: s.n], np.float32)
    targets = np.asarray(jnp.argmax(model(jnp.asarray(x)), axis=1), np.int32)
    callback = gradient_callback(model)
    rows = []
    for method in METHODS:
        sal, jxp = contenders(method, model, callback, s)
        np.random.seed(0)
        sal_values = sal(x, targets)  # also compiles the callback's shapes
        jxp_values = np.asarray(jxp(x, targets))  # and jaxplain's program
        row = {"model": name, "method": method, "n": s.n, "settings": settings_of(method, s)}
        row.update(compare(method, model, callback, x, targets, sal_values, jxp_values, s, quick))
        runs = {"saliency": lambda: sal(x, targets), "jaxplain": lambda: jxp(x, targets)}
        if not quick:  # one example: the per-call overhead (another compile for jaxplain)
            x1, t1 = x[:1], targets[:1]
            runs.update(saliency_1=lambda: sal(x1, t1), jaxplain_1=lambda: jxp(x1, t1))
            if method == "integrated_gradients":
                # saliency's default batch_size=1: one point per callback
                sal_default = loop_over(lambda xi, args: _saliency_ig(xi, callback, args, s.ig_steps, 1))
                runs["saliency_batch_size_1"] = lambda: sal_default(x, targets)
                # jaxplain with ~128 points per gradient call (steps per chunk x N), the
                # size of saliency's calls, next to its memory-sized default chunk
                chunk = max(1, 128 // s.n)
                row["small_chunk_size"] = chunk
                row["default_chunk_size"] = jaxplain.engine.default_chunk_size(
                    model, jnp.asarray(x), s.ig_steps
                )
                runs["jaxplain_small_chunk"] = lambda: (
                    jaxplain.integrated_gradients(
                        model,
                        x,
                        target=targets,
                        steps=s.ig_steps,
                        schedule="trapezoid",
                        baseline=0.0,
                        chunk_size=chunk,
                    ).values
                )
                runs.update(_gradient_floors(model, x, targets, s.ig_steps))
        timings = interleaved_medians(runs, repeats=repeats, warmup=warmup)
        row["timings"] = timings
        median = {k: v["median_s"] for k, v in timings.items()}
        row["ratio"] = median["saliency"] / median["jaxplain"]
        row["ratio_1"] = median["saliency_1"] / median["jaxplain_1"] if not quick else None
        if "floor_separate_calls" in median:
            row["floor_note"] = (
                "floor_separate_calls: the N x steps path gradients alone as N jitted calls of "
                "`steps` points each (saliency's callbacks without its Python); floor_one_call: all "
                "N x steps points in one jitted call"
            )
        if "saliency_batch_size_1" in median:
            row["ratio_saliency_batch_size_1"] = median["saliency_batch_size_1"] / median["jaxplain"]
            row["ratio_jaxplain_small_chunk"] = median["saliency"] / median["jaxplain_small_chunk"]
        rows.append(row)
        print(
            f"  {name} {method}: ratio {row['ratio']:.2f} (N={s.n})"
            + (f", {row['ratio_1']:.2f} (N=1)" if row["ratio_1"] else "")
            + f", max_rel_diff {row['max_rel_diff']}",
            flush=True,
        )
    return rows


XRAI_SIZE = 64
XRAI_TOLERANCE = 1e-5


def xrai_images(n: int, size: int = XRAI_SIZE, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) images in [0, 1]: a bright rectangle at a random place on noise."""
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.uniform(size=(n, size, size, 3))
    for image in x:
        top, left = rng.integers(0, size // 2, 2)
        image[top : top + size // 3, left : left + size // 2] += 0.6 * rng.uniform(size=3)
    return x.astype(np.float32)


def run_xrai(n: int, quick: bool, repeats: int, warmup: int) -> dict:
    """XRAI: PAIR's GetMaskWithDetails in a loop over n images against one jaxplain call."""
    import flax.linen as nn
    import saliency.core as saliency
    from saliency.core import xrai as pair_xrai

    from jaxplain.methods.xrai import xrai, xrai_segments
    from jaxplain.models.cnn import SmallCNN

    n, steps = (2, 4) if quick else (n, 32)
    x = xrai_images(n)
    module = SmallCNN(num_classes=10, channels=(8, 16), dense=32, activation=nn.relu)
    model = jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(0), x[:1]))
    targets = np.asarray(jnp.argmax(model(jnp.asarray(x)), axis=1), np.int32)
    callback = gradient_callback(model)
    parameters = saliency.XRAIParameters(steps=steps, return_xrai_segments=True)

    def pair_full():
        return [
            saliency.XRAI().GetMaskWithDetails(
                x[i], callback, {"target": int(targets[i])}, batch_size=steps, extra_parameters=parameters
            )
            for i in range(n)
        ]

    def ours_full():
        return xrai(model, x, target=targets, steps=steps)

    segments = xrai_segments(x)
    base = np.asarray(ours_full().extras["base_attribution"])

    def pair_merge():
        return [
            saliency.XRAI().GetMaskWithDetails(
                x[i], None, base_attribution=base[i], segments=list(segments[i]), extra_parameters=parameters
            )
            for i in range(n)
        ]

    def ours_merge():
        return xrai(model, x, target=targets, base_attribution=base, segments=segments)

    theirs, ours = pair_merge(), ours_merge()
    heat_pair = np.stack([t.attribution_mask for t in theirs])
    ranks_equal = all(np.array_equal(t.segments, r) for t, r in zip(theirs, np.asarray(ours.extras["ranks"])))
    full_pair, full_ours = pair_full(), ours_full()
    row = {
        "model": f"small_cnn_{XRAI_SIZE}x{XRAI_SIZE}x3",
        "method": "xrai",
        "n": n,
        "settings": {
            "steps": steps,
            "saliency": f"XRAI.GetMaskWithDetails(XRAIParameters(steps={steps}), batch_size={steps}): IG from "
            "the min and max baselines, Felzenszwalb segments, algorithm='full', area_threshold=1, "
            "min_pixel_diff=50",
            "jaxplain": f"xrai(steps={steps}): the same defaults, IG by gauss_legendre",
        },
        "kind": "deterministic",
        "max_rel_diff": max_rel(np.asarray(ours.values)[..., 0], heat_pair),
        "ranks_equal": ranks_equal,
        "regions_per_image": float(np.mean([t.segments.max() for t in theirs])),
        "segments_per_image": float(np.mean(segments.any(axis=(2, 3)).sum(axis=1))),
        "full_correlation": correlation(
            np.asarray(full_ours.values)[..., 0], np.stack([t.attribution_mask for t in full_pair])
        ),
        "tolerance": XRAI_TOLERANCE,
    }
    row["pass"] = row["max_rel_diff"] <= XRAI_TOLERANCE and ranks_equal
    runs = {
        "saliency": pair_full,
        "jaxplain": ours_full,
        "saliency_merge": pair_merge,
        "jaxplain_merge": ours_merge,
        "saliency_segments": lambda: [pair_xrai._get_segments_felzenszwalb(image) for image in x],
        "jaxplain_segments": lambda: xrai_segments(x),
    }
    timings = interleaved_medians(runs, repeats=repeats, warmup=warmup)
    median = {k: v["median_s"] for k, v in timings.items()}
    row.update(
        timings=timings,
        ms_per_image={k: 1e3 * v / n for k, v in median.items()},
        ratio=median["saliency"] / median["jaxplain"],
        ratio_1=None,
        ratio_merge=median["saliency_merge"] / median["jaxplain_merge"],
        ratio_segments=median["saliency_segments"] / median["jaxplain_segments"],
    )
    print(
        f"  xrai: ratio {row['ratio']:.2f} whole, {row['ratio_merge']:.2f} merge, "
        f"{row['ratio_segments']:.2f} segments (N={n}), max_rel_diff {row['max_rel_diff']:.1e}",
        flush=True,
    )
    return row


def table(rows) -> str:
    lines = [
        "| model | method | N | steps / samples | saliency ms | jaxplain ms | ratio | "
        "ratio N=1 | max rel diff | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["timings"]
        budget = r["settings"].get("steps", r["settings"].get("samples"))
        if r["kind"] == "statistical":
            diff = f"{r['mean_rel_diff']:.3f} (mean; self {r['jaxplain_self_mean_rel_diff']:.3f})"
            note = "random: compare with self"
        elif r["kind"] == "differs":
            diff = f"{r['max_rel_diff']:.3f}"
            note = "definitions differ"
        else:
            diff = f"{r['max_rel_diff']:.1e}"
            note = "pass" if r["pass"] else "FAIL"
            if r["method"] == "integrated_gradients":
                note += f" (rule gap {r['max_rel_diff_trapezoid']:.1e})"
        lines.append(
            f"| {r['model']} | {r['method']} | {r['n']} | {budget} | "
            f"{1e3 * t['saliency']['median_s']:.1f} | {1e3 * t['jaxplain']['median_s']:.2f} | "
            f"{r['ratio']:.2f} | {'-' if r['ratio_1'] is None else format(r['ratio_1'], '.2f')} | "
            f"{diff} | {note} |"
        )
    for r in rows:
        if r["method"] == "xrai":
            per = r["ms_per_image"]
            lines.append(
                f"\nxrai on {r['model']} (N={r['n']}), ms per image, saliency / jaxplain: whole method "
                f"{per['saliency']:.0f} / {per['jaxplain']:.0f} ({r['ratio']:.2f}x), merge "
                f"{per['saliency_merge']:.1f} / {per['jaxplain_merge']:.1f} ({r['ratio_merge']:.2f}x), "
                f"segments {per['saliency_segments']:.0f} / {per['jaxplain_segments']:.0f} "
                f"({r['ratio_segments']:.2f}x); same ranks: {r['ranks_equal']}; whole-method heat maps' "
                f"correlation {r['full_correlation']:.3f} (the IG rules differ)"
            )
        if "ratio_saliency_batch_size_1" in r:
            lines.append(
                f"\n{r['model']} integrated_gradients: ratio {r['ratio_saliency_batch_size_1']:.2f} with "
                f"saliency's default batch_size=1 (one point per callback); ratio "
                f"{r['ratio_jaxplain_small_chunk']:.2f} with jaxplain chunk_size={r['small_chunk_size']} "
                f"({r['small_chunk_size'] * r['n']} points per gradient call; default chunk "
                f"{r['default_chunk_size']}: {r['default_chunk_size'] * r['n']}); gradients alone: "
                f"{1e3 * r['timings']['floor_separate_calls']['median_s']:.1f} ms as {r['n']} calls of "
                f"{r['settings']['steps']} points, {1e3 * r['timings']['floor_one_call']['median_s']:.1f} ms "
                f"as one call"
            )
    return "\n".join(lines)


def _xrai_only(args, repeats, warmup, saliency_version, start) -> int:
    """XRAI's row measured alone (with its own machine and settings), put in place of the
    one in the existing results; the other rows stay as they were measured."""
    row = run_xrai(args.xrai_n, args.quick, repeats, warmup)
    row.update(
        machine=machine(),
        repeats=repeats,
        warmup=warmup,
        versions={"saliency": saliency_version, "jaxplain": jaxplain.__version__},
        wall_s=time.perf_counter() - start,
    )
    path = os.path.join(args.out, "vs_saliency.json")
    payload = {"benchmark": "vs_saliency", "rows": [], "differences": {}}
    if os.path.exists(path):
        with open(path) as f:
            payload = json.load(f)
    payload["rows"] = [r for r in payload["rows"] if r["method"] != "xrai"] + [row]
    payload["differences"]["xrai"] = DIFFERENCES["xrai"]
    print(f"wrote {write('vs_saliency.json', payload, args.out)}")
    print(table([row]))
    return 0 if row["pass"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="test digits explained per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="digits CNN only, N=2, 8 steps, 1 round, no N=1 timing: checks the script works",
    )
    parser.add_argument("--out", default=RESULTS, help="folder for vs_saliency.json")
    parser.add_argument("--no-resnet", action="store_true", help="skip the digits ResNet-18")
    parser.add_argument("--no-xrai", action="store_true", help="skip XRAI (64 x 64 images)")
    parser.add_argument("--xrai-n", type=int, default=8, help="images XRAI explains per call")
    parser.add_argument(
        "--xrai-only",
        action="store_true",
        help="run XRAI alone and replace its row in the existing vs_saliency.json (the other rows are kept)",
    )
    args = parser.parse_args(argv)

    from importlib.metadata import version

    saliency_version = version("saliency")  # fails early when PAIR saliency is missing
    repeats, warmup = (1, 1) if args.quick else (args.repeats, 2)
    x_test = jaxplain.data.load("digits").x_test
    names = ["digits_cnn"]
    if (
        not args.quick
        and not args.no_resnet
        and os.path.isdir(os.path.join(ROOT, "checkpoints", "digits_resnet18"))
    ):
        names.append("digits_resnet18")
    start = time.perf_counter()
    if args.xrai_only:
        return _xrai_only(args, repeats, warmup, saliency_version, start)
    rows = []
    for name in names:
        rows.extend(run_model(name, x_test, args.n, args.quick, repeats, warmup))
    if not args.no_xrai:
        rows.append(run_xrai(args.xrai_n, args.quick, repeats, warmup))
    payload = {
        "benchmark": "vs_saliency",
        "machine": machine(),
        "versions": {"saliency": saliency_version, "jaxplain": jaxplain.__version__, "numpy": np.__version__},
        "quick": bool(args.quick),
        "repeats": repeats,
        "warmup": warmup,
        "metric": METRIC,
        "timing": TIMING,
        "callback": "jaxplain.engine.jit (jax.jit with jaxplain's XLA options) of the grad of the sum of "
        "the target logit over the points, one compile per "
        "batch shape, np.asarray of the result; inputs cast to float32 (float64 in the "
        "float64 check)",
        "differences": DIFFERENCES,
        "rows": rows,
        "wall_s": time.perf_counter() - start,
    }
    path = write("vs_saliency.json", payload, args.out)
    print(f"wrote {path} ({payload['wall_s']:.0f} s)")
    print(table(rows))
    return 1 if any(r.get("pass") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
