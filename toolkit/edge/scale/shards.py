"""The result shards of a scaled-out `infer`: one row per image, written a shard at a time, atomically.

A row is what `toolkit infer --json` prints for an image — `path`, `top` (the top-k labels and
probabilities, best first) — plus `error`, the image's one-line error (null for a classified image;
an error row's `top` is empty). Shards are Parquet (`top` a list of structs {label, prob}) or JSON Lines,
named `part-<run>-<n>.<format>`: every run writes new names, each through fsio.atomic_write, so a
crash leaves whole shards and no half-written one. `results.json` beside them records what made
them (the model's SHA-256, top-k, the format); a rerun into the folder must match it, and skips
every path its shards already hold — an image whose row is an error included, so a rerun after a
finished run does nothing. Never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit.edge.data.fsio import atomic_write, atomic_write_text
from toolkit.edge.errors import first_line, shown
from toolkit.edge.options import RESULT_FORMATS

FORMATS = RESULT_FORMATS
MANIFEST = "results.json"
SHARD_PREFIX = "part-"


class ShardError(ValueError):
    """The results folder cannot be used for this run; one line for the user."""


def model_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _schema():
    import pyarrow as pa
    top = pa.list_(pa.struct([("label", pa.string()), ("prob", pa.float64())]))
    return pa.schema([("path", pa.string()), ("top", top), ("error", pa.string())])


def shard_files(folder: Path) -> list[Path]:
    """The shards in `folder` (hidden temp files of an unfinished write are not shards)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(SHARD_PREFIX)
                  and p.suffix.lstrip(".") in FORMATS and p.is_file())


def _read_rows(path: Path) -> Iterable[tuple[str, str | None]]:
    """(path, error) of each row of one shard."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path, columns=["path", "error"])
        return zip(table.column("path").to_pylist(), table.column("error").to_pylist())
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["path"], row.get("error")) for row in rows]


@dataclass
class ResultsFolder:
    """A results folder opened for one run: what it already holds, and a writer of new shards."""
    folder: Path
    fmt: str
    done: dict[str, str | None]          # path → its error (None: classified), from earlier runs
    run: str
    written: int = 0                     # shards written by this run

    @classmethod
    def open(cls, folder: str | os.PathLike, fmt: str, model: str | os.PathLike, top_k: int) -> ResultsFolder:
        """Check the folder against `results.json` (written if absent) and read the paths done.
        ShardError when it holds results of another model, top-k or format, or an unreadable shard."""
        folder = Path(folder)
        if fmt not in FORMATS:
            raise ShardError(f"unknown result format {fmt!r} (choose from {', '.join(FORMATS)})")
        wanted = {"model_sha256": model_digest(model), "top_k": top_k, "format": fmt}
        manifest = folder / MANIFEST
        if manifest.is_file():
            try:
                held = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ShardError(f"{shown(manifest)}: cannot read ({first_line(exc)})") from None
            for key, value in wanted.items():
                if held.get(key) != value:
                    raise ShardError(f"{shown(folder)} holds results of another run ({key} {held.get(key)!r}, "
                                     f"this run {value!r}); give a new --out")
        elif shard_files(folder):
            raise ShardError(f"{shown(folder)} holds shards but no {MANIFEST}; give a new --out")
        else:
            atomic_write_text(manifest, json.dumps({**wanted, "model": os.fspath(model)}, indent=1) + "\n")
        done: dict[str, str | None] = {}
        for shard in shard_files(folder):
            try:
                done.update(_read_rows(shard))
            except (OSError, ValueError, KeyError) as exc:
                raise ShardError(f"{shown(shard)}: cannot read this shard ({first_line(exc)})") from None
        run = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        return cls(folder, fmt, done, run)

    def write(self, rows: list[dict]) -> Path:
        """One new shard holding `rows` ({path, top, error}), written atomically."""
        path = self.folder / f"{SHARD_PREFIX}{self.run}-{self.written:05d}.{self.fmt}"
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            table = pa.Table.from_pylist(rows, schema=_schema())
            atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        else:
            atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
        self.written += 1
        return path


def read_results(folder: str | os.PathLike) -> list[dict]:
    """Every row of a results folder ({path, top, error}), shard by shard (tests, small folders)."""
    rows: list[dict] = []
    for shard in shard_files(Path(folder)):
        if shard.suffix == ".parquet":
            import pyarrow.parquet as pq
            rows.extend(pq.read_table(shard).to_pylist())
        else:
            rows.extend(json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines() if line.strip())
    return rows
