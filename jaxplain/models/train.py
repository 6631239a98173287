"""Training a classifier with Optax: the loop behind jaxplain's shipped checkpoints.

`train(module, data)` fits any Linen classifier whose `__call__(x, train=...)` returns
logits (the zoo's models, or a user's) by cross-entropy, in jaxplain's one training loop
(`jaxplain.training.run`: AdamW, a warm-up cosine schedule, fixed seeds, a progress bar),
one compiled step at a time, and evaluates it on the test split after every epoch.
BatchNorm statistics and dropout are handled when the module has them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxplain import training
from jaxplain.training import TrainConfig


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
      variables: the module's variables (`{"params": ..., "batch_stats": ...}`).
      history: one dict per epoch: epoch, train_loss, train_accuracy, test_loss,
        test_accuracy.
      test_accuracy: accuracy on the test split after the last epoch.
    """

    variables: dict[str, Any]
    history: list[dict[str, float]]
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
                {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
                x,
                **_mode_kwargs(module, False),
            )[0],
            jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype),
        )
    except Exception as error:
        raise ValueError(
            f"module cannot be applied to x_train's examples of shape {x.shape[1:]}: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not hasattr(logits, "shape") or len(logits.shape) != 2:
        raise ValueError(
            f"module must return (batch, classes) logits, got {jax.tree_util.tree_map(np.shape, logits)}"
        )
    if largest >= logits.shape[1]:
        # optax's cross-entropy takes an out-of-range label without an error
        raise ValueError(f"the labels go up to {largest} but the module has {logits.shape[1]} classes")


def evaluate(module, variables, x, y, *, batch_size: int = 256) -> dict[str, float]:
    """Loss and accuracy of `module` in evaluation mode on `(x, y)`, in batches."""
    batch_metrics = _batch_metrics(module)
    loss = correct = 0.0
    for start in range(0, len(x), batch_size):
        batch_loss, batch_correct = batch_metrics(
            variables, x[start : start + batch_size], y[start : start + batch_size]
        )
        loss, correct = loss + float(batch_loss), correct + float(batch_correct)
    return {"loss": loss / len(x), "accuracy": correct / len(x)}


DEFAULTS = TrainConfig(
    epochs=20,
    batch_size=64,
    learning_rate=1e-3,
    weight_decay=1e-4,
    warmup_fraction=0.05,
    clip_norm=0.0,
    seed=0,
    progress=True,
)


def train(module, data, *, config: TrainConfig | None = None, **settings) -> TrainResult:
    """Trains `module` on `data` and evaluates it on the test split after each epoch.

    Args:
      module: a Linen classifier; `module.apply(variables, x, train=True)` gives logits.
      data: a `jaxplain.data.Dataset` (x_train, y_train, x_test, y_test).
      config: a `jaxplain.training.TrainConfig`; its fields may also be given as
        keywords (`epochs=30`), which win. Unset fields take `DEFAULTS`: 20 epochs,
        batches of 64, learning rate 1e-3 after a warm-up over 5% of the steps, weight
        decay 1e-4, no clipping, seed 0. The seed also sets the initialisation and the
        dropout keys. There is no early stopping (`patience` and
        `validation_fraction` are refused): the test split is only measured.
      **settings: `TrainConfig`'s fields.

    Returns:
      A `TrainResult`.

    References:
      Loshchilov, Hutter. Decoupled Weight Decay Regularization. arXiv:1711.05101, 2017.
    """
    config = training.resolve("train", DEFAULTS, config, settings, stops_early=False)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a flax.linen.Module (e.g. jaxplain.models.MLP), got {type(module).__name__}"
        )
    if not all(hasattr(data, field) for field in ("x_train", "y_train", "x_test", "y_test")):
        raise TypeError(
            "data must be a jaxplain.data.Dataset (or anything with x_train, y_train, x_test and "
            f"y_test), got {type(data).__name__}"
        )
    x_train, y_train = _split_arrays("train", data.x_train, data.y_train)
    x_test, y_test = _split_arrays("test", data.x_test, data.y_test)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_test has examples of shape {x_test.shape[1:]}, x_train {x_train.shape[1:]}")
    _check_classes(module, x_train, max(y_train.max(), y_test.max()))

    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = module.init(
        {"params": init_key, "dropout": init_key}, x_train[:1], **_mode_kwargs(module, False)
    )
    train_kwargs = _mode_kwargs(module, True)

    def loss_fn(params, batch_stats, batch, key):
        state = {"params": params}
        if batch_stats is None:
            logits = module.apply(state, batch["x"], rngs={"dropout": key}, **train_kwargs)
        else:
            logits, updates = module.apply(
                {**state, "batch_stats": batch_stats},
                batch["x"],
                rngs={"dropout": key},
                mutable=["batch_stats"],
                **train_kwargs,
            )
            batch_stats = updates["batch_stats"]
        accuracy = (logits.argmax(-1) == batch["y"]).mean()
        return _cross_entropy(logits, batch["y"]), (batch_stats, {"accuracy": accuracy})

    def as_variables(params, batch_stats):
        return {"params": params, **({} if batch_stats is None else {"batch_stats": batch_stats})}

    def test(params, batch_stats):
        measured = evaluate(module, as_variables(params, batch_stats), x_test, y_test)
        return {"test_loss": measured["loss"], "test_accuracy": measured["accuracy"]}

    result = training.run(
        loss_fn,
        variables["params"],
        {"x": x_train, "y": y_train},
        config,
        key=dropout_key,
        state=variables.get("batch_stats"),
        evaluate=test,
        scan=False,
        description="train",
    )
    return TrainResult(
        as_variables(result.params, result.state), result.history, result.history[-1]["test_accuracy"]
    )
