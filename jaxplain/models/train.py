"""Training a classifier with Optax: the loop behind jaxplain's shipped checkpoints.

`train(module, data)` fits any Linen classifier whose `__call__(x, train=...)` returns
logits (the zoo's models, or a user's), with AdamW and a warm-up cosine schedule, fixed
seeds, a progress bar, and an evaluation on the test split after every epoch. BatchNorm
statistics and dropout are handled when the module has them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Dict, List

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxplain import _checks
from jaxplain._progress import Progress


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
      variables: the module's variables (`{"params": ..., "batch_stats": ...}`).
      history: one dict per epoch: epoch, train_loss, train_accuracy, test_loss,
        test_accuracy.
      test_accuracy: accuracy on the test split after the last epoch.
    """

    variables: Dict[str, Any]
    history: List[Dict[str, float]]
    test_accuracy: float


def _mode_kwargs(module, train: bool) -> dict:
    try:
        accepted = inspect.signature(module.__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {"train": train} if "train" in accepted else {}


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.lru_cache(maxsize=32)
def _batch_metrics(module):
    @jax.jit
    def batch_metrics(variables, xb, yb):
        logits = module.apply(variables, xb, **_mode_kwargs(module, False))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum()
        return loss, (logits.argmax(-1) == yb).sum()

    return batch_metrics


def _split_arrays(split: str, x, y):
    """`(x, y)` of one split as NumPy arrays, checked: numbers (finite), int labels, same length."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"x_{split} must hold real numbers or integer token ids, got dtype {x.dtype}")
    if x.ndim < 2 or len(x) < 1:
        raise ValueError(f"x_{split} must hold at least one example, (n, ...), got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"x_{split} contains NaN or infinite values")
    # np.asarray(y, np.int32) truncated 0.5 to 0 and let one-hot rows through.
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y_{split} must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (len(x),):
        raise ValueError(f"y_{split} must hold one class per example, shape ({len(x)},), got {y.shape}")
    if y.min() < 0:
        raise ValueError(f"y_{split} holds {y.min()}; classes are 0..C-1")
    return x, y.astype(np.int32)


def _check_classes(module, x, largest: int) -> None:
    """The module returns (batch, C) logits with C above every label (abstract evaluation)."""
    try:
        logits = jax.eval_shape(
            lambda x: module.init_with_output(
                {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, x, **_mode_kwargs(module, False)
            )[0],
            jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype),
        )
    except Exception as error:
        raise ValueError(
            f"module cannot be applied to x_train's examples of shape {x.shape[1:]}: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not hasattr(logits, "shape") or len(logits.shape) != 2:
        raise ValueError(f"module must return (batch, classes) logits, got {jax.tree_util.tree_map(np.shape, logits)}")
    if largest >= logits.shape[1]:
        # optax's cross-entropy takes an out-of-range label without an error
        raise ValueError(f"the labels go up to {largest} but the module has {logits.shape[1]} classes")


def evaluate(module, variables, x, y, *, batch_size: int = 256) -> Dict[str, float]:
    """Loss and accuracy of `module` in evaluation mode on `(x, y)`, in batches."""
    batch_metrics = _batch_metrics(module)
    loss = correct = 0.0
    for start in range(0, len(x), batch_size):
        batch_loss, batch_correct = batch_metrics(
            variables, x[start : start + batch_size], y[start : start + batch_size]
        )
        loss, correct = loss + float(batch_loss), correct + float(batch_correct)
    return {"loss": loss / len(x), "accuracy": correct / len(x)}


def train(
    module,
    data,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_fraction: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Trains `module` on `data` and evaluates it on the test split after each epoch.

    Args:
      module: a Linen classifier; `module.apply(variables, x, train=True)` gives logits.
      data: a `jaxplain.data.Dataset` (x_train, y_train, x_test, y_test).
      epochs: passes over the training split; each uses a fresh fixed-seed shuffle and
        drops the last partial batch (one compiled step).
      batch_size: examples per step (clipped to the training set's size).
      learning_rate: peak learning rate of the warm-up cosine schedule.
      weight_decay: AdamW's decoupled weight decay.
      warmup_fraction: share of the steps spent warming up linearly from 0.
      seed: initialisation, shuffling and dropout all derive from it.
      progress: show a progress bar per epoch (loss, accuracy).

    Returns:
      A `TrainResult`.

    References:
      Loshchilov, Hutter. Decoupled Weight Decay Regularization. arXiv:1711.05101, 2017.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    epochs, batch_size = int(epochs), int(batch_size)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a flax.linen.Module (e.g. jaxplain.models.MLP), got {type(module).__name__}")
    if not all(hasattr(data, field) for field in ("x_train", "y_train", "x_test", "y_test")):
        raise TypeError(
            "data must be a jaxplain.data.Dataset (or anything with x_train, y_train, x_test and "
            f"y_test), got {type(data).__name__}"
        )
    _checks.number("learning_rate", learning_rate, above=True)
    _checks.number("weight_decay", weight_decay)
    if _checks.fraction("warmup_fraction", warmup_fraction) == 1:
        raise ValueError("warmup_fraction must be < 1: the schedule needs steps after the warm-up")
    _checks.seed(seed)
    x_train, y_train = _split_arrays("train", data.x_train, data.y_train)
    x_test, y_test = _split_arrays("test", data.x_test, data.y_test)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_test has examples of shape {x_test.shape[1:]}, x_train {x_train.shape[1:]}")
    _check_classes(module, x_train, max(y_train.max(), y_test.max()))
    batch_size = min(batch_size, len(x_train))
    steps_per_epoch = len(x_train) // batch_size

    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = module.init(
        {"params": init_key, "dropout": init_key}, x_train[:1], **_mode_kwargs(module, False)
    )
    params = variables["params"]
    batch_stats = variables.get("batch_stats")
    total_steps = epochs * steps_per_epoch
    warmup_steps = max(1, int(warmup_fraction * total_steps))
    # Optax needs decay steps beyond the warm-up: one step in all (e.g. 1 epoch of one
    # batch) raised from inside it.
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, max(warmup_steps + 1, total_steps))
    optimizer = optax.adamw(schedule, weight_decay=weight_decay)
    opt_state = optimizer.init(params)
    train_kwargs = _mode_kwargs(module, True)

    @jax.jit
    def step(params, batch_stats, opt_state, xb, yb, key):
        def loss_fn(params):
            state = {"params": params}
            if batch_stats is None:
                logits = module.apply(state, xb, rngs={"dropout": key}, **train_kwargs)
                return _cross_entropy(logits, yb), (logits, None)
            logits, updates = module.apply(
                {**state, "batch_stats": batch_stats},
                xb,
                rngs={"dropout": key},
                mutable=["batch_stats"],
                **train_kwargs,
            )
            return _cross_entropy(logits, yb), (logits, updates["batch_stats"])

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        accuracy = (logits.argmax(-1) == yb).mean()
        return optax.apply_updates(params, updates), new_stats, opt_state, loss, accuracy

    def current_variables():
        return {"params": params, **({} if batch_stats is None else {"batch_stats": batch_stats})}

    history = []
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng([seed, epoch]).permutation(len(x_train))
        losses, accuracies = [], []
        with Progress(
            steps_per_epoch, description=f"epoch {epoch}/{epochs}", unit="step", enabled=progress
        ) as bar:
            for i in range(steps_per_epoch):
                rows = order[i * batch_size : (i + 1) * batch_size]
                key = jax.random.fold_in(dropout_key, (epoch - 1) * steps_per_epoch + i)
                params, batch_stats, opt_state, loss, accuracy = step(
                    params, batch_stats, opt_state, x_train[rows], y_train[rows], key
                )
                losses.append(float(loss))
                accuracies.append(float(accuracy))
                bar.update(1, loss=np.mean(losses), accuracy=np.mean(accuracies))
            test = evaluate(module, current_variables(), x_test, y_test)
            bar.metrics.update(test_accuracy=test["accuracy"])
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "train_accuracy": float(np.mean(accuracies)),
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
            }
        )
    return TrainResult(current_variables(), history, history[-1]["test_accuracy"])
