from __future__ import annotations

import numpy as np
import torch

from ncf_tune.sampling import DENSE_PAIRS, NegativeSampler


def sampler(num_users: int = 20, num_items: int = 50, seed: int = 0,
            dense_pairs: int = DENSE_PAIRS) -> NegativeSampler:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        # user u interacts with a growing share of items (up to 80 %): many rejections
        chosen = rng.choice(num_items, size=2 + u * 2, replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return NegativeSampler(torch.tensor(users), torch.tensor(items), num_items,
                           dense_pairs=dense_pairs)


def test_negatives_are_never_training_positives():
    s = sampler()
    positives = set(zip(s.users.tolist(), s.items.tolist(), strict=True))
    ep = s.epoch(8, torch.Generator().manual_seed(1))
    n = len(s.users)
    assert len(ep) == n * 9
    assert ep.labels[:n].eq(1).all() and ep.labels[n:].eq(0).all()
    assert torch.equal(ep.users[:n], s.users) and torch.equal(ep.items[:n], s.items)
    assert torch.equal(ep.users[n:], s.users.repeat(8))
    negs = set(zip(ep.users[n:].tolist(), ep.items[n:].tolist(), strict=True))
    assert not negs & positives


def test_negatives_are_roughly_uniform_over_the_allowed_items():
    s = NegativeSampler(torch.zeros(10, dtype=torch.long), torch.arange(10), num_items=60)
    items = s.negatives(torch.zeros(50_000, dtype=torch.long), torch.Generator().manual_seed(0))
    counts = torch.bincount(items, minlength=60)
    assert counts[:10].sum() == 0
    expected = 50_000 / 50
    assert (counts[10:] - expected).abs().max() < 6 * expected ** 0.5


def test_same_generator_seed_same_epoch():
    s = sampler()
    a = s.epoch(4, torch.Generator().manual_seed(7))
    b = s.epoch(4, torch.Generator().manual_seed(7))
    c = s.epoch(4, torch.Generator().manual_seed(8))
    assert torch.equal(a.items, b.items)
    assert not torch.equal(a.items, c.items)


def test_the_membership_table_and_the_binary_search_draw_the_same_epoch():
    table, search = sampler(), sampler(dense_pairs=0)
    assert table.table is not None and search.table is None
    a = table.epoch(8, torch.Generator().manual_seed(3))
    b = search.epoch(8, torch.Generator().manual_seed(3))
    assert torch.equal(a.items, b.items) and torch.equal(a.users, b.users)
