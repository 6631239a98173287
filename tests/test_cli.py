"""The command line: the main job, `jaxplain train`, and one-line errors with exit code 2."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jaxplain
from jaxplain import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    """The console script installed beside this Python (on PATH or not)."""
    return str(pathlib.Path(sys.executable).parent / "jaxplain")


def demo_command():
    """The main job: the command `make demo` runs (README.md's first command)."""
    makefile = (ROOT / "Makefile").read_text()
    return re.search(r"^DEMO := (.+)$", makefile, flags=re.M).group(1).split()


@pytest.mark.slow  # end to end: `make demo`'s command in a fresh process
def test_main_job_as_make_demo_runs_it(tmp_path):
    """The demo command, in a fresh process, as a newcomer runs it (must take < 1 minute)."""
    command = demo_command()
    assert command[:2] == ["jaxplain", "evaluate"] and command[-2] == "--out"
    out = tmp_path / "demo"
    start = time.perf_counter()
    result = subprocess.run(
        [_script(), *command[1:-1], str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    table = json.loads((out / "table.json").read_text())
    assert set(table["rows"]) == {
        "saliency",
        "integrated_gradients",
        "smoothgrad",
        "deeplift",
        "guided_backprop",
    }
    assert table["rows"]["integrated_gradients"]["completeness"] < 0.01
    assert table["rows"]["deeplift"]["completeness"] < 1e-4
    # the sanity check catches guided backprop, which hardly changes when the model is randomised
    assert (
        table["rows"]["guided_backprop"]["randomisation"]
        > 0.5
        > table["rows"]["integrated_gradients"]["randomisation"]
    )
    assert "| integrated_gradients |" in (out / "table.md").read_text()
    assert "| integrated_gradients |" in result.stdout
    png = (out / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def _explain(tmp_path, *argv):
    assert cli.main(["explain", *argv, "--out", str(tmp_path)]) == 0
    return jaxplain.load_attributions(tmp_path, require_complete=True)


@pytest.mark.slow  # end to end: the console script in a fresh process; the values are checked in-process below
def test_explain_in_a_fresh_process_prints_the_table_and_draws(tmp_path, capsys):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            _script(),
            "explain",
            "--model",
            str(ROOT / "checkpoints/digits_cnn"),
            "--data",
            "digits",
            "--method",
            "integrated_gradients",
            "--n",
            "20",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["index", "label", "target", "prob", "delta", "rel.delta"]
    assert len(lines[2].split()) == 6
    assert len(lines) == 2 + 16 + 3  # 16 rows shown, "... 4 more", the gap summary, "wrote"
    got = jaxplain.load_attributions(out, require_complete=True)
    assert got.values.shape == (20, 8, 8, 1)
    assert np.all(got.relative_delta < 0.05)
    np.testing.assert_array_equal(got.labels, jaxplain.data.load("digits").y_test[:20])
    png = (out / "views" / "attributions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the same command again resumes: nothing left to compute
    assert cli.main(result.args[1:]) == 0
    assert "0 computed, 2 already there" in capsys.readouterr().out


def test_explain_values_match_the_library_call(tmp_path, capsys):
    arrays = _explain(
        tmp_path, "--model", str(ROOT / "checkpoints/wine_mlp"), "--data", "wine", "--n", "5", "--steps", "32"
    )
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    expected = jaxplain.integrated_gradients(
        model, jaxplain.data.load("wine").x_test[:5], target="predicted", steps=32
    )
    np.testing.assert_allclose(arrays.values, expected.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(arrays.target, expected.target)


def test_explain_a_noise_method_around_the_method_wrap_names(tmp_path):
    """--wrap is the noise method's `method` option: the values are smoothgrad's around
    integrated_gradients, with the first batch's key, fold_in(key(--seed), 0)."""
    arrays = _explain(
        tmp_path,
        "--model",
        str(ROOT / "checkpoints/wine_mlp"),
        "--data",
        "wine",
        "--n",
        "5",
        "--method",
        "smoothgrad",
        "--wrap",
        "integrated_gradients",
        "--steps",
        "8",
        "--samples",
        "3",
    )
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    expected = jaxplain.smoothgrad(
        model,
        jaxplain.data.load("wine").x_test[:5],
        target="predicted",
        steps=8,
        samples=3,
        method="integrated_gradients",
        key=jax.random.fold_in(jax.random.key(0), 0),
    )
    np.testing.assert_allclose(arrays.values, expected.values, rtol=1e-5, atol=1e-7)
    assert arrays.run["method"] == "smoothgrad(integrated_gradients)"


def test_patch_groups_features_for_shapley_methods(tmp_path):
    arrays = _explain(
        tmp_path,
        "--model",
        str(ROOT / "checkpoints/digits_cnn"),
        "--data",
        "digits",
        "--method",
        "exact_shapley",
        "--patch",
        "4,4,1",
        "--n",
        "3",
    )
    model = jaxplain.load_model(str(ROOT / "checkpoints/digits_cnn"))
    mask = jaxplain.patch_mask((8, 8, 1), (4, 4, 1))
    expected = jaxplain.exact_shapley(
        model, jaxplain.data.load("digits").x_test[:3], target="predicted", feature_mask=mask
    )
    np.testing.assert_allclose(arrays.values, expected.values, rtol=1e-5, atol=1e-6)
    # every 4x4 block holds one value
    blocks = arrays.values.reshape(3, 2, 4, 2, 4)
    np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))


@pytest.mark.slow  # end to end: a shipped checkpoint explained by the command; test_layers finds the triggers in-process
def test_explain_a_text_model_on_its_embeddings(tmp_path):
    arrays = _explain(
        tmp_path, "--model", str(ROOT / "checkpoints/synthetic_text"), "--data", "synthetic_text", "--n", "8"
    )
    assert arrays.values.shape == (8, 16)  # one score per token
    data = jaxplain.data.load("synthetic_text")
    planted = data.extras["planted_test"][:8]
    # the planted trigger tokens get the largest attribution in every example
    top = arrays.values.argmax(axis=1)
    assert planted[np.arange(8), top].all()
    # a layer method takes the token ids themselves (its baseline: the padding token)
    layer = _explain(
        tmp_path / "layer",
        "--model",
        str(ROOT / "checkpoints/synthetic_text"),
        "--data",
        "synthetic_text",
        "--n",
        "8",
        "--method",
        "token_attributions",
        "--steps",
        "16",
    )
    assert layer.values.shape == (8, 16)
    assert planted[np.arange(8), layer.values.argmax(axis=1)].all()


def test_train_writes_a_checkpoint_that_records_its_command(tmp_path):
    out = str(tmp_path / "wine_small")
    assert (
        cli.main(
            [
                "train",
                "--model",
                "mlp",
                "--data",
                "wine",
                "--epochs",
                "3",
                "--config",
                '{"features": [8]}',
                "--out",
                out,
            ]
        )
        == 0
    )
    metadata = jaxplain.io.read_metadata(out)
    assert metadata["command"] == (
        "jaxplain train --model mlp --data wine --epochs 3 --config '{\"features\": [8]}' --out " + out
    )
    assert metadata["config"] == {"features": [8], "num_classes": 3}
    assert jaxplain.load_model(out)(np.zeros((2, 13), np.float32)).shape == (2, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["explain", "--model", "no/such/checkpoint", "--data", "digits"],
            "no checkpoint folder at no/such/checkpoint",
        ),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "no_such_data"],
            "cannot load dataset 'no_such_data'",
        ),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--method", "magic"],
            "unknown method 'magic'",
        ),
        (["explain", "--model", "checkpoints/digits_cnn", "--data", "wine"], "has examples of shape (13,)"),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--n", "0"],
            "--n: expected a positive integer",
        ),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--target", "12"],
            "--target 12 is outside",
        ),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--schedule", "simpson"],
            "schedule must be one of",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/digits_cnn",
                "--data",
                "digits",
                "--method",
                "exact_shapley",
                "--patch",
                "2,2",
            ],
            "--patch needs one size per axis",
        ),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--method", "exact_shapley"],
            "allows at most 16 groups",
        ),
        (["explain", "--data", "digits"], "the following arguments are required: --model"),
        (["train", "--model", "nope", "--data", "digits", "--out", "x"], "unknown architecture 'nope'"),
        (
            ["train", "--model", "mlp", "--data", "digits", "--out", "x", "--config", "{bad"],
            "--config is not valid JSON",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--out", "README.md"],
            "exists and is not a folder",
        ),
        (
            ["explain", "--model", "checkpoints/digits_cnn", "--data", "digits", "--out", "docs"],
            "not a jaxplain attributions folder",
        ),
        (["show", "docs", "--index", "0"], "holds no run.json"),
        (
            ["evaluate", "--model", "checkpoints/digits_cnn", "--data", "digits", "--metrics", "beauty"],
            "unknown metric 'beauty'",
        ),
        (
            [
                "evaluate",
                "--model",
                "checkpoints/digits_cnn",
                "--data",
                "digits",
                "--methods",
                "neuron_gradient",
            ],
            "explains a neuron",
        ),
        (
            [
                "train-explainer",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--out",
                "x",
                "--label-fraction",
                "2",
            ],
            "--label-fraction must be in (0, 1]",
        ),
        (
            [
                "train-explainer",
                "--model",
                "checkpoints/synthetic_text",
                "--data",
                "synthetic_text",
                "--out",
                "x",
                "--teacher",
                "saliency",
            ],
            "learns token_attributions",
        ),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err and err.startswith("jaxplain")


def test_help_has_examples(capsys):
    for command in ("explain", "show", "evaluate", "methods", "train", "train-explainer"):
        with pytest.raises(SystemExit) as exit:
            cli.build_parser().parse_args([command, "--help"])
        assert exit.value.code == 0
        assert "example" in capsys.readouterr().out, command
    # and as a module, as `python -m jaxplain.cli` runs it
    result = subprocess.run(
        [sys.executable, "-m", "jaxplain.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "train-explainer" in result.stdout


@pytest.mark.slow  # end to end: explain, then show's pictures; test_viz draws them in-process
def test_show_draws_examples_of_an_explain_folder(tmp_path, capsys):
    _explain(
        tmp_path / "digits",
        "--model",
        str(ROOT / "checkpoints/digits_cnn"),
        "--data",
        "digits",
        "--n",
        "10",
        "--steps",
        "16",
    )
    assert (
        cli.main(["show", str(tmp_path / "digits"), "--index", "3", "7", "--mode", "absolute", "--overlay"])
        == 0
    )
    png = (tmp_path / "digits" / "views" / "example-3-7.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert cli.main(["show", str(tmp_path / "digits"), "--index", "12"]) == 2
    assert "holds no example 12" in capsys.readouterr().err
    _explain(
        tmp_path / "text",
        "--model",
        str(ROOT / "checkpoints/synthetic_text"),
        "--data",
        "synthetic_text",
        "--n",
        "4",
        "--steps",
        "16",
    )
    assert (
        cli.main(["show", str(tmp_path / "text"), "--index", "1", "--output", str(tmp_path / "one.html")])
        == 0
    )
    page = (tmp_path / "one.html").read_text()
    assert page.count("<span") >= 16 and "#1 y=" in page


@pytest.mark.slow  # end to end: the evaluate command; test_evaluate checks the table in-process
def test_evaluate_writes_the_table_and_the_grid(tmp_path, capsys):
    out = tmp_path / "wine"
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(ROOT / "checkpoints/wine_mlp"),
                "--data",
                "wine",
                "--n",
                "6",
                "--methods",
                "saliency,integrated_gradients,smoothgrad",
                "--wrap",
                "integrated_gradients",
                "--steps",
                "8",
                "--samples",
                "4",
                "--metrics",
                "completeness,infidelity",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = json.loads((out / "table.json").read_text())
    assert list(table["rows"]) == ["saliency", "integrated_gradients", "smoothgrad"]
    assert table["rows"]["integrated_gradients"]["completeness"] < 0.05 and table["examples"] == 6
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(ROOT / "checkpoints/synthetic_text"),
                "--data",
                "synthetic_text",
                "--n",
                "3",
                "--methods",
                "integrated_gradients",
                "--steps",
                "8",
                "--metrics",
                "completeness",
                "--out",
                str(tmp_path / "text"),
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "text" / "table.json").read_text())["rows"]["integrated_gradients"][
            "completeness"
        ]
        < 0.05
    )
    assert (tmp_path / "text" / "grid.html").read_text().count("integrated_gradients") >= 3


# End to end, training a network: the supervised recipe by default; test_amortized checks every recipe.
@pytest.mark.parametrize(
    "recipe",
    [
        "supervised",
        pytest.param("cortx", marks=pytest.mark.slow),
        pytest.param("fastshap", marks=pytest.mark.slow),
    ],
)
def test_train_explainer_saves_an_explainer_with_its_fidelity(tmp_path, recipe):
    out = str(tmp_path / "explainer")
    argv = [
        "train-explainer",
        "--model",
        str(ROOT / "checkpoints/wine_mlp"),
        "--data",
        "wine",
        "--recipe",
        recipe,
        "--teacher",
        "integrated_gradients",
        "--steps",
        "8",
        "--epochs",
        "3",
        "--pretrain-epochs",
        "2",
        "--label-fraction",
        "0.2",
        "--check",
        "16",
        "--cache",
        str(tmp_path / "labels"),
        "--out",
        out,
    ]
    assert cli.main(argv) == 0
    explainer = jaxplain.amortized.load(out)
    assert explainer.metadata["recipe"] == recipe and explainer.metadata["command"].startswith(
        "jaxplain train-explainer"
    )
    assert explainer.metadata["fidelity"]["examples"] == 16
    x = jaxplain.data.load("wine").x_test[:4]
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    assert explainer(model, x, target="predicted").values.shape == (4, 13)


@pytest.mark.slow  # end to end: labels, training and the fidelity check; test_errors checks make_labels with a noise method
def test_train_explainer_with_a_noise_teacher_passes_what_it_wraps(tmp_path):
    """--teacher smoothgrad --wrap saliency: the labels and the fidelity check both ran the
    bare noise method (missing the method it wraps) before."""
    out = str(tmp_path / "explainer")
    argv = [
        "train-explainer",
        "--model",
        str(ROOT / "checkpoints/wine_mlp"),
        "--data",
        "wine",
        "--teacher",
        "smoothgrad",
        "--wrap",
        "saliency",
        "--samples",
        "4",
        "--epochs",
        "1",
        "--check",
        "4",
        "--out",
        out,
    ]
    assert cli.main(argv) == 0
    assert jaxplain.amortized.load(out).metadata["fidelity"]["teacher"] == "smoothgrad"
