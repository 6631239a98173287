"""benchmarks/crosscheck_quantus.py --quick: jaxplain's metrics agree with Quantus 0.6.0."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

# End to end: the benchmark script in a subprocess, at its tiny size, without timing.
pytestmark = [
    pytest.mark.slow,
    # found without importing them: collecting this file stays cheap in every test process
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in ("torch", "quantus")),
        reason="needs the bench extra (torch, quantus)",
    ),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "crosscheck_quantus.py")

# Every metric must have a row that agrees with Quantus (deterministic within tolerance,
# or statistical at p >= 0.01); the others are documented differences.
AGREEING = {
    "infidelity",
    "faithfulness_correlation",
    "pixel_flipping",
    "road",
    "monotonicity",
    "monotonicity_correlation",
    "faithfulness_estimate",
    "irof",
    "selectivity",
    "region_perturbation",
    "sufficiency",
    "non_sensitivity",
    "input_invariance",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "relative_input_stability",
    "relative_output_stability",
    "relative_representation_stability",
    "continuity",
    "consistency",
    "model_parameter_randomisation",
    "efficient_mprt",
    "smooth_mprt",
    "random_logit",
    "pointing_game",
    "attribution_localisation",
    "top_k_intersection",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "auc",
    "focus",
    "sparseness",
    "complexity",
    "effective_complexity",
}
DIFFERING = {"sensitivity_n", "completeness"}  # defined differently (see the rows' difference)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("crosscheck_quantus")
    result = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--quick",
            "--repeats",
            "0",
            "--out",
            str(out),
            "--markdown",
            str(out / "t.md"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with open(out / "crosscheck_quantus.json") as f:
        payload = json.load(f)
    with open(out / "t.md") as f:
        return payload, f.read()


def test_every_metric_agrees_or_documents_a_difference(report):
    payload, _ = report
    rows = payload["rows"]
    assert payload["logits_max_abs_diff"] < 1e-9
    assert not [r for r in rows if r["status"].startswith("FAIL")]
    assert not [r for r in rows if r["kind"] == "missing"]
    agreeing = {r["metric"] for r in rows if r["pass"] and r["kind"] in ("deterministic", "statistical")}
    assert AGREEING <= agreeing, AGREEING - agreeing
    for row in rows:
        if row["kind"] == "deterministic":
            assert row["pass"] == (row["agreement"]["max_rel_diff"] <= row["tolerance"]), row["setting"]
            assert row["pass"] or row["difference"], row["setting"]
        if row["kind"] == "differs":
            assert row["difference"], row["setting"]
    assert DIFFERING <= {r["metric"] for r in rows if r["kind"] == "differs"}


def test_statistical_rows_state_their_test(report):
    rows = [r for r in report[0]["rows"] if r["kind"] == "statistical"]
    assert {"faithfulness_correlation", "monotonicity_correlation", "smooth_mprt"} <= {
        r["metric"] for r in rows
    }
    for row in rows:
        assert 0.0 <= row["agreement"]["p_value"] <= 1.0
        assert row["agreement"]["examples"] == len(row["jaxplain"])
        assert row["pass"] == (row["agreement"]["p_value"] >= 0.01)


def test_markdown_tables_render_every_row(report):
    payload, markdown = report
    assert markdown.startswith("| metric | Quantus |")
    assert markdown.count("\n| `") >= len(payload["rows"])
    assert "Definitional differences" in markdown
