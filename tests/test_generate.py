"""Batch generation: Market names torchreid parses, the manifest, resuming after an interruption without
rewriting finished images, the reusable job API, and one-line errors before anything is written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_market import TINY_PATN, make_root

from reidaug.data.images import read_image
from reidaug.data.keypoints import read_annotations, write_annotations
from reidaug.data.market import parse_name
from reidaug.data.pairs import make_pairs, write_pairs
from reidaug.errors import ReidaugError
from reidaug.generate import GenerateConfig, generate, generate_images, generated_name
from reidaug.models.checkpoint import load_generator
from reidaug.train.config import load_method_config
from reidaug.train.trainer import train
from reidaug.utils.io import file_sha256

TORCHREID_MARKET = re.compile(r"([-\d]+)_c(\d)")  # torchreid Market1501.process_dir, searched in the full path



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny root, a 1-iteration PATN checkpoint and a pairs file of 7 pairs."""
    base = tmp_path_factory.mktemp("gen")
    root = make_root(base / "market")
    cfg = load_method_config("patn", None, [*TINY_PATN, "train.iterations=1"])
    ckpt = train(cfg, root, base / "run", device="cpu", show_progress=False).checkpoint
    pairs = make_pairs(read_annotations(root / "annotations" / "train.csv")).iloc[::2].head(7)
    write_pairs(base / "pairs.csv", pairs)
    return root, ckpt, base / "pairs.csv", pairs.reset_index(drop=True)


CFG = GenerateConfig(batch_size=3, num_workers=0, writer_threads=2)


def test_names_images_and_manifest(setup, tmp_path):
    root, ckpt, pairs_csv, pairs = setup
    out = tmp_path / "out"
    r = generate(ckpt, pairs_csv, root, out, cfg=CFG, show_progress=False)
    assert (r.written, r.skipped) == (7, 0)
    jpgs = sorted(p.name for p in out.glob("*.jpg"))
    assert jpgs == sorted(generated_name(s, i) for i, s in enumerate(pairs["from"]))
    for i, src in enumerate(pairs["from"]):
        name = generated_name(src, i)
        gen, s = parse_name(name), parse_name(src)
        assert (gen.pid, gen.camid, gen.sequence, gen.frame, gen.bbox) == (s.pid, s.camid, 0, i, 0)
        pid, cam = map(int, TORCHREID_MARKET.search(str(out / name)).groups())
        assert (pid, cam) == (s.pid, s.camid) and 0 <= pid <= 1501 and 1 <= cam <= 6
        assert read_image(out / name).shape == (128, 64, 3)
    assert not set(jpgs) & set(p.name for p in (root / "bounding_box_train").iterdir())  # s0: never a real name
    m = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(m.columns) == ["name", "pid", "camid", "source", "target_pose_from", "method", "checkpoint_sha256",
                               "seed"]  # fmt: skip
    assert list(m["name"]) == [generated_name(s, i) for i, s in enumerate(pairs["from"])]
    assert list(m["source"]) == list(pairs["from"]) and list(m["target_pose_from"]) == list(pairs["to"])
    assert set(m["checkpoint_sha256"]) == {file_sha256(ckpt)} and set(m["method"]) == {"patn"}
    assert list(m["pid"].astype(int)) == [parse_name(s).pid for s in pairs["from"]]


def test_interrupted_run_finishes_and_is_idempotent(setup, tmp_path):
    root, ckpt, pairs_csv, _ = setup
    out = tmp_path / "out"

    class Killed(Exception):
        pass

    def kill_after_first(k):
        if k == 0:
            raise Killed

    with pytest.raises(Killed):
        generate(ckpt, pairs_csv, root, out, cfg=CFG, show_progress=False, on_batch=kill_after_first)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jpg")}
    assert len(first) == 3 and not (out / "manifest.csv").exists()
    (out / ".0001_c1s0_000009_00.jpg.abc123.tmp").write_bytes(b"\xff\xd8 truncated")  # a killed writer's leftover

    r = generate(ckpt, pairs_csv, root, out, cfg=CFG, show_progress=False)
    assert (r.written, r.skipped) == (4, 3)
    assert not list(out.glob(".*.tmp"))
    assert {n: (out / n).stat().st_mtime_ns for n in first} == first  # finished images were not rewritten
    manifest = (out / "manifest.csv").read_bytes()
    assert len(pd.read_csv(out / "manifest.csv")) == 7

    r = generate(ckpt, pairs_csv, root, out, cfg=CFG, show_progress=False)
    assert (r.written, r.skipped) == (0, 7)
    assert (out / "manifest.csv").read_bytes() == manifest
    assert len(list(out.glob("*.jpg"))) == 7


def test_job_api_any_target_pose_and_manifest_merge(setup, tmp_path):
    """The augment step's entry point: a target pose from any annotated image, names chosen by the caller."""
    root, ckpt, _, _ = setup
    method, _ = load_generator(ckpt)
    ann = read_annotations(root / "annotations" / "train.csv")
    jobs = pd.DataFrame({
        "out_name": [generated_name("0001_c1s1_000100_01.jpg", 0, sequence=9), generated_name("0002_c1s1_000200_01.jpg", 1, sequence=9)],
        "source": ["0001_c1s1_000100_01.jpg", "0002_c1s1_000200_01.jpg"],
        "target_pose_from": ["0003_c2s1_000301_01.jpg", "0001_c3s1_000102_01.jpg"],  # other identities' poses
    })  # fmt: skip
    out = tmp_path / "aug"
    extra = {"method": "patn", "checkpoint_sha256": "x" * 64, "seed": 0}
    r = generate_images(method, jobs, root, ann, out, CFG, manifest_extra=extra, show_progress=False)
    assert r.written == 2 and (out / "0001_c1s9_000000_00.jpg").is_file()
    more = jobs.assign(out_name=["0001_c1s9_000002_00.jpg", "0002_c1s9_000003_00.jpg"])
    generate_images(method, more, root, ann, out, CFG, manifest_extra=extra, show_progress=False)
    m = pd.read_csv(out / "manifest.csv", dtype=str)
    assert len(m) == 4 and m["name"].is_unique  # earlier rows kept, deduplicated by name
    with pytest.raises(ReidaugError, match="another checkpoint_sha256"):
        generate_images(method, more, root, ann, out, CFG, manifest_extra={**extra, "checkpoint_sha256": "y" * 64},
                        show_progress=False)  # fmt: skip
    with pytest.raises(ReidaugError, match="used twice"):
        generate_images(method, pd.concat([jobs, jobs]), root, ann, tmp_path / "dup", CFG, show_progress=False)


def _one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reidaug: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_errors_before_any_output(setup, tmp_path, run_cli):
    root, ckpt, pairs_csv, pairs = setup
    base = ("generate", "--checkpoint", ckpt, "--data", root, "--device", "cpu", "--no-progress")
    out = tmp_path / "out"

    code, _, err = run_cli(*base, "--pairs", pairs_csv, "--out", out, "--method", "apatn")
    assert code == 2
    _one_line(err, "trained with method patn, not apatn")

    missing = tmp_path / "missing.csv"
    missing.write_text(f"from,to\n{pairs['from'][0]},0042_c1s1_000001_01.jpg\n")
    code, _, err = run_cli(*base, "--pairs", missing, "--out", out)
    assert code == 2
    _one_line(err, "not in the Market root", "0042_c1s1_000001_01.jpg")

    ann = read_annotations(root / "annotations" / "train.csv")
    target = pairs["to"][0]
    keep = [n for n in ann.names if n != target]
    write_annotations(tmp_path / "ann.csv", ann.subset(keep))
    code, _, err = run_cli(*base, "--pairs", pairs_csv, "--out", out, "--annotations", tmp_path / "ann.csv")
    assert code == 2
    _one_line(err, "no keypoints", target)

    code, _, err = run_cli(*base, "--pairs", pairs_csv, "--out", out, "--set", "batch_size=two")
    assert code == 2
    _one_line(err, "bad configuration")
    assert not out.exists()  # nothing written by any of the failures

    code, _, err = run_cli(*base, "--pairs", pairs_csv, "--out", out, "--batch-size", "4", "--set", "num_workers=1")
    assert code == 0, err
    assert len(list(out.glob("*.jpg"))) == len(pairs)


def test_generation_is_deterministic_across_batch_sizes(setup, tmp_path):
    """Eval mode: a sample's output depends on its inputs only (BN running statistics, no dropout)."""
    root, ckpt, _, pairs = setup
    generator, _ = load_generator(ckpt)
    from torch.utils.data import default_collate

    from reidaug.data.samples import SampleDataset, image_index, to_device

    ann = read_annotations(root / "annotations" / "train.csv")
    ds = SampleDataset(pairs["from"], pairs["to"], image_index(root), ann)
    batch = to_device(default_collate([ds[i] for i in range(4)]), torch.device("cpu"))
    with torch.no_grad():
        whole = generator(batch)["image"]
        one = generator({k: v[:1] for k, v in batch.items()})["image"]
        other_pose = generator({**batch, "tgt_kp": batch["tgt_kp"].roll(1, 0)})["image"]
    assert torch.allclose(whole[:1], one, atol=1e-5)
    assert np.isfinite(whole.numpy()).all()
    assert not torch.equal(whole, other_pose)  # the target pose matters


def test_copy_is_a_different_folder(setup, tmp_path):
    """A finished folder copied elsewhere is complete there too (names and manifest are relative)."""
    root, ckpt, pairs_csv, _ = setup
    out = tmp_path / "a"
    generate(ckpt, pairs_csv, root, out, cfg=CFG, show_progress=False)
    shutil.copytree(out, tmp_path / "b")
    r = generate(ckpt, pairs_csv, root, tmp_path / "b", cfg=CFG, show_progress=False)
    assert r.written == 0 and r.skipped == 7
    assert Path(tmp_path / "b" / "manifest.csv").read_bytes() == Path(out / "manifest.csv").read_bytes()


def test_resize_batch_moves_keypoints_to_the_pixel_of_their_centre():
    from reidaug.data.samples import resize_batch

    kp = torch.tensor([[[0, 0], [127, 63], [5, 10], [-1, -1], [-1, 7]]])
    img = torch.full((1, 3, 128, 64), 0.25)
    out = resize_batch({"tgt_img": img, "tgt_kp": kp, "index": torch.tensor([3])}, (64, 32))
    assert out["tgt_img"].shape == (1, 3, 64, 32) and torch.allclose(out["tgt_img"], torch.tensor(0.25))
    want = [[0, 0], [63, 31], [2, 5], [-1, -1], [-1, -1]]  # floor((v + 0.5) * 0.5); a half-missing joint is missing
    assert out["tgt_kp"].tolist() == [want] and out["index"].tolist() == [3]
    same = {"tgt_img": img, "tgt_kp": kp}
    assert resize_batch(same, (128, 64)) is same


def test_a_generator_trained_at_a_smaller_size_generates_the_datas_size(setup, tmp_path, monkeypatch):
    """image_size [64, 32]: the generator sees 64x32 batches in training and generation; the sample grid and the
    written images are 128x64 under the usual names; the checkpoint carries the size."""
    from reidaug.models.patn import PATNGenerator

    root, _, pairs_csv, pairs = setup
    seen = []
    forward = PATNGenerator.forward
    monkeypatch.setattr(PATNGenerator, "forward", lambda self, b: seen.append(tuple(b["src_img"].shape[-2:])) or forward(self, b))
    cfg = load_method_config("patn", None, [*TINY_PATN, "train.iterations=2", "image_size=[64,32]",
                                            "model.heatmap_sigma=3"])  # fmt: skip
    run = train(cfg, root, tmp_path / "run", device="cpu", show_progress=False)
    assert set(seen) == {(64, 32)} and len(seen) >= 3  # two steps and the final sample grid
    assert read_image(next((tmp_path / "run" / "samples").glob("*.png"))).shape[0] == 2 * (128 + 2) + 2  # 2 rows
    gen, ckpt = load_generator(run.checkpoint)
    assert gen.image_size == (64, 32) and ckpt["config"]["image_size"] == [64, 32]
    seen.clear()
    r = generate(run.checkpoint, pairs_csv, root, tmp_path / "out", cfg=CFG, show_progress=False)
    assert r.written == 7 and set(seen) == {(64, 32)}
    for i, src in enumerate(pairs["from"]):
        assert read_image(tmp_path / "out" / generated_name(src, i)).shape == (128, 64, 3)


def test_image_size_is_checked(run_cli, setup, tmp_path):
    root = setup[0]
    code, _, err = run_cli("train", "--method", "patn", "--data", root, "--out", tmp_path / "r",
                           *[a for s in (*TINY_PATN, "image_size=[8,4]") for a in ("--set", s)])  # fmt: skip
    assert code == 2 and err.strip() == "reidaug: error: image_size must be [H, W] with both at least 16, got [8, 4]"
    assert not (tmp_path / "r").exists()
