"""Perturbation methods: explain a prediction by evaluating the model on altered inputs.

Every method here is forward-only. It builds K perturbed copies of each example, has
`engine.path_outputs` evaluate the target outputs at all of them (chunked, one compiled
program per call), and combines those outputs into attributions.

Groups and coalitions. Methods 2-6 below (`feature_ablation`, `exact_shapley`,
`shapley_sampling`, `kernel_shap`, `lime`) play a game whose players are G groups of
features: `feature_mask` gives each feature of one example a group id in 0..G-1 (by
default every feature is its own group). A coalition is a binary vector z of length G,
and the model is evaluated at

    x_z = x where the feature's group is in z, the baseline elsewhere,
    v(z) = F_t(x_z),

so v(all ones) = F_t(x) and v(all zeros) = F_t(baseline). Each method computes one value
phi_g per group, and every feature of group g receives phi_g: the attribution map is the
group values broadcast onto the features (Captum's feature-mask convention), so it sums
to sum_g |g| phi_g, not to sum_g phi_g. Efficiency, where a method has it, holds over
groups: sum_g phi_g = F_t(x) - F_t(baseline), and `delta` measures exactly that.

All methods first evaluate the model at x and at the baseline in one pass (this resolves
`target="predicted"` or `top_k` and gives `output_difference` =
F_t(x) - F_t(baseline)); every perturbed point then goes through the engine. The
randomized methods (`shapley_sampling`, `kernel_shap`, `lime`) never hold all their
samples: each chunk draws its points from `fold_in(key, point index)` and folds their
outputs into running sums (credits and their spread; the normal equations of a least-
squares fit), so memory does not grow with `samples`. Every example of the batch gets
its own draws; the answer does not depend on `chunk_size` or on how many targets are
explained at once, but an example's draws do depend on its position in the batch.

Groups per example. `feature_mask` may also give every example its own groups (e.g.
superpixels of each image, from `jaxplain.superpixels`): an int array of x's rank whose
leading axis is the batch (or 1), or, for images and volumes (x of rank >= 4, channels
last), an array of shape `x.shape[:-1]`, `(batch, H, W)`, broadcast over the channels;
an array of lower rank is one example's mask, shared by the batch. Example b numbers
its groups 0..G_b-1 and G is the largest G_b, so the program's shapes stay static and
the masks are an array in it. Example b's groups G_b..G-1 are empty: every method
plays the game of its G_b groups only. An empty group is never drawn into a coalition
(LIME, Banzhaf), ranks after the others in every order (Shapley sampling), takes no
part in Kernel SHAP's fit or LIME's (its sizes, kernel and constraint count G_b
groups), and gets the value 0, so `delta` and the efficiency of the Shapley methods
hold per example. A batch of masks gives each example what it gets alone with its own
mask: exactly for `feature_ablation` and `exact_shapley`, and in distribution for the
randomized methods (whose draws depend on an example's position in the batch and on
G). A `(batch, H, W)` mask that also broadcasts to one example (only when the sizes
line up, e.g. x of shape (3, 3, 3, 3)) is refused unless both readings agree: add the
channel axis, `mask[..., None]`, or a leading one, `mask[None]`.

Integer inputs. Nothing here differentiates x, so x may hold integers, such as token
ids (batch, T). A removed feature takes the baseline's id (`baseline=` an int, e.g. the
padding or [MASK] id, or an int array (T,) or (batch, T)), and every point is
`where(present, x, baseline)` in x's dtype: ids are never interpolated or rounded, and
a floating baseline for integer x is refused. Groups (`feature_mask`) and occlusion
windows range over the positions. Whether an id is in the model's vocabulary is the
model's business.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, _random, engine
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets

# exact_shapley evaluates 2^G coalitions per example.
MAX_EXACT_GROUPS = 16

_HIGHEST = jax.lax.Precision.HIGHEST


# --- inside the compiled programs -------------------------------------------------------


def _spread(group_values, mask):
    """Each feature's value from its group's: (B, ..., G) values and the (B, *features)
    group ids of every example -> (B, ..., *features)."""
    batch = mask.shape[0]
    ids = mask.reshape((batch,) + (1,) * (group_values.ndim - 2) + (-1,))
    spread = jnp.take_along_axis(group_values, ids, axis=-1)
    return spread.reshape(spread.shape[:-1] + mask.shape[1:])


def _group_counts(mask):
    """(B,) G_b: the groups example b's mask uses (its ids are 0..G_b-1)."""
    return mask.reshape(mask.shape[0], -1).max(axis=1) + 1


def _nonempty(mask, groups: int):
    """(B, G) bool: which of the G groups hold features of each example."""
    return jnp.arange(groups) < _group_counts(mask)[:, None]


def _last_when_empty(words, nonempty):
    """Random words (..., B, G) for `_random.random_ranks`, with the empty groups' set to
    the largest word: they rank last, and the groups 0..G_b-1 get a uniformly random
    ranking 0..G_b-1 (on a tie the lower index, a group with features, ranks first)."""
    return jnp.where(nonempty, words, jnp.asarray(np.iinfo(np.uint32).max, words.dtype))


def _coalition_point(mask, baseline, present):
    """The point function of a coalition game: x where the feature's group is present,
    the baseline elsewhere.

    `present(param)` turns one point's parameter into its coalition: a bool vector
    (G,) shared by the batch, or (B, G) with one coalition per example.
    """

    def point(param, x):
        coalition = present(param)
        coalition = jnp.broadcast_to(coalition, mask.shape[:1] + coalition.shape[-1:])
        return jnp.where(_spread(coalition, mask), x, baseline)

    return point


def _coalition_values(model, x, baseline, mask, chosen, present, params, chunk_size):
    """v(z) = F_t(x where the feature's group is present, baseline elsewhere), (B, K, k).

    `params` is a pytree with a leading axis of K points (see `_coalition_point`).
    """
    point = _coalition_point(mask, baseline, present)
    outputs = engine.path_outputs(model, x, chosen, point, params, chunk_size=chunk_size)
    return outputs.astype(engine.accumulation_dtype(x))


def _fold_coalitions(model, x, baseline, mask, chosen, draw, count, fold, init, chunk_size):
    """Folds v(z) over `count` coalitions made one chunk at a time, never all at once.

    `draw(indices)` gives the coalitions (size, B, G) of the points `indices`;
    `fold(carry, coalitions, values)` takes them with their values (B, size, k).
    """
    point = _coalition_point(mask, baseline, lambda z: z)
    return engine.fold_outputs(
        model, x, chosen, point, engine.Indexed(count, draw), fold, init, chunk_size=chunk_size
    )


def _group_attribution(targets, chosen, group_values, mask, at_x, at_baseline, *, with_delta, extras=None):
    """The Attribution of per-group values (B, G, k), each broadcast onto its features.

    A group with no features in an example (beyond its G_b) gets 0. With `with_delta`,
    delta = sum over groups - (F_t(x) - F_t(baseline)).
    """
    difference = at_x - at_baseline
    group_values = jnp.where(_nonempty(mask, group_values.shape[1])[..., None], group_values, 0.0)
    values = _spread(jnp.swapaxes(group_values, 1, 2), mask)  # (B, k, *features)
    delta = group_values.sum(axis=1) - difference if with_delta else None
    return engine.attribution(targets, values, chosen, difference=difference, delta=delta, extras=extras)


def _broadcast_baseline(baseline, x):
    return jnp.broadcast_to(baseline, x.shape).astype(x.dtype)


def _window_cover(size: int, window: int, stride: int) -> np.ndarray:
    """(positions, size) bool: which features of one axis each window position covers.

    Positions start at 0, stride, 2 stride, ... while the window fits:
    `range(0, size - window + 1, stride)`.
    """
    starts = np.arange(0, size - window + 1, stride)
    index = np.arange(size)
    return (index >= starts[:, None]) & (index < starts[:, None] + window)


@engine.program(static_argnames=("window", "stride", "chunk_size"))
def _occlusion(model, x, baseline, targets: Targets, *, window, stride, chunk_size):
    batch, feature_shape = x.shape[0], x.shape[1:]
    baseline = _broadcast_baseline(baseline, x)
    chosen, at_x, at_baseline, tied_x = engine.endpoints(model, x, targets, baseline)
    covers = [_window_cover(*axis) for axis in zip(feature_shape, window, stride)]
    positions = [len(cover) for cover in covers]
    # One point per window position, the positions of all axes in C order.
    grid = np.stack(np.meshgrid(*map(np.arange, positions), indexing="ij"), -1)
    grid = grid.reshape(-1, len(covers))

    def occluded(position, x):
        covered = functools.reduce(
            jnp.logical_and,
            (
                jnp.asarray(cover)[position[axis]].reshape(
                    [-1 if other == axis else 1 for other in range(len(covers))]
                )
                for axis, cover in enumerate(covers)
            ),
        )
        return jnp.where(covered, baseline, x)

    outputs = engine.path_outputs(model, tied_x, chosen, occluded, jnp.asarray(grid), chunk_size=chunk_size)
    differences = at_x[:, None] - outputs.astype(at_x.dtype)  # (B, K, k)
    total = jnp.swapaxes(differences, 1, 2).reshape((batch, chosen.shape[1]) + tuple(positions))
    # A window covers a box, so spreading every window's difference onto its features
    # factorises into one small contraction per axis (positions -> features).
    count = np.ones((), np.int64)
    for cover in covers:
        total = jnp.tensordot(total, jnp.asarray(cover, total.dtype), axes=([2], [0]), precision=_HIGHEST)
        count = np.multiply.outer(count, cover.sum(axis=0))
    values = jnp.where(count > 0, total / jnp.asarray(np.maximum(count, 1), total.dtype), 0.0)
    return engine.attribution(targets, values, chosen, difference=at_x - at_baseline)


@engine.program(static_argnames=("groups", "chunk_size"))
def _feature_ablation(model, x, baseline, mask, targets: Targets, *, groups, chunk_size):
    baseline = _broadcast_baseline(baseline, x)
    chosen, at_x, at_baseline, tied_x = engine.endpoints(model, x, targets, baseline)
    ablated = _coalition_values(
        model,
        tied_x,
        baseline,
        mask,
        chosen,
        lambda group: jnp.arange(groups) != group,
        jnp.arange(groups),
        chunk_size,
    )
    return _group_attribution(
        targets, chosen, at_x[:, None] - ablated, mask, at_x, at_baseline, with_delta=False
    )


def _shapley_weight_table(groups: int) -> np.ndarray:
    """w(s) = s! (G - 1 - s)! / G! for s = 0..G-1, and 0 for s = G."""
    total = math.factorial(groups)
    weights = [math.factorial(s) * math.factorial(groups - 1 - s) / total for s in range(groups)]
    return np.array(weights + [0.0])


@engine.program(static_argnames=("groups", "chunk_size"))
def _exact_shapley(model, x, baseline, mask, targets: Targets, *, groups, chunk_size):
    baseline = _broadcast_baseline(baseline, x)
    chosen, at_x, at_baseline, tied_x = engine.endpoints(model, x, targets, baseline)
    group_bits = jnp.arange(groups)
    coalitions = jnp.arange(2**groups)  # group g is in coalition c when bit g of c is set
    values = _coalition_values(
        model,
        tied_x,
        baseline,
        mask,
        chosen,
        lambda c: ((c >> group_bits) & 1).astype(bool),
        coalitions,
        chunk_size,
    )
    # phi_g = sum_c W[g, c] v(c): +w(|c| - 1) where g is in c, -w(|c|) where it is not.
    members = (coalitions[None, :] >> group_bits[:, None]) & 1  # (G, 2^G)
    sizes = members.sum(axis=0)
    table = jnp.asarray(_shapley_weight_table(groups), values.dtype)
    weights = jnp.where(members == 1, table[jnp.maximum(sizes - 1, 0)], -table[sizes])
    phi = jnp.einsum("gc,bck->bgk", weights, values, precision=_HIGHEST)
    return _group_attribution(targets, chosen, phi, mask, at_x, at_baseline, with_delta=True)


@engine.program(static_argnames=("groups", "samples", "antithetic", "chunk_size"))
def _shapley_sampling(
    model, x, baseline, mask, targets: Targets, key, *, groups, samples, antithetic, chunk_size
):
    batch = x.shape[0]
    baseline = _broadcast_baseline(baseline, x)
    chosen, at_x, at_baseline, tied_x = engine.endpoints(model, x, targets, baseline)
    acc = engine.accumulation_dtype(x)
    # One draw is one random order (and its reverse when antithetic); its orders are
    # evaluated at their G + 1 prefixes. Chunks hold whole draws (`chunk_size` is a
    # multiple of `per_draw`), so each chunk's credits are complete.
    orders = 2 if antithetic else 1
    nonempty = _nonempty(mask, groups)
    counts = _group_counts(mask)[:, None]
    per_draw = orders * (groups + 1)
    chunk_size = engine.points_per_chunk(chunk_size, model, x, samples * (groups + 1))
    chunk_size = max(per_draw, chunk_size - chunk_size % per_draw)

    def draw(indices):
        size = indices.shape[0]
        first = indices[0] // per_draw
        draws = first + jnp.arange(size // per_draw, dtype=jnp.int32)
        words = _random.point_words(key, draws, (2, batch, groups))  # (draws, 2, B, G)
        words = _last_when_empty(words, nonempty)
        ranks = _random.random_ranks(jnp.moveaxis(words, 1, 0))  # ranks[d, b, g]: g's place
        if antithetic:  # each order, then its reverse (the empty groups stay last)
            ranks = jnp.stack([ranks, jnp.where(nonempty, counts - 1 - ranks, ranks)], axis=1)
        ranks = ranks.reshape(-1, batch, groups)  # (orders in the chunk, B, G)
        # Point (o, j): the first j groups of order o present (j = 0..G).
        prefix = jnp.arange(groups + 1, dtype=jnp.int32)
        present = ranks[:, None] < prefix[None, :, None, None]
        return present.reshape(size, batch, groups), ranks

    def fold(state, params, values):
        ranks = params[1][:: groups + 1]  # each point carries its order's ranks
        values = values.reshape(batch, -1, groups + 1, values.shape[-1])
        # The group of rank j is credited with v(first j + 1 groups) - v(first j groups).
        steps = jnp.diff(values, axis=2)
        credit = jnp.take_along_axis(steps, jnp.swapaxes(ranks, 0, 1)[..., None], axis=2)
        credit = jnp.where(nonempty[:, None, :, None], credit, 0.0)  # an empty group changes nothing
        # (B, orders, G, k); an order and its reverse are dependent: the independent
        # draws are their averages.
        units = credit.reshape(batch, -1, orders, groups, credit.shape[-1]).mean(axis=2)
        return engine.merge_moments(state, units)

    def draw_params(indices):  # per point: its coalition and its order's ranks
        present, ranks = draw(indices)
        return present, jnp.repeat(ranks, groups + 1, axis=0)

    zeros = jnp.zeros((batch, groups, chosen.shape[1]), acc)
    point = _coalition_point(mask, baseline, lambda params: params[0])
    _, phi, square = engine.fold_outputs(
        model,
        tied_x,
        chosen,
        point,
        engine.Indexed(samples * (groups + 1), draw_params),
        fold,
        (jnp.zeros((), acc), zeros, zeros),
        chunk_size=chunk_size,
    )
    draws = samples // orders
    standard_error = jnp.sqrt(square / (draws - 1)) / math.sqrt(draws)  # NaN for one draw
    return _group_attribution(
        targets,
        chosen,
        phi,
        mask,
        at_x,
        at_baseline,
        with_delta=True,
        extras={"standard_error": jnp.swapaxes(standard_error, 1, 2)},
    )


def _least_squares(gram, cross):
    """The minimum-norm solution of gram s = cross for each example, (B, p, k).

    An eigendecomposition of the (p, p) Gram matrix, the directions with eigenvalues
    below 10 p eps times the largest dropped: the cutoff is set by the number of
    unknowns p, never by the number of samples summed into the Gram matrix (a cutoff
    that grew with the samples dropped every direction at ~1e6 samples in float32).

    One example at a time: a batched LAPACK call splits its batch over XLA's CPU thread
    pool and waits for the pieces; when two such calls run at once (a metric that
    explains the clean input and its perturbed copies, two explainers under one jit),
    each can hold a pool thread while waiting for pieces that need the other's, and on
    a 2-core machine the program deadlocked. An unbatched call runs on the calling
    thread and cannot.
    """

    def solve(system):
        gram, cross = system
        values, vectors = jnp.linalg.eigh(gram)
        cutoff = 10 * gram.shape[-1] * jnp.finfo(gram.dtype).eps * values[-1]
        inverse = jnp.where(values > cutoff, 1.0 / jnp.where(values > cutoff, values, 1.0), 0.0)
        projected = jnp.matmul(vectors.T, cross, precision=_HIGHEST)
        return jnp.matmul(vectors, inverse[:, None] * projected, precision=_HIGHEST)

    return jax.lax.map(solve, (gram, cross))


def _kernel_thresholds(counts, groups: int) -> np.ndarray:
    """(B, G - 2) float32: where the uniform draw moves to the next coalition size.

    The Shapley kernel picks size s in 1..G_b-1 with probability proportional to
    (G_b - 1) / (s (G_b - s)); row b is the CDF of example b's sizes (computed in float64),
    padded with 2 (never reached) past G_b - 2.
    """
    thresholds = np.full((len(counts), max(groups - 2, 0)), 2.0)
    for count in np.unique(counts):
        sizes = np.arange(1, count)
        if sizes.size:
            chance = 1.0 / (sizes * (count - sizes))
            thresholds[counts == count, : count - 2] = np.cumsum(chance / chance.sum())[:-1]
    return thresholds.astype(np.float32)


@engine.program(static_argnames=("groups", "samples", "paired", "chunk_size"))
def _kernel_shap(
    model, x, baseline, mask, targets: Targets, key, thresholds, *, groups, samples, paired, chunk_size
):
    batch = x.shape[0]
    baseline = _broadcast_baseline(baseline, x)
    chosen, at_x, at_baseline, tied_x = engine.endpoints(model, x, targets, baseline)
    acc = engine.accumulation_dtype(x)
    difference = at_x - at_baseline
    # Example b plays the game of its G_b groups: the empty ones are never drawn, never
    # enter the fit and get 0.
    nonempty = _nonempty(mask, groups)
    counts = _group_counts(mask).astype(acc)[:, None]  # (B, 1)

    # Shapley kernel: the size s by inverting its CDF (`thresholds`), then a uniformly
    # random subset of that size of the groups with features.
    def draw(indices):  # with `paired`, points 2d and 2d + 1 are draw d and its complement
        words = _random.point_words(key, indices // 2 if paired else indices, (1 + 2 * groups, batch))
        size = 1 + (_random.uniform(words[:, 0])[..., None] >= thresholds).sum(axis=-1)  # (n, B)
        subset_words = jnp.moveaxis(words[:, 1:].reshape(-1, 2, groups, batch), (1, 2), (0, 3))
        ranks = _random.random_ranks(_last_when_empty(subset_words, nonempty))
        coalitions = ranks < size[..., None]  # (n, B, G)
        if paired:
            coalitions = coalitions ^ ((indices % 2 == 1)[:, None, None] & nonempty)
        return coalitions

    # Least squares of v(z) - v(0) on z subject to sum(phi) = difference: with
    # phi = difference / G + psi and sum(psi) = 0,
    # z . phi = |z| difference / G + (z - |z| / G) . psi (G = G_b, sums over its groups).
    # The normal equations' sums, (design^T design, design^T response), compensated.
    def fold(sums, coalitions, values):
        z = jnp.swapaxes(coalitions, 0, 1).astype(acc)  # (B, n, G)
        share = z.sum(axis=-1, keepdims=True) / counts[:, None]
        design = jnp.where(nonempty[:, None], z - share, 0.0)
        response = values - at_baseline[:, None] - share * difference[:, None]
        gram = jnp.einsum("bnp,bnq->bpq", design, design, precision=_HIGHEST)
        cross = jnp.einsum("bnp,bnk->bpk", design, response, precision=_HIGHEST)
        return engine.compensated_add(sums, (gram, cross))

    zeros = (jnp.zeros((batch, groups, groups), acc), jnp.zeros((batch, groups, chosen.shape[1]), acc))
    (gram, cross), _ = _fold_coalitions(
        model, tied_x, baseline, mask, chosen, draw, samples, fold, (zeros, zeros), chunk_size
    )
    # The centred design never moves along (1, ..., 1) over the groups with features:
    # adding the mean eigenvalue in that direction makes it a well-determined one, whose
    # solution component is zero (its right-hand side is), instead of a rounding-level
    # eigenvalue near the cutoff. Each empty group gets the same eigenvalue on its own
    # axis, where the right-hand side is zero too.
    scale = (jnp.trace(gram, axis1=1, axis2=2)[:, None] / counts)[..., None]  # (B, 1, 1)
    filled = nonempty.astype(acc)
    ones = filled[:, :, None] * filled[:, None, :] / counts[..., None]
    gram = gram + scale * (ones + jax.vmap(jnp.diag)(1.0 - filled))
    psi = jnp.where(nonempty[..., None], _least_squares(gram, cross), 0.0)  # (B, G, k)
    # Removes rounding along (1, ..., 1).
    psi = psi - filled[..., None] * psi.sum(axis=1, keepdims=True) / counts[..., None]
    phi = jnp.where(nonempty[..., None], difference[:, None] / counts[..., None] + psi, 0.0)
    return _group_attribution(targets, chosen, phi, mask, at_x, at_baseline, with_delta=True)


@engine.program(static_argnames=("groups", "samples", "chunk_size"))
def _lime(model, x, baseline, mask, targets: Targets, key, kernel_width, *, groups, samples, chunk_size):
    batch = x.shape[0]
    baseline = _broadcast_baseline(baseline, x)
    chosen, at_x, at_baseline, tied_x = engine.endpoints(model, x, targets, baseline)
    acc = engine.accumulation_dtype(x)
    count = chosen.shape[1]
    # Example b's interpretable features are its G_b groups: the empty ones are never
    # present, never enter the fit and get 0.
    nonempty = _nonempty(mask, groups)
    counts = _group_counts(mask).astype(acc)[:, None]  # (B, 1)

    def draw(indices):  # each group present with probability 1/2
        return (_random.uniform(_random.point_words(key, indices, (batch, groups))) < 0.5) & nonempty

    def fold(state, coalitions, values):
        z = jnp.swapaxes(coalitions, 0, 1).astype(acc)  # (B, n, G)
        # Cosine distance between z and the all-ones vector: 1 - sqrt(|z| / G) (1 for z = 0).
        distance = 1.0 - jnp.sqrt(z.sum(axis=-1) / counts)
        weight = jnp.exp(-(distance**2) / (2.0 * kernel_width**2))
        return engine.merge_comoments(state, jnp.concatenate([z, values], axis=-1), weight)

    unknowns = groups + count  # the co-moments of (z, v(z)) together
    init = (
        jnp.zeros((batch,), acc),
        jnp.zeros((batch, unknowns), acc),
        jnp.zeros((batch, unknowns, unknowns), acc),
    )
    _, mean, co = _fold_coalitions(
        model, tied_x, baseline, mask, chosen, draw, samples, fold, init, chunk_size
    )
    # With the intercept c = mean(v) - mean(z) . phi, phi solves the centred system. An
    # empty group's row and column are zero: a diagonal entry of the system's scale
    # there keeps it apart from the directions the samples leave undetermined.
    system = co[:, :groups, :groups]
    scale = (jnp.trace(system, axis1=1, axis2=2)[:, None] / counts)[..., None]  # (B, 1, 1)
    system = system + scale * jax.vmap(jnp.diag)(1.0 - nonempty.astype(acc))
    phi = jnp.where(nonempty[..., None], _least_squares(system, co[:, :groups, groups:]), 0.0)  # (B, G, k)
    intercept = mean[:, groups:] - jnp.einsum("bg,bgk->bk", mean[:, :groups], phi, precision=_HIGHEST)
    return _group_attribution(
        targets,
        chosen,
        phi,
        mask,
        at_x,
        at_baseline,
        with_delta=True,
        extras={"intercept": intercept},
    )


@engine.program(static_argnames=("groups", "samples", "chunk_size"))
def _banzhaf(model, x, baseline, mask, targets: Targets, key, *, groups, samples, chunk_size):
    batch = x.shape[0]
    baseline = _broadcast_baseline(baseline, x)
    ends = engine.endpoints(model, x, targets, baseline)
    acc = engine.accumulation_dtype(x)
    nonempty = _nonempty(mask, groups)  # an empty group is never present and gets 0

    def draw(indices):  # each group present with probability 1/2
        return (_random.uniform(_random.point_words(key, indices, (batch, groups))) < 0.5) & nonempty

    def fold(sums, coalitions, values):  # sums over the draws with g present, and over all
        z = jnp.swapaxes(coalitions, 0, 1).astype(acc)  # (B, n, G)
        with_g = jnp.einsum("bng,bnk->bgk", z, values, precision=_HIGHEST)
        return engine.compensated_add(sums, (with_g, values.sum(axis=1), z.sum(axis=1)))

    zeros = (
        jnp.zeros((batch, groups, targets.count), acc),
        jnp.zeros((batch, targets.count), acc),
        jnp.zeros((batch, groups), acc),
    )
    (with_g, total, present), _ = _fold_coalitions(
        model, ends.x, baseline, mask, ends.targets, draw, samples, fold, (zeros, zeros), chunk_size
    )
    absent = samples - present
    # phi_g = mean v(z | g present) - mean v(z | g absent); NaN where either side is empty.
    phi = (with_g / present[..., None]) - (total[:, None] - with_g) / absent[..., None]
    phi = jnp.where(((present > 0) & (absent > 0) | ~nonempty)[..., None], phi, jnp.nan)
    return _group_attribution(
        targets, ends.targets, phi, mask, ends.at_x, ends.at_reference, with_delta=False
    )


# --- checks at the public boundary -----------------------------------------------------


def _prepare(model, x, target, baseline, feature_mask):
    x, targets = _checks.prepare(model, x, target, integer_ids=True)
    baseline = _checks.baseline(baseline, x)
    mask, groups = _checks.feature_masks(feature_mask, x)
    return x, targets, baseline, mask, groups


def patch_mask(feature_shape, patch) -> np.ndarray:
    """A `feature_mask` that groups features into boxes of size `patch` (superpixels).

    Along an axis of size n with patch size p, feature i belongs to box i // p (the
    last box is smaller when p does not divide n); the boxes of all axes are numbered
    0..G-1 in C order. For NHWC images, `patch=(2, 2, 1)` makes every 2x2 block of one
    channel a group and `(2, 2, C)` every 2x2 block of all channels.

    Args:
      feature_shape: the shape of one example, `x.shape[1:]`.
      patch: a tuple of box sizes, one per axis of `feature_shape`.

    Returns:
      An int32 array of shape `feature_shape` with group ids 0..G-1.

    Example:
      >>> patch_mask((4,), (2,))
      array([0, 0, 1, 1], dtype=int32)
      >>> patch_mask((2, 3), (1, 2))
      array([[0, 0, 1],
             [2, 2, 3]], dtype=int32)
    """
    # Both checked here, naming each: int() took "4" as 4, an int failed as "not iterable"
    # and a negative size inside NumPy.
    for name, sizes in (("feature_shape", feature_shape), ("patch", patch)):
        if not isinstance(sizes, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sizes
        ):
            raise TypeError(f"{name} must be a tuple of ints, one per axis of an example, got {sizes!r}")
        if min(sizes, default=1) < 1:
            raise ValueError(f"{name} must be >= 1 on every axis, got {tuple(sizes)}")
    if len(patch) != len(feature_shape):
        raise ValueError(
            f"patch has {len(patch)} sizes for feature_shape {tuple(feature_shape)} of {len(feature_shape)} "
            f"axes; give one size per axis"
        )
    feature_shape, patch = tuple(int(n) for n in feature_shape), tuple(int(p) for p in patch)
    boxes = [np.arange(n) // p for n, p in zip(feature_shape, patch)]
    counts = [-(-n // p) for n, p in zip(feature_shape, patch)]
    grids = np.meshgrid(*boxes, indexing="ij")
    return np.ravel_multi_index(grids, counts).astype(np.int32)


# --- public methods --------------------------------------------------------------------


@register("perturbation")
def occlusion(model: Model, x, *, target, window, stride=None, baseline=0.0, chunk_size=None) -> Attribution:
    """Occlusion: the output drop when a sliding window of features is set to the baseline.

    A box of shape `window` slides over each example with steps `stride`. Along an
    axis of size n with window w and stride s its start positions are
    0, s, 2s, ... while the window fits: `range(0, n - w + 1, s)`. For each position p
    (every combination of the axes' starts) the covered features are set to the
    baseline, giving x_p, and

        phi_i = (1 / N_i) sum_{p covers i} (F_t(x) - F_t(x_p)),

    with N_i the number of positions whose window covers feature i (Captum's
    averaging). Features that no window covers get 0: those past the last window
    when s does not divide n - w, and those between windows when s > w.

    Captum's Occlusion places ceil((n - w) / s) + 1 windows instead, the last one cut
    off at the edge, so that every feature is covered; it refuses s > w. The two agree
    whenever s divides n - w (always with s = 1, Captum's default stride).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      window: a tuple of sizes, one per non-batch axis of x, e.g. `(2, 2, 1)` for
        NHWC images (2x2 pixels, one channel at a time).
      stride: a tuple like `window`, or one int for every axis; defaults to `window`
        (non-overlapping windows; Captum's default stride is 1).
      baseline: the value occluded features take: a scalar, one example (shape
        `x.shape[1:]`), or one per example; ids of x's kind for integer x, e.g. the
        padding or [MASK] id.
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta=None` and `output_difference` = F_t(x) - F_t(baseline).

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods.perturbation import occlusion
      >>> model = jaxplain.Model(lambda w, x: x @ w, jnp.array([[1.0], [2.0], [3.0], [4.0]]))
      >>> occlusion(model, jnp.ones((1, 4)), target=0, window=(2,)).values
      Array([[3., 3., 7., 7.]], dtype=float32)

    References:
      Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014,
      arXiv:1311.2901.
    """
    x, targets = _checks.prepare(model, x, target, integer_ids=True)
    baseline = _checks.baseline(baseline, x)
    window, stride = _checks.window(window, stride, x)
    chunk_size = _checks.chunk_size(chunk_size)
    return _occlusion(model, x, baseline, targets, window=window, stride=stride, chunk_size=chunk_size)


@register("perturbation")
def feature_ablation(
    model: Model, x, *, target, baseline=0.0, feature_mask=None, chunk_size=None
) -> Attribution:
    """Feature ablation: the output drop when one group of features is set to the baseline.

    With the groups of `feature_mask` (see the module docstring), every feature of
    group g gets

        phi_g = F_t(x) - F_t(x with group g at the baseline),

    one model evaluation per group (as Captum's FeatureAblation).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example;
        ids of x's kind for integer x, e.g. the padding or [MASK] id.
      feature_mask: group ids 0..G-1 (every id used): one example's int array,
        broadcastable to `x.shape[1:]` and shared by the batch, or one per example
        (`(batch, ...)` of x's rank, or `(batch, H, W)` for NHWC images, e.g. from
        `jaxplain.superpixels`; see "Groups per example" in the module docstring); None makes
        every feature its own group.
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta=None` (ablation promises no completeness) and
      `output_difference` = F_t(x) - F_t(baseline).

    Example:
      Token ids, a removed token replaced by the padding id 0 (whose score is 0):

      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods.perturbation import feature_ablation
      >>> scores = jnp.array([[0.0], [1.0], [2.0], [4.0]])  # one score per id
      >>> model = jaxplain.Model(lambda table, ids: table[ids].sum(axis=1), scores)
      >>> feature_ablation(model, jnp.array([[1, 3, 2]]), target=0, baseline=0).values
      Array([[1., 4., 2.]], dtype=float32)

    References:
      Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014,
      arXiv:1311.2901 (occluding parts of the input); Kokhlikyan et al. Captum: A
      unified and generic model interpretability library for PyTorch.
      arXiv:2009.07896, 2020 (FeatureAblation with feature masks).
    """
    x, targets, baseline, mask, groups = _prepare(model, x, target, baseline, feature_mask)
    chunk_size = _checks.chunk_size(chunk_size)
    return _feature_ablation(model, x, baseline, mask, targets, groups=groups, chunk_size=chunk_size)


@register("perturbation")
def exact_shapley(
    model: Model, x, *, target, baseline=0.0, feature_mask=None, chunk_size=None
) -> Attribution:
    """Exact Shapley values of the groups of features, from all 2^G coalitions.

    The game is v(S) = F_t(x with the groups outside S at the baseline) (baseline
    Shapley). Group g's value is

        phi_g = sum_{S not containing g} |S|! (G - |S| - 1)! / G! (v(S + g) - v(S)),

    computed as one (G, 2^G) weight matrix applied to the vector of the 2^G coalition
    values (no loop over coalitions), and every feature of group g gets phi_g. The
    values are efficient: sum_g phi_g = F_t(x) - F_t(baseline); `delta` is the
    difference, with both endpoints evaluated separately, so it is zero up to rounding.
    Captum's ShapleyValues (all permutations) computes the same numbers.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example;
        ids of x's kind for integer x, e.g. the padding or [MASK] id.
      feature_mask: group ids 0..G-1 (every id used): one example's int array,
        broadcastable to `x.shape[1:]` and shared by the batch, or one per example
        (`(batch, ...)` of x's rank, or `(batch, H, W)` for NHWC images, e.g. from
        `jaxplain.superpixels`; see "Groups per example" in the module docstring); None makes
        every feature its own group.
        At most 16 groups (65,536 coalitions per example; with one mask per
        example, G is the largest example's count).
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` = sum_g phi_g - (F_t(x) - F_t(baseline)) and
      `output_difference`.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods.perturbation import exact_shapley
      >>> model = jaxplain.Model.from_callable(lambda x: (x[:, :1] * x[:, 1:]))
      >>> exact_shapley(model, jnp.array([[2.0, 3.0]]), target=0).values  # x0 x1: split evenly
      Array([[3., 3.]], dtype=float32)

    References:
      Shapley. A Value for n-Person Games. Contributions to the Theory of Games II,
      1953; Sundararajan, Najmi. The many Shapley values for model explanation.
      ICML 2020, arXiv:1908.08474.
    """
    x, targets, baseline, mask, groups = _prepare(model, x, target, baseline, feature_mask)
    if groups > MAX_EXACT_GROUPS:
        given = (
            f"feature_mask=None makes each of the {groups} features of x (shape {tuple(x.shape)}) a group"
            if feature_mask is None
            else f"feature_mask has {groups} groups"
        )
        raise ValueError(
            f"exact_shapley evaluates 2^G coalitions and allows at most {MAX_EXACT_GROUPS} "
            f"groups, but {given}; pass a feature_mask with fewer groups, or use "
            "shapley_sampling or kernel_shap"
        )
    chunk_size = _checks.chunk_size(chunk_size)
    return _exact_shapley(model, x, baseline, mask, targets, groups=groups, chunk_size=chunk_size)


@register("perturbation", randomized=True)
def shapley_sampling(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    feature_mask=None,
    samples: int = 26,
    antithetic: bool = True,
    key,
    chunk_size=None,
) -> Attribution:
    """Shapley values estimated from random orders of the groups (permutation sampling).

    For each of M orders pi of the G groups, the groups are switched from the baseline
    to x one at a time, and each is credited with the change it makes:

        phi_g ~ (1 / M) sum_m [v(pi_m before g, plus g) - v(pi_m before g)],

    an unbiased estimate of the Shapley value (the exact value averages over all G!
    orders). With `antithetic=True` half the orders are drawn at random and the other
    half are their reverses, which cancels much of the variance: a group early in one
    order is late in its twin. Every example gets its own orders. Each order is
    evaluated at its G + 1 prefixes, so one call costs samples * (G + 1) model
    evaluations per example. Every order's credits sum to v(x) - v(baseline), so the
    estimate is efficient up to rounding.

    Captum's ShapleyValueSampling draws plain orders (no reverses), the same ones for
    the whole batch, with `n_samples=25` by default, and evaluates G points per order
    after one shared baseline evaluation.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example;
        ids of x's kind for integer x, e.g. the padding or [MASK] id.
      feature_mask: group ids 0..G-1 (every id used): one example's int array,
        broadcastable to `x.shape[1:]` and shared by the batch, or one per example
        (`(batch, ...)` of x's rank, or `(batch, H, W)` for NHWC images, e.g. from
        `jaxplain.superpixels`; see "Groups per example" in the module docstring); None makes
        every feature its own group.
      samples: the number of orders M in all, reverses included (so even when
        `antithetic`; the default 26 is Captum's 25 rounded up to pairs).
      antithetic: pair every random order with its reverse.
      key: a `jax.random.key`; same key, same result.
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default), rounded down to whole orders (G + 1 points, twice that when
        `antithetic`; at least one). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` = sum_g phi_g - (F_t(x) - F_t(baseline)), `output_difference`
      and `extras["standard_error"]`, `(batch, G)` (or `(batch, k, G)`): the standard
      error of each group's estimate (from the M orders, or from the M / 2 averages of
      an order and its reverse when `antithetic`); NaN with a single independent draw.

    References:
      Strumbelj, Kononenko. An Efficient Explanation of Individual Classifications
      using Game Theory. JMLR 11, 2010; Castro, Gomez, Tejada. Polynomial calculation
      of the Shapley value based on sampling. Computers & Operations Research, 2009;
      Mitchell, Cooper, Frank, Holmes. Sampling Permutations for Shapley Value
      Estimation. JMLR 23, 2022, arXiv:2104.12199 (antithetic orders).
    """
    x, targets, baseline, mask, groups = _prepare(model, x, target, baseline, feature_mask)
    antithetic = _checks.flag("antithetic", antithetic)
    samples = _checks.samples(samples, even_for="antithetic" if antithetic else "")
    key = _checks.key(key)
    chunk_size = _checks.chunk_size(chunk_size)
    return _shapley_sampling(
        model,
        x,
        baseline,
        mask,
        targets,
        key,
        groups=groups,
        samples=samples,
        antithetic=antithetic,
        chunk_size=chunk_size,
    )


@register("perturbation", randomized=True)
def kernel_shap(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    feature_mask=None,
    samples=None,
    paired: bool = True,
    key,
    chunk_size=None,
) -> Attribution:
    """KernelSHAP: Shapley values as a least-squares fit over sampled coalitions.

    The Shapley values solve

        min_phi sum_z k(z) (v(z) - v(0) - z . phi)^2   subject to   sum_g phi_g = v(1) - v(0),

    over all coalitions z in {0,1}^G other than 0 and 1, with the Shapley kernel
    k(z) = (G - 1) / (C(G, |z|) |z| (G - |z|)). Here the coalitions are sampled from
    that kernel: the size s in 1..G-1 with probability proportional to
    (G - 1) / (s (G - s)), then a uniform subset of that size; with `paired=True`
    each sampled coalition is evaluated together with its complement. Because the
    sampling already follows the kernel, the fit weighs every sample equally. The
    constraint is enforced exactly: with phi = (v(1) - v(0)) / G + psi and
    sum_g psi_g = 0, the fit is an unconstrained least-squares problem in psi on the
    centred coalitions z - |z| / G. It is solved through its normal equations, a
    (G, G) system whose sums are accumulated chunk by chunk (compensated), so memory
    does not grow with `samples`; the minimum-norm solution (eigenvalues below
    10 G eps of the largest dropped, a cutoff set by G alone) spreads whatever the
    samples cannot tell apart evenly over the groups. Every example gets its own
    coalitions, each drawn from its own index, so the answer does not depend on the
    chunk size. The estimate converges to `exact_shapley` as `samples` grows (tested
    from 1e3 to 1e6 samples).

    Captum's KernelShap (a Lime with the Shapley kernel) samples without pairing,
    `n_samples=25` by default, and only approximates the constraint by giving the full
    and empty coalitions a very large weight; the SHAP package enumerates whole
    subset sizes when its budget allows.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example;
        ids of x's kind for integer x, e.g. the padding or [MASK] id.
      feature_mask: group ids 0..G-1 (every id used, G >= 2): one example's int array,
        broadcastable to `x.shape[1:]` and shared by the batch, or one per example
        (`(batch, ...)` of x's rank, or `(batch, H, W)` for NHWC images, e.g. from
        `jaxplain.superpixels`; see "Groups per example" in the module docstring); None makes
        every feature its own group.
      samples: coalitions evaluated per example, complements included (even when
        `paired`); by default 2 G + 2048 (SHAP's "auto" budget). For G <= 11 groups
        `exact_shapley` needs fewer evaluations than that and is exact.
      paired: evaluate every sampled coalition with its complement.
      key: a `jax.random.key`; same key, same result.
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` = sum_g phi_g - (F_t(x) - F_t(baseline)) (zero up to rounding) and
      `output_difference`.

    References:
      Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS
      2017, arXiv:1705.07874; Covert, Lee. Improving KernelSHAP: Practical Shapley
      Value Estimation via Linear Regression. AISTATS 2021, arXiv:2012.01536 (paired
      sampling).
    """
    x, targets, baseline, mask, groups = _prepare(model, x, target, baseline, feature_mask)
    if groups < 2:
        raise ValueError(
            "kernel_shap needs at least 2 groups of features, but x and feature_mask give "
            "1; with one group its value is F(x) - F(baseline)"
        )
    paired = _checks.flag("paired", paired)
    if samples is None:
        samples = 2 * groups + 2048
    samples = _checks.samples(samples, even_for="paired" if paired else "")
    key = _checks.key(key)
    chunk_size = _checks.chunk_size(chunk_size)
    thresholds = _kernel_thresholds(mask.reshape(mask.shape[0], -1).max(axis=1) + 1, groups)
    return _kernel_shap(
        model,
        x,
        baseline,
        mask,
        targets,
        key,
        thresholds,
        groups=groups,
        samples=samples,
        paired=paired,
        chunk_size=chunk_size,
    )


@register("perturbation", randomized=True)
def lime(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    feature_mask=None,
    samples: int = 500,
    kernel_width: float = 0.75,
    key,
    chunk_size=None,
) -> Attribution:
    """LIME: a locally weighted linear fit of the model on random coalitions of groups.

    The interpretable features are the G groups. Coalitions z are drawn uniformly from
    {0,1}^G (each group present with probability 1/2, independently), and the model
    is evaluated at x where z = 1 and the baseline elsewhere. Each sample is weighted
    by an exponential kernel of its cosine distance to the unperturbed input, the
    all-ones vector:

        d(z) = 1 - cos(z, 1) = 1 - sqrt(|z| / G)   (d = 1 for the empty coalition),
        pi(z) = exp(-d(z)^2 / (2 kernel_width^2)),

    and the attributions are the coefficients of the weighted least-squares fit with
    an intercept, min_{c, phi} sum_z pi(z) (v(z) - c - z . phi)^2, without a penalty
    (the minimum-norm phi when the samples do not determine it). It is solved through
    the weighted means and centred co-moments of z and v(z), accumulated chunk by chunk
    (Chan et al.'s pairwise update), and a (G, G) system with a cutoff set by G, so
    any number of samples takes the same memory and the answer does not depend on the
    chunk size. On a model that is
    linear in the coalition (e.g. a linear model) the fit is exact. LIME is not
    efficient: `delta` is in general not zero.

    Captum's Lime defaults differ: `n_samples=50`, a Lasso fit (alpha 0.01), and the
    kernel exp(-d^2 / (2 w^2)) with w = 1 on the cosine distance between the original
    and perturbed inputs in input space. The LIME package uses a ridge fit
    (alpha 1) and, for tabular data, kernel width 0.75 sqrt(number of features).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example;
        ids of x's kind for integer x, e.g. the padding or [MASK] id.
      feature_mask: group ids 0..G-1 (every id used): one example's int array,
        broadcastable to `x.shape[1:]` and shared by the batch, or one per example
        (`(batch, ...)` of x's rank, or `(batch, H, W)` for NHWC images, e.g. from
        `jaxplain.superpixels`; see "Groups per example" in the module docstring); None makes
        every feature its own group.
      samples: random coalitions per example.
      kernel_width: the kernel's width w (> 0) on the cosine distance in [0, 1].
      key: a `jax.random.key`; same key, same result.
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` = sum_g phi_g - (F_t(x) - F_t(baseline)), `output_difference`
      and `extras["intercept"]`, the fit's intercept per example and target.

    References:
      Ribeiro, Singh, Guestrin. "Why Should I Trust You?": Explaining the Predictions
      of Any Classifier. KDD 2016, arXiv:1602.04938.
    """
    x, targets, baseline, mask, groups = _prepare(model, x, target, baseline, feature_mask)
    samples = _checks.samples(samples)
    kernel_width = _checks.number("kernel_width", kernel_width, above=True, traced=True)
    key = _checks.key(key)
    chunk_size = _checks.chunk_size(chunk_size)
    return _lime(
        model,
        x,
        baseline,
        mask,
        targets,
        key,
        kernel_width,
        groups=groups,
        samples=samples,
        chunk_size=chunk_size,
    )


@register("perturbation", randomized=True)
def banzhaf(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    feature_mask=None,
    samples: int = 500,
    key,
    chunk_size=None,
) -> Attribution:
    """Banzhaf values of the groups, estimated from random coalitions (maximum sample reuse).

    The Banzhaf value of group g is its marginal contribution averaged over all
    coalitions of the other groups, each equally likely:

        phi_g = 2^-(G-1) sum_{S not containing g} (v(S + g) - v(S)),

    with v(z) = F_t(x where z = 1, the baseline elsewhere) as for the Shapley methods.
    Coalitions z are drawn uniformly from {0,1}^G, and every draw serves every group:
    phi_g = mean of v(z) over the draws with g present - mean over those without
    (the maximum-sample-reuse estimator of Wang and Jia), so `samples` evaluations
    estimate all G values at once. Only running sums are kept (compensated), so memory
    does not grow with `samples`; the answer does not depend on the chunk size. For a
    model additive over the groups the Banzhaf and Shapley values coincide. Banzhaf
    values are not efficient: they need not sum to F_t(x) - F_t(baseline), so `delta`
    is None. A group present in every draw, or in none, gets NaN (likely only for
    `samples` below about 20).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`: floating, or integer such as token ids
        `(batch, T)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example;
        ids of x's kind for integer x, e.g. the padding or [MASK] id.
      feature_mask: group ids 0..G-1 (every id used): one example's int array,
        broadcastable to `x.shape[1:]` and shared by the batch, or one per example
        (`(batch, ...)` of x's rank, or `(batch, H, W)` for NHWC images, e.g. from
        `jaxplain.superpixels`; see "Groups per example" in the module docstring); None makes
        every feature its own group.
      samples: random coalitions per example.
      key: a `jax.random.key`; same key, same result.
      chunk_size: points evaluated at once (`jaxplain.engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`
      and `output_difference` = F_t(x) - F_t(baseline).

    References:
      Banzhaf. Weighted Voting Doesn't Work: A Mathematical Analysis. Rutgers Law
      Review 19, 1965. Wang, Jia. Data Banzhaf: A Robust Data Valuation Framework for
      Machine Learning. AISTATS 2023, arXiv:2205.15466 (maximum sample reuse).
    """
    x, targets, baseline, mask, groups = _prepare(model, x, target, baseline, feature_mask)
    samples = _checks.samples(samples)
    key = _checks.key(key)
    chunk_size = _checks.chunk_size(chunk_size)
    return _banzhaf(
        model, x, baseline, mask, targets, key, groups=groups, samples=samples, chunk_size=chunk_size
    )
