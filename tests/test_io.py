"""Checkpoints: round trip, users' own orbax checkpoints (Linen and NNX), the format-1 converter,
permissions, and a clear error for every way a checkpoint can be wrong."""

import hashlib
import json
import os
import shutil
import stat

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx, serialization

import jaxplain
from jaxplain import io
from jaxplain.models import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, features=(8,), seed=0, **extra):
    module = build("mlp", num_classes=3, features=features)
    variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, 5)))
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
    shutil.rmtree(tmp_path / "ckpt" / "variables")
    with pytest.raises(FileNotFoundError, match="ckpt/variables is missing"):
        jaxplain.load_model(str(tmp_path / "ckpt"))


# orbax's reader, failing on a corrupt file, may leave a callback for an event loop it has closed
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_files_are_named(tmp_path):
    _save(tmp_path / "ckpt")
    # other arrays of the same shapes put in the place of the stored ones: only the checksum can tell
    other = tmp_path / "other"
    _save(other, seed=1)
    shutil.rmtree(tmp_path / "ckpt" / "variables")
    shutil.copytree(other / "variables", tmp_path / "ckpt" / "variables")
    with pytest.raises(io.CheckpointError, match="the arrays in .*ckpt/variables do not match the checksum"):
        jaxplain.load_model(str(tmp_path / "ckpt"))
    # a flipped byte in any of orbax's data files never gives other values silently: the load
    # fails (the checksum, or orbax cannot read the file) or, where orbax does not read the
    # byte, gives the same model
    module, variables = _save(other, seed=0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    data_files = sorted((other / "variables" / "d").iterdir())  # the files orbax reads the arrays from
    assert data_files
    failures = 0
    for path in data_files:
        original = path.read_bytes()
        for offset in range(0, len(original), max(1, len(original) // 6)):
            corrupt = bytearray(original)
            corrupt[offset] ^= 0xFF
            path.write_bytes(bytes(corrupt))
            try:
                model = jaxplain.load_model(str(other))
            except io.CheckpointError as error:
                assert "do not match the checksum" in str(error) or "cannot be read" in str(error)
                failures += 1
            else:
                np.testing.assert_array_equal(model(x), module.apply(variables, x))
        path.write_bytes(original)
    assert failures > 0
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
        return {
            str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()
        }

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


# --------------------------------------------------------------------------- users' own orbax checkpoints


class LinenCNN(nn.Module):
    """A small CNN in the style of the Flax examples: BatchNorm and Dropout behind a `train` flag."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class LinenMLP(nn.Module):
    features: int = 8

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(self.features)(x)))


class NNXCNN(nnx.Module):
    """The Flax NNX example's style: layers made with `rngs`, Dropout holding its RNG stream."""

    def __init__(self, *, rngs: nnx.Rngs, features: int = 4):
        self.conv = nnx.Conv(1, features, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(features, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.linear = nnx.Linear(features * 9, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.norm(self.conv(x))), (2, 2), strides=(2, 2))
        return self.linear(self.dropout(x.reshape(x.shape[0], -1)))


IMAGES = np.random.default_rng(1).normal(size=(5, 6, 6, 1)).astype(np.float32)


def _trained_linen_cnn():
    """Variables whose batch statistics are not the initial ones (a training step updated them)."""
    module = LinenCNN()

    @jax.jit  # one program each, not dozens of small ones
    def init_and_step(images):
        variables = module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, images)
        _, updates = module.apply(
            variables, images * 3 + 1, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)}
        )
        return {**variables, **updates}

    return module, init_and_step(IMAGES)


def _orbax_save(path, tree):
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), tree)
        checkpointer.wait_until_finished()


def test_a_linen_cnn_with_batchnorm_saved_by_orbax_gives_the_same_logits(tmp_path):
    module, variables = _trained_linen_cnn()
    assert not np.allclose(variables["batch_stats"]["BatchNorm_0"]["mean"], 0)
    _orbax_save(tmp_path / "ckpt", variables)
    model = jaxplain.load_model(str(tmp_path / "ckpt"), module=LinenCNN(), input_shape=(6, 6, 1))
    jax.tree.map(np.testing.assert_array_equal, model.params, variables)
    expected = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, IMAGES)
    np.testing.assert_allclose(model(IMAGES), expected, rtol=1e-6, atol=1e-7)  # compiled apart
    # a train state (step, optimizer state) holding the variables' collections loads the same
    state = {
        "step": 7,
        "params": variables["params"],
        "batch_stats": variables["batch_stats"],
        "opt_state": optax.adam(1e-3).init(variables["params"]),
    }
    _orbax_save(tmp_path / "state", state)
    model = jaxplain.load_model(str(tmp_path / "state"), module=LinenCNN(), input_shape=(6, 6, 1))
    jax.tree.map(np.testing.assert_array_equal, model.params, variables)


def test_params_alone_and_the_latest_step_of_a_checkpoint_manager(tmp_path):
    module = LinenMLP()
    x = IMAGES.reshape(5, -1)[:, :5]
    steps = {step: module.init(jax.random.PRNGKey(step), x) for step in (1, 2)}
    _orbax_save(tmp_path / "params", steps[1]["params"])
    model = jaxplain.load_model(str(tmp_path / "params"), module=module, input_shape=(5,), output="probs")
    np.testing.assert_allclose(model(x), jax.nn.softmax(module.apply(steps[1], x)), rtol=1e-6)
    with ocp.CheckpointManager(os.path.abspath(tmp_path / "run")) as manager:
        for step, variables in steps.items():
            manager.save(step, args=ocp.args.StandardSave(variables))
        manager.wait_until_finished()
    model = jaxplain.load_model(str(tmp_path / "run"), module=module, input_shape=(5,))
    np.testing.assert_array_equal(model(x), module.apply(steps[2], x))
    with pytest.raises(
        io.CheckpointError, match="holds parameters only .* also has the collection\\(s\\) batch_stats"
    ):
        jaxplain.load_model(str(tmp_path / "params"), module=LinenCNN(), input_shape=(6, 6, 1))


def _nnx_trained():
    model = NNXCNN(rngs=nnx.Rngs(0))
    model(IMAGES * 3 + 1)  # in training mode: the batch statistics move
    model.eval()
    return model


@pytest.mark.parametrize("pure", [False, True], ids=["state", "pure_dict"])
def test_an_nnx_models_state_saved_by_orbax_loads_given_the_model_or_a_factory(tmp_path, pure):
    trained = _nnx_trained()
    state = nnx.state(trained)
    _orbax_save(tmp_path / "ckpt", nnx.to_pure_dict(state) if pure else state)
    expected = trained(IMAGES)
    fresh = NNXCNN(rngs=nnx.Rngs(5))
    before = nnx.to_pure_dict(nnx.state(fresh, nnx.Param))
    for module in (fresh, lambda: NNXCNN(rngs=nnx.Rngs(7))):
        model = jaxplain.load_model(str(tmp_path / "ckpt"), module=module)
        np.testing.assert_array_equal(model(IMAGES), expected)
    # the model given is not modified
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(fresh, nnx.Param)), before)


def test_shapes_that_do_not_match_the_module_name_the_parameter_and_both_shapes(tmp_path):
    module = LinenMLP(features=8)
    _orbax_save(tmp_path / "linen", module.init(jax.random.PRNGKey(0), jnp.zeros((1, 5))))
    with pytest.raises(
        io.CheckpointError,
        match=r"linen does not match the variables of LinenMLP: .*params/Dense_1/kernel: stored \(5, 8\) "
        r"float32, expected \(5, 16\) float32",
    ):
        jaxplain.load_model(str(tmp_path / "linen"), module=LinenMLP(features=16), input_shape=(5,))
    with pytest.raises(
        io.CheckpointError, match=r"params/Dense_1/kernel: stored \(5, 8\) float32, expected \(4, 8\)"
    ):
        jaxplain.load_model(str(tmp_path / "linen"), module=module, input_shape=(4,))
    _orbax_save(tmp_path / "nnx", nnx.state(NNXCNN(rngs=nnx.Rngs(0))))
    with pytest.raises(
        io.CheckpointError,
        match=r"does not match the state of NNXCNN: .*conv/kernel/value: stored \(3, 3, 1, 4\) float32, expected \(3, 3, 1, 2\)",
    ):
        jaxplain.load_model(str(tmp_path / "nnx"), module=lambda: NNXCNN(rngs=nnx.Rngs(0), features=2))


def test_bad_arguments_of_load_model_are_named(tmp_path):
    _orbax_save(tmp_path / "ckpt", LinenMLP().init(jax.random.PRNGKey(0), jnp.zeros((1, 5))))
    with pytest.raises(ValueError, match="input_shape must be the shape of one example"):
        jaxplain.load_model(str(tmp_path / "ckpt"), module=LinenMLP())
    with pytest.raises(
        ValueError, match="module LinenCNN cannot be initialised on examples of input_shape \\(5,\\)"
    ):
        jaxplain.load_model(str(tmp_path / "ckpt"), module=LinenCNN(), input_shape=(5,))
    with pytest.raises(ValueError, match="input_dtype must be a dtype such as 'float32', got 'float33'"):
        jaxplain.load_model(
            str(tmp_path / "ckpt"), module=LinenMLP(), input_shape=(5,), input_dtype="float33"
        )
    with pytest.raises(
        TypeError, match="module must be a flax.linen.Module, a flax.nnx.Module or a function"
    ):
        jaxplain.load_model(str(tmp_path / "ckpt"), module="LinenMLP")
    with pytest.raises(TypeError, match="the factory returned a dict"):
        jaxplain.load_model(str(tmp_path / "ckpt"), module=lambda: {})
    with pytest.raises(
        TypeError, match="an abstract NNX model \\(nnx.eval_shape\\) has no RNG state; pass its factory"
    ):
        jaxplain.load_model(str(tmp_path / "ckpt"), module=nnx.eval_shape(lambda: NNXCNN(rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match="input_shape is for module="):
        jaxplain.load_model(str(tmp_path / "ckpt"), input_shape=(5,))
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.CheckpointError, match="neither an orbax checkpoint .* nor a CheckpointManager"):
        jaxplain.load_model(str(tmp_path / "empty"), module=LinenMLP(), input_shape=(5,))


def test_a_jaxplain_checkpoint_opens_with_plain_orbax(tmp_path):
    module, variables = _save(tmp_path / "ckpt")
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.abspath(tmp_path / "ckpt" / "variables"))
    jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(np.asarray, variables))
    # and as a user's checkpoint of the module
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    model = jaxplain.load_model(str(tmp_path / "ckpt"), module=module, input_shape=(5,))
    np.testing.assert_array_equal(model(x), module.apply(variables, x))


def _save_format_1(path, variables, **fields):
    """A checkpoint as jaxplain 0.1 wrote it: variables.msgpack and its file's SHA-256."""
    os.makedirs(path)
    data = serialization.msgpack_serialize(jax.tree.map(np.asarray, variables))
    with open(os.path.join(path, "variables.msgpack"), "wb") as f:
        f.write(data)
    metadata = {"format": "jaxplain.checkpoint", "format_version": 1, **fields}
    metadata["sha256"] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(path, "metadata.json"), "w") as f:
        json.dump(metadata, f)


def test_a_format_1_checkpoint_loads_and_converts(tmp_path, capsys):
    module = build("mlp", num_classes=3, features=(8,))
    variables = module.init(jax.random.PRNGKey(3), jnp.zeros((1, 5)))
    fields = dict(
        architecture="mlp", config={"num_classes": 3, "features": [8]}, input_shape=[5], created="then"
    )
    _save_format_1(str(tmp_path / "old"), variables, **fields)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    expected = module.apply(variables, x)
    np.testing.assert_array_equal(jaxplain.load_model(str(tmp_path / "old"))(x), expected)
    with pytest.raises(io.CheckpointError, match="format 1 .* convert it"):
        jaxplain.load_model(str(tmp_path / "old"), module=module, input_shape=(5,))
    from jaxplain.cli import main as cli

    assert cli(["convert-checkpoint", str(tmp_path / "old")]) == 0  # the command line's way
    assert "converted format 2" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "old")) == ["metadata.json", "variables"]
    metadata = io.read_metadata(str(tmp_path / "old"))
    assert metadata["format_version"] == 2 and metadata["created"] == "then"
    assert metadata["sha256"] == io.arrays_sha256(jax.tree.map(np.asarray, variables))
    np.testing.assert_array_equal(jaxplain.load_model(str(tmp_path / "old"))(x), expected)
    assert io.convert_checkpoint(str(tmp_path / "old")) == str(tmp_path / "old")  # already current: kept
    # a corrupt file is not converted
    _save_format_1(str(tmp_path / "bad"), variables, **fields)
    with open(tmp_path / "bad" / "variables.msgpack", "r+b") as f:
        f.seek(40)
        f.write(b"\x00\x01")
    assert io.main(["convert", str(tmp_path / "bad")]) == 1
    assert "not converting a corrupt or replaced file" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "bad")) == ["metadata.json", "variables.msgpack"]


# --------------------------------------------------------------------------- permissions


def _modes(folder):
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            found[os.path.join(root, name)] = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
    return found


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_what_jaxplain_writes_gets_the_permissions_of_the_umask(tmp_path, umask):
    from jaxplain._store import write_atomic

    _save(tmp_path / "ckpt")
    _save(tmp_path / "ckpt")  # a replacement too
    write_atomic(str(tmp_path / "notes.json"), text="{}")
    write_atomic(str(tmp_path / "arrays.npz"), a=np.zeros(3))
    model = jaxplain.Model(lambda params, x: x @ params, jnp.ones((3, 2)))
    jaxplain.explain_dataset(
        "saliency",
        model,
        np.ones((4, 3), np.float32),
        out=str(tmp_path / "run"),
        batch_size=2,
        progress=False,
    )
    modes = _modes(tmp_path)
    assert len(modes) > 10
    for path, mode in modes.items():
        expected = 0o777 & ~umask if os.path.isdir(path) else 0o666 & ~umask
        assert mode == expected, f"{path}: {oct(mode)}, expected {oct(expected)}"
