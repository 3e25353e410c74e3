"""Crash-safe file primitives shared by every writer in timetravel.

Writes go to a temporary file in the destination directory, are flushed and
fsynced, then renamed over the destination, so a reader sees either the old
or the new content, never a half-written file. Appends to logs are fsynced
before returning.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from timetravel.errors import StoreError


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_crc32(path: Path, chunk_bytes: int = 8 * 2**20) -> int:
    """CRC32 of a file's bytes, read in chunks (cheap next to an fsync: about 1 GB/s)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            crc = zlib.crc32(chunk, crc)
    return crc


def fsync_file(path: Path) -> None:
    """Flush a file's data (including pages written through a memory map) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_non_regular(path: Path) -> None:
    """Raise ``OSError(EINVAL)`` when ``path`` exists and is not a regular file (a link, device, directory)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise OSError(errno.EINVAL, f"{kind}, which is never replaced", str(path))


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file renamed over ``path``; only a regular file (or nothing) is ever replaced."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", exc.filename) from None
    _refuse_non_regular(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        _refuse_non_regular(path)  # checked again just before the rename
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    _atomic_write(path, lambda fh: fh.write(data))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as a ``.npy`` file atomically (never pickled)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise TypeError(f"refusing to save an object array to {path}: it would need pickle")
    _atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write raw bytes to ``path`` atomically."""
    _atomic_write(path, lambda fh: fh.write(data))


def append_lines_fsynced(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to a text log in one ``write`` call and fsync it before returning.

    The log must be a regular file (or not exist yet): a symbolic link is
    refused (``O_NOFOLLOW``), so an append never lands in a file the link
    points to. When the log ends in a partial line (a writer killed mid-line),
    the write starts with a newline, so the partial line stays alone (readers
    skip it) and never swallows the new records.

    Raises
    ------
    OSError
        ``ELOOP`` for a symbolic link, ``EISDIR`` for a directory, ``EINVAL``
        for something else that is not a regular file, or any error of the
        filesystem; the log is unchanged.
    """
    if any("\n" in line for line in lines):
        raise ValueError("a log line must not contain a newline")
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o644)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            data = b"\n" + data  # one write: the record and the newline that ends the torn line before it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: Path, version: int, *, fix: str = "", error: type[StoreError] = StoreError) -> dict | None:
    """A JSON manifest that must be an object with ``format_version == version``; None when it does not exist.

    Parameters
    ----------
    path : Path
    version : int
        The only ``format_version`` this timetravel reads.
    fix : str
        What to do about a bad manifest, appended to each message ("run `timetravel detect RUN` again").
    error : StoreError subclass
        Raised with a message naming the file and the problem.
    """
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc}){tail}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc}){tail}") from None
    if not isinstance(manifest, dict):
        raise error(f"{path}: expected a JSON object at the top level{tail}")
    if manifest.get("format_version") != version:
        raise error(
            f"{path}: unknown format_version {manifest.get('format_version')!r}; this timetravel reads version "
            f"{version}{tail}"
        )
    return manifest
