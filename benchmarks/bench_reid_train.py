"""Re-ID training and evaluation speed of the Table 6 recipes on a Market-sized set, and the minutes per training.

For each recipe (configs/reid/resnet50-softmax.yaml and resnet50-circle.yaml by default) the model, optimizer,
schedule and engine that reid-eval builds (reidaug.reid.run) train on:
* device: the train_data=device path (reidaug.reid.device_data): `--train-images` uint8 images of 128x64 (random
  content; Market has 12,936) held on the device, the recipe's transforms applied there, its sampler;
* loader (--loader N steps): torchreid's DataLoader with the recipe's transforms and workers on a synthetic
  Market root (JPEG decode, PIL transforms), `data_wait_share` = time blocked on the loader / step time.
`train_img_per_s` counts training images per second; `minutes_per_training` = epochs x (images per epoch) /
rate for the Market training set. Evaluation: features of 3,368 query + 19,732 gallery images at the recipe's
eval batch (rate measured on random images) plus the ranking (reidaug's evaluate_market on a random distance
matrix of that size): `eval_seconds`. On CUDA under the recipe's autocast. Random initialisation (speed only).
Prints one JSON object per recipe, then one for the run.

  python benchmarks/bench_reid_train.py --ci                         # smoke: osnet_x0_25 at 64x32, seconds
  python benchmarks/bench_reid_train.py --steps 3 --batch-size 16    # the CPU figures of docs/performance.md
  python benchmarks/bench_reid_train.py --device cuda --steps 50 --loader 50
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MARKET = {"train": 12936, "train_ids": 751, "query": 3368, "gallery": 19732}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_for(cfg, n_ids: int, device: torch.device, run_dir: Path):
    from reidaug.reid.run import build_engine, build_model, build_optimizer

    use_gpu = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, n_ids, use_gpu).to(device)
    optimizer, scheduler = build_optimizer(cfg, model)
    dm = SimpleNamespace(train_loader=[], test_loader={}, num_train_pids=n_ids, sources=["bench"])
    engine = build_engine(cfg, dm, model, optimizer, scheduler, use_gpu)
    engine.setup(cfg, run_dir, logging.getLogger("bench_reid_train"))
    engine.set_model_mode("train")
    return engine


def sampler_for(cfg, pids: np.ndarray):
    from reidaug.reid._torchreid import reid
    from reidaug.reid.config import train_sampler

    items = [("", int(p), 0, 0) for p in pids]
    return reid.data.sampler.build_train_sampler(items, train_sampler(cfg), batch_size=cfg.batch_size,
                                                 num_instances=cfg.num_instances)  # fmt: skip


def timed_steps(engine, batches, steps: int, warmup: int, device) -> tuple[float, float]:
    """(seconds of `steps` training steps after `warmup`, seconds blocked on `batches`); one device sync per step,
    as a loss read every step would make (reid-eval reads every log_every steps)."""
    from reidaug.reid.engine import DeviceMeans

    means, it = DeviceMeans(), iter(batches)
    total = wait = 0.0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        data = next(it)
        t1 = time.perf_counter()
        means.add(engine.forward_backward(data))
        sync(device)
        if i >= warmup:
            total, wait = total + time.perf_counter() - t0, wait + t1 - t0
    means.read()
    return total, wait


def device_path(cfg, device, n_train: int, n_ids: int, steps: int, warmup: int, run_dir: Path) -> dict:
    from reidaug.reid.device_data import DeviceAugment, DeviceTrainLoader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train, 3, 128, 64), dtype=torch.uint8, generator=g)
    pids = np.arange(n_train) % n_ids
    engine = engine_for(cfg, n_ids, device, run_dir)
    loader = DeviceTrainLoader(images, pids, sampler_for(cfg, pids), cfg.batch_size,
                               DeviceAugment(cfg.height, cfg.width, cfg.transforms, device, cfg.seed), device)  # fmt: skip
    total, _ = timed_steps(engine, loader, steps, warmup, device)
    rate = steps * cfg.batch_size / total
    per_epoch = len(loader) * cfg.batch_size
    eval_rate = extract_rate(engine, cfg, device, steps)
    del engine, loader
    return {"train_img_per_s": round(rate, 3), "images_per_epoch": per_epoch, "eval_img_per_s": round(eval_rate, 3),
            "device_set_mb": round(images.numel() / 2**20, 1)}  # fmt: skip


def extract_rate(engine, cfg, device, batches: int) -> float:
    engine.set_model_mode("eval")
    x = torch.randn(cfg.eval_batch_size, 3, cfg.height, cfg.width, device=device)
    with torch.no_grad(), engine.autocast():
        engine.extract_features(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            engine.extract_features(x).float().cpu()
        sync(device)
    engine.set_model_mode("train")
    return batches * cfg.eval_batch_size / (time.perf_counter() - t0)


def loader_path(cfg, device, root: Path, steps: int, warmup: int, run_dir: Path) -> dict:
    from reidaug.reid import dataset as rd
    from reidaug.reid._torchreid import reid
    from reidaug.reid.config import train_sampler
    from reidaug.reid.engine import torchreid_prints_to

    with torchreid_prints_to(logging.getLogger("bench_reid_train")):
        dm = reid.data.ImageDataManager(root=str(root), sources=rd.register(), height=cfg.height, width=cfg.width,
                                        transforms=list(cfg.transforms), use_gpu=device.type == "cuda",
                                        batch_size_train=cfg.batch_size, batch_size_test=cfg.eval_batch_size,
                                        workers=cfg.workers, num_instances=cfg.num_instances,
                                        train_sampler=train_sampler(cfg))  # fmt: skip
    engine = engine_for(cfg, dm.num_train_pids, device, run_dir)
    if len(dm.train_loader) < warmup + steps:
        raise SystemExit(f"the synthetic root has {len(dm.train_loader)} batches, fewer than {warmup + steps}")
    total, wait = timed_steps(engine, dm.train_loader, steps, warmup, device)
    return {"loader_train_img_per_s": round(steps * cfg.batch_size / total, 3),
            "loader_data_wait_share": round(wait / total, 4), "workers": cfg.workers}  # fmt: skip


def ranking_seconds(queries: int, gallery: int) -> float:
    from reidaug.reid.evaluate import evaluate_market

    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 750, queries), rng.integers(0, 750, gallery)
    dist = rng.random((queries, gallery), dtype=np.float32)
    t0 = time.perf_counter()
    evaluate_market(dist, q_pids, g_pids, rng.integers(0, 6, queries), rng.integers(0, 6, gallery), max_rank=50)
    return time.perf_counter() - t0


def synth_root(path: Path, ids: int) -> Path:
    from reidaug.config import load_config
    from reidaug.data.synth import SynthConfig, make_dataset

    make_dataset(path, load_config(SynthConfig, "synth/default", [f"synth.train_ids={ids}", "synth.test_ids=2",
                                                                 "synth.distractors=0", "synth.junk=0"]))  # fmt: skip
    return path


def main() -> int:
    from reidaug.config import load_config
    from reidaug.reid.config import ReidConfig, validate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="reid/resnet50-softmax,reid/resnet50-circle")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--ci", action="store_true", help="CI size: osnet_x0_25 at 64x32, batch 8, 2 steps")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (64), 8 with --ci")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 50 CUDA, 2 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5 CUDA, 1 CPU)")
    ap.add_argument("--loader", type=int, default=None, help="steps through torchreid's loader (0: skip; "
                    "default 50 CUDA, 0 CPU, 1 --ci)")  # fmt: skip
    ap.add_argument("--train-images", type=int, default=None, help="device set size (default 12936; 64 --ci)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--set", action="append", default=[], help="override for every recipe, e.g. workers=4")
    args = ap.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
    steps = args.steps or (2 if args.ci else 50 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (0 if args.ci else 5 if cuda else 1)
    loader_steps = args.loader if args.loader is not None else (1 if args.ci else 50 if cuda else 0)
    n_train = args.train_images or (64 if args.ci else MARKET["train"])
    n_ids = min(MARKET["train_ids"], max(2, n_train // 16))
    ci = ["backbone=osnet_x0_25", "height=64", "width=32", "batch_size=8", "eval_batch_size=16", "workers=0"]
    queries, gallery = (16, 64) if args.ci else (MARKET["query"], MARKET["gallery"])
    ranking = ranking_seconds(queries, gallery)
    with tempfile.TemporaryDirectory() as tmp:
        root = synth_root(Path(tmp) / "synth", 4 if args.ci else 40) if loader_steps else None
        for recipe in args.recipes.split(","):
            sets = ["pretrained=false", *(ci if args.ci else []), *args.set]
            if args.batch_size:
                sets.append(f"batch_size={args.batch_size}")
            cfg = validate(load_config(ReidConfig, recipe.strip(), sets))
            row = {"recipe": recipe.strip(), "backbone": cfg.backbone, "loss": cfg.loss, "size": f"{cfg.height}x"
                   f"{cfg.width}", "batch_size": cfg.batch_size, "epochs": cfg.epochs,
                   "device": torch.cuda.get_device_name(device) if cuda else "cpu", "threads": torch.get_num_threads(),
                   "precision": cfg.amp_dtype if cuda and cfg.amp else "fp32", "train_images": n_train}  # fmt: skip
            row.update(device_path(cfg, device, n_train, n_ids, steps, warmup, Path(tmp)))
            market_epoch = MARKET["train"] // cfg.batch_size * cfg.batch_size
            row["minutes_per_training"] = round(cfg.epochs * market_epoch / row["train_img_per_s"] / 60, 2)
            row["eval_seconds"] = round((queries + gallery) / row["eval_img_per_s"] + ranking, 2)
            row["ranking_seconds"] = round(ranking, 2)
            if loader_steps:
                row.update(loader_path(cfg, device, root, loader_steps, min(warmup, 1), Path(tmp)))
            print(json.dumps(row), flush=True)
    print(json.dumps({"run": "bench_reid_train", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                      "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()],
                      "torch": torch.__version__}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
