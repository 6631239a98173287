"""Complexity: how concentrated an explanation is, judged from the attribution alone.

`sparseness` (Gini index), `complexity` (entropy) and `effective_complexity` (a count)
take `metric(attribution, ...)`: no model, no mask. Each works on the magnitudes |a_i|
of all of an example's features as given (sum an image's channels first to judge it
per pixel), batched over examples in one compiled program. Quantus also divides each
attribution by its largest magnitude first (`normalise=True`): the Gini index and the
entropy do not change with that scale, and `effective_complexity` does so by default
(`relative=True`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxplain import _checks, engine
from jaxplain.metrics.localisation import _attribution


def _magnitudes(values):
    values = values.reshape(values.shape[0], -1)
    return jnp.abs(values.astype(engine.accumulation_dtype(values)))


@engine.program
def _sparseness(values):
    ordered = jnp.sort(_magnitudes(values), axis=-1)
    n = ordered.shape[-1]
    weights = 2 * jnp.arange(1, n + 1, dtype=ordered.dtype) - n - 1
    total = ordered.sum(-1)
    return jnp.where(total == 0, 0, (weights * ordered).sum(-1) / (n * jnp.where(total == 0, 1, total)))


def sparseness(attribution) -> jax.Array:
    """Sparseness: the Gini index of the attribution's magnitudes.

        G(a) = sum_{k=1}^{N} (2k - N - 1) |a|_(k) / (N sum_k |a|_(k)),

    with |a|_(1) <= ... <= |a|_(N) the magnitudes in ascending order (Hurley & Rickard's
    form, as Chalasani et al. use it). G is 0 when every feature has the same
    magnitude and (N - 1) / N when one feature holds all of it. An all-zero attribution
    scores 0 (as a uniform one; Quantus adds 1e-7 to every magnitude and so gets about
    0 too, and is shifted slightly for every other attribution).

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.

    Returns:
      `(batch,)` scores in [0, 1) (higher is better: sparser, more concentrated).

    Example:
      >>> import numpy as np
      >>> sparseness(np.array([[0.0, 0.0, 0.0, 2.0], [1.0, -1.0, 1.0, -1.0]])).tolist()
      [0.75, 0.0]

    References:
      Chalasani, Chen, Chowdhury, Wu, Jha. Concise Explanations of Neural Networks using
      Adversarial Training. ICML 2020, arXiv:1810.06583.
      Hurley, Rickard. Comparing Measures of Sparsity. IEEE Transactions on Information
      Theory 55(10), 2009, arXiv:0811.4706.
    """
    return _sparseness(_attribution(attribution))


@engine.program
def _complexity(values):
    magnitudes = _magnitudes(values)
    total = magnitudes.sum(-1, keepdims=True)
    # An all-zero attribution is taken as uniform.
    shares = jnp.where(total == 0, 1 / magnitudes.shape[-1], magnitudes / jnp.where(total == 0, 1, total))
    return 0.0 - (shares * jnp.log(jnp.where(shares > 0, shares, 1))).sum(-1)


def complexity(attribution) -> jax.Array:
    """Complexity: the entropy of the features' fractional contributions.

        C(a) = -sum_i P_i ln P_i,   P_i = |a_i| / sum_j |a_j|,

    natural logarithm, 0 ln 0 = 0. It is 0 when one feature holds all the magnitude and
    ln N when all N share it equally; an all-zero attribution is taken as uniform and
    scores ln N (Quantus returns NaN there: 0 / 0).

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.

    Returns:
      `(batch,)` entropies in [0, ln N] (lower is better: a simpler explanation).

    References:
      Bhatt, Weller, Moura. Evaluating and Aggregating Feature-based Model Explanations.
      IJCAI 2020, arXiv:2005.00631.
    """
    return _complexity(_attribution(attribution))


@engine.program(static_argnames=("relative",))
def _effective_complexity(values, eps, *, relative):
    magnitudes = _magnitudes(values)
    if relative:
        largest = magnitudes.max(-1, keepdims=True)
        magnitudes = magnitudes / jnp.where(largest == 0, 1, largest)
    return (magnitudes > eps).sum(-1).astype(jnp.int32)


def effective_complexity(attribution, *, eps: float = 1e-5, relative: bool = True) -> jax.Array:
    """Effective complexity: the number of features whose attribution exceeds eps.

        EC(a) = |{i : |a_i| / max_j |a_j| > eps}|     (relative, the default),
        EC(a) = |{i : |a_i| > eps}|                   (relative=False).

    The relative form is what Quantus computes with its defaults (attributions divided
    by their largest magnitude, `normalise=True`), so it does not depend on the
    attribution's scale. Nguyen & Martínez define effective complexity through the
    model (the fewest top-ranked features outside which perturbations change the
    prediction by less than eps); this is the attribution-only simplification Quantus
    implements. An all-zero attribution counts 0.

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      eps: the threshold, >= 0 (Quantus: 1e-5).
      relative: divide by each example's largest magnitude first.

    Returns:
      `(batch,)` int32 counts in [0, N] (lower is better: fewer features to read).

    References:
      Nguyen, Martínez. On quantitative aspects of model interpretability.
      arXiv:2007.07584, 2020.
    """
    values = _attribution(attribution)
    eps = _checks.number("eps", eps)
    relative = _checks.flag("relative", relative)
    return _effective_complexity(values, eps, relative=relative)
