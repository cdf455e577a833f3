"""Generation speed per method at 128x64: the fast path (reidaug.models.fuse) beside the plain eval-mode model,
model only and end to end (`generate_images`: decode, generate, encode, write), with FLOPs per image.

Model only: random weights (BatchNorm statistics randomised), in-memory batches, the images quantised and copied
to the host as `generate` does. The plain path is `generate --set fast=false` (no_grad, eval mode: the code of
main before the fast path); the fast path is the default. Both are timed in the same process, interleaved
(plain, fast, plain, fast, ...), so a busy machine slows both alike; `speedup` is the median of the per-round
ratios and `speedup_range` their spread. FLOPs from torch.utils.flop_counter (convolutions, matmuls,
attention); `fraction_of_peak` divides the achieved FLOP rate by a measured matmul rate on the same device
(bf16 on CUDA, fp32 on the CPU). On CUDA both paths run under bf16 autocast and channels_last.

Prints one JSON object per method (then one for the run: device, threads, load average, matmul peak).

  python benchmarks/bench_generate.py --ci                      # smoke: demo-size models, CPU, seconds
  python benchmarks/bench_generate.py --methods patn --batch-sizes 32,64 --rounds 3 --e2e 128
  python benchmarks/bench_generate.py --device cuda --batch-sizes 64,128,256 --e2e 12936 --data MARKET_ROOT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, repeats: int = 5) -> float:
    """Measured dense matmul throughput, the best of `repeats` timings (robust to a busy machine): bf16 on CUDA,
    fp32 on the CPU (the reference of fraction_of_peak)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats + 1):  # the first is a warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    return best


def generator_for(name: str, ci: bool) -> tuple[torch.nn.Module, int]:
    """The method's generator (full size, or the demo size for --ci) with randomised BatchNorm statistics."""
    from reidaug.models import registry
    from reidaug.train.config import load_method_config

    cfg = load_method_config(name, f"methods/{name}-demo" if ci else None, ["loss.vgg_weights=none"])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = registry.get(name).generator(cfg.model)
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return gen.eval(), registry.num_sources(cfg.model)


def batch(b: int, m: int, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    from reidaug.data.samples import to_device

    g = torch.Generator().manual_seed(0)
    kp = torch.stack([torch.randint(0, 128, (b, m + 1, 18), generator=g),
                      torch.randint(0, 64, (b, m + 1, 18), generator=g)], -1)  # fmt: skip
    img = torch.randint(0, 256, (b, m, 3, 128, 64), dtype=torch.uint8, generator=g)
    return to_device({"src_img": img, "src_kp": kp[:, :m], "tgt_kp": kp[:, m]}, device, channels_last)


def flops_per_image(gen: torch.nn.Module, m: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = batch(1, m, torch.device("cpu"), False)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        gen.cpu()(x)
    return float(fc.get_total_flops())


class Paths:
    """The plain and the fast generator of one method on one device, each timed on one batch."""

    def __init__(self, gen, device: torch.device, nnpack_min_batch: int, compile_: bool):
        from reidaug.models.fuse import for_inference
        from reidaug.utils.runtime import Amp

        self.device, self.cl = device, device.type == "cuda"
        self.amp = Amp(device, True, "bf16")
        self.plain = gen.to(device).eval()
        if self.cl:
            self.plain = self.plain.to(memory_format=torch.channels_last)
        self.fast = for_inference(gen, device, nnpack_min_batch=nnpack_min_batch, channels_last=self.cl)
        if compile_:
            self.fast = torch.compile(self.fast)

    def run(self, which: str, x: dict) -> float:
        from reidaug.data.images import to_uint8_tensor

        model, grad_off = (self.fast, torch.inference_mode) if which == "fast" else (self.plain, torch.no_grad)
        sync(self.device)
        t0 = time.perf_counter()
        with grad_off(), self.amp.autocast():
            to_uint8_tensor(model(x)["image"]).cpu()  # the images leave the device, as in generate
        sync(self.device)
        return time.perf_counter() - t0


def model_only(paths: Paths, m: int, sizes: list[int], rounds: int, warmup: int) -> dict:
    out = {}
    for b in sizes:
        x = batch(b, m, paths.device, paths.cl)
        for _ in range(warmup):
            paths.run("plain", x), paths.run("fast", x)
        times = {"plain": [], "fast": []}
        for _ in range(rounds):
            for which in ("plain", "fast"):
                times[which].append(paths.run(which, x))
        ratios = [p / f for p, f in zip(times["plain"], times["fast"])]
        out[b] = {"plain_img_per_s": round(b / statistics.median(times["plain"]), 3),
                  "fast_img_per_s": round(b / statistics.median(times["fast"]), 3),
                  "speedup": round(statistics.median(ratios), 3),
                  "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)]}  # fmt: skip
    return out


def synth_root(path: Path, ids: int) -> Path:
    from reidaug.config import load_config
    from reidaug.data.synth import SynthConfig, make_dataset

    cfg = load_config(SynthConfig, "synth/default", [f"synth.train_ids={ids}", "synth.test_ids=2",
                                                    "synth.distractors=0", "synth.junk=0"])  # fmt: skip
    make_dataset(path, cfg)
    return path


def end_to_end(gen, m: int, root: Path, n: int, b: int, device, nnpack_min_batch: int, workers: int,
               rounds: int) -> dict:  # fmt: skip
    """`generate_images` of n jobs (pairs of the root's train annotations), plain and fast, interleaved."""
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.market import annotation_path
    from reidaug.data.pairs import make_pairs, make_tuples
    from reidaug.generate import GenerateConfig, generate_images, jobs_from_pairs

    ann = read_annotations(annotation_path(root))
    pairs = make_pairs(ann) if m == 1 else make_tuples(ann, m)
    if len(pairs) < n:
        raise SystemExit(f"{root} gives {len(pairs)} pairs, fewer than --e2e {n}")
    jobs = jobs_from_pairs(pairs.sample(n=n, random_state=0), num_sources=m)
    times = {"plain": [], "fast": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for which in ("plain", "fast"):
                out = Path(tmp) / which
                cfg = GenerateConfig(batch_size=b, num_workers=workers, writer_threads=max(2, workers),
                                     fast=which == "fast", nnpack_min_batch=nnpack_min_batch)  # fmt: skip
                t0 = time.perf_counter()
                generate_images(gen, jobs, root, ann, out, cfg, device=device, show_progress=False)
                times[which].append(time.perf_counter() - t0)
                shutil.rmtree(out)
    ratios = [p / f for p, f in zip(times["plain"], times["fast"])]
    return {"images": n, "batch_size": b, "workers": workers,
            "plain_img_per_s": round(n / statistics.median(times["plain"]), 3),
            "fast_img_per_s": round(n / statistics.median(times["fast"]), 3),
            "speedup": round(statistics.median(ratios), 3)}  # fmt: skip


def main() -> int:
    from reidaug.models import registry

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="all", help="comma-separated, or all (every registered method)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--ci", action="store_true", help="CI size: demo-size models, batch 4, one round, CPU-cheap")
    ap.add_argument("--batch-sizes", default=None, help="model-only sweep (default 64,128,256 CUDA; 32,64,128 CPU)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per path (default 5 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed rounds per path (default 3 CUDA, 1 CPU)")
    ap.add_argument("--nnpack-min-batch", type=int, default=16, help="the fast path's generate setting")
    ap.add_argument("--compile", action="store_true", help="torch.compile the fast generator (CUDA)")
    ap.add_argument("--e2e", type=int, default=None, help="end-to-end images (0: skip; default 12936 CUDA, 0 CPU)")
    ap.add_argument("--e2e-batch", type=int, default=None, help="batch size end to end (default: the best)")
    ap.add_argument("--e2e-rounds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None, help="loader workers end to end (default: CPUs, max 8)")
    ap.add_argument("--data", default=None, help="Market root with annotations/train.csv (default: synthetic)")
    ap.add_argument("--synth-ids", type=int, default=None, help="train identities of the synthetic root")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = registry.names() if args.methods == "all" else [n.strip() for n in args.methods.split(",")]
    default_sizes = "4" if args.ci else ("64,128,256" if cuda else "32,64,128")
    sizes = [int(s) for s in (args.batch_sizes or default_sizes).split(",")]
    rounds = args.rounds or (1 if args.ci else 5 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (1 if args.ci or not cuda else 3)
    e2e = args.e2e if args.e2e is not None else (8 if args.ci else 12936 if cuda else 0)
    workers = args.workers if args.workers is not None else (0 if args.ci else min(8, os.cpu_count() or 1))
    if cuda:
        torch.backends.cudnn.benchmark = True
    peak = matmul_peak_tflops(device, 1 if args.ci else 5)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else None
        if e2e and root is None:
            ids = args.synth_ids or (3 if args.ci else max(10, e2e // 120 + 1))
            root = synth_root(Path(tmp) / "synth", ids)
        for name in names:
            gen, m = generator_for(name, args.ci)
            flops = flops_per_image(gen, m)
            params = sum(p.numel() for p in gen.parameters())
            paths = Paths(gen, device, args.nnpack_min_batch, args.compile)
            sweep = model_only(paths, m, sizes, rounds, warmup)
            best = max(sweep, key=lambda b: sweep[b]["fast_img_per_s"])
            rate = sweep[best]["fast_img_per_s"]
            row = {
                "method": name, "size": "ci" if args.ci else "full", "device": _device_name(device),
                "precision": "bf16 autocast" if cuda else "fp32", "generator_parameters": params,
                "gflop_per_image": round(flops / 1e9, 3), "best_batch": best, "img_per_s": rate,
                "plain_img_per_s": sweep[best]["plain_img_per_s"], "speedup": sweep[best]["speedup"],
                "achieved_tflops": round(rate * flops / 1e12, 4),
                "fraction_of_peak": round(rate * flops / 1e12 / peak, 4),
                "batches": sweep,
            }  # fmt: skip
            if e2e:
                row["end_to_end"] = end_to_end(gen, m, root, e2e, args.e2e_batch or best, device,
                                               args.nnpack_min_batch, workers, args.e2e_rounds)  # fmt: skip
                row["end_to_end"]["market_train_seconds"] = round(12936 / row["end_to_end"]["fast_img_per_s"], 1)
            print(json.dumps(row), flush=True)
            del paths, gen
    print(json.dumps({"run": "bench_generate", "device": _device_name(device), "threads": torch.get_num_threads(),
                      "matmul_peak_tflops": round(peak, 4), "peak_dtype": "bf16" if cuda else "fp32",
                      "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__}))  # fmt: skip
    return 0


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


if __name__ == "__main__":
    raise SystemExit(main())
