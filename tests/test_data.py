"""Image datasets: layouts, modes, value range, determinism under a seed, loaders, and the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.data.images import (
    ImageFolder,
    PhotoDataset,
    build_dataset,
    find_images,
    from_uint8,
    load_image,
    make_loader,
    set_epoch,
    to_uint8,
)

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared/data/images/imagenette2"
needs_imagenette = pytest.mark.skipif(not IMAGENETTE.is_dir(), reason=f"real data not present at {IMAGENETTE}")
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
    with pytest.raises(ValueError, match="nowhere"):
        ImageFolder(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/broken.jpg").write_bytes(b"not a jpeg at all")
    data = ImageFolder(tmp_path / "bad", S)
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        data[0]
    _write(tmp_path / "cut/truncated.png", "RGB", (64, 64), 0)
    raw = (tmp_path / "cut/truncated.png").read_bytes()
    (tmp_path / "cut/truncated.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"truncated\.png"):
        ImageFolder(tmp_path / "cut", S)[0]


def test_build_dataset(tree: Path) -> None:
    train, val = build_dataset(tree, "train", S), build_dataset(tree, "val", S)
    assert isinstance(train, ImageFolder) and len(train) == 4 and train.crop.train
    assert isinstance(val, ImageFolder) and len(val) == 1 and not val.crop.train
    flat = build_dataset(tree / "train/classA", "val", S)
    assert isinstance(flat, ImageFolder) and len(flat) == 2
    (tree / "val/classA/v1.JPG").unlink()
    (tree / "val/classA").rmdir()
    (tree / "val").rmdir()
    with pytest.raises(ValueError, match="'val' subfolder"):  # never fall back to the training images
        build_dataset(tree, "val", S)
    with pytest.raises(ValueError, match="nowhere"):
        build_dataset(tree / "nowhere", "train", S)
    with pytest.raises(ValueError, match="split"):
        build_dataset(tree, "test", S)


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
