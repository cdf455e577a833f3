"""`reidaug synth` speed: images per second per core, writing a complete dataset (render, JPEG, files,
annotations) with one process, and the render-only rate.

Prints JSON {images, workers, wall_seconds, cpu_seconds, images_per_second (wall), images_per_cpu_second
(per core: CPU time of this process and its workers, robust to a busy machine), render_images_per_cpu_second,
target_per_core, meets_target, load_average, cpus}. Acceptance: >= 200 images per second per core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

TARGET = 200.0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=40, help="train identities and as many test identities")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--config", default="synth/default")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = ap.parse_args()

    from reidaug.config import load_config
    from reidaug.data.images import encode_image
    from reidaug.data.synth.config import SynthConfig
    from reidaug.data.synth.dataset import make_dataset, plan
    from reidaug.data.synth.render import Renderer
    from reidaug.errors import ReidaugError

    try:
        cfg = load_config(
            SynthConfig, args.config, [f"synth.train_ids={args.ids}", f"synth.test_ids={args.ids}", *args.set]
        )
    except ReidaugError as e:
        print(f"bench_synth: {e}", file=sys.stderr)
        return 2

    # warm-up: imports, the pose prior and the camera plates of this process
    r = Renderer(cfg)
    specs = plan(cfg)["train"]
    for s in specs[:20]:
        r.render(s)

    c0 = time.process_time()
    for s in specs:
        img = r.render(s)
        encode_image(img.image, ".jpg", img.quality)
    render_rate = len(specs) / (time.process_time() - c0)

    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = _cpu(), time.perf_counter()
        summary = make_dataset(Path(tmp) / "synth", cfg, workers=args.workers, show_progress=False)
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
    n = summary["train_images"] + summary["gallery_images"] + summary["query_images"]
    per_core = n / cpu
    print(
        json.dumps(
            {
                "images": n,
                "workers": args.workers,
                "wall_seconds": round(wall, 3),
                "cpu_seconds": round(cpu, 3),
                "images_per_second": round(n / wall, 1),
                "images_per_cpu_second": round(per_core, 1),
                "render_images_per_cpu_second": round(render_rate, 1),
                "target_per_core": TARGET,
                "meets_target": per_core >= TARGET,
                "load_average": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
