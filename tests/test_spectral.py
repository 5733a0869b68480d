"""Spectral ops: the numpy math against numpy.fft / scipy.linalg.hadamard, the torch modules and
the torch-free ONNX graphs of both forms against the float64 reference on sizes with odd, even,
non-power-of-two and non-square sides, the in-graph low-pass mask against the float64 rule
(ties included), the contract of the written files and the gate."""

import json
import math

import numpy as np
import onnx
import pytest
import scipy.linalg
import torch

from toolkit.edge.contract import ExportError, check_contract
from toolkit.edge.spectral import graphs as spectral_graphs
from toolkit.edge.spectral import ops, transforms
from toolkit.edge.spectral.transforms import run_onnx
from toolkit.pytorch.nets.spectral import (
    FFTLowpass,
    FFTSpectrum,
    InverseWalshHadamard2d,
    WalshCompress,
    WalshHadamard2d,
    transform_module,
)

# Odd, even, prime, non-power-of-two and non-square; 48×40 and 20×30 put bins exactly on the
# cut-off at radius 0.3, 1×1 and 1×5 are degenerate.
SIZES = [(32, 32), (48, 40), (20, 30), (33, 17), (7, 9), (8, 5), (1, 5), (1, 1)]
RADII = [0.1, 0.3, 0.5, 1.0]
WALSH_SIZES = [(32, 32), (16, 64), (8, 4), (1, 2)]
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
    return np.round(unrounded_walsh_compress(images, keep))


def unrounded_walsh_compress(images, keep):
    """255·y before rounding: block means of whole grey levels often fall exactly on .5, where
    float64 rounding order alone decides the side, so exactness is 'a nearest integer'."""
    x = images / 255.0
    h, w = x.shape[1:3]
    s_h, s_w = scipy_sequency_hadamard(h), scipy_sequency_hadamard(w)
    coefficients = np.einsum("ha,nawc,bw->nhbc", s_h, x, s_w)
    coefficients[:, math.ceil(keep * h):] = 0
    coefficients[:, :, math.ceil(keep * w):] = 0
    y = np.einsum("ha,nhbc,bw->nawc", s_h, coefficients, s_w)
    return np.clip(255 * y, 0, 255)


def grey_levels(a, b):
    return int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))


def check_output(op, params, out, images):
    """≤ 1 grey level for the image ops; 1e-4 relative (1e-5 absolute) for the spectrum."""
    assert out.shape == images.shape
    if op == "fft-spectrum":
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected_spectrum(images), rtol=1e-4, atol=1e-5)
    elif op == "fft-lowpass":
        assert out.dtype == np.uint8 and grey_levels(out, expected_lowpass(images, params["radius"])) <= 1
    else:
        assert out.dtype == np.uint8 and grey_levels(out, expected_walsh_compress(images, params["keep"])) <= 1


# ----------------------------------------------------------------------------- bases and references

@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 64])
def test_sequency_hadamard_is_scipys_sorted_by_sign_changes(n):
    s = ops.sequency_hadamard(n)
    np.testing.assert_array_equal(s, scipy_sequency_hadamard(n))
    np.testing.assert_allclose(s @ s.T, np.eye(n), atol=1e-12)
    assert [int((np.diff(np.sign(row)) != 0).sum()) for row in s] == list(range(n))


@pytest.mark.parametrize("n", [0, 3, 12, 33])
def test_sequency_hadamard_refuses_other_sizes(n):
    with pytest.raises(ValueError, match="power-of-two"):
        ops.sequency_hadamard(n)


@pytest.mark.parametrize("n", [1, 5, 8, 17, 32])
def test_fourier_bases_are_orthonormal(n):
    k = ops.hartley_matrix(n)
    np.testing.assert_allclose(k, k.T, atol=1e-12)
    np.testing.assert_allclose(k @ k, np.eye(n), atol=1e-12)          # symmetric and its own inverse
    cos, sin = ops.fourier_matrices(n)
    f = cos - 1j * sin
    np.testing.assert_allclose(f @ f.conj().T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(f, np.fft.fftshift(np.fft.fft(np.eye(n), norm="ortho"), axes=0), atol=1e-12)


@pytest.mark.slow
def test_numpy_references_are_the_guides_definitions():
    for size in SIZES:
        images = random_images(size)
        for radius in RADII:
            np.testing.assert_array_equal(ops.reference_lowpass(images, radius), expected_lowpass(images, radius))
        np.testing.assert_allclose(ops.reference_spectrum(images), expected_spectrum(images), rtol=1e-12)
    for size in WALSH_SIZES:
        images = random_images(size)
        for keep in KEEPS:
            nearest = np.abs(ops.reference_walsh_compress(images, keep) - unrounded_walsh_compress(images, keep))
            assert nearest.max() <= 0.5 + 1e-9


def test_lowpass_keeps_flat_images_and_a_tiny_radius_keeps_only_the_mean():
    flat = np.broadcast_to(np.array([10, 128, 250], dtype=np.uint8), (1, 16, 12, 3))
    for radius in RADII:
        np.testing.assert_array_equal(ops.reference_lowpass(flat, radius), flat)
    mean = ops.reference_lowpass(random_images((16, 12)), 1e-3)
    assert np.ptp(mean.astype(int), axis=(1, 2)).max() <= 1                 # only the DC bin survives


def test_the_threshold_is_the_float64_product():
    # 6/40 cycles per pixel lies on the circle at radius 0.3: the float64 rule drops it, a float32
    # threshold (0.15000001) keeps it. This is what put the old dft form 4–28 grey levels off.
    assert ops.lowpass_threshold(0.3) == 0.3 * 0.5 < float(np.float32(0.15))
    assert not ops.lowpass_mask(1, 40, 0.3)[0, 6] and ops.lowpass_mask(1, 40, 0.3)[0, 5]


# ----------------------------------------------------------------------------- torch modules, both forms

@pytest.mark.parametrize("form", ["dft", "matmul"])
@pytest.mark.parametrize("size", [s for s in SIZES if min(s) >= 2])
def test_torch_lowpass_matches_numpy_within_one_grey_level(form, size):
    images = random_images(size)
    for radius in RADII:
        out = FFTLowpass(radius, form, size)(torch.from_numpy(images)).numpy()
        check_output("fft-lowpass", {"radius": radius}, out, images)


@pytest.mark.parametrize("form", ["dft", "matmul"])
@pytest.mark.parametrize("size", [s for s in SIZES if min(s) >= 2])
def test_torch_spectrum_matches_numpy_to_1e4_relative(form, size):
    images = random_images(size)
    check_output("fft-spectrum", {}, FFTSpectrum(form, size)(torch.from_numpy(images)).numpy(), images)


@pytest.mark.parametrize("size", WALSH_SIZES)
def test_torch_walsh_compress_matches_scipy_within_one_grey_level(size):
    images = random_images(size)
    for keep in KEEPS:
        out = WalshCompress(keep, size)(torch.from_numpy(images)).numpy()
        check_output("walsh-compress", {"keep": keep}, out, images)
    np.testing.assert_array_equal(WalshCompress(1.0, size)(torch.from_numpy(images)).numpy(), images)


@pytest.mark.parametrize("size", WALSH_SIZES)
def test_walsh_hadamard_is_orthonormal_and_invertible(size):
    x = torch.rand(2, 3, *size, dtype=torch.float32)
    coefficients = WalshHadamard2d(size)(x)
    torch.testing.assert_close(coefficients.square().sum((-2, -1)), x.square().sum((-2, -1)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(InverseWalshHadamard2d(size)(coefficients), x, rtol=0, atol=1e-5)
    expected = ops.reference_walsh(x.permute(0, 2, 3, 1).double().numpy())
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


def test_transform_module_is_uint8_nhwc_for_fusion():
    images = torch.from_numpy(random_images((32, 32)))
    for op, params in [("fft-lowpass", {"radius": 0.5}), ("walsh-compress", {"keep": 0.5})]:
        out = transform_module(op, params, "matmul", (32, 32))(images)
        assert out.dtype == torch.uint8 and out.shape == images.shape
    with pytest.raises(ops.TransformError, match="only the matmul form"):
        transform_module("walsh-compress", {"keep": 0.5}, "dft")
    with pytest.raises(ops.TransformError, match="takes 'radius'"):
        transform_module("fft-lowpass", {"keep": 0.5}, "dft")


# ----------------------------------------------------------------------------- parameters and limits

def test_parse_preprocess():
    assert ops.parse_preprocess("fft-lowpass:0.5") == ("fft-lowpass", {"radius": 0.5})
    assert ops.parse_preprocess("walsh-compress:0.25") == ("walsh-compress", {"keep": 0.25})
    for bad in ["fft-lowpass", "fft-lowpass:", "fft-lowpass:abc", "fft-lowpass:1.5", "walsh-compress:0",
                "fft-spectrum:0.5", "blur:0.5", ""]:
        with pytest.raises(ValueError):
            ops.parse_preprocess(bad)


@pytest.mark.parametrize("op,form,size,message", [
    ("fft-lowpass", "matmul", (10000, 1), "limit of 2048 px per side"),
    ("fft-spectrum", "matmul", (16, 2049), "limit of 2048 px per side"),
    ("fft-lowpass", "dft", (2049, 2049), "limit of 4,194,304 pixels"),
    ("walsh-compress", "matmul", (24, 32), "power-of-two"),
    ("fft-lowpass", "dft", (0, 5), "positive"),
])
def test_sizes_over_the_limits_are_refused_before_building(op, form, size, message):
    params = {ops.OP_PARAMETER[op]: 0.5} if ops.OP_PARAMETER[op] else {}
    with pytest.raises(ops.TransformError, match=message):
        transforms.cached_transform(op, params, form, size)


def test_limits_admit_what_they_state():
    ops.check_size("fft-lowpass", "matmul", (2048, 2048))
    ops.check_size("fft-lowpass", "dft", (10000, 1))
    ops.check_size("fft-spectrum", "dft", (8192, 512))


# ----------------------------------------------------------------------------- ONNX graphs

CASES = [("fft-lowpass", {"radius": 0.3}, "dft"), ("fft-lowpass", {"radius": 0.3}, "matmul"),
         ("fft-spectrum", {}, "dft"), ("fft-spectrum", {}, "matmul"), ("walsh-compress", {"keep": 0.5}, "matmul")]


@pytest.mark.parametrize("op,params,form", CASES)
def test_onnxruntime_matches_the_float64_reference_on_every_size(op, params, form):
    sizes = WALSH_SIZES if op == "walsh-compress" else SIZES
    for size in sizes:
        path = transforms.cached_transform(op, params, form, size)
        images = np.concatenate([random_images(size, n=2, seed=1), transforms.parity_images(size, n=0)])
        check_output(op, params, run_onnx(path, images), images)


@pytest.mark.slow
@pytest.mark.parametrize("radius", [0.3, 0.1, 0.2, 0.5, 0.6, 0.7, 1.0])
def test_dft_mask_agrees_with_the_float64_rule_on_every_size(radius):
    import onnxruntime as ort

    model = spectral_graphs.build_graph("fft-lowpass", {"radius": radius}, "dft", None)
    mask = next(n.output[0] for n in model.graph.node if n.op_type == "LessOrEqual")
    model.graph.output.append(onnx.helper.make_tensor_value_info(mask, onnx.TensorProto.BOOL, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for h in range(1, 65):
        for w in (1, 2, 3, 5, 20, 30, 40, 41, 64, h):
            got = session.run([mask], {"image": np.zeros((1, h, w, 3), np.uint8)})[0]
            np.testing.assert_array_equal(got, ops.lowpass_mask(h, w, radius), err_msg=f"{h}×{w}")


def test_dft_form_is_exact_where_it_was_four_grey_levels_off():
    """Issue 11: --form dft --op fft-lowpass --radius 0.3 on 48×40 was up to 4 grey levels off."""
    path = transforms.cached_transform("fft-lowpass", {"radius": 0.3}, "dft", (48, 40))
    for size in [(48, 40), (20, 30), (24, 40), (40, 48)]:
        images = random_images(size, n=8, seed=3)
        assert grey_levels(run_onnx(path, images), ops.reference_lowpass(images, 0.3)) <= 1, size


@pytest.mark.parametrize("op,params,form", CASES)
def test_exported_transform_meets_the_contract(op, params, form):
    model = onnx.load(str(transforms.cached_transform(op, params, form, (32, 32))))
    check_contract(model)
    assert not model.graph.initializer or all(t.data_location != onnx.TensorProto.EXTERNAL
                                              for t in model.graph.initializer)
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


def test_export_writes_a_gated_file_and_a_failing_gate_leaves_none(tmp_path, monkeypatch):
    path = transforms.export_transform("fft-lowpass", {"radius": 0.3}, "dft", (48, 40), tmp_path / "lp.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["lp.onnx"]
    check_output("fft-lowpass", {"radius": 0.3}, run_onnx(path, random_images((48, 40))), random_images((48, 40)))
    monkeypatch.setitem(transforms.PARITY_LIMIT, "walsh-compress", -1.0)
    with pytest.raises(ExportError, match="differs from the float64 reference"):
        transforms.export_transform("walsh-compress", {"keep": 0.5}, "matmul", (8, 8), tmp_path / "walsh.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["lp.onnx"]


@pytest.mark.parametrize("name,op,params", [("fft_lowpass", "fft-lowpass", {"radius": 0.5}),
                                            ("walsh_compress", "walsh-compress", {"keep": 0.5})])
def test_shipped_transforms(name, op, params):
    from toolkit.zoo import MODELS_DIR
    path = MODELS_DIR / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not built (make models)")
    model = onnx.load(str(path))
    check_contract(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.op"] == op and json.loads(meta["toolkit.params"]) == params
    assert "DFT" not in {node.op_type for node in model.graph.node}
    images = random_images((32, 32), n=2, seed=1)
    check_output(op, params, run_onnx(path, images), images)
