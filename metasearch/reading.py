"""Reading files metasearch did not write: regular files only, and never more than a cap.

A FIFO, a device (``/dev/zero``), a directory named like a file or a symbolic-link loop is
refused without blocking: the file is opened non-blocking and checked before a byte is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from metasearch.errors import MetasearchError


def open_regular(path: str | Path, what: str, error: type[MetasearchError]) -> BinaryIO:
    """``path`` opened for reading in binary; raises ``error`` (naming ``what`` and ``path``)
    where it cannot be opened or is not a regular file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    try:
        _check_mode(os.fstat(descriptor).st_mode, path, what, error)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def check_regular(path: str | Path, what: str, error: type[MetasearchError]) -> None:
    """Raises ``error`` where ``path`` (links followed) is missing, a link loop, or not a
    regular file; opens nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    _check_mode(mode, path, what, error)


def read_capped(path: str | Path, what: str, max_bytes: int, error: type[MetasearchError]) -> bytes:
    """The bytes of the regular file ``path``; raises ``error`` where it is unreadable, not a
    regular file, or larger than ``max_bytes``."""
    with open_regular(path, what, error) as file:
        try:
            data = file.read(max_bytes + 1)
        except OSError as problem:
            raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    if len(data) > max_bytes:
        raise error(
            f"{what} {path} is larger than the limit of {max_bytes:,} bytes; is it the right file?"
        )
    return data


def _check_mode(mode: int, path: str | Path, what: str, error: type[MetasearchError]) -> None:
    if stat.S_ISREG(mode):
        return
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    raise error(f"{what} {path} is {kind}, not a regular file; remove it or pass a file")
