"""A person's folder of photos: the preview lists and samples it without
decoding everything; the decode runs on every core at reduced scale, names
each unreadable file once, shows progress, and is cached for every later run."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from helpers import photos_folder

N = 300  # over decode.PARALLEL_FROM: the process pool decodes it


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    # 6 of them 1024x768 (the rest 256x256) and 3 broken files: about a second to make
    return photos_folder(tmp_path_factory.mktemp("photos") / "holiday", N, large_every=50)


def test_a_large_jpeg_decoded_at_reduced_scale_looks_like_the_full_decode():
    from core.train import data

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((1024, 768), Image.BICUBIC)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    fast = data.decode_image(buf.getvalue(), 64).astype(int)
    # the reference: the whole image decoded, its centred square resized
    full = np.asarray(photo.crop((128, 0, 896, 768)).resize((64, 64), Image.BILINEAR)).transpose(2, 0, 1).astype(int)
    assert fast.shape == (3, 64, 64)
    assert np.abs(fast - full).mean() < 4  # of 255: the same picture


def test_the_preview_counts_by_listing_and_decodes_only_its_samples(photos, monkeypatch):
    from core.service import forms
    from core.train import data

    calls = []
    real = data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda src, size: calls.append(src) or real(src, size))
    view = forms.preview_folder(f"folder:{photos}", per_class=4)
    assert view.images == N + 3 and len(view.class_names) == 10
    assert view.counts == [31, 31, 31] + [30] * 7  # the broken files are files too, until decoded
    assert [len(s) for s in view.samples] == [4] * 10 and view.samples[0][0].shape == (64, 64, 3)
    assert len(calls) <= 10 * 4 + 3  # the samples (and a broken one met among them), not the folder
    assert view.skipped == 3 and "Broken_0.jpg" in view.skipped_example


def test_the_decode_uses_every_core_names_broken_files_once_and_is_cached(photos, fresh_raw_cache, caplog):
    from core.service import forms
    from core.train import data, decode

    dataset = f"folder:{photos}"
    assert forms.folder_state(dataset, 32).state == "todo"
    seen = []
    with decode.reporting(lambda done, total: seen.append((done, total))), caplog.at_level(logging.WARNING):
        raw = data.load_raw(dataset, 32)
    assert len(raw.y) == N and raw.x.shape == (N, 3, 32, 32)
    assert raw.skipped == 3 and sorted(e.split(" ")[0] for e in raw.skipped_examples) == [
        "class_0/Broken_0.jpg", "class_1/Broken_1.jpg", "class_2/Broken_2.jpg"]
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and all(f"Broken_{k}.jpg" in warnings[0] for k in range(3))
    assert seen[0] == (0, N + 3) and seen[-1] == (N + 3, N + 3) and len(seen) > 2  # progress as chunks finish
    # the labels follow the files whatever order the processes finished in
    assert raw.y.tolist() == sorted(raw.y.tolist())
    # every later run (another process too) reads the one cached copy, however the folder is written
    assert forms.folder_state(f"folder:{photos}/", 32).state == "decoded"
    data._raw_cached.cache_clear()
    again = data.load_raw(f"folder:{photos}/.", 32)
    assert bool((again.x == raw.x).all()) and again.skipped == 3


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_parallel_and_single_process_decodes_agree(photos):
    from core.train import data, decode

    items = [(n, r) for files in data.list_folder(photos).classes.values() for n, r in files]
    many, kept, bad = decode.decode_many(items, 24, processes=2)
    one, kept1, bad1 = decode.decode_many(items[:40], 24, processes=1)
    assert kept[:len(kept1)] == kept1 and (many[: len(one)] == one).all() and len(bad) == 3


def test_a_folder_too_big_for_memory_still_streams(photos, monkeypatch):
    from core.service import forms
    from core.train import data

    monkeypatch.setenv("TLAB_IN_MEMORY_MB", "1")
    assert forms.folder_state(f"folder:{photos}", 64).state == "stream"
    bundle = data.load(f"folder:{photos}", 64)
    assert isinstance(bundle.train.x, data.ImageFiles)


def test_cli_decode_prints_progress_then_the_result(photos, capsys, fresh_raw_cache):
    from core.cli.main import main as cli_main

    assert cli_main(["datasets", "--decode", f"folder:{photos}", "--image-size", "16", "--json"]) == 0
    out = capsys.readouterr()
    assert "decoding images: 303 / 303 (100%)" in out.err.splitlines()
    result = json.loads(out.out)
    assert result["state"] == "decoded now" and result["readable"] == N and result["skipped"] == 3
    assert cli_main(["datasets", "--decode", f"folder:{photos}", "--image-size", "16"]) == 0
    assert "already decoded" in capsys.readouterr().out


def test_two_loads_of_the_same_folder_at_once_decode_it_once(tmp_path, fresh_raw_cache, monkeypatch):
    # The page's "Decode now" and a run's first load: the second waits for the first's copy.
    import threading

    from core.train import data
    from core.train.data import base

    folder = photos_folder(tmp_path / "few", 40, classes=2, large_every=40, corrupt=0)
    decodes = []
    real = base.decode_many
    monkeypatch.setattr(base, "decode_many", lambda items, size: decodes.append(len(items)) or real(items, size))
    start = threading.Barrier(2)
    got = []

    def load() -> None:
        start.wait()
        got.append(len(data._raw_cached(data.canonical(f"folder:{folder}"), 16,
                                        data.source_stamp(data.canonical(f"folder:{folder}"))).y))
        data._raw_cached.cache_clear()  # as if each load were its own process

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [40, 40] and decodes == [40]


def test_a_damaged_entry_in_a_zip_of_photos_is_named_and_the_others_decode(photos, tmp_path):
    import zipfile

    from core.train import data, decode

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(photos.rglob("IMG_*.jpg")):
            z.write(f, f.relative_to(photos))
    raw = bytearray(archive.read_bytes())
    at = raw.find(b"\xff\xd8\xff", len(raw) // 2)  # inside some photo: its CRC no longer matches
    raw[at + 400 : at + 420] = bytes(20)
    archive.write_bytes(bytes(raw))
    items = [(n, r) for files in data.list_folder(archive).classes.values() for n, r in files]
    x, kept, bad = decode.decode_many(items, 16, processes=2)
    assert len(kept) == N - 1 and len(bad) == 1 and bad[0].endswith("(BadZipFile)")


def test_a_run_on_an_undecoded_folder_notes_its_decode_as_it_goes(photos, tmp_path, fresh_raw_cache):
    """Launched on a folder nobody decoded yet, a run's first minutes are the decode: the run says how far it is
    in its notes (the store keeps them; Live shows the latest), from 0 to every file, at most once a tenth.
    A small folder's decode (under the pool's threshold) passes in silence."""
    from core.train import engine
    from core.train.config import RunConfig
    from core.train.events import Note
    from helpers import image_folder

    notes = []
    listen = lambda e: notes.append(e.message) if isinstance(e, Note) and e.message.startswith("decoding") else None  # noqa: E731
    cfg = RunConfig(backbone="mlp", strategy="scratch", dataset=f"folder:{photos}", image_size=24, epochs=1, steps=1,
                    device="cpu")
    assert engine.train(cfg, run_dir=tmp_path / "run", listeners=(listen,)).status == "finished"
    assert notes[0] == "decoding images: 0 / 303 (0%)" and notes[-1] == "decoding images: 303 / 303 (100%)"
    assert 2 < len(notes) <= 11
    done = [int(n.split(":")[1].split("/")[0].replace(",", "")) for n in notes]
    assert done == sorted(done)

    notes.clear()
    small = image_folder(tmp_path / "small", {"a": 6, "b": 6})
    assert engine.train(cfg.replace(dataset=small), run_dir=tmp_path / "run2", listeners=(listen,)).status == "finished"
    assert notes == []
