"""`reidaug augment`: the reduced set M_p^R and the augmented set M_p^A as Market roots."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, OverwriteOpt, SeedOpt, SetOpt
from reidaug.models import registry


def command(
    data: Path = typer.Option(..., "--data", "-d", help="Market-1501 root (with annotations/train.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: reduced/, augmented/, generated/, manifests."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Generator checkpoint (.pt) or run folder."),
    portion: float | None = typer.Option(None, "--portion", "-p", help="Fraction p of real training images kept."),
    ratio: int | None = typer.Option(None, "--ratio", help="2 | 3: enlarge the full set (with --portion 1.0)."),
    pose_source: str | None = typer.Option(None, "--pose-source", help="removed (Table 6) | random (the * rows)."),
    trained_on: str | None = typer.Option(
        None, "--generator-trained-on", help="full | reduced (leakage-free: trains on M_p^R without --checkpoint)."
    ),
    method: str = typer.Option("patn", "--method", "-m", help="Generator to train in leakage-free mode: " + ", ".join(
        registry.names()) + "."),
    method_config: str | None = typer.Option(None, "--method-config", help="Its config (default configs/methods/)."),
    method_set: list[str] = typer.Option([], "--method-set", help="Overrides of the method config. Repeatable."),
    annotations: Path | None = typer.Option(None, "--annotations", "-a", help="Default ROOT/annotations/train.csv."),
    sources: int | None = typer.Option(
        None, "--sources", help="Up to M kept images of the identity per generated image (a generator that fuses "
        "any number of sources; default: the M it was trained with). All are listed in the manifest."
    ),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    seed: int | None = SeedOpt,
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    materialize: str = typer.Option(
        "link", "--materialize", help="link (relative inside OUT) | copy | hardlink: real files, for shipping."
    ),
    overwrite: bool = OverwriteOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """[bold]Portion-p augmentation[/] (PATN paper, Table 6): keep a fraction p of the real training images
    (at least one per identity) in [cyan]OUT/reduced[/]; replace every removed image by one generated from a
    kept image of the same identity in the removed image's pose, in [cyan]OUT/augmented[/]. Both are links (those
    into OUT relative, so OUT can be moved or copied whole; test folders link to the real ones), or real files
    with [cyan]--materialize copy|hardlink[/]. Rerun after an interruption: finished images are skipped.
    Config: [cyan]configs/augment/default.yaml[/]."""
    from reidaug.augment.build import AugmentConfig, augment
    from reidaug.config import load_config
    from reidaug.data.market import check_root
    from reidaug.utils.progress import console

    check_root(data)
    overrides = list(set_)
    for key, value in (("portion", portion), ("ratio", ratio), ("pose_source", pose_source),
                       ("generator_trained_on", trained_on), ("seed", seed)):  # fmt: skip
        if value is not None:
            overrides.append(f"{key}={value}")
    if sources is not None:
        overrides.append(f"generate.sources={sources}")
    cfg = load_config(AugmentConfig, config or "augment/default", overrides)
    r = augment(data, out, checkpoint, cfg, annotations=annotations, method=method, method_config=method_config,
                method_overrides=method_set, device=device, overwrite=overwrite, show_progress=not no_progress,
                materialize=materialize)  # fmt: skip
    fb = ", ".join(f"{k}: {v}" for k, v in r.fallbacks.items()) or "none"
    console.print(f"[green]augment[/] p={cfg.portion:g}: kept {r.kept:,}, removed {r.removed:,}, generated "
                  f"{r.generated:,} (fallbacks: {fb})\n  reduced   {r.reduced_root}\n  augmented {r.augmented_root}")  # fmt: skip
