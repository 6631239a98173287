"""What the dataset-scale jobs share: digests of settings, models and data; atomic files.

`jaxplain.runs` (explain_dataset) and `jaxplain.amortized.labels` (make_labels) both name
their work by a hash of everything the answer depends on and write each finished part to
a temporary file that is renamed into place, so a reader sees a whole file or none.
Temporary files and folders are made with the permissions of the user's umask (as `open`
and `os.mkdir` make them: 0644 and 0755 under umask 022), not tempfile's private 0600 /
0700, so that what is renamed into place is as readable as any file the user writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets

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
    power cut) leaves the old file, or the new one, never a torn one. The file gets the
    permissions of the user's umask.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, staging = _new_file(folder, ".tmp-", os.path.splitext(path)[1])
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


def make_folder(parent: str, prefix: str) -> str:
    """Creates a new empty folder with a unique name in `parent`; returns its path.

    Like `tempfile.mkdtemp`, but the folder gets the permissions of the user's umask
    (`os.mkdir`'s 0777 masked), as it is meant to be renamed into place and kept.
    """
    for _ in range(100):
        path = os.path.join(parent, prefix + secrets.token_hex(8))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"cannot create a folder named {prefix}* in {parent}: every name tried exists")


def _new_file(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """`(descriptor, path)` of a new file open for writing, with the umask's permissions."""
    for _ in range(100):
        path = os.path.join(folder, prefix + secrets.token_hex(8) + suffix)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(
        f"cannot create a file named {prefix}*{suffix} in {folder}: every name tried exists"
    )


def output_path(name: str, path, *, folder: bool = True, error: type = ValueError) -> str:
    """`path` as a str, checked as a place to write a folder (or a file) before anything is.

    Refused with `error` (a message that names `name`): an empty or blank path (which
    would write into the current directory), a NUL byte, an existing file where a folder
    is wanted (or a folder where a file is), a path below a file, and a path still to be
    created whose nearest existing folder cannot be written (a read-only file system, no
    permission). An existing folder's own permission is left to the caller: reading back
    a finished run needs none.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not path.strip():
        raise error(f"{name} is empty: give the path of the {'folder' if folder else 'file'} to write")
    if "\0" in path:
        raise error(f"{name} {path!r} holds a NUL character")
    if os.path.exists(path):
        if folder and not os.path.isdir(path):
            raise error(f"{name}: {path} exists and is not a folder")
        if not folder and os.path.isdir(path):
            raise error(f"{name}: {path} is a folder, not a file")
        if folder:
            return path
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise error(f"{name}: cannot create {path}: {ancestor} is a file, not a folder")
    if not os.path.exists(path) and not os.access(ancestor, os.W_OK | os.X_OK):
        raise error(f"{name}: cannot create {path}: {ancestor} is not writable (read-only or no permission)")
    return path
