"""`reidaug generate`: a trained generator applied to a pairs file, into a Market-style folder."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, OverwriteOpt, SeedOpt, SetOpt


def command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Training checkpoint (.pt) or run folder."),
    pairs: Path = typer.Option(..., "--pairs", help="Pairs CSV [cyan]from,to[/]: the from person in the to pose."),
    data: Path = typer.Option(..., "--data", "-d", help="Market-1501 root holding the source images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (images + manifest.csv)."),
    annotations: list[Path] = typer.Option(
        [], "--annotations", "-a", help="Keypoint CSV(s) (default ROOT/annotations/{train,test,query}.csv)."
    ),
    method: str | None = typer.Option(None, "--method", "-m", help="Expected method (checked against the checkpoint)."),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Images per forward pass."),
    sources: int | None = typer.Option(
        None, "--sources", help="M source images per generated image: the first M of a tuples file (a generator "
        "that fuses any number of sources; default: the M it was trained with)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    seed: int | None = SeedOpt,
    overwrite: bool = OverwriteOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """[bold]Generate images[/] for every pair: the source person in the target pose, named
    [cyan]PPPP_cCs0_NNNNNN_NN.jpg[/] (the source's pid and camera, sequence 0 = generated, the pair's row
    number), plus [cyan]manifest.csv[/]. Run it again after an interruption: finished images are skipped.
    Config: [cyan]configs/generate.yaml[/]."""
    from reidaug.config import load_config
    from reidaug.data.market import check_root
    from reidaug.generate import GenerateConfig, generate
    from reidaug.utils.progress import console

    check_root(data)
    overrides = list(set_)
    if batch_size is not None:
        overrides.append(f"batch_size={batch_size}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    if sources is not None:
        overrides.append(f"sources={sources}")
    cfg = load_config(GenerateConfig, config or "generate", overrides)
    r = generate(checkpoint, pairs, data, out, annotations=annotations or None, method_name=method, cfg=cfg,
                 device=device, overwrite=overwrite, show_progress=not no_progress)  # fmt: skip
    console.print(f"[green]generated[/] {r.written:,} images ({r.skipped:,} already there) into {r.out_dir}; "
                  f"manifest {r.manifest}")  # fmt: skip
