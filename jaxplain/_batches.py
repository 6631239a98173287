"""The one resumable batch loop of the dataset-scale jobs (explain_dataset, make_labels).

A job is planned first: its caller checks the arguments and the data, and asks its
*index*, the record of the finished batches, which are done; nothing is written before
that. Then `run` computes each remaining batch and hands it to the index, which writes it
atomically (a temporary file, flushed, renamed) and only then records it as finished. A
job killed at any moment keeps every finished batch and loses at most the one in flight;
run again, it computes only what its index does not hold.

Each job has its own index: `jaxplain.runs` an append-only JSON-lines file per process
beside one shard per batch, `jaxplain.amortized.labels` one part file per batch in its
cache folder (or the arrays in memory, without a cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

import numpy as np

from jaxplain._progress import Progress


class Batch(NamedTuple):
    """Batch `number` of a job: examples `start` to `start + len(x)` and their labels."""

    number: int
    start: int
    x: np.ndarray
    y: np.ndarray | None = None


class Index(Protocol):
    """The record of a job's finished batches."""

    def finished(self) -> set[int]:
        """The numbers of the batches finished before this call (not computed again)."""

    def write(self, batch: Batch, arrays: Mapping[str, np.ndarray]) -> None:
        """Writes a batch's arrays atomically, then records the batch as finished."""


def run(
    batches: Iterable[Batch],
    compute: Callable[[Batch], Mapping[str, np.ndarray]],
    index: Index,
    *,
    total: int | None,
    done: int = 0,
    description: str = "",
    progress: bool = True,
) -> list[int]:
    """Computes every batch its index has not finished, writing each as soon as it exists.

    Args:
      batches: the job's batches in order (a stream is read as it goes: a batch that
        fails to arrive stops the job with the batches before it kept).
      compute: a batch's arrays.
      index: where they go (`Index`).
      total: the job's examples, for the progress bar (None if unknown).
      done: examples finished before this call.
      description: the bar's label.
      progress: show the bar (examples/s, ETA).

    Returns:
      The numbers of the batches computed, in order.
    """
    finished = index.finished()
    computed: list[int] = []
    with Progress(total, description=description, unit="examples", enabled=progress, initial=done) as bar:
        for batch in batches:
            if batch.number in finished:
                continue
            index.write(batch, compute(batch))
            computed.append(batch.number)
            bar.update(len(batch.x))
    return computed
