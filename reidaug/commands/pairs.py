"""`reidaug pairs`: the (source, target) pairs CSV from a keypoint annotation CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, OverwriteOpt, SeedOpt, SetOpt


def command(
    annotations: Path = typer.Option(
        ..., "--annotations", "-a", help="Keypoint CSV ([cyan]name:keypoints_y:keypoints_x[/], -1 = missing)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Pairs CSV to write (header [cyan]from,to[/])."),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    cap: int | None = typer.Option(None, "--cap", help="At most this many random pairs per identity."),
    sample: int | None = typer.Option(
        None, "--sample", help="Draw N pairs without replacement (the Market test split: 12000, seed 0)."
    ),
    sources: int | None = typer.Option(
        None, "--sources", help="Tuples of K sources per target ([cyan]from_0,...,from_K-1,to[/]), for multisource."
    ),
    seed: int | None = SeedOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Make [bold]same-identity pairs[/] by the PATN rule: every ordered pair of two images of one identity,
    both with both shoulders and both hips detected; junk ([cyan]-1_*[/]) and distractor ([cyan]0000_*[/])
    images are left out. [cyan]--sources K[/]: as many tuples of K sources of the target's identity instead.
    Config: [cyan]configs/pairs/default.yaml[/] ([cyan]pairs/market-test[/] for the
    reference test pairs)."""
    from reidaug.config import load_config
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.pairs import PairsConfig, build_pairs, write_pairs
    from reidaug.errors import ReidaugError

    if out.is_dir():
        raise ReidaugError(f"output {out} is a folder; give a file name such as {out / 'pairs.csv'}")
    if out.exists() and not overwrite:
        raise ReidaugError(f"output {out} exists (pass --overwrite to replace it)")
    flags = {"cap_per_identity": cap, "sample": sample, "seed": seed, "sources": sources}
    overrides = [*set_, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    cfg = load_config(PairsConfig, config, overrides)

    ann = read_annotations(annotations)
    df, st = build_pairs(ann, cfg)
    write_pairs(out, df)
    _summary(annotations, out, cfg, st)


def _summary(annotations: Path, out: Path, cfg, st) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="reidaug pairs", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right", overflow="fold")
    t.add_row("annotations", str(annotations))
    t.add_row("images", f"{st.images:,}")
    t.add_row("valid images (torso, not junk)", f"{st.valid_images:,}")
    t.add_row("identities (with pairs)", f"{st.identities:,} ({st.paired_identities:,})")
    t.add_row("all pairs", f"{st.all_pairs:,}")
    if cfg.cap_per_identity is not None:
        t.add_row("cap per identity", f"{cfg.cap_per_identity:,} (seed {cfg.seed})")
    if cfg.sample is not None:
        t.add_row("sample", f"{cfg.sample:,} (seed {cfg.seed})")
    if cfg.sources is not None:
        t.add_row("sources per target", f"{cfg.sources} (seed {cfg.seed})")
    t.add_row("tuples written" if cfg.sources is not None else "pairs written", f"[green]{st.pairs:,}[/]")
    t.add_row("output", str(out))
    Console().print(t)
