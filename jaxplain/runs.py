"""Explaining whole datasets: batches sharded over a device mesh, written as they finish.

`explain_dataset(method, model, data, out=...)` streams `data` in batches of
`batch_size` examples, places each batch on a `jax.sharding.Mesh` split along its
batch axis (by default every device, one axis), runs the method on it as one compiled
program, and writes the batch's attributions to `out` as soon as they exist:

    out/run.json              what was run: method, settings, digests of the model and
                              options, batch size; written once, compared on resume
    out/index.p<P>.jsonl      one line per finished batch of process P (rows, checksums
                              of the file and of the inputs), then an end line
    out/shards/b<I>.p<P>.npz  batch I's values, targets, deltas, example indices

Each shard is written to a temporary name, flushed and renamed; only then is its index
line appended. A run killed at any moment (even with SIGKILL) leaves whole shards and an
index that lists only whole shards, so running the same call again skips everything
finished and recomputes at most the batch that was in flight. The last batch is padded
to `batch_size` (the padding is dropped before writing), so every batch runs the same
program and a batch's answer does not depend on where the run stopped; a randomized
method draws batch I from `fold_in(key, I)`.

Several hosts (`jax.distributed.initialize()` first): the mesh spans every device of
every process, each process feeds its block of each global batch
(`host_local_array_to_global_array`), takes back its block of the answer and writes its
own shards and index; the processes agree on which batches are finished (all of them
have them) with one `process_allgather` before starting.

`load_attributions(out)` reads a folder back in dataset order and says whether it is
complete.

`explain_dataset` is a plan, an index and a loop: `_plan` checks the arguments, the data
and the folder and decides what is left to compute, writing nothing before every check
of the data given now has passed (a new run's folder excepted); `_ShardIndex` is the
on-disk record of one process's finished batches (its index file and shards); the batches
run in the library's one resumable batch loop, `jaxplain._batches.run`, which
`make_labels` runs in as well.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import itertools
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _batches, _checks, engine
from jaxplain._batches import Batch
from jaxplain._store import digest, file_sha256, model_digest, output_path, write_atomic
from jaxplain.methods import arguments
from jaxplain.methods.registry import METHODS, options_of, resolve
from jaxplain.model import Model, TopK

FORMAT = "jaxplain.attributions"
FORMAT_VERSION = 1
RUN_FILE = "run.json"
SHARDS = "shards"
VIEWS = "views"  # pictures drawn from the run (jaxplain explain, jaxplain show)
FIELDS = ("values", "target", "delta", "relative_delta")


class OutputFolderError(ValueError):
    """An output folder that is foreign, corrupt, or holds another run: never overwritten."""


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What one call of `explain_dataset` did.

    Attributes:
      out: the output folder.
      examples: examples in the dataset.
      batches: batches in the dataset.
      computed: the batches this call computed (in order).
      skipped: how many batches were already finished and were skipped.
      seconds: wall-clock time of the call.
    """

    out: str
    examples: int
    batches: int
    computed: tuple[int, ...]
    skipped: int
    seconds: float


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetAttributions:
    """Attributions of a dataset read back from an output folder, in dataset order.

    Attributes:
      values: `(n, ...)` attributions of the examples present.
      target: the class explained for each example.
      delta: completeness gap per example (None for methods without one).
      relative_delta: |delta| / |F(x) - F(baseline)| (None likewise).
      labels: the data's labels, when it had them.
      index: `(n,)` the position of each example in the dataset (0, 1, 2, ... when
        complete).
      complete: every batch of the dataset is present.
      num_examples: examples in the dataset, when the run got to its end.
      missing: batches known to be missing (those before the last finished one).
      run: the contents of run.json (method, settings, metadata).
    """

    values: np.ndarray
    target: np.ndarray
    delta: np.ndarray | None
    relative_delta: np.ndarray | None
    labels: np.ndarray | None
    index: np.ndarray
    complete: bool
    num_examples: int | None
    missing: tuple[int, ...]
    run: dict[str, Any]

    def __len__(self) -> int:
        return len(self.index)


# --------------------------------------------------------------------------- data


def _split_record(record, input_key: str | None, label_key: str):
    """(inputs, labels or None) of a batch given as an array, an (x, y) pair or a dict."""
    if isinstance(record, Mapping):
        keys = [k for k in record if k != label_key]
        name = (
            input_key
            if input_key is not None
            else ("image" if "image" in record else (keys[0] if len(keys) == 1 else None))
        )
        if name is None or name not in record:
            raise ValueError(
                f"data: batches are dicts with keys {sorted(record)}; pass input_key= to say which holds the inputs"
            )
        return np.asarray(record[name]), (None if label_key not in record else np.asarray(record[label_key]))
    if isinstance(record, (tuple, list)) and len(record) == 2:
        return np.asarray(record[0]), np.asarray(record[1])
    return np.asarray(record), None


def _stream(data, input_key, label_key) -> tuple[Iterator, int | None]:
    """An iterator over (inputs, labels) chunks of any size, and the length if known."""
    if isinstance(data, (str, bytes)):
        # A string is iterable: its letters were taken as examples, and check_x named x.
        raise TypeError(
            f"data must be arrays or batches of them, got the string {data!r}; a dataset by name is "
            f"loaded first, e.g. jaxplain.data.load({data!r}).x_test"
        )
    if isinstance(data, (np.ndarray, jax.Array)):
        return iter([(np.asarray(data), None)]), len(data)
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(p, (np.ndarray, jax.Array)) for p in data)
    ):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise ValueError(f"data: (inputs, labels) of different lengths {len(x)} and {len(y)}")
        return iter([(x, y)]), len(x)
    if isinstance(data, Mapping):
        x, y = _split_record(data, input_key, label_key)
        return iter([(x, y)]), len(x)
    if hasattr(data, "as_numpy_iterator"):  # a tf.data.Dataset of batches
        data = data.as_numpy_iterator()
    random_access = hasattr(data, "__getitems__") or hasattr(data, "__getitem__")
    if hasattr(data, "__len__") and random_access and not isinstance(data, (list, tuple)):
        return _records(data, input_key, label_key), len(data)  # a random-access source of examples
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"data must be an array, an (inputs, labels) pair, an iterable of batches, a tf.data.Dataset "
            f"of batches or a TFDS data source; got {type(data).__name__}"
        ) from None
    return (_split_record(batch, input_key, label_key) for batch in iterator), None


def _records(source, input_key, label_key, chunk: int = 256):
    """Examples of a random-access source (e.g. TFDS `as_data_source`), a chunk at a time."""
    for start in range(0, len(source), chunk):
        indices = list(range(start, min(start + chunk, len(source))))
        items = (
            source.__getitems__(indices) if hasattr(source, "__getitems__") else [source[i] for i in indices]
        )
        if isinstance(items[0], Mapping):
            stacked = {k: np.stack([np.asarray(item[k]) for item in items]) for k in items[0]}
        elif isinstance(items[0], (tuple, list)):
            stacked = tuple(np.stack([np.asarray(item[j]) for item in items]) for j in range(len(items[0])))
        else:
            stacked = np.stack([np.asarray(item) for item in items])
        yield _split_record(stacked, input_key, label_key)


def _rebatch(chunks: Iterator, batch_size: int):
    """(start, inputs, labels) batches of exactly `batch_size` rows (the last may be short).

    Each chunk is checked as it arrives (shape, NaN, labels), before any batch it feeds is
    yielded: an array given whole is checked whole before anything is written; a stream's
    later chunk can only be checked when it comes (see `explain_dataset`).
    """
    xs: list[np.ndarray] = []
    ys: list[np.ndarray | None] = []
    held, start, seen, shape = 0, 0, 0, None
    for x, y in chunks:
        if x.ndim == 0 or (y is not None and len(y) != len(x)):
            raise ValueError(
                f"data: a batch of inputs {x.shape} with labels {None if y is None else y.shape}"
            )
        shape = x.shape[1:] if shape is None else shape
        if x.shape[1:] != shape:
            raise ValueError(
                f"data: examples from {seen} on have shape {x.shape[1:]}, the first ones {shape}"
            )
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
            raise ValueError(f"data: example {seen + bad} holds NaN or infinity")
        seen += len(x)
        xs.append(x)
        ys.append(y)
        held += len(x)
        while held >= batch_size:
            x_all = np.concatenate(xs)
            y_all = None if any(v is None for v in ys) else np.concatenate(ys)
            yield start, x_all[:batch_size], None if y_all is None else y_all[:batch_size]
            start += batch_size
            held -= batch_size
            xs, ys = [x_all[batch_size:]], [None if y_all is None else y_all[batch_size:]]
    if held:
        x_all = np.concatenate(xs)
        y_all = None if any(v is None for v in ys) else np.concatenate(ys)
        yield start, x_all, y_all


# --------------------------------------------------------------------------- settings


def _describe(value):
    """A JSON description of an option; arrays by shape, dtype and digest (not contents)."""
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return {"key_data": np.asarray(jax.random.key_data(value)).tolist()}
    if isinstance(value, (np.ndarray, jax.Array)):
        array = np.asarray(value)
        if array.size <= 16:
            return array.tolist()
        return {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": digest(array)}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, Model):
        return {"model": model_digest(value)}
    if callable(value):
        return _callable_name(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _callable_name(function) -> str:
    if isinstance(function, functools.partial):
        inner = ", ".join(
            [_callable_name(function.func)]
            + [json.dumps(_describe(a)) for a in function.args]
            + [f"{k}={json.dumps(_describe(v))}" for k, v in sorted(function.keywords.items())]
        )
        return f"partial({inner})"
    name = getattr(function, "__name__", None)
    if name in METHODS and METHODS[name].function is function:
        return name
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _method(method, options: dict) -> tuple[Callable, str]:
    """(function(model, x, *, target, **options), its name), resolving names; a noise
    method's name shows the method it wraps, its `method` option."""
    if isinstance(method, str):
        inner = options.get("method") if METHODS.get(method) and METHODS[method].wraps else None
        return resolve(method), (method if inner is None else f"{method}({_describe(inner)})")
    if not callable(method):
        raise TypeError(
            f"method must be a jaxplain method, its name, or a callable; got {type(method).__name__}"
        )
    return method, _callable_name(method)


def _target(target, labels_known: bool):
    if isinstance(target, str) and target in ("predicted", "label"):
        if target == "label" and not labels_known:
            raise ValueError(
                "target='label' needs labels: pass data as (inputs, labels), batches with labels, or labels="
            )
        return target
    if isinstance(target, TopK):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    raise ValueError(
        f"target must be 'predicted', 'label' (the data's labels), an int class or jaxplain.top_k(k) for a "
        f"dataset; got {target!r}"
    )


# --------------------------------------------------------------------------- folder


def _index_path(out: str, process: int) -> str:
    return os.path.join(out, f"index.p{process}.jsonl")


def _shard_name(batch: int, process: int) -> str:
    return os.path.join(SHARDS, f"b{batch:06d}.p{process}.npz")


def _ours(name: str) -> bool:
    return (
        name in (RUN_FILE, SHARDS, VIEWS)
        or (name.startswith("index.p") and name.endswith(".jsonl"))
        or name.startswith(".tmp-")
    )


# The names jaxplain writes inside shards/ and views/ (jaxplain explain and show draw there).
_OWN_INSIDE = {
    SHARDS: re.compile(r"b\d{6}\.p\d+\.npz|\.tmp-.*"),
    VIEWS: re.compile(r"(attributions|example-[-\w]+)\.(png|html)"),
}


def _foreign(out: str, entries: list[str]) -> list[str]:
    """The entries of a run folder that jaxplain did not write (what `overwrite` must keep)."""
    found = []
    for entry in entries:
        path = os.path.join(out, entry)
        folder = entry in _OWN_INSIDE
        if not _ours(entry) or os.path.isdir(path) != folder:
            found.append(entry)
        elif folder:  # a folder of ours may still hold a file (or a folder) of the user's
            found += [
                os.path.join(entry, name)
                for name in os.listdir(path)
                if not _OWN_INSIDE[entry].fullmatch(name) or not os.path.isfile(os.path.join(path, name))
            ]
    return found


def _read_run(out: str) -> dict:
    path = os.path.join(out, RUN_FILE)
    try:
        with open(path) as f:
            run = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OutputFolderError(
            f"out: {path} is corrupt ({error}); it is not overwritten: move it away or choose another folder"
        ) from None
    if not isinstance(run, dict) or run.get("format") != FORMAT or "fingerprint" not in run:
        raise OutputFolderError(f"out: {path} does not describe jaxplain attributions; choose another folder")
    if run.get("format_version", 0) > FORMAT_VERSION:
        raise OutputFolderError(
            f"out: {path} has format version {run['format_version']}; upgrade jaxplain to read it"
        )
    return run


def _read_index(out: str, process: int, *, verify: bool = True) -> tuple[dict[int, dict], dict | None, bool]:
    """(finished batches, the end record or None, whether the last line was torn)."""
    path = _index_path(out, process)
    if not os.path.exists(path):
        return {}, None, False
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    torn = lines[-1] != b""  # a whole index ends with a newline; a kill mid-append leaves a partial line
    lines = lines[:-1]
    batches, end = {}, None
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if "end" in record:
                end = record
                continue
            batch = int(record["batch"])
            file, sha = record["file"], record["sha256"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            raise OutputFolderError(
                f"out: {path} line {number} is corrupt; the folder is not overwritten"
            ) from None
        shard = os.path.join(out, file)
        if not os.path.isfile(shard):
            raise OutputFolderError(
                f"out: {shard} is listed in {path} but missing; the folder is incomplete and is not overwritten"
            )
        if verify and file_sha256(shard) != sha:
            raise OutputFolderError(
                f"out: {shard} does not match its checksum in {path}: the file is corrupt"
            )
        batches[batch] = record
    return batches, end, torn


def _check_folder(out: str, run: dict, *, overwrite: bool) -> dict | None:
    """Checks that `out` is absent, empty, or holds this run (writes nothing); its run.json or None."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputFolderError(f"out: {out} exists and is not a folder")
    entries = os.listdir(out) if os.path.isdir(out) else []
    if entries and RUN_FILE not in entries:
        raise OutputFolderError(
            f"out: {out} is not empty and holds no {RUN_FILE}: it is not a jaxplain attributions folder; "
            "choose another folder (nothing was written)"
        )
    stored = _read_run(out) if entries else None
    if stored is not None and stored["fingerprint"] != run["fingerprint"]:
        if not overwrite:
            differ = _differences(stored.get("settings", {}), run["settings"])
            raise OutputFolderError(
                f"out: {out} holds another run ({stored.get('method')}; stored -> now: {'; '.join(differ[:4]) or '?'}); "
                "choose another folder, or pass overwrite=True to replace it"
            )
    if stored is not None and overwrite and stored["fingerprint"] != run["fingerprint"]:
        foreign = _foreign(out, entries)
        if foreign:
            raise OutputFolderError(
                f"out: {out} also holds files jaxplain did not write ({', '.join(sorted(foreign)[:3])}); not overwriting it"
            )
    return stored


def _create_folder(out: str, run: dict, stored: dict | None) -> dict | None:
    """Makes `out` hold this run: replaces another run's files (checked by `_check_folder`).

    A folder that holds this run already is left as it is: the data are checked against
    it first (`explain_dataset`); its temporary files and a torn index line are removed
    only once they pass."""
    if stored is not None and stored["fingerprint"] != run["fingerprint"]:
        for entry in os.listdir(out):
            path = os.path.join(out, entry)
            if os.path.isdir(path):
                for name in os.listdir(path):
                    os.remove(os.path.join(path, name))
                os.rmdir(path)
            else:
                os.remove(path)
        stored = None
    os.makedirs(os.path.join(out, SHARDS), exist_ok=True)
    if stored is None and jax.process_index() == 0:
        write_atomic(os.path.join(out, RUN_FILE), text=json.dumps(run, indent=2) + "\n")
    return stored


def _remove_temporary(out: str) -> None:
    """Removes the temporary files of writes that were cut short (process 0, before any writes)."""
    for folder in (out, os.path.join(out, SHARDS)):
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                os.remove(os.path.join(folder, name))


def _drop_torn_line(path: str) -> None:
    """Drops a partial last line of an index (a kill mid-append) before appending after it."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    write_atomic(path, text=b"".join(line + b"\n" for line in lines).decode())


def _all_processes(ok: bool) -> bool:
    """Whether `ok` holds on every process (a collective in a multi-process run)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(np.int32(ok)).min())


def _prepare_shared_folder(out: str, run: dict, *, overwrite: bool, check: Callable[[], None]) -> None:
    """Prepares `out` for all processes: `_check_folder`, then `check()` (which traces the
    method, so that a bad setting fails before anything is written), then `_create_folder`.
    Process 0 checks, cleans and creates the
    (shared) folder alone, then the others check that it holds their run. A failure on
    any process is raised on every process, so that none waits forever in a collective."""
    if jax.process_count() == 1:
        stored = _check_folder(out, run, overwrite=overwrite)
        check()
        _create_folder(out, run, stored)
        return
    error: BaseException | None = None
    if jax.process_index() == 0:
        try:
            stored = _check_folder(out, run, overwrite=overwrite)
            check()
            _create_folder(out, run, stored)
        except Exception as caught:  # noqa: BLE001 - raised below, after the other processes know
            error = caught
    if not _all_processes(error is None):
        raise (
            error
            if error is not None
            else OutputFolderError(f"out: process 0 could not prepare {out}; see its error")
        )
    if jax.process_index() != 0:
        try:
            stored = _read_run(out) if os.path.isfile(os.path.join(out, RUN_FILE)) else None
            if stored is None or stored["fingerprint"] != run["fingerprint"]:
                differ = _differences((stored or {}).get("settings", {}), run["settings"])
                raise OutputFolderError(
                    f"out: {out} (prepared by process 0) holds another run than process {jax.process_index()}'s "
                    f"({'; '.join(differ[:4]) or 'no run.json'}): every process must make the same call"
                )
        except Exception as caught:  # noqa: BLE001
            error = caught
    if not _all_processes(error is None):
        raise (
            error
            if error is not None
            else OutputFolderError(
                f"out: another process found that {out} does not hold its run; see its error"
            )
        )


def _differences(stored, now, prefix: str = "") -> list[str]:
    """'name: old -> new' for every setting that differs (nested dicts by dotted name)."""
    if isinstance(stored, dict) and isinstance(now, dict):
        found = []
        for name in sorted(set(stored) | set(now), key=str):
            found += _differences(stored.get(name), now.get(name), f"{prefix}{name}.")
        return found
    if stored == now:
        return []
    short = lambda v: json.dumps(v) if len(json.dumps(v)) < 40 else json.dumps(v)[:37] + "..."  # noqa: E731
    return [f"{prefix[:-1]}: {short(stored)} -> {short(now)}"]


def _append(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- index


class _ShardIndex:
    """`explain_dataset`'s index (`jaxplain._batches.Index`) of one process: the lines of
    index.p<P>.jsonl and the shards they list.

    A line per finished batch: its number, first example and rows (of this process's
    block), its shard and the shard's SHA-256, and digests of the block's inputs and
    labels, by which a resumed call checks that it was given the same data (`check`);
    then an end line once the run has reached the end of its data (`close`). `write`
    writes a shard atomically and only then appends its line, flushed to disk, so the
    index lists only whole shards. A line torn by a kill mid-append is dropped (`repair`)
    before anything is appended after it.
    """

    def __init__(self, out: str, process: int, *, processes: int, batch_size: int):
        self.out, self.process, self.batch_size = out, process, batch_size
        self.path = _index_path(out, process)
        local = batch_size // processes
        self.mine = slice(process * local, (process + 1) * local)  # this process's rows of a batch
        self.batches, self.end, self.torn = _read_index(out, process)

    def finished(self) -> set:
        return set(self.batches)

    def keep(self, agreed: set) -> None:
        """Forgets the batches some other process lacks: they are computed again."""
        self.batches = {b: r for b, r in self.batches.items() if b in agreed}

    def examples(self) -> int:
        """The examples of the finished batches (this process's blocks)."""
        return sum(r["rows"] for r in self.batches.values())

    def _facts(self, batch: Batch) -> dict:
        """What a line records of the data of this process's block of `batch`."""
        block = lambda rows: _pad(np.asarray(rows), self.batch_size)[self.mine]  # noqa: E731
        return {
            "start": batch.start,
            "rows": len(range(batch.start, batch.start + len(batch.x))[self.mine]),
            "inputs_sha256": digest(block(batch.x)),
            "labels_sha256": None if batch.y is None else digest(block(batch.y)),
        }

    def check(self, batch: Batch) -> None:
        """Refuses data that differ from those the finished `batch` was computed from."""
        record, now = self.batches[batch.number], self._facts(batch)
        if (record["start"], record["rows"]) != (now["start"], now["rows"]):
            differs = (
                f"holds {record['rows']} examples from example {record['start']} on, the data given now "
                f"{now['rows']} from {now['start']}"
            )
        elif record["inputs_sha256"] != now["inputs_sha256"]:
            differs = "was computed from other inputs than the data given now"
        elif (
            "labels_sha256" in record and record["labels_sha256"] != now["labels_sha256"]
        ):  # older lines lack it
            differs = "was computed with other labels than the data given now have"
        else:
            return
        raise OutputFolderError(
            f"out: batch {batch.number} of {self.out} {differs}: the data changed since the run; "
            "choose another folder (nothing was written)"
        )

    def repair(self) -> None:
        if self.torn:
            _drop_torn_line(self.path)
            self.torn = False

    def write(self, batch: Batch, arrays) -> None:
        file = _shard_name(batch.number, self.process)
        write_atomic(os.path.join(self.out, file), **arrays)
        _append(
            self.path,
            {
                "batch": batch.number,
                "file": file,
                "sha256": file_sha256(os.path.join(self.out, file)),
                **self._facts(batch),
            },
        )

    def close(self, num_examples: int, num_batches: int) -> None:
        _append(self.path, {"end": True, "num_examples": num_examples, "num_batches": num_batches})


# --------------------------------------------------------------------------- running


def _agree(finished: set) -> set:
    """The batches every process has finished (itself in a single-process run)."""
    if jax.process_count() == 1:
        return finished
    from jax.experimental import multihost_utils

    top = int(multihost_utils.process_allgather(np.int64(max(finished, default=-1))).max())
    mask = np.zeros(top + 1, np.int32)
    mask[sorted(finished)] = 1
    return {int(i) for i in np.flatnonzero(multihost_utils.process_allgather(mask).min(axis=0))}


def _default_mesh():
    return jax.sharding.Mesh(np.asarray(jax.devices()), ("batch",))


def explain_dataset(
    method,
    model: Model,
    data,
    *,
    out: str,
    target="predicted",
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    labels=None,
    num_examples: int | None = None,
    input_key: str | None = None,
    label_key: str = "label",
    overwrite: bool = False,
    progress: bool = True,
    metadata: dict | None = None,
    label: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    **options,
) -> RunSummary:
    """Explains a whole dataset, batch by batch, sharded over a mesh; resumable.

    Args:
      method: a jaxplain method or its name (`"integrated_gradients"`); a noise
        method takes the method it wraps as `wrap="saliency"`. Any callable
        `method(model, x, *, target, **options) -> Attribution` works too.
      model: the `jaxplain.Model` to explain.
      data: an array of inputs; an `(inputs, labels)` pair; a dict of arrays
        (`{"image": ..., "label": ...}`); an iterable of batches of any size (arrays,
        pairs or dicts); a `tf.data.Dataset` of batches; or a random-access source of
        single examples (anything with `__len__` and `__getitem__` or `__getitems__`),
        such as TFDS's `tfds.data_source(name, split=...)` or a `grain.MapDataset`.
        Anything with a length and indexing is taken as single examples, so a batched
        grain `MapDataset` goes in as an iterable of batches:
        `dataset.batch(n).to_iter_dataset()`, or a `grain.DataLoader`.
      out: the output folder (created; an existing one must hold this same run, on the same
        data: a refused call writes nothing).
      target: "predicted", "label" (the data's labels), an int, or `jaxplain.top_k(k)`.
      batch_size: examples per global batch, a multiple of the mesh's devices
        (default 16 per device). It is part of the run: a randomized method's answer
        depends on it.
      mesh: a `jax.sharding.Mesh`; the batch is split over all its axes. Default: all
        devices (of all processes) on one axis. The mesh is not part of the run: a run
        may be resumed on other devices and gives the same answer.
      labels: labels for the examples when `data` does not carry them.
      num_examples: the dataset's length, for the progress bar, when `data` is a
        stream without one.
      input_key, label_key: the dict keys of inputs and labels in dict batches.
      overwrite: replace an output folder that holds another jaxplain run (a foreign
        or corrupt folder is never replaced).
      progress: show a progress bar (examples/s, ETA).
      metadata: JSON-able facts to record in run.json (e.g. where the model came from).
      label: the method's name in the progress bar and in run.json (default: its
        registered name, or the callable's qualified name).
      model_kwargs: per-example arguments of the model that are not attributed (e.g.
        `{"lengths": lengths}`), each an array with one row per example of `data`, in
        its order, like `labels=`; each batch passes its rows to the method's
        `model_kwargs` (see `jaxplain.methods.arguments`).
      **options: the method's settings (`steps=`, `key=`, `background=`, ...). Float
        arrays are passed to the compiled program as arguments; other values are fixed
        in it. A `key` is folded in with the batch number.

    Returns:
      A `RunSummary`; read the attributions with `load_attributions(out)`.
    """
    started = time.perf_counter()
    plan = _plan(
        method,
        model,
        data,
        out=out,
        target=target,
        batch_size=batch_size,
        mesh=mesh,
        labels=labels,
        num_examples=num_examples,
        input_key=input_key,
        label_key=label_key,
        overwrite=overwrite,
        metadata=metadata,
        label=label,
        options=options,
        model_kwargs=model_kwargs,
    )
    computed = _batches.run(
        plan.remaining,
        plan.compute,
        plan.index,
        total=plan.data.length,
        done=plan.index.examples(),
        description=plan.label,
        progress=progress,
    )
    return _finish(plan, computed, time.perf_counter() - started)


@dataclasses.dataclass
class _Plan:
    """What `explain_dataset` decided before its first write.

    Attributes:
      out: the output folder, prepared (a new run's folder made, run.json written).
      label: the method's name on the bar.
      data: the data, read up to the last finished batch.
      index: this process's index, holding the finished batches every process agrees on.
      remaining: the batches to compute: those held back while the data were checked,
        then the rest of the data (each checked as it is read).
      compute: one batch's arrays, this process's block of them.
    """

    out: str
    label: str
    data: _Data
    index: _ShardIndex
    remaining: Iterator[Batch]
    compute: Callable[[Batch], dict[str, np.ndarray]]


def _plan(
    method,
    model,
    data,
    *,
    out,
    target,
    batch_size,
    mesh,
    labels,
    num_examples,
    input_key,
    label_key,
    overwrite,
    metadata,
    label,
    options,
    model_kwargs=None,
) -> _Plan:
    """Checks every argument and the data given against the folder, before the first write.

    In order: the arguments; the data's first batch (shape, NaN, labels, the target);
    the run's record (run.json), which metadata must fit; the method traced on the first
    batch's shapes; the folder (absent, empty, or this run; another run only with
    `overwrite`), made for a new run; the finished batches, each compared with the data
    given now (`_resume`). A refused call leaves the folder as it was.
    """
    options = options_of(method, options)  # a noise method's wrap= is its method option
    function, name = _method(method, options)
    label = name if label is None else str(label)
    out = output_path("out", out, error=OutputFolderError)
    _checks.check_model(model)
    mesh = _default_mesh() if mesh is None else mesh
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    devices = int(mesh.devices.size)
    batch_size = 16 * devices if batch_size is None else _checks.positive_int("batch_size", batch_size)
    if batch_size % devices:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the mesh's {devices} devices")
    key = options.pop("key", None)
    if key is not None:
        key = _checks.key(key)
    if num_examples is not None:  # 0 or less wrote a run without complaint
        num_examples = _checks.positive_int("num_examples", num_examples)

    data = _Data(data, labels, batch_size, input_key, label_key, num_examples)
    rows_of = _model_kwargs(
        model_kwargs, data.length if data.known is not None or labels is not None else None
    )
    first = data.first
    target = data.target = _target(target, first.y is not None)
    if name in METHODS:  # a callable of the caller's own checks its inputs itself
        first_rows = rows_of(first, len(first.x))
        checked = (
            model if first_rows is None else arguments.bind(model, {k: v[:1] for k, v in first_rows.items()})
        )
        _checks.check_x(checked, first.x[:1], integer_ids=np.issubdtype(first.x.dtype, np.integer))
    first = data.labelled(first)
    recorded = options if model_kwargs is None else {**options, "model_kwargs": model_kwargs}
    run = _run_record(name, label, recorded, key, model, target, batch_size, first.x, metadata)
    step = _step(function, model, mesh, target, options, batch_size)

    def check():  # trace the method on the first batch's shapes
        step.check(
            _pad(first.x, batch_size),
            None if first.y is None else _pad(np.asarray(first.y), batch_size),
            None if key is None else jax.random.fold_in(key, 0),
            rows_of(first, batch_size),
        )

    _prepare_shared_folder(out, run, overwrite=overwrite, check=check)
    processes, process = jax.process_count(), jax.process_index()
    index = _ShardIndex(out, process, processes=processes, batch_size=batch_size)
    remaining = _resume(out, index, data)
    mine = index.mine

    def compute(batch: Batch) -> dict[str, np.ndarray]:
        result = step(
            _pad(batch.x, batch_size),
            None if batch.y is None else _pad(batch.y, batch_size),
            None if key is None else jax.random.fold_in(key, batch.number),
            rows_of(batch, batch_size),
        )
        # A process whose block of the last batch is all padding writes an empty shard,
        # so that the batch reads as finished for it too.
        arrays = {k: v[: len(range(len(batch.x))[mine])] for k, v in result.items()}
        arrays["index"] = np.arange(batch.start, batch.start + len(batch.x))[mine]
        if batch.y is not None:
            arrays["labels"] = np.asarray(batch.y)[mine]
        return arrays

    return _Plan(out, label, data, index, remaining, compute)


def _model_kwargs(model_kwargs, length: int | None) -> Callable:
    """`rows_of(batch, size)`: a batch's rows of `model_kwargs`, padded to `size` (or None)."""
    if model_kwargs is None:
        return lambda batch, size: None
    arrays = {}
    for name, value in arguments.named(model_kwargs).items():
        value = np.asarray(value)
        if value.ndim == 0 or (length is not None and len(value) != length):
            raise ValueError(
                f"model_kwargs[{name!r}] has shape {value.shape}: it needs one row per example of data"
                + ("" if length is None else f" ({length})")
            )
        arrays[name] = value

    def rows_of(batch: Batch, size: int) -> dict:
        rows = {name: value[batch.start : batch.start + len(batch.x)] for name, value in arrays.items()}
        for name, value in rows.items():
            if len(value) < len(batch.x):
                raise ValueError(
                    f"model_kwargs[{name!r}] has {len(arrays[name])} rows but data has more examples"
                )
        return {name: _pad(value, size) for name, value in rows.items()}

    return rows_of


def _run_record(name, label, options, key, model, target, batch_size, x, metadata) -> dict:
    """run.json: the settings the answer depends on, their digest, and what is recorded."""
    settings = {
        "method": name,
        "options": _describe(options),
        "key": _describe(key),
        "model": model_digest(model),
        "output": _describe(model.output),
        "target": target if not isinstance(target, TopK) else f"top_k({target.k})",
        "batch_size": batch_size,
        "example_shape": list(x.shape[1:]),
        "example_dtype": str(x.dtype),
        "processes": jax.process_count(),
    }
    run = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": digest(settings),
        "method": label,
        "settings": settings,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jaxplain_version": _version(),
        "metadata": metadata or {},
    }
    if not isinstance(run["metadata"], Mapping):
        raise TypeError(f"metadata must be a dict of JSON values, got {type(metadata).__name__}")
    try:  # run.json is written after the folder is made: what it cannot hold must fail before
        json.dumps(run)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"metadata must be a dict of JSON values (str, numbers, lists, dicts): {error}"
        ) from None
    return run


class _Data:
    """The data given to `explain_dataset` as numbered batches of `batch_size` examples.

    Each batch gets its labels (from the data or `labels=`) and is checked as it is read:
    an array given whole is checked whole before anything is written; a stream's later
    batch can only be checked when it comes (a bad one stops the run, which stays
    resumable). `seen` is the last batch read and the examples up to its end.
    """

    def __init__(self, data, labels, batch_size: int, input_key, label_key, num_examples):
        chunks, length = _stream(data, input_key, label_key)
        self.known = length  # the data's own length, when it has one (num_examples is only a hint)
        if labels is not None:
            labels = np.asarray(labels)
            length = len(labels) if length is None else length
            if length != len(labels):
                raise ValueError(f"labels has {len(labels)} entries but data has {length} examples")
        self.labels = labels
        self.length = length if length is not None else num_examples
        self._rest = _rebatch(chunks, batch_size)
        try:
            start, x, y = next(self._rest)
        except StopIteration:
            raise ValueError("data holds no examples") from None
        self.first = Batch(0, start, x, y if labels is None else labels[: len(x)])
        self.target = None
        self.seen = (-1, 0)

    def labelled(self, batch: Batch) -> Batch:
        """A batch with its labels (those of `labels=` if given), checked before it is used."""
        y = batch.y
        if self.labels is not None:
            y = self.labels[batch.start : batch.start + len(batch.x)]
            if len(y) < len(batch.x):
                raise ValueError(f"labels has {len(self.labels)} entries but data has more examples")
        if self.target == "label" and y is None:
            raise ValueError(
                f"data: the batch from example {batch.start} on has no labels, and target='label'"
            )
        return batch._replace(y=y)

    def __iter__(self) -> Iterator[Batch]:
        """Every batch from the first, each labelled and checked when it is read."""
        for number, (start, x, y) in enumerate(itertools.chain([self.first[1:]], self._rest)):
            batch = self.labelled(Batch(number, start, x, y))
            self.seen = (number, start + len(x))
            yield batch


def _resume(out: str, index: _ShardIndex, data: _Data) -> Iterator[Batch]:
    """The batches still to compute, once the data given now match the finished ones.

    Every check of the data against the folder runs before the first write, so that a
    refused call leaves the folder as it was: the data are read up to the last finished
    batch (for a finished run, to their end), each finished batch is compared with them,
    and the batches still to compute on the way are held back until then. Every process
    learns of any process's refusal. Then process 0 removes the temporary files of writes
    cut short, and a torn last line of the index is dropped.
    """
    index.keep(_agree(index.finished()))  # collective in a multi-process run: every process calls it once
    end, finished = index.end, index.batches
    batches = iter(data)
    error: BaseException | None = None
    pending: list[Batch] = []
    try:
        if end is not None and data.known is not None and data.known != end["num_examples"]:
            raise _other_length(out, end, str(data.known))
        last = max(finished, default=-1)
        for batch in batches:
            if batch.number in finished:
                index.check(batch)
            elif end is not None and batch.number >= end["num_batches"]:
                raise _other_length(out, end, f"more than {end['num_examples']}")
            else:
                pending.append(batch)
            if end is None and batch.number >= last:
                break
        else:  # the data ended before anything was computed: they must hold every finished batch
            number, count = data.seen
            if end is not None and (end["num_examples"], end["num_batches"]) != (count, number + 1):
                raise _other_length(out, end, str(count))
            if last > number:
                raise OutputFolderError(
                    f"out: {out} holds batch {last} (from example {finished[last]['start']} on) but the data given "
                    f"now have {count} examples: the data changed since the run; choose another folder "
                    "(nothing was written)"
                )
    except Exception as caught:  # noqa: BLE001 - raised below, once every process knows
        error = caught
    if error is None and jax.process_index() == 0:
        _remove_temporary(out)  # before the collective: no process writes before it
    if not _all_processes(error is None):
        raise (
            error
            if error is not None
            else OutputFolderError(
                f"out: another process found that the data given now do not match {out}; see its error"
            )
        )
    index.repair()
    return itertools.chain(pending, batches)


def _finish(plan: _Plan, computed: list[int], seconds: float) -> RunSummary:
    """Closes the index with an end line once the data ran out (the first time), and sums up."""
    number, count = plan.data.seen
    total_batches = number + 1
    if plan.index.end is None:
        labels = plan.data.labels
        if labels is not None and count != len(
            labels
        ):  # a stream shorter than labels=: nothing claims an end
            raise ValueError(f"labels has {len(labels)} entries but data has {count} examples")
        plan.index.close(count, total_batches)
    return RunSummary(plan.out, count, total_batches, tuple(computed), total_batches - len(computed), seconds)


def _other_length(out: str, end: dict, now: str) -> OutputFolderError:
    return OutputFolderError(
        f"out: {out} holds a finished run of {end['num_examples']} examples, the data given now have {now}: "
        "the data changed since the run; choose another folder (nothing was written)"
    )


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
    """`rows` padded to `size` with copies of its last row (dropped after the run)."""
    if len(rows) == size:
        return rows
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def _step(function, model: Model, mesh, target, options: dict, batch_size: int):
    """One batch: host arrays in, this process's rows of the answer out (numpy)."""
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    spec = PartitionSpec(tuple(mesh.axis_names))
    sharding = NamedSharding(mesh, spec)
    traced = {
        k: v
        for k, v in options.items()
        if isinstance(v, (np.ndarray, jax.Array))
        and jnp.issubdtype(np.asarray(v).dtype if isinstance(v, np.ndarray) else v.dtype, jnp.floating)
    }
    fixed = {k: v for k, v in options.items() if k not in traced}
    several = jax.process_count() > 1

    def body(model, x, y, key, traced, arguments):
        extra = {} if key is None else {"key": key}
        if arguments is not None:
            extra["model_kwargs"] = arguments
        chosen = y if target == "label" else target
        result = function(model, x, target=chosen, **fixed, **traced, **extra)
        fields = {"values": result.values, "target": result.target}
        if result.delta is not None:
            fields["delta"] = result.delta
        if result.relative_delta is not None:
            fields["relative_delta"] = result.relative_delta
        return fields

    compiled = engine.jit(body, model=model, out_shardings=sharding)
    replicated = NamedSharding(mesh, PartitionSpec())

    def to_global(rows):
        if several:
            share = batch_size // jax.process_count()
            mine = rows[jax.process_index() * share : (jax.process_index() + 1) * share]
            return multihost_utils.host_local_array_to_global_array(mine, mesh, spec)
        return jax.device_put(rows, sharding)

    def to_host(array):
        if several:
            array = multihost_utils.global_array_to_host_local_array(array, mesh, spec)
        return np.asarray(array)

    constants = jax.device_put(traced, replicated)

    def run(x, y, key, arguments=None):
        fields = compiled(
            model,
            to_global(x),
            None if y is None else to_global(y.astype(np.int32)),
            key,
            constants,
            None if arguments is None else {k: to_global(v) for k, v in arguments.items()},
        )
        return {k: to_host(v) for k, v in fields.items()}

    def check(x, y, key, arguments=None):
        shape = lambda a: None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
        jax.eval_shape(
            body,
            model,
            shape(x),
            shape(None if y is None else y.astype(np.int32)),
            key,
            constants,
            None if arguments is None else {k: shape(v) for k, v in arguments.items()},
        )

    run.check = check
    return run


def _version() -> str:
    from jaxplain import __version__

    return __version__


# --------------------------------------------------------------------------- reading


def load_attributions(
    out: str, *, verify: bool = True, require_complete: bool = False
) -> DatasetAttributions:
    """Reads an output folder of `explain_dataset` back, in dataset order.

    Args:
      out: the folder.
      verify: check every shard against the checksum in the index.
      require_complete: raise if the run has not finished; otherwise an incomplete
        folder is read (what is there) with a warning, and `complete` is False.

    Returns:
      `DatasetAttributions`.

    Raises:
      OutputFolderError: the folder is not a jaxplain attributions folder, or is
        corrupt (a bad index line, a missing or altered shard), or is incomplete and
        `require_complete` is set.
    """
    out = os.fspath(out)
    if not os.path.isfile(os.path.join(out, RUN_FILE)):
        raise OutputFolderError(f"out: {out} holds no {RUN_FILE}: it is not an explain_dataset output folder")
    run = _read_run(out)
    processes = int(run["settings"].get("processes", 1))
    parts, ends, finished = [], [], []
    for process in range(processes):
        batches, end, _ = _read_index(out, process, verify=verify)
        ends.append(end)
        finished.append(set(batches))
        for _, record in sorted(batches.items()):
            with np.load(os.path.join(out, record["file"])) as stored:
                parts.append({k: stored[k] for k in stored.files})
    last = max(set().union(*finished), default=-1)
    finished_batches = set.intersection(*finished)  # a batch is finished when every process wrote its block
    total = None if any(e is None for e in ends) else int(ends[0]["num_batches"])
    expected = range(total if total is not None else last + 1)
    missing = tuple(b for b in expected if b not in finished_batches)
    complete = total is not None and not missing
    if not complete:
        message = (
            f"{out} is incomplete: {len(finished_batches)} batches finished"
            + (f" of {total}" if total is not None else " (the run has not reached the end of the data)")
            + "; run explain_dataset again with the same arguments to finish it"
        )
        if require_complete:
            raise OutputFolderError(message)
        warnings.warn(message, stacklevel=2)
    if not parts:
        empty = np.zeros((0,), np.float32)
        return DatasetAttributions(
            empty,
            np.zeros((0,), np.int32),
            None,
            None,
            None,
            np.zeros((0,), np.int64),
            complete,
            None if total is None else int(ends[0]["num_examples"]),
            missing,
            run,
        )
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")

    def join(name):
        if not all(name in p for p in parts):
            return None
        return np.concatenate([p[name] for p in parts])[order]

    return DatasetAttributions(
        values=join("values"),
        target=join("target"),
        delta=join("delta"),
        relative_delta=join("relative_delta"),
        labels=join("labels"),
        index=index[order],
        complete=complete,
        num_examples=None if total is None else int(ends[0]["num_examples"]),
        missing=missing,
        run=run,
    )
