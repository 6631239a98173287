"""Axiomatic metrics: does an explanation keep a property every explanation should have?

`completeness` (in `faithfulness`) reads an attribution's convergence gap;
`non_sensitivity` counts the features where "zero attribution" and "the output does not
react" disagree; `input_invariance` asks whether a constant shift of the input, absorbed
by the first layer's bias, leaves the explanation unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.metrics import _common
from jaxplain.metrics.randomisation import _layers, _name
from jaxplain.model import Model, Targets

# --- non-sensitivity ----------------------------------------------------------------------


@engine.program(static_argnames=("groups", "normalise", "chunk_size"))
def _non_sensitivity(
    model, x, values, masks, baseline, targets: Targets, eps, *, groups, normalise, chunk_size
):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    magnitude = jnp.abs(values.reshape(batch, -1)).astype(engine.accumulation_dtype(x))
    if normalise:
        largest = magnitude.max(axis=1, keepdims=True)
        magnitude = magnitude / jnp.where(largest == 0, 1, largest)
    flat_masks = masks.reshape(batch, -1)
    # a group is unattributed when every one of its features is
    largest = jax.vmap(lambda m, ids: jax.ops.segment_max(m, ids, num_segments=groups))(magnitude, flat_masks)
    unattributed = largest < eps  # an empty group (beyond the example's own count) is too

    def fold(count, group, outputs):  # group (size,), outputs (B, size, 1): F_t(x with the group removed)
        insensitive = jnp.abs(outputs[..., 0] - at_x[:, None]) < eps
        # removing an empty group changes nothing: it agrees with itself and counts nowhere
        return count + (insensitive ^ unattributed[:, group]).sum(axis=1, dtype=jnp.int32)

    return engine.fold_outputs(
        model,
        tied_x,
        chosen,
        lambda group, x: jnp.where(masks == group, baseline, x),
        engine.Indexed(groups, lambda indices: indices),
        fold,
        jnp.zeros(batch, jnp.int32),
        chunk_size=chunk_size,
    )


def non_sensitivity(
    model: Model,
    x,
    attribution,
    *,
    target,
    eps: float = 1e-5,
    baseline=0.0,
    feature_mask=None,
    per_pixel: bool = False,
    normalise: bool = True,
    chunk_size=None,
) -> jax.Array:
    """Non-sensitivity: how many features violate "zero attribution iff no effect".

    Nguyen and Martinez 2020 ask that the features an explanation gives no attribution
    and the features the model does not react to be the same set. Per example, with the
    feature groups g (every feature its own group by default),

        Z_phi = {g : |phi_i| < eps for every feature i of g},
        Z_F   = {g : |F_t(x with g set to the baseline) - F_t(x)| < eps},
        NS    = |Z_phi symmetric-difference Z_F|,

    the number of groups in exactly one of the two sets. Each group is removed alone
    (one model evaluation per group, through `engine.fold_outputs`, `chunk_size` at a
    time; only the running count is kept). With `normalise`, |phi| is first divided by
    the example's largest |phi| (Quantus' `normalise_by_max`, but per example), so `eps`
    is relative to it. F_t is the model's target output as configured (logits by
    default; Quantus compares softmax probabilities: pass `model.with_output("probs")`).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class the attribution explains: an int, `(batch,)` ints or
        "predicted".
      eps: the threshold below which an attribution and an output change count as zero
        (Quantus: 1e-5).
      baseline: what a removed group is set to: a scalar, one example, or one per
        example (Quantus' default "black" is the example's minimum).
      feature_mask: int group ids: one example's mask shared by the batch, or one per
        example, `(batch, ...)` (e.g. `jaxplain.superpixels`, `(batch, H, W)` for images);
        None makes every feature its own group.
      per_pixel: group the channels of each pixel of images `(batch, H, W, C)`.
      normalise: divide |phi| by its largest value per example first.
      chunk_size: model evaluations at once; the answer does not depend on it.

    Returns:
      `(batch,)` int32 counts of violations (lower is better; 0 is perfect).

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.metrics.axiomatic import non_sensitivity
      >>> w = jnp.array([[1.0], [0.0], [2.0]])  # the second feature is ignored
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> x = jnp.ones((1, 3))
      >>> non_sensitivity(model, x, jnp.array([[1.0, 0.0, 2.0]]), target=0)
      Array([0], dtype=int32)
      >>> non_sensitivity(model, x, jnp.array([[1.0, 1.0, 0.0]]), target=0)
      Array([2], dtype=int32)

    References:
      Nguyen, Martinez. On quantitative aspects of model interpretability.
      arXiv:2007.07584, 2020.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    eps = _checks.number("eps", eps, above=True)
    baseline = _checks.baseline(baseline, x)
    normalise = _checks.flag("normalise", normalise)
    if _checks.flag("per_pixel", per_pixel):
        feature_mask, _ = _common.groups(feature_mask, x, per_pixel=True)
    masks, groups = _checks.feature_masks(feature_mask, x)
    return _non_sensitivity(
        model,
        x,
        values,
        jnp.asarray(masks),
        baseline,
        targets,
        eps,
        groups=groups,
        normalise=normalise,
        chunk_size=_checks.chunk_size(chunk_size),
    )


# --- input invariance ---------------------------------------------------------------------


def shifted_first_layer(model: Model, shift: float, *, layer: str | None = None, x=None) -> Model:
    """The model whose first layer's bias absorbs a constant input shift:
    `shifted(x + shift) == model(x)` for a dense or unpadded convolutional first layer.

    For a first layer z = W^T x + b, the bias becomes b - shift * W^T 1 (each output
    unit's weights summed over all its inputs), as Kindermans et al. build their shifted
    networks. The layer is `layer`, or by default the first stored one (see
    `jaxplain.metrics.model_parameter_randomisation`): for a Linen model the first module
    defined; an NNX model's state sorts its attributes by name, so name its first layer.
    The layer must hold one leaf named "kernel" whose last axis is the outputs (Flax's
    Dense/Linear and Conv, Linen and NNX) and one named "bias"; with `x` (a batch the
    model takes), its kernel must take x's features (its input axis is x's last axis, or
    it takes all of one example's features). A convolution with "SAME" padding sees
    zeros beyond the border, which the shift does not reach, so its border outputs
    differ (as in Quantus); for any other model build the shifted one yourself.
    """
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(model.params)
    _, _, names, stored = _layers(model.params)
    if layer is None:
        if not stored:
            raise ValueError("model has no floating parameters (model.params holds no layers)")
        layer = stored[0]
    elif layer not in stored:
        raise ValueError(f"layer must name one of the model's layers {stored}, got {layer!r}")

    def find(leaf_name):
        found = [
            i
            for i, (path, _) in enumerate(with_paths)
            if names[i] == layer and leaf_name in [_name(entry) for entry in path]
        ]
        if len(found) != 1:
            raise ValueError(
                f"layer {layer!r} must hold one 'kernel' and one 'bias' to absorb the shift, found "
                f"{len(found)} '{leaf_name}' leaves; pass layer= or shifted_model= built yourself"
            )
        return found[0]

    kernel_at, bias_at = find("kernel"), find("bias")
    kernel, bias = with_paths[kernel_at][1], with_paths[bias_at][1]
    if bias.ndim != 1 or kernel.shape[-1] != bias.shape[0]:
        raise ValueError(
            f"layer {layer!r}: a kernel of shape {tuple(kernel.shape)} and a bias of shape "
            f"{tuple(bias.shape)} do not form z = W^T x + b with the outputs on the kernel's last axis"
        )
    inputs = int(np.prod(kernel.shape[:-1]))
    if (
        x is not None
        and kernel.ndim >= 2
        and kernel.shape[-2] != x.shape[-1]
        and inputs != x.size // x.shape[0]
    ):
        raise ValueError(
            f"layer {layer!r} takes {kernel.shape[-2]} input features (kernel of shape "
            f"{tuple(kernel.shape)}), not x's {x.shape[-1]}: it is not the first layer; pass layer= "
            "(an NNX model's layers are stored by name, not in the order they run)"
        )
    leaves = [leaf for _, leaf in with_paths]
    absorbed = shift * kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
    leaves[bias_at] = (bias - absorbed).astype(bias.dtype)
    return model.replace(params=jax.tree_util.tree_unflatten(treedef, leaves))


@engine.program(static_argnames=("method", "static", "takes_key"))
def _input_invariance(
    model, shifted, x, shift, targets: Targets, key, arrays, atol, *, method, static, takes_key
):
    chosen = targets.resolve(engine.forward(model, x))
    original = _common.explain(method, model, x, chosen, key, arrays, static, takes_key)
    moved = _common.explain(method, shifted, x + shift, chosen, key, arrays, static, takes_key)
    close = jnp.abs(original - moved) <= atol + 1e-5 * jnp.abs(moved)  # numpy.isclose's test
    return close.reshape(x.shape[0], -1).all(axis=1)


def input_invariance(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key=None,
    shift: float = -1.0,
    atol: float = 1e-4,
    layer: str | None = None,
    shifted_model: Model | None = None,
    **method_options,
) -> jax.Array:
    """Input invariance: is the explanation unchanged by an input shift the model absorbs?

    Kindermans et al. 2017 shift every input by a constant, x2 = x + shift, and give
    the network a first layer whose bias absorbs it, b2 = b - shift * W^T 1, so the
    shifted network computes exactly the same function of x2 as the original of x. An
    explanation that reflects the model, not the input's encoding, must be the same:

        II(phi, x) = [ phi(x2; F2) == phi(x; F) everywhere, within atol ],

    per example (numpy.isclose's test: |a - b| <= atol + 1e-5 |b|). Gradients pass;
    gradient x input and integrated gradients with a zero baseline do not (give IG a
    baseline shifted too, as an array option, and it passes). The shifted model is
    `shifted_first_layer(model, shift, layer=layer)`, or `shifted_model`; both
    explanations run in one compiled program.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`; a noise method
        takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved with the original model
        at x; the shifted model explains the same class).
      key: a `jax.random.key` for a randomized method (the same draws for both
        explanations); None otherwise.
      shift: the constant added to every input feature (Quantus: -1).
      atol: the absolute tolerance (Quantus: 1e-4).
      layer: the layer whose bias absorbs the shift (see `shifted_first_layer`); by
        default the first stored one. Name it for an NNX model.
      shifted_model: the shifted model, built by you, instead (then `layer` is unused).
      **method_options: passed to `method` for both explanations.

    Returns:
      `(batch,)` bools, True where the explanation is invariant (higher is better).

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.metrics.axiomatic import input_invariance
      >>> params = {"dense": {"kernel": jnp.array([[1.0], [2.0]]), "bias": jnp.zeros(1)}}
      >>> model = jaxplain.Model(lambda p, x: x @ p["dense"]["kernel"] + p["dense"]["bias"], params)
      >>> x = jnp.array([[0.5, 1.0]])
      >>> input_invariance(jaxplain.saliency, model, x, target=0)
      Array([ True], dtype=bool)
      >>> input_invariance(jaxplain.input_x_gradient, model, x, target=0)
      Array([False], dtype=bool)

    References:
      Kindermans, Hooker, Adebayo, Alber, Schuett, Daehne, Erhan, Kim. The
      (Un)reliability of Saliency Methods. In Explainable AI: Interpreting, Explaining
      and Visualizing Deep Learning, Springer 2019, arXiv:1711.00867.
    """
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    shift = _checks.number("shift", shift, low=-np.inf)
    atol = _checks.number("atol", atol)
    key = _checks.key(key) if takes_key else None
    if shifted_model is None:
        shifted_model = shifted_first_layer(model, shift, layer=layer, x=x)
    elif not isinstance(shifted_model, Model):
        raise TypeError(f"shifted_model must be a jaxplain.Model, got {type(shifted_model).__name__}")
    return _input_invariance(
        model,
        shifted_model,
        x,
        shift,
        targets,
        key,
        arrays,
        atol,
        method=method,
        static=static,
        takes_key=takes_key,
    )
