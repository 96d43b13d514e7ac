"""The data folder's caches: decoded images, frozen-backbone features and
teacher logits are reused by the next run (nothing recomputed, same
results), and a corrupt or partial cache file is rebuilt, never trusted."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core import paths
from core.train import cache, data, distill, engine
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("fresh_raw_cache")  # load_raw also caches in-process: each read is a new process's


def _counting_digits(monkeypatch) -> list:
    calls = []
    spec = data.REGISTRY["digits"]

    def loader(size):
        calls.append(size)
        return spec.loader(size)

    monkeypatch.setitem(data.REGISTRY, "digits", dataclasses.replace(spec, loader=loader))
    return calls


def _files(kind: str) -> list:
    folder = paths.home() / "cache" / kind
    return sorted(folder.glob("*.pt")) if folder.exists() else []


def test_decoded_images_are_read_back_from_the_data_folder(monkeypatch):
    calls = _counting_digits(monkeypatch)
    first = data.load_raw("digits", 16)
    [f] = _files("data")
    assert paths.home() in f.parents
    data._raw_cached.cache_clear()  # as a second process would
    second = data.load_raw("digits", 16)
    assert calls == [16]  # decoded once
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert second.class_names == first.class_names and second.key == first.key
    data.load_raw("digits", 24)  # another image size is another entry
    assert calls == [16, 24] and len(_files("data")) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(monkeypatch, damage):
    calls = _counting_digits(monkeypatch)
    good = data.load_raw("digits", 16)
    [f] = _files("data")
    raw = bytearray(f.read_bytes())
    if damage == "truncate":  # a write cut short
        f.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # a few bits flipped in the image bytes: the zip container still reads
        mid = len(raw) // 2
        raw[mid : mid + 8] = bytes(b ^ 0xFF for b in raw[mid : mid + 8])
        f.write_bytes(raw)
    else:
        f.write_bytes(b"not a cache file")
    data._raw_cached.cache_clear()
    again = data.load_raw("digits", 16)
    assert calls == [16, 16]  # decoded again
    assert torch.equal(again.x, good.x) and torch.equal(again.y, good.y)
    data._raw_cached.cache_clear()
    data.load_raw("digits", 16)  # and the rewritten file is good
    assert calls == [16, 16]


def test_a_cache_entry_answers_only_its_own_key():
    key = {"dataset": "x", "size": 8}
    cache.save("data", key, {"x": torch.arange(4)})
    other = {"dataset": "y", "size": 8}
    cache.path_for("data", key).rename(cache.path_for("data", other))  # a file under another key's name
    assert cache.load("data", other) is None
    assert not cache.path_for("data", other).exists()  # deleted, to be rebuilt


def _count(monkeypatch, owner, name) -> list:
    calls = []
    real = getattr(owner, name)

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_frozen_backbone_features_are_reused_by_the_next_run(tmp_path, monkeypatch, one_thread):
    calls = _count(monkeypatch, engine.Trainer, "_features")
    # Reuse is the claim: 16 px, 5 labels per class and ~90 validation and test images keep each pass small.
    cfg = RunConfig(backbone="efficientnet_lite0", strategy="feature_extraction", epochs=1, image_size=16, device="cpu",
                    labels_per_class=5, val_fraction=0.05, test_fraction=0.05)
    first = engine.train(cfg, run_dir=tmp_path / "a")
    assert len(calls) == 3  # train, val, test
    files = _files("features")
    assert len(files) == 3
    data._raw_cached.cache_clear()
    second = engine.train(cfg, run_dir=tmp_path / "b")
    assert len(calls) == 3  # nothing recomputed
    assert second.test_accuracy == first.test_accuracy and second.val_accuracy == first.val_accuracy
    # A damaged features file is recomputed for that split alone, with the same result.
    files[0].write_bytes(files[0].read_bytes()[:100])
    third = engine.train(cfg, run_dir=tmp_path / "d")
    assert len(calls) == 4
    assert third.test_accuracy == first.test_accuracy


@pytest.fixture()
def teacher_run(tmp_path, one_thread):
    from core.runs import jobs

    cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=1, image_size=16, batch_size=64, device="cpu",
                    labels_per_class=20)
    row = jobs.run_foreground(cfg)
    assert row["status"] == "finished"
    return row["id"]


def test_teacher_logits_are_reused_by_the_next_distillation(teacher_run, tmp_path, monkeypatch):
    calls = _count(monkeypatch, distill, "teacher_logits")
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=1, image_size=16, batch_size=128, device="cpu",
                    labels_per_class=20, teacher=teacher_run)
    first = engine.train(cfg, run_dir=tmp_path / "s1")
    assert len(calls) == 1 and len(_files("teacher_logits")) == 1
    second = engine.train(cfg, run_dir=tmp_path / "s2")
    assert len(calls) == 1  # read from the cache
    assert second.test_accuracy == first.test_accuracy
    engine.train(cfg.replace(seed=1), run_dir=tmp_path / "s3")  # other training images: computed
    assert len(calls) == 2


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_compile_switch_trains_through_torch_compile(tmp_path, monkeypatch, one_thread):
    # Inductor's C++ code generation takes over a minute on these CPUs, so the
    # test compiles with the eager backend: dynamo traces the real model, and
    # the result must match eager training.
    compiled = []
    real = torch.compile

    def compile_eager(module, **kw):
        compiled.append(type(module).__name__)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eager)
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=1, image_size=16, batch_size=64, device="cpu",
                    labels_per_class=30)
    eager = engine.train(cfg, run_dir=tmp_path / "eager")
    assert compiled == []
    result = engine.train(cfg.replace(compile=True), run_dir=tmp_path / "compiled")
    assert compiled and result.status == "finished"
    assert result.test_accuracy == pytest.approx(eager.test_accuracy, abs=0.02)
