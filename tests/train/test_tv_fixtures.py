"""The fabricated datasets load through the real torchvision classes, offline."""

import time
from collections import Counter

import numpy as np
import pytest
from torchvision import datasets

import tv_fixtures as tvf


def _assert_pixels_match(img, label, num_classes, tol=3.0):
    mean = float(np.asarray(img, dtype=np.float64).mean())
    assert abs(mean - tvf.class_level(label, num_classes)) < tol, (mean, label)


@pytest.mark.parametrize(
    "make, cls, classes",
    [
        (tvf.make_mnist, datasets.MNIST, tvf.MNIST_CLASSES),
        (tvf.make_fashion_mnist, datasets.FashionMNIST, tvf.FASHION_MNIST_CLASSES),
    ],
)
def test_mnist_like(tmp_path, make, cls, classes):
    make(tmp_path, n_per_class=2)
    for train in (True, False):
        ds = cls(tmp_path, train=train, download=False)
        assert len(ds) == 20
        assert ds.classes == classes
        assert Counter(ds.targets.tolist()) == {k: 2 for k in range(10)}
        img, label = ds[0]
        assert img.size == (28, 28) and img.mode == "L"
        assert label == int(ds.targets[0])
        _assert_pixels_match(img, label, 10)


@pytest.mark.parametrize(
    "make, cls, classes",
    [
        (tvf.make_cifar10, datasets.CIFAR10, tvf.CIFAR10_CLASSES),
        (tvf.make_cifar100, datasets.CIFAR100, tvf.CIFAR100_CLASSES),
    ],
)
def test_cifar(tmp_path, monkeypatch, make, cls, classes):
    make(tmp_path, n_per_class=2)
    with pytest.raises(RuntimeError):  # the md5 checks really do reject fabricated files
        cls(tmp_path, train=True, download=False)
    tvf.patch_integrity(monkeypatch)
    n = len(classes)
    for train in (True, False):
        ds = cls(tmp_path, train=train, download=False)
        assert len(ds) == 2 * n
        assert ds.classes == classes and len(ds.classes) == n
        assert Counter(ds.targets) == {k: 2 for k in range(n)}
        img, label = ds[0]
        assert img.size == (32, 32) and img.mode == "RGB"
        assert label == ds.targets[0]
        for i in range(len(ds)):
            _assert_pixels_match(*ds[i], n)


def test_flowers102(tmp_path, monkeypatch):
    tvf.make_flowers102(tmp_path, n_per_class=2)
    tvf.patch_integrity(monkeypatch)
    seen = set()
    for split in ("train", "val", "test"):
        ds = datasets.Flowers102(tmp_path, split=split, download=False)
        assert len(ds) == 6
        assert Counter(ds._labels) == {0: 2, 1: 2, 2: 2}
        assert ds.classes[:3] == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
        img, label = ds[0]
        assert img.size == (32, 32) and img.mode == "RGB"
        assert label == ds._labels[0]
        for i in range(len(ds)):
            _assert_pixels_match(*ds[i], 3)
        seen |= {p.name for p in ds._image_files}
    assert len(seen) == 18  # splits are disjoint


def test_oxford_pets(tmp_path):
    tvf.make_oxford_pets(tmp_path, n_per_class=2)
    expected = ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]
    for split in ("trainval", "test"):
        ds = datasets.OxfordIIITPet(tmp_path, split=split, download=False)
        assert len(ds) == 6
        assert ds.classes == expected
        assert Counter(ds._labels) == {0: 2, 1: 2, 2: 2}
        assert ds._bin_labels == [0, 0, 1, 1, 1, 1]  # cat, cat, dog x4
        img, label = ds[0]
        assert img.size == (32, 32) and img.mode == "RGB"
        assert label == 0
        for i in range(len(ds)):
            _assert_pixels_match(*ds[i], 3)
    seg = datasets.OxfordIIITPet(tmp_path, split="test", target_types="segmentation")
    assert set(np.unique(np.asarray(seg[0][1]))) == {1, 2, 3}


def test_eurosat(tmp_path):
    tvf.make_eurosat(tmp_path, n_per_class=2)
    ds = datasets.EuroSAT(tmp_path, download=False)
    assert len(ds) == 6
    assert ds.classes == ["AnnualCrop", "Forest", "River"]
    assert Counter(ds.targets) == {0: 2, 1: 2, 2: 2}
    img, label = ds[0]
    assert img.size == (64, 64) and img.mode == "RGB"
    assert label == 0
    for i in range(len(ds)):
        _assert_pixels_match(*ds[i], 3)


def test_fabricators_are_fast_and_deterministic(tmp_path):
    makers = [tvf.make_mnist, tvf.make_fashion_mnist, tvf.make_cifar10, tvf.make_cifar100,
              tvf.make_flowers102, tvf.make_oxford_pets, tvf.make_eurosat]
    tvf.make_flowers102(tmp_path / "warm")  # import scipy.io outside the timed region
    t0 = time.perf_counter()
    for make in makers:
        make(tmp_path / "a")
    assert time.perf_counter() - t0 < 2.0
    for make in makers:
        make(tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix != ".mat":  # savemat embeds a creation timestamp in the header
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
