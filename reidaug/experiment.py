"""`reidaug experiment`: the Table 6 sweep. For every seed and portion p < 1 it builds M_p^R and, per generator,
M_p^A (reidaug augment), trains and evaluates re-ID on each (reidaug reid-eval), and on the full real set for
p = 1. Finished cells are skipped on a rerun; the report is rewritten from every finished cell.

Executors (`cluster.executor`): `local` runs the cells one after the other in this process, or with
`cluster.jobs` > 1 in that many worker processes on this machine (reidaug.workers); `ray` runs one Ray task per
cell on a cluster (reidaug.cluster). All recognise a finished cell by its metrics.json.

OUT/
  experiment.yaml                     the resolved config of the run
  augment/<generator>/p<p>_s<seed>/   augment's output (reduced/, augmented/, generated/, manifests)
  cells/<generator>_<backbone>_<loss>_p<p>_s<seed>/metrics.json + the re-ID run
                                      (ray: also worker.json, where it ran, and cell.log, its output)
  cells.csv                           every planned cell: done | failed | missing
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
from reidaug.report import CELL_COLUMNS, FULL, NONE, RESULT_COLUMNS, write_html_report, write_report
from reidaug.utils.io import atomic_path, atomic_write_text, portable, read_json
from reidaug.utils.progress import console

EXECUTORS = ("local", "ray")
TRAIN = "train:"  # generator spec prefix: train:METHOD[:CONFIG] is trained on each M_p^R instead of loaded


def trained_here(spec: str) -> tuple[str, str | None] | None:
    """(method, config or None) of a train:METHOD[:CONFIG] generator spec; None for a checkpoint."""
    if not spec.startswith(TRAIN):
        return None
    method, _, config = spec[len(TRAIN) :].partition(":")
    return method, config or None


@dataclass
class Resources:
    """What one Ray task reserves on a node (Ray's logical resources: the task may use more)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float = 0.0  # 0: no memory reservation


@dataclass
class ClusterConfig:
    executor: str = "local"  # local: this machine (see jobs) | ray: one Ray task per cell
    jobs: int = 1  # local: 1 runs the cells one after the other in this process; N > 1 in N worker processes
    # ray: the head's host:port; null: RAY_ADDRESS, else the cluster started on this machine, else a new local one
    address: str | None = None
    retries: int = 2  # ray: new attempts of a failed task (crashed worker, lost node, exception), then 'failed'
    cell: Resources = field(default_factory=Resources)  # one re-ID training and evaluation
    augment: Resources = field(default_factory=Resources)  # one M_p^A (generation) and the image metrics
    connect_timeout_s: float = 10.0  # the head at `address` must accept a connection within this
    probe_timeout_s: float = 120.0  # every node must answer the shared-filesystem probe within this
    status_every_s: float = 60.0  # a progress line this often when stderr is not a terminal (a log file)


@dataclass
class ExperimentConfig:
    data: str = "???"  # Market root with annotations/train.csv
    out: str = "runs/table6"
    portions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # label -> checkpoint, or train:METHOD[:CONFIG]: that generator trained on each M_p^R (leakage-free mode);
    # 'none' is always run
    generators: dict[str, str] = field(default_factory=dict)
    reid: list[str] = field(default_factory=lambda: ["reid/resnet50-softmax"])  # re-ID configs (backbone, loss)
    reid_overrides: list[str] = field(default_factory=list)  # applied to every re-ID config
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # portion and seed are set per cell
    device: str = "auto"
    # image-quality metrics (reidaug metrics) of each generator on its first augmentation (lowest p, first seed);
    # network metrics without weights are skipped
    metrics: list[str] = field(default_factory=lambda: ["ssim", "ssim_255", "mask_ssim", "l1", "is", "fid", "lpips",
                                                        "pckh"])  # fmt: skip
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


@dataclass(frozen=True)
class Source:
    """The training set a group of cells shares: the full real set, M_p^R ('none') or a generator's M_p^A."""

    generator: str
    portion: float
    seed: int

    @property
    def folder(self) -> str:
        """Its augment folder, relative to the experiment folder ('' for the full real set)."""
        return "" if self.generator == FULL else f"augment/{self.generator}/p{self.portion:g}_s{self.seed}"


@dataclass
class Cell:
    """One re-ID training and evaluation: a training set and a re-ID config (its seed shifted by the cell's)."""

    source: Source
    reid: object  # ReidConfig

    @property
    def name(self) -> str:
        s = self.source
        return f"{s.generator}_{self.reid.backbone}_{self.reid.loss}_p{s.portion:g}_s{s.seed}"

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.name

    def done(self, out: Path) -> bool:
        return (self.folder(out) / "metrics.json").is_file()


class CellsFailed(RuntimeError):
    """Cells that still failed after their retries; the report was written from the others (and marks them)."""

    def __init__(self, failed: dict[str, str], paths: dict[str, Path]):
        super().__init__(f"{len(failed)} cell(s) failed: " + ", ".join(failed))
        self.failed, self.paths = failed, paths


def reduced_root(data: Path, out: Path, acfg: AugmentConfig) -> Path:
    """M_p^R alone (the 'none' row): the same split augment makes for this portion and seed."""
    train, kept = kept_split(data, acfg)
    files = {n: Path(p).resolve() for n, p in zip(train.name[kept], train.path[kept])}
    return write_root(out, data, files)


def check_experiment(cfg: ExperimentConfig) -> list:
    """Refuse a bad config before anything runs (or is written); returns the re-ID configs."""
    from reidaug.augment.build import check_config as check_augment
    from reidaug.metrics.generated import MetricsConfig
    from reidaug.metrics.generated import check_config as check_metrics
    from reidaug.models.checkpoint import resolve_checkpoint
    from reidaug.reid.config import ReidConfig, validate
    from reidaug.utils.io import check_torch_file

    data = Path(cfg.data)
    if not data.is_dir():
        raise ReidaugError(f"experiment data {data} is not a folder (set data: in the config or --data)")
    check_root(data, ("train",))
    if NONE in cfg.generators or FULL in cfg.generators:
        raise ReidaugError(f"generator labels '{NONE}' and '{FULL}' are reserved")
    for label, spec in cfg.generators.items():
        if trained_here(spec):
            from reidaug.train.config import load_method_config

            method, config = trained_here(spec)
            load_method_config(method, config)  # an unknown method or a bad config: refused now, not in a task
        elif not Path(spec).exists():
            raise ReidaugError(f"checkpoint of generator {label!r} not found: {spec}")
        else:
            check_torch_file(resolve_checkpoint(spec), f"checkpoint of generator {label!r}")
    if not cfg.portions or not cfg.seeds or not cfg.reid:
        raise ReidaugError("an experiment needs at least one portion, one seed and one re-ID config")
    if any(not 0 < p <= 1 for p in cfg.portions):
        raise ReidaugError(f"portions must be in (0, 1]: {cfg.portions}")
    for p in cfg.portions:
        if p < 1:
            check_augment(replace(cfg.augment, portion=p))
    if cfg.metrics and cfg.generators:
        check_metrics(MetricsConfig(metrics=list(cfg.metrics), device=cfg.device))
    c = cfg.cluster
    if c.executor not in EXECUTORS:
        raise ReidaugError(f"executor must be one of {', '.join(EXECUTORS)}, got {c.executor!r}")
    if c.jobs < 1:
        raise ReidaugError(f"cluster.jobs must be >= 1, got {c.jobs}")
    if c.retries < 0:
        raise ReidaugError(f"cluster.retries must be >= 0, got {c.retries}")
    for what, r in (("cell", c.cell), ("augment", c.augment)):
        if min(r.num_cpus, r.num_gpus, r.memory_gb) < 0:
            raise ReidaugError(f"cluster.{what} resources must be >= 0")
    return [validate(load_config(ReidConfig, name, cfg.reid_overrides)) for name in cfg.reid]


def plan(cfg: ExperimentConfig, reid_cfgs: list) -> list[Cell]:
    """Every cell of the sweep, in the order the local executor runs them (seed, portion, generator)."""
    cells = []
    for seed in cfg.seeds:
        for p in sorted(cfg.portions):
            gens = [FULL] if p == 1.0 else [NONE, *cfg.generators]
            cells += [Cell(Source(g, p, seed), r) for g in gens for r in reid_cfgs]
    return cells


def build_source(src: Source, cfg: ExperimentConfig, data: Path, out: Path, show_progress: bool = True) -> Path:
    """The Market root of a training set: the real one, M_p^R (links) or M_p^A (a generation by augment, after
    training the generator on M_p^R for a train:METHOD[:CONFIG] spec)."""
    if src.generator == FULL:
        return data
    acfg = replace(cfg.augment, portion=src.portion, seed=src.seed)
    if src.generator == NONE:
        return reduced_root(data, out / src.folder, acfg)
    spec = cfg.generators[src.generator]
    if trained_here(spec):
        method, config = trained_here(spec)
        r = augment(data, out / src.folder, None, replace(acfg, generator_trained_on="reduced"), method=method,
                    method_config=config, device=cfg.device, show_progress=show_progress)  # fmt: skip
    else:
        r = augment(data, out / src.folder, spec, acfg, device=cfg.device, show_progress=show_progress)
    return r.augmented_root


def run_cell(cell: Cell, root: Path, out: Path, show_progress: bool = True) -> Path:
    """Train and evaluate the cell's re-ID model on `root`; its metrics.json marks it finished."""
    from reidaug.reid.run import reid_eval

    d = cell.folder(out)
    d.mkdir(parents=True, exist_ok=True)
    s = cell.source
    atomic_write_text(d / "cell.json", json.dumps({"generator": s.generator, "portion": s.portion, "seed": s.seed,
                                                   "root": portable(root, out)}) + "\n")  # fmt: skip
    reid_eval(root, replace(cell.reid, seed=cell.reid.seed + s.seed), d / "metrics.json", run_dir=d / "run",
              overwrite=True, show_progress=show_progress)  # fmt: skip
    return d / "metrics.json"


def run_local(cfg: ExperimentConfig, cells: list[Cell], data: Path, out: Path, show_progress: bool) -> None:
    """The cells one after the other in this process, each training set built when its first cell needs it."""
    roots: dict[Source, Path] = {}
    for cell in cells:
        if cell.done(out):
            continue
        if cell.source not in roots:
            roots[cell.source] = build_source(cell.source, cfg, data, out, show_progress)
        console.print(f"[bold]cell[/] {cell.name}")
        run_cell(cell, roots[cell.source], out, show_progress)


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = True) -> dict[str, Path]:
    """Run the sweep with `cfg.cluster.executor` and write the report. Raises CellsFailed (after writing the
    report of the finished cells) when cells failed in worker processes (on Ray: after their retries)."""
    reid_cfgs = check_experiment(cfg)
    data, out = Path(cfg.data), Path(cfg.out)
    cells = plan(cfg, reid_cfgs)
    failed: dict[str, str] = {}
    if cfg.cluster.executor == "ray":
        from reidaug.cluster import ray_cluster

        with ray_cluster(cfg, reid_cfgs, data, out) as run_on_ray:  # refuses an OUT the workers cannot see
            atomic_write_text(out / "experiment.yaml", to_yaml(cfg))
            failed = run_on_ray(cells, show_progress=show_progress)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "experiment.yaml", to_yaml(cfg))
        if cfg.cluster.jobs > 1:
            from reidaug.workers import run_pool

            failed = run_pool(cfg, cells, data, out, show_progress)
        else:
            run_local(cfg, cells, data, out, show_progress)
    in_process = cfg.cluster.executor == "local" and cfg.cluster.jobs == 1  # else the metrics were tasks
    paths = finish(cfg, cells, data, out, failed, metrics=in_process, show_progress=show_progress)
    if failed:
        raise CellsFailed(failed, paths)
    return paths


def cell_status(cells: list[Cell], out: Path, failed: dict[str, str]) -> pd.DataFrame:
    """One row per planned cell: done (metrics.json), failed (with the reason) or missing (not run)."""
    rows = []
    for c in cells:
        status = "done" if c.done(out) else "failed" if c.name in failed else "missing"
        s = c.source
        rows.append({"cell": c.name, "generator": s.generator, "backbone": c.reid.backbone, "loss": c.reid.loss,
                     "portion": s.portion, "seed": s.seed, "status": status, "reason": failed.get(c.name, "")})  # fmt: skip
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def finish(cfg: ExperimentConfig, cells: list[Cell], data: Path, out: Path, failed: dict[str, str], *,
           metrics: bool = True, show_progress: bool = True) -> dict[str, Path]:  # fmt: skip
    """cells.csv, the report files from every finished cell, sample grids and (with `metrics`, else only those
    already computed) the image metrics of each generator."""
    status = cell_status(cells, out, failed)
    with atomic_path(out / "cells.csv") as tmp:
        status.to_csv(tmp, index=False, lineterminator="\n")
    if not (status.status == "done").any():
        return {"cells": out / "cells.csv"}
    results = collect(out)
    paths = {**write_report(results, out, planned=status), "cells": out / "cells.csv"}
    for i, label in enumerate(cfg.generators):
        examples = write_examples(out, data, label, "examples.png" if i == 0 else f"examples_{label}.png")
        if examples is not None:
            paths["examples" if i == 0 else f"examples_{label}"] = examples
    if cfg.metrics:
        for label in cfg.generators:
            path = out / "image_metrics" / f"{label}.json"
            if metrics:
                path = image_metrics(out, data, label, cfg, show_progress)
            if path.is_file():
                paths[f"metrics_{label}"] = path
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
        m, c = read_json(f), read_json(f.parent / "cell.json")
        rows.append({"generator": c["generator"], "backbone": m["backbone"], "loss": m["loss"],
                     "portion": c["portion"], "seed": c["seed"],
                     "mAP": m["mAP"], "rank1": m["rank1"], "rank5": m["rank5"], "rank10": m["rank10"],
                     "n_train": m["num_train_images"]})  # fmt: skip
    if not rows:
        raise ReidaugError(f"no finished cell in {out / 'cells'}")
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def write_examples(out: Path, data: Path, label: str, name: str = "examples.png", rows: int = 6) -> Path | None:
    """source | target pose | generated | the real image it replaces, for the first job of each of the first
    `rows` identities of `label`'s first augmentation (different people, not one person's poses)."""
    from reidaug.data.images import grid, read_image, write_image
    from reidaug.data.keypoints import pose_image, read_annotations
    from reidaug.data.market import annotation_path

    found = sorted((out / "augment" / label).glob("p*_s*/jobs.csv"))
    if not found:
        return None
    jobs = pd.read_csv(found[0], keep_default_na=False).drop_duplicates("pid").head(rows)
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
