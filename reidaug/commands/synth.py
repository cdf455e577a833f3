"""`reidaug synth`: the synthetic Market-style dataset (and/or a preview grid of it)."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, OverwriteOpt, SeedOpt, SetOpt

DEFAULT_CONFIG = "synth/default"
PREVIEW_EXTS = (".png", ".jpg", ".jpeg")


def command(
    out: Path | None = typer.Option(None, "--out", "-o", help="Market root to write (must be new or empty)."),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    seed: int | None = SeedOpt,
    overwrite: bool = OverwriteOpt,
    preview: Path | None = typer.Option(
        None,
        "--preview",
        help="Also write a grid of samples with their skeletons (PNG); alone, only the grid.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-j", help="Processes (the bytes do not depend on it)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a [bold]synthetic Market-1501 root[/]: articulated people drawn from real Market poses, in six
    cameras, with their exact keypoints ([cyan]bounding_box_train[/], [cyan]bounding_box_test[/] with
    distractors and junk, [cyan]query[/], [cyan]annotations/{train,test,query}.csv[/]). Same seed, same bytes.
    Config: [cyan]configs/synth/default.yaml[/] (demo scale) or [cyan]synth/market-scale[/]; e.g.
    [cyan]--set synth.train_ids=50[/]. [cyan]--preview grid.png[/] without [cyan]--out[/] writes only the grid."""
    from reidaug.config import load_config
    from reidaug.data.synth.config import SynthConfig, validate
    from reidaug.errors import ReidaugError

    if out is None and preview is None:
        raise ReidaugError(
            "nothing to do: give --out ROOT (the dataset) and/or --preview FILE.png (a sample grid)"
        )
    flags = {"synth.seed": seed, "synth.workers": workers}
    overrides = [*set_, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    cfg = validate(load_config(SynthConfig, config or DEFAULT_CONFIG, overrides))
    if preview is not None:
        if preview.suffix.lower() not in PREVIEW_EXTS:
            raise ReidaugError(f"--preview {preview}: give a .png or .jpg file name")
        if preview.is_dir():
            raise ReidaugError(
                f"--preview {preview} is a folder; give a file name such as {preview / 'grid.png'}"
            )
        if preview.exists() and not overwrite:
            raise ReidaugError(f"preview {preview} exists (pass --overwrite to replace it)")
    if out is not None:
        from reidaug.data.synth.dataset import make_dataset

        summary = make_dataset(out, cfg, overwrite=overwrite, show_progress=not quiet)
        _table(out, summary)
    if preview is not None:
        from reidaug.data.images import write_image
        from reidaug.data.synth.preview import preview_grid

        write_image(preview, preview_grid(cfg))
        typer.echo(f"preview: {preview}")


def _table(out: Path, s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="reidaug synth", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("root", str(out))
    t.add_row("train", f"{s['train_images']:,} images, {s['train_ids']} identities")
    t.add_row(
        "gallery",
        f"{s['gallery_images']:,} images, {s['test_ids']} identities + "
        f"{s['distractors']} distractors + {s['junk']} junk",
    )
    t.add_row("query", f"{s['query_images']:,} images")
    t.add_row("seed", str(s["seed"]))
    Console().print(t)
