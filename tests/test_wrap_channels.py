"""`toolkit wrap --channels bgr`: --mean and --std are R,G,B whatever channel order the model wants.

A BGR model is an RGB model whose first layer reads its channels in reverse order. Wrapped with the
same R,G,B statistics, the two must give the same logits on the same images; a wrapper that applied
the statistics in the model's channel order would normalise blue with red's mean and differ.
"""

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import foreign_classifier
from toolkit.cli import app

runner = CliRunner(env={"COLUMNS": "200"})
# Deliberately far from symmetric, so that reversed statistics change every channel.
MEAN, STD = (0.60, 0.45, 0.20), (0.15, 0.25, 0.35)


def classifier(path, first_conv: np.ndarray, layout: str) -> None:
    """Conv → Relu → global pool → Gemm on a float 16×16 input in `layout`, with the given first-layer
    weights and the same other weights whatever they are."""
    foreign_classifier(path, layout, size=(16, 16), classes=5, seed=1, first_conv=first_conv)


def image_folder(path, n: int = 12):
    path.mkdir()
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(path / f"{i:02d}.png")
    return path, pixels


def logits(path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": pixels})[0]


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_bgr_twin_wrapped_with_rgb_statistics_matches_the_rgb_model(tmp_path, layout):
    weights = np.random.default_rng(0).normal(0, 0.5, (8, 3, 3, 3))
    classifier(tmp_path / "rgb.onnx", weights, layout)
    classifier(tmp_path / "bgr.onnx", weights[:, ::-1], layout)     # its input channel 0 is blue
    images, pixels = image_folder(tmp_path / "images")
    stats = ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), "--images", str(images),
             "--labels", "a,b,c,d,e"]
    for name, extra in (("rgb", []), ("bgr", ["--channels", "bgr"])):
        result = runner.invoke(app, ["wrap", str(tmp_path / f"{name}.onnx"), "--out",
                                     str(tmp_path / f"{name}-wrapped.onnx"), *stats, *extra])
        assert result.exit_code == 0, result.output

    rgb, bgr = logits(tmp_path / "rgb-wrapped.onnx", pixels), logits(tmp_path / "bgr-wrapped.onnx", pixels)
    np.testing.assert_allclose(bgr, rgb, rtol=1e-6, atol=1e-6)


def test_bgr_twin_wrapped_through_the_api_matches_the_rgb_model(tmp_path):
    from toolkit import wrap

    weights = np.random.default_rng(3).normal(0, 0.5, (8, 3, 3, 3))
    classifier(tmp_path / "rgb.onnx", weights, "nchw")
    classifier(tmp_path / "bgr.onnx", weights[:, ::-1], "nchw")
    _, pixels = image_folder(tmp_path / "images")
    wrap(tmp_path / "rgb.onnx", tmp_path / "rgb-wrapped.onnx", mean=MEAN, std=STD, images=pixels)
    wrap(tmp_path / "bgr.onnx", tmp_path / "bgr-wrapped.onnx", channels="bgr", mean=MEAN, std=STD, images=pixels)
    np.testing.assert_allclose(logits(tmp_path / "bgr-wrapped.onnx", pixels),
                               logits(tmp_path / "rgb-wrapped.onnx", pixels), rtol=1e-6, atol=1e-6)
