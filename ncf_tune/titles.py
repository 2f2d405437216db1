"""Item titles, where a GroupLens source has them: read beside its ratings file.

    ml-1m    movies.dat   MovieID::Title::Genres            latin-1
    ml-100k  u.item       movie id|title|release date|...   latin-1
    ml-20m   movies.csv   movieId,title,genres (a header)   utf-8

For an archive name (`ml-1m`), the file is looked for beside the cached ratings file,
then inside the cached zip. A paper split folder has none: its files renumber users and
items (0..n-1) and keep no list back to MovieLens ids, so a title could not be matched
to its item soundly.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from ncf_tune import data
from ncf_tune.errors import NcfError

FILES = ("movies.dat", "u.item", "movies.csv")  # one per GroupLens release


def load(source: str) -> dict[int, str]:
    """{raw item id: title} for the data source `source` (what data.load takes), or {}
    when it comes without titles. A titles file that cannot be read is an NcfError."""
    if source in data.ARCHIVES:
        ratings = data.cache_dir() / data.ARCHIVES[source].ratings
        found = _beside(ratings)
        if found is None:
            return _from_zip(data.cache_dir() / f"{source}.zip", Path(ratings).parent.name)
    else:
        path = Path(source).expanduser()
        found = None if path.is_dir() else _beside(path)
    if found is None:
        return {}
    try:
        return _parse(found.name, found.read_bytes(), str(found))
    except OSError as exc:
        raise NcfError(f"{found}: cannot read ({exc.strerror}); fix its permissions or move "
                       "it away to go without titles") from None


def _beside(ratings: Path) -> Path | None:
    return next((ratings.parent / n for n in FILES if (ratings.parent / n).is_file()), None)


def _from_zip(zip_path: Path, folder: str) -> dict[int, str]:
    if not zip_path.is_file():
        return {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            member = next((f"{folder}/{n}" for n in FILES if f"{folder}/{n}" in names), None)
            return {} if member is None else _parse(member, zf.read(member),
                                                    f"{zip_path}:{member}")
    except zipfile.BadZipFile:
        return {}  # the ratings came from elsewhere; titles are optional


def _parse(name: str, raw: bytes, where: str) -> dict[int, str]:
    try:
        if name.endswith("movies.csv"):
            df = pd.read_csv(io.BytesIO(raw), usecols=[0, 1], encoding="utf-8")
        else:  # '::' and '|' files: the C parser wants one character, so '::' becomes a tab
            sep = "|" if name.endswith("u.item") else "\t"
            text = raw.replace(b"::", b"\t") if sep == "\t" else raw
            df = pd.read_csv(io.BytesIO(text), sep=sep, header=None, usecols=[0, 1],
                             encoding="latin-1", quoting=3)  # 3: titles hold quotes as text
        ids = pd.to_numeric(df.iloc[:, 0], errors="raise").astype("int64")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise NcfError(f"{where}: not a titles file ({reason}); expected id and title "
                       "columns as GroupLens writes them, or move it away") from None
    return dict(zip(ids.tolist(), df.iloc[:, 1].astype(str).tolist(), strict=True))
