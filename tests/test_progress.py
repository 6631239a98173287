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
