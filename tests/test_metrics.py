from __future__ import annotations

import math

import pytest
import torch

from ncf_tune.metrics import hit_ratio_ndcg


def brute_force(scores: list[list[float]], k: int) -> tuple[float, float]:
    """The definition, one user at a time: ties count against the positive."""
    hr = ndcg = 0.0
    for row in scores:
        pos = row[0]
        rank = sum(1 for s in row[1:] if s >= pos)
        if rank < k:
            hr += 1
            ndcg += math.log(2) / math.log(rank + 2)
    return hr / len(scores), ndcg / len(scores)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_matches_brute_force_on_random_scores_with_ties(k):
    g = torch.Generator().manual_seed(k)
    scores = torch.randint(0, 20, (500, 100), generator=g).float()  # many ties
    scores[:, 0] += torch.randint(0, 12, (500,), generator=g)  # some positives near the top
    hr, ndcg = hit_ratio_ndcg(scores, k)
    want_hr, want_ndcg = brute_force(scores.tolist(), k)
    assert hr == pytest.approx(want_hr) and ndcg == pytest.approx(want_ndcg)
    assert 0 < hr < 1


def test_a_constant_model_gets_no_credit_and_nan_never_wins():
    assert hit_ratio_ndcg(torch.zeros(10, 100)) == (0.0, 0.0)
    assert hit_ratio_ndcg(torch.full((10, 100), float("nan"))) == (0.0, 0.0)


def test_minus_inf_negatives_are_ignored():
    scores = torch.full((1, 100), 5.0)
    scores[0, 0] = 1.0
    scores[0, 1:] = float("-inf")
    assert hit_ratio_ndcg(scores) == (1.0, 1.0)
    scores[0, 1] = 2.0  # one real negative above: rank 1
    assert hit_ratio_ndcg(scores) == pytest.approx((1.0, 1 / math.log2(3)))
