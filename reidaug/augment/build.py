"""`reidaug augment`: write M_p^R and M_p^A as complete Market roots (protocol in reidaug.augment.protocol).

OUT/
  augment.json              settings, generator (method, checkpoint sha256, training mode), counts
  kept.csv, removed.csv     the split (name, pid, camid)
  jobs.csv                  one generation job per removed image (or per enlargement), with its fallback
  generated/                the generated images and generate's manifest.csv
  reduced/   bounding_box_train/ links to the kept real images; bounding_box_test, query -> the real folders
  augmented/ bounding_box_train/ links to the kept real images and to generated/*; test folders as above
By default everything is links and no real image is copied: links into OUT (the generated images) are relative,
so OUT can be moved or copied as a whole; links to the real dataset are absolute (it does not move with OUT).
`materialize="copy"` or `"hardlink"` writes real files instead, test folders included, for shipping a set.
A rerun with the same settings skips finished images; a rerun in another form converts the roots in place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reidaug.augment.protocol import POSE_SOURCES, plan_enlargement, plan_replacements, select_reduced
from reidaug.config import to_dict
from reidaug.data.keypoints import Annotations, read_annotations
from reidaug.data.market import SPLITS, annotation_path, check_root, read_split
from reidaug.errors import ReidaugError, offenders
from reidaug.generate import GenerateConfig, generated_name
from reidaug.generate import check_config as check_generate_config
from reidaug.utils.io import atomic_path, atomic_write_text, check_output_dir, portable

TRAINED_ON = ("full", "reduced")
MATERIALIZE = ("link", "copy", "hardlink")
SETTINGS = "augment.json"


@dataclass
class AugmentConfig:
    portion: float = 0.3
    seed: int = 0
    pose_source: str = "removed"  # removed: I~'s own pose (Table 6); random: a pose of M_p^R (the '*' rows)
    ratio: int = 1  # 2 or 3 (with portion 1.0): the x2/x3 enlargement of notes 12.2
    generator_trained_on: str = "full"  # full: a generator that saw all of M (as published); reduced: M_p^R only
    generate: GenerateConfig = field(default_factory=GenerateConfig)


@dataclass
class AugmentResult:
    out: Path
    kept: int
    removed: int
    generated: int
    fallbacks: dict[str, int]
    reduced_root: Path
    augmented_root: Path


def check_config(cfg: AugmentConfig) -> None:
    if not 0.0 < cfg.portion <= 1.0:
        raise ReidaugError(f"portion must be in (0, 1], got {cfg.portion}")
    if cfg.ratio not in (1, 2, 3):
        raise ReidaugError(f"ratio must be 1, 2 or 3, got {cfg.ratio}")
    if cfg.ratio > 1 and cfg.portion != 1.0:
        raise ReidaugError("--ratio 2|3 enlarges the full real set: use it with --portion 1.0")
    if cfg.ratio == 1 and cfg.portion == 1.0:
        raise ReidaugError("portion 1.0 removes nothing: use --ratio 2|3 to enlarge the full set")
    if cfg.generator_trained_on not in TRAINED_ON:
        raise ReidaugError(f"generator-trained-on must be one of {', '.join(TRAINED_ON)}")
    if cfg.pose_source not in POSE_SOURCES:
        raise ReidaugError(f"pose source must be one of {', '.join(POSE_SOURCES)}, got {cfg.pose_source!r}")
    check_generate_config(cfg.generate)


def kept_split(data_root: str | Path, cfg: AugmentConfig) -> tuple[pd.DataFrame, pd.Series]:
    """(training table without junk, mask of the images M_p^R keeps: all of them for an enlargement)."""
    train = read_split(data_root, "train")
    train = train[train.pid >= 0].reset_index(drop=True)  # junk is no identity
    if cfg.ratio > 1:
        return train, pd.Series(True, index=train.index)
    return train, pd.Series(select_reduced(train, cfg.portion, cfg.seed), index=train.index)


def plan_jobs(train: pd.DataFrame, kept: pd.Series, ann: Annotations, cfg: AugmentConfig, num_sources: int = 1):
    """The generation jobs of a split (replacements, or the enlargement), named by their row number."""
    if cfg.ratio > 1:
        jobs = plan_enlargement(train, ann, cfg.ratio, cfg.seed, num_sources)
    else:
        jobs = plan_replacements(train, kept.to_numpy(), ann, cfg.seed, cfg.pose_source, num_sources)
    jobs.insert(0, "out_name", [generated_name(s, i) for i, s in enumerate(jobs["source"])])
    return jobs


def trained_images(ckpt: dict) -> set[str] | None:
    """Names of the images a checkpoint's generator was trained on, when the checkpoint records them."""
    names = (ckpt.get("data") or {}).get("images")
    return set(names) if names is not None else None


def check_leakage(ckpt: dict, kept_names: set[str], mode: str) -> None:
    """In `reduced` mode the generator must not have seen a removed image."""
    if mode != "reduced":
        return
    seen = trained_images(ckpt)
    if seen is None:
        raise ReidaugError("--generator-trained-on reduced needs a checkpoint that records its training images "
                           "(one trained by reidaug train); this one does not")  # fmt: skip
    leaked = sorted(seen - kept_names)
    if leaked:
        raise ReidaugError(f"the generator was trained on {len(leaked)} images outside the reduced set "
                           f"(e.g. {offenders(leaked)}); train it on the reduced set's pairs")  # fmt: skip


def _place(target: Path, entry: Path, form: str, base: Path) -> None:
    """Make `entry` stand for the file `target`, atomically (a temporary name, then a rename), unless it does.

    link: a symbolic link, relative when `target` lies inside the output `base` (so the output can be moved or
    copied as a whole), absolute to the real dataset (which stays where it is); copy: a real file; hardlink: a
    second name of the same file (same filesystem only)."""
    if form == "link":
        target = target.resolve()
        inside = not Path(portable(target, base)).is_absolute()
        text = os.path.relpath(target, entry.parent.resolve()) if inside else str(target)
        if entry.is_symlink() and os.readlink(entry) == text:
            return
    elif form == "copy":
        if not entry.is_symlink() and entry.is_file() and entry.stat().st_size == target.stat().st_size:
            return
    elif not entry.is_symlink() and entry.exists() and os.path.samefile(entry, target):
        return
    tmp = entry.with_name(f".{entry.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        if form == "link":
            os.symlink(text, tmp)
        elif form == "copy":
            shutil.copy2(target, tmp)
        else:
            os.link(target, tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        hint = "; use --materialize copy" if form == "hardlink" and e.errno == errno.EXDEV else ""
        raise ReidaugError(f"cannot {form} {target} to {entry}: {e.strerror or e}{hint}") from None
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    os.replace(tmp, entry)


def _place_folder(real: Path, entry: Path, form: str) -> None:
    """A test folder: a link to the real one, or a folder of copies / hard links of its files."""
    if form == "link":
        _place(real.resolve(), entry, form, entry.parent)
        return
    if entry.is_symlink():
        entry.unlink()
    entry.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in real.iterdir() if p.is_file()}
    for stale in set(os.listdir(entry)) - names:
        (entry / stale).unlink()
    for name in sorted(names):
        _place(real / name, entry / name, form, entry)


def write_root(root: Path, real_root: Path, train_files: dict[str, Path], materialize: str = "link",
               base: Path | None = None) -> Path:  # fmt: skip
    """A Market root: `train_files` (name -> file) in bounding_box_train, the real test folders, each entry in
    the `materialize` form (see `_place`; `base` is the output folder that relative links stay inside)."""
    if materialize not in MATERIALIZE:
        raise ReidaugError(f"--materialize must be one of {', '.join(MATERIALIZE)}, got {materialize!r}")
    base = Path(base or root.parent)
    train_dir = root / SPLITS["train"]
    train_dir.mkdir(parents=True, exist_ok=True)
    for stale in set(os.listdir(train_dir)) - set(train_files):
        (train_dir / stale).unlink()
    for name, target in train_files.items():
        _place(Path(target), train_dir / name, materialize, base)
    for split_name in ("gallery", "query"):
        folder = SPLITS[split_name]
        _place_folder(real_root / folder, root / folder, materialize)
    return root


def _settings(cfg: AugmentConfig, data_root: Path, ckpt_meta: dict) -> dict:
    return {"data_root": str(data_root.resolve()), "config": to_dict(cfg), "generator": ckpt_meta}


def _claim(out: Path, settings: dict, overwrite: bool) -> None:
    """A folder holds one augmentation: refuse to complete it with other settings."""
    path = out / SETTINGS
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict):
            raise ReidaugError(f"{path} is damaged; use a new --out or --overwrite")
        keep = {k: old.get(k) for k in ("data_root", "config", "generator")}
        if keep != settings:
            raise ReidaugError(f"{out} holds an augmentation with other settings; use a new --out or --overwrite")
        return
    check_output_dir(out, overwrite)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_text(path, json.dumps(settings, indent=2) + "\n")
    except OSError:
        if created:  # a full disk: no empty claimed folder left behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def augment(data_root: str | Path, out: str | Path, checkpoint: str | Path | None = None,
            cfg: AugmentConfig | None = None, *, annotations: str | Path | None = None, method: str = "patn",
            method_config: str | Path | None = None, method_overrides=(), device: str = "auto",
            overwrite: bool = False, show_progress: bool = True, on_batch=None,
            materialize: str = "link") -> AugmentResult:  # fmt: skip
    """Build OUT/reduced and OUT/augmented from the Market root `data_root` with a trained generator.

    `materialize`: link (symbolic links; those into OUT relative, so OUT can be moved or copied whole), copy or
    hardlink (real files, for shipping a set to another machine or a filesystem without links).

    Without `checkpoint`, and with `generator_trained_on='reduced'`, a generator (`method`, its config and
    overrides) is first trained on the pairs of M_p^R alone into OUT/generator (resumed on a rerun).
    """
    from reidaug.data.samples import SampleDataset, image_index
    from reidaug.generate import check_sources, generate_images, job_source_columns
    from reidaug.models.checkpoint import load_generator
    from reidaug.models.registry import get as get_method
    from reidaug.utils.runtime import resolve_device

    cfg = cfg or AugmentConfig()
    check_config(cfg)
    if materialize not in MATERIALIZE:
        raise ReidaugError(f"--materialize must be one of {', '.join(MATERIALIZE)}, got {materialize!r}")
    resolve_device(device)
    data_root, out = check_root(data_root, ("train",)), Path(out)
    ann_path = Path(annotations or annotation_path(data_root))
    ann = read_annotations(ann_path)
    train, kept = kept_split(data_root, cfg)
    kept_names = set(train.name[kept])

    # Everything is checked before the folder is claimed: a refusal leaves nothing behind.
    if checkpoint is None and cfg.generator_trained_on != "reduced":
        raise ReidaugError("--checkpoint is required (or --generator-trained-on reduced to train one on M_p^R)")
    claimed = checkpoint is None
    if claimed:  # the generator is trained here, on M_p^R: claim the folder first
        get_method(method)
        if cfg.generate.sources is not None:  # checked before training it
            check_sources(_method_generator(method, method_config, method_overrides), cfg.generate.sources, method)
        _claim(out, _settings(cfg, data_root, {"method": method, "trained_on": "reduced"}), overwrite)
        checkpoint = train_on_reduced(data_root, ann_path, ann, kept_names, out / "generator", method,
                                      method_config, method_overrides, device, show_progress)  # fmt: skip
    ckpt_path, ckpt = _load(checkpoint, kept_names, cfg)
    generator, _ = load_generator(ckpt_path, ckpt=ckpt)
    if not claimed and cfg.generate.sources is not None:
        check_sources(generator, cfg.generate.sources, ckpt["method"])
    meta = _generator_meta(ckpt_path, ckpt, cfg)
    m = generator.num_sources if cfg.generate.sources is None else cfg.generate.sources
    jobs = plan_jobs(train, kept, ann, cfg, m)
    src_cols = job_source_columns(m)
    SampleDataset(jobs[src_cols].to_numpy(dtype=object), jobs["target_pose_from"], image_index(data_root), ann)
    if not claimed:
        _claim(out, _settings(cfg, data_root, meta), overwrite)

    cols = ["name", "pid", "camid"]
    for name, table in (("kept.csv", train[kept][cols]), ("removed.csv", train[~kept][cols]), ("jobs.csv", jobs)):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")

    extra = {"method": meta["method"], "checkpoint_sha256": meta["checkpoint_sha256"], "seed": cfg.seed}
    generate_images(generator, jobs[["out_name", *src_cols, "target_pose_from"]], data_root, ann,
                    out / "generated", cfg.generate, device=device, manifest_extra=extra,
                    show_progress=show_progress, on_batch=on_batch)  # fmt: skip

    real = {n: Path(p).resolve() for n, p in zip(train.name, train.path)}
    kept_files = {n: real[n] for n in train.name[kept]}
    gen_dir = (out / "generated").resolve()
    reduced = write_root(out / "reduced", data_root, kept_files, materialize, out)
    augmented = write_root(out / "augmented", data_root,
                           {**kept_files, **{n: gen_dir / n for n in jobs["out_name"]}}, materialize, out)  # fmt: skip

    fallbacks = {k: int(v) for k, v in jobs["fallback"].value_counts().items() if k}
    summary = {**_settings(cfg, data_root, meta), "kept": int(kept.sum()), "removed": int((~kept).sum()),
               "generated": len(jobs), "fallbacks": fallbacks,
               "augmented_train_images": len(kept_files) + len(jobs)}  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return AugmentResult(out, int(kept.sum()), int((~kept).sum()), len(jobs), fallbacks, reduced, augmented)


def _method_generator(method: str, method_config, overrides):
    """The generator `method` would train, built on the meta device (no memory): what it accepts, before training."""
    import torch

    from reidaug.models import registry
    from reidaug.train.config import load_method_config

    mcfg = load_method_config(method, method_config, list(overrides))
    with torch.device("meta"):
        return registry.get(method).generator(mcfg.model)


def _load(checkpoint, kept_names: set[str], cfg: AugmentConfig):
    from reidaug.models.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    check_leakage(ckpt, kept_names, cfg.generator_trained_on)
    return path, ckpt


def _generator_meta(path: Path, ckpt: dict, cfg: AugmentConfig) -> dict:
    from reidaug.utils.io import file_sha256

    return {"method": ckpt["method"], "checkpoint_sha256": file_sha256(path),
            "iteration": int(ckpt.get("iteration", 0)), "trained_on": cfg.generator_trained_on}  # fmt: skip


def train_on_reduced(data_root: Path, ann_path: Path, ann: Annotations, kept_names: set[str], run_dir: Path,
                     method: str, method_config, overrides, device: str, show_progress: bool) -> Path:  # fmt: skip
    """Leakage-free mode: train `method` on the PATN-rule pairs (or tuples) of the kept images only."""
    from reidaug.models.checkpoint import load_checkpoint
    from reidaug.models.registry import num_sources
    from reidaug.train.config import load_method_config
    from reidaug.train.trainer import load_table, train

    mcfg = load_method_config(method, method_config, list(overrides))
    try:
        pairs = load_table(None, ann.subset(sorted(kept_names)), num_sources(mcfg.model), mcfg.train.seed)
    except ReidaugError:
        raise ReidaugError("the reduced set has no same-identity pair with both shoulders and hips: "
                           "no generator can be trained on it") from None
    latest = run_dir / "checkpoints" / "latest.pt"
    if latest.is_file() and int(load_checkpoint(latest).get("iteration", 0)) >= mcfg.train.iterations:
        return latest
    res = train(mcfg, data_root, run_dir, pairs=pairs, annotations=ann_path,
                resume=latest if latest.is_file() else None, device=device, show_progress=show_progress)  # fmt: skip
    return res.checkpoint
