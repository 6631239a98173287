"""The command line: the main job, `jaxplain train`, and one-line errors with exit code 2."""

import argparse
import inspect
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


@pytest.mark.slow  # a CLI run end to end; the option plumbing has default-tier tests
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
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--option", "stepz=8"],
            "--option stepz: integrated_gradients takes no option 'stepz'; options: baseline, chunk_size, "
            "max_steps, pilot_steps, schedule, steps, tolerance",
        ),
        (
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--option", "steps"],
            "--option: expected NAME=VALUE",
        ),
        (
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--option", "key=3"],
            "--option key: not an option here: use --seed",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--steps",
                "8",
                "--option",
                "steps=9",
            ],
            "--option steps=9 and --steps 8 disagree",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--option",
                "steps=8",
                "--option",
                "steps=9",
            ],
            "--option steps given twice",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--method",
                "saliency",
                "--option",
                "steps=8",
            ],
            "saliency takes no option 'steps'; options: absolute",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--method",
                "smoothgrad",
                "--wrap",
                "integrated_gradients",
                "--option",
                "window=[2]",
            ],
            "options: baseline, chunk_size, max_steps, method_options, noise_chunk_size",
        ),
        (
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--steps", "0"],
            "--steps: expected a positive integer, got 0",
        ),
        (
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--option", "steps=0"],
            "steps must be >= 1, got 0",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--steps",
                "auto",
                "--tolerance",
                "2",
            ],
            "tolerance must be",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--steps",
                "auto",
                "--schedule",
                "trapezoid",
            ],
            "leave schedule, pilot_steps and chunk_size unset",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--method",
                "occlusion",
                "--option",
                "window=[0]",
            ],
            "window must be >= 1 on every axis, got (0,)",
        ),
        (
            [
                "explain",
                "--model",
                "checkpoints/wine_mlp",
                "--data",
                "wine",
                "--method",
                "saliency",
                "--option",
                "absolute=maybe",
            ],
            "absolute must be True or False, got str 'maybe'",
        ),
        (["explain", "--list-options", "magic"], "unknown method 'magic'"),
        (
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--config", "{}"],
            "--config is the --module factory's keyword arguments: give --module too",
        ),
        (
            ["explain", "--model", "checkpoints/wine_mlp", "--data", "wine", "--module", "no_colon"],
            "--module must be PKG.MOD:FACTORY",
        ),
        (
            ["explain", "--model", "x", "--data", "wine", "--module", "no_such_package_here.models:make"],
            "--module: cannot import no_such_package_here.models: ModuleNotFoundError",
        ),
        (
            ["explain", "--model", "x", "--data", "wine", "--module", "json:no_such_factory"],
            "--module: json has no callable 'no_such_factory'",
        ),
        (
            ["explain", "--model", "x", "--data", "wine", "--module", "json:dumps", "--config", "[1]"],
            "--config must be a JSON object",
        ),
        (
            [
                "explain",
                "--model",
                "x",
                "--data",
                "wine",
                "--module",
                "json:JSONDecoder",
                "--config",
                '{"colour": 1}',
            ],
            "--module: JSONDecoder(**{'colour': 1}) failed: TypeError",
        ),
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


def _run_options(tmp_path, method, *argv):
    """The options an explain run recorded (run.json), and its attributions."""
    got = _explain(
        tmp_path,
        "--model",
        str(ROOT / "checkpoints/wine_mlp"),
        "--data",
        "wine",
        "--n",
        "4",
        "--method",
        method,
        *argv,
    )
    return got.run["settings"]["options"], got


@pytest.mark.slow  # a CLI run end to end; the option plumbing has default-tier tests
def test_steps_auto_with_tolerance_runs_adaptive_integrated_gradients(tmp_path):
    """--steps auto --tolerance: integrated_gradients' adaptive steps, the library call's values,
    each example's completeness gap within the tolerance."""
    recorded, got = _run_options(tmp_path, "integrated_gradients", "--steps", "auto", "--tolerance", "0.001")
    assert recorded == {"steps": "auto", "tolerance": 0.001}
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    x = jaxplain.data.load("wine").x_test[:4]
    expected = jaxplain.integrated_gradients(model, x, target="predicted", steps="auto", tolerance=0.001)
    assert bool(expected.extras["converged"].all())
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-5, atol=1e-7)
    assert np.all(got.relative_delta <= 0.001)


@pytest.mark.parametrize(
    "method, argv, expected",
    [
        ("saliency", ["--option", "absolute=true"], {"absolute": True}),
        (
            "integrated_gradients",
            ["--option", "schedule=nonuniform", "--option", "steps=12", "--option", "pilot_steps=3"],
            {"schedule": "nonuniform", "steps": 12, "pilot_steps": 3},
        ),
        (
            "occlusion",
            ["--option", "window=[3]", "--option", "stride=[2]", "--baseline", "0.5"],
            {"window": (3,), "stride": (2,), "baseline": 0.5},
        ),
    ],
)
def test_option_reaches_the_methods_own_options(tmp_path, method, argv, expected):
    """--option NAME=VALUE (JSON values; lists as tuples) gives options no flag has, and the
    values are the library call's with those options."""
    recorded, got = _run_options(tmp_path, method, *argv)
    assert recorded == {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    x = jaxplain.data.load("wine").x_test[:4]
    reference = jaxplain.METHODS[method].function(model, x, target="predicted", **expected)
    np.testing.assert_allclose(got.values, reference.values, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # a CLI run end to end; the option plumbing has default-tier tests
def test_option_for_the_wrapped_method_and_method_options(tmp_path):
    """A noise method takes its wrapped method's options by --option, and method_options
    (a JSON object) for a name both take."""
    _, got = _run_options(
        tmp_path,
        "smoothgrad",
        "--wrap",
        "expected_gradients",
        "--background",
        "8",
        "--samples",
        "3",
        "--option",
        'method_options={"samples": 5}',
        "--option",
        "noise_scale=0.05",
    )
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    data = jaxplain.data.load("wine")
    expected = jaxplain.smoothgrad(
        model,
        data.x_test[:4],
        target="predicted",
        method="expected_gradients",
        samples=3,
        noise_scale=0.05,
        background=data.x_train[:8],
        method_options={"samples": 5},
        key=jax.random.fold_in(jax.random.key(0), 0),
    )
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-5, atol=1e-7)
    assert got.run["method"] == "smoothgrad(expected_gradients)"


def test_option_values_are_json_else_text():
    parse = cli._common.option_pair
    assert parse("steps=auto") == ("steps", "auto")
    assert parse("steps=32") == ("steps", 32) and isinstance(parse("steps=32")[1], int)
    assert parse("baseline=-0.5") == ("baseline", -0.5)
    assert parse("absolute=true") == ("absolute", True)
    assert parse("pilot_steps=null") == ("pilot_steps", None)
    assert parse("window=[2, 2, 1]") == ("window", (2, 2, 1))
    assert parse('method_options={"window": [[1, 2], [3]]}') == ("method_options", {"window": ((1, 2), (3,))})
    assert parse("schedule=riemann_left") == ("schedule", "riemann_left")
    assert parse("layer=Conv_1/kernel=x") == ("layer", "Conv_1/kernel=x")  # the first = splits
    for bad in ("steps", "=3", "two words=3"):
        with pytest.raises(Exception, match="expected NAME=VALUE"):
            parse(bad)


def test_flags_are_short_forms_of_option():
    """Each dedicated flag gives the same option as --option; a flag not given gives none."""
    parser = cli.build_parser()
    base = ["explain", "--model", "m", "--data", "d"]
    common = cli._common
    assert common.given_options(parser.parse_args(base), ["integrated_gradients"]) == {}
    values = {"steps": "16", "schedule": "trapezoid", "baseline": "0.5", "tolerance": "0.001", "samples": "3"}
    for name, text in values.items():
        flag = common.given_options(
            parser.parse_args([*base, common.OPTION_FLAGS[name], text]), ["integrated_gradients", "lime"]
        )
        option = common.given_options(
            parser.parse_args([*base, "--option", f"{name}={text}"]), ["integrated_gradients", "lime"]
        )
        assert flag == option == {name: common.option_value(text)}, name
    same = parser.parse_args([*base, "--steps", "8", "--option", "steps=8"])
    assert common.given_options(same, ["integrated_gradients"]) == {"steps": 8}


def _method_setting_actions(command):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    group = next(g for g in sub._action_groups if g.title == "method settings")
    return {action.option_strings[0]: action for action in group._group_actions}


# The method settings that are the command's own, not a method option, and their defaults.
COMMAND_SETTINGS = {
    "--option": None,
    "--list-options": None,
    "--output": inspect.signature(jaxplain.load_model).parameters["output"].default,
    "--seed": 0,  # the key: jax.random.key(--seed)
    "--background": 64,  # how many training examples become the background array
    "--patch": None,  # feature_mask, made from the data's shape
    "--wrap": None,  # the noise methods' method option
}


@pytest.mark.parametrize("command", ["explain", "evaluate", "train-explainer"])
def test_command_line_defaults_are_the_methods_defaults(command):
    """No method setting restates a method's default: each flag of a method option is None
    (not given: the method's own default applies), and names an option some method has."""
    actions = _method_setting_actions(command)
    options = {
        name
        for info in jaxplain.METHODS.values()
        for name in inspect.signature(info.function).parameters
        if name in info.parameters
    }
    for flag, action in actions.items():
        if flag in COMMAND_SETTINGS:
            assert action.default == COMMAND_SETTINGS[flag], flag
            continue
        name = next(n for n, f in cli._common.OPTION_FLAGS.items() if f == flag)
        assert name in options, flag
        assert action.default is None, flag
        assert "default" not in (action.help or ""), flag
    assert set(cli._common.OPTION_FLAGS.values()) <= set(actions)
    # --wrap not given: the noise method's own default, recorded in the label
    for method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        default = inspect.signature(jaxplain.METHODS[method].function).parameters["method"].default
        assert cli._common.wrapped(method, None) == default


def test_explain_without_settings_runs_the_methods_defaults(tmp_path):
    """No flag given: the run records no option and equals the library call with its defaults."""
    recorded, got = _run_options(tmp_path, "integrated_gradients")
    assert recorded == {}
    model = jaxplain.load_model(str(ROOT / "checkpoints/wine_mlp"))
    expected = jaxplain.integrated_gradients(model, jaxplain.data.load("wine").x_test[:4], target="predicted")
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-5, atol=1e-7)


def test_help_lists_every_methods_options(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["explain", "--help"])
    text = capsys.readouterr().out
    for name, info in jaxplain.METHODS.items():
        line = next(line for line in text.splitlines() if line.startswith(f"  {name}: "))
        for option in info.parameters - set(cli._common.FILLED):
            assert option in line.split(": ", 1)[1].split(", "), (name, option)
    assert "--option NAME=VALUE" in text and "--list-options METHOD" in text


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion", "smoothgrad", "grad_cam"])
def test_list_options_gives_each_option_with_its_python_default(method, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.build_parser().parse_args(["explain", "--list-options", method])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    listed = dict(re.findall(r"^  (\w+) \((default .*?|required)[;)]", text, flags=re.M))
    function = jaxplain.METHODS[method].function
    inner = cli._common.wrapped(method, None)
    expected = {}
    for source in (function, *([jaxplain.METHODS[inner].function] if inner else [])):
        for p in inspect.signature(source).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in cli._common.FILLED:
                expected.setdefault(p.name, "required" if p.default is p.empty else f"default {p.default!r}")
    assert listed == expected
    assert "given by the command: " in text and "target (--target)" in text


USER_MODELS = '''
"""A user's own models, in the styles of the Flax examples."""
import flax.linen as nn
from flax import nnx


class CNN(nn.Module):
    """A Linen CNN with BatchNorm (a train flag, running averages at inference)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(features=4, kernel_size=(3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(features=self.num_classes)(x)


def make_cnn(num_classes=10):
    return CNN(num_classes=num_classes)


class NnxMLP(nnx.Module):
    """An NNX MLP, built with its own rngs."""

    def __init__(self, features, num_classes, *, rngs):
        self.hidden = nnx.Linear(features, 16, rngs=rngs)
        self.out = nnx.Linear(16, num_classes, rngs=rngs)

    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        return self.out(nnx.tanh(self.hidden(x)))


def make_mlp(features=64, num_classes=10, seed=0):
    return NnxMLP(features, num_classes, rngs=nnx.Rngs(seed))
'''


def _user_models(folder, name):
    """The user's models file written as `folder/name.py`, imported as the test's own copy."""
    import importlib.util

    path = folder / f"{name}.py"
    path.write_text(USER_MODELS)
    spec = importlib.util.spec_from_file_location(f"{name}_in_test", path)
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    return path, source


@pytest.mark.parametrize(
    "form",
    [pytest.param("package", marks=pytest.mark.slow), pytest.param("file", marks=pytest.mark.slow), "nnx"],
)
def test_explain_a_users_own_module_from_an_orbax_checkpoint(tmp_path, monkeypatch, form):
    """--model PATH --module PKG.MOD:FACTORY --config JSON: the user's module, its variables
    saved by orbax's StandardCheckpointer, explained as the library explains the unported model."""
    import orbax.checkpoint as ocp

    name = f"user_models_{form}"
    path, source = _user_models(tmp_path, name)
    x = jaxplain.data.load("digits").x_test[:4]
    if form == "nnx":
        from flax import nnx

        original = source.make_mlp(seed=3)
        variables = nnx.state(original)
        model = jaxplain.Model.from_nnx(original)
        spec, config = f"{name}:make_mlp", '{"seed": 3}'
    else:
        module = source.make_cnn(num_classes=10)
        variables = module.init(jax.random.key(1), x[:1])
        statistics = variables["batch_stats"]["BatchNorm_0"]  # running averages that matter
        variables["batch_stats"]["BatchNorm_0"] = {
            "mean": statistics["mean"] + 0.3,
            "var": statistics["var"] * 2.0,
        }
        model = jaxplain.Model.from_linen(module, variables)
        factory = "CNN" if form == "package" else "make_cnn"
        spec = f"{name}:{factory}" if form == "package" else f"{path}:{factory}"
        config = '{"num_classes": 10}'
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "checkpoint", variables)
    checkpointer.wait_until_finished()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    got = _explain(
        tmp_path / "out",
        "--model",
        str(tmp_path / "checkpoint"),
        "--module",
        spec,
        "--config",
        config,
        "--data",
        "digits",
        "--n",
        "4",
        "--steps",
        "8",
    )
    expected = jaxplain.integrated_gradients(model, x, target="predicted", steps=8)
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.target, expected.target)
    assert got.run["metadata"]["module"] == spec and got.run["metadata"]["config"] == config
    sys.modules.pop(name, None)


def test_a_users_module_that_does_not_fit_the_data_is_one_line(tmp_path, monkeypatch, capsys):
    import orbax.checkpoint as ocp

    path, source = _user_models(tmp_path, "user_models_misfit")
    module = source.make_cnn(num_classes=10)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(
        tmp_path / "checkpoint", module.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    )
    checkpointer.wait_until_finished()
    argv = [
        "explain",
        "--model",
        str(tmp_path / "checkpoint"),
        "--module",
        f"{path}:make_cnn",
        "--data",
        "wine",
    ]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxplain explain: error: ")
    assert "--module" in err and "(13,)" in err  # the module cannot take wine's examples
