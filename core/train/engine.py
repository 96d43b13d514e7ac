"""The training loop: one loop for every strategy.

`Trainer.run` reads as its phases, each a method of its own: data, model and
plan, restore, feed (what the steps read), teacher, start, the epoch loop
(train an epoch, end of epoch) and finish. What the phases build and the
epochs share lives in one `_Run`; the pieces they use (device, batches,
evaluation, feature cache, compile) are `core.train.runner.Runner`'s.

The engine reports through events (core.train.events); listeners (the run store, a progress bar)
subscribe. It never prints. Side effects are a checkpoint per epoch in the
run folder, written atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from core import faults
from core.errors import ConfigError, TLabError
from core.train import backbones, checkpoint, data, decode, distill, recipe, scoring, strategies
from core.train.backbones import head_removed  # noqa: F401  (re-exported: callers reach it here)
from core.train.checkpoint import CheckpointWriteError, save_atomic  # noqa: F401  (re-exported)
from core.train.config import RunConfig
from core.train.device import (is_out_of_memory, out_of_memory_reason, release_memory,  # noqa: F401  (re-exported)
                               resolve_device)
from core.train.events import EpochEnd, LayerStats, Listener, Note, PlanChange, RunEnd, RunResult, RunStart, Step, new_run_id
from core.train.runner import Runner
from core.train.strategies import LayerPlan

log = logging.getLogger(__name__)

# Frozen backbones: train the head on features computed once (and cached on
# disk). Off only to measure what that saves (bench/feature_cache.py).
FEATURE_CACHE = True


class Diverged(TLabError):
    pass


class Cancelled(Exception):
    pass


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 3% of steps, then cosine to zero."""
    warm = max(1, int(0.03 * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


@dataclass
class _Run:
    """One call of `Trainer.run`: what its phases build and its epochs share."""

    bundle: data.DataBundle
    model: nn.Module
    plan: LayerPlan
    optimizer: torch.optim.Optimizer
    groups: dict[str, list[nn.Parameter]]
    w0: dict[str, list[torch.Tensor]]  # each group's weights at the start: the layer stats measure change from them
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaling
    start_epoch: int = 1
    best_val: float | None = None
    step: int = 0
    use_cache: bool = False  # the head trains on the frozen backbone's cached features
    feats: dict[str, data.Split] = field(default_factory=dict)
    net: nn.Module | None = None  # what trains: the model, or its head on cached features
    fwd: Callable[[torch.Tensor], torch.Tensor] | None = None  # what the steps call (DDP, compiled)
    train_split: data.Split | None = None
    bs: int = 0  # the global batch
    steps_per_epoch: int = 0
    total_steps: int = 0
    local: slice = field(default_factory=lambda: slice(0))  # this process's slice of every global batch
    train_batches: data.Batches | None = None
    teacher: Any = None  # distillation: the teacher's LoadedModel
    soft_targets: torch.Tensor | None = None  # its cached logits, when the inputs don't change (no augmentation)
    result: RunResult | None = None
    watch: recipe.Watch = field(default_factory=recipe.Watch)  # best epoch, early stopping
    loss: recipe.Loss = field(default_factory=recipe.Loss)
    augmenter: data.Augmenter | None = None
    aug_stream: int = 0
    rng_state: torch.Tensor | None = None  # the CPU generator's state at the resumed epoch (dropout, ...)
    images_seen: int = 0
    train_seconds: float = 0.0
    dropped_noted: int = 0


@dataclass
class _EpochTotals:
    grad_sq: torch.Tensor  # each group's summed gradient norm, in the order of _Run.groups
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    seconds: float = 0.0


class Trainer(Runner):
    """One run: `Trainer(cfg, run_dir, ...).run()` trains it, reporting through events."""

    # -- the run: its phases, in order --

    def run(self, resume_from: Path | None = None) -> RunResult:
        t_start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        r = self._model_and_plan(self._load_data())
        self._restore(r, resume_from)
        self._feed(r)
        self._load_teacher(r)
        self._start(r)
        status, reason = "finished", ""
        try:
            for epoch in range(r.start_epoch, self.cfg.epochs + 1):
                self._end_of_epoch(r, epoch, self._train_epoch(r, epoch))
                # Every process watches the same all-reduced validation figures: all stop at this step.
                if r.watch.should_stop:
                    reason = r.result.stop_reason = r.watch.stop_reason(epoch)
                    self.emit(Note(f"{reason}: no improvement of {self.cfg.monitor} for {self.cfg.patience} epoch(s)"))
                    break
            self._score(r)
        except Cancelled:
            status, reason = "cancelled", "stopped by request"
        except (Diverged, CheckpointWriteError) as e:
            status, reason = "failed", str(e)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            status, reason = "failed", out_of_memory_reason(self.cfg, f"at epoch {r.result.epochs + 1}")
        return self._finish(r, status, reason, t_start)

    def _load_data(self) -> data.DataBundle:
        cfg = self.cfg
        # One download or decode into the data folder, the others then read it; a long decode says how far it is
        # in the run's notes (Live shows it in place of 'loading data and model').
        with self.dist.main_first(), decode.reporting(decode.Tenths(lambda text: self.emit(Note(text)), decode.PARALLEL_FROM)):
            bundle = data.load(cfg.dataset, cfg.image_size, cfg.seed, cfg.labels_per_class, cfg.val_fraction, cfg.test_fraction)
        if len(bundle.train) < 1:
            raise ConfigError("The training set is empty.")
        return bundle

    def _model_and_plan(self, bundle: data.DataBundle) -> _Run:
        cfg, spec = self.cfg, self.spec
        model = backbones.create_model(spec, bundle.num_classes, cfg.image_size, self.strategy.pretrained, cfg.weights)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model  # kept after run(): the trained weights and the last step's gradients
        plan = strategies.make_plan(spec, model, cfg, 0)
        self.dist.check_same("layer plan", plan.rows())
        optimizer = strategies.build_optimizer(spec, model, plan, cfg.weight_decay)
        groups = self._group_params(model)
        w0 = {g: [p.detach().clone() for p in ps] for g, ps in groups.items()}
        return _Run(bundle, model, plan, optimizer, groups, w0, scaler=self._grad_scaler())

    def _restore(self, r: _Run, resume_from: Path | None) -> None:
        """Model, optimizer, epoch, step and best score from a checkpoint; the
        plan of the epoch it resumes at (unfreezing survives a resume)."""
        dist = self.dist
        # Rank 0 reads the checkpoint and hands it to the others: no shared folder needed for it.
        ckpt = dist.broadcast(torch.load(resume_from, map_location="cpu", weights_only=True)
                              if resume_from is not None and dist.is_main else None)
        if ckpt is None:
            return
        r.model.load_state_dict(ckpt["model"])
        r.start_epoch = int(ckpt["epoch"]) + 1
        r.best_val, r.step = ckpt.get("best_val_accuracy"), int(ckpt.get("step", 0))
        r.watch.load_state_dict(ckpt.get("watch") or {})
        r.rng_state = ckpt.get("rng_state")
        r.w0 = {g: [t.to(self.device) for t in ts] for g, ts in ckpt["w0"].items()}
        r.optimizer.load_state_dict(ckpt["optimizer"])
        if r.scaler is not None and ckpt.get("scaler"):
            r.scaler.load_state_dict(ckpt["scaler"])
        # The plan after the optimizer state: its parameter groups carry the checkpointed epoch's LRs,
        # which would undo a thaw at the resumed epoch (a group trained at LR 0, or the wrong one).
        r.plan = strategies.make_plan(self.spec, r.model, self.cfg, r.start_epoch - 1)
        strategies.apply_plan(self.spec, r.model, r.plan, r.optimizer)

    def _feed(self, r: _Run) -> None:
        """What the steps read: the data on the device (or the backbone's
        cached features, when only the head trains), batch sizes and counts."""
        cfg, dist, bundle = self.cfg, self.dist, r.bundle
        # Move the (uint8) data to the device once: every epoch reads it from there.
        # (A folder too large for memory streams from its files instead.)
        for split in (bundle.train, bundle.val, bundle.test):
            if isinstance(split.x, torch.Tensor):
                split.x, split.y = split.x.to(self.device), split.y.to(self.device)
        r.use_cache = FEATURE_CACHE and self.strategy.feature_cache and not cfg.augmenting
        if r.use_cache:
            self._cache_features(r)
            r.train_split, r.net = r.feats["train"], r.model.get_submodule(self.spec.head)
        else:
            r.train_split, r.net = bundle.train, r.model
        r.fwd = self._wrapped(r)
        if cfg.compile:
            self.emit(Note("torch.compile is on: the first steps include compilation"))
        n_train = len(r.train_split.y)
        if cfg.steps:  # a fixed budget of steps, batches drawn with replacement
            r.bs = cfg.batch_size
            r.steps_per_epoch = math.ceil(cfg.steps / cfg.epochs)
        else:
            r.bs = min(cfg.batch_size, n_train)
            r.bs -= r.bs % dist.world_size  # a global batch splits evenly over the processes
            r.steps_per_epoch = max(1, n_train // max(1, r.bs))  # drop the ragged last batch: BatchNorm needs > 1 sample
        r.total_steps = r.steps_per_epoch * cfg.epochs
        if r.bs < dist.world_size or r.bs % dist.world_size:
            raise ConfigError(f"batch size {r.bs} does not split evenly over {dist.world_size} processes: "
                              f"use a multiple of {dist.world_size}.")
        local_bs = r.bs // dist.world_size  # this process's slice of every global batch
        r.local = slice(dist.rank * local_bs, (dist.rank + 1) * local_bs)
        r.train_batches = self._batches(r.train_split, local_bs)

    def _cache_features(self, r: _Run) -> None:
        t0 = time.perf_counter()
        reused = 0
        for k in ("train", "val", "test"):
            r.feats[k], hit = self._cached_features(r.model, getattr(r.bundle, k), r.bundle.key)
            reused += len(r.feats[k]) if hit else 0
        n_feats = sum(len(f) for f in r.feats.values())
        how = (f"read from the data folder's cache for all {n_feats} images" if reused == n_feats else
               f"computed once for {n_feats - reused} images" + (f" (cached for {reused})" if reused else ""))
        self.emit(Note(f"feature cache: backbone features {how} in {time.perf_counter() - t0:.1f}s; "
                       "the head trains on the cache"))
        log.info("feature extraction without augmentation: training the head on cached features")

    def _wrapped(self, r: _Run) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the steps call: the net, under DDP when several processes
        train it, compiled when asked."""
        module = self.dist.wrap(r.net, self.device)
        return self._compiled(module) if self.cfg.compile else module

    def _load_teacher(self, r: _Run) -> None:
        cfg = self.cfg
        if not cfg.teacher:
            return
        r.teacher = distill.load_teacher(cfg.teacher)
        distill.check_teacher(r.teacher, r.bundle.class_names)
        r.teacher.model.to(self.device)
        if not cfg.augmenting:
            r.soft_targets, hit = distill.cached_teacher_logits(r.teacher, r.bundle.train, r.bundle.key, self.device)
            self.emit(Note(f"distilling from run {cfg.teacher} ({r.teacher.spec.title}): its logits for "
                           f"{len(r.soft_targets)} training images {'read from the cache' if hit else 'computed once'}, "
                           f"T={cfg.temperature:g}, alpha={cfg.alpha:g}"))

    def _start(self, r: _Run) -> None:
        cfg, dist, bundle = self.cfg, self.dist, r.bundle
        n_train = len(r.train_split.y)
        self.emit(RunStart(self.run_id, cfg, str(self.device), tuple(bundle.class_names),
                           {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
                            "skipped": bundle.skipped},
                           r.plan, r.steps_per_epoch, r.start_epoch, dist.world_size))
        if not cfg.steps and cfg.batch_size > n_train:
            self.emit(Note(f"batch size {cfg.batch_size} is larger than the {n_train} training images: "
                           f"each step uses all {n_train}"))
        if bundle.skipped:
            self.emit(Note(f"skipped {bundle.skipped} unreadable file(s), e.g. {bundle.skipped_examples[0]}"))
        r.result = RunResult(self.run_id, "running", epochs=r.start_epoch - 1, device=str(self.device),
                             trainable_params=r.plan.trainable_params, total_params=r.plan.total_params,
                             feature_cache=r.use_cache, best_val_accuracy=r.best_val, world_size=dist.world_size)
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        policy = data.policy_of(cfg)
        r.augmenter = data.Augmenter(policy, cfg.image_size) if policy is not None and not r.use_cache else None
        r.aug_stream = cfg.seed * 1_000_003 + 7919 * dist.rank  # each process augments its own slice differently
        weight = (recipe.class_weights(r.train_split.y, bundle.num_classes).to(self.device)
                  if cfg.class_weights == "auto" else None)
        r.loss = recipe.Loss(weight, cfg.label_smoothing)
        r.watch.monitor, r.watch.patience, r.watch.min_delta = cfg.monitor, cfg.patience, cfg.min_delta
        said = recipe.summary(cfg, data.describe(policy) if policy is not None else "", weight)
        if said:
            self.emit(Note(said))

    def _replan(self, r: _Run, epoch: int) -> None:
        """The strategy's plan for this epoch, applied when it changed (gradual unfreezing)."""
        new_plan = strategies.make_plan(self.spec, r.model, self.cfg, epoch - 1)
        if new_plan.group_table() != r.plan.group_table():
            r.plan = new_plan
            strategies.apply_plan(self.spec, r.model, r.plan, r.optimizer)
            r.fwd = self._wrapped(r)  # DDP syncs the parameters trainable when it was built
            r.watch.thawed()  # a thaw starts early stopping's count again
            self.emit(PlanChange(epoch, r.plan))
        r.result.trainable_params = max(r.result.trainable_params, r.plan.trainable_params)
        if r.use_cache:
            r.net.train()
        else:
            strategies.set_train_mode(self.spec, r.model, r.plan)

    def _train_epoch(self, r: _Run, epoch: int) -> _EpochTotals:
        cfg, dist = self.cfg, self.dist
        self._replan(r, epoch)
        if r.rng_state is not None:  # resumed: the CPU generator where the uninterrupted run had it
            torch.set_rng_state(r.rng_state)
            r.rng_state = None
        epoch_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        n_train, bs = len(r.train_split.y), r.bs
        if cfg.sampler == "balanced":
            order = recipe.balanced_order(r.train_split.y, r.steps_per_epoch * bs, epoch_gen)
        elif cfg.steps:
            order = torch.randint(n_train, (r.steps_per_epoch * bs,), generator=epoch_gen)
        else:
            order = torch.randperm(n_train, generator=epoch_gen)
        # This process's slice of every global batch, in step order.
        order = order[: r.steps_per_epoch * bs].view(r.steps_per_epoch, bs)[:, r.local].reshape(-1).to(self.device)
        t = _EpochTotals(torch.zeros(len(r.groups), device=self.device),
                         torch.zeros((), device=self.device), torch.zeros((), device=self.device, dtype=torch.long))
        t_epoch = time.perf_counter()
        log_every = 10 if self.cuda else 1
        window_loss = torch.zeros((), device=self.device)
        t_window, window_imgs = time.perf_counter(), 0
        for i, (xraw, yb, idx) in enumerate(r.train_batches(order)):
            if not dist.enabled and self.should_stop():  # several processes agree on stopping below
                raise Cancelled()
            logits, loss = self._step(r, epoch, xraw, yb, idx, t.grad_sq)
            t.seen += len(yb)
            window_imgs += len(yb)
            t.loss_sum += loss * len(yb)
            window_loss += loss
            t.correct += (logits.argmax(1) == yb).sum()
            last = i == r.steps_per_epoch - 1
            if r.step % log_every == 0 or last:
                now = time.perf_counter()
                self._report(r, epoch, window_loss, (i % log_every) + 1 if last else log_every,
                             window_imgs / max(now - t_window, 1e-9))
                t_window, window_imgs = now, 0
        t.seconds = time.perf_counter() - t_epoch
        return t

    def _step(self, r: _Run, epoch: int, xraw, yb, idx, grad_sq) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on one batch: (logits, loss), detached."""
        t_logits, mix = None, None
        if r.use_cache:
            xb = xraw
        elif r.augmenter is not None:  # resumable: each step's draw depends only on seed, rank and step
            xa, mix = r.augmenter(data.to_unit(xraw.to(self.device)), r.aug_stream + 7 * r.step, yb)
            xb = self._normalise(xa)
            if r.teacher is not None and r.soft_targets is None:  # the teacher sees the same crop
                with torch.inference_mode():
                    t_logits = r.teacher.model(distill.teacher_input(xa, r.teacher)).float()
        else:
            xb = self._prep(xraw)
        if r.soft_targets is not None:
            t_logits = r.soft_targets[idx]
        factor = lr_factor(r.step, r.total_steps)
        for pg in r.optimizer.param_groups:
            pg["lr"] = pg["initial_lr"] * factor
        with self._autocast():
            logits = r.fwd(xb).float()
        if t_logits is not None:
            loss = distill.kd_loss(logits, t_logits.clone(), yb, self.cfg.temperature, self.cfg.alpha)
        else:
            loss = r.loss(logits, yb, mix)
        loss = faults.fire("loss", loss, epoch=epoch, step=r.step + 1, run_id=self.run_id)
        self._optimise(r.optimizer, r.scaler, loss, r.groups, grad_sq)
        r.step += 1
        return logits.detach(), loss.detach()

    def _report(self, r: _Run, epoch: int, window_loss: torch.Tensor, steps: int, rate: float) -> None:
        """The mean loss of the last `steps` steps as a Step event (zeroing
        `window_loss`); stop on a diverged loss or a stop request."""
        dist = self.dist
        # One small all-reduce: the loss of every process, rank 0's stop request, each rate.
        rates = [0.0] * dist.world_size
        rates[dist.rank] = rate
        stop = dist.enabled and self.should_stop()
        synced = dist.sync_flags([float(window_loss), float(stop), *rates])
        mean_loss = synced[0] / dist.world_size / steps
        if not math.isfinite(mean_loss):
            raise Diverged(f"loss became {mean_loss} at epoch {epoch}, step {r.step}: "
                           f"lower the learning rate (it was {strategies.base_lr(self.cfg):g}).")
        rates = tuple(synced[2:])
        self.emit(Step(epoch, r.step, mean_loss, r.optimizer.param_groups[-1]["lr"], sum(rates),
                       rates if dist.enabled else ()))
        window_loss.zero_()
        if synced[1]:
            raise Cancelled()

    def _end_of_epoch(self, r: _Run, epoch: int, t: _EpochTotals) -> None:
        """Validate, report the epoch and, on rank 0, its layer stats and checkpoint."""
        dist = self.dist
        loss_sum, correct, seen = t.loss_sum, t.correct, t.seen
        if dist.enabled:  # the epoch's metrics are over every process's images
            totals = dist.sum_(torch.stack([loss_sum.double(), correct.double(),
                                            torch.tensor(float(seen), dtype=torch.float64, device=self.device)]))
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
        r.images_seen += seen
        r.train_seconds += t.seconds
        val_loss, val_acc = self._evaluate_split(r, "val")
        r.best_val = val_acc if r.best_val is None else max(r.best_val, val_acc)
        r.result.epochs, r.result.val_accuracy, r.result.best_val_accuracy = epoch, val_acc, r.best_val
        improved = r.watch.update(epoch, val_loss, val_acc)
        r.result.best_epoch = r.watch.best_epoch
        self.emit(EpochEnd(epoch, float(loss_sum) / max(1, seen), float(correct) / max(1, seen), val_loss, val_acc,
                           t.seconds, seen / max(t.seconds, 1e-9)))
        r.dropped_noted = self._note_dropped(r.dropped_noted, f"in epoch {epoch}")
        if not dist.is_main:
            return  # rank 0 alone reports layer stats and writes the checkpoint
        self.emit(LayerStats(epoch, self._layer_rows(r.plan, r.groups, r.w0, t.grad_sq, r.steps_per_epoch)))
        weights = {"model": r.model.state_dict(), "config": dataclasses.asdict(self.cfg), "epoch": epoch,
                   "class_names": list(r.bundle.class_names), "backbone": self.spec.name,
                   "image_size": self.cfg.image_size, "monitor": self.cfg.monitor, "best": r.watch.best}
        if improved:  # the best-validation weights, kept beside the last: written first, so a crash keeps them paired
            checkpoint.save_atomic(weights, self.run_dir / checkpoint.BEST_NAME)
        ckpt_path = self.run_dir / checkpoint.CHECKPOINT_NAME
        checkpoint.save_atomic({
            **weights, "optimizer": r.optimizer.state_dict(), "step": r.step, "best_val_accuracy": r.best_val,
            "w0": {g: [w.cpu() for w in ws] for g, ws in r.w0.items()},
            "watch": r.watch.state_dict(), "rng_state": torch.get_rng_state(),
            **({"scaler": r.scaler.state_dict()} if r.scaler is not None else {}),
        }, ckpt_path)
        r.result.checkpoint = str(ckpt_path)

    def _score(self, r: _Run) -> None:
        scoring.score(self, r)

    def _evaluate_split(self, r: _Run, which: str) -> tuple[float, float]:
        if r.use_cache:
            return self.evaluate(r.net, r.feats[which], features=True)
        return self.evaluate(r.model, getattr(r.bundle, which))

    def _finish(self, r: _Run, status: str, reason: str, t_start: float) -> RunResult:
        self._sources.clear()  # a streamed split's DataLoader workers end here, not with the process
        result = r.result
        result.status, result.reason = status, reason
        result.stop_reason = result.stop_reason or reason or f"completed all {self.cfg.epochs} epoch(s)"
        result.seconds = time.perf_counter() - t_start
        result.images_per_second = r.images_seen / r.train_seconds if r.train_seconds else 0.0
        self.emit(RunEnd(status, reason, result))
        return result


def train(cfg: RunConfig, run_dir: Path | None = None, listeners: tuple[Listener, ...] = (),
          should_stop: Callable[[], bool] | None = None, run_id: str | None = None) -> RunResult:
    """Train one run in this process and return its result. An entry point
    (tests, benchmarks, a notebook): the config is checked here, before any work."""
    from core import paths
    from core.train.validate import validate

    run_id = run_id or new_run_id()
    return Trainer(validate(cfg), run_dir or paths.run_dir(run_id), run_id, listeners, should_stop).run()
