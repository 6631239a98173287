"""explain_dataset / load_attributions: same answer as the method, sharded or not; resume
after SIGKILL loses and duplicates nothing; foreign, corrupt or other runs' folders refused."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from conftest import mlp_model

import jaxplain
from jaxplain.runs import OutputFolderError

ROOT = pathlib.Path(__file__).resolve().parents[1]
X = np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)
Y = (np.arange(23) % 3).astype(np.int32)


def _run(out, data=X, method="integrated_gradients", **kwargs):
    settings = {
        "batch_size": 8,
        "progress": False,
        **({"steps": 8} if method == "integrated_gradients" else {}),
        **kwargs,
    }
    return jaxplain.explain_dataset(method, mlp_model(), data, out=str(out), **settings)


def test_results_equal_the_method_batch_by_batch_and_resume_skips_everything(tmp_path):
    summary = _run(tmp_path / "a", (X, Y))
    assert (summary.examples, summary.batches, summary.computed, summary.skipped) == (23, 3, (0, 1, 2), 0)
    got = jaxplain.load_attributions(tmp_path / "a")
    direct = jaxplain.integrated_gradients(mlp_model(), X, target="predicted", steps=8)
    assert got.complete and got.num_examples == 23 and got.missing == ()
    np.testing.assert_array_equal(got.index, np.arange(23))
    np.testing.assert_allclose(got.values, direct.values, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got.target, direct.target)
    np.testing.assert_allclose(got.delta, direct.delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.relative_delta, direct.relative_delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.labels, Y)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "shards").iterdir()}
    again = _run(tmp_path / "a", (X, Y))
    assert again.computed == () and again.skipped == 3
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "shards").iterdir()} == before


def test_every_kind_of_data_gives_the_same_answer(tmp_path):
    reference = _run(tmp_path / "array", X, target="label", labels=Y) and jaxplain.load_attributions(
        tmp_path / "array"
    )

    def generator():  # batches of uneven sizes, as (inputs, labels) pairs
        for start, stop in ((0, 5), (5, 6), (6, 17), (17, 23)):
            yield X[start:stop], Y[start:stop]

    class Records:  # a random-access source of single examples, as TFDS's as_data_source
        def __len__(self):
            return len(X)

        def __getitems__(self, indices):
            return [{"features": X[i], "label": Y[i]} for i in indices]

    class Batched:  # a tf.data.Dataset of dict batches
        def as_numpy_iterator(self):
            return iter([{"features": X[:10], "label": Y[:10]}, {"features": X[10:], "label": Y[10:]}])

    for name, data in (
        ("generator", generator()),
        ("records", Records()),
        ("tfdata", Batched()),
        ("dict", {"features": X, "label": Y}),
    ):
        _run(tmp_path / name, data, target="label")
        got = jaxplain.load_attributions(tmp_path / name)
        np.testing.assert_array_equal(got.values, reference.values, err_msg=name)
        np.testing.assert_array_equal(got.target, Y, err_msg=name)


def test_randomized_method_same_key_same_result_and_noise_methods_by_name(tmp_path):
    key = jax.random.key(3)
    _run(tmp_path / "a", method="smoothgrad", wrap="saliency", key=key, samples=4)
    _run(tmp_path / "b", method="smoothgrad", wrap="saliency", key=key, samples=4)
    _run(tmp_path / "c", method="smoothgrad", wrap="saliency", key=jax.random.key(4), samples=4)
    a, b, c = (jaxplain.load_attributions(tmp_path / n).values for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # batch i draws from fold_in(key, i): the first batch is the method on its 8 rows
    first = jaxplain.smoothgrad(
        mlp_model(),
        X[:8],
        method=jaxplain.saliency,
        target="predicted",
        key=jax.random.fold_in(key, 0),
        samples=4,
    )
    np.testing.assert_allclose(a[:8], first.values, rtol=1e-6, atol=1e-7)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["method"] == "smoothgrad(saliency)"


SHARDED_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax, jaxplain
    assert len(jax.devices()) == 4, jax.devices()
    model = jaxplain.load_model("checkpoints/digits_cnn")
    x = jaxplain.data.load("digits").x_test[:70]
    one = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    calls = {"integrated_gradients": {"steps": 16},
             "kernel_shap": {"samples": 32, "key": jax.random.key(0),
                             "feature_mask": jaxplain.patch_mask((8, 8, 1), (2, 2, 1))}}
    for name, options in calls.items():
        out = sys.argv[1] + "/" + name
        jaxplain.explain_dataset(name, model, x, out=out + "/four", batch_size=16, progress=False, **options)
        jaxplain.explain_dataset(name, model, x, out=out + "/one", batch_size=16, mesh=one, progress=False, **options)
        # a run started on one device and cut short resumes on four with the same answer
        jaxplain.explain_dataset(name, model, x, out=out + "/moved", batch_size=16, mesh=one, progress=False, **options)
        index = out + "/moved/index.p0.jsonl"
        lines = open(index).read().splitlines(keepends=True)
        open(index, "w").write("".join(lines[:3]))
        summary = jaxplain.explain_dataset(name, model, x, out=out + "/moved", batch_size=16, progress=False, **options)
        assert summary.computed == (3, 4), summary
""")


@pytest.mark.slow  # a script in a fresh process with four CPU devices
def test_sharded_over_four_devices_equals_one_device(tmp_path):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAXPLAIN_PROGRESS": "0"}  # compiled as this process compiles
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        env=env,
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("integrated_gradients", "kernel_shap"):
        four, one = (jaxplain.load_attributions(tmp_path / name / part) for part in ("four", "one"))
        assert len(four) == 70 and four.complete
        np.testing.assert_allclose(
            four.values, one.values, rtol=1e-6, atol=1e-7 * float(np.abs(one.values).max()), err_msg=name
        )
        np.testing.assert_array_equal(four.target, one.target)
        moved = jaxplain.load_attributions(tmp_path / name / "moved")
        np.testing.assert_array_equal(moved.values, one.values, err_msg=name)


KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time, jaxplain
    model = jaxplain.load_model("checkpoints/digits_cnn")
    x = jaxplain.data.load("digits").x_test[:120]
    slow = sys.argv[2] == "slow"

    def batches():  # a slow data pipeline, so that the run can be killed half-way
        for start in range(0, len(x), 10):
            if slow:
                time.sleep(0.15)
            yield x[start:start + 10]

    summary = jaxplain.explain_dataset("integrated_gradients", model, batches(), out=sys.argv[1], batch_size=8,
                                       steps=16, num_examples=len(x), progress=False)
    print(json.dumps({"computed": summary.computed, "skipped": summary.skipped}))
""")


def _index_batches(out):
    lines = (out / "index.p0.jsonl").read_bytes().split(b"\n")
    return [json.loads(line)["batch"] for line in lines[:-1] if b'"batch"' in line]


@pytest.mark.slow  # end to end: a script killed and started again; in-process resumes are checked by default
def test_killed_with_sigkill_and_restarted_gives_the_uninterrupted_output(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-c", KILL_SCRIPT, str(out)]
    child = subprocess.Popen(command + ["slow"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "index.p0.jsonl").exists() and len(_index_batches(out)) >= 3:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    finished = _index_batches(out)
    total = 15  # 120 examples in batches of 8
    assert 3 <= len(finished) < total, "the run finished before it could be killed"
    assert finished == list(range(len(finished)))
    on_disk = sorted(int(p.name[1:7]) for p in (out / "shards").glob("b*.npz"))
    # nothing but the finished shards and at most the one in flight
    assert set(on_disk) <= set(finished) | {len(finished)}
    kept = {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (out / "shards").glob("b*.npz")
        if int(p.name[1:7]) in finished
    }

    resumed = subprocess.run(
        command + ["fast"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=120
    )
    report = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert report["computed"] == list(range(len(finished), total))
    assert report["skipped"] == len(finished)
    assert {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (out / "shards").glob("b*.npz")
        if p.name in kept
    } == kept

    subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "whole"), "fast"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    killed, whole = jaxplain.load_attributions(out), jaxplain.load_attributions(tmp_path / "whole")
    assert killed.complete and len(killed) == 120
    np.testing.assert_array_equal(killed.index, np.arange(120))  # each example once
    for field in ("values", "target", "delta", "relative_delta"):
        np.testing.assert_array_equal(getattr(killed, field), getattr(whole, field), err_msg=field)


def test_foreign_folder_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not a jaxplain attributions folder"):
        _run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
    with pytest.raises(OutputFolderError, match="no run.json"):
        jaxplain.load_attributions(tmp_path)


def test_another_run_is_refused_unless_overwrite(tmp_path):
    _run(tmp_path / "a")
    with pytest.raises(OutputFolderError, match=r"another run .*steps: 8 -> 16"):
        _run(tmp_path / "a", steps=16)
    assert jaxplain.load_attributions(tmp_path / "a").run["settings"]["options"]["steps"] == 8
    _run(tmp_path / "a", steps=16, overwrite=True)
    assert jaxplain.load_attributions(tmp_path / "a").run["settings"]["options"]["steps"] == 16
    # overwrite never removes files jaxplain did not write
    (tmp_path / "a" / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="did not write"):
        _run(tmp_path / "a", steps=4, overwrite=True)
    assert (tmp_path / "a" / "notes.txt").exists()


def test_corrupt_folders_are_refused(tmp_path):
    _run(tmp_path / "a")
    shard = tmp_path / "a" / "shards" / "b000001.p0.npz"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    for action in (lambda: jaxplain.load_attributions(tmp_path / "a"), lambda: _run(tmp_path / "a")):
        with pytest.raises(OutputFolderError, match="b000001.p0.npz does not match its checksum"):
            action()
    _run(tmp_path / "b")
    (tmp_path / "b" / "run.json").write_text("{not json")
    with pytest.raises(OutputFolderError, match="run.json is corrupt"):
        _run(tmp_path / "b")
    _run(tmp_path / "c")
    os.remove(tmp_path / "c" / "shards" / "b000000.p0.npz")
    with pytest.raises(OutputFolderError, match="listed .* but missing"):
        jaxplain.load_attributions(tmp_path / "c")
    _run(tmp_path / "d")
    with pytest.raises(OutputFolderError, match="other inputs"):
        _run(tmp_path / "d", X + 1.0)


def test_incomplete_folder_is_read_with_a_warning_and_a_torn_index_line_is_dropped(tmp_path):
    _run(tmp_path / "a")
    index = tmp_path / "a" / "index.p0.jsonl"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:2]) + lines[2][:25])  # batch 2 and the end line lost mid-write
    with pytest.warns(UserWarning, match="incomplete: 2 batches finished"):
        partial = jaxplain.load_attributions(tmp_path / "a")
    assert not partial.complete and len(partial) == 16 and partial.num_examples is None
    with pytest.raises(OutputFolderError, match="incomplete"):
        jaxplain.load_attributions(tmp_path / "a", require_complete=True)
    assert _run(tmp_path / "a").computed == (2,)
    assert jaxplain.load_attributions(tmp_path / "a").complete


def test_bad_arguments_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="not a jaxplain method"):
        _run(tmp_path / "a", method="integrated_gradient")
    with pytest.raises(ValueError, match="wrap names the method a noise method wraps; saliency wraps none"):
        _run(tmp_path / "a", method="saliency", wrap="integrated_gradients")
    with pytest.raises(ValueError, match="target='label' needs labels"):
        _run(tmp_path / "a", target="label")
    with pytest.raises(ValueError, match="batch_size"):
        _run(tmp_path / "a", batch_size=0)
    with pytest.raises(TypeError, match="data must be"):
        _run(tmp_path / "a", 3.0)
    bad = X.copy()
    bad[13, 2] = np.nan
    with pytest.raises(ValueError, match="example 13 holds NaN"):
        _run(tmp_path / "b", bad)
    with pytest.raises(ValueError, match="labels has 5 entries"):
        _run(tmp_path / "c", labels=Y[:5])


def test_a_setting_the_method_rejects_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="schedule must be one of"):
        _run(tmp_path / "a", schedule="simpson")
    assert not (tmp_path / "a").exists()
    _run(tmp_path / "a")  # the folder is free for the corrected call
    assert jaxplain.load_attributions(tmp_path / "a").complete
