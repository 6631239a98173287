"""The shipped checkpoints: they load, reproduce their recorded accuracy, and are documented."""

import os
import pathlib

import numpy as np
import pytest

import jaxplain
from jaxplain.models.train import evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED = {  # name: (dataset, minimum test accuracy the issue asks for)
    "digits_cnn": ("digits", 0.97),
    "breast_cancer_mlp": ("breast_cancer", 0.95),
    "wine_mlp": ("wine", 0.95),
    "synthetic_text": ("synthetic_text", 0.95),
    "digits_resnet18": ("digits", 0.95),  # the larger image model of the schedule study
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_checkpoint_reproduces_its_recorded_accuracy(name):
    dataset_name, minimum = SHIPPED[name]
    checkpoint = jaxplain.io.load_checkpoint(str(ROOT / name))
    assert checkpoint.metadata["dataset"] == dataset_name
    data = jaxplain.data.load(dataset_name)
    measured = evaluate(checkpoint.module, checkpoint.variables, data.x_test, data.y_test)["accuracy"]
    assert measured == pytest.approx(checkpoint.metadata["test_accuracy"], abs=1e-6)
    assert measured >= minimum


def test_digits_cnn_through_load_model_and_the_data_loader():
    model = jaxplain.load_model(str(ROOT / "digits_cnn"))
    data = jaxplain.data.load("digits")
    accuracy = float(np.mean(np.asarray(model(data.x_test)).argmax(1) == data.y_test))
    recorded = jaxplain.io.read_metadata(str(ROOT / "digits_cnn"))["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-6)


def test_checkpoints_are_small_and_listed_with_their_command():
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    assert total < 5 * 2**20
    readme = (ROOT / "README.md").read_text()
    for name in SHIPPED:
        metadata = jaxplain.io.read_metadata(str(ROOT / name))
        assert metadata["command"].startswith("jaxplain train ")
        assert metadata["command"] in readme, f"checkpoints/README.md lacks the command for {name}"
        assert f"{metadata['test_accuracy']:.4f}" in readme
    assert sorted(p.name for p in ROOT.iterdir() if p.is_dir()) == sorted(SHIPPED)
