"""`reidaug metrics` over a generation folder: the body mask by hand, mask-SSIM against scikit-image on the
masked images, FID ~0 for a set against itself and growing with noise, IS 1 for identical images, LPIPS 0 for
identical images and equal to the `lpips` package's own call, PCKh through a pose backend with a known answer,
skipped network metrics without weights, and one-line errors."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_market import make_root

from reidaug.data.images import read_image, write_image
from reidaug.data.keypoints import read_annotations
from reidaug.errors import ReidaugError
from reidaug.metrics.generated import MetricsConfig, compute_metrics
from reidaug.metrics.masks import apply_mask, pose_mask


def test_pose_mask_by_hand():
    kp = np.full((18, 2), -1)
    kp[1], kp[8] = (20, 30), (60, 30)  # neck and right hip: one vertical segment (1, 8)
    m = pose_mask(kp)
    assert m.shape == (128, 64) and m.dtype == bool
    assert m[40, 30] and m[40, 26] and m[40, 34]  # within 4 px of the segment
    assert not m[40, 36] and not m[40, 24] and not m[70, 30]
    assert m[17, 30] and not m[14, 30]  # the disc of radius 4 around the neck
    assert not pose_mask(np.full((18, 2), -1)).any()
    img = np.full((128, 64, 3), 200, np.uint8)
    assert apply_mask(img, m)[40, 30].tolist() == [200] * 3 and apply_mask(img, m)[40, 40].tolist() == [0] * 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny root and three "generation outputs": the targets themselves, noisy targets, and one repeated image."""
    base = tmp_path_factory.mktemp("metrics")
    root = make_root(base / "market", ids=3, per_id=4)
    names = sorted(p.name for p in (root / "bounding_box_train").iterdir())
    rows = [(f"{n[:4]}_c1s0_{i:06d}_00.jpg", names[(i + 1) % len(names)], n) for i, n in enumerate(names)]
    rng = np.random.default_rng(0)
    outs = {}
    for kind in ("same", "noisy", "constant"):
        d = base / kind
        d.mkdir()
        for out, _, target in rows:
            img = read_image(root / "bounding_box_train" / target)
            if kind == "noisy":
                img = np.clip(img + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8)
            if kind == "constant":
                img = read_image(root / "bounding_box_train" / names[0])
            (d / out).write_bytes((root / "bounding_box_train" / target).read_bytes()) if kind == "same" else \
                write_image(d / out, img, 100)  # fmt: skip
        pd.DataFrame(rows, columns=["name", "source", "target_pose_from"]).to_csv(d / "manifest.csv", index=False)
        outs[kind] = d
    return root, outs


def _cfg(**kw) -> MetricsConfig:
    return MetricsConfig(**{"batch_size": 5, "device": "cpu", "fid_real": "targets", "is_splits": 2,
                            "kid_subsets": 5, **kw})  # fmt: skip


def test_identical_images_score_perfectly(setup):
    root, outs = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = compute_metrics(outs["same"], root, cfg=_cfg(metrics=["ssim", "ssim_255", "mask_ssim", "l1", "fid", "lpips"],
                                                        allow_random_weights=True), show_progress=False)  # fmt: skip
    m = r["metrics"]
    assert r["images"] == 12 and m["ssim"] == m["ssim_255"] == m["mask_ssim"] == 1.0 and m["l1"] == 0.0
    assert m["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert abs(m["fid"]) < 1e-2
    assert set(r["random_weights"]) == {"fid", "lpips"}  # marked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noisy = compute_metrics(outs["noisy"], root, cfg=_cfg(metrics=["ssim", "mask_ssim", "fid", "lpips"],
                                                              allow_random_weights=True), show_progress=False)  # fmt: skip
    n = noisy["metrics"]
    assert n["fid"] > 100 * max(abs(m["fid"]), 1e-4) and n["ssim"] < 0.9 and n["lpips"] > 0.01


def test_mask_ssim_and_lpips_equal_their_references(setup):
    import lpips
    from skimage.metrics import structural_similarity

    root, outs = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = compute_metrics(outs["noisy"], root, cfg=_cfg(metrics=["mask_ssim", "lpips"], allow_random_weights=True),
                            show_progress=False)  # fmt: skip
        torch.manual_seed(0)
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    manifest = pd.read_csv(outs["noisy"] / "manifest.csv")
    ann = read_annotations(root / "annotations" / "train.csv")
    scores, dists = [], []
    for row in manifest.itertuples():
        g = read_image(outs["noisy"] / row.name)
        t = read_image(root / "bounding_box_train" / row.target_pose_from)
        mask = pose_mask(ann[row.target_pose_from])
        gm, tm = apply_mask(g, mask), apply_mask(t, mask)
        scores.append(structural_similarity(gm, tm, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            channel_axis=-1, data_range=float(gm.max()) - float(gm.min())))  # fmt: skip
        as_t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
        with torch.no_grad():
            dists.append(ref(as_t(g), as_t(t)).item())
    assert r["metrics"]["mask_ssim"] == pytest.approx(float(np.mean(scores)), abs=1e-6)
    assert r["metrics"]["lpips"] == pytest.approx(float(np.mean(dists)), rel=1e-5)


def test_inception_score_of_identical_images_is_one(setup):
    root, outs = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = compute_metrics(outs["constant"], root, cfg=_cfg(metrics=["is"], allow_random_weights=True),
                            show_progress=False)  # fmt: skip
    assert r["metrics"]["is"] == pytest.approx(1.0, abs=1e-4) and r["random_weights"] == ["is"]


def test_pckh_through_a_pose_backend(setup):
    """A stand-in backend that returns each image's target keypoints, one joint moved far off: a known PCKh."""
    from reidaug.pose.base import register

    root, outs = setup
    ann = read_annotations(root / "annotations" / "train.csv")
    targets = dict(pd.read_csv(outs["same"] / "manifest.csv")[["name", "target_pose_from"]].to_numpy())

    class Oracle:
        name = "oracle"

        def predict(self, images, names):
            out = []
            for n in names:
                kp = ann[targets[n]].copy()
                kp[4] = (0, 0) if kp[4, 0] > 40 else (127, 63)  # the right wrist far from where it is
                out.append(kp)
            return out

    register("oracle", lambda cfg: Oracle())
    r = compute_metrics(outs["same"], root, cfg=_cfg(metrics=["pckh"], pose_backend="oracle"), show_progress=False)
    present = sum(int((ann[t] >= 0).all(axis=1).sum()) for t in targets.values())
    assert r["metrics"]["pckh"] == pytest.approx((present - 12) / present)
    assert r["settings"]["networks"]["pckh"] == "reidaug poses backend oracle"


def test_network_metrics_are_skipped_without_weights(setup, tmp_path, monkeypatch):
    root, outs = setup
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    r = compute_metrics(outs["same"], root, cfg=_cfg(metrics=["ssim", "is", "fid", "kid", "lpips"]),
                        show_progress=False)  # fmt: skip
    assert set(r["metrics"]) == {"ssim"} and r["random_weights"] == []
    assert set(r["skipped"]) == {"is", "fid", "kid", "lpips"}
    assert "--weights inception=PATH" in r["skipped"]["fid"] and "--weights lpips=PATH" in r["skipped"]["lpips"]


def test_cli_json_pairs_and_errors(setup, tmp_path, run_cli):
    root, outs = setup
    code, out, err = run_cli("metrics", "--generated", outs["same"], "--data", root, "--metrics", "ssim,l1",
                             "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    result = json.loads((outs["same"] / "metrics.json").read_text())
    assert result["metrics"]["ssim"] == 1.0 and "ssim" in out + err  # the table
    manifest = pd.read_csv(outs["same"] / "manifest.csv")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\n" + "".join(f"{s},{t}\n" for s, t in manifest[["source", "target_pose_from"]].head(3).to_numpy()))
    code, _, err = run_cli("metrics", "--generated", outs["same"], "--data", root, "--pairs", pairs, "--metrics", "ssim",
                           "--out", tmp_path / "m.json", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["images"] == 3
    pairs.write_text("from,to\n0001_c1s1_000100_01.jpg,0002_c1s1_000200_01.jpg\n")
    for args, needle in (((("--pairs", pairs)), "pairs were not generated"),
                         (("--weights", "inception"), "--weights expects NAME=PATH"),
                         (("--weights", "vgg=x.pth"), "unknown"),
                         (("--split", "test"), "give their CSV with --pairs"),
                         (("--metrics", "ssim,dsscore"), "unknown metrics")):  # fmt: skip
        code, _, err = run_cli("metrics", "--generated", outs["same"], "--data", root, "--no-progress", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, _, err = run_cli("metrics", "--generated", empty, "--data", root)
    assert code == 2 and "no manifest.csv" in err
    shutil.rmtree(empty)
    with pytest.raises(ReidaugError, match="fid_real"):
        compute_metrics(outs["same"], root, cfg=_cfg(fid_real="test"), show_progress=False)
