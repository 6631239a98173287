"""The README's example runs, its test command is what CI runs, and docstring examples hold."""

import doctest
import importlib
import pathlib
import re

import pytest

import jaxplain
import jaxplain.methods.integrated
import jaxplain.methods.layers
import jaxplain.methods.perturbation
import jaxplain.methods.rules
import jaxplain.model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blocks(language):
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.slow  # end to end: every example of the README, in order
def test_readme_python_examples_run_in_order(tmp_path):
    namespace = {}
    for block in _blocks("python"):
        exec(compile(block.replace('"/tmp/', f'"{tmp_path}/'), "README.md", "exec"), namespace)
    ig = namespace["ig"]
    assert ig.complete and ig.values.shape == (450, 8, 8, 1) and float(ig.relative_delta.max()) < 0.05
    assert namespace["a"].values.shape == (32, 10)
    assert namespace["a3"].values.shape == (32, 3, 10)
    for name in ("sg", "dl", "ks"):
        assert namespace[name].values.shape == (32, 10)
    assert float(abs(namespace["dl"].delta).max()) < 1e-4
    assert bool(namespace["auto"].extras["converged"].all())
    assert float(namespace["auto"].relative_delta.max()) <= 0.01
    assert set(namespace["table"].rows) == {"saliency", "integrated_gradients", "deeplift"}
    phi, checked = namespace["phi"], namespace["checked"]
    assert phi.values.shape == namespace["xw"].shape
    assert float(abs(phi.delta).max()) < 1e-4
    recomputed = checked.extras["recomputed"]
    assert float(checked.extras["recomputed_fraction"]) == pytest.approx(float(recomputed.mean()))
    # Rows that passed the check keep the explainer's values.
    kept = ~recomputed
    assert (checked.values[kept] == phi.values[kept]).all()


@pytest.mark.slow  # end to end: docs/amortized.md's example, as the README's
def test_amortized_docs_example_runs(tmp_path, monkeypatch):
    """docs/amortized.md's first example, with its /tmp paths under pytest's tmp_path."""
    text = (ROOT / "docs" / "amortized.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0].replace('"/tmp/', f'"{tmp_path}/')
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(compile(block, "docs/amortized.md", "exec"), namespace)
    result, explainer = namespace["result"], namespace["explainer"]
    assert result.values.shape == namespace["data"].x_test.shape
    assert explainer.metadata["teacher"]["method"] == "exact_shapley"
    assert (tmp_path / "labels").is_dir()


def test_every_method_is_documented():
    methods_doc = (ROOT / "docs" / "methods.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in jaxplain.METHODS:
        assert f"`{name}`" in methods_doc, name
    assert "docs/methods.md" in readme


def _recipe(target):
    """The command lines of a Makefile target."""
    makefile = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    return [line.strip() for line in body.splitlines()]


def test_ci_runs_the_readme_test_command():
    blocks = [block.strip() for block in _blocks("bash")]
    assert blocks[1] == "make test", "README.md's second command must be the test command"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci
    assert _recipe("test")[-1] == "$(BIN)/python -m pytest -q"


def test_readme_names_both_tiers_as_the_makefile_runs_them():
    """`make test` (CI) is the full suite; `make test-fast` the default tier, the tests not marked slow."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Tests\n(.*?)^## ", readme, flags=re.S | re.M).group(1)
    assert _recipe("test-fast")[-1] == '$(BIN)/python -m pytest -q -m "not slow"'
    for target in ("test", "test-fast"):
        command = _recipe(target)[-1].replace("$(BIN)/", "")
        assert f"`make {target}`" in section and f"`{command}`" in section, target


def test_readme_main_job_is_the_tested_command():
    from test_cli import demo_command

    assert _blocks("bash")[0].strip() == "make demo"
    assert _recipe("demo") == ["$(BIN)/$(DEMO)"]
    assert " ".join(demo_command()).startswith(
        "jaxplain evaluate --model checkpoints/digits_cnn --data digits"
    )


@pytest.mark.parametrize(
    "module",
    [
        jaxplain.model,
        jaxplain.methods.integrated,
        jaxplain.methods.layers,
        jaxplain.methods.rules,
        jaxplain.methods.smoothing,
        jaxplain.methods.xrai,
        jaxplain.metrics.axiomatic,
        jaxplain.metrics.randomisation,
        jaxplain.metrics.localisation,
        jaxplain.metrics.sparsity,
        jaxplain.metrics.robustness,
        importlib.import_module("jaxplain.superpixels"),
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_ci_tests_the_lowest_flax_that_pyproject_allows():
    floor = re.search(r'"flax>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    pinned = re.search(r"^FLAX_FLOOR \?= ([0-9.]+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)

    def release(version):
        parts = [int(p) for p in version.split(".")]
        return parts + [0] * (3 - len(parts))

    assert release(pinned) == release(floor)
    assert "make test-lowest-flax" in (ROOT / ".ci" / "run").read_text()


def test_every_metric_is_documented():
    """Every metric evaluate offers and every metric function has its row in docs/metrics.md."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    names = set(jaxplain.metrics.METRICS) - {"deletion_auc", "insertion_auc", "randomisation"}
    functions = {
        name
        for name in jaxplain.metrics.__all__
        if name[0].islower() and name not in ("evaluate", "mosaics", "shifted_first_layer")
    }
    missing = sorted(n for n in names | functions if f"`{n}`" not in text)
    assert not missing, f"docs/metrics.md lacks {missing}"
    assert "docs/metrics.md" in (ROOT / "README.md").read_text()


@pytest.mark.slow  # end to end: every method of two families by four metrics on the digits CNN
def test_metrics_docs_example_runs():
    text = (ROOT / "docs" / "metrics.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    namespace = {}
    exec(compile(block, "docs/metrics.md", "exec"), namespace)
    assert set(namespace["table"].rows) == {"saliency", "integrated_gradients"}
