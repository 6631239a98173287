import io

from jaxplain._progress import Progress


def test_progress_in_a_log_prints_a_final_line_with_metrics():
    stream = io.StringIO()
    with Progress(4, description="epoch 1/1", unit="step", enabled=True, stream=stream) as bar:
        for _ in range(4):
            bar.update(1, loss=0.25)
    lines = stream.getvalue().strip().splitlines()
    assert lines[-1].startswith("epoch 1/1 | [####################] 4/4")
    assert "loss 0.25" in lines[-1]
    assert len(lines) == 1  # a log gets one line per log_every seconds, not one per step


def test_disabled_progress_is_silent(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setenv("JAXPLAIN_PROGRESS", "0")
    with Progress(2, stream=stream) as bar:
        bar.update(2)
    assert stream.getvalue() == ""


def test_progress_in_a_log_prints_each_line_once():
    # log_every=0: every update draws. The last update already showed 3/3 with its
    # metrics, so closing adds no copy of it (a log used to end with the line twice).
    stream = io.StringIO()
    with Progress(3, description="job", enabled=True, stream=stream, log_every=0.0) as bar:
        for step in range(3):
            bar.update(1, loss=1.0 / (step + 1))
        bar.close()  # closed here and again by the with block: still one last line
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[1] for line in lines] == [
        f"[{'#' * (20 * k // 3)}{'.' * (20 - 20 * k // 3)}] {k}/3" for k in (1, 2, 3)
    ]
    assert lines[-1].endswith("loss 0.3333")


def test_progress_in_a_log_prints_the_last_line_when_it_changed():
    # Metrics set after the last drawn update (training's validation loss) and
    # unprinted counts each make closing print the final state, once.
    stream = io.StringIO()
    with Progress(2, enabled=True, stream=stream, log_every=0.0) as bar:
        bar.update(2)
        bar.metrics["validation_loss"] = 0.5
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "validation_loss" not in lines[0]
    assert lines[1].endswith("validation_loss 0.5")

    stream = io.StringIO()
    with Progress(None, unit="examples", enabled=True, stream=stream) as bar:  # log_every 10 s
        bar.update(5)
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]
    assert stream.getvalue().startswith("5 examples, ")


def test_progress_on_a_terminal_redraws_one_line_and_ends_it_once():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with Progress(2, enabled=True, stream=stream) as bar:
        bar._last_draw = -1e9  # the first update draws at once
        bar.update(2)
        bar.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r\033[K") == 2  # the update's draw, then the final redraw in place
