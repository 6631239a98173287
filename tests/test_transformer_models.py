"""The zoo's transformers (ViT, CausalLM), the synthetic generation tasks and the shipped
`digits_vit` and `copy_lm`: forward passes equal a float64 NumPy transcription of the
architecture, the LM is causal, and the checkpoints reproduce their recorded accuracies."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
from jaxplain import models
from jaxplain.cli import main as cli_main
from jaxplain.data import sequences
from jaxplain.models import lm


def random_variables(module, example, seed=0):
    """Variables shaped as `module.init` makes them, drawn with NumPy (no init to compile).

    Random biases, LayerNorm scales and class token (not a fresh init's zeros and ones), so
    that a wrongly wired parameter cannot hide.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), example)

    def draw(path, leaf):
        fan_in = np.prod(leaf.shape[:-1]) if path[-1].key == "kernel" else 1
        value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
        return jnp.asarray(value + (path[-1].key == "scale"), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


# A float64 NumPy transcription of the architectures, written from their definitions.


def layer_norm(x, p):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def gelu(x):  # flax's nn.gelu: the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def attention(x, p, causal):
    q, k, v = (
        np.einsum("bld,dhk->blhk", x, p[n]["kernel"]) + p[n]["bias"] for n in ("query", "key", "value")
    )
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    if causal:
        length = x.shape[1]
        logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhqs,bshk->bqhk", weights, v)
    return np.einsum("bqhk,hkd->bqd", heads, p["out"]["kernel"]) + p["out"]["bias"]


def block(x, p, causal=False):
    x = x + attention(layer_norm(x, p["LayerNorm_0"]), p["MultiHeadDotProductAttention_0"], causal)
    hidden = gelu(layer_norm(x, p["LayerNorm_1"]) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return x + hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def vit_reference(params, images, patch, depth):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    n, height, width, channels = images.shape
    patches = images.reshape(n, height // patch, patch, width // patch, patch, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, patch * patch * channels)
    kernel = p["patch_embedding"]["kernel"].reshape(patch * patch * channels, -1)
    x = patches @ kernel + p["patch_embedding"]["bias"]
    x = np.concatenate([np.repeat(p["class_token"], n, axis=0), x], axis=1) + p["position_embedding"]
    for index in range(depth):
        x = block(x, p[f"block_{index}"])
    return layer_norm(x, p["final_norm"])[:, 0] @ p["head"]["kernel"] + p["head"]["bias"]


def lm_reference(params, ids, depth):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["token_embedding"]["embedding"][ids] + p["position_embedding"][: ids.shape[1]]
    for index in range(depth):
        x = block(x, p[f"blocks_{index}"], causal=True)
    return layer_norm(x, p["final_norm"]) @ p["head"]["kernel"] + p["head"]["bias"]


TINY_VIT = {"num_classes": 3, "patch_size": 2, "hidden": 8, "depth": 2, "heads": 2, "mlp_dim": 16}
TINY_LM = {"vocab_size": 11, "max_length": 7, "hidden": 8, "depth": 2, "heads": 2, "mlp_dim": 16}


def tiny_lm(seed=0):
    module = models.build("causal_lm", **TINY_LM)
    return module, random_variables(module, jnp.zeros((1, TINY_LM["max_length"]), jnp.int32), seed)


def jitted(module):
    return jax.jit(module.apply, static_argnames="method")


def test_vit_equals_a_numpy_transcription_of_its_architecture():
    module = models.build("vit", **TINY_VIT)
    images = np.random.default_rng(1).uniform(size=(3, 4, 6, 2)).astype(np.float32)
    variables = random_variables(module, images[:1])
    logits = jitted(module)(variables, images)
    assert logits.shape == (3, 3)
    # 6 patches of 2x2 and the class token
    assert variables["params"]["position_embedding"].shape == (1, 7, 8)
    expected = vit_reference(variables["params"], images.astype(np.float64), patch=2, depth=2)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_vit_refuses_images_its_patches_do_not_tile():
    module = models.build("vit", **TINY_VIT)
    with pytest.raises(
        ValueError, match="patch_size 2 must divide the image's height and width, got images of 5x6"
    ):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, 6, 1)))
    with pytest.raises(ValueError, match=r"x must be images \(batch, height, width, channels\)"):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8)))


def test_causal_lm_equals_a_numpy_transcription_of_its_architecture():
    module, variables = tiny_lm()
    ids = np.random.default_rng(2).integers(0, 11, (3, 6))
    logits = jitted(module)(variables, ids)
    assert logits.shape == (3, 6, 11)
    np.testing.assert_allclose(logits, lm_reference(variables["params"], ids, depth=2), rtol=1e-4, atol=1e-4)


def test_causal_lm_logits_at_t_do_not_see_later_tokens():
    module, variables = tiny_lm()
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 11, (4, 7))
    apply = jitted(module)
    logits = np.asarray(apply(variables, ids))
    for t in range(6):
        changed = ids.copy()
        changed[:, t + 1 :] = rng.integers(0, 11, (4, 6 - t))
        after = np.asarray(apply(variables, changed))
        np.testing.assert_allclose(after[:, : t + 1], logits[:, : t + 1], rtol=1e-5, atol=1e-6)
        # the next position does see the change (a model that ignored its input passes the above)
        assert np.abs(after[:, t + 1] - logits[:, t + 1]).max() > 1e-3


def test_causal_lm_on_its_embeddings_equals_on_its_ids():
    module, variables = tiny_lm()
    ids = np.random.default_rng(4).integers(0, 11, (2, 7))
    apply = jitted(module)
    embeddings = apply(variables, ids, method="embed")
    assert embeddings.shape == (2, 7, 8)
    np.testing.assert_allclose(
        apply(variables, embeddings, method="logits_from_embeddings"),
        apply(variables, ids),
        rtol=1e-6,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="length 8, more than max_length=7"):
        jax.eval_shape(module.apply, variables, np.zeros((1, 8), np.int32))


def test_generate_equals_a_loop_that_feeds_back_the_argmax():
    module, variables = tiny_lm()
    prompts = np.random.default_rng(5).integers(0, 11, (3, 3))
    generated = lm.generate(module, variables, prompts, steps=4)
    # Random tokens after the prefix, where generate has zeros; causality makes both right.
    rng, apply = np.random.default_rng(6), jitted(module)
    ids = np.concatenate([prompts, rng.integers(0, 11, (3, 4))], axis=1)
    for t in range(3, 7):
        ids[:, t] = np.asarray(apply(variables, ids))[:, t - 1].argmax(-1)
        ids[:, t + 1 :] = rng.integers(0, 11, (3, 6 - t))
    np.testing.assert_array_equal(generated, ids[:, 3:])
    with pytest.raises(ValueError, match="exceed max_length=7"):
        lm.generate(module, variables, prompts, steps=5)
    with pytest.raises(ValueError, match="prompts holds ids outside 0..10"):
        lm.generate(module, variables, prompts + 11, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        lm.generate(module, variables, prompts, steps=0)


def test_copy_task_answers_copy_the_source_positions():
    task = jaxplain.data.copy_task(50, length=5, vocab_size=9, seed=3)
    assert task.prompts.shape == (50, 6) and task.generated.shape == task.sources.shape == (50, 5)
    assert task.prompts.dtype == task.generated.dtype == task.sources.dtype == np.int32
    assert (task.prompts[:, -1] == sequences.COPY_SEPARATOR).all()
    np.testing.assert_array_equal(np.take_along_axis(task.prompts, task.sources, 1), task.generated)
    np.testing.assert_array_equal(task.sources, np.tile(np.arange(5), (50, 1)))
    assert task.generated.min() >= sequences.FIRST_CONTENT and task.generated.max() == 8
    np.testing.assert_array_equal(task.sequences(), np.concatenate([task.prompts, task.generated], 1))
    same, other = (
        jaxplain.data.copy_task(50, length=5, vocab_size=9, seed=3),
        jaxplain.data.copy_task(50, length=5, vocab_size=9, seed=4),
    )
    np.testing.assert_array_equal(same.prompts, task.prompts)
    assert not np.array_equal(other.prompts, task.prompts)


def test_key_value_task_answers_are_the_queried_keys_values():
    task = jaxplain.data.key_value_task(200, pairs=3, vocab_size=10, seed=0)
    assert task.prompts.shape == (200, 8) and task.generated.shape == task.sources.shape == (200, 1)
    keys = task.prompts[:, 0:6:2]
    assert all(len(set(row)) == 3 for row in keys)  # distinct keys: the answer is unambiguous
    assert (task.prompts[:, 6] == sequences.KEY_VALUE_SEPARATOR).all()
    np.testing.assert_array_equal(np.take_along_axis(task.prompts, task.sources, 1), task.generated)
    # the value follows the queried key's occurrence, and the query varies over the pairs
    np.testing.assert_array_equal(
        np.take_along_axis(task.prompts, task.sources - 1, 1)[:, 0], task.prompts[:, -1]
    )
    assert set(task.sources[:, 0]) == {1, 3, 5}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: jaxplain.data.copy_task(0), "n must be an integer >= 1"),
        (lambda: jaxplain.data.copy_task(2, length=2.5), "length must be an integer >= 1"),
        (lambda: jaxplain.data.copy_task(2, vocab_size=3), "vocab_size must be an integer >= 4"),
        (
            lambda: jaxplain.data.key_value_task(2, pairs=8, vocab_size=10),
            r"pairs \(8\) must be at most the 7 content tokens",
        ),
    ],
)
def test_tasks_name_the_bad_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.slow  # a shipped checkpoint re-measured
def test_shipped_digits_vit_reproduces_its_recorded_accuracy():
    metadata = jaxplain.io.read_metadata("digits_vit")
    assert metadata["architecture"] == "vit" and metadata["dataset"] == "digits"
    model = jaxplain.load_model("digits_vit")
    data = jaxplain.data.load("digits")
    accuracy = float(np.mean(np.asarray(forward(model, data.x_test)).argmax(1) == data.y_test))
    assert accuracy == pytest.approx(metadata["test_accuracy"], abs=1e-6)
    assert accuracy >= 0.95


HELD_OUT = {  # shipped language model: (task, the task's settings)
    "copy_lm": (jaxplain.data.copy_task, {"length": 8, "vocab_size": 16}),
    "key_value_lm": (jaxplain.data.key_value_task, {"pairs": 4, "vocab_size": 16}),
}


def shipped_lm(name):
    """The checkpoint and its held-out examples, drawn again as its metadata records."""
    checkpoint = jaxplain.io.load_checkpoint(name)
    metadata = checkpoint.metadata
    make, settings = HELD_OUT[name]
    assert make is lm.TASKS[metadata["task"]] and metadata["held_out"]["seed"] == 1
    assert metadata["task_config"] == settings
    return checkpoint, make(metadata["held_out"]["examples"], seed=1, **settings)


@jax.jit
def forward(model, x):
    return model(x)


@pytest.mark.slow  # a shipped checkpoint re-measured
def test_shipped_copy_lm_answers_its_held_out_prompts_and_copies_from_its_sources():
    checkpoint, held_out = shipped_lm("copy_lm")
    metadata = checkpoint.metadata
    prompt_length, answer = metadata["prompt_length"], metadata["generated_length"]
    assert held_out.generated.shape[1] == answer and metadata["greedy_token_accuracy"] >= 0.99
    # Greedy generation gives an example's whole answer exactly when every answer token is
    # the argmax given the correct tokens before it (the same prefixes): one forward pass
    # re-measures the recorded share of whole answers (the slow tier runs the generation).
    model = jaxplain.load_model("copy_lm")
    ids = held_out.sequences()
    predicted = np.asarray(forward(model, ids)).argmax(-1)[:, prompt_length - 1 : -1]
    whole = np.mean((predicted == held_out.generated).all(1))
    assert whole == pytest.approx(metadata["greedy_sequence_accuracy"], abs=1e-6)

    # The known answer: generated token j follows prompt token j (the copy of it fed back
    # changed too, so the sequence stays a correct copy) and nothing else.
    ids, predicted = ids[:200], predicted[:200]
    symbols = metadata["task_config"]["vocab_size"] - sequences.FIRST_CONTENT
    for j in range(answer):
        changed = ids.copy()
        changed[:, [j, prompt_length + j]] = (
            sequences.FIRST_CONTENT + (ids[:, [j]] - sequences.FIRST_CONTENT + 1) % symbols
        )
        after = np.asarray(forward(model, changed)).argmax(-1)[:, prompt_length - 1 : -1]
        assert np.mean(after[:, j] == changed[:, j]) >= 0.99
        others = np.arange(answer) != j
        assert np.mean(after[:, others] == predicted[:, others]) >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_shipped_lm_reproduces_its_greedy_accuracy(name):
    checkpoint, held_out = shipped_lm(name)
    measured = lm.greedy_accuracy(checkpoint.module, checkpoint.variables, held_out)
    assert measured["token_accuracy"] == pytest.approx(checkpoint.metadata["greedy_token_accuracy"], abs=1e-6)
    assert measured["sequence_accuracy"] == pytest.approx(
        checkpoint.metadata["greedy_sequence_accuracy"], abs=1e-6
    )
    assert measured["token_accuracy"] >= 0.99


@pytest.mark.slow  # a shipped checkpoint re-measured
def test_shipped_key_value_lm_answers_with_the_queried_keys_value():
    checkpoint, held_out = shipped_lm("key_value_lm")
    model = jaxplain.load_model("key_value_lm", output=lambda logits: logits[:, -1])
    prompts, rows = held_out.prompts, np.arange(len(held_out.prompts))
    # one answer token: greedy generation is the argmax after the prompt
    answers = np.asarray(forward(model, prompts)).argmax(-1)
    accuracy = np.mean(answers == held_out.generated[:, 0])
    assert accuracy == pytest.approx(checkpoint.metadata["greedy_token_accuracy"], abs=1e-6)
    assert accuracy >= 0.99

    # The known answer: the value at `sources` decides it; the other values do not.
    source = held_out.sources[:, 0]
    other = 2 * ((source // 2 + 1) % 4) + 1  # the next pair's value
    symbols = 16 - sequences.FIRST_CONTENT
    for position, moves in ((source, True), (other, False)):
        changed = prompts.copy()
        changed[rows, position] = (
            sequences.FIRST_CONTENT + (prompts[rows, position] - sequences.FIRST_CONTENT + 1) % symbols
        )
        after = np.asarray(forward(model, changed)).argmax(-1)
        assert np.mean(after == (changed[rows, source] if moves else answers)) >= 0.99
    # asking for the next pair's key gives the next pair's value
    changed = prompts.copy()
    changed[:, -1] = prompts[rows, other - 1]
    assert np.mean(np.asarray(forward(model, changed)).argmax(-1) == prompts[rows, other]) >= 0.99


def test_shipped_copy_lm_loads_as_a_model_on_ids_and_on_embeddings():
    checkpoint = jaxplain.io.load_checkpoint("copy_lm")
    ids = jaxplain.data.copy_task(200, seed=7).sequences()
    on_ids = jaxplain.load_model("copy_lm")
    assert forward(on_ids, ids).shape == (200, 17, 16)
    embeddings = jitted(checkpoint.module)(checkpoint.variables, ids, method="embed")
    on_embeddings = jaxplain.load_model("copy_lm", method="logits_from_embeddings")
    np.testing.assert_allclose(forward(on_embeddings, embeddings), forward(on_ids, ids), rtol=1e-5, atol=1e-5)
    # one answer position's next-token scores, as the (batch, classes) a method explains
    first_answer = on_embeddings.with_output(lambda logits: logits[:, 8])
    assert forward(first_answer, embeddings).shape == (200, 16)
    np.testing.assert_array_equal(np.asarray(forward(first_answer, embeddings)).argmax(-1), ids[:, 0])


def test_cli_train_causal_lm_refuses_a_dataset_that_is_not_a_task(tmp_path, capsys):
    assert cli_main(["train", "--model", "causal_lm", "--data", "digits", "--out", str(tmp_path / "lm")]) == 2
    assert "--data: a causal_lm trains on a task, one of copy, key_value" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "train",
                "--model",
                "causal_lm",
                "--data",
                "copy",
                "--config",
                '{"widht": 8}',
                "--out",
                str(tmp_path / "lm"),
            ]
        )
        == 2
    )
    assert "cannot build 'causal_lm'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_a_key_value_lm_that_loads_with_its_command(tmp_path):
    out = str(tmp_path / "kv")
    argv = [
        "train",
        "--model",
        "causal_lm",
        "--data",
        "key_value",
        "--config",
        '{"hidden": 16, "depth": 1, "heads": 2, "mlp_dim": 32}',
        "--epochs",
        "1",
        "--out",
        out,
    ]
    assert cli_main(argv) == 0
    checkpoint = jaxplain.io.load_checkpoint(out)
    metadata = checkpoint.metadata
    assert metadata["command"] == (
        "jaxplain train --model causal_lm --data key_value --config "
        f"""'{{"hidden": 16, "depth": 1, "heads": 2, "mlp_dim": 32}}' --epochs 1 --out {out}"""
    )
    assert (metadata["prompt_length"], metadata["generated_length"], checkpoint.module.max_length) == (
        10,
        1,
        11,
    )
    assert metadata["task_config"] == {"pairs": 4, "vocab_size": 16}
    held_out = jaxplain.data.key_value_task(
        metadata["held_out"]["examples"], seed=metadata["held_out"]["seed"], **metadata["task_config"]
    )
    measured = lm.greedy_accuracy(checkpoint.module, checkpoint.variables, held_out)
    assert measured["token_accuracy"] == pytest.approx(metadata["greedy_token_accuracy"], abs=1e-6)


def test_task_docstring_examples():
    result = doctest.testmod(sequences, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
