"""`reidaug experiment`: the cells of the sweep, skipping finished cells, and the report files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from reidaug.data.images import read_image
from reidaug.data.market import read_split
from reidaug.errors import ReidaugError
from reidaug.experiment import load_experiment, run_experiment

ROOT = Path(__file__).resolve().parent.parent
RUN_S = 300  # one driver run of the CI-size sweep
REID = ["backbone=osnet_x0_25", "epochs=1", "batch_size=8", "height=32", "width=16", "scheduler=none",
        "workers=0", "eval_batch_size=64"]  # fmt: skip


@pytest.fixture
def setup(experiment_setup):
    """(root, checkpoint, base folder): the tiny dataset and generator of conftest's experiment_setup."""
    return experiment_setup


def local_results(base, root, ckpt):
    """results.csv of the local sweep of test_sweep_cells_report_and_rerun (run here when it did not run)."""
    out = base / "exp1"
    if not (out / "results.csv").is_file():
        run_experiment(_cfg(root, ckpt, out), show_progress=False)
    return pd.read_csv(out / "results.csv")


def sweep_sets(root, ckpt, out) -> list[str]:
    """The CI-size sweep over experiments/demo: p = 0.3 (none, patn) and p = 1 (full), seed 0."""
    return [f"data={root}", f"out={out}", "portions=[0.3,1.0]", "seeds=[0]", f"generators.patn={ckpt}",
            "metrics=[ssim,mask_ssim,l1,fid]",
            "reid=[reid/default]", f"reid_overrides={REID}", "device=cpu", "augment.generate.num_workers=0",
            "augment.generate.batch_size=16", "cluster.jobs=1"]  # fmt: skip


def finish_driver(p: subprocess.Popen, log: Path) -> int:
    """The exit code of an `experiment` process (started in its own session), killed after RUN_S."""
    try:
        return p.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        pytest.fail(f"the driver did not finish within {RUN_S} s:\n{log.read_text()[-3000:]}")


def kill_a_running_cell(out: Path, driver: subprocess.Popen, log: Path, old_runs=()) -> tuple[str, int, str]:
    """SIGKILL the worker process of the first cell seen running (worker.json of a run not in `old_runs`, no
    metrics.json yet); returns (cell, pid, run)."""
    deadline = time.time() + RUN_S
    while time.time() < deadline and driver.poll() is None:
        for record in sorted((out / "cells").glob("*/worker.json")):
            w = json.loads(record.read_text())
            if w["run"] not in old_runs and not (record.parent / "metrics.json").exists():
                os.kill(w["pid"], signal.SIGKILL)
                return record.parent.name, w["pid"], w["run"]
        time.sleep(0.05)
    pytest.fail(f"no cell was seen running:\n{log.read_text()[-3000:]}")


def _same_results(out: Path, expected: pd.DataFrame, local: Path) -> None:
    keys = ["generator", "backbone", "loss", "portion", "seed"]
    got = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(got.sort_values(keys).reset_index(drop=True),
                                  expected.sort_values(keys).reset_index(drop=True))  # fmt: skip
    assert (out / "table6.md").read_text() == (local / "table6.md").read_text()


def _cfg(root, ckpt, out, **kw):
    return load_experiment("experiments/demo", sweep_sets(root, ckpt, out) + [f"{k}={v}" for k, v in kw.items()])


def test_sweep_cells_report_and_rerun(setup):
    root, ckpt, base = setup
    out = base / "exp1"
    paths = run_experiment(_cfg(root, ckpt, out), show_progress=False)
    res = pd.read_csv(paths["csv"])
    # p = 0.3: reduced (none) and augmented (patn); p = 1.0: the full real set
    assert sorted(zip(res.generator, res.portion)) == [("full", 1.0), ("none", 0.3), ("patn", 0.3)]
    n = len(read_split(root, "train"))
    ntrain = dict(zip(res.generator, res.n_train))
    assert ntrain["full"] == n == ntrain["patn"] and ntrain["none"] == round(0.3 * n)
    assert "| none | osnet_x0_25 (softmax) |" in paths["table"].read_text()
    assert paths["plot"].is_file() and paths["examples"].is_file()
    # examples: one row per identity (source | target pose | generated | replaced), the first six identities
    jobs = pd.read_csv(out / "augment" / "patn" / "p0.3_s0" / "jobs.csv").drop_duplicates("pid").head(6)
    assert len(jobs) == 6
    shown = read_image(paths["examples"])
    for i, source in enumerate(jobs.source):
        img = read_image(root / "bounding_box_train" / source)
        h, w = img.shape[:2]
        assert (shown[2 + i * (h + 2) : 2 + i * (h + 2) + h, 2 : 2 + w] == img).all()
    assert shown.shape[0] == 6 * (h + 2) + 2
    status = pd.read_csv(paths["cells"])  # every planned cell, done
    assert sorted(status.cell) == sorted(p.name for p in (out / "cells").iterdir()) and set(status.status) == {"done"}
    # a rerun skips finished cells: their metrics files are not rewritten
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/metrics.json")}
    run_experiment(_cfg(root, ckpt, out), show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    cell = json.loads(next((out / "cells").glob("patn_*/cell.json")).read_text())
    assert cell["generator"] == "patn" and cell["portion"] == 0.3
    assert cell["root"] == "augment/patn/p0.3_s0/augmented"  # relative to the experiment folder: it can move
    metrics = json.loads(paths["metrics_patn"].read_text())
    assert set(metrics["metrics"]) == {"ssim", "mask_ssim", "l1"} and "fid" in metrics["skipped"]  # no weights here
    assert metrics["images"] == n - round(0.3 * n)  # the generated replacements of the p = 0.3 augmentation


def test_worker_processes_give_the_same_table(setup, tmp_path):
    """cluster.jobs = 2: the generation, the cells and the image metrics run in two worker processes of this
    machine (each task's record and log in its folder) and give the results of one cell after the other."""
    root, ckpt, base = setup
    expected = local_results(base, root, ckpt)
    out = tmp_path / "exp"
    paths = run_experiment(_cfg(root, ckpt, out, **{"cluster.jobs": 2}), show_progress=False)
    _same_results(out, expected, base / "exp1")
    records = [*(out / "cells").glob("*/worker.json"), *(out / "augment" / "patn").glob("*.worker.json"),
               out / "image_metrics" / "patn.worker.json"]  # fmt: skip
    assert len(records) == 5  # three cells, the p = 0.3 generation, the image metrics
    pids = {json.loads(r.read_text())["pid"] for r in records}
    assert len(pids) == 2 and os.getpid() not in pids
    for cell in (out / "cells").iterdir():  # each attempt's header in its log, the re-ID log in its run folder
        pid = json.loads((cell / "worker.json").read_text())["pid"]
        assert (cell / "cell.log").read_text().startswith("== ") and f"pid {pid}" in (cell / "cell.log").read_text()
        assert " mAP " in (cell / "run" / "log.txt").read_text()
    local = json.loads((base / "exp1" / "image_metrics" / "patn.json").read_text())["metrics"]
    assert json.loads(paths["metrics_patn"].read_text())["metrics"] == pytest.approx(local, abs=1e-3)
    assert pd.read_csv(paths["cells"]).status.eq("done").all()


def test_a_killed_worker_fails_its_cells_and_the_same_command_completes_them(setup, tmp_path):
    """A worker process killed in the middle of a cell: that cell (and any the dead pool still held) is reported
    failed, the exit code is 1 and the table marks it missing; the same command runs what is missing and gives
    the table of one cell after the other."""
    root, ckpt, base = setup
    expected = local_results(base, root, ckpt)
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "reidaug", "experiment", "--config", "experiments/demo", "--jobs", "2",
           "--no-progress"]  # fmt: skip
    for s in sweep_sets(root, ckpt, out)[:-1]:  # not cluster.jobs=1
        cmd += ["--set", s]

    def driver(log: Path) -> subprocess.Popen:
        with log.open("w") as f:
            return subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    log1 = tmp_path / "run1.log"
    p = driver(log1)
    killed, pid, _ = kill_a_running_cell(out, p, log1)
    assert finish_driver(p, log1) == 1, log1.read_text()
    text = log1.read_text()
    assert "cell(s) failed (rerun the same command to complete them)" in text and "after their retries" not in text
    assert f"failed {killed}: BrokenProcessPool" in text, text
    status = pd.read_csv(out / "cells.csv").set_index("cell").status
    assert status[killed] == "failed" and set(status) <= {"done", "failed"}
    stamps = {f: f.stat().st_mtime_ns for f in (out / "cells").glob("*/metrics.json")}

    log2 = tmp_path / "run2.log"
    assert finish_driver(driver(log2), log2) == 0, log2.read_text()
    assert f"{len(stamps)} of 3 cells finished before, {3 - len(stamps)} to run" in log2.read_text()
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps  # finished cells left alone
    assert json.loads((out / "cells" / killed / "worker.json").read_text())["pid"] != pid
    _same_results(out, expected, base / "exp1")


def test_an_interrupted_driver_stops_its_workers(setup, tmp_path):
    """Ctrl-C sent to the driver alone (as a scheduler's SIGINT would be): it exits with 130 within seconds and
    takes its worker processes with it, rather than waiting for their cells (500 epochs each here)."""
    root, ckpt, _ = setup
    out = tmp_path / "exp"
    long_reid = [f"reid_overrides={[*REID[:1], 'epochs=500', *REID[2:]]}"]
    cmd = [sys.executable, "-m", "reidaug", "experiment", "--config", "experiments/demo", "--jobs", "2", "--no-progress"]
    for s in [x for x in sweep_sets(root, ckpt, out)[:-1] if not x.startswith("reid_overrides=")] + long_reid:
        cmd += ["--set", s]
    log = tmp_path / "run.log"
    with log.open("w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        workers, deadline = set(), time.time() + RUN_S
        while not workers and time.time() < deadline and p.poll() is None:
            workers = {json.loads(r.read_text())["pid"] for r in (out / "cells").glob("*/worker.json")}
            time.sleep(0.05)
        assert workers, log.read_text()
        time.sleep(1)  # inside the cell's re-ID training
        os.kill(p.pid, signal.SIGINT)
        assert p.wait(timeout=20) == 130, log.read_text()
        for pid in workers:  # gone (a zombie left to init counts as gone)
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
            except FileNotFoundError:
                continue
            assert state == "Z", f"worker {pid} still runs after the driver stopped"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def test_html_report(setup):
    """The report of the sweep above: its tables hold the results, every image it links exists, and it renders
    in a headless browser to a page that is not blank."""
    import re
    import shutil
    import subprocess

    from reidaug.data.images import read_image
    from reidaug.report import write_html_report

    root, ckpt, base = setup
    out = base / "exp1"
    local_results(base, root, ckpt)
    page = write_html_report(out)
    html = page.read_text()
    res = pd.read_csv(out / "results.csv")
    for gen in ("none", "patn"):
        m = res[res.generator == gen].mAP.iloc[0]
        assert f"<td>{m:.1f} / " in html  # the Table 6 cell of that row
    full, none_, patn = (res[res.generator == g].mAP.iloc[0] for g in ("full", "none", "patn"))
    assert f"{100 * (patn - none_) / (full - none_):.0f}%" in html  # gap closed at p = 0.3
    ssim = json.loads((out / "image_metrics" / "patn.json").read_text())["metrics"]["ssim"]
    assert f"<td>{ssim:.3f}</td>" in html and "fid skipped" in html
    links = re.findall(r'src="([^"]+)"', html)
    assert len(links) >= 3 and all((page.parent / src).is_file() for src in links)  # plot, samples, loss curve
    assert any("losses_patn.png" in src for src in links) and "sha256" in html and ckpt.name in html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless screenshot needs Debian's chromium (installed by make install)")
    shot = base / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={base / 'chrome-profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.resolve().as_uri()], check=True, capture_output=True, timeout=120)  # fmt: skip
    img = read_image(shot)
    assert img.shape[0] >= 1000 and img.std() > 10 and (img < 100).mean() > 0.005  # text and pictures, not blank


def test_bad_experiment_configs(setup, tmp_path):
    root, ckpt, _ = setup
    with pytest.raises(ReidaugError, match="not found"):
        run_experiment(_cfg(root, tmp_path / "missing.pt", tmp_path / "o"), show_progress=False)
    with pytest.raises(ReidaugError, match="reserved"):
        run_experiment(load_experiment("experiments/demo", [f"data={root}", f"generators.none={ckpt}"]))
    with pytest.raises(ReidaugError, match="not a folder"):
        run_experiment(load_experiment("experiments/demo", [f"data={tmp_path / 'nope'}"]))
    with pytest.raises(ReidaugError, match="executor must be one of local, ray, got 'slurm'"):
        run_experiment(_cfg(root, ckpt, tmp_path / "o", **{"cluster.executor": "slurm"}))
    with pytest.raises(ReidaugError, match="cluster.jobs must be >= 1, got 0"):
        run_experiment(_cfg(root, ckpt, tmp_path / "o", **{"cluster.jobs": 0}))
    with pytest.raises(ReidaugError, match="cluster.retries must be >= 0"):
        run_experiment(_cfg(root, ckpt, tmp_path / "o", **{"cluster.retries": -1}))
    assert not (tmp_path / "o").exists()  # refused before writing anything


def test_ray_executor_without_ray(setup, tmp_path, monkeypatch):
    """--executor ray without the cluster extra: one line naming the extra; nothing written."""
    import sys

    root, ckpt, _ = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ReidaugError, match=r"^--executor ray needs Ray: pip install 'reidaug\[cluster\]'$"):
        run_experiment(_cfg(root, ckpt, tmp_path / "o", **{"cluster.executor": "ray"}), show_progress=False)
    assert not (tmp_path / "o").exists()


def test_leakage_free_generators_are_trained_per_reduced_set(setup, tmp_path):
    """A train:METHOD:CONFIG generator is trained on each M_p^R (never on a removed image) before generating."""
    from omegaconf import OmegaConf
    from tiny_market import TINY_PATN

    from reidaug.models.checkpoint import load_checkpoint

    root, ckpt, _ = setup
    tiny = tmp_path / "tiny-patn.yaml"
    tiny.write_text("base: methods/patn\n" + OmegaConf.to_yaml(OmegaConf.from_dotlist([*TINY_PATN, "train.iterations=1"])))
    out = tmp_path / "lf"
    cfg = _cfg(root, ckpt, out, portions="[0.3]", metrics="[]", **{"augment.generator_trained_on": "reduced"})
    cfg.generators = {"patn": f"train:patn:{tiny}"}
    paths = run_experiment(cfg, show_progress=False)
    assert sorted(pd.read_csv(paths["csv"]).generator) == ["none", "patn"]
    aug = out / "augment" / "patn" / "p0.3_s0"
    seen = set(load_checkpoint(aug / "generator" / "checkpoints" / "latest.pt")["data"]["images"])
    kept = set(pd.read_csv(aug / "kept.csv").name)
    assert seen and seen <= kept  # trained on M_p^R alone
    assert json.loads((aug / "summary.json").read_text())["generator"]["trained_on"] == "reduced"
    with pytest.raises(ReidaugError, match="config is for method 'patn', not 'xinggan'"):
        cfg.generators = {"patn": f"train:xinggan:{tiny}"}
        run_experiment(cfg, show_progress=False)


def test_cli_address_needs_ray(setup, run_cli, tmp_path):
    root, ckpt, _ = setup
    code, _, err = run_cli("experiment", "--config", "experiments/demo", "--data", root, "--out", tmp_path / "o",
                           "--address", "127.0.0.1:6379")  # fmt: skip
    assert code == 2 and err.strip() == "reidaug: error: --address is the Ray head's: use it with --executor ray"
    assert not (tmp_path / "o").exists()
