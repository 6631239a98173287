"""How the amortized recipes train: jaxplain's one training loop, a held-out split, inputs.

`fit(loss_fn, params, data, ...)` minimises `loss_fn(params, batch, key)` over
mini-batches of `data` (a pytree of arrays with a leading example axis) in
`jaxplain.training.run`, one compiled `lax.scan` per epoch, so a small network does not
pay Python's per-step overhead. `fit_held_out` holds `validation_fraction` of the rows
out and stops early on the loss there. The recipes' settings are a
`jaxplain.training.TrainConfig` over `DEFAULTS` (each recipe changes a few).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import training
from jaxplain.amortized import networks
from jaxplain.training import TrainConfig, Trained

FitResult = Trained  # what `fit` returns (its `state` is None)

DEFAULTS = TrainConfig(
    epochs=100,
    batch_size=64,
    learning_rate=1e-3,
    weight_decay=1e-4,
    warmup_fraction=0.0,
    clip_norm=1.0,
    patience=10,
    validation_fraction=0.0,
    seed=0,
    progress=True,
)
# The recipes' (train_supervised, train_fastshap): longer, with early stopping on 15% held out.
RECIPE_DEFAULTS = DEFAULTS.replace(
    epochs=300, batch_size=32, learning_rate=2e-3, patience=30, validation_fraction=0.15
)


def inputs(x, name: str = "x") -> np.ndarray:
    """Training inputs as a NumPy array: real numbers (finite) or integer token ids."""
    try:
        x = np.asarray(x)
    except ValueError as error:  # ragged nested lists
        raise TypeError(f"{name} must be an array, got {type(x).__name__}: {error}") from error
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers or integer token ids, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a batch of examples (n >= 1, features...), got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def split_rows(n: int, fraction: float, seed: int):
    """`(train, validation)` row indices: a fixed-seed `round(fraction * n)` rows held out.

    No validation rows when fewer than 2 would be held out (tiny label sets): then the
    caller trains for the full number of epochs.
    """
    config = TrainConfig(validation_fraction=fraction, seed=seed)
    order = np.random.default_rng(config.seed).permutation(n)
    held = int(round(config.validation_fraction * n))
    held = held if held >= 2 and n - held >= 1 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def fit(
    loss_fn: Callable,
    params,
    data,
    *,
    validation: Callable | None = None,
    validation_data=None,
    trainable=None,
    description: str = "training",
    config: TrainConfig | None = None,
    **settings,
) -> FitResult:
    """Minimises `loss_fn(params, batch, key)` with `jaxplain.training.run`.

    Args:
      loss_fn: a scalar loss of a mini-batch (a pytree like `data`, each leaf
        `(batch_size, ...)`) and a `jax.random` key for the step's randomness.
      params: the initial parameters.
      data: a pytree of arrays sharing their first axis (the examples).
      validation: `validation(params, validation_data) -> scalar`, lower is better,
        for early stopping (`patience`); None trains for all `epochs`.
      validation_data: the held-out pytree passed to `validation` (an argument of
        the compiled function, not a constant folded into it).
      trainable: a pytree of bools like `params` (False = frozen), or None.
      description: the progress bar's label.
      config, **settings: a `jaxplain.training.TrainConfig` and/or its fields as
        keywords (which win), over `DEFAULTS`. The step keys derive from
        `networks.random_key(seed)`.

    Returns:
      A `FitResult`.
    """
    config = training.resolve("fit", DEFAULTS, config, settings)
    validate = None
    if validation is not None:
        compiled = jax.jit(validation)

        def validate(params, state):
            return compiled(params, validation_data)

    def loss(params, state, batch, key):
        return loss_fn(params, batch, key), (state, {})

    return training.run(
        loss,
        params,
        data,
        config,
        key=networks.random_key(config.seed),
        trainable=trainable,
        validation=validate,
        description=description,
    )


def fit_held_out(
    loss_fn: Callable, params, data, config: TrainConfig, *, trainable=None, description: str = "training"
) -> FitResult:
    """`fit` on the rows of `data` not held out, stopping early on the loss of those held out.

    `config.validation_fraction` of the rows are held out (`split_rows`); the validation
    loss is `loss_fn` on all of them at once, with the fixed key `random_key(seed + 1)`.
    """
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    train_rows, validation_rows = split_rows(n, config.validation_fraction, config.seed)
    held = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf[validation_rows]), data)

    def validation(params, held):
        return loss_fn(params, held, networks.random_key(config.seed + 1))

    return fit(
        loss_fn,
        params,
        jax.tree_util.tree_map(lambda leaf: leaf[train_rows], data),
        validation=validation if len(validation_rows) else None,
        validation_data=held,
        trainable=trainable,
        description=description,
        config=config,
    )


def summary(result: FitResult) -> dict:
    """The training run in a few numbers, for an explainer's metadata."""
    record = {
        "epochs": result.history[-1]["epoch"],
        "best_epoch": result.best_epoch,
        "first_train_loss": result.history[0]["train_loss"],
        "last_train_loss": result.history[-1]["train_loss"],
    }
    if "validation_loss" in result.history[-1]:
        record["best_validation_loss"] = min(h["validation_loss"] for h in result.history)
    return record
