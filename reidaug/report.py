"""Result tables and plots laid out like Table 6 of the PATN paper (mAP and Rank-1 against the portion p)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reidaug.utils.io import atomic_path, atomic_write_text

RESULT_COLUMNS = ["generator", "backbone", "loss", "portion", "seed", "mAP", "rank1", "rank5", "rank10", "n_train"]
FULL = "full"  # the generator label of the full real training set (p = 1.0, the upper bound)
NONE = "none"  # the reduced set M_p^R without generated images (the lower bound)


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


def table6_markdown(results: pd.DataFrame) -> str:
    """Rows = (generator, backbone/loss), columns = portions; each cell 'mAP / Rank-1' (mean ± sd over seeds).

    The full real set fills the p = 1.0 column of every row, as in the paper.
    """
    s = summarize(results)
    portions = sorted(s["portion"].unique())
    full = s[s["generator"] == FULL]
    rows = s[s["generator"] != FULL]
    header = "| generator | backbone (loss) | " + " | ".join(f"p = {p:g}" for p in portions) + " |"
    lines = [header, "|" + "---|" * (2 + len(portions))]
    order = sorted(rows.groupby(["generator", "backbone", "loss"]).groups, key=lambda k: (k[0] != NONE, k))
    for gen, backbone, loss in order:
        r = rows[(rows.generator == gen) & (rows.backbone == backbone) & (rows.loss == loss)]
        f = full[(full.backbone == backbone) & (full.loss == loss)]
        cells = []
        for p in portions:
            src = r[r.portion == p]
            if src.empty:
                src = f[f.portion == p]
            if src.empty:
                cells.append("–")
                continue
            x = src.iloc[0]
            cells.append(f"{_cell(x.mAP_mean, x.mAP_std, x.seeds)} / {_cell(x.rank1_mean, x.rank1_std, x.seeds)}")
        lines.append(f"| {gen} | {backbone} ({loss}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nEach cell: mAP / Rank-1 in %, mean ± standard deviation over seeds.\n"


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
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(results: pd.DataFrame, out_dir: str | Path, extra: str = "") -> dict[str, Path]:
    """results.csv, table6.md and map_vs_portion.png in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "results.csv", "table": out_dir / "table6.md", "plot": out_dir / "map_vs_portion.png"}
    with atomic_path(paths["csv"]) as tmp:
        results.sort_values(["generator", "backbone", "loss", "portion", "seed"]).to_csv(tmp, index=False)
    atomic_write_text(paths["table"], "# Re-ID with generated training data (Table 6 protocol)\n\n"
                      + table6_markdown(results) + (("\n" + extra) if extra else ""))
    plot_map(results, paths["plot"])
    return paths


def gains(results: pd.DataFrame, generator: str, portion: float) -> np.ndarray:
    """Per-seed mAP of `generator` minus that of the reduced set at `portion` (seeds present in both)."""
    a = results[(results.generator == generator) & (results.portion == portion)].set_index("seed").mAP
    b = results[(results.generator == NONE) & (results.portion == portion)].set_index("seed").mAP
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).to_numpy()
