"""benchmarks/vs_saliency.py --quick: PAIR saliency and jaxplain on the same digits, matched settings."""

import importlib.util
import json
import os
import sys

import pytest

# End to end: the benchmark script's main at its tiny size.
pytestmark = [
    pytest.mark.slow,
    # found without importing them: collecting this file stays cheap in every test process
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in ("saliency",)),
        reason="needs the bench extra (saliency)",
    ),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "vs_saliency.py")
METHODS = {"integrated_gradients", "smoothgrad", "blur_ig", "guided_ig"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("vs_saliency")
    spec = importlib.util.spec_from_file_location("vs_saliency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    status = module.main(["--quick", "--out", str(out)])
    with open(out / "vs_saliency.json") as f:
        return status, json.load(f)


def test_every_method_is_timed(report):
    status, payload = report
    assert status == 0
    assert payload["quick"] and payload["machine"]["cpu_count"] >= 1
    rows = {row["method"]: row for row in payload["rows"] if row["model"] == "digits_cnn"}
    assert set(rows) == METHODS
    for method, row in rows.items():
        assert row["ratio"] > 0, row
        assert row["timings"]["saliency"]["median_s"] > 0 and row["timings"]["jaxplain"]["median_s"] > 0
        assert method in payload["differences"]


def test_integrated_gradients_settings_match(report):
    rows = {row["method"]: row for row in report[1]["rows"]}
    ig = rows["integrated_gradients"]
    # saliency's rule rebuilt from jaxplain's trapezoid IG: the same points, the same gradients
    assert ig["max_rel_diff"] <= 1e-4, ig
    assert ig["pass"]
    # the two rules themselves differ by far more: the check is not vacuous
    assert ig["max_rel_diff_trapezoid"] > 100 * ig["max_rel_diff"]


def test_other_methods_are_compared(report):
    rows = {row["method"]: row for row in report[1]["rows"]}
    assert rows["guided_ig"]["max_rel_diff"] <= 1e-3, rows["guided_ig"]  # float32 vs float64 paths
    smooth = rows["smoothgrad"]
    assert smooth["kind"] == "statistical" and smooth["mean_rel_diff"] > 0
    # different noise, same estimator: the cross-library gap is of the size of jaxplain's own
    assert smooth["mean_rel_diff"] < 3 * smooth["jaxplain_self_mean_rel_diff"]
    assert rows["blur_ig"]["kind"] == "differs" and rows["blur_ig"]["max_rel_diff"] > 0


def test_xrai_same_heat_map_as_saliency_on_the_same_inputs(report):
    """The merge of the same base attribution and segments: PAIR's XRAI and jaxplain's agree."""
    (row,) = [row for row in report[1]["rows"] if row["method"] == "xrai"]
    assert row["kind"] == "deterministic" and row["pass"] and row["ranks_equal"], row
    assert row["max_rel_diff"] <= row["tolerance"] == 1e-5
    assert row["regions_per_image"] > 5  # many regions merged: the check is not vacuous
    for part in ("", "_merge", "_segments"):
        assert row["ms_per_image"]["saliency" + part] > 0 and row["ms_per_image"]["jaxplain" + part] > 0
    assert "xrai" in report[1]["differences"]
