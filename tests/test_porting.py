"""docs/porting.md, run: each section's python blocks executed in order, then checked.

The page's sections ("## " headings) are independent programs; `_run` executes one with
its `/tmp/porting` paths moved into the test's folder and returns its namespace. Each
test then asserts what the section claims against something computed without jaxplain's
porting help: the original module's logits, a model wrapped by hand, a closed form, the
completeness of Integrated Gradients.
"""

import pathlib
import re
import shlex

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import jaxplain
from jaxplain import cli
from jaxplain.model import OutputStructureError

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "porting.md"
TITLES = {
    "1": "A Linen CNN with BatchNorm and Dropout",
    "2": "Models that return several outputs",
    "3": "A text model with lengths",
    "4": "An NNX model with `rngs`",
    "5": "A small vision transformer",
    "6": "One score per example",
    "7": "Variables read with flax.serialization",
    "8": "The command line",
    "9": "What you still do by hand",
}


def _sections() -> dict:
    """Section number -> its text, from the page's "## N. Title" headings."""
    parts = re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]
    return {part.split(".", 1)[0]: part for part in parts}


def _blocks(section: str, language: str = "python") -> list:
    return re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.M | re.S)


def _run(number: str, folder) -> dict:
    """Executes section `number`'s python blocks in order in one fresh namespace."""
    namespace = {"__name__": f"porting_section_{number}"}
    for i, block in enumerate(_blocks(_sections()[number])):
        code = block.replace("/tmp/porting", str(folder))
        exec(compile(code, f"docs/porting.md section {number} block {i + 1}", "exec"), namespace)
    return namespace


def _close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _trees_equal(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_the_page_has_its_sections_and_every_block_compiles():
    sections = _sections()
    assert sorted(sections) == sorted(TITLES)
    for number, title in TITLES.items():
        assert sections[number].split("\n", 1)[0].startswith(f"{number}. {title}")
        blocks = _blocks(sections[number])
        assert number == "9" or blocks, f"section {number} has no python block"
        for block in blocks:
            compile(block, f"section {number}", "exec")


@pytest.mark.slow  # a section of the page run end to end; its features are tested one by one elsewhere
def test_linen_cnn_trained_saved_with_orbax_restored_and_explained(tmp_path):
    ns = _run("1", tmp_path)
    module, variables, model, x = ns["module"], ns["variables"], ns["model"], ns["x"]
    assert ns["losses"][-1] < ns["losses"][0]
    assert set(variables) == {"params", "batch_stats"}
    _trees_equal(model.params, variables)  # load_model restored exactly what was saved
    _trees_equal(ns["by_hand"].params, variables)
    original = module.apply(variables, x, train=False)
    _close(model(x), original)

    attribution = ns["attribution"]
    assert attribution.values.shape == x.shape
    predicted = jnp.argmax(original, axis=1)
    at_baseline = module.apply(variables, jnp.zeros_like(x), train=False)
    rows = jnp.arange(len(x))
    _close(
        attribution.output_difference, original[rows, predicted] - at_baseline[rows, predicted], 1e-4, 1e-5
    )
    _close(
        attribution.delta,
        attribution.values.reshape(len(x), -1).sum(1) - attribution.output_difference,
        1e-4,
        1e-5,
    )
    assert float(jnp.max(attribution.relative_delta)) < 0.01
    again = jaxplain.integrated_gradients(model, x, target="predicted", steps=64)
    np.testing.assert_array_equal(attribution.values, again.values)  # dropout is off


@pytest.mark.slow  # a section of the page run end to end; its features are tested one by one elsewhere
def test_tuple_and_dict_outputs_select_the_logits(tmp_path):
    ns = _run("2", tmp_path)
    module, variables, x, model = ns["module"], ns["variables"], ns["x"], ns["model"]
    logits = module.apply(variables, x)[0]
    _close(model(x), logits)
    _close(ns["by_key"](x), logits)
    _close(ns["probabilities"](x), jax.nn.softmax(logits))
    by_hand = jaxplain.Model(lambda variables, x: module.apply(variables, x)[0], variables)
    expected = jaxplain.integrated_gradients(by_hand, x, target="predicted", steps=32)
    _close(ns["attribution"].values, expected.values)
    with pytest.raises(OutputStructureError, match=r"returned a tuple .*output="):
        jaxplain.Model.from_linen(module, variables)(x)
    hand_linen = jaxplain.Model.from_linen(module, variables, method=lambda module, x: module(x)[0])
    _close(ns["cam"].values, jaxplain.grad_cam(hand_linen, x, target="predicted", layer="block1").values)
    assert ns["cam"].values.shape == (2, 8, 8)


@pytest.mark.slow  # a section of the page run end to end; its features are tested one by one elsewhere
def test_text_model_with_lengths_and_a_dropout_flag(tmp_path):
    ns = _run("3", tmp_path)
    module, variables = ns["module"], ns["variables"]
    ids, lengths, pad = ns["token_ids"], ns["lengths"], ns["PAD_ID"]

    def logits(ids):
        return module.apply(variables, jnp.asarray(ids), jnp.asarray(lengths), deterministic=True)

    scores = ns["scores"]
    values = np.asarray(scores.values)
    assert values.shape == ids.shape
    assert np.all(values[0, 4:] == 0) and np.all(values[0, :4] != 0)  # padding gets nothing
    _close(scores.output_difference, logits(ids)[:, 1] - logits(np.full_like(ids, pad))[:, 1], 1e-4, 1e-5)
    assert float(jnp.max(scores.relative_delta)) < 0.05
    # The padded example as the unported model sees it: its length fixed by hand.
    alone = jaxplain.Model.from_linen(
        module,
        variables,
        method=lambda module, ids: module(ids, jnp.full(ids.shape[:1], 4), deterministic=True),
    )
    expected = jaxplain.token_attributions(alone, ids[:1], target=1, layer="embedder", steps=32)
    _close(values[0], expected.values[0], 1e-4, 1e-6)

    # Occlusion: the drop when one token becomes the padding id, with the lengths held.
    dropped = np.zeros(ids.shape, np.float32)
    for t in range(ids.shape[1]):
        edited = ids.copy()
        edited[:, t] = pad
        dropped[:, t] = logits(ids)[:, 1] - logits(edited)[:, 1]
    _close(ns["occluded"].values, dropped, 1e-4, 1e-5)
    assert np.all(dropped[0, 4:] == 0)
    # Kernel SHAP is efficient: its values add up to F(x) - F(all padding).
    _close(np.asarray(ns["shap"].values).sum(1), scores.output_difference, 1e-3, 1e-4)


@pytest.mark.slow  # a section of the page run end to end; its features are tested one by one elsewhere
def test_nnx_model_with_rngs_trained_saved_restored_and_explained(tmp_path):
    ns = _run("4", tmp_path)
    model, restored, explained, x = ns["model"], ns["restored"], ns["explained"], ns["x"]
    assert ns["losses"][-1] < ns["losses"][0]
    _trees_equal(nnx.state(restored), nnx.state(model))
    evaluating = nnx.clone(model)
    evaluating.eval()
    _close(explained(x), evaluating(x, rngs=None))
    assert not model.dropout1.deterministic  # the user's model is still in training mode
    loaded = jaxplain.load_model(tmp_path / "nnx_cnn", module=lambda: ns["CNN"](rngs=nnx.Rngs(0)))
    _close(loaded(x), explained(x))

    attribution = ns["attribution"]
    assert float(jnp.max(attribution.relative_delta)) < 0.05
    assert ns["names"]["conv2"] == (4, 8, 8, 8)
    assert {"conv1", "batch_norm1", "linear1", "linear2"} <= set(ns["names"])

    # Grad-CAM by hand: the gradient with respect to conv2's output, added as a shift.
    class Shifted(nnx.Module):
        def __init__(self, layer, shift):
            self.layer = layer
            self.shift = nnx.Variable(shift)

        def __call__(self, inputs):
            return self.layer(inputs) + self.shift[...]

    graphdef, state = nnx.split(evaluating)
    predicted = jnp.argmax(explained(x), axis=1)

    def target_sum(shift):
        copy = nnx.merge(graphdef, state)
        activation = copy.conv2
        copy.conv2 = Shifted(activation, shift)
        return jnp.take_along_axis(copy(x, rngs=None), predicted[:, None], axis=1).sum()

    def conv2_output(module, inputs):
        h = nnx.relu(module.batch_norm1(module.dropout1(module.conv1(inputs), rngs=None)))
        return module.conv2(h)

    activation = conv2_output(nnx.merge(graphdef, state), x)
    grads = jax.grad(target_sum)(jnp.zeros_like(activation))
    cam = jax.nn.relu((grads.mean(axis=(1, 2), keepdims=True) * activation).sum(-1))
    _close(ns["cam"].extras["layer_map"], cam, 1e-4, 1e-6)


@pytest.mark.slow  # a two-block ViT's IG and layer IG compile for ~10 s; test_nnx and test_layers cover the methods
def test_vision_transformer_input_and_block_attributions(tmp_path):
    ns = _run("5", tmp_path)
    model, images = ns["model"], ns["images"]
    _close(model(images), ns["module"].apply(ns["variables"], images))
    assert float(jnp.max(ns["attribution"].relative_delta)) <= 0.01
    names = jaxplain.layer_names(model, images)
    assert names["encoderblock_0"] == (2, 5, 8)
    assert "encoderblock_0/MultiHeadDotProductAttention_0" in names
    block = ns["block"]
    assert block.values.shape == (2, 5, 8) and ns["per_token"].shape == (2, 5)
    # everything after the block reads only its output: layer IG is complete for F(x) - F(0)
    _close(block.extras["layer_output_difference"], block.output_difference, 1e-4, 1e-5)
    assert float(jnp.max(jnp.abs(block.delta) / jnp.abs(block.output_difference))) < 0.02


@pytest.mark.slow  # a section of the page run end to end; its features are tested one by one elsewhere
def test_one_score_per_example_dense_outputs_and_two_inputs(tmp_path):
    ns = _run("6", tmp_path)
    features = ns["features"]
    # A linear regressor's IG from 0 is x * w exactly.
    kernel = ns["regressor_variables"]["params"]["Dense_0"]["kernel"][:, 0]
    _close(ns["regression"].values, features * kernel)

    binary, binary_variables = ns["binary"], ns["binary_variables"]
    sigmoid = jaxplain.Model(lambda v, x: jax.nn.sigmoid(binary.apply(v, x)), binary_variables)
    expected = jaxplain.integrated_gradients(sigmoid, features, target=0, steps=64)
    _close(ns["binary_attribution"].values, expected.values)
    assert float(jnp.max(ns["binary_attribution"].relative_delta)) < 0.01

    segmenter, segmenter_variables, mask, images = (
        ns["segmenter"],
        ns["segmenter_variables"],
        ns["mask"],
        ns["images"],
    )
    weights = jnp.asarray(mask, jnp.float32)[None, :, :, None]
    reduced = jaxplain.Model(
        lambda v, x: (segmenter.apply(v, x) * weights).sum(axis=(1, 2)), segmenter_variables
    )
    expected = jaxplain.integrated_gradients(reduced, images, target=1, steps=32)
    _close(ns["region_attribution"].values, expected.values, 1e-4, 1e-6)

    two_inputs, two_variables, inputs = ns["two_inputs"], ns["two_variables"], ns["inputs"]
    size = int(np.prod(inputs["image"].shape[1:]))

    def flat_apply(v, flat):
        image = flat[:, :size].reshape((-1,) + inputs["image"].shape[1:])
        return two_inputs.apply(v, image, flat[:, size:])

    flat = jnp.concatenate([inputs["image"].reshape(2, -1), inputs["table"]], axis=1)
    expected = jaxplain.integrated_gradients(
        jaxplain.Model(flat_apply, two_variables), flat, target="predicted", steps=64
    )
    got = ns["both_attribution"]
    _close(got.values["image"].reshape(2, -1), expected.values[:, :size], 1e-4, 1e-6)
    _close(got.values["table"], expected.values[:, size:], 1e-4, 1e-6)
    total = got.values["image"].reshape(2, -1).sum(1) + got.values["table"].sum(1)
    _close(total, got.output_difference, 2e-2, 1e-3)  # completeness over both inputs


def test_variables_from_flax_serialization_work_as_they_are(tmp_path):
    ns = _run("7", tmp_path)
    leaves = jax.tree_util.tree_leaves(ns["variables"])
    assert leaves and all(isinstance(leaf, np.ndarray) for leaf in leaves)
    as_jax = jaxplain.Model.from_linen(ns["module"], jax.tree_util.tree_map(jnp.asarray, ns["variables"]))
    ids = ns["token_ids"]
    _close(ns["model"](ids), as_jax(ids))
    expected = jaxplain.exact_shapley(as_jax, ids, target=0, baseline=0)
    _close(ns["shap"].values, expected.values)
    _close(ns["shap"].values.sum(1), expected.output_difference, 1e-4, 1e-6)  # efficiency


@pytest.mark.slow  # the doc's exact command, steps=auto compiled twice; test_cli checks --module by default
def test_the_command_line_explains_a_users_module(tmp_path, monkeypatch):
    ns = _run("8", tmp_path)
    (command,) = _blocks(_sections()["8"], "console")
    argv = shlex.split(command.replace("/tmp/porting", str(tmp_path)))
    assert argv[0] == "jaxplain"
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv[1:]) == 0
    got = jaxplain.load_attributions(tmp_path / "explained", require_complete=True)

    model = jaxplain.Model.from_linen(ns["module"], ns["variables"])
    x = ns["digits"].x_test[:4]
    expected = jaxplain.integrated_gradients(model, x, target="predicted", steps="auto", tolerance=0.01)
    _close(got.values, expected.values, 1e-4, 1e-6)
    assert float(jnp.max(expected.relative_delta)) <= 0.01


# Section 9's claims, each checked.


def test_a_region_is_one_mask_for_the_batch_and_per_example_masks_go_in_model_kwargs():
    class Segmenter(nn.Module):
        @nn.compact
        def __call__(self, x, mask=None):
            scores = nn.Conv(2, (3, 3))(x)
            return scores if mask is None else (scores * mask[..., None]).sum(axis=(1, 2))

    module = Segmenter()
    x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 1))
    variables = module.init(jax.random.key(1), x[:1])
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, :2], masks[1, :, 2:] = 1, 1
    with pytest.raises(OutputStructureError, match=r"the mask has shape \(2, 4, 4\)"):
        jaxplain.Model.from_linen(module, variables, output=jaxplain.region(masks))(x)
    per_example = jaxplain.saliency(
        jaxplain.Model.from_linen(module, variables), x, target=1, model_kwargs={"mask": masks}
    )
    for i in range(2):
        one = jaxplain.Model.from_linen(module, variables, output=jaxplain.region(masks[i]))
        _close(per_example.values[i], jaxplain.saliency(one, x[i : i + 1], target=1).values[0])


def test_integer_inputs_and_shared_arguments_are_refused_with_the_way_out():
    model = jaxplain.Model.from_callable(lambda x: x["a"] * x["b"].astype(jnp.float32))
    inputs = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3), jnp.int32)}
    with pytest.raises(TypeError, match=r"x\['b'\] has dtype int32.*as model_kwargs"):
        jaxplain.integrated_gradients(model, inputs, target=0)
    with pytest.raises(
        ValueError, match=r"one row per example.*Model.from_linen\(module, variables, name=value\)"
    ):
        jaxplain.saliency(
            jaxplain.Model.from_callable(lambda x: x),
            jnp.ones((2, 3)),
            target=0,
            model_kwargs={"t": np.float32(2)},
        )

    class Tempered(nn.Module):
        @nn.compact
        def __call__(self, x, temperature: float):
            return nn.Dense(2)(x) / temperature

    module = Tempered()
    variables = module.init(jax.random.key(0), jnp.ones((1, 3)), 2.0)
    shared = jaxplain.Model.from_linen(module, variables, temperature=2.0)
    _close(shared(jnp.ones((2, 3))), module.apply(variables, jnp.ones((2, 3)), 2.0))


class _DropoutAtCall(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)
        self.dropout = nnx.Dropout(0.5)

    def __call__(self, x, rngs):  # no default: the caller must pass rngs
        return self.linear(self.dropout(x, rngs=rngs))


def test_load_model_passes_no_nnx_call_arguments_and_from_nnx_does(tmp_path):
    model = _DropoutAtCall(nnx.Rngs(0))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "nnx", nnx.state(model))
    checkpointer.wait_until_finished()
    x = jnp.ones((2, 3))
    loaded = jaxplain.load_model(tmp_path / "nnx", module=lambda: _DropoutAtCall(nnx.Rngs(1)))
    with pytest.raises(TypeError, match="rngs"):
        loaded(x)
    _close(jaxplain.Model.from_nnx(model, rngs=None)(x), model.linear(x))


class _TrainWithoutDefault(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(2)(nn.BatchNorm(use_running_average=not train)(x))


def test_load_model_restores_a_module_whose_train_has_no_default(tmp_path):
    module = _TrainWithoutDefault()
    x = jax.random.normal(jax.random.key(0), (2, 3))
    variables = module.init(jax.random.key(1), x, train=False)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "linen", variables)
    checkpointer.wait_until_finished()
    restored = jaxplain.load_model(tmp_path / "linen", module=module, input_shape=(3,))
    _close(restored(x), module.apply(variables, x, train=False))


def test_the_command_line_takes_named_datasets_only(tmp_path, capsys):
    np.savez(tmp_path / "mine.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    argv = [
        "explain",
        "--model",
        "digits_cnn",
        "--data",
        str(tmp_path / "mine.npz"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2
    assert "cannot load dataset" in capsys.readouterr().err
