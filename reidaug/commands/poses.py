"""`reidaug poses`: COCO-18 keypoints of re-ID crops into the annotation CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, SetOpt


def command(
    images: Path | None = typer.Option(
        None,
        "--images",
        "-i",
        help="Folder of crops, or a Market root (its [cyan]--split[/] folder is read).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Annotation CSV to write or complete ([cyan]name:keypoints_y:keypoints_x[/]).",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        "-b",
        help="[cyan]mediapipe[/] (default), [cyan]keypointrcnn[/], [cyan]openpose-json[/] or [cyan]coco-json[/].",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per backend call."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (keypointrcnn)."),
    split: str | None = typer.Option(None, "--split", help="Market root folder: train, gallery or query."),
    json_dir: Path | None = typer.Option(
        None, "--json", help="openpose-json: OpenPose's --write_json folder; coco-json: the COCO keypoint file."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="keypointrcnn: a state dict file."),
    models: Path | None = typer.Option(
        None, "--models", help="mediapipe: the mediapipe 0.10.21 wheel or pose_landmark_full.tflite."
    ),
    preview: Path | None = typer.Option(
        None, "--preview", help="Also draw the skeletons of a sample into this PNG."
    ),
    fetch_models: bool = typer.Option(
        False,
        "--fetch-models",
        help="Download the mediapipe 0.10.21 wheel (no dependencies) with pip, then exit.",
    ),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Extract every image again instead of resuming."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Extract [bold]18 OpenPose COCO keypoints[/] per crop into the annotation CSV (y/x in the crop's pixels,
    -1 = not found; no person = an all -1 row). Resumable: a rerun adds only the missing images. Unreadable,
    empty or wrongly sized images are listed and skipped. Backends: [cyan]mediapipe[/] (BlazePose, CPU,
    offline; needs [cyan]pip install 'reidaug\\[pose]'[/] and [cyan]reidaug poses --fetch-models[/] once),
    [cyan]keypointrcnn[/] (torchvision, GPU batches; cached weights or [cyan]--weights[/]),
    [cyan]openpose-json[/] (imports OpenPose's JSON, [cyan]--json DIR[/]), [cyan]coco-json[/] (imports the COCO
    keypoint results of mmpose, RTMPose/DWPose, YOLO-pose or detectron2, [cyan]--json FILE[/]). Config:
    [cyan]configs/poses/default.yaml[/]."""
    from reidaug.config import load_config
    from reidaug.errors import ReidaugError
    from reidaug.pose.base import PoseConfig, extract_poses

    if fetch_models:
        from reidaug.pose.mediapipe_backend import fetch_models as fetch

        path = fetch(models)
        typer.echo(f"BlazePose models: {path}")
        return
    if images is None or out is None:
        raise ReidaugError("--images and --out are required (or --fetch-models alone)")
    flags = {"backend": backend, "batch_size": batch_size, "device": device, "split": split,
             "keypointrcnn.weights": weights, "mediapipe.models": models}  # fmt: skip
    overrides = [*set_, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    cfg = load_config(PoseConfig, config, overrides)
    if json_dir is not None:  # --json is the file or folder of whichever importer the config selects
        if cfg.backend == "coco-json":
            cfg.coco_json.file = str(json_dir)
        else:
            cfg.openpose_json.json_dir = str(json_dir)
    summary = extract_poses(images, out, cfg, overwrite=overwrite, preview=preview, show_progress=not quiet)
    print_summary(summary)


def print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    from reidaug.errors import offenders

    t = Table(title="reidaug poses", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("backend", s.backend)
    t.add_row("images found", f"{s.images:,}")
    t.add_row("already in the output", f"{s.resumed:,}")
    t.add_row("extracted now", f"[green]{s.extracted:,}[/]")
    t.add_row("  of them no person (all -1)", f"{s.no_pose:,}")
    bad = f"[red]{len(s.bad):,}[/]" if s.bad else "0"
    t.add_row("bad images (skipped)", bad)
    if s.extracted:
        t.add_row("time", f"{s.seconds:.1f} s ({s.ms_per_image:.1f} ms/image)")
    t.add_row("rows in the output", f"{s.rows:,}")
    if s.extra_rows:
        t.add_row("  rows for images not in the folder (kept)", f"{s.extra_rows:,}")
    t.add_row("output", str(s.out))
    if s.preview is not None:
        t.add_row("preview", str(s.preview))
    console = Console()
    console.print(t)
    if s.bad:
        reasons: dict[str, list[str]] = {}
        for name, why in s.bad:
            reasons.setdefault(why, []).append(name)
        for why, names in list(reasons.items())[:10]:
            console.print(f"[red]skipped[/] {len(names)}: {why}: {offenders(names)}", highlight=False)
        console.print(f"full list: {s.skipped_list}", highlight=False)
