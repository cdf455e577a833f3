"""`reid_eval`: train a torchreid model on a Market root's training set, evaluate on its query/gallery, save JSON.

The run folder (default: `<out>.run/` beside the JSON) holds `log.txt`, `config.yaml`, tensorboard events,
`last.pth` (resumable state) and `model.pth` (the final model). Metrics are in % (0-100), like the papers'.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path

import torch

from reidaug.config import to_dict, to_yaml
from reidaug.data.market import SPLITS, check_root
from reidaug.errors import ReidaugError, user_message
from reidaug.reid import dataset as rd
from reidaug.reid._torchreid import VERSION, reid
from reidaug.reid.config import ReidConfig, train_data_on_device, train_sampler, validate
from reidaug.reid.engine import ENGINES, LAST, torchreid_prints_to
from reidaug.reid.weights import init_weights, load_checkpoint
from reidaug.utils.io import atomic_write_text, check_output_dir, check_writable, portable
from reidaug.utils.progress import console, progress
from reidaug.utils.runtime import resolve_device, seed_all

METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10")
# fields that may differ between a run and its resumption
_RESUME_FREE = {"workers", "threads", "device", "eval_batch_size", "save_checkpoint", "checkpoint_every", "train_data",
                "log_every"}


def default_run_dir(out_json: str | Path) -> Path:
    out = Path(out_json)
    return out.with_name(out.stem + ".run")


def reid_eval(
    root: str | Path,
    cfg: ReidConfig | None = None,
    out_json: str | Path = "reid.json",
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
) -> dict:
    """Train `cfg.backbone` with `cfg.loss` on `root`'s bounding_box_train; mAP and CMC on query vs gallery.

    A run folder holding a resumable state (`last.pth`, every `checkpoint_every` epochs) of the same configuration
    is continued, exactly on the CPU: running the same command again finishes an interrupted run. `resume` also
    lets an existing `out_json` be rewritten."""
    cfg = validate(cfg or ReidConfig())
    root = check_root(root, SPLITS)
    out_json = Path(out_json)
    if out_json.suffix.lower() != ".json":
        raise ReidaugError(f"output {out_json} must be a .json file")
    if out_json.exists() and not (overwrite or resume):
        raise ReidaugError(f"output {out_json} exists (pass --overwrite to replace it)")
    run_dir = Path(run_dir) if run_dir else default_run_dir(out_json)
    if run_dir.resolve() == root.resolve() or run_dir.resolve() in root.resolve().parents:
        raise ReidaugError(f"run folder {run_dir} would contain the dataset {root}; choose another --run-dir")
    check_writable(out_json, "file")  # before the training, not after it
    check_writable(run_dir, "dir")
    if overwrite:
        check_output_dir(run_dir, overwrite=True)
    state = None
    if not overwrite and (run_dir / LAST).is_file():  # the same command continues a compatible unfinished run
        state = load_checkpoint(run_dir / LAST)  # (checked before anything is written)
        _check_resumable(state, cfg, run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(run_dir / "log.txt", show_progress)
    threads = torch.get_num_threads()
    refused = False
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return _run(root, cfg, out_json, run_dir, state, show_progress, log)
    except ReidaugError as e:
        refused = True
        log.error("error: %s", _one_line(e))
        raise ReidaugError(_one_line(e)) from None
    except (OSError, RuntimeError, UnicodeDecodeError) as e:
        refused = user_message(e) is not None  # an expected failure (full disk, a bad image in a worker ...)
        raise
    finally:
        torch.set_num_threads(threads)
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)
        if refused and created and not (run_dir / LAST).is_file():  # a refusal leaves nothing behind
            shutil.rmtree(run_dir, ignore_errors=True)


def _run(root: Path, cfg: ReidConfig, out_json: Path, run_dir: Path, state: dict | None, show: bool, log) -> dict:
    t_start = time.time()
    use_gpu = resolve_device(cfg.device).type == "cuda"
    seed_all(cfg.seed)  # python: torchreid's RandomIdentitySampler; torch: init, transforms, workers
    train = rd.read_market_split(root, "train")
    _check_batches(cfg, train)
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    log.info("reid-eval %s on %s (%s, python %s, torch %s)", cfg.backbone, root, VERSION, platform.python_version(),
             torch.__version__)  # fmt: skip
    log.info("device: %s%s", "cuda" if use_gpu else f"cpu, {torch.get_num_threads()} threads",
             f" with {cfg.amp_dtype} autocast" if use_gpu and cfg.amp else "")  # fmt: skip

    with torchreid_prints_to(log):
        dm = reid.data.ImageDataManager(
            root=str(root),
            sources=rd.register(),
            height=cfg.height,
            width=cfg.width,
            transforms=list(cfg.transforms),
            use_gpu=use_gpu,
            batch_size_train=cfg.batch_size,
            batch_size_test=cfg.eval_batch_size,
            workers=cfg.workers,
            num_instances=cfg.num_instances,
            train_sampler=train_sampler(cfg),
        )
    log.info("data: %d train images of %d identities, sampler %s, %d batches of %d per epoch",
             len(train), dm.num_train_pids, train_sampler(cfg), len(dm.train_loader), cfg.batch_size)  # fmt: skip
    model = build_model(cfg, dm.num_train_pids, use_gpu)
    weights_line = init_weights(model, cfg.backbone, cfg.pretrained, cfg.weights, cfg.trust_weights)
    log.info(weights_line)
    if use_gpu:
        model = model.cuda()
    optimizer, scheduler = build_optimizer(cfg, model)
    engine = build_engine(cfg, dm, model, optimizer, scheduler, use_gpu)
    engine.setup(cfg, run_dir, log)
    on_device = train_data_on_device(cfg, use_gpu)
    if on_device:
        engine.train_loader = _device_loader(cfg, dm, use_gpu)
        log.info("train data: %d images decoded onto the %s (%.0f MB uint8), augmented there",
                 len(dm.train_loader.dataset), "GPU" if use_gpu else "CPU", engine.train_loader.nbytes / 2**20)  # fmt: skip
    start_epoch = 0
    if state is not None:
        start_epoch = engine.load_state(state)
        log.info("resumed from %s after epoch %d", run_dir / LAST, start_epoch)

    with progress(disable=not show) as bar:
        engine.bar = bar
        t_train = time.time()
        metrics = engine.run(
            save_dir=str(run_dir),
            max_epoch=cfg.epochs,
            start_epoch=start_epoch,
            fixbase_epoch=cfg.fixbase_epoch,
            open_layers=list(cfg.new_layers) if cfg.fixbase_epoch else None,
            eval_freq=-1,
            dist_metric=cfg.dist_metric,
            normalize_feature=cfg.normalize_feature,
            ranks=[1, 5, 10],
        )
    if metrics is None:
        raise ReidaugError("evaluation did not run")
    result = {k: metrics[k] for k in METRIC_KEYS}
    result.update(
        {
            "root": portable(root, out_json.parent),  # relative inside the output folder: it can move
            "backbone": cfg.backbone,
            "loss": cfg.loss,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "pretrained": weights_line.startswith("weights: pretrained"),
            "weights": weights_line.removeprefix("weights: "),
            "device": "cuda" if use_gpu else "cpu",
            "train_data": "device" if on_device else "loader",
            "num_train_images": len(train),
            "num_train_pids": dm.num_train_pids,
            **{k: v for k, v in metrics.items() if k not in METRIC_KEYS},
            "train_seconds": round(sum(h["seconds"] for h in engine.history), 2),
            "total_seconds": round(time.time() - t_start, 2),
            "run_seconds": round(time.time() - t_train, 2),
            "history": engine.history,
            "torchreid": VERSION,
            "torch": torch.__version__,
            "run_dir": portable(run_dir, out_json.parent),
            "config": to_dict(cfg),
        }
    )
    atomic_write_text(out_json, json.dumps(result, indent=2) + "\n")
    log.info("mAP %.1f%%  rank-1 %.1f%%  -> %s (%.0f s)", result["mAP"], result["rank1"], out_json,
             result["total_seconds"])  # fmt: skip
    return result


def _device_loader(cfg: ReidConfig, dm, use_gpu: bool):
    """The training set on the device with the recipe's transforms there, batches in torchreid's sampler order."""
    from reidaug.reid.device_data import DeviceAugment, DeviceTrainLoader

    dev = torch.device("cuda" if use_gpu else "cpu")
    augment = DeviceAugment(cfg.height, cfg.width, cfg.transforms, dev, cfg.seed)
    return DeviceTrainLoader.from_items(dm.train_loader.dataset.data, dm.train_loader.sampler, cfg.batch_size,
                                        augment, dev, workers=max(1, cfg.workers))  # fmt: skip


def build_model(cfg: ReidConfig, num_classes: int, use_gpu: bool):
    """torchreid's `cfg.backbone` with `num_classes` identities, randomly initialised (never downloads)."""
    try:
        return reid.models.build_model(
            name=cfg.backbone,
            num_classes=num_classes,
            loss="softmax" if cfg.loss == "softmax" else "triplet",
            pretrained=False,  # torchreid would download; weights come from init_weights
            use_gpu=use_gpu,
        )
    except KeyError:
        raise ReidaugError(
            f"unknown backbone {cfg.backbone!r} (torchreid model names, e.g. resnet50, osnet_x1_0)"
        ) from None


def build_optimizer(cfg: ReidConfig, model):
    """The recipe's torchreid optimizer and learning-rate schedule (None for scheduler: none)."""
    optimizer = reid.optim.build_optimizer(
        model,
        optim=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        sgd_nesterov=cfg.nesterov,
        staged_lr=cfg.staged_lr,
        new_layers=list(cfg.new_layers),
        base_lr_mult=cfg.base_lr_mult,
    )
    scheduler = None
    if cfg.scheduler != "none":
        scheduler = reid.optim.build_lr_scheduler(
            optimizer,
            lr_scheduler=cfg.scheduler,
            stepsize=cfg.stepsize[0] if cfg.scheduler == "single_step" else list(cfg.stepsize),
            gamma=cfg.lr_gamma,
            max_epoch=cfg.epochs,
        )
    return optimizer, scheduler


def build_engine(cfg, dm, model, optimizer, scheduler, use_gpu):
    """The recipe's engine (softmax, triplet or circle) over torchreid's datamanager `dm`."""
    common = dict(scheduler=scheduler, use_gpu=use_gpu, label_smooth=cfg.label_smooth)
    if cfg.loss == "softmax":
        return ENGINES["softmax"](dm, model, optimizer, **common)
    if cfg.loss == "triplet":
        return ENGINES["triplet"](dm, model, optimizer, margin=cfg.margin, weight_t=cfg.metric_weight,
                                  weight_x=cfg.softmax_weight, **common)  # fmt: skip
    return ENGINES["circle"](dm, model, optimizer, m=cfg.circle_m, gamma=cfg.circle_gamma,
                             weight_c=cfg.metric_weight, weight_x=cfg.softmax_weight, **common)  # fmt: skip


def _check_batches(cfg: ReidConfig, train: list) -> None:
    """torchreid drops the last incomplete batch and asserts inside its sampler; say it in one line instead."""
    n_pids = len({pid for _, pid, _ in train})
    if not train:
        raise ReidaugError("no training images with an identity (only junk -1 or distractor 0000 names)")
    if len(train) < cfg.batch_size:
        raise ReidaugError(
            f"{len(train)} training images are fewer than one batch ({cfg.batch_size}); lower batch_size"
        )
    if train_sampler(cfg) == "RandomIdentitySampler":
        if cfg.batch_size % cfg.num_instances:
            raise ReidaugError(
                f"batch_size {cfg.batch_size} is not a multiple of num_instances {cfg.num_instances}"
            )
        need = cfg.batch_size // cfg.num_instances
        if n_pids < need:
            raise ReidaugError(
                f"{n_pids} training identities, but a batch needs {need} ({cfg.batch_size}/{cfg.num_instances})"
            )
    if n_pids < 2:
        raise ReidaugError(f"{n_pids} training identity: re-ID training needs at least 2")


def _check_resumable(state: dict, cfg: ReidConfig, run_dir: Path) -> None:
    missing = [k for k in ("state_dict", "optimizer", "epoch") if k not in state] if isinstance(state, dict) else []
    if not isinstance(state, dict) or missing:
        what = f"lacks {', '.join(missing)}" if missing else f"holds a {type(state).__name__}"
        raise ReidaugError(f"cannot resume {run_dir}: {LAST} {what}, not a reid-eval state (--overwrite starts "
                           "again)")  # fmt: skip
    saved = state.get("config")
    now = {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE}
    if saved is not None:
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            raise ReidaugError(f"cannot resume {run_dir}: the configuration changed ({', '.join(diff)}); "
                               "--overwrite starts again")  # fmt: skip


def _logger(path: Path, to_console: bool) -> logging.Logger:
    log = logging.getLogger(f"reidaug.reid.run.{path.parent.resolve()}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    fh = logging.FileHandler(path, mode="a", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(fh)
    if to_console:
        from rich.logging import RichHandler

        if console.is_terminal:
            ch = RichHandler(console=console, show_path=False, show_level=False, markup=False)
        else:  # a log file: one unwrapped line per message
            ch = logging.StreamHandler(console.file)
            ch.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        ch.setLevel(logging.INFO)
        log.addHandler(ch)
    return log


def _one_line(e: Exception) -> str:
    """A ReidaugError raised in a DataLoader worker arrives wrapped with its traceback: keep the message."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    last = lines[-1]
    return last.split("ReidaugError: ", 1)[-1] if len(lines) > 1 else last
