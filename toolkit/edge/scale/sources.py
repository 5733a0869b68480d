"""What a scaled-out run reads: image paths listed on the driver from folders, globs and file lists,
and each image read and decoded in a task.

A SOURCE is a folder (searched recursively, as `toolkit infer` does), an image file, a glob
(`photos/**/*.jpg`, quoted so the shell leaves it alone) or `@list.txt`, a file naming one path per
line. Local paths are listed with the local engine's own `expand_inputs`, so both engines see the
same files in the same order and name them the same way. A path with a scheme (`s3://…`, `gs://…`)
is listed through pyarrow's file systems, which Ray Data reads with too; their images are read in
the decoding tasks, on the cluster. Nothing here reads an image. Never imports torch.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit.edge.data.fsio import InputError, read_regular_file
from toolkit.edge.data.images import (
    IMAGE_SUFFIXES,
    MAX_FILE_BYTES,
    ImageError,
    OnError,
    decode_image,
    expand_inputs,
    load_image,
)
from toolkit.edge.errors import first_line, shown

LIST_PREFIX = "@"
MAX_LIST_BYTES = 1 << 30          # a file list of a billion bytes names some ten million images
GLOB_CHARS = frozenset("*?[")


def is_uri(source: str) -> bool:
    """A path another file system serves (`s3://bucket/key`), not this machine's."""
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.isalnum() and scheme != "file"


def _is_glob(source: str) -> bool:
    return any(c in GLOB_CHARS for c in source)


def _read_list(source: str, on_error: OnError) -> list[str]:
    name = source[len(LIST_PREFIX):]
    try:
        text = read_regular_file(name, MAX_LIST_BYTES).decode("utf-8", "surrogateescape")
    except InputError as exc:
        on_error(f"{LIST_PREFIX}{exc}")
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _remote_files(source: str, on_error: OnError) -> list[str]:
    """The image files under a URI (a file, a prefix, or a glob below a fixed prefix), sorted."""
    from pyarrow import fs

    static = source
    if _is_glob(source):
        static = source[:min(source.index(c) for c in GLOB_CHARS if c in source)].rsplit("/", 1)[0]
    try:
        filesystem, root = fs.FileSystem.from_uri(static)
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.File:
            found = [root]
        else:
            found = [i.path for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                     if i.type == fs.FileType.File]
    except (OSError, ValueError) as exc:   # pyarrow raises both for unknown schemes and missing buckets
        on_error(f"{shown(source)}: cannot list ({first_line(exc)})")
        return []
    scheme = source.split("://", 1)[0]
    uris = sorted(f"{scheme}://{path}" for path in found)
    if _is_glob(source):
        return [u for u in uris if fnmatch.fnmatchcase(u, source)]
    return [u for u in uris if os.path.splitext(u)[1].lower() in IMAGE_SUFFIXES or u == source]


def list_sources(sources: Sequence[str | os.PathLike], on_error: OnError, lists: bool = True) -> list[str]:
    """Every image a run reads, in order, each named once: folders expanded (recursively, sorted),
    globs matched (sorted), `@file` lists read (their lines are sources too, but not lists, so a
    list cannot name itself); a URI listed on its own file system. A source that cannot be listed,
    or a glob that matches nothing, goes to `on_error` (one line) and the others go on."""
    out: list[str] = []
    for item in sources:
        source = os.fspath(item)
        if lists and source.startswith(LIST_PREFIX) and not Path(source).exists():
            out.extend(list_sources(_read_list(source, on_error), on_error, lists=False))
        elif is_uri(source):
            out.extend(_remote_files(source, on_error))
        elif _is_glob(source) and not Path(source).exists():
            matched = sorted(glob.glob(source, recursive=True))
            if not matched:
                on_error(f"{shown(source)}: no file matches this pattern")
            out.extend(str(p) for p in expand_inputs(matched, on_error=on_error))
        else:
            out.extend(str(p) for p in expand_inputs([source], on_error=on_error))
    return list(dict.fromkeys(out))


def read_image(source: str) -> np.ndarray:
    """Decode one listed image with the local engine's decoder (same limits, same pixels): a local
    path through `load_image`, a URI read through its pyarrow file system. ImageError, one line."""
    if not is_uri(source):
        return load_image(source)
    from pyarrow import fs
    try:
        filesystem, path = fs.FileSystem.from_uri(source)
        with filesystem.open_input_stream(path) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{shown(source)}: cannot read ({first_line(exc)})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{shown(source)} is larger than the {MAX_FILE_BYTES / 2**20:.0f} MiB limit")
    return decode_image(bytes(data), shown(source))
