"""Files and folders that appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[Path], None]) -> None:
    """Write ``path`` (bytes, or a function that writes the file it is given) so that it either appears
    whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        if isinstance(data, bytes):
            Path(tmp).write_bytes(data)
        else:
            data(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` to fill; when the block succeeds it replaces ``out`` in one rename,
    when it fails it is removed, so ``out`` is never left half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield work
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
