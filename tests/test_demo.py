"""`make demo`: device auto (never `--device cpu`), the CUDA profile chosen by itself when torch sees a GPU,
SYNTH_SEED and the profile in the demo folder's name. Checked with `make -n` and a stand-in Python that answers
the Makefile's CUDA question."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reidaug.experiment import load_experiment
from reidaug.train.config import load_method_config

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def dry_run(tmp_path: Path, answer: str, *args: str) -> str:
    """`make -n demo` with torch's CUDA answer replaced by `answer` (the install step is only printed)."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho {answer}\n")
    fake.chmod(0o755)
    p = subprocess.run(["make", "-n", "--no-print-directory", "demo", f"PY={fake}", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_cpu_machine_runs_the_cpu_profile_on_device_auto(tmp_path):
    out = dry_run(tmp_path, "cpu")
    assert "train --method multisource --config methods/multisource-demo-cpu --data demo-out/synth" in out
    assert ("experiment --config experiments/demo --data demo-out/synth --out demo-out/experiment "
            "--set generators.multisource=demo-out/multisource/checkpoints/latest.pt") in " ".join(out.replace("\\\n", " ").split())
    assert "--device" not in out
    exp = load_experiment("experiments/demo")
    assert exp.device == "auto" and exp.cluster.jobs == 2  # two worker processes: two cores busy


def test_cuda_machine_takes_the_larger_profile_by_itself(tmp_path):
    out = dry_run(tmp_path, "cuda", "SYNTH_SEED=1")
    assert "synth --out demo-out-cuda-seed1/synth --config synth/demo --set synth.seed=1" in out
    assert "train --method multisource --config methods/multisource-demo-cuda --data demo-out-cuda-seed1/synth" in out
    assert "experiment --config experiments/demo-cuda" in out and "--device" not in out
    cpu = load_method_config("multisource", "methods/multisource-demo-cpu")
    cuda = load_method_config("multisource", "methods/multisource-demo-cuda")
    full = load_method_config("multisource", None)
    assert cpu.image_size == [64, 32] and cuda.image_size == [128, 64]
    assert cpu.model.num_sources == cuda.model.num_sources == 1  # one source per generated image (Table 6)
    assert (cuda.model.ngf, cuda.model.n_blocks) == (full.model.ngf, full.model.n_blocks)  # full size
    assert cuda.train.iterations > cpu.train.iterations
    exp, base = load_experiment("experiments/demo-cuda"), load_experiment("experiments/demo")
    assert exp.device == "cuda" and "height=128" in exp.reid_overrides and exp.seeds == base.seeds


def test_a_chosen_profile_wins(tmp_path):
    out = dry_run(tmp_path, "cuda", "DEMO_PROFILE=cpu")
    assert "methods/multisource-demo-cuda" not in out and "--config methods/multisource-demo-cpu " in out
