"""Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020).

Pair-wise form on L2-normalised features, with identity labels inside the batch. For each anchor x with
within-class cosine similarities s_p^i and between-class similarities s_n^j:

    L(x) = log[1 + sum_j exp(gamma * a_n^j * (s_n^j - D_n)) * sum_i exp(-gamma * a_p^i * (s_p^i - D_p))]   (Eq. 6)
    a_p^i = [O_p - s_p^i]_+ ,  a_n^j = [s_n^j - O_n]_+   (Eq. 5, self-paced weights, no gradient)
    O_p = 1 + m, O_n = -m, D_p = 1 - m, D_n = m          (Eq. 8, one relaxation margin m)

The batch loss is the mean over anchors that have at least one positive and one negative (an identity-balanced
sampler guarantees both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CircleLoss(nn.Module):
    def __init__(self, m: float = 0.25, gamma: float = 128.0):
        super().__init__()
        self.m, self.gamma = m, gamma

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features.float(), dim=1)
        s = x @ x.t()  # cosine similarities
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos, neg = same & ~eye, ~same
        m, g = self.m, self.gamma
        a_p = (1 + m - s).clamp_min(0).detach()  # Eq. 5
        a_n = (s + m).clamp_min(0).detach()
        logit_p = -g * a_p * (s - (1 - m))  # Eq. 6, inside the positive sum
        logit_n = g * a_n * (s - m)
        very_neg = torch.finfo(s.dtype).min
        lse_p = torch.logsumexp(logit_p.masked_fill(~pos, very_neg), dim=1)
        lse_n = torch.logsumexp(logit_n.masked_fill(~neg, very_neg), dim=1)
        rows = pos.any(1) & neg.any(1)
        if not rows.any():  # no anchor with both a positive and a negative: nothing to learn, keep the graph
            return s.sum() * 0
        return F.softplus(lse_p[rows] + lse_n[rows]).mean()  # log(1 + e^a e^b)
