from __future__ import annotations

import math

import pytest
import torch

from ncf_tune import data, ranking, training
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


class Table(torch.nn.Module):
    """A model that is a table of scores: small integers, so ties are common."""

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.nn.Parameter(torch.randint(0, 6, (num_users, num_items),
                                                      generator=g).float())

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.table[users, items]

    def item_scorer(self):
        return lambda users: self.table[users]


@pytest.mark.parametrize("which", ["validation", "test"])
def test_full_ranking_matches_brute_force(ratings_file, which):
    inter = data.load(ratings_file)
    split = data.split(inter)
    model = Table(split.num_users, split.num_items)
    held = getattr(split, which)
    with torch.no_grad():  # some positives near the top, ties still common
        model.table[held.users, held.candidates[:, 0]] += 4
    interacted: dict[int, set[int]] = {}
    for u, i in zip(inter.users.tolist(), inter.items.tolist(), strict=True):
        interacted.setdefault(u, set()).add(i)
    ranks = []
    for u, pos in zip(held.users.tolist(), held.candidates[:, 0].tolist(), strict=True):
        row = model.table[u].tolist()
        ranks.append(sum(1 for i, s in enumerate(row)
                         if i not in interacted[u] and s >= row[pos]))
    full = ranking.FullRanking(split, which)
    assert full.ranks(model).tolist() == ranks
    assert full.ranks(model, max_elements=3 * split.num_items).tolist() == ranks  # 3 a chunk
    want_hr = sum(r < 10 for r in ranks) / len(ranks)
    want_ndcg = sum(1 / math.log2(r + 2) for r in ranks if r < 10) / len(ranks)
    hr, ndcg = training.evaluate_full(model, split, which)
    assert (hr, ndcg) == pytest.approx((want_hr, want_ndcg)) and 0 < hr < 1


def test_full_ranking_ignores_the_users_other_positives_and_nan_never_wins(ratings_file):
    split = data.prepare(ratings_file)
    model = Table(split.num_users, split.num_items)
    with torch.no_grad():
        model.table.fill_(0.0)
        model.table[split.train_users, split.train_items] = 9.0  # training items score high
        model.table[split.validation.users, split.validation.candidates[:, 0]] = 9.0
        model.table[split.test.users, split.test.candidates[:, 0]] = 1.0
    assert training.evaluate_full(model, split, "test") == (1.0, 1.0)
    with torch.no_grad():
        model.table[split.test.users, split.test.candidates[:, 0]] = float("nan")
    assert training.evaluate_full(model, split, "test") == (0.0, 0.0)
