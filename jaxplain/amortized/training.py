"""The one Optax loop every recipe trains with: AdamW, a scanned epoch, early stopping.

`fit(loss_fn, params, data, ...)` minimises `loss_fn(params, batch, key)` over
mini-batches of `data` (a pytree of arrays with a leading example axis). One epoch is
one compiled `lax.scan` over its steps, so a small network does not pay Python's
per-step overhead. After each epoch `validation(params)` (lower is better) is
measured; the best parameters are kept, and training stops after `patience` epochs
without a relative improvement of 1e-4.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxplain import _checks
from jaxplain._progress import Progress
from jaxplain.amortized import networks


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
      params: the parameters with the best validation loss (the last ones without
        validation).
      history: one dict per epoch: epoch, train_loss, validation_loss (if measured).
      best_epoch: the epoch `params` come from.
    """

    params: Any
    history: List[Dict[str, float]]
    best_epoch: int


def check_settings(*, epochs=1, batch_size=1, learning_rate=1.0, weight_decay=0.0, patience=1, seed=0,
                   validation_fraction=0.0) -> None:
    """Checks `fit`'s settings; the recipes call it first, before labels or a first stage.

    Without it, epochs=0 ended in an IndexError after training, a negative or NaN
    learning rate trained silently to nonsense, and a string reached Optax.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        _checks.positive_int(name, value)
    _checks.number("learning_rate", learning_rate, above=True)
    _checks.number("weight_decay", weight_decay)
    _checks.seed(seed)
    _checks.fraction("validation_fraction", validation_fraction)
    if validation_fraction >= 1:
        raise ValueError(f"validation_fraction must be < 1 (some rows must train), got {validation_fraction}")


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
    check_settings(validation_fraction=fraction, seed=seed)
    order = np.random.default_rng(seed).permutation(n)
    held = int(round(fraction * n))
    held = held if held >= 2 and n - held >= 1 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def fit(
    loss_fn: Callable,
    params,
    data,
    *,
    validation: Optional[Callable] = None,
    validation_data=None,
    trainable=None,
    epochs: int = 100,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 10,
    seed: int = 0,
    progress: bool = True,
    description: str = "training",
) -> FitResult:
    """Minimises `loss_fn(params, batch, key)` with AdamW and early stopping.

    Args:
      loss_fn: a scalar loss of a mini-batch (a pytree like `data`, each leaf
        `(batch_size, ...)`) and a `jax.random` key for the step's randomness.
      params: the initial parameters.
      data: a pytree of arrays sharing their first axis (the examples).
      validation: `validation(params, validation_data) -> scalar`, lower is better;
        None trains for all `epochs`.
      validation_data: the held-out pytree passed to `validation` (an argument of
        the compiled function, not a constant folded into it).
      trainable: a pytree of bools like `params` (False = frozen), or None.
      epochs: the most passes over `data`; each shuffles with a fixed seed and drops
        the last partial batch.
      batch_size: examples per step (clipped to the number of examples).
      learning_rate: AdamW's peak rate, decayed by a cosine over all `epochs`.
      weight_decay: AdamW's decoupled weight decay.
      patience: epochs without improvement before stopping.
      seed: shuffling and the step keys derive from it.
      progress: show a progress bar (loss, validation loss).
      description: the bar's label.

    Returns:
      A `FitResult`.
    """
    check_settings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   weight_decay=weight_decay, patience=patience, seed=seed)
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    batch_size = max(1, min(batch_size, n))
    steps = max(1, n // batch_size)
    schedule = optax.cosine_decay_schedule(learning_rate, max(1, epochs * steps))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay))
    if trainable is not None:
        labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable)
        optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, labels)
    opt_state = optimizer.init(params)
    data = jax.tree_util.tree_map(jnp.asarray, data)

    @jax.jit
    def run_epoch(params, opt_state, order, epoch_key, data):
        def step(carry, rows):
            params, opt_state, index = carry
            batch = jax.tree_util.tree_map(lambda leaf: leaf[rows], data)
            loss, grads = jax.value_and_grad(loss_fn)(params, batch, jax.random.fold_in(epoch_key, index))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, index + 1), loss

        (params, opt_state, _), losses = jax.lax.scan(step, (params, opt_state, 0), order)
        return params, opt_state, losses.mean()

    validate = jax.jit(validation) if validation is not None else None
    key = networks.random_key(seed)
    best, best_params, best_epoch, waited = np.inf, params, 0, 0
    history = []
    with Progress(epochs, description=description, unit="epoch", enabled=progress) as bar:
        for epoch in range(1, epochs + 1):
            order = np.random.default_rng([seed, epoch]).permutation(n)[: steps * batch_size]
            params, opt_state, loss = run_epoch(
                params, opt_state, jnp.asarray(order.reshape(steps, batch_size)), jax.random.fold_in(key, epoch), data
            )
            record = {"epoch": epoch, "train_loss": float(loss)}
            if validate is not None:
                record["validation_loss"] = float(validate(params, validation_data))
            history.append(record)
            bar.update(1, **{k: v for k, v in record.items() if k != "epoch"})
            score = record.get("validation_loss", -epoch)
            if not np.isfinite(best) or score < best - 1e-4 * abs(best):
                best, best_params, best_epoch, waited = score, params, epoch, 0
            else:
                waited += 1
                if validate is not None and waited >= patience:
                    break
    return FitResult(best_params, history, best_epoch)


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
