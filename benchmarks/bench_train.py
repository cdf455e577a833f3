"""Training iterations/s and generated images/s of each method at its configured (full) size.

Runs the method's own iteration (`training_step` with the trainer's step helper: its optimizers, its losses
with a randomly initialised VGG) and its inference module in eval mode on in-memory Market-sized batches (data
loading excluded), after `--warmup` untimed iterations. On CUDA both use bf16 autocast (and channels_last);
on the CPU fp32. Prints one JSON object per line: method, device, batch_size, precision, train_it_per_s,
train_img_per_s, generate_img_per_s, generator_parameters.

  python benchmarks/bench_train.py --methods patn,apatn --batch-size 4 --iterations 3
  python benchmarks/bench_train.py --device cuda --batch-size 32 --iterations 20 --compile
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch


def batch(b: int, device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    img = lambda: torch.rand(b, 3, 128, 64, generator=generator).mul(2).sub(1).to(device)  # noqa: E731
    kp = lambda: torch.randint(0, 60, (b, 18, 2), generator=generator).to(device)  # noqa: E731
    return {"src_img": img()[:, None], "tgt_img": img(), "src_kp": kp()[:, None], "tgt_kp": kp()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, device: torch.device, b: int, iterations: int, warmup: int, compile_: bool, sets) -> dict:
    from reidaug.models import registry
    from reidaug.train.config import load_method_config, stage_spans
    from reidaug.train.steps import Steps
    from reidaug.utils.runtime import Amp

    cfg = load_method_config(name, None, ["loss.vgg_weights=none", *sets])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = registry.get(name).build(cfg.model, cfg.loss).to(device)
    t = cfg.train
    if device.type == "cuda" and t.channels_last:
        method = method.to(memory_format=torch.channels_last)
    if compile_:
        for path in method.parts:
            method.get_submodule(path).compile()
    amp = Amp(device, t.amp, t.amp_dtype)
    scaler = amp.scaler()
    steps = Steps(method, method.configure_optimizers(cfg.optim), scaler, amp, stage_spans(cfg))
    g = torch.Generator().manual_seed(0)
    data = [batch(b, device, g) for _ in range(2)]

    def step(i: int) -> None:
        steps.begin(min(i, t.iterations - 1))
        method.training_step(data[i % 2], steps)
        scaler.update()

    method.train()
    for i in range(warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(iterations):
        step(i)
    sync(device)
    train_s = time.perf_counter() - t0

    gen = method.inference_module().eval()
    with torch.no_grad(), amp.autocast():
        for i in range(warmup):
            gen(data[i % 2])
        sync(device)
        t0 = time.perf_counter()
        for i in range(iterations):
            gen(data[i % 2])["image"].float().cpu()  # the images leave the device, as in generate
        sync(device)
    gen_s = time.perf_counter() - t0
    return {
        "method": name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": b,
        "precision": (t.amp_dtype if amp.enabled else "fp32") + ("+compile" if compile_ else ""),
        "train_it_per_s": round(iterations / train_s, 4),
        "train_img_per_s": round(iterations * b / train_s, 3),
        "generate_img_per_s": round(iterations * b / gen_s, 3),
        "generator_parameters": sum(p.numel() for p in gen.parameters()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="patn,apatn")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 on CUDA, 4 on the CPU")
    ap.add_argument("--iterations", type=int, default=None, help="timed iterations (default 20 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 5 CUDA, 1 CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile generator and discriminators")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. model.n_blocks=5")
    args = ap.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    b = args.batch_size or (32 if cuda else 4)
    iterations = args.iterations or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
    for name in args.methods.split(","):
        print(json.dumps(bench(name.strip(), device, b, iterations, warmup, args.compile, args.set)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
