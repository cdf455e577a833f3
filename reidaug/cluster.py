"""`reidaug experiment --executor ray`: the cells of the Table 6 sweep as Ray tasks on a cluster.

Each generated training set M_p^A (one generation by augment, per generator, portion and seed) is one task; each
cell (one re-ID training and evaluation) is one task that takes its training set's ObjectRef as an argument, so
Ray starts it once the set exists and builds each set once for all the cells that use it. M_p^R (links only) is
written by the driver. A task that reserves a GPU runs in a fresh worker process (Ray's default for GPU tasks:
the GPU's memory is freed between cells). Every task records where it ran (worker.json: run, pid, node, host),
appends its output to its log in its folder, and is retried `cluster.retries` times (crashed worker, lost node, exception) before it is reported
failed. A finished cell is one with metrics.json, as for the local executor: after any interruption (driver,
worker or node), the same command skips finished cells and runs the rest.

Outputs go to OUT, which must be one shared filesystem path seen by every node (Slurm, Kubernetes volumes): a
probe task on every node reads a token the driver wrote there, and sees the data and checkpoints, before anything
runs. Ray is imported only here (the `cluster` extra).
"""

from __future__ import annotations

import logging
import secrets
import socket
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from reidaug import __version__
from reidaug.errors import ReidaugError, first_line
from reidaug.utils.io import atomic_write_text
from reidaug.utils.progress import console
from reidaug.workers import (
    REFRESH_S,
    Board,
    cell_task,
    first_source,
    metrics_task,
    new_run,
    reason,
    source_task,
    started,
)

if TYPE_CHECKING:  # the experiment (torch, pandas) is imported by the tasks that run it, not by the probe
    from reidaug.experiment import Cell, ExperimentConfig, Resources, Source


def _ray():
    try:
        import ray
    except ImportError:
        raise ReidaugError("--executor ray needs Ray: pip install 'reidaug[cluster]'") from None
    return ray


def _probe(token_file: str, token: str, paths: list[str], version: str) -> str | None:
    """On one node: None when it sees the driver's token in OUT and every input path and runs the driver's
    reidaug version, else the one line that says what is wrong."""
    host = socket.gethostname()
    try:
        seen = Path(token_file).read_text()
    except OSError:
        seen = None
    if seen != token:
        return (f"--out {Path(token_file).parent} is not visible to the Ray workers on node {host}: put it on a "
                "filesystem that every node mounts at the same path")  # fmt: skip
    for p in paths:
        if not Path(p).exists():
            return f"{p} is not visible to the Ray workers on node {host}: every node needs the same paths"
    if version != __version__:
        return f"node {host} runs reidaug {__version__}, the driver {version}: install the same version everywhere"
    return None


# -- the driver -------------------------------------------------------------------------------------------------


def _reason(ray, e: BaseException) -> str:
    """One line for a task's failure: the task's own exception when it raised one, else Ray's (worker died ...)."""
    cause = getattr(e, "cause", None)
    return reason(cause if isinstance(e, ray.exceptions.RayTaskError) and cause is not None else e)


def _options(res: Resources, retries: int) -> dict:
    opts = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_retries": retries, "retry_exceptions": True}
    if res.memory_gb > 0:
        opts["memory"] = int(res.memory_gb * 2**30)
    return opts


def probe(ray, out: Path, paths: list[str], timeout: float) -> list[dict]:
    """Refuse to start unless every alive node sees OUT (a token file the driver writes there), `paths`, and runs
    this reidaug; returns the nodes."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    token_file = out / f".probe-{token[:12]}"
    atomic_write_text(token_file, token)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    task = ray.remote(_probe)
    try:
        refs = {}
        for n in nodes:
            where = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ref = task.options(num_cpus=0, max_retries=0, scheduling_strategy=where).remote(
                str(token_file), token, paths, __version__)  # fmt: skip
            refs[ref] = n
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if late:
            hosts = ", ".join(refs[r]["NodeManagerHostname"] for r in late)
            raise ReidaugError(f"Ray node(s) {hosts} did not answer the shared-filesystem probe within {timeout:g} s "
                               "(cluster.probe_timeout_s)")  # fmt: skip
        for ref in ready:
            try:
                problem = ray.get(ref)
            except ray.exceptions.RayError as e:
                host = refs[ref]["NodeManagerHostname"]
                raise ReidaugError(f"reidaug does not run on Ray node {host}: {_reason(ray, e)}") from None
            if problem:
                raise ReidaugError(problem)
    finally:
        token_file.unlink(missing_ok=True)
    return nodes


def _absolute(cfg: ExperimentConfig, data: Path, out: Path) -> ExperimentConfig:
    """The config with the paths the workers open made absolute (their working folder is not the driver's)."""
    from reidaug.experiment import TRAIN, trained_here

    gens = {}
    for label, spec in cfg.generators.items():
        if trained_here(spec):
            method, config = trained_here(spec)
            if config and Path(config).is_file():  # a YAML path (a name under configs/ stays a name)
                config = str(Path(config).resolve())
            gens[label] = f"{TRAIN}{method}" + (f":{config}" if config else "")
        else:
            gens[label] = str(Path(spec).resolve())
    return replace(cfg, data=str(data), out=str(out), generators=gens)


def _reachable(address: str, timeout: float) -> None:
    """Refuse a HOST:PORT where nothing listens at once (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", "local", ray:// client addresses: Ray's own handling
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ReidaugError(f"no Ray cluster answers at {address} ({e.strerror or e}): start its head "
                           "(ray start --head) or check --address") from None  # fmt: skip


@contextmanager
def ray_cluster(cfg: ExperimentConfig, reid_cfgs: list, data: Path, out: Path):
    """Connected to the Ray cluster at `cfg.cluster.address`, every node probed (OUT, the data, the checkpoints
    and re-ID weights visible, the same reidaug): yields run(cells, show_progress) -> {cell name: why it failed}.
    A refused OUT that did not exist before is removed again: a refusal leaves nothing behind."""
    ray = _ray()
    c = cfg.cluster
    data, out = data.resolve(), out.resolve()
    cfg = _absolute(cfg, data, out)
    if c.address:
        _reachable(c.address, c.connect_timeout_s)
    try:
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = c.address or "RAY_ADDRESS or this machine"
        raise ReidaugError(f"cannot connect to the Ray cluster at {where}: {first_line(e)}") from None
    try:
        weights = {str(Path(r.weights).resolve()) for r in reid_cfgs if r.weights}
        new = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            ckpts = [spec for spec in cfg.generators.values() if not spec.startswith("train:")]
            nodes = probe(ray, out, [str(data), *ckpts, *sorted(weights)], c.probe_timeout_s)
        except ReidaugError:
            if new and not any(out.iterdir()):
                out.rmdir()
            raise

        def run(cells: list[Cell], show_progress: bool = True) -> dict[str, str]:
            cells = [replace(x, reid=replace(x.reid, weights=str(Path(x.reid.weights).resolve())))
                     if x.reid.weights else x for x in cells]  # fmt: skip
            todo = [x for x in cells if not x.done(out)]
            res = ray.cluster_resources()
            console.print(f"[bold]ray[/] {len(nodes)} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} "
                          f"GPUs; {len(cells) - len(todo)} of {len(cells)} cells finished before, {len(todo)} to run")  # fmt: skip
            return _run(ray, cfg, cells, todo, data, out, show_progress)

        yield run
    finally:
        ray.shutdown()


def _run(ray, cfg: ExperimentConfig, cells: list[Cell], todo: list[Cell], data: Path, out: Path,
         show_progress: bool) -> dict[str, str]:  # fmt: skip
    from reidaug.experiment import FULL, NONE, build_source

    c = cfg.cluster
    run = new_run()
    remote_source = ray.remote(**_options(c.augment, c.retries))(source_task)
    remote_cell = ray.remote(**_options(c.cell, c.retries))(cell_task)
    remote_metrics = ray.remote(**_options(c.augment, c.retries))(metrics_task)

    pending: dict = {}  # ObjectRef -> ("source", Source) | ("cell", Cell) | ("metrics", label)
    roots: dict[Source, object] = {}  # Source -> its root: a path, or the ObjectRef of the task building it
    for src in dict.fromkeys(x.source for x in todo):  # generated sets first: the longest chains
        if src.generator == FULL:
            roots[src] = str(data)
        elif src.generator != NONE:
            roots[src] = remote_source.remote(src, cfg, str(data), str(out), run)
            pending[roots[src]] = ("source", src)
    for cell in todo:
        if cell.source in roots:
            pending[remote_cell.remote(cell, roots[cell.source], str(out), run)] = ("cell", cell)
    for src in dict.fromkeys(x.source for x in todo if x.source.generator == NONE):
        roots[src] = str(build_source(src, cfg, data, out, show_progress=False))  # links, while the cluster works
        console.print(f"wrote {src.folder}", markup=False)
        for cell in todo:
            if cell.source == src:
                pending[remote_cell.remote(cell, roots[src], str(out), run)] = ("cell", cell)
    if cfg.metrics:
        for label in cfg.generators:
            if (out / "image_metrics" / f"{label}.json").is_file():
                continue
            first = first_source(cells, label)
            if first is None:
                continue
            after = roots.get(first)
            pending[remote_metrics.remote(label, cfg, str(data), str(out), run, after)] = ("metrics", label)

    failed: dict[str, str] = {}
    broken: dict[Source, str] = {}  # training sets whose build failed
    board = Board(len(cells), len(cells) - len(todo), c.status_every_s, show_progress)
    waiting = {x.name for x in todo}
    with board.bar:
        board.update(0)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=REFRESH_S)
            for ref in ready:
                kind, what = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as e:
                    reason = _reason(ray, e)
                    if kind == "source":
                        broken[what] = reason
                        board.event(f"failed {what.folder}: {reason}", "red")
                    elif kind == "cell":
                        if what.source in broken:
                            reason = f"its training set {what.source.folder} failed: {broken[what.source]}"
                        failed[what.name] = reason
                        waiting.discard(what.name)
                        board.cell_failed(what, out, reason)
                    else:
                        board.event(f"failed image metrics of {what}: {reason}", "red")
                    continue
                if kind == "cell":
                    waiting.discard(what.name)
                    board.cell_done(what, out, f"on {value['host']} (pid {value['pid']})")
                elif kind == "source":
                    board.event(f"built {what.folder}")
                else:
                    board.event(f"image metrics of {what}: {value}")
            board.update(sum(started(x, out, run) for x in todo if x.name in waiting))
    board.event(board.status())
    return failed
