"""explain_dataset with two JAX processes on localhost (CPU, gloo collectives, 2 devices
each): the same answer as one process, the last batch's padding handled on both, resume
recomputes exactly the batches that some process lacks, and a refused folder fails on
every process instead of leaving one waiting in a collective."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jaxplain

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKPOINT = str(ROOT / "checkpoints" / "digits_cnn")
SETTINGS = {"batch_size": 16, "steps": 16, "progress": False}
SKIP = 77  # a worker's exit status when multi-process CPU JAX cannot start at all

# argv: port, process id, a JSON list of jobs {"out": folder, "n": examples}. One JSON
# line per job on stdout: what the call computed, or the error it raised.
WORKER = textwrap.dedent("""
    import json, sys
    import jax
    port, process, jobs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    try:
        jax.distributed.initialize(coordinator_address="127.0.0.1:" + port, num_processes=2, process_id=process)
        devices, local = jax.devices(), jax.local_devices()
        assert jax.process_count() == 2 and len(devices) == 4 and len(local) == 2, (devices, local)
    except Exception as error:
        print("cannot start 2 CPU processes with 2 devices each:", type(error).__name__, error, file=sys.stderr)
        sys.exit(%(skip)d)
    import jaxplain
    from jaxplain.runs import OutputFolderError
    model = jaxplain.load_model(%(checkpoint)r)
    x = jaxplain.data.load("digits").x_test
    for job in jobs:
        try:
            summary = jaxplain.explain_dataset("integrated_gradients", model, x[: job["n"]], out=job["out"], **%(settings)r)
            print(json.dumps({"computed": list(summary.computed), "skipped": summary.skipped}), flush=True)
        except OutputFolderError as error:
            print(json.dumps({"error": str(error)}), flush=True)
""") % {"skip": SKIP, "checkpoint": CHECKPOINT, "settings": SETTINGS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, name, jobs, timeout=120):
    """Runs WORKER as processes 0 and 1; returns each one's list of job results."""
    env = {
        **os.environ,
        # the test process's flags too (its optimisation level): the answers are compared
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip(),
        "JAXPLAIN_PROGRESS": "0",
        "JAX_PLATFORMS": "cpu",
    }
    port = str(_free_port())
    logs = [(tmp_path / f"{name}.p{i}.out", tmp_path / f"{name}.p{i}.err") for i in range(2)]
    children = []
    for i, (out, err) in enumerate(logs):
        with open(out, "w") as stdout, open(err, "w") as stderr:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, port, str(i), json.dumps(jobs)],
                    cwd=ROOT,
                    env=env,
                    stdout=stdout,
                    stderr=stderr,
                )
            )
    deadline = time.monotonic() + timeout
    try:
        for child in children:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for child in children:  # never leave one behind, waiting in a collective
            if child.poll() is None:
                child.kill()
                child.wait()
    tails = "\n".join(
        f"--- process {i} (exit {c.returncode}):\n" + logs[i][1].read_text()[-3000:]
        for i, c in enumerate(children)
    )
    if any(c.returncode == SKIP for c in children):
        pytest.skip("multi-process CPU JAX unavailable here: " + tails)
    assert all(c.returncode == 0 for c in children), (
        f"{name}: a worker failed or hung past {timeout}s\n{tails}"
    )
    return [
        [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")] for out, _ in logs
    ]


def _index(folder, process):
    return [json.loads(line) for line in (folder / f"index.p{process}.jsonl").read_text().splitlines()]


def _assert_same(got, want, n):
    assert got.complete and got.missing == () and got.num_examples == n and len(got) == n
    np.testing.assert_array_equal(got.index, np.arange(n))
    np.testing.assert_allclose(
        got.values, want.values, rtol=1e-6, atol=1e-7 * float(np.abs(want.values).max())
    )
    np.testing.assert_array_equal(got.target, want.target)
    np.testing.assert_allclose(got.delta, want.delta, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # end to end: two JAX processes started as scripts
def test_two_processes_equal_one_and_resume_recomputes_what_any_process_lacks(tmp_path):
    model, x = jaxplain.load_model(CHECKPOINT), jaxplain.data.load("digits").x_test
    single = {}
    for n in (70, 76):  # last batch: 6 rows (process 1's block all padding), 12 rows (half of it)
        jaxplain.explain_dataset(
            "integrated_gradients", model, x[:n], out=str(tmp_path / f"single{n}"), **SETTINGS
        )
        single[n] = jaxplain.load_attributions(tmp_path / f"single{n}")
    a, b, refused = tmp_path / "a", tmp_path / "b", tmp_path / "single70"
    jobs = [
        {"out": str(a), "n": 70},
        {"out": str(b), "n": 76},
        {"out": str(refused), "n": 70},
    ]  # a one-process run's folder: another run for two processes
    first = _launch(tmp_path, "first", jobs)
    for process in range(2):
        assert first[process][:2] == [{"computed": [0, 1, 2, 3, 4], "skipped": 0}] * 2, first
        assert (
            "holds another run" in first[process][2]["error"] or "process 0" in first[process][2]["error"]
        ), first
    assert "processes: 1 -> 2" in first[0][2]["error"], first
    assert sorted(os.listdir(refused)) == ["index.p0.jsonl", "run.json", "shards"]
    for folder, n in ((a, 70), (b, 76)):
        _assert_same(jaxplain.load_attributions(folder), single[n], n)
        last = [_index(folder, p)[4] for p in range(2)]
        assert [r["batch"] for r in last] == [4, 4] and [r["rows"] for r in last] == [
            min(8, n - 64),
            max(0, n - 72),
        ]
        assert _index(folder, 1)[-1] == {"end": True, "num_batches": 5, "num_examples": n}

    # a: process 1 lost its last batch and its end line; b: process 0 lost batch 1 (1 has it)
    lines = (a / "index.p1.jsonl").read_text().splitlines(keepends=True)
    (a / "index.p1.jsonl").write_text("".join(lines[:-2]))
    lines = (b / "index.p0.jsonl").read_text().splitlines(keepends=True)
    (b / "index.p0.jsonl").write_text("".join(lines[:1] + lines[2:]))
    with pytest.warns(UserWarning, match="incomplete"):
        assert not jaxplain.load_attributions(a).complete
    with pytest.warns(UserWarning, match="incomplete"):
        assert jaxplain.load_attributions(b).missing == (1,)
    untouched = {
        p: p.stat().st_mtime_ns
        for folder, keep in ((a, "b00000[0-3]"), (b, "b00000[02-4]"))
        for p in (folder / "shards").glob(keep + ".p*.npz")
    }
    assert len(untouched) == 16
    second = _launch(tmp_path, "second", jobs[:2])
    for process in range(2):
        assert second[process] == [{"computed": [4], "skipped": 4}, {"computed": [1], "skipped": 4}], second
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    for folder, n in ((a, 70), (b, 76)):
        _assert_same(jaxplain.load_attributions(folder), single[n], n)
