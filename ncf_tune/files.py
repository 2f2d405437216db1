"""Small file helpers shared by the CLIs: safe YAML in, atomic text out."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ncf_tune.errors import NcfError


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file's top-level mapping (yaml.safe_load: nothing in it runs as code)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise NcfError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NcfError(f"{path}:{where} not valid YAML ({problem})") from None
    if not isinstance(value, dict):
        raise NcfError(f"{path}: expected a mapping of key: value at the top level, "
                       f"got {type(value).__name__}")
    return value


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, else delete it.
    Readers never see half a file, and a crash leaves the old file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# A write that fails with one of these is the folder's fault (full, over quota, read-only,
# not ours to write), not the program's: one line naming the folder, and --resume.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
LOW_SPACE_BYTES = 4 * 2**20  # less than this free mid-search: stop before writes fail


def write_problem(folder: str | os.PathLike, low_bytes: int = LOW_SPACE_BYTES) -> str | None:
    """Why `folder` cannot take more writes now ("no space left: 1 MiB free", "not
    writable (Read-only file system)"), or None when it can."""
    try:
        free = shutil.disk_usage(folder).free
        if free < low_bytes:
            return f"no space left ({free / 2**20:.1f} MiB free)"
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"not writable ({exc.strerror or exc})"
    return None


def disk_error(folder: str | os.PathLike, problem: str) -> NcfError:
    """The one line for a results folder that filled up or turned unwritable mid-search."""
    return NcfError(f"{folder}: {problem}; the search stopped and wrote nothing half-way: "
                    "free some space (or make it writable) and run the same command with "
                    "--resume to go on")


def is_disk_error(exc: BaseException) -> bool:
    """Whether `exc` is a write refused by the disk or the folder (DISK_ERRNOS)."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def write_yaml_atomic(path: str | os.PathLike, value: Any) -> Path:
    return write_text_atomic(path, yaml.safe_dump(value, sort_keys=False))
