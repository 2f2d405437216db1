from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_ratings, write_csv, write_dat, write_paper_split, write_tabs

from ncf_tune import data
from ncf_tune.errors import NcfError


def pairs(inter: data.Interactions) -> set[tuple[int, int]]:
    return set(zip(inter.users.tolist(), inter.items.tolist(), strict=True))


def test_three_file_formats_load_the_same(tmp_path, ratings_rows):
    loaded = [data.load(write_dat(tmp_path / "r.dat", ratings_rows)),
              data.load(write_csv(tmp_path / "r.csv", ratings_rows)),
              data.load(write_tabs(tmp_path / "u.data", ratings_rows))]
    assert pairs(loaded[0]) == pairs(loaded[1]) == pairs(loaded[2])
    inter = loaded[0]
    assert inter.num_users == len(np.unique(ratings_rows[:, 0]))
    assert inter.num_items == len(np.unique(ratings_rows[:, 1]))
    assert inter.users.max() == inter.num_users - 1 and inter.items.max() == inter.num_items - 1


def test_implicit_feedback_drops_zero_ratings_and_merges_duplicates(tmp_path):
    rows = make_ratings()
    extra = np.array([[1, rows[0, 1], 0, 5], [rows[1, 0], rows[1, 1], 3, 7]])  # 0 rating, dup
    zero_only = np.array([[999, 1, 0, 5]])  # a user whose only rating is 0 disappears
    inter = data.load(write_dat(tmp_path / "r.dat", np.vstack([rows, extra, zero_only])))
    assert len(inter.users) == len({(u, i) for u, i, _, _ in rows})
    assert inter.num_users == len(np.unique(rows[:, 0]))
    assert any("dropped" in n for n in inter.notes)


def test_split_is_leave_one_out_by_time(tmp_path):
    rows = make_ratings(min_per_user=1, max_per_user=20)
    inter = data.load(write_dat(tmp_path / "r.dat", rows))
    s = data.split(inter, seed=3)
    by_user: dict[int, list[tuple[int, int]]] = {}
    for u, i, t in zip(inter.users, inter.items, inter.timestamps, strict=True):
        by_user.setdefault(int(u), []).append((int(t), int(i)))
    kept = {u for u, v in by_user.items() if len(v) >= 3}
    assert set(s.test.users.tolist()) == kept == set(s.validation.users.tolist())
    assert any("fewer than 3" in n for n in s.notes)
    for u, i in zip(s.test.users.tolist(), s.test.candidates[:, 0].tolist(), strict=True):
        assert i == max(by_user[u])[1]  # latest
    for u, i in zip(s.validation.users.tolist(), s.validation.candidates[:, 0].tolist(),
                    strict=True):
        assert i == sorted(by_user[u])[-2][1]  # latest remaining
    train = set(zip(s.train_users.tolist(), s.train_items.tolist(), strict=True))
    assert len(train) + 2 * len(kept) == sum(len(by_user[u]) for u in kept)
    held_out = {(u, i) for es in (s.test, s.validation)
                for u, i in zip(es.users.tolist(), es.candidates[:, 0].tolist(), strict=True)}
    assert not train & held_out


def test_eval_candidates_are_distinct_never_interacted_and_seeded(ratings_file):
    inter = data.load(ratings_file)
    s = data.split(inter, seed=0)
    positives = pairs(inter)
    for es in (s.validation, s.test):
        assert es.candidates.shape == (len(es.users), 100)
        for u, row in zip(es.users.tolist(), es.candidates.tolist(), strict=True):
            assert len(set(row)) == 100
            assert all((u, i) not in positives for i in row[1:])
    again = data.split(inter, seed=0)
    other = data.split(inter, seed=1)
    assert torch.equal(s.test.candidates, again.test.candidates)
    assert s.fingerprint == again.fingerprint
    assert not torch.equal(s.test.candidates, other.test.candidates)
    assert s.fingerprint != other.fingerprint


def test_raw_ids_and_a_fingerprint_of_the_content_not_the_path(tmp_path):
    rows = make_ratings()
    rows[:, 0] = rows[:, 0] * 7 + 1000  # raw ids that are not 1..n
    inter = data.load(write_dat(tmp_path / "a.dat", rows))
    raw_pairs = {(inter.raw_users[u], inter.raw_items[i]) for u, i in pairs(inter)}
    assert raw_pairs == {(u, i) for u, i, _, _ in rows}
    ids = data.split(inter).ids
    assert ids.source == str((tmp_path / "a.dat").resolve())
    assert ids.users.tolist() == inter.raw_users.tolist() and ids.fingerprint == inter.fingerprint
    # The same ratings as a CSV elsewhere: the same data. One rating fewer: other data.
    assert data.load(write_csv(tmp_path / "b.csv", rows)).fingerprint == inter.fingerprint
    assert data.load(write_dat(tmp_path / "c.dat", rows[1:])).fingerprint != inter.fingerprint


def test_eval_negatives_are_uniform_over_allowed_items():
    rng = np.random.default_rng(0)
    num_items, users = 300, np.zeros(4000, dtype=np.int64)
    positives = np.arange(0, 150, dtype=np.int64)  # user 0 interacted with items 0..149
    neg = data.sample_eval_negatives(users, num_items, positives, 99, rng)
    assert neg.min() >= 150
    counts = np.bincount(neg.ravel(), minlength=num_items)[150:]
    expected = neg.size / 150
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))
    assert all(len(set(r)) == 99 for r in neg[:100].tolist())


def test_ties_in_time_are_broken_by_the_seed(tmp_path):
    rows = make_ratings(num_users=30)
    rows[:, 3] = 0  # every timestamp equal
    inter = data.load(write_dat(tmp_path / "r.dat", rows))
    a, b = data.split(inter, seed=0), data.split(inter, seed=0)
    c = data.split(inter, seed=5)
    assert torch.equal(a.test.candidates[:, 0], b.test.candidates[:, 0])
    assert not torch.equal(a.test.candidates[:, 0], c.test.candidates[:, 0])


def test_paper_split_loads_as_is_and_drops_duplicate_test_negatives(paper_dir):
    inter = data.load(paper_dir)
    s = data.split(inter, seed=0)
    lines = (paper_dir / "tiny.test.negative").read_text().splitlines()
    assert s.test.candidates.shape == (40, 100)
    for row, line in zip(s.test.candidates.tolist(), lines, strict=True):
        fields = line.split("\t")
        test_item = int(fields[0].strip("()").split(",")[1])
        negs = [int(x) for x in fields[1:]]
        assert row[0] == test_item
        assert row[1:] == [-1 if n == test_item else n for n in negs]
    assert (s.test.candidates == -1).sum().item() == 2
    assert any("2 test users had their test item" in n for n in s.notes)
    # validation is carved from train, so train + validation = the file's train pairs
    train_file = {tuple(map(int, line.split("\t")[:2]))
                  for line in (paper_dir / "tiny.train.rating").read_text().splitlines()}
    val = set(zip(s.validation.users.tolist(), s.validation.candidates[:, 0].tolist(),
                  strict=True))
    train = set(zip(s.train_users.tolist(), s.train_items.tolist(), strict=True))
    assert train | val == train_file and not train & val
    test_pairs = set(zip(s.test.users.tolist(), s.test.candidates[:, 0].tolist(), strict=True))
    for u, row in zip(s.validation.users.tolist(), s.validation.candidates.tolist(), strict=True):
        assert all((u, i) not in train_file | test_pairs for i in row[1:])


def test_fetch_uses_a_cached_file_without_network(tmp_path, monkeypatch, ratings_rows):
    monkeypatch.setenv("NCF_TUNE_DATA", str(tmp_path))
    (tmp_path / "ml-1m").mkdir()
    write_dat(tmp_path / "ml-1m" / "ratings.dat", ratings_rows)
    monkeypatch.setitem(data.ARCHIVES, "ml-1m", data.Archive(
        "http://127.0.0.1:9/ml-1m.zip", data.ARCHIVES["ml-1m"].md5, "ml-1m/ratings.dat"))
    assert data.fetch("ml-1m") == tmp_path / "ml-1m" / "ratings.dat"
    assert len(data.load("ml-1m").users) > 0


def test_offline_without_cache_names_the_folder_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NCF_TUNE_DATA", str(tmp_path / "cache"))
    # Port 9 on loopback refuses at once: a real download attempt that cannot succeed.
    monkeypatch.setitem(data.ARCHIVES, "ml-100k", data.Archive(
        "http://127.0.0.1:9/ml-100k.zip", data.ARCHIVES["ml-100k"].md5, "ml-100k/u.data"))
    with pytest.raises(NcfError) as err:
        data.load("ml-100k")
    msg = str(err.value)
    assert "ml-100k/u.data" in msg and str(tmp_path / "cache") in msg and "\n" not in msg


def _error(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(NcfError) as err:
        data.prepare(path)
    assert "\n" not in str(err.value)
    return str(err.value)


def good_lines(n: int = 120) -> str:
    return "".join(f"{u}::{i}::5::{100 + i}\n" for u in range(1, 4) for i in range(1, n + 1))


@pytest.mark.parametrize("name, text, expect", [
    ("empty.dat", "", "empty"),
    ("ids.dat", good_lines() + "4::abc::5::1\n", "line 361: item 'abc' is not an integer"),
    ("ts.dat", good_lines() + "4::7::5::-3\n", "line 361: negative timestamp"),
    ("few.dat", good_lines(50), "only 50 distinct items"),
    ("cols.csv", "user,rating\n1,5\n", "no item column"),
    ("sep.txt", "1;2;5;100\n1;3;5;101\n", "one field"),
    ("ragged.tsv", "1\t2\t5\t100\n1\t3\t5\t101\t9\t9\n", "same number of fields"),
])
def test_bad_ratings_files_fail_with_one_line(tmp_path, name, text, expect):
    msg = _error(tmp_path, name, text)
    assert expect in msg and name in msg


def test_missing_source_is_refused(tmp_path):
    with pytest.raises(NcfError, match="neither"):
        data.load(tmp_path / "nope.dat")


def test_paper_split_with_a_missing_file_is_refused(tmp_path):
    folder = write_paper_split(tmp_path / "p")
    (folder / "tiny.test.negative").unlink()
    with pytest.raises(NcfError, match=r"no \*\.test\.negative"):
        data.load(folder)


def test_paper_split_negative_that_is_a_training_item_is_refused(tmp_path):
    folder = write_paper_split(tmp_path / "p", dup_users=0)
    train_item = (folder / "tiny.train.rating").read_text().splitlines()[0].split("\t")[1]
    lines = (folder / "tiny.test.negative").read_text().splitlines()
    fields = lines[0].split("\t")
    fields[3] = train_item
    lines[0] = "\t".join(fields)
    (folder / "tiny.test.negative").write_text("\n".join(lines) + "\n")
    with pytest.raises(NcfError, match=rf"line 1: negative {train_item} is a training item"):
        data.load(folder)
