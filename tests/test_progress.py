"""Progress in a log file (not a terminal): plain lines, one per line, a line per finished task and one every
`log_every_s` seconds while a task runs; never rich's final table wrapped at 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from reidaug.utils import progress as progress_module


def _lines(monkeypatch, run) -> list[str]:
    out = io.StringIO()
    monkeypatch.setattr(progress_module, "console", Console(file=out, width=80, force_terminal=False))
    run()
    return out.getvalue().splitlines()


def test_a_finished_task_is_one_unwrapped_line_with_its_final_info(monkeypatch):
    info = "loss 0.123 acc 99.0 " + "x" * 120

    def run():
        with progress_module.progress(log_every_s=3600) as bar:
            t = bar.add_task("epoch 1/2", total=3, info="", unit="batch")
            for i in range(3):
                bar.advance(t)
                bar.update(t, info=f"step {i} {info}")
            bar.add_task("features", total=2, info="", unit="img", completed=2)

    lines = _lines(monkeypatch, run)
    assert len(lines) == 2, lines
    assert lines[0].startswith("epoch 1/2  3/3  100%  ") and lines[0].endswith(f"step 2 {info}")
    assert "batch/s" in lines[0] and lines[1].startswith("features  2/2  100%")


def test_a_running_task_writes_a_line_every_interval(monkeypatch):
    clock = iter(range(0, 1000, 10))  # each call of monotonic advances 10 s
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))

    def run():
        with progress_module.progress(log_every_s=25) as bar:
            t = bar.add_task("train", total=100, info="")
            for _ in range(6):
                bar.advance(t)

    lines = _lines(monkeypatch, run)
    assert 1 <= len(lines) < 6 and all(ln.startswith("train  ") for ln in lines), lines
    assert lines[-1].startswith("train  6/100  6%")


def test_on_a_terminal_the_live_bar_is_rich_own(monkeypatch):
    monkeypatch.setattr(progress_module, "console", Console(file=io.StringIO(), force_terminal=True))
    bar = progress_module.progress()
    assert type(bar) is progress_module.Progress


def test_reid_log_lines_in_a_log_file_are_not_wrapped(monkeypatch, tmp_path):
    import reidaug.reid.run as run

    out = io.StringIO()
    monkeypatch.setattr(run, "console", Console(file=out, width=80, force_terminal=False))
    log = run._logger(tmp_path / "log.txt", to_console=True)
    message = "reidaug_market: mAP 47.3%  rank-1 54.7%  rank-5 82.3%  rank-10 91.2%  (373 queries, 373 valid, 968 gallery)"
    log.info(message)
    for h in log.handlers:
        h.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(message)
    assert (tmp_path / "log.txt").read_text().strip().endswith(message)


def test_a_task_whose_caller_logs_a_summary_writes_no_final_line(monkeypatch):
    def run():
        with progress_module.progress(log_every_s=3600) as bar:
            t = bar.add_task("epoch 1/2", total=2, info="", summary=False)
            bar.advance(t)
            bar.advance(t)
            bar.add_task("features", total=1, info="", completed=1)

    assert [ln.split()[0] for ln in _lines(monkeypatch, run)] == ["features"]
