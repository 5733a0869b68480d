"""DCGAN: shapes, parameter count, a training step, export parity, `generate` determinism."""

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from toolkit.cli import app

runner = CliRunner(env={"COLUMNS": "200"})
# Every test here builds, trains or exports the DCGAN with torch (seconds to a minute each on 2 cores).
pytestmark = pytest.mark.slow


def test_generator_and_discriminator_shapes_and_size():
    import torch

    from toolkit.pytorch.nets.dcgan import Discriminator, Generator
    g, d = Generator(), Discriminator()
    assert sum(p.numel() for p in g.parameters()) == 3_576_704
    x = g(torch.randn(3, 100))
    assert x.shape == (3, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


def test_training_step_writes_weights_samples_and_resumes(tmp_path):
    from toolkit.pytorch.checkpoint import load_tensors
    from toolkit.pytorch.train_gan import train_gan
    from toolkit.recipes import GanConfig
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):                       # any size: resized to 64×64
        Image.fromarray(rng.integers(0, 255, (48 + i, 40, 3), dtype=np.uint8)).save(faces / f"{i:03d}.png")
    cfg = GanConfig(data=str(faces), epochs=1, batch_size=4, holdout=0, ema=0.99, bn_batches=2,
                    samples_dir=str(tmp_path / "samples"))
    out = tmp_path / "g.safetensors"
    train_gan(cfg, out)
    assert (tmp_path / "samples" / "epoch_001.png").exists() and (tmp_path / "samples" / "epoch_001_ema.png").exists()
    tensors, meta = load_tensors(out)
    assert meta["model"] == "dcgan" and any(k.startswith("model.main") for k in tensors)
    cfg.epochs = 2
    summary = train_gan(cfg, out, resume=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


@pytest.fixture(scope="module")
def fresh_generator(tmp_path_factory):
    import torch

    import toolkit.zoo as zoo
    from toolkit.pytorch.checkpoint import atomic_save_tensors
    from toolkit.pytorch.checkpoint import prefixed as _prefixed
    from toolkit.pytorch.export import export_generator

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gen")
    weights = folder / "g.safetensors"
    atomic_save_tensors(_prefixed("model", zoo.DCGAN.build().eval().state_dict()), weights, {})
    info = export_generator(folder / "dcgan.onnx", weights, log=lambda *_: None)
    assert info.facts["max_pixel_diff"] <= 1
    return folder / "dcgan.onnx"


def test_generator_export_meets_the_contract(fresh_generator):
    model = onnx.load(str(fresh_generator))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.task"] == "generate" and meta["toolkit.latent_dim"] == "100"
    (z,), (image,) = model.graph.input, model.graph.output
    assert z.name == "z" and z.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in image.type.tensor_type.shape.dim[1:]] == [64, 64, 3]


def test_generate_is_deterministic_and_writes_pngs(tmp_path, fresh_generator):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        result = runner.invoke(app, ["generate", "--model", str(fresh_generator), "--n", "6", "--seed", str(seed),
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
    grid_a, grid_b, grid_c = (np.asarray(Image.open(p)) for p in (a, b, c))
    assert grid_a.shape == (2 + 2 * 66, 2 + 3 * 66, 3)
    assert (grid_a == grid_b).all() and not (grid_a == grid_c).all()
    result = runner.invoke(app, ["generate", "--model", str(fresh_generator), "--n", "3", "--out-dir",
                                 str(tmp_path / "many")])
    assert result.exit_code == 0 and len(list((tmp_path / "many").glob("*.png"))) == 3


def test_generate_refuses_a_classifier(tmp_path, fresh_onnx):
    result = runner.invoke(app, ["generate", "--model", str(fresh_onnx), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "generate" in result.stderr and not (tmp_path / "x.png").exists()
