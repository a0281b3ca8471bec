"""Writing a file atomically: a reader (the daemon loading a model, a resumed run loading a
checkpoint) sees the old file or the whole new one, never a half-written one, also after a
power cut.

The one way the trainer does it: write a temporary file in the target's folder (so that the
rename stays on one file system), flush and fsync it, os.replace it over the target, then fsync
the folder so that the rename itself is on disk. The temporary file is created like any other
(permissions from the umask), so a model file stays readable by the daemon's user.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | Path, parents: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content to; it replaces `path` when the block ends
    without an error. On an error the temporary file is removed and `path` is left as it was.
    The folder must exist, unless `parents` asks to create it."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, parents: bool = False) -> None:
    with atomic_open(path, parents) as file:
        file.write(data)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return  # a folder cannot be opened for fsync on Windows
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
