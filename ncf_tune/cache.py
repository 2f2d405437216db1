"""The prepared split on disk, so that the next search on the same data skips parsing.
(And the loaded interactions, for `recommend`: `load`.)

Preparing ML-20M (parsing 20M lines, splitting, drawing 99 negatives for each of 138k
users twice) takes a minute and a few GiB; loading the result takes seconds. `prepare`
keeps each prepared split as one .npz file in the cache folder ($NCF_TUNE_CACHE, else
the data cache's prepared/ folder: ~/.cache/ncf_tune/prepared), named by a hash of:

    the source's content (sha256 of its file, or of a paper split's three files),
    the source as given (it names the split and goes into checkpoints), the seed,
    and FORMAT (bumped whenever `data.split` would split differently).

A changed file hashes differently, so a stale entry is never used; it just stays until
the folder is cleared. Files are written whole under a temporary name and renamed, so a
reader never sees half of one; an unreadable entry is prepared again and replaced.
Sources under CACHE_MIN_BYTES (ML-1M's 24 MB ratings.dat, every test's data) are
prepared each time: that takes seconds and leaves nothing on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ncf_tune import data
from ncf_tune.files import atomic_path

FORMAT = "prepared/1"
CACHE_MIN_BYTES = 32 << 20  # smaller sources are prepared each time


def folder() -> Path:
    """$NCF_TUNE_CACHE, else <data cache>/prepared (data.cache_dir())."""
    env = os.environ.get("NCF_TUNE_CACHE")
    return Path(env).expanduser() if env else data.cache_dir() / "prepared"


def source_files(source: str | os.PathLike) -> list[Path]:
    """The files a source's content is in: a ratings file, a paper split's three files,
    an archive's ratings file once fetched. [] where the source is not (yet) on disk."""
    text = str(source)
    if text in data.ARCHIVES:
        path = data.cache_dir() / data.ARCHIVES[text].ratings
        return [path] if path.is_file() else []
    path = Path(text).expanduser()
    if path.is_dir():
        return sorted(p for suffix in (".train.rating", ".test.rating", ".test.negative")
                      for p in path.glob(f"*{suffix}"))
    return [path] if path.is_file() else []


def key(source: str | os.PathLike, seed: int, files: list[Path]) -> str:
    """The cache entry's name for `source` split with `seed` (see the module docstring)."""
    h = hashlib.sha256(f"{FORMAT}\n{source}\n{seed}\n".encode())
    for path in files:
        with path.open("rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:24]


def prepare(source: str | os.PathLike, seed: int = 0,
            min_bytes: int = CACHE_MIN_BYTES) -> data.Split:
    """`data.prepare(source, seed)`, from the cache when this source and seed were
    prepared before (see the module docstring). The Split is the same either way."""
    files = source_files(source)
    if not files or sum(p.stat().st_size for p in files) < min_bytes:
        return data.prepare(source, seed)
    entry = folder() / f"{key(source, seed, files)}.npz"
    if entry.is_file():
        split = _read(entry)
        if split is not None:
            return split
    split = data.prepare(source, seed)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _write(entry, split)
    except OSError:
        pass  # an unwritable cache only costs the next run its preparation
    return split


def load(source: str | os.PathLike, min_bytes: int = CACHE_MIN_BYTES) -> data.Interactions:
    """`data.load(source)`, from the cache when this source was loaded before (the same
    keying as `prepare`'s, without a seed). What `recommend` reads: every interaction,
    with the raw ids."""
    files = source_files(source)
    if not files or sum(p.stat().st_size for p in files) < min_bytes:
        return data.load(source)
    entry = folder() / f"{key(source, -1, files)}-interactions.npz"
    if entry.is_file():
        inter = _read_interactions(entry)
        if inter is not None:
            return inter
    inter = data.load(source)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"users": inter.users, "items": inter.items, "timestamps": inter.timestamps,
                  "raw_users": inter.raw_users, "raw_items": inter.raw_items}
        if inter.fixed_test is not None:
            arrays |= {"test_users": inter.fixed_test.users, "test_items": inter.fixed_test.items,
                       "test_negatives": inter.fixed_test.negatives}
        meta = {"format": FORMAT, "name": inter.name, "source": inter.source,
                "num_users": inter.num_users, "num_items": inter.num_items,
                "notes": list(inter.notes), "fingerprint": inter.fingerprint}
        with atomic_path(entry) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    except OSError:
        pass  # an unwritable cache only costs the next run its parsing
    return inter


def _read_interactions(path: Path) -> data.Interactions | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                return None
            a = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    fixed = None
    if "test_users" in a:
        fixed = data.FixedTest(a["test_users"], a["test_items"], a["test_negatives"])
    inter = data.Interactions(
        name=meta["name"], source=meta["source"], users=a["users"], items=a["items"],
        timestamps=a["timestamps"], num_users=meta["num_users"],
        num_items=meta["num_items"], raw_users=a["raw_users"], raw_items=a["raw_items"],
        fixed_test=fixed, notes=tuple(meta["notes"]))
    inter.__dict__["fingerprint"] = meta["fingerprint"]  # its cached_property, known
    return inter


def _write(path: Path, split: data.Split) -> None:
    ids = split.ids
    meta = {"format": FORMAT, "name": split.name, "num_users": split.num_users,
            "num_items": split.num_items, "seed": split.seed, "notes": list(split.notes),
            "source": None if ids is None else ids.source,
            "fingerprint": None if ids is None else ids.fingerprint}
    arrays = {"train_users": split.train_users, "train_items": split.train_items,
              "validation_users": split.validation.users,
              "validation_candidates": split.validation.candidates,
              "test_users": split.test.users, "test_candidates": split.test.candidates}
    if ids is not None:
        arrays |= {"id_users": ids.users, "id_items": ids.items}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)),
                 **{k: v.numpy() for k, v in arrays.items()})


def _read(path: Path) -> data.Split | None:
    """The split in a cache entry; None when it cannot be read (it is then replaced)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                return None
            t = {k: torch.from_numpy(z[k]) for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    ids = None
    if meta["fingerprint"] is not None:
        ids = data.IdMap(meta["source"], meta["fingerprint"], t["id_users"], t["id_items"])
    return data.Split(
        name=meta["name"], num_users=meta["num_users"], num_items=meta["num_items"],
        train_users=t["train_users"], train_items=t["train_items"],
        validation=data.EvalSet(t["validation_users"], t["validation_candidates"]),
        test=data.EvalSet(t["test_users"], t["test_candidates"]),
        seed=meta["seed"], notes=tuple(meta["notes"]), ids=ids)
