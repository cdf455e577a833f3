"""The generic training loop for any registered method (reidaug.models.method): the engine owns the loop,
devices, DDP, logging, samples and checkpoints; the method owns its optimizers and its iteration.

Per iteration: enter the stage of the iteration (the method config's `stages`), call
`method.training_step(batch, steps)` (the method zero-grads, back-propagates and steps its named optimizers in
its own order through `steps`, reidaug.train.steps), update the loss scaler, step every optimizer's
learning-rate schedule (constant until train.decay_start, then linear to 0).

A run folder holds config.yaml, log.jsonl, tb/ (TensorBoard), samples/iter_XXXXXX.png (sources | source pose |
target pose | generated | target) and checkpoints/{latest.pt, iter_XXXXXX.pt}. `resume` continues from
checkpoints/latest.pt exactly: the batch of iteration t depends only on (seed, t), and the checkpoint holds the
method's state dict, the optimizers, schedulers, grad scaler and every RNG, per DDP rank.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from reidaug import __version__
from reidaug.config import to_dict, to_yaml
from reidaug.errors import ReidaugError, first_line, user_message
from reidaug.train import ddp
from reidaug.train.checkpoint import save_checkpoint
from reidaug.train.config import lr_factor, stage_spans
from reidaug.train.data import IterationSampler
from reidaug.train.steps import Steps, stage_batch
from reidaug.utils.io import atomic_write_text, check_output_dir
from reidaug.utils.runtime import Amp, rng_state, seed_all, set_rng_state

EXTRA_STATE = "_extra_state"  # per-rank module state (image pools): saved per rank


class TrainingError(RuntimeError):
    """Training broke (a non-finite loss, diverged DDP replicas): not something the input can fix."""


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)  # the JSONL entries this call wrote (rank 0)
    method: object = None  # the trained Method (unwrapped), e.g. to generate in the same process


def load_table(pairs, ann, num_sources: int = 1, seed: int = 0) -> pd.DataFrame:
    """A pairs/tuples DataFrame, a CSV path, or None: all PATN-rule pairs of the annotations (M = 1) or as
    many M-source tuples (reidaug.data.pairs.make_tuples)."""
    from reidaug.data.pairs import make_pairs, make_tuples, read_pairs

    if pairs is None:
        df = make_pairs(ann) if num_sources == 1 else make_tuples(ann, num_sources, seed)
        if len(df) == 0:
            raise ReidaugError("the annotations give no training pairs (no identity has two torso-complete images)")
        return df
    return pairs if isinstance(pairs, pd.DataFrame) else read_pairs(pairs)


def train(cfg, data_root: str | Path, out_dir: str | Path, *, pairs=None, annotations=None, resume=None,
          device: str = "auto", overwrite: bool = False, show_progress: bool = True,
          callback: Callable[[int, dict], None] | None = None, allow_new_data: bool = False) -> TrainResult:  # fmt: skip
    """Train `cfg.method` (a composed method config, see reidaug.train.config) on samples of `data_root`.

    `pairs`: DataFrame / pairs or tuples CSV / None (PATN-rule pairs or tuples of `annotations`, default
    ROOT/annotations/train.csv). `resume`: a checkpoint path or an already loaded checkpoint dict.
    `callback(iteration, logs)` runs after every completed iteration (tests use it to interrupt a run).
    A resumed run refuses other pairs than it trained on unless `allow_new_data`.
    """
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.market import annotation_path
    from reidaug.data.pairs import check_same_identity, source_columns
    from reidaug.data.samples import SampleDataset, image_index, make_loader, to_device
    from reidaug.models import registry
    from reidaug.models.checkpoint import check_method, check_resumable, load_checkpoint

    info = ddp.setup(device)
    created = False  # this call made the run folder: a refusal before the first checkpoint removes it
    try:
        t = cfg.train
        out = Path(out_dir)
        ckpt = resume if isinstance(resume, dict) or resume is None else load_checkpoint(resume)
        if ckpt is not None:
            check_method(ckpt, cfg.method, out)
            check_resumable(ckpt, out)
        start = int(ckpt["iteration"]) if ckpt is not None else 0
        if info.main and ckpt is None and not overwrite:  # checks only: nothing is written before the model builds
            if (out / "checkpoints" / "latest.pt").is_file():
                raise ReidaugError(f"{out} already holds a run; pass --resume to continue it or --overwrite")
            check_output_dir(out, False)

        # Data: validated before anything heavy is built.
        m = registry.num_sources(cfg.model)
        ann = read_annotations(annotations or annotation_path(data_root))
        table = load_table(pairs, ann, m, t.seed)
        cols = source_columns(table)
        # What the generator sees, for the leakage check of augment (notes 12.5).
        seen = set(table["to"]).union(*(set(table[c]) for c in cols[:m]))
        digest = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()
        data = {"pairs": len(table), "pairs_sha256": digest, "images": sorted(seen)}
        before = (ckpt or {}).get("data") or {}
        if before.get("pairs_sha256") not in (None, digest) and not allow_new_data:
            raise ReidaugError(f"the run in {out} trained on other pairs ({before.get('pairs')} then, {len(table)} "
                               "now); resume on these with --new-data, or start a new run")  # fmt: skip
        dataset = SampleDataset.from_table(table, image_index(data_root), ann, m)
        check_same_identity(table, pairs if isinstance(pairs, str | Path) else "pairs")
        if start >= t.iterations:
            raise ReidaugError(f"the checkpoint is at iteration {start}; train.iterations is {t.iterations}")
        spans = stage_spans(cfg)
        if ckpt is not None and info.main:
            from reidaug.utils.progress import console

            console.print(f"resuming {out} from iteration {start:,} of {t.iterations:,}", highlight=False)

        # Model, optimizers, schedules.
        seed_all(t.seed)
        dev = info.device
        method = registry.get(cfg.method).build(cfg.model, cfg.loss).to(dev)
        check_stage_sources(method, spans, m)
        if info.enabled:
            seed_all(t.seed * 1009 + info.rank + 1)  # rank-specific dropout and pools (init is broadcast)
            if t.sync_bn and dev.type == "cuda":
                for path, part in ddp.part_modules(method).items():
                    method.set_submodule(path, ddp.convert_sync_bn(part))
        if info.main:
            if ckpt is None:
                check_output_dir(out, overwrite)
            created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", to_yaml(cfg))
        ddp.barrier(info)
        channels_last = bool(t.channels_last) and dev.type == "cuda"
        size = method.generator.image_size = tuple(cfg.image_size)  # the working size (generation reads it back)
        if channels_last:
            method = method.to(memory_format=torch.channels_last)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = not t.deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        method.train()
        optimizers = method.configure_optimizers(cfg.optim)
        if set(optimizers) != set(cfg.optim):
            raise TrainingError(f"{cfg.method}.configure_optimizers returned {sorted(optimizers)}, "
                                f"its config declares {sorted(cfg.optim)}")  # fmt: skip
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, _LrFactor(t.iterations, t.decay_start))
                      for k, o in optimizers.items()}  # fmt: skip
        amp = Amp(dev, t.amp, t.amp_dtype)
        scaler = amp.scaler()

        if ckpt is not None:
            _restore(ckpt, method, optimizers, schedulers, scaler, info)
            method.to(dev)
            follow_recipe(cfg, optimizers, schedulers)
        if t.compile:
            for part in ddp.part_modules(method).values():
                part.compile()
        wrapped = ddp.Wrapped(method, info, t.find_unused_parameters)
        inference = _module_path(method, method.inference_module())
        steps = Steps(method, optimizers, scaler, amp, spans)

        sampler = IterationSampler(len(dataset), t.batch_size, t.seed, start, t.iterations, info.rank, info.world)
        loader = make_loader(dataset, sampler, num_workers=t.num_workers, pin_memory=t.pin_memory and dev.type == "cuda",
                             prefetch_factor=t.prefetch_factor, seed=t.seed)  # fmt: skip
        first = next(iter(optimizers))
        logger = _Logger(out, start, t, info.main and show_progress, enabled=info.main,
                         keys=getattr(method, "progress_keys", ()), window=(ckpt or {}).get("logger"))  # fmt: skip
        fixed = _sample_batch(dataset, t) if info.main else None
        last_ckpt = batches = None
        try:
            batches = iter(loader)
            for it in range(start, t.iterations):
                batch = to_device(next(batches), dev, channels_last, size)
                lrs = {k: o.param_groups[0]["lr"] for k, o in optimizers.items()}
                steps.begin(it)
                logs = method.training_step(stage_batch(batch, steps.stage), steps)
                scaler.update()
                with warnings.catch_warnings():  # the schedule is the run's, also for an optimizer a stage idles
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
                    for sched in schedulers.values():
                        sched.step()

                done = it + 1
                checkpoint = done % t.checkpoint_every == 0 or done == t.iterations
                logger.step(done, logs, {"lr": lrs[first], **{f"lr_{k}": v for k, v in lrs.items() if k != first}},
                            sync=checkpoint or callback is not None)  # fmt: skip
                if fixed is not None and (done == t.iterations or (t.sample_every and done % t.sample_every == 0)):
                    with wrapped.unwrapped():
                        _write_samples(method, fixed, out / "samples" / f"iter_{done:06d}.png", dev, amp,
                                       channels_last, size)  # fmt: skip
                if checkpoint:
                    state = _state(cfg, done, wrapped, inference, optimizers, schedulers, scaler, sampler, info, data,
                                   logger.window())  # fmt: skip
                    if info.main:
                        last_ckpt = save_checkpoint(out / "checkpoints" / "latest.pt", state)
                        if done == t.iterations or (t.keep_every and done % t.keep_every == 0):
                            save_checkpoint(out / "checkpoints" / f"iter_{done:06d}.pt", state)
                    del state
                if callback is not None:
                    callback(done, {k: float(v) for k, v in logs.items()})
        finally:
            logger.close()
            if hasattr(batches, "_shutdown_workers"):  # stop loader processes now, also when interrupted
                batches._shutdown_workers()
        ddp.barrier(info)
        wrapped.restore()
        return TrainResult(out, t.iterations, last_ckpt, logger.history, wrapped.method)
    except Exception as e:
        if created and user_message(e) is not None and not (out / "checkpoints" / "latest.pt").exists():
            shutil.rmtree(out, ignore_errors=True)  # refused (a bad image, a full disk): nothing left behind
        raise
    finally:
        ddp.cleanup(info)


def check_stage_sources(method, spans, m: int) -> None:
    """A stage that trains on fewer sources than the model's M needs a generator that takes any M."""
    for _, _, st, _ in spans:
        k = min(st.sources or m, m)
        if not method.generator.accepts_sources(k):
            raise ReidaugError(f"stage {st.name!r} trains on {k} sources per target; the generator takes exactly {m}")


RUN_FILES = {"config.yaml", "log.jsonl", "tb", "samples", "checkpoints"}


def clear_unstarted(out: Path, method: str) -> bool:
    """A run folder of `method` killed (or failed) before its first checkpoint holds only what a run writes at
    its start: remove that, so the same command starts it again. True when something was cleared."""
    out = Path(out)
    if not (out / "config.yaml").is_file() or (out / "checkpoints" / "latest.pt").exists():
        return False
    names = {n for n in os.listdir(out) if not (n.startswith(".") and n.endswith(".tmp"))}  # torn atomic writes
    ckpts = out / "checkpoints"
    if not names <= RUN_FILES or (ckpts.is_dir() and any(not n.startswith(".") for n in os.listdir(ckpts))):
        return False
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    if not isinstance(saved, dict) or saved.get("method") != method:
        return False
    for name in os.listdir(out):
        path = out / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return True


class _LrFactor:
    """Picklable LambdaLR multiplier (see reidaug.train.config.lr_factor)."""

    def __init__(self, iterations: int, decay_start: int):
        self.iterations, self.decay_start = iterations, decay_start

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.iterations, self.decay_start)


def _module_path(method, module) -> str:
    """The submodule path of `module` inside `method` (where generation finds its weights)."""
    for name, m in method.named_modules():
        if m is module and name:
            return name
    raise TrainingError(f"{type(method).__name__}.inference_module() is not a submodule of the method")


def _state(cfg, done, wrapped, inference, optimizers, schedulers, scaler, sampler, info, data: dict,
           window: dict) -> dict:  # fmt: skip
    """The checkpoint dict. RNG and per-rank module state (image pools) are gathered from every rank (a collective
    call), with a hash of every rank's parameters: DDP replicas must hold identical weights."""
    with wrapped.unwrapped() as method:
        full = method.state_dict()
        params = parameter_hash(wrapped.raw.values())
    extra = {k: v for k, v in full.items() if k.endswith(EXTRA_STATE)}
    model = {k: v for k, v in full.items() if not k.endswith(EXTRA_STATE)}
    per_rank = ddp.gather_objects(info, {"rng": rng_state(), "extra": extra, "params": params})
    replicas = [r["params"] for r in per_rank]
    if len(set(replicas)) > 1:
        raise TrainingError(f"DDP replicas diverged at iteration {done}: parameter hashes {replicas}")
    return {
        "reidaug_version": __version__,
        "method": cfg.method,
        "config": to_dict(cfg),
        "iteration": done,
        "world_size": info.world,
        "model": model,
        "inference": inference,
        "ranks": [{"rng": r["rng"], "extra": r["extra"]} for r in per_rank],
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "scaler": scaler.state_dict(),
        "sampler": {**sampler.state_dict(), "iteration": done},
        "replicas": replicas,
        "data": data,
        "logger": window,
    }


def parameter_hash(modules) -> str:
    """sha256 of every parameter's bytes (not buffers: BN running statistics are per-rank between syncs)."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def follow_recipe(cfg, optimizers, schedulers) -> None:
    """After loading optimizer and scheduler states, follow the current config's learning rates, betas and
    schedule (identical when unchanged; `--resume --set train.iterations=...` extends a run with the new
    schedule)."""
    t = cfg.train
    for name, opt in optimizers.items():
        sched, ocfg = schedulers[name], cfg.optim[name]
        sched.lr_lambdas = [_LrFactor(t.iterations, t.decay_start) for _ in opt.param_groups]
        sched.base_lrs = [ocfg.lr for _ in opt.param_groups]
        for g, fn in zip(opt.param_groups, sched.lr_lambdas):
            g["initial_lr"] = ocfg.lr
            g["lr"] = ocfg.lr * fn(sched.last_epoch)
            g["betas"] = tuple(ocfg.betas)
            g["weight_decay"] = ocfg.weight_decay
        sched._last_lr = [g["lr"] for g in opt.param_groups]


def _restore(ckpt, method, optimizers, schedulers, scaler, info) -> None:
    ranks = ckpt.get("ranks") or []
    mine = ranks[min(info.rank, len(ranks) - 1)] if ranks else {"extra": {}}
    load_method_state(method, {**ckpt["model"], **mine["extra"]})
    saved = set(ckpt.get("optimizers", {}))
    if saved != set(optimizers):
        raise ReidaugError(f"checkpoint optimizers {sorted(saved)} differ from the method's {sorted(optimizers)}")
    try:
        for k, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
            schedulers[k].load_state_dict(ckpt["schedulers"][k])
        scaler.load_state_dict(ckpt["scaler"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise ReidaugError(f"checkpoint optimizer state does not fit: {first_line(e)}") from None
    if len(ranks) == info.world:
        set_rng_state(mine["rng"])
    else:  # a different number of processes: continue with fresh, still seeded, streams
        from reidaug.utils.progress import console

        if info.main:
            console.print(f"[yellow]resuming {len(ranks)}-process checkpoint on {info.world}: RNG streams reseeded")
        seed_all(int(ckpt["iteration"]) * 7919 + info.rank)


def load_method_state(method, state: dict) -> None:
    """A checkpoint's method state dict into a freshly built method (one error line when it does not fit)."""
    try:
        method.load_state_dict(state)
    except RuntimeError as e:
        raise ReidaugError(f"checkpoint weights do not fit the model: {first_line(e)}") from None


class _Logger:
    """Rank 0's outputs: progress bar, log.jsonl (mean losses per `log_every` window), TensorBoard scalars.

    Losses arrive as device scalars and are summed on the device (in float64, the same sums as Python floats);
    the host reads them only at a log line or when asked (`sync`: before a checkpoint), so the training loop never
    waits for the device. The first non-finite loss is remembered on the device, with its iteration, and raised as
    a TrainingError at the next read: before any checkpoint holds its weights."""

    def __init__(self, out: Path, start: int, t, show: bool, enabled: bool, keys=(), window: dict | None = None):
        self.enabled, self.t, self.history, self.keys = enabled, t, [], tuple(keys)
        window = window or {}  # a resumed run continues the checkpoint's half-filled averaging window
        self.sums: dict[str, torch.Tensor | float] = dict(window.get("sums", {}))
        self.counts: dict[str, int] = dict(window.get("counts", {}))  # a value a stage does not log is averaged
        self.n = int(window.get("n", 0))  # over the iterations that do
        self.bad: torch.Tensor | None = None  # the first iteration with a non-finite loss (0: none yet)
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

    def step(self, done: int, logs: dict, lrs: dict[str, float], sync: bool = False) -> None:
        values = {k: v.detach().double() if torch.is_tensor(v) else float(v) for k, v in logs.items()}
        tensors = [v for v in values.values() if torch.is_tensor(v)]
        if tensors:
            finite = torch.isfinite(torch.stack(tensors)).all()
            bad = torch.where(finite, 0, done)
            self.bad = bad if self.bad is None else torch.where(self.bad > 0, self.bad, bad)
        if any(not math.isfinite(v) for v in values.values() if not torch.is_tensor(v)):
            self._raise(done, values)
        if self.enabled:
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
            self.n += 1
            if self.bar is not None:
                self.bar.advance(self.task)
        due = not (done % self.t.log_every and done != self.t.iterations)  # the same reads on every rank
        if sync or due:
            self.check(values)
        if not (due and self.enabled):
            return
        now = time.perf_counter()
        entry = {"iteration": done, **lrs, **{k: float(v) / self.counts[k] for k, v in self.sums.items()},
                 "it_per_s": self.n / max(now - self.tick, 1e-9)}  # fmt: skip
        self.sums, self.counts, self.n, self.tick = {}, {}, 0, now
        self.file.write(json.dumps(entry) + "\n")
        self.history.append(entry)
        if self.tb is not None:
            for k, v in entry.items():
                if k != "iteration":
                    self.tb.add_scalar(k if k in lrs or k == "it_per_s" else f"loss/{k}", v, done)
        if self.bar is not None:
            shown = [k for k in self.keys if k in entry] or [k for k in logs][:3]
            self.bar.update(self.task, info=" ".join(f"{k} {entry[k]:.3f}" for k in shown))

    def check(self, last: dict) -> None:
        """Raise if any loss since the start was non-finite (one device read)."""
        if self.bad is not None and (bad := int(self.bad)):
            self._raise(bad, last)

    @staticmethod
    def _raise(done: int, last: dict):
        values = ", ".join(f"{k} {float(v):.4g}" for k, v in last.items())
        raise TrainingError(f"non-finite loss at iteration {done} (latest values: {values})")

    def window(self) -> dict:
        """The losses summed since the last log line: a checkpoint between two log lines keeps them."""
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "counts": dict(self.counts), "n": self.n}

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.stop()


def _sample_batch(dataset, t) -> dict | None:
    """Fixed samples for the sample grids, chosen with the seed (the same rows in every grid of a run)."""
    from torch.utils.data import default_collate

    n = min(t.sample_count, len(dataset))
    if n < 1:
        return None
    idx = np.sort(np.random.default_rng([t.seed, 2**31 - 1]).choice(len(dataset), size=n, replace=False))
    return default_collate([dataset[int(i)] for i in idx])


def _write_samples(method, batch, path: Path, dev, amp: Amp, channels_last: bool, work_size) -> None:
    """sources | first source's pose | target pose | generated | target, one row per fixed sample, made by the
    inference module in eval mode (at its working size, shown at the data's)."""
    from reidaug.data.images import grid, to_uint8, write_image
    from reidaug.data.keypoints import pose_image
    from reidaug.data.samples import resize_images, to_device

    was_training = method.training
    method.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []), amp.autocast():
            fake = method.inference_module()(to_device(batch, dev, channels_last, work_size))["image"]
    finally:
        method.train(was_training)
    fake = to_uint8(resize_images(fake.float(), tuple(batch["tgt_img"].shape[-2:])))
    src = batch["src_img"].permute(0, 1, 3, 4, 2).numpy()  # (B, M, H, W, 3)
    tgt = batch["tgt_img"].permute(0, 2, 3, 1).numpy()
    size = tuple(src.shape[2:4])
    rows = [[*src[i], pose_image(batch["src_kp"][i, 0].numpy(), size), pose_image(batch["tgt_kp"][i].numpy(), size),
             fake[i], tgt[i]] for i in range(len(src))]  # fmt: skip
    write_image(path, grid(rows))
