"""Property-based tests (hypothesis) for the two parsers that read untrusted bytes: the image
decoder and ONNX loading. Whatever the bytes — random, truncated or mutated real files, headers
that lie about their size, mutated protobufs of a tiny model — the answer is a result or one
one-line error of the documented type: never another exception (a traceback), never a hang (a
per-example deadline), never more memory than stated (measured in a child process, whose peak
RSS no other test has touched).

Stated memory bound: decoding one input costs at most 16 bytes per pixel of the pixel limit
(`data.MAX_PIXELS`) on top of the process, whatever its header claims; the child checks it with
the limit set to 4 Mpx, i.e. ≤ 64 MB of peak RSS for the whole hostile set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests import helpers
from tests.helpers import REPO
from toolkit.cli import app
from toolkit.edge.contract import ModelFileError, inspect_model
from toolkit.edge.data.images import ImageError, decode_image
from toolkit.edge.runtime import ModelError, ProviderError, open_model

FAST = settings(max_examples=60, deadline=timedelta(seconds=3), database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MEMORY_BOUND_BYTES = 64 * 2**20
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
          b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b"P5\n"]


ENCODED = helpers.encoded_images()


def check_decode(blob: bytes) -> None:
    """The property: an RGB uint8 image or an ImageError with a one-line message."""
    try:
        image = decode_image(blob, "x")
    except ImageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("x: ")
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes(blob):
    check_decode(blob)


@FAST
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_random_bytes_behind_a_real_signature(magic, tail):
    check_decode(magic + tail)


@FAST
@given(st.sampled_from(sorted(ENCODED)), st.floats(0, 1))
def test_truncated_real_files(kind, fraction):
    blob = ENCODED[kind]
    check_decode(blob[: int(len(blob) * fraction)])


@FAST
@given(st.sampled_from(sorted(ENCODED)), st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                            st.integers(0, 255)), min_size=1, max_size=12))
def test_mutated_real_files(kind, edits):
    blob = bytearray(ENCODED[kind])
    for where, value in edits:
        blob[int(where * len(blob))] = value
    check_decode(bytes(blob))


@FAST
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=256))
def test_png_headers_that_lie_about_their_size(width, height, payload):
    check_decode(helpers.png_claiming(width, height, payload))


@pytest.mark.slow
def test_decoding_hostile_inputs_stays_within_the_stated_memory():
    """In a fresh process: the peak RSS that decoding adds over a set of hostile inputs — headers
    claiming just under and far over the pixel limit in several formats, and 300 seeded random
    mutations of real files — stays under MEMORY_BOUND_BYTES with the limit at 4 Mpx."""
    child = f"""
import resource, sys, io, struct
import numpy as np
sys.path.insert(0, {str(REPO)!r})
from toolkit.edge.data import images as data
from tests.helpers import encoded_images, png_claiming
data.MAX_PIXELS = 4_000_000
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def attempt(blob):
    try:
        data.decode_image(blob, "x")
    except data.ImageError:
        pass
ENCODED = encoded_images()
attempt(ENCODED["png"])
base = peak()
blobs = [png_claiming(w, h, b"\\0" * 64) for w, h in ((1999, 2000), (4000, 999), (70000, 70000), (1, 3999999))]
jpeg = ENCODED["jpeg-progressive"]
sof = jpeg.find(b"\\xff\\xc2")
for h, w in ((1999, 2000), (65000, 65000)):
    blobs.append(jpeg[:sof + 5] + struct.pack(">HH", h, w) + jpeg[sof + 9:])
gif = bytearray(ENCODED["gif"]); gif[6:10] = struct.pack("<HH", 1999, 2000); blobs.append(bytes(gif))
bmp = bytearray(ENCODED["bmp"]); bmp[18:26] = struct.pack("<ii", 1999, 2000); blobs.append(bytes(bmp))
rng = np.random.default_rng(1)
for i in range(300):
    blob = bytearray(ENCODED[sorted(ENCODED)[i % len(ENCODED)]])
    for _ in range(1 + i % 8):
        blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
    blobs.append(bytes(blob))
for blob in blobs:
    attempt(blob)
print(peak() - base)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.strip().splitlines()[-1])
    assert grown <= MEMORY_BOUND_BYTES, f"decoding added {grown / 2**20:.0f} MB of peak RSS"


# ----------------------------------------------------------------------------- ONNX loading

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> bytes:
    return helpers.colour_classifier(tmp_path_factory.mktemp("tiny") / "tiny.onnx").read_bytes()


def _mutate(blob: bytes, cut: float, edits: list[tuple[float, int]]) -> bytes:
    out = bytearray(blob[: max(1, int(len(blob) * cut))])
    for where, value in edits:
        out[int(where * len(out))] = value
    return bytes(out)


# Mostly whole files with a few bytes changed (those still parse and reach onnxruntime), some truncated.
MUTATIONS = (st.one_of(st.just(1.0), st.floats(0, 1)),
             st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4))


@FAST
@given(*MUTATIONS)
def test_mutated_onnx_is_loaded_or_refused_in_one_line(tiny_model, tmp_path, cut, edits):
    path = tmp_path / "m.onnx"
    path.write_bytes(_mutate(tiny_model, cut, edits))
    for load, allowed in ((inspect_model, (ModelFileError,)), (open_model, (ModelError, ProviderError))):
        try:
            load(path)
        except allowed as exc:
            assert "\n" not in str(exc)


@pytest.mark.slow
@settings(FAST, max_examples=30)
@given(*MUTATIONS)
def test_mutated_onnx_through_info_and_infer_never_tracebacks(tiny_model, tmp_path, cut, edits):
    path = tmp_path / "m.onnx"
    path.write_bytes(_mutate(tiny_model, cut, edits))
    helpers.image(tmp_path / "x.png")
    for args in (["info", path], ["infer", tmp_path / "x.png", "--model", path, "--json"]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code in (0, 1)
        assert all(line.startswith("error:") for line in result.stderr.splitlines()), result.stderr
        if args[0] == "infer" and result.exit_code == 0:
            assert json.loads(result.stdout, parse_constant=pytest.fail)["top"]

