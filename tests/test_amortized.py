"""Amortized explainers: the recipes learn, FastSHAP's objective and CoRTX's positives are
what the papers state, selective mode recomputes exactly the flagged examples, labels
cache and resume, explainers save and load."""

import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_model, mlp_model

import jaxplain
from jaxplain import amortized
from jaxplain.amortized import cortx, fastshap
from jaxplain.amortized import labels as labels_module
from jaxplain.methods.registry import METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES, CLASSES = 6, 2
MODEL = mlp_model(features=FEATURES, num_classes=CLASSES, seed=3)
X_TRAIN = np.random.default_rng(0).normal(size=(320, FEATURES)).astype(np.float32)
X_TEST = np.random.default_rng(1).normal(size=(64, FEATURES)).astype(np.float32)
QUICK = dict(epochs=40, batch_size=32, progress=False)


def network():
    return amortized.MLPExplainer(
        CLASSES, (FEATURES,), features=(32, 32), head_features=(32,), activation=jax.nn.relu
    )


@pytest.fixture(scope="module")
def train_labels():
    return amortized.make_labels(jaxplain.exact_shapley, MODEL, X_TRAIN, progress=False)


@pytest.fixture(scope="module")
def test_labels():
    return amortized.make_labels(jaxplain.exact_shapley, MODEL, X_TEST, progress=False)


@pytest.fixture(scope="module")
def supervised(train_labels):
    return amortized.train_supervised(network(), MODEL, X_TRAIN, train_labels, **QUICK)


def fidelity(explainer, test_labels, **call):
    a = explainer(MODEL, X_TEST, target="predicted", **call)
    reference = test_labels.values[np.arange(len(X_TEST)), np.asarray(a.target)]
    l2 = float(np.median(jaxplain.metrics.relative_l2_error(a.values, reference)))
    return l2, float(np.mean(jaxplain.metrics.spearman(a.values, reference)))


def untrained(explainer):
    variables = amortized.networks.init(explainer.network, X_TRAIN, seed=5)
    return dataclasses.replace(explainer, variables=variables)


# --- the recipes learn --------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    # one recipe in the default tier; the other two train the same loop end to end
    [
        "supervised",
        pytest.param("fastshap", marks=pytest.mark.slow),
        pytest.param("cortx", marks=pytest.mark.slow),
    ],
)
def test_training_loss_falls_and_fidelity_beats_an_untrained_network(
    recipe, supervised, train_labels, test_labels
):
    if recipe == "supervised":
        explainer = supervised
    elif recipe == "fastshap":
        explainer = amortized.train_fastshap(network(), MODEL, X_TRAIN, samples=16, **QUICK)
    else:
        encoder = amortized.pretrain_encoder(
            network(), MODEL, X_TRAIN, epochs=5, batch_size=64, progress=False
        )
        explainer = amortized.train_cortx(
            network(),
            MODEL,
            X_TRAIN,
            train_labels,
            label_fraction=0.25,
            encoder_variables=encoder,
            head_epochs=200,
            progress=False,
        )
    history = explainer.metadata["history"]
    assert history["last_train_loss"] < 0.5 * history["first_train_loss"]
    l2, rho = fidelity(explainer, test_labels)
    l2_untrained, rho_untrained = fidelity(untrained(explainer), test_labels)
    assert l2 < 0.5 * l2_untrained and rho > rho_untrained + 0.2
    assert rho > 0.8, (recipe, l2, rho)
    assert explainer.metadata["recipe"] == recipe


def test_efficiency_correction_makes_the_values_sum_to_the_output_change(supervised):
    corrected = supervised(MODEL, X_TEST, target=jaxplain.top_k(2))
    raw = supervised(MODEL, X_TEST, target=jaxplain.top_k(2), efficiency=False)
    chosen = np.asarray(corrected.target)
    at_reference = np.asarray(MODEL(np.zeros((1, FEATURES))))[0]
    expected = np.take_along_axis(np.asarray(MODEL(X_TEST)), chosen, 1) - at_reference[chosen]
    np.testing.assert_allclose(corrected.output_difference, expected, atol=1e-5)
    np.testing.assert_allclose(corrected.values.sum(-1), expected, atol=1e-5)
    np.testing.assert_allclose(corrected.delta, 0.0, atol=1e-5)
    np.testing.assert_allclose(raw.delta, raw.values.sum(-1) - expected, atol=1e-5)
    np.testing.assert_allclose(corrected.extras["raw_delta"], raw.delta, atol=1e-5)
    # The correction moves every feature by the same amount.
    shift = np.asarray(corrected.values - raw.values)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[..., :1], shift.shape), atol=1e-5)


# --- FastSHAP -----------------------------------------------------------------------------


def test_fastshap_objective_is_minimised_by_the_exact_shapley_values_of_a_linear_model(rng):
    groups, batch = 6, 4
    weights = rng.normal(size=(groups, CLASSES)).astype(np.float32)
    model = linear_model(weights, rng.normal(size=CLASSES).astype(np.float32))
    x = rng.normal(size=(batch, groups)).astype(np.float32)
    reference = np.full(groups, 0.3, np.float32)
    coalitions = fastshap.shapley_coalitions(jax.random.key(0), batch, 64, groups)
    values = fastshap._game(model, None, jnp.asarray(x), reference, np.arange(groups), coalitions)
    ends = fastshap._game(
        model,
        None,
        jnp.asarray(x),
        reference,
        np.arange(groups),
        jnp.broadcast_to(jnp.array([[False], [True]]), (batch, 2, groups)),
    )

    def loss(phi):
        return fastshap.objective(phi, coalitions, values, ends[:, 0], ends[:, 1])

    optimizer = optax.adam(0.05)
    phi = jnp.zeros((batch, CLASSES, groups))
    state = optimizer.init(phi)

    @jax.jit
    def step(phi, state):
        updates, state = optimizer.update(jax.grad(loss)(phi), state)
        return optax.apply_updates(phi, updates), state

    for _ in range(1500):
        phi, state = step(phi, state)
    phi = phi + ((ends[:, 1] - ends[:, 0]) - phi.sum(-1))[..., None] / groups  # the normalisation
    exact = np.swapaxes(weights[None] * (x - reference)[..., None], 1, 2)  # w_gc (x_g - r_g)
    np.testing.assert_allclose(phi, exact, atol=2e-3)
    assert (
        float(loss(jnp.asarray(exact)))
        < 1e-9
        < float(loss(jnp.asarray(exact) + 0.1 * jnp.eye(groups)[:CLASSES]))
    )


def test_shapley_coalitions_follow_the_kernel_and_come_with_their_complements():
    groups = 6
    z = np.asarray(fastshap.shapley_coalitions(jax.random.key(1), 2000, 8, groups))
    np.testing.assert_array_equal(z[:, 4:], ~z[:, :4])
    sizes = z[:, :4].sum(-1).ravel()
    s = np.arange(1, groups)
    kernel = (1 / (s * (groups - s))) / (1 / (s * (groups - s))).sum()
    observed = np.bincount(sizes, minlength=groups)[1:] / sizes.size
    np.testing.assert_allclose(observed, kernel, atol=0.015)
    assert sizes.min() >= 1 and sizes.max() <= groups - 1
    # Given its size, a coalition is uniform: every group equally likely.
    np.testing.assert_allclose(z.mean(axis=(0, 1)), 0.5, atol=0.02)


@pytest.mark.slow  # trains an explainer end to end
def test_fastshap_with_a_surrogate_learns_the_surrogates_game(test_labels):
    surrogate = amortized.train_surrogate(
        jaxplain.models.MLP(CLASSES, features=(32, 32)), MODEL, X_TRAIN, **{**QUICK, "epochs": 20}
    )
    present = np.ones_like(X_TEST, bool)
    wanted = jax.nn.softmax(MODEL(X_TEST))
    error = np.abs(
        jax.nn.softmax(surrogate.network.apply(surrogate.variables, X_TEST, present)) - wanted
    ).mean()
    start = surrogate.network.init(jax.random.PRNGKey(0), X_TEST[:1], present[:1])
    assert (
        error < 0.5 * np.abs(jax.nn.softmax(surrogate.network.apply(start, X_TEST, present)) - wanted).mean()
    )
    explainer = amortized.train_fastshap(network(), MODEL, X_TRAIN, surrogate=surrogate, samples=16, **QUICK)
    assert explainer.metadata["value_function"] == "surrogate"
    assert fidelity(explainer, test_labels)[1] > fidelity(untrained(explainer), test_labels)[1]


# --- CoRTX --------------------------------------------------------------------------------


def test_cortx_positives_follow_the_recipe():
    x = jnp.asarray(X_TEST[:8])
    reference = np.full(FEATURES, 0.25, np.float32)
    mask = np.array([0, 0, 1, 2, 3, 3])  # features 0-1 and 4-5 are replaced together
    key, candidates, p = jax.random.key(7), 30, 0.5
    positive, kept = cortx.positives(
        MODEL, x, key, reference=reference, mask=mask, groups=4, candidates=candidates, drop_probability=p
    )
    positive, kept = np.asarray(positive), np.asarray(kept)
    np.testing.assert_array_equal(positive, np.where(kept[:, mask], np.asarray(x), reference))
    # Candidates: each group dropped independently with probability p; the kept one has
    # the black-box probabilities closest to the anchor's.
    all_kept = ~np.asarray(jax.random.bernoulli(key, p, (8, candidates, 4)))
    copies = np.where(all_kept[:, :, mask], np.asarray(x)[:, None], reference)
    probs = np.asarray(jax.nn.softmax(MODEL(copies.reshape(-1, FEATURES)))).reshape(8, candidates, -1)
    distance = ((probs - np.asarray(jax.nn.softmax(MODEL(x)))[:, None]) ** 2).sum(-1)
    best = distance.argmin(1)
    np.testing.assert_array_equal(kept, all_kept[np.arange(8), best])
    assert np.all(distance[np.arange(8), best] <= distance.min(1) + 1e-9)
    many = ~np.asarray(jax.random.bernoulli(jax.random.key(8), p, (64, 64, 4)))
    assert abs(many.mean() - (1 - p)) < 0.02


def test_info_nce_prefers_matching_pairs_and_matches_a_hand_computation():
    a = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    matched = cortx.info_nce(a, a * 3.0, temperature=0.5)  # cosine ignores scale
    swapped = cortx.info_nce(a, a[::-1], temperature=0.5)
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(0.0)))
    assert float(matched) == pytest.approx(expected, rel=1e-6)
    assert float(swapped) > float(matched)


@pytest.mark.slow  # a training or labelling run; the recipes are checked in the default tier by their objectives
def test_cortx_reads_only_the_labelled_rows(train_labels):
    encoder = amortized.pretrain_encoder(network(), MODEL, X_TRAIN, epochs=2, progress=False)
    rows = amortized.labelled_rows(len(X_TRAIN), 0.1)
    assert len(rows) == 32
    garbled = dataclasses.replace(
        train_labels,
        values=np.where(np.isin(np.arange(len(X_TRAIN)), rows)[:, None, None], train_labels.values, 1e6),
    )
    settings = dict(label_fraction=0.1, encoder_variables=encoder, head_epochs=3, progress=False)
    first = amortized.train_cortx(network(), MODEL, X_TRAIN, train_labels, **settings)
    second = amortized.train_cortx(network(), MODEL, X_TRAIN, garbled, **settings)
    np.testing.assert_array_equal(
        first(MODEL, X_TEST, target=0).values, second(MODEL, X_TEST, target=0).values
    )
    assert first.metadata["label_fraction"] == 0.1 and first.metadata["labelled_examples"] == 32


# --- selective explanations ---------------------------------------------------------------


def test_selective_recomputes_exactly_the_flagged_examples(supervised, monkeypatch):
    gap = np.abs(np.asarray(supervised(MODEL, X_TEST, target="predicted").extras["raw_delta"]))
    tolerance = float(np.median(gap))
    calls = []
    teacher, settings = labels_module.method_settings(supervised.metadata["teacher"])

    def recording(model, x, **kwargs):
        calls.append(np.asarray(x))
        return teacher(model, x, **kwargs)

    module = importlib.import_module("jaxplain.amortized.selective")
    monkeypatch.setattr(module, "method_settings", lambda _: (recording, settings))
    result = amortized.selective(supervised, MODEL, X_TEST, target="predicted", tolerance=tolerance)
    flagged = gap > tolerance
    np.testing.assert_array_equal(result.extras["recomputed"], flagged)
    assert float(result.extras["recomputed_fraction"]) == pytest.approx(flagged.mean())
    assert len(calls) == 1
    recomputed = calls[0]
    np.testing.assert_array_equal(np.unique(recomputed, axis=0), np.unique(X_TEST[flagged], axis=0))
    fast = supervised(MODEL, X_TEST, target="predicted")
    exact = jaxplain.exact_shapley(MODEL, X_TEST, target=np.asarray(fast.target))
    np.testing.assert_allclose(result.values[flagged], exact.values[flagged], atol=1e-6)
    np.testing.assert_array_equal(result.values[~flagged], fast.values[~flagged])
    calls.clear()
    none = amortized.selective(supervised, MODEL, X_TEST, target="predicted", tolerance=1e9)
    assert not calls and float(none.extras["recomputed_fraction"]) == 0.0


def test_selective_needs_a_teacher_or_a_method(supervised):
    explainer = supervised.replace(recipe="fastshap", teacher=None)
    with pytest.raises(ValueError, match="no teacher; pass method="):
        amortized.selective(explainer, MODEL, X_TEST, target=0, tolerance=0.1)
    result = amortized.selective(explainer, MODEL, X_TEST, target=0, tolerance=0.0, method="exact_shapley")
    assert bool(np.all(result.extras["recomputed"]))
    np.testing.assert_allclose(
        result.values, jaxplain.exact_shapley(MODEL, X_TEST, target=0).values, atol=1e-6
    )


# --- teacher labels -----------------------------------------------------------------------


@pytest.mark.slow  # a training or labelling run; the recipes are checked in the default tier by their objectives
def test_make_labels_caches_resumes_and_keys_on_its_settings(tmp_path, monkeypatch):
    key = jax.random.key(3)
    x = X_TRAIN[:40]
    plain = amortized.make_labels("kernel_shap", MODEL, x, batch_size=16, samples=32, key=key, progress=False)
    assert plain.values.shape == (40, CLASSES, FEATURES)
    assert plain.teacher == {
        "method": "kernel_shap",
        "settings": {"samples": 32, "key": {"key_data": np.asarray(jax.random.key_data(key)).tolist()}},
    }
    calls = []
    real = METHODS["kernel_shap"]

    def interrupted(model, rows, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(rows))
        return real.function(model, rows, **kwargs)

    monkeypatch.setitem(METHODS, "kernel_shap", dataclasses.replace(real, function=interrupted))
    settings = dict(batch_size=16, samples=32, key=key, cache_dir=str(tmp_path), progress=False)
    with pytest.raises(KeyboardInterrupt):
        amortized.make_labels("kernel_shap", MODEL, x, **settings)
    assert calls == [16, 16]
    calls.clear()

    def counting(model, rows, **kwargs):
        calls.append(len(rows))
        return real.function(model, rows, **kwargs)

    monkeypatch.setitem(METHODS, "kernel_shap", dataclasses.replace(real, function=counting))
    resumed = amortized.make_labels("kernel_shap", MODEL, x, **settings)
    assert calls == [8]  # batches 0 and 1 came from the disk, only the last was computed
    np.testing.assert_array_equal(resumed.values, plain.values)
    calls.clear()
    cached = amortized.make_labels("kernel_shap", MODEL, x, **settings)
    assert calls == []
    np.testing.assert_array_equal(cached.values, plain.values)
    amortized.make_labels("kernel_shap", MODEL, x, **{**settings, "samples": 64})
    assert calls == [16, 16, 8]
    assert len(os.listdir(tmp_path)) == 2


def test_make_labels_checks_its_arguments():
    with pytest.raises(ValueError, match="registered jaxplain method"):
        amortized.make_labels(lambda model, x, target: None, MODEL, X_TEST)
    with pytest.raises(ValueError, match="do not pass target"):
        amortized.make_labels(jaxplain.exact_shapley, MODEL, X_TEST, target=0)


# --- the explainer object -------------------------------------------------------------------


def test_to_groups_is_the_group_mean_without_a_features_by_groups_matrix(rng):
    from jaxplain.amortized.explainer import to_groups

    mask = jaxplain.patch_mask((6, 5, 2), (4, 2, 2))  # groups of 8, 4, 2 and 1 features
    groups = int(mask.max()) + 1
    values = rng.normal(size=(3, 2, 6, 5, 2)).astype(np.float32)
    members = (mask.reshape(-1)[:, None] == np.arange(groups)).astype(np.float32)  # the formula it replaced
    expected = (values.reshape(3, 2, -1) @ members) / members.sum(axis=0)
    np.testing.assert_allclose(to_groups(values, mask, groups), expected, rtol=1e-6, atol=1e-7)
    assert to_groups(values, None, 60).shape == (3, 2, 60)
    # at 224x224x3 in 16x16 patches the one-hot matrix alone was 150528 x 196 floats (118 MB):
    # no array in the program is larger than the values themselves
    shape = (224, 224, 3)
    big = jax.ShapeDtypeStruct((1, 2, *shape), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda v, m: to_groups(v, m, 196))(big, jax.ShapeDtypeStruct(shape, jnp.int32))
    largest = max(int(np.prod(var.aval.shape)) for eqn in jaxpr.eqns for var in eqn.outvars)
    assert largest <= int(np.prod(big.shape))


def test_save_and_load_round_trip_and_refuse_corrupt_files(supervised, tmp_path):
    path = str(tmp_path / "explainer")
    supervised.replace(fidelity={"spearman": 0.9}, command="python make.py").save(path)
    loaded = amortized.load(path)
    np.testing.assert_array_equal(
        loaded(MODEL, X_TEST, target=1).values, supervised(MODEL, X_TEST, target=1).values
    )
    metadata = json.load(open(os.path.join(path, "metadata.json")))
    assert metadata["kind"] == "explainer" and metadata["recipe"] == "supervised"
    assert metadata["teacher"]["method"] == "exact_shapley" and metadata["label_fraction"] == 1.0
    assert metadata["fidelity"] == {"spearman": 0.9} and metadata["command"] == "python make.py"
    with pytest.raises(jaxplain.io.CheckpointError, match="cannot build architecture"):
        jaxplain.load_model(path)
    # other arrays of the same shapes under this metadata: the checksum refuses them
    other = str(tmp_path / "other")
    shifted = jax.tree_util.tree_map(lambda v: v + 1, supervised.variables)
    amortized.Explainer(supervised.network, shifted, supervised.metadata).save(other)
    shutil.rmtree(os.path.join(path, "variables"))
    shutil.copytree(os.path.join(other, "variables"), os.path.join(path, "variables"))
    with pytest.raises(jaxplain.io.CheckpointError, match="checksum"):
        amortized.load(path)
    with pytest.raises(jaxplain.io.CheckpointError, match="describes a model"):
        amortized.load(os.path.join(ROOT, "checkpoints", "wine_mlp"))


def test_the_explainer_checks_its_inputs(supervised):
    with pytest.raises(ValueError, match="takes \\(6,\\)"):
        supervised(mlp_model(features=5, num_classes=CLASSES), X_TEST[:, :5], target=0)
    with pytest.raises(ValueError, match="trained for one with 2"):
        supervised(mlp_model(features=FEATURES, num_classes=3), X_TEST, target=0)
    with pytest.raises(ValueError, match="outside the model's classes"):
        supervised(MODEL, X_TEST, target=5)
    with pytest.raises(ValueError, match="NaN"):
        supervised(MODEL, np.full_like(X_TEST, np.nan), target=0)


def test_explainer_is_a_pytree_that_jit_accepts(supervised):
    leaves, treedef = jax.tree_util.tree_flatten(supervised)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert again.metadata == supervised.metadata
    values = jax.jit(lambda e, x: e(MODEL, x, target=0).values)(supervised, X_TEST)
    np.testing.assert_allclose(values, supervised(MODEL, X_TEST, target=0).values, atol=1e-6)


# --- networks -----------------------------------------------------------------------------


@pytest.mark.slow  # a training or labelling run; the recipes are checked in the default tier by their objectives
def test_networks_give_one_map_per_class_shaped_like_the_input():
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    for patch in (1, 2):
        net = amortized.ConvExplainer(10, (8, 8, 1), channels=(4, 8), patch=patch)
        out = np.asarray(jax.jit(net.apply)(amortized.networks.init(net, images), images))
        assert out.shape == (2, 10, 8, 8, 1)
        blocks = out.reshape(2, 10, 8 // patch, patch, 8 // patch, patch, 1)
        np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :, :1, :, :1], blocks.shape))
    net = amortized.MLPExplainer(3, (4,), multiplier=True, reference=0.5)
    x = np.array([[0.5, 1.0, 0.5, 2.0]], np.float32)
    out = np.asarray(net.apply(amortized.networks.init(net, x), x))
    assert out.shape == (1, 3, 4) and np.all(out[..., [0, 2]] == 0)


@pytest.mark.slow  # trains an explainer end to end
def test_token_explainer_starts_from_the_classifiers_encoder():
    module = jaxplain.models.TextClassifier(
        vocab_size=12, num_classes=2, max_length=5, embed_dim=8, mlp_dim=16
    )
    tokens = np.array([[3, 4, 0, 0, 0], [5, 6, 7, 8, 9]], np.int32)
    variables = module.init(jax.random.PRNGKey(0), tokens)
    model = jaxplain.Model.from_linen(module, variables)
    net = amortized.networks.token_explainer_for(module, 2, 5)
    explainer_variables = amortized.networks.init(net, tokens, model=model)
    np.testing.assert_array_equal(
        explainer_variables["params"]["encoder"]["token_embedding"]["embedding"],
        variables["params"]["token_embedding"]["embedding"],
    )
    out = np.asarray(jax.jit(net.apply)(explainer_variables, tokens))
    assert out.shape == (2, 2, 5) and np.all(out[0, :, 2:] == 0)
    # The copied encoder computes the classifier's pooled states: its logits follow.
    pooled = net.apply(explainer_variables, tokens, method="embedding")
    head = variables["params"]["head"]
    np.testing.assert_allclose(pooled @ head["kernel"] + head["bias"], model(tokens), atol=1e-5)


# --- the study script ---------------------------------------------------------------------


@pytest.mark.slow  # end to end: the benchmark script in a subprocess
def test_the_study_runs_at_a_tiny_size(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "amortized.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "amortized.json").read_text())
    case = payload["cases"]["wine_mlp"]
    assert set(case["recipes"]) >= {"supervised", "cortx_10", "fastshap"}
    for row in case["recipes"].values():
        assert {"relative_l2", "spearman", "top_k_overlap", "speedup"} <= set(row)
    assert case["teacher_curve"]
    png = (tmp_path / "amortized.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_raw_prng_key_is_recorded_as_key_data_and_called_again():
    """A raw PRNGKey was recorded as an int list, read back as int64 and refused when the
    teacher was called again (selective's fallback)."""
    model = jaxplain.load_model("checkpoints/wine_mlp")
    x = jaxplain.data.load("wine").x_test[:2]
    raw = amortized.make_labels("kernel_shap", model, x, key=jax.random.PRNGKey(0), samples=8, progress=False)
    typed = amortized.make_labels("kernel_shap", model, x, key=jax.random.key(0), samples=8, progress=False)
    np.testing.assert_array_equal(raw.values, typed.values)
    method, settings = jaxplain.amortized.labels.method_settings(raw.teacher)
    assert settings["key"].dtype == jax.random.key(0).dtype
    again = method(model, x, target=0, **settings)  # refused before: an int64 array is no key
    assert again.values.shape == x.shape and np.all(np.isfinite(again.values))
