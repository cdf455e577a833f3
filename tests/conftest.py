"""Shared fixtures: the real Market keypoints and crops in ../shared (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("REIDAUG_SHARED", ROOT.parent / "shared")) / "data"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: the tests' tiny CPU kernels run fastest so, and far faster on a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def market_keypoints() -> Path:
    d = SHARED / "market1501-keypoints"
    if not (d / "market-annotation-train.csv").is_file():
        pytest.skip(f"real Market keypoints not found at {d}")
    return d


@pytest.fixture(scope="session")
def market_samples() -> Path:
    d = SHARED / "market1501-samples"
    if not (d / "annotation.csv").is_file():
        pytest.skip(f"real Market samples not found at {d}")
    return d


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit_code, stdout, stderr)."""
    from reidaug.cli import main

    def _run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@pytest.fixture(scope="session")
def experiment_setup(tmp_path_factory):
    """A tiny synthetic Market root and a PATN generator trained for one iteration on it, for the experiment
    tests (local and Ray executors): (root, checkpoint, base folder)."""
    from test_augment import SYNTH
    from tiny_market import TINY_PATN

    from reidaug.config import load_config
    from reidaug.data.synth.config import SynthConfig
    from reidaug.data.synth.dataset import make_dataset
    from reidaug.train.config import load_method_config
    from reidaug.train.trainer import train

    base = tmp_path_factory.mktemp("exp")
    root = base / "market"
    make_dataset(root, load_config(SynthConfig, "synth/default", SYNTH), show_progress=False)
    cfg = load_method_config("patn", None, [*TINY_PATN, "train.iterations=1"])
    ckpt = train(cfg, root, base / "run", show_progress=False).checkpoint
    return root, ckpt, base
