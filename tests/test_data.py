"""Image datasets: layouts, modes, value range, determinism under a seed, loaders, and the real data."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.data.files import (
    FLAT_HOLDOUT_EVERY,
    BadFileError,
    BadFileWarning,
    find_images,
    flat_holdout,
    make_loader,
    set_epoch,
    skipped_count,
    split_note,
)
from vqkit.modalities.image.datasets import (
    ImageFolder,
    PhotoDataset,
    build_dataset,
    from_uint8,
    to_uint8,
    training_images,
)
from vqkit.modalities.image.io import SUPPORTED_MODES, image_to_array, load_image, read_image

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared/data/images/imagenette2"
needs_imagenette = pytest.mark.skipif(not IMAGENETTE.is_dir(), reason=f"real data not present at {IMAGENETTE}")
KODAK = Path(__file__).resolve().parents[2] / "shared/data/images/kodak24"
needs_kodak = pytest.mark.skipif(not KODAK.is_dir(), reason=f"real data not present at {KODAK}")
S = 16


def _write(path: Path, mode: str, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)  # RGBA → RGB, L, RGBA or P (palette)
    image.save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """ImageNet layout with mixed formats, modes, sizes and extension cases, plus a hidden file."""
    _write(tmp_path / "train/classB/b1.PNG", "P", (20, 33), 1)
    _write(tmp_path / "train/classA/a2.jpeg", "L", (40, 24), 2)
    _write(tmp_path / "train/classA/a1.jpg", "RGB", (24, 24), 3)
    _write(tmp_path / "train/classB/b0.png", "RGBA", (17, 50), 4)
    _write(tmp_path / "train/classA/.hidden.jpg", "RGB", (24, 24), 5)
    (tmp_path / "train/classA/notes.txt").write_text("not an image")
    _write(tmp_path / "val/classA/v1.JPG", "RGB", (30, 20), 6)
    return tmp_path


def test_layout_order_shape_range(tree: Path) -> None:
    data = ImageFolder(tree / "train", size=S)
    assert [p.relative_to(tree / "train").as_posix() for p in data.files] == [
        "classA/a1.jpg", "classA/a2.jpeg", "classB/b0.png", "classB/b1.PNG"]
    for i in range(len(data)):
        x = data[i]
        assert x.shape == (3, S, S) and x.dtype == torch.float32
        assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    gray = data[1]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert data[-1].shape == (3, S, S)
    with pytest.raises(IndexError):
        data[len(data)]
    assert len(ImageFolder(tree, size=S)) == 5  # flat: recursive over both splits
    assert len(ImageFolder(tree / "train", size=S, max_images=2)) == 2


def test_eval_centre_crop_is_deterministic(tree: Path) -> None:
    a, b = ImageFolder(tree / "train", S, train=False), ImageFolder(tree / "train", S, train=False, seed=7)
    b.set_epoch(3)
    for i in range(len(a)):
        assert torch.equal(a[i], b[i])
    # a 40×24 image resized to 27×16: the centre crop starts at column 5
    full = from_uint8(torch.from_numpy(np.array(a.crop.resize_image(load_image(a.files[1])))), channels_last=True)
    assert torch.equal(a[1], full[:, :, 5:5 + S])


def test_train_crop_keyed_by_seed_epoch_index(tree: Path) -> None:
    data = ImageFolder(tree / "train", S, train=True, seed=0, resize=2 * S)
    epoch0 = [data[i] for i in range(len(data))]
    assert all(torch.equal(x, y) for x, y in zip(epoch0, [data[i] for i in range(len(data))], strict=True))
    data.set_epoch(1)
    assert not all(torch.equal(data[i], epoch0[i]) for i in range(len(data)))
    other = ImageFolder(tree / "train", S, train=True, seed=0, resize=2 * S)
    other.set_epoch(1)
    assert all(torch.equal(data[i], other[i]) for i in range(len(data)))


def test_loader_identical_with_0_or_2_workers(tree: Path) -> None:
    def run(workers: int) -> list[torch.Tensor]:
        data = ImageFolder(tree / "train", S, train=True, seed=3, resize=2 * S, hflip=True)
        loader = make_loader(data, batch_size=2, train=True, seed=3, workers=workers)
        out = []
        for epoch in range(2):  # persistent workers must see the new epoch
            set_epoch(loader, epoch)
            out += list(loader)
        return out

    zero, two = run(0), run(2)
    assert len(zero) == 4 and all(b.shape == (2, 3, S, S) for b in zero)
    assert all(torch.equal(x, y) for x, y in zip(zero, two, strict=True))
    assert not torch.equal(torch.cat(zero[:2]), torch.cat(zero[2:]))


def test_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"nowhere.* does not exist"):
        ImageFolder(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images .* found under .*empty"):
        ImageFolder(tmp_path / "empty")
    _write(tmp_path / "one.png", "RGB", (8, 8), 0)
    with pytest.raises(ValueError, match=r"one\.png is a file, not a folder"):
        ImageFolder(tmp_path / "one.png")
    with pytest.raises(ValueError, match=r"one\.png is a file, not a folder"):
        build_dataset(tmp_path / "one.png", "train", S)
    with pytest.raises(ValueError, match="bad_files must be one of"):
        ImageFolder(tmp_path, bad_files="ignore")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"broken\.jpg: not an image"):
        ImageFolder(tmp_path / "bad", S, bad_files="fail")
    with pytest.raises(ValueError, match=r"broken\.jpg: not an image"):
        read_image(tmp_path / "bad/broken.jpg")


def test_build_dataset(tree: Path) -> None:
    train, val = build_dataset(tree, "train", S), build_dataset(tree, "val", S)
    assert isinstance(train, ImageFolder) and len(train) == 4 and train.crop.train
    assert isinstance(val, ImageFolder) and len(val) == 1 and not val.crop.train
    assert split_note(train) == split_note(val) == ""  # the ImageNet layout needs no note
    flat_val = build_dataset(tree / "train/classA", "val", S)  # flat: a1.jpg held out, a2.jpeg trains
    flat_train = build_dataset(tree / "train/classA", "train", S)
    assert isinstance(flat_val, ImageFolder) and isinstance(flat_train, ImageFolder)
    assert [p.name for p in flat_val.files] == ["a1.jpg"] and [p.name for p in flat_train.files] == ["a2.jpeg"]
    assert "1 of 2 images held out for validation" in split_note(flat_val) == split_note(flat_train)
    whole = build_dataset(tree / "train/classA", "val", S, flat="whole")
    assert len(whole) == 2 and "no hold-out" in split_note(whole)
    with pytest.raises(ValueError, match="flat must be"):
        build_dataset(tree, "val", S, flat="all")
    (tree / "val/classA/v1.JPG").unlink()
    (tree / "val/classA").rmdir()
    (tree / "val").rmdir()
    with pytest.raises(ValueError, match="'val' subfolder"):  # never fall back to the training images
        build_dataset(tree, "val", S)
    with pytest.raises(ValueError, match="nowhere"):
        build_dataset(tree / "nowhere", "train", S)
    with pytest.raises(ValueError, match="split"):
        build_dataset(tree, "test", S)


def test_flat_folder_holdout_is_disjoint_and_reported(tmp_path: Path) -> None:
    names = [f"img{k:02d}.png" for k in range(25)]
    for k, name in enumerate(names):
        _write(tmp_path / name, "RGB", (8, 8), k)
    val, train = build_dataset(tmp_path, "val", S), build_dataset(tmp_path, "train", S)
    assert isinstance(val, ImageFolder) and isinstance(train, ImageFolder)
    assert FLAT_HOLDOUT_EVERY == 10
    assert [p.name for p in val.files] == ["img00.png", "img10.png", "img20.png"]
    assert len(train) == 22 and set(val.files).isdisjoint(train.files)
    assert sorted(p.name for p in val.files + train.files) == names
    assert split_note(train) == (f"flat folder {tmp_path}: 3 of 25 images held out for validation (every 10th in "
                                 "sorted order, from the first); 22 used for training")
    subset = build_dataset(tmp_path, "train", S, max_images=5)  # max_images spreads over the training side only
    assert len(subset) == 5 and set(subset.files) <= set(train.files)  # type: ignore[attr-defined]
    assert flat_holdout(list(range(3)), "val")[0] == [0]  # fewer than 10 still holds one out
    assert flat_holdout(list(range(3)), "train")[0] == [1, 2]
    with pytest.raises(ValueError, match="at least 2"):
        flat_holdout(["only.png"], "train", "somewhere")
    fitted = list(training_images(str(tmp_path)))  # the prior is fitted on the training side too
    assert len(fitted) == 22
    assert np.array_equal(fitted[0], read_image(tmp_path / "img01.png"))


@needs_kodak
def test_kodak_flat_holdout() -> None:
    val, train = build_dataset(KODAK, "val", 64), build_dataset(KODAK, "train", 64)
    assert [p.name for p in val.files] == ["kodim01.png", "kodim11.png", "kodim21.png"]  # type: ignore[attr-defined]
    assert len(train) == 21 and "3 of 24 images held out" in split_note(train)  # type: ignore[arg-type]


def _gradient16(path: Path) -> np.ndarray:
    """A 16-bit grey PNG whose values run 0 … 65535 in 256 steps of 257 (k · 257 is exactly k/255 of white)."""
    values = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    Image.fromarray(values).save(path)
    return values


def _palette_with_transparency(path: Path) -> np.ndarray:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.save(path, transparency=0)  # palette entry 0 transparent: its colour is kept, alpha dropped
    palette = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    return palette[np.array(image)]


def test_every_mode_one_conversion_path(tmp_path: Path) -> None:
    values = _gradient16(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode == "I;16"
    g16 = read_image(tmp_path / "g16.png")
    assert g16.shape == (16, 16, 1) and np.array_equal(g16[..., 0], values // 257)  # scaled, not clipped
    assert np.array_equal(np.array(load_image(tmp_path / "g16.png")), np.repeat(g16, 3, axis=2))
    item = ImageFolder(tmp_path, size=16, train=False)[0]  # training sees the same pixels, in [-1, 1]
    assert torch.equal(item, from_uint8(torch.from_numpy(np.repeat(g16, 3, axis=2)), channels_last=True))
    assert item.min().item() == -1.0 and item.max().item() == 1.0 and (item < 0).float().mean() == 0.5

    for mode in ("I;16B", "I;16L"):
        raw = np.array([[0, 257, 32768, 65535]], dtype=">u2" if mode == "I;16B" else "<u2")
        image = Image.frombytes(mode, (4, 1), raw.tobytes())
        assert image_to_array(image)[..., 0].tolist() == [[0, 1, 128, 255]]
    ints = np.array([[0, 257, 32768, 65535]], dtype=np.int32)  # mode I as PIL gives 16-bit grey: 0..65535
    Image.fromarray(ints).save(tmp_path / "i.tif")
    assert read_image(tmp_path / "i.tif")[..., 0].tolist() == [[0, 1, 128, 255]]
    wide = Image.fromarray(np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32))  # a true 32-bit range
    assert image_to_array(wide)[..., 0].tolist() == [[0, 128, 255]]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[..., 0].tolist() == [[0, 128, 255]]  # F: [0, 1]
    as_float = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8)).convert("F")  # PIL's F: [0, 255]
    assert image_to_array(as_float)[..., 0].tolist() == [[0, 100, 255]]
    over = Image.fromarray(np.array([[-0.001, 1.001]], dtype=np.float32))  # float rounding: clipped
    assert image_to_array(over)[..., 0].tolist() == [[0, 255]]
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(BadFileError, match=r"nan\.tif: float .* NaN"):
        read_image(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match="no known brightness scale"):
        image_to_array(Image.fromarray(np.array([[0.0, 1e6]], dtype=np.float32)))

    Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint8)).convert("1").save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png")[..., 0].tolist() == [[0, 255, 0]]
    grey, alpha = np.full((3, 4), 77, np.uint8), np.array([[0, 255, 9, 0]] * 3, np.uint8)
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]).save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png")[..., 0], grey)  # alpha dropped, not composited
    expected = _palette_with_transparency(tmp_path / "pt.png")
    with Image.open(tmp_path / "pt.png") as image:
        assert image.mode == "P" and image.info["transparency"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's palette-transparency warning is avoided, not hidden
        assert np.array_equal(read_image(tmp_path / "pt.png"), expected)
    Image.fromarray(expected).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")  # no tRNS
    assert np.array_equal(read_image(tmp_path / "p.png"), expected)
    rgba = np.dstack([expected, np.zeros((6, 7), np.uint8)])  # fully transparent: colours kept as stored
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), expected)
    Image.new("RGB", (16, 16), (200, 40, 90)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as image:
        assert image.mode == "CMYK"
    assert np.abs(read_image(tmp_path / "cmyk.jpg").astype(int) - [200, 40, 90]).max() <= 3
    ycc = Image.new("RGB", (4, 4), (200, 40, 90)).convert("YCbCr")
    assert np.abs(image_to_array(ycc).astype(int) - [200, 40, 90]).max() <= 3
    for name in ("one.png", "la.png", "pt.png", "rgba.png", "cmyk.jpg", "i.tif", "f.tif"):  # one path for both
        pixels = read_image(tmp_path / name)
        assert np.array_equal(np.array(load_image(tmp_path / name)), np.repeat(pixels, 3 // pixels.shape[2], axis=2))
    assert set(Image.MODES) <= set(SUPPORTED_MODES)  # every mode PIL decodes to has its conversion
    with pytest.raises(ValueError, match="unsupported image mode 'BGR;24'"):
        image_to_array(SimpleNamespace(mode="BGR;24"))  # type: ignore[arg-type]


def _bad_folder(root: Path) -> dict[str, str]:
    """Six files, four of them bad in different ways; returns {bad name: the cause the error must give}."""
    for k, name in enumerate(["a_good.png", "c_good.jpg"]):
        _write(root / name, "RGB", (24, 24), k)
    _write(root / "b_cut.png", "RGB", (64, 64), 5)
    _write(root / "d_cut.jpg", "RGB", (64, 64), 6)
    for name in ("b_cut.png", "d_cut.jpg"):
        raw = (root / name).read_bytes()
        (root / name).write_bytes(raw[: len(raw) // 2])
    (root / "e_text.png").write_text("this is not an image")
    (root / "f_zero.png").write_bytes(b"")
    return {"b_cut.png": "truncated", "d_cut.jpg": "truncated", "e_text.png": "not an image",
            "f_zero.png": "empty file"}


def test_bad_files_skip(tmp_path: Path) -> None:
    bad = _bad_folder(tmp_path)
    data = ImageFolder(tmp_path, S, train=False)  # bad_files="skip" is the default
    assert data.bad_files == "skip" and data.skipped == 0 and len(data) == 6
    with pytest.warns(BadFileWarning) as caught:
        items = [data[i] for i in range(len(data))]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4  # once per bad file
    for count, (name, cause) in enumerate(bad.items(), start=1):
        assert any(name in m and cause in m and f"({count} of 6 skipped so far)" in m for m in messages), name
    assert data.skipped == 4 and skipped_count(data) == 4
    assert [p.name for p in data.skipped_files] == list(bad)
    first = data.crop.resize_image(load_image(tmp_path / "a_good.png"))  # 24×24 → 16×16: the crop is all of it
    assert torch.equal(items[0], from_uint8(torch.from_numpy(np.array(first)), channels_last=True))
    assert not torch.equal(items[0], items[2])
    assert torch.equal(items[1], items[2])  # b_cut.png is replaced by the next file that loads, c_good.jpg
    assert all(torch.equal(items[k], items[0]) for k in (3, 4, 5))  # … and d, e, f wrap round to a_good.png
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file already known bad is skipped silently
        assert torch.equal(data[4], items[0])
    assert skipped_count(torch.utils.data.Subset(data, [0])) == 4


def test_bad_files_all_bad_raises(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("no")
    (tmp_path / "y.jpg").write_bytes(b"")
    data = ImageFolder(tmp_path, S)
    with pytest.warns(BadFileWarning), pytest.raises(BadFileError, match=r"all 2 files .* are bad.*x\.png.*y\.jpg"):
        data[0]
    with pytest.raises(BadFileError, match="all 2 files"):  # and again, without retrying forever
        data[1]


def test_bad_files_fail(tmp_path: Path) -> None:
    bad = _bad_folder(tmp_path)
    for name, cause in bad.items():  # each kind named with its cause
        with pytest.raises(BadFileError, match=rf"{name}: {cause}"):
            read_image(tmp_path / name)
    with pytest.raises(BadFileError, match=r"b_cut\.png: truncated.*bad_files='fail'"):  # found up front
        ImageFolder(tmp_path, S, bad_files="fail")
    for name in ("b_cut.png", "e_text.png", "f_zero.png"):
        (tmp_path / name).unlink()
    data = ImageFolder(tmp_path, S, bad_files="fail")  # a cut JPEG passes the header check …
    assert torch.equal(data[0], data[0])
    with pytest.raises(BadFileError, match=r"d_cut\.jpg: truncated"):  # … and fails when decoded
        data[2]
    with pytest.raises(BadFileError, match=r"d_cut\.jpg: truncated"):
        list(training_images(str(tmp_path), bad_files="fail"))
    with pytest.warns(BadFileWarning, match=r"d_cut\.jpg"):  # skip: the prior is fitted on what loads
        assert len(list(training_images(str(tmp_path)))) == 1  # flat: a_good.png is held out, c_good.jpg fits


def test_bad_files_with_workers(tmp_path: Path) -> None:
    _bad_folder(tmp_path)

    def run(workers: int) -> tuple[list[torch.Tensor], int]:
        data = ImageFolder(tmp_path, S, train=True, seed=1, resize=2 * S, hflip=True)
        loader = make_loader(data, batch_size=3, train=True, seed=1, workers=workers)
        out: list[torch.Tensor] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadFileWarning)
            for epoch in range(2):
                set_epoch(loader, epoch)
                out += list(loader)
        return out, data.skipped

    (zero, skipped0), (two, skipped2) = run(0), run(2)
    assert skipped0 == skipped2 == 4  # counted in the workers, read in the main process
    assert len(two) == 4 and all(torch.equal(x, y) for x, y in zip(zero, two, strict=True))
    (tmp_path / "a_good.png").unlink()
    (tmp_path / "c_good.jpg").unlink()
    batches = iter(make_loader(ImageFolder(tmp_path, S), batch_size=2, train=False, workers=2))
    start = time.perf_counter()
    with pytest.raises(BadFileError, match="all 4 files"):  # every file bad: an error from the worker, no hang
        next(batches)
    assert time.perf_counter() - start < 3
    for worker in getattr(batches, "_workers", []):  # torch waits 5 s to join each worker that raised: stop
        worker.terminate()  # them now, or that wait lands in whichever test next collects the loader


def test_symlinks_never_repeat_files(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    _write(root / "a/one.png", "RGB", (8, 8), 0)
    _write(root / "a/deep/two.png", "RGB", (8, 8), 1)
    _write(outside / "three.png", "RGB", (8, 8), 2)
    os.symlink(root, root / "a/deep/loop")  # a cycle back to the root
    os.symlink(root / "a", root / "0alias")  # a second name for a folder, sorted before the real one
    os.symlink(outside, root / "ext1")  # a folder outside the tree, linked twice
    os.symlink(outside, root / "ext2")
    os.symlink(root / "a/one.png", root / "a/deep/one_again.png")  # a file link
    os.symlink(root / "gone", root / "broken")  # a dangling link
    files = find_images(root)
    assert [p.relative_to(root).as_posix() for p in files] == ["a/deep/two.png", "a/one.png", "ext1/three.png"]
    assert len(ImageFolder(root, S)) == 3


def test_training_images_layouts(tree: Path) -> None:
    assert len(list(training_images(str(tree)))) == 4  # the train/ split, whole
    shutil.rmtree(tree / "train")
    with pytest.raises(ValueError, match="'train' subfolder"):  # never fit the prior on val/ instead
        list(training_images(str(tree)))


def test_photo_dataset_offline_and_deterministic() -> None:
    names = ("astronaut", "camera")
    a = PhotoDataset(S, train=True, seed=1, crops_per_photo=4, names=names)
    b = PhotoDataset(S, train=True, seed=1, crops_per_photo=4, names=names)
    assert len(a) == 8
    assert all(torch.equal(a[i], b[i]) for i in range(len(a)))
    assert a[0].shape == (3, S, S) and a[0].dtype == torch.float32
    assert not torch.equal(a[0], a[1])  # distinct crops of one photo
    assert torch.equal(a[4][0], a[4][2])  # camera is grayscale
    a.set_epoch(1)
    assert not torch.equal(a[0], b[0])
    test = PhotoDataset(S, train=False)
    assert len(test) > 3 and torch.equal(test[0], PhotoDataset(S, train=False, seed=9)[0])
    assert all(test[i].min() >= -1 and test[i].max() <= 1 for i in range(len(test)))
    assert isinstance(build_dataset(None, "val", S), PhotoDataset)


def test_loader_order() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(10))

    def order(seed: int, epoch: int, **kw: int) -> list[int]:
        loader = make_loader(data, 1, train=True, seed=seed, **kw)
        set_epoch(loader, epoch)
        return [int(i) for i in loader.sampler]

    assert order(0, 0) == order(0, 0) and sorted(order(0, 0)) == list(range(10))
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    ranks = [order(0, 2, distributed=True, num_replicas=2, rank=r) for r in (0, 1)]
    assert set(ranks[0]).isdisjoint(ranks[1]) and sorted(ranks[0] + ranks[1]) == list(range(10))
    evaluation = make_loader(data, 4, train=False)
    assert [len(b[0]) for b in evaluation] == [4, 4, 2]
    assert torch.cat([b[0] for b in evaluation]).tolist() == list(range(10))


def test_uint8_round_trip() -> None:
    u = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = from_uint8(u)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(x, channels_last=True), u.permute(0, 2, 3, 1))
    assert torch.equal(from_uint8(u.permute(0, 2, 3, 1), channels_last=True), x)
    assert to_uint8(torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1)).flatten().tolist() == [0, 128, 255]


def _mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


@needs_imagenette
def test_imagenette() -> None:
    train, val = ImageFolder(IMAGENETTE / "train", 128), ImageFolder(IMAGENETTE / "val", 128, train=False)
    assert len(train) == 9469 and len(val) == 3925
    assert len({p.parent.name for p in train.files}) == 10
    x = train[0]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    gray = next(i for i, p in enumerate(val.files) if _mode(p) == "L")
    g = val[gray]
    assert g.shape == (3, 128, 128) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert len(find_images(IMAGENETTE / "val", (".JPEG",))) == 3925
