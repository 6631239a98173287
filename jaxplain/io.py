"""Checkpoints: a model's variables plus a JSON file that says how to rebuild it.

A checkpoint is a folder with two files:

  variables.msgpack   the Linen variables (params, batch_stats), Flax msgpack
  metadata.json       format, architecture name and config, input shape and dtype,
                      number of classes, dataset, test accuracy, the command that made
                      it, the SHA-256 of variables.msgpack, the parameter count

`save_checkpoint` writes both into a temporary folder and renames it into place, so a
crash never leaves a half-written checkpoint. `load_model(path)` rebuilds the
architecture from `jaxplain.models`, checks the stored variables against it (structure,
shapes, dtypes, checksum) and returns a ready `jaxplain.Model`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxplain._store import file_sha256, output_path
from jaxplain.model import Model

FORMAT = "jaxplain.checkpoint"
FORMAT_VERSION = 1
VARIABLES_FILE = "variables.msgpack"
METADATA_FILE = "metadata.json"


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, or does not match the architecture it names."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the Linen module, its variables and the metadata."""

    module: nn.Module
    variables: dict[str, Any]
    metadata: dict[str, Any]

    def model(self, *, output: str = "logits", method=None) -> Model:
        """The checkpoint as a `jaxplain.Model` (evaluation mode)."""
        return Model.from_linen(self.module, self.variables, method=method, output=output)


def _encode(value):
    """Config values as JSON: functions by name, tuples as lists."""
    if callable(value):
        name = getattr(value, "__name__", "")
        if _known_function(name) is not value:
            raise TypeError(
                f"config value {value!r} is a function jaxplain cannot name; use one from "
                "flax.linen or jax.nn"
            )
        return {"function": name}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _decode(value):
    if isinstance(value, dict) and set(value) == {"function"}:
        return _function(value["function"])
    if isinstance(value, list):
        return tuple(_decode(item) for item in value)  # Linen fields must be hashable
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    return value


def _known_function(name: str):
    for namespace in (nn, jax.nn, jnp):
        if name.isidentifier() and hasattr(namespace, name):
            return getattr(namespace, name)
    return None


def _function(name: str):
    function = _known_function(name)
    if function is None:
        raise CheckpointError(f"unknown function {name!r} in the checkpoint's config")
    return function


def _leaves(tree) -> dict[str, Any]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join(str(getattr(k, "key", k)) for k in path)] = leaf
    return flat


def save_checkpoint(
    path: str,
    *,
    architecture: str,
    config: dict[str, Any],
    variables,
    input_shape,
    input_dtype: str = "float32",
    **metadata,
) -> str:
    """Writes a checkpoint folder atomically; returns its path.

    Args:
      path: the folder to create (replaced if it is a jaxplain checkpoint already).
      architecture: a name from `jaxplain.models.ARCHITECTURES`.
      config: the keyword arguments that build the architecture.
      variables: the module's variables.
      input_shape: the shape of one example (no batch axis).
      input_dtype: the dtype the model takes ("float32", or "int32" for token ids).
      **metadata: anything else to record: dataset, test_accuracy, command, ...

    Returns:
      `path`.
    """
    from jaxplain.models import build

    build(architecture, **_decode(_encode(config)))  # an unknown architecture fails here
    try:  # checked here, so that nothing unreadable is written
        shape = list(input_shape)
    except TypeError:
        shape = None
    if shape is None or not all(_is_int(d) and d >= 1 for d in shape):
        raise ValueError(
            f"input_shape must be a tuple of positive integers (one example, no batch axis), "
            f"got {input_shape!r}"
        )
    state = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(variables))
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "config": _encode(config),
        "input_shape": [int(d) for d in shape],
        "input_dtype": str(np.dtype(input_dtype)),
        "parameter_count": int(
            sum(np.size(x) for x in jax.tree_util.tree_leaves(state.get("params", state)))
        ),
    }
    return write_folder(path, state, record, _encode(metadata))


def write_folder(path: str, state, record: dict, extra: dict) -> str:
    """Writes `state` (a state dict of numpy arrays) and its metadata to the folder `path`.

    The metadata is `record`, then the checksum, creation time and jaxplain version, then
    `extra` (whose keys must not repeat any of those). Everything is written to a
    temporary folder beside `path` and renamed into place, so a reader sees the old
    checkpoint or the new one, never half of one. An existing folder is replaced only if
    it is empty or a jaxplain checkpoint holding nothing but its two files
    (`check_destination`, before anything is written).
    """
    path = check_destination(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".checkpoint-", dir=parent)
    try:
        variables_path = os.path.join(staging, VARIABLES_FILE)
        with open(variables_path, "wb") as f:
            f.write(serialization.msgpack_serialize(state))
        record = {
            **record,
            "sha256": file_sha256(variables_path),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jaxplain_version": _version(),
        }
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump({**record, **{k: v for k, v in extra.items() if k not in record}}, f, indent=2)
            f.write("\n")
        if os.path.exists(path):  # the old folder is set aside, not deleted, until the new one is in place
            aside = tempfile.mkdtemp(prefix=".checkpoint-old-", dir=parent)
            os.replace(path, aside)
            try:
                os.replace(staging, path)
            except BaseException:
                os.replace(aside, path)
                raise
            shutil.rmtree(aside)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def check_destination(path, *, name: str = "path") -> str:
    """`path` checked as a folder `write_folder` may (re)place, before anything is written.

    Accepted: a path to create, an empty folder, or a jaxplain checkpoint that holds
    nothing but its two files. Anything else would lose the user's files and is refused
    (`FileExistsError`); an empty path, a path below a file or in an unwritable folder
    raise `ValueError`. `name` is the argument named in the messages.
    """
    path = output_path(name, path)
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.isfile(os.path.join(path, METADATA_FILE)):
            raise FileExistsError(
                f"{name}: {path} exists and is not a jaxplain checkpoint; not overwriting it"
            )
        foreign = sorted(set(os.listdir(path)) - {METADATA_FILE, VARIABLES_FILE})
        if foreign:
            raise FileExistsError(
                f"{name}: {path} also holds files jaxplain did not write "
                f"({', '.join(foreign[:3])}); not replacing it"
            )
    if os.path.isdir(path):  # replaced by a rename in its parent folder
        parent = os.path.dirname(os.path.abspath(path))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(
                f"{name}: cannot replace {path}: {parent} is not writable (read-only or no permission)"
            )
    return path


def _version() -> str:
    from jaxplain import __version__

    return __version__


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _dtype_name(value) -> bool:
    try:
        return isinstance(value, str) and bool(np.dtype(value).name)
    except TypeError:
        return False


# The fields jaxplain reads back: (required, what they must be, the test). Checked when a
# checkpoint is opened, so that a hand-edited or foreign file fails naming the field,
# not deep inside the model (a ZeroDivisionError for an input_shape of the wrong rank).
_FIELDS = {
    "format_version": (False, "an integer", _is_int),
    "architecture": (True, "a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "config": (True, "a JSON object", lambda v: isinstance(v, dict)),
    "input_shape": (
        True,
        "a list of positive integers (one example, no batch axis)",
        lambda v: isinstance(v, list) and all(_is_int(d) and d >= 1 for d in v),
    ),
    "input_dtype": (False, "a dtype name such as 'float32'", _dtype_name),
    "sha256": (
        True,
        "a SHA-256 digest (64 hex digits)",
        lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None,
    ),
    "num_classes": (False, "a positive integer", lambda v: _is_int(v) and v >= 1),
    "parameter_count": (False, "a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "kind": (False, "a string", lambda v: isinstance(v, str)),
}


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata of the checkpoint at `path`, checked for format and version."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint folder at {path}")
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise FileNotFoundError(f"{metadata_path} is missing: {path} is not a jaxplain checkpoint")
    try:
        with open(metadata_path) as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{metadata_path} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{metadata_path} does not describe a jaxplain checkpoint")
    for key, (required, expected, valid) in _FIELDS.items():
        if key not in metadata:
            if required:
                raise CheckpointError(f"{metadata_path} lacks the field {key!r}")
        elif not valid(metadata[key]):
            raise CheckpointError(f"{metadata_path}: field {key!r} must be {expected}, got {metadata[key]!r}")
        if key == "format_version" and metadata.get(key, 0) > FORMAT_VERSION:
            raise CheckpointError(
                f"{metadata_path} has format version {metadata['format_version']}; this jaxplain "
                f"reads up to {FORMAT_VERSION}: upgrade jaxplain"
            )
    return metadata


def load_checkpoint(path: str) -> Checkpoint:
    """Reads and verifies the checkpoint at `path`.

    Raises:
      FileNotFoundError: the folder or one of its files is missing.
      CheckpointError: a file is corrupt (bad JSON, checksum mismatch, unreadable
        msgpack), or the variables do not match the architecture (the message names
        the file and the first mismatching parameters with both shapes).
    """
    from jaxplain.models import build

    metadata = read_metadata(path)
    variables_path = os.path.join(path, VARIABLES_FILE)
    if not os.path.isfile(variables_path):
        raise FileNotFoundError(f"{variables_path} is missing")
    if file_sha256(variables_path) != metadata["sha256"]:
        raise CheckpointError(
            f"{variables_path} does not match the checksum in {METADATA_FILE}: the file is "
            "corrupt or was replaced"
        )
    try:
        with open(variables_path, "rb") as f:
            stored = serialization.msgpack_restore(f.read())
    except Exception as error:
        raise CheckpointError(f"{variables_path} cannot be read: {error}") from error

    try:
        module = build(metadata["architecture"], **_decode(metadata["config"]))
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{os.path.join(path, METADATA_FILE)}: cannot build architecture "
            f"{metadata['architecture']!r} with config {metadata['config']}: {error}"
        ) from error
    expected = _expected_variables(path, metadata, module)
    _check_match(variables_path, metadata["architecture"], _leaves(expected), _leaves(stored))
    variables = jax.tree_util.tree_map(jnp.asarray, stored)
    return Checkpoint(module, variables, metadata)


def _expected_variables(path: str, metadata: dict, module: nn.Module):
    """The variables (shapes only) `module` makes for one example of the metadata's
    `input_shape` and `input_dtype`; a `CheckpointError` naming the field and the file when
    the architecture cannot take such examples (a wrong rank, say), not the raw error."""
    example = jax.ShapeDtypeStruct((1, *metadata["input_shape"]), metadata.get("input_dtype", "float32"))
    try:
        return jax.eval_shape(
            lambda: module.init(jax.random.PRNGKey(0), jnp.zeros(example.shape, example.dtype))
        )
    except Exception as error:
        raise CheckpointError(
            f"{os.path.join(path, METADATA_FILE)}: field 'input_shape' {metadata['input_shape']} ({example.dtype}) "
            f"does not fit architecture {metadata['architecture']!r}: {type(error).__name__}: {error}"
        ) from error


def _check_match(file: str, architecture: str, expected: dict, stored: dict) -> None:
    problems = [f"missing {key} {tuple(leaf.shape)}" for key, leaf in expected.items() if key not in stored]
    problems += [f"unexpected {key} {np.shape(leaf)}" for key, leaf in stored.items() if key not in expected]
    problems += [
        f"{key}: stored {np.shape(stored[key])} {np.asarray(stored[key]).dtype}, "
        f"architecture needs {tuple(leaf.shape)} {leaf.dtype}"
        for key, leaf in expected.items()
        if key in stored
        and (np.shape(stored[key]) != tuple(leaf.shape) or np.asarray(stored[key]).dtype != leaf.dtype)
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{file} does not match architecture {architecture!r}: " + "; ".join(problems[:5]) + more
        )


def load_model(path: str, *, output: str = "logits", method: str | None = None) -> Model:
    """Loads the checkpoint at `path` as a ready `jaxplain.Model`.

    Args:
      path: a checkpoint folder (see `save_checkpoint`).
      output: "logits", "probs" or "log_probs".
      method: the module method to apply (e.g. "logits_from_embeddings" for a text
        classifier explained on its embeddings); `__call__` by default.

    Example:
      >>> model = jaxplain.load_model("checkpoints/digits_cnn")  # doctest: +SKIP
    """
    return load_checkpoint(path).model(output=output, method=method)
