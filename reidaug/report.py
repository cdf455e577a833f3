"""Result tables and plots laid out like Table 6 of the PATN paper (mAP and Rank-1 against the portion p)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reidaug.utils.io import atomic_path, atomic_write_text

RESULT_COLUMNS = ["generator", "backbone", "loss", "portion", "seed", "mAP", "rank1", "rank5", "rank10", "n_train"]
FULL = "full"  # the generator label of the full real training set (p = 1.0, the upper bound)
NONE = "none"  # the reduced set M_p^R without generated images (the lower bound)
CELL_COLUMNS = ["cell", "generator", "backbone", "loss", "portion", "seed", "status", "reason"]  # cells.csv
MISSING = "missing"  # a table cell whose experiment cells all failed or did not run


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) standard deviation over seeds of every (generator, backbone, loss, portion) cell."""
    keys = ["generator", "backbone", "loss", "portion"]
    g = results.groupby(keys, sort=True)
    out = g[["mAP", "rank1"]].agg(["mean", "std", "count"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out = out.rename(columns={"mAP_count": "seeds"}).drop(columns=["rank1_count"])
    return out.reset_index().fillna({"mAP_std": 0.0, "rank1_std": 0.0})


def _cell(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.1f}" if seeds < 2 else f"{mean:.1f} ± {std:.1f}"


def table6_markdown(results: pd.DataFrame, planned: pd.DataFrame | None = None) -> str:
    """Rows = (generator, backbone/loss), columns = portions; each cell 'mAP / Rank-1' (mean ± sd over seeds).

    The full real set fills the p = 1.0 column of every row, as in the paper. With `planned` (CELL_COLUMNS: every
    cell the experiment planned), a table cell with no finished seed reads 'missing' and one with fewer finished
    seeds than planned says how many.
    """
    s = summarize(results)
    planned = planned if planned is not None else pd.DataFrame(columns=CELL_COLUMNS)
    expected = planned.groupby(["generator", "backbone", "loss", "portion"]).seed.nunique()
    portions = sorted(set(s["portion"]) | set(planned["portion"]))
    full = s[s["generator"] == FULL]
    rows = s[s["generator"] != FULL]
    header = "| generator | backbone (loss) | " + " | ".join(f"p = {p:g}" for p in portions) + " |"
    lines = [header, "|" + "---|" * (2 + len(portions))]
    keys = set(rows.groupby(["generator", "backbone", "loss"]).groups)
    keys |= {tuple(k) for k in planned[planned.generator != FULL][["generator", "backbone", "loss"]].to_numpy()}
    marked = False
    for gen, backbone, loss in sorted(keys, key=lambda k: (k[0] != NONE, k)):
        r = rows[(rows.generator == gen) & (rows.backbone == backbone) & (rows.loss == loss)]
        f = full[(full.backbone == backbone) & (full.loss == loss)]
        cells = []
        for p in portions:
            src, label = r[r.portion == p], gen
            if src.empty and (gen, backbone, loss, p) not in expected.index:
                src, label = f[f.portion == p], FULL
            want = int(expected.get((label, backbone, loss, p), 0))
            if src.empty:
                cells.append(MISSING if want else "–")
                marked |= bool(want)
                continue
            x = src.iloc[0]
            text = f"{_cell(x.mAP_mean, x.mAP_std, x.seeds)} / {_cell(x.rank1_mean, x.rank1_std, x.seeds)}"
            if x.seeds < want:
                text += f" ({x.seeds} of {want} seeds)"
                marked = True
            cells.append(text)
        lines.append(f"| {gen} | {backbone} ({loss}) | " + " | ".join(cells) + " |")
    note = "\n\nEach cell: mAP / Rank-1 in %, mean ± standard deviation over seeds.\n"
    if marked:
        note += (f"'{MISSING}': no finished cell (failed or not run, see cells.csv); '(k of n seeds)': the mean of "
                 "the k finished seeds.\n")  # fmt: skip
    return "\n".join(lines) + note


def plot_map(results: pd.DataFrame, path: str | Path) -> None:
    """mAP against p, one line per generator (error bars over seeds), the full real set as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(results)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for (gen, backbone, loss), r in s[s.generator != FULL].groupby(["generator", "backbone", "loss"]):
        r = r.sort_values("portion")
        ax.errorbar(r.portion, r.mAP_mean, yerr=r.mAP_std, marker="o", capsize=3, label=f"{gen} ({backbone}, {loss})")
    for (backbone, loss), f in s[s.generator == FULL].groupby(["backbone", "loss"]):
        ax.axhline(f.mAP_mean.mean(), ls="--", color="k", lw=1, label=f"full real set ({backbone}, {loss})")
    ax.set_xlabel("portion p of real training images kept")
    ax.set_ylabel("mAP (%)")
    ax.set_xticks(sorted(s.portion.unique()))
    ax.set_xlim(0, 1.05)  # p in (0, 1]: points at the ends stay whole
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(results: pd.DataFrame, out_dir: str | Path, extra: str = "",
                 planned: pd.DataFrame | None = None) -> dict[str, Path]:  # fmt: skip
    """results.csv, table6.md (missing cells of `planned` marked, see table6_markdown) and map_vs_portion.png in
    `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "results.csv", "table": out_dir / "table6.md", "plot": out_dir / "map_vs_portion.png"}
    with atomic_path(paths["csv"]) as tmp:
        results.sort_values(["generator", "backbone", "loss", "portion", "seed"]).to_csv(tmp, index=False)
    atomic_write_text(paths["table"], "# Re-ID with generated training data (Table 6 protocol)\n\n"
                      + table6_markdown(results, planned) + (("\n" + extra) if extra else ""))
    plot_map(results, paths["plot"])
    return paths


def gains(results: pd.DataFrame, generator: str, portion: float) -> np.ndarray:
    """Per-seed mAP of `generator` minus that of the reduced set at `portion` (seeds present in both)."""
    a = results[(results.generator == generator) & (results.portion == portion)].set_index("seed").mAP
    b = results[(results.generator == NONE) & (results.portion == portion)].set_index("seed").mAP
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).to_numpy()


# -- the HTML report of an experiment folder ------------------------------------------------------------------------


def gap_closed(results: pd.DataFrame) -> pd.DataFrame:
    """Per (generator, backbone, loss, portion < 1): the mean over seeds of (aug - reduced) / (full - reduced) mAP."""
    rows = []
    full = results[results.generator == FULL].groupby(["backbone", "loss", "seed"]).mAP.mean()
    red = results[results.generator == NONE].set_index(["backbone", "loss", "portion", "seed"]).mAP
    for r in results[~results.generator.isin([FULL, NONE])].itertuples():
        key = (r.backbone, r.loss, r.portion, r.seed)
        if key not in red.index or (r.backbone, r.loss, r.seed) not in full.index:
            continue
        span = full[(r.backbone, r.loss, r.seed)] - red[key]
        if span > 0:
            rows.append((r.generator, r.backbone, r.loss, r.portion, (r.mAP - red[key]) / span))
    df = pd.DataFrame(rows, columns=["generator", "backbone", "loss", "portion", "gap_closed"])
    return df.groupby(["generator", "backbone", "loss", "portion"], as_index=False).gap_closed.mean()


def plot_losses(log: Path, path: Path, title: str) -> Path:
    """Every logged loss of a training run (log.jsonl) against the iteration."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    keys = [k for k in rows[0] if k != "iteration" and not k.startswith("lr") and k != "it_per_s"]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    for k in keys:
        ax.plot([r["iteration"] for r in rows if k in r], [r[k] for r in rows if k in r], label=k, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


METRIC_KEYS = ("ssim", "ssim_255", "mask_ssim", "l1", "is", "mask_is", "fid", "kid", "lpips", "pckh")


def write_html_report(exp: str | Path, out: str | Path | None = None) -> Path:
    """EXP/report.html (and its loss-curve PNGs in EXP/report_files/): the Table 6 table and plot, the gap closed
    per portion, each generator's image metrics, samples and training losses, and what was run. Images are
    linked by relative paths: the folder opens from disk in a browser."""
    import datetime
    import os

    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from omegaconf import OmegaConf

    from reidaug.errors import ReidaugError, first_line
    from reidaug.utils.io import check_writable, read_json, read_table
    from reidaug.utils.runtime import package_versions

    exp = Path(exp)
    if not (exp / "results.csv").is_file():
        raise ReidaugError(f"{exp} is not a finished experiment (no results.csv); run reidaug experiment first")
    out = check_writable(Path(out) if out is not None else exp / "report.html", "file")
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    results = read_table(exp / "results.csv", ("generator", "backbone", "loss"),
                         ("portion", "seed", "mAP", "rank1", "rank5", "rank10"))  # fmt: skip
    s = summarize(results)
    planned = pd.read_csv(exp / "cells.csv", keep_default_na=False) if (exp / "cells.csv").is_file() else None
    portions = sorted(set(s.portion) | (set(planned.portion) if planned is not None else set()))
    table = []
    for line in table6_markdown(results, planned).splitlines()[2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        table.append({"generator": cells[0], "reid": cells[1], "cells": cells[2:]})
    gaps_df = gap_closed(results)
    gap_portions = sorted(gaps_df.portion.unique())
    gaps = []
    for (gen, backbone, loss), g in gaps_df.groupby(["generator", "backbone", "loss"]):
        by_p = dict(zip(g.portion, g.gap_closed))
        cells = [{"text": f"{100 * by_p[p]:.0f}%" if p in by_p else "–",
                  "cls": "" if p not in by_p else ("good" if by_p[p] > 0 else "bad")} for p in gap_portions]  # fmt: skip
        gaps.append({"generator": gen, "reid": f"{backbone} ({loss})", "cells": cells})

    cfg = {}
    if (exp / "experiment.yaml").is_file():
        try:
            cfg = OmegaConf.to_container(OmegaConf.load(exp / "experiment.yaml"))
        except Exception as e:  # yaml and decoding errors carry multi-line context
            raise ReidaugError(f"cannot parse {exp / 'experiment.yaml'}: {first_line(e)}") from None
        cfg = cfg if isinstance(cfg, dict) else {}
    runs = exp / "augment"
    labels = list((cfg.get("generators") or {}).keys()) or sorted(
        d.name for d in (runs.iterdir() if runs.is_dir() else ()) if d.is_dir() and d.name != NONE)
    metrics, samples, curves, generators = [], [], [], []
    files = out.parent / "report_files"
    for i, label in enumerate(labels):
        mpath = exp / "image_metrics" / f"{label}.json"
        if mpath.is_file():
            from reidaug.metrics.generated import skipped_lines

            m = read_json(mpath)
            marked = set(m.get("random_weights", []))
            values = {k: f"{m['metrics'][k]:.3f}" + ("*" if k in marked else "") for k in METRIC_KEYS
                      if k in m["metrics"]}  # fmt: skip
            metrics.append({"generator": label, "scores": values, "images": m["images"],
                            "folder": rel(m["generated"]), "skipped": skipped_lines(m)})  # fmt: skip
        grid = exp / ("examples.png" if i == 0 else f"examples_{label}.png")
        if grid.is_file():
            from reidaug.data.images import read_image

            samples.append({"generator": label, "image": rel(grid), "width": 2 * read_image(grid).shape[1],
                            "caption": "each row: source | target pose | generated | the real image it replaces"})  # fmt: skip
        spec = (cfg.get("generators") or {}).get(label, "")
        ckpt = Path(spec)
        run = ckpt if ckpt.is_dir() else ckpt.parent.parent
        meta = {}
        first = sorted((exp / "augment" / label).glob("p*_s*/augment.json"))
        if spec.startswith("train:") and first:  # trained on each M_p^R: the first one's run
            run = first[0].parent / "generator"
            ckpt = run / "checkpoints" / "latest.pt"
        if first:
            meta = (read_json(first[0]) or {}).get("generator", {})
        generators.append({"label": label, "method": meta.get("method", "?"), "checkpoint": str(ckpt),
                           "sha256": meta.get("checkpoint_sha256", ""), "iteration": meta.get("iteration", "?"),
                           "config": (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else "–"})  # fmt: skip
        if (run / "log.jsonl").is_file():
            files.mkdir(parents=True, exist_ok=True)
            png = plot_losses(run / "log.jsonl", files / f"losses_{label}.png", f"{label} ({meta.get('method', '')})")
            curves.append({"generator": label, "image": rel(png), "caption": f"logged losses of {run}"})
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "assets"), autoescape=select_autoescape())
    html = env.get_template("report.html.j2").render(
        title=str(exp.resolve()), created=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), versions=package_versions(),
        portions=[f"{p:g}" for p in portions], table=table, seeds=int(results.seed.nunique()),
        plot=rel(exp / "map_vs_portion.png"), gap_portions=[f"{p:g}" for p in gap_portions], gaps=gaps,
        metrics=metrics, metric_keys=[k for k in METRIC_KEYS if any(k in m["scores"] for m in metrics)],
        samples=samples, curves=curves, generators=generators,
        config=(exp / "experiment.yaml").read_text() if (exp / "experiment.yaml").is_file() else "–",
    )  # fmt: skip
    atomic_write_text(out, html)
    return out
