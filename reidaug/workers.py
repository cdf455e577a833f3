"""The Table 6 sweep's tasks in worker processes, for both parallel executors: Ray's (reidaug.cluster) and the
local one's process pool (`cluster.jobs` > 1, `run_pool` here).

A generated training set M_p^A (one generation by augment) is one task, a cell (one re-ID training and
evaluation) one task once its training set exists, a generator's image metrics one task once its first
augmentation exists. Every task records where it ran (worker.json: run, pid, host, and the Ray node) and appends
its output to its log in its folder. The driver shows a board: done, running, failed and the ETA.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

from reidaug.errors import ReidaugError, first_line
from reidaug.utils.io import atomic_write_text
from reidaug.utils.progress import console, status_progress

if TYPE_CHECKING:  # the experiment (torch, pandas) is imported by the tasks that run it
    from reidaug.experiment import Cell, ExperimentConfig, Source

REFRESH_S = 2.0  # how often the driver redraws its display and looks for cells that started
WORKER = "worker.json"  # in a cell folder: where its last attempt ran
LOG = "cell.log"  # in a cell folder: the output of every attempt


def new_run() -> str:
    """The name of one driver run: its tasks' records carry it."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _ray_node() -> str | None:
    """The Ray node this process runs on, when it is a Ray worker."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None


@contextmanager
def recorded(log: Path, record: Path, run: str):
    """Where this attempt runs, in `record`; its output (prints of libraries and subprocesses too) appended to
    `log`, with the traceback of a failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    node = _ray_node()
    info = {"run": run, "pid": os.getpid(), "node_id": node, "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    atomic_write_text(record, json.dumps(info) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            with redirect_stdout(f), redirect_stderr(f):
                where = f"host {info['host']}" + (f", node {node[:12]}" if node else "")
                print(f"== {info['started']} run {run}: {where}, pid {info['pid']}")
                try:
                    yield info
                except BaseException:
                    traceback.print_exc()
                    raise
        finally:
            f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def source_files(out: Path, src: Source) -> tuple[Path, Path]:
    """The log and worker record of a training set's task, beside its folder (augment wants the folder its own)."""
    d = out / src.folder
    return d.with_name(d.name + ".log"), d.with_name(d.name + ".worker.json")


def source_task(src: Source, cfg: ExperimentConfig, data: str, out: str, run: str) -> str:
    """Build one training set; its root is what the cells that use it receive."""
    from reidaug.experiment import build_source

    log, record = source_files(Path(out), src)
    with recorded(log, record, run):
        return str(build_source(src, cfg, Path(data), Path(out), show_progress=False))


def cell_task(cell: Cell, root: str, out: str, run: str) -> dict:
    """One cell on the training set `root`; returns where it ran."""
    from reidaug.experiment import run_cell

    d = cell.folder(Path(out))
    with recorded(d / LOG, d / WORKER, run) as info:
        run_cell(cell, Path(root), Path(out), show_progress=False)
    return info


def metrics_task(label: str, cfg: ExperimentConfig, data: str, out: str, run: str, _after=None) -> str:
    """The image metrics of a generator's first augmentation, once it exists (`_after`: Ray's ObjectRef of its
    build)."""
    from reidaug.experiment import image_metrics

    log = Path(out) / "image_metrics" / f"{label}.log"
    with recorded(log, log.with_suffix(".worker.json"), run):
        return str(image_metrics(Path(out), Path(data), label, cfg, show_progress=False))


def started(cell: Cell, out: Path, run: str) -> bool:
    """Whether an attempt of `cell` of this run has started (its worker record names the run)."""
    try:
        return json.loads((cell.folder(out) / WORKER).read_text()).get("run") == run
    except (OSError, ValueError):
        return False


def reason(e: BaseException) -> str:
    """One line for a task's own exception: a user error as it is, anything else with its type."""
    return first_line(e) if isinstance(e, ReidaugError) else f"{type(e).__name__}: {first_line(e)}"


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


class Board:
    """The driver's view of the cells: done, running, failed and ETA. On a terminal a live bar; in a log file one
    status line every `every` seconds. Finished, failed and retried tasks are one line each in both."""

    def __init__(self, total: int, before: int, every: float, show: bool):
        self.total, self.before, self.every = total, before, every
        self.done = self.failed = self.running = 0
        self.start = self.last_line = time.time()
        self.live = show and console.is_terminal
        self.bar = status_progress(disable=not self.live)
        self.task = self.bar.add_task("cells", total=total, completed=before, info="")

    def eta(self) -> float | None:
        """Time per finished cell of this run so far, times the cells left (cells run in parallel: the elapsed
        time, not the cells' own durations)."""
        if not self.done:
            return None
        return (time.time() - self.start) / self.done * (self.total - self.before - self.done - self.failed)

    def status(self) -> str:
        return (f"cells: {self.before + self.done}/{self.total} done ({self.before} before this run), "
                f"{self.running} running, {self.failed} failed, elapsed {_clock(time.time() - self.start)}, "
                f"ETA {_clock(self.eta())}")  # fmt: skip

    def event(self, text: str, style: str = "") -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        console.print(f"{stamp} {text}", style=style or None, soft_wrap=True, markup=False)

    def cell_done(self, cell: Cell, out: Path, where: str) -> None:
        self.done += 1
        self.event(f"done {cell.name}: {cell_result(cell, out)} {where}", "green")

    def cell_failed(self, cell: Cell, out: Path, why: str) -> None:
        self.failed += 1
        self.event(f"failed {cell.name}: {why} (log: {cell.folder(out) / LOG})", "red")

    def update(self, running: int) -> None:
        self.running = running
        info = f"{running} running · {self.failed} failed · ETA {_clock(self.eta())}"
        self.bar.update(self.task, completed=self.before + self.done, info=info)
        if not self.live and time.time() - self.last_line >= self.every:
            self.event(self.status())
            self.last_line = time.time()


def first_source(cells: list[Cell], label: str) -> Source | None:
    """The training set whose augmentation the image metrics of generator `label` score: the first by folder."""
    return min((x.source for x in cells if x.source.generator == label), default=None, key=lambda s: s.folder)


def cell_result(cell: Cell, out: Path) -> str:
    """A finished cell's mAP and Rank-1, for its line on the board."""
    try:
        m = json.loads((cell.folder(out) / "metrics.json").read_text())
        return f"mAP {m['mAP']:.1f}%, rank-1 {m['rank1']:.1f}%"
    except (OSError, ValueError, KeyError):
        return "no metrics.json"


# -- the local executor's process pool ---------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    """A pool worker shares the machine's cores with the others: `threads` torch threads each."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


@contextmanager
def _deferred_interrupt():
    """Yields check(), which raises KeyboardInterrupt once Ctrl-C was pressed: the driver calls it between waits
    (a KeyboardInterrupt raised inside concurrent.futures' own locking could deadlock the pool's threads). Only
    the main thread can catch signals; elsewhere Ctrl-C keeps its default."""
    pressed = threading.Event()

    def check() -> None:
        if pressed.is_set():
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.set())
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def run_pool(cfg: ExperimentConfig, cells: list[Cell], data: Path, out: Path, show_progress: bool) -> dict[str, str]:
    """The cells not yet finished in `cfg.cluster.jobs` worker processes on this machine (each with its share of
    the cores): every generated training set as soon as a worker is free (the longest chains first), each cell
    once its set exists, each generator's image metrics once its first augmentation exists; M_p^R (links) is
    written here. A failed task fails what depends on it, the others go on. Returns {cell name: why it
    failed}."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    from reidaug.experiment import FULL, NONE, build_source

    jobs, run = cfg.cluster.jobs, new_run()
    todo = [x for x in cells if not x.done(out)]
    console.print(f"[bold]local[/] {jobs} worker processes; {len(cells) - len(todo)} of {len(cells)} cells "
                  f"finished before, {len(todo)} to run")  # fmt: skip
    failed: dict[str, str] = {}
    board = Board(len(cells), len(cells) - len(todo), cfg.cluster.status_every_s, show_progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(threads,))  # fmt: skip
    pending: dict[Future, tuple[str, object]] = {}  # -> ("source", Source) | ("cell", Cell) | ("metrics", label)
    roots: dict[Source, str] = {}

    def submit(kind: str, what, fn, *args) -> None:
        try:
            future = pool.submit(fn, *args)
        except RuntimeError as e:  # the pool broke (a worker was killed): this task fails like the running ones
            future = Future()
            future.set_exception(e)
        pending[future] = (kind, what)

    def cells_of(src: Source) -> None:
        for cell in todo:
            if cell.source == src:
                submit("cell", cell, cell_task, cell, roots[src], str(out), run)

    def metrics_of(label: str) -> None:
        submit("metrics", label, metrics_task, label, cfg, str(data), str(out), run)

    waiting_metrics: dict[Source, list[str]] = {}  # a training set being built -> the metrics that need it
    try:
        with _deferred_interrupt() as check_interrupt, board.bar:
            for src in dict.fromkeys(x.source for x in todo):  # generated sets first: the longest chains
                if src.generator == FULL:
                    roots[src] = str(data)
                elif src.generator != NONE:
                    submit("source", src, source_task, src, cfg, str(data), str(out), run)
            building = {what for kind, what in pending.values()}
            for label in cfg.generators if cfg.metrics else ():
                if (out / "image_metrics" / f"{label}.json").is_file():
                    continue
                first = first_source(cells, label)
                if first in building:
                    waiting_metrics.setdefault(first, []).append(label)
                elif first is not None:
                    metrics_of(label)
            for src in list(roots):
                cells_of(src)
            for src in dict.fromkeys(x.source for x in todo if x.source.generator == NONE):
                roots[src] = str(build_source(src, cfg, data, out, show_progress=False))
                board.event(f"wrote {src.folder}")
                cells_of(src)
                check_interrupt()
            board.update(0)
            while pending:
                finished, _ = wait(list(pending), timeout=REFRESH_S, return_when=FIRST_COMPLETED)
                check_interrupt()
                for future in finished:
                    kind, what = pending.pop(future)
                    try:
                        value = future.result()
                    except Exception as e:  # the task's own failure (its log has the traceback) or a dead worker
                        why = reason(e)
                        if kind == "source":
                            board.event(f"failed {what.folder}: {why}", "red")
                            for cell in todo:
                                if cell.source == what:
                                    failed[cell.name] = f"its training set {what.folder} failed: {why}"
                                    board.cell_failed(cell, out, failed[cell.name])
                            for label in waiting_metrics.pop(what, []):
                                board.event(f"failed image metrics of {label}: its augmentation failed", "red")
                        elif kind == "cell":
                            failed[what.name] = why
                            board.cell_failed(what, out, why)
                        else:
                            board.event(f"failed image metrics of {what}: {why}", "red")
                        continue
                    if kind == "source":
                        roots[what] = value
                        board.event(f"built {what.folder}")
                        cells_of(what)
                        for label in waiting_metrics.pop(what, []):
                            metrics_of(label)
                    elif kind == "cell":
                        board.cell_done(what, out, f"(pid {value['pid']})")
                    else:
                        board.event(f"image metrics of {what}: {value}")
                board.update(sum(kind == "cell" and started(what, out, run) for kind, what in pending.values()))
    except BaseException:  # the driver stops (an interrupt, a refused M_p^R): its workers stop with it
        for process in (getattr(pool, "_processes", None) or {}).values():
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    board.event(board.status())
    return failed
