"""`reidaug train`: train a pose-guided generator (GAN) on Market pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, OverwriteOpt, SeedOpt, SetOpt
from reidaug.models import registry


def command(
    method: str = typer.Option(..., "--method", "-m", help="Generator to train: " + ", ".join(
        f"[cyan]{n}[/]" for n in registry.names())),
    data: Path = typer.Option(..., "--data", "-d", help="Market-1501 root (bounding_box_train/, annotations/)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<method>)."),
    pairs: Path | None = typer.Option(
        None, "--pairs", help="Training pairs CSV [cyan]from,to[/] (default: PATN rule on the annotations)."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", "-a", help="Keypoint CSV (default ROOT/annotations/train.csv)."
    ),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    vgg_weights: str | None = typer.Option(
        None, "--vgg-weights", help="Perceptual loss VGG-19: auto (torch hub cache) | none (random) | PATH."
    ),
    seed: int | None = SeedOpt,
    overwrite: bool = OverwriteOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """[bold]Train a generator[/] on same-identity pairs with the method's recipe (default
    [cyan]configs/methods/<method>.yaml[/]: the Market recipe, Adam 2e-4, 87.5k iterations at batch 32).
    Mixed precision on CUDA; multi-GPU with [cyan]torchrun --nproc_per_node N -m reidaug train ...[/].
    Writes checkpoints, log.jsonl, TensorBoard scalars and sample grids into the run folder;
    [cyan]--resume[/] continues exactly where the last checkpoint stopped. [cyan]--print-config[/] shows every
    value (the defaults live in the method's schema; its YAML lists only what differs)."""
    from reidaug.config import to_yaml
    from reidaug.data.market import check_root
    from reidaug.errors import ReidaugError
    from reidaug.models import registry
    from reidaug.models.checkpoint import check_method, check_resumable, load_checkpoint
    from reidaug.train.config import config_from_dict, load_method_config
    from reidaug.train.trainer import train

    spec = registry.get(method)
    check_root(data)
    out = out or Path("runs") / method
    overrides = list(set_)
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    if vgg_weights is not None:
        if not any(f == "vgg_weights" for f in getattr(spec.loss_schema, "__dataclass_fields__", {})):
            raise ReidaugError(f"method {method} has no perceptual loss (--vgg-weights does not apply)")
        overrides.append(f"loss.vgg_weights={vgg_weights}")
    for p, what in ((pairs, "pairs file"), (annotations, "annotation file")):
        if p is not None and not p.is_file():
            raise ReidaugError(f"{what} {p} not found")

    ckpt = None
    if resume:
        if overwrite:
            raise ReidaugError("--resume and --overwrite exclude each other")
        if config is not None:
            raise ReidaugError("--resume takes the configuration from the checkpoint (give --set to change it)")
        ckpt = load_checkpoint(out)
        check_method(ckpt, method, out)
        check_resumable(ckpt, out)
        cfg = config_from_dict(method, ckpt["config"], overrides)
    else:
        cfg = load_method_config(method, config, overrides)
    if print_config:
        typer.echo(to_yaml(cfg), nl=False)
        return
    result = train(cfg, data, out, pairs=pairs, annotations=annotations, resume=ckpt, device=device,
                   overwrite=overwrite, show_progress=not no_progress)  # fmt: skip
    if result.checkpoint is not None:  # rank 0
        from reidaug.utils.progress import console

        console.print(f"[green]trained[/] {method} to iteration {result.iteration:,}: {result.checkpoint}")
