"""PATN on the method contract computes what it computed before the contract was redesigned: the logged losses
of the first 20 iterations of configs/methods/patn-demo.yaml on a small synthetic root, recorded on the CPU with
the pre-redesign trainer (tests/data/patn_demo_first20.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidaug.config import load_config
from reidaug.data.synth.config import SynthConfig
from reidaug.data.synth.dataset import make_dataset
from reidaug.train.config import load_method_config
from reidaug.train.trainer import train

RECORDED = Path(__file__).parent / "data" / "patn_demo_first20.json"
SYNTH = ["synth.train_ids=8", "synth.test_ids=2", "synth.images_per_id=[5,7]", "synth.test_images_per_id=[4,5]",
         "synth.cameras_per_id=[2,3]", "synth.distractors=1", "synth.junk=1"]  # fmt: skip
# Logging, samples and checkpoints only: none of them changes what is computed.
QUIET = ["train.iterations=20", "train.log_every=1", "train.num_workers=0", "train.tensorboard=false",
         "train.sample_every=0", "train.checkpoint_every=1000"]  # fmt: skip


@pytest.mark.slow
def test_patn_demo_losses_match_the_recorded_run(tmp_path):
    root = tmp_path / "market"
    make_dataset(root, load_config(SynthConfig, "synth/default", SYNTH), show_progress=False)
    cfg = load_method_config("patn", "methods/patn-demo", QUIET)
    result = train(cfg, root, tmp_path / "run", device="cpu", show_progress=False)
    got = [{k: v for k, v in h.items() if k != "it_per_s"} for h in result.history]
    want = json.loads(RECORDED.read_text())
    assert [r["iteration"] for r in got] == list(range(1, 21))
    for g, w in zip(got, want):
        assert set(w) <= set(g) and all(k.startswith("lr_") for k in set(g) - set(w)), g  # + lr per optimizer
        # Bit-identical on the machine that recorded them. Another CPU's kernels differ in the last bits, and GAN
        # training amplifies that (measured on an AMD EPYC: 2e-7 at iteration 1, 1e-5 at 2, 1.5e-4 at 3, up to
        # 1.7e-2 by 20); a changed loss, weight or step order moves iteration 1 or 2 by far more than 1e-3.
        rel = 1e-3 if g["iteration"] <= 3 else 5e-2
        assert {k: g[k] for k in w} == pytest.approx(w, rel=rel, abs=1e-7), g["iteration"]
    assert got[-1]["lr_discriminators"] == got[-1]["lr"] == 0.001
