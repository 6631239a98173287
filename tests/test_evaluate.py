"""jaxplain.evaluate: every method judged by every metric, one table, known values."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model

import jaxplain
from jaxplain import metrics

KEY = jax.random.key(0)
X = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
WEIGHTS = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
LINEAR = linear_model(WEIGHTS)


@pytest.fixture(scope="module")
def table():
    return jaxplain.evaluate(
        {
            "saliency": "saliency",
            "ig": ("integrated_gradients", {"steps": 8}),
            "shapley": jaxplain.exact_shapley,
            "smoothgrad": ("smoothgrad", {"method": jaxplain.saliency, "samples": 4}),
        },
        LINEAR,
        X,
        target="predicted",
        key=KEY,
        samples=16,
        repeats=1,
    )


def test_one_row_per_method_and_one_column_per_metric(table):
    assert list(table.rows) == ["saliency", "ig", "shapley", "smoothgrad"]
    for row in table.rows.values():
        assert set(row) == {"ms_per_example", *metrics.DEFAULT_METRICS}
        assert row["ms_per_example"] > 0
    lines = str(table).splitlines()
    assert len(lines) == 2 + 4 and lines[2].startswith("| saliency |")
    payload = json.loads(table.to_json())
    assert payload["rows"]["ig"]["infidelity"] == table.rows["ig"]["infidelity"]


def test_values_are_the_metrics_themselves(table):
    """On a linear model IG and exact Shapley values are w (x - 0): complete, zero
    infidelity, perfect faithfulness correlation; saliency has no completeness."""
    for name in ("ig", "shapley"):
        row = table.rows[name]
        assert row["completeness"] < 1e-5 and row["infidelity"] < 1e-8
        assert row["faithfulness_correlation"] > 0.999
    assert table.rows["saliency"]["completeness"] is None
    # what evaluate reports is the mean of the metric on the same classes
    classes = np.asarray(LINEAR(X)).argmax(1)
    ig = jaxplain.integrated_gradients(LINEAR, X, target=classes, steps=8)
    scorer = LINEAR.with_output("probs")
    expected = float(np.mean(metrics.deletion(scorer, X, ig, target=classes).auc))
    assert table.rows["ig"]["deletion_auc"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow  # the shipped CNN with two layer methods
def test_layer_shaped_attributions_skip_the_input_metrics():
    cnn = jaxplain.load_model("checkpoints/digits_cnn")
    x = jaxplain.data.load("digits").x_test[:4]
    table = jaxplain.evaluate(
        {
            "lig": ("layer_integrated_gradients", {"layer": "Conv_1", "steps": 4}),
            "cam": ("grad_cam", {"layer": "Conv_1"}),
        },
        cnn,
        x,
        target="predicted",
        key=KEY,
        metrics=["infidelity", "deletion_auc"],
        samples=8,
        repeats=1,
    )
    assert table.rows["lig"]["infidelity"] is None and "not shaped like x" in table.notes["lig"]
    assert table.rows["cam"]["deletion_auc"] is not None  # a map spread over the channel


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"methods": ["magic"]}, ValueError, "methods: 'magic' is not a jaxplain method"),
        ({"methods": []}, ValueError, "methods is empty"),
        ({"metrics": ["accuracy"]}, ValueError, "metrics: unknown"),
        ({"target": [[0, 1]] * 6}, ValueError, "one class per example"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    arguments = {"methods": ["saliency"], "target": 0, "key": KEY, **kwargs}
    with pytest.raises(error, match=match):
        jaxplain.evaluate(arguments.pop("methods"), LINEAR, X, **arguments)


class PooledCNN(nn.Module):
    """Global average pooling: it takes images of any size, so focus's 2x2 mosaics too."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(3)(x.mean(axis=(1, 2)))


IMAGES = np.random.default_rng(2).uniform(size=(6, 8, 8, 1)).astype(np.float32)
CLASSES = np.array([0, 0, 1, 1, 2, 2])
OBJECTS = np.zeros((6, 8, 8), bool)
OBJECTS[:, 2:5, 3:6] = True


@pytest.fixture(scope="module")
def pooled():
    module = PooledCNN()
    return jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(0), IMAGES[:1]))


def test_metrics_of_every_group_are_the_metric_functions_themselves(pooled):
    """One metric of each kind, by evaluate and by hand on the same classes and keys; a
    Captum name is an alias whose column keeps the name asked for."""
    names = ["sensitivity_max", "sparseness", "pointing_game", "faithfulness_estimate"]
    table = jaxplain.evaluate(
        ["saliency"],
        pooled,
        IMAGES,
        target=CLASSES,
        key=KEY,
        metrics=names,
        samples=4,
        repeats=1,
        masks=OBJECTS,
    )
    row = table.rows["saliency"]
    assert set(row) == {"ms_per_example", *names} and set(table.seconds) == set(names)
    values = jaxplain.saliency(pooled, IMAGES, target=CLASSES).values
    keys = jax.random.split(jax.random.fold_in(KEY, 0), 1 + len(names))[1:]
    expected = {
        "sensitivity_max": metrics.max_sensitivity(
            jaxplain.saliency, pooled, IMAGES, target=CLASSES, key=keys[0], samples=4
        ),
        "sparseness": metrics.sparseness(values),
        "pointing_game": metrics.pointing_game(values, OBJECTS),
        "faithfulness_estimate": metrics.faithfulness_estimate(
            pooled, IMAGES, values, target=CLASSES, per_pixel=True
        ),
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(float(np.mean(value)), rel=1e-5), name
    assert table.as_dict()["metrics"]["sensitivity_max"]["group"] == "robustness"


def test_localisation_without_masks_is_none_with_a_note(pooled):
    table = jaxplain.evaluate(
        ["saliency"], pooled, IMAGES, target=CLASSES, key=KEY, metrics=["auc", "complexity"], repeats=1
    )
    assert table.rows["saliency"]["auc"] is None and "masks=" in table.notes["localisation"]
    assert table.rows["saliency"]["complexity"] > 0


def test_an_undefined_example_is_left_out_of_the_mean_with_a_note(pooled):
    """An all-zero attribution for example 0: its faithfulness estimate, a correlation with
    a constant, is undefined."""

    def zero_first(model, x, *, target):
        return jaxplain.Attribution(values=jnp.asarray(x).at[0].set(0.0), target=target)

    table = jaxplain.evaluate(
        {"input": zero_first},
        pooled,
        IMAGES,
        target=CLASSES,
        key=KEY,
        metrics=["faithfulness_estimate"],
        repeats=1,
    )
    each = metrics.faithfulness_estimate(
        pooled, IMAGES, jnp.asarray(IMAGES).at[0].set(0.0), target=CLASSES, per_pixel=True
    )
    assert np.isnan(each[0]) and np.isfinite(each[1:]).all()
    assert table.rows["input"]["faithfulness_estimate"] == pytest.approx(float(np.mean(each[1:])), rel=1e-5)
    assert table.notes["input faithfulness_estimate"] == "undefined (NaN) on 1 of 6 examples, left out"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"metrics": "everything"}, TypeError, "metrics must be 'all'"),
        ({"masks": np.zeros((6, 4, 4), bool)}, ValueError, "masks must be shaped like x"),
        ({"masks": np.full((6, 8, 8), 2)}, ValueError, "masks must be bool"),
        ({"representation_layer": 3}, TypeError, "representation_layer must be a layer name"),
        ({"methods": ["saliency", ("saliency", {})]}, ValueError, "two methods are labelled 'saliency'"),
    ],
)
def test_bad_metric_arguments_are_named(pooled, kwargs, error, match):
    arguments = {"methods": ["saliency"], "target": CLASSES, "key": KEY, **kwargs}
    with pytest.raises(error, match=match):
        jaxplain.evaluate(arguments.pop("methods"), pooled, IMAGES, **arguments)


@pytest.mark.slow  # every metric compiles: about a quarter of a minute
def test_every_metric_runs_on_images(pooled):
    """metrics="all": every metric gives a number, or says why not in the notes; more
    than 8 metrics print as one table per group."""
    table = jaxplain.evaluate(
        [("integrated_gradients", {"steps": 8})],
        pooled,
        IMAGES,
        target=CLASSES,
        key=KEY,
        metrics="all",
        samples=4,
        repeats=1,
        masks=OBJECTS,
    )
    row = table.rows["integrated_gradients"]
    assert set(row) == {"ms_per_example", *metrics.METRICS}
    # every metric ran: a number for each (undefined examples are left out, with a note)
    missing = {name: table.notes.get(f"integrated_gradients {name}") for name, v in row.items() if v is None}
    assert not missing, missing
    assert all(
        np.isfinite(v) or "undefined" in table.notes[f"integrated_gradients {k}"] for k, v in row.items()
    )
    assert row["completeness"] < 0.1
    text = str(table)
    for group in {info.group for info in metrics.METRICS.values()}:
        assert f"{group}:" in text
