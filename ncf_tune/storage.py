"""Where a search on a cluster keeps what every node must reach: `--storage URI`.

A URI is anything pyarrow's filesystems open (s3://bucket/path, gs://bucket/path,
file:///nfs/path, ...); a plain path is a folder on this machine (shared over NFS or
not). Ray Tune writes trials and checkpoints there itself; this module covers the few
reads and writes ncf_tune does beside it: the stage winners' checkpoints that the next
stage's trials load on whichever node they run.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from ncf_tune.errors import NcfError
from ncf_tune.files import atomic_path


def is_uri(location: str) -> bool:
    return "://" in location


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def _fs(uri: str):  # noqa: ANN202 - pyarrow's types, imported late (pyarrow is Ray's)
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # unknown scheme, missing credentials, bad bucket name
        raise NcfError(f"{uri}: cannot open this storage ({str(exc).splitlines()[0]}); use "
                       "s3://, gs://, file:// or a folder every node can reach") from None


def exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    from pyarrow import fs

    filesystem, path = _fs(location)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def remove_tree(location: str) -> None:
    if not is_uri(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    filesystem, path = _fs(location)
    filesystem.delete_dir(path)


def read_bytes(location: str) -> bytes:
    """The file's content; NcfError (one line) when it is not there."""
    if not is_uri(location):
        return Path(location).read_bytes()
    filesystem, path = _fs(location)
    try:
        with filesystem.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError) as exc:
        raise NcfError(f"{location}: cannot read it from storage ({str(exc).splitlines()[0]})"
                       ) from None


def upload(local: Path, location: str) -> str:
    """Copy a local file to `location` (written under a temporary name, then moved, so a
    reader never sees half a file). Returns `location`."""
    if not is_uri(location):
        with atomic_path(location) as tmp:
            shutil.copyfile(local, tmp)
        return location
    filesystem, path = _fs(location)
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with filesystem.open_output_stream(tmp) as out, open(local, "rb") as f:
        shutil.copyfileobj(f, out)
    filesystem.move(tmp, path)  # object stores copy then delete: still never half a file
    return location
