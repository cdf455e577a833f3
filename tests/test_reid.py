"""reid-eval: Circle loss, Market evaluation, the torchreid dataset and engines, weights, and the command."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from reidaug.data.images import write_image
from reidaug.data.market import format_name
from reidaug.errors import ReidaugError
from reidaug.reid._torchreid import reid
from reidaug.reid.config import ReidConfig
from reidaug.reid.dataset import NAME, ReidaugMarket, read_market_split, torchreid_market1501
from reidaug.reid.evaluate import evaluate_market
from reidaug.reid.losses import CircleLoss


# -- tiny Market roots: one colour pair per identity, noise per image ---------------------------------------------
def _person(pid: int, rng, h: int = 32, w: int = 16) -> np.ndarray:
    top, bottom = (tuple(int(v) for v in c) for c in np.random.default_rng(pid).integers(40, 255, (2, 3)))
    img = np.full((h, w, 3), int(rng.integers(0, 60)), np.uint8)
    cv2.rectangle(img, (3, 2), (w - 4, h // 2), top, -1)
    cv2.rectangle(img, (4, h // 2), (w - 5, h - 2), bottom, -1)
    return np.clip(img.astype(int) + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


def make_root(
    root: Path, train_pids=range(1, 7), test_pids=range(101, 105), per: int = 4, seed: int = 0
) -> Path:
    """Train: `per` images per identity; gallery: `per` per identity on cameras 1..per; query: one on camera 6."""
    rng = np.random.default_rng(seed)
    frame = 0
    for folder, pids in (("bounding_box_train", train_pids), ("bounding_box_test", test_pids)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for pid in pids:
            for k in range(per):
                frame += 1
                write_image(root / folder / format_name(pid, 1 + k % 5, 1, frame, 1), _person(pid, rng))
    (root / "query").mkdir(parents=True, exist_ok=True)
    for pid in test_pids:
        frame += 1
        write_image(root / "query" / format_name(pid, 6, 1, frame, 1), _person(pid, rng))
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = make_root(tmp_path_factory.mktemp("market") / "root")
    rng = np.random.default_rng(1)
    write_image(root / "bounding_box_train" / format_name(-1, 2, 1, 900, 1), _person(3, rng))  # junk
    write_image(root / "bounding_box_test" / format_name(-1, 6, 1, 901, 1), _person(101, rng))  # junk
    write_image(root / "bounding_box_test" / format_name(0, 3, 1, 902, 1), _person(999, rng))  # distractor
    return root



# -- Circle loss --------------------------------------------------------------------------------------------------
def test_circle_loss_matches_hand_computed_value():
    # unit vectors with cosines s01 = 0.6, s02 = 0, s03 = -0.6, s12 = 0.8, s13 = 0.28, s23 = 0.8; labels 0 0 1 1
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    # m = 0.25, gamma = 2: O_p = 1.25, D_p = 0.75, O_n = -0.25, D_n = 0.25
    # positive logit -g [1.25 - s]_+ (s - 0.75): s = 0.6 -> 0.195, s = 0.8 -> -0.045
    # negative logit  g [s + 0.25]_+ (s - 0.25): s = 0 -> -0.125, s = 0.8 -> 1.155, s = 0.28 -> 0.0318, s = -0.6 -> 0
    e = math.exp
    per_anchor = [
        math.log(1 + e(0.195) * (e(-0.125) + e(0.0))),  # anchor 0: positive 1, negatives 2, 3
        math.log(1 + e(0.195) * (e(1.155) + e(0.0318))),  # anchor 1: positive 0, negatives 2, 3
        math.log(1 + e(-0.045) * (e(-0.125) + e(1.155))),  # anchor 2: positive 3, negatives 0, 1
        math.log(1 + e(-0.045) * (e(0.0) + e(0.0318))),  # anchor 3: positive 2, negatives 0, 1
    ]
    expected = sum(per_anchor) / 4
    loss = CircleLoss(m=0.25, gamma=2.0)
    assert loss(x, labels).item() == pytest.approx(expected, rel=1e-6)
    assert loss(3.0 * x, labels).item() == pytest.approx(expected, rel=1e-6)  # L2-normalised features


def test_circle_loss_ordering_and_gradient():
    labels = torch.tensor([0, 0, 1, 1])
    separated = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    loss = CircleLoss(m=0.25, gamma=64.0)
    assert loss(separated, labels).item() < 1e-3 < loss(mixed, labels).item()
    f = mixed.clone().requires_grad_(True)
    loss(f, labels).backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    # no anchor with a positive: zero loss that still backpropagates
    g = torch.randn(3, 4, requires_grad=True)
    out = loss(g, torch.tensor([0, 1, 2]))
    out.backward()
    assert out.item() == 0.0


# -- evaluation ---------------------------------------------------------------------------------------------------
def test_evaluator_equals_torchreid_python_evaluation():
    rng = np.random.default_rng(0)
    nq, ng = 40, 300
    q_pids, g_pids = rng.integers(1, 20, nq), rng.integers(1, 20, ng)
    q_cams, g_cams = rng.integers(1, 7, nq), rng.integers(1, 7, ng)
    dist = rng.random((nq, ng))
    cmc_ref, map_ref = reid.metrics.evaluate_rank(
        dist, q_pids, g_pids, q_cams, g_cams, max_rank=50, use_cython=False
    )
    res = evaluate_market(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    assert res.mAP == pytest.approx(map_ref, abs=1e-12)
    np.testing.assert_allclose(res.cmc, cmc_ref, atol=1e-6)


def test_evaluator_ignores_junk_like_torchreid_drops_it():
    # torchreid's Market1501 removes pid -1 images from the gallery; we keep them and ignore them when ranking
    rng = np.random.default_rng(1)
    nq, ng = 25, 120
    q_pids, g_pids = rng.integers(1, 10, nq), rng.integers(-1, 10, ng)  # -1 junk, 0 distractors
    q_cams, g_cams = rng.integers(1, 7, nq), rng.integers(1, 7, ng)
    dist = rng.random((nq, ng))
    keep = g_pids != -1
    cmc_ref, map_ref = reid.metrics.evaluate_rank(
        dist[:, keep], q_pids, g_pids[keep], q_cams, g_cams[keep], max_rank=50, use_cython=False
    )
    res = evaluate_market(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    assert res.mAP == pytest.approx(map_ref, abs=1e-12)
    np.testing.assert_allclose(res.cmc, cmc_ref, atol=1e-6)


def test_evaluator_hand_made_case():
    # query pid 1 camera 1; the gallery in distance order:
    #   pid 1 cam 1 (same camera: removed), junk, distractor, pid 1 cam 2 (hit), pid 2, pid 1 cam 3 (hit)
    # kept ranking: distractor, HIT, pid 2, HIT -> AP = (1/2 + 2/4) / 2 = 0.5, first match at rank 2.
    # query pid 3 has no match in the gallery and is not counted.
    g_pids = np.array([1, -1, 0, 1, 2, 1])
    g_cams = np.array([1, 2, 3, 2, 2, 3])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    res = evaluate_market(dist, np.array([1, 3]), g_pids, np.array([1, 1]), g_cams, max_rank=10)
    assert res.mAP == pytest.approx(0.5)
    assert res.num_valid_queries == 1 and res.num_queries == 2
    np.testing.assert_array_equal(res.cmc, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1])


def test_tiny_gallery_does_not_crash():
    # query 0 (pid 1, cam 1): ranking g2 (pid 1, cam 2: hit), g1, g0 (same camera: removed) -> rank 1, AP 1
    # query 1 (pid 2, cam 1): ranking g0, g1 (pid 2: hit), g2 -> rank 2, AP 1/2
    dist = np.array([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    args = (dist, np.array([1, 2]), np.array([1, 2, 1]), np.array([1, 1]), np.array([1, 2, 2]))
    with pytest.raises(ValueError):  # torchreid's Python fallback: ragged CMC rows (2 and 3 kept entries)
        reid.metrics.evaluate_rank(*args, max_rank=50, use_cython=False)
    res = evaluate_market(*args, max_rank=50)
    assert res.cmc.shape == (50,) and res.num_valid_queries == 2
    assert res.rank(1) == pytest.approx(0.5) and res.rank(2) == 1.0 and res.cmc[-1] == 1.0
    assert res.mAP == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ReidaugError, match="no query has a true match"):
        evaluate_market(dist[:1], [7], [1, 2, 1], [1], [1, 2, 2])


# -- datasets -----------------------------------------------------------------------------------------------------
def test_dataset_reads_root_relabels_and_excludes_junk(tiny_root):
    png = tiny_root / "bounding_box_train" / format_name(6, 5, 1, 950, 1, ext="png")
    write_image(png, _person(6, np.random.default_rng(2)))  # torchreid's own parser would miss .png
    try:
        ds = ReidaugMarket(root=str(tiny_root), mode="train")
        assert len(ds.train) == 6 * 4 + 1  # junk left out, the .png read
        assert sorted({pid for _, pid, _, _ in ds.train}) == list(range(6))
        assert ds.num_train_pids == 6
        assert {Path(p).name.split("_")[0] for p, *_ in ds.train} == {f"{i:04d}" for i in range(1, 7)}
        assert len(ds.query) == 4 and {pid for _, pid, _, _ in ds.query} == {101, 102, 103, 104}
        assert len(ds.gallery) == 4 * 4 + 2  # junk and distractor kept for evaluation
        assert {pid for _, pid, _, _ in ds.gallery} >= {-1, 0}
        assert {c for _, _, c, _ in ds.query} == {5}  # camera 6, 0-based as in torchreid
        item = ds[0]
        assert item["img"].size == (16, 32) and item["pid"] == 0
    finally:
        png.unlink()


def test_dataset_refuses_unreadable_image_instead_of_looping(tmp_path):
    root = make_root(tmp_path / "r", train_pids=[1, 2], test_pids=[5], per=2)
    bad = root / "bounding_box_train" / format_name(2, 1, 1, 990, 1)
    bad.write_bytes(b"not a jpeg")
    ds = ReidaugMarket(root=str(root), mode="train")
    idx = [i for i, (p, *_) in enumerate(ds.train) if Path(p) == bad][0]
    with pytest.raises(ReidaugError, match="cannot read image"):
        ds[idx]


def test_torchreid_market1501_reads_augmented_root_with_symlinked_test_folders(tmp_path, tiny_root):
    # an augmented root: real + generated .jpg in a real train folder, test folders symlinked to the real ones
    aug = tmp_path / "aug"
    (aug / "bounding_box_train").mkdir(parents=True)
    for p in (tiny_root / "bounding_box_train").iterdir():
        (aug / "bounding_box_train" / p.name).write_bytes(p.read_bytes())
    rng = np.random.default_rng(5)
    for k, pid in enumerate([1, 1, 4]):  # generated images of existing identities
        write_image(aug / "bounding_box_train" / format_name(pid, 2, 1, 5000 + k, 1), _person(pid, rng))
    for folder in ("bounding_box_test", "query"):
        (aug / folder).symlink_to(tiny_root / folder, target_is_directory=True)

    # torchreid's own class, untouched: it reads <root>/market1501, here a symlink to the augmented root
    parent = tmp_path / "torchreid-root"
    parent.mkdir()
    (parent / "market1501").symlink_to(aug, target_is_directory=True)
    with pytest.warns(UserWarning, match="deprecated"):
        own = reid.data.datasets.Market1501(root=str(parent), verbose=False)
    # torchreid's own class through our subclass pointing dataset_dir at the root itself
    direct = torchreid_market1501(aug)
    ours = ReidaugMarket(root=str(aug))
    n_train = 6 * 4 + 3  # junk left out by all three
    for ds in (own, direct, ours):
        assert len(ds.train) == n_train and ds.num_train_pids == 6
        assert len(ds.query) == 4
    assert len(own.gallery) == len(direct.gallery) == 4 * 4 + 1  # torchreid drops junk, keeps the distractor
    assert len(ours.gallery) == 4 * 4 + 2
    assert sorted(Path(p).name for p, *_ in direct.train) == sorted(Path(p).name for p, *_ in ours.train)
    with pytest.raises(ReidaugError, match="not a folder"):
        torchreid_market1501(tmp_path / "missing")  # checked first: torchreid would try to download


def test_dataset_is_registered_with_torchreid(tiny_root):
    from reidaug.reid.dataset import register

    assert register() == NAME  # idempotent
    ds = reid.data.datasets.init_image_dataset(NAME, root=str(tiny_root), mode="query", split_id=0)
    assert isinstance(ds, ReidaugMarket) and len(ds) == 4
    assert [pid for _, pid, _ in read_market_split(tiny_root, "query")] == [101, 102, 103, 104]


# -- weights and checkpoints --------------------------------------------------------------------------------------
def _fake_dm(num_pids: int = 3):
    return SimpleNamespace(train_loader=[], test_loader={}, num_train_pids=num_pids, sources=[NAME])


def test_checkpoints_round_trip_on_torch_2_6(tmp_path):
    from reidaug.reid.engine import FINAL, SoftmaxEngine
    from reidaug.reid.weights import load_checkpoint, load_matching, state_dict_of

    model = reid.models.build_model("osnet_x0_25", 3, pretrained=False, use_gpu=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    # torchreid's own engine: no scheduler -> crash when saving at the end of run()
    with pytest.raises(AttributeError):
        reid.engine.ImageSoftmaxEngine(_fake_dm(), model, opt, use_gpu=False).save_model(
            0, 0.5, str(tmp_path)
        )
    # torchreid's checkpoint pickles a numpy rank1, which torch >= 2.6 refuses by default
    reid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1, "rank1": np.float32(0.5)},
                               str(tmp_path / "tr"))  # fmt: skip
    theirs = tmp_path / "tr" / "model.pth.tar-1"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(theirs)
    ckpt = load_checkpoint(theirs)  # numpy scalars allowed as safe globals, nothing else
    assert float(ckpt["rank1"]) == 0.5
    fresh = reid.models.build_model("osnet_x0_25", 3, pretrained=False, use_gpu=False)
    assert load_matching(fresh, state_dict_of(ckpt)) == (len(model.state_dict()),) * 2
    got = fresh.state_dict()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())

    # our engine saves Python numbers: plain torch.load(weights_only=True) works
    import logging

    engine = SoftmaxEngine(_fake_dm(), model, opt, use_gpu=False)
    engine.setup(ReidConfig(), tmp_path, logging.getLogger("test"))
    engine.save_model(0, np.float32(0.75), str(tmp_path))
    ours = torch.load(tmp_path / FINAL)
    assert ours["rank1"] == 0.75 and ours["scheduler"] is None and ours["epoch"] == 1


def test_pretrained_never_downloads(tmp_path, monkeypatch):
    from reidaug.reid.weights import imagenet_candidates, init_weights

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    model = reid.models.build_model("resnet18", 3, pretrained=False, use_gpu=False)
    assert init_weights(model, "resnet18", False, None, False).startswith("weights: random initialisation")
    with pytest.raises(ReidaugError, match="not in torchvision's cache"):
        init_weights(model, "resnet18", True, None, False)
    with pytest.raises(ReidaugError, match="no torchvision ImageNet weights"):
        init_weights(model, "osnet_x0_25", True, None, False)
    # a file in the cache under torchvision's name is used (here random torchvision weights)
    import torchvision

    tv = torchvision.models.resnet18()
    cached = imagenet_candidates("resnet18")[0]
    assert cached.name == "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    line = init_weights(model, "resnet18", True, None, False)
    assert line.startswith("weights: pretrained from") and str(cached) in line
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], tv.state_dict()["layer4.1.conv2.weight"])
    assert not (tmp_path / "hub" / "checkpoints" / "resnet18-5c106cde.pth").exists()


# -- the command --------------------------------------------------------------------------------------------------
FAST = [
    "--set",
    "workers=0",
    "--set",
    "threads=1",
    "--set",
    "eval_batch_size=64",
    "--set",
    "stepsize=[1]",
    "-q",
]


def test_reid_eval_end_to_end(run_cli, tiny_root, tmp_path):
    out = tmp_path / "res" / "metrics.json"
    code, stdout, err = run_cli(
        "reid-eval", tiny_root, "--out", out, "--backbone", "osnet_x0_25", "--epochs", "1", "--batch-size", "8",
        "--height", "32", "--width", "16", "--seed", "3", "--set", "scheduler=none", "--set", "save_checkpoint=true",
        "--set", "checkpoint_every=1", *FAST,
    )  # fmt: skip
    assert code == 0, err
    assert "mAP" in stdout and "random initialisation" in stdout
    res = json.loads(out.read_text())
    for k in ("mAP", "rank1", "rank5", "rank10"):
        assert 0.0 <= res[k] <= 100.0
    assert res["rank1"] <= res["rank5"] <= res["rank10"]
    assert res["num_query"] == 4 and res["num_gallery"] == 18 and res["num_valid_queries"] == 4
    assert res["num_train_images"] == 24 and res["num_train_pids"] == 6
    assert res["pretrained"] is False and res["config"]["seed"] == 3 and len(res["history"]) == 1
    # paths inside the output folder are relative (it can move); the dataset outside it is absolute
    assert res["run_dir"] == "metrics.run" and res["root"] == str(tiny_root.resolve())
    run = out.with_name("metrics.run")
    log = (run / "log.txt").read_text()
    assert "weights: random initialisation" in log and "epoch 1/1" in log
    assert torch.load(run / "model.pth")["epoch"] == 1  # weights_only load, no crash without a scheduler
    assert torch.load(run / "last.pth")["epoch"] == 1

    # the output exists: refused without --overwrite; --resume continues from last.pth (nothing left to train)
    code, _, err = run_cli("reid-eval", tiny_root, "--out", out, "--epochs", "1")
    assert code == 2 and "exists" in err
    from reidaug.config import load_config
    from reidaug.reid.run import reid_eval

    cfg = load_config(ReidConfig, out.parent / res["run_dir"] / "config.yaml")
    with pytest.raises(ReidaugError, match="would contain the dataset"):
        reid_eval(tiny_root, cfg, tmp_path / "x.json", run_dir=tiny_root.parent, overwrite=True)
    with pytest.raises(ReidaugError, match=r"cannot resume .*: the configuration changed \(epochs\); --overwrite"):
        reid_eval(tiny_root, replace(cfg, epochs=2), tmp_path / "other.json", run_dir=run, show_progress=False)
    again = reid_eval(tiny_root, cfg, out, resume=True, show_progress=False)
    assert again["history"] == res["history"] and again["mAP"] == pytest.approx(res["mAP"])
    assert "resumed from" in (run / "log.txt").read_text()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "is not a folder"),
        ("empty-train", "empty folder"),
        ("only-junk", "no training images with an identity"),
        ("few-ids", "training identities, but a batch needs"),
        ("bad-loss", "loss must be one of"),
    ],
)
def test_reid_eval_bad_input(run_cli, tmp_path, case, message):
    root = tmp_path / "root"
    extra = []
    if case != "missing":
        make_root(root, train_pids=[1, 2], test_pids=[5], per=8 if case == "few-ids" else 2)
    if case == "empty-train":
        for p in (root / "bounding_box_train").iterdir():
            p.unlink()
    if case == "only-junk":
        for p in (root / "bounding_box_train").iterdir():
            p.rename(p.with_name("-1" + p.name[4:]))
    if case == "few-ids":
        extra = ["--loss", "circle", "--batch-size", "16"]
    if case == "bad-loss":
        extra = ["--loss", "arcface"]
    code, out, err = run_cli("reid-eval", root, "--out", tmp_path / "m.json", *extra, "-q")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("reidaug: error: ") and message in err
    assert not (tmp_path / "m.json").exists()
