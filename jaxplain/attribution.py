"""`Attribution`: what every jaxplain explainer returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Attribution:
    """An explanation of a batch, as a pytree (it can be returned from `jax.jit`).

    Attributes:
      values: attributions shaped like the input `x`, or `(batch, k, *x.shape[1:])`
        when k targets per example were asked for.
      target: the class explained for each example, `(batch,)` or `(batch, k)`; with
        `target="predicted"` this says which class that was.
      delta: for path methods, the signed completeness gap per example and target,
        `sum(values) - (F(x) - F(baseline))`; `None` where it has no meaning.
      extras: method-specific arrays, e.g. `"steps"` for `steps="auto"`.
      output_difference: F_t(x) - F_t(baseline) per example and target, for the
        methods that compare the input with a reference; `None` for the others.
    """

    values: Array
    target: Array
    delta: Array | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    output_difference: Array | None = None

    @property
    def relative_delta(self) -> Array | None:
        """|delta| / |F(x) - F(baseline)| per example: how converged a path method is.

        Zero for an exact integral; the IG paper calls an answer within 5% (0.05) good.
        `None` for methods without a completeness gap.
        """
        if self.delta is None or self.output_difference is None:
            return None
        scale = jnp.abs(self.output_difference)
        tiny = jnp.finfo(jnp.result_type(scale)).tiny
        return jnp.abs(self.delta) / jnp.maximum(scale, tiny)


jax.tree_util.register_dataclass(
    Attribution, data_fields=["values", "target", "delta", "extras", "output_difference"], meta_fields=[]
)
