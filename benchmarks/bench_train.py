"""Training speed per method: iterations/s, the time the method's default schedule would take, peak memory and
the share of an iteration spent waiting for data; plus the eval-mode generator's images/s.

Model: the method's own iteration (`training_step` with the trainer's step helper: its optimizers, stages, losses
with a randomly initialised VGG) at its configured (full) size, or at its demo size with --ci. Two timings:
* in memory: Market-sized batches already on the device (data loading excluded): train_it_per_s, and from it
  schedule_hours = train.iterations x train.batch_size / train_img_per_s (the method's default schedule; scaled
  by images when the measured batch is another);
* through the trainer's loader (--data-wait N iterations; a synthetic Market root unless --data): the
  SampleDataset, IterationSampler and DataLoader the trainer builds, with the method's num_workers and
  prefetch; data_wait_share = time blocked in next(loader) and the host-to-device copy / iteration time (each
  iteration ends with a device sync here, so its time is its own; the trainer reads losses once per log line).
On CUDA bf16 autocast and channels_last (the method's train settings), on the CPU fp32. peak_memory_mb: CUDA
max_memory_allocated during the method; on the CPU the process's peak RSS so far (methods run in order).
Prints one JSON object per method, then one for the run (device, threads, load average).

  python benchmarks/bench_train.py --ci                                  # smoke: demo sizes, seconds
  python benchmarks/bench_train.py --methods patn --batch-size 8 --iterations 2 --data-wait 2
  python benchmarks/bench_train.py --device cuda --batch-size 32 --iterations 20 --data-wait 50 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import torch


def batch(b: int, m: int, device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    img = lambda *s: torch.rand(b, *s, 3, 128, 64, generator=generator).mul(2).sub(1).to(device)  # noqa: E731
    kp = lambda *s: torch.randint(0, 60, (b, *s, 18, 2), generator=generator).to(device)  # noqa: E731
    return {"src_img": img(m), "tgt_img": img(), "src_kp": kp(m), "tgt_kp": kp()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Bench:
    """One method built as the trainer builds it, with the trainer's step helper."""

    def __init__(self, name: str, device: torch.device, b: int, ci: bool, compile_: bool, sets):
        from reidaug.models import registry
        from reidaug.train.config import load_method_config, stage_spans
        from reidaug.train.steps import Steps
        from reidaug.utils.runtime import Amp

        source = f"methods/{name}-demo" if ci else None
        self.schedule = load_method_config(name, source, sets).train  # the default schedule and its batch
        self.cfg = cfg = load_method_config(name, source, ["loss.vgg_weights=none", f"train.batch_size={b}", *sets])
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            method = registry.get(name).build(cfg.model, cfg.loss).to(device)
        t = cfg.train
        self.channels_last = device.type == "cuda" and t.channels_last
        if self.channels_last:
            method = method.to(memory_format=torch.channels_last)
        if compile_:
            for path in method.parts:
                method.get_submodule(path).compile()
        self.amp = Amp(device, t.amp, t.amp_dtype)
        self.scaler = self.amp.scaler()
        self.steps = Steps(method, method.configure_optimizers(cfg.optim), self.scaler, self.amp, stage_spans(cfg))
        self.method, self.device, self.m = method.train(), device, registry.num_sources(cfg.model)
        self.precision = (t.amp_dtype if self.amp.enabled else "fp32") + ("+compile" if compile_ else "")

    def step(self, i: int, data: dict) -> None:
        from reidaug.train.steps import stage_batch

        self.steps.begin(min(i, self.cfg.train.iterations - 1))
        logs = self.method.training_step(stage_batch(data, self.steps.stage), self.steps)
        self.scaler.update()
        torch.stack([torch.as_tensor(v, device=self.device).float().reshape(()) for v in logs.values()]).tolist()

    def in_memory(self, iterations: int, warmup: int) -> float:
        g = torch.Generator().manual_seed(0)
        b = self.cfg.train.batch_size
        data = [batch(b, self.m, self.device, g) for _ in range(2)]
        for i in range(warmup):
            self.step(i, data[i % 2])
        sync(self.device)
        t0 = time.perf_counter()
        for i in range(iterations):
            self.step(warmup + i, data[i % 2])
        sync(self.device)
        return iterations / (time.perf_counter() - t0)

    def through_loader(self, root: Path, iterations: int, warmup: int) -> dict:
        """The trainer's data path: wait share and iterations/s including the loader."""
        from reidaug.data.keypoints import read_annotations
        from reidaug.data.market import annotation_path
        from reidaug.data.samples import SampleDataset, image_index, make_loader, to_device
        from reidaug.train.data import IterationSampler
        from reidaug.train.trainer import load_table

        t = self.cfg.train
        ann = read_annotations(annotation_path(root))
        dataset = SampleDataset.from_table(load_table(None, ann, self.m, t.seed), image_index(root), ann, self.m)
        sampler = IterationSampler(len(dataset), t.batch_size, t.seed, 0, warmup + iterations)
        loader = make_loader(dataset, sampler, num_workers=t.num_workers, pin_memory=t.pin_memory and
                             self.device.type == "cuda", prefetch_factor=t.prefetch_factor, seed=t.seed)  # fmt: skip
        batches = iter(loader)
        wait = total = 0.0
        try:
            for i in range(warmup + iterations):
                t0 = time.perf_counter()
                data = to_device(next(batches), self.device, self.channels_last)
                t1 = time.perf_counter()
                self.step(i, data)
                sync(self.device)
                if i >= warmup:
                    wait, total = wait + t1 - t0, total + time.perf_counter() - t0
        finally:
            if hasattr(batches, "_shutdown_workers"):
                batches._shutdown_workers()
        return {"loader_it_per_s": round(iterations / total, 4), "data_wait_share": round(wait / total, 4),
                "num_workers": t.num_workers, "loader_iterations": iterations}  # fmt: skip

    def generate(self, iterations: int, warmup: int) -> float:
        g = torch.Generator().manual_seed(1)
        data = batch(self.cfg.train.batch_size, self.m, self.device, g)
        gen = self.method.inference_module().eval()
        with torch.no_grad(), self.amp.autocast():
            for _ in range(warmup):
                gen(data)
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(iterations):
                gen(data)["image"].float().cpu()  # the images leave the device, as in generate
            sync(self.device)
        self.method.train()
        return iterations * self.cfg.train.batch_size / (time.perf_counter() - t0)


def synth_root(path: Path, ids: int) -> Path:
    from reidaug.config import load_config
    from reidaug.data.synth import SynthConfig, make_dataset

    make_dataset(path, load_config(SynthConfig, "synth/default", [f"synth.train_ids={ids}", "synth.test_ids=2",
                                                                 "synth.distractors=0", "synth.junk=0"]))  # fmt: skip
    return path


def main() -> int:
    from reidaug.models import registry

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="all", help="comma-separated, or all (every built-in method)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--ci", action="store_true", help="CI size: demo-size models, batch 2, one iteration")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 on CUDA, 8 on the CPU, 2 with --ci")
    ap.add_argument("--iterations", type=int, default=None, help="timed iterations (default 20 CUDA, 2 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 5 CUDA, 1 CPU)")
    ap.add_argument("--data-wait", type=int, default=None, help="iterations through the loader (0: skip; "
                    "default 50 CUDA, 2 CPU, 1 --ci)")  # fmt: skip
    ap.add_argument("--data", default=None, help="Market root with annotations/train.csv (default: synthetic)")
    ap.add_argument("--compile", action="store_true", help="torch.compile generator and discriminators")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. model.n_blocks=5")
    args = ap.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    b = args.batch_size or (2 if args.ci else 32 if cuda else 8)
    iterations = args.iterations or (1 if args.ci else 20 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (0 if args.ci else 5 if cuda else 1)
    data_wait = args.data_wait if args.data_wait is not None else (1 if args.ci else 50 if cuda else 2)
    names = sorted(registry.BUILTIN) if args.methods == "all" else [n.strip() for n in args.methods.split(",")]
    if cuda:
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else (synth_root(Path(tmp) / "synth", 3 if args.ci else 20)
                                                  if data_wait else None)  # fmt: skip
        for name in names:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            bench = Bench(name, device, b, args.ci, args.compile, args.set)
            it_s = bench.in_memory(iterations, warmup)
            row = {
                "method": name, "size": "ci" if args.ci else "full",
                "device": torch.cuda.get_device_name(device) if cuda else "cpu", "threads": torch.get_num_threads(),
                "batch_size": b, "precision": bench.precision, "train_it_per_s": round(it_s, 4),
                "train_img_per_s": round(it_s * b, 3), "schedule_iterations": bench.schedule.iterations,
                "schedule_batch_size": bench.schedule.batch_size,
                "schedule_hours": round(bench.schedule.iterations * bench.schedule.batch_size / (it_s * b) / 3600, 2),
                "peak_memory_mb": round(peak_memory_mb(device), 1),
                "generator_parameters": sum(p.numel() for p in bench.method.inference_module().parameters()),
            }  # fmt: skip
            if data_wait:
                row.update(bench.through_loader(root, data_wait, min(warmup, 1)))
            row["generate_img_per_s"] = round(bench.generate(iterations, min(warmup, 1)), 3)
            print(json.dumps(row), flush=True)
            del bench
    print(json.dumps({"run": "bench_train", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                      "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()],
                      "torch": torch.__version__}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
