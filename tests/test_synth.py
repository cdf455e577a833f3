"""`reidaug synth`: a complete, deterministic Market root whose keypoints are where the people are drawn."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from reidaug.config import load_config
from reidaug.data.images import encode_image, read_image
from reidaug.data.keypoints import read_annotations
from reidaug.data.market import SPLITS, parse_name
from reidaug.data.synth.config import SynthConfig, validate
from reidaug.data.synth.dataset import make_dataset, plan
from reidaug.data.synth.pose import DEFAULT_PRIOR, face_joints, load_prior
from reidaug.data.synth.render import Renderer
from reidaug.errors import ReidaugError

TINY = [
    "synth.train_ids=6", "synth.test_ids=5", "synth.images_per_id=[3,5]", "synth.test_images_per_id=[4,8]",
    "synth.cameras_per_id=[2,3]", "synth.distractors=4", "synth.junk=3",
]  # fmt: skip
TORCHREID = re.compile(r"([-\d]+)_c(\d)")  # torchreid's Market1501 name pattern


@cache
def tiny(*extra: str) -> SynthConfig:
    """A tiny configuration (cached: loading a config costs a third of a second; tests do not mutate it)."""
    return load_config(SynthConfig, "synth/default", [*TINY, *extra])


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "market"
    make_dataset(out, tiny(), show_progress=False)
    return out


def images(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / SPLITS[split]).iterdir())


# -- determinism ----------------------------------------------------------------------------------------


def test_same_seed_same_bytes_in_any_number_of_processes(root, tmp_path):
    again = tmp_path / "again"
    make_dataset(again, tiny("synth.workers=2", "synth.chunk=7"), show_progress=False)
    a, b = hashes(root), hashes(again)
    assert len(a) > 50
    assert a.keys() == b.keys()
    assert a == b


def test_different_seed_differs(root, tmp_path):
    other = tmp_path / "other"
    make_dataset(other, tiny("synth.seed=1"), show_progress=False)
    a, b = hashes(root), hashes(other)
    assert set(a.values()).isdisjoint(b.values())


def test_one_image_renders_alone_to_the_same_pixels(root):
    cfg = tiny()
    spec = plan(cfg)["gallery"][7]
    fresh = Renderer(cfg).render(spec)  # a new process-like renderer, nothing else rendered before
    ann = read_annotations(root / "annotations" / "test.csv")
    assert np.array_equal(fresh.keypoints, ann[spec.name])
    assert (root / "bounding_box_test" / spec.name).read_bytes() == encode_image(
        fresh.image, ".jpg", fresh.quality
    )


# -- structure and counts -------------------------------------------------------------------------------


def test_folders_names_and_counts(root):
    import json

    summary = json.loads((root / "synth.json").read_text())["summary"]
    assert sorted(p.name for p in root.iterdir()) == [
        "annotations",
        "bounding_box_test",
        "bounding_box_train",
        "identities.csv",
        "query",
        "synth.json",
    ]
    train, gallery, query = (images(root, s) for s in ("train", "gallery", "query"))
    assert (len(train), len(gallery), len(query)) == (
        summary["train_images"],
        summary["gallery_images"],
        summary["query_images"],
    )
    for name in train + gallery + query:
        n = parse_name(name)
        m = TORCHREID.search(name)
        pid, cam = int(m.group(1)), int(m.group(2))
        assert (pid, cam) == (n.pid, n.camid)
        assert (pid == -1 or 0 <= pid <= 1501) and 1 <= cam <= 6
    train_ids = {parse_name(n).pid for n in train}
    gallery_pids = Counter(parse_name(n).pid for n in gallery)
    test_ids = set(gallery_pids) - {0, -1}
    assert len(train_ids) == 6 and len(test_ids) == 5
    assert train_ids.isdisjoint(test_ids) and 0 not in train_ids and -1 not in train_ids
    assert gallery_pids[0] == 4 and gallery_pids[-1] == 3  # distractors and junk
    per_id = Counter(parse_name(n).pid for n in train)
    assert all(3 <= c <= 5 for c in per_id.values())


def test_one_query_per_test_identity_and_camera(root):
    query = [parse_name(n) for n in images(root, "query")]
    gallery = [parse_name(n) for n in images(root, "gallery")]
    pairs = Counter((q.pid, q.camid) for q in query)
    assert set(pairs.values()) == {1}
    assert all(q.bbox == 0 for q in query)
    seen = {(g.pid, g.camid) for g in gallery if g.pid > 0}
    assert set(pairs) == seen  # every camera a test identity is seen by has exactly one query
    for q in query:  # and a true match in another camera (cross-camera retrieval is possible)
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery)
    cams = Counter(q.pid for q in query)
    assert all(2 <= c <= 3 for c in cams.values())


def test_annotations_cover_each_folder_exactly(root):
    for split, fname in (("train", "train.csv"), ("gallery", "test.csv"), ("query", "query.csv")):
        ann = read_annotations(root / "annotations" / fname)
        assert ann.names == images(root, split)
        assert ann.coords.shape == (len(ann), 18, 2)
        ok = ann.present()
        assert ((ann.coords >= 0) == ok[..., None]).all()  # -1 comes in (y, x) pairs
        assert (ann.coords[..., 0] < 128).all() and (ann.coords[..., 1] < 64).all()
    people = read_annotations(root / "annotations" / "train.csv").present()
    assert people[:, [1, 2, 5, 8, 11]].all(1).mean() > 0.9  # torso joints: usable by the PATN pair rule


def test_overrides_change_counts(tmp_path):
    out = tmp_path / "d"
    s = make_dataset(out, tiny("synth.train_ids=3", "synth.test_ids=2", "synth.distractors=0", "synth.junk=0",
                               "synth.images_per_id=[2,2]"), show_progress=False)  # fmt: skip
    assert (s["train_ids"], s["test_ids"], s["distractors"], s["junk"], s["train_images"]) == (3, 2, 0, 0, 6)
    assert not any(n.startswith(("0000", "-1")) for n in images(out, "gallery"))


# -- keypoints are where the body is drawn --------------------------------------------------------------


def test_visible_joints_lie_on_the_drawn_person():
    cfg = tiny()
    r = Renderer(cfg)
    specs = [s for split in plan(cfg).values() for s in split]
    hits, total, far_equal = 0, 0, []
    for spec in specs:
        out = r.render(spec)
        plate = r.render(spec, person=False)
        assert plate.keypoints.max() == -1 and plate.alpha.max() == 0
        kp = out.keypoints[out.keypoints[:, 0] >= 0]
        assert (out.alpha[kp[:, 0], kp[:, 1]] > 0.5).all(), spec.name
        diff = np.abs(out.image.astype(int) - plate.image.astype(int)).max(-1)
        hits += int((diff[kp[:, 0], kp[:, 1]] > 0).sum())
        total += len(kp)
        # away from the person the image is the very same background plate
        import cv2

        near = cv2.dilate(out.touched.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        far_equal.append(np.array_equal(out.image[~near], plate.image[~near]))
    assert total > 500
    assert hits / total > 0.97
    assert np.mean(far_equal) > 0.8


def test_head_and_torso_where_the_keypoints_say():
    cfg = tiny()
    r = Renderer(cfg)
    for spec in plan(cfg)["train"]:
        out = r.render(spec)
        kp = out.keypoints
        ok = kp[:, 0] >= 0
        if ok[[2, 5, 8, 11]].all():  # the middle of the torso is covered
            c = np.rint(kp[[2, 5, 8, 11]].mean(0)).astype(int)
            assert out.alpha[c[0], c[1]] > 0.9
        if ok[[14, 15]].all():  # between the eyes: the face
            c = np.rint(kp[[14, 15]].mean(0)).astype(int)
            assert out.alpha[c[0], c[1]] > 0.9


def test_face_joints_follow_the_view():
    cfg = SynthConfig()
    head = np.array([20.0, 32.0])
    order = ("nose", "r_eye", "l_eye", "r_ear", "l_ear")
    vis = {
        yaw: dict(zip(order, face_joints(head, yaw, 36.0, cfg.body, cfg.pose)[1]))
        for yaw in (0, 180, 90, -90)
    }
    assert all(vis[0].values())  # front: all five
    assert vis[180] == {"nose": False, "r_eye": False, "l_eye": False, "r_ear": True, "l_ear": True}  # back
    assert (
        vis[90]["r_eye"] and vis[90]["r_ear"] and not vis[90]["l_eye"] and not vis[90]["l_ear"]
    )  # right side
    assert vis[-90]["l_eye"] and vis[-90]["l_ear"] and not vis[-90]["r_eye"] and not vis[-90]["r_ear"]
    pos = face_joints(head, 0, 36.0, cfg.body, cfg.pose)[0]
    assert pos[1, 1] < head[1] < pos[2, 1]  # the right eye is on the image's left in a front view


def test_out_of_frame_joints_are_missing():
    cfg = tiny("pose.truncate_prob=1.0", "pose.truncate_zoom=[1.6,1.6]")
    r = Renderer(cfg)
    kps = np.stack([r.render(s).keypoints for s in plan(cfg)["train"]])
    assert (kps[:, [10, 13], 0] == -1).mean() > 0.9  # zoomed in about the head: the ankles leave the crop
    assert (kps[:, 1, 0] >= 0).all()  # the neck stays


# -- identities -----------------------------------------------------------------------------------------


def test_attributes_overlap_but_combinations_differ():
    cfg = load_config(SynthConfig, "synth/default")
    r = Renderer(cfg)
    attrs = [r.identity(pid).attributes() for pid in range(1, 201)]
    for key in ("upper_color", "lower_color", "pattern", "lower"):
        counts = Counter(a[key] for a in attrs)
        assert sum(c == 1 for c in counts.values()) / len(attrs) < 0.05, key  # no colour is one person's
    combos = Counter(tuple(sorted(a.items())) for a in attrs)
    assert len(combos) / len(attrs) > 0.95
    assert Counter(a["pattern"] for a in attrs).keys() == {"solid", "stripes", "checks", "logo", "two_tone"}
    assert Counter(a["lower"] for a in attrs).keys() == {"trousers", "shorts", "skirt"}


# -- pose prior -----------------------------------------------------------------------------------------


def test_packaged_prior_is_compact_and_covers_every_view():
    prior = load_prior()
    assert DEFAULT_PRIOR.stat().st_size < 200_000
    assert 100 <= len(prior.poses) <= 1000
    assert set(np.unique(prior.view)) == {0, 1, 2, 3}
    # the mid-hip is the origin and the torso the unit: the neck sits one unit above it
    neck = prior.poses[:, 1]
    assert np.abs(np.linalg.norm(neck, axis=1) - 1).mean() < 0.05
    assert (neck[:, 0] < -0.8).all()
    assert 30 < prior.torso[0] < 45 and 55 < prior.midhip[0, 0] < 70


def test_prior_rebuilds_from_the_real_keypoints(market_keypoints, tmp_path):
    from reidaug.data.synth.build_prior import main

    out = tmp_path / "prior.npz"
    main(["--csv", str(market_keypoints / "market-annotation-train.csv"), "--out", str(out), "--k", "12"])
    prior = load_prior(str(out))
    assert len(prior.poses) <= 48 and set(np.unique(prior.view)) == {0, 1, 2, 3}
    assert prior.weight.sum() == 4 * 3540  # the 3,540 body-complete crops, four readings each
    shipped = load_prior()
    assert np.allclose(prior.torso, shipped.torso) and np.allclose(prior.midhip, shipped.midhip)


# -- errors and the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("synth.train_ids=-1", "synth.train_ids must be >= 0"),
        ("synth.images_per_id=[5,2]", "min <= max"),
        ("synth.cameras_per_id=[1,3]", "synth.cameras_per_id must be >= 2"),
        ("synth.train_ids=1500", "exceeds synth.pid_max"),
        ("cameras.c1.jpeg=[50,101]", "cameras.c1.jpeg must be <= 100"),
        ("cameras.c2.wall_pattern=marble", "cameras.c2.wall_pattern 'marble'"),
        ("appearance.patterns={plaid: 1.0}", "appearance.patterns"),
    ],
)
def test_bad_config_values(override, message):
    with pytest.raises(ReidaugError, match=re.escape(message)):
        validate(tiny(override))


def test_cli_writes_dataset_and_preview(run_cli, tmp_path):
    out, grid_png = tmp_path / "root", tmp_path / "grid.png"
    sets = [*TINY, "preview.ids=3", "preview.per_id=2", "preview.scale=1"]
    code, stdout, err = run_cli(
        "synth", "--out", out, "--preview", grid_png, "-q", *sum((["--set", s] for s in sets), [])
    )
    assert code == 0, err
    assert "11 identities" not in stdout and "6 identities" in stdout  # the summary table: train ids
    assert len(images(out, "train")) > 0 and len(images(out, "query")) > 0
    # 3 identities + a row of distractors/junk; each image shown plain and with its skeleton
    assert read_image(grid_png).shape == (4 * (128 + 2) + 2, 2 * 2 * (64 + 2) + 2, 3)


def test_cli_preview_alone_writes_only_the_grid(run_cli, tmp_path):
    grid_png = tmp_path / "grid.png"
    code, _, err = run_cli(
        "synth", "--preview", grid_png, "--set", "preview.ids=2", "--set", "preview.per_id=3"
    )
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]
    assert read_image(grid_png).shape == (2 * (3 * 130 + 2), 2 * (6 * 66 + 2), 3)


def test_cli_refuses_a_non_empty_output_and_leaves_it_alone(run_cli, tmp_path):
    out = tmp_path / "root"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli("synth", "--out", out, "--set", "synth.train_ids=2")
    assert code == 2
    assert err.strip().splitlines() == [
        f"reidaug: error: output folder {out} exists and is not empty (pass --overwrite to replace it)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"] and (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "synth.test_ids=-3"], "synth.test_ids must be >= 0"),
        (["--set", "synth.nope=1"], "bad configuration"),
        (["--seed", "-1"], "synth.seed must be a non-negative integer"),
        (["--preview", "grid.gif"], "give a .png or .jpg file name"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, message):
    out = tmp_path / "root"
    code, _, err = run_cli("synth", "--out", out, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reidaug: error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_without_out_or_preview(run_cli):
    code, _, err = run_cli("synth")
    assert code == 2 and "--out" in err and "--preview" in err


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    from reidaug.data.synth import render

    calls = {"n": 0}
    original = render.Renderer.render

    def failing(self, spec, person=True):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("disk on fire")
        return original(self, spec, person)

    monkeypatch.setattr(render.Renderer, "render", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        make_dataset(tmp_path / "root", tiny(), show_progress=False)
    assert list(tmp_path.iterdir()) == []
