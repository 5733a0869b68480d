"""The training loop: bit-for-bit resume after an interrupt, validation before work, CLI defaults
taken from the config dataclasses, augmentation and schedule arithmetic. Tiny data, a few steps."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import write_class_tree
from toolkit.cli import app
from toolkit.pytorch.checkpoint import load_tensors
from toolkit.pytorch.loop import Interrupted
from toolkit.recipes import ClassifierConfig, GanConfig, ResNetConfig

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("small"), per_class=12)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _stop_at(epoch: int, step: int):
    def on_step(pos):
        if (pos.epoch, pos.step) == (epoch, step):
            raise KeyboardInterrupt
    return on_step


def _same_tensors(a, b) -> None:
    ta, _ = load_tensors(a)
    tb, _ = load_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _train_classifier(*args, **kwargs):
    from toolkit.pytorch.train_classifier import train_classifier
    return train_classifier(*args, quiet=True, **kwargs)


def _train_gan(*args, **kwargs):
    from toolkit.pytorch.train_gan import train_gan
    return train_gan(*args, quiet=True, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [
    ClassifierConfig(data="", epochs=2, batch_size=16, translate=2, ema=0.9),                 # dropout, AdamW, average
    ResNetConfig(data="", epochs=2, batch_size=16, cutout=8),                                  # batch norm, SGD, bf16
], ids=["cifar-cnn", "cifar-resnet"])
def test_classifier_resume_after_interrupt_is_bit_identical(tmp_path, small_tree, cfg):
    cfg = dataclasses.replace(cfg, data=str(small_tree))
    straight, resumed = tmp_path / "straight.safetensors", tmp_path / "resumed.safetensors"
    _train_classifier(cfg, straight)
    with pytest.raises(Interrupted, match="epoch 2, step 3"):
        _train_classifier(cfg, resumed, on_step=_stop_at(1, 3))          # mid-epoch
    assert not resumed.exists()
    summary = _train_classifier(cfg, resumed, resume=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    _same_tensors(straight, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"loss": "hinge", "spectral_norm": True, "lr_d": 4e-4}],
                         ids=["paper", "hinge-spectral"])
def test_gan_resume_after_interrupt_is_bit_identical(tmp_path, faces, extra):
    # The spectral norm's power-iteration vectors are state too: they must travel in the checkpoint.
    cfg = GanConfig(data=str(faces), epochs=2, batch_size=4, holdout=0, samples_dir=str(tmp_path / "samples"),
                    **extra)
    straight, resumed = tmp_path / "straight.safetensors", tmp_path / "resumed.safetensors"
    _train_gan(cfg, straight)
    with pytest.raises(Interrupted):
        _train_gan(cfg, resumed, on_step=_stop_at(0, 2))
    _train_gan(cfg, resumed, resume=True)
    _same_tensors(straight, resumed)


@pytest.mark.slow
def test_interrupt_at_epoch_end_resumes_into_next_epoch(tmp_path, small_tree):
    cfg = ClassifierConfig(data=str(small_tree), epochs=2, batch_size=32)
    out = tmp_path / "w.safetensors"
    with pytest.raises(Interrupted):
        _train_classifier(cfg, out, on_step=_stop_at(0, 4))              # 108 images / 32 → 4 steps
    _, meta = load_tensors(out.with_suffix(".ckpt.safetensors"))
    assert (meta["epoch"], meta["step_in_epoch"]) == (0, 4)
    summary = _train_classifier(cfg, out, resume=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


def _invoke(*args):
    result = runner.invoke(app, list(args))
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def test_bad_arguments_fail_before_any_work(tmp_path, small_tree, faces):
    folder = tmp_path / "existing"
    (folder / "cats").mkdir(parents=True)
    cases = [
        (["train", "cifar-cnn", "--data", str(folder), "--out", str(tmp_path / "c.st")], "do not match"),
        (["train", "cifar-cnn", "--data", str(small_tree), "--out", str(folder)], "is a folder"),
        (["train", "cifar-resnet", "--data", str(tmp_path / "missing")], "not a folder"),
        (["train", "cifar-cnn", "--data", str(small_tree), "--epochs", "0", "--out", str(tmp_path / "a.st")],
         "--epochs"),
        (["train", "cifar-cnn", "--data", str(small_tree), "--schedule", "step", "--out", str(tmp_path / "a.st")],
         "--schedule"),
        (["train", "cifar-resnet", "--data", str(small_tree), "--resume", "--out", str(tmp_path / "b.st")],
         "no checkpoint"),
        (["train", "dcgan", "--data", str(faces), "--batch-size", "64", "--holdout", "0",
          "--samples-dir", str(tmp_path / "s"), "--out", str(tmp_path / "g.st")], "fewer than one batch"),
    ]
    for args, message in cases:
        code, lines = _invoke(*args)
        assert code == 1, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]     # nothing written, not even samples


def test_cli_defaults_are_the_dataclass_defaults():
    import typer.main

    group = typer.main.get_command(app)
    train = group.commands["train"]                                      # type: ignore[attr-defined]
    for name, cls in (("cifar-cnn", ClassifierConfig), ("cifar-resnet", ResNetConfig), ("dcgan", GanConfig)):
        params = {p.name: p for p in train.commands[name].params}
        for f in dataclasses.fields(cls):
            if f.name in params and f.name != "data":
                assert params[f.name].default == f.default, (name, f.name)
    assert ResNetConfig().batch_size != ClassifierConfig().batch_size    # the subclass's own defaults reach its command


def test_augment_shifts_flips_and_cutout():
    from toolkit.pytorch.train_classifier import augment, cut_out, epoch_plan

    images = torch.arange(2 * 6 * 6 * 3, dtype=torch.uint8).view(2, 6, 6, 3)
    same = augment(images, torch.tensor([False, True]), torch.tensor([[2, 2], [2, 2]]), translate=2)
    assert torch.equal(same[0], images[0]) and torch.equal(same[1], images[1].flip(1))
    shifted = augment(images, None, torch.tensor([[3, 2], [2, 4]]), translate=2)
    assert torch.equal(shifted[0, :5], images[0, 1:])                    # one row up
    assert torch.equal(shifted[1, :, :4], images[1, :, 2:])              # two columns left
    painted = cut_out(images, torch.tensor([[0, 3], [0, 3]]), 2, torch.tensor([7, 7, 7], dtype=torch.uint8))
    assert int((painted[0] == 7).all(-1).sum()) == 1 and int((painted[1] == 7).all(-1).sum()) == 4
    a, b = epoch_plan(10, 0, 1, 2, cutout=4), epoch_plan(10, 0, 1, 2, cutout=4)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["order"], epoch_plan(10, 0, 2, 2)["order"])


def test_lr_schedule_warms_up_then_decays():
    from toolkit.pytorch.train_classifier import lr_schedule

    for shape in ("cosine", "linear"):
        lrs = [lr_schedule(s, 100, 1.0, 0.2, shape) for s in range(100)]
        assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0) and lrs[-1] < 0.05
        assert lrs.index(max(lrs)) == 20


def test_resnet_shape_and_size():
    import toolkit.zoo as zoo

    net = zoo.CIFAR_RESNET.build()
    assert 1_000_000 < sum(p.numel() for p in net.parameters()) < 3_000_000
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_alternate_flip_flips_each_image_in_every_other_epoch():
    from toolkit.pytorch.train_classifier import epoch_plan

    def flips_by_image(epoch: int) -> torch.Tensor:
        plan = epoch_plan(1000, seed=3, epoch=epoch, translate=0, alternate_flip=True)
        by_image = torch.empty(1000, dtype=torch.bool)
        by_image[plan["order"]] = plan["flip"]
        return by_image

    first, second, third = flips_by_image(0), flips_by_image(1), flips_by_image(2)
    assert torch.equal(second, ~first) and torch.equal(third, first)
    assert 400 < int(first.sum()) < 600                                  # a fair coin per image
    random = epoch_plan(1000, seed=3, epoch=1, translate=0)["flip"]
    assert not torch.equal(random, epoch_plan(1000, seed=3, epoch=1, translate=0, alternate_flip=True)["flip"])


def test_optimizer_groups_scale_norm_biases_and_freeze_norm_scales():
    from toolkit.pytorch.nets.resnet import CifarResNet
    from toolkit.pytorch.train_classifier import make_optimizer

    net = CifarResNet()
    cfg = ResNetConfig(data="x", norm_bias_lr=64.0, weight_decay=1e-3, freeze_norm_scale=True)
    opt = make_optimizer(net, cfg)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.weight.requires_grad for m in norms)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for m in norms:
        group = by_param[id(m.bias)]
        assert group["lr_scale"] == 64.0 and group["weight_decay"] == pytest.approx(1e-3 / 64)
    conv = net.stages[0].conv.weight
    assert by_param[id(conv)]["lr_scale"] == 1.0 and by_param[id(conv)]["weight_decay"] == 1e-3
    assert not any(id(m.weight) in by_param for m in norms)             # frozen: in no group
    plain = make_optimizer(CifarResNet(), ResNetConfig(data="x", norm_bias_lr=1.0, freeze_norm_scale=False))
    assert {g["lr_scale"] for g in plain.param_groups} == {1.0}


def test_stage_convs_start_as_the_identity():
    from toolkit.pytorch.nets.resnet import CifarResNet

    for conv in (m for m in CifarResNet().stages.modules() if isinstance(m, torch.nn.Conv2d)):
        k = min(conv.in_channels, conv.out_channels)
        assert torch.equal(conv.weight[:k], torch.nn.init.dirac_(torch.empty_like(conv.weight[:k])))


@pytest.mark.slow
def test_lookahead_validates_and_ships_the_average_every_val_every_epochs(tmp_path, small_tree):
    from toolkit.pytorch.train_classifier import ClassifierTask, read_labelled

    cfg = ResNetConfig(data=str(small_tree), epochs=3, batch_size=16, val_every=2)
    summary = _train_classifier(cfg, tmp_path / "w.safetensors")
    assert ["val_accuracy" in h for h in summary["history"]] == [False, True, True]
    task = ClassifierTask(cfg, read_labelled(str(small_tree)))
    task.begin_epoch(0)
    for step in range(5):
        task.step(0, step)
    assert task.average is not None
    for key, value in task.model.net.state_dict().items():              # after the 5th step: pulled to the average
        if value.is_floating_point():                                    # (batch counters are not averaged)
            assert torch.equal(value, task.average.state_dict()[key]), key
    task.step(0, 5)
    assert not torch.equal(task.model.net.stages[0].conv.weight, task.average.stages[0].conv.weight)


def test_gan_weight_average_warms_up():
    from toolkit.pytorch.train_gan import update_average

    model, average = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = average.weight.detach().clone()
    update_average(average, model, 0.999, step=0)                        # decay min(0.999, 1/10)
    assert torch.allclose(average.weight, 0.1 * before + 0.9 * model.weight)
    before = average.weight.detach().clone()
    update_average(average, model, 0.99, step=10_000)
    assert torch.allclose(average.weight, 0.99 * before + 0.01 * model.weight)


def test_gan_learning_rate_falls_to_zero_after_decay_from():
    from toolkit.pytorch.train_gan import gan_lr

    cfg = GanConfig(data="x", lr=2e-4, decay_from=0.5)
    assert [gan_lr(cfg, s, 100) for s in (0, 49, 50)] == [2e-4, 2e-4, 2e-4]
    assert gan_lr(cfg, 75, 100) == pytest.approx(1e-4) and gan_lr(cfg, 99, 100) == pytest.approx(4e-6)
    assert gan_lr(GanConfig(data="x", lr=2e-4), 99, 100) == 2e-4             # 1: constant


def test_spectral_norm_discriminator_has_unit_norm_convs_and_no_batch_norm():
    from toolkit.pytorch.nets.dcgan import Discriminator

    torch.manual_seed(0)
    d = Discriminator(spectral_norm=True).train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    for _ in range(30):                                                  # power iterations, one per forward
        d(torch.randn(2, 3, 64, 64))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.02)
    raw = torch.linalg.matrix_norm(convs[2].parametrizations.weight.original.detach().flatten(1), ord=2)
    assert raw != pytest.approx(1.0, abs=0.1)                             # the stored weight is not normalised


def test_gan_losses(faces):
    from toolkit.pytorch.train_gan import GanTask

    images = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    real, fake = torch.tensor([2.0, 0.0, 1.0, -1.0]), torch.tensor([-2.0, 0.0, -1.0, 1.0])
    hinge = GanTask(GanConfig(data=str(faces), batch_size=4, loss="hinge"), images)
    assert hinge._loss_d(real, fake).item() == pytest.approx((0 + 1 + 0 + 2) / 4 * 2)
    assert hinge._loss_g(fake).item() == pytest.approx(0.5)
    bce = GanTask(GanConfig(data=str(faces), batch_size=4), images)
    expected = torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
    assert bce._loss_d(real, fake).item() == pytest.approx(expected.item())
    assert bce._loss_g(fake).item() == pytest.approx(torch.nn.functional.softplus(-fake).mean().item())
    with pytest.raises(ValueError, match="--loss must be bce or hinge"):
        GanConfig(data=str(faces), loss="wgan").validate()


def test_shipped_generator_gets_batch_norm_statistics_of_its_own(faces):
    from toolkit.pytorch.train_gan import GanTask

    def norms(g):
        return [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    images = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    task = GanTask(GanConfig(data=str(faces), batch_size=4, bn_batches=2), images)
    shipped = task.shipped_generator()
    assert shipped is not task.G and not shipped.training
    for a, b in zip(shipped.parameters(), task.G.parameters(), strict=True):
        assert torch.equal(a, b)                                         # the weights as trained
    for a, b in zip(norms(shipped), norms(task.G), strict=True):
        assert not torch.equal(a.running_var, b.running_var)             # statistics re-estimated
    kept = GanTask(GanConfig(data=str(faces), batch_size=4, bn_batches=0), images)
    assert kept.shipped_generator() is kept.G                            # 0: training's running averages
    with pytest.raises(ValueError, match="--ema needs --bn-batches"):
        GanConfig(data=str(faces), ema=0.99, bn_batches=0).validate()
