"""The generic GAN trainer end to end on a tiny PATN (CPU): loss falls, exact resume, checkpoint contents,
learning-rate schedule, data order, DDP on gloo with two processes, and one-line CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_market import TINY_PATN, Killed, kill_at, make_root

from reidaug.data.images import read_image
from reidaug.models.checkpoint import load_checkpoint
from reidaug.train.config import config_from_dict, load_method_config, lr_factor
from reidaug.train.data import IterationSampler
from reidaug.train.trainer import _LrFactor, train

ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("market"))


def tiny(*extra: str):
    return load_method_config("patn", None, [*TINY_PATN, *extra])


RESUME = ("train.iterations=6", "train.decay_start=2", "train.checkpoint_every=3", "train.sample_every=3")


@pytest.fixture(scope="module")
def straight(root, tmp_path_factory):
    """6 uninterrupted iterations (lr decays from iteration 2; checkpoint and samples every 3)."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    cfg = tiny(*RESUME, "train.tensorboard=true")
    train(cfg, root, out, device="cpu", show_progress=False)
    return out


def read_log(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("it_per_s")
    return rows


def test_lr_schedule_formula():
    # Market recipe: constant to 62,375 then linear to 0 at 87,500.
    span = 87_500 - 62_375
    for it, want in [(0, 1.0), (62_374, 1.0), (62_375, 1.0), (62_376, 1 - 1 / span), (75_000, 1 - 12_625 / span),
                     (87_499, 1 / span), (87_500, 0.0)]:  # fmt: skip
        assert lr_factor(it, 87_500, 62_375) == pytest.approx(want, abs=1e-12)
    # Within one pseudo-epoch of the reference's per-epoch LambdaLR: 1 - max(0, e + 2 - 500) / 201.
    for e in range(700):
        ref = 1 - max(0, e + 2 - 500) / 201
        assert abs(lr_factor(125 * e, 87_500, 62_375) - ref) <= 1 / 201 + 1e-12
    # The optimiser really follows it, step by step.
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _LrFactor(10, 4))
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2e-4] * 5 + [2e-4 * (1 - k / 6) for k in range(1, 6)], rel=1e-12)


def test_data_order_is_a_function_of_seed_and_iteration():
    full = list(IterationSampler(50, 8, seed=3, start=0, stop=6))
    assert list(IterationSampler(50, 8, seed=3, start=4, stop=6)) == full[4:]
    assert list(IterationSampler(50, 8, seed=4, start=0, stop=6)) != full
    ranks = [list(IterationSampler(50, 8, seed=3, start=0, stop=6, rank=r, world=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == full  # DDP ranks split the same global batch
    assert all(len(b) == 4 for b in ranks[0])


def test_resume_is_exact(root, straight, tmp_path):
    """Killed after iteration 4 (last checkpoint at 3), resumed: the same losses as the straight run (which
    decoded its images in the main process, this one in a worker)."""
    out = tmp_path / "resumed"
    cfg = tiny(*RESUME, "train.tensorboard=true", "train.num_workers=1")  # loader processes: same batches
    with pytest.raises(Killed):
        train(cfg, root, out, device="cpu", show_progress=False, callback=kill_at(4))
    assert [r["iteration"] for r in read_log(out)] == [1, 2, 3, 4]
    ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["iteration"] == 3
    train(config_from_dict("patn", ckpt["config"]), root, out, resume=ckpt, device="cpu", show_progress=False)

    a, b = read_log(straight), read_log(out)
    assert [r["iteration"] for r in b] == [1, 2, 3, 4, 5, 6]  # iteration 4 logged once, by the resumed run
    assert a == b  # every loss and lr, bit for bit
    ca = load_checkpoint(straight / "checkpoints" / "latest.pt")
    cb = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert set(ca["model"]) == set(cb["model"])
    for k, v in ca["model"].items():  # generator, discriminators: every weight and buffer
        assert torch.equal(v, cb["model"][k]), k
    for k, v in ca["ranks"][0]["extra"].items():  # the image pools
        assert all(torch.equal(a, b) for a, b in zip(v["images"], cb["ranks"][0]["extra"][k]["images"])), k
    assert ca["replicas"] == cb["replicas"]
    assert cb["iteration"] == 6


def test_run_folder_and_checkpoint_contents(straight):
    cfg = tiny(*RESUME, "train.tensorboard=true")
    ckpt = load_checkpoint(straight / "checkpoints" / "latest.pt")  # weights_only=True load
    assert {"format", "method", "config", "iteration", "model", "inference", "optimizers", "schedulers", "scaler",
            "ranks", "sampler", "replicas", "world_size"} <= set(ckpt)  # fmt: skip
    assert ckpt["method"] == "patn" and ckpt["iteration"] == 6 and ckpt["world_size"] == 1
    assert config_from_dict("patn", ckpt["config"]) == cfg
    assert ckpt["inference"] == "generator"
    assert {k.split(".")[0] for k in ckpt["model"]} == {"generator", "discriminators"}  # no VGG, no pools
    assert {k.split(".")[1] for k in ckpt["model"] if k.startswith("discriminators.")} == {"A", "S"}
    pools = ckpt["ranks"][0]["extra"]
    assert set(pools) == {"pools.A._extra_state", "pools.S._extra_state"}
    assert all(len(p["images"]) == 4 for p in pools.values())
    assert set(ckpt["optimizers"]) == set(ckpt["schedulers"]) == {"generator", "discriminators"}
    assert all(s["step"] == 6 for s in ckpt["optimizers"]["generator"]["state"].values())
    assert ckpt["schedulers"]["generator"]["last_epoch"] == 6
    assert set(ckpt["ranks"][0]["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert ckpt["sampler"]["seed"] == cfg.train.seed and ckpt["sampler"]["iteration"] == 6
    # lr in the log: constant for iterations 0-1, then linear to 0 at 6 (decay_start 2).
    assert [r["lr"] for r in read_log(straight)] == pytest.approx([2e-4 * lr_factor(i, 6, 2) for i in range(6)])
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["iter_000006.pt", "latest.pt"]
    assert sorted(p.name for p in (straight / "samples").iterdir()) == ["iter_000003.png", "iter_000006.png"]
    grid = read_image(straight / "samples" / "iter_000006.png")
    assert grid.shape == (2 * 130 + 2, 5 * 66 + 2, 3)  # 2 pairs x (source | poses | generated | target)
    assert list((straight / "tb").glob("events.out.tfevents.*"))
    assert (straight / "config.yaml").is_file()


def test_l1_falls_when_overfitting_one_pair(root, tmp_path):
    pairs = pd.DataFrame({"from": ["0001_c1s1_000100_01.jpg"], "to": ["0001_c2s1_000101_01.jpg"]})
    cfg = tiny("train.iterations=12", "optim.generator.lr=0.002", "train.decay_start=12")
    r = train(cfg, root, tmp_path / "run", pairs=pairs, device="cpu", show_progress=False)
    l1 = [h["g_l1"] for h in r.history]
    assert len(l1) == 12
    assert np.mean(l1[-3:]) < 0.6 * np.mean(l1[:3]), l1


def test_cli_resume_extends_a_run(root, straight, tmp_path, run_cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    code, _, err = run_cli("train", "--method", "patn", "--data", root, "--out", run, "--resume", "--device", "cpu",
                           "--no-progress", "--set", "train.iterations=7")  # fmt: skip
    assert code == 0, err
    log = read_log(run)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6, 7]
    assert log[-1]["lr"] == pytest.approx(2e-4 * lr_factor(6, 7, 2))  # the new schedule, not the old (0)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["iteration"] == 7


def _one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reidaug: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_errors(root, straight, tmp_path, run_cli):
    base = ("train", "--data", root, "--device", "cpu", "--no-progress")
    code, _, err = run_cli(*base, "--method", "nope", "--out", tmp_path / "a")
    assert code == 2
    _one_line(err, "unknown method 'nope'")
    code, _, err = run_cli(*base, "--method", "patn", "--out", tmp_path / "b", "--resume")
    assert code == 2
    _one_line(err, "nothing to resume", "checkpoints/latest.pt not found")
    code, _, err = run_cli(*base, "--method", "patn", "--out", straight)  # the default config, not the run's
    assert code == 2
    _one_line(err, "holds a patn run with another configuration", "--resume continues it")
    bad = tmp_path / "pairs.csv"
    bad.write_text("from,to\n0001_c1s1_000100_01.jpg,0009_c1s1_000001_01.jpg\n")
    code, _, err = run_cli(*base, "--method", "patn", "--out", tmp_path / "c", "--pairs", bad)
    assert code == 2
    _one_line(err, "not in the Market root", "0009_c1s1_000001_01.jpg")
    assert not (tmp_path / "c").exists()  # nothing written
    code, _, err = run_cli(*base, "--method", "patn", "--out", tmp_path / "c", "--vgg-weights", tmp_path / "no.pth",
                           "--set", "model.ngf=4", "--set", "model.n_blocks=1")  # fmt: skip
    assert code == 2
    _one_line(err, "VGG-19 weights file not found")
    assert not (tmp_path / "c").exists()  # the model is built before the run folder is made
    code, _, err = run_cli(*base, "--method", "patn", "--out", tmp_path / "d", "--set", "optim.generator.lr=oops")
    assert code == 2
    _one_line(err, "bad configuration")
    code, _, err = run_cli(*base, "--method", "apatn", "--out", straight, "--resume")
    assert code == 2
    _one_line(err, "trained with method patn, not apatn")


@pytest.mark.slow
def test_ddp_two_processes_gloo(root, tmp_path):
    """torchrun -m reidaug train with 2 CPU processes: replicas agree, only rank 0 writes."""
    out = tmp_path / "ddp"
    sets = [a for s in (*TINY_PATN, "train.batch_size=4", "train.iterations=3", "train.checkpoint_every=2")
            for a in ("--set", s)]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reidaug",
           "train", "--method", "patn", "--data", str(root), "--out", str(out), "--device", "cpu", "--no-progress",
           *sets]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 3
    assert len(ckpt["replicas"]) == 2 and ckpt["replicas"][0] == ckpt["replicas"][1]  # identical parameters
    ranks = ckpt["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])
    assert [r["iteration"] for r in read_log(out)] == [1, 2, 3]  # one writer: no duplicated lines
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["checkpoints/iter_000003.pt", "checkpoints/latest.pt", "config.yaml", "log.jsonl",
                     "samples/iter_000003.png"]  # fmt: skip


def test_non_finite_loss_is_a_training_failure_not_a_user_error(root, tmp_path, run_cli):
    """One line, exit code 1 (not 2: nothing in the input is wrong), and the run keeps no checkpoint of it."""
    code, _, err = run_cli("train", "--method", "patn", "--data", root, "--out", tmp_path / "nan", "--device", "cpu",
                           "--no-progress", *[a for s in (*TINY_PATN, "train.iterations=2", "optim.generator.lr=1e30",
                                                           "optim.discriminators.lr=1e30") for a in ("--set", s)])  # fmt: skip
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("reidaug: training failed: non-finite loss at iteration")
    assert not (tmp_path / "nan" / "checkpoints").exists()


class _Reads(torch.Tensor):
    """A logged loss that counts how often the host reads a value derived from it."""

    reads: list[int] = []
    iteration = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("__float__", "__int__", "__bool__", "item", "tolist"):
            cls.reads.append(cls.iteration)
        return super().__torch_function__(func, types, args, kwargs or {})


def _logged_as(monkeypatch, nan_at: int | None = None):
    from reidaug.models.patn_family import PATNFamily

    step = PATNFamily.training_step
    _Reads.reads, _Reads.iteration = [], 0

    def counted(self, batch, steps):
        logs = step(self, batch, steps)
        _Reads.iteration += 1
        if _Reads.iteration == nan_at:
            logs["g_l1"] = logs["g_l1"] * float("nan")
        return {k: v.as_subclass(_Reads) for k, v in logs.items()}

    monkeypatch.setattr(PATNFamily, "training_step", counted)


def test_losses_are_read_only_at_log_lines_and_checkpoints(root, tmp_path, monkeypatch):
    """No host read of a loss per iteration (a device sync on CUDA): once per log line or checkpoint."""
    _logged_as(monkeypatch)
    cfg = tiny("train.iterations=10", "train.log_every=4", "train.checkpoint_every=5", "train.sample_every=0")
    train(cfg, root, tmp_path / "run", device="cpu", show_progress=False)
    assert sorted(set(_Reads.reads)) == [4, 5, 8, 10]
    assert [r["iteration"] for r in read_log(tmp_path / "run")] == [4, 8, 10]


def test_a_non_finite_loss_names_its_iteration_when_read_later(root, tmp_path, monkeypatch):
    """Found at the next read (iteration 4), reported as iteration 3, before the checkpoint at 5 could keep it."""
    from reidaug.train.trainer import TrainingError

    _logged_as(monkeypatch, nan_at=3)
    cfg = tiny("train.iterations=10", "train.log_every=4", "train.checkpoint_every=5", "train.sample_every=0")
    with pytest.raises(TrainingError, match=r"^non-finite loss at iteration 3 "):
        train(cfg, root, tmp_path / "run", device="cpu", show_progress=False)
    assert _Reads.iteration == 4 and not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def _same_command(root, out, *extra):
    sets = [a for v in (*TINY_PATN, *RESUME, *extra) for a in ("--set", v)]
    return ("train", "--method", "patn", "--data", root, "--out", out, "--device", "cpu", "--no-progress", *sets)


def test_the_same_command_recovers_every_interruption(root, straight, tmp_path, run_cli):
    """Killed before the first checkpoint, killed between checkpoints, finished: rerunning the same command
    restarts, resumes (the straight run's weights exactly) and reports, with no --resume and no cleanup."""
    cfg = tiny(*RESUME)
    early, mid = tmp_path / "early", tmp_path / "mid"
    for out, at in ((early, 2), (mid, 4)):
        with pytest.raises(Killed):
            train(cfg, root, out, device="cpu", show_progress=False, callback=kill_at(at))
    assert not (early / "checkpoints" / "latest.pt").exists() and (early / "config.yaml").is_file()
    code, out, err = run_cli(*_same_command(root, early))
    assert code == 0, err
    assert "stopped before its first checkpoint: starting it again" in err  # the console is stderr
    code, out, err = run_cli(*_same_command(root, mid))
    assert code == 0, err
    assert "resuming" in err and "from iteration 3 of 6" in err
    want = load_checkpoint(straight / "checkpoints" / "latest.pt")["model"]
    for run in (early, mid):
        got = load_checkpoint(run / "checkpoints" / "latest.pt")["model"]
        assert all(torch.equal(v, got[k]) for k, v in want.items()), run
    code, out, err = run_cli(*_same_command(root, mid))  # finished: reported, exit 0, nothing changes
    assert code == 0 and "already trained patn to iteration 6" in err
    code, out, err = run_cli(*_same_command(root, mid), "--resume")
    assert code == 0 and "already trained" in err


def test_resume_refuses_other_pairs_unless_asked(root, tmp_path, run_cli):
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.pairs import make_pairs, write_pairs

    pairs = make_pairs(read_annotations(root / "annotations" / "train.csv"))
    write_pairs(tmp_path / "a.csv", pairs.head(10))
    write_pairs(tmp_path / "b.csv", pairs.tail(10))
    with pytest.raises(Killed):
        train(tiny(*RESUME), root, tmp_path / "run", pairs=tmp_path / "a.csv", device="cpu", show_progress=False,
              callback=kill_at(4))  # fmt: skip
    code, _, err = run_cli(*_same_command(root, tmp_path / "run"), "--pairs", tmp_path / "b.csv")
    assert code == 2
    _one_line(err, "trained on other pairs", "--new-data")
    code, _, err = run_cli(*_same_command(root, tmp_path / "run"), "--pairs", tmp_path / "b.csv", "--new-data")
    assert code == 0, err


def test_resume_between_log_lines_keeps_the_log_exact(root, tmp_path):
    """checkpoint_every 3, log_every 2: the window open at the checkpoint (iteration 3 of 3-4) is restored."""
    cfg = tiny(*RESUME, "train.log_every=2")
    train(cfg, root, tmp_path / "straight", device="cpu", show_progress=False)
    with pytest.raises(Killed):
        train(cfg, root, tmp_path / "resumed", device="cpu", show_progress=False, callback=kill_at(5))
    ckpt = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")
    assert ckpt["iteration"] == 3 and ckpt["logger"]["n"] == 1
    train(config_from_dict("patn", ckpt["config"]), root, tmp_path / "resumed", resume=ckpt, device="cpu",
          show_progress=False)  # fmt: skip
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["iteration"] for r in a] == [2, 4, 6] and a == b
