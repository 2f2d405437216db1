"""HR@K and NDCG@K for the leave-one-out protocol: from the held-out item's rank.

Sampled (the paper's): a [users x candidates] score matrix, column 0 the held-out
item's score, the other columns its negatives'. Full ranking (ranking.py) ranks the
held-out item against every item instead and hands its ranks to `from_ranks`.

The positive's rank is the number of negatives that are not strictly below it, so a
negative with the same score counts as ranked above the positive: a model that scores
everything alike gets no credit (the notebook's rank(method='first') gave it some).
NaN scores also count against the positive, so a diverged model scores 0, never 1.
A negative scored -inf (a dropped duplicate, a masked item) never counts.
"""

from __future__ import annotations

import torch


def positive_rank(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of column 0 among its row: [users] int64."""
    pos = scores[:, :1]
    return (~(scores[:, 1:] < pos)).sum(dim=1)


def from_ranks(rank: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """Mean HR@k and NDCG@k of the positives' 0-based ranks, one per user.

    HR@k: share of users whose positive ranks in the top k.
    NDCG@k: mean of 1 / log2(rank + 2) over users whose positive is in the top k, else 0.
    Returns (hr, ndcg) as Python floats; (0.0, 0.0) for no users.
    """
    if rank.numel() == 0:
        return 0.0, 0.0
    hit = rank < k
    gain = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), 0.0)
    return hit.double().mean().item(), gain.mean().item()


def hit_ratio_ndcg(scores: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """Mean HR@k and NDCG@k over the rows of `scores` (column 0 = the positive);
    (0.0, 0.0) for an empty matrix."""
    return from_ranks(positive_rank(scores), k)
