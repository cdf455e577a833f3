"""Market-1501 ranking metrics (CMC and mAP), vectorised over queries.

Market's rule: for each query, gallery images of the same identity *and* the same camera are removed, and junk
images (pid -1) are ignored; distractors (pid 0) stay as negatives. Queries with no remaining true match are not
counted. AP is the non-interpolated average precision over the kept ranking, as in torchreid's
`eval_market1501` (which gives identical numbers on a gallery without junk: torchreid's own `Market1501` drops pid
-1 images instead of ignoring them at evaluation time). Unlike torchreid's Python fallback (a loop over queries,
~70 s on Market, and a ragged-array crash when the gallery is smaller than `max_rank`), this runs in seconds and
returns a full-length CMC for any gallery size: after a query's first match its CMC stays at 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidaug.errors import ReidaugError

JUNK_PID = -1


@dataclass
class RankResult:
    cmc: np.ndarray  # (max_rank,) fraction of valid queries matched within the top k+1
    mAP: float
    num_valid_queries: int
    num_queries: int

    def rank(self, k: int) -> float:
        return float(self.cmc[k - 1])


def evaluate_market(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    junk_pid: int | None = JUNK_PID,
    chunk: int = 256,
) -> RankResult:
    """CMC and mAP of a (num_query, num_gallery) distance matrix (smaller = more similar)."""
    distmat = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a).ravel() for a in (q_pids, g_pids, q_camids, g_camids))
    if (
        distmat.ndim != 2
        or distmat.shape != (len(q_pids), len(g_pids))
        or len(q_camids) != len(q_pids)
        or len(g_camids) != len(g_pids)
    ):
        raise ReidaugError(
            f"distance matrix {distmat.shape} does not match {len(q_pids)} queries and {len(g_pids)} gallery images"
        )
    if distmat.size == 0:
        raise ReidaugError(f"nothing to evaluate: {len(q_pids)} queries, {len(g_pids)} gallery images")
    num_q, num_g = distmat.shape
    first = np.zeros(num_q, np.int64)  # 0-based position of the first true match in the kept ranking
    ap = np.zeros(num_q)
    valid = np.zeros(num_q, bool)
    for s in range(0, num_q, chunk):
        e = min(s + chunk, num_q)
        order = np.argsort(distmat[s:e], axis=1)
        gp = g_pids[order]
        # matches are few per row: work on their (row, column) lists instead of full cumulative sums
        mr, mc = np.nonzero(gp == q_pids[s:e, None])
        same_cam = g_camids[order[mr, mc]] == q_camids[s + mr]
        dropped = [mr[same_cam] * num_g + mc[same_cam]]  # flat indices of removed entries
        if junk_pid is not None:
            jr, jc = np.nonzero(gp == junk_pid)
            dropped.append(jr * num_g + jc)
        dropped = np.sort(np.concatenate(dropped))
        hr, hc = mr[~same_cam], mc[~same_cam]  # true matches, row-major order
        flat = hr * num_g + hc
        n_before = np.searchsorted(dropped, flat) - np.searchsorted(dropped, hr * num_g)
        pos = hc + 1 - n_before  # 1-based rank among kept entries
        n_rows = e - s
        num_rel = np.bincount(hr, minlength=n_rows)
        row_start = np.concatenate([[0], np.cumsum(num_rel)[:-1]])
        nhit = np.arange(len(hr)) - row_start[hr] + 1  # matches up to and including this one
        ap[s:e] = np.bincount(hr, weights=nhit / pos, minlength=n_rows) / np.maximum(num_rel, 1)
        has = num_rel > 0
        first[s:e][has] = pos[row_start[has]] - 1
        valid[s:e] = has
    nv = int(valid.sum())
    if nv == 0:
        raise ReidaugError(
            "no query has a true match in the gallery from another camera; cannot compute CMC/mAP"
        )
    hits = (first[valid, None] <= np.arange(max_rank)[None, :]).astype(np.float32)
    cmc = hits.sum(axis=0) / nv
    return RankResult(cmc=cmc, mAP=float(ap[valid].mean()), num_valid_queries=nv, num_queries=num_q)


def distance_matrix(qf, gf, metric: str = "euclidean", normalize: bool = False):
    """(num_query, num_gallery) distances between feature rows: squared euclidean or cosine (torch tensors)."""
    import torch.nn.functional as F

    if metric not in ("euclidean", "cosine"):
        raise ReidaugError(f"unknown distance metric {metric!r}; choose euclidean or cosine")
    qf, gf = qf.float(), gf.float()
    if normalize or metric == "cosine":
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    if metric == "cosine":
        return 1 - qf @ gf.t()
    d = qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1)[None, :] - 2 * qf @ gf.t()
    return d.clamp_min_(0)
