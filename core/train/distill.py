"""Knowledge distillation: the loss, the teacher's logits, and the
size/speed/accuracy profile that makes the trade visible.

Hinton et al. 2015: loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
+ (1 - alpha) * CE(s, y). The T^2 keeps the soft term's gradients on the
scale of the hard one as T grows.
"""

from __future__ import annotations

import io
import statistics
import time

import torch
import torch.nn.functional as F

from core import paths
from core.errors import ConfigError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1 - alpha) * hard


def load_teacher(run_id: str):
    """The teacher run's model (the weights its test split was scored with), on CPU, in eval mode."""
    from core.train.checkpoint import CHECKPOINT_NAME, load_run_model

    ckpt = paths.run_dir(run_id) / CHECKPOINT_NAME
    if not ckpt.exists():
        raise ConfigError(f"Teacher run {run_id} has no checkpoint in {ckpt.parent}: pick a finished run as teacher.")
    return load_run_model(ckpt.parent)  # its best validation epoch's weights, unless the run chose its last


def teacher_input(x: torch.Tensor, teacher, g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 or [0, 1] float images at any size -> the teacher's own input: its
    image size and its normalisation."""
    size = teacher.image_size
    xf = x.float() / 255.0 if x.dtype == torch.uint8 else x
    if xf.shape[1] == 1:
        xf = xf.expand(-1, 3, -1, -1)
    if xf.shape[-1] != size:
        xf = F.interpolate(xf, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(teacher.spec.mean, device=xf.device).view(1, 3, 1, 1)
    s = torch.tensor(teacher.spec.std, device=xf.device).view(1, 3, 1, 1)
    return (xf - m) / s


@torch.inference_mode()
def teacher_logits(teacher, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The teacher's logits for every image of x (uint8), computed once."""
    model = teacher.model.to(x.device).eval()
    out = [model(teacher_input(x[i : i + batch], teacher)).float() for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0, teacher.num_classes)


def cached_teacher_logits(teacher, split, data_key: str, device: torch.device) -> tuple[torch.Tensor, bool]:
    """The teacher's logits for a split's images, from the data folder's cache
    when a run before computed them for the same teacher weights, images and
    device kind; else computed once and cached. Returns (logits on `device`,
    whether they came from the cache)."""
    from core.train import cache

    key = {"teacher_weights": cache.tensors_digest(teacher.model.state_dict().items()),
           "teacher_backbone": teacher.spec.name, "teacher_size": teacher.image_size,
           "data": data_key, "images": cache.index_digest(split.index), "n": len(split),
           "student_size": int(split.x.shape[-1]), "device": device.type}
    hit = cache.load("teacher_logits", key) if data_key else None
    if hit is not None and hit[0]["logits"].shape[0] == len(split):
        return hit[0]["logits"].to(device), True
    if isinstance(split.x, torch.Tensor):
        logits = teacher_logits(teacher, split.x.to(device))
    else:  # a folder streamed from its files: a row per position (unreadable images stay zero, never drawn)
        from core.train import data

        logits = torch.zeros(len(split), teacher.num_classes, device=device)
        for xb, _, pos in data.Batches(split, 256, device)():
            logits[pos] = teacher_logits(teacher, xb)
    if data_key:
        cache.save("teacher_logits", key, {"logits": logits})
    return logits, False


def state_size_mb(model: torch.nn.Module) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, image_size: int, repeats: int = 20, warmup: int = 3) -> float:
    """Median CPU time to classify one image (batch of 1), in milliseconds."""
    model = model.to("cpu").eval()
    x = torch.randn(1, 3, image_size, image_size)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def profile(run_id: str, test_accuracy: float | None) -> dict:
    """What a person weighs when choosing a model: accuracy, parameters,
    size on disk, CPU latency per image."""
    loaded = load_teacher(run_id)
    return {
        "run_id": run_id,
        "backbone": loaded.spec.name,
        "test_accuracy": test_accuracy,
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "model_mb": round(state_size_mb(loaded.model), 3),
        "latency_ms": round(latency_ms(loaded.model, loaded.image_size), 3),
    }


def check_teacher(teacher, class_names: list[str]) -> None:
    if list(teacher.class_names) != list(class_names):
        raise ConfigError(
            f"The teacher was trained on other classes ({', '.join(teacher.class_names[:5])}...) than this dataset "
            f"({', '.join(class_names[:5])}...): distil on the teacher's own dataset."
        )
