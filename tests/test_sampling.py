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


def test_a_large_epoch_is_cut_in_equal_parts_of_bounded_chunks():
    from ncf_tune.sampling import plan

    assert plan(988_129, 16).whole  # ML-1M: one report an epoch, drawn whole, as before
    cut = plan(9_300_000, 4)  # ML-20M: 9 reports of about 1M positives
    assert cut.parts == 9 and cut.chunks % cut.parts == 0
    bounds = [cut.chunk_bounds(c) for c in range(cut.chunks)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 9_300_000
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert max(hi - lo for lo, hi in bounds) * 5 <= 1 << 22  # a chunk's rows stay bounded
    assert [cut.part_of(c) for c in cut.chunks_of(4)] == [4] * (cut.chunks // 9)


def test_chunks_of_one_permutation_cover_every_positive_once_with_exact_negatives():
    from ncf_tune.sampling import chunk_seed, plan

    s = sampler()
    positives = set(zip(s.users.tolist(), s.items.tolist(), strict=True))
    cut = plan(len(s.users), 3, per_report=100, chunk_rows=150)
    assert cut.parts > 1 and cut.chunks > cut.parts
    order = s.permutation(torch.Generator().manual_seed(chunk_seed(0, 0)))
    seen = []
    for c in range(cut.chunks):
        lo, hi = cut.chunk_bounds(c)
        rows = s.chunk(order[lo:hi], 3, torch.Generator().manual_seed(chunk_seed(0, 0, c)))
        assert rows.users.dtype == torch.int32 and len(rows) == (hi - lo) * 4
        n = hi - lo
        seen += list(zip(rows.users[:n].tolist(), rows.items[:n].tolist(), strict=True))
        negs = set(zip(rows.users[n:].tolist(), rows.items[n:].tolist(), strict=True))
        assert rows.labels[:n].eq(1).all() and rows.labels[n:].eq(0).all()
        assert not negs & positives
    assert sorted(seen) == sorted(positives)  # each positive once an epoch
