"""Checkpoints: round trip, and a clear error for every way a checkpoint can be wrong."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
from jaxplain import io
from jaxplain.models import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, features=(8,), **extra):
    module = build("mlp", num_classes=3, features=features)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
    io.save_checkpoint(
        str(path),
        architecture="mlp",
        config={"num_classes": 3, "features": features},
        variables=variables,
        input_shape=(5,),
        dataset="none",
        test_accuracy=0.5,
        **extra,
    )
    return module, variables


def test_round_trip_gives_the_same_model(tmp_path):
    module, variables = _save(tmp_path / "ckpt", command="jaxplain train ...")
    model = jaxplain.load_model(str(tmp_path / "ckpt"))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    np.testing.assert_array_equal(model(x), module.apply(variables, x))
    metadata = io.read_metadata(str(tmp_path / "ckpt"))
    assert metadata["architecture"] == "mlp" and metadata["config"]["features"] == [8]
    assert metadata["test_accuracy"] == 0.5 and metadata["command"] == "jaxplain train ..."
    assert metadata["parameter_count"] == 5 * 8 + 8 + 8 * 3 + 3
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no staging folder left behind


def test_functions_in_the_config_are_stored_by_name(tmp_path):
    module = build("mlp", num_classes=2, features=(4,), activation=jax.nn.tanh)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    io.save_checkpoint(
        str(tmp_path / "c"),
        architecture="mlp",
        variables=variables,
        input_shape=(3,),
        config={"num_classes": 2, "features": (4,), "activation": jax.nn.tanh},
    )
    loaded = io.load_checkpoint(str(tmp_path / "c"))
    assert loaded.module.activation is jax.nn.tanh


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at .*nowhere"):
        jaxplain.load_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.json is missing"):
        jaxplain.load_model(str(tmp_path / "empty"))
    _save(tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "variables.msgpack")
    with pytest.raises(FileNotFoundError, match="variables.msgpack is missing"):
        jaxplain.load_model(str(tmp_path / "ckpt"))


def test_corrupt_files_are_named(tmp_path):
    _save(tmp_path / "ckpt")
    variables_path = tmp_path / "ckpt" / "variables.msgpack"
    data = variables_path.read_bytes()
    variables_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.CheckpointError, match="variables.msgpack does not match the checksum"):
        jaxplain.load_model(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "metadata.json").write_text("{not json")
    with pytest.raises(io.CheckpointError, match="metadata.json is not valid JSON"):
        jaxplain.load_model(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "metadata.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(io.CheckpointError, match="does not describe a jaxplain checkpoint"):
        jaxplain.load_model(str(tmp_path / "ckpt"))


def test_variables_that_do_not_fit_the_architecture_are_named(tmp_path):
    _save(tmp_path / "ckpt", features=(8,))
    metadata_path = tmp_path / "ckpt" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["config"]["features"] = [16]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(
        io.CheckpointError, match=r"does not match architecture 'mlp': .*Dense_0/kernel: stored \(5, 8\)"
    ):
        jaxplain.load_model(str(tmp_path / "ckpt"))
    metadata["config"]["features"] = [8, 8]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(io.CheckpointError, match="missing params/Dense_2"):
        jaxplain.load_model(str(tmp_path / "ckpt"))
    metadata["architecture"] = "no_such_net"
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(io.CheckpointError, match="cannot build architecture 'no_such_net'"):
        jaxplain.load_model(str(tmp_path / "ckpt"))


def test_does_not_overwrite_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a jaxplain checkpoint"):
        _save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_unnameable_function_in_config_is_refused_before_writing(tmp_path):
    module = build("mlp", num_classes=2, features=(4,))
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    with pytest.raises(TypeError, match="cannot name"):
        io.save_checkpoint(
            str(tmp_path / "c"),
            architecture="mlp",
            variables=variables,
            input_shape=(3,),
            config={"num_classes": 2, "activation": lambda z: z},
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("input_shape", [-5], "field 'input_shape' must be a list of positive integers"),
        ("input_shape", [5.0], "field 'input_shape' must be a list of positive integers"),
        ("input_shape", "5", "field 'input_shape' must be a list of positive integers"),
        ("input_dtype", "float33", "field 'input_dtype' must be a dtype name"),
        ("config", [3], "field 'config' must be a JSON object"),
        ("architecture", None, "field 'architecture' must be a non-empty string"),
        ("num_classes", "3", "field 'num_classes' must be a positive integer"),
        ("format_version", "1", "field 'format_version' must be an integer"),
        ("sha256", 0, "field 'sha256' must be a SHA-256 digest"),
    ],
)
def test_a_metadata_field_of_the_wrong_kind_is_named_with_the_file(tmp_path, field, value, message):
    """One pass over the fields when the checkpoint is opened (a wrong rank used to end in a
    ZeroDivisionError inside the model, a negative size in a TypeError from jax)."""
    _save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "metadata.json"
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, field: value}))
    for load in (jaxplain.load_model, io.load_checkpoint):
        with pytest.raises(io.CheckpointError, match=f"{path}: {message}"):
            load(str(tmp_path / "ckpt"))


def test_an_input_shape_of_the_wrong_rank_is_named_not_a_zero_division(tmp_path):
    shutil.copytree(os.path.join(ROOT, "checkpoints", "digits_cnn"), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "input_shape": [8, 8]}))
    with pytest.raises(
        io.CheckpointError,
        match=f"{path}: field 'input_shape' \\[8, 8\\] \\(float32\\) does not fit "
        "architecture 'small_cnn': ZeroDivisionError",
    ):
        jaxplain.load_model(str(tmp_path / "ckpt"))


def test_save_checkpoint_refuses_what_it_could_not_read_back_before_writing(tmp_path):
    for shape in ((5, -1), (5.5,), 5):
        with pytest.raises(ValueError, match="input_shape must be a tuple of positive integers"):
            io.save_checkpoint(
                str(tmp_path / "c"),
                architecture="mlp",
                variables={},
                input_shape=shape,
                config={"num_classes": 3, "features": (8,)},
            )
    assert os.listdir(tmp_path) == []


def test_replacing_a_checkpoint_never_loses_the_users_files(tmp_path, monkeypatch):
    def contents(folder):
        return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}

    _save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "README.md").write_text("how I trained it")  # a file of the user's beside ours
    before = contents(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="also holds files jaxplain did not write \\(README.md\\)"):
        _save(tmp_path / "ckpt", features=(4,))
    assert contents(tmp_path / "ckpt") == before and sorted(os.listdir(tmp_path)) == ["ckpt"]
    os.remove(tmp_path / "ckpt" / "README.md")
    # a replacement that fails at the last step puts the old checkpoint back
    before = contents(tmp_path / "ckpt")
    real = os.replace

    def failing(source, target):
        name = os.path.basename(str(source))  # the new folder's rename into place (not the old one's return)
        if (
            name.startswith(".checkpoint-")
            and not name.startswith(".checkpoint-old-")
            and str(target) == str(tmp_path / "ckpt")
        ):
            raise OSError("disk gone")
        return real(source, target)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        _save(tmp_path / "ckpt", features=(4,))
    monkeypatch.setattr(os, "replace", real)
    assert contents(tmp_path / "ckpt") == before and sorted(os.listdir(tmp_path)) == ["ckpt"]
    # an empty folder (made by the user for it) and a jaxplain checkpoint are replaced; an empty path is refused
    (tmp_path / "made").mkdir()
    _save(tmp_path / "made", features=(4,))
    _save(tmp_path / "ckpt", features=(4,))
    assert io.read_metadata(str(tmp_path / "ckpt"))["config"]["features"] == [4]
    with pytest.raises(ValueError, match="path is empty"):
        _save("")
