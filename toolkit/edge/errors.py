"""How anything that goes wrong is said to the user: one line, with names that cannot break it.

Every stage raises its own error class with a message that is already one line: quantize
QuantizeError, wrap WrapError, export and the contract's gates ExportError, the contract's reading
checks ModelFileError, data InputError (ImageError for one image), spectral TransformError, runtime
ModelError and ProviderError, bench BenchError. Where a library's exception is passed on,
`first_line` makes it one line; where a file or tensor name goes into a message, `shown` escapes
what would break the line. Standard library only, so every module may import it.
"""

from __future__ import annotations

import os


def first_line(exc: BaseException, limit: int | None = None, typed: bool = False) -> str:
    """An exception as one line for the user: the first line of its message (cut at `limit`
    characters where a caller needs a short one; the cause usually sits at the end of the line),
    its type name where the message is empty or `typed` asks for it (the exception came from user
    code, whose types say what went wrong)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(exc).__name__}: {line}" if typed else line


def shown(name: str | bytes | os.PathLike) -> str:
    """A file or tensor name as it may appear in a one-line message: bytes that are not UTF-8 and
    control characters (newlines…) escaped, since names come from files and folders we do not own."""
    text = os.fspath(name)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
