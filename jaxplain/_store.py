"""What the dataset-scale jobs share: digests of settings, models and data; atomic files.

`jaxplain.runs` (explain_dataset) and `jaxplain.amortized.labels` (make_labels) both name
their work by a hash of everything the answer depends on and write each finished part to
a temporary file that is renamed into place, so a reader sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import jax
import numpy as np


def settings_json(settings: dict) -> dict:
    """Settings as JSON: arrays as nested lists, a PRNG key as {"key_data": [...]}."""
    encoded = {}
    for name, value in settings.items():
        if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = {"key_data": np.asarray(jax.random.key_data(value)).tolist()}
        elif isinstance(value, (np.ndarray, jax.Array)):
            value = np.asarray(value).tolist()
        elif isinstance(value, (np.integer, np.floating)):
            value = value.item()
        encoded[name] = value
    return encoded


def digest(*parts) -> str:
    """SHA-256 (hex) of arrays (shape, dtype and bytes) and JSON-able values, in order."""
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            sha.update(repr((part.shape, str(part.dtype))).encode())
            sha.update(np.ascontiguousarray(part).tobytes())
        else:
            sha.update(json.dumps(part, sort_keys=True, default=repr).encode())
    return sha.hexdigest()


def model_digest(model) -> str:
    """SHA-256 of a model's parameters, apply function and output selection."""
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(model.params)]
    return digest(repr(model.apply_fn), model.output, *leaves)


def file_sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def write_atomic(path: str, *, text: str | None = None, **arrays) -> None:
    """Writes `text`, or `arrays` as an .npz, to `path` through a temporary file and a rename.

    The data are flushed to disk before the rename, so that a crash (even SIGKILL or a
    power cut) leaves the old file, or the new one, never a torn one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, staging = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            if text is not None:
                f.write(text.encode())
            else:
                np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
