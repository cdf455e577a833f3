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
    new_data: bool = typer.Option(
        False, "--new-data", help="Resume on other pairs than the run trained on (refused otherwise)."
    ),
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
    [cyan]--resume[/] continues exactly where the last checkpoint stopped; the same command run again does too
    (it resumes a compatible unfinished run, reports a finished one and restarts one stopped before its first
    checkpoint). [cyan]--print-config[/] shows every
    value (the defaults live in the method's schema; its YAML lists only what differs)."""
    from reidaug.config import to_dict, to_yaml
    from reidaug.data.market import check_root
    from reidaug.errors import ReidaugError
    from reidaug.models import registry
    from reidaug.models.checkpoint import check_method, check_resumable, load_checkpoint
    from reidaug.train.config import config_from_dict, load_method_config
    from reidaug.train.trainer import clear_unstarted, train
    from reidaug.utils.progress import console

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

    # "Run the same command again" recovers every interruption: a compatible unfinished run in --out resumes,
    # a finished one is reported, a run killed before its first checkpoint starts again.
    ckpt = None
    if resume and overwrite:
        raise ReidaugError("--resume and --overwrite exclude each other")
    if resume and config is not None:
        raise ReidaugError("--resume takes the configuration from the checkpoint (give --set to change it)")
    cleared = not overwrite and not print_config and clear_unstarted(out, method)
    if cleared:
        console.print(f"{out} holds a {method} run stopped before its first checkpoint: starting it again")
    if not overwrite and (out / "checkpoints" / "latest.pt").is_file():
        ckpt = load_checkpoint(out)
        check_method(ckpt, method, out)
        check_resumable(ckpt, out)
        cfg = config_from_dict(method, ckpt["config"], overrides if resume else ())
        if not resume:
            wanted, have = _flat(to_dict(load_method_config(method, config, overrides))), _flat(to_dict(cfg))
            diff = [k for k, v in wanted.items() if have.get(k) != v]
            if diff:
                raise ReidaugError(f"{out} holds a {method} run with another configuration ({', '.join(diff[:4])}); "
                                   "--resume continues it as it was, --overwrite replaces it")  # fmt: skip
    elif resume and not cleared:
        raise ReidaugError(f"nothing to resume in {out}: checkpoints/latest.pt not found")
    else:
        cfg = load_method_config(method, config, overrides)
    if print_config:
        typer.echo(to_yaml(cfg), nl=False)
        return
    if ckpt is not None:
        done = int(ckpt["iteration"])
        if done >= cfg.train.iterations:
            console.print(f"[green]already trained[/] {method} to iteration {done:,}: {out / 'checkpoints' / 'latest.pt'}")
            return
    result = train(cfg, data, out, pairs=pairs, annotations=annotations, resume=ckpt, device=device,
                   overwrite=overwrite, show_progress=not no_progress, allow_new_data=new_data)  # fmt: skip
    if result.checkpoint is not None:  # rank 0
        console.print(f"[green]trained[/] {method} to iteration {result.iteration:,}: {result.checkpoint}")


def _flat(d: dict, prefix: str = "") -> dict:
    """{"a.b": value} for a nested config dict."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
