"""Reliability (issue 16): every expected failure is one line with exit code 2 and leaves nothing half-written,
and every interruption is recovered by running the same command again.

The failing cases run through the bad-input matrix of benchmarks/bad_inputs.py (a read-only filesystem, a full
disk, `--out FILE/sub`, a bad image in a DataLoader worker, undecodable files, coordinates beyond any crop,
`--batch-size 0`, damaged checkpoints, ...); the recoveries kill real processes with SIGKILL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _matrix():
    spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bad_inputs", mod)
    spec.loader.exec_module(sys.modules["bad_inputs"])
    return sys.modules["bad_inputs"]


M = _matrix()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """The matrix's tiny synthetic root, pairs and 2-iteration PATN run (built on first use)."""
    return M.Fixtures(tmp_path_factory.mktemp("matrix"))


def _run(name: str, fixtures, base: Path):
    case = next(c for c in M.CASES if c.name == name)
    outcome = M.run_case(case, fixtures, base)
    if outcome.kind == "skipped":
        pytest.skip(outcome.detail)
    return outcome


# One or more cases per failure class; each must exit 2 with one `reidaug: error:` line and change nothing.
CLASSES = {
    "read-only output": ["train: --out on a read-only filesystem", "pairs: --out on a read-only filesystem"],
    "immutable folder": ["generate: --out in an immutable folder"],
    "full disk": ["train: --out on a full disk", "generate: --out on a full disk", "pairs: --out on a full disk"],
    "output below a file": ["generate: --out below a file", "pairs: --out below a file"],
    "bad image in a worker": ["generate: corrupt image, in a worker", "train: corrupt image, in a worker"],
    "not UTF-8": ["pairs: annotations not UTF-8", "train: --pairs not UTF-8"],
    "coordinates": ["pairs: coordinate beyond int64", "train: coordinate 3000000000",
                    "train: keypoint outside the image (y = 500)"],
    "batch size 0": ["generate: --batch-size 0", "train: batch size 0"],
    "checkpoints": ["generate: checkpoint missing keys", "generate: checkpoint random bytes", "train: latest.pt torn",
                    "generate: checkpoint pickles code"],
    "reid-eval output before training": ["reid-eval: --out is a folder", "reid-eval: --out below a file",
                                         "reid-eval: --out on a read-only filesystem"],
    "generate output": ["generate: --out inside bounding_box_train", "generate: --out non-empty, not a generate output"],
    "camera rule": ["pairs: camera 0 in a Market name", "train: camera 0 in an image name"],
    "tables and JSON": ["report: results.csv mAP not a number", "metrics: manifest empty",
                        "augment: --out settings not JSON"],
}  # fmt: skip


@pytest.mark.parametrize("name", [n for names in CLASSES.values() for n in names])
def test_refused_in_one_line_leaving_nothing(name, fixtures, tmp_path):
    o = _run(name, fixtures, tmp_path)
    assert o.kind == "clean", f"{o.kind}: {o.detail} (changed: {o.changed})"
    assert o.code == 2 and o.detail.startswith("reidaug: error: ") and not o.changed


def test_the_matrix_tells_a_traceback_an_acceptance_and_a_leftover(fixtures, tmp_path, monkeypatch):
    """The harness itself: a bug, a silently accepted input and a half-written output are not called clean."""
    import reidaug.data.pairs as pairs

    ok = M.Case("ok", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv"])
    assert M.run_case(ok, fixtures, tmp_path / "a").kind == "accepted"
    monkeypatch.setattr(pairs, "build_pairs", lambda *a: {}["bug"])
    bug = M.Case("bug", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv"])
    o = M.run_case(bug, fixtures, tmp_path / "b")
    assert o.kind == "traceback" and o.detail.startswith("KeyError")

    def refuse_after_writing(*a):
        Path("left.csv").write_text("half")
        from reidaug.errors import ReidaugError

        raise ReidaugError("refused late")

    monkeypatch.setattr(pairs, "build_pairs", refuse_after_writing)
    late = M.Case("late", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv"])
    o = M.run_case(late, fixtures, tmp_path / "c")
    assert o.kind == "unclean" and o.changed == ["left.csv"]


# -- generate: the output folder ---------------------------------------------------------------------------------


def test_generate_overwrite_replaces_the_folder_atomically(fixtures, tmp_path, run_cli, monkeypatch):
    """--overwrite with another checkpoint: only the new images, marker and manifest remain; an interrupted
    --overwrite leaves the old folder as it was."""
    from reidaug.generate import MARKER
    from reidaug.utils.io import file_sha256

    other = tmp_path / "other.pt"
    torch.save({**torch.load(fixtures.ckpt, weights_only=True), "iteration": 1}, other)
    head = pd.read_csv(fixtures.pairs).head(4)
    head.to_csv(tmp_path / "pairs4.csv", index=False)
    args = ["generate", "--pairs", tmp_path / "pairs4.csv", "--data", fixtures.root, "--out", tmp_path / "gen",
            "--device", "cpu", "--no-progress", "--set", "num_workers=0"]  # fmt: skip
    assert run_cli(*args, "--checkpoint", fixtures.ckpt)[0] == 0
    (tmp_path / "gen" / "notes.txt").write_text("mine\n")
    before = sorted(os.listdir(tmp_path / "gen"))
    code, _, err = run_cli(*args, "--checkpoint", other)
    assert code == 2 and "holds images of another checkpoint_sha256" in err and "--overwrite" in err

    import reidaug.generate as gen

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(gen, "_run", killed)
        gen.generate(other, tmp_path / "pairs4.csv", fixtures.root, tmp_path / "gen", overwrite=True,
                     cfg=gen.GenerateConfig(num_workers=0), device="cpu", show_progress=False)  # fmt: skip
    assert sorted(os.listdir(tmp_path / "gen")) == before  # the old folder, intact
    assert sorted(os.listdir(tmp_path)) == ["gen", "other.pt", "pairs4.csv"]  # no partial folder left

    code, _, err = run_cli(*args, "--checkpoint", other, "--overwrite")
    assert code == 0, err
    names = sorted(os.listdir(tmp_path / "gen"))
    assert "notes.txt" not in names and len([n for n in names if n.endswith(".jpg")]) == 4
    assert json.loads((tmp_path / "gen" / MARKER).read_text())["checkpoint_sha256"] == file_sha256(other)
    assert set(pd.read_csv(tmp_path / "gen" / "manifest.csv")["checkpoint_sha256"]) == {file_sha256(other)}


def test_generate_overwrite_never_deletes_its_inputs(fixtures, tmp_path, run_cli):
    (tmp_path / "out").mkdir()
    pairs = tmp_path / "out" / "pairs.csv"
    pairs.write_text(fixtures.pairs.read_text())
    code, _, err = run_cli("generate", "--checkpoint", fixtures.ckpt, "--pairs", pairs, "--data", fixtures.root,
                           "--out", tmp_path / "out", "--device", "cpu", "--overwrite")  # fmt: skip
    assert code == 2 and "--overwrite would delete" in err and pairs.is_file()


# -- the camera rule ---------------------------------------------------------------------------------------------


def test_one_camera_rule_for_every_name():
    from reidaug.data.market import check_cameras, is_market_name, name_problem, parse_name
    from reidaug.errors import ReidaugError

    assert is_market_name("0001_c6s1_000001_01.jpg")
    for cam in (0, 7, 9):
        name = f"0001_c{cam}s1_000001_01.jpg"
        assert not is_market_name(name) and name_problem(name) == f"camera {cam} outside Market's range 1..6"
        with pytest.raises(ReidaugError, match=f"camera {cam} outside"):
            parse_name(name)
        with pytest.raises(ReidaugError, match=r"x\.csv: 1 image names have a camera outside Market's range 1\.\.6"):
            check_cameras(["0001_c1s1_000001_01.jpg", name, "not-market.jpg"], "x.csv")
    check_cameras(["a.jpg", "0001_c1s1_000001_01.jpg"], "x.csv")  # other names are not Market names: no rule


# -- synth: partial folders of killed runs -----------------------------------------------------------------------


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "REIDAUG_DEBUG": ""}


def _wait_for(check, proc, timeout=60.0):
    t0 = time.time()
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (code {proc.returncode}) before it could be killed")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_killed_synth_leaves_a_partial_folder_the_next_run_removes(tmp_path, run_cli):
    """kill -9 in the middle of synth: a hidden partial folder naming its builder; the same command removes it
    (its process is gone) and never a live run's folder."""
    from reidaug.utils.io import OWNER, _owner

    out = tmp_path / "market"
    args = ["synth", "--out", out, "-q", *M.sets(M.SYNTH)]
    proc = subprocess.Popen([sys.executable, "-m", "reidaug", *map(str, args)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_for(lambda: any((p / OWNER).is_file() for p in tmp_path.glob(".market.partial-*")), proc)  # building
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (stale,) = tmp_path.glob(".market.partial-*")
    assert json.loads((stale / OWNER).read_text())["pid"] == proc.pid and not out.exists()
    live = tmp_path / ".market.partial-live"  # a run of this process, still building
    live.mkdir()
    (live / OWNER).write_text(json.dumps(_owner()))
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert not stale.exists() and live.is_dir() and (out / "synth.json").is_file()
    assert not (out / OWNER).exists()


# -- train: kill -9 before the first checkpoint --------------------------------------------------------------------


def test_train_killed_before_its_first_checkpoint_completes_with_the_same_command(fixtures, tmp_path, run_cli):
    out = tmp_path / "run"
    args = [*M.TRAIN[:-1], "train.iterations=12"]  # the first checkpoint is the last iteration's
    cmd = ["train", "--method", "patn", "--data", fixtures.root, "--out", out, "--device", "cpu", "--no-progress",
           *M.sets(args)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "reidaug", *map(str, cmd)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_for(lambda: (out / "config.yaml").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "latest.pt").exists()
    code, _, err = run_cli(*cmd)
    assert code == 0, err
    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["iteration"] == 12


# -- reid-eval: --resume is exact on the CPU -----------------------------------------------------------------------


class _Killed(Exception):
    pass


# softmax: torch's shuffling and the data loader workers' seeds; triplet: python's identity sampler; device: the
# generator of the augmentations on the device (train_data=device)
@pytest.mark.parametrize("loss, workers, train_data", [("softmax", 1, "loader"), ("triplet", 0, "loader"),
                                                       ("triplet", 0, "device")])  # fmt: skip
def test_reid_eval_resume_reproduces_the_uninterrupted_run(fixtures, tmp_path, monkeypatch, loss, workers,
                                                           train_data):  # fmt: skip
    """Interrupted after epoch 1 of 2, then the same call again: it resumes, and ends with the metrics and losses
    of the uninterrupted run, exactly."""
    from reidaug.config import load_config
    from reidaug.reid.config import ReidConfig
    from reidaug.reid.engine import ReidEngineMixin
    from reidaug.reid.run import reid_eval

    cfg = load_config(ReidConfig, "reid/default", [*M.REID, "epochs=2", "stepsize=[1]", "checkpoint_every=1",
                                                   f"loss={loss}", f"workers={workers}",
                                                   f"train_data={train_data}"])  # fmt: skip
    straight = reid_eval(fixtures.root, cfg, tmp_path / "a.json", show_progress=False)

    save = ReidEngineMixin.save_state

    def save_then_die(self, epochs_done):
        save(self, epochs_done)
        if epochs_done == 1:
            raise _Killed

    monkeypatch.setattr(ReidEngineMixin, "save_state", save_then_die)
    with pytest.raises(_Killed):
        reid_eval(fixtures.root, cfg, tmp_path / "b.json", show_progress=False)
    monkeypatch.setattr(ReidEngineMixin, "save_state", save)
    assert torch.load(tmp_path / "b.run" / "last.pth", weights_only=True)["epoch"] == 1
    resumed = reid_eval(fixtures.root, cfg, tmp_path / "b.json", show_progress=False)  # the same call, no --resume
    keys = ("mAP", "rank1", "rank5", "rank10", "cmc")
    assert {k: resumed[k] for k in keys} == {k: straight[k] for k in keys}
    drop = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert drop(resumed["history"]) == drop(straight["history"])
