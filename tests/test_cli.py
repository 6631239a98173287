"""The command line: the main job, `jaxplain train`, and one-line errors with exit code 2."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxplain
from jaxplain import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_main_job_as_the_readme_runs_it(tmp_path):
    """The console script, in a fresh process, as a newcomer runs it (must take < 1 minute)."""
    out = tmp_path / "out"
    start = time.perf_counter()
    result = subprocess.run(
        ["jaxplain", "explain", "--model", str(ROOT / "checkpoints/digits_cnn"), "--data", "digits",
         "--method", "integrated_gradients", "--n", "16", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["index", "label", "target", "prob", "delta", "rel.delta"]
    assert len(lines[2].split()) == 6
    assert len(lines) == 2 + 16 + 1
    arrays = np.load(out / "attributions.npz")
    assert arrays["values"].shape == (16, 8, 8, 1)
    assert np.all(arrays["relative_delta"] < 0.05)
    data = jaxplain.data.load("digits")
    np.testing.assert_array_equal(arrays["inputs"], data.x_test[:16])
    png = (out / "attributions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_explain_values_match_the_library_call(tmp_path, capsys):
    assert cli.main(["explain", "--model", str(ROOT / "checkpoints/wine_mlp"), "--data", "wine",
                     "--n", "5", "--steps", "32", "--out", str(tmp_path)]) == 0
    arrays = np.load(tmp_path / "attributions.npz")
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    expected = jaxplain.integrated_gradients(model, jaxplain.data.load("wine").x_test[:5], target="predicted", steps=32)
    np.testing.assert_allclose(arrays["values"], expected.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(arrays["target"], expected.target)


def test_patch_groups_features_for_shapley_methods(tmp_path):
    assert cli.main(["explain", "--model", str(ROOT / "checkpoints/digits_cnn"), "--data", "digits",
                     "--method", "exact_shapley", "--patch", "4,4,1", "--n", "3", "--out", str(tmp_path)]) == 0
    arrays = np.load(tmp_path / "attributions.npz")
    model = jaxplain.load_model(str(ROOT / "checkpoints/digits_cnn"))
    mask = jaxplain.patch_mask((8, 8, 1), (4, 4, 1))
    expected = jaxplain.exact_shapley(model, jaxplain.data.load("digits").x_test[:3], target="predicted",
                                      feature_mask=mask)
    np.testing.assert_allclose(arrays["values"], expected.values, rtol=1e-5, atol=1e-6)
    # every 4x4 block holds one value
    blocks = arrays["values"].reshape(3, 2, 4, 2, 4)
    np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))


def test_explain_a_text_model_on_its_embeddings(tmp_path):
    assert cli.main(["explain", "--model", str(ROOT / "checkpoints/synthetic_text"), "--data", "synthetic_text",
                     "--n", "8", "--out", str(tmp_path)]) == 0
    arrays = np.load(tmp_path / "attributions.npz")
    assert arrays["values"].shape == (8, 16)  # one score per token
    data = jaxplain.data.load("synthetic_text")
    planted = data.extras["planted_test"][:8]
    # the planted trigger tokens get the largest attribution in every example
    top = arrays["values"].argmax(axis=1)
    assert planted[np.arange(8), top].all()


def test_train_writes_a_checkpoint_that_records_its_command(tmp_path):
    out = str(tmp_path / "wine_small")
    assert cli.main(["train", "--model", "mlp", "--data", "wine", "--epochs", "3",
                     "--config", '{"features": [8]}', "--out", out]) == 0
    metadata = jaxplain.io.read_metadata(out)
    assert metadata["command"] == (
        "jaxplain train --model mlp --data wine --epochs 3 --config '{\"features\": [8]}' --out " + out
    )
    assert metadata["config"] == {"features": [8], "num_classes": 3}
    assert jaxplain.load_model(out)(np.zeros((2, 13), np.float32)).shape == (2, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explain", "--model", "no/such/checkpoint", "--data", "digits"], "no checkpoint folder at no/such/checkpoint"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "no_such_data"], "cannot load dataset 'no_such_data'"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--method", "magic"], "unknown method 'magic'"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "wine"], "has examples of shape (13,)"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--n", "0"], "--n: expected a positive integer"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--target", "12"], "--target 12 is outside"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--schedule", "simpson"], "schedule must be one of"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--method", "exact_shapley", "--patch", "2,2"], "--patch needs one size per axis"),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--method", "exact_shapley"], "allows at most 16 groups"),
        (["explain", "--data", "digits"], "the following arguments are required: --model"),
        (["train", "--model", "nope", "--data", "digits", "--out", "x"], "unknown architecture 'nope'"),
        (["train", "--model", "mlp", "--data", "digits", "--out", "x", "--config", "{bad"], "--config is not valid JSON"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err and err.startswith("jaxplain")


def test_help_has_examples():
    for command in ("explain", "train"):
        result = subprocess.run([sys.executable, "-m", "jaxplain.cli", command, "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "examples:" in result.stdout
