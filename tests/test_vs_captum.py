"""benchmarks/vs_captum.py at a tiny size: every row timed, the deterministic methods agree."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

# End to end: the benchmark script in a subprocess, at its tiny size.
pytestmark = [
    pytest.mark.slow,
    # found without importing them: collecting this file stays cheap in every test process
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in ("torch", "captum")),
        reason="needs the bench extra (torch, captum)",
    ),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vs_captum_quick(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "vs_captum.py"),
            "--quick",
            "--cases",
            "mlp,cnn",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "vs_captum.json").read_text())
    rows = [row for row in payload["timing"] if row["method"] != "logits"]
    assert {row["method"] for row in rows} == {
        "saliency",
        "ig_riemann_middle",
        "ig_gauss_legendre",
        "smoothgrad",
        "expected_gradients",
        "deeplift",
        "occlusion",
        "kernel_shap",
    }
    assert all("error" not in row and row["ratio"] > 0 for row in rows)
    for row in rows:  # same weights, inputs and settings: the deterministic methods agree
        if "max_rel_diff" in row:
            assert row["max_rel_diff"] < 2e-3, row
    logits = [row for row in payload["timing"] if row["method"] == "logits"]
    assert all(row["max_rel_diff"] < 1e-5 for row in logits)
    memory = payload["memory"]
    assert {row["contender"] for row in memory} == {"captum", "captum_internal_batch", "jaxplain"}
    assert all(row["peak_mib"] >= row["setup_mib"] > 0 for row in memory)
