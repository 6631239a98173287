"""Attributions of generated text: all G generated tokens in one program, checked against
one call per token built here without jaxplain's engine (gradients and Gauss-Legendre IG
by hand, forward passes on occluded sequences), the causal mask, contrastive scores, IG's
completeness, a Linen and an NNX causal LM, rendering and the boundary errors."""

import doctest
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain import generation
from jaxplain.generation import generation_attributions

VOCAB, LENGTH, DIM = 11, 8, 8
PROMPT = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
GENERATED = np.array([[3, 9, 1], [2, 2, 10]])
FOILS = np.array([[4, 4, 7], [9, 1, 3]])
P, G = PROMPT.shape[1], GENERATED.shape[1]
SEQUENCE = np.concatenate([PROMPT, GENERATED], axis=1)


class Block(nn.Module):
    """A pre-LN decoder block: causal self-attention, then a GELU MLP."""

    heads: int = 2

    @nn.compact
    def __call__(self, x, mask):
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x), mask=mask)
        hidden = nn.gelu(nn.Dense(2 * x.shape[-1])(nn.LayerNorm()(x)))
        return x + nn.Dense(x.shape[-1])(hidden)


class LinenLM(nn.Module):
    """Token embedding, learned positions, one block, final LayerNorm, dense to the vocabulary."""

    def setup(self):
        self.token_embedding = nn.Embed(VOCAB, DIM)
        self.positions = self.param("positions", nn.initializers.normal(0.5), (LENGTH, DIM))
        self.block = Block()
        self.norm = nn.LayerNorm()
        self.head = nn.Dense(VOCAB)

    def embed(self, ids):
        return self.token_embedding(ids)

    def from_embeddings(self, embeddings):
        mask = nn.make_causal_mask(jnp.ones(embeddings.shape[:2]))
        x = self.block(embeddings + self.positions[: embeddings.shape[1]], mask)
        return self.head(self.norm(x))

    def __call__(self, ids):
        return self.from_embeddings(self.embed(ids))


class NnxLM(nnx.Module):
    """The same architecture in NNX."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(VOCAB, DIM, rngs=rngs)
        self.positions = nnx.Param(0.5 * jax.random.normal(rngs.params(), (LENGTH, DIM)))
        self.norm1 = nnx.LayerNorm(DIM, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=DIM, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(DIM, rngs=rngs)
        self.up = nnx.Linear(DIM, 2 * DIM, rngs=rngs)
        self.down = nnx.Linear(2 * DIM, DIM, rngs=rngs)
        self.norm3 = nnx.LayerNorm(DIM, rngs=rngs)
        self.head = nnx.Linear(DIM, VOCAB, rngs=rngs)

    def from_embeddings(self, embeddings):
        x = embeddings + self.positions[: embeddings.shape[1]]
        mask = nnx.make_causal_mask(jnp.ones(embeddings.shape[:2]))
        x = x + self.attention(self.norm1(x), mask=mask)
        x = x + self.down(nnx.gelu(self.up(self.norm2(x))))
        return self.head(self.norm3(x))

    def __call__(self, ids):
        return self.from_embeddings(self.embed(ids))


class Twin:
    """A model as jaxplain sees it, and the references computed from its plain functions,
    each compiled once (the generated position j is traced)."""

    def __init__(self, model, embed, from_embeddings):
        self.model, self.embed, self.from_embeddings = model, jax.jit(embed), from_embeddings

        def score(embeddings, j, token):  # one example's s_j: token's log-probability
            return jax.nn.log_softmax(jnp.take(from_embeddings(embeddings[None])[0], P + j - 1, axis=0))[
                token
            ]

        self.score = score
        self.gradients = jax.jit(jax.vmap(jax.grad(score), in_axes=(0, None, 0)))
        self.scores = jax.jit(lambda ids: jax.nn.log_softmax(from_embeddings(embed(ids))[:, P - 1 : -1]))
        self.baseline_scores = jax.jit(jax.vmap(score, in_axes=(0, None, 0)))

    def integrated(self, embeddings, baseline, j, tokens, steps):
        """Gauss-Legendre IG of s_j on the embeddings, summed over them: (batch, T), one
        gradient call per node, summed in float64."""
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        total = 0.0
        for alpha, weight in zip((nodes + 1) / 2, weights / 2):
            point = baseline + np.float32(alpha) * (embeddings - baseline)
            total = total + weight * np.asarray(self.gradients(point, j, tokens), np.float64)
        return (np.asarray(embeddings - baseline, np.float64) * total).sum(-1)


def random_weights(shapes, seed: int):
    """Weights drawn in NumPy for a tree of shapes (initialising by Flax compiles each
    initialiser: seconds for a model that runs in microseconds)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def linen():
    module = LinenLM()
    variables = random_weights(jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.asarray(SEQUENCE)), 0)
    return Twin(
        jaxplain.Model.from_linen(module, variables),
        jax.jit(lambda ids: module.apply(variables, ids, method=LinenLM.embed)),
        lambda e: module.apply(variables, e, method=LinenLM.from_embeddings),
    )


@pytest.fixture(scope="module")
def nnx_lm():
    graphdef, state = nnx.split(nnx.eval_shape(lambda: NnxLM(nnx.Rngs(1))))
    state = random_weights(state, 1)
    module = nnx.merge(graphdef, state)

    def call(method):
        return lambda inputs: getattr(nnx.merge(graphdef, state), method)(inputs)

    return Twin(jaxplain.Model.from_nnx(module), jax.jit(call("embed")), call("from_embeddings"))


_RESULTS = {}


def attribute(twin, method, **options):
    """generation_attributions, computed once per model, method and options."""
    key = (id(twin), method, repr(sorted(options.items(), key=lambda item: item[0])))
    if key not in _RESULTS:
        _RESULTS[key] = generation_attributions(twin.model, PROMPT, GENERATED, method=method, **options)
    return _RESULTS[key]


# --- references: one generated token at a time, without jaxplain ---------------------------


def reference_gradients(twin, j, tokens):
    """The embeddings and ds_j / de (batch, T, D) for each example's token `tokens[b]`."""
    embeddings = twin.embed(jnp.asarray(SEQUENCE))
    return embeddings, twin.gradients(embeddings, j, jnp.asarray(tokens))


def reference_scores(twin, sequences, tokens):
    """Log-probabilities (batch, G) of `tokens` after each sequence's positions P-1.."""
    log_probs = np.asarray(twin.scores(jnp.asarray(sequences)))
    return np.take_along_axis(log_probs, np.asarray(tokens)[..., None], -1)[..., 0]


def reference_occlusion(twin, baseline, tokens, window=1):
    """s(x) - s(x with tokens [s, s + window) replaced), averaged per token: (batch, G, T)."""
    at_x = reference_scores(twin, SEQUENCE, tokens)
    total, count = np.zeros((len(SEQUENCE), G, SEQUENCE.shape[1])), np.zeros(SEQUENCE.shape[1])
    for start in range(SEQUENCE.shape[1] - window + 1):
        occluded = SEQUENCE.copy()
        occluded[:, start : start + window] = baseline
        drop = at_x - reference_scores(twin, occluded, tokens)
        total[:, :, start : start + window] += drop[:, :, None]
        count[start : start + window] += 1
    return total / count


# --- equality with one call per generated token ------------------------------------------------


@pytest.mark.parametrize("method", [pytest.param("saliency", marks=pytest.mark.slow), "input_x_gradient"])
def test_gradient_methods_equal_per_token_gradients(linen, method):
    result = attribute(linen, method)
    assert result.values.shape == (2, G, P + G)
    for j in range(G):
        embeddings, grads = reference_gradients(linen, j, GENERATED[:, j])
        expected = jnp.linalg.norm(grads, axis=-1) if method == "saliency" else (embeddings * grads).sum(-1)
        np.testing.assert_allclose(result.values[:, j], expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(result.scores, reference_scores(linen, SEQUENCE, GENERATED), atol=1e-5)


def test_integrated_gradients_equals_per_token_quadrature_and_is_complete(linen):
    steps = 50  # the default, from the default baseline: the padding id 0
    result = attribute(linen, "integrated_gradients")
    embeddings = linen.embed(jnp.asarray(SEQUENCE))
    baseline = linen.embed(jnp.zeros_like(jnp.asarray(SEQUENCE)))
    for j in range(G):
        expected = linen.integrated(embeddings, baseline, j, jnp.asarray(GENERATED[:, j]), steps)
        np.testing.assert_allclose(result.values[:, j], expected, atol=1e-5, rtol=1e-5)
    # Completeness: the sources' sum is s(x) - s(baseline), the baseline scoring the same tokens.
    at_baseline = [linen.baseline_scores(baseline, j, jnp.asarray(GENERATED[:, j])) for j in range(G)]
    expected = np.asarray(result.scores) - np.stack(at_baseline, axis=1)
    np.testing.assert_allclose(result.output_difference, expected, atol=1e-5)
    np.testing.assert_allclose(result.values.sum(-1), expected, atol=2e-3 * np.abs(expected).max())
    np.testing.assert_allclose(result.delta, result.values.sum(-1) - expected, atol=1e-5)


@pytest.mark.parametrize("method", ["occlusion", pytest.param("feature_ablation", marks=pytest.mark.slow)])
def test_perturbation_methods_equal_per_position_forward_passes(linen, method):
    result = attribute(linen, method, baseline=5)
    np.testing.assert_allclose(result.values, reference_occlusion(linen, 5, GENERATED), atol=1e-5)


@pytest.mark.slow
def test_occlusion_window_averages_as_captum(linen):
    result = attribute(linen, "occlusion", window=2, baseline=0)
    expected = reference_occlusion(linen, 0, GENERATED, window=2)
    expected = np.where(generation._causal(P, P + G), expected, 0.0)
    np.testing.assert_allclose(result.values, expected, atol=1e-5)


@pytest.mark.slow
def test_feature_ablation_groups_tokens(linen):
    groups = np.array([0, 0, 1, 1, 2, 3, 4])
    result = attribute(linen, "feature_ablation", feature_mask=tuple(groups), baseline=0)
    at_x = reference_scores(linen, SEQUENCE, GENERATED)
    for group in range(groups.max() + 1):
        ablated = np.where(groups == group, 0, SEQUENCE)
        drop = at_x - reference_scores(linen, ablated, GENERATED)
        for t in np.flatnonzero(groups == group):
            expected = np.where(t < P + np.arange(G), drop, 0.0)
            np.testing.assert_allclose(result.values[:, :, t], expected, atol=1e-5)


@pytest.mark.parametrize(
    "method", ["input_x_gradient", pytest.param("integrated_gradients", marks=pytest.mark.slow)]
)
def test_the_prefix_groups_do_not_change_the_values(linen, method):
    # G = 3 runs as one group by default; one group per token runs each on its own prefix
    grouped = generation_attributions(linen.model, PROMPT, GENERATED, method=method, prefix_groups=3)
    np.testing.assert_allclose(grouped.values, attribute(linen, method).values, atol=1e-6)
    if grouped.output_difference is not None:
        np.testing.assert_allclose(
            grouped.output_difference, attribute(linen, method).output_difference, atol=1e-6
        )


@pytest.mark.parametrize("with_integrated_gradients", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_baseline_per_position_keeps_the_generated_tokens_as_they_are(linen, with_integrated_gradients):
    # Captum's LLMGradientAttribution and Inseq attribute to the prompt only: the prompt's
    # positions move to the baseline, the generated tokens stay
    baseline = np.concatenate([np.zeros(P, int), GENERATED[0]])
    per_example = np.concatenate([np.zeros((2, P), int), GENERATED], axis=1)
    methods = [("occlusion", reference_occlusion(linen, 0, GENERATED))]
    if with_integrated_gradients:
        methods.append(("integrated_gradients", None))
    for method, expected in methods:
        result = attribute(linen, method, baseline=tuple(baseline))
        values = np.asarray(result.values)
        assert np.abs(values[0, :, P:]).max() < 1e-5  # example 0's generated tokens unchanged
        if expected is not None:
            np.testing.assert_allclose(values[0, :, :P], expected[0, :, :P], atol=1e-5)
        both = attribute(linen, method, baseline=per_example)
        assert np.abs(np.asarray(both.values)[:, :, P:]).max() < 1e-5
        np.testing.assert_allclose(both.values[0], result.values[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"baseline must be one token id, ids per position \(7,\)"):
        generation_attributions(linen.model, PROMPT, GENERATED, baseline=np.zeros(3, int))


# --- the causal mask, contrast, NNX ------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    # the mask is one line for every method: two of them in the default tier
    [
        "input_x_gradient",
        pytest.param("integrated_gradients", marks=pytest.mark.slow),
        "occlusion",
        pytest.param("lrp", marks=pytest.mark.slow),
    ],
)
def test_sources_at_or_after_the_scored_token_are_zero(linen, method):
    values = np.asarray(attribute(linen, method).values)
    visible = generation._causal(P, P + G)
    assert (values[:, ~visible] == 0).all()
    # the causal model itself gives them no share: the per-token references agree
    # above (unmasked), and every visible source has one
    assert (values[:, visible] != 0).mean() > 0.9


@pytest.mark.parametrize("method", ["input_x_gradient", pytest.param("occlusion", marks=pytest.mark.slow)])
def test_contrast_is_the_token_minus_the_foil(linen, method):
    result = attribute(linen, method, contrast=FOILS)
    if method == "occlusion":
        expected = reference_occlusion(linen, 0, GENERATED) - reference_occlusion(linen, 0, FOILS)
    else:
        expected = []
        for j in range(G):
            embeddings, token = reference_gradients(linen, j, GENERATED[:, j])
            _, foil = reference_gradients(linen, j, FOILS[:, j])
            expected.append((embeddings * (token - foil)).sum(-1))
        expected = np.stack(expected, axis=1)
    np.testing.assert_allclose(result.values, expected, atol=1e-5)
    scores = reference_scores(linen, SEQUENCE, GENERATED) - reference_scores(linen, SEQUENCE, FOILS)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(result.contrast, FOILS)


@pytest.mark.parametrize("method", ["input_x_gradient", pytest.param("occlusion", marks=pytest.mark.slow)])
def test_nnx_model(nnx_lm, method):
    result = attribute(nnx_lm, method)
    if method == "occlusion":
        expected = reference_occlusion(nnx_lm, 0, GENERATED)
    else:
        expected = []
        for j in range(G):
            embeddings, grads = reference_gradients(nnx_lm, j, GENERATED[:, j])
            expected.append((embeddings * grads).sum(-1))
        expected = np.stack(expected, axis=1)
    np.testing.assert_allclose(result.values, expected, atol=1e-5)


def test_lrp_equals_per_token_lrp_calls(linen):
    """LRP of each generated token's logit, one jaxplain.lrp call per token on a model of
    the embeddings that selects that logit with constant one-hot weights."""
    result = attribute(linen, "lrp")
    embeddings = linen.embed(jnp.asarray(SEQUENCE))

    def logit(params, e):
        position, token = params
        logits = linen.from_embeddings(e)
        return (logits * position[None, :, None] * token[:, None, :]).sum(axis=(1, 2))[:, None]

    for j in range(G):
        position, token = jax.nn.one_hot(P + j - 1, P + G), jax.nn.one_hot(GENERATED[:, j], VOCAB)
        single = jaxplain.lrp(jaxplain.Model(logit, (position, token)), embeddings, target=0)
        np.testing.assert_allclose(result.values[:, j], single.values.sum(-1), atol=1e-5)
        np.testing.assert_allclose(result.scores[:, j], single.output_difference, atol=1e-5)
    np.testing.assert_allclose(result.delta, result.values.sum(-1) - result.scores, atol=1e-5)


def test_one_program_for_every_generated_token(linen):
    attribute(linen, "input_x_gradient")
    traces = generation._attribute.traces
    other = generation_attributions(
        linen.model, PROMPT[::-1], GENERATED[::-1], method="input_x_gradient"
    )  # same shapes: the compiled program is reused
    assert generation._attribute.traces == traces
    np.testing.assert_allclose(other.values[::-1], attribute(linen, "input_x_gradient").values, atol=1e-6)


# --- rendering ------------------------------------------------------------------------------


def test_heatmap_and_html(linen, tmp_path):
    from matplotlib.figure import Figure

    result = attribute(linen, "input_x_gradient")
    words = [f"w{i}" for i in range(P + G - 1)] + ["<b>"]
    figure = result.heatmap(words, example=1)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    cells = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
    assert np.isnan(cells[~generation._causal(P, P + G)]).all()
    np.testing.assert_allclose(
        cells[generation._causal(P, P + G)], result.values[1][generation._causal(P, P + G)]
    )
    assert [t.get_text() for t in ax.get_yticklabels()] == words[P:]
    page = result.html(words, tmp_path / "page.html")
    assert (tmp_path / "page.html").read_text() == page
    assert page.count('class="row"') == G and "&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1]
    with pytest.raises(ValueError, match="tokens must be 7 strings"):
        result.html(words[:-1])
    with pytest.raises(ValueError, match="example must be"):
        result.heatmap(example=2)


# --- errors at the boundary --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"prompt": PROMPT[0]}, ValueError, r"prompt must be token ids of shape \(batch, length\)"),
        ({"prompt": PROMPT[:, :0]}, ValueError, "prompt must hold at least one token"),
        ({"generated": GENERATED[:1]}, ValueError, "generated has 1 examples but prompt has 2"),
        ({"generated": GENERATED.astype(float)}, TypeError, "generated must hold integer token ids"),
        ({"generated": GENERATED + VOCAB}, ValueError, r"generated holds token ids .*outside the vocabulary"),
        ({"prompt": -PROMPT}, ValueError, "prompt holds token ids"),
        ({"contrast": FOILS[:, :2]}, ValueError, "contrast must hold one foil id per generated token"),
        ({"contrast": FOILS + VOCAB}, ValueError, "contrast holds token ids"),
        ({"prompt": np.ones((2, LENGTH), int)}, ValueError, "model cannot be applied to the sequence"),
        ({"method": "gradcam"}, ValueError, "method must be one of"),
        ({"method": "saliency", "steps": 8}, ValueError, "steps is an option of integrated_gradients"),
        ({"method": "saliency", "baseline": 0}, ValueError, "baseline is an option of"),
        ({"method": "lrp", "rule": "zbox"}, ValueError, "rule must be one of"),
        ({"method": "occlusion", "baseline": "zero"}, ValueError, "baseline must be a token id"),
        ({"method": "occlusion", "baseline": VOCAB}, ValueError, "baseline holds token ids"),
        ({"method": "occlusion", "window": 9}, ValueError, "window must be at most"),
        ({"method": "occlusion", "layer": "token_embedding"}, ValueError, "layer is used by the gradient"),
        ({"layer": "Dense_0"}, ValueError, "layer 'Dense_0' is not a layer of this model; available layers"),
        ({"layer": "block/MultiHeadDotProductAttention_0/query"}, ValueError, "one vector per position"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"method": "feature_ablation", "feature_mask": (0, 2)}, ValueError, "feature_mask"),
    ],
)
def test_errors_name_the_argument(linen, change, error, message):
    arguments = {"prompt": PROMPT, "generated": GENERATED, **change}
    prompt, generated = arguments.pop("prompt"), arguments.pop("generated")
    with pytest.raises(error, match=message):
        generation_attributions(linen.model, prompt, generated, **arguments)


def test_errors_on_models(linen):
    classifier = jaxplain.Model(lambda w, x: x.astype(jnp.float32) @ w, jnp.ones((P + G, 3)))
    with pytest.raises(ValueError, match=r"model must map token ids \(batch, length\) to next-token logits"):
        generation_attributions(classifier, PROMPT, GENERATED)
    with pytest.raises(ValueError, match="model: generated text is scored by log-probabilities"):
        generation_attributions(linen.model.with_output("probs"), PROMPT, GENERATED)
    function = jaxplain.Model.from_callable(lambda ids: jax.nn.one_hot(ids, VOCAB))
    with pytest.raises(TypeError, match="layer methods need a Flax Linen or NNX model"):
        generation_attributions(function, PROMPT, GENERATED, method="saliency")
    # perturbation methods need only the function
    values = generation_attributions(function, PROMPT, GENERATED, method="occlusion").values
    assert values.shape == (2, G, P + G)


def test_docstring_example():
    result = doctest.testmod(generation, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow  # end to end: the shipped copy_lm, in a subprocess
def test_generation_mass_benchmark_runs(tmp_path):
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "generation_mass.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((tmp_path / "generation_mass.json").read_text())
    rows = {(row["checkpoint"], row["method"]): row for row in payload["rows"] if not row["options"]}
    methods = set(generation.METHODS) - {"feature_ablation"}
    assert set(rows) == {(c, m) for c in ("copy_lm", "key_value_lm") for m in methods}
    for row in rows.values():
        assert 0 <= row["min_mass_on_source"] <= row["mass_on_source"] <= 1
        assert row["over_chance"] == pytest.approx(row["mass_on_source"] / row["chance"])
    # the copy task's answer is its source token: every method finds it above chance
    assert all(rows["copy_lm", method]["over_chance"] > 2 for method in methods)
