import numpy as np
import pandas as pd
import pytest

from reidaug.report import CELL_COLUMNS, gains, summarize, table6_markdown, write_report


def _results():
    rows = []
    for seed, (none, patn, full) in enumerate([(10.0, 30.0, 50.0), (14.0, 34.0, 54.0)]):
        for gen, p, m in [("none", 0.1, none), ("patn", 0.1, patn), ("full", 1.0, full)]:
            rows.append(dict(generator=gen, backbone="resnet18", loss="softmax", portion=p, seed=seed,
                             mAP=m, rank1=m + 20, rank5=0, rank10=0, n_train=1))
    return pd.DataFrame(rows)


def test_summarize_mean_and_sample_std():
    s = summarize(_results()).set_index("generator")
    assert s.loc["patn", "mAP_mean"] == pytest.approx(32.0)
    assert s.loc["patn", "mAP_std"] == pytest.approx(np.std([30.0, 34.0], ddof=1))
    assert s.loc["full", "rank1_mean"] == pytest.approx(72.0)
    assert s.loc["none", "seeds"] == 2


def test_table_layout_like_table6():
    md = table6_markdown(_results())
    lines = md.splitlines()
    assert lines[0] == "| generator | backbone (loss) | p = 0.1 | p = 1 |"
    # 'none' first, then generators; the full real set fills the p = 1.0 column of every row.
    assert lines[2].startswith("| none | resnet18 (softmax) | 12.0 ± 2.8 / 32.0 ± 2.8 | 52.0 ± 2.8 / 72.0 ± 2.8 |")
    assert lines[3].startswith("| patn | resnet18 (softmax) | 32.0 ± 2.8 / 52.0 ± 2.8 |")


def test_gains_per_seed():
    assert list(gains(_results(), "patn", 0.1)) == [20.0, 20.0]


def test_write_report_files(tmp_path):
    paths = write_report(_results(), tmp_path)
    assert pd.read_csv(paths["csv"]).shape == (6, 10)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Table 6" in paths["table"].read_text()


def test_table_marks_missing_cells():
    """Planned cells without a result: a table cell with no finished seed reads 'missing', one with fewer seeds
    than planned says how many (the mean is over the finished ones)."""
    res = _results()
    res = res[~((res.generator == "patn") & (res.seed == 1)) & (res.generator != "full")]
    planned = pd.DataFrame([{"cell": f"{g}_{p}_{s}", "generator": g, "backbone": "resnet18", "loss": "softmax",
                             "portion": p, "seed": s, "status": "", "reason": ""}
                            for g, p in [("none", 0.1), ("patn", 0.1), ("full", 1.0)] for s in (0, 1)],
                           columns=CELL_COLUMNS)  # fmt: skip
    lines = table6_markdown(res, planned).splitlines()
    assert lines[0] == "| generator | backbone (loss) | p = 0.1 | p = 1 |"
    assert lines[2] == "| none | resnet18 (softmax) | 12.0 ± 2.8 / 32.0 ± 2.8 | missing |"
    assert lines[3] == "| patn | resnet18 (softmax) | 30.0 / 50.0 (1 of 2 seeds) | missing |"
    assert "'missing': no finished cell" in lines[-1]
    # a generator whose every cell failed still has its row
    lines = table6_markdown(res[res.generator == "none"], planned).splitlines()
    assert lines[3] == "| patn | resnet18 (softmax) | missing | missing |"
    assert "'missing'" not in table6_markdown(_results(), planned)  # all finished: no marks, no note
