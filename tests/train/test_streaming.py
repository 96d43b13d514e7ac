"""Folders too large to hold decoded stream from their files through a
DataLoader: the same images, labels and splits as the decoded path, and a
run trains from them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.train import data, engine, events
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("fresh_raw_cache")


@pytest.fixture
def digit_folder(tmp_path) -> Path:
    """Real digits as PNG files, three classes of 30."""
    raw = data.load_raw("digits", 16)
    root = tmp_path / "digits_png"
    for c in (0, 1, 7):
        (root / f"d{c}").mkdir(parents=True)
        for k, i in enumerate(torch.nonzero(raw.y == c).flatten()[:30].tolist()):
            Image.fromarray(raw.x[i, 0].numpy()).save(root / f"d{c}" / f"{k}.png")
    data._raw_cached.cache_clear()
    return root


def _stream(monkeypatch):
    monkeypatch.setenv("TLAB_IN_MEMORY_MB", "0.001")  # 1 kB: any folder streams


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_streamed_folder_gives_the_same_splits_and_images_as_the_decoded_one(digit_folder, monkeypatch, tmp_path, as_zip):
    source = digit_folder
    if as_zip:
        source = tmp_path / "digits.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for f in sorted(digit_folder.rglob("*.png")):
                zf.write(f, f"wrapper/{f.relative_to(digit_folder)}")
    name = f"folder:{source}"
    decoded = data.load(name, 16, seed=3)
    assert isinstance(decoded.train.x, torch.Tensor)
    _stream(monkeypatch)
    streamed = data.load(name, 16, seed=3)
    assert isinstance(streamed.train.x, data.ImageFiles)
    assert streamed.class_names == decoded.class_names == ["d0", "d1", "d7"]
    for part in ("train", "val", "test"):
        a, b = getattr(decoded, part), getattr(streamed, part)
        assert torch.equal(a.y, b.y) and torch.equal(a.index, b.index)
        # decoded by two DataLoader worker processes, in a shuffled order
        batches = data.Batches(b, 8, torch.device("cpu"), workers=2)
        order = torch.randperm(len(b), generator=torch.Generator().manual_seed(0))
        got = list(batches(order))
        xs, ys, pos = (torch.cat(t) for t in zip(*got))
        assert torch.equal(pos, order) and torch.equal(ys, a.y[order])
        assert torch.equal(xs, a.x[order])  # the very same pixels


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_a_run_trains_from_a_streamed_folder_and_says_what_it_skipped(digit_folder, monkeypatch, tmp_path, one_thread):
    (digit_folder / "d7" / "broken.png").write_bytes(b"not an image")
    _stream(monkeypatch)
    name = f"folder:{digit_folder}"
    # a seed that puts the broken file among the images every run reads (validation or test)
    seed = next(s for s in range(50) if any("d7/broken.png" in getattr(data.load(name, 16, seed=s), p).x.names
                                            for p in ("val", "test")))
    notes = []
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", dataset=name, epochs=3, seed=seed,
                    image_size=16, batch_size=16, device="cpu", lr=3e-3)
    result = engine.train(cfg, run_dir=tmp_path / "run",
                          listeners=(lambda e: notes.append(e.message) if isinstance(e, events.Note) else None,))
    assert result.status == "finished"
    assert result.test_accuracy > 0.6  # three classes: chance is 1/3
    assert any("unreadable image file" in n for n in notes), notes
