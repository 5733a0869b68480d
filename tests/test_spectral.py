"""Spectral layers: exactness of both forms against numpy.fft / scipy.linalg.hadamard, the
transforms' algebra, and the exported ONNX files (contract, no DFT in the matmul form, gate)."""

import json
import math

import numpy as np
import onnx
import pytest
import scipy.linalg
import torch

from toolkit.core import transforms
from toolkit.build.export import ExportError, check_contract, run_onnx
from toolkit.build.nets.spectral import (FFTLowpass, FFTSpectrum, InverseWalshHadamard2d, WalshCompress,
                                   WalshHadamard2d, fourier_matrices, hartley_matrix)

SIZES = [(32, 32), (20, 32), (33, 17), (8, 5)]
RADII = [0.1, 0.3, 0.5, 1.0]
WALSH_SIZES = [(32, 32), (16, 64), (8, 4)]
KEEPS = [0.1, 0.25, 0.5, 1.0]


@pytest.fixture(autouse=True)
def transform_cache(tmp_path_factory, monkeypatch):
    """One cache of built transform graphs for the whole session (shared with the CLI tests)."""
    path = tmp_path_factory.getbasetemp() / "transform-cache"
    monkeypatch.setenv("TOOLKIT_CACHE", str(path))
    return path


def random_images(size, n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- independent references

def scipy_sequency_hadamard(n):
    h = scipy.linalg.hadamard(n).astype(np.float64)
    changes = [(np.diff(row) != 0).sum() for row in h]
    return h[np.argsort(changes)] / math.sqrt(n)


def expected_lowpass(images, radius):
    x = images / 255.0
    h, w = x.shape[1:3]
    keep = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]) <= radius / 2
    y = np.fft.irfft2(np.fft.rfft2(x, axes=(1, 2), norm="ortho") * keep[None, :, :, None],
                      s=(h, w), axes=(1, 2), norm="ortho")
    return np.round(np.clip(255 * y, 0, 255))


def expected_spectrum(images):
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(images / 255.0, axes=(1, 2), norm="ortho"), axes=(1, 2))))


def expected_walsh_compress(images, keep):
    x = images / 255.0
    h, w = x.shape[1:3]
    s_h, s_w = scipy_sequency_hadamard(h), scipy_sequency_hadamard(w)
    coefficients = np.einsum("ha,nawc,bw->nhbc", s_h, x, s_w)
    coefficients[:, math.ceil(keep * h):] = 0
    coefficients[:, :, math.ceil(keep * w):] = 0
    y = np.einsum("ha,nhbc,bw->nawc", s_h, coefficients, s_w)
    return np.round(np.clip(255 * y, 0, 255))


def grey_levels(a, b):
    return int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))


# ----------------------------------------------------------------------------- bases and references

@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 64])
def test_sequency_hadamard_is_scipys_sorted_by_sign_changes(n):
    s = transforms.sequency_hadamard(n)
    np.testing.assert_array_equal(s, scipy_sequency_hadamard(n))
    np.testing.assert_allclose(s @ s.T, np.eye(n), atol=1e-12)
    assert [int((np.diff(np.sign(row)) != 0).sum()) for row in s] == list(range(n))


@pytest.mark.parametrize("n", [0, 3, 12, 33])
def test_sequency_hadamard_refuses_other_sizes(n):
    with pytest.raises(ValueError, match="power-of-two"):
        transforms.sequency_hadamard(n)


@pytest.mark.parametrize("n", [1, 5, 8, 17, 32])
def test_fourier_bases_are_orthonormal(n):
    k = hartley_matrix(n)
    np.testing.assert_allclose(k, k.T, atol=1e-12)
    np.testing.assert_allclose(k @ k, np.eye(n), atol=1e-12)          # symmetric and its own inverse
    cos, sin = fourier_matrices(n)
    f = cos - 1j * sin
    np.testing.assert_allclose(f @ f.conj().T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(f, np.fft.fftshift(np.fft.fft(np.eye(n), norm="ortho"), axes=0), atol=1e-12)


def test_numpy_references_are_the_guides_definitions():
    for size in SIZES:
        images = random_images(size)
        for radius in RADII:
            np.testing.assert_array_equal(transforms.reference_lowpass(images, radius), expected_lowpass(images, radius))
        np.testing.assert_allclose(transforms.reference_spectrum(images), expected_spectrum(images), rtol=1e-12)
    for size in WALSH_SIZES:
        images = random_images(size)
        for keep in KEEPS:
            assert grey_levels(transforms.reference_walsh_compress(images, keep), expected_walsh_compress(images, keep)) == 0


def test_lowpass_keeps_flat_images_and_a_tiny_radius_keeps_only_the_mean():
    flat = np.broadcast_to(np.array([10, 128, 250], dtype=np.uint8), (1, 16, 12, 3))
    for radius in RADII:
        np.testing.assert_array_equal(transforms.reference_lowpass(flat, radius), flat)
    mean = transforms.reference_lowpass(random_images((16, 12)), 1e-3)
    assert np.ptp(mean.astype(int), axis=(1, 2)).max() <= 1                 # only the DC bin survives


# ----------------------------------------------------------------------------- torch modules, both forms

@pytest.mark.parametrize("form", ["dft", "matmul"])
@pytest.mark.parametrize("size", SIZES)
def test_lowpass_matches_numpy_within_one_grey_level(form, size):
    images = random_images(size)
    for radius in RADII:
        out = FFTLowpass(radius, form, size)(torch.from_numpy(images)).numpy()
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert grey_levels(out, expected_lowpass(images, radius)) <= 1, (radius, form, size)


@pytest.mark.parametrize("form", ["dft", "matmul"])
@pytest.mark.parametrize("size", SIZES)
def test_spectrum_matches_numpy_to_1e4_relative(form, size):
    images = random_images(size)
    out = FFTSpectrum(form, size)(torch.from_numpy(images)).numpy()
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, expected_spectrum(images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", WALSH_SIZES)
def test_walsh_compress_matches_scipy_within_one_grey_level(size):
    images = random_images(size)
    for keep in KEEPS:
        out = WalshCompress(keep, size)(torch.from_numpy(images)).numpy()
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert grey_levels(out, expected_walsh_compress(images, keep)) <= 1, (keep, size)
    np.testing.assert_array_equal(WalshCompress(1.0, size)(torch.from_numpy(images)).numpy(), images)


@pytest.mark.parametrize("size", WALSH_SIZES)
def test_walsh_hadamard_is_orthonormal_and_invertible(size):
    x = torch.rand(2, 3, *size, dtype=torch.float32)
    coefficients = WalshHadamard2d(size)(x)
    torch.testing.assert_close(coefficients.square().sum((-2, -1)), x.square().sum((-2, -1)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(InverseWalshHadamard2d(size)(coefficients), x, rtol=0, atol=1e-5)
    expected = transforms.reference_walsh(x.permute(0, 2, 3, 1).double().numpy())
    np.testing.assert_allclose(coefficients.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    # Sequency order: a constant image has only the (0, 0) coefficient.
    flat = WalshHadamard2d(size)(torch.ones(1, 1, *size))
    assert flat[0, 0, 0, 0] == pytest.approx(math.sqrt(size[0] * size[1]), rel=1e-6)
    assert float(flat.abs().sum() - flat[0, 0, 0, 0]) < 1e-4


def test_modules_refuse_bad_parameters():
    with pytest.raises(ValueError, match="radius"):
        FFTLowpass(0.0)
    with pytest.raises(ValueError, match="fixed size"):
        FFTLowpass(0.5, "matmul")
    with pytest.raises(ValueError, match="form"):
        FFTSpectrum("fast")
    with pytest.raises(ValueError, match="power-of-two"):
        WalshCompress(0.5, (32, 24))


# ----------------------------------------------------------------------------- parameters

def test_parse_preprocess():
    assert transforms.parse_preprocess("fft-lowpass:0.5") == ("fft-lowpass", {"radius": 0.5})
    assert transforms.parse_preprocess("walsh-compress:0.25") == ("walsh-compress", {"keep": 0.25})
    for bad in ["fft-lowpass", "fft-lowpass:", "fft-lowpass:abc", "fft-lowpass:1.5", "walsh-compress:0",
                "fft-spectrum:0.5", "blur:0.5", ""]:
        with pytest.raises(ValueError):
            transforms.parse_preprocess(bad)


def test_transform_module_is_uint8_nhwc_for_fusion():
    images = torch.from_numpy(random_images((32, 32)))
    for op, params in [("fft-lowpass", {"radius": 0.5}), ("walsh-compress", {"keep": 0.5})]:
        module = transforms.transform_module(op, params, "matmul", (32, 32))
        out = module(images)
        assert out.dtype == torch.uint8 and out.shape == images.shape
    with pytest.raises(transforms.TransformError, match="only the matmul form"):
        transforms.transform_module("walsh-compress", {"keep": 0.5}, "dft")
    with pytest.raises(transforms.TransformError, match="takes 'radius'"):
        transforms.transform_module("fft-lowpass", {"keep": 0.5}, "dft")


# ----------------------------------------------------------------------------- ONNX

CASES = [("fft-lowpass", {"radius": 0.5}, "dft"), ("fft-lowpass", {"radius": 0.5}, "matmul"),
         ("fft-spectrum", {}, "dft"), ("fft-spectrum", {}, "matmul"), ("walsh-compress", {"keep": 0.5}, "matmul")]


def built(op, params, form, size=(32, 32)):
    return transforms.cached_transform(op, params, form, size)


def check_onnx_output(op, params, path, size):
    images = random_images(size, n=2, seed=1)
    out = run_onnx(path, images)
    if op == "fft-spectrum":
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected_spectrum(images), rtol=1e-4, atol=1e-5)
    elif op == "fft-lowpass":
        assert grey_levels(out, expected_lowpass(images, params["radius"])) <= 1
    else:
        assert grey_levels(out, expected_walsh_compress(images, params["keep"])) <= 1


@pytest.mark.parametrize("op,params,form", CASES)
def test_exported_transform_meets_the_contract(op, params, form):
    model = onnx.load(str(built(op, params, form)))
    check_contract(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.task"] == "transform" and meta["toolkit.model"] == op and meta["toolkit.op"] == op
    assert meta["toolkit.precision"] == "fp32" and json.loads(meta["toolkit.params"]) == params
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[3].dim_value == 3
    if form == "matmul":
        assert [d.dim_value for d in dims[1:3]] == [32, 32]
    else:
        assert dims[1].dim_param and dims[2].dim_param          # any H×W at run time
    expected_type = onnx.TensorProto.FLOAT if op == "fft-spectrum" else onnx.TensorProto.UINT8
    assert out.type.tensor_type.elem_type == expected_type
    node_types = {node.op_type for node in model.graph.node}
    assert ("DFT" in node_types) == (form == "dft")
    if form == "matmul":
        assert "MatMul" in node_types


@pytest.mark.parametrize("op,params,form", CASES)
def test_onnxruntime_matches_numpy(op, params, form):
    path = built(op, params, form)
    check_onnx_output(op, params, path, (32, 32))
    if form == "dft":
        for size in [(20, 32), (33, 17), (7, 9)]:
            check_onnx_output(op, params, path, size)


def test_matmul_form_is_built_per_size():
    path = built("fft-lowpass", {"radius": 0.3}, "matmul", (24, 40))
    check_onnx_output("fft-lowpass", {"radius": 0.3}, path, (24, 40))


def test_failing_parity_gate_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(transforms.PARITY_LIMIT, "walsh-compress", -1.0)
    out = tmp_path / "walsh.onnx"
    with pytest.raises(ExportError, match="differs from the float64 reference"):
        transforms.export_transform("walsh-compress", {"keep": 0.5}, "matmul", (8, 8), out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,op,params", [("fft_lowpass", "fft-lowpass", {"radius": 0.5}),
                                            ("walsh_compress", "walsh-compress", {"keep": 0.5})])
def test_shipped_transforms(name, op, params):
    from toolkit.zoo import MODELS_DIR
    path = MODELS_DIR / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not shipped")
    model = onnx.load(str(path))
    check_contract(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.op"] == op and json.loads(meta["toolkit.params"]) == params
    assert "DFT" not in {node.op_type for node in model.graph.node}
    check_onnx_output(op, params, path, (32, 32))
