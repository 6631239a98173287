"""A refused call never changes what is on disk (issue 18): every check runs before the
first write, and jaxplain never deletes or overwrites files it did not write. Each test
takes a snapshot of the folder (every file's bytes) before the refused call and compares."""

import json
import os
import re

import numpy as np
import pytest
from conftest import mlp_model

import jaxplain
from jaxplain.runs import OutputFolderError

X = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
Y = (np.arange(80) % 3).astype(np.int32)
MODEL = mlp_model()


def snapshot(folder):
    """Every file and folder under `folder`, with the files' bytes."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), folder) + "/"] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def refused(call, error, message, folder, before):
    """`call()` raises `error`, leaves `folder` as `before` (checked first), and says `message`."""
    with pytest.raises(error) as caught:
        call()
    assert snapshot(folder) == before, f"the refused call changed {folder} ({caught.value})"
    assert re.search(message, str(caught.value)), str(caught.value)
    return caught.value


def _explain(out, data, **kwargs):
    return jaxplain.explain_dataset(
        "saliency", MODEL, data, out=str(out), batch_size=16, progress=False, **kwargs
    )


def _batches(x, size=10):  # a stream without a length, in chunks that do not align with the batches
    for start in range(0, len(x), size):
        yield x[start : start + size]


# --------------------------------------------------------------------------- explain_dataset: resume


@pytest.mark.parametrize("stream", [False, True], ids=["array", "stream"])
def test_a_finished_run_resumed_with_other_data_is_refused_and_left_as_it_was(tmp_path, stream):
    out = tmp_path / "run"
    _explain(out, X[:64])
    before = snapshot(out)
    given = (lambda x: _batches(x)) if stream else (lambda x: x)
    for data, message in (
        (X, "finished run of 64 examples, the data given now have"),  # longer (the case)
        (X[:48], "finished run of 64 examples, the data given now have 48"),  # shorter
        (X[:63], "64 examples, the data given now have 63|16 examples from example 48 on"),
        (np.concatenate([X[:60], X[:4] + 1]), "other inputs"),  # the same length, other contents
    ):
        refused(lambda: _explain(out, given(data)), OutputFolderError, message, out, before)
    got = jaxplain.load_attributions(out)
    assert got.complete and len(got) == 64
    # the same data again: nothing to do, nothing written
    summary = _explain(out, given(X[:64]))
    assert summary.computed == () and summary.skipped == 4 and summary.examples == 64
    assert snapshot(out) == before


def test_an_unfinished_run_is_checked_against_every_finished_batch_before_writing(tmp_path):
    out = tmp_path / "run"
    _explain(out, X)
    index = out / "index.p0.jsonl"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:3]) + lines[3][:20])  # batches 0-2 finished, a torn line, no end
    (out / "shards" / ".tmp-cut-short.npz").write_bytes(b"a write killed half-way")
    before = snapshot(out)  # the torn line and the temporary file too: a refused call keeps them
    # data that stop before the last finished batch: refused (they used to get an end line)
    refused(
        lambda: _explain(out, _batches(X[:32])),
        OutputFolderError,
        "holds batch 2 .* the data given now have 32 examples",
        out,
        before,
    )
    # other contents in a finished batch that is not the first one
    changed = X.copy()
    changed[40] += 1
    refused(
        lambda: _explain(out, _batches(changed)), OutputFolderError, "batch 2 .* other inputs", out, before
    )
    # other labels
    refused(lambda: _explain(out, (X, Y)), OutputFolderError, "batch 0 .* other labels", out, before)
    assert _explain(out, _batches(X)).computed == (3, 4)
    assert jaxplain.load_attributions(out, require_complete=True).index.tolist() == list(range(80))
    assert not (out / "shards" / ".tmp-cut-short.npz").exists()


def test_nan_in_an_array_is_refused_before_the_folder_is_made(tmp_path):
    bad = X.copy()
    bad[70, 1] = np.nan  # in the last batch
    with pytest.raises(ValueError, match="example 70 holds NaN"):
        _explain(tmp_path / "run", bad)
    assert not (tmp_path / "run").exists()
    _explain(tmp_path / "run", X[:32])
    before = snapshot(tmp_path / "run")  # nor is a finished run touched
    refused(
        lambda: _explain(tmp_path / "run", bad), ValueError, "example 70 holds NaN", tmp_path / "run", before
    )


def test_a_bad_batch_late_in_a_stream_stops_the_run_which_stays_resumable(tmp_path):
    bad = X.copy()
    bad[50, 0] = np.inf
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="example 50 holds NaN or infinity"):
        _explain(out, _batches(bad))
    with pytest.warns(UserWarning, match="incomplete"):
        partial = jaxplain.load_attributions(out)
    assert not partial.complete and partial.index.tolist() == list(range(48))  # batches 0-2 kept, no end line
    assert b'"end"' not in (out / "index.p0.jsonl").read_bytes()
    # a stream whose examples change shape, and one longer than labels=, stop the same way
    wrong = (x if i < 5 else x[:, :4] for i, x in enumerate(_batches(X)))
    with pytest.raises(ValueError, match="examples from 50 on have shape"):
        _explain(out, wrong)
    with pytest.raises(ValueError, match="labels has 56 entries but data has more"):
        _explain(tmp_path / "labelled", _batches(X), labels=Y[:56])
    with pytest.warns(UserWarning, match="incomplete"):
        assert not jaxplain.load_attributions(tmp_path / "labelled").complete
    # the corrected data finish the run
    summary = _explain(out, _batches(X))
    assert summary.computed == (3, 4)
    assert jaxplain.load_attributions(out, require_complete=True).index.tolist() == list(range(80))


@pytest.mark.parametrize(
    "error, message, data, kwargs",
    [
        # num_examples=0 wrote a run without complaint
        (ValueError, "num_examples must be >= 1, got 0", X[:16], {"num_examples": 0}),
        (TypeError, "num_examples must be an int", X[:16], {"num_examples": 16.0}),
        # a dataset's name was iterated letter by letter and the error named x
        (
            TypeError,
            "data must be arrays .* got the string 'digits'.*jaxplain.data.load\\('digits'\\)",
            "digits",
            {},
        ),
    ],
)
def test_bad_counts_and_data_are_refused_before_the_folder_is_made(tmp_path, error, message, data, kwargs):
    refused(lambda: _explain(tmp_path / "run", data, **kwargs), error, message, tmp_path, {})


# --------------------------------------------------------------------------- explain_dataset: out


def test_an_empty_or_impossible_out_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("the user's")
    before = snapshot(tmp_path)
    for out, message in (
        ("", "out is empty"),
        ("   ", "out is empty"),
        ("mine.txt", "exists and is not a folder"),
        ("mine.txt/sub", "mine.txt is a file, not a folder"),
        ("a\0b", "NUL"),
    ):
        refused(lambda: _explain(out, X[:16]), OutputFolderError, message, tmp_path, before)
    with pytest.raises(TypeError, match="out must be a path"):
        jaxplain.explain_dataset("saliency", MODEL, X[:16], out=3, progress=False)
    # a folder that cannot be written (a read-only file system; root ignores permissions, so
    # the check is mocked): refused up front, naming the folder
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    refused(
        lambda: _explain("new/run", X[:16]),
        OutputFolderError,
        f"{tmp_path} is not writable",
        tmp_path,
        before,
    )


def test_overwrite_keeps_a_run_folder_whose_shards_or_views_hold_the_users_files(tmp_path):
    out = tmp_path / "run"
    for extra in ("views/notes.txt", "views/old/attributions.png", "shards/mine.npz"):
        jaxplain.explain_dataset("integrated_gradients", MODEL, X[:16], out=str(out), steps=4, progress=False)
        (out / "views").mkdir(exist_ok=True)
        (out / "views" / "attributions.png").write_bytes(b"drawn by jaxplain explain")
        (out / extra).parent.mkdir(exist_ok=True)
        (out / extra).write_bytes(b"the user's")
        before = snapshot(out)
        refused(
            lambda: jaxplain.explain_dataset(
                "integrated_gradients", MODEL, X[:16], out=str(out), steps=8, overwrite=True, progress=False
            ),
            OutputFolderError,
            "did not write",
            out,
            before,
        )
        os.remove(out / extra)
        if extra.count("/") == 2:
            os.rmdir((out / extra).parent)
    # with only jaxplain's files (its pictures included) the run is replaced
    jaxplain.explain_dataset(
        "integrated_gradients", MODEL, X[:16], out=str(out), steps=8, overwrite=True, progress=False
    )
    assert jaxplain.load_attributions(out).run["settings"]["options"]["steps"] == 8
    assert not (out / "views" / "attributions.png").exists()


# --------------------------------------------------------------------------- make_labels


def test_make_labels_checks_everything_before_it_makes_its_cache_folder(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = X[:40].copy()
    bad[39, 0] = np.nan  # in the last batch
    refused(
        lambda: jaxplain.amortized.make_labels(
            "saliency", MODEL, bad, batch_size=16, cache_dir=str(cache), progress=False
        ),
        ValueError,
        "x contains NaN",
        cache,
        {},
    )
    # a setting the method refuses: no empty cache folder is left behind
    refused(
        lambda: jaxplain.amortized.make_labels(
            "integrated_gradients", MODEL, X[:8], schedule="simpson", cache_dir=str(cache), progress=False
        ),
        ValueError,
        "schedule must be one of",
        cache,
        {},
    )
    (tmp_path / "file").write_text("the user's")
    for where, message in (
        ("", "cache_dir is empty"),
        (str(tmp_path / "file"), "exists and is not a folder"),
    ):
        refused(
            lambda: jaxplain.amortized.make_labels("saliency", MODEL, X[:8], cache_dir=where, progress=False),
            ValueError,
            message,
            tmp_path,
            snapshot(tmp_path),
        )


# --------------------------------------------------------------------------- the command line

WINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints", "wine_mlp")
COMMANDS = {  # every command that writes, with the option that says where
    "explain": (["explain", "--model", WINE, "--data", "wine", "--n", "4"], "--out"),
    "evaluate": (["evaluate", "--model", WINE, "--data", "wine", "--n", "4"], "--out"),
    "train": (["train", "--model", "mlp", "--data", "wine", "--epochs", "1"], "--out"),
    "train-explainer": (["train-explainer", "--model", WINE, "--data", "wine", "--epochs", "1"], "--out"),
    "train-explainer --cache": (
        [
            "train-explainer",
            "--model",
            WINE,
            "--data",
            "wine",
            "--epochs",
            "1",
            "--out",
            "writable/explainer",
        ],
        "--cache",
    ),
    "show --output": (["show", "some_run", "--index", "0"], "--output"),
}


def _one_line(capsys, code, argv):
    from jaxplain import cli

    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_cli_output_that_cannot_be_written_is_one_line_and_exit_2(
    command, tmp_path, capsys, monkeypatch
):
    """Before any work: a path below a file (fails so for root too), then a folder that cannot
    be written (mocked: root ignores permissions, and a read-only file system answers the
    same). Both used to end in a traceback and exit 1, train's after the training."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / "writable").mkdir()
    before = snapshot(tmp_path)
    argv, option = COMMANDS[command]
    err = _one_line(capsys, 2, [*argv, option, "notes.txt/sub"])
    assert f"{option}: cannot create notes.txt/sub: {tmp_path / 'notes.txt'} is a file" in err
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(tmp_path))
    err = _one_line(capsys, 2, [*argv, option, "new/place"])
    assert f"{option}: cannot create new/place: {tmp_path} is not writable" in err
    assert snapshot(tmp_path) == before


def test_a_write_that_fails_later_is_one_line_too(tmp_path, capsys, monkeypatch):
    import errno

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "shards"))

    monkeypatch.setattr(jaxplain, "explain_dataset", failing)
    argv = [*COMMANDS["explain"][0], "--out", str(tmp_path / "run")]
    for code, exit_code in (
        (errno.EROFS, 2),
        (errno.ENOSPC, 1),
    ):  # read-only (a path the user gave); disk full
        err = _one_line(capsys, exit_code, argv)
        assert os.strerror(code) in err and str(tmp_path / "run" / "shards") in err


def test_cli_outputs_never_replace_the_users_files(tmp_path, capsys, monkeypatch):
    from jaxplain.cli import evaluate

    monkeypatch.chdir(tmp_path)
    for folder, files in (
        ("notes", {"notes.txt": "mine"}),
        ("table", {"table.md": "my own table"}),
        ("checkpoint", {"metadata.json": "{}", "README.md": "mine"}),
    ):
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(text)
    before = snapshot(tmp_path)
    for folder in ("notes", "table"):
        err = _one_line(capsys, 2, [*COMMANDS["evaluate"][0], "--out", folder])
        assert "did not write" in err
    for command in ("train", "train-explainer"):
        assert "exists and is not a jaxplain checkpoint" in _one_line(
            capsys, 2, [*COMMANDS[command][0], "--out", "notes"]
        )
        assert "also holds files jaxplain did not write (README.md)" in _one_line(
            capsys, 2, [*COMMANDS[command][0], "--out", "checkpoint"]
        )
    assert snapshot(tmp_path) == before
    # an earlier evaluate's output is replaced
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "table.json").write_text(json.dumps({"rows": {}}))
    (tmp_path / "earlier" / "grid.png").write_bytes(b"png")
    assert evaluate._check_out("earlier") == "earlier"


# --------------------------------------------------------------------------- pictures


def test_pictures_refuse_a_path_they_cannot_write_before_drawing(tmp_path, monkeypatch):
    from jaxplain import viz

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    values = np.linspace(-1, 1, 12).reshape(2, 6)
    draws = (
        lambda path: viz.tabular_attributions(values, path),
        lambda path: viz.text_html([["a", "b"]], values[:1, :2], path),
    )
    for path, message in (
        ("", "path is empty"),
        ("folder", "is a folder, not a file"),
        ("notes.txt/x.png", "notes.txt is a file, not a folder"),
        # PIL's FileNotFoundError came after the drawing
        ("missing/x.png", f"the folder {tmp_path / 'missing'} does not exist"),
    ):
        for draw in draws:  # an empty path used to save a hidden ".png" in the current directory
            refused(lambda: draw(path), ValueError, message, tmp_path, before)
    assert viz.tabular_attributions(values, tmp_path / "ok.png") == tmp_path / "ok.png"


def test_metadata_that_run_json_cannot_hold_is_refused_before_the_folder_is_made(tmp_path):
    # it used to fail after shards/ was made, leaving a folder that every later call refused
    for metadata in ({"when": object()}, ["not", "a", "dict"]):
        with pytest.raises(TypeError, match="metadata must be a dict of JSON values"):
            _explain(tmp_path / "run", X[:16], metadata=metadata)
        assert not (tmp_path / "run").exists()
    _explain(tmp_path / "run", X[:16], metadata={"when": "now"})
    assert jaxplain.load_attributions(tmp_path / "run").run["metadata"] == {"when": "now"}
