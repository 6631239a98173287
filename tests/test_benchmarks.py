"""The benchmark scripts run end to end at a tiny size and write what their docs promise."""

import json
import os
import subprocess
import sys

import pytest

# End to end: each benchmark script runs in a subprocess at its smallest size.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, out, *args):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_iso_convergence_quick(tmp_path):
    stdout = run("iso_convergence.py", tmp_path)
    payload = json.loads((tmp_path / "iso_convergence.json").read_text())
    case = payload["cases"]["digits_cnn logits"]
    schedules = {
        "riemann_left",
        "riemann_right",
        "riemann_middle",
        "trapezoid",
        "gauss_legendre",
        "nonuniform",
        "pilot_gauss",
        "auto",
    }
    assert set(case["table"]) == schedules
    for row in case["table"].values():
        assert set(row) == {"delta_5pct", "delta_1pct", "l2_1pct"}
        for cell in row.values():
            assert cell["median"] >= 1 and 0 <= cell["unsettled_fraction"] <= 1
    assert 0 < case["forward_cost"] < 1.5
    assert case["reference_max_l2_vs_double"] < 0.01
    timing = case["timing"]
    assert all(cell["ms_per_explanation"] > 0 for cell in timing.values())
    assert 0 <= timing["nonuniform"]["pilot_share"] < 1
    png = (tmp_path / "iso_convergence.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "digits_cnn logits" in stdout


def test_accelerator_script_runs_on_the_cpu_at_a_tiny_size(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "accelerator.py"),
            "--tiny",
            "--no-captum",
            "--repeats",
            "1",
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
    payload = json.loads((tmp_path / "accelerator.json").read_text())
    case = payload["results"]["resnet6_16px"]
    assert set(case["iso"]) == {"riemann_middle", "gauss_legendre"}
    rows = case["rows"]
    assert {(r["dtype"], r["contender"]) for r in rows} == {
        (d, c) for d in ("float32", "bfloat16") for c in ("jaxplain", "floor")
    }
    assert all(r["explanations_per_s"] > 0 for r in rows)
    assert result.stdout.strip().splitlines()[-3].startswith("| resnet6_16px | bfloat16 | gauss_legendre")


def test_memory_scaling_quick(tmp_path):
    """Fresh processes per (row, count), each reporting its peak resident memory and call times."""
    stdout = run("memory_scaling.py", tmp_path)
    payload = json.loads((tmp_path / "memory_scaling.json").read_text())
    assert payload["quick"] and payload["limit"] == 1.5 and payload["machine"]["jax"]
    rows = {row["row"]: row for row in payload["rows"]}
    assert set(rows) == {"integrated_gradients pilot_gauss", "kernel_shap"}
    ig = rows["integrated_gradients pilot_gauss"]
    assert ig["counts"] == [32, 1024] and len(ig["peak_mib"]) == 2
    for row in rows.values():
        for cell in row["cells"]:
            assert "error" not in cell, cell
            # one process's own peak: above what it holds after the import and the loading
            assert 50 < cell["setup_mib"] <= cell["first_call_peak_mib"] <= cell["peak_mib"] < 4096
            assert cell["first_call_s"] > 0 and cell["second_call_s"] > 0
        assert row["ratio"] == row["peak_mib"][-1] / row["peak_mib"][0]
        assert row["passed"] == (row["ratio"] <= 1.5)
    assert "| integrated_gradients pilot_gauss | 32, 1024 |" in stdout


def test_model_kwargs_quick(tmp_path):
    run("model_kwargs.py", tmp_path)
    payload = json.loads((tmp_path / "model_kwargs.json").read_text())
    assert {row["method"] for row in payload["cases"]} == {
        "token_attributions",
        "integrated_gradients",
        "saliency",
    }
    for row in payload["cases"]:  # both forms compute the same thing
        assert row["max_rel_diff"] < 1e-5 and row["ratio_model_kwargs_over_built_in"] > 0, row


def test_generation_vs_captum_quick(tmp_path):
    pytest.importorskip("captum")
    run("generation_vs_captum.py", tmp_path)
    payload = json.loads((tmp_path / "generation_vs_captum.json").read_text())
    assert [row["generated_tokens"] for row in payload["cases"]] == [1, 4]
    for row in payload["cases"]:
        # the same prompt attributions as Captum's per-token loop, to float32 rounding
        assert row["max_rel_diff"]["ig"] < 1e-4 and row["max_rel_diff"]["ixg"] < 1e-4, row
        assert all(ratio > 0 for ratio in row["ratio_captum_over_jaxplain"].values())
    assert "LayerNorm" in payload["captum_lrp_on_the_twin"]


def test_method_table_notes_say_a_shared_note_once():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from method_table import note_lines
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    notes = {
        "lrp focus": "no mosaics",
        "lrp composite focus": "no mosaics",
        "lrp composite consistency": "undefined",
    }
    assert note_lines(notes, ["lrp", "lrp composite"]) == [
        "- focus (every method): no mosaics",
        "- consistency (lrp composite): undefined",
        "",
    ]
    assert note_lines({}, ["lrp"]) == []
