"""Input checks at the public boundary, before anything is traced.

Every error names the argument at fault and what was expected. Checks on values (finite,
in range) run only on concrete arrays: under a caller's own `jax.jit` or `jax.vmap` the
inputs are tracers, and only their shapes can be checked.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import engine, schedules
from jaxplain.model import Model, OutputStructureError, normalize_targets


def is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def as_float_array(name: str, value):
    """`value` as a floating-point array, refusing non-numeric or non-finite data."""
    if not isinstance(value, (jax.Array, np.ndarray)):
        try:
            value = np.asarray(value)
        except Exception as error:
            raise TypeError(f"{name} must be an array, got {type(value).__name__}") from error
    dtype = value.dtype
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        value = value.astype(jnp.result_type(float))
    elif not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")
    if not is_traced(value) and not _all_finite(value):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


@jax.jit
def _device_all_finite(value):
    return jnp.isfinite(value).all()


def _all_finite(value) -> bool:
    # Arrays already on a device are checked there: only one bool crosses to the host.
    if isinstance(value, jax.Array):
        return bool(_device_all_finite(value))
    return bool(np.isfinite(value).all())


def check_model(model) -> None:
    if not isinstance(model, Model):
        raise TypeError(
            "model must be a jaxplain.Model (use Model.from_linen, Model.from_nnx or "
            f"Model.from_callable to wrap one), got {type(model).__name__}"
        )


def check_x(model: Model, x, *, integer_ids: bool = False):
    """Checks `x` against the model; returns `(x, num_classes)`.

    With `integer_ids`, integer or bool x (token ids, for methods that never
    differentiate x: perturbation methods, and those that differentiate a layer) is
    accepted as it is.
    """
    check_model(model)
    # bool x cannot be differentiated either; it used to be cast to float silently,
    # which int x (refused) was not.
    integer = isinstance(x, (jax.Array, np.ndarray)) and (
        jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool
    )
    if integer and not integer_ids:
        raise TypeError(
            f"x must be floating point to be differentiated, got dtype {x.dtype}; for token "
            "ids, explain the model's embeddings instead"
        )
    if not integer:
        x = as_float_array("x", x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have a leading batch axis of size >= 1, got shape {x.shape}")
    try:
        out = engine.output_struct(model, x)
    except OutputStructureError:
        raise  # already says what the model returned and how to select its scores
    except Exception as error:
        raise ValueError(
            f"the model cannot be applied to x of shape {tuple(x.shape)} and dtype "
            f"{x.dtype}: {type(error).__name__}: {error}" + _one_example_hint(model, x)
        ) from error
    if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"model must return (batch, classes) = ({x.shape[0]}, C) for x of shape "
            f"{tuple(x.shape)}, got output shape {tuple(out.shape)}" + _output_shape_hint(out, x)
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        # Gradients of int or bool outputs are zero and complex ones are not scores:
        # every method would return a meaningless answer without an error.
        raise TypeError(
            f"model must return floating-point scores (logits), got dtype {out.dtype}; if it "
            "returns predictions (argmax, one-hot, thresholded), explain the scores before them"
        )
    return x, out.shape[1]


def _one_example_hint(model: Model, x) -> str:
    """A hint when x is one example without its batch axis (the model accepts x[None])."""
    try:
        jax.eval_shape(model, jax.ShapeDtypeStruct((1, *x.shape), x.dtype))
    except Exception:
        return ""
    return f" (x looks like one example without its batch axis: pass x[None], of shape {(1, *x.shape)})"


def _output_shape_hint(out, x) -> str:
    if len(out.shape) > 2 and out.shape[0] == x.shape[0]:
        return (
            "; jaxplain explains one score per class and example: reduce the other axes "
            "first, e.g. a segmentation model's pixel logits over a region with "
            "output=jaxplain.region(mask, reduce='sum' or 'mean')"
        )
    return ""


def prepare(model: Model, x, target, *, integer_ids: bool = False):
    """Checks model, x and target; returns `(x, targets)` (`integer_ids` as for `check_x`)."""
    x, num_classes = check_x(model, x, integer_ids=integer_ids)
    return x, normalize_targets(target, x.shape[0], num_classes)


def broadcastable(name: str, value, x):
    """`value` checked to broadcast to x: a scalar, one example, or one per example."""
    try:
        shape = np.broadcast_shapes(np.shape(value), x.shape)
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise ValueError(
            f"{name} of shape {tuple(np.shape(value))} cannot be broadcast to x of shape "
            f"{tuple(x.shape)}; pass a scalar, one example of shape {tuple(x.shape[1:])} or "
            f"one per example of shape {tuple(x.shape)}"
        )
    return value


def baseline(value, x):
    """A baseline broadcastable to `x`: a scalar, one example, or one per example.

    For integer or bool x (token ids) it holds ids too, e.g. the padding or [MASK] id,
    and comes back in x's dtype: a floating baseline is refused rather than rounded,
    and so is an id that x's dtype cannot hold.
    """
    if jnp.issubdtype(x.dtype, jnp.floating):
        return broadcastable("baseline", as_float_array("baseline", value), x)
    return broadcastable("baseline", _ids("baseline", value, x.dtype), x)


def _ids(name: str, value, dtype):
    """`value` as integer ids in `dtype` (an integer or bool dtype), unrounded."""
    if not isinstance(value, (jax.Array, np.ndarray)) and not is_traced(value):
        try:
            value = np.asarray(value)
        except Exception as error:
            raise TypeError(f"{name} must be an int or an int array, got {type(value).__name__}") from error
    if not (jnp.issubdtype(value.dtype, jnp.integer) or value.dtype == bool):
        given = f"{value.item()!r}" if value.ndim == 0 and not is_traced(value) else f"dtype {value.dtype}"
        raise TypeError(
            f"{name} must be an int id or an int array of ids for integer x (dtype {dtype}), "
            f"e.g. the padding or [MASK] token id that replaces a removed token; got {given} "
            "(ids are never rounded or interpolated; the default 0.0 is for floating x)"
        )
    if not is_traced(value) and np.size(value):
        low, high = (0, 1) if np.dtype(dtype) == np.bool_ else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        least, most = np.min(value), np.max(value)
        if least < low or most > high:
            raise ValueError(
                f"{name} holds the ids {least}..{most}, not all in the range of x's dtype "
                f"{np.dtype(dtype).name}, [{low}, {high}]"
            )
    return value.astype(dtype)


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def number(
    name: str, value, *, low: float = 0.0, above: bool = False, high: float = math.inf, traced: bool = False
) -> float:
    """A finite real number >= low (> low with `above`) and <= high; bools and strings
    refused. With `traced`, a traced value passes unchecked (an option that is an array
    in the program)."""
    if traced and is_traced(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    above_low = value > low if above else value >= low
    if math.isfinite(high):
        if not (above_low and value <= high):
            raise ValueError(f"{name} must be in {'(' if above else '['}{low}, {high}], got {value}")
    elif not (math.isfinite(value) and above_low):
        raise ValueError(f"{name} must be a finite number {'>' if above else '>='} {low}, got {value}")
    return float(value)


def fraction(name: str, value, *, low: float = 0.0) -> float:
    """A fraction: a number in [low, 1]."""
    return number(name, value, low=low, high=1.0)


def count(name: str, value, *, high: int, what: str) -> int:
    """An int in 1..high (`what` says what `high` is)."""
    value = positive_int(name, value)
    if value > high:
        raise ValueError(f"{name} must be <= {high} ({what}), got {value}")
    return value


def choice(name: str, value, options) -> str:
    """One of `options` (strings)."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def samples(value, *, even_for: str = "") -> int:
    """A number of samples; even when `even_for` names the flag that pairs every draw
    with its mirror image."""
    value = positive_int("samples", value)
    if even_for and value % 2:
        raise ValueError(
            f"samples must be even with {even_for}=True (every draw is evaluated together "
            f"with its mirror image), got {value}"
        )
    return value


def seed(value, name: str = "seed") -> int:
    """A seed for NumPy and JAX: an int >= 0 (NumPy refuses negative ones from inside)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def flag(name: str, value) -> bool:
    """A bool (or NumPy bool): `bool("False")` is True, so strings and ints are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def schedule(name, *, pilot: bool = False) -> str:
    """A schedule name; with `pilot`, the pilot schedules are allowed too."""
    known = sorted(schedules.SCHEDULES) + (sorted(schedules.PILOT_SCHEDULES) if pilot else [])
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"schedule must be one of {known}, got {name!r}")
    return name


def chunk_size(value) -> int | None:
    """A caller's `chunk_size`: a positive int, or None for the engine's default (sized in
    the program from its point count, see `engine.points_per_chunk`)."""
    return None if value is None else positive_int("chunk_size", value)


def noise_chunk_size(value, model: Model, x, samples: int, *, mapped: bool) -> int:
    """Noisy copies explained at once: the caller's, clipped to `samples`, or by default as
    many as the chunk budget allows. A randomized method mapped over the copies
    (`mapped`, see `engine.explain_copies`) holds its own chunks once per copy, so by
    default its copies go one at a time."""
    if value is None:
        return 1 if mapped else engine.default_chunk_size(model, x, samples)
    return min(positive_int("noise_chunk_size", value), samples)


def key(value):
    """A JAX PRNG key (typed, or a raw uint32 array of shape (2,)), for randomized methods."""
    if value is None:
        raise TypeError("key is required: pass a jax.random.key(seed) (same key, same result)")
    if isinstance(value, (jax.Array, np.ndarray)):
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key) and value.shape == ():
            return value
        if value.dtype == np.uint32 and value.shape == (2,):
            return value
    raise TypeError(
        f"key must be a single jax.random.key(seed) or jax.random.PRNGKey(seed), got "
        f"{type(value).__name__} {getattr(value, 'dtype', '')}{getattr(value, 'shape', '')}"
    )


def _concrete_group_ids(value) -> np.ndarray:
    """A feature mask as a numpy array of integer group ids, refused while traced."""
    if is_traced(value):
        raise TypeError(
            "feature_mask must be a concrete array, not a traced value: its number of "
            "groups fixes the shapes of the compiled program"
        )
    mask = np.asarray(value)
    if mask.dtype == bool or not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"feature_mask must hold integer group ids, got dtype {mask.dtype}")
    return mask


def feature_mask(value, x):
    """`(mask, G)`: the feature groups as int32 of one example's shape, and their number.

    None makes every feature its own group; otherwise an int array broadcastable to one
    example of x, numbering its groups 0..G-1, each id used at least once.
    """
    feature_shape = tuple(x.shape[1:])
    if value is None:
        size = int(np.prod(feature_shape, dtype=np.int64))
        return np.arange(size, dtype=np.int32).reshape(feature_shape), size
    mask = _concrete_group_ids(value)
    try:
        shape = np.broadcast_shapes(mask.shape, feature_shape)
    except ValueError:
        shape = None
    if shape != feature_shape:
        raise ValueError(
            f"feature_mask of shape {tuple(mask.shape)} cannot be broadcast to one example "
            f"of x, shape {feature_shape}"
        )
    ids = np.unique(mask)
    if ids.size == 0 or ids[0] != 0 or ids[-1] != ids.size - 1:
        shown = ", ".join(map(str, ids[:8])) + (", ..." if ids.size > 8 else "")
        raise ValueError(
            f"feature_mask must number its groups 0..G-1, each id used at least once; got the ids {shown}"
        )
    return np.ascontiguousarray(np.broadcast_to(mask, feature_shape), dtype=np.int32), int(ids.size)


def axis_sizes(name: str, value, x) -> tuple:
    """One size >= 1 per non-batch axis of x (a window, a stride, a patch)."""
    rank = x.ndim - 1
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise TypeError(
            f"{name} must be a tuple of ints, one per non-batch axis of x (shape "
            f"{tuple(x.shape)}), got {value!r}"
        )
    if len(value) != rank:
        raise ValueError(
            f"{name} has {len(value)} sizes but x of shape {tuple(x.shape)} has {rank} "
            f"non-batch axes; give one size per axis, e.g. {(2,) * rank}"
        )
    if min(value, default=1) < 1:
        raise ValueError(f"{name} must be >= 1 on every axis, got {tuple(value)}")
    return tuple(int(v) for v in value)


def window(value, stride, x):
    """`(window, stride)` of a window sliding over one example of x; the stride is an int
    (every axis), a tuple, or None (the window: no overlap)."""
    if x.ndim < 2:
        raise ValueError(f"occlusion needs x with a non-batch axis to slide over, got shape {tuple(x.shape)}")
    value = axis_sizes("window", value, x)
    if any(w > n for w, n in zip(value, x.shape[1:])):
        raise ValueError(f"window {value} is larger than one example of x, shape {tuple(x.shape[1:])}")
    if isinstance(stride, (int, np.integer)) and not isinstance(stride, bool):
        stride = (stride,) * len(value)
    stride = value if stride is None else axis_sizes("stride", stride, x)
    return value, stride


def input_bound(name: str, value, x):
    """The lowest (`low`) or highest (`high`) value input features can take, broadcastable
    to x; required by the z-box rule."""
    if value is None:
        raise ValueError(
            f"{name} is required for the z-box rule: the lowest (low) and highest (high) "
            "value each input feature can take, e.g. low=0.0, high=1.0 for images in [0, 1]"
        )
    return broadcastable(name, as_float_array(name, value), x)


def feature_masks(value, x):
    """`(masks, G)`: every example's feature groups, int32 `(B, *x.shape[1:])`, and G.

    Example b numbers its groups 0..G_b-1, each id used at least once; G is the largest
    G_b, and groups G_b..G-1 of example b are empty. `value` is read as follows:

    - None: every feature its own group, the same for every example.
    - One mask per example: an int array of x's rank whose leading axis is the batch
      (or 1, the same mask for every example), broadcastable to x, e.g. `(B, H, W, 1)`
      for NHWC images.
    - For images and volumes (x of rank >= 4, channels last), an array of shape
      `x.shape[:-1]`, e.g. `(B, H, W)` from `jaxplain.superpixels`: one mask per example,
      broadcast over the channels.
    - Anything of lower rank: one example's mask, broadcastable to `x.shape[1:]` and
      shared by the batch (as `feature_mask`).

    A `x.shape[:-1]` array that also broadcasts to one example (only when the batch,
    height, width and channel sizes line up, e.g. x of shape (3, 3, 3, 3)) is refused
    when the two readings differ: add the channel axis, `mask[..., None]`, for one mask
    per example, or a leading axis, `mask[None]`, for one mask shared by the batch.
    """
    batch, feature_shape = int(x.shape[0]), tuple(x.shape[1:])
    shape = (batch, *feature_shape)
    if value is None:
        mask, groups = feature_mask(None, x)
        return np.ascontiguousarray(np.broadcast_to(mask, shape)), groups
    mask = _concrete_group_ids(value)
    if mask.ndim > x.ndim:
        raise ValueError(
            f"feature_mask of shape {tuple(mask.shape)} has more axes than x of shape {tuple(x.shape)}; "
            f"pass one mask per example, shape {shape}, or one example's, shape {feature_shape}"
        )
    per_pixel = x.ndim >= 4 and mask.ndim == x.ndim - 1 and tuple(mask.shape) == tuple(x.shape[:-1])
    if per_pixel:
        per_example = np.broadcast_to(mask[..., None], shape)
        try:
            shared = np.broadcast_to(mask, feature_shape)
        except ValueError:
            shared = None
        if shared is not None and not np.array_equal(per_example, np.broadcast_to(shared, shape)):
            raise ValueError(
                f"feature_mask of shape {tuple(mask.shape)} is ambiguous for x of shape {tuple(x.shape)}: "
                "it is both one mask per example (broadcast over the channels) and one example's "
                f"mask; pass mask[..., None] for one per example or mask[None] for one shared mask"
            )
        mask = per_example
    elif mask.ndim < x.ndim:
        mask, groups = feature_mask(mask, x)
        return np.ascontiguousarray(np.broadcast_to(mask, shape)), groups
    try:
        broadcast = np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(
            f"feature_mask of shape {tuple(mask.shape)} (one mask per example: it has x's rank) "
            f"cannot be broadcast to x of shape {shape}; its leading axis is the batch ({batch}, "
            "or 1 for one shared mask)"
        )
    masks = np.ascontiguousarray(np.broadcast_to(mask, shape), dtype=np.int32)
    flat = masks.reshape(batch, -1)
    counts = flat.max(axis=1, initial=-1) + 1  # G_b
    wrong = (flat < 0).any(axis=1) | (counts == 0)
    if not wrong.any():
        used = np.zeros((batch, int(counts.max())), bool)
        used[np.arange(batch)[:, None], flat] = True
        wrong = ~used.all(axis=1, where=np.arange(used.shape[1]) < counts[:, None])
    if wrong.any():
        example = int(np.argmax(wrong))
        ids = np.unique(flat[example])
        shown = ", ".join(map(str, ids[:8])) + (", ..." if ids.size > 8 else "")
        raise ValueError(
            "feature_mask must number each example's groups 0..G_b-1, each id used at least "
            f"once; example {example} has the ids {shown}"
        )
    return masks, int(counts.max())
