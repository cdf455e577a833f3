"""`reidaug reid-eval`: train and evaluate a torchreid model on a Market-style root; metrics to JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, OverwriteOpt, SeedOpt, SetOpt


def command(
    root: Path = typer.Argument(..., help="Market-style root: bounding_box_train, bounding_box_test, query."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Metrics JSON to write (mAP, rank1, rank5, rank10 in %)."
    ),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    backbone: str | None = typer.Option(
        None, "--backbone", "-b", help="torchreid model: resnet50, osnet_x1_0, ..."
    ),
    loss: str | None = typer.Option(None, "--loss", "-l", help="softmax, triplet or circle."),
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="Training epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Training batch size."),
    height: int | None = typer.Option(None, "--height", help="Input image height."),
    width: int | None = typer.Option(None, "--width", help="Input image width."),
    pretrained: bool | None = typer.Option(
        None,
        "--pretrained/--random-init",
        help="ImageNet weights from torchvision's cache (never downloaded).",
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Initial weights: a state dict or torchreid checkpoint."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    workers: int | None = typer.Option(None, "--workers", help="Data-loading processes."),
    seed: int | None = SeedOpt,
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Log, checkpoints, tensorboard (default: OUT.run/)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the run folder's last.pth (implied when OUT does not exist yet)."
    ),
    overwrite: bool = OverwriteOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or log lines on the terminal."),
) -> None:
    """Train a [bold]torchreid[/] re-ID model on ROOT's training images and report [bold]mAP and Rank-1/5/10[/]
    on its query/gallery split (Market-1501 rule). Random initialisation unless [cyan]--pretrained[/] or
    [cyan]--weights[/]. Configs: [cyan]reid/default[/] (CPU demo), [cyan]reid/resnet50-softmax[/],
    [cyan]reid/resnet50-circle[/]."""
    from reidaug.config import load_config
    from reidaug.reid.config import ReidConfig

    flags = {
        "backbone": backbone,
        "loss": loss,
        "epochs": epochs,
        "batch_size": batch_size,
        "height": height,
        "width": width,
        "pretrained": pretrained,
        "weights": weights,
        "device": device,
        "workers": workers,
        "seed": seed,
    }
    overrides = [*set_, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    cfg = load_config(ReidConfig, config or "reid/default", overrides)

    from reidaug.reid.run import reid_eval

    r = reid_eval(
        root, cfg, out, run_dir=run_dir, overwrite=overwrite, resume=resume, show_progress=not quiet
    )
    typer.echo(
        f"mAP {r['mAP']:.1f}  rank-1 {r['rank1']:.1f}  rank-5 {r['rank5']:.1f}  rank-10 {r['rank10']:.1f}"
        f"  ({r['backbone']}, {r['loss']}, {r['epochs']} epochs, {r['weights']}) -> {out}"
    )
