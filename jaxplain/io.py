"""Checkpoints: a model's variables plus a JSON file that says how to rebuild it.

A jaxplain checkpoint is a folder:

  variables/      the Linen variables (params, batch_stats) as an orbax checkpoint:
                  `orbax.checkpoint.StandardCheckpointer().restore(path + "/variables")`
                  opens it without jaxplain
  metadata.json   format, architecture name and config, input shape and dtype, number
                  of classes, dataset, test accuracy, the command that made it, the
                  SHA-256 of the stored arrays, the parameter count

`save_checkpoint` writes both into a temporary folder and renames it into place, so a
crash never leaves a half-written checkpoint. `load_model(path)` rebuilds the
architecture from `jaxplain.models`, checks the stored variables against it (structure,
shapes and dtypes, before any array is read), restores them and checks their checksum,
and returns a ready `jaxplain.Model`. The checksum is the SHA-256 of every array (its
path, shape, dtype and bytes, in sorted path order), so it is computed from the restored
arrays whatever files orbax wrote. Folders of format 1 (`variables.msgpack`, Flax msgpack,
whose file's SHA-256 is recorded) still load; `convert_checkpoint` (or `python -m
jaxplain.io convert PATH`) rewrites one in the current format.

`load_model(path, module=...)` restores a user's own orbax checkpoint (what
`StandardCheckpointer().save(path, variables)` or a `CheckpointManager` wrote) into a
Flax Linen module or an NNX model, checked against the variables the module makes.

The checkpoints shipped with jaxplain live inside the package (`jaxplain/checkpoints`)
and load by name: `load_model("digits_cnn")`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.resources
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxplain._store import digest, file_sha256, make_folder, output_path
from jaxplain.model import Model, evaluation_kwargs

FORMAT = "jaxplain.checkpoint"
FORMAT_VERSION = 2
VARIABLES_FOLDER = "variables"  # format 2: an orbax StandardCheckpointer folder
VARIABLES_FILE = "variables.msgpack"  # format 1
METADATA_FILE = "metadata.json"
PACKAGED = "checkpoints"  # the shipped checkpoints' folder inside the jaxplain package


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, or does not match the architecture or module it is loaded into."""


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


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _leaves(tree) -> dict[str, Any]:
    """`{"params/Dense_0/kernel": leaf, ...}`: a tree's leaves by their "/"-joined path."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join(_key_name(k) for k in path)] = leaf
    return flat


def arrays_sha256(tree) -> str:
    """SHA-256 of a tree's arrays: each leaf's path, shape, dtype and bytes, in sorted path order.

    The checksum of a format-2 checkpoint: it depends on the values only, not on the files
    orbax chose to write them in, so it is checked on the arrays as restored.
    """
    parts = []
    for key, leaf in sorted(_leaves(tree).items()):
        parts += [key, np.asarray(leaf)]
    return digest(*parts)


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

    The variables go to an orbax checkpoint in `path/variables`; the metadata is
    `record` (with the current `format_version`), then the checksum of the arrays, the
    creation time (`record`'s own, when it has one) and jaxplain version, then `extra`
    (whose keys must not repeat any of those). Everything is written to a temporary
    folder beside `path` and renamed into place, so a reader sees the old checkpoint or
    the new one, never half of one. An existing folder is replaced only if it is empty
    or a jaxplain checkpoint holding nothing but its own files (`check_destination`,
    before anything is written). Files and folders get the permissions of the user's
    umask.
    """
    path = check_destination(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = make_folder(parent, ".checkpoint-")
    try:
        _orbax_save(os.path.join(staging, VARIABLES_FOLDER), state)
        record = {
            **record,
            "format_version": FORMAT_VERSION,
            "sha256": arrays_sha256(state),
            "created": record.get("created")
            or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jaxplain_version": _version(),
        }
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump({**record, **{k: v for k, v in extra.items() if k not in record}}, f, indent=2)
            f.write("\n")
        if os.path.exists(path):  # the old folder is set aside, not deleted, until the new one is in place
            aside = make_folder(parent, ".checkpoint-old-")
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


def _orbax():
    import orbax.checkpoint as ocp  # imported when needed: it takes about a second

    return ocp


def _orbax_save(folder: str, state) -> None:
    ocp = _orbax()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(folder), state)
        checkpointer.wait_until_finished()


def check_destination(path, *, name: str = "path") -> str:
    """`path` checked as a folder `write_folder` may (re)place, before anything is written.

    Accepted: a path to create, an empty folder, or a jaxplain checkpoint that holds
    nothing but its own files (metadata.json and variables/, or variables.msgpack in
    format 1). Anything else would lose the user's files and is refused
    (`FileExistsError`); an empty path, a path below a file or in an unwritable folder
    raise `ValueError`. `name` is the argument named in the messages.
    """
    path = output_path(name, path)
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.isfile(os.path.join(path, METADATA_FILE)):
            raise FileExistsError(
                f"{name}: {path} exists and is not a jaxplain checkpoint; not overwriting it"
            )
        foreign = sorted(set(os.listdir(path)) - {METADATA_FILE, VARIABLES_FILE, VARIABLES_FOLDER})
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


def packaged_checkpoints() -> list[str]:
    """The names of the checkpoints shipped inside the jaxplain package."""
    root = importlib.resources.files("jaxplain").joinpath(PACKAGED)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if entry.joinpath(METADATA_FILE).is_file())


def resolve(path, *, name: str = "path") -> str:
    """`path` as a folder to read: the path itself when it exists, else the packaged checkpoint it names.

    A bare name (`"digits_cnn"`), or `"checkpoints/NAME"` as the docs write it, that is
    not a folder here is looked up among the checkpoints shipped in the package, so they
    load after `pip install` from any working directory. Anything else is returned as
    given, for the caller to report missing.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if os.path.exists(path):
        return path
    match = re.fullmatch(rf"(?:{PACKAGED}/)?([A-Za-z0-9_.-]+)/?", path)
    if match and not match.group(1).startswith("."):
        packaged = importlib.resources.files("jaxplain").joinpath(PACKAGED, match.group(1))
        if packaged.joinpath(METADATA_FILE).is_file() and isinstance(packaged, os.PathLike):
            return os.fspath(packaged)
    return path


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata of the checkpoint at `path` (or the packaged one it names), checked for format and version."""
    path = resolve(path)
    if not os.path.isdir(path):
        packaged = ", ".join(packaged_checkpoints())
        raise FileNotFoundError(
            f"no checkpoint folder at {path}" + (f" (packaged checkpoints: {packaged})" if packaged else "")
        )
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise FileNotFoundError(
            f"{metadata_path} is missing: {path} is not a jaxplain checkpoint (an orbax checkpoint "
            "of your own module loads with load_model(path, module=...))"
        )
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
        if key == "format_version" and metadata.get(key, 1) > FORMAT_VERSION:
            raise CheckpointError(
                f"{metadata_path} has format version {metadata['format_version']}; this jaxplain "
                f"reads up to {FORMAT_VERSION}: upgrade jaxplain"
            )
    return metadata


def read_variables(path: str, metadata: dict, expected, *, what: str):
    """The variables stored in the checkpoint folder `path`, checked against `expected`.

    Args:
      path: the checkpoint folder (format 1 or 2, as `metadata` says).
      metadata: its metadata (`read_metadata`).
      expected: the variables the architecture makes (arrays or `jax.ShapeDtypeStruct`s).
      what: what they must match, for the messages (`"architecture 'mlp'"`).

    Returns:
      The stored variables as a nested dict of numpy arrays.

    Raises:
      FileNotFoundError: the variables are missing.
      CheckpointError: they do not match `expected` (the first mismatches named with both
        shapes, before any array is read), cannot be read, or fail the checksum.
    """
    if metadata.get("format_version", 1) < 2:
        return _read_msgpack(path, metadata, expected, what=what)
    folder = os.path.join(path, VARIABLES_FOLDER)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is missing")
    _check_match(folder, what, _leaves(expected), _leaves(_stored_tree(folder)))
    target = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(*_shape_dtype(leaf)), expected)
    stored = _orbax_restore(folder, target)
    if arrays_sha256(stored) != metadata["sha256"]:
        raise CheckpointError(
            f"the arrays in {folder} do not match the checksum in {METADATA_FILE}: the checkpoint is "
            "corrupt or was replaced"
        )
    return stored


def _msgpack_file(path: str, metadata: dict, *, refusal: str) -> str:
    """The variables file of a format-1 checkpoint, once it matches its recorded SHA-256."""
    variables_path = os.path.join(path, VARIABLES_FILE)
    if not os.path.isfile(variables_path):
        raise FileNotFoundError(f"{variables_path} is missing")
    if file_sha256(variables_path) != metadata["sha256"]:
        raise CheckpointError(f"{variables_path} does not match the checksum in {METADATA_FILE}: {refusal}")
    return variables_path


def _read_msgpack(path: str, metadata: dict, expected, *, what: str):
    variables_path = _msgpack_file(path, metadata, refusal="the file is corrupt or was replaced")
    try:
        with open(variables_path, "rb") as f:
            stored = serialization.msgpack_restore(f.read())
    except Exception as error:
        raise CheckpointError(f"{variables_path} cannot be read: {error}") from error
    _check_match(variables_path, what, _leaves(expected), _leaves(stored))
    return stored


def _stored_tree(folder: str):
    """The tree of an orbax checkpoint's array metadata (shapes and dtypes); no array is read."""
    ocp = _orbax()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.metadata(os.path.abspath(folder)).item_metadata.tree
    except Exception as error:
        raise CheckpointError(f"{folder} cannot be read as an orbax checkpoint: {error}") from error
    return tree


def _orbax_restore(folder: str, target):
    """The leaves of `target` (a tree of `jax.ShapeDtypeStruct`) restored from `folder`, as numpy
    arrays; the checkpoint may hold more (an optimizer state beside the parameters)."""
    ocp = _orbax()
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            return checkpointer.restore(
                os.path.abspath(folder),
                args=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                ),
            )
    except Exception as error:
        raise CheckpointError(f"{folder} cannot be read: {type(error).__name__}: {error}") from error


def load_checkpoint(path: str) -> Checkpoint:
    """Reads and verifies the checkpoint at `path` (a folder, or a packaged checkpoint's name).

    Raises:
      FileNotFoundError: the folder or one of its files is missing.
      CheckpointError: a file is corrupt (bad JSON, checksum mismatch, unreadable
        variables), or the variables do not match the architecture (the message names
        the folder and the first mismatching parameters with both shapes).
    """
    from jaxplain.models import build

    path = resolve(path)
    metadata = read_metadata(path)
    try:
        module = build(metadata["architecture"], **_decode(metadata["config"]))
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{os.path.join(path, METADATA_FILE)}: cannot build architecture "
            f"{metadata['architecture']!r} with config {metadata['config']}: {error}"
        ) from error
    expected = _expected_variables(path, metadata, module)
    stored = read_variables(path, metadata, expected, what=f"architecture {metadata['architecture']!r}")
    return Checkpoint(module, jax.tree_util.tree_map(jnp.asarray, stored), metadata)


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


def _shape_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
    """A leaf's shape and dtype (an array, a `ShapeDtypeStruct` or orbax's array metadata);
    a PRNG key as the key data orbax stores."""
    if not hasattr(leaf, "dtype"):
        leaf = np.asarray(leaf)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
    return tuple(leaf.shape), np.dtype(leaf.dtype)


def _check_match(file: str, what: str, expected: dict, stored: dict) -> None:
    """Refuses `stored` leaves that are not `expected`'s (both by path): missing, unexpected,
    or of another shape or dtype; the message names `file` and `what` was expected."""
    problems = [
        f"missing {key} {_shape_dtype(leaf)[0]}" for key, leaf in expected.items() if key not in stored
    ]
    problems += [
        f"unexpected {key} {_shape_dtype(leaf)[0]}" for key, leaf in stored.items() if key not in expected
    ]
    for key, leaf in expected.items():
        if key in stored and _shape_dtype(stored[key]) != _shape_dtype(leaf):
            (have, have_dtype), (need, need_dtype) = _shape_dtype(stored[key]), _shape_dtype(leaf)
            problems.append(f"{key}: stored {have} {have_dtype}, expected {need} {need_dtype}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{file} does not match {what}: " + "; ".join(problems[:5]) + more)


def load_model(
    path: str,
    *,
    module=None,
    input_shape=None,
    input_dtype="float32",
    output: str = "logits",
    method: str | Callable | None = None,
) -> Model:
    """Loads a checkpoint as a ready `jaxplain.Model`.

    Without `module`, `path` is a jaxplain checkpoint (see `save_checkpoint`), or the
    name of one shipped with jaxplain (`"digits_cnn"`), which says how to rebuild its
    architecture. With `module`, `path` is an orbax checkpoint of that module's
    variables: a folder written by `orbax.checkpoint.StandardCheckpointer().save`, the
    root of a `CheckpointManager` (its latest step is loaded), or a jaxplain checkpoint.
    The variables the module makes (`module.init`, or the NNX model's state) are the
    restore target: every stored array is checked for path, shape and dtype before
    any is read.

    Args:
      path: the checkpoint folder, or a packaged checkpoint's name.
      module: a Flax Linen module (the checkpoint holds its variables dict, e.g.
        `{"params": ..., "batch_stats": ...}`, its params alone, or a train state with
        those collections among other entries), or a Flax NNX model, or a function of
        no arguments that makes one (the checkpoint holds `nnx.state(model)`, or its
        pure dict; RNG state not stored is the model's own).
      input_shape: with a Linen module, the shape of one example (no batch axis), to
        build the module's variables.
      input_dtype: the dtype of the examples ("float32", or "int32" for token ids).
      output: "logits", "probs" or "log_probs".
      method: the module method to apply (e.g. "logits_from_embeddings" for a text
        classifier explained on its embeddings); `__call__` by default.

    Returns:
      A `jaxplain.Model` in evaluation mode.

    Raises:
      FileNotFoundError: no folder at `path` (nor a packaged checkpoint of that name).
      CheckpointError: a corrupt checkpoint, or variables that do not match the
        architecture or the module (the message names the parameter and both shapes).

    Example:
      >>> model = jaxplain.load_model("digits_cnn")  # doctest: +SKIP
      >>> model = jaxplain.load_model("ckpt/", module=CNN(), input_shape=(28, 28, 1))  # doctest: +SKIP
    """
    if module is None:
        if input_shape is not None:
            raise ValueError("input_shape is for module=...: a jaxplain checkpoint records its own")
        return load_checkpoint(path).model(output=output, method=method)
    folder = _orbax_folder(path)
    if isinstance(module, nn.Module):
        variables = _restore_linen(folder, module, input_shape, input_dtype)
        return Model.from_linen(module, variables, method=method, output=output)
    if input_shape is not None:
        raise ValueError("input_shape is for a Linen module; an NNX model's state has its shapes already")
    model = _restore_nnx(folder, module)
    return Model.from_nnx(model, output=output, **({} if method is None else {"method": method}))


def _orbax_folder(path) -> str:
    """The orbax checkpoint (the folder with `_METADATA`) that `path` holds or names."""
    path = resolve(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint folder at {path}")
    if os.path.isfile(os.path.join(path, METADATA_FILE)):  # a jaxplain checkpoint
        if read_metadata(path).get("format_version", 1) < 2:
            raise CheckpointError(
                f"{path} is a jaxplain checkpoint of format 1 (variables.msgpack): load it without "
                "module=, or convert it with jaxplain.io.convert_checkpoint"
            )
        return os.path.join(path, VARIABLES_FOLDER)
    if _is_orbax_item(path):
        return path
    steps = [
        entry for entry in os.listdir(path) if entry.isdigit() and os.path.isdir(os.path.join(path, entry))
    ]
    if not steps:
        raise CheckpointError(
            f"{path} is neither an orbax checkpoint (it has no _METADATA file) nor a CheckpointManager "
            "folder of numbered steps"
        )
    step = os.path.join(path, max(steps, key=int))
    if _is_orbax_item(step):
        return step
    items = sorted(entry for entry in os.listdir(step) if _is_orbax_item(os.path.join(step, entry)))
    if len(items) != 1:
        raise CheckpointError(
            f"{step}, the latest step of a CheckpointManager, holds {len(items)} checkpoints "
            f"({', '.join(items) or 'none'}): give the path of the one that holds the model's variables"
        )
    return os.path.join(step, items[0])


def _is_orbax_item(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "_METADATA"))


def _restore_linen(folder: str, module: nn.Module, input_shape, input_dtype):
    """The variables of the Linen `module` restored from the orbax checkpoint `folder`."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or not all(_is_int(d) and d >= 1 for d in shape):
        raise ValueError(
            "input_shape must be the shape of one example (a tuple of positive integers, no batch "
            f"axis) with a Linen module, to build the variables module.init makes; got {input_shape!r}"
        )
    try:
        input_dtype = np.dtype(input_dtype)
    except TypeError:
        raise ValueError(f"input_dtype must be a dtype such as 'float32', got {input_dtype!r}") from None
    name = type(module).__name__
    key = jax.random.PRNGKey(0)
    try:
        # in evaluation mode, so that a __call__(x, train) without a default can be built
        expected = jax.eval_shape(
            lambda: module.init(
                {"params": key, "dropout": key},
                jnp.zeros((1, *shape), input_dtype),
                **evaluation_kwargs(module.__call__),
            )
        )
    except Exception as error:
        raise ValueError(
            f"module {name} cannot be initialised on examples of input_shape {shape} ({input_dtype}): "
            f"{type(error).__name__}: {error}"
        ) from error
    expected = dict(expected)
    stored = _stored_tree(folder)
    if not isinstance(stored, dict):
        raise CheckpointError(f"{folder} holds a {type(stored).__name__}, not a dict of variables")
    if "params" in stored:  # a variables dict, or a train state holding the module's collections
        target = expected
        stored = {collection: stored[collection] for collection in expected if collection in stored}
    else:  # the params alone
        others = sorted(set(expected) - {"params"})
        if others:
            raise CheckpointError(
                f"{folder} holds parameters only (no 'params' entry), but {name} also has the "
                f"collection(s) {', '.join(others)}: save the whole variables dict"
            )
        target = expected["params"]
    _check_match(folder, f"the variables of {name}", _leaves(target), _leaves(stored))
    restored = _orbax_restore(folder, target)
    variables = restored if target is expected else {"params": restored}
    return jax.tree_util.tree_map(jnp.asarray, variables)


def _restore_nnx(folder: str, module):
    """A copy of the NNX model `module` (or of the one the factory `module` makes) with the
    state restored from the orbax checkpoint `folder`; RNG state not stored is kept."""
    from flax import nnx

    if isinstance(module, nnx.Module):
        model = module
    elif callable(module):
        model = module()
        if not isinstance(model, nnx.Module):
            raise TypeError(f"module: the factory returned a {type(model).__name__}, not a flax.nnx.Module")
    else:
        raise TypeError(
            "module must be a flax.linen.Module, a flax.nnx.Module or a function that makes one, "
            f"got {type(module).__name__}"
        )
    graphdef, rng_state, state = nnx.split(model, nnx.RngState, ...)
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(rng_state)):
        raise TypeError("module: an abstract NNX model (nnx.eval_shape) has no RNG state; pass its factory")
    abstract = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
    stored = _leaves(_stored_tree(folder))
    # nnx.state(model) is stored with a "value" entry per variable; its pure dict without.
    to_pure_dict = getattr(nnx, "to_pure_dict", None) or (lambda tree: tree.to_pure_dict())
    pure = len(stored.keys() & _leaves(to_pure_dict(abstract)).keys()) > len(
        stored.keys() & _leaves(abstract).keys()
    )
    form = to_pure_dict if pure else (lambda tree: tree)
    rng_paths = _leaves(form(rng_state)).keys()
    stored = {key: leaf for key, leaf in stored.items() if key not in rng_paths}
    _check_match(folder, f"the state of {type(model).__name__}", _leaves(form(abstract)), stored)
    restored = _orbax_restore(folder, form(abstract))
    if pure:
        nnx.replace_by_pure_dict(abstract, restored)
        restored = abstract
    return nnx.merge(graphdef, rng_state, jax.tree_util.tree_map(jnp.asarray, restored))


def convert_checkpoint(path: str) -> str:
    """Rewrites a checkpoint of format 1 (variables.msgpack) in the current format, in place.

    The stored file is checked against its recorded SHA-256 first; the new folder is
    written beside it and renamed into place (as `save_checkpoint` does), then read back
    and compared with the old arrays. Models and amortized explainers alike; the
    metadata is kept (creation time included) apart from the format version, the
    checksum and the jaxplain version. A checkpoint already in the current format is
    left as it is.

    Args:
      path: the checkpoint folder.

    Returns:
      `path`.

    Example:
      >>> jaxplain.io.convert_checkpoint("my_checkpoints/digits_cnn")  # doctest: +SKIP
    """
    metadata = read_metadata(path)
    if metadata.get("format_version", 1) >= FORMAT_VERSION:
        return path
    variables_path = _msgpack_file(path, metadata, refusal="not converting a corrupt or replaced file")
    with open(variables_path, "rb") as f:
        state = serialization.msgpack_restore(f.read())
    write_folder(path, state, metadata, {})  # keeps the fields' order; write_folder sets the new ones
    restored = read_variables(path, read_metadata(path), state, what="the converted checkpoint")
    if any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state))):
        raise CheckpointError(f"{path}: the converted arrays differ from the stored ones")
    return path


def main(argv=None) -> int:
    """`jaxplain convert-checkpoint PATH...` (or `python -m jaxplain.io convert PATH...`):
    checkpoints of format 1 rewritten in the current format."""
    parser = argparse.ArgumentParser(prog="python -m jaxplain.io", description="jaxplain checkpoint tools")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", help="rewrite checkpoint folders of format 1 (variables.msgpack) in the current format"
    )
    convert.add_argument("paths", nargs="+", metavar="PATH", help="a checkpoint folder")
    args = parser.parse_args(argv)
    for path in args.paths:
        try:
            before = read_metadata(path).get("format_version", 1)
            convert_checkpoint(path)
        except (OSError, ValueError) as error:  # CheckpointError is a ValueError
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(
            f"{path}: "
            + ("converted" if before < FORMAT_VERSION else "already")
            + f" format {FORMAT_VERSION}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
