"""The one Optax training loop of jaxplain, and `TrainConfig`, the settings it takes.

`jaxplain.train` (the classifiers behind the shipped checkpoints) and the amortized
recipes (`jaxplain.amortized`: supervised, FastSHAP and its surrogate, CoRTX) all train
with `run`: AdamW on a cosine learning-rate schedule (after a linear warm-up, if asked),
the gradient clipped to a global norm (if asked), a fixed-seed shuffle per epoch that
drops the last partial batch, the key of step s `fold_in(key, s)`, a progress bar, and
early stopping on a validation loss when the trainer has one.

Every trainer takes its settings the same way: `config=TrainConfig(...)` and/or
TrainConfig's fields as keywords (`epochs=30`), which win over `config`; a field left
unset takes that trainer's default (`resolve`). The fields are checked once, here, when
a `TrainConfig` is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxplain import _checks
from jaxplain._progress import Progress


def _below_one(check, why: str):
    def checked(name, value):
        value = check(name, value)
        if value >= 1:
            raise ValueError(f"{name} must be < 1 ({why}), got {value}")
        return value

    return checked


_CHECKS = {
    "epochs": _checks.positive_int,
    "batch_size": _checks.positive_int,
    "learning_rate": lambda name, value: _checks.number(name, value, above=True),
    "weight_decay": _checks.number,
    "warmup_fraction": _below_one(_checks.fraction, "the schedule needs steps after the warm-up"),
    "clip_norm": _checks.number,
    "patience": _checks.positive_int,
    "validation_fraction": _below_one(_checks.fraction, "some rows must train"),
    "seed": lambda name, value: _checks.seed(value, name),
    "progress": _checks.flag,
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run; a field left None takes the trainer's default.

    Checked when made: a wrong value raises a TypeError or ValueError naming the field.

    Attributes:
      epochs: the most passes over the training rows. Each epoch shuffles them with
        `numpy.random.default_rng([seed, epoch])` and drops the last partial batch.
      batch_size: examples per step (clipped to the number of training rows).
      learning_rate: AdamW's peak learning rate (> 0); a cosine decays it to 0 over all
        the steps.
      weight_decay: AdamW's decoupled weight decay (>= 0).
      warmup_fraction: the share of the steps over which the rate first rises linearly
        from 0, in [0, 1); 0: no warm-up.
      clip_norm: the gradient is first clipped to this global norm; 0: not clipped.
      patience: with a validation loss, training stops after this many epochs without a
        relative improvement of 1e-4, and the best epoch's parameters are returned.
      validation_fraction: the share of the rows held out for that validation loss, in
        [0, 1) (the amortized recipes; fewer than 2 rows held out: no early stopping).
      seed: the shuffles, the step keys and the trainer's initialisation derive from it.
      progress: show a progress bar (steps, loss, the epoch's metrics).

    Example:
      >>> config = TrainConfig(epochs=30, learning_rate=1e-2)
      >>> config.replace(seed=1).seed
      1

    References:
      Loshchilov, Hutter. Decoupled Weight Decay Regularization. arXiv:1711.05101, 2017;
      Loshchilov, Hutter. SGDR: Stochastic Gradient Descent with Warm Restarts.
      arXiv:1608.03983, 2016 (the cosine schedule).
    """

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    warmup_fraction: float | None = None
    clip_norm: float | None = None
    patience: int | None = None
    validation_fraction: float | None = None
    seed: int | None = None
    progress: bool | None = None

    def __post_init__(self):
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            if value is not None:  # stored as plain Python numbers (np.int64(3) -> 3)
                object.__setattr__(self, name, check(name, value))

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def given(self) -> dict[str, Any]:
        """The fields that are set."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

    def over(self, defaults: TrainConfig) -> TrainConfig:
        """These settings, with the fields left None taken from `defaults`."""
        return defaults.replace(**self.given())


FIELDS = tuple(field.name for field in dataclasses.fields(TrainConfig))
EARLY_STOPPING = ("patience", "validation_fraction")


def resolve(
    caller: str,
    defaults: TrainConfig,
    config: TrainConfig | None = None,
    keywords: Mapping[str, Any] | None = None,
    *,
    stops_early: bool = True,
) -> TrainConfig:
    """A trainer's settings: `keywords` over `config` over the trainer's `defaults`.

    Args:
      caller: the trainer's name, for the errors.
      defaults: the trainer's defaults.
      config: the caller's `TrainConfig`, or None.
      keywords: TrainConfig's fields given to the trainer as keywords (None = unset).
      stops_early: False for a trainer without a validation loss, which refuses
        `patience` and `validation_fraction` rather than ignore them.

    Returns:
      The `TrainConfig` to train with.
    """
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a jaxplain.training.TrainConfig, got {type(config).__name__}")
    keywords = dict(keywords or {})
    unknown = sorted(set(keywords) - set(FIELDS))
    if unknown:
        raise TypeError(
            f"{caller}() got an unexpected keyword argument {unknown[0]!r}; its training settings are "
            f"jaxplain.training.TrainConfig's fields: {', '.join(FIELDS)}"
        )
    chosen = TrainConfig(**keywords).over(config or TrainConfig())
    if not stops_early:
        for name in EARLY_STOPPING:
            if getattr(chosen, name) is not None:
                raise ValueError(
                    f"{name} does not apply to {caller}, which has no validation loss to stop early on"
                )
    return chosen.over(defaults)


@dataclasses.dataclass
class Trained:
    """What `run` returns.

    Attributes:
      params: the parameters of the best epoch by validation loss (without a
        validation loss, of the last epoch).
      state: the model state of that epoch (e.g. BatchNorm statistics), or None.
      history: one dict per epoch: epoch, train_loss, `train_<name>` for each metric
        of the loss, validation_loss (if measured) and what `evaluate` returned.
      best_epoch: the epoch `params` come from.
    """

    params: Any
    state: Any
    history: list[dict[str, float]]
    best_epoch: int


def optimizer(config: TrainConfig, steps_per_epoch: int, trainable=None) -> optax.GradientTransformation:
    """AdamW on `config`'s schedule over `config.epochs * steps_per_epoch` steps.

    With `trainable` (a pytree of bools like the parameters), the False ones stay fixed.
    """
    total = config.epochs * steps_per_epoch
    if config.warmup_fraction:
        warmup = max(1, int(config.warmup_fraction * total))
        # Optax needs decay steps beyond the warm-up: one step in all (e.g. 1 epoch of one
        # batch) raised from inside it.
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warmup, max(warmup + 1, total)
        )
    else:
        schedule = optax.cosine_decay_schedule(config.learning_rate, max(1, total))
    transform = optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.clip_norm:
        transform = optax.chain(optax.clip_by_global_norm(config.clip_norm), transform)
    if trainable is not None:
        labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable)
        transform = optax.multi_transform({"train": transform, "freeze": optax.set_to_zero()}, labels)
    return transform


def run(
    loss_fn: Callable,
    params,
    data,
    config: TrainConfig,
    *,
    key,
    state=None,
    trainable=None,
    validation: Callable | None = None,
    evaluate: Callable | None = None,
    scan: bool = True,
    description: str = "training",
) -> Trained:
    """Minimises `loss_fn` over mini-batches of `data` with AdamW (see the module docstring).

    Args:
      loss_fn: `loss_fn(params, state, batch, key) -> (loss, (state, metrics))`: the
        scalar loss of a mini-batch (a pytree like `data`, each leaf `(batch_size,
        ...)`), the model state after the step (None without one), and a dict of
        scalar metrics (e.g. accuracy), averaged over each epoch.
      params: the initial parameters (what the optimiser moves).
      data: a pytree of arrays sharing their first axis (the examples).
      config: the settings, every field this call uses set (`resolve` gives them).
      key: a `jax.random` key; step s of the run (counted from 0 over all the epochs)
        gets `fold_in(key, s)`.
      state: the initial model state, carried from step to step and not optimised.
      trainable: a pytree of bools like `params` (False = frozen), or None.
      validation: `validation(params, state) -> float`, lower is better, measured after
        every epoch: the best epoch's parameters are kept, and training stops after
        `config.patience` epochs without a relative improvement of 1e-4. None trains
        for all the epochs and keeps the last.
      evaluate: `evaluate(params, state) -> dict` of numbers recorded after every epoch
        and shown on the bar (not used to choose an epoch).
      scan: one compiled program per epoch (a `lax.scan` over its steps, with the data
        on the device): small networks pay no per-step overhead. False: one per step
        (the host gathers each batch; the bar moves every step, and convolutions stay
        outside a loop body, which XLA:CPU runs slower).
      description: the progress bar's label.

    Returns:
      A `Trained`.
    """
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    batch_size = min(config.batch_size, n)
    steps = n // batch_size
    transform = optimizer(config, steps, trainable)
    gradient = jax.value_and_grad(loss_fn, has_aux=True)

    def step(carry, batch, step_key):
        params, state, opt_state = carry
        (loss, (state, metrics)), grads = gradient(params, state, batch, step_key)
        updates, opt_state = transform.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), (loss, metrics)

    if scan:
        data_on_device = jax.tree_util.tree_map(jnp.asarray, data)

        @jax.jit
        def run_epoch(carry, order, first, data):
            def body(inner, rows):
                carry, index = inner
                batch = jax.tree_util.tree_map(lambda leaf: leaf[rows], data)
                carry, out = step(carry, batch, jax.random.fold_in(key, index))
                return (carry, index + 1), out

            (carry, _), out = jax.lax.scan(body, (carry, first), order)
            return carry, out
    else:
        one_step = jax.jit(step)

    carry = (params, state, transform.init(params))
    best, chosen, best_epoch, waited = np.inf, carry, 0, 0
    history: list[dict[str, float]] = []
    with Progress(
        config.epochs * steps, description=description, unit="step", enabled=config.progress
    ) as bar:
        for epoch in range(1, config.epochs + 1):
            bar.description = f"{description} epoch {epoch}/{config.epochs}"
            order = np.random.default_rng([config.seed, epoch]).permutation(n)[: steps * batch_size]
            order = order.reshape(steps, batch_size)
            first = (epoch - 1) * steps
            if scan:
                carry, (losses, metrics) = run_epoch(carry, jnp.asarray(order), first, data_on_device)
                losses, metrics = np.asarray(losses), {k: np.asarray(v) for k, v in metrics.items()}
                bar.update(steps, loss=np.mean(losses), **{k: np.mean(v) for k, v in metrics.items()})
            else:
                losses, metrics = [], {}
                for index, rows in enumerate(order):
                    batch = jax.tree_util.tree_map(lambda leaf: leaf[rows], data)
                    carry, (loss, values) = one_step(carry, batch, jax.random.fold_in(key, first + index))
                    losses.append(float(loss))
                    for name, value in values.items():
                        metrics.setdefault(name, []).append(float(value))
                    bar.update(1, loss=np.mean(losses), **{k: np.mean(v) for k, v in metrics.items()})
            record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            record.update({f"train_{name}": float(np.mean(values)) for name, values in metrics.items()})
            if validation is not None:
                record["validation_loss"] = float(validation(carry[0], carry[1]))
            if evaluate is not None:
                record.update({name: float(value) for name, value in evaluate(carry[0], carry[1]).items()})
            history.append(record)
            bar.metrics.update(
                {k: v for k, v in record.items() if k != "epoch" and not k.startswith("train_")}
            )
            score = record.get("validation_loss", -epoch)
            if not np.isfinite(best) or score < best - 1e-4 * abs(best):
                best, chosen, best_epoch, waited = score, carry, epoch, 0
            else:
                waited += 1
                if validation is not None and waited >= config.patience:
                    break
    return Trained(chosen[0], chosen[1], history, best_epoch)
