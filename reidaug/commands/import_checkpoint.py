"""`reidaug import-checkpoint`: a published generator's weights as a run folder for generate and augment."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import OverwriteOpt, SetOpt


def command(
    source: str = typer.Option(
        ...,
        "--from",
        help="Layout of the file: [cyan]pose-transfer[/] (the PATN code) or "
        "[cyan]xinggan[/] (the XingGAN code).",
    ),
    file: Path = typer.Argument(..., help="The published state dict, e.g. latest_net_netG.pth."),
    method: str | None = typer.Option(
        None, "--method", "-m", help="Expected method (patn for pose-transfer, xinggan for xinggan)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder to write (checkpoints/latest.pt, import.json)."
    ),
    set_: list[str] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """[bold]Import published generator weights[/] (the authors' [cyan]latest_net_netG.pth[/]) into a reidaug
    run folder that [cyan]generate[/] and [cyan]augment[/] accept: key names mapped to reidaug's modules, the
    architecture (channels, blocks, norm, dropout) read off the tensors, the first key or shape that does not fit
    named. Loaded with [cyan]weights_only=True[/]: a file that pickles code is refused, never run.
    [cyan]import.json[/] records where the weights came from (file name, sha256)."""
    from reidaug.train.published import import_checkpoint
    from reidaug.utils.progress import console

    ckpt = import_checkpoint(source, file, out, method=method, overrides=set_, overwrite=overwrite)
    console.print(f"[green]imported[/] {file} ({source}) -> {ckpt}", highlight=False)
