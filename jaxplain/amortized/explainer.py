"""The trained explainer: a network plus its variables, called like any jaxplain method.

`Explainer(network, variables, metadata)` is what every recipe returns and what
`load(path)` reads back. `explainer(model, x, target=...)` returns an `Attribution`: the
network's map for each requested class, after the additive efficiency correction when
the explainer has one. It is saved in the folder format of `jaxplain.io` (an orbax
checkpoint of the variables + metadata.json, written to a temporary folder and renamed into
place, checked by parameter shapes and the arrays' SHA-256 on load), with `"kind":
"explainer"` and the recipe, the teacher, the label fraction and the measured fidelity in
the metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxplain import _checks, engine, io
from jaxplain.amortized import networks
from jaxplain.attribution import Attribution
from jaxplain.model import Model, Targets, normalize_targets

KIND = "explainer"
# Set by the recipes; everything else in `metadata` is free-form (fidelity, command, ...).
REQUIRED = (
    "recipe",
    "num_classes",
    "input_shape",
    "input_dtype",
    "reference",
    "feature_mask",
    "efficiency",
    "completeness",
    "output_scale",
    "teacher",
    "label_fraction",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Explainer:
    """An amortized explainer: one forward pass of `network` gives every class's map.

    Attributes:
      network: a Flax module of `jaxplain.amortized.networks.NETWORKS`, mapping
        `(B, *input_shape)` to `(B, num_classes, *input_shape)`.
      variables: its variables.
      metadata: JSON-serialisable facts: `recipe` ("supervised", "fastshap", "cortx"),
        `teacher` ({"method": name, "settings": {...}} or None), `label_fraction`,
        `num_classes`, `input_shape`, `input_dtype`, `reference` (the input that
        stands for "feature absent", one example), `feature_mask` (group ids per
        feature, or None), `efficiency` (apply the correction by default),
        `completeness` (whether values should sum to F(x) - F(reference)),
        `output_scale` (the network's outputs are multiplied by it), plus whatever the
        recipe recorded (`fidelity`, `command`, `history`, ...).

    Which class: the network outputs one map per class; `target` picks (an int, one
    per example, `(batch, k)`, "predicted" or `jaxplain.top_k(k)`), as in every
    jaxplain method.
    """

    network: nn.Module
    variables: Any
    metadata: dict[str, Any]

    def __post_init__(self):
        missing = [key for key in REQUIRED if key not in self.metadata]
        if missing:
            raise ValueError(f"metadata lacks {', '.join(missing)}")

    def __call__(self, model: Model, x, *, target, efficiency: bool | None = None) -> Attribution:
        """Explains `x` in one forward pass of the network.

        With efficiency, the additive correction of FastSHAP and CoRTX spreads the
        completeness gap evenly over the G groups (features, or the groups of
        `feature_mask`):

            phi_g <- phi_g + (F_t(x) - F_t(reference) - sum_h phi_h) / G,

        so the groups' values sum exactly to F_t(x) - F_t(reference). The model is
        evaluated once on `[x; reference]` when the correction, the completeness gap or
        the target rule ("predicted", top-k) needs it.

        Args:
          model: the `jaxplain.Model` the explainer was trained for (same classes).
          x: a batch shaped `(batch, *input_shape)` (int token ids for text).
          target: an int, an int array `(batch,)` or `(batch, k)`, "predicted" or
            `jaxplain.top_k(k)`.
          efficiency: apply the correction; by default as the explainer was trained
            (`metadata["efficiency"]`).

        Returns:
          An `Attribution` with `values` shaped like x (or `(batch, k, ...)`), `target`,
          and, where the explainer's values are meant to sum to the output change,
          `delta` (after the correction, zero up to rounding when it is applied),
          `output_difference` = F_t(x) - F_t(reference) and
          `extras["raw_delta"]`, the gap before the correction (what `selective` checks).
        """
        meta = self.metadata
        x, num_classes = _checks.check_x(model, x, integer_ids=True)
        if tuple(x.shape[1:]) != tuple(meta["input_shape"]):
            raise ValueError(
                f"x has examples of shape {tuple(x.shape[1:])}; this explainer takes "
                f"{tuple(meta['input_shape'])}"
            )
        if num_classes != meta["num_classes"]:
            raise ValueError(
                f"model has {num_classes} classes; this explainer was trained for one with "
                f"{meta['num_classes']}"
            )
        trained_on_ids = np.issubdtype(np.dtype(meta["input_dtype"]), np.integer)
        if trained_on_ids != bool(jnp.issubdtype(x.dtype, jnp.integer)):
            # int x was accepted for a float explainer (check_x takes token ids here).
            raise TypeError(
                f"x has dtype {x.dtype}; this explainer was trained on {meta['input_dtype']} inputs"
            )
        targets = normalize_targets(target, x.shape[0], num_classes)
        efficiency = meta["efficiency"] if efficiency is None else _checks.flag("efficiency", efficiency)
        if efficiency and not meta["completeness"]:
            raise ValueError("efficiency=True needs an explainer whose values sum to F(x) - F(reference)")
        mask, groups = self.groups()
        evaluate = efficiency or meta["completeness"] or targets.indices is None
        return _explain(
            self.network,
            self.variables,
            model,
            x,
            self.reference(x.dtype),
            mask,
            targets,
            scale=float(meta["output_scale"]),
            groups=groups,
            efficiency=efficiency,
            evaluate=evaluate,
            completeness=bool(meta["completeness"]),
        )

    def groups(self):
        """`(mask, G)`: the group id of every feature (None: one group per feature)."""
        shape = tuple(self.metadata["input_shape"])
        if self.metadata["feature_mask"] is None:
            return None, int(np.prod(shape))
        mask, groups = _checks.feature_mask(np.asarray(self.metadata["feature_mask"]), np.empty((1, *shape)))
        return mask, groups

    def reference(self, dtype=None):
        """The reference input, one example of `input_shape`."""
        shape = tuple(self.metadata["input_shape"])
        dtype = dtype or self.metadata["input_dtype"]
        return np.broadcast_to(np.asarray(self.metadata["reference"]), shape).astype(dtype)

    def replace(self, **metadata) -> Explainer:
        """A copy with some metadata fields added or replaced."""
        return dataclasses.replace(self, metadata={**self.metadata, **io._encode(metadata)})

    def save(self, path: str) -> str:
        """Writes the explainer to the folder `path` atomically (see `load`); returns `path`."""
        return _save(self, path)


def _flatten(explainer):
    return (explainer.variables,), (explainer.network, json.dumps(explainer.metadata, sort_keys=True))


def _unflatten(aux, children):
    return Explainer(aux[0], children[0], json.loads(aux[1]))


jax.tree_util.register_pytree_node(Explainer, _flatten, _unflatten)


@functools.partial(
    jax.jit, static_argnames=("network", "scale", "groups", "efficiency", "evaluate", "completeness")
)
def _explain(
    network,
    variables,
    model,
    x,
    reference,
    mask,
    targets: Targets,
    *,
    scale,
    groups,
    efficiency,
    evaluate,
    completeness,
):
    batch = x.shape[0]
    raw = network.apply(variables, x).astype(jnp.float32) * scale  # (B, C, *features)
    group_values = to_groups(raw, mask, groups)
    extras, delta = {}, None
    if evaluate:
        outputs = model(jnp.concatenate([x, reference[None]])).astype(jnp.float32)
        chosen = targets.resolve(outputs[:batch])
        difference = jnp.take_along_axis(outputs[:batch], chosen, axis=1) - outputs[batch][chosen]
    else:
        chosen = targets.indices
    picked = jnp.take_along_axis(group_values, chosen[..., None], axis=1)  # (B, k, G)
    if evaluate and completeness:
        raw_delta = picked.sum(axis=-1) - difference
        if efficiency:
            picked = picked - raw_delta[..., None] / groups
        delta = picked.sum(axis=-1) - difference
        extras = {"raw_delta": raw_delta}
    else:
        difference = None
    values = picked if mask is None else picked[..., mask.reshape(-1)]
    values = values.reshape(batch, chosen.shape[1], *x.shape[1:])
    return engine.attribution(targets, values, chosen, difference=difference, delta=delta, extras=extras)


def to_groups(values, mask, groups: int):
    """`(B, C, *features) -> (B, C, G)`: each group's value is the mean over its features."""
    flat = values.reshape(*values.shape[:2], -1)
    if mask is None:
        return flat
    # A segment sum over the group ids, not a product with a one-hot (features, G) matrix:
    # that grew with the input (354 MB at 224x224x3 in 16x16 patches). Features lead, as
    # segment_sum wants (on the CPU twice as fast as scattering into the last axis).
    ids = jnp.asarray(mask).reshape(-1)
    sums = jax.ops.segment_sum(jnp.moveaxis(flat, -1, 0), ids, num_segments=groups)
    counts = jax.ops.segment_sum(jnp.ones(ids.shape, flat.dtype), ids, num_segments=groups)
    return jnp.moveaxis(sums, 0, -1) / counts


def make(network, variables, **metadata) -> Explainer:
    """An `Explainer` with its metadata encoded for JSON (tuples as lists, arrays as lists)."""
    encoded = {key: _jsonable(value) for key, value in metadata.items()}
    return Explainer(network, variables, encoded)


def _jsonable(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return io._encode(value)


def _save(explainer: Explainer, path: str) -> str:
    state = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(explainer.variables))
    record = {
        "format": io.FORMAT,
        "format_version": io.FORMAT_VERSION,
        "kind": KIND,
        "architecture": "amortized." + networks.name_of(explainer.network),
        "config": io._encode(networks.config_of(explainer.network)),
        "parameter_count": int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(state))),
    }
    return io.write_folder(path, state, record, explainer.metadata)


def load(path: str) -> Explainer:
    """Reads and verifies an explainer saved with `Explainer.save`.

    Args:
      path: the explainer's folder, or the name of one shipped with jaxplain
        (`"wine_mlp_explainer_supervised"`).

    Returns:
      The `Explainer`.

    Raises:
      FileNotFoundError: the folder or one of its files is missing.
      jaxplain.io.CheckpointError: a corrupt file (bad JSON, checksum mismatch), a model
        checkpoint rather than an explainer, or variables that do not match the network.

    Example:
      >>> explainer = jaxplain.amortized.load("wine_mlp_explainer_supervised")  # doctest: +SKIP
      >>> explainer(model, x, target="predicted").values.shape  # doctest: +SKIP
    """
    path = io.resolve(path)
    metadata = io.read_metadata(path)
    metadata_path = os.path.join(path, io.METADATA_FILE)
    if metadata.get("kind") != KIND:
        raise io.CheckpointError(
            f"{metadata_path} describes a model, not an explainer; load it with jaxplain.load_model"
        )
    name = metadata["architecture"].removeprefix("amortized.")
    if name not in networks.NETWORKS:
        raise io.CheckpointError(f"{metadata_path}: unknown explainer network {metadata['architecture']!r}")
    network = networks.NETWORKS[name](**io._decode(metadata["config"]))
    expected = io._expected_variables(path, metadata, network)  # as load_checkpoint checks input_shape
    stored = io.read_variables(path, metadata, expected, what=f"network {metadata['architecture']!r}")
    # A dense network flattens its input: an input_shape of another rank (or other classes)
    # loaded, and the explainer's maps had the wrong shape.
    example = jax.ShapeDtypeStruct((1, *metadata["input_shape"]), metadata.get("input_dtype", "float32"))
    try:
        if "num_classes" in metadata:  # else Explainer() names the missing field
            networks.check_output(network, expected, example, metadata["num_classes"])
    except ValueError as error:
        raise io.CheckpointError(
            f"{metadata_path}: fields 'input_shape' and 'num_classes' do not fit the network: {error}"
        ) from None
    return Explainer(network, jax.tree_util.tree_map(jnp.asarray, stored), metadata)
