"""`make gpu-carry`: onnxruntime-gpu (and the built model files) onto an offline GPU machine that
takes files only in transfers of limited size. Standard library only: `unpack` runs on the target
with whatever Python is there.

    python benchmarks/gpu_carry.py pack --python 3.12 --cuda 13 [--wheel FILE] [--part-mb 60] [--out .gpu]
    python benchmarks/gpu_carry.py unpack [--dir .gpu/carry]    # on the target, in the checkout

`pack` downloads the onnxruntime-gpu wheel for the target's Python and CUDA major (`pip download
--only-binary`, nothing installed here), checks the CUDA version it was built for, and writes one
tar stream — the wheel's files under `.gpu/site/`, the git-ignored model files gpu-check runs
(`make models` output) under `models/` — through xz into numbered parts of at most `--part-mb` MB,
streamed: memory stays bounded by the xz preset, whatever the wheel's size. The wheel itself is a
zip of deflated members, which xz cannot shrink; its uncompressed files can (the CUDA provider
library: 284 MB → ~185 MB). It then prints which part goes in which transfer and what to run on
the target. `unpack` checks every part's SHA-256 against the manifest, streams the parts through xz
and tar, and refuses any member outside `.gpu/site/` and `models/`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PREFIXES = (".gpu/site/", "models/")
STEMS = ("cifar_cnn", "cifar_resnet", "dcgan")


class CarryError(Exception):
    """A one-line reason why packing or unpacking cannot go on."""


class SplitWriter:
    """A write-only stream cut into files `<base>.001`, `.002`, … of at most `limit` bytes each."""

    def __init__(self, base: Path, limit: int) -> None:
        self.base, self.limit = base, limit
        self.parts: list[Path] = []
        self._file = None
        self._left = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._left == 0:
                self._next()
            chunk = view[:self._left]
            self._file.write(chunk)            # type: ignore[attr-defined]
            self._left -= len(chunk)
            view = view[len(chunk):]
        return len(data)

    def _next(self) -> None:
        self.close()
        self.parts.append(self.base.with_name(f"{self.base.name}.{len(self.parts) + 1:03d}"))
        self._file = open(self.parts[-1], "wb")  # noqa: SIM115  (closed by close(), one part at a time)
        self._left = self.limit

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(python: str, out: Path) -> Path:
    """The onnxruntime-gpu wheel for CPython `python` on Linux x86-64, fetched with pip (no install)."""
    tag = python.replace(".", "")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "--abi", f"cp{tag}", *platforms,
               "--dest", str(out), "onnxruntime-gpu>=1.31,<1.32"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(out.glob(f"onnxruntime_gpu-*-cp{tag}-*.whl"))
    if result.returncode != 0 or not wheels:
        why = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise CarryError(f"pip download of onnxruntime-gpu for Python {python} failed: {why}")
    return wheels[-1]


def wheel_cuda(wheel: Path) -> str | None:
    """The CUDA version the wheel's onnxruntime was built for (capi/build_and_package_info.py)."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("onnxruntime/capi/build_and_package_info.py").decode()
    found = re.search(r"cuda_version\s*=\s*['\"]([^'\"]*)['\"]", text)
    return found.group(1) if found and found.group(1) else None


def built_models(root: Path) -> list[Path]:
    """The model files gpu-check runs that git does not hold (`make models` output: each model's
    fp32 and fp16, the generator's int8); the int8 classifiers are tracked and travel with the tree."""
    tracked = set(subprocess.run(["git", "ls-files", "-z", "models"], cwd=root, capture_output=True,
                                 check=False).stdout.decode().split("\0"))
    files = [p for stem in STEMS for p in sorted((root / "models").glob(f"{stem}*.onnx"))
             if p.name.split(".")[0] == stem and not any(t in p.name for t in (".tta.", ".fft_lowpass."))]
    return [p for p in files if f"models/{p.name}" not in tracked]


def members(wheel: Path, models: Iterable[Path]) -> Iterator[tuple[tarfile.TarInfo, object]]:
    """(tar header, open file) for every file of the payload, in a fixed order with fixed times."""
    with zipfile.ZipFile(wheel) as archive:
        for item in archive.infolist():
            if item.is_dir() or ".data/" in item.filename:        # scripts and headers: not needed to import
                continue
            info = tarfile.TarInfo(PREFIXES[0] + item.filename)
            info.size, info.mode = item.file_size, (item.external_attr >> 16) & 0o777 or 0o644
            with archive.open(item) as fh:
                yield info, fh
    for path in models:
        info = tarfile.TarInfo(PREFIXES[1] + path.name)
        info.size, info.mode = path.stat().st_size, 0o644
        with open(path, "rb") as fh:
            yield info, fh


def pack(wheel: Path, models: list[Path], out: Path, part_bytes: int, preset: int = 9) -> dict:
    """Write the parts `carry.tar.xz.NNN` and their manifest `carry.json` into `out`; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("carry.tar.xz.*"):
        old.unlink()
    writer = SplitWriter(out / "carry.tar.xz", part_bytes)
    with lzma.LZMAFile(writer, "w", preset=preset) as xz, tarfile.open(fileobj=xz, mode="w|") as tar:
        for info, fh in members(wheel, models):
            tar.addfile(info, fh)                               # type: ignore[arg-type]
    writer.close()
    manifest = {"wheel": wheel.name, "cuda": wheel_cuda(wheel), "models": [p.name for p in models],
                "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p in writer.parts]}
    (out / "carry.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


class Joined:
    """The parts read back as one stream."""

    def __init__(self, parts: list[Path]) -> None:
        self._parts, self._file = iter(parts), None

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._file is None:
                following = next(self._parts, None)
                if following is None:
                    break
                self._file = open(following, "rb")  # noqa: SIM115  (closed when it is used up)
            data = self._file.read(-1 if size < 0 else size - len(out))
            if not data:
                self._file.close()
                self._file = None
                continue
            out += data
        return bytes(out)


def unpack(folder: Path, root: Path) -> list[str]:
    """Check and unpack the parts of `folder` into `root`; returns the names written."""
    manifest_path = folder / "carry.json"
    if not manifest_path.is_file():
        raise CarryError(f"{manifest_path} is missing: it travels with the last part")
    manifest = json.loads(manifest_path.read_text())
    parts = []
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.is_file():
            raise CarryError(f"{path} is missing (part {len(parts) + 1} of {len(manifest['parts'])})")
        if path.stat().st_size != part["bytes"] or sha256(path) != part["sha256"]:
            raise CarryError(f"{path} is damaged (size or SHA-256 differs from carry.json): carry it again")
        parts.append(path)
    written = []
    with lzma.LZMAFile(Joined(parts)) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        for info in tar:
            name = info.name
            if not info.isfile() or not name.startswith(PREFIXES) or ".." in Path(name).parts:
                raise CarryError(f"refusing member {name!r}: only files under {', '.join(PREFIXES)}")
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(info)
            with open(target, "wb") as fh:
                while block := source.read(1 << 20):            # type: ignore[union-attr]
                    fh.write(block)
            target.chmod(info.mode | 0o600)
            written.append(name)
    return written


def tree_bytes(root: Path) -> int:
    """What the working tree weighs when it travels: the files git tracks or would track."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=False).stdout.decode().split("\0")
    return sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())


def plan(manifest: dict, out: Path, tree: int, transfer_bytes: int) -> list[str]:
    """The steps to follow, as printed: which part in which transfer, then what to run on the target."""
    parts = manifest["parts"]
    rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    smallest = min(range(len(parts)), key=lambda i: parts[i]["bytes"])
    with_tree = smallest if parts[smallest]["bytes"] + tree <= transfer_bytes else None
    lines = [(f"{manifest['wheel']} (CUDA {manifest['cuda']}) and {len(manifest['models'])} model files in "
             f"{len(parts)} parts, {sum(p['bytes'] for p in parts) / MB:.1f} MB:")]
    for i, part in enumerate(parts):
        extra = f" + {rel}/carry.json + the working tree ({tree / MB:.1f} MB)" if i == with_tree else ""
        lines.append(f"  transfer {i + 1}: {rel}/{part['name']} ({part['bytes'] / MB:.1f} MB){extra}")
    if with_tree is None:
        lines.append(f"  transfer {len(parts) + 1}: {rel}/carry.json + the working tree ({tree / MB:.1f} MB)")
    lines += ["On the target, in the checkout (no network; nothing is installed):",
              (f"  python3 benchmarks/gpu_carry.py unpack --dir {rel}   # checks the parts, unpacks onnxruntime-gpu "
              "into .gpu/site and the model files into models/"),
              "  PYTHONPATH=$PWD/.gpu/site:$PWD make gpu-check PYTHON=python3"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packer = sub.add_parser("pack", help="download and split (here)")
    packer.add_argument("--python", default="3.12", help="the target's Python, e.g. 3.12 (onnxruntime-gpu: ≥ 3.11)")
    packer.add_argument("--cuda", default="13", help="the CUDA major of the target's libraries")
    packer.add_argument("--wheel", type=Path, help="an onnxruntime-gpu wheel already here (no download)")
    packer.add_argument("--part-mb", type=float, default=60, help="largest part in MB (default 60)")
    packer.add_argument("--transfer-mb", type=float, default=64 * 1.048576, help="largest transfer in MB (64 MiB)")
    packer.add_argument("--preset", type=int, default=9, help="xz preset (9: ~0.7 GB of memory while packing)")
    packer.add_argument("--out", type=Path, default=ROOT / ".gpu")
    unpacker = sub.add_parser("unpack", help="check and unpack (on the target)")
    unpacker.add_argument("--dir", type=Path, default=ROOT / ".gpu" / "carry")
    args = parser.parse_args()
    try:
        if args.command == "unpack":
            names = unpack(args.dir, ROOT)
            print(f"unpacked {len(names)} files into {ROOT / '.gpu' / 'site'} and {ROOT / 'models'}")
            return
        if tuple(int(x) for x in args.python.split(".")[:2]) < (3, 11):
            raise CarryError(f"onnxruntime-gpu 1.31 has no wheel for Python {args.python} (3.11 or newer)")
        wheel = args.wheel or download(args.python, args.out / "wheel")
        cuda = wheel_cuda(wheel)
        if cuda is None or cuda.split(".")[0] != str(args.cuda):
            raise CarryError(f"{wheel.name} is built for CUDA {cuda or 'none'}, not CUDA {args.cuda}: PyPI's "
                             "onnxruntime-gpu 1.31 is the CUDA 13 build; for another, pass its wheel with --wheel")
        manifest = pack(wheel, built_models(ROOT), args.out / "carry", int(args.part_mb * MB), args.preset)
        print("\n".join(plan(manifest, args.out / "carry", tree_bytes(ROOT), int(args.transfer_mb * MB))))
    except (CarryError, OSError, zipfile.BadZipFile, lzma.LZMAError, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
