"""`reidaug experiment --executor ray` on a real two-node Ray cluster on this machine (`ray start --head` plus
one `ray start --address` worker node, one CPU each): the CI-size sweep of test_experiment runs its cells in
several worker processes; a worker killed in the middle of a cell makes that cell fail (no retries in the first
run), reported and marked missing; the same command then completes it (surviving one more killed worker through
Ray's retry), leaves the finished cells alone and gives the local executor's table. Addresses are 127.0.0.1 (Ray itself resolves them to this machine's own address for
a multi-node cluster). Every Ray process started here is in a process group killed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from test_experiment import finish_driver, kill_a_running_cell, local_results, sweep_sets

from reidaug.errors import ReidaugError
from reidaug.experiment import load_experiment, run_experiment

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
NODE_START_S = 120  # a node coming up on a busy 2-core machine
RUN_S = 300  # one driver run of the sweep


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """Ray nodes as `ray start --block` processes, each the leader of its own process group."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []
        self.hidden: Path | None = None  # a folder the worker node does not see (its own empty tmpfs there)
        self.address = f"127.0.0.1:{_port()}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, name: str, *args: str, prefix: tuple[str, ...] = ()) -> None:
        cmd = [*prefix, str(RAY), "start", *args, "--num-cpus=1", "--num-gpus=0", "--object-store-memory=80000000",
               f"--dashboard-agent-listen-port={_port()}", f"--dashboard-agent-grpc-port={_port()}",
               f"--metrics-export-port={_port()}", f"--runtime-env-agent-port={_port()}", "--block"]  # fmt: skip
        with (self.tmp / f"{name}.log").open("w") as f:
            p = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
        self.procs.append(p)

    def wait(self, name: str, ready=lambda log: "Ray runtime started" in log) -> None:
        p, log = self.procs[-1 if name == "worker" else 0], self.tmp / f"{name}.log"
        deadline = time.time() + NODE_START_S
        while not ready(log.read_text()):
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray start ({name}) did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def gcs_up(self, _log: str) -> bool:
        host, port = self.address.rsplit(":", 1)
        with socket.socket() as s:
            return s.connect_ex((host, int(port))) == 0

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def _can_hide() -> bool:
    """Whether this process may make a mount namespace (root, and a container that allows it)."""
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="Ray is not installed (the cluster extra: pip install 'reidaug[cluster]')")
    tmp = Path(tempfile.mkdtemp(prefix="rd-ray-"))  # short: Ray's socket paths must stay under 108 characters
    cluster = LocalCluster(tmp)
    try:
        port = cluster.address.rsplit(":", 1)[1]
        cluster.start("head", "--head", f"--port={port}", f"--temp-dir={tmp / 'ray'}", "--include-dashboard=false",
                      f"--dashboard-port={_port()}", f"--ray-client-server-port={_port()}")  # fmt: skip
        cluster.wait("head", cluster.gcs_up)  # the worker node joins while the head starts its other services
        prefix = ()
        if _can_hide():  # the worker node in its own mount namespace, with an empty tmpfs over `hidden`
            cluster.hidden = tmp / "hidden"
            cluster.hidden.mkdir()
            prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                      'mount -t tmpfs -o size=1m none "$0" && exec "$@"', str(cluster.hidden))  # fmt: skip
        cluster.start("worker", f"--address={cluster.address}", prefix=prefix)
        cluster.wait("head")
        cluster.wait("worker")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _driver(cluster: LocalCluster, sets: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "reidaug", "experiment", "--config", "experiments/demo", "--executor", "ray",
           "--address", cluster.address, "--no-progress"]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    with log.open("w") as f:
        return subprocess.Popen(cmd, env=cluster.env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def test_ray_refuses_an_out_the_workers_cannot_see(experiment_setup, ray_cluster):
    if ray_cluster.hidden is None:
        pytest.skip("hiding a folder from the worker node needs a mount namespace (unshare -m as root)")
    root, ckpt, _ = experiment_setup
    out = ray_cluster.hidden / "exp"
    cfg = load_experiment("experiments/demo", [*sweep_sets(root, ckpt, out), "cluster.executor=ray"])
    cfg.cluster.address = ray_cluster.address
    with pytest.raises(ReidaugError) as e:
        run_experiment(cfg, show_progress=False)
    assert re.fullmatch(rf"--out {out} is not visible to the Ray workers on node \S+: put it on a filesystem that "
                        "every node mounts at the same path", str(e.value)), str(e.value)  # fmt: skip
    assert not out.exists()  # the refusal left nothing behind


def test_ray_sweep_survives_a_killed_worker(experiment_setup, ray_cluster, tmp_path):
    root, ckpt, base = experiment_setup
    local = base / "exp1"
    expected = local_results(base, root, ckpt)
    out = tmp_path / "exp-ray"
    sets = sweep_sets(root, ckpt, out)

    # run 1, without retries: the killed cell fails, is reported, and the table marks it missing
    log1 = tmp_path / "run1.log"
    driver = _driver(ray_cluster, [*sets, "cluster.retries=0"], log1)
    killed, pid, run1 = kill_a_running_cell(out, driver, log1)
    assert finish_driver(driver, log1) == 1, log1.read_text()
    text = log1.read_text()
    assert "1 cell(s) failed after their retries" in text and f"failed {killed}: WorkerCrashedError" in text, text
    status = pd.read_csv(out / "cells.csv").set_index("cell").status
    assert status[killed] == "failed" and (status.drop(killed) == "done").all() and len(status) == 3
    assert "missing" in (out / "table6.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/metrics.json")}
    assert len(stamps) == 2

    # run 2, the same command (retries: 2): finished cells stay as they are, the failed one runs again; its
    # worker is killed once more and Ray's retry completes it
    log2 = tmp_path / "run2.log"
    driver = _driver(ray_cluster, sets, log2)
    again, pid2, _ = kill_a_running_cell(out, driver, log2, old_runs={run1})
    assert finish_driver(driver, log2) == 0, log2.read_text()
    assert again == killed and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "2 of 3 cells finished before, 1 to run" in log2.read_text()
    assert (pd.read_csv(out / "cells.csv").status == "done").all()

    # the local executor's results and table, on the same seeds
    got = pd.read_csv(out / "results.csv")
    keys = ["generator", "backbone", "loss", "portion", "seed"]
    pd.testing.assert_frame_equal(got.sort_values(keys).reset_index(drop=True),
                                  expected.sort_values(keys).reset_index(drop=True))  # fmt: skip
    assert (out / "table6.md").read_text() == (local / "table6.md").read_text()

    # where the cells ran: more than one worker process, each cell's log in its folder
    workers = {d.name: json.loads((d / "worker.json").read_text()) for d in (out / "cells").iterdir()}
    assert len({w["pid"] for w in workers.values()}) > 1 and workers[killed]["pid"] not in (pid, pid2)
    attempts = [ln for ln in (out / "cells" / killed / "cell.log").read_text().splitlines() if ln.startswith("== ")]
    assert len(attempts) == 3 and f"pid {pid}" in attempts[0] and f"pid {pid2}" in attempts[1]  # every attempt
    logs = [*(out / "cells").glob("*/cell.log"), *(out / "augment").glob("*/*.log"), out / "image_metrics/patn.log"]
    nodes = {m for f in logs for m in re.findall(r"^== .* node (\w+), pid", f.read_text(), re.M)}
    assert len(nodes) == 2  # both nodes ran tasks
    assert json.loads((out / "image_metrics" / "patn.json").read_text())["metrics"]["ssim"] > 0


def test_probe_answers(tmp_path):
    """What one node's probe says: nothing when it sees the token, the inputs and runs the same reidaug."""
    from reidaug import __version__
    from reidaug.cluster import _probe

    token = tmp_path / "out" / ".probe-x"
    assert "--out " + str(tmp_path / "out") + " is not visible to the Ray workers on node" in _probe(
        str(token), "t", [], __version__)  # fmt: skip
    token.parent.mkdir()
    token.write_text("other")  # another driver's token: not the same folder
    assert "is not visible" in _probe(str(token), "t", [], __version__)
    token.write_text("t")
    assert _probe(str(token), "t", [str(tmp_path)], __version__) is None
    assert _probe(str(token), "t", [str(tmp_path / "data")], __version__).startswith(f"{tmp_path / 'data'} is not")
    assert "the driver 0.0.0" in _probe(str(token), "t", [], "0.0.0")


def test_unreachable_head_is_refused_at_once():
    """Ray retries a dead address for minutes: nothing listening at HOST:PORT is one line within the timeout."""
    from reidaug.cluster import _reachable

    port = _port()  # free: nothing listens there
    t = time.time()
    with pytest.raises(ReidaugError, match=rf"^no Ray cluster answers at 127.0.0.1:{port} \(Connection refused\)"):
        _reachable(f"127.0.0.1:{port}", 5.0)
    assert time.time() - t < 5
    _reachable("auto", 5.0)  # Ray's own addresses are Ray's business
    _reachable("ray://head:10001", 5.0)


def test_board_lines_in_a_log(capsys):
    """Not on a terminal, the driver's board prints a status line (done, running, failed, ETA) per interval."""
    from reidaug.workers import Board

    board = Board(total=5, before=1, every=0.0, show=True)  # captured stderr is no terminal: lines
    with board.bar:
        board.update(running=2)
        board.start -= 60  # a minute into the run, one cell done: 3 left, a minute each
        board.done = 1
        board.update(running=2)
    err = capsys.readouterr().err
    assert re.search(r"cells: 1/5 done \(1 before this run\), 2 running, 0 failed, elapsed 0:00:0\d, ETA \?", err)
    assert re.search(r"cells: 2/5 done \(1 before this run\), 2 running, 0 failed, elapsed 0:01:0\d, ETA 0:03:0", err)
