"""The same fine-tune in our engine and in PyTorch Lightning's Trainer with
its BackboneFinetuning callback: same model, data in memory, batch,
precision and strategy (feature extraction, and full fine-tuning), images/s
side by side. Target: ours / Lightning >= 1.0.

    python bench/peers.py                   # CPU: efficientnet_lite0 at 64 px
    python bench/peers.py --device cuda     # GPU: resnet50 at 224 px

Lightning is a benchmark-only dependency (requirements-bench.txt). Each side
fits for the same epochs with a validation pass per epoch and a checkpoint
per epoch (Lightning's defaults; what our engine always does); images/s is
training images over the whole fit's wall time. Feature extraction means the
same thing on both sides: the backbone frozen (BatchNorm too), the head
trained; how each framework gets there is its own (our engine computes the
backbone's features once, Lightning runs the frozen backbone every batch).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import fresh_home, machine, options, report, verdict, weights_for

TARGET = 1.0


def lightning_fit(cfg, epochs: int) -> float:
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import BackboneFinetuning
    from torch import nn

    from core.train import backbones, data, strategies

    spec = backbones.get(cfg.backbone)
    bundle = data.load(cfg.dataset, cfg.image_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = backbones.create_model(spec, bundle.num_classes, cfg.image_size, strategies.get(cfg.strategy).pretrained,
                                   cfg.weights)
    head_root = spec.head.split(".")[0]
    lr = strategies.get(cfg.strategy).default_lr
    cuda = cfg.device == "cuda"

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model
            # What BackboneFinetuning freezes and thaws: everything but the head.
            self.backbone = nn.ModuleList([m for n, m in model.named_children() if n != head_root])

        def forward(self, x):
            x = data.to_input(x, spec.mean, spec.std)
            return self.net(x.contiguous(memory_format=torch.channels_last) if cuda else x)

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self(x).float(), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", F.cross_entropy(self(x).float(), y))

        def configure_optimizers(self):
            return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)

    class Finetuning(BackboneFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze(pl_module.backbone, train_bn=False)  # frozen BatchNorm, as in our engine

    frozen = cfg.strategy == "feature_extraction"
    callback = Finetuning(unfreeze_backbone_at_epoch=10**6 if frozen else 0, train_bn=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(bundle.train.x, bundle.train.y),
                                         batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(bundle.val.x, bundle.val.y), batch_size=256)
    module = Module()
    if cuda:
        module.to(memory_format=torch.channels_last)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="gpu" if cuda else "cpu", devices=1,
                         precision="bf16-mixed" if cuda else "32-true", callbacks=[callback], logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tempfile.mkdtemp(), num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(module, loader, val)
    return epochs * len(loader) * cfg.batch_size / (time.perf_counter() - t0)


def ours_fit(cfg, epochs: int) -> float:
    from core.train import data, engine

    data._raw_cached.cache_clear()
    n_train = len(data.load(cfg.dataset, cfg.image_size, cfg.seed).train)
    t0 = time.perf_counter()
    result = engine.train(cfg.replace(epochs=epochs), run_dir=Path(tempfile.mkdtemp()))
    assert result.status == "finished", result.reason
    return epochs * (n_train // cfg.batch_size) * cfg.batch_size / (time.perf_counter() - t0)


def main() -> None:
    args = options(__doc__.splitlines()[0]).parse_args()
    try:
        import lightning  # noqa: F401
    except ImportError:
        report(args, f"peers: our engine vs PyTorch Lightning ({args.device})",
               ["skipped: PyTorch Lightning is not installed here (pip install -r requirements-bench.txt)"])
        return
    from core.train.config import RunConfig

    home = fresh_home()
    if args.device == "cuda":
        base = RunConfig(backbone="resnet50", dataset="digits", image_size=224, batch_size=128, device="cuda")
        epochs = 2 if args.quick else 4
    else:
        base = RunConfig(backbone="efficientnet_lite0", dataset="digits", image_size=32 if args.quick else 64,
                         batch_size=32, device="cpu")
        epochs = 1 if args.quick else 2
    base = base.replace(weights=weights_for(base.backbone, base.image_size, home))
    lines = [f"machine: {machine(args.device)}",
             f"{base.backbone} at {base.image_size}px, batch {base.batch_size}, digits in memory, {epochs} epoch(s), "
             f"{'bf16' if args.device == 'cuda' else 'fp32'}; weights {'ImageNet' if base.weights is None else 'random (none here)'}"]
    for strategy in ("feature_extraction", "full"):
        cfg = base.replace(strategy=strategy)
        theirs = lightning_fit(cfg, epochs)
        ours = ours_fit(cfg, epochs)
        ratio = ours / theirs
        lines.append(f"{strategy}: ours {ours:,.1f} images/s, Lightning {theirs:,.1f} images/s, ratio {ratio:.2f} "
                     f"(target >= {TARGET}: {verdict(ratio, TARGET)})")
    report(args, f"peers: our engine vs PyTorch Lightning ({args.device})", lines)


if __name__ == "__main__":
    main()
