"""torchreid engines (softmax, triplet, circle) with the fixes torchreid 1.4.0 needs, as subclasses.

`ReidEngineMixin` over torchreid's `Engine`:
* `train`: one epoch with a rich progress bar and one log line (torchreid prints every `print_freq` batches), the
  losses kept on the device and read every `log_every` steps (torchreid calls `.item()` twice a step),
  the shared AMP policy on the GPU (reidaug.utils.runtime.Amp: bf16, or fp16 with loss scaling), and a resumable
  checkpoint every `checkpoint_every` epochs, RNG state included (`--resume` is exact on the CPU);
* `save_model`: torchreid's crashes at the end of `run()` without a scheduler (`None.state_dict()`) and pickles a
  numpy `rank1` that torch >= 2.6 cannot load; ours saves Python numbers, atomically;
* `_evaluate`: our vectorised Market evaluation (`evaluate_market`) instead of torchreid's Python fallback (its
  Cython module is missing from the wheel), features extracted under autocast on the GPU;
* `run`: torchreid's loop, its prints sent to the log, returning the metrics (torchreid returns None).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import torch

from reidaug.config import to_dict
from reidaug.reid._torchreid import reid
from reidaug.reid.evaluate import distance_matrix, evaluate_market
from reidaug.reid.losses import CircleLoss
from reidaug.reid.weights import save_checkpoint
from reidaug.utils.runtime import Amp, rng_state, set_rng_state

LAST = "last.pth"  # resumable state, every `checkpoint_every` epochs
FINAL = "model.pth"  # the trained model (torchreid checkpoint layout: state_dict, epoch, rank1, ...)


class _LogStream(io.TextIOBase):
    """A file-like object turning torchreid's print() lines into log records."""

    def __init__(self, log: logging.Logger):
        self.log, self.buf = log, ""

    def write(self, s: str) -> int:
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                self.log.debug("torchreid: %s", line.rstrip())
        return len(s)


@contextlib.contextmanager
def torchreid_prints_to(log: logging.Logger):
    """Send what torchreid prints to `log` (the run's log file) instead of stdout."""
    with contextlib.redirect_stdout(_LogStream(log)):
        yield


class ReidEngineMixin:
    """Put first in the bases: `class X(ReidEngineMixin, reid.engine.ImageSoftmaxEngine)`."""

    def setup(self, cfg, run_dir: Path, log: logging.Logger, bar=None) -> None:
        """Attach the run's config, folder, log and (optional) rich progress bar."""
        self.cfg, self.run_dir, self.log, self.bar = cfg, Path(run_dir), log, bar
        self.amp = Amp(torch.device("cuda" if self.use_gpu else "cpu"), cfg.amp, cfg.amp_dtype)
        self.scaler = self.amp.scaler()
        self.metrics: dict | None = None
        self.history: list[dict] = []

    # -- training ----------------------------------------------------------------------------------------------
    def autocast(self):
        return self.amp.autocast()

    def to_device(self, *tensors):
        return tuple(t.cuda(non_blocking=True) for t in tensors) if self.use_gpu else tensors

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train(self, print_freq=10, fixbase_epoch=0, open_layers=None):
        """One epoch. The losses stay on the device and are read every `log_every` steps (one wait each)."""
        self.set_model_mode("train")
        self.two_stepped_transfer_learning(self.epoch, fixbase_epoch, open_layers)
        self.num_batches = len(self.train_loader)
        means = DeviceMeans()
        t0 = time.time()
        task = None
        if self.bar is not None:
            task = self.bar.add_task(f"epoch {self.epoch + 1}/{self.max_epoch}", total=self.num_batches, info="",
                                     unit="batch", summary=False)  # the epoch's log line below is its summary
        for i, data in enumerate(self.train_loader):
            self.batch_idx = i
            means.add(self.forward_backward(data))
            read = (i + 1) % self.cfg.log_every == 0 or i + 1 == self.num_batches
            avg = means.read() if read else None
            if task is not None:
                self.bar.update(task, advance=1, **({"info": _short(avg)} if avg else {}))
            if avg and self.writer is not None:
                n_iter = self.epoch * self.num_batches + self.batch_idx
                for name, value in avg.items():
                    self.writer.add_scalar("Train/" + name, value, n_iter)
        avg = means.read()
        lr = self.get_current_lr()
        self.update_lr()
        row = {"epoch": self.epoch + 1, "lr": lr, "seconds": round(time.time() - t0, 2)}
        row.update({k: round(v, 5) for k, v in avg.items()})
        self.history.append(row)
        self.log.info(
            "epoch %d/%d  %s  lr %.2e  %.1fs",
            self.epoch + 1,
            self.max_epoch,
            _short(avg),
            lr,
            row["seconds"],
        )
        every = self.cfg.checkpoint_every
        if every > 0 and (self.epoch + 1) % every == 0:
            self.save_state(self.epoch + 1)

    def save_state(self, epochs_done: int) -> None:
        """Everything needed to continue after `epochs_done` epochs (`run_dir/last.pth`)."""
        save_checkpoint(
            self.run_dir / LAST,
            {
                "state_dict": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": epochs_done,
                "history": self.history,
                "config": to_dict(self.cfg),
                "rng": rng_state(),  # python (identity sampler), numpy, torch (shuffling, workers, flips, dropout)
                "device_data_rng": _device_data_rng(self.train_loader),  # train_data=device: its augmentations
            },
        )

    def load_state(self, state: dict) -> int:
        """Continue from `save_state`'s dict: the same weights, optimizer, schedule and random draws (a resumed run
        on the CPU ends with the uninterrupted run's metrics)."""
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history = list(state.get("history", []))
        if state.get("rng") is not None:
            set_rng_state(state["rng"])
        gen = getattr(getattr(self.train_loader, "augment", None), "gen", None)
        if gen is not None and state.get("device_data_rng") is not None:
            gen.set_state(state["device_data_rng"])
        return int(state["epoch"])

    def save_model(self, epoch, rank1, save_dir, is_best=False):
        """The final model; torchreid's version crashes when the scheduler is None."""
        if not self.cfg.save_checkpoint:
            return
        path = save_checkpoint(
            Path(save_dir) / FINAL,
            {
                "state_dict": self.model.state_dict(),
                "epoch": epoch + 1,
                "rank1": float(rank1),
                "mAP": None if self.metrics is None else self.metrics["mAP"],
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            },
        )
        self.log.info("model saved to %s", path)

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, loader, name: str):
        feats, pids, camids = [], [], []
        task = None
        if self.bar is not None:
            task = self.bar.add_task(f"features {name}", total=len(loader.dataset), info="", unit="img")
        for data in loader:
            imgs, p, c = self.parse_data_for_eval(data)
            (imgs,) = self.to_device(imgs)
            with self.autocast():
                f = self.extract_features(imgs)
            feats.append(f.float().cpu())
            pids.append(p.numpy())
            camids.append(c.numpy())
            if task is not None:
                self.bar.update(task, advance=len(imgs))
        return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)

    def _evaluate(self, dataset_name="", query_loader=None, gallery_loader=None, dist_metric="euclidean",
                  normalize_feature=False, **_ignored):  # fmt: skip
        t0 = time.time()
        qf, q_pids, q_camids = self.extract(query_loader, "query")
        gf, g_pids, g_camids = self.extract(gallery_loader, "gallery")
        t1 = time.time()
        distmat = distance_matrix(qf, gf, dist_metric, normalize_feature).numpy()
        res = evaluate_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=self.cfg.max_rank)
        self.metrics = {  # in %, as re-ID papers report them
            "mAP": 100 * res.mAP,
            "rank1": 100 * res.rank(1),
            "rank5": 100 * res.rank(5),
            "rank10": 100 * res.rank(10),
            "cmc": [round(100 * float(x), 4) for x in res.cmc],
            "num_query": int(len(q_pids)),
            "num_gallery": int(len(g_pids)),
            "num_valid_queries": res.num_valid_queries,
            "feature_dim": int(qf.shape[1]),
            "feature_seconds": round(t1 - t0, 2),
            "ranking_seconds": round(time.time() - t1, 2),
        }
        m = self.metrics
        self.log.info(
            "%s: mAP %.1f%%  rank-1 %.1f%%  rank-5 %.1f%%  rank-10 %.1f%%  (%d queries, %d valid, %d gallery)",
            dataset_name, m["mAP"], m["rank1"], m["rank5"], m["rank10"], len(q_pids), res.num_valid_queries,
            len(g_pids),
        )  # fmt: skip
        return res.rank(1), res.mAP

    def run(self, **kwargs) -> dict:
        """torchreid's `Engine.run`, returning the final metrics."""
        with torchreid_prints_to(self.log):
            super().run(**kwargs)
        return self.metrics


def _device_data_rng(loader) -> torch.Tensor | None:
    gen = getattr(getattr(loader, "augment", None), "gen", None)
    return None if gen is None else gen.get_state()


def _short(avg: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in avg.items())


class DeviceMeans:
    """Running means of a step's logged values (tensors stay where they are: adding waits for nothing);
    `read()` brings all of them to the host at once."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict) -> None:
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def read(self) -> dict[str, float]:
        if not self.count:
            return {}
        values = torch.stack([v.reshape(()).to(next(iter(self.sums.values())).device)
                              for v in self.sums.values()]).tolist()  # fmt: skip
        return {k: v / self.count for k, v in zip(self.sums, values)}


class SoftmaxEngine(ReidEngineMixin, reid.engine.ImageSoftmaxEngine):
    """Cross-entropy (label smoothing optional) on identity logits."""

    def forward_backward(self, data):
        imgs, pids = self.to_device(*self.parse_data_for_train(data))
        with self.autocast():
            outputs = self.model(imgs)
            loss = self.compute_loss(self.criterion, outputs, pids)
        self.step(loss)
        return {"loss": loss.detach(), "acc": reid.metrics.accuracy(outputs.detach(), pids)[0]}


def metric_plus_softmax_step(engine, data, metric, weight_metric: float, key: str, cross_entropy,
                             weight_x: float) -> dict:  # fmt: skip
    """One step of `weight_metric * metric(features) + weight_x * cross_entropy(logits)` (either may be 0)."""
    imgs, pids = engine.to_device(*engine.parse_data_for_train(data))
    summary, loss = {}, 0.0
    with engine.autocast():
        outputs, features = engine.model(imgs)
        if weight_metric > 0:
            loss_m = engine.compute_loss(metric, features.float(), pids)
            loss = loss + weight_metric * loss_m
            summary[key] = loss_m.detach()
        if weight_x > 0:
            loss_x = engine.compute_loss(cross_entropy, outputs, pids)
            loss = loss + weight_x * loss_x
            summary["loss_x"] = loss_x.detach()
            summary["acc"] = reid.metrics.accuracy(outputs.detach(), pids)[0]
    engine.step(loss)
    return summary


class TripletEngine(ReidEngineMixin, reid.engine.ImageTripletEngine):
    """Batch-hard triplet loss on features + cross-entropy on logits (weights weight_t, weight_x)."""

    def forward_backward(self, data):
        return metric_plus_softmax_step(self, data, self.criterion_t, self.weight_t, "loss_t", self.criterion_x,
                                        self.weight_x)  # fmt: skip


class CircleEngine(ReidEngineMixin, reid.engine.Engine):
    """Pair-wise Circle loss on features + cross-entropy on logits; needs an identity-balanced sampler."""

    def __init__(self, datamanager, model, optimizer, scheduler=None, use_gpu=True, m=0.25, gamma=128.0,
                 weight_c=1.0, weight_x=1.0, label_smooth=True):  # fmt: skip
        super().__init__(datamanager, use_gpu)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.weight_c, self.weight_x = weight_c, weight_x
        self.criterion_c = CircleLoss(m=m, gamma=gamma)
        self.criterion_x = reid.losses.CrossEntropyLoss(
            num_classes=datamanager.num_train_pids, use_gpu=self.use_gpu, label_smooth=label_smooth
        )

    def forward_backward(self, data):
        return metric_plus_softmax_step(self, data, self.criterion_c, self.weight_c, "loss_c", self.criterion_x,
                                        self.weight_x)  # fmt: skip


ENGINES = {"softmax": SoftmaxEngine, "triplet": TripletEngine, "circle": CircleEngine}
