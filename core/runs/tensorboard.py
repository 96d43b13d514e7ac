"""The engine's events as TensorBoard event files, beside the run store: a
listener like the store's (the engine knows nothing of it), on by default,
one folder per run under `<data folder>/tensorboard/`, so that
`tensorboard --logdir <data folder>/tensorboard` (or W&B's
`sync_tensorboard`) shows every run.

Written with TensorBoard's own writer (`torch.utils.tensorboard`, which needs
the `tensorboard` package): per step the loss and the head's LR, per epoch the
train/validation loss and accuracy, per layer group the weight change and
gradient norm, and at the end the hyperparameters with the final metrics and
the test split's confusion matrix as an image. Set TLAB_TENSORBOARD=0 to turn
it off. A writer that fails (a full disk) logs one warning and stops writing:
TensorBoard is a copy, the store is the record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

from core import paths
from core.train.events import EpochEnd, LayerStats, RunEnd, RunStart, Step

log = logging.getLogger(__name__)

ENV = "TLAB_TENSORBOARD"
FLUSH_SECONDS = 5.0  # steps are written with their epoch, or after this long, whichever comes first


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def log_dir(run_id: str) -> Path:
    return paths.home() / "tensorboard" / paths.check_run_id(run_id)


def hparams_of(config) -> dict:
    """The config as TensorBoard hparams: numbers, text and booleans; an unset field as 'none'."""
    return {k: ("none" if v is None else v) for k, v in dataclasses.asdict(config).items()}


def confusion_image(cm: np.ndarray, cell: int = 12) -> np.ndarray:
    """A confusion matrix (true in rows) as an HxWx3 uint8 heatmap, row-normalised:
    white is none of the class's images, dark blue all of them; the diagonal is right."""
    rows = cm.sum(1, keepdims=True).clip(min=1)
    share = np.kron(cm / rows, np.ones((cell, cell)))
    white, blue = np.array([255, 255, 255]), np.array([8, 48, 107])
    img = white + share[..., None] * (blue - white)
    img[::cell, :, :] = img[:, ::cell, :] = 200  # grid lines
    return img.astype(np.uint8)


class TensorBoardListener:
    """Engine events -> event files in `log_dir(run_id)`."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.writer = None
        self.config = None
        self.class_names: tuple[str, ...] = ()
        self.failed = False
        self.summary = None
        self.steps: list[tuple[int, float, float]] = []
        self.last_flush = time.monotonic()

    def _open(self):
        if self.writer is None:
            from tensorboard.compat.proto.summary_pb2 import Summary
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir(self.run_id)), flush_secs=10)
            self.summary = Summary  # imported here, at the run's start, not in its first step
        return self.writer

    def __call__(self, event) -> None:
        if self.failed:
            return
        try:
            self._write(event)
        except Exception as e:  # TensorBoard is a copy: training goes on without it
            self.failed = True
            log.warning("TensorBoard logging for run %s stopped: %s", self.run_id, e)
            self.close()

    def _write(self, event) -> None:
        if isinstance(event, Step):
            # Buffered, like the store's: handing each step to the writer's thread at once woke it every
            # step, and on a busy CPU that cost the training thread ~4 ms a step (a GIL switch interval).
            self.steps.append((event.step, event.loss, event.lr))
            if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                self.flush()
        elif isinstance(event, RunStart):
            self.config, self.class_names = event.config, event.class_names
            self._open().add_text("run", f"{event.config.backbone} / {event.config.strategy} on "
                                         f"{event.config.dataset}, {event.device}", 0)
        elif isinstance(event, EpochEnd):
            self.flush()
            w = self._open()
            for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "images_per_second"):
                w.add_scalar(f"epoch/{name}", getattr(event, name), event.epoch)
        elif isinstance(event, LayerStats):
            w = self._open()
            for r in event.rows:
                w.add_scalar(f"layers/weight_change/{r['group']}", r["weight_change"], event.epoch)
                w.add_scalar(f"layers/grad_norm/{r['group']}", r["grad_norm"], event.epoch)
        elif isinstance(event, RunEnd):
            self._end(event)

    def flush(self) -> None:
        """The buffered steps as events, each holding its loss and LR."""
        steps, self.steps = self.steps, []
        self.last_flush = time.monotonic()
        if not steps:
            return
        Summary, fw = self.summary, self._open()._get_file_writer()
        for step, loss, lr in steps:
            fw.add_summary(Summary(value=[Summary.Value(tag="train/loss", simple_value=loss),
                                          Summary.Value(tag="train/lr", simple_value=lr)]), step)

    def _end(self, event: RunEnd) -> None:
        self.flush()
        w, res = self._open(), event.result
        if self.config is not None:
            metrics = {f"final/{k}": float(getattr(res, k)) for k in ("test_accuracy", "best_val_accuracy", "val_accuracy",
                                                                      "test_loss") if getattr(res, k) is not None}
            w.add_hparams(hparams_of(self.config), metrics or {"final/epochs": float(res.epochs)}, run_name=".")
        if event.status == "finished" and res.confusion:
            w.add_image("test/confusion_matrix", confusion_image(np.asarray(res.confusion)), res.epochs, dataformats="HWC")
            w.add_text("test/confusion_matrix_classes", "rows: true class, columns: predicted, in the order "
                       + ", ".join(self.class_names), res.epochs)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None


def listeners(run_id: str) -> tuple:
    """The TensorBoard listener for a run, or none when TLAB_TENSORBOARD=0 or the package is missing."""
    if not enabled():
        return ()
    try:
        import tensorboard  # noqa: F401  torch's SummaryWriter writes through it
    except ImportError:
        log.warning("TensorBoard logging is on but the tensorboard package is missing: pip install -r requirements.txt "
                    "(or set %s=0).", ENV)
        return ()
    return (TensorBoardListener(run_id),)
