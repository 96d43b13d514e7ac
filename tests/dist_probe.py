"""Run under torchrun by tests/test_distributed.py: one real run through the
engine on every process, then each process saves what it ended with (its
gradients of the last step, its weights) for the test to compare."""

import sys
from pathlib import Path

import torch

from core import distributed, engine
from core.config import RunConfig

out, weights = Path(sys.argv[1]), sys.argv[2]
ctx = distributed.init("cpu")
cfg = RunConfig(backbone="small_cnn", strategy="partial", freeze_stages=1, weights=weights, dataset="digits",
                image_size=16, epochs=1, steps=4, batch_size=16, device="cpu", processes=ctx.world_size)
trainer = engine.Trainer(cfg, out / "run", "probe", dist=ctx)
result = trainer.run()
torch.save({
    "status": result.status,
    "grads": {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None},
    "params": {n: p.detach() for n, p in trainer.model.named_parameters()},
    "frozen": [n for n, p in trainer.model.named_parameters() if not p.requires_grad],
    "checkpoint": (out / "run" / "checkpoint.pt").exists(),
}, out / f"rank{ctx.rank}.pt")
distributed.shutdown()
