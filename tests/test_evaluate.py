"""jaxplain.evaluate: every method judged by every metric, one table, known values."""

import json

import jax
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
        assert set(row) == {"ms_per_example", *metrics.METRICS}
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
