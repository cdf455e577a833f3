"""Batch generation of pose-transferred images into a Market-1501-style folder, with a manifest.

Naming scheme (what torchreid's Market1501 parser reads: `([-\\d]+)_c(\\d)` from `*.jpg`, pid <= 1501,
camera 1..6): a generated image is named `PPPP_cCs0_FFFFFF_BB.jpg` where PPPP and C are the pid and camera of
the *source* image, the sequence digit 0 marks a generated image (real Market names use sequences 1-6, so a
generated name never collides with a real one), and FFFFFF_BB is the job's running number n
(FFFFFF = n mod 10^6, BB = n div 10^6), unique within the output folder. `reidaug generate` numbers the rows
of the pairs file (row 0 -> `_000000_00`); other callers of `generate_images` pick their own names (for
example `generated_name(source, n, sequence=9)` for a second batch in the same folder).

A job is one output image: `out_name`, its sources `source` (and `source_1` ... `source_{M-1}` for a
generator that takes M > 1 sources) and `target_pose_from` (the image whose keypoints give the pose). The
generator is the checkpoint's inference module alone (reidaug.models.checkpoint.load_generator): generation
never builds a discriminator or a loss network and needs no loss setting.

Resumable and idempotent: an image is written under a temporary name and renamed, images that exist are
skipped, stale temporary files of an interrupted run are removed, and a marker file records the method and
checkpoint so a folder is never completed with another model. `manifest.csv` (name, pid, camid, source,
[source_1, ...], target_pose_from, method, checkpoint_sha256, seed) is rewritten atomically at the end; rows of
earlier calls for other names are kept (deduplicated by name).

The output (`check_output`): never inside a dataset's split folders (generated images there would be read as
real ones) nor a folder holding the dataset; a non-empty folder only when it is an earlier output of the same
method and checkpoint. `overwrite` replaces a non-empty folder whole and atomically: the new one is built under
a hidden sibling name and swapped in at the end (an interruption leaves the old one intact). A refusal leaves
nothing behind: everything is checked before the first write, and a folder this call made is removed again when
an expected failure (a bad image, a full disk) stops it before its first image.
"""

from __future__ import annotations

import json
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from reidaug.data.keypoints import Annotations
from reidaug.data.market import format_name, is_market_name, parse_name
from reidaug.errors import ReidaugError, offenders, user_message
from reidaug.models.checkpoint import load_generator
from reidaug.utils.io import atomic_write_text

JOB_COLUMNS = ["out_name", "source", "target_pose_from"]
MANIFEST = "manifest.csv"
MARKER = ".reidaug-generate.json"
MARKER_KEYS = ("method", "checkpoint_sha256")  # a folder holds the images of one method and checkpoint
GENERATED_SEQUENCE = 0  # Market sequences are 1..6


@dataclass
class GenerateConfig:
    batch_size: int = 64
    num_workers: int = 4  # DataLoader processes decoding source images
    writer_threads: int = 4  # threads encoding and writing images while the model runs
    amp: bool = True  # autocast on CUDA (ignored on the CPU)
    amp_dtype: str = "bf16"  # bf16 | fp16
    channels_last: bool = True  # CUDA only
    fast: bool = True  # inference fast path (reidaug.models.fuse); false: the plain eval model under no_grad
    nnpack_min_batch: int = 16  # fast path on the CPU: NNPACK convolutions (Winograd, FFT) from this batch (0: never)
    sources: int | None = None  # M sources per image (None: the checkpoint's model.num_sources)
    jpeg_quality: int = 95
    seed: int = 0  # seeds torch before generating (eval mode: the models themselves draw nothing)


@dataclass
class GenerateResult:
    out_dir: Path
    written: int
    skipped: int
    manifest: Path


def generated_name(source: str, number: int, sequence: int = GENERATED_SEQUENCE, ext: str = "jpg") -> str:
    """`PPPP_cCsS_FFFFFF_BB.jpg` for job `number` made from `source` (its pid and camera), see module doc."""
    if not 0 <= number < 100_000_000:
        raise ReidaugError(f"generated image number {number} outside 0..99,999,999")
    src = parse_name(source)
    return format_name(src.pid, src.camid, sequence, number % 1_000_000, number // 1_000_000, ext)


def job_source_columns(m: int) -> list[str]:
    """`source`, `source_1`, ..., `source_{m-1}`: the source columns of jobs and manifests for M = m."""
    return ["source"] + [f"source_{i}" for i in range(1, m)]


def jobs_source_count(jobs: pd.DataFrame) -> int:
    m = 1
    while f"source_{m}" in jobs.columns:
        m += 1
    return m


def jobs_from_pairs(pairs: pd.DataFrame, start: int = 0, num_sources: int = 1) -> pd.DataFrame:
    """One job per pairs/tuples row: its first `num_sources` sources in the pose of `to`, named by row number."""
    from reidaug.data.pairs import source_names

    src = source_names(pairs, num_sources)
    bad = [n for n in src[:, 0] if not is_market_name(n)]
    if bad:
        raise ReidaugError(f"{len(bad)} source names are not Market names: {offenders(bad)}")
    jobs = pd.DataFrame({"out_name": [generated_name(s, start + i) for i, s in enumerate(src[:, 0])]})
    for j, col in enumerate(job_source_columns(num_sources)):
        jobs[col] = src[:, j].astype(str)
    jobs["target_pose_from"] = pairs["to"].to_numpy()
    return jobs


def check_sources(generator, m: int, method: str) -> None:
    """`--sources M`: at least 1, and a number of sources the generator takes (any M only for a generator that
    fuses a variable number of sources; the others take exactly their own M)."""
    if m < 1:
        raise ReidaugError(f"--sources must be at least 1, got {m}")
    if not generator.accepts_sources(m):
        raise ReidaugError(f"--sources {m}: the {method} generator takes exactly {generator.num_sources} source "
                           f"image{'s' if generator.num_sources > 1 else ''} per generated image")  # fmt: skip


def check_jobs(jobs: pd.DataFrame, paths: dict[str, str], ann: Annotations) -> None:
    """Every problem of a job table as one error line, before anything is generated."""
    from reidaug.data.samples import check_names

    missing = [c for c in JOB_COLUMNS if c not in jobs.columns]
    if missing:
        raise ReidaugError(f"jobs lack columns {missing} (need {JOB_COLUMNS})")
    names = jobs["out_name"].astype(str)
    bad = [n for n in names if not is_market_name(n) or Path(n).name != n or not n.endswith(".jpg")]
    if bad:
        raise ReidaugError(f"{len(bad)} output names are not Market .jpg names: {offenders(bad)}")
    dup = names[names.duplicated()].unique().tolist()
    if dup:
        raise ReidaugError(f"{len(dup)} output names are used twice: {offenders(dup)}")
    src = jobs[job_source_columns(jobs_source_count(jobs))].to_numpy(dtype=object)
    check_names(src.ravel().tolist(), list(jobs["target_pose_from"]), paths, ann)


def check_config(cfg: GenerateConfig) -> None:
    from reidaug.utils.runtime import AMP_DTYPES

    checks = [(cfg.batch_size >= 1, f"batch_size must be at least 1, got {cfg.batch_size}"),
              (cfg.num_workers >= 0, f"num_workers must be >= 0, got {cfg.num_workers}"),
              (cfg.writer_threads >= 1, f"writer_threads must be at least 1, got {cfg.writer_threads}"),
              (0 <= cfg.jpeg_quality <= 100, f"jpeg_quality must be in 0..100, got {cfg.jpeg_quality}"),
              (cfg.amp_dtype in AMP_DTYPES, f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {cfg.amp_dtype!r}")]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ReidaugError(message)


def _holds(outer: Path, inner: Path) -> bool:
    outer, inner = outer.resolve(), inner.resolve()
    return outer == inner or outer in inner.parents


def check_output(out: Path, data_root, extra: dict, overwrite: bool, inputs=()) -> bool:
    """Refuse an output folder generation must not write (see the module doc); nothing is written. True when
    `out` holds something already (`overwrite` then replaces it whole)."""
    from reidaug.data.market import SPLITS

    if out.exists() and not out.is_dir():
        raise ReidaugError(f"output {out} exists and is not a folder")
    split = next((p for p in (out.resolve(), *out.resolve().parents) if p.name in SPLITS.values()
                  and any((p.parent / s).is_dir() for s in SPLITS.values())), None)  # a Market root's split  # fmt: skip
    if split is not None:
        raise ReidaugError(f"output {out} is inside the split folder {split}: generated images there would be read "
                           "as real ones; choose another --out")  # fmt: skip
    if data_root is not None and _holds(out, Path(data_root)):
        raise ReidaugError(f"output {out} holds the dataset {data_root}; choose another --out")
    held = [e for e in out.iterdir() if not (e.name.startswith(".") and e.name.endswith(".tmp"))] if out.is_dir() else []
    if not held:
        return False
    if overwrite:
        mine = [str(p) for p in inputs if p is not None and _holds(out, Path(p))]
        if mine:
            raise ReidaugError(f"--overwrite would delete {mine[0]}, an input of this run, with {out}")
        return True
    marker = out / MARKER
    if not marker.is_file():
        raise ReidaugError(f"output folder {out} is not empty and holds no generate output (pass --overwrite to "
                           "replace it)")  # fmt: skip
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
        old = old if isinstance(old, dict) else None
    except (ValueError, UnicodeDecodeError):
        old = None
    if old is None:
        raise ReidaugError(f"{marker} is damaged; use a new --out or --overwrite")
    diff = [k for k in MARKER_KEYS if k in extra and k in old and old[k] != extra[k]]
    if diff:
        raise ReidaugError(f"{out} holds images of another {' and '.join(diff)} ({old.get('method')}, "
                           f"{str(old.get('checkpoint_sha256'))[:12]}); use a new --out or --overwrite")  # fmt: skip
    return True


def clean_stale(out_dir: Path) -> int:
    """Remove temporary files a killed run left (`.NAME.XXXX.tmp` of atomic writes)."""
    n = 0
    for p in out_dir.glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def generate_images(generator, jobs: pd.DataFrame, data_root: str | Path, annotations: Annotations,
                    out_dir: str | Path, cfg: GenerateConfig | None = None, *, device="auto",
                    manifest_extra: dict | None = None, overwrite: bool = False, show_progress: bool = True,
                    on_batch=None, paths: dict[str, str] | None = None, inputs=()) -> GenerateResult:  # fmt: skip
    """Generate `jobs` (out_name, source[, source_1 ...], target_pose_from) with `generator` (a PoseGenerator,
    see reidaug.models.method) into `out_dir`.

    Source images are read from `data_root`; source and target keypoints come from `annotations` (so a target
    pose may be any annotated image). Finished images are skipped; `manifest_extra` (method,
    checkpoint_sha256, seed, ...) is added to every manifest row. `on_batch(k)` runs after batch k is queued.
    `overwrite` replaces a non-empty `out_dir` whole (`inputs`: files it must not hold then).
    """
    from reidaug.data.samples import SampleDataset, image_index, make_loader
    from reidaug.utils.io import staged_dir
    from reidaug.utils.runtime import resolve_device, seed_all

    cfg = cfg or GenerateConfig()
    check_config(cfg)
    extra = dict(manifest_extra or {})
    paths = paths if paths is not None else image_index(data_root)
    jobs = jobs.reset_index(drop=True)
    check_jobs(jobs, paths, annotations)
    m = jobs_source_count(jobs)
    if not generator.accepts_sources(m):
        raise ReidaugError(f"the generator takes {generator.num_sources} source(s) per image; the jobs give {m}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)

    out = Path(out_dir)
    SampleDataset(jobs[job_source_columns(m)].to_numpy(dtype=object), jobs["target_pose_from"], paths,
                  annotations)  # the keypoint checks (inside the image ...), before anything is written  # fmt: skip

    def into(folder: Path) -> GenerateResult:
        atomic_write_text(folder / MARKER, json.dumps({k: extra.get(k) for k in MARKER_KEYS}) + "\n")
        clean_stale(folder)
        done = jobs["out_name"].map(lambda n: (folder / n).is_file()).to_numpy(bool)
        todo = jobs[~done].reset_index(drop=True)
        if len(todo):
            seed_all(cfg.seed)
            ds = SampleDataset(todo[job_source_columns(m)].to_numpy(dtype=object), todo["target_pose_from"], paths,
                               annotations)  # fmt: skip
            loader = make_loader(ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                 pin_memory=dev.type == "cuda", seed=cfg.seed)  # fmt: skip
            _run(generator, loader, todo["out_name"].tolist(), folder, cfg, dev, show_progress, on_batch)
        manifest = write_manifest(folder, jobs, extra)
        return GenerateResult(out, len(todo), int(done.sum()), out / manifest.name)

    if check_output(out, data_root, extra, overwrite, inputs) and overwrite:
        with staged_dir(out, overwrite=True) as tmp:  # the old folder stays until the new one is complete
            return into(tmp)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return into(out)
    except Exception as e:
        if created and user_message(e) is not None and not any(out.glob("*.jpg")):
            shutil.rmtree(out, ignore_errors=True)  # refused before the first image: nothing left behind
        raise


def _run(generator, loader, names, out: Path, cfg: GenerateConfig, dev, show_progress, on_batch) -> None:
    """Decode (loader workers), generate, quantise on the device, encode and write (writer threads). On CUDA the
    images reach pinned host memory by a non-blocking copy that the writer threads wait for, so the main thread
    never waits for the device and queues the next batch at once."""
    from reidaug.data.images import to_uint8_tensor
    from reidaug.data.samples import resize_images, to_device
    from reidaug.models.fuse import for_inference
    from reidaug.utils.progress import progress
    from reidaug.utils.runtime import Amp

    amp = Amp(dev, cfg.amp, cfg.amp_dtype)
    work_size = generator.image_size  # the generator's working size; images are written at the data's
    channels_last = cfg.channels_last and dev.type == "cuda"
    if cfg.fast:
        model = for_inference(generator, dev, nnpack_min_batch=cfg.nnpack_min_batch, channels_last=channels_last)
    else:
        model = generator.to(dev).eval()
        if channels_last:
            model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input shape (and the last batch's)
    grad_off = torch.inference_mode if cfg.fast else torch.no_grad
    pending: deque = deque()  # futures of earlier batches; at most two batches wait for the writers
    with ThreadPoolExecutor(max(1, cfg.writer_threads)) as pool, progress(disable=not show_progress) as bar:
        task = bar.add_task("generate", total=len(names), info="", unit="img")
        for k, batch in enumerate(loader):
            idx = batch.pop("index").tolist()
            data_size = tuple(batch["src_img"].shape[-2:])
            with grad_off(), amp.autocast():
                fake = model(to_device(batch, dev, channels_last, work_size))["image"]
                images = to_uint8_tensor(resize_images(fake, data_size))
            ready = None
            if dev.type == "cuda":  # a non-blocking copy to pinned memory; writers wait for the event
                host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
                host.copy_(images, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record()
                images = host
            pending.append([pool.submit(_write, out / names[i], images, j, ready, cfg.jpeg_quality)
                            for j, i in enumerate(idx)])  # fmt: skip
            while len(pending) > 2:
                _finish(pending.popleft(), bar, task)
            if on_batch is not None:
                on_batch(k)
        while pending:
            _finish(pending.popleft(), bar, task)


def _write(path: Path, images: torch.Tensor, j: int, ready, quality: int) -> None:
    """Image j of a (B, H, W, 3) uint8 host batch, once the device copy (`ready`, a CUDA event) has landed."""
    from reidaug.data.images import write_image

    if ready is not None:
        ready.synchronize()
    write_image(path, images[j].numpy(), quality)


def _finish(futures, bar, task) -> None:
    for f in futures:
        f.result()  # re-raises a writer's error
    bar.advance(task, len(futures))


def write_manifest(out: Path, jobs: pd.DataFrame, extra: dict) -> Path:
    """Rows for `jobs` (plus `extra` columns), keeping earlier rows of other names; written atomically."""
    names = jobs["out_name"].astype(str)
    parsed = [parse_name(n) for n in names]
    sources = {c: jobs[c].to_numpy() for c in job_source_columns(jobs_source_count(jobs))}
    rows = pd.DataFrame({
        "name": names.to_numpy(), "pid": [p.pid for p in parsed], "camid": [p.camid for p in parsed],
        **sources, "target_pose_from": jobs["target_pose_from"].to_numpy(), **{k: v for k, v in extra.items()},
    })  # fmt: skip
    path = out / MANIFEST
    if path.is_file():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        old = old[~old["name"].isin(set(names)) & old["name"].map(lambda n: (out / n).is_file())]
        if len(old):
            rows = pd.concat([old, rows.astype(str)], ignore_index=True)
    atomic_write_text(path, rows.to_csv(index=False, lineterminator="\n"))
    return path


def default_annotation_files(root: str | Path) -> list[Path]:
    """Every keypoint file of a root (train, test, query): a target pose may come from any of them."""
    from reidaug.data.market import annotation_path

    files = [annotation_path(root, s) for s in ("train", "test", "query")]
    files = [f for f in files if f.is_file()]
    if not files:
        raise ReidaugError(f"no annotations in {annotation_path(root).parent} (train.csv, test.csv, query.csv); "
                           "pass --annotations")  # fmt: skip
    return files


def generate(checkpoint: str | Path, pairs: str | Path | pd.DataFrame, data_root: str | Path, out_dir: str | Path,
             *, annotations=None, method_name: str | None = None, cfg: GenerateConfig | None = None,
             device: str = "auto", overwrite: bool = False, show_progress: bool = True, on_batch=None) -> GenerateResult:  # fmt: skip
    """`reidaug generate`: every pairs/tuples row -> its source(s) in the `to` pose, named by row number.

    Everything is validated (checkpoint method, image names, keypoints) before anything is written.
    """
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.pairs import read_pairs, source_columns, source_names
    from reidaug.data.samples import check_names, image_index, merge_annotations
    from reidaug.models.checkpoint import check_method, load_checkpoint, resolve_checkpoint
    from reidaug.utils.io import file_sha256

    cfg = cfg or GenerateConfig()
    check_config(cfg)
    ckpt_path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    check_method(ckpt, method_name, ckpt_path)
    generator, _ = load_generator(ckpt_path, ckpt=ckpt)
    m = generator.num_sources if cfg.sources is None else cfg.sources
    check_sources(generator, m, ckpt["method"])
    df = pairs if isinstance(pairs, pd.DataFrame) else read_pairs(pairs)
    k = len(source_columns(df))
    if k < m:
        where = "the pairs table" if isinstance(pairs, pd.DataFrame) else str(pairs)
        raise ReidaugError(f"{m} sources per image need a tuples file with at least {m} source columns (from_0 ... "
                           f"from_{m - 1}); {where} has {k}" + (f" (or pass --sources {k})" if generator.accepts_sources(k) else ""))  # fmt: skip
    files = annotations if annotations else default_annotation_files(data_root)
    files = [files] if isinstance(files, str | Path) else list(files)
    ann = merge_annotations([read_annotations(f) for f in files])
    paths = image_index(data_root)
    to = list(df["to"])
    check_names(source_names(df, m).ravel().tolist() + to, to, paths, ann)  # the `to` images are in the root too
    jobs = jobs_from_pairs(df, num_sources=m)
    extra = {"method": ckpt["method"], "checkpoint_sha256": file_sha256(ckpt_path), "seed": cfg.seed}
    inputs = [ckpt_path, None if isinstance(pairs, pd.DataFrame) else pairs, *files]
    return generate_images(generator, jobs, data_root, ann, out_dir, cfg, device=device, manifest_extra=extra,
                           overwrite=overwrite, show_progress=show_progress, on_batch=on_batch, paths=paths,
                           inputs=inputs)  # fmt: skip
