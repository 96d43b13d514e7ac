"""Every way bad input comes in, batched: images, archives and folders, paths,
run ids, settings and limits. Each case gets a message that says what is wrong
and what to do, and nothing outside the data folder is touched."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import bomb_png
from core import limits, paths
from core.errors import ConfigError, DataError
from core.insight import predict
from core.train import data
from core.train.config import RunConfig
from core.train.validate import validate

pytestmark = pytest.mark.usefixtures("fresh_raw_cache")


def png(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    return png(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


GOOD = png(Image.new("RGB", (24, 20), (200, 30, 40)))
JPEG = png(Image.new("RGB", (24, 20), (30, 40, 200)), "JPEG", quality=90)
UNREADABLE = {
    "empty.png": b"",
    "text.png": b"I am a text file wearing a .png name\n",
    "truncated.png": GOOD[: len(GOOD) // 2],
    "truncated.jpg": JPEG[: len(JPEG) // 3],
    "random.jpg": np.random.default_rng(0).bytes(2048),
    "bomb.png": bomb_png(),
}


# --- images: the Predict page and `predict` CLI path ------------------------------------


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_image_is_a_data_error_that_says_what_to_use(name):
    with pytest.raises(DataError) as e:
        predict.load_image(UNREADABLE[name], 16)
    msg = str(e.value)
    assert msg.startswith("could not read the image") and "PNG, JPEG" in msg
    assert "Traceback" not in msg and len(msg) < 400


def test_decompression_bomb_names_the_pixel_limit_and_spends_no_memory():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for side in (50_000, 7_000):  # past PIL's own 2x guard, and between 1x and 2x the limit (49 M > 40 M)
        with pytest.raises(DataError, match=r"pixels per image limit .*TLAB_MAX_IMAGE_PIXELS"):
            predict.load_image(bomb_png(side), 16)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB: nothing decoded


def test_pixel_limit_is_a_setting(monkeypatch):
    real = png(Image.new("RGB", (200, 200), (10, 200, 10)))
    assert predict.load_image(real, 16).shape == (1, 3, 16, 16)
    monkeypatch.setenv("TLAB_MAX_IMAGE_PIXELS", "10000")
    with pytest.raises(DataError, match=r"200x200 pixels, over the pixels per image limit \(10,000 pixels"):
        predict.load_image(real, 16)


def test_animated_gif_uses_its_first_frame():
    x = predict.load_image(animated_gif(), 16)[0].double().mean(dim=(1, 2))
    assert (x - torch.tensor([250.0, 0, 0])).abs().max() < 8


def test_extreme_aspect_ratio_decodes_in_bounded_memory():
    strip = png(Image.new("L", (20_000, 1), 128))  # short-side resize alone would make 320,000 x 16
    assert data.decode_image(strip, 16).shape == (3, 16, 16)


# --- archives and folders ---------------------------------------------------------------


def make_zip(path: Path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return path


def classes(n_per_class: int = 4, names=("apple", "mango")) -> dict[str, bytes]:
    return {f"{c}/{i}.png": GOOD if k % 2 else JPEG for k, c in enumerate(names) for i in range(n_per_class)}


@pytest.mark.parametrize("entries,needle", [
    ({}, "found 0 class folder"),
    ({"readme.txt": b"hi", "notes/a.txt": b"no pictures"}, "no readable image: notes"),
    ({f"cats/{i}.png": GOOD for i in range(5)}, "1 class folder(s) (cats); at least 2 are needed"),
    ({**classes(), "durian/notes.txt": b"empty class"}, "no readable image: durian"),
    ({"a/1.png": b"", "b/1.png": b"junk"}, "2 unreadable file(s) skipped"),
], ids=["empty-zip", "no-images", "one-class", "empty-class", "only-unreadable"])
def test_unusable_zip_says_what_is_wrong_and_what_is_expected(tmp_path, entries, needle):
    z = make_zip(tmp_path / "upload.zip", entries)
    with pytest.raises(DataError) as e:
        data.load(f"folder:{z}", 16)
    msg = str(e.value)
    assert needle in msg and "one subfolder per class" in msg


def test_good_zip_skips_and_counts_every_unreadable_image_and_nested_archive(tmp_path):
    entries = {**classes(), **{f"mango/{n}": b for n, b in UNREADABLE.items()},
               "apple/inner.zip": make_zip(tmp_path / "inner.zip", classes()).read_bytes()}
    b = data.load(f"folder:{make_zip(tmp_path / 'photos.zip', entries)}", 16)
    assert b.class_names == ["apple", "mango"] and len(b.train) + len(b.val) + len(b.test) == 8
    assert b.skipped == len(UNREADABLE) + 1
    assert any("inner.zip (an archive inside the archive" in s for s in b.skipped_examples)
    assert any("bomb.png (DecompressionBombError)" in s for s in b.skipped_examples)


def test_zip_bomb_by_total_size_is_refused_before_unpacking(tmp_path, monkeypatch):
    monkeypatch.setenv("TLAB_MAX_ARCHIVE_MB", "1")
    z = make_zip(tmp_path / "big.zip", {**classes(), "apple/huge.bmp": os.urandom(1_200_000)}, zipfile.ZIP_STORED)
    with pytest.raises(DataError, match=r"big\.zip unpacks to 1 MB, over the uncompressed archive size limit \(1 MB; raise it with TLAB_MAX_ARCHIVE_MB\)"):
        data.load(f"folder:{z}", 16)


def test_zip_bomb_by_ratio_is_refused_before_unpacking(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", {**classes(), "apple/zeros.bmp": b"\0" * 30_000_000})
    assert z.stat().st_size < 100_000
    with pytest.raises(DataError) as e:
        data.load(f"folder:{z}", 16)
    assert "zeros.bmp" in str(e.value) and "ZIP bomb" in str(e.value) and "TLAB_MAX_ZIP_RATIO" in str(e.value)


def test_thousands_of_tiny_files_load_and_the_file_limit_is_a_setting(tmp_path, monkeypatch):
    tiny = png(Image.new("RGB", (4, 4), (0, 90, 0)))
    entries = {f"{c}/{i:05d}.png": tiny for c in ("a", "b", "c") for i in range(1000)}
    z = make_zip(tmp_path / "many.zip", entries)
    raw = data.load_raw(f"folder:{z}", 8)
    assert len(raw.y) == 3000 and raw.x.shape == (3000, 3, 8, 8)
    monkeypatch.setenv("TLAB_MAX_FILES", "2500")  # a new upload is checked against it (one decoded before stays cached)
    z2 = make_zip(tmp_path / "many2.zip", entries)
    with pytest.raises(DataError, match=r"3,000 entries, over the files per dataset limit \(2,500 files; raise it with TLAB_MAX_FILES\)"):
        data.load_raw(f"folder:{z2}", 8)


def test_folder_file_limit_and_links_out_of_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for c in ("apple", "mango"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(GOOD)
    secret = tmp_path / "elsewhere"
    (secret / "private").mkdir(parents=True)
    (secret / "private" / "me.png").write_bytes(GOOD)
    (root / "apple" / "linked.png").symlink_to(secret / "private" / "me.png")
    (root / "linked_class").symlink_to(secret / "private", target_is_directory=True)
    b = data.load(f"folder:{root}", 16)
    assert b.class_names == ["apple", "mango"] and b.skipped == 2
    assert any("linked.png (a link" in s for s in b.skipped_examples)
    assert any("linked_class/ (a link to a folder" in s for s in b.skipped_examples)
    monkeypatch.setenv("TLAB_MAX_FILES", "5")
    (root / "mango" / "3.png").write_bytes(GOOD)  # changed files: decoded (and checked) again
    data._raw_cached.cache_clear()
    with pytest.raises(DataError, match="more than 5 files.*TLAB_MAX_FILES"):
        data.load(f"folder:{root}", 16)


# --- where folder: may read, where the app may write --------------------------------------


def test_folder_outside_the_allowed_roots_is_refused_before_it_is_looked_at(tmp_path, monkeypatch):
    monkeypatch.delenv("TLAB_FOLDER_ROOTS")
    for outside in ("/etc", str(tmp_path / "imgs"), "/no/such/place", f"{paths.home()}/../imgs"):
        with pytest.raises(ConfigError) as e:
            validate(RunConfig(dataset=f"folder:{outside}"))
        assert "outside the folders this app may read" in str(e.value) and "python -m core allow" in str(e.value)
        assert "does not exist" not in str(e.value)  # says nothing about what is out there


def test_folder_roots_setting_allows_more_and_links_do_not_lead_out(tmp_path, monkeypatch):
    monkeypatch.delenv("TLAB_FOLDER_ROOTS")
    shared = tmp_path / "shared"
    shared.mkdir()
    make_zip(shared / "x.zip", classes())
    inside = paths.datasets_dir()
    inside.mkdir(parents=True)
    make_zip(inside / "mine.zip", classes())
    assert data.load(f"folder:{inside / 'mine.zip'}", 16).class_names == ["apple", "mango"]
    (inside / "sneaky.zip").symlink_to(shared / "x.zip")
    with pytest.raises(ConfigError, match="outside the folders"):
        data.load(f"folder:{inside / 'sneaky.zip'}", 16)
    monkeypatch.setenv("TLAB_FOLDER_ROOTS", f"{tmp_path / 'nowhere'}{os.pathsep}{shared}")
    assert data.load(f"folder:{shared / 'x.zip'}", 16).class_names == ["apple", "mango"]


@pytest.mark.parametrize("run_id", ["../etc", "..", "/tmp/x", "a/b", "a\\b", "", " x", "x" * 65, "a\x00b", "é"])
def test_run_ids_are_validated_before_a_path_is_built(run_id):
    with pytest.raises(ConfigError, match="is not a run id"):
        paths.run_dir(run_id)


def test_outputs_only_inside_the_data_folder(tmp_path):
    home = paths.home()
    (home / "exports").mkdir(parents=True)
    assert paths.inside_home(home / "exports" / "m.onnx") == (home / "exports" / "m.onnx").resolve()
    (home / "exports" / "out").symlink_to(tmp_path)
    for bad in (tmp_path / "m.onnx", home / ".." / "m.onnx", home / "exports" / "out" / "m.onnx", Path("/etc/passwd")):
        with pytest.raises(ConfigError, match="outside the data folder"):
            paths.inside_home(bad, "export")


def test_upload_over_the_limit_is_refused_and_nothing_is_written(monkeypatch):
    monkeypatch.setenv("TLAB_MAX_UPLOAD_MB", "0.5")
    with pytest.raises(DataError, match=r"big\.zip is 1\.0 MB, over the upload size limit \(0\.5 MB; raise it with TLAB_MAX_UPLOAD_MB\)"):
        paths.save_upload("datasets", "big.zip", b"\0" * (1 << 20))
    assert not paths.home().exists()
    p = paths.save_upload("datasets", "../../evil name.zip", b"PK")
    assert p.parent.parent == paths.home() / "uploads" / "datasets" and p.name == "evil_name.zip"


def test_a_limit_set_to_nonsense_says_which_variable(monkeypatch):
    monkeypatch.setenv("TLAB_MAX_FILES", "lots")
    with pytest.raises(ConfigError, match="TLAB_MAX_FILES='lots' is not a number"):
        limits.max_files()
    monkeypatch.setenv("TLAB_MAX_FILES", "-3")
    with pytest.raises(ConfigError, match="must be positive"):
        limits.max_files()


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("changes,needle", [
    ({"epochs": 0}, "epochs must be between 1 and 1000"),
    ({"lr": -0.1}, "learning rate must be a number in (0, 10]"),
    ({"lr": 1e9}, "learning rate must be a number in (0, 10]"),
    ({"lr": float("inf")}, "learning rate"),
    ({"image_size": 1}, "image size must be between 16 and 1024"),
    ({"image_size": 10_000}, "image size must be between 16 and 1024"),
    ({"batch_size": 0}, "batch size must be between 1 and 4096"),
    ({"labels_per_class": 0}, "labels per class must be at least 1"),
    ({"backbone": "resnet9000"}, "Unknown backbone"),
    ({"dataset": "imagenet22k"}, "Unknown dataset 'imagenet22k'"),
    ({"strategy": "everything"}, "Unknown strategy"),
    ({"device": "tpu"}, "device must be one of"),
    ({"teacher": "../../elsewhere"}, "is not a run id"),
])
def test_bad_settings_are_refused_with_what_to_change(changes, needle):
    with pytest.raises(ConfigError) as e:
        validate(RunConfig(**changes))
    assert needle in str(e.value)


def test_batch_larger_than_the_dataset_trains_on_what_there_is_and_says_so(tmp_path, one_thread):
    from core.train import engine, events

    notes = []
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=1, image_size=16, batch_size=4096,
                    labels_per_class=20, device="cpu")
    result = engine.train(cfg, run_dir=paths.run_dir("batchtest"),
                          listeners=(lambda ev: notes.append(ev.message) if isinstance(ev, events.Note) else None,))
    assert result.status == "finished"
    assert any("batch size 4096 is larger than the 200 training images" in n for n in notes)
