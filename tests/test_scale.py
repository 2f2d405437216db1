"""What keeps large data bounded: a seeded validation sample, the split shared between
processes without a copy, the prepared split cached on disk."""

from __future__ import annotations

import pickle

import torch

from ncf_tune import data, eval_sample, ranking, training
from ncf_tune.models import GMF


def test_validation_on_many_users_is_a_fixed_seeded_sample(ratings_file):
    split = data.prepare(ratings_file, seed=0)
    n = len(split.validation)
    assert eval_sample.user_sample(split.validation, n, 0) is split.validation  # few: all
    a = eval_sample.user_sample(split.validation, 20, seed=0)
    b = eval_sample.user_sample(split.validation, 20, seed=0)
    c = eval_sample.user_sample(split.validation, 20, seed=1)
    assert len(a) == 20 and torch.equal(a.users, b.users) and not torch.equal(a.users, c.users)
    assert len(set(a.users.tolist())) == 20 and a.users.tolist() == sorted(a.users.tolist())
    rows = torch.searchsorted(split.validation.users, a.users)  # users are in order
    assert torch.equal(split.validation.candidates[rows], a.candidates)
    assert "standard error of HR@10 at most 0.0050" in eval_sample.describe(138_000)
    assert eval_sample.describe(6040) == "validation on all 6040 users"


def test_full_ranking_on_a_bounded_user_sample(ratings_file):
    split = data.prepare(ratings_file, seed=0)
    model = GMF(split.num_users, split.num_items, 8)
    every = ranking.FullRanking(split, "test")
    some = ranking.FullRanking(split, "test", max_users=15)
    assert len(some.users) == 15 and len(every.users) == len(split.test)
    pos = torch.searchsorted(every.users, some.users)
    assert torch.equal(every.ranks(model)[pos], some.ranks(model))
    assert training.evaluate_full(model, split) == every(model)  # few users: all of them


def test_a_split_pickles_its_arrays_out_of_band_and_comes_back_without_a_copy(ratings_file):
    # Ray's object store serialises with pickle 5 and keeps out-of-band buffers in shared
    # memory: each trial then maps the same arrays instead of unpickling its own copy.
    split = data.prepare(ratings_file, seed=0)
    buffers = []
    payload = pickle.dumps(split, protocol=5, buffer_callback=buffers.append)
    big = sum(t.numel() * t.element_size() for t in (split.train_users, split.train_items))
    assert len(payload) < big and len(buffers) >= 6
    back = pickle.loads(payload, buffers=buffers)
    assert back.fingerprint == split.fingerprint and back.ids.fingerprint == split.ids.fingerprint
    assert back.train_users.data_ptr() == split.train_users.data_ptr()  # the same memory


def test_the_prepared_split_is_cached_by_content_and_seed(ratings_file, tmp_path, monkeypatch):
    from ncf_tune import cache

    monkeypatch.setenv("NCF_TUNE_CACHE", str(tmp_path / "cache"))
    assert cache.prepare(ratings_file, 0).fingerprint == data.prepare(ratings_file, 0).fingerprint
    assert not (tmp_path / "cache").exists()  # a small source is not cached
    first = cache.prepare(ratings_file, 0, min_bytes=0)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"  # no temporary left behind
    again = cache.prepare(ratings_file, 0, min_bytes=0)
    fresh = data.prepare(ratings_file, 0)
    for split in (first, again):
        assert split.fingerprint == fresh.fingerprint and split.notes == fresh.notes
        assert split.ids.fingerprint == fresh.ids.fingerprint and split.name == fresh.name
    cache.prepare(ratings_file, 1, min_bytes=0)  # another seed, another entry
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # A changed file is another key; a damaged entry is prepared again and replaced.
    ratings_file.write_text(ratings_file.read_text() + "999::1::5::1\n")
    assert cache.prepare(ratings_file, 0, min_bytes=0).num_users == fresh.num_users + 1
    entries[0].write_bytes(b"not a zip")
    ratings_file.write_text("\n".join(ratings_file.read_text().splitlines()[:-1]) + "\n")
    assert cache.prepare(ratings_file, 0, min_bytes=0).fingerprint == fresh.fingerprint
