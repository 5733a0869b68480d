"""Image decoding and validation, dataset readers and the fixed split."""

import io
import os
import pickle
import unittest.mock

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import write_class_tree
from toolkit.edge.data import datasets
from toolkit.edge.data import images as data
from toolkit.edge.data.images import ImageError, load_image


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_grey_palette_rgba_and_16bit_become_rgb(tmp_path):
    grey = save(Image.new("L", (5, 4), 100), tmp_path / "grey.png")
    palette = save(Image.new("RGB", (5, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE),
                   tmp_path / "palette.png")
    rgba = save(Image.new("RGBA", (5, 4), (255, 0, 0, 0)), tmp_path / "rgba.png")
    sixteen = save(Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)), tmp_path / "16bit.png")
    for path in (grey, palette, rgba, sixteen):
        arr = load_image(path)
        assert arr.shape == (4, 5, 3) and arr.dtype == np.uint8, path
    assert (load_image(grey) == 100).all()
    assert tuple(load_image(palette)[0, 0]) == (10, 200, 30)
    assert (load_image(rgba) == 255).all()          # fully transparent → white background
    assert (load_image(sixteen) == 255).all()       # 16-bit full scale → 8-bit full scale


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "missing", "folder"])
def test_bad_files_give_one_line_errors(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(ImageError) as err:
        load_image(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_absurdly_large_image_is_refused_before_decoding(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (300, 200)), tmp_path / "big.png")
    monkeypatch.setattr(data, "MAX_PIXELS", 300 * 200 - 1)
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_class_folder_reader_and_fixed_split(class_tree):
    files, labels, classes = datasets.class_folder_files(class_tree)
    assert classes == sorted(datasets.CIFAR10_LABELS) and len(files) == 300
    train, val = datasets.split_indices(labels)
    assert len(val) == 30 and len(train) == 270 and not set(train) & set(val)
    # the validation part is the last 10% of each class, by file name
    assert {files[i].name for i in val} == {"0027.jpg", "0028.jpg", "0029.jpg"}
    part = datasets.read_split(class_tree, "val")
    assert part.images.shape == (30, 32, 32, 3) and len(part.labels) == 30


def test_split_on_the_real_layout_is_the_last_500_of_5000():
    labels = np.repeat(np.arange(10), 5000)
    _, val = datasets.split_indices(labels)
    assert len(val) == 5000 and all((val[c * 500: (c + 1) * 500] % 5000 >= 4500).all() for c in range(10))


def test_bad_files_in_a_tree_are_reported_and_skipped(tmp_path):
    root = write_class_tree(tmp_path / "t", per_class=2, classes=["a", "b"])
    (root / "a" / "9999.jpg").write_bytes(b"")
    errors = []
    got = datasets.read_class_folder(root, on_error=errors.append)
    assert len(got) == 4 and len(errors) == 1 and "empty" in errors[0]


def write_cifar_batches(root, n=20, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(i % 10) for i in range(n)]
    for name in ("data_batch_1", "test_batch"):
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": images, b"labels": labels, b"batch_label": b"x"}, fh, protocol=2)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in datasets.CIFAR10_LABELS]}, fh, protocol=2)
    return root, images, labels


def test_cifar_batches_reader(tmp_path):
    root, images, labels = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    got = datasets.read_cifar_batches(root, "train")
    assert got.images.shape == (20, 32, 32, 3) and list(got.labels) == labels
    assert got.class_names == datasets.CIFAR10_LABELS
    # channel-planar rows → HWC: red plane first
    assert got.images[0, 0, 0, 0] == images[0, 0] and got.images[0, 0, 0, 1] == images[0, 1024]


class Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_pickled_code(tmp_path):
    root = tmp_path / "evil"
    root.mkdir()
    with open(root / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets.read_cifar_batches(root)


def test_flat_folder_reader_resizes(tmp_path):
    for i, size in enumerate([(10, 10), (80, 60), (64, 64)]):
        Image.new("RGB", size, (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored: not an image name")
    faces = datasets.read_flat_folder(tmp_path, (64, 64))
    assert faces.shape == (3, 64, 64, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillows_own_transpose(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(Image.fromarray(pixels), tmp_path / "o.png", exif=exif)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert np.array_equal(load_image(path), expected)


def test_big_grey_and_alpha_images_convert_strip_by_strip(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "STRIP_PIXELS", 7)          # many strips, some of them one row
    grey = np.arange(12 * 5, dtype=np.uint16).reshape(12, 5) * 1000
    rgba = np.zeros((12, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.arange(60, dtype=np.uint8).reshape(12, 5) * 4
    got_grey = load_image(save(Image.fromarray(grey), tmp_path / "g.png"))
    got_rgba = load_image(save(Image.fromarray(rgba), tmp_path / "a.png"))
    assert np.array_equal(got_grey[..., 0], np.round(grey / 65535 * 255).astype(np.uint8))
    alpha = rgba[..., 3].astype(int)
    assert np.array_equal(got_rgba[..., 0], (200 * alpha + 255 * (255 - alpha) + 127) // 255)
    assert (got_rgba[..., 1] == (255 * (255 - alpha) + 127) // 255).all()


def test_streamed_split_equals_the_whole_split(tmp_path, class_tree):
    root, _, _ = write_cifar_batches(tmp_path / "cifar-10-batches-py", n=40)
    for source in (root, class_tree):
        listing = datasets.list_split(source, "val")
        whole = datasets.read_split(source, "val")
        chunks = list(listing.chunks([(32, 32), (16, 16)], chunk=3))
        assert max(len(c.labels) for c in chunks) == 3 and len(listing) == len(whole)
        assert np.array_equal(np.concatenate([c.images[(32, 32)] for c in chunks]), whole.images)
        assert np.concatenate([c.images[(16, 16)] for c in chunks]).shape[1:3] == (16, 16)
        assert np.array_equal(np.concatenate([c.labels for c in chunks]), whole.labels)


def test_folders_that_cannot_be_listed_are_reported(tmp_path):
    problems = []
    assert data.expand_inputs([tmp_path / "gone"], on_error=problems.append) == [tmp_path / "gone"]
    (tmp_path / "f.png").write_bytes(b"")
    os_error = OSError(13, "Permission denied", str(tmp_path / "locked"))
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        onerror(os_error)
        yield from real_walk(top, onerror=onerror, **kw)
    with unittest.mock.patch.object(data.os, "walk", walk):
        files = data.expand_inputs([tmp_path], on_error=problems.append)
    assert files == [tmp_path / "f.png"]
    assert problems == [f"{tmp_path / 'locked'}: cannot list folder (Permission denied)"]
