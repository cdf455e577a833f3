"""`reidaug metrics`: the image-quality metrics of the pose-guided generation papers over a generation output
(architecture notes 11; what each number means and how it differs from the reference scripts: docs/metrics.md).

The generation folder's manifest.csv says which real image each generated image should match (its
`target_pose_from`, the `to` image of a pair). Over every matched pair:
  ssim       SSIM as the reference scripts (data range = max - min of the generated image), `ssim_255` with 255
  mask_ssim  the same on both images masked by the target keypoints' body mask (reidaug.metrics.masks)
  l1         mean |generated - target| of images in [-1, 1] (the scripts' log line)
  is, mask_is     Inception Score (torchmetrics, torch-fidelity's Inception, logits without bias, 10 splits)
  fid, kid   against the real images of `fid_real` (train: the root's training folder, as GFLA; targets)
  lpips      LPIPS v0.1 (AlexNet) between generated and target
  pckh       keypoints of the generated images from a `reidaug poses` backend against the target keypoints
Network metrics need their weights (reidaug.metrics.networks); without them they are skipped with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reidaug.config import check_choice
from reidaug.errors import ReidaugError, offenders
from reidaug.utils.io import read_table

ALL = ("ssim", "ssim_255", "mask_ssim", "l1", "is", "mask_is", "fid", "kid", "lpips", "pckh")
FID_REAL = ("train", "targets")


@dataclass
class MetricsConfig:
    metrics: list[str] = field(default_factory=lambda: list(ALL))
    batch_size: int = 50
    is_splits: int = 10  # consecutive splits of the Inception Score (the reference: 10)
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the number of images
    fid_real: str = "train"  # train: ROOT/bounding_box_train (GFLA's Market protocol) | targets: the matched reals
    pose_backend: str = "mediapipe"  # for PCKh (a reidaug poses backend)
    weights: dict[str, str] = field(default_factory=dict)  # inception=PATH, lpips=PATH
    allow_random_weights: bool = False  # compute network metrics on seeded random weights (marked in the output)
    device: str = "auto"


def check_config(cfg: MetricsConfig) -> None:
    from reidaug.metrics.networks import WEIGHT_NAMES

    bad = [m for m in cfg.metrics if m not in ALL]
    if bad:
        raise ReidaugError(f"unknown metrics {bad}; choose from {', '.join(ALL)}")
    if cfg.fid_real not in FID_REAL:
        raise ReidaugError(f"fid_real must be one of {', '.join(FID_REAL)}, got {cfg.fid_real!r}")
    unknown = sorted(set(cfg.weights) - set(WEIGHT_NAMES))
    if unknown:
        raise ReidaugError(f"--weights names {unknown} unknown; choose from {', '.join(WEIGHT_NAMES)}")
    if cfg.batch_size < 1 or cfg.is_splits < 1:
        raise ReidaugError("batch_size and is_splits must be at least 1")
    if "pckh" in cfg.metrics:
        from reidaug.pose.base import backend_names

        check_choice("pose_backend", cfg.pose_backend, backend_names())


def matched_pairs(generated: Path, paths: dict[str, str], pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Manifest rows (name, source, target_pose_from) whose generated and target images exist; with `pairs`,
    exactly the rows of those (from, to) pairs, each of which must have been generated."""
    manifest = generated / "manifest.csv"
    if not manifest.is_file():
        raise ReidaugError(f"{generated} has no manifest.csv (a reidaug generate or augment output)")
    m = read_table(manifest, ("name", "source", "target_pose_from"))
    missing = [n for n in m["name"] if not (generated / n).is_file()]
    if missing:
        raise ReidaugError(f"{len(missing)} images of {manifest} are missing: {offenders(missing)}")
    if pairs is not None:
        from reidaug.data.pairs import source_names

        want = pd.DataFrame({"source": source_names(pairs, 1)[:, 0], "target_pose_from": pairs["to"].to_numpy()})
        m = want.merge(m.drop_duplicates(["source", "target_pose_from"]), how="left", on=["source", "target_pose_from"])
        absent = m["name"].isna()
        if absent.any():
            rows = [f"{s} -> {t}" for s, t in m.loc[absent, ["source", "target_pose_from"]].to_numpy()]
            raise ReidaugError(f"{int(absent.sum())} of the {len(m)} pairs were not generated: {offenders(rows)}")
    unknown = sorted(set(m["target_pose_from"]) - set(paths))
    if unknown:
        raise ReidaugError(f"{len(unknown)} target images are not in the Market root: {offenders(unknown)}")
    if m.empty:
        raise ReidaugError(f"{manifest} lists no image")
    return m.reset_index(drop=True)


def _read(paths) -> np.ndarray:
    from reidaug.data.images import read_image

    return np.stack([read_image(p) for p in paths])


def _nchw(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)


def compute_metrics(generated: str | Path, data_root: str | Path, *, pairs=None, annotations=None,
                    cfg: MetricsConfig | None = None, show_progress: bool = True) -> dict:  # fmt: skip
    """All configured metrics of a generation folder against the real images of `data_root` (a dict, see the
    module doc; `skipped` says why a metric was not computed, `settings` how the rest were)."""
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.pairs import read_pairs
    from reidaug.data.samples import image_index, merge_annotations
    from reidaug.generate import default_annotation_files
    from reidaug.metrics import networks
    from reidaug.metrics.masks import apply_mask, pose_mask
    from reidaug.metrics.ssim import ssim
    from reidaug.utils.progress import progress
    from reidaug.utils.runtime import package_versions, resolve_device

    cfg = cfg or MetricsConfig()
    check_config(cfg)
    generated = Path(generated)
    if not generated.is_dir():
        raise ReidaugError(f"generated folder {generated} is not a folder")
    paths = image_index(data_root)
    table = pairs if pairs is None or isinstance(pairs, pd.DataFrame) else read_pairs(pairs)
    rows = matched_pairs(generated, paths, table)
    files = annotations if annotations else default_annotation_files(data_root)
    files = [files] if isinstance(files, str | Path) else list(files)
    ann = merge_annotations([read_annotations(f) for f in files])
    no_kp = sorted(set(rows["target_pose_from"]) - set(ann.names))
    if no_kp:
        raise ReidaugError(f"{len(no_kp)} target images have no keypoints: {offenders(no_kp)}")
    want = set(cfg.metrics)
    dev = resolve_device(cfg.device)
    skipped: dict[str, str] = {}
    sources: dict[str, str] = {}
    random_nets: list[str] = []

    def network(names: tuple[str, ...], build) -> torch.nn.Module | None:
        if not want & set(names):
            return None
        net = build()
        if net.module is None:
            skipped.update({n: net.source for n in names if n in want})
            return None
        sources["/".join(n for n in names if n in want)] = net.source
        if net.random:
            random_nets.extend(n for n in names if n in want)
        return net.module.to(dev)

    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    pool = network(("fid", "kid"), lambda: networks.inception("2048", cfg.weights, cfg.allow_random_weights))
    logits = network(("is", "mask_is"), lambda: networks.inception("logits_unbiased", cfg.weights,
                                                                   cfg.allow_random_weights))  # fmt: skip
    lpips = network(("lpips",), lambda: networks.lpips_network(cfg.weights, cfg.allow_random_weights))
    n = len(rows)
    train = sorted(p for p in paths.values() if Path(p).parent.name == "bounding_box_train")
    n_real = len(train) if cfg.fid_real == "train" else n
    fid = FrechetInceptionDistance(feature=pool).to(dev) if pool is not None and "fid" in want else None
    kid = (KernelInceptionDistance(feature=pool, subsets=cfg.kid_subsets, subset_size=min(cfg.kid_subset_size, n, n_real))
           .to(dev) if pool is not None and "kid" in want else None)  # fmt: skip
    isc = InceptionScore(feature=logits, splits=cfg.is_splits).to(dev) if logits is not None and "is" in want else None
    misc = (InceptionScore(feature=logits, splits=cfg.is_splits).to(dev)
            if logits is not None and "mask_is" in want else None)  # fmt: skip
    backend = None
    if "pckh" in want:
        from reidaug.pose.base import PoseConfig, build_backend

        try:
            backend = build_backend(PoseConfig(backend=cfg.pose_backend, device=cfg.device))
            sources["pckh"] = f"reidaug poses backend {cfg.pose_backend}"
        except ReidaugError as e:
            skipped["pckh"] = f"pose backend {cfg.pose_backend} unavailable: {e}"

    values: dict[str, list[float]] = {k: [] for k in ("ssim", "ssim_255", "mask_ssim", "l1", "lpips")}
    predicted = []
    with torch.no_grad(), progress(disable=not show_progress) as bar:
        task = bar.add_task("metrics", total=n, info="", unit="img")
        for start in range(0, n, cfg.batch_size):
            chunk = rows.iloc[start : start + cfg.batch_size]
            gen = _read([generated / x for x in chunk["name"]])
            real = _read([paths[x] for x in chunk["target_pose_from"]])
            if gen.shape[1:] != real.shape[1:]:
                raise ReidaugError(f"generated images are {gen.shape[1]}x{gen.shape[2]}, targets {real.shape[1]}x"
                                   f"{real.shape[2]}")  # fmt: skip
            masks = np.stack([pose_mask(ann[t], gen.shape[1:3]) for t in chunk["target_pose_from"]])
            for g, r, mk in zip(gen, real, masks):
                if "ssim" in want:
                    values["ssim"].append(ssim(g, r))
                if "ssim_255" in want:
                    values["ssim_255"].append(ssim(g, r, "255"))
                if "mask_ssim" in want:
                    values["mask_ssim"].append(ssim(apply_mask(g, mk), apply_mask(r, mk)))
            if "l1" in want:
                values["l1"].extend(np.abs(gen / 127.5 - real / 127.5).mean(axis=(1, 2, 3)).tolist())
            g_t, r_t = _nchw(gen, dev), _nchw(real, dev)
            for metric in (fid, kid):
                if metric is not None:
                    metric.update(g_t, real=False)
                    if cfg.fid_real == "targets":
                        metric.update(r_t, real=True)
            if isc is not None:
                isc.update(g_t)
            if misc is not None:
                misc.update(_nchw(gen * masks[..., None].astype(np.uint8), dev))
            if lpips is not None:
                d = lpips(g_t.float() / 127.5 - 1, r_t.float() / 127.5 - 1)
                values["lpips"].extend(d.flatten().float().cpu().tolist())
            if backend is not None:
                out = backend.predict(list(gen), list(chunk["name"]))
                predicted.extend(np.full((18, 2), -1, np.int32) if isinstance(o, str) else o for o in out)
            bar.advance(task, len(chunk))
        if cfg.fid_real == "train" and (fid is not None or kid is not None):
            real_task = bar.add_task("real images", total=len(train), info="", unit="img")
            for start in range(0, len(train), cfg.batch_size):
                r_t = _nchw(_read(train[start : start + cfg.batch_size]), dev)
                for metric in (fid, kid):
                    if metric is not None:
                        metric.update(r_t, real=True)
                bar.advance(real_task, len(r_t))

    results: dict[str, float] = {}
    for k in ("ssim", "ssim_255", "mask_ssim", "l1", "lpips"):
        if values[k]:
            results[k] = float(np.mean(values[k]))
    if isc is not None:
        results["is"], results["is_std"] = (float(v) for v in isc.compute())
    if misc is not None:
        results["mask_is"], results["mask_is_std"] = (float(v) for v in misc.compute())
    if fid is not None:
        results["fid"] = float(fid.compute())
    if kid is not None:
        mean, std = kid.compute()
        results["kid"], results["kid_std"] = float(mean), float(std)
    if backend is not None:
        from reidaug.metrics.pckh import pckh

        target = np.stack([ann[t] for t in rows["target_pose_from"]])
        score = pckh(np.stack(predicted), target)
        results["pckh"] = score.value
        results["pckh_scored_images"] = score.images
    return {
        "generated": str(generated.resolve()),
        "data_root": str(Path(data_root).resolve()),
        "images": n,
        "metrics": results,
        "skipped": skipped,
        "random_weights": sorted(set(random_nets)),
        "settings": {
            "networks": sources,
            "images": "uint8 RGB decoded from the files (generated JPEGs as written); masks from the target "
                      "keypoints (notes 11.2)",
            "inception_input": "uint8 -> float32, resized to 299x299 by torch-fidelity's TF1-compatible bilinear "
                               "interpolation (no antialiasing), (x - 128) / 128",
            "ssim": "Gaussian sigma 1.5, population covariances, K1 0.01, K2 0.03, channel mean; data range of "
                    "the generated image (ssim, mask_ssim) or 255 (ssim_255)",
            "is_splits": cfg.is_splits, "fid_real": cfg.fid_real,
            "kid": {"subsets": cfg.kid_subsets, "subset_size": min(cfg.kid_subset_size, n, n_real)},
        },  # fmt: skip
        "versions": package_versions(),
    }


def skipped_lines(result: dict) -> list[str]:
    """One line per reason a metric was skipped: "fid, kid skipped: <why>"."""
    by_reason: dict[str, list[str]] = {}
    for name, why in result["skipped"].items():
        by_reason.setdefault(why, []).append(name)
    return [f"{', '.join(names)} skipped: {why}" for why, names in by_reason.items()]


def write_metrics(result: dict, out: str | Path) -> Path:
    from reidaug.utils.io import atomic_write_text

    out = Path(out)
    if out.suffix.lower() != ".json":
        raise ReidaugError(f"metrics output {out} must be a .json file")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return out
