"""The multi-source generator (notes 9, 1.8): the affine fit and warp, the body-part transforms and masks, the
nearest-neighbour loss against a brute-force loop, the layer sizes of notes 9.2-9.4, invariance to the order of the
sources, and M = 1 and M = 5 through train (the paper's M = 2 stage first), resume, generate and augment, with
--sources refused for a generator that takes a fixed single source."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_market import TINY_PATN, Killed, kill_at, make_root, meta_count, pose

from reidaug.data.keypoints import J, read_annotations
from reidaug.data.market import read_split
from reidaug.data.pairs import make_pairs, make_tuples, tuples_from_pairs, write_pairs, write_tuples
from reidaug.models.affine import apply_affine, fit_affine, warp_affine
from reidaug.models.checkpoint import load_checkpoint
from reidaug.models.deformable import PARTS, deform, part_masks, part_transforms
from reidaug.models.discriminators import DeformableDiscriminator
from reidaug.models.multisource import (
    MultiSource,
    MultiSourceConfig,
    MultiSourceGenerator,
    nearest_neighbour_loss,
)
from reidaug.models.multisource import MultiSourceLossConfig as Loss
from reidaug.train.config import load_method_config
from reidaug.train.trainer import train

H, W = 128, 64


def poses(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([pose(rng) for _ in range(n)])).long()


# -- geometry ------------------------------------------------------------------------------------------------------


def test_affine_fit_is_exact_on_an_affine_map_and_flags_degenerate_point_sets():
    g = torch.Generator().manual_seed(0)
    theta = torch.tensor([[[1.3, -0.4, 7.0], [0.2, 0.8, -3.5]], [[0.5, 0.0, 0.0], [0.0, 2.0, 10.0]]])
    src = torch.rand(2, 6, 2, generator=g) * 60
    dst = apply_affine(theta, src)
    fit, ok = fit_affine(src, dst)
    assert ok.all() and torch.allclose(fit, theta, atol=1e-4)
    # Weight 0 drops a point: an outlier there changes nothing; exactly three points still determine the map.
    bad = dst.clone()
    bad[:, 0] += 50
    w = torch.tensor([[0.0, 1, 1, 1, 0, 0], [0.0, 1, 1, 1, 1, 1]])
    fit, ok = fit_affine(src, bad, w)
    assert ok.all() and torch.allclose(fit, theta, atol=1e-4)
    # Two points, or collinear ones, do not: identity and ok False.
    line = torch.stack([torch.arange(5.0), 2 * torch.arange(5.0)], -1)[None]
    for pts, weight in ((src[:1], torch.tensor([[1.0, 1, 0, 0, 0, 0]])), (line, None)):
        fit, ok = fit_affine(pts, pts + 1, weight)
        assert not ok.any() and torch.equal(fit[0, :, :2], torch.eye(2))


def test_warp_samples_the_mapped_position_at_the_feature_stride():
    x = torch.arange(2 * 8 * 4, dtype=torch.float32).view(1, 2, 8, 4)
    identity = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    shift = torch.tensor([[1.0, 0, 4], [0, 1, 0]])  # 4 image pixels right = 1 feature pixel at stride 4
    out = warp_affine(x, torch.stack([identity, shift])[None], stride=4)
    assert out.shape == (1, 2, 2, 8, 4)
    assert torch.allclose(out[:, :, 0], x, atol=1e-5)
    assert torch.allclose(out[:, :, 1, :, :3], x[..., 1:], atol=1e-5) and (out[:, :, 1, :, 3] == 0).all()


def test_body_part_transforms_and_masks():
    kp = poses(3)
    theta, valid = part_transforms(kp, kp)  # the same pose: every part maps onto itself
    assert theta.shape == (3, 10, 2, 3) and valid.all()
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand_as(theta), atol=1e-4)
    moved = kp.clone()
    moved[..., 1] += 3  # the source person 3 px to the right: every map is that translation
    theta, valid = part_transforms(moved, kp)
    assert valid.all() and torch.allclose(theta[..., 2], torch.tensor([3.0, 0]).expand(3, 10, 2), atol=1e-3)
    # A limb missing in the source is taken from its mirror; missing in the target: no mask, no transform.
    src = kp.clone()
    src[0, J["r_knee"]] = -1
    tgt = kp.clone()
    tgt[1, J["l_elbow"]] = -1
    theta, valid = part_transforms(src, tgt)
    r_thigh, l_forearm = PARTS.index("r_thigh"), PARTS.index("l_forearm")
    assert valid[0, r_thigh] and not valid[1, l_forearm] and valid.sum() == 30 - 2  # and l_upper_arm
    masks = part_masks(tgt, (H, W))
    assert masks.shape == (3, 10, H, W) and (masks[:, 0] == 1).all()  # torso: the whole image
    assert masks[1, l_forearm].sum() == 0 and masks[0, l_forearm].sum() > 0
    y, x = kp[0, J["r_knee"]].tolist()
    assert masks[0, r_thigh, y, x] == 1 and masks[0, PARTS.index("head"), y, x] == 0


def test_deformable_skip_is_the_max_of_masked_warps():
    torch.manual_seed(0)
    kp = poses(2)
    theta, valid = part_transforms(kp.flip(0), kp)
    masks = part_masks(kp, (H, W)) * valid[..., None, None]
    f = torch.randn(2, 3, 32, 16)
    out = deform(f, theta, masks, H)
    m = torch.nn.functional.interpolate(masks, size=(32, 16), mode="nearest")
    expect = torch.stack([warp_affine(f, theta[:, k : k + 1], 4.0)[:, :, 0] * m[:, None, k] for k in range(10)]).amax(0)
    assert torch.allclose(out, expect)


def test_nearest_neighbour_loss_equals_brute_force():
    torch.manual_seed(0)
    fake, real = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    total = 0.0
    for b in range(2):
        for i in range(5):
            for j in range(4):
                total += min((fake[b, :, i, j] - real[b, :, y, x]).abs().sum().item()
                             for y in range(max(0, i - 1), min(5, i + 2)) for x in range(max(0, j - 1), min(4, j + 2)))  # fmt: skip
    assert nearest_neighbour_loss(fake, real, 3) == pytest.approx(total / 40, rel=1e-5)
    assert nearest_neighbour_loss(fake, real, 1) == pytest.approx((fake - real).abs().sum(1).mean().item(), rel=1e-5)
    assert nearest_neighbour_loss(real, real) == 0


# -- the network ---------------------------------------------------------------------------------------------------


def test_layer_sizes_of_the_notes():
    """xi_r: 128, 256, 512, 1024, 1024, 1024 channels; psi: 512, 512, 512, 256, 128; attention inputs with the
    previous attention (notes 9.3); D's 42-channel input gives 3x1 patches (notes 9.4)."""
    with torch.device("meta"):
        g = MultiSourceGenerator(MultiSourceConfig())
    assert [a.channel[-1].out_features for a in g.attention] == [128, 256, 512, 1024, 1024, 1024]
    assert [a.spatial.in_channels for a in g.attention] == [128 + 128 + 256, 256 + 256 + 512, 512 + 512 + 1024,
                                                            512 + 1024 + 1024, 512 + 1024 + 1024, 1024 + 1024]  # fmt: skip
    assert [u[2].out_channels for u in g.up] == [128, 256, 512, 512, 512]
    assert [u[2].in_channels for u in g.up] == [512, 1024, 1536, 1536, 2048]
    assert g.attention[1].channel[0].out_features == 64  # C_E / 4 (code)
    d = DeformableDiscriminator(42, 64, 3, "group1")
    assert d(torch.zeros(1, 42, H, W)).shape == (1, 1, 3, 1)
    assert meta_count(lambda: MultiSourceGenerator(MultiSourceConfig(recurrent_attention=False))) < meta_count(
        lambda: MultiSourceGenerator(MultiSourceConfig()))


def batch_of(b: int, m: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    kp = poses(b * (m + 1), seed)
    return {"src_img": torch.rand(b, m, 3, H, W, generator=g) * 2 - 1, "src_kp": kp[: b * m].view(b, m, 18, 2),
            "tgt_kp": kp[b * m :], "tgt_img": torch.rand(b, 3, H, W, generator=g) * 2 - 1}  # fmt: skip


def test_output_does_not_depend_on_the_order_of_the_sources():
    torch.manual_seed(0)
    gen = MultiSourceGenerator(MultiSourceConfig(ngf=4)).eval()
    batch = batch_of(2, 4)
    with torch.no_grad():
        out = gen(batch)
        for perm in ([3, 1, 0, 2], [1, 2, 3, 0]):
            other = gen({**batch, "src_img": batch["src_img"][:, perm], "src_kp": batch["src_kp"][:, perm]})
            assert torch.allclose(other["image"], out["image"], atol=1e-5)
            assert torch.allclose(other["attention"], out["attention"][:, perm], atol=1e-5)
        assert torch.allclose(out["attention"].sum(1), torch.ones(2, H, W), atol=1e-5)  # Eq. 4
        one = gen({**batch, "src_img": batch["src_img"][:, :1], "src_kp": batch["src_kp"][:, :1]})
        assert torch.allclose(one["attention"], torch.ones(2, 1, H, W))  # one source takes all the weight
        # Without the recurrent attention input, duplicating every source changes nothing (notes 9.6).
        plain = MultiSourceGenerator(MultiSourceConfig(ngf=4, recurrent_attention=False)).eval()
        twice = plain({**batch, "src_img": batch["src_img"].repeat(1, 2, 1, 1, 1),
                       "src_kp": batch["src_kp"].repeat(1, 2, 1, 1)})  # fmt: skip
        assert torch.allclose(twice["image"], plain(batch)["image"], atol=1e-5)


def test_losses_of_one_step():
    torch.manual_seed(0)
    cfg = MultiSourceConfig(ngf=4)
    method = MultiSource(cfg, Loss(nn_features="image", lambda_nn=2.0, lambda_l1=1.0, source_reduction="sum"))
    batch = batch_of(2, 3)
    out = method.generator(batch)
    total, logs = method.generator_loss(batch, out, method.loss_cfg)
    nn_term = 2.0 * nearest_neighbour_loss(out["image"], batch["tgt_img"])
    assert float(logs["g_nn"]) == pytest.approx(nn_term.item(), rel=1e-5)
    logits = method.disc_logits(batch, out, out["image"])
    assert logits.shape == (2, 3, 1, 3, 1)  # one conditional D over every source (Eq. 7)
    gan = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)) * 3
    assert float(logs["g_gan"]) == pytest.approx(gan.item(), rel=1e-5)
    assert total.item() == pytest.approx(float(logs["g_gan"] + logs["g_nn"] + logs["g_l1"]), rel=1e-5)


# -- through the commands ------------------------------------------------------------------------------------------

TINY = ["model.ngf=4", "model.discriminator.ndf=4", "loss.nn_features=image", "loss.lambda_nn=1.0",
        "train.batch_size=2", "train.num_workers=0", "train.tensorboard=false", "train.log_every=1",
        "train.checkpoint_every=2", "train.sample_every=4", "train.sample_count=2", "train.iterations=4",
        "stages=[{name: two_sources, until: 2, sources: 2}, {name: target_sources}]"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("market"), ids=3, per_id=6)


@pytest.fixture(scope="module", params=[1, 5])
def run(request, root, tmp_path_factory):
    """4 iterations through the public command, recording the sources every training forward pass saw."""
    from reidaug.cli import main

    m = request.param
    out = tmp_path_factory.mktemp("runs") / f"m{m}"
    seen, forward = [], MultiSourceGenerator.forward

    def recording(self, batch):
        if self.training:
            seen.append(batch["src_img"].shape[1])
        return forward(self, batch)

    MultiSourceGenerator.forward = recording
    try:
        sets = [*TINY, f"model.num_sources={m}"]
        args = ["train", "--method", "multisource", "--data", root, "--out", out, "--device", "cpu", "--no-progress"]
        assert main([str(a) for a in args] + [a for s in sets for a in ("--set", s)]) == 0
    finally:
        MultiSourceGenerator.forward = forward
    return m, out, seen


def log(run_dir):
    return [{k: v for k, v in json.loads(ln).items() if k != "it_per_s"}
            for ln in (run_dir / "log.jsonl").read_text().splitlines()]  # fmt: skip


def test_training_follows_the_two_stage_schedule(run):
    m, out, seen = run
    assert seen == [min(2, m)] * 2 + [m] * 2  # M = 2 first, then the target M (M = 1: one source throughout)
    rows = log(out)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for r in rows for v in r.values())
    assert {"g_gan", "g_nn", "d_real", "d_fake"} <= set(rows[0])
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["model"]["num_sources"] == m and ckpt["inference"] == "generator"
    assert (out / "samples" / "iter_000004.png").is_file()


def test_resume_is_exact(root, run, tmp_path, run_cli):
    m, out, _ = run
    resumed = tmp_path / "resumed"
    cfg = load_method_config("multisource", None, [*TINY, f"model.num_sources={m}"])
    with pytest.raises(Killed):
        train(cfg, root, resumed, device="cpu", show_progress=False, callback=kill_at(3))
    assert load_checkpoint(resumed)["iteration"] == 2
    code, _, err = run_cli("train", "--method", "multisource", "--data", root, "--out", resumed, "--resume",
                           "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert log(resumed) == log(out)
    a, b = load_checkpoint(out)["model"], load_checkpoint(resumed)["model"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_generate_takes_any_number_of_sources(root, run, tmp_path, run_cli):
    m, out, _ = run
    ann = read_annotations(root / "annotations" / "train.csv")
    tuples = make_tuples(ann, 5, seed=1).head(4)
    write_tuples(tmp_path / "tuples.csv", tuples)
    for k in (1, 5):
        code, _, err = run_cli("generate", "--checkpoint", out, "--pairs", tmp_path / "tuples.csv", "--data", root,
                               "--out", tmp_path / f"gen{k}", "--sources", k, "--device", "cpu", "--no-progress")  # fmt: skip
        assert code == 0, err
        manifest = pd.read_csv(tmp_path / f"gen{k}" / "manifest.csv", dtype=str)
        cols = ["source"] + [f"source_{i}" for i in range(1, k)]
        assert list(manifest.columns[3 : 4 + k]) == [*cols, "target_pose_from"]
        assert manifest[cols].to_numpy().tolist() == tuples.iloc[:, :k].to_numpy().tolist()
        assert len(list((tmp_path / f"gen{k}").glob("*.jpg"))) == 4
    write_pairs(tmp_path / "pairs.csv", make_pairs(ann).head(2))  # default M: the trained one
    code, _, err = run_cli("generate", "--checkpoint", out, "--pairs", tmp_path / "pairs.csv", "--data", root,
                           "--out", tmp_path / "genp", "--device", "cpu", "--no-progress")  # fmt: skip
    assert (code == 0) if m == 1 else (code == 2 and "(or pass --sources 1)" in err and len(err.splitlines()) == 1)


def test_augment_uses_up_to_m_kept_images_of_the_identity(root, run, tmp_path, run_cli):
    m, out, _ = run
    code, _, err = run_cli("augment", "--data", root, "--out", tmp_path / "aug", "--checkpoint", out, "--portion",
                           "0.5", "--sources", 5, "--device", "cpu", "--no-progress", "--set", "generate.num_workers=0")  # fmt: skip
    assert code == 0, err
    jobs = pd.read_csv(tmp_path / "aug" / "jobs.csv", keep_default_na=False)
    reduced = tmp_path / "aug" / "reduced"
    kept = set(read_split(reduced, "train").name)
    cols = ["source"] + [f"source_{i}" for i in range(1, 5)]
    for j in jobs.itertuples():
        sources = [getattr(j, c) for c in cols]
        kept_of_id = {k for k in kept if k[:4] == j.replaces[:4]}
        assert set(sources) <= kept_of_id and len(set(sources)) == min(5, len(kept_of_id))
    manifest = pd.read_csv(tmp_path / "aug" / "generated" / "manifest.csv", dtype=str)
    assert manifest[cols].to_numpy().tolist() == jobs[cols].to_numpy().tolist()
    assert len(read_split(tmp_path / "aug" / "augmented", "train")) == len(read_split(root, "train"))


def test_sources_refused_for_a_single_source_method(root, tmp_path, run_cli):
    ckpt = train(load_method_config("patn", None, [*TINY_PATN, "train.iterations=1"]), root, tmp_path / "patn",
                 device="cpu", show_progress=False).checkpoint  # fmt: skip
    ann = read_annotations(root / "annotations" / "train.csv")
    write_tuples(tmp_path / "tuples.csv", make_tuples(ann, 3, seed=0).head(2))
    code, _, err = run_cli("generate", "--checkpoint", ckpt, "--pairs", tmp_path / "tuples.csv", "--data", root,
                           "--out", tmp_path / "gen", "--sources", 3, "--device", "cpu")  # fmt: skip
    assert code == 2 and err.strip() == "reidaug: error: --sources 3: the patn generator takes exactly 1 source image per generated image"
    assert not (tmp_path / "gen").exists()
    code, _, err = run_cli("augment", "--data", root, "--out", tmp_path / "aug", "--checkpoint", ckpt,
                           "--sources", 2, "--device", "cpu")  # fmt: skip
    assert code == 2 and "--sources 2: the patn generator takes exactly 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "aug").exists()
    code, _, err = run_cli("augment", "--data", root, "--out", tmp_path / "aug2", "--generator-trained-on", "reduced",
                           "--sources", 2, "--device", "cpu")  # fmt: skip
    assert code == 2 and "--sources 2: the patn generator" in err and not (tmp_path / "aug2").exists()


def test_tuples_from_pairs_add_other_images_of_the_identity(root):
    ann = read_annotations(root / "annotations" / "train.csv")
    pairs = make_pairs(ann).iloc[::7].reset_index(drop=True)
    assert tuples_from_pairs(pairs, ann, 1).to_numpy().tolist() == pairs.to_numpy().tolist()
    t = tuples_from_pairs(pairs, ann, 4, seed=3)
    assert t.equals(tuples_from_pairs(pairs, ann, 4, seed=3)) and list(t.columns) == [f"from_{i}" for i in range(4)] + ["to"]
    assert (t["from_0"] == pairs["from"]).all() and (t["to"] == pairs["to"]).all()
    for row in t.itertuples(index=False):
        *src, to = row
        assert len(set(src)) == 4 and to not in src and {s[:4] for s in src} == {to[:4]}  # 6 images: 4 besides `to`
