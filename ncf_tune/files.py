"""Small file helpers shared by the CLIs: safe YAML in, atomic text out."""

from __future__ import annotations

import os
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


def write_yaml_atomic(path: str | os.PathLike, value: Any) -> Path:
    return write_text_atomic(path, yaml.safe_dump(value, sort_keys=False))
