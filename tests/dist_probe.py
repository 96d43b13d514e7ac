"""Run under torchrun by tests/train/test_distributed.py: real runs through the
engine on every process, then each process saves what it ended with (its
gradients of the last step, its weights) for the test to compare.

1. partial fine-tuning (stem and stage1 frozen), DDP over the model;
2. feature extraction on the feature cache (each process computes its share
   of the features, then they are gathered), DDP over the head; rank 0 also
   trains the same run alone, as the one-process reference."""

import os
import sys
from pathlib import Path

import torch

from core.train import distributed, engine
from core.train.config import RunConfig

out, weights = Path(sys.argv[1]), sys.argv[2]
ctx = distributed.init("cpu")
cfg = RunConfig(backbone="small_cnn", strategy="partial", freeze_stages=1, weights=weights, dataset="digits",
                image_size=16, epochs=1, steps=4, batch_size=16, device="cpu", processes=ctx.world_size)
trainer = engine.Trainer(cfg, out / "run", "probe", dist=ctx)
result = trainer.run()
saved = {
    "status": result.status,
    "grads": {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None},
    "params": {n: p.detach() for n, p in trainer.model.named_parameters()},
    "frozen": [n for n, p in trainer.model.named_parameters() if not p.requires_grad],
    "checkpoint": (out / "run" / "checkpoint.pt").exists(),
}

fe_cfg = cfg.replace(strategy="feature_extraction", steps=None, epochs=2, batch_size=32, labels_per_class=30)


def head_run(dist):
    t = engine.Trainer(fe_cfg, out / f"fe{dist.world_size}", "probe-fe", dist=dist)
    r = t.run()
    return {"feature_cache": r.feature_cache, "test_accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy,
            "head": {n: p.detach().clone() for n, p in t.model.fc.named_parameters()}}


saved["fe"] = head_run(ctx)
if ctx.is_main:
    saved["fe_single"] = head_run(distributed.SINGLE)
distributed.shutdown()
# After leaving the group, none of the backend's threads may outlive it: one that is still there at
# interpreter exit can take the GIL while Python finalizes, which aborts the process (SIGABRT).
saved["threads_after_shutdown"] = sorted(
    Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))
torch.save(saved, out / f"rank{ctx.rank}.pt")
