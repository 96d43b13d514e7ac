"""core.train.data: the bundled digits, torchvision sets read offline from fabricated
files, a user's own folders/ZIPs of images, splits, and batch transforms."""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import paths
from core.errors import ConfigError, DataError
from core.train import data

import tv_fixtures as tvf

pytestmark = pytest.mark.usefixtures("fresh_raw_cache")  # load_raw is cached per process: each test starts (and leaves) it empty


def _all(b: data.DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([b.train.x, b.val.x, b.test.x]), torch.cat([b.train.y, b.val.y, b.test.y])


def _img_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# --- 1. digits, the bundled default ---------------------------------------------


def test_digits_sizes_classes_and_stratified_split():
    b = data.load("digits", 32, seed=0)
    assert b.class_names == [str(d) for d in range(10)] and b.num_classes == 10
    n = len(b.train) + len(b.val) + len(b.test)
    assert n == 1797
    assert abs(len(b.train) / n - 0.70) < 0.02
    assert abs(len(b.val) / n - 0.15) < 0.02
    assert abs(len(b.test) / n - 0.15) < 0.02
    for split in (b.train, b.val, b.test):  # stratified: every class in every split, in proportion
        counts = torch.bincount(split.y, minlength=10)
        assert (counts > 0).all()
        assert counts.max() - counts.min() <= 0.1 * len(split) + 2
    assert b.class_counts() == dict(zip(b.class_names, torch.bincount(b.train.y, minlength=10).tolist()))


def test_digits_are_scikit_learns_image_for_image():
    """The bundled digits are read from scikit-learn's own data file without importing scikit-learn (that a
    run then never imports it is checked on a real CLI run in tests/cli/test_cli.py)."""
    from sklearn.datasets import load_digits

    from core.train.data.builtin import _digits_arrays

    images, target = _digits_arrays()
    d = load_digits()
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(target, d.target)


def test_digits_splits_are_disjoint():
    # Digits contains a few exact duplicate images, so identify rows by (image, label)
    # multiplicity: the three splits together must be exactly the dataset once.
    from sklearn.datasets import load_digits

    b = data.load("digits", 16, seed=3)
    x, y = _all(b)
    raw = data.load_raw("digits", 16)
    key = lambda xs, ys: Counter((bytes(xi.flatten().tolist()), int(yi)) for xi, yi in zip(xs, ys))
    assert key(x, y) == key(raw.x, raw.y)
    assert len(raw.y) == len(load_digits().target) == 1797


def test_digits_seed_reproducible_and_seed_dependent():
    a, a2, c = data.load("digits", 16, seed=1), data.load("digits", 16, seed=1), data.load("digits", 16, seed=2)
    for s1, s2 in ((a.train, a2.train), (a.val, a2.val), (a.test, a2.test)):
        assert torch.equal(s1.x, s2.x) and torch.equal(s1.y, s2.y)
    assert len(a.val) == len(c.val)
    assert not torch.equal(a.val.x, c.val.x)
    assert not torch.equal(a.test.x, c.test.x)


def test_digits_images_are_real_digits():
    b = data.load("digits", 32, seed=0)
    x, y = _all(b)
    assert x.dtype == torch.uint8 and x.shape == (1797, 1, 32, 32)
    xf = x.float()
    assert xf.std(dim=(1, 2, 3)).min() > 20  # no blank/constant image
    assert xf.amin() == 0 and xf.amax() > 200  # full range of ink, not squashed
    # A "0" has a hole in the middle; a "1" is a stroke down the middle.
    zero, one = xf[y == 0].mean(0)[0], xf[y == 1].mean(0)[0]
    assert zero[12:20, 12:20].mean() < 80 < one[12:20, 12:20].mean()


# --- 2. labels per class --------------------------------------------------------


def test_labels_per_class_keeps_k_train_images_per_class():
    full = data.load("digits", 16, seed=4)
    few = data.load("digits", 16, seed=4, labels_per_class=5)
    assert torch.bincount(few.train.y, minlength=10).tolist() == [5] * 10
    # The kept images are a subset of the full training split.
    full_rows = {bytes(r.flatten().tolist()) for r in full.train.x}
    assert all(bytes(r.flatten().tolist()) in full_rows for r in few.train.x)
    for s1, s2 in ((full.val, few.val), (full.test, few.test)):
        assert torch.equal(s1.x, s2.x) and torch.equal(s1.y, s2.y)


def test_labels_per_class_too_large_names_the_largest_usable_k():
    full = data.load("digits", 16, seed=0)
    largest = min(full.class_counts().values())
    assert torch.bincount(data.load("digits", 16, seed=0, labels_per_class=largest).train.y).tolist() == [largest] * 10
    with pytest.raises(ConfigError) as e:
        data.load("digits", 16, seed=0, labels_per_class=largest + 1)
    m = re.search(r"at most (\d+)", str(e.value))
    assert m and int(m.group(1)) == largest
    assert str(largest + 1) in str(e.value)


# --- 3. torchvision sets, offline from files on disk ----------------------------

# name, maker, kwargs, class names, channels, official test count (None: we split)
TV_SETS = [
    ("mnist", tvf.make_mnist, {}, tvf.MNIST_CLASSES, 1, 30),
    ("fashion_mnist", tvf.make_fashion_mnist, {}, tvf.FASHION_MNIST_CLASSES, 1, 30),
    ("cifar10", tvf.make_cifar10, {}, tvf.CIFAR10_CLASSES, 3, 30),
    ("cifar100", tvf.make_cifar100, {}, tvf.CIFAR100_CLASSES, 3, 300),
    ("flowers102", tvf.make_flowers102, {"num_classes": 3},
     ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"], 3, 9),
    ("oxford_pets", tvf.make_oxford_pets, {"num_classes": 3},
     [tvf.pet_class_name(b) for b in tvf.PET_BREEDS[:3]], 3, 9),
    ("eurosat", tvf.make_eurosat, {"classes": ("River", "Forest", "AnnualCrop"), "size": 32},
     ["AnnualCrop", "Forest", "River"], 3, None),
]


@pytest.mark.parametrize("name, make, kwargs, classes, channels, n_test", TV_SETS, ids=[t[0] for t in TV_SETS])
def test_torchvision_set_loads_offline(monkeypatch, name, make, kwargs, classes, channels, n_test):
    tvf.patch_integrity(monkeypatch)
    make(paths.datasets_dir(), n_per_class=3, **kwargs)
    assert data.availability(data.get(name)) == "downloaded"
    b = data.load(name, 32, seed=0)
    k = len(classes)
    assert b.class_names == classes and b.num_classes == k
    x, y = _all(b)
    assert x.dtype == torch.uint8 and x.shape[1:] == (channels, 32, 32)
    if n_test is not None:  # the official test split is the test set; train+val is the official train part
        assert len(b.test) == n_test
        assert len(b.train) + len(b.val) == {"flowers102": 2 * n_test}.get(name, n_test)
    else:
        assert len(x) == 3 * k
    for split in (b.train, b.val, b.test):
        assert set(split.y.tolist()) == set(range(k))
    # Labels line up with pixels: each image's mean grey is its own class's level.
    levels = torch.tensor([tvf.class_level(c, k) for c in range(k)], dtype=torch.float64)
    means = x.double().mean(dim=(1, 2, 3))
    assert torch.equal((means[:, None] - levels[None]).abs().argmin(1), y)
    assert (means - levels[y]).abs().max() < 4


@pytest.mark.parametrize("name", [t[0] for t in TV_SETS])
def test_torchvision_set_absent_offline_says_what_to_do(name):
    spec = data.get(name)
    with pytest.raises(DataError) as e:
        data.load(name, 16)
    msg = str(e.value)
    assert spec.title in msg
    assert str(paths.datasets_dir()) in msg
    assert "digits" in msg and "offline" in msg
    assert "\n" not in msg and "Traceback" not in msg and 'File "' not in msg
    assert data.availability(spec) == "download"


# --- 4. a user's folder or ZIP of class folders -------------------------------

COLOURS = {"zebra": (220, 30, 30), "apple": (30, 200, 40), "mango": (40, 50, 210)}  # sorted: apple, mango, zebra


def make_folder(root: Path, colours=COLOURS, n: int = 6) -> Path:
    """Class subfolders of small PNG/JPEG images, each class a flat colour."""
    for cls, rgb in colours.items():
        d = root / cls
        d.mkdir(parents=True)
        for i in range(n):
            im = Image.new("RGB", (24 + 4 * i, 20), rgb)  # also non-square sizes
            if i % 2:
                im.save(d / f"img{i}.jpg", quality=95)
            else:
                im.save(d / f"img{i}.png")
    return root


def zip_of(folder: Path, zpath: Path, prefix: str = "") -> Path:
    """ZIP of `folder`; class folders stored in reverse order (the loader must sort them)."""
    files = sorted((f for f in folder.rglob("*") if f.is_file()), key=lambda f: f.name)
    files = sorted(files, key=lambda f: f.relative_to(folder).parts[0], reverse=True)
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in files:
            zf.write(f, prefix + f.relative_to(folder).as_posix())
    return zpath


def _assert_colours(b: data.DataBundle, colours=COLOURS) -> None:
    x, y = _all(b)
    expect = torch.tensor([colours[c] for c in b.class_names], dtype=torch.float64)
    got = x.double().mean(dim=(2, 3))
    assert (got - expect[y]).abs().max() < 6


def test_folder_loads_with_sorted_class_names(tmp_path):
    root = make_folder(tmp_path / "imgs")
    b = data.load(f"folder:{root}", 16, seed=0)
    assert b.class_names == ["apple", "mango", "zebra"]
    x, y = _all(b)
    assert x.shape == (18, 3, 16, 16) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [6, 6, 6]
    assert b.skipped == 0 and b.skipped_examples == []
    for split in (b.train, b.val, b.test):
        assert set(split.y.tolist()) == {0, 1, 2}
    _assert_colours(b)


@pytest.mark.parametrize("prefix", ["", "my_images/"], ids=["flat", "wrapped"])
def test_zip_loads_same_as_folder(tmp_path, prefix):
    root = make_folder(tmp_path / "imgs")
    (root / "README.txt").write_text("a loose file beside the class folders is ignored")
    z = zip_of(root, tmp_path / "imgs.zip", prefix)
    raw_dir, raw_zip = data.load_raw(f"folder:{root}", 16), data.load_raw(f"folder:{z}", 16)
    assert raw_zip.class_names == raw_dir.class_names == ["apple", "mango", "zebra"]
    assert torch.equal(raw_zip.x, raw_dir.x) and torch.equal(raw_zip.y, raw_dir.y)
    bd, bz = data.load(f"folder:{root}", 16, seed=5), data.load(f"folder:{z}", 16, seed=5)
    for s1, s2 in ((bd.train, bz.train), (bd.val, bz.val), (bd.test, bz.test)):
        assert torch.equal(s1.x, s2.x) and torch.equal(s1.y, s2.y)
    assert bz.skipped == 0


def test_folder_cache_sees_added_images(tmp_path):
    root = make_folder(tmp_path / "imgs")
    assert len(data.load_raw(f"folder:{root}", 16).y) == 18
    for i in range(3):  # added inside a class folder: the top folder's mtime does not change
        Image.new("RGB", (20, 20), COLOURS["apple"]).save(root / "apple" / f"new{i}.png")
    raw = data.load_raw(f"folder:{root}", 16)
    assert torch.bincount(raw.y).tolist() == [9, 6, 6]


def _unusual_images() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, suffix): modes that need care to decode as RGB."""
    out = {}
    out["grey"] = (_img_bytes(Image.new("L", (20, 20), 90)), ".png")
    p = Image.new("P", (20, 20), 1)
    p.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    p.paste(0, (0, 0, 10, 20))  # left half: the transparent index
    out["palette"] = (_img_bytes(p, transparency=0), ".png")
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 0))  # fully transparent blue...
    rgba.paste((0, 160, 0, 255), (0, 0, 20, 10))  # ...under an opaque green top half
    out["rgba"] = (_img_bytes(rgba), ".png")
    arr = np.full((20, 20), 1000, np.uint16)
    arr[:, 10:] = 60000
    out["i16"] = (_img_bytes(Image.fromarray(arr)), ".png")
    out["cmyk"] = (_img_bytes(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG", quality=95), ".jpg")
    # Stored: top red, bottom blue; EXIF orientation 6 = rotate 90 degrees clockwise
    # to display, so it must decode as left blue, right red.
    im = Image.new("RGB", (24, 24), (255, 0, 0))
    im.paste((0, 0, 255), (0, 12, 24, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif"] = (_img_bytes(im, "JPEG", quality=95, exif=exif), ".jpg")
    return out


def test_unusual_image_modes_decode_as_rgb(tmp_path):
    imgs = _unusual_images()
    assert Image.open(io.BytesIO(imgs["i16"][0])).mode.startswith("I")
    assert Image.open(io.BytesIO(imgs["cmyk"][0])).mode == "CMYK"
    d = {name: data.decode_image(b, 16).astype(int) for name, (b, _) in imgs.items()}
    for name, a in d.items():
        assert a.shape == (3, 16, 16) and a.dtype.kind == "i", name
    assert (d["grey"] == 90).all()
    pal = d["palette"]
    assert (pal[:, :, :4] == 255).all()  # transparent -> white background
    assert np.abs(pal[:, :, 12:].mean(axis=(1, 2)) - [200, 30, 40]).max() < 3
    rgba = d["rgba"]
    assert np.abs(rgba[:, :4].mean(axis=(1, 2)) - [0, 160, 0]).max() < 3
    assert (rgba[:, 12:] == 255).all()
    i16 = d["i16"]
    assert (i16[0] == i16[1]).all() and (i16[1] == i16[2]).all()
    assert i16[:, :, :4].max() < 20 and i16[:, :, 12:].min() > 240  # dark left, bright right: not saturated
    assert np.abs(d["cmyk"].mean(axis=(1, 2)) - [255, 0, 0]).max() < 6
    ex = d["exif"]
    assert np.abs(ex[:, :, :6].mean(axis=(1, 2)) - [0, 0, 255]).max() < 12  # left: blue
    assert np.abs(ex[:, :, 10:].mean(axis=(1, 2)) - [255, 0, 0]).max() < 12  # right: red

    # Through a folder load they all come out as 3-channel images too.
    root = tmp_path / "odd"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for name, (b, suffix) in imgs.items():
            (root / cls / f"{name}{suffix}").write_bytes(b)
    bundle = data.load(f"folder:{root}", 16)
    x, _ = _all(bundle)
    assert x.shape == (12, 3, 16, 16) and bundle.skipped == 0


# --- 5. bad folders and files ---------------------------------------------------


def test_single_class_folder_is_an_error(tmp_path):
    root = make_folder(tmp_path / "one", {"cats": (200, 0, 0)})
    with pytest.raises(DataError, match=r"1 class folder.*cats.*at least 2"):
        data.load(f"folder:{root}", 16)


def test_no_class_folders_is_an_error(tmp_path):
    root = tmp_path / "loose"
    root.mkdir()
    Image.new("RGB", (16, 16)).save(root / "a.png")
    with pytest.raises(DataError, match=r"found 0 class folder"):
        data.load(f"folder:{root}", 16)


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "durian").mkdir()
    (root / "durian" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as e:
        data.load(f"folder:{root}", 16)
    msg = str(e.value)
    assert "durian" in msg and "no readable image" in msg
    assert "apple" not in msg and "zebra" not in msg


def test_every_problem_is_listed(tmp_path):
    root = tmp_path / "bad"
    (root / "only").mkdir(parents=True)
    (root / "only" / "x.png").write_text("not an image")
    with pytest.raises(DataError) as e:
        data.load(f"folder:{root}", 16)
    msg = str(e.value)
    assert "1 class folder" in msg and "no readable image: only" in msg and "x.png" in msg


def test_zip_that_is_not_a_zip(tmp_path):
    z = tmp_path / "photos.zip"
    z.write_text("this is not a zip")
    with pytest.raises(DataError, match=r"photos\.zip is not a readable ZIP"):
        data.load(f"folder:{z}", 16)


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        data.load(f"folder:{missing}", 16)
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(ConfigError):
        data.load("folder:", 16)
    with pytest.raises(ConfigError, match="digits"):
        data.load("no_such_set", 16)


def _broken_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    png = _img_bytes(Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    return {"text.png": b"hello, I am not a picture\n", "truncated.png": png[: len(png) // 2], "empty.jpg": b""}


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "imgs")
    for (name, content), cls in zip(_broken_files().items(), ("apple", "mango", "zebra")):
        (root / cls / name).write_bytes(content)
    b = data.load(f"folder:{root}", 16)
    assert len(_all(b)[1]) == 18
    assert b.skipped == 3
    joined = " ".join(b.skipped_examples)
    assert "text.png" in joined and "truncated.png" in joined and "empty.jpg" in joined
    _assert_colours(b)


def test_zip_unsafe_entries_are_skipped_and_nothing_is_written(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root = make_folder(tmp_path / "imgs")
    z = zip_of(root, tmp_path / "imgs.zip")
    png = _img_bytes(Image.new("RGB", (16, 16), (1, 2, 3)))
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("../evil.png", png)
        zf.writestr("apple/../../evil2.png", png)
        zf.writestr("/tmp/tlab_abs_evil/apple/evil3.png", png)
        link = zipfile.ZipInfo("apple/link.png")
        link.external_attr = 0o120777 << 16  # a symlink entry
        zf.writestr(link, "/etc/passwd")
    before = sorted(p for p in tmp_path.parent.rglob("*") if tmp_path.parent in p.parents)
    b = data.load(f"folder:{z}", 16)
    assert b.class_names == ["apple", "mango", "zebra"]
    assert len(_all(b)[1]) == 18
    assert b.skipped == 4
    joined = " ".join(b.skipped_examples)
    for name in ("../evil.png", "evil2.png", "/tmp/tlab_abs_evil/apple/evil3.png", "apple/link.png"):
        assert name in joined
    # The only thing written is the decoded-image cache in the data folder.
    cache_root = paths.home() / "cache"
    after = sorted(p for p in tmp_path.parent.rglob("*") if tmp_path.parent in p.parents)
    new = [p for p in after if p not in before]
    assert new and all(p == cache_root.parent or p == cache_root or cache_root in p.parents for p in new)
    assert [p for p in after if p not in new] == before
    assert not Path("/tmp/tlab_abs_evil").exists() and not (tmp_path.parent / "evil.png").exists()
    assert list(work.iterdir()) == []


# --- 6. batch transforms ----------------------------------------------------------


def test_batch_input_normalises_and_expands_grey():
    raw = data.load_raw("digits", 16)
    x = raw.x[:256]
    assert x.shape[1] == 1
    m = float(x.float().div(255).mean())
    s = float(x.float().div(255).std())
    out = data.batch_input(x, (m, m, m), (s, s, s))
    assert out.dtype == torch.float32 and out.shape == (256, 3, 16, 16)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert abs(float(out.mean())) < 1e-3 and abs(float(out.std()) - 1) < 1e-3
    # ImageNet statistics: black and white pixels land where they should.
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    bw = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    bw[1] = 255
    out = data.batch_input(bw, mean, std)
    for c in range(3):
        assert torch.allclose(out[0, c], torch.full((4, 4), -mean[c] / std[c]))
        assert torch.allclose(out[1, c], torch.full((4, 4), (1 - mean[c]) / std[c]))


def test_unlabelled_images_load_from_any_folder_layout_or_zip(tmp_path):
    import zipfile

    import numpy as np
    from PIL import Image

    root = tmp_path / "shots"
    for i, sub in enumerate(["", "a", "a/b"]):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(root / sub / f"{i}.jpg")
    (root / "readme.md").write_text("no image")
    x, names, bad = data.load_unlabelled(f"folder:{root}", 16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8 and bad == 0
    assert sorted(names) == ["0.jpg", "a/1.jpg", "a/b/2.jpg"]
    with zipfile.ZipFile(tmp_path / "shots.zip", "w") as z:
        z.write(root / "a" / "1.jpg", "x/1.jpg")
        z.writestr("x/broken.png", b"not a png")
    x, names, bad = data.load_unlabelled(tmp_path / "shots.zip", 16)
    assert len(x) == 1 and bad == 1
    with pytest.raises(DataError, match="does not exist"):
        data.load_unlabelled(tmp_path / "nowhere", 16)
