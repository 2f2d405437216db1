"""Small generated data sets: every test makes its own, nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_ratings(num_users: int = 60, num_items: int = 150, seed: int = 0,
                 min_per_user: int = 4, max_per_user: int = 30) -> np.ndarray:
    """Rows of (user, item, rating, timestamp) with 1-based raw ids and some structure:
    users in a group prefer that group's items, so a model can learn something."""
    rng = np.random.default_rng(seed)
    groups = 3
    rows = []
    for u in range(num_users):
        n = int(rng.integers(min_per_user, max_per_user + 1))
        g = u % groups
        liked = np.arange(num_items)[np.arange(num_items) % groups == g]
        pool = np.where(rng.random(n) < 0.8, rng.choice(liked, n), rng.integers(0, num_items, n))
        items = np.unique(pool)
        stamps = rng.permutation(len(items)) + 1_000_000_000 + u * 1000
        for i, t in zip(items, stamps, strict=True):
            rows.append((u + 1, int(i) + 1, int(rng.integers(1, 6)), int(t)))
    return np.array(rows, dtype=np.int64)


def write_dat(path: Path, rows: np.ndarray) -> Path:
    path.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    return path


def write_csv(path: Path, rows: np.ndarray) -> Path:
    path.write_text("userId,movieId,rating,timestamp\n"
                    + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    return path


def write_tabs(path: Path, rows: np.ndarray) -> Path:
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    return path


def write_paper_split(folder: Path, num_users: int = 40, num_items: int = 200,
                      seed: int = 0, dup_users: int = 2) -> Path:
    """A folder in the NCF paper's format; for `dup_users` users the test item also
    appears among its negatives (the quirk of the paper's ML-1M file)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train, test, neg = [], [], []
    for u in range(num_users):
        items = rng.choice(num_items, size=int(rng.integers(5, 20)), replace=False)
        test_item, train_items = int(items[0]), items[1:]
        train += [f"{u}\t{int(i)}\t1\t0\n" for i in train_items]
        test.append(f"{u}\t{test_item}\t5\t978300000\n")
        allowed = np.setdiff1d(np.arange(num_items), train_items)
        allowed = allowed[allowed != test_item]
        negs = [int(x) for x in rng.choice(allowed, 99, replace=False)]
        if u < dup_users:
            negs[5] = test_item
        neg.append(f"({u},{test_item})\t" + "\t".join(map(str, negs)) + "\n")
    (folder / "tiny.train.rating").write_text("".join(train))
    (folder / "tiny.test.rating").write_text("".join(test))
    (folder / "tiny.test.negative").write_text("".join(neg))
    return folder


@pytest.fixture
def ratings_rows() -> np.ndarray:
    return make_ratings()


@pytest.fixture
def ratings_file(tmp_path: Path, ratings_rows: np.ndarray) -> Path:
    return write_dat(tmp_path / "ratings.dat", ratings_rows)


@pytest.fixture
def paper_dir(tmp_path: Path) -> Path:
    return write_paper_split(tmp_path / "paper")
