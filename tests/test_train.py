"""The Optax training loop: it learns, it is reproducible, it handles BatchNorm and Dropout."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxplain
from jaxplain.models import MLP
from jaxplain.models.train import train


@pytest.fixture(scope="module")
def wine():
    return jaxplain.data.load("wine")


def _leaves(variables):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(variables)]


def test_learns_and_is_reproducible(wine):
    first = train(MLP(num_classes=3, features=(16,)), wine, epochs=40, learning_rate=1e-2, progress=False)
    assert first.test_accuracy >= 0.9
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
    again = train(MLP(num_classes=3, features=(16,)), wine, epochs=40, learning_rate=1e-2, progress=False)
    for a, b in zip(_leaves(first.variables), _leaves(again.variables)):
        np.testing.assert_array_equal(a, b)
    other = train(
        MLP(num_classes=3, features=(16,)), wine, epochs=40, learning_rate=1e-2, seed=1, progress=False
    )
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(first.variables), _leaves(other.variables)))


class NormDrop(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x))
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x)


def test_batchnorm_statistics_are_trained_and_dropout_needs_its_rng(wine):
    result = train(NormDrop(), wine, epochs=30, learning_rate=1e-2, progress=False)
    stats = result.variables["batch_stats"]["BatchNorm_0"]
    assert not np.allclose(np.asarray(stats["mean"]), 0.0)
    assert result.test_accuracy >= 0.85


def test_bad_arguments_are_named(wine):
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        train(MLP(num_classes=3), wine, epochs=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got -1"):
        train(MLP(num_classes=3), wine, batch_size=-1)


def test_progress_reports_loss_and_accuracy(wine, capsys):
    small = dataclasses.replace(wine, x_train=wine.x_train[:64], y_train=wine.y_train[:64])
    train(MLP(num_classes=3, features=(4,)), small, epochs=1, batch_size=32)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss" in err and "test_accuracy" in err
