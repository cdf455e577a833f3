"""The method contract from the outside: a method defined only in this file (discriminator step first, three
optimizers, two training stages, an EMA of its generator, M = 3 sources per target) trains, resumes exactly,
generates and augments through the public commands and API with nothing changed in reidaug."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from tiny_market import Killed, kill_at, make_root
from torch import nn

from reidaug.augment.build import AugmentConfig, augment
from reidaug.config import load_config
from reidaug.data.keypoints import heatmaps, read_annotations
from reidaug.data.market import read_split
from reidaug.data.pairs import make_tuples, write_tuples
from reidaug.models import registry
from reidaug.models.checkpoint import inference_state, load_checkpoint, load_generator
from reidaug.models.discriminators import DiscriminatorConfig, build_discriminator
from reidaug.models.losses import GANLoss
from reidaug.models.method import Method, PoseGenerator, ema, logged
from reidaug.models.optim import OptimizerConfig, StageConfig, make_optimizer
from reidaug.train.config import load_method_config
from reidaug.train.trainer import train

M = 3


@dataclass
class ToyModel:
    num_sources: int = M
    width: int = 8
    heatmap_sigma: float = 6.0
    ema_decay: float = 0.5


@dataclass
class ToyLoss:
    lambda_l1: float = 1.0
    lambda_gan: float = 0.1


class ToyGenerator(PoseGenerator):
    """Encode each source with its pose (shared weights), average over the sources, decode with the target pose."""

    variable_sources = True

    def __init__(self, cfg: ToyModel):
        super().__init__()
        self.num_sources, self.sigma = cfg.num_sources, cfg.heatmap_sigma
        self.encoder = nn.Conv2d(3 + 18, cfg.width, 3, padding=1)
        self.decoder = nn.Conv2d(cfg.width + 18, 3, 3, padding=1)

    def forward(self, batch):
        src, kp = batch["src_img"], batch["src_kp"]  # (B, M, 3, H, W), (B, M, 18, 2)
        b, m, _, h, w = src.shape
        poses = heatmaps(kp.flatten(0, 1), (h, w), self.sigma)
        code = torch.relu(self.encoder(torch.cat([src.flatten(0, 1), poses], 1))).view(b, m, -1, h, w).mean(1)
        image = torch.tanh(self.decoder(torch.cat([code, heatmaps(batch["tgt_kp"], (h, w), self.sigma)], 1)))
        return {"image": image, "code": code}


class Toy(Method):
    parts = ("generator", "critic")
    progress_keys = ("l1",)

    def __init__(self, model: ToyModel, loss: ToyLoss):
        super().__init__()
        self.generator = ToyGenerator(model)
        self.ema = ema(self.generator, model.ema_decay)
        self.critic = build_discriminator(3, DiscriminatorConfig(kind="patch", ndf=4, norm="none", spectral_norm=True),
                                          "none")  # fmt: skip
        self.gan = GANLoss("lsgan")
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self, optim):
        g = self.generator
        return {"encoder": make_optimizer(g.encoder.parameters(), optim["encoder"]),
                "decoder": make_optimizer(g.decoder.parameters(), optim["decoder"]),
                "critic": make_optimizer(self.critic.parameters(), optim["critic"])}  # fmt: skip

    def training_step(self, batch, step):
        with step.autocast():
            fake = self.generator(batch)["image"]
        logs = {}
        if step.trains("critic"):  # discriminator first
            with step.autocast():
                d = self.gan(self.critic(batch["tgt_img"]), True) + self.gan(self.critic(fake.detach()), False)
            step.step("critic", d)
            self.critic_updates += 1
            logs["critic"] = d
        with step.frozen("critic"), step.autocast():
            l1 = step.loss.lambda_l1 * (fake - batch["tgt_img"]).abs().mean()
            total = l1 + step.loss.lambda_gan * self.gan(self.critic(fake), True)
        step.step(["encoder", "decoder"], total)
        self.ema.update_parameters(self.generator)
        return logged({"l1": l1, "total": total, **logs})

    def inference_module(self):
        return self.ema.module


registry.register(registry.MethodSpec(
    name="toy3", model_schema=ToyModel, loss_schema=ToyLoss, build=Toy, generator=ToyGenerator,
    optimizers=lambda: {"encoder": OptimizerConfig(lr=1e-2), "decoder": OptimizerConfig(lr=1e-2),
                        "critic": OptimizerConfig(lr=1e-3, betas=[0.0, 0.99])},
    stages=lambda: [StageConfig(name="warmup", until=2, train=["encoder", "decoder"], loss={"lambda_gan": 0.0}),
                    StageConfig(name="full")],
))  # fmt: skip

SETS = ["train.iterations=6", "train.batch_size=2", "train.num_workers=0", "train.tensorboard=false",
        "train.log_every=1", "train.checkpoint_every=3", "train.sample_every=6", "train.sample_count=2",
        "train.decay_start=3"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("market"), ids=3, per_id=5)


@pytest.fixture(scope="module")
def run(root, tmp_path_factory):
    """6 uninterrupted iterations through the public command."""
    from reidaug.cli import main

    out = tmp_path_factory.mktemp("runs") / "toy"
    args = ["train", "--method", "toy3", "--data", root, "--out", out, "--device", "cpu", "--no-progress"]
    assert main([str(a) for a in args] + [a for s in SETS for a in ("--set", s)]) == 0
    return out


def log(run_dir):
    return [{k: v for k, v in json.loads(ln).items() if k != "it_per_s"}
            for ln in (run_dir / "log.jsonl").read_text().splitlines()]  # fmt: skip


def test_stages_optimizers_and_state_in_the_checkpoint(run):
    rows = log(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert ["critic" in r for r in rows] == [False, False, True, True, True, True]  # warmup trains no critic
    assert {"lr", "lr_decoder", "lr_critic"} <= set(rows[0]) and rows[0]["lr_critic"] == 1e-3
    ckpt = load_checkpoint(run)
    assert ckpt["inference"] == "ema.module"
    assert set(ckpt["optimizers"]) == {"encoder", "decoder", "critic"}
    steps = {k: {float(s["step"]) for s in o["state"].values()} for k, o in ckpt["optimizers"].items()}
    assert steps == {"encoder": {6.0}, "decoder": {6.0}, "critic": {4.0}}
    assert ckpt["optimizers"]["critic"]["param_groups"][0]["betas"] == (0.0, 0.99)
    model = ckpt["model"]
    assert int(model["critic_updates"]) == 4 and int(model["ema.n_averaged"]) == 6
    assert not torch.equal(model["ema.module.decoder.weight"], model["generator.decoder.weight"])
    assert any(".parametrizations.weight." in k for k in model)  # the critic's spectral norm state
    grid = (run / "samples" / "iter_000006.png")
    assert grid.is_file()


def test_resume_is_exact(root, run, tmp_path, run_cli):
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        train(load_method_config("toy3", None, SETS), root, out, device="cpu", show_progress=False, callback=kill_at(5))
    assert load_checkpoint(out)["iteration"] == 3
    code, _, err = run_cli("train", "--method", "toy3", "--data", root, "--out", out, "--resume", "--device", "cpu",
                           "--no-progress")  # fmt: skip
    assert code == 0, err
    assert log(out) == log(run)
    a, b = load_checkpoint(run)["model"], load_checkpoint(out)["model"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_generate_uses_the_ema_module_with_three_sources(root, run, tmp_path, run_cli):
    ann = read_annotations(root / "annotations" / "train.csv")
    tuples = make_tuples(ann, M, seed=1).head(5)
    write_tuples(tmp_path / "tuples.csv", tuples)
    code, _, err = run_cli("generate", "--checkpoint", run, "--pairs", tmp_path / "tuples.csv", "--data", root,
                           "--out", tmp_path / "gen", "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    manifest = pd.read_csv(tmp_path / "gen" / "manifest.csv", dtype=str)
    assert list(manifest.columns[3:7]) == ["source", "source_1", "source_2", "target_pose_from"]
    assert manifest[["source", "source_1", "source_2"]].to_numpy().tolist() == tuples.iloc[:, :3].to_numpy().tolist()
    assert len(list((tmp_path / "gen").glob("*.jpg"))) == 5
    generator, ckpt = load_generator(run)
    assert isinstance(generator, ToyGenerator)
    assert torch.equal(generator.decoder.weight, inference_state(ckpt)["decoder.weight"])
    assert torch.equal(generator.decoder.weight, ckpt["model"]["ema.module.decoder.weight"])
    # M at generation time is a generation setting for a generator that takes any M.
    code, _, err = run_cli("generate", "--checkpoint", run, "--pairs", tmp_path / "tuples.csv", "--data", root,
                           "--out", tmp_path / "gen2", "--device", "cpu", "--no-progress", "--set", "sources=2")  # fmt: skip
    assert code == 0, err
    assert "source_2" not in pd.read_csv(tmp_path / "gen2" / "manifest.csv", nrows=1).columns


def test_augment_plans_three_kept_sources_of_the_identity(root, run, tmp_path):
    cfg = load_config(AugmentConfig, None, ["portion=0.5", "generate.batch_size=4", "generate.num_workers=0"])
    r = augment(root, tmp_path / "aug", run, cfg, device="cpu", show_progress=False)
    jobs = pd.read_csv(tmp_path / "aug" / "jobs.csv", keep_default_na=False)
    kept = set(read_split(r.reduced_root, "train").name)
    assert len(jobs) == r.removed == r.generated
    for j in jobs.itertuples():
        sources = [j.source, j.source_1, j.source_2]
        assert set(sources) <= kept and {s[:4] for s in sources} == {j.replaces[:4]}
        kept_of_id = {k for k in kept if k[:4] == j.replaces[:4]}
        assert len(set(sources)) == min(M, len(kept_of_id))  # distinct while the identity has enough
    assert len(read_split(r.augmented_root, "train")) == len(read_split(root, "train"))
    manifest = pd.read_csv(tmp_path / "aug" / "generated" / "manifest.csv", dtype=str)
    assert manifest["source_2"].tolist() == jobs["source_2"].tolist()
