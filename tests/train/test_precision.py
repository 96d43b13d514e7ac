"""Precision (fp32, bf16, fp16) and memory layout (channels_last) as run
settings: on a CPU they take the very code a GPU takes (autocast, fp16's
loss scaling, channels_last model and input, torch.compile), and each
combination still learns. Real training, a tiny convolutional net, digits at 16 px."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.train import backbones, engine, events
from core.train.backbone_spec import BackboneSpec
from core.train.config import RunConfig
from core.train.validate import validate

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyConv(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stem(x)))


TINY = BackboneSpec(name="tiny_conv", title="Tiny conv", family="custom", input_size=16,
                    groups=(("stem", ("stem",)), ("head", ("fc",))), head="fc", gradcam_layer="stem",
                    builder=lambda num_classes, image_size: TinyConv(num_classes))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(backbones.REGISTRY, TINY.name, TINY)
    return RunConfig(backbone=TINY.name, strategy="scratch", dataset="digits", epochs=4, image_size=16, batch_size=32,
                     lr=0.05, device="cpu", labels_per_class=30, val_fraction=0.05, test_fraction=0.05)


class Seen:
    """What the model met: the dtype of its first layer's output and the layout of its input."""

    def __init__(self, model: nn.Module):
        self.dtypes, self.channels_last = set(), set()
        model.stem[0].register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        self.dtypes.add(output.dtype)
        self.channels_last.add(inputs[0].is_contiguous(memory_format=torch.channels_last) and inputs[0].shape[1] > 1)


def train_seen(cfg: RunConfig, run_dir) -> tuple:
    """Train `cfg`; the result, what the model met, and the final fp16 loss scale (None without one)."""
    seen = {}
    real = engine.Trainer._model_and_plan

    def spying(self, bundle):
        r = real(self, bundle)
        seen["seen"], seen["run"] = Seen(r.model), r
        return r

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.Trainer, "_model_and_plan", spying)
        result = engine.train(validate(cfg), run_dir=run_dir)
    scaler = seen["run"].scaler
    return result, seen["seen"], (scaler.get_scale() if scaler is not None else None), seen["run"].model


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_precision_and_layout_trains_and_learns_on_a_cpu(tiny, tmp_path, precision, channels_last):
    result, seen, scale, model = train_seen(tiny.replace(precision=precision, channels_last=channels_last), tmp_path)
    assert result.status == "finished", result.reason
    assert result.test_accuracy > 0.45  # chance is 0.1; fp32 reaches 0.59, bf16 0.58, fp16 0.59
    want = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen.dtypes == {want}  # autocast ran the convolution in that precision, training and evaluating
    assert seen.channels_last == {channels_last}
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert model.stem[0].weight.dtype == torch.float32  # autocast: master weights stay fp32
    assert (scale is not None) is (precision == "fp16")  # fp16 scales its loss; its state is in the checkpoint
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ("scaler" in ckpt) is (precision == "fp16")
    assert ckpt["config"]["precision"] == precision


def test_auto_is_fp32_in_the_default_layout_on_a_cpu(tiny, tmp_path):
    result, seen, scale, _ = train_seen(tiny, tmp_path)
    assert result.status == "finished"
    assert seen.dtypes == {torch.float32} and seen.channels_last == {False} and scale is None


@pytest.mark.slow  # dynamo and AOTAutograd trace the model: ~10 s on these CPUs
def test_compiled_bf16_channels_last_trains_through_torch_compile(tiny, tmp_path, monkeypatch):
    # The engine's torch.compile call, traced by dynamo and AOTAutograd (forward and backward,
    # under bf16 autocast, channels_last) as on a GPU; aot_eager then runs the traced graphs
    # eagerly: inductor's C++ code generation alone takes ~2 minutes on these CPUs.
    real, compiled, notes = torch.compile, [], []

    def aot_eager(module, **kw):
        compiled.append(module)
        return real(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", aot_eager)
    cfg = validate(tiny.replace(precision="bf16", channels_last=True, compile=True))
    result = engine.train(cfg, run_dir=tmp_path, listeners=(lambda e: notes.append(e) if isinstance(e, events.Note) else None,))
    assert result.status == "finished", result.reason
    assert compiled and not [n for n in notes if "compile failed" in n.message]  # compiled, not the eager fallback
    assert result.test_accuracy > 0.45


@pytest.mark.parametrize("values, says", [
    ({"precision": "fp8"}, "precision must be one of auto, fp32, bf16, fp16"),
    ({"precision": "FP16"}, "precision must be one of"),
    ({"channels_last": "yes"}, "channels last must be true or false"),
])
def test_a_bad_precision_or_layout_gets_one_clear_message(values, says):
    with pytest.raises(ConfigError, match=says):
        validate(RunConfig(device="cpu", **values))


def test_the_train_command_and_a_run_file_take_precision_and_layout(tmp_path):
    from core.cli import options
    from core.cli.main import build_parser
    from core.train import runfile

    args = build_parser().parse_args(["train", "--precision", "fp16", "--channels-last", "--device", "cpu"])
    cfg = options.run_config(args)
    assert (cfg.precision, cfg.channels_last) == ("fp16", True)
    path = tmp_path / "run.toml"
    path.write_text(runfile.dumps(cfg.replace(channels_last=False)))
    args = build_parser().parse_args(["train", "--config", str(path)])
    assert (options.run_config(args).precision, options.run_config(args).channels_last) == ("fp16", False)
    args = build_parser().parse_args(["train", "--config", str(path), "--precision", "bf16", "--no-channels-last"])
    assert (options.run_config(args).precision, options.run_config(args).channels_last) == ("bf16", False)
