"""`reidaug experiment`: the Table 6 sweep. For every seed and portion p < 1 it builds M_p^R and, per generator,
M_p^A (reidaug augment), trains and evaluates re-ID on each (reidaug reid-eval), and on the full real set for
p = 1. Finished cells are skipped on a rerun; the report is rewritten from every finished cell.

OUT/
  experiment.yaml                     the resolved config of the run
  augment/<generator>/p<p>_s<seed>/   augment's output (reduced/, augmented/, generated/, manifests)
  cells/<generator>_<backbone>_<loss>_p<p>_s<seed>/metrics.json + the re-ID run
  image_metrics/<generator>.json      reidaug metrics of the generator's first augmentation
  results.csv, table6.md, map_vs_portion.png, examples.png (first generator), examples_<generator>.png
`reidaug report OUT` turns these into one HTML page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from reidaug.augment.build import AugmentConfig, augment, kept_split, write_root
from reidaug.config import load_config, to_yaml
from reidaug.data.market import check_root
from reidaug.errors import ReidaugError
from reidaug.report import FULL, NONE, RESULT_COLUMNS, write_html_report, write_report
from reidaug.utils.io import atomic_write_text, portable
from reidaug.utils.progress import console


@dataclass
class ExperimentConfig:
    data: str = "???"  # Market root with annotations/train.csv
    out: str = "runs/table6"
    portions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    generators: dict[str, str] = field(default_factory=dict)  # label -> checkpoint ('none' is always run)
    reid: list[str] = field(default_factory=lambda: ["reid/resnet50-softmax"])  # re-ID configs (backbone, loss)
    reid_overrides: list[str] = field(default_factory=list)  # applied to every re-ID config
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # portion and seed are set per cell
    device: str = "auto"
    # image-quality metrics (reidaug metrics) of each generator on its first augmentation (lowest p, first seed);
    # network metrics without weights are skipped
    metrics: list[str] = field(default_factory=lambda: ["ssim", "ssim_255", "mask_ssim", "l1", "is", "fid", "lpips",
                                                        "pckh"])  # fmt: skip


def _cell_name(gen: str, reid_cfg, p: float, seed: int) -> str:
    return f"{gen}_{reid_cfg.backbone}_{reid_cfg.loss}_p{p:g}_s{seed}"


def reduced_root(data: Path, out: Path, acfg: AugmentConfig) -> Path:
    """M_p^R alone (the 'none' row): the same split augment makes for this portion and seed."""
    train, kept = kept_split(data, acfg)
    files = {n: Path(p).resolve() for n, p in zip(train.name[kept], train.path[kept])}
    return write_root(out, data, files)


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = True) -> dict[str, Path]:
    from reidaug.reid.config import ReidConfig
    from reidaug.reid.run import reid_eval

    data, out = Path(cfg.data), Path(cfg.out)
    if not data.is_dir():
        raise ReidaugError(f"experiment data {data} is not a folder (set data: in the config or --data)")
    check_root(data, ("train",))
    if NONE in cfg.generators or FULL in cfg.generators:
        raise ReidaugError(f"generator labels '{NONE}' and '{FULL}' are reserved")
    for label, ckpt in cfg.generators.items():
        if not Path(ckpt).exists():
            raise ReidaugError(f"checkpoint of generator {label!r} not found: {ckpt}")
    if any(not 0 < p <= 1 for p in cfg.portions):
        raise ReidaugError(f"portions must be in (0, 1]: {cfg.portions}")
    reid_cfgs = [(name, load_config(ReidConfig, name, cfg.reid_overrides)) for name in cfg.reid]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.yaml", to_yaml(cfg))

    def cell(gen: str, root: Path, rcfg, p: float, seed: int) -> None:
        d = out / "cells" / _cell_name(gen, rcfg, p, seed)
        if (d / "metrics.json").is_file():
            return
        console.print(f"[bold]cell[/] {d.name}")
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "cell.json", json.dumps({"generator": gen, "portion": p, "seed": seed,
                                                       "root": portable(root, out)}) + "\n")  # fmt: skip
        reid_eval(root, replace(rcfg, seed=rcfg.seed + seed), d / "metrics.json", run_dir=d / "run",
                  overwrite=True, show_progress=show_progress)  # fmt: skip

    for seed in cfg.seeds:
        for p in sorted(cfg.portions):
            if p == 1.0:
                for _, rcfg in reid_cfgs:
                    cell(FULL, data, rcfg, p, seed)
                continue
            acfg = replace(cfg.augment, portion=p, seed=seed)
            roots = {NONE: reduced_root(data, out / "augment" / NONE / f"p{p:g}_s{seed}", acfg)}
            for label, ckpt in cfg.generators.items():
                r = augment(data, out / "augment" / label / f"p{p:g}_s{seed}", ckpt, acfg, device=cfg.device,
                            show_progress=show_progress)  # fmt: skip
                roots[label] = r.augmented_root
            for gen, root in roots.items():
                for _, rcfg in reid_cfgs:
                    cell(gen, root, rcfg, p, seed)

    results = collect(out)
    paths = write_report(results, out)
    for i, label in enumerate(cfg.generators):
        examples = write_examples(out, data, label, "examples.png" if i == 0 else f"examples_{label}.png")
        if examples is not None:
            paths["examples" if i == 0 else f"examples_{label}"] = examples
    if cfg.metrics:
        for label in cfg.generators:
            paths[f"metrics_{label}"] = image_metrics(out, data, label, cfg, show_progress)
    paths["report"] = write_html_report(out)
    return paths


def image_metrics(out: Path, data: Path, label: str, cfg: ExperimentConfig, show_progress: bool) -> Path:
    """reidaug metrics of `label`'s first augmentation (skipped when already there)."""
    from reidaug.metrics.generated import MetricsConfig, compute_metrics, skipped_lines, write_metrics

    path = out / "image_metrics" / f"{label}.json"
    if path.is_file():
        return path
    first = sorted((out / "augment" / label).glob("p*_s*/generated/manifest.csv"))
    if not first:
        raise ReidaugError(f"no augmentation of generator {label!r} in {out / 'augment'}")
    console.print(f"[bold]image metrics[/] {label} on {first[0].parent}")
    result = compute_metrics(first[0].parent, data, cfg=MetricsConfig(metrics=list(cfg.metrics), device=cfg.device),
                             show_progress=show_progress)  # fmt: skip
    for line in skipped_lines(result):
        console.print(line, style="yellow", soft_wrap=True, markup=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_metrics(result, path)



def collect(out: Path) -> pd.DataFrame:
    """One row per finished cell (its metrics.json)."""
    rows = []
    for f in sorted((out / "cells").glob("*/metrics.json")):
        m = json.loads(f.read_text())
        c = json.loads((f.parent / "cell.json").read_text())
        rows.append({"generator": c["generator"], "backbone": m["backbone"], "loss": m["loss"],
                     "portion": c["portion"], "seed": c["seed"],
                     "mAP": m["mAP"], "rank1": m["rank1"], "rank5": m["rank5"], "rank10": m["rank10"],
                     "n_train": m["num_train_images"]})  # fmt: skip
    if not rows:
        raise ReidaugError(f"no finished cell in {out / 'cells'}")
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def write_examples(out: Path, data: Path, label: str, name: str = "examples.png", rows: int = 6) -> Path | None:
    """source | target pose | generated | the real image it replaces, for the first jobs of `label`'s first
    augmentation."""
    from reidaug.data.images import grid, read_image, write_image
    from reidaug.data.keypoints import pose_image, read_annotations
    from reidaug.data.market import annotation_path

    found = sorted((out / "augment" / label).glob("p*_s*/jobs.csv"))
    if not found:
        return None
    jobs = pd.read_csv(found[0], keep_default_na=False).head(rows)
    ann = read_annotations(annotation_path(data))
    train_dir = data / "bounding_box_train"
    tiles = []
    for j in jobs.itertuples():
        tiles.append([read_image(train_dir / j.source), pose_image(ann[j.target_pose_from]),
                      read_image(found[0].parent / "generated" / j.out_name),
                      read_image(train_dir / j.replaces) if j.replaces else pose_image(ann[j.target_pose_from])])  # fmt: skip
    path = out / name
    write_image(path, grid(tiles))
    return path


def load_experiment(source: str | None, overrides=()) -> ExperimentConfig:
    return load_config(ExperimentConfig, source or "experiments/table6", overrides)
