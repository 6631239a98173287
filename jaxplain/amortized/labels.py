"""Teacher labels at dataset scale: any jaxplain method over a whole dataset, cached on disk.

`make_labels(method, model, x, ...)` explains every example for every class, in batches,
with a progress bar. With `cache_dir`, each finished batch is written atomically (to a
temporary file, then renamed) under a folder named by a hash of everything the answer
depends on: the method and its settings, the model's parameters and apply function, the
data, the batch size and the key. An interrupted run resumes from the batches already on
disk; a finished one is read back without calling the method at all. The batches run in
the library's one resumable batch loop (`jaxplain._batches.run`), with the part files as
its index.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from jaxplain import _batches, _checks
from jaxplain._batches import Batch
from jaxplain._store import digest as _digest
from jaxplain._store import model_digest, output_path, write_atomic
from jaxplain._store import settings_json as teacher_settings
from jaxplain.methods.registry import METHODS, options_of, resolve
from jaxplain.model import Model

LABELS_FILE = "labels.npz"


@dataclasses.dataclass(frozen=True, eq=False)
class Labels:
    """A teacher's attributions for a dataset, every class of every example.

    Attributes:
      values: `(n, classes, *feature_shape)` float32.
      output_difference: `(n, classes)`, F_c(x) - F_c(baseline) as the method reports
        it (NaN where it reports none).
      delta: `(n, classes)`, the method's completeness gap (NaN where it has none).
      teacher: `{"method": name, "settings": {...}}`, JSON-serialisable; a key is
        recorded as its raw key data.
    """

    values: np.ndarray
    output_difference: np.ndarray
    delta: np.ndarray
    teacher: dict[str, Any]

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, indices) -> Labels:
        """The labels of some examples only."""
        rows = np.asarray(indices)
        return Labels(self.values[rows], self.output_difference[rows], self.delta[rows], self.teacher)


def method_name(method) -> str:
    """The registered name of a jaxplain method given as a function or a name."""
    name = method if isinstance(method, str) else getattr(method, "__name__", "")
    if name not in METHODS:
        raise ValueError(f"method must be a registered jaxplain method (jaxplain.METHODS), got {method!r}")
    return name


def method_settings(teacher: dict) -> tuple:
    """`(function, settings)` to call a recorded teacher again (keys rebuilt; the method
    a noise method wraps is its `method` setting, recorded as `wrap` by earlier versions)."""
    settings = {}
    for name, value in teacher["settings"].items():
        if isinstance(value, dict) and set(value) == {"key_data"}:
            value = jax.random.wrap_key_data(np.asarray(value["key_data"], np.uint32))
        elif isinstance(value, list):
            value = np.asarray(value)
        settings[name] = value
    function = resolve(teacher["method"])
    return function, options_of(function, settings)


def _array(result, name, shape):
    value = getattr(result, name)
    return np.full(shape, np.nan, np.float32) if value is None else np.asarray(value, np.float32)


def make_labels(
    method,
    model: Model,
    x,
    *,
    batch_size: int = 64,
    cache_dir: str | None = None,
    progress: bool = True,
    **settings,
) -> Labels:
    """Explains every class of every example of `x` with a jaxplain method, in batches.

    Args:
      method: a registered jaxplain method (`jaxplain.exact_shapley`,
        `jaxplain.kernel_shap`, `jaxplain.integrated_gradients`,
        `jaxplain.token_attributions`, ...) or its name. A noise method
        (`jaxplain.smoothgrad`, ...) takes the method it wraps as `wrap="saliency"`
        (its `method` option, saliency by default).
      model: the `jaxplain.Model` to explain.
      x: the inputs, `(n, ...)` (int token ids for `token_attributions`).
      batch_size: examples per call of the method. The labels of a randomized method
        depend on it (batch i draws from `fold_in(key, i)`), so it is part of the cache key.
      cache_dir: where to cache; None computes without caching.
      progress: show a progress bar over the batches.
      **settings: the method's settings (`baseline`, `steps`, `samples`,
        `feature_mask`, `key`, `wrap`, ...). `target` is not allowed: every class is
        explained.

    Returns:
      `Labels`.

    References:
      Schwarzenberg, Feldhus, Moeller. Efficient Explanations from Empirical Explainers.
      BlackboxNLP 2021, arXiv:2103.15429 (training on an expensive explainer's outputs).
    """
    name = method_name(method)
    if "target" in settings:
        raise ValueError("make_labels explains every class; do not pass target")
    if settings.get("key") is not None:  # an int key failed inside JAX, at the first batch
        settings["key"] = _checks.key(settings["key"])
        if not jax.dtypes.issubdtype(settings["key"].dtype, jax.dtypes.prng_key):
            # a raw PRNGKey as the typed key it stands for (the same draws), so the teacher
            # is recorded as key data and called again with a key, not an int64 list
            settings["key"] = jax.random.wrap_key_data(settings["key"])
    settings = options_of(name, settings)  # a noise method's wrap= is its method option
    if settings.get("method") is not None:  # recorded by name, so the teacher can be called again
        settings["method"] = method_name(settings["method"])
    function = resolve(name)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if cache_dir is not None:
        cache_dir = output_path("cache_dir", cache_dir)
    x = np.asarray(x)
    # all of x (a NaN in the last row too), before a batch is computed or cached
    num_classes = int(_checks.check_x(model, x, integer_ids=True)[1])
    teacher = {"method": name, "settings": teacher_settings(settings)}
    key = settings.pop("key", None)
    folder = None
    if cache_dir is not None:
        folder = os.path.join(
            cache_dir, f"{name}-{_digest(teacher, model_digest(model), x, batch_size)[:16]}"
        )
        final = os.path.join(folder, LABELS_FILE)
        if os.path.isfile(final):
            with np.load(final) as stored:
                return Labels(stored["values"], stored["output_difference"], stored["delta"], teacher)
    batches = [
        Batch(number, start, x[start : start + batch_size])
        for number, start in enumerate(range(0, len(x), batch_size))
    ]
    parts = _Parts(folder, len(batches))
    every_class = np.arange(num_classes)[None, :]

    def compute(batch: Batch) -> dict:
        extra = {} if key is None else {"key": jax.random.fold_in(key, batch.number)}
        result = function(model, batch.x, target=every_class, **settings, **extra)
        shape = (len(batch.x), num_classes)
        return {
            "values": np.asarray(result.values, np.float32),
            "output_difference": _array(result, "output_difference", shape),
            "delta": _array(result, "delta", shape),
        }

    done = sum(len(batch.x) for batch in batches if batch.number in parts.finished())
    _batches.run(
        batches, compute, parts, total=len(x), done=done, description=f"labels {name}", progress=progress
    )
    loaded = [parts.load(batch.number) for batch in batches]
    joined = {
        k: np.concatenate([part[k] for part in loaded]) for k in ("values", "output_difference", "delta")
    }
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
        write_atomic(os.path.join(folder, LABELS_FILE), **joined)
        write_atomic(os.path.join(folder, "teacher.json"), text=json.dumps(teacher, indent=2))
        parts.remove()
    return Labels(joined["values"], joined["output_difference"], joined["delta"], teacher)


class _Parts:
    """make_labels' index (`jaxplain._batches.Index`): a part file per finished batch in
    the cache folder, `part-<i>.npz`, written atomically; without a folder, the arrays."""

    def __init__(self, folder: str | None, count: int):
        self.folder, self.count, self.held = folder, count, {}

    def _path(self, number: int) -> str:
        return os.path.join(self.folder, f"part-{number:05d}.npz")

    def finished(self) -> set:
        if self.folder is None:
            return set(self.held)
        return {number for number in range(self.count) if os.path.isfile(self._path(number))}

    def write(self, batch: Batch, arrays) -> None:
        if self.folder is None:
            self.held[batch.number] = dict(arrays)
            return
        # the folder is made at the first write: a setting the method refuses leaves none
        os.makedirs(self.folder, exist_ok=True)
        write_atomic(self._path(batch.number), **arrays)

    def load(self, number: int) -> dict:
        if self.folder is None:
            return self.held[number]
        with np.load(self._path(number)) as stored:
            return {k: stored[k] for k in stored.files}

    def remove(self) -> None:
        """Removes the part files (once the whole labels file is written)."""
        for number in range(self.count):
            os.remove(self._path(number))
