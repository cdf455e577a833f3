"""The generic GAN training loop: any registered method (reidaug.models.method.GANMethod) on Market pairs.

Per iteration (PATN order, notes 2.6): fake = G(batch); update G on generator_loss with the discriminators
frozen; update the discriminators on discriminator_loss(batch, fake.detach()). Adam for G and for the Ds,
learning rate constant then linear to 0 (iteration-based LambdaLR), bf16 autocast on CUDA.

A run folder holds config.yaml, log.jsonl, tb/ (TensorBoard), samples/iter_XXXXXX.png (source | source pose |
target pose | generated | target) and checkpoints/{latest.pt, iter_XXXXXX.pt}. `resume` continues from
checkpoints/latest.pt exactly: the batch of iteration t depends only on (seed, t), and the checkpoint holds
the models, optimizers, schedulers, grad scaler, image pools and every RNG, per DDP rank.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reidaug import __version__
from reidaug.config import to_dict, to_yaml
from reidaug.errors import ReidaugError, first_line
from reidaug.train import ddp
from reidaug.train.checkpoint import (
    load_checkpoint,
    load_pool_states,
    pool_states,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reidaug.train.config import lr_factor
from reidaug.train.data import IterationSampler, PairDataset, image_index, make_loader, to_device
from reidaug.utils.io import atomic_write_text, check_output_dir
from reidaug.utils.runtime import seed_all


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)  # the JSONL entries this call wrote (rank 0)
    method: object = None  # the trained GANMethod (unwrapped), e.g. to generate in the same process


def default_annotations(root: str | Path, split: str = "train") -> Path:
    return Path(root) / "annotations" / f"{split}.csv"


def load_pairs(pairs, ann) -> pd.DataFrame:
    """A pairs DataFrame, a `from,to` CSV path, or None (all PATN-rule pairs of the annotations)."""
    from reidaug.data.pairs import make_pairs, read_pairs

    if pairs is None:
        df = make_pairs(ann)
        if len(df) == 0:
            raise ReidaugError("the annotations give no training pairs (no identity has two torso-complete images)")
        return df
    return pairs if isinstance(pairs, pd.DataFrame) else read_pairs(pairs)


def autocast_for(device: torch.device, cfg):
    use = bool(cfg.amp) and device.type == "cuda"
    dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype, enabled=use)), use and dtype == torch.float16


def set_requires_grad(modules, flag: bool) -> None:
    for m in modules:
        m.requires_grad_(flag)


def train(cfg, data_root: str | Path, out_dir: str | Path, *, pairs=None, annotations=None, resume=None,
          device: str = "auto", overwrite: bool = False, show_progress: bool = True,
          callback: Callable[[int, dict], None] | None = None) -> TrainResult:  # fmt: skip
    """Train `cfg.method` (a composed method config, see reidaug.train.config) on pairs of `data_root`.

    `pairs`: DataFrame / CSV path / None (PATN-rule pairs of `annotations`, default ROOT/annotations/train.csv).
    `resume`: a checkpoint path or an already loaded checkpoint dict. `callback(iteration, logs)` runs after
    every completed iteration (tests use it to interrupt a run).
    """
    from reidaug.data.keypoints import read_annotations
    from reidaug.models import registry

    info = ddp.setup(device)
    try:
        t = cfg.train
        out = Path(out_dir)
        ckpt = resume if isinstance(resume, dict) or resume is None else load_checkpoint(resume)
        if ckpt is not None and ckpt["method"] != cfg.method:
            raise ReidaugError(f"checkpoint is for method {ckpt['method']!r}, not {cfg.method!r}")
        start = int(ckpt["iteration"]) if ckpt is not None else 0
        if info.main and ckpt is None and not overwrite:  # checks only: nothing is written before the model builds
            if (out / "checkpoints" / "latest.pt").is_file():
                raise ReidaugError(f"{out} already holds a run; pass --resume to continue it or --overwrite")
            check_output_dir(out, False)

        # Data: validated before anything heavy is built.
        ann = read_annotations(annotations or default_annotations(data_root))
        pair_df = load_pairs(pairs, ann)
        # What the generator sees, for the leakage check of augment (notes 12.5).
        data = {"pairs": len(pair_df), "images": sorted(set(pair_df["from"]) | set(pair_df["to"]))}
        dataset = PairDataset.from_pairs(pair_df, image_index(data_root), ann)
        if start >= t.iterations:
            raise ReidaugError(f"the checkpoint is at iteration {start}; train.iterations is {t.iterations}")

        # Model, optimisers, schedules.
        seed_all(t.seed)
        dev = info.device
        spec = registry.get(cfg.method)
        method = spec.build(cfg.model, cfg.loss).to(dev)
        if info.enabled:
            seed_all(t.seed * 1009 + info.rank + 1)  # rank-specific dropout and pools (init is broadcast)
            if t.sync_bn and dev.type == "cuda":
                method.generator = ddp.convert_sync_bn(method.generator)
                for k in list(method.discriminators):
                    method.discriminators[k] = ddp.convert_sync_bn(method.discriminators[k])
        if info.main:
            if ckpt is None:
                check_output_dir(out, overwrite)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", to_yaml(cfg))
        ddp.barrier(info)
        channels_last = bool(t.channels_last) and dev.type == "cuda"
        if channels_last:
            method = method.to(memory_format=torch.channels_last)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = not t.deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        method.train()
        gen, discs = method.generator, list(method.discriminators.values())
        opt_g, opt_d, sched_g, sched_d = build_optimizers(method, t)
        autocast, fp16 = autocast_for(dev, t)
        scaler = torch.amp.GradScaler(dev.type, enabled=fp16)

        if ckpt is not None:
            _restore(ckpt, method, opt_g, opt_d, sched_g, sched_d, scaler, info)
            _apply_recipe(t, opt_g, opt_d, sched_g, sched_d)
        if t.compile:
            gen.compile()
            for d in discs:
                d.compile()
        wrapped = ddp.Wrapped(method, info, t.find_unused_parameters)

        sampler = IterationSampler(len(dataset), t.batch_size, t.seed, start, t.iterations, info.rank, info.world)
        loader = make_loader(dataset, sampler, num_workers=t.num_workers, pin_memory=t.pin_memory and dev.type == "cuda",
                             prefetch_factor=t.prefetch_factor, seed=t.seed)  # fmt: skip
        logger = _Logger(out, start, t, info.main and show_progress, enabled=info.main)
        fixed = _sample_batch(dataset, t) if info.main else None
        last_ckpt = batches = None
        try:
            batches = iter(loader)
            for it in range(start, t.iterations):
                batch = to_device(next(batches), dev, channels_last)
                lr = opt_g.param_groups[0]["lr"]
                logs = train_step(method, batch, opt_g, opt_d, scaler, autocast, wrapped.d_no_sync)
                sched_g.step()
                sched_d.step()

                done = it + 1
                if not all(math.isfinite(v) for v in logs.values()):
                    raise ReidaugError(f"non-finite loss at iteration {done}: {logs}")
                logger.step(done, logs, lr)
                if fixed is not None and (done == t.iterations or (t.sample_every and done % t.sample_every == 0)):
                    with wrapped.unwrapped():
                        _write_samples(method, fixed, out / "samples" / f"iter_{done:06d}.png", dev, autocast,
                                       channels_last)  # fmt: skip
                if done % t.checkpoint_every == 0 or done == t.iterations:
                    state = _state(cfg, done, wrapped, opt_g, opt_d, sched_g, sched_d, scaler, sampler, info, data)
                    if info.main:
                        last_ckpt = save_checkpoint(out / "checkpoints" / "latest.pt", state)
                        if done == t.iterations or (t.keep_every and done % t.keep_every == 0):
                            save_checkpoint(out / "checkpoints" / f"iter_{done:06d}.pt", state)
                    del state
                if callback is not None:
                    callback(done, logs)
        finally:
            logger.close()
            if hasattr(batches, "_shutdown_workers"):  # stop loader processes now, also when interrupted
                batches._shutdown_workers()
        ddp.barrier(info)
        wrapped.restore()
        return TrainResult(out, t.iterations, last_ckpt, logger.history, wrapped.method)
    finally:
        ddp.cleanup(info)


def build_optimizers(method, t):
    """Adam for G and one for all Ds (per-element updates: the same as one Adam per D), with the
    constant-then-linear LambdaLR of each; (opt_g, opt_d, sched_g, sched_d)."""
    betas = tuple(t.betas)
    opt_g = torch.optim.Adam(method.generator.parameters(), lr=t.lr, betas=betas)
    params = chain(*(d.parameters() for d in method.discriminators.values()))
    opt_d = torch.optim.Adam(params, lr=t.lr_d if t.lr_d is not None else t.lr, betas=betas)
    factor = _LrFactor(t.iterations, t.decay_start)
    return opt_g, opt_d, torch.optim.lr_scheduler.LambdaLR(opt_g, factor), torch.optim.lr_scheduler.LambdaLR(opt_d, factor)


def train_step(method, batch, opt_g, opt_d, scaler, autocast, d_no_sync=contextlib.nullcontext) -> dict:
    """One PATN-order iteration: fake = G(batch); G step with the Ds frozen; D step on fake.detach().

    Returns the method's logged loss values (floats). `d_no_sync` keeps DDP from syncing D during the G step.
    """
    discs = list(method.discriminators.values())
    with autocast():
        fake = method.generate(batch)
    set_requires_grad(discs, False)
    with autocast(), d_no_sync():
        g_total, g_logs = method.generator_loss(batch, fake)
    opt_g.zero_grad(set_to_none=True)
    scaler.scale(g_total).backward()
    scaler.step(opt_g)
    set_requires_grad(discs, True)
    with autocast():
        d_total, d_logs = method.discriminator_loss(batch, fake.detach())
    opt_d.zero_grad(set_to_none=True)
    scaler.scale(d_total).backward()
    scaler.step(opt_d)
    scaler.update()
    return {**{k: float(v) for k, v in g_logs.items()}, **{k: float(v) for k, v in d_logs.items()}}


class _LrFactor:
    """Picklable LambdaLR multiplier (see reidaug.train.config.lr_factor)."""

    def __init__(self, iterations: int, decay_start: int):
        self.iterations, self.decay_start = iterations, decay_start

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.iterations, self.decay_start)


def _state(cfg, done, wrapped, opt_g, opt_d, sched_g, sched_d, scaler, sampler, info, data: dict) -> dict:
    """The checkpoint dict; RNG and image pools are gathered from every rank (a collective call), with a
    hash of every rank's parameters: DDP replicas must hold identical weights."""
    modules = [wrapped.generator, *wrapped.discriminators.values()]
    mine = {"rng": rng_state(), "pools": pool_states(wrapped.method), "params": parameter_hash(modules)}
    per_rank = ddp.gather_objects(info, mine)
    replicas = [r["params"] for r in per_rank]
    if len(set(replicas)) > 1:
        raise ReidaugError(f"DDP replicas diverged at iteration {done}: parameter hashes {replicas}")
    return {
        "reidaug_version": __version__,
        "method": cfg.method,
        "config": to_dict(cfg),
        "iteration": done,
        "world_size": info.world,
        "models": {
            "generator": wrapped.generator.state_dict(),
            "discriminators": {k: d.state_dict() for k, d in wrapped.discriminators.items()},
            "pools": [r["pools"] for r in per_rank],
        },
        "optimizers": {"generator": opt_g.state_dict(), "discriminators": opt_d.state_dict()},
        "schedulers": {"generator": sched_g.state_dict(), "discriminators": sched_d.state_dict()},
        "scaler": scaler.state_dict(),
        "rng": [r["rng"] for r in per_rank],
        "sampler": {**sampler.state_dict(), "iteration": done},
        "replicas": replicas,
        "data": data,
    }


def parameter_hash(modules) -> str:
    """sha256 of every parameter's bytes (not buffers: BN running statistics are per-rank between syncs)."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _apply_recipe(t, opt_g, opt_d, sched_g, sched_d) -> None:
    """After loading optimiser and scheduler states, follow the current config's lr, betas and schedule
    (identical when unchanged; `--resume --set train.iterations=...` extends a run with the new schedule)."""
    for opt, sched, lr in ((opt_g, sched_g, t.lr), (opt_d, sched_d, t.lr_d if t.lr_d is not None else t.lr)):
        sched.lr_lambdas = [_LrFactor(t.iterations, t.decay_start) for _ in opt.param_groups]
        sched.base_lrs = [lr for _ in opt.param_groups]
        for g, fn in zip(opt.param_groups, sched.lr_lambdas):
            g["initial_lr"] = lr
            g["lr"] = lr * fn(sched.last_epoch)
            g["betas"] = tuple(t.betas)
        sched._last_lr = [g["lr"] for g in opt.param_groups]


def _restore(ckpt, method, opt_g, opt_d, sched_g, sched_d, scaler, info) -> None:
    load_models(method, ckpt)
    opt_g.load_state_dict(ckpt["optimizers"]["generator"])
    opt_d.load_state_dict(ckpt["optimizers"]["discriminators"])
    sched_g.load_state_dict(ckpt["schedulers"]["generator"])
    sched_d.load_state_dict(ckpt["schedulers"]["discriminators"])
    scaler.load_state_dict(ckpt["scaler"])
    rngs, pools = ckpt["rng"], ckpt["models"]["pools"]
    if len(rngs) == info.world:
        set_rng_state(rngs[info.rank])
        load_pool_states(method, pools[info.rank], info.device)
    else:  # a different number of processes: continue with fresh, still seeded, streams
        from reidaug.utils.progress import console

        if info.main:
            console.print(f"[yellow]resuming {len(rngs)}-process checkpoint on {info.world}: RNG streams reseeded")
        seed_all(int(ckpt["iteration"]) * 7919 + info.rank)


def load_models(method, ckpt: dict) -> None:
    """Generator and discriminator weights of a checkpoint into a freshly built method (one error line)."""
    try:
        method.generator.load_state_dict(ckpt["models"]["generator"])
        saved = ckpt["models"]["discriminators"]
        if set(saved) != set(method.discriminators):
            raise ReidaugError(f"checkpoint discriminators {sorted(saved)} != {sorted(method.discriminators)}")
        for k, d in method.discriminators.items():
            d.load_state_dict(saved[k])
    except RuntimeError as e:
        raise ReidaugError(f"checkpoint weights do not fit the model: {first_line(e)}") from None


class _Logger:
    """Rank 0's outputs: progress bar, log.jsonl (mean losses per `log_every` window), TensorBoard scalars."""

    def __init__(self, out: Path, start: int, t, show: bool, enabled: bool):
        self.enabled, self.t, self.history = enabled, t, []
        self.sums: dict[str, float] = {}
        self.n = 0
        self.tick = time.perf_counter()
        self.tb = self.bar = None
        if not enabled:
            return
        self.path = out / "log.jsonl"
        if self.path.exists():  # resumed: drop what the interrupted run logged after its checkpoint
            keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["iteration"] <= start]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))
        self.file = open(self.path, "a", buffering=1)
        if t.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=start if start else None)
        if show:
            from reidaug.utils.progress import progress

            self.bar = progress()
            self.bar.start()
            self.task = self.bar.add_task("train", total=t.iterations, completed=start, info="")

    def step(self, done: int, logs: dict, lr: float) -> None:
        if not self.enabled:
            return
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        if done % self.t.log_every and done != self.t.iterations:
            return
        now = time.perf_counter()
        entry = {"iteration": done, "lr": lr, **{k: v / self.n for k, v in self.sums.items()},
                 "it_per_s": self.n / max(now - self.tick, 1e-9)}  # fmt: skip
        self.sums, self.n, self.tick = {}, 0, now
        self.file.write(json.dumps(entry) + "\n")
        self.history.append(entry)
        if self.tb is not None:
            for k, v in entry.items():
                if k != "iteration":
                    self.tb.add_scalar(k if k in ("lr", "it_per_s") else f"loss/{k}", v, done)
        if self.bar is not None:
            shown = [k for k in ("g_l1", "g_total", "d_total") if k in entry]
            shown = shown or [k for k in entry if k not in ("iteration", "lr", "it_per_s")][:3]
            self.bar.update(self.task, info=" ".join(f"{k.removeprefix('g_')} {entry[k]:.3f}" for k in shown))

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.stop()


def _sample_batch(dataset: PairDataset, t) -> dict | None:
    """Fixed pairs for the sample grids, chosen with the seed (the same rows in every grid of a run)."""
    from torch.utils.data import default_collate

    n = min(t.sample_count, len(dataset))
    if n < 1:
        return None
    idx = np.sort(np.random.default_rng([t.seed, 2**31 - 1]).choice(len(dataset), size=n, replace=False))
    return default_collate([dataset[int(i)] for i in idx])


def _write_samples(method, batch, path: Path, dev, autocast, channels_last: bool) -> None:
    """source | source pose | target pose | generated | target, one row per fixed pair (eval mode)."""
    from reidaug.data.images import grid, to_uint8, write_image
    from reidaug.data.keypoints import pose_image

    was_training = method.training
    method.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []), autocast():
            fake = method.generate(to_device(batch, dev, channels_last))
    finally:
        method.train(was_training)
    fake = to_uint8(fake)
    src = batch["src_img"].permute(0, 2, 3, 1).numpy()
    tgt = batch["tgt_img"].permute(0, 2, 3, 1).numpy()
    size = tuple(src.shape[1:3])
    rows = [[src[i], pose_image(batch["src_kp"][i].numpy(), size), pose_image(batch["tgt_kp"][i].numpy(), size),
             fake[i], tgt[i]] for i in range(len(src))]  # fmt: skip
    write_image(path, grid(rows))
