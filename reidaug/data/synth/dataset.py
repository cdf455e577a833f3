"""`make_dataset(out, cfg)`: a complete synthetic Market-1501 root, written atomically.

Layout (Market-1501 plus the exact keypoints):

    ROOT/bounding_box_train/PPPP_cCsS_FFFFFF_BB.jpg   train identities
    ROOT/bounding_box_test/...                        gallery: test identities, distractors 0000_*, junk -1_*
    ROOT/query/PPPP_cCsS_FFFFFF_00.jpg                one image per (test identity, camera); bbox 00
    ROOT/annotations/train.csv | test.csv | query.csv  keypoints of the three folders, one row per image
    ROOT/identities.csv                               every identity's attributes (pid, split, clothes, ...)
    ROOT/synth.json                                    configuration, seed and counts

test.csv covers bounding_box_test exactly, as the published market-annotation-test.csv does; query
keypoints are in query.csv. Train and test identities are disjoint pids drawn from 1..pid_max; every
identity is seen by 2+ cameras as one track per camera (sequence, start frame, frame step, walking view).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from reidaug.data.images import encode_image
from reidaug.data.keypoints import Annotations, write_annotations
from reidaug.data.market import DISTRACTOR_PID, JUNK_PID, SPLITS, format_name
from reidaug.utils.io import atomic_write_text, staged_dir

from .config import VIEWS, SynthConfig, validate
from .render import ImageSpec, Renderer

ANNOTATION_FILES = {"train": "train.csv", "gallery": "test.csv", "query": "query.csv"}
QUERY_BBOX = 0  # Market's query boxes were drawn by hand: bbox 00
BBOXES = (1, 9)  # detector box index range of the other images
MAX_FRAME = 999_999
PLAN_STREAM = 10
EXECUTION_ONLY = ("workers", "chunk")


def plan(cfg: SynthConfig) -> dict[str, list[ImageSpec]]:
    """Every image of the dataset as a spec, per split, sorted by name (the index is the position)."""
    d = cfg.synth
    rng = np.random.default_rng([d.seed, PLAN_STREAM])
    vp = np.array([cfg.pose.view_probs.get(v, 0.0) for v in VIEWS], dtype=np.float64)
    vp /= vp.sum()
    pids = rng.choice(np.arange(1, d.pid_max + 1), d.train_ids + d.test_ids, replace=False)
    train_pids, test_pids = sorted(pids[: d.train_ids].tolist()), sorted(pids[d.train_ids :].tolist())
    rows: dict[str, list[tuple]] = {s: [] for s in SPLITS}

    def tracks(pid: int, n: int, per_cam_min: int):
        k = int(rng.integers(d.cameras_per_id[0], d.cameras_per_id[1] + 1))
        k = max(min(k, n // per_cam_min), 1)
        cams = sorted((rng.choice(d.num_cameras, k, replace=False) + 1).tolist())
        counts = np.full(k, per_cam_min)
        counts += np.bincount(rng.integers(0, k, n - per_cam_min * k), minlength=k)
        for cam, m in zip(cams, counts.tolist()):
            seq = int(rng.integers(1, d.sequences + 1))
            step = int(rng.integers(d.frame_step[0], d.frame_step[1] + 1))
            start = int(rng.integers(0, MAX_FRAME - step * m))
            view = int(rng.choice(len(VIEWS), p=vp))
            bboxes = rng.integers(BBOXES[0], BBOXES[1] + 1, m).tolist()
            yield cam, seq, [start + i * step for i in range(m)], bboxes, view

    for pid in train_pids:
        n = int(rng.integers(d.images_per_id[0], d.images_per_id[1] + 1))
        for cam, seq, frames, bboxes, view in tracks(pid, n, 1):
            for f, b in zip(frames, bboxes):
                rows["train"].append((format_name(pid, cam, seq, f, b, d.ext), pid, cam, "person", pid, view))
    for pid in test_pids:
        n = int(rng.integers(d.test_images_per_id[0], d.test_images_per_id[1] + 1))
        for cam, seq, frames, bboxes, view in tracks(pid, n, 2):
            q = int(rng.integers(len(frames)))
            for i, (f, b) in enumerate(zip(frames, bboxes)):
                split, bbox = ("query", QUERY_BBOX) if i == q else ("gallery", b)
                rows[split].append(
                    (format_name(pid, cam, seq, f, bbox, d.ext), pid, cam, "person", pid, view)
                )
    for pid, kind, count in ((DISTRACTOR_PID, "distractor", d.distractors), (JUNK_PID, "junk", d.junk)):
        if count == 0:
            continue
        frames = rng.choice(MAX_FRAME + 1, count, replace=False).tolist()
        for i, f in enumerate(frames):
            cam = int(rng.integers(1, d.num_cameras + 1))
            seq = int(rng.integers(1, d.sequences + 1))
            b = int(rng.integers(BBOXES[0], BBOXES[1] + 1))
            if kind == "junk" and test_pids:  # a bad detection of a test identity
                who = int(test_pids[rng.integers(len(test_pids))])
            else:  # someone outside the dataset
                who = -1 - i - (d.distractors if kind == "junk" else 0)
            view = int(rng.choice(len(VIEWS), p=vp))
            rows["gallery"].append((format_name(pid, cam, seq, f, b, d.ext), pid, cam, kind, who, view))
    out = {}
    for split, rs in rows.items():
        rs.sort(key=lambda r: r[0])
        out[split] = [ImageSpec(split, i, *r) for i, r in enumerate(rs)]
    return out


# -- rendering, in this process or in a pool ------------------------------------------------------------

_RENDERER: Renderer | None = None


def _init(cfg: SynthConfig) -> None:
    global _RENDERER
    _RENDERER = Renderer(cfg)


def _render_chunk(args: tuple[str, list[ImageSpec]]) -> list[tuple[str, int, list[int]]]:
    root, specs = args
    r = _RENDERER
    ext = "." + r.cfg.synth.ext
    out = []
    for spec in specs:
        img = r.render(spec)
        data = encode_image(img.image, ext, img.quality)
        (Path(root) / SPLITS[spec.split] / spec.name).write_bytes(data)
        out.append((spec.split, spec.index, img.keypoints.reshape(-1).tolist()))
    return out


def _chunks(specs: list[ImageSpec], root: Path, size: int) -> Iterator[tuple[str, list[ImageSpec]]]:
    for i in range(0, len(specs), size):
        yield str(root), specs[i : i + size]


def make_dataset(
    out: str | Path,
    cfg: SynthConfig,
    overwrite: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Write the dataset of `cfg` to `out` (built in a hidden sibling folder and moved into place);
    returns the summary also written to ROOT/synth.json."""
    from reidaug.utils.progress import progress

    validate(cfg)
    d = cfg.synth
    workers = d.workers if workers is None else workers
    specs = plan(cfg)
    everything = [s for split in ("train", "gallery", "query") for s in specs[split]]
    with staged_dir(out, overwrite) as tmp:
        for folder in (*SPLITS.values(), "annotations"):
            (tmp / folder).mkdir()
        kps = {split: np.full((len(specs[split]), 18, 2), -1, np.int64) for split in specs}
        with progress(disable=not show_progress) as bar:
            task = bar.add_task("synth", total=len(everything), info=str(out), unit="img")
            jobs = _chunks(everything, tmp, d.chunk)
            if workers > 1:
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                with ctx.Pool(workers, initializer=_init, initargs=(cfg,)) as pool:
                    for res in pool.imap(_render_chunk, jobs):
                        _collect(res, kps)
                        bar.advance(task, len(res))
            else:
                _init(cfg)
                for job in jobs:
                    res = _render_chunk(job)
                    _collect(res, kps)
                    bar.advance(task, len(res))
        for split, fname in ANNOTATION_FILES.items():
            write_annotations(
                tmp / "annotations" / fname, Annotations([s.name for s in specs[split]], kps[split])
            )
        summary = _summary(cfg, specs, kps)
        _write_identities(tmp / "identities.csv", cfg, specs)
        conf = asdict(cfg)  # (plain dataclasses: much faster than an OmegaConf round trip)
        for k in EXECUTION_ONLY:  # how it ran, not what it made: the bytes must not depend on it
            conf["synth"].pop(k)
        atomic_write_text(tmp / "synth.json", json.dumps({"summary": summary, "config": conf}, indent=1))
    return summary


def _collect(res, kps) -> None:
    for split, index, flat in res:
        kps[split][index] = np.asarray(flat).reshape(18, 2)


def _summary(cfg: SynthConfig, specs: dict[str, list[ImageSpec]], kps) -> dict:
    def ids(split):
        return len({s.pid for s in specs[split] if s.kind == "person"})

    gallery = specs["gallery"]
    return {
        "seed": cfg.synth.seed,
        "train_images": len(specs["train"]), "train_ids": ids("train"),
        "gallery_images": len(gallery), "test_ids": ids("gallery"),
        "query_images": len(specs["query"]),
        "distractors": sum(s.kind == "distractor" for s in gallery), "junk": sum(s.kind == "junk" for s in gallery),
        "cameras": cfg.synth.num_cameras,
        "keypoints_per_image": {split: round(float((kps[split][..., 0] >= 0).sum(1).mean()), 2) if len(kps[split]) else 0.0
                                for split in specs},
    }  # fmt: skip


def _write_identities(path: Path, cfg: SynthConfig, specs: dict[str, list[ImageSpec]]) -> None:
    r = _RENDERER if _RENDERER is not None and _RENDERER.cfg is cfg else Renderer(cfg)
    split_of = {}
    for split in ("train", "gallery"):
        for s in specs[split]:
            if s.kind == "person":
                split_of[s.pid] = "train" if split == "train" else "test"
    lines = ["pid,split,skin,hair,upper,upper2,pattern,sleeves,lower,lower_type,shoes,hat,backpack,bag"]

    def rgb(c):
        return "none" if c is None else "#{:02x}{:02x}{:02x}".format(*tuple(int(round(v)) for v in c))

    for pid in sorted(split_of):
        w = r.identity(pid)
        lines.append(",".join([
            f"{pid:04d}", split_of[pid], rgb(w.skin), f"{w.hair_style}/{rgb(w.hair)}", rgb(w.upper), rgb(w.upper2),
            w.pattern, w.sleeves, rgb(w.lower), w.lower_type, rgb(w.shoes), rgb(w.hat), rgb(w.backpack),
            rgb(w.bag) if w.bag is None else f"{w.bag_side}/{rgb(w.bag)}",
        ]))  # fmt: skip
    atomic_write_text(path, "\n".join(lines) + "\n")
