"""Interaction data: load a source, then split it for leave-one-out evaluation.

One direction, no back and forth:

    load(source)         -> Interactions  contiguous int ids (the raw ids kept beside),
                                          implicit feedback, a fingerprint of the content
    split(interactions)  -> Split         train tensors + validation/test candidate sets,
                                          and the IdMap every checkpoint carries
    prepare(source)      =  split(load(source))

Sources (`load`):
  ml-100k | ml-1m | ml-20m   GroupLens archives, fetched once into a cache folder
                             ($NCF_TUNE_DATA, default ~/.cache/ncf_tune), md5-checked;
                             a ratings file already in the cache is used as it is.
  a ratings file             GroupLens `::` (ratings.dat), tab separated (u.data), or
                             CSV with a header (user, item, optional rating, timestamp).
  a folder                   the NCF paper's split (*.train.rating, *.test.rating,
                             *.test.negative), loaded as it is so numbers compare with
                             the paper's table.

Evaluation (He et al. 2017): each user's held-out item is ranked against 99 items the
user never interacted with. Test is each user's latest interaction; validation is the
latest remaining one, so hyperparameters never see the test item.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ncf_tune.errors import NcfError

EVAL_NEGATIVES = 99  # the paper's protocol: 1 positive + 99 negatives per user
MIN_ITEMS = EVAL_NEGATIVES + 1
MIN_INTERACTIONS = 3  # per user, to split: one to train on, one validation, one test


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str  # GroupLens publishes md5 sidecars; pooch checks it after download
    ratings: str  # path of the ratings file inside the zip (and inside the cache)


ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "0e33842e24a9c977be4e0107933c0723",
        "ml-100k/u.data",
    ),
    "ml-1m": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        "ml-1m/ratings.dat",
    ),
    "ml-20m": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-20m.zip",
        "cd245b17a1ae2cc31bb14903e1204af3",
        "ml-20m/ratings.csv",
    ),
}


def cache_dir() -> Path:
    """The folder named by $NCF_TUNE_DATA, else ~/.cache/ncf_tune."""
    return Path(os.environ.get("NCF_TUNE_DATA") or "~/.cache/ncf_tune").expanduser()


def fetch(name: str) -> Path:
    """Path of a GroupLens archive's ratings file, downloading it on first use.

    A file already in the cache is used as it is (so NCF_TUNE_DATA pointing at a folder
    that holds ml-1m/ratings.dat works offline); otherwise the zip is downloaded with
    pooch, its md5 checked, and the ratings file extracted next to it.
    """
    archive = ARCHIVES[name]
    root = cache_dir()
    target = root / archive.ratings
    if target.is_file():
        return target
    try:
        import pooch

        zip_path = pooch.retrieve(
            archive.url, known_hash=f"md5:{archive.md5}", fname=f"{name}.zip", path=root,
            progressbar=False,
        )
        with zipfile.ZipFile(zip_path) as zf:
            zf.extract(archive.ratings, root)
    except Exception as exc:  # offline, checksum mismatch, unwritable cache, bad zip
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NcfError(
            f"{name}: not in {root} and the download from {archive.url} failed ({reason}); "
            f"put {archive.ratings} under {root}, or set NCF_TUNE_DATA to a folder that "
            f"holds {archive.ratings}"
        ) from None
    return target


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class FixedTest:
    """A test set that comes with the source (the NCF paper's files)."""

    users: np.ndarray  # [n] int64
    items: np.ndarray  # [n] int64
    negatives: np.ndarray  # [n, 99] int64; -1 where the file repeated the test item


@dataclass(frozen=True)
class Interactions:
    """Implicit feedback: one row per distinct (user, item) pair, ids 0..n-1."""

    name: str
    source: str  # what `load` was given: an archive name, or a file's or folder's full path
    users: np.ndarray  # [n] int64
    items: np.ndarray  # [n] int64
    timestamps: np.ndarray  # [n] int64; 0 where the source has none
    num_users: int
    num_items: int
    # The source's own id of each index (user u is raw_users[u]): recommendations and
    # their inputs use these. A paper split's files are already 0-based: 0..n-1.
    raw_users: np.ndarray  # [num_users] int64
    raw_items: np.ndarray  # [num_items] int64
    fixed_test: FixedTest | None = None
    notes: tuple[str, ...] = ()

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the interactions and their ids, not of the source's name or
        path: the same ratings under another path (or fetched as ml-1m) match. Unlike
        `Split.fingerprint` it does not depend on the split's seed."""
        h = hashlib.sha256(f"{self.num_users},{self.num_items}".encode())
        arrays = [self.raw_users, self.raw_items, self.users, self.items, self.timestamps]
        if self.fixed_test is not None:
            arrays += [self.fixed_test.users, self.fixed_test.items]
        for a in arrays:
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def seen(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of every interaction the source holds, a fixed test set's too."""
        if self.fixed_test is None:
            return self.users, self.items
        return (np.concatenate([self.users, self.fixed_test.users]),
                np.concatenate([self.items, self.fixed_test.items]))


class SharedArrays:
    """Pickled with its CPU tensors as numpy arrays, and rebuilt around them without a
    copy. Ray's object store keeps numpy arrays out of band and hands every process of a
    node a read-only view of the same memory: a Split sent to the trials once
    (`tune.with_parameters`) is then one copy a node, not one a trial. (Pickled tensors
    would be copied into each trial.) The tensors must then be read, never written in
    place; nothing here writes them."""

    def __reduce__(self) -> tuple:
        fields = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                value = value.numpy()
            fields[f.name] = value
        return _rebuild, (type(self), fields)


def _rebuild(cls: type, fields: dict) -> object:
    with warnings.catch_warnings():  # a read-only view of shared memory (see SharedArrays)
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return cls(**{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                      for k, v in fields.items()})


@dataclass(frozen=True)
class IdMap(SharedArrays):
    """Which data a model was trained on, and the raw id of each of its rows: what a
    checkpoint carries so that a model can be used on the data's own ids."""

    source: str  # Interactions.source: the data to load again by default
    fingerprint: str  # Interactions.fingerprint: recognises the same data elsewhere
    users: torch.Tensor  # [num_users] int64: raw id of user index u
    items: torch.Tensor  # [num_items] int64
    # The seed of the split a model was trained on (`split`'s: it chose the validation
    # and test hold-outs): with the fingerprint, the split's identity. A model of another
    # split trained on this one's validation items. None: no split, or an older file.
    split_seed: int | None = None

    @classmethod
    def of(cls, data: Interactions) -> IdMap:
        return cls(data.source, data.fingerprint, torch.from_numpy(data.raw_users.copy()),
                   torch.from_numpy(data.raw_items.copy()))


def load(source: str | os.PathLike) -> Interactions:
    """Load a data source (see the module docstring) as implicit feedback.

    Raises NcfError with one line naming the file and what would fix it.
    """
    text = str(source)
    if text in ARCHIVES:
        return _from_ratings_file(fetch(text), name=text, source=text)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_paper_split(path)
    if path.is_file():
        return _from_ratings_file(path, name=path.stem, source=str(path.resolve()))
    raise NcfError(
        f"data source {text!r} is neither {', '.join(ARCHIVES)} nor an existing ratings "
        "file or NCF paper split folder (*.train.rating, *.test.rating, *.test.negative)"
    )


_USER_COLUMNS = ("user", "userid", "user_id", "uid", "userId")
_ITEM_COLUMNS = ("item", "itemid", "item_id", "iid", "movieid", "movie_id", "mid", "movieId")


def read_ratings(path: Path) -> pd.DataFrame:
    """Read a ratings file into raw columns user, item, rating, timestamp (int64/float).

    The format is sniffed from the first line: `::` (GroupLens .dat), tabs (u.data and
    the paper's *.rating files), else comma separated with or without a header.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NcfError(f"{path}: cannot read ({exc.strerror}); check the path and "
                       "permissions") from None
    first = raw.split(b"\n", 1)[0].strip()
    try:
        first.decode("utf-8")
        binary = b"\0" in raw[:65536]
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise NcfError(f"{path}: not a readable ratings file (binary data); expected text "
                       "lines of user, item[, rating[, timestamp]]")
    if not first:
        raise NcfError(f"{path}: the file is empty (or starts with a blank line); expected "
                       "one interaction per line: user, item[, rating[, timestamp]]")
    if b"::" in first:
        sep, raw = "\t", raw.replace(b"::", b"\t")  # the C parser needs a 1-char separator
        first = first.replace(b"::", b"\t")
    elif b"\t" in first:
        sep = "\t"
    else:
        sep = ","
    fields = first.decode("utf-8", "replace").split(sep)
    if len(fields) < 2:
        raise NcfError(f"{path}: line 1 has one field; expected user, item[, rating"
                       "[, timestamp]] separated by '::', tab or ','")
    has_header = not all(_is_number(f) for f in fields)
    try:
        df = pd.read_csv(io.BytesIO(raw), sep=sep, header=0 if has_header else None)
    except pd.errors.ParserError as exc:
        raise NcfError(f"{path}: {str(exc).strip().splitlines()[-1]}; every line needs the "
                       "same number of fields") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise NcfError(f"{path}: not a readable ratings file ({exc})") from None
    header_lines = 1 if has_header else 0
    if has_header:
        lower = {c.lower(): c for c in df.columns}
        user = next((lower[c.lower()] for c in _USER_COLUMNS if c.lower() in lower), None)
        item = next((lower[c.lower()] for c in _ITEM_COLUMNS if c.lower() in lower), None)
        if user is None or item is None:
            missing = "user" if user is None else "item"
            raise NcfError(
                f"{path}: no {missing} column in the header {list(df.columns)}; name the "
                f"columns user,item[,rating][,timestamp] (or check the separator: "
                f"'::', tab or ',')"
            )
        rating = lower.get("rating")
        stamp = lower.get("timestamp")
        cols = {"user": user, "item": item, "rating": rating, "timestamp": stamp}
    else:
        names = ["user", "item", "rating", "timestamp"]
        cols = {n: (i if i < df.shape[1] else None) for i, n in enumerate(names)}
    if len(df) == 0:
        raise NcfError(f"{path}: no interactions after the header")
    out = {}
    for key in ("user", "item", "timestamp"):
        col = cols[key]
        out[key] = (np.zeros(len(df), np.int64) if col is None
                    else _integers(df[col], path, key, header_lines))
    rating = cols["rating"]
    out["rating"] = (np.ones(len(df)) if rating is None
                     else _numbers(df[rating], path, "rating", header_lines))
    bad = np.flatnonzero(out["timestamp"] < 0)
    if bad.size:
        raise NcfError(f"{path}: line {bad[0] + 1 + header_lines}: negative timestamp "
                       f"{out['timestamp'][bad[0]]}; timestamps are seconds since 1970")
    return pd.DataFrame(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _numbers(col: pd.Series, path: Path, what: str, header_lines: int) -> np.ndarray:
    num = pd.to_numeric(col, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy())
    if bad.size:
        raise NcfError(f"{path}: line {bad[0] + 1 + header_lines}: {what} {col.iloc[bad[0]]!r} "
                       "is not a number")
    return num.to_numpy(np.float64)


def _integers(col: pd.Series, path: Path, what: str, header_lines: int) -> np.ndarray:
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(np.int64)
    num = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(num) | (num != np.round(num)))
    if bad.size:
        raise NcfError(f"{path}: line {bad[0] + 1 + header_lines}: {what} {col.iloc[bad[0]]!r} "
                       "is not an integer id; ids must be whole numbers (check the separator)")
    return num.astype(np.int64)


def _from_ratings_file(path: Path, name: str, source: str) -> Interactions:
    df = read_ratings(path)
    rows = len(df)
    df = df[df["rating"] > 0]  # implicit feedback: any positive rating is an interaction
    # Duplicate (user, item) rows merge into one, keeping the latest timestamp.
    df = df.sort_values("timestamp", kind="stable").drop_duplicates(["user", "item"], keep="last")
    if len(df) == 0:
        raise NcfError(f"{path}: no rating > 0, so no interactions to learn from")
    raw_users, users = _reindex(df["user"].to_numpy())
    raw_items, items = _reindex(df["item"].to_numpy())
    _check_items(path, len(raw_items))
    notes = []
    if len(df) < rows:
        notes.append(f"{rows - len(df)} of {rows} rows dropped (rating <= 0 or duplicate pair)")
    # Keep rows in user order so later steps can slice per user without a sort.
    order = np.lexsort((df["timestamp"].to_numpy(), users))
    return Interactions(
        name=name,
        source=source,
        users=users[order].astype(np.int64),
        items=items[order].astype(np.int64),
        timestamps=df["timestamp"].to_numpy(np.int64)[order],
        num_users=len(raw_users),
        num_items=len(raw_items),
        raw_users=raw_users.astype(np.int64),
        raw_items=raw_items.astype(np.int64),
        notes=tuple(notes),
    )


def _check_items(path: Path | str, num_items: int) -> None:
    if num_items < MIN_ITEMS:
        raise NcfError(
            f"{path}: only {num_items} distinct items; evaluation ranks each held-out item "
            f"against {EVAL_NEGATIVES} negatives, so at least {MIN_ITEMS} items are needed"
        )


def _paper_file(folder: Path, suffix: str) -> Path:
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise NcfError(
            f"{folder}: {what} *{suffix} file(s); a paper split folder holds exactly one each "
            "of *.train.rating, *.test.rating and *.test.negative"
        )
    return found[0]


def _from_paper_split(folder: Path) -> Interactions:
    train_path = _paper_file(folder, ".train.rating")
    test_path = _paper_file(folder, ".test.rating")
    neg_path = _paper_file(folder, ".test.negative")
    train = read_ratings(train_path)
    test = read_ratings(test_path)
    # test.negative lines: "(user,item)\tneg_1\t...\tneg_99"
    try:
        neg = pd.read_csv(neg_path, sep="\t", header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise NcfError(f"{neg_path}: not a test.negative file ({str(exc).strip()}); expected "
                       "lines '(user,item)<TAB>neg_1<TAB>...<TAB>neg_99'") from None
    pair = neg[0].astype(str).str.extract(r"^\((\d+),(\d+)\)$")
    bad = np.flatnonzero(pair[0].isna().to_numpy())
    if bad.size:
        raise NcfError(f"{neg_path}: line {bad[0] + 1}: first field {neg[0].iloc[bad[0]]!r} is "
                       "not '(user,item)'")
    negatives = _integers_frame(neg.iloc[:, 1:], neg_path)
    if len(neg) != len(test) or not (
        np.array_equal(pair[0].astype(np.int64).to_numpy(), test["user"].to_numpy())
        and np.array_equal(pair[1].astype(np.int64).to_numpy(), test["item"].to_numpy())
    ):
        raise NcfError(f"{neg_path}: its (user,item) pairs do not match {test_path.name} line "
                       "for line; both files must come from the same split")
    if negatives.shape[1] != EVAL_NEGATIVES:
        raise NcfError(f"{neg_path}: {negatives.shape[1]} negatives per line; the protocol uses "
                       f"{EVAL_NEGATIVES}")
    users = train["user"].to_numpy()
    items = train["item"].to_numpy()
    num_users = int(max(users.max(), test["user"].max())) + 1
    num_items = int(max(items.max(), test["item"].max(), negatives.max())) + 1
    _check_items(folder, num_items)
    if min(users.min(), items.min(), test["user"].min(), test["item"].min(), negatives.min()) < 0:
        raise NcfError(f"{folder}: negative ids; the paper's files use 0-based ids")
    # A negative may never be one of the user's training items: that would be a
    # positive scored as a negative. The file is refused, naming the first such line.
    train_keys = _unique(users * num_items + items)
    test_users = test["user"].to_numpy(np.int64)
    neg_keys = test_users[:, None] * num_items + negatives
    clash = _isin_sorted(neg_keys, train_keys)
    if clash.any():
        row = int(np.flatnonzero(clash.any(axis=1))[0])
        item = int(negatives[row][clash[row]][0])
        raise NcfError(f"{neg_path}: line {row + 1}: negative {item} is a training item of user "
                       f"{test_users[row]}; negatives must be items the user never interacted with")
    # Known quirk of the paper's ML-1M file: the test item itself among its negatives.
    # The paper's evaluation keeps one score per item, so the duplicate vanishes;
    # -1 marks it and the metric ignores it.
    test_items = test["item"].to_numpy(np.int64)
    dup = negatives == test_items[:, None]
    negatives = np.where(dup, -1, negatives)
    notes = [f"paper split {folder}: {len(users)} train pairs, {len(test)} test users"]
    if dup.any():
        notes.append(f"{int(dup.any(axis=1).sum())} test users had their test item among their "
                     "negatives; that duplicate was dropped, as in the paper's evaluation")
    train_keys_unique = len(train_keys)
    if train_keys_unique < len(users):
        notes.append(f"{len(users) - train_keys_unique} duplicate train pairs merged")
        users, items = np.divmod(train_keys, num_items)
    order = np.argsort(users, kind="stable")
    return Interactions(
        name=folder.name,
        source=str(folder.resolve()),
        users=users[order].astype(np.int64),
        items=items[order].astype(np.int64),
        timestamps=train["timestamp"].to_numpy(np.int64)[order]
        if train_keys_unique == len(train) else np.zeros(len(users), np.int64),
        num_users=num_users,
        num_items=num_items,
        raw_users=np.arange(num_users, dtype=np.int64),
        raw_items=np.arange(num_items, dtype=np.int64),
        fixed_test=FixedTest(test_users, test_items, negatives.astype(np.int64)),
        notes=tuple(notes),
    )


def _integers_frame(frame: pd.DataFrame, path: Path) -> np.ndarray:
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise NcfError(f"{path}: line {row + 1}: a negative is missing or not an integer id")
    return values.astype(np.int64)


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: numpy 2's hash-based np.unique is slower here)."""
    s = np.sort(a)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


def _reindex(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct raw ids, each row's 0-based contiguous id)."""
    ids = _unique(raw)
    return ids, np.searchsorted(ids, raw)


def _isin_sorted(queries: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Elementwise `queries in sorted_keys` by binary search (no hash set per row)."""
    idx = np.searchsorted(sorted_keys, queries)
    idx = np.minimum(idx, len(sorted_keys) - 1)
    return sorted_keys[idx] == queries


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class EvalSet(SharedArrays):
    """Users to evaluate and, per user, the items to rank."""

    users: torch.Tensor  # [n] int64
    candidates: torch.Tensor  # [n, 100] int64: column 0 the held-out item; -1 = ignore

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Split(SharedArrays):
    """Everything training and evaluation need, as CPU tensors."""

    name: str
    num_users: int
    num_items: int
    train_users: torch.Tensor  # [n] int64, one row per training positive
    train_items: torch.Tensor  # [n] int64
    validation: EvalSet  # used to choose hyperparameters and epochs
    test: EvalSet  # scored once, for the winners
    seed: int
    notes: tuple[str, ...] = field(default=())
    # The data's raw ids and identity, for checkpoints (every split made by `split` has
    # them; the fingerprint below leaves them out, so older stage keys still match).
    ids: IdMap | None = None

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the split's content: same data and seed, same fingerprint."""
        h = hashlib.sha256(f"{self.num_users},{self.num_items}".encode())
        for t in (self.train_users, self.train_items, self.validation.users,
                  self.validation.candidates, self.test.users, self.test.candidates):
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]


def split(data: Interactions, seed: int = 0) -> Split:
    """Leave-one-out split with sampled evaluation candidates, fixed by `seed`.

    Test is each user's latest interaction (or the source's own test set), validation
    the latest remaining one; ties in time are broken by the seed. Users with too few
    interactions to split are dropped, and `Split.notes` says how many.
    """
    rng = np.random.default_rng(seed)
    notes = list(data.notes)
    users, items = data.users, data.items
    # Sort by user, then time, ties in random (seeded) order; position from the end
    # of each user's run says which row is test (0), validation (1) or train (>1).
    order = np.lexsort((rng.random(len(users)), data.timestamps, users))
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=data.num_users)
    from_end = (np.cumsum(counts)[users] - 1) - np.arange(len(users))
    all_keys = _unique(data.users * data.num_items + data.items)

    if data.fixed_test is None:
        keep = counts[users] >= MIN_INTERACTIONS
        dropped = int(((counts > 0) & (counts < MIN_INTERACTIONS)).sum())
        if dropped:
            notes.append(f"{dropped} users with fewer than {MIN_INTERACTIONS} interactions "
                         "dropped")
        test_rows = keep & (from_end == 0)
        val_rows = keep & (from_end == 1)
        train_rows = keep & (from_end > 1)
        test = _eval_set(users[test_rows], items[test_rows], data.num_items, all_keys, rng,
                         notes, "test")
    else:
        fixed = data.fixed_test
        keep = counts[users] >= 2  # users with one train row keep it and get no validation
        val_rows = keep & (from_end == 0)
        train_rows = ~val_rows
        # Validation negatives avoid the user's test item too.
        all_keys = _unique(np.concatenate([all_keys, fixed.users * data.num_items + fixed.items]))
        test = EvalSet(
            torch.from_numpy(fixed.users.copy()),
            torch.from_numpy(np.concatenate([fixed.items[:, None], fixed.negatives], axis=1)),
        )
    validation = _eval_set(users[val_rows], items[val_rows], data.num_items, all_keys, rng,
                           notes, "validation")
    return Split(
        name=data.name,
        num_users=data.num_users,
        num_items=data.num_items,
        train_users=torch.from_numpy(np.ascontiguousarray(users[train_rows])),
        train_items=torch.from_numpy(np.ascontiguousarray(items[train_rows])),
        validation=validation,
        test=test,
        seed=seed,
        notes=tuple(notes),
        ids=dataclasses.replace(IdMap.of(data), split_seed=seed),
    )


def untrained_users(data: Interactions) -> np.ndarray:
    """[num_users] bool: the users `split` gives no training rows (too few interactions
    to hold items out, or only a fixed test item), so a model knows nothing of them."""
    counts = np.bincount(data.users, minlength=data.num_users)
    if data.fixed_test is None:
        return counts < MIN_INTERACTIONS
    return counts == 0


def prepare(source: str | os.PathLike, seed: int = 0) -> Split:
    """`split(load(source), seed)`: the one call most users need."""
    return split(load(source), seed)


def _eval_set(users: np.ndarray, items: np.ndarray, num_items: int, all_keys: np.ndarray,
              rng: np.random.Generator, notes: list[str], what: str) -> EvalSet:
    # A user who interacted with all but < 99 items cannot get 99 distinct negatives.
    per_user = np.bincount(all_keys // num_items, minlength=int(users.max(initial=0)) + 1)
    ok = num_items - per_user[users] >= EVAL_NEGATIVES
    if not ok.all():
        notes.append(f"{int((~ok).sum())} users left out of {what}: fewer than "
                     f"{EVAL_NEGATIVES} items they never interacted with")
        users, items = users[ok], items[ok]
    negatives = sample_eval_negatives(users, num_items, all_keys, EVAL_NEGATIVES, rng)
    candidates = np.concatenate([items[:, None], negatives], axis=1)
    return EvalSet(torch.from_numpy(users.astype(np.int64)), torch.from_numpy(candidates))


def sample_eval_negatives(users: np.ndarray, num_items: int, positive_keys: np.ndarray, k: int,
                          rng: np.random.Generator) -> np.ndarray:
    """k distinct items per user, uniformly among the items the user never interacted with.

    Vectorised rejection sampling: draw a wide row of items per user, reject positives
    and repeats, keep the first k survivors in draw order (so the pick stays uniform);
    only rows with too few survivors are drawn again, wider.
    `positive_keys` is the sorted array of user * num_items + item of all positives.
    """
    out = np.empty((len(users), k), dtype=np.int64)
    todo = np.arange(len(users))
    width = 2 * k
    while todo.size:
        draw = rng.integers(0, num_items, size=(todo.size, width))
        bad = _isin_sorted(users[todo, None] * num_items + draw, positive_keys)
        # Mark every repeat of an item within a row, but not its first occurrence.
        order = np.argsort(draw, axis=1, kind="stable")
        s = np.take_along_axis(draw, order, axis=1)
        repeat_sorted = np.zeros_like(bad)
        repeat_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        repeat = np.empty_like(bad)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        good = ~(bad | repeat)
        done = good.sum(axis=1) >= k
        first = np.argsort(~good, axis=1, kind="stable")[:, :k]  # first k survivors, in order
        out[todo[done]] = np.take_along_axis(draw, first, axis=1)[done]
        todo = todo[~done]
        width *= 2
    return out
