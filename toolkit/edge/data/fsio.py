"""File I/O every stage shares: one atomic writer and one bounded reader.

- `atomic_write(path, write)`: `write` fills a temp file in the destination's folder, which is then
  renamed over `path`; on any failure (exception, Ctrl-C) the temp file is removed, so nothing
  half-written is ever left behind. Every writer of the toolkit goes through it.
- `read_regular_file(path, limit)`: reads only regular files (a FIFO, a device such as /dev/zero or a
  folder is refused without opening it for reading), and never more than `limit` bytes whatever
  `stat` says — a file that grows past the limit while being read is refused too.
- `PathIndex(paths)`: which of many paths a given path is (or resolves to), each path looked up
  once, so that checking n outputs against n inputs costs O(n), not one comparison per pair.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from toolkit.edge.errors import shown


class InputError(ValueError):
    """An input file that cannot be read; the message is one line for the user."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a temp file beside `path`, then rename it to `path`.

    The temp file is hidden (`.name.XXXX.tmp`) and removed on every failure path. Parent folders are
    created. Returns `path`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{shown(path)} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def require_regular_file(path: str | os.PathLike) -> os.stat_result:
    """stat() a path and refuse anything that is not a regular file, without opening it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{shown(path)}: no such file") from None
    except OSError as exc:
        raise InputError(f"{shown(path)}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{shown(path)} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{shown(path)} is not a regular file (a pipe, socket or device is not read)")
    return info


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; InputError otherwise."""
    require_regular_file(path)
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO between stat and open, open() does not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"{shown(path)}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InputError(f"{shown(path)} is not a regular file (a pipe, socket or device is not read)")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{shown(path)}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{shown(path)} is larger than the {limit / 2**20:.0f} MiB limit")
    return data


class PathIndex:
    """Who each of `paths` is, looked up once per path: its resolved path (catches symlinks and
    `..`) and its device and inode (catches hard links and bind mounts)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.by_path: dict[str, Path] = {}
        self.by_inode: dict[tuple[int, int], Path] = {}
        for path in paths:
            self.by_path.setdefault(os.path.realpath(path), path)
            inode = self._inode(path)
            if inode is not None:
                self.by_inode.setdefault(inode, path)

    @staticmethod
    def _inode(path: Path) -> tuple[int, int] | None:
        try:
            info = os.stat(path)
        except OSError:                 # not there (yet): nothing it could be a hard link to
            return None
        return info.st_dev, info.st_ino

    def find(self, path: Path) -> Path | None:
        """The indexed path that `path` is (or resolves to), if any: one resolution, one lookup."""
        found = self.by_path.get(os.path.realpath(path))
        if found is None and self.by_inode:
            inode = self._inode(path)
            found = self.by_inode.get(inode) if inode is not None else None
        return found
